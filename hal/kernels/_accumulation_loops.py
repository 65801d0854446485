"""Compiled loop of a matrix unit's own accumulation, where it is not IEEE fp32: Hopper's tensor
cores summing fp8 products (``hal_gpu.accumulation``). Read it as C, as ``hal.kernels._loops``,
which imports it so that ``jit.loops()`` reaches it.

The model, fitted to an H200 (``benchmarks/calibration_gpu_numerics.py``): the K axis runs in blocks
of ``block`` products (an fp8 wgmma's K is 32). In each block the products, exact, and the running
sum are aligned to the largest exponent among them — a product's exponent the sum of its operands'
— and each is truncated toward zero to ``bits`` binary places below it; they are summed exactly, and
the sum is kept to ``bits`` places below its own leading one (a 14-bit significand with 13), toward
zero. With fp8's numbers (13 places, blocks of 32) it gave every measured output bit for bit where
one kernel ran the whole K axis; with 25 places and blocks of 8 or 16, every TF32, bf16 and fp16 one.
"""

from __future__ import annotations

import numpy as np
from numba import types

from hal.kernels.jit import njit

_F32_2D_RO = types.Array(types.float32, 2, "C", readonly=True)
_F32_2D = types.Array(types.float32, 2, "C")
#: the exponent a zero is given: below any product's, so it never sets a block's alignment
_NONE = -100000


@njit(inline="always")
def _exponent(x):
    """floor(log2 |x|) of a float32 from its exponent bits (-127 for a subnormal; ``_NONE`` for 0)."""
    b = np.uint32(np.float32(x).view(np.uint32)) & np.uint32(0x7FFFFFFF)
    return _NONE if b == 0 else np.int64(b >> np.uint32(23)) - 127


@njit(inline="always")
def _pow2(e):
    """2.0**e for an exponent float64 holds as a normal, written as its encoding (ldexp is a call)."""
    return np.int64((np.int64(e) + 1023) << 52).view(np.float64)


@njit(inline="always")
def _toward_zero(s):
    """float64 s as a float32 rounded toward zero."""
    f = np.float32(s)
    if abs(np.float64(f)) > abs(s):
        f = np.uint32(np.uint32(f.view(np.uint32)) - np.uint32(1)).view(np.float32)
    return f


@njit(inline="always")
def _pow2_f32(e):
    """2.0**e as a float32, for an exponent float32 holds as a normal."""
    return np.int32((np.int32(e) + 127) << 23).view(np.float32)


@njit(inline="always")
def _kept(s, bits):
    """float64 s kept to ``bits`` binary places below its own leading one (toward zero), as a float32."""
    if s == 0.0:
        return np.float32(0)
    lead = ((np.int64(np.float64(s).view(np.int64)) >> 52) & 0x7FF) - 1023
    return _toward_zero(np.trunc(s * _pow2(bits - lead)) * _pow2(lead - bits))


@njit(inline="always")
def _narrow(x):
    """Whether every element of float32 ``x`` has at most 12 significant bits (the low 12 of its 23
    stored ones clear: fp8, fp16, bf16 and TF32 values), so that a product of two is exact in float32."""
    for v in x.reshape(-1):
        if np.uint32(np.float32(v).view(np.uint32)) & np.uint32(0xFFF):
            return False
    return True


@njit(inline="always")
def _block_tops(a, i, lo, hi, eb, acc, top):
    """top[j] = the largest exponent among the running sum acc[j] and the block's products
    a[i, t] b[t, j] (t in [lo, hi)), a product's the sum of its operands' (``eb``: B's)."""
    n = top.shape[0]
    for j in range(n):
        top[j] = _exponent(acc[j])
    for t in range(lo, hi):
        ea = _exponent(a[i, t])
        if ea == _NONE:
            continue
        for j in range(n):  # (a zero's _NONE keeps ea + eb below every real exponent)
            top[j] = max(top[j], ea + eb[t, j])


@njit(signature=types.void(_F32_2D_RO, _F32_2D_RO, types.int64, types.int64, types.int64, _F32_2D))
def truncated_block_dot(a, b, block, bits, promote, out):
    """out = a @ b (a: M x K, b: K x N, float32, finite) summed as the model above says; with
    ``promote`` > 0 the running sum is added to an fp32 total (round to nearest) and restarted every
    ``promote`` blocks, as cuBLASLt does when fast accumulation is off. A row of ``out`` at a time,
    its N sums side by side (the loops over N vectorise). Where every operand has at most 12
    significant bits (fp8 codes) and a block's truncated terms fit float32's 24 (``bits`` up to 17 for
    blocks of up to 64), the products and the block's sum are float32, twice float64's lanes (the same
    bits: every step is exact in both): bert-bench's 128 x 384 x 1536 fp8 products took 8.9 ms, against
    13.9 in float64."""
    m, k = a.shape
    n = b.shape[1]
    eb = np.empty((k, n), dtype=np.int32)
    for t in range(k):
        for j in range(n):
            eb[t, j] = _exponent(b[t, j])
    # the block's terms are integers in units of 2**(top - bits), each below 2**(bits + 1), with the
    # running sum at most block + 1 of them
    narrow = bits + 1 + np.int64(np.ceil(np.log2(block + 1))) <= 24 and _narrow(a) and _narrow(b)
    bd = np.empty((k if not narrow else 0, n), dtype=np.float64)  # (converted once, not once a row)
    for t in range(bd.shape[0]):
        for j in range(n):
            bd[t, j] = b[t, j]
    acc = np.empty(n, dtype=np.float32)
    total = np.empty(n, dtype=np.float32)
    top = np.empty(n, dtype=np.int64)
    s = np.empty(n, dtype=np.float64)
    inv = np.empty(n, dtype=np.float64)
    q = np.empty(n, dtype=np.float64)
    s32 = np.empty(n, dtype=np.float32)  # (narrow: the sum in units of 2**(top - bits))
    inv32 = np.empty(n, dtype=np.float32)
    for i in range(m):
        acc[:] = 0
        total[:] = 0
        blocks = 0
        for lo in range(0, k, block):
            hi = min(k, lo + block)
            _block_tops(a, i, lo, hi, eb, acc, top)
            if narrow:
                for j in range(n):  # 2**(bits - top); 0 where the block is all zeros
                    inv32[j] = _pow2_f32(bits - top[j]) if top[j] > _NONE // 2 else np.float32(0)
                for j in range(n):
                    s32[j] = np.trunc(acc[j] * inv32[j])
                for t in range(lo, hi):
                    av = a[i, t]
                    if av == 0:
                        continue
                    for j in range(n):
                        s32[j] += np.trunc(av * b[t, j] * inv32[j])
                for j in range(n):
                    acc[j] = _kept(np.float64(s32[j]) * _pow2(top[j] - bits), bits) if s32[j] != 0 else 0
            else:
                for j in range(n):  # 2**(bits - top) and 2**(top - bits); 0 where the block is all zeros
                    some = top[j] > _NONE // 2
                    inv[j] = _pow2(bits - top[j]) if some else 0.0
                    q[j] = _pow2(top[j] - bits) if some else 0.0
                for j in range(n):
                    s[j] = np.trunc(np.float64(acc[j]) * inv[j]) * q[j]
                for t in range(lo, hi):
                    av = np.float64(a[i, t])
                    if av == 0.0:
                        continue
                    for j in range(n):
                        s[j] += np.trunc(av * bd[t, j] * inv[j]) * q[j]
                for j in range(n):  # the block's sum kept to ``bits`` places below its own leading one
                    acc[j] = _kept(s[j], bits)
            blocks += 1
            if promote > 0 and blocks % promote == 0:
                for j in range(n):
                    total[j] = np.float32(total[j] + acc[j])
                    acc[j] = 0
        for j in range(n):
            out[i, j] = np.float32(total[j] + acc[j]) if promote > 0 else acc[j]


__all__ = ["truncated_block_dot"]
