"""Activation kernels: the Relu family, sigmoid-like gates, Gelu, and Softmax / LogSoftmax / Hardmax.

Pointwise activations compute in the input dtype, except 16-bit floats (float16, and ml_dtypes'
bfloat16, ...), which run in float32 and round once at the end, as onnxruntime computes them. The softmax
family computes float16 / bfloat16 in float32 too, rounding where its function body does.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import ml_dtypes
import numpy as np

from hal.kernels import jit
from hal.kernels._axes import axis_in
from hal.kernels.elementwise import bound_into, erf_array, row_sums
from hal.kernels.registry import kernel

Array = np.ndarray


def _arr(x: object) -> Array:
    return x if isinstance(x, np.ndarray) else np.asarray(x)


def _half(dtype: np.dtype) -> bool:
    """A 16-bit float: float16 or ml_dtypes' bfloat16 (numpy's kind "V")."""
    return dtype.kind == "V" or dtype == np.float16


def _widened(fn: Callable[..., Array]) -> Callable[..., Array]:
    """Run ``fn`` in float32 for 16-bit floats and rounds once at the end, as onnxruntime does: in
    float16 arithmetic each step would round (a Sigmoid 2 steps off on 35% of inputs, a HardSigmoid
    near 0 hundreds), and ``x * alpha`` would silently promote ml_dtypes' types."""

    @functools.wraps(fn)
    def run(x: Array, *args: Array, **attrs: object) -> Array:
        if not _half(x.dtype):
            return fn(x, *args, **attrs)
        wide = [a.astype(np.float32) if _half(a.dtype) else a for a in args]
        return fn(x.astype(np.float32), *wide, **attrs).astype(x.dtype)

    return run


def _legacy(op: str, since: int, fn: Callable[..., Array]) -> None:
    """Register ``fn`` for the opset-1 form, which also carried ``consumed_inputs``."""

    def legacy(*args, consumed_inputs=None, **attrs):
        return fn(*args, **attrs)

    legacy.__name__ = f"{fn.__name__}_legacy"
    kernel(op, since=since)(legacy)


# ---- Relu family --------------------------------------------------------------------------------

def relu_into(x: Array, out: Array) -> Array:
    """``np.maximum(x, 0, out=out)``, vectorised (``bound_into``)."""
    return bound_into(np.maximum, x, 0, out)


@kernel("Relu", since=6)
def relu(x: Array) -> Array:
    if x.__class__ is np.ndarray and x.ndim:
        return relu_into(x, np.empty_like(x))
    return _arr(np.maximum(x, 0))


@kernel("LeakyRelu", since=6)
@_widened
def leaky_relu(x: Array, alpha: float = 0.01) -> Array:
    if 0.0 <= alpha <= 1.0:  # then x * alpha lies between 0 and x, and the max picks the right branch
        return _arr(np.maximum(x, x * alpha))
    return _arr(np.where(x < 0, x * alpha, x))


@kernel("PRelu", since=7)
@_widened
def prelu(x: Array, slope: Array) -> Array:
    return _arr(np.where(x < 0, x * slope, x)).astype(x.dtype, copy=False)


@kernel("ThresholdedRelu", since=10)
@_widened
def thresholded_relu(x: Array, alpha: float = 1.0) -> Array:
    return _arr(np.where(x > alpha, x, 0)).astype(x.dtype, copy=False)


@kernel("Elu", since=6)
@_widened
def elu(x: Array, alpha: float = 1.0) -> Array:
    return _arr(np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))))


@kernel("Selu", since=6)
@_widened
def selu(x: Array, alpha: float = 1.67326319217681884765625, gamma: float = 1.05070102214813232421875
         ) -> Array:
    neg = (alpha * gamma) * np.expm1(np.minimum(x, 0))
    return _arr(np.where(x > 0, x * gamma, neg))


@kernel("Celu", since=12)
@_widened
def celu(x: Array, alpha: float = 1.0) -> Array:
    neg = alpha * np.expm1(np.minimum(x, 0) / alpha)
    return _arr(np.where(x > 0, x, neg)).astype(x.dtype, copy=False)


def prelu_6(x: Array, slope: Array) -> Array:
    """PRelu before opset 7, which did not broadcast: a slope of one value per channel applies along
    axis 1 (PyTorch's PReLU(num_parameters=C), as onnx's pytorch-converted test models hold it)."""
    slope = _arr(slope)
    if slope.ndim == 1 and x.ndim > 2 and slope.size == x.shape[1] != 1:
        slope = slope.reshape(-1, *([1] * (x.ndim - 2)))
    return prelu(x, slope)


for _op, _fn in (("Relu", relu), ("LeakyRelu", leaky_relu), ("PRelu", prelu_6), ("Elu", elu), ("Selu", selu)):
    _legacy(_op, 1, _fn)


@kernel("Shrink", since=9)
@_widened
def shrink(x: Array, bias: float = 0.0, lambd: float = 0.5) -> Array:
    out = np.where(x < -lambd, x + bias, np.where(x > lambd, x - bias, 0))
    return _arr(out).astype(x.dtype, copy=False)


# ---- smooth gates -------------------------------------------------------------------------------

def expf(x: Array) -> Array:
    """float32 exp correctly rounded, as the C library's expf that onnxruntime's CPU kernels call (numpy's
    own float32 exp is within an ulp, not exact): through float64, rounded once."""
    with np.errstate(over="ignore"):
        return np.exp(np.asarray(x).astype(np.float64)).astype(np.float32)


def _sigmoid(x: Array) -> Array:
    # exp(-x) overflows to inf for very negative x and 1 / (1 + inf) is the right 0
    with np.errstate(over="ignore"):
        e = _arr(np.exp(np.negative(x)))
    e += 1
    return np.reciprocal(e, out=e)


@kernel("Sigmoid", since=6)
@_widened
def sigmoid(x: Array) -> Array:
    return _arr(_sigmoid(x))


_legacy("Sigmoid", 1, sigmoid)


@kernel("Tanh", since=6)
def tanh(x: Array) -> Array:
    return _arr(np.tanh(x))


_legacy("Tanh", 1, tanh)


@kernel("HardSigmoid", since=6)
@_widened
def hard_sigmoid(x: Array, alpha: float = 0.2, beta: float = 0.5) -> Array:
    y = _arr(x * alpha)
    y += beta
    return _arr(np.clip(y, 0, 1, out=y))


_legacy("HardSigmoid", 1, hard_sigmoid)


#: HardSwish's 1/6 as its function body holds it, a float attribute (float32): onnxruntime's float64
#: kernel and onnx's reference multiply by this, 3e-8 off 1/6 (float32 and float16 round to it anyway)
_SIXTH = float(np.float32(1.0 / 6.0))


@kernel("HardSwish", since=14)
@_widened
def hard_swish(x: Array) -> Array:
    return _arr(x * hard_sigmoid(x, alpha=_SIXTH, beta=0.5))


@kernel("Softplus", since=1)
@_widened
def softplus(x: Array) -> Array:
    return _arr(np.logaddexp(x, 0))


@kernel("Softsign", since=1)
@_widened
def softsign(x: Array) -> Array:
    d = _arr(np.abs(x))
    d += 1
    return _arr(np.divide(x, d, out=d))


@kernel("Mish", since=18)
@_widened
def mish(x: Array) -> Array:
    return _arr(x * np.tanh(np.logaddexp(x, 0)))


@kernel("Swish", since=24)
def swish(x: Array, alpha: float = 1.0) -> Array:
    """ONNX's function body, x * Sigmoid(CastLike(alpha, x) * x), each step rounded to a 16-bit x's
    type as onnxruntime and onnx's reference run it: a float16 sigmoid below the smallest subnormal is
    0, so Swish(-18) is -0 (times inf: NaN), where one rounding at the end gave -2.4e-7."""
    if not _half(x.dtype):
        return _arr(x * _sigmoid(x * alpha if alpha != 1.0 else x))
    wide = x.astype(np.float32)  # (a product of two 16-bit floats is exact in float32: rounded once below)
    ax = wide if alpha == 1.0 else (wide * np.float32(x.dtype.type(alpha))).astype(x.dtype).astype(np.float32)
    gate = _sigmoid(ax).astype(x.dtype).astype(np.float32)
    return _arr(wide * gate).astype(x.dtype)


@kernel("SwiGLU", since=28)
def swiglu(a: Array, b: Array, alpha: float = 1.0) -> Array:
    """Its function body, Swish(A) * B: a 16-bit Swish rounded as its own, then the product."""
    if a.shape != b.shape:
        raise ValueError(f"SwiGLU needs A and B of one shape (no broadcasting), got {a.shape} and {b.shape}")
    y = swish(a, alpha=alpha)
    if _half(a.dtype):
        return _arr(y.astype(np.float32) * b.astype(np.float32)).astype(a.dtype)
    y *= b
    return y


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_SQRT_HALF = math.sqrt(0.5)


@kernel("Gelu", since=20)
def gelu(x: Array, approximate: str = "none") -> Array:
    if x.dtype.itemsize == 2:  # 1 + erf (or tanh) cancels for x < 0: even float32 there loses a
        return _gelu(x.astype(np.float64), approximate).astype(x.dtype)  # 16-bit float's digits
    return _gelu(x, approximate)


def _gelu(x: Array, approximate: str) -> Array:
    if approximate == "tanh":
        inner = _arr(x * x)
        inner *= 0.044715
        inner += 1
        inner *= x
        inner *= _SQRT_2_OVER_PI
        g = np.tanh(inner, out=inner)
    elif approximate == "none":
        g = erf_array(x * _SQRT_HALF)
    else:
        raise ValueError(f"Gelu approximate must be 'none' or 'tanh', got {approximate!r}")
    g += 1
    g *= x
    g *= 0.5
    return _arr(g)


# ---- softmax family -----------------------------------------------------------------------------

def _wide(x: Array) -> Array:
    """Low-precision floats are computed in float32 and rounded once at the end."""
    return x.astype(np.float32) if x.dtype.itemsize < 4 else x


_NARROW_FLOATS = (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))


def _softmax(x: Array, axis: int) -> Array:
    if x.size == 0:
        return x.copy()
    if x.dtype in _NARROW_FLOATS:
        return _softmax_narrow(x, axis)
    w = _wide(x)
    if x.ndim and axis in (-1, x.ndim - 1):  # an out-of-range axis falls through to numpy's AxisError
        return softmax_rows(w.reshape(-1, w.shape[-1])).reshape(x.shape).astype(x.dtype, copy=False)
    e = np.subtract(w, np.max(w, axis=axis, keepdims=True))
    np.exp(e, out=e)
    e /= np.sum(e, axis=axis, keepdims=True)
    return e.astype(x.dtype, copy=False)


def _softmax_narrow(x: Array, axis: int) -> Array:
    """Softmax of a 16-bit float as its ONNX function body computes it: Exp, ReduceSum and Div each
    give a result in the input's type (each computed in float32 and rounded once), which is what
    onnx's reference and the fp16/bf16 node cases expect; one rounding at the end differs by an ulp."""
    w = x.astype(np.float32)
    e = np.exp(w - np.max(w, axis=axis, keepdims=True)).astype(x.dtype).astype(np.float32)
    total = np.sum(e, axis=axis, keepdims=True).astype(x.dtype).astype(np.float32)
    return (e / total).astype(x.dtype)


#: rows up to this long take their maximum down the columns of a transposed copy
SHORT_ROW = 64


def row_max(w: Array) -> Array:
    """The maximum of each row of a non-empty 2-D float array, as a column (rows, 1); NaN only where
    a row is all NaN (fmax: a softmax's NaN row still ends all NaN, through exp). numpy reduces short
    contiguous rows one at a time: short rows are reduced down the columns of a transposed copy instead,
    one vector fmax per column (tiny-gpt's 64 rows of 16: 6.5 -> 3.5 us, copy included; 512x16 24.7 ->
    5.3 us; 256x64 23 -> 16 us). Longer rows keep the row reduction (BERT's rows of 128: 0.36 ms, 1.0 ms
    the other way). The same maximum either way."""
    if w.shape[1] <= SHORT_ROW:
        return np.fmax.reduce(np.ascontiguousarray(w.T), axis=0)[:, None]
    return np.fmax.reduce(w, axis=1, keepdims=True)


def softmax_rows(w: Array, out: Array | None = None) -> Array:
    """Softmax along the rows of a 2-D array, the attention case, into ``out`` (``w`` itself may be
    it); the row maxima are ``row_max`` and the row sums ``row_sums``. A float32 C-contiguous ``w``
    takes two compiled loops around numpy's exp instead (``_loops.softmax_shift`` and
    ``softmax_scale``: a row's maximum and its sum in eight running values each), the same
    operations up to the order of the sum's additions."""
    if (w.dtype == np.float32 and w.flags.c_contiguous and jit.enabled()
            and (out is None or (out.dtype == np.float32 and out.flags.c_contiguous and out.shape == w.shape))):
        loops = jit.loops()
        e = w.copy() if out is None else out  # the loops work in place
        if e is not w:
            np.copyto(e, w)
        loops.softmax_shift(e)
        np.exp(e, out=e)
        loops.softmax_scale(e)
        return e
    e = np.subtract(w, row_max(w), out=out)
    np.exp(e, out=e)
    e /= row_sums(e)[:, None]
    return e


def _log_softmax(x: Array, axis: int) -> Array:
    if x.size == 0:
        return x.copy()
    w = _wide(x)
    d = np.subtract(w, np.max(w, axis=axis, keepdims=True))
    d -= np.log(np.sum(np.exp(d), axis=axis, keepdims=True))
    return d.astype(x.dtype, copy=False)


def _hardmax(x: Array, axis: int) -> Array:
    y = np.zeros_like(x)
    if x.size:
        np.put_along_axis(y, np.argmax(x, axis=axis, keepdims=True), 1, axis=axis)
    return y


def _coerced_2d(fn: Callable[[Array, int], Array], x: Array, axis: int) -> Array:
    """Opset < 13: the input is flattened to 2-D at ``axis`` and the op runs along the rows."""
    if x.ndim == 0:
        return _arr(fn(x.reshape(1, 1), 1).reshape(()))
    axis = axis_in(axis, x.ndim)
    rows = math.prod(x.shape[:axis])
    return fn(x.reshape(rows, -1), 1).reshape(x.shape)


# Module-level functions (not closures) so that programs holding them pickle (Executable.serialize).
@kernel("Softmax", since=1)
def softmax_2d(x: Array, axis: int = 1) -> Array:
    return _coerced_2d(_softmax, x, axis)


@kernel("Softmax", since=13)
def softmax(x: Array, axis: int = -1) -> Array:
    return _arr(_softmax(x, axis))


@kernel("LogSoftmax", since=1)
def log_softmax_2d(x: Array, axis: int = 1) -> Array:
    return _coerced_2d(_log_softmax, x, axis)


@kernel("LogSoftmax", since=13)
def log_softmax(x: Array, axis: int = -1) -> Array:
    return _arr(_log_softmax(x, axis))


@kernel("Hardmax", since=1)
def hardmax_2d(x: Array, axis: int = 1) -> Array:
    return _coerced_2d(_hardmax, x, axis)


@kernel("Hardmax", since=13)
def hardmax(x: Array, axis: int = -1) -> Array:
    return _arr(_hardmax(x, axis))
