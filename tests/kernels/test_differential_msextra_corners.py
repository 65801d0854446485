"""Corners of onnxruntime's com.microsoft kernels found by the differential sweep's msextra families
(``benchmarks.differential_msextra``: GatherBlockQuantized, ScaledSiLU ...), against onnxruntime's
outputs: every target runs them."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from tests.conftest import targets_taking
from tests.kernels._onnxruntime import run_as_written

TARGETS = [t.name for t in hal.targets()]
MS = "com.microsoft"


def _model(node, feeds: dict[str, np.ndarray], inits: dict[str, np.ndarray], out_type: int) -> bytes:
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype),
                                                                      v.shape) for n, v in feeds.items()],
                          [helper.make_tensor_value_info(node.output[0], out_type, None)],
                          [numpy_helper.from_array(v, n) for n, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    m.ir_version = 8
    return m.SerializeToString()


def _as_onnxruntime(blob: bytes, feeds: dict[str, np.ndarray], target: str) -> np.ndarray:
    (want,) = run_as_written(blob, feeds, threads=1)
    (got,) = hal.InferenceSession(blob, target=target).run(None, feeds)
    assert isinstance(got, np.ndarray) and got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    return want


_TABLES = [
    (ml_dtypes.float8_e4m3fn, 16, (5, 3), np.float32),
    (ml_dtypes.float8_e5m2, 0, (5, 1), np.float16),  # block_size 0: one block a row
    (ml_dtypes.float8_e4m3fnuz, 32, (1, 2), np.float32),  # one scale row shared by every row
    (ml_dtypes.float8_e5m2fnuz, 0, (1, 1), np.float32),  # a per-tensor scale
    (ml_dtypes.float4_e2m1fn, 16, (5, 3), np.float16),
]


@pytest.mark.parametrize(("table", "block", "scale_shape", "scale_type", "target"),
                         [(*case, t) for case in _TABLES for t in targets_taking(np.dtype(case[0]).name)])
def test_gather_block_quantized_reads_fp8_and_fp4_tables(table, block, scale_shape, scale_type, target):
    # onnxruntime 1.32's GatherBlockQuantized takes FP8 and FP4 tables: float(data) x scale, block_size
    # 0 for one block along quantize_axis, a scale dimension of 1 broadcast. hal raised "data must be
    # uint8, int4 or uint4" (and "block_size must be ... at least 16" for 0) where onnxruntime ran
    rng = np.random.default_rng(1)
    data = (rng.standard_normal((5, 40)) * 4).astype(table)
    scales = rng.uniform(0.05, 0.5, scale_shape).astype(scale_type)
    idx = np.array([[0, 4], [-1, 7]], np.int64)  # 7: out of range, zeros
    node = helper.make_node("GatherBlockQuantized", ["d", "i", "s"], ["y"], domain=MS, gather_axis=0, quantize_axis=1,
                            block_size=block)
    blob = _model(node, {"i": idx}, {"d": data, "s": scales}, helper.np_dtype_to_tensor_dtype(np.dtype(scale_type)))
    want = _as_onnxruntime(blob, {"i": idx}, target)
    assert want.shape == (2, 2, 40) and not want[1, 1].any() and want[0, 0].any()


@pytest.mark.parametrize("target", targets_taking("float8_e4m3fn"))
def test_gather_block_quantized_fp8_gathers_along_the_quantized_axis(target):
    # gather_axis = quantize_axis on a 3-D table, a scale of 1 broadcast along the middle axis
    rng = np.random.default_rng(2)
    data = (rng.standard_normal((3, 4, 20)) * 8).astype(ml_dtypes.float8_e4m3fn)
    scales = rng.uniform(0.05, 0.5, (3, 1, 2)).astype(np.float32)
    idx = np.array([19, -20, 3], np.int32)
    node = helper.make_node("GatherBlockQuantized", ["d", "i", "s"], ["y"], domain=MS, gather_axis=2, quantize_axis=2,
                            block_size=16)
    _as_onnxruntime(_model(node, {"i": idx}, {"d": data, "s": scales}, TensorProto.FLOAT), {"i": idx}, target)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_scaled_silu_of_a_scalar_is_a_0_d_tensor(dtype, target):
    # a 0-d X: hal's kernel handed back numpy's float32 scalar, not a 0-d array, and every target failed
    # the run ("comes out a numpy float32 scalar, not an array")
    x = np.array(-1.75, dtype)
    node = helper.make_node("ScaledSiLU", ["x"], ["y"], domain=MS, alpha=1.702)
    blob = _model(node, {"x": x}, {}, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
    (want,) = run_as_written(blob, {"x": x}, threads=1)
    (got,) = hal.InferenceSession(blob, target=target).run(None, {"x": x})
    assert isinstance(got, np.ndarray) and got.shape == () and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-6)
