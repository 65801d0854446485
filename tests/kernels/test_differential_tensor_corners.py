"""Corners of the tensor, product and normalisation ops that the differential sweep's tensor families
(``benchmarks.differential_tensor``) reach, against onnxruntime or onnx's reference: every target runs them."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import hal
from tests.kernels._onnxruntime import run_as_written as _onnxruntime

TARGETS = [t.name for t in hal.targets()]


def _model(op: str, x: np.ndarray, opset: int, **attrs) -> bytes:
    elem = helper.np_dtype_to_tensor_dtype(x.dtype)
    g = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attrs)], "g",
                          [helper.make_tensor_value_info("x", elem, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.INT64 if op == "NonZero" else elem, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


@pytest.mark.parametrize("target", TARGETS)
def test_det_of_float16_matrices_is_taken_in_float32_and_rounded_once(target):
    # onnxruntime has a float16 Det; hal raised "array type float16 is unsupported in linalg"
    x = np.random.default_rng(4).standard_normal((2, 3, 3)).astype(np.float16)
    x[1, 2] = x[1, 0]  # singular
    blob = _model("Det", x, 11)
    (want,) = _onnxruntime(blob, {"x": x})
    (got,) = hal.InferenceSession(blob, target=target).run(None, {"x": x})
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-2, atol=2e-3)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("value", [0.0, 2.5])
def test_non_zero_of_a_scalar_has_no_rows(value, target):
    # a 0-d input has rank 0, so the spec's (rank, count) output is (0, count): onnx's reference says so;
    # onnxruntime gives (1, count), read as a 1-element vector. hal follows the spec.
    x = np.array(value, np.float32)
    blob = _model("NonZero", x, 13)
    (want,) = ReferenceEvaluator(blob).run(None, {"x": x})
    (got,) = hal.InferenceSession(blob, target=target, fallback="allow").run(None, {"x": x})
    assert got.shape == want.shape == (0, int(value != 0))
    assert got.dtype == np.int64


@pytest.mark.parametrize("target", TARGETS)
def test_mean_variance_normalization_of_a_constant_group_is_zero(target):
    # the spec's function body adds 1e-9 to the standard deviation, so a group of one value (or of equal
    # values) comes out 0, as onnx's reference has it; onnxruntime's kernel adds nothing and gives NaN
    x = np.array([[[[1.5]], [[-0.25]]], [[[1.5]], [[3.0]]]], np.float32)  # (2, 2, 1, 1): axis 0 alone varies
    blob = _model("MeanVarianceNormalization", x, 13, axes=[2, 3])
    (want,) = ReferenceEvaluator(blob).run(None, {"x": x})
    (got,) = hal.InferenceSession(blob, target=target).run(None, {"x": x})
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, np.zeros_like(x))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("data", "indices", "batch_dims"), [
    ([3.0, 4.0], [1], 0), ([[3.0, 4.0], [5.0, 6.0]], [[1], [0]], 1)], ids=["scalar", "batch-of-scalars"])
def test_gather_nd_down_to_a_scalar(data, indices, batch_dims, target):
    # indices that pick one element give a 0-d output: hal's final reshape got its shape unpacked,
    # reshape() of nothing, and raised where onnxruntime gives 4.0
    feeds = {"x": np.array(data, np.float32), "i": np.array(indices, np.int64)}
    g = helper.make_graph([helper.make_node("GatherND", ["x", "i"], ["y"], batch_dims=batch_dims)], "g",
                          [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                           for k, v in feeds.items()],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    blob = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    (want,) = _onnxruntime(blob, feeds)
    (got,) = hal.InferenceSession(blob, target=target, fallback="allow").run(None, feeds)
    assert got.shape == want.shape == feeds["x"].shape[:batch_dims]
    np.testing.assert_array_equal(got, want)
