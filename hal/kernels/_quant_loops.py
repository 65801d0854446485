"""Compiled loops of linear quantisation (``hal.kernels.quantize``): QuantizeLinear of float32 to int8
or uint8 and DequantizeLinear of int8 or uint8 to float32, per tensor or per axis, in one pass each
where numpy makes five to eight (a division, a rounding, the zero point, the clamp, the NaN test and
two casts). Read them as C, as ``hal.kernels._loops``, which imports them so that ``jit.loops()``
reaches them. The input is viewed as (outer, channels, inner), its quantisation axis in the middle
(one channel for a scale per tensor)."""

from __future__ import annotations

import numpy as np
from numba import types

from hal.kernels.jit import njit

U = np.uintp  # (indices cast to it vectorise: see ``hal.kernels._loops``)

_F32_3D_RO = types.Array(types.float32, 3, "C", readonly=True)
_F32_3D = types.Array(types.float32, 3, "C")
_F32_1D_RO = types.Array(types.float32, 1, "C", readonly=True)
_F64_1D_RO = types.Array(types.float64, 1, "C", readonly=True)
_CODES = (types.int8, types.uint8)


@njit(inline="always")
def _code(v, s, z, lo, hi):
    """float32 v / s rounded half to even, plus z, clamped to [lo, hi], a NaN to lo: a code, as a float32."""
    r = np.rint(np.float32(v / s)) + z
    return lo if r != r else min(max(r, lo), hi)


@njit(signature=[types.void(_F32_3D_RO, _F32_1D_RO, _F64_1D_RO, types.float64, types.float64, types.boolean,
                            types.Array(t, 3, "C")) for t in (*_CODES, types.float32)])
def quantize_float32(x, scale, zero, lo, hi, dequantized, out):
    """out = x / scale (float32, as numpy divides) rounded half to even, plus the zero point, clamped to
    [lo, hi], a NaN to lo: the bits of ``hal.kernels.quantize``'s numpy path (``np.rint`` of the
    quotient in float64, ``saturate_int``), per channel c of x's (outer, channels, inner) view. In
    float32, twice float64's lanes (bert-bench's 512 x 384 activations: 12.5 us, against 35): a float32
    quotient's rint is the same integer either way, and adding a zero point of 8 bits to it is exact
    below 2**24 - 256, past which both sums clamp alike. With ``dequantized`` (a float32 ``out``) the
    codes dequantized again, with no codes in between: a QuantizeLinear and the DequantizeLinear that
    alone reads it, as an explicitly quantized model puts them around every op (a code is an integer,
    exact in float32, so (code - zero point) * scale is the DequantizeLinear's own product)."""
    outer, channels, inner = x.shape
    lo32, hi32 = np.float32(lo), np.float32(hi)
    for o in range(outer):
        for c in range(channels):
            s, z = scale[U(c)], np.float32(zero[U(c)])
            for i in range(inner):
                r = _code(x[U(o), U(c), U(i)], s, z, lo32, hi32)
                out[U(o), U(c), U(i)] = (r - z) * s if dequantized else r


@njit(signature=[types.void(types.Array(t, 3, "C", readonly=True), _F32_1D_RO, _F64_1D_RO, _F32_3D)
                 for t in _CODES])
def dequantize_float32(x, scale, zero, out):
    """out = (x - zero point) * scale in float32, the difference exact (as numpy's float64 one, cast:
    codes and zero points of 8 bits differ by at most 255), per channel c of x's (outer, channels,
    inner) view."""
    outer, channels, inner = x.shape
    for o in range(outer):
        for c in range(channels):
            s, z = scale[U(c)], np.float32(zero[U(c)])
            for i in range(inner):
                out[U(o), U(c), U(i)] = (np.float32(x[U(o), U(c), U(i)]) - z) * s


__all__ = ["dequantize_float32", "quantize_float32"]
