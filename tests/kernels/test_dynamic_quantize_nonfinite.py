"""DynamicQuantizeLinear of NaN and infinite inputs, against onnx's reference (which hal follows:
README, "Where onnx's spec and onnxruntime part") and onnxruntime where it agrees.

Any NaN makes the scale NaN and the zero point 255 in onnx's reference; onnxruntime's CPU provider
gives that only for an all-NaN input of 8 or more (its vectorised min/max) and 1.0 / 0 below, and
drops a lone NaN among finite values at most positions. Infinities agree everywhere."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import hal

RNG = np.random.default_rng(5)
NAN, INF = np.nan, np.inf


def _model(n: int) -> onnx.ModelProto:
    g = helper.make_graph([helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])], "dql",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, [n]),
                           helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
                           helper.make_tensor_value_info("z", TensorProto.UINT8, [])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _hal(x: np.ndarray) -> list[np.ndarray]:
    blob = _model(x.size).SerializeToString()
    return [np.asarray(o) for o in hal.InferenceSession(blob, target="cpu", cache_dir=False).run(None, {"x": x})]


def _reference(x: np.ndarray) -> list[np.ndarray]:
    with np.errstate(invalid="ignore"):  # the reference casts its NaN codes to uint8
        return [np.asarray(o) for o in ReferenceEvaluator(_model(x.size)).run(None, {"x": x})]


def _onnxruntime(x: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    blob = _model(x.size).SerializeToString()
    return ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"]).run(None, {"x": x})


def _same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    for name, g, w in zip("ysz", got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, name
        np.testing.assert_array_equal(g, w, err_msg=name)  # NaN equals NaN here


def _some_nan(n: int, where: int) -> np.ndarray:
    x = RNG.standard_normal(n).astype(np.float32) * 4
    x[where] = NAN
    return x


NONFINITE = {
    "all NaN 1": np.full(1, NAN, np.float32),
    "all NaN 7": np.full(7, NAN, np.float32),
    "all NaN 8": np.full(8, NAN, np.float32),
    "all NaN 64": np.full(64, NAN, np.float32),
    "a NaN of 3": np.array([1.0, NAN, -2.0], np.float32),
    "a NaN first of 16": _some_nan(16, 0),
    "a NaN inside 64": _some_nan(64, 33),
    "a NaN last of 64": _some_nan(64, 63),
    "one finite among NaNs": np.array([NAN] * 5 + [2.5] + [NAN] * 4, np.float32),
    "NaN and inf": np.array([INF, NAN, 1.0], np.float32),
    "+inf": np.array([1.0, INF, -2.0], np.float32),
    "-inf": np.array([1.0, -INF, -2.0], np.float32),
    "+inf and -inf": np.array([INF, -INF, 0.5], np.float32),
    "all +inf": np.full(9, INF, np.float32),
    "-inf of 32": np.where(np.arange(32) % 5 == 0, -INF, RNG.standard_normal(32)).astype(np.float32),
}


@pytest.mark.parametrize("x", NONFINITE.values(), ids=NONFINITE.keys())
def test_nonfinite_input_follows_onnx_reference(x: np.ndarray) -> None:
    got = _hal(x)
    _same(got, _reference(x))
    if np.isnan(x).any():
        assert np.isnan(got[1]) and got[2] == 255 and not got[0].any()


@pytest.mark.parametrize("n", [8, 64])
def test_all_nan_matches_onnxruntime_where_it_agrees(n: int) -> None:
    """onnxruntime's vectorised path (8 or more elements) gives the reference's NaN and 255."""
    x = np.full(n, NAN, np.float32)
    _same(_hal(x), _onnxruntime(x))


@pytest.mark.parametrize("key", ["+inf", "-inf", "+inf and -inf", "all +inf", "-inf of 32"])
def test_infinities_match_onnxruntime_too(key: str) -> None:
    _same(_hal(NONFINITE[key]), _onnxruntime(NONFINITE[key]))


def test_empty_input_keeps_scale_one() -> None:
    """The reference raises on an empty input (max of nothing); hal keeps onnxruntime's 1.0 and 0."""
    x = np.zeros(0, np.float32)
    with pytest.raises(ValueError):
        _reference(x)
    got = _hal(x)
    _same(got, _onnxruntime(x))
    assert got[1] == np.float32(1.0) and got[2] == 0 and got[0].shape == (0,)


@pytest.mark.parametrize("n", [3, 8, 100])
def test_finite_data_is_unchanged(n: int) -> None:
    """Finite data matches both peers bit for bit, as before (the NaN rule adds no arithmetic)."""
    for x in (RNG.standard_normal(n).astype(np.float32) * 3, np.abs(RNG.standard_normal(n)).astype(np.float32),
              -np.abs(RNG.standard_normal(n)).astype(np.float32) * 1e5):
        got = _hal(x)
        _same(got, _reference(x))
        _same(got, _onnxruntime(x))


def test_all_zero_input_keeps_onnxruntime_scale() -> None:
    """The one finite case where the reference differs (1/255): hal's scale stays onnxruntime's 1.0."""
    x = np.zeros(6, np.float32)
    got = _hal(x)
    _same(got, _onnxruntime(x))
    assert got[1] == np.float32(1.0)
