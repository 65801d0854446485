"""Elementwise math kernels: arithmetic, unary math, variadic Max/Min/Sum/Mean, Clip, bit ops, Det.

Every kernel computes in its input dtype (numpy 2 keeps Python scalars weak), and returns arrays,
never numpy scalars. Erf has no numpy ufunc; it is evaluated from fitted polynomials (see erf_array).
"""

from __future__ import annotations

import functools
import math
import mmap
from collections.abc import Callable

import numpy as np

from hal.kernels import jit
from hal.kernels.registry import kernel

Array = np.ndarray


def _arr(x: object) -> Array:
    """numpy ufuncs on 0-d inputs return scalars; kernels return 0-d arrays."""
    return x if isinstance(x, np.ndarray) else np.asarray(x)


def legacy_broadcast(a: Array, b: Array, broadcast: int = 0, axis: int | None = None) -> Array:
    """Opset < 7 binary ops: with ``broadcast=1`` and ``axis``, ``b`` lines up with ``a`` from ``axis``."""
    if broadcast and axis is not None and b.ndim:
        axis = axis % a.ndim
        b = b.reshape(b.shape + (1,) * (a.ndim - axis - b.ndim))
    return b


def _register_binary(op: str, fn: Callable[[Array, Array], Array], modern: int) -> None:
    """``op`` with numpy broadcasting from ``modern`` on, and the legacy attribute form before it."""

    def legacy(a, b, broadcast=0, axis=None, consumed_inputs=None):
        return fn(a, legacy_broadcast(a, b, broadcast, axis))

    legacy.__name__ = f"{op.lower()}_legacy"
    kernel(op, since=1)(legacy)
    kernel(op, since=modern)(fn)


def _register_unary(op: str, since: int, fn: Callable[[Array], Array]) -> None:
    """A unary op; opset-1 forms carried a ``consumed_inputs`` attribute that means nothing here."""

    def unary(x, consumed_inputs=None):
        return _arr(fn(x))

    unary.__name__ = op.lower()
    kernel(op, since=since)(unary)


# ---- arithmetic ---------------------------------------------------------------------------------

def add(a: Array, b: Array) -> Array:
    return _arr(np.add(a, b))


def sub(a: Array, b: Array) -> Array:
    return _arr(np.subtract(a, b))


def mul(a: Array, b: Array) -> Array:
    return _arr(np.multiply(a, b))


def div(a: Array, b: Array) -> Array:
    if a.dtype.kind in "iu":
        # ONNX integer division truncates toward zero (C semantics), numpy floors.
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.floor_divide(a, b)
            if a.dtype.kind == "i":
                fix = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
                q = q + fix.astype(q.dtype)
        return _arr(q)
    return _arr(np.divide(a, b))


for _op, _fn in (("Add", add), ("Sub", sub), ("Mul", mul), ("Div", div)):
    _register_binary(_op, _fn, 7)

_ARITHMETIC_UFUNCS = {id(add): np.add, id(sub): np.subtract, id(mul): np.multiply, id(div): np.divide}


def arithmetic_ufunc(fn: Callable[..., Array]) -> np.ufunc | None:
    """The ufunc that reference kernel ``fn`` (Add, Sub, Mul or Div) is on floats, else None: a
    caller may run it with ``out=`` into an operand it owns, for the same bits without an allocation."""
    return _ARITHMETIC_UFUNCS.get(id(fn))


@kernel("Pow", since=1)
def pow_legacy(x, y, broadcast=0, axis=None):
    return pow_(x, legacy_broadcast(x, y, broadcast, axis))


@kernel("Pow", since=7)
def pow_(x: Array, y: Array) -> Array:
    if x.dtype.kind in "iu" and y.dtype.kind == "i" and (y < 0).any():
        return _integer_pow(x, y)
    with np.errstate(all="ignore"):
        r = np.power(x, y)
    return _arr(r).astype(x.dtype, copy=False)


def _integer_pow(x: Array, y: Array) -> Array:
    """An integer to integer powers some negative, which numpy refuses: onnxruntime truncates C's pow,
    1 / x^n toward zero, so 0 for |x| > 1 and +-1 for x = +-1 (0 to a negative power is inf as an
    integer, undefined)."""
    neg = y < 0
    with np.errstate(all="ignore"):
        r = np.power(x, np.where(neg, 0, y).astype(y.dtype, copy=False))
    one = x == 1  # 1 / x^n where that is a whole number
    if x.dtype.kind == "i":
        one = np.where(x == -1, 1 - 2 * (y % 2 != 0), one)
    return _arr(np.where(neg, one, r)).astype(x.dtype, copy=False)


@kernel("Mod", since=10)
def mod(a: Array, b: Array, fmod: int = 0) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        return _arr(np.fmod(a, b) if fmod else np.mod(a, b))


# ---- row sums and bounds ------------------------------------------------------------------------

def row_sums(rows: Array) -> Array:
    """The sum of each row of a 2-D array as one BLAS matrix-vector product: numpy's reduction over
    short contiguous rows is several times slower (softmax and normalization rows)."""
    return rows @ _ones(rows.shape[1], rows.dtype)


def quiet_mean(x: Array, axis: int | tuple[int, ...] | None = None, keepdims: bool = False,
               dtype: np.dtype | None = None) -> Array:
    """np.mean, without its warning of an empty slice: that mean is 0 / 0 = NaN, given quietly (a
    library's caller should not see numpy's warnings; the engine's errstate cannot silence this one)."""
    if x.size:
        return np.mean(x, axis=axis, keepdims=keepdims, dtype=dtype)
    axes = range(x.ndim) if axis is None else (axis,) if isinstance(axis, int) else axis
    count = math.prod(x.shape[a] for a in axes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.true_divide(np.sum(x, axis=axis, keepdims=keepdims, dtype=dtype), count,
                              dtype=dtype or (x.dtype if x.dtype.kind == "f" else np.float64))


def row_means(rows: Array) -> Array:
    """The mean of each row of a 2-D array (``row_sums``, in the rows' dtype: float32 sums stay
    float32, as ONNX's stash type)."""
    total = row_sums(rows)
    np.divide(total, scalar_array(rows.shape[1], total.dtype), out=total)
    return total


@functools.lru_cache(maxsize=256)
def scalar_array(value: float, dtype: np.dtype) -> Array:
    """``value`` as a read-only 0-d array of ``dtype``: a ufunc takes it faster than a Python number,
    which it converts on every call (dividing 16 float32 by 64: 0.5 vs 1.0 us), for the same bits."""
    c = np.array(value, dtype=dtype)
    c.flags.writeable = False
    return c


@functools.lru_cache(maxsize=64)
def _ones(n: int, dtype: np.dtype) -> Array:
    v = np.ones(n, dtype=dtype)
    v.flags.writeable = False
    return v


#: ``bound_into`` reads its bound from a row this long: numpy vectorises maximum and minimum for
#: two contiguous operands but not for an array and a scalar (2.7x slower on a 351K-float32 array,
#: measured here), and a broadcast row shorter than its 8192-element buffer costs 1.5x the two
#: contiguous operands again (np.maximum over 188K float32: a scalar 71 us, rows of 4096 41 us, rows of
#: 16384 26 us, a whole array of zeros 25 us); the same bits every way, -0.0 and NaN included
BOUND_ROW = 1 << 14
#: ... for arrays of at least this many elements; a smaller one takes the scalar call, a microsecond
#: slower, rather than a cached row that would weigh on a small model's memory (tiny-gpt plans 0.55 MB)
BOUND_ROW_FROM = 1 << 13


#: Relu's bound, +0, is read from a row this long instead, mapped read-only from anonymous memory:
#: every page of it reads the kernel's one shared zero page, so the row costs no resident memory
#: and stays in L1 however long it is, and an array up to this size is one contiguous call (the
#: Relu kernel on ShuffleNet's 53K-float maps: 8.1 -> 6.0 us; on 4K floats, which took the scalar
#: call, 2.4 -> 2.0)
ZERO_ROW = 1 << 22
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


@functools.cache
def _bound_row(value: float, dtype: np.dtype) -> Array:
    row = np.full(BOUND_ROW, value, dtype=dtype)
    row.flags.writeable = False
    return row


@functools.cache
def _zero_row(dtype: np.dtype) -> Array | None:
    if not hasattr(mmap, "MAP_ANONYMOUS"):
        return None
    pages = mmap.mmap(-1, ZERO_ROW * dtype.itemsize, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=mmap.PROT_READ)
    return np.frombuffer(pages, dtype=dtype)  # read-only, as its mapping


def bound_into(ufunc: np.ufunc, x: Array, value: float, out: Array) -> Array:
    """``ufunc(x, value, out=out)`` for np.maximum / np.minimum, against a row of ``value`` at a time
    when ``x`` and ``out`` are contiguous float32/64 arrays of one dtype (one no longer than the row
    against its front): any size for +0 (``ZERO_ROW``), from BOUND_ROW_FROM elements for others."""
    dt = x.dtype
    if (dt is not _F32 and dt is not _F64) or out.dtype is not dt or not x.flags.c_contiguous \
            or not out.flags.c_contiguous:
        return ufunc(x, value, out=out)
    n = x.size
    row = _zero_row(dt) if value == 0 and math.copysign(1.0, value) > 0 else None  # -0.0 keeps its bits
    if row is None:
        if n < BOUND_ROW_FROM:
            return ufunc(x, value, out=out)
        row = _bound_row(value, dt)
    xf, of, width = x.reshape(-1), out.reshape(-1), row.size
    if n <= width:
        ufunc(xf, row[:n], out=of)
        return out
    body = n - n % width
    ufunc(xf[:body].reshape(-1, width), row, out=of[:body].reshape(-1, width))
    if body < n:
        ufunc(xf[body:], row[:n - body], out=of[body:])
    return out


# ---- unary math ---------------------------------------------------------------------------------

def _erf_fit(small_degree: int, big_degree: int, top: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Chebyshev fits against math.erf, as monomials on [-1, 1], for the two pieces of erf_array."""
    cheb = np.polynomial.chebyshev
    n = 400
    u = np.cos(np.pi * (np.arange(n) + 0.5) / n)
    x_small = np.sqrt((u + 1.0) / 2.0)  # |x| <= 1: erf(x) / x, in s = 2 x^2 - 1
    small = [math.erf(v) / v if v > 0 else 2.0 / math.sqrt(math.pi) for v in x_small]
    x_big = 1.0 + (u + 1.0) * ((top - 1.0) / 2.0)  # 1 <= |x| <= top: erfc(x) * exp(x^2), in u
    big = [math.erfc(v) * math.exp(v * v) for v in x_big]
    return (cheb.cheb2poly(cheb.chebfit(u, small, small_degree)),
            cheb.cheb2poly(cheb.chebfit(u, big, big_degree)), top)


# float64 needs ~1e-15 and erf reaches 1.0 at 6
_ERF_WIDE = _erf_fit(10, 24, 6.0)


def _horner(coef: np.ndarray, t: Array) -> Array:
    acc = np.full_like(t, coef[-1])
    for c in coef[-2::-1]:
        acc *= t
        acc += c
    return acc


def _erf_tanh_fit(degree: int, top: float) -> np.ndarray:
    """Monomials in s = x^2 of p with erf(x) = tanh(x p(s)) on |x| <= top: p = atanh(erf(x)) / x.

    A Chebyshev fit against math.erf, weighted by how much an error in p moves erf(x) relative to
    itself, (1 - erf^2) / (erf / x): past x ~ 2 the tanh flattens and forgives p almost any error.
    A small floor on the weight keeps p right up to ``top``, so that tanh reaches 1.0f soon after.
    """
    cheb = np.polynomial.chebyshev
    n = 600
    u = np.cos(np.pi * (np.arange(n) + 0.5) / n)
    s = (u + 1.0) * (top * top / 2.0)
    x = np.sqrt(s)
    erf = np.array([math.erf(v) for v in x])
    p = np.array([0.5 * math.log((1.0 + e) / math.erfc(v)) / v if v > 1e-6 else 2.0 / math.sqrt(math.pi)
                  for v, e in zip(x, erf)])
    slope = np.array([e / v if v > 1e-6 else 2.0 / math.sqrt(math.pi) for v, e in zip(x, erf)])
    weight = (1.0 - erf * erf) / slope + 1e-5
    fit = cheb.Chebyshev(cheb.chebfit(u, p, degree, w=weight), domain=[0.0, top * top])
    return fit.convert(kind=np.polynomial.Polynomial).coef


# float32 erf rounds to 1.0f from x = 3.92 on, so s is clamped at 16: p(16) > 0 keeps tanh at +-1
_ERF_F32_TOP = 4.0
_ERF_F32 = _erf_tanh_fit(8, _ERF_F32_TOP).astype(np.float32)
#: the same coefficients, highest first, as read-only 0-d arrays: a ufunc takes a 0-d array operand
#: faster than a numpy scalar (0.6-0.8 vs 0.8-1.1 us a call on 4K floats), for the same float32 math
_ERF_F32_HORNER = tuple(np.array(c, dtype=np.float32) for c in _ERF_F32[::-1])
for _c in _ERF_F32_HORNER:
    _c.flags.writeable = False
ERF_F32_TOP_S = np.float32(_ERF_F32_TOP**2)
#: ... as one read-only array, highest first, for the compiled loop (``_loops.erf_tanh_arg``, degree 8)
ERF_F32_COEF = np.ascontiguousarray(_ERF_F32[::-1])
ERF_F32_COEF.flags.writeable = False
_ERF_BLOCK = 1 << 15  # elements per pass: the temporaries stay in cache and are never page-faulted


def erf_array(x: Array) -> Array:
    """erf elementwise. float64 is evaluated from two fitted pieces (within ~3e-15 relative of
    math.erf); float32 computes tanh(x p(x^2)) in float32, within 4 ulp (3.68 at worst over every
    float32, tests/kernels/test_kernels_fast_erf.py). A 16-bit float goes through float64 and is
    rounded once (through float32, a value near a float16 halfway point rounded twice: 23 in
    200,000 a step off onnxruntime)."""
    if x.dtype == np.float32:
        return _erf_float32(x)
    if x.dtype != np.float64:
        return erf_array(x.astype(np.float64)).astype(x.dtype)
    flat = x.reshape(-1)
    out = np.empty(flat.shape, dtype=x.dtype)
    for start in range(0, flat.size, _ERF_BLOCK):
        stop = min(start + _ERF_BLOCK, flat.size)
        out[start:stop] = _erf_block(flat[start:stop], *_ERF_WIDE)
    return out.reshape(x.shape)


def _erf_float32(x: Array) -> Array:
    # ~20 in-place float32 passes over cache-sized blocks, no masks or gathers: erf's branch between
    # its series and its asymptotic tail is absorbed by tanh, which numpy evaluates with SIMD
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    out = np.empty(flat.shape, dtype=np.float32)
    block = max(1, min(_ERF_BLOCK, flat.size))
    s_buf = np.empty(block, dtype=np.float32)
    p_buf = np.empty(block, dtype=np.float32)
    with np.errstate(over="ignore"):
        for start in range(0, flat.size, block):
            stop = min(start + block, flat.size)
            erf_float32_block(flat[start:stop], out[start:stop], s_buf[: stop - start], p_buf[: stop - start])
    return out.reshape(x.shape).astype(x.dtype, copy=False)


def erf_float32_block(xs: Array, out: Array, s_buf: Array, p_buf: Array) -> None:
    """erf of a float32 block into ``out`` (which may be ``xs``), with two scratch blocks of its size.

    x^2 and x p(top) overflow to inf for huge x (and tanh(inf) = 1): the caller ignores overflow
    (the engine runs every kernel under np.errstate(all="ignore")). An errstate here, per block, cost
    2.5 us a call, a sixth of the whole erf on tiny-gpt's 4K-element GELU."""
    if jit.enabled() and xs.ndim == 1 and xs.flags.c_contiguous and p_buf.flags.c_contiguous:
        jit.loops().erf_tanh_arg(xs, ERF_F32_COEF, ERF_F32_TOP_S, p_buf)  # the same bits, in one pass
        np.tanh(p_buf, out)
        return
    coef = _ERF_F32_HORNER
    mul, add = np.multiply, np.add
    s = mul(xs, xs, s_buf)
    bound_into(np.minimum, s, ERF_F32_TOP_S, s)  # NaN stays NaN
    p = mul(s, coef[0], p_buf)
    add(p, coef[1], p)
    for c in coef[2:]:
        mul(p, s, p)
        add(p, c, p)
    mul(p, xs, p)
    np.tanh(p, out)


def _erf_block(x: Array, small_coef: np.ndarray, big_coef: np.ndarray, top: float) -> Array:
    out = x.astype(np.float64)
    np.abs(out, out=out)
    small = out <= 1.0
    big = ~small  # NaN lands here and stays NaN
    xs = out[small]
    xb = out[big]
    t = np.square(xs)
    t *= 2.0
    t -= 1.0
    p = _horner(small_coef, t)
    p *= xs
    out[small] = p
    if xb.size:
        np.minimum(xb, top, out=xb)
        u = xb - 1.0
        u *= 2.0 / (top - 1.0)
        u -= 1.0
        q = _horner(big_coef, u)
        np.square(xb, out=xb)
        np.negative(xb, out=xb)
        q *= np.exp(xb, out=xb)
        out[big] = np.subtract(1.0, q, out=q)
    return np.copysign(out, x, out=out)


_UNARY: list[tuple[str, int, Callable[[Array], Array]]] = [
    ("Neg", 1, np.negative), ("Abs", 1, np.abs), ("Reciprocal", 1, np.reciprocal),
    ("Sqrt", 1, np.sqrt), ("Exp", 1, np.exp), ("Log", 1, np.log),
    ("Ceil", 1, np.ceil), ("Floor", 1, np.floor),
    ("Sign", 9, np.sign), ("Round", 11, np.rint), ("Erf", 9, erf_array),
    ("Sin", 7, np.sin), ("Cos", 7, np.cos), ("Tan", 7, np.tan),
    ("Asin", 7, np.arcsin), ("Acos", 7, np.arccos), ("Atan", 7, np.arctan),
    ("Sinh", 9, np.sinh), ("Cosh", 9, np.cosh), ("Asinh", 9, np.arcsinh),
    ("Acosh", 9, np.arccosh), ("Atanh", 9, np.arctanh),
]


def _quiet(fn: Callable[[Array], Array]) -> Callable[[Array], Array]:
    # Out-of-domain inputs give NaN/inf as ONNX expects; numpy's warnings are noise here.
    @functools.wraps(fn)
    def run(x: Array) -> Array:
        with np.errstate(all="ignore"):
            return fn(x)

    return run


for _op, _since, _fn in _UNARY:
    _register_unary(_op, _since, _quiet(_fn))


@kernel("IsNaN", since=9)
def isnan(x: Array) -> Array:
    return _arr(np.isnan(x))


@kernel("IsInf", since=10)
def isinf(x: Array, detect_negative: int = 1, detect_positive: int = 1) -> Array:
    if detect_negative and detect_positive:
        return _arr(np.isinf(x))
    if detect_negative:
        return _arr(np.isneginf(x))
    if detect_positive:
        return _arr(np.isposinf(x))
    return np.zeros(x.shape, dtype=bool)


# ---- variadic -----------------------------------------------------------------------------------

def _variadic(ufunc: np.ufunc, inputs: tuple[Array, ...]) -> Array:
    if len(inputs) == 1:
        return inputs[0]
    return _arr(functools.reduce(ufunc, inputs))


@kernel("Max", since=1)
def max_(*inputs: Array, consumed_inputs=None) -> Array:
    return _variadic(np.maximum, inputs)


@kernel("Min", since=1)
def min_(*inputs: Array, consumed_inputs=None) -> Array:
    return _variadic(np.minimum, inputs)


def broadcasts_onto(o: tuple[int, ...], t: tuple[int, ...]) -> bool:
    """Whether broadcasting shape ``o`` against ``t`` gives ``t`` (so a result can go into the array of
    shape ``t``): a tuple walk, where ``np.broadcast_shapes`` costs 2-3 us a call."""
    if len(o) > len(t):
        return False
    for d, e in zip(o[::-1], t[::-1]):
        if d != e and d != 1:
            return False
    return True


@kernel("Sum", since=1)
def sum_(*inputs: Array, consumed_inputs=None) -> Array:
    if len(inputs) <= 2:
        return _variadic(np.add, inputs)
    out = _arr(np.add(inputs[0], inputs[1]))  # (0-d inputs add to a numpy scalar, which takes no out=)
    for x in inputs[2:]:
        # accumulate in place once the running sum already has the broadcast shape
        out = np.add(out, x, out=out) if broadcasts_onto(x.shape, out.shape) else out + x
    return _arr(out)


@kernel("Mean", since=1)
def mean(*inputs: Array, consumed_inputs=None) -> Array:
    total = sum_(*inputs)
    return _arr(np.divide(total, len(inputs), dtype=total.dtype))


# ---- Clip ---------------------------------------------------------------------------------------

@kernel("Clip", since=1)
def clip_attr(x: Array, min: float = -3.4028234663852886e38, max: float = 3.4028234663852886e38,
              consumed_inputs=None) -> Array:
    with np.errstate(over="ignore"):  # the float32 default bounds overflow float16 to +-inf, as meant
        return _arr(np.minimum(np.maximum(x, min), max)).astype(x.dtype, copy=False)


@kernel("Clip", since=11)
def clip(x: Array, min: Array | None = None, max: Array | None = None) -> Array:
    if min is not None:
        x = np.maximum(x, min.astype(x.dtype, copy=False))
    if max is not None:
        x = np.minimum(x, max.astype(x.dtype, copy=False))
    return _arr(x)


# ---- bit ops ------------------------------------------------------------------------------------

@kernel("BitShift", since=11)
def bitshift(x: Array, y: Array, direction: str = "") -> Array:
    bits = x.dtype.itemsize * 8
    y = y.astype(x.dtype, copy=False)
    in_range = (y >= 0) & (y < bits)
    amount = np.where(in_range, y, 0).astype(x.dtype, copy=False)
    if direction == "RIGHT":
        out = np.right_shift(x, amount)
        fill = np.where(x < 0, x.dtype.type(-1), x.dtype.type(0)) if x.dtype.kind == "i" else 0
    elif direction == "LEFT":
        if x.dtype.kind == "i":
            u = np.dtype(f"u{x.dtype.itemsize}")
            out = np.left_shift(x.view(u), amount.view(u)).view(x.dtype)
        else:
            out = np.left_shift(x, amount)
        fill = 0
    else:
        raise ValueError(f"BitShift direction must be LEFT or RIGHT, got {direction!r}")
    if not in_range.all():
        out = np.where(in_range, out, fill).astype(x.dtype, copy=False)
    return _arr(out)


@kernel("BitwiseAnd", since=18)
def bitwise_and(a: Array, b: Array) -> Array:
    return _arr(np.bitwise_and(a, b))


@kernel("BitwiseOr", since=18)
def bitwise_or(a: Array, b: Array) -> Array:
    return _arr(np.bitwise_or(a, b))


@kernel("BitwiseXor", since=18)
def bitwise_xor(a: Array, b: Array) -> Array:
    return _arr(np.bitwise_xor(a, b))


@kernel("BitwiseNot", since=18)
def bitwise_not(x: Array) -> Array:
    return _arr(np.bitwise_not(x))


# ---- linear-algebra odd one out -----------------------------------------------------------------

@kernel("Det", since=11)
def det(x: Array) -> Array:
    """16-bit matrices are taken in float32 and rounded once (numpy's linalg has no float16;
    onnxruntime has a float16 Det)."""
    work = x.astype(np.float32) if x.dtype.itemsize < 4 else x
    return _arr(np.linalg.det(work)).astype(x.dtype, copy=False)
