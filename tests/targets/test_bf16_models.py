"""A bfloat16 model is a float model: every target applies its precision to it as to an fp32 one.

numpy has no bfloat16 of its own; ml_dtypes' has numpy kind 'V', so a check for kind 'f' passes
it by as if it were an integer: its weights kept 16-bit at precision fp8, its operands never
rounded, its bytes never narrowed in the cost model.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import hal
from hal.numerics import is_float


def _model(dtype: np.dtype, w: np.ndarray) -> onnx.ModelProto:
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", elem, [8, 64])], [helper.make_tensor_value_info("y", elem, [8, 32])],
        [numpy_helper.from_array(w.astype(dtype), "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_is_float_knows_the_ml_dtypes_floats_and_nothing_else():
    for dt in (np.float16, np.float32, np.float64, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2):
        assert is_float(np.dtype(dt)), dt
    for dt in (np.int8, np.int64, np.bool_, ml_dtypes.int4, ml_dtypes.uint4, np.dtype("V4")):
        assert not is_float(np.dtype(dt)), dt


@pytest.mark.parametrize(("target", "precision"), [("gpu", "fp8"), ("gpu", "int8"), ("lpu", "int8"), ("lpu", "fp16"),
                                                   ("wafer", "fp16")])
def test_a_bf16_model_runs_at_the_asked_precision_like_its_fp32_twin(target, precision):
    rng = np.random.default_rng(0)
    # weights exactly representable in bf16, so the two models hold the same numbers
    w = rng.standard_normal((64, 32)).astype(ml_dtypes.bfloat16).astype(np.float32)
    x = rng.standard_normal((8, 64)).astype(ml_dtypes.bfloat16).astype(np.float32)
    exact = hal.InferenceSession(_model(np.float32, w), target="cpu").run(None, {"x": x})[0]
    twin = hal.InferenceSession(_model(np.float32, w), target=target, precision=precision).run(None, {"x": x})[0]
    sess = hal.InferenceSession(_model(ml_dtypes.bfloat16, w), target=target, precision=precision)
    got = sess.run(None, {"x": x.astype(ml_dtypes.bfloat16)})[0].astype(np.float32)
    scale = float(np.abs(exact).max())
    # the narrow format's error shows in both, and the bf16 model differs from its twin by bf16 rounding only
    assert np.abs(twin - exact).max() > 1e-4 * scale
    assert np.abs(got - twin).max() <= 2e-2 * scale
    assert np.abs(got - exact).max() > 0.3 * np.abs(twin - exact).max()


def test_the_gpu_cost_model_stores_a_bf16_models_weights_in_fp8():
    w = np.zeros((64, 32), np.float32)
    bytes_of = {}
    for dt in (np.float32, ml_dtypes.bfloat16):
        rep = hal.compile(_model(dt, w), target="gpu", precision="fp8").report
        bytes_of[np.dtype(dt).name] = rep.details["weights_bytes_per_device"]
    assert bytes_of["bfloat16"] == bytes_of["float32"] == 64 * 32


def test_bisect_finds_where_a_bf16_model_diverges():
    from hal.bisect import bisect

    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    x = rng.standard_normal((8, 64)).astype(ml_dtypes.bfloat16)
    res = bisect(_model(ml_dtypes.bfloat16, w), "gpu", {"x": x}, precision="fp8", tolerance=1e-3)
    assert res.found and res.op_type == "MatMul" and res.max_rel > 1e-3
