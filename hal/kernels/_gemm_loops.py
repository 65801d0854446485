"""Compiled loops that multiply through numpy's own sgemm (``hal.kernels.blas``) and run what a
fused step does after the product in the same call. Imported only by a caller that found
``blas.available()``, which bound the symbol these loops call.

Each product is the call numpy's matmul loop makes for float32 operands (numpy's
``matmul.c.src``): per matrix of a batch, ``cblas_sgemm(RowMajor, ta, tb, m, n, k, 1, a, lda, b,
ldb, 0, out, ldc)``, an operand passed as it lies (``NoTrans``, its row stride the leading
dimension) when its rows are unit-strided and at least as long as a row, else transposed when its
columns are. numpy copies an operand that is neither into a buffer first, takes gemv or a dot for
a dimension of 1 and syrk for a matrix times its own transpose; the callers send none of those
(``batch_ok`` checks the strides, and ``batched`` refuses a syrk pair before it writes anything),
so the arguments, and hence the bits, are numpy's. The elementwise passes after a product are the
same float32 operations as the numpy calls they replace (``hal.kernels._loops``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import types

from hal.kernels._loops import (
    _c,
    add_layer_norm_rows,
    bias_erf_gelu_arg,
    bias_tanh_gelu_arg,
    row_sums,
    softmax_prologue,
    softmax_scale,
)
from hal.kernels.blas import NO_TRANS, ROW_MAJOR, SYMBOL, TRANS
from hal.kernels.jit import njit

U = np.uintp
_I32, _I64, _F32S, _PTR = types.int32, types.int64, types.float32, types.voidptr
#: void cblas_sgemm(order, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), 64-bit integers
sgemm = types.ExternalFunction(SYMBOL, types.void(_I32, _I32, _I32, _I64, _I64, _I64, _F32S, _PTR, _I64,
                                                  _PTR, _I64, _F32S, _PTR, _I64))

_V = types.Array(types.float32, 1, "C", readonly=True)
_M_RO = types.Array(types.float32, 2, "C", readonly=True)
_M = types.Array(types.float32, 2, "C")
_Q_RO = types.Array(types.float32, 4, "A", readonly=True)  # a head split's view, any strides
_Q = types.Array(types.float32, 4, "C")
_OPS = types.Array(types.int64, 1, "C", readonly=True)
_MASK_B = types.Array(types.boolean, 2, "C", readonly=True)


def _by_rank(make: Any) -> list[Any]:
    """A row loop's signatures for an activation of 2 axes and of 3 (a batch of one: (1, m, k))."""
    return [make(2), make(3)]


@njit(inline="always")
def _product(pa, sam, san, pb, sbm, sbn, pc, m, n, k):
    """out (m x n, rows of n floats at pc) = a (m x k) @ b (k x n) from their element strides,
    each operand passed as numpy's ``matmul_matrixmatrix`` passes it."""
    if san == 1 and sam >= k:
        ta, lda = NO_TRANS, sam
    else:
        ta, lda = TRANS, san
    if sbn == 1 and sbm >= n:
        tb, ldb = NO_TRANS, sbm
    else:
        tb, ldb = TRANS, sbn
    sgemm(np.int32(ROW_MAJOR), np.int32(ta), np.int32(tb), m, n, k, np.float32(1.0), pa, lda, pb, ldb,
          np.float32(0.0), pc, n)


@njit(inline="always")
def _rows_product(a, b, out):
    """out = a @ b for row-major a of m x k values (any leading 1s) and b of (k, n): out as (m, n)."""
    k, n = b.shape
    m = a.size // k
    _product(a.ctypes.data, k, 1, b.ctypes.data, n, 1, out.ctypes.data, m, n, k)
    return out.reshape(m, n)


@njit(inline="always")
def _add_rows(out, bias, bias_first):
    """The bias (n values, or one) added along each of out's rows in place, ``bias + out`` where
    ``bias_first`` (the Add's operand order: a NaN's payload is its first operand's)."""
    m, n = out.shape
    if bias.shape[0] == 1:
        c = bias[0]
        for r in range(m):
            for j in range(n):
                out[U(r), U(j)] = c + out[U(r), U(j)] if bias_first else out[U(r), U(j)] + c
    elif bias_first:
        for r in range(m):
            for j in range(n):
                out[U(r), U(j)] = bias[U(j)] + out[U(r), U(j)]
    else:
        for r in range(m):
            for j in range(n):
                out[U(r), U(j)] = out[U(r), U(j)] + bias[U(j)]


@njit(signature=_by_rank(lambda d: types.void(_c(d, True), _M_RO, _c(d))))
def gemm_rows(a, b, out):
    """out = a @ b, a (m, k) up to leading 1s and b (k, n) row-major, m, k and n at least 2:
    np.matmul's one call."""
    _rows_product(a, b, out)


@njit(signature=_by_rank(lambda d: types.void(_c(d, True), _M_RO, _V, types.boolean, _c(d))))
def gemm_bias(a, b, bias, bias_first, out):
    """out = a @ b (``gemm_rows``), then the bias added along each row in place (``_add_rows``)."""
    _add_rows(_rows_product(a, b, out), bias, bias_first)


@njit(signature=_by_rank(lambda d: types.void(_c(d, True), _c(3, True), _M_RO, types.boolean, _c(d + 1))))
def gemm_group(a, w, bias, biased, out):
    """out[i] = a @ w[i] for each of the group's weights (np.matmul(a, w) broadcasts a: one call a
    weight), then bias[i] added along out[i]'s rows where ``biased`` (numpy's ``y + b[:, None]``)."""
    for i in range(w.shape[0]):
        y = _rows_product(a, w[i], out[i])
        if biased:
            _add_rows(y, bias[i], False)


@njit(signature=_by_rank(lambda d: types.void(_c(d, True), _M_RO, _V, types.float32, _V, types.float32,
                                               _c(d), _M)))
def gemm_erf_gelu_head(a, b, bias, k0, coef, top, y, p):
    """y = a @ b (``gemm_rows``), then ``_loops.bias_erf_gelu_arg`` over its rows into p."""
    bias_erf_gelu_arg(_rows_product(a, b, y), bias, k0, coef, top, p)


@njit(signature=_by_rank(lambda d: types.void(_c(d, True), _M_RO, _V, types.float32, types.float32, _c(d), _M)))
def gemm_tanh_gelu_head(a, b, bias, k0, k1, y, p):
    """y = a @ b (``gemm_rows``), then ``_loops.bias_tanh_gelu_arg`` over its rows into p."""
    bias_tanh_gelu_arg(_rows_product(a, b, y), bias, k0, k1, p)


@njit(signature=[types.void(_c(ra, True), _M_RO, _V, types.boolean, _c(rx, True), types.boolean, _V, _V,
                            types.boolean, types.float32, _c(ra), _c(max(ra, rx)), _c(max(ra, rx)))
                 for ra, rx in ((2, 2), (3, 3), (3, 2), (2, 3))])
def gemm_bias_add_layer_norm(a, b, bias, bias_first, x, product_first, scale, t, has_bias, eps, h, total, out):
    """h = a @ b + bias (``gemm_bias``), then the residual join with x and its LayerNormalization
    (``_loops.add_layer_norm_rows``: h + x where ``product_first``, else x + h) into total and out:
    a block's output projection, the residual Add and the next LayerNormalization in one call."""
    _add_rows(_rows_product(a, b, h), bias, bias_first)
    if product_first:
        add_layer_norm_rows(h, x, scale, t, has_bias, eps, total, out)
    else:
        add_layer_norm_rows(x, h, scale, t, has_bias, eps, total, out)


@njit(inline="always")
def _syrk_pair(a, b):
    """Whether numpy would take syrk for some matrix pair of the batch: one array's matrix times its
    own transpose (the same first element, square result, mirrored strides)."""
    s = 4  # float32's bytes
    am, an, bm, bn = a.strides[2] // s, a.strides[3] // s, b.strides[2] // s, b.strides[3] // s
    if a.shape[2] != b.shape[3] or am != bn or an != bm:
        return False
    ta = not (an == 1 and am >= a.shape[3])
    tb = not (bn == 1 and bm >= b.shape[3])
    if ta == tb:
        return False
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            if a[i, j].ctypes.data == b[i, j].ctypes.data:
                return True
    return False


@njit(inline="always")
def _batched(a, b, out):
    s = 4
    m, k, n = a.shape[2], a.shape[3], b.shape[3]
    am, an, bm, bn = a.strides[2] // s, a.strides[3] // s, b.strides[2] // s, b.strides[3] // s
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            _product(a[i, j].ctypes.data, am, an, b[i, j].ctypes.data, bm, bn, out[i, j].ctypes.data, m, n, k)


@njit(signature=types.boolean(_Q_RO, _Q_RO, _Q))
def batched(a, b, out):
    """out = a @ b over a batch of two axes, the operands' matrices in any layout ``batch_ok``
    accepted; False, with nothing written, where numpy would take syrk."""
    if _syrk_pair(a, b):
        return False
    _batched(a, b, out)
    return True


@njit(signature=types.boolean(_Q_RO, _Q_RO, _Q, _Q, _OPS, _V, _M_RO, _MASK_B, _OPS))
def scores_softmax_head(a, b, s, p, ops, consts, mask, cond, row_of):
    """The scores s = a @ b (``batched``), then the score chain's and the softmax's first pass into p
    (``_loops.softmax_prologue`` over their rows). False, with nothing written, where numpy would
    take syrk."""
    if _syrk_pair(a, b):
        return False
    _batched(a, b, s)
    n = s.shape[3]
    rows = s.size // n
    softmax_prologue(s.reshape(rows, n), p.reshape(rows, n), ops, consts, mask, cond, row_of)
    return True


@njit(signature=types.void(_Q, _Q_RO, _Q))
def softmax_tail_mix(e, c, out):
    """The softmax's last pass over its exponentials e (``_loops.softmax_scale``, in place), then
    out = e @ c (``batched``). e is the caller's own new array, so never c's memory: no syrk pair."""
    n = e.shape[3]
    softmax_scale(e.reshape(e.size // n, n))
    _batched(e, c, out)


@njit(signature=types.void(_Q, _Q_RO, types.Array(types.float32, 1, "C"), _Q))
def sums_mix_divide(e, c, sums, out):
    """Flash attention's end over its exponentials e: their row sums into ``sums``
    (``_loops.row_sums``), out = e @ c (``batched``), then each row of out divided by its sum, as
    ``acc /= l``. e is the caller's own new array, so never c's memory: no syrk pair."""
    n = e.shape[3]
    rows = e.size // n
    row_sums(e.reshape(rows, n), sums)
    _batched(e, c, out)
    o = out.reshape(rows, out.shape[3])
    for r in range(rows):
        t = sums[U(r)]
        for j in range(o.shape[1]):
            o[U(r), U(j)] = o[U(r), U(j)] / t


def batch_ok(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``batched`` multiplies a by b as np.matmul does: float32 arrays of 4 axes, the
    same batch, matrices of at least 2 by 2 that chain, each blasable as numpy says (its rows or its
    columns unit-strided and no shorter than the other axis's extent). The result must be a new
    C-contiguous array of np.matmul's shape."""
    if a.ndim != 4 or b.ndim != 4 or a.shape[:2] != b.shape[:2] or a.shape[3] != b.shape[2]:
        return False
    if min(a.shape[2], a.shape[3], b.shape[3]) < 2:
        return False
    return _blasable(a) and _blasable(b)


def _blasable(x: np.ndarray) -> bool:
    sm, sn = x.strides[2], x.strides[3]
    if sm % 4 or sn % 4:
        return False
    sm, sn = sm // 4, sn // 4
    return (sn == 1 and sm >= x.shape[3]) or (sm == 1 and sn >= x.shape[2])


def rows_ok(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the row loops (``gemm_rows`` and those after it) multiply a by b as np.matmul does:
    float32, C-contiguous, a of (m, k) up to leading 1s and b of (k, n), m, k and n at least 2."""
    return (a.dtype == np.float32 and b.dtype == np.float32 and a.flags.c_contiguous and b.flags.c_contiguous
            and a.ndim >= 2 and b.ndim == 2 and a.shape[-2] * a.shape[-1] == a.size and a.shape[-1] == b.shape[0]
            and min(a.shape[-2], a.shape[-1], b.shape[1]) >= 2)


__all__ = ["batch_ok", "batched", "gemm_bias", "gemm_bias_add_layer_norm", "gemm_erf_gelu_head", "gemm_group",
           "gemm_rows", "gemm_tanh_gelu_head", "rows_ok", "scores_softmax_head", "softmax_tail_mix", "sums_mix_divide"]
