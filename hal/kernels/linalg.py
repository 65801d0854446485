"""Linear-algebra kernels: MatMul, Gemm, Einsum and the quantised MatMulInteger / QLinearMatMul.

16-bit float products accumulate in float32 (numpy's float16 matmul has no BLAS path and is
slow). Integer products run as float64 BLAS matmuls: int8 x int8 sums stay exact far beyond any
real K (2**53 / 255**2 terms), and it is many times faster than numpy's integer loop.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from hal.kernels.quantize import saturate_int
from hal.kernels.registry import kernel

Array = np.ndarray


def _arr(x: object) -> Array:
    return x if isinstance(x, np.ndarray) else np.asarray(x)


def _is_narrow_float(dtype: np.dtype) -> bool:
    return dtype.itemsize < 4 and dtype.kind in "fV"


#: batched operands with at most this many elements between them are multiplied as the views they
#: are: the two copies cost more than they save (tiny-gpt's 4 heads of 16x16: 3.4 us with them,
#: 2.3 without; each head is still one BLAS call, as its views have a unit stride)
SMALL_BATCHED = 1 << 13


def _matmul(a: Array, b: Array) -> Array:
    if _is_narrow_float(a.dtype):
        return _matmul(a.astype(np.float32), b.astype(np.float32)).astype(a.dtype)
    if a.ndim > 2 and b.ndim == 2:
        if a.shape[-2] * a.shape[-1] == a.size:  # a batch of one is one GEMM already: no reshapes
            return np.matmul(a, b)  # (tiny-gpt's (1, 16, 64) @ (64, 64): 2.3 us, against 2.9 through them)
        # (..., M, K) @ (K, N) is one GEMM over the flattened rows, not one per batch entry
        return np.matmul(a.reshape(-1, a.shape[-1]), b).reshape(a.shape[:-1] + b.shape[-1:])
    if (a.ndim > 2 or b.ndim > 2) and a.size + b.size > SMALL_BATCHED:
        # numpy's batched matmul over strided views (attention's transposed heads) runs at half the
        # speed of the same product over contiguous copies, copies included (BERT's Q @ K^T: 1.03 vs 0.52 ms)
        a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return _arr(np.matmul(a, b))


@kernel("MatMul", since=1)
def matmul(a: Array, b: Array) -> Array:
    return _matmul(a, b)


_F32 = np.dtype(np.float32)


def matmul_as_is(a: Any, b: Any) -> bool:
    """Whether ``matmul(a, b)`` is ``np.matmul(a, b)`` of float32 arrays of at least 2-D as they are:
    a matrix or a batch of one times a matrix, or small batches (``SMALL_BATCHED``). A fused step
    that keeps such a call repeats it by ``np.matmul`` alone, with the kernel's bits."""
    if (a.__class__ is not np.ndarray or b.__class__ is not np.ndarray or a.dtype is not _F32
            or b.dtype is not _F32 or a.ndim < 2 or b.ndim < 2):
        return False
    if b.ndim == 2:
        return a.ndim == 2 or a.shape[-2] * a.shape[-1] == a.size
    return a.size + b.size <= SMALL_BATCHED  # type: ignore[attr-defined]


@kernel("Gemm", since=1)
def gemm_legacy(a: Array, b: Array, c: Array | None = None, alpha: float = 1.0, beta: float = 1.0,
                transA: int = 0, transB: int = 0, broadcast: int = 0) -> Array:
    return gemm(a, b, c, alpha=alpha, beta=beta, transA=transA, transB=transB)


@kernel("Gemm", since=7)
def gemm(a: Array, b: Array, c: Array | None = None, alpha: float = 1.0, beta: float = 1.0,
         transA: int = 0, transB: int = 0) -> Array:
    dtype = a.dtype
    if _is_narrow_float(dtype):  # the whole epilogue runs in float32, rounded once
        a, b = a.astype(np.float32), b.astype(np.float32)
        c = None if c is None else c.astype(np.float32)
    y = _arr(np.matmul(a.T if transA else a, b.T if transB else b))
    if y.dtype.kind in "iu":
        if alpha != 1.0:
            y = (y * alpha).astype(y.dtype)
        if c is not None and beta != 0.0:
            y = (y + c * beta).astype(y.dtype) if beta != 1.0 else y + c
        return _arr(y).astype(dtype, copy=False)
    return gemm_epilogue(y, c, alpha, beta).astype(dtype, copy=False)


def gemm_epilogue(y: Array, c: Array | None, alpha: float, beta: float) -> Array:
    """Gemm's alpha, beta and C applied to a float product ``y``, in place (C broadcasts one way onto
    (M, N)); ``hal_gpu.accumulation`` applies them after its own sum of the product."""
    if alpha != 1.0:
        y *= alpha
    if c is not None and beta != 0.0:
        y += c if beta == 1.0 else c * beta
    return y


@kernel("Einsum", since=12)
def einsum(*inputs: Array, equation: str = "") -> Array:
    eq = equation.replace(" ", "")
    dtype = inputs[0].dtype
    if _is_narrow_float(dtype):
        inputs = tuple(x.astype(np.float32) for x in inputs)
    # path optimisation lets numpy hand pairwise contractions to BLAS; one operand gains nothing
    out = np.einsum(eq, *inputs, optimize=len(inputs) > 1)
    return _arr(out).astype(dtype, copy=False)


# ---- quantised ----------------------------------------------------------------------------------

def _centered(x: Array, zero_point: Array | None, per_row: bool) -> Array:
    """``x - zero_point`` as exact float64; a per-row zero point of A is a column vector.

    The products' sums are exact too, as the spec's integer arithmetic reads (float64 holds them to
    2^53). onnxruntime's uint8 x int8 kernel on an x86 CPU without VNNI adds products in int16 pairs
    and saturates past 32767: hal follows the spec, not that (README: where onnx and onnxruntime part)."""
    w = x.astype(np.float64)
    if zero_point is not None:
        zp = zero_point.astype(np.float64)
        if per_row and zp.ndim == 1 and zp.size > 1:
            zp = zp.reshape(-1, 1)
        w -= zp
    return w


@kernel("MatMulInteger", since=10)
def matmul_integer(a: Array, b: Array, a_zero_point: Array | None = None,
                   b_zero_point: Array | None = None) -> Array:
    return _arr(np.matmul(_centered(a, a_zero_point, True), _centered(b, b_zero_point, False))
                ).astype(np.int32)


def _per_row(scale: Array) -> Array:
    return scale.reshape(-1, 1) if scale.ndim == 1 and scale.size > 1 else scale


@kernel("QLinearMatMul", since=10)
def qlinear_matmul(a: Array, a_scale: Array, a_zero_point: Array, b: Array, b_scale: Array,
                   b_zero_point: Array, y_scale: Array, y_zero_point: Array) -> Array:
    acc = np.matmul(_centered(a, a_zero_point, True), _centered(b, b_zero_point, False))
    # the requantisation multiplier is formed in the scales' own precision, as the spec's formula reads
    multiplier = _per_row(a_scale) * b_scale / y_scale
    y = acc * multiplier.astype(np.float64)
    y += y_zero_point.astype(np.float64)
    out = y_zero_point.dtype
    if out.kind in "iu":
        return saturate_int(_arr(np.rint(y)), out)
    fi = ml_dtypes.finfo(out)
    return _arr(np.clip(y, float(fi.min), float(fi.max))).astype(out)
