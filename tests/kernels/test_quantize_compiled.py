"""QuantizeLinear and DequantizeLinear through their compiled loops (``hal.kernels._quant_loops``):
float32 to int8 or uint8 and back, per tensor or per axis, bit for bit the numpy path's, which onnx's
node tests and onnxruntime check (``tests/kernels/test_quantize_nan.py`` and the conformance runs):
ties to even, zero points, saturation, NaN to the lowest code, infinities, the scale's axis."""

from __future__ import annotations

import numpy as np
import pytest

from hal.kernels import jit
from hal.kernels.quantize import dequantize_linear, quantize_linear

pytestmark = pytest.mark.skipif(not jit.enabled(), reason="the compiled loops are off (numba missing or HAL_JIT=0)")


def _cases(rng: np.random.Generator, dtype: type) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None, int]]:
    """(x, scale, zero point, axis): per tensor and along each axis, with ties, huge and non-finite values."""
    x = (rng.standard_normal((3, 4, 5)) * 3).astype(np.float32)
    x.flat[:6] = [np.nan, np.inf, -np.inf, 1e30, -1e30, -0.0]
    info = np.iinfo(dtype)
    cases = []
    for axis in (0, 1, 2, -1):
        n = x.shape[axis]
        cases.append((x, rng.uniform(0.01, 0.1, n).astype(np.float32),
                      rng.integers(info.min, info.max + 1, n).astype(dtype), axis))
    ties = (np.arange(-20, 20, dtype=np.float32) + 0.5) * np.float32(0.25)  # x / 0.25: k + 0.5 exactly
    cases += [(x, np.float32(0.05), np.array(3, dtype), 1), (x, np.array([0.02], np.float32), None, 1),
              (ties, np.float32(0.25), np.array(0, dtype), 0), (ties, np.float32(0.25), None, 0),
              (x.transpose(2, 0, 1), np.float32(0.07), np.array(info.max, dtype), 1),
              (x, np.float32(0.0), np.array(0, dtype), 1)]  # a zero scale: infinities and NaN
    # quotients about 2**24, where a float32 sum with the zero point would round (both clamp) and
    # 2**23 + 0.5, float32's last ties
    big = np.array([16777000, 16777215, 16777216, -16777216, 8388607.5, -8388607.5, 4194304.5], np.float32)
    cases += [(big, np.float32(1.0), np.array(code, dtype), 0) for code in (info.min, info.max)]
    return cases


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_compiled_quantize_and_dequantize_are_the_numpy_path_bit_for_bit(dtype, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    cases = _cases(rng, dtype)
    with np.errstate(all="ignore"):
        got = [quantize_linear(x, s, z, axis=a) for x, s, z, a in cases]
        back = [dequantize_linear(q, s, z, axis=a) for q, (_, s, z, a) in zip(got, cases)]
        monkeypatch.setattr(jit, "_ENABLED", False)
        want = [quantize_linear(x, s, z, axis=a) for x, s, z, a in cases]
        want_back = [dequantize_linear(q, s, z, axis=a) for q, (_, s, z, a) in zip(want, cases)]
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
    for g, w in zip(back, want_back):
        assert g.dtype == w.dtype == np.float32
        np.testing.assert_array_equal(g.view(np.uint32), w.view(np.uint32))
    # the ties went to even
    ties = (np.arange(-20, 20, dtype=np.float32) + 0.5) * np.float32(0.25)
    assert (quantize_linear(ties, np.float32(0.25), np.array(0, dtype)).astype(np.int64) % 2 == 0).all()


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_a_fused_quantize_dequantize_pair_is_the_two_kernels_bit_for_bit(dtype) -> None:
    from hal.kernels.fused_quant import QuantizeDequantize

    pair = QuantizeDequantize(("", "QuantizeLinear", 10), ("", "DequantizeLinear", 10))
    with np.errstate(all="ignore"):
        for x, s, z, a in _cases(np.random.default_rng(1), dtype):
            want = dequantize_linear(quantize_linear(x, s, z, axis=a), s, z, axis=a)
            got = pair(x, s, z, axis=a)
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    # codes the loop does not make (float8) go through the two kernels
    import ml_dtypes

    x = np.linspace(-3, 3, 13, dtype=np.float32)
    z8 = np.array(0, ml_dtypes.float8_e4m3fn)
    np.testing.assert_array_equal(pair(x, np.float32(0.5), z8),
                                  dequantize_linear(quantize_linear(x, np.float32(0.5), z8), np.float32(0.5), z8))
