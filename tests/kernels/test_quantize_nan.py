"""Quantisation where the arithmetic meets a NaN or an infinity, run against onnxruntime (graph
optimisations off, so it runs each op as written). The spec leaves a NaN's integer open;
onnxruntime gives the type's lowest value, and so does hal (``quantize.saturate_int``), where a
plain cast wrapped it to 0. It happens in real models: onnxruntime's own calibrator gives an
attention mask holding -inf an infinite scale, and -inf / inf is NaN. onnx's node tests hold no
such input."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal

RNG = np.random.default_rng(11)
INT_TYPES = [(TensorProto.INT8, 0), (TensorProto.INT8, -128), (TensorProto.UINT8, 128),
             (TensorProto.INT16, 5), (TensorProto.UINT16, 9)]


def _both(nodes: list[onnx.NodeProto], feeds: dict[str, np.ndarray], outputs: dict[str, tuple[int, list[int]]],
          initializers: dict[str, np.ndarray], opset: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """hal cpu's and onnxruntime's outputs of a graph of ``nodes``."""
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for n, v in feeds.items()],
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in outputs.items()],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in initializers.items()])
    blob = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = hal.InferenceSession(blob, target="cpu", cache_dir=False).run(None, feeds)
    return got, want


def _np(code: int) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(code))


@pytest.mark.parametrize(("qtype", "zero"), INT_TYPES)
@pytest.mark.parametrize("per_axis", [False, True])
@pytest.mark.parametrize("n", [9, 1000])  # onnxruntime's scalar and vector loops
def test_quantize_linear_nan_is_the_lowest_value(qtype: int, zero: int, per_axis: bool, n: int) -> None:
    x = RNG.standard_normal(n).astype(np.float32) * 300
    x[::7] = np.nan
    x[3], x[5] = np.inf, -np.inf
    scale = np.full(n, 0.5, np.float32) if per_axis else np.float32(0.5)
    zp = np.full(n, zero, _np(qtype)) if per_axis else np.array(zero, _np(qtype))
    got, want = _both([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=0)], {"x": x},
                      {"y": (qtype, [n])}, {"s": scale, "z": zp}, 21)
    assert got[0].dtype == want[0].dtype
    np.testing.assert_array_equal(got[0], want[0])
    assert (got[0][np.isnan(x)] == np.iinfo(_np(qtype)).min).all()


@pytest.mark.parametrize("scale", [0.0, np.inf, np.nan])
def test_quantize_linear_degenerate_scale(scale: float) -> None:
    """0 / 0, x / 0, x / inf and inf / inf in one tensor."""
    x = np.array([0.0, 1.5, -2.0, np.inf, -np.inf, np.nan, 1e30, -3.4e38], np.float32)
    for qtype, zero in INT_TYPES:
        got, want = _both([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])], {"x": x},
                          {"y": (qtype, [8])}, {"s": np.float32(scale), "z": np.array(zero, _np(qtype))}, 21)
        np.testing.assert_array_equal(got[0], want[0], err_msg=f"{_np(qtype)} zero point {zero}")


@pytest.mark.parametrize(("qtype", "zero", "low", "high"),
                         [(TensorProto.INT8, 0, -5, 5), (TensorProto.UINT8, 128, 120, 136)])
@pytest.mark.parametrize("y_scale", [0.0, np.inf, np.nan])
def test_requantised_products_with_a_degenerate_output_scale(qtype: int, zero: int, low: int, high: int,
                                                            y_scale: float) -> None:
    """QLinearMatMul and QLinearConv: a zero or NaN output scale makes acc * (sa * sb / sy) NaN
    where the accumulator is 0 (or everywhere); those outputs are the lowest value too."""
    t = _np(qtype)
    scales = {"sa": np.float32(0.1), "za": np.array(zero, t), "sb": np.float32(0.2), "zb": np.array(zero, t),
              "sy": np.float32(y_scale), "zy": np.array(zero, t)}
    a = RNG.integers(low, high, (4, 6)).astype(t)
    a[0] = zero  # a row of zero points: an accumulator of 0
    b = RNG.integers(low, high, (6, 5)).astype(t)
    got, want = _both([helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"])],
                      {"a": a, "b": b}, {"y": (qtype, [4, 5])}, scales, 13)
    np.testing.assert_array_equal(got[0], want[0])
    x = RNG.integers(low, high, (1, 2, 4, 4)).astype(t)
    x[0, :, 0] = zero
    w = RNG.integers(low, high, (3, 2, 1, 1)).astype(t)
    got, want = _both([helper.make_node("QLinearConv", ["x", "sa", "za", "w", "sb", "zb", "sy", "zy"], ["y"])],
                      {"x": x}, {"y": (qtype, [1, 3, 4, 4])}, {**scales, "w": w}, 13)
    np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.parametrize("x", [[1.0, np.inf, -2.0], [1.0, -np.inf, -2.0], [0.25, 3.0, -1.0]],
                         ids=["+inf", "-inf", "finite"])
def test_dynamic_quantize_linear_infinities_as_onnxruntime(x: list[float]) -> None:
    """An infinity stays in the range, as in onnxruntime (and onnx's reference). A NaN follows onnx's
    reference, not onnxruntime's lane-dependent result: test_dynamic_quantize_nonfinite.py."""
    got, want = _both([helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])],
                      {"x": np.array(x, np.float32)},
                      {"y": (TensorProto.UINT8, [3]), "s": (TensorProto.FLOAT, []), "z": (TensorProto.UINT8, [])},
                      {}, 13)
    for g, w in zip(got, want):
        assert np.asarray(g).dtype == w.dtype
        np.testing.assert_array_equal(g, w)


def test_a_mask_quantised_with_an_infinite_scale_round_trips_as_onnxruntime() -> None:
    """The pattern onnxruntime's calibrator writes for a causal mask (0 and -inf): scale inf, so the
    mask's -inf quantises through NaN to -128 and dequantises to -inf, and its 0s to NaN; the
    softmax after it and everything downstream are onnxruntime's bits."""
    scores = RNG.standard_normal((2, 4, 4)).astype(np.float32)
    causal = np.triu(np.full((4, 4), -np.inf, np.float32), 1)
    nodes = [helper.make_node("QuantizeLinear", ["mask", "s", "z"], ["mq"]),
             helper.make_node("DequantizeLinear", ["mq", "s", "z"], ["md"]),
             helper.make_node("Add", ["scores", "md"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
             helper.make_node("QuantizeLinear", ["p", "ps", "pz"], ["pq"])]
    outputs = {"mq": (TensorProto.INT8, [4, 4]), "pq": (TensorProto.UINT8, [2, 4, 4])}
    got, want = _both(nodes, {"scores": scores}, outputs,
                      {"mask": causal, "s": np.float32(np.inf), "z": np.int8(0), "ps": np.float32(1 / 255),
                       "pz": np.uint8(0)}, 19)
    assert (want[0][np.isinf(causal)] == -128).all()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("zero_point", [True, False])
def test_negative_zero_quantised_to_float8_stays_negative_zero(zero_point: bool) -> None:
    # y = x / scale + zero point: adding a float8 zero point of 0 turned -0 into +0, where onnxruntime
    # and onnx's reference keep -0 (a float8 zero point is 0 in practice; a nonzero one is added)
    x = np.array([-0.0, 0.0, -1.5, 2.0], np.float32)
    inits = {"s": np.array(1.0, np.float32)}
    if zero_point:
        zp = numpy_helper.from_array(np.zeros((), np.uint8), "zp")  # bytes reinterpreted as float8 below
        zp.data_type = TensorProto.FLOAT8E4M3FN
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"] if zero_point else ["x", "s"], ["q"],
                              **({} if zero_point else {"output_dtype": TensorProto.FLOAT8E4M3FN})),
             helper.make_node("DequantizeLinear", ["q", "s"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                              [numpy_helper.from_array(v, n) for n, v in inits.items()] + ([zp] if zero_point else []))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    got = hal.InferenceSession(model, target="cpu", cache_dir=False).run(None, {"x": x})[0]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, want)
    assert np.signbit(got).tolist() == np.signbit(want).tolist() == [True, False, True, False]
