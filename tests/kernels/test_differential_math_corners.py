"""Corners of the elementwise ops found by the differential sweep's math families
(``benchmarks.differential_math``), against onnxruntime's outputs: every target runs them."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import hal
from tests.conftest import targets_taking
from tests.kernels._onnxruntime import run_as_written as _onnxruntime

TARGETS = [t.name for t in hal.targets()]


def _model(op: str, inputs: dict[str, np.ndarray], opset: int, **attrs) -> bytes:
    g = helper.make_graph([helper.make_node(op, list(inputs), ["out"], **attrs)], "g",
                          [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                           for k, v in inputs.items()],
                          [helper.make_tensor_value_info("out", helper.np_dtype_to_tensor_dtype(
                              next(iter(inputs.values())).dtype), None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("op", ["Sum", "Mean"])
@pytest.mark.parametrize("count", [3, 4])
def test_sum_and_mean_of_three_or_more_scalars(op, count, target):
    # 0-d inputs: np.add of the first two gave a numpy scalar, and adding the third into it with out=
    # raised TypeError ("return arrays must be of ArrayType"); onnxruntime sums them to a 0-d tensor
    feeds = {f"x{i}": np.array(1.5 * i - 2, np.float32) for i in range(count)}
    blob = _model(op, feeds, 13)
    (want,) = _onnxruntime(blob, feeds)
    (got,) = hal.InferenceSession(blob, target=target).run(None, feeds)
    assert got.shape == ()
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("target", targets_taking("float64"))
def test_float64_hard_swish_multiplies_by_the_float32_sixth_of_its_function_body(target):
    # HardSwish is HardSigmoid(alpha=1/6, beta=0.5) times x, alpha a float (float32) attribute:
    # onnxruntime's float64 kernel and onnx's reference use float32(1/6); hal's exact 1/6 put a
    # float64 result 1e-8 relative off both (past float64's tolerance)
    x = np.array([1.3576112240000001, -2.9, 0.25, 2.999999, 5.0, -0.1], np.float64)
    blob = _model("HardSwish", {"x": x}, 18)
    (want,) = _onnxruntime(blob, {"x": x})
    (got,) = hal.InferenceSession(blob, target=target).run(None, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integers_to_negative_integer_powers_truncate_toward_zero(dtype, target):
    # numpy refuses integers to negative integer powers, so hal raised; onnxruntime truncates C's
    # pow: 1 / x^n toward zero, 0 for |x| > 1 and +-1 for x = +-1 (onnx's reference raises, as numpy)
    x = np.array([[2], [1], [-1], [3], [-2], [7]], dtype)
    y = np.array([-1, -2, -3, 0, 2, 3], dtype)
    blob = _model("Pow", {"x": x, "y": y}, 15)
    (want,) = _onnxruntime(blob, {"x": x, "y": y})
    (got,) = hal.InferenceSession(blob, target=target).run(None, {"x": x, "y": y})
    np.testing.assert_array_equal(got, want)
    assert got.dtype == want.dtype
