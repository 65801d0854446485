"""Compiled loops of the number formats (``hal.numerics``): float32 rounded to tf32, bf16, fp16, fp8
or int8 in one pass with the bits of the casts, and fp16 with a power-of-two scale per tensor. Read
them as C, as ``hal.kernels._loops``, which imports them so that ``jit.loops()`` reaches them."""

from __future__ import annotations

import math

import numpy as np
from numba import types

from hal.kernels.jit import njit

U = np.uintp  # (indices cast to it vectorise: see ``hal.kernels._loops``)

_F32_RO = types.Array(types.float32, 1, "C", readonly=True)
_F32 = types.Array(types.float32, 1, "C")


#: ``round_float32``'s formats: tf32 (10 stored mantissa bits, float32's exponents), bfloat16 (7 bits,
#: float32's exponents), float16 (10 bits, exponents -14 to 15, subnormals down to 2**-24), float8
#: e4m3fn (3 bits, exponents -6 to 8, subnormals down to 2**-9, saturating at 448 as ``np.clip`` before
#: the cast does) and int8 (an integer in [-127, 127], as ``np.clip(np.rint(y), -127, 127)``)
TF32, BF16, FP16, FP8, INT8 = 0, 1, 2, 3, 4


@njit(inline="always")
def _drop_bits(y, drop):
    """float32 y with the lowest ``drop`` bits of its encoding rounded off to nearest even (a carry runs
    into the exponent, so the largest values round to infinity); a NaN as it is."""
    one = np.uint32(1)
    b = np.uint32(y.view(np.uint32))
    below_half = (one << np.uint32(drop - 1)) - one
    kept = (b + below_half + ((b >> np.uint32(drop)) & one)) & ~((one << np.uint32(drop)) - one)
    r = np.uint32(kept).view(np.float32)  # (numba widens uint32 arithmetic to 64 bits: back to 32)
    return r if y == y else y


@njit(inline="always")
def _narrow(y, drop, top_bits, top, normal_bits, step):
    """float32 y rounded to a narrow format: past ``top_bits`` (as magnitude bits) ``top`` with y's sign,
    from ``normal_bits`` on its normals (``drop`` bits fewer than float32's), below them a multiple of
    ``step``, exactly (rint rounds to even, and -0.0 stays -0.0); a NaN as it is."""
    a = np.uint32(y.view(np.uint32)) & np.uint32(0x7FFFFFFF)
    small = np.rint(y / step) * step
    r = _drop_bits(y, drop) if a >= normal_bits else small
    return (top if y > 0 else -top) if (a > top_bits) & (y == y) else r


@njit(inline="always")
def _fp16(y):
    """float32 y rounded to float16's values: past 65504 by half a step (65520, 0x477FF000) or more
    infinity, as a cast gives; normals from 2**-14, below them steps of 2**-24."""
    return _narrow(y, 13, np.uint32(0x477FEFFF), np.float32(np.inf), np.uint32(0x38800000), np.float32(5.9604645e-08))


@njit(signature=types.void(_F32_RO, types.float32, types.int64, _F32))
def round_float32(x, scale, fmt, out):
    """x / scale rounded to ``fmt`` (``TF32``, ``BF16``, ``FP16``, ``FP8``, ``INT8``), times scale, into
    ``out``, each operation in float32 as numpy's: the bits of ``(x / scale).astype(float16).astype(float32)
    * scale`` and of the same through ml_dtypes' bfloat16, ``hal.numerics.round_tf32``, ``np.clip`` and
    ml_dtypes' float8_e4m3fn, and ``np.clip(np.rint(...))`` and int8, for every non-NaN float32 (checked
    over all 2**32 of them, ``tests/kernels/test_round_float32.py``); a NaN stays NaN, but for int8, whose
    cast makes it 0. One pass where the casts make two to eight (800K floats to fp16 and back: 3.2 ms
    through numpy's casts), a loop per format so that each vectorises."""
    n = x.shape[0]
    if fmt == TF32:
        for i in range(n):
            out[U(i)] = _drop_bits(np.float32(x[U(i)] / scale), 13) * scale
    elif fmt == BF16:
        for i in range(n):
            out[U(i)] = _drop_bits(np.float32(x[U(i)] / scale), 16) * scale
    elif fmt == FP16:
        for i in range(n):
            out[U(i)] = _fp16(np.float32(x[U(i)] / scale)) * scale
    elif fmt == FP8:  # past 448 (0x43E00000): clipped to it, as np.clip before the cast
        for i in range(n):
            y = _narrow(np.float32(x[U(i)] / scale), 20, np.uint32(0x43E00000), np.float32(448),
                        np.uint32(0x3C800000), np.float32(0.001953125))  # normals from 2**-6, steps of 2**-9
            out[U(i)] = y * scale
    else:  # INT8 (+ 0 makes rint's -0.0 the +0 an integer has; an int8 holds no NaN: numpy's cast gives 0)
        for i in range(n):
            y = np.float32(x[U(i)] / scale)
            r = max(min(np.rint(y), np.float32(127)), np.float32(-127)) + np.float32(0)
            out[U(i)] = (r if y == y else np.float32(0)) * scale


@njit(inline="always")
def _finite_mag(v):
    """|v|, or 0 where v is infinite or NaN."""
    a = abs(v)
    return a if a <= np.float32(3.4028235e38) else np.float32(0)


@njit(signature=types.float32(_F32_RO))
def finite_abs_max(x):
    """The largest finite magnitude in x (0 where it has none), in eight running maxima: the LPU's
    per-tensor fp16 scale reads it, where numpy's max and min cost a pass and a call each."""
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = np.float32(0)
    n = x.shape[0]
    body = n - n % 8
    for i in range(0, body, 8):
        m0 = max(m0, _finite_mag(x[U(i)]))
        m1 = max(m1, _finite_mag(x[U(i + 1)]))
        m2 = max(m2, _finite_mag(x[U(i + 2)]))
        m3 = max(m3, _finite_mag(x[U(i + 3)]))
        m4 = max(m4, _finite_mag(x[U(i + 4)]))
        m5 = max(m5, _finite_mag(x[U(i + 5)]))
        m6 = max(m6, _finite_mag(x[U(i + 6)]))
        m7 = max(m7, _finite_mag(x[U(i + 7)]))
    for i in range(body, n):
        m0 = max(m0, _finite_mag(x[U(i)]))
    return max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))


@njit(signature=types.void(_F32_RO, _F32))
def round_fp16_per_tensor(x, out):
    """x through float16 with one power-of-two scale for the whole tensor, into ``out``: the scale
    puts x's largest finite magnitude in [2**14, 2**15), the binade below float16's top one, so one
    binade is left as headroom (the scale is 2**(e - 15) for a magnitude of m 2**e, 0.5 <= m < 1; 1
    when x has no finite non-zero value; never below float32's least subnormal, 2**-149, which every
    float32 is a multiple of), then ``round_float32``'s FP16 pass. One call where
    the maximum and the rounding were two, with Python between them (the LPU's MXM operands)."""
    amax = finite_abs_max(x)
    scale = np.float32(1)
    if amax > np.float32(0):
        scale = np.float32(math.ldexp(1.0, max(math.frexp(np.float64(amax))[1] - 15, -149)))
    for i in range(x.shape[0]):
        out[U(i)] = _fp16(np.float32(x[U(i)] / scale)) * scale


__all__ = ["BF16", "FP8", "FP16", "INT8", "TF32", "finite_abs_max", "round_float32", "round_fp16_per_tensor"]
