"""Loop nests compiled by numba (``hal.kernels.jit``; read them as C). Imported only by a kernel
that found ``jit.enabled()``: importing this module imports numba.

Two families here; the number formats' rounding (``_rounding_loops``), linear quantisation
(``_quant_loops``), a matrix unit's own accumulation (``_accumulation_loops``) and the ai.onnx.ml
kernels' loops, a tree walk among them (``_ml_loops``), live beside them and are reached through
this module too. Window loops (a depthwise 3x3 conv, 2-D pools) read each window in place and write
their output once, where the numpy kernels make a pass over memory per tap. Row loops (erf's
polynomial, softmax's passes around numpy's exp with the scale and mask before them,
LayerNormalization, BatchNormalization's multiply-add a channel and the Relu after it, a key
block of the GPU target's flash attention) do in one call per row what numpy does in several to
twenty calls over the whole tensor: on tiny-gpt's rows of 16 to 256 floats each numpy call costs
more than its arithmetic, and on a CNN's channels each call is a pass over memory. The callers
(``hal.kernels.nn``, ``hal.kernels.pool``, ``elementwise``, ``activation``, ``normalization``,
``fused``, ``epilogue``, ``fused_relu``, ``hal_gpu.attention``) check shapes, dtypes and parameters
and allocate every buffer; these loops allocate nothing.

Indices are cast to ``np.uintp``: numba then knows them non-negative, skips the wraparound of
negative indices, and the loops vectorise (SqueezeNet's stem pool as one flat-indexed loop: 0.63 ms,
against 2.6 with signed indices). Reductions keep eight running values: a single running sum
would be one chain of dependent additions. They stay eight scalar registers, not one vector:
numba leaves LLVM's SLP vectoriser off (since 0.57, for miscompilations), and with it on
LayerNormalization's rows run 1.5x faster alone (BERT-bench's 512x384: 131 -> 88 us, the same bits)
but whole runs do not move (tiny-gpt 0.998x, BERT-bench 0.988x run against run), so it stays off.
numba contracts no multiply-add, so a loop rounds each operation as numpy does. The row loops
declare their signatures (read-only inputs accept writable arrays): they are compiled once, and
any other argument type is a TypeError, never a second compile inside a run. A loop whose input
and output may overlap runs a lane at a time (LLVM's overlap check fails), so the row loops work
in place on one array or write to a buffer distinct from their input.
"""

from __future__ import annotations

import numpy as np
from numba import types

# the number formats' loops, linear quantisation's, a matrix unit's accumulation and the ai.onnx.ml
# kernels' live beside these; kernels reach them here
from hal.kernels._accumulation_loops import truncated_block_dot
from hal.kernels._ml_loops import (
    divide_by_row_sum,
    first_max_rows,
    forest_leaves,
    forest_sums,
    shift_by_row_max,
)
from hal.kernels._quant_loops import dequantize_float32, quantize_float32
from hal.kernels._rounding_loops import (
    BF16,
    FP8,
    FP16,
    INT8,
    TF32,
    finite_abs_max,
    round_float32,
    round_fp16_per_tensor,
)
from hal.kernels.jit import njit

U = np.uintp


@njit
def depthwise3x3(x, w, b, sh, sw, pt, pl, out, pad, width):
    """A depthwise 3x3 conv at dilation 1: x (N, C, H, W), any strides (a channel shuffle's view
    reads in place); w (C * mult, 9), b (C * mult,), out (N, C * mult, OH, OW) C-contiguous; ``pad``
    a zeroed buffer of (OH - 1) * sh + 3 rows of ``width`` = (OW - 1) * sw + 3: each channel's image
    is copied into it at (pt, pl), so a tap reads a zero where the window leaves the image. Each
    output is the bias plus the nine products in row-major tap order, one pass over the output.
    (The tap offsets are constants: a dilation as a variable there kept the loop from vectorising,
    2x slower.)"""
    n_img, c_in, h, wd = x.shape
    mult = w.shape[0] // c_in
    oh, ow = out.shape[2], out.shape[3]
    rows = (oh - 1) * sh + 3
    r0, r1 = max(0, -pt), min(h, rows - pt)  # the image rows and columns that land in the buffer
    c0, c1 = max(0, -pl), min(wd, width - pl)
    for n in range(n_img):
        for c in range(c_in):
            for r in range(r0, r1):
                base = (r + pt) * width + pl
                for q in range(c0, c1):
                    pad[U(base + q)] = x[U(n), U(c), U(r), U(q)]
            for m in range(mult):
                f = c * mult + m
                bf = b[f]
                w0, w1, w2 = w[f, 0], w[f, 1], w[f, 2]
                w3, w4, w5 = w[f, 3], w[f, 4], w[f, 5]
                w6, w7, w8 = w[f, 6], w[f, 7], w[f, 8]
                for r in range(oh):
                    p0 = r * sh * width
                    p1 = p0 + width
                    p2 = p1 + width
                    for q in range(ow):
                        a = q * sw
                        out[n, f, r, q] = (bf + w0 * pad[U(p0 + a)] + w1 * pad[U(p0 + a + 1)] + w2 * pad[U(p0 + a + 2)]
                                           + w3 * pad[U(p1 + a)] + w4 * pad[U(p1 + a + 1)] + w5 * pad[U(p1 + a + 2)]
                                           + w6 * pad[U(p2 + a)] + w7 * pad[U(p2 + a + 1)] + w8 * pad[U(p2 + a + 2)])
    return out


@njit(inline="always")
def _reduce(u, v, is_max):
    """max(u, v) with NaN winning on either side, as np.maximum; else u + v."""
    if is_max:
        return u if (u > v or u != u) else v
    return u + v


@njit
def pool2d(x, kh, kw, sh, sw, dh, dw, pt, pl, is_max, counts, out, row, across):
    """A 2-D max pool (``is_max``) or sum pool divided by ``counts`` (OH, OW): x (N, C, H, W), any
    strides; out (N, C, OH, OW); ``row`` and ``across`` two buffers of (OW - 1) * sw + (kw - 1) * dw
    + 1 elements. Per output row, the window's input rows are reduced into ``row`` (one loop when
    all of them are in the image; padding, and windows past the end, read the identity: -inf or 0).
    A 3-wide window at stride 1 or 2, or a 2-wide one at stride 2, then takes its columns straight
    from ``row``; any other reduces its columns at every position into ``across`` and keeps every
    sw-th. Loops that vectorise. The values are the numpy passes' (``hal.kernels.pool``), which
    reduce rows first and then columns in the same order, adding the padding's zeros (x + 0 is x)
    and then dividing: the same operations on every counted element, up to the sign of a zero."""
    n_img, c_in, h, wd = x.shape
    oh, ow = out.shape[2], out.shape[3]
    width = row.shape[0]
    lo, hi = min(max(pl, 0), width), min(width, max(pl + wd, 0))  # row positions inside the image
    span = width - (kw - 1) * dw  # positions whose whole column window fits the row
    low = -np.inf if is_max else 0.0
    pairs = sw == 2 and dw == 1
    for q in range(width):  # positions outside [lo, hi) are padding, never written again
        row[U(q)] = low
    for n in range(n_img):
        for c in range(c_in):
            for r in range(oh):
                top = r * sh - pt
                if kh == 3 and top >= 0 and top + 2 * dh < h:  # all the window's rows in the image: one loop
                    for q in range(lo, hi):
                        u = _reduce(x[n, c, top, U(q - pl)], x[n, c, top + dh, U(q - pl)], is_max)
                        row[U(q)] = _reduce(u, x[n, c, top + 2 * dh, U(q - pl)], is_max)
                elif kh == 2 and top >= 0 and top + dh < h:
                    for q in range(lo, hi):
                        row[U(q)] = _reduce(x[n, c, top, U(q - pl)], x[n, c, top + dh, U(q - pl)], is_max)
                else:
                    first = True
                    for i in range(kh):
                        rr = top + i * dh
                        if rr < 0 or rr >= h:
                            continue
                        if first:
                            for q in range(lo, hi):
                                row[U(q)] = x[n, c, rr, U(q - pl)]
                            first = False
                        else:
                            for q in range(lo, hi):
                                row[U(q)] = _reduce(row[U(q)], x[n, c, rr, U(q - pl)], is_max)
                    if first:  # every window row is padding
                        for q in range(lo, hi):
                            row[U(q)] = low
                if pairs and kw == 3:  # a literal stride: the loop vectorises, 1.3x the general one
                    for q in range(ow):
                        u = _reduce(row[U(2 * q)], row[U(2 * q + 1)], is_max)
                        out[n, c, r, q] = _reduce(u, row[U(2 * q + 2)], is_max)
                elif sw == 1 and dw == 1 and kw == 3:
                    for q in range(ow):
                        u = _reduce(row[U(q)], row[U(q + 1)], is_max)
                        out[n, c, r, q] = _reduce(u, row[U(q + 2)], is_max)
                elif pairs and kw == 2:
                    for q in range(ow):
                        out[n, c, r, q] = _reduce(row[U(2 * q)], row[U(2 * q + 1)], is_max)
                else:
                    for q in range(span):
                        across[U(q)] = row[U(q)]
                    for j in range(1, kw):
                        for q in range(span):
                            across[U(q)] = _reduce(across[U(q)], row[U(q + j * dw)], is_max)
                    for q in range(ow):
                        out[n, c, r, q] = across[U(q * sw)]
                if not is_max:
                    for q in range(ow):
                        out[n, c, r, q] = out[n, c, r, q] / counts[r, q]
    return out


_F32_RO = types.Array(types.float32, 1, "C", readonly=True)
_F32 = types.Array(types.float32, 1, "C")
_ROWS_RO = types.Array(types.float32, 2, "C", readonly=True)
_ROWS = types.Array(types.float32, 2, "C")


@njit(inline="always")
def _erf_arg(v, top, c0, c1, c2, c3, c4, c5, c6, c7, c8):
    """v p(min(v^2, top)), p by Horner from its coefficients, highest first (see ``erf_tanh_arg``)."""
    s = v * v
    s = top if s > top else s  # NaN stays NaN, as np.minimum keeps it
    p = s * c0 + c1
    p = p * s + c2
    p = p * s + c3
    p = p * s + c4
    p = p * s + c5
    p = p * s + c6
    p = p * s + c7
    p = p * s + c8
    return p * v


@njit(signature=types.void(_F32_RO, _F32_RO, types.float32, _F32))
def erf_tanh_arg(x, coef, top, out):
    """x p(min(x^2, top)) for float32 x into ``out``: the argument of the tanh in
    ``hal.kernels.elementwise.erf_float32_block``, p of degree 8 by Horner from its 9 float32
    coefficients, highest first. The same float32 operations in the same order as that kernel's
    ufunc passes (numba contracts no multiply-add), so the same bits, in one pass instead of 19.
    ``out`` must not be ``x``: where the two overlap the loop runs a lane at a time (4K floats: 16.7
    against 2.6 us)."""
    c0, c1, c2, c3, c4, c5, c6, c7, c8 = coef[0], coef[1], coef[2], coef[3], coef[4], coef[5], coef[6], coef[7], coef[8]
    for i in range(x.shape[0]):
        out[U(i)] = _erf_arg(x[U(i)], top, c0, c1, c2, c3, c4, c5, c6, c7, c8)


@njit(signature=types.void(_ROWS, _F32_RO, types.float32, _F32_RO, types.float32, _ROWS))
def bias_erf_gelu_arg(t, b, k, coef, top, p):
    """The head of an erf GELU after a product's bias Add, ``((x / k0 -> erf) + k1) * x * k2``
    (``hal.kernels.epilogue.MatMulEpilogue``): t += b along each row, in place (the Add), then into
    ``p`` the argument of the tanh that gives erf(t / k) (``erf_tanh_arg``)."""
    c0, c1, c2, c3, c4, c5, c6, c7, c8 = coef[0], coef[1], coef[2], coef[3], coef[4], coef[5], coef[6], coef[7], coef[8]
    for r in range(t.shape[0]):
        for j in range(t.shape[1]):
            v = t[U(r), U(j)] + b[U(j)]
            t[U(r), U(j)] = v
            p[U(r), U(j)] = _erf_arg(v / k, top, c0, c1, c2, c3, c4, c5, c6, c7, c8)


@njit(signature=types.void(_ROWS, _F32_RO, types.float32, types.float32, _ROWS))
def bias_tanh_gelu_arg(t, b, k0, k1, p):
    """The head of a tanh GELU after a product's bias Add, ``k3 (x (k2 + tanh(k1 (x + k0 x^3))))``
    as exported (x^3 as x (x x)): t += b along each row, in place, then the tanh's argument into ``p``."""
    for r in range(t.shape[0]):
        for j in range(t.shape[1]):
            v = t[U(r), U(j)] + b[U(j)]
            t[U(r), U(j)] = v
            p[U(r), U(j)] = k1 * (v + k0 * (v * (v * v)))


@njit(signature=types.void(_ROWS, _ROWS_RO, types.float32, types.float32))
def gelu_tail(t, e, one, half):
    """The tail of either GELU head's form, in place: t = (t (e + one)) half, e the tanh (or erf)."""
    for r in range(t.shape[0]):
        for j in range(t.shape[1]):
            t[U(r), U(j)] = (t[U(r), U(j)] * (e[U(r), U(j)] + one)) * half


@njit(inline="always")
def _row_sum(x, r, n, zero):
    """The sum of row r's n float32 values in eight running sums of ``zero``'s type (float64 for a
    mean that keeps its digits), added pairwise."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = zero
    body = n - n % 8
    for i in range(0, body, 8):
        a0 += x[U(r), U(i)]
        a1 += x[U(r), U(i + 1)]
        a2 += x[U(r), U(i + 2)]
        a3 += x[U(r), U(i + 3)]
        a4 += x[U(r), U(i + 4)]
        a5 += x[U(r), U(i + 5)]
        a6 += x[U(r), U(i + 6)]
        a7 += x[U(r), U(i + 7)]
    for i in range(body, n):
        a0 += x[U(r), U(i)]
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@njit(inline="always")
def _above(m, v):
    """v where it is above m, else m: a NaN v never is (it is skipped)."""
    return v if v > m else m


@njit(inline="always")
def _row_max(x, r, n):
    """The largest of row r's values, NaN skipped (-inf where all are NaN), in eight running maxima."""
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = np.float32(-np.inf)
    body = n - n % 8
    for i in range(0, body, 8):
        m0 = _above(m0, x[U(r), U(i)])
        m1 = _above(m1, x[U(r), U(i + 1)])
        m2 = _above(m2, x[U(r), U(i + 2)])
        m3 = _above(m3, x[U(r), U(i + 3)])
        m4 = _above(m4, x[U(r), U(i + 4)])
        m5 = _above(m5, x[U(r), U(i + 5)])
        m6 = _above(m6, x[U(r), U(i + 6)])
        m7 = _above(m7, x[U(r), U(i + 7)])
    for i in range(body, n):
        m0 = _above(m0, x[U(r), U(i)])
    return _above(_above(_above(m0, m1), _above(m2, m3)), _above(_above(m4, m5), _above(m6, m7)))


@njit(signature=types.void(_ROWS))
def softmax_shift(e):
    """Each row of e less its maximum, in place: a softmax's first pass. A row with a NaN ends all
    NaN through the sum, one of all NaN through -inf, as ``row_max``'s fmax does. (In place, one
    array: two that might overlap would cost the loop its vectors.)"""
    rows, n = e.shape
    for r in range(rows):
        m = _row_max(e, r, n)
        for i in range(n):
            e[U(r), U(i)] = e[U(r), U(i)] - m


@njit(signature=types.void(_ROWS))
def softmax_scale(e):
    """Each row of e (a softmax's exponentials) divided by its sum, in place: its last pass."""
    rows, n = e.shape
    for r in range(rows):
        t = _row_sum(e, r, n, np.float32(0))
        for i in range(n):
            e[U(r), U(i)] = e[U(r), U(i)] / t


#: the operations ``softmax_prologue`` applies, each to the running value v of a row, with its
#: scalar c or the mask's value m at that element (``hal.kernels.fused.Region``'s score chains)
ADD, SUB, RSUB, MUL, DIV, RDIV = 0, 1, 2, 3, 4, 5    # v + c, v - c, c - v, v * c, v / c, c / v
MADD, MSUB, RMSUB, MMUL, MDIV, RMDIV = 6, 7, 8, 9, 10, 11  # the same with m for c
KEEP, PICK = 12, 13                                  # m ? v : c and m ? c : v (a Where, m its condition)
_OPS = types.Array(types.int64, 1, "C", readonly=True)
_MASK_B = types.Array(types.boolean, 2, "C", readonly=True)
_ROW_MAP = types.Array(types.int64, 1, "C", readonly=True)


@njit(signature=types.void(_ROWS_RO, _ROWS, _OPS, _F32_RO, _ROWS_RO, _MASK_B, _ROW_MAP))
def softmax_prologue(x, out, ops, consts, mask, cond, row_of):
    """A softmax's first pass with the elementwise chain before it: each row r of x goes through
    ``ops`` (codes above; op k's scalar consts[k], its mask row ``mask[row_of[r]]`` or condition
    row ``cond[row_of[r]]``) into out[r], which then has its maximum subtracted (NaN skipped, as
    ``softmax_shift``). Each operation is one pass over the row, in the chain's order, rounded as
    numpy's ufunc: the bits of the chain's numpy calls and ``softmax_shift`` after them. ``out`` is
    not x (distinct buffers keep the loops vectorised)."""
    rows, n = x.shape
    for r in range(rows):
        q = U(row_of[U(r)])
        for i in range(n):
            out[U(r), U(i)] = x[U(r), U(i)]
        for k in range(ops.shape[0]):
            op = ops[U(k)]
            c = consts[U(k)]
            if op == ADD:
                for i in range(n):
                    out[U(r), U(i)] = out[U(r), U(i)] + c
            elif op == SUB:
                for i in range(n):
                    out[U(r), U(i)] = out[U(r), U(i)] - c
            elif op == RSUB:
                for i in range(n):
                    out[U(r), U(i)] = c - out[U(r), U(i)]
            elif op == MUL:
                for i in range(n):
                    out[U(r), U(i)] = out[U(r), U(i)] * c
            elif op == DIV:
                for i in range(n):
                    out[U(r), U(i)] = out[U(r), U(i)] / c
            elif op == RDIV:
                for i in range(n):
                    out[U(r), U(i)] = c / out[U(r), U(i)]
            elif op == MADD:
                for i in range(n):
                    out[U(r), U(i)] = out[U(r), U(i)] + mask[q, U(i)]
            elif op == MSUB:
                for i in range(n):
                    out[U(r), U(i)] = out[U(r), U(i)] - mask[q, U(i)]
            elif op == RMSUB:
                for i in range(n):
                    out[U(r), U(i)] = mask[q, U(i)] - out[U(r), U(i)]
            elif op == MMUL:
                for i in range(n):
                    out[U(r), U(i)] = out[U(r), U(i)] * mask[q, U(i)]
            elif op == MDIV:
                for i in range(n):
                    out[U(r), U(i)] = out[U(r), U(i)] / mask[q, U(i)]
            elif op == RMDIV:
                for i in range(n):
                    out[U(r), U(i)] = mask[q, U(i)] / out[U(r), U(i)]
            elif op == KEEP:
                for i in range(n):
                    out[U(r), U(i)] = out[U(r), U(i)] if cond[q, U(i)] else c
            else:  # PICK
                for i in range(n):
                    out[U(r), U(i)] = c if cond[q, U(i)] else out[U(r), U(i)]
        m = _row_max(out, r, n)
        for i in range(n):
            out[U(r), U(i)] = out[U(r), U(i)] - m


@njit(signature=types.void(_ROWS, _F32_RO, _F32, _F32, types.boolean, types.float32))
def online_shift(s, m_old, m_new, safe, first, lowest):
    """A key block of flash attention's scores (``hal_gpu.attention``), each row less its running
    maximum, in place. m_new[r] is the larger of m_old[r] (not read when ``first``) and the row's
    maximum (NaN skipped, as fmax; a NaN m_old[r] stays NaN, as np.maximum keeps it); safe[r], what
    the row has subtracted, is the larger of m_new[r] and ``lowest``: a row masked in full so far
    subtracts a finite value, so exp(-inf) is still 0 where -inf - -inf would be NaN."""
    rows, n = s.shape
    for r in range(rows):
        mb = _row_max(s, r, n)
        if not first:
            old = m_old[U(r)]
            if old > mb or old != old:
                mb = old
        m_new[U(r)] = mb
        sf = mb if (mb > lowest or mb != mb) else lowest
        safe[U(r)] = sf
        for i in range(n):
            s[U(r), U(i)] = s[U(r), U(i)] - sf


@njit(signature=types.void(_ROWS_RO, _F32))
def row_sums(x, out):
    """The sum of each row of x into ``out``, eight running sums a row (flash attention's row sums
    of its probabilities: one call, where a BLAS matrix-vector product costs more on short rows)."""
    rows, n = x.shape
    for r in range(rows):
        out[U(r)] = _row_sum(x, r, n, np.float32(0))


@njit(signature=types.void(_ROWS_RO, _F32_RO, _F32_RO, types.boolean, types.float32, _ROWS))
def layer_norm_rows(x, scale, bias, has_bias, eps, out):
    """LayerNormalization of each row of x into ``out`` (not ``x``), in float32 as ONNX's
    stash type: the mean (summed in float64, then rounded), the variance of x - mean (two passes,
    not E[x^2] - mean^2), then (x - mean) * (1 / sqrt(var + eps)) * scale + bias, rounded at each
    step as the numpy kernel does; its sums are eight running sums rather than a BLAS
    matrix-vector product's. A row of mean -300 and spread 0.1 is off by 5e-4 at worst, as
    onnxruntime's, where the numpy kernel's float32 mean is off by 1.6e-3."""
    rows, n = x.shape
    for r in range(rows):
        mean = np.float32(_row_sum(x, r, n, 0.0) / n)
        v0 = v1 = v2 = v3 = v4 = v5 = v6 = v7 = np.float32(0)
        body = n - n % 8
        for i in range(0, body, 8):
            d0 = x[U(r), U(i)] - mean
            d1 = x[U(r), U(i + 1)] - mean
            d2 = x[U(r), U(i + 2)] - mean
            d3 = x[U(r), U(i + 3)] - mean
            d4 = x[U(r), U(i + 4)] - mean
            d5 = x[U(r), U(i + 5)] - mean
            d6 = x[U(r), U(i + 6)] - mean
            d7 = x[U(r), U(i + 7)] - mean
            v0 += d0 * d0
            v1 += d1 * d1
            v2 += d2 * d2
            v3 += d3 * d3
            v4 += d4 * d4
            v5 += d5 * d5
            v6 += d6 * d6
            v7 += d7 * d7
        for i in range(body, n):
            d0 = x[U(r), U(i)] - mean
            v0 += d0 * d0
        var = (((v0 + v1) + (v2 + v3)) + ((v4 + v5) + (v6 + v7))) / np.float32(n) + eps
        inv = np.float32(1) / np.sqrt(var)
        if has_bias:
            for i in range(n):
                out[U(r), U(i)] = (x[U(r), U(i)] - mean) * inv * scale[U(i)] + bias[U(i)]
        else:
            for i in range(n):
                out[U(r), U(i)] = (x[U(r), U(i)] - mean) * inv * scale[U(i)]


def _c(ndim, readonly=False):
    """A float32 row-major array type of ``ndim`` axes (read-only inputs accept writable arrays)."""
    return types.Array(types.float32, ndim, "C", readonly=readonly)


@njit(signature=types.void(_c(3, True), _F32_RO, _F32_RO, types.boolean, types.float32, _c(3)))
def layer_norm_3d(x, scale, bias, has_bias, eps, out):
    """``layer_norm_rows`` of a row-major (b, m, n) x into ``out`` of its shape, viewed as rows here
    (a transformer's activations as they are: two reshapes fewer a call)."""
    n = x.shape[2]
    rows = x.size // n
    layer_norm_rows(x.reshape(rows, n), scale, bias, has_bias, eps, out.reshape(rows, n))


@njit(signature=[types.void(_c(ra, True), _c(rb, True), _F32_RO, _F32_RO, types.boolean, types.float32,
                            _c(max(ra, rb)), _c(max(ra, rb))) for ra, rb in ((2, 2), (3, 3), (3, 2), (2, 3))])
def add_layer_norm_rows(a, b, scale, bias, has_bias, eps, total, out):
    """a + b into ``total`` (float32 sums, as numpy's add), then ``layer_norm_rows`` of it into
    ``out``: a residual join and the LayerNormalization reading it (onnxruntime's
    SkipLayerNormalization) in one call, the bits of the two kernels in turn. ``total`` and ``out``
    are distinct from each other and from a and b. The arrays are row-major, of 2 axes or 3 (a
    transformer's (1, 16, 64) activations, taken as they are: four reshapes were 0.4 us of tiny-gpt's
    3 us step). (Sharing a row's body through a helper instead cost an array's reference counting a
    call: tiny-gpt's 16x64 LayerNormalization 0.97 -> 1.6 us.)"""
    n = total.shape[-1]
    rows = total.size // n
    a, b, total, out = a.reshape(rows, n), b.reshape(rows, n), total.reshape(rows, n), out.reshape(rows, n)
    for r in range(rows):
        for i in range(n):
            total[U(r), U(i)] = a[U(r), U(i)] + b[U(r), U(i)]
    layer_norm_rows(total, scale, bias, has_bias, eps, out)


@njit(signature=types.void(_ROWS_RO, _F32_RO, _F32_RO, types.boolean, _ROWS))
def channel_affine(x, a, b, relu, out):
    """x * a + b per channel into ``out`` (not ``x``), then max(., +0) where ``relu``: row r of x is
    one image's channel r % len(a) (an NCHW tensor as (N*C, H*W)). Inference BatchNormalization
    folded into one multiply-add a channel, and the Relu after it, in one pass where numpy makes
    two or three over the tensor; rounded at each operation as numpy's multiply and add, and the
    max keeps a NaN and turns -0 into +0 as ``np.maximum(y, 0)`` does, so the same bits."""
    rows, n = x.shape
    c = a.shape[0]
    zero = np.float32(0)
    for r in range(rows):
        ar = a[U(r % c)]
        br = b[U(r % c)]
        if relu:
            for i in range(n):
                v = x[U(r), U(i)] * ar + br
                out[U(r), U(i)] = v if (v > zero or v != v) else zero
        else:
            for i in range(n):
                out[U(r), U(i)] = x[U(r), U(i)] * ar + br


@njit(signature=types.void(_F32_RO, _F32_RO, _F32))
def add_relu(a, b, out):
    """max(a + b, +0) into ``out`` (neither a nor b): an Add and the Relu after it (ResNet's residual
    joins) in one pass where numpy makes two, rounded as numpy's add, and the max keeps a NaN and
    turns -0 into +0 as ``np.maximum(y, 0)`` does (``channel_affine``), so the same bits."""
    zero = np.float32(0)
    for i in range(a.shape[0]):
        v = a[U(i)] + b[U(i)]
        out[U(i)] = v if (v > zero or v != v) else zero


@njit(signature=types.void(_F32, _F32_RO, types.boolean))
def add_relu_into(t, o, t_first):
    """``add_relu`` into ``t``, one of its operands, o the other: t + o where ``t_first``, else o + t."""
    zero = np.float32(0)
    if t_first:
        for i in range(t.shape[0]):
            v = t[U(i)] + o[U(i)]
            t[U(i)] = v if (v > zero or v != v) else zero
    else:
        for i in range(t.shape[0]):
            v = o[U(i)] + t[U(i)]
            t[U(i)] = v if (v > zero or v != v) else zero


def warm() -> None:
    """Each window loop once on a tiny float32 input, contiguous and strided (a view's layout is a
    machine code of its own): what a model's kernels call, loaded before a run needs it. (The row
    loops declare their signatures: importing this module already loaded them.)"""
    x = np.zeros((1, 2, 4, 4), dtype=np.float32)
    counts = np.ones((2, 2), dtype=np.float32)
    counts.flags.writeable = False
    for v in (x, x.transpose(0, 1, 3, 2)):
        for is_max in (True, False):  # (the divisor is read-only: cached per geometry)
            pool2d(v, 3, 3, 1, 1, 1, 1, 0, 0, is_max, counts, np.empty((1, 2, 2, 2), dtype=np.float32),
                   np.empty(4, dtype=np.float32), np.empty(4, dtype=np.float32))
        depthwise3x3(v, np.zeros((2, 9), dtype=np.float32), np.zeros(2, dtype=np.float32), 1, 1, 0, 0,
                     np.empty((1, 2, 2, 2), dtype=np.float32), np.zeros(16, dtype=np.float32), 4)


__all__ = ["BF16", "FP8", "FP16", "INT8", "TF32", "add_layer_norm_rows", "add_relu", "add_relu_into",
           "bias_erf_gelu_arg", "bias_tanh_gelu_arg", "channel_affine", "depthwise3x3", "dequantize_float32",
           "divide_by_row_sum", "erf_tanh_arg", "finite_abs_max", "first_max_rows",
           "forest_leaves", "forest_sums", "gelu_tail", "layer_norm_3d", "layer_norm_rows", "online_shift", "pool2d",
           "quantize_float32", "round_float32", "round_fp16_per_tensor", "row_sums", "shift_by_row_max",
           "softmax_prologue", "softmax_scale", "softmax_shift", "truncated_block_dot", "warm"]
