"""Normalisation kernels: Layer / RMS / Batch / Instance / Group normalisation, LRN, MVN, LpNormalization.

Statistics are taken in float32 for 16-bit inputs (ONNX's ``stash_type=1``) and in float64 for
float64 inputs, and so are the scale and the shift: the result is rounded once to the input dtype,
as onnxruntime and torch compute a 16-bit LayerNormalization (ONNX's function body casts before
scaling, a rounding more: one float16 step off theirs on a third of the elements).
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
from numpy.lib.stride_tricks import as_strided

from hal.kernels import jit
from hal.kernels._axes import axis_in
from hal.kernels._broadcast import apply_per_channel
from hal.kernels.elementwise import bound_into, quiet_mean, row_means, scalar_array
from hal.kernels.registry import kernel

Array = np.ndarray
#: the normalisations' default epsilon: ONNX's is a float attribute, 1e-5 rounded to float32
#: (9.99999974737875e-06), which a float64 model's statistics add as it is
DEFAULT_EPSILON = float(np.float32(1e-5))


def _stash(x: Array) -> np.dtype:
    """Precision of the statistics: float64 stays float64, anything narrower uses float32."""
    return np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)


def _standardize(x: Array, axes: tuple[int, ...], epsilon: float) -> tuple[Array, Array, Array]:
    """(x - mean) / sqrt(var + epsilon) over ``axes``, with the mean and 1/std, all in the stash dtype."""
    w = x.astype(_stash(x), copy=False)
    mean = quiet_mean(w, axis=axes, keepdims=True)
    d = w - mean
    var = quiet_mean(np.square(d), axis=axes, keepdims=True)
    var += epsilon
    inv_std = np.reciprocal(np.sqrt(var, out=var), out=var)
    d *= inv_std
    return d, mean, inv_std


# ---- layer-wise ---------------------------------------------------------------------------------

#: the dot product of each row pair of two 2-D arrays: numpy 2's vecdot calls BLAS per row, half the time
#: of einsum's loop (16x64 float32: 1.5 vs 3.4 us; BERT's 512x384: 16 vs 31 us)
_row_dots = getattr(np, "vecdot", None) or (lambda a, b: np.einsum("ij,ij->i", a, b))


def _layer_rows(x: Array, axis: int) -> Array:
    """``x`` in its stash dtype as (outer, normalized) rows, a view where the layout allows."""
    if axis == x.ndim - 1 and x.dtype.char in "fd":  # float32 and float64 are their own stash type
        return x.reshape(-1, x.shape[-1])
    rows = math.prod(x.shape[:axis])
    return x.astype(_stash(x), copy=False).reshape(rows, -1)


@kernel("LayerNormalization", since=17, output_count=True)
def layer_normalization(x: Array, scale: Array, bias: Array | None = None, axis: int = -1,
                        epsilon: float = DEFAULT_EPSILON, stash_type: int = 1, _n_outputs: int = 3
                        ) -> Array | tuple[Array, Array, Array]:
    axis = axis_in(axis, x.ndim)
    if _n_outputs == 1 and (rows := _compiled_layer_norm(x, scale, bias, axis, epsilon)) is not None:
        return rows
    if x.size == 0:
        y, mean, inv_std = _standardize(x, tuple(range(axis, x.ndim)), epsilon)
    else:
        w = _layer_rows(x, axis)
        mean = row_means(w)
        y = np.subtract(w, mean[:, None])
        inv_std = _row_dots(y, y)  # two passes: the variance of x - mean, not E[x^2] - mean^2
        np.divide(inv_std, scalar_array(y.shape[1], inv_std.dtype), out=inv_std)
        np.add(inv_std, scalar_array(epsilon, inv_std.dtype), out=inv_std)
        np.sqrt(inv_std, out=inv_std)
        np.reciprocal(inv_std, out=inv_std)
        y *= inv_std[:, None]
        y = y.reshape(x.shape)
    y *= scale  # in the statistics' type, rounded once below (a 16-bit x: as onnxruntime and torch)
    if bias is not None:
        y += bias
    y = y.astype(x.dtype, copy=False)
    if _n_outputs == 1:  # the usual node: Mean and InvStdDev are not asked for
        return y
    stat = np.dtype(_STASH_TYPES.get(stash_type, np.float32))  # ONNX's type U of Mean and InvStdDev
    stat_shape = x.shape[:axis] + (1,) * (x.ndim - axis)
    return y, mean.reshape(stat_shape).astype(stat, copy=False), inv_std.reshape(stat_shape).astype(stat, copy=False)


_F32 = np.dtype(np.float32)


def _compiled_layer_norm(x: Array, scale: Array, bias: Array | None, axis: int, epsilon: float) -> Array | None:
    """The usual case, float32 rows normalised along the last axis with one scale (and bias) per
    column, as one compiled loop over the rows (``_loops.layer_norm_rows``: tiny-gpt's 16x64 2.4-2.6x
    faster than the numpy kernel's eleven calls, BERT-bench's 512x384 1.5x, and its mean taken in
    float64: rows far from zero keep more digits); None where the numpy kernel runs."""
    plan = layer_norm_plan(x, scale, bias, axis)
    return None if plan is None else layer_norm_into(x, *plan, bias is not None, epsilon)


def layer_norm_plan(x: Array, scale: Array, bias: Array | None, axis: int) -> tuple[Array, Array] | None:
    """The scale and the bias as vectors where ``layer_norm_into`` computes x's LayerNormalization
    (``_compiled_layer_norm``'s case), else None; without a bias, the scale stands in for it."""
    if (x.dtype != _F32 or axis_in(axis, x.ndim) != x.ndim - 1 or not x.flags.c_contiguous or not x.size
            or not jit.enabled()):
        return None
    return _per_columns(scale, bias, x.shape[-1], x.ndim)


def layer_norm_into(x: Array, s: Array, t: Array, has_bias: bool, epsilon: float) -> Array:
    """x's LayerNormalization by ``_loops.layer_norm_rows`` into a new array, for what
    ``layer_norm_plan`` accepted (``s``, ``t`` its answer)."""
    out = np.empty(x.shape, dtype=np.float32)
    # epsilon as a Python float: the loop's float32 parameter rounds it as np.float32 would (0.3 us
    # less); without a bias, s stands in for it there, unread
    if x.ndim == 3:  # (b, m, n) as it is
        jit.loops().layer_norm_3d(x, s, t, has_bias, epsilon, out)
    else:
        n = x.shape[-1]
        jit.loops().layer_norm_rows(x.reshape(-1, n), s, t, has_bias, epsilon, out.reshape(-1, n))
    return out


def add_layer_norm_plan(a: Array, b: Array, scale: Array, bias: Array | None, axis: int
                        ) -> tuple[tuple[int, ...], Array, Array] | None:
    """For ``add_layer_norm_into``: (the sum's shape, the scale and the bias as vectors) where one
    compiled loop computes a + b and its LayerNormalization, the bits of ``np.add`` and then
    ``_compiled_layer_norm``: float32 operands of one size and C-contiguous, of one shape up to
    leading 1s (a (1, 16, 64) activation and a (16, 64) position embedding: their elements pair up
    in order), normalised along the last axis by one scale and bias per column. Else None (the
    Add's kernel and then this module's run in turn)."""
    if (a.__class__ is not np.ndarray or b.__class__ is not np.ndarray or a.dtype != _F32 or b.dtype != _F32
            or a.size != b.size or not a.size or not a.flags.c_contiguous or not b.flags.c_contiguous
            or not jit.enabled()):
        return None
    long, short = (a, b) if a.ndim >= b.ndim else (b, a)
    shape = long.shape  # numpy's result: of one size, the two differ at most by leading 1s
    if shape[long.ndim - short.ndim:] != short.shape or axis_in(axis, len(shape)) != len(shape) - 1:
        return None
    vectors = _per_columns(scale, bias, shape[-1], len(shape))
    return None if vectors is None else (shape, *vectors)


def add_layer_norm_into(a: Array, b: Array, shape: tuple[int, ...], s: Array, t: Array, has_bias: bool,
                        epsilon: float) -> tuple[Array, Array]:
    """(a + b, its LayerNormalization) by ``_loops.add_layer_norm_rows``, for what
    ``add_layer_norm_plan`` accepted (``shape``, ``s``, ``t`` its answer; ``t`` stands in, unread,
    for an absent bias)."""
    total = np.empty(shape, dtype=np.float32)
    out = np.empty(shape, dtype=np.float32)
    if 1 < a.ndim < 4 and 1 < b.ndim < 4:  # the loop takes arrays of 2 or 3 axes as they are
        jit.loops().add_layer_norm_rows(a, b, s, t, has_bias, epsilon, total, out)
    else:
        n = shape[-1]
        jit.loops().add_layer_norm_rows(a.reshape(-1, n), b.reshape(-1, n), s, t, has_bias, epsilon,
                                        total.reshape(-1, n), out.reshape(-1, n))
    return total, out


def _per_columns(scale: Array, bias: Array | None, n: int, ndim: int) -> tuple[Array, Array] | None:
    """The scale and the bias as vectors of ``n`` values (``_per_column``), the scale standing in for
    an absent bias; None where either is not one value per column."""
    s = _per_column(scale, n, ndim)
    t = s if bias is None else _per_column(bias, n, ndim)
    return None if s is None or t is None else (s, t)


def _per_column(v: Array, n: int, ndim: int) -> Array | None:
    """``v`` as a vector of its ``n`` values when it is a contiguous float32 array of one value per
    column (any leading 1s), else None; a vector as it is (a reshape costs as much as the checks)."""
    if v.__class__ is not np.ndarray or v.dtype != _F32 or not v.flags.c_contiguous:
        return None
    if v.ndim == 1:
        return v if v.shape[0] == n else None
    return v.reshape(n) if v.size == n and v.ndim <= ndim and v.shape[-1] == n else None


_STASH_TYPES: dict[int, type] = {1: np.float32, 10: np.float16, 11: np.float64, 16: ml_dtypes.bfloat16}


@kernel("RMSNormalization", since=23)
def rms_normalization(x: Array, scale: Array, axis: int = -1, epsilon: float = DEFAULT_EPSILON,
                      stash_type: int = 1) -> Array:
    axis = axis_in(axis, x.ndim)
    if x.size == 0:
        return (x * scale).astype(x.dtype, copy=False)
    w = _layer_rows(x, axis)
    inv = row_means(np.square(w))
    inv += epsilon
    np.sqrt(inv, out=inv)
    np.reciprocal(inv, out=inv)
    y = np.multiply(w, inv[:, None]).reshape(x.shape)
    y *= scale
    return y.astype(x.dtype, copy=False)


# ---- channel-wise -------------------------------------------------------------------------------

def _batchnorm_infer(x: Array, scale: Array, bias: Array, mean: Array, var: Array, epsilon: float,
                     relu: bool = False) -> Array:
    """Inference BatchNormalization, with the statistics folded into one multiply-add a channel as
    inference runtimes do; with ``relu``, max(y, 0) after it (``batch_norm_relu``). A float32 NCHW
    tensor is one compiled pass (``_loops.channel_affine``; DenseNet's 1x256x56x56 with cold caches
    295 us, against 536 for numpy's multiply, add and maximum), rounded as those are, so the same
    bits."""
    st = _stash(x)
    a = scale.astype(st) / np.sqrt(var.astype(st) + epsilon)
    b = bias.astype(st) - mean.astype(st) * a
    if (x.dtype == _F32 and x.ndim >= 2 and x.size and x.flags.c_contiguous and a.dtype == _F32
            and a.shape == (x.shape[1],) and b.shape == a.shape and jit.enabled()):
        out = np.empty(x.shape, dtype=np.float32)
        rows = x.shape[0] * x.shape[1]
        jit.loops().channel_affine(x.reshape(rows, -1), a, b, relu, out.reshape(rows, -1))
        return out
    w = x.astype(st, copy=False)  # (a 16-bit input: computed in float32, rounded once)
    y = apply_per_channel(np.multiply, w, a)
    y = apply_per_channel(np.add, y, b, out=y)
    if relu:
        bound_into(np.maximum, y, 0, y)
    return y.astype(x.dtype, copy=False)


def batch_norm_relu(x: Array, scale: Array, bias: Array, mean: Array, var: Array,
                    epsilon: float = DEFAULT_EPSILON) -> Array:
    """Inference BatchNormalization and a Relu after it: the bits of the two kernels one after the
    other (``hal.kernels.fused_relu.NormRelu``, DenseNet's BN-Relu before each conv)."""
    return _batchnorm_infer(x, scale, bias, mean, var, epsilon, relu=True)


@kernel("BatchNormalization", since=1)
def batch_normalization_legacy(x: Array, scale: Array, bias: Array, mean: Array, var: Array,
                               epsilon: float = DEFAULT_EPSILON, momentum: float = 0.9, spatial: int = 1,
                               is_test: int = 0, consumed_inputs=None) -> Array:
    if not spatial:  # statistics per activation: (C, D1, ..., Dn), broadcast over the batch alone
        st = _stash(x)
        a = scale.astype(st) / np.sqrt(var.astype(st) + epsilon)
        b = bias.astype(st) - mean.astype(st) * a
        return (x.astype(st, copy=False) * a + b).astype(x.dtype, copy=False)
    return _batchnorm_infer(x, scale, bias, mean, var, epsilon)


@kernel("BatchNormalization", since=9)
def batch_normalization_9(x: Array, scale: Array, bias: Array, mean: Array, var: Array,
                          epsilon: float = DEFAULT_EPSILON, momentum: float = 0.9) -> Array:
    return _batchnorm_infer(x, scale, bias, mean, var, epsilon)


@kernel("BatchNormalization", since=14)
def batch_normalization(x: Array, scale: Array, bias: Array, mean: Array, var: Array,
                        epsilon: float = DEFAULT_EPSILON, momentum: float = 0.9, training_mode: int = 0
                        ) -> Array | tuple[Array, Array, Array]:
    if not training_mode:
        return _batchnorm_infer(x, scale, bias, mean, var, epsilon)
    axes = (0, *range(2, x.ndim))
    w = x.astype(_stash(x), copy=False)
    batch_mean = quiet_mean(w, axis=axes)
    batch_var = np.var(w, axis=axes) if w.size else quiet_mean(w, axis=axes)
    # (x - mean) first, as onnxruntime does: folded into x a + b, a channel whose values sit near their
    # mean (a batch of one: exactly on it) cancels two large terms, and its output kept few digits
    y = apply_per_channel(np.subtract, w, batch_mean)
    y = apply_per_channel(np.multiply, y, scale.astype(w.dtype) / np.sqrt(batch_var + epsilon), out=y)
    y = apply_per_channel(np.add, y, bias, out=y).astype(x.dtype, copy=False)
    running_mean = (mean * momentum + batch_mean * (1 - momentum)).astype(mean.dtype, copy=False)
    running_var = (var * momentum + batch_var * (1 - momentum)).astype(var.dtype, copy=False)
    return y, running_mean, running_var


@kernel("InstanceNormalization", since=1)
def instance_normalization(x: Array, scale: Array, bias: Array, epsilon: float = DEFAULT_EPSILON,
                           consumed_inputs=None) -> Array:
    y, _, _ = _standardize(x, tuple(range(2, x.ndim)), epsilon)
    apply_per_channel(np.multiply, y, scale, out=y)
    return apply_per_channel(np.add, y, bias, out=y).astype(x.dtype, copy=False)


def _group_norm(x: Array, scale: Array, bias: Array, num_groups: int, epsilon: float, stash: np.dtype) -> Array:
    """ONNX's GroupNormalization function body, as onnxruntime and onnx's reference run it: each
    group's variance as E[x^2] - E[x]^2 and (x - mean) / sqrt(var + epsilon), in the ``stash`` dtype
    (onnxruntime has no kernel of its own); scale and bias per channel in the wider of that and x's
    dtype, rounded once (a float16 x: as onnxruntime's inserted casts leave it)."""
    w = x.astype(stash, copy=False).reshape(x.shape[0], num_groups, -1)
    mean = quiet_mean(w, axis=2, keepdims=True)
    var = quiet_mean(np.square(w), axis=2, keepdims=True)
    var -= np.square(mean)
    var += epsilon
    y = np.subtract(w, mean)
    y /= np.sqrt(var, out=var)
    y = y.astype(np.promote_types(x.dtype, stash), copy=False).reshape(x.shape)
    apply_per_channel(np.multiply, y, scale, out=y)
    return apply_per_channel(np.add, y, bias, out=y).astype(x.dtype, copy=False)


@kernel("GroupNormalization", since=18)
def group_normalization_18(x: Array, scale: Array, bias: Array, num_groups: int = 1,
                           epsilon: float = DEFAULT_EPSILON) -> Array:
    # opset 18 takes one scale and bias per group; its body keeps x's type (a 16-bit x: float32, as
    # onnxruntime's inserted casts run it)
    per_group = x.shape[1] // num_groups
    return _group_norm(x, np.repeat(scale, per_group), np.repeat(bias, per_group), num_groups, epsilon, _stash(x))


@kernel("GroupNormalization", since=21)
def group_normalization(x: Array, scale: Array, bias: Array, num_groups: int = 1, epsilon: float = DEFAULT_EPSILON,
                        stash_type: int = 1) -> Array:
    # the statistics in the stash type: float32 by default, a float64 x's too
    return _group_norm(x, scale, bias, num_groups, epsilon, np.dtype(_STASH_TYPES.get(stash_type, np.float32)))


# ---- local and whole-tensor ---------------------------------------------------------------------

@kernel("LRN", since=1)
def lrn(x: Array, size: int, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0) -> Array:
    st = _stash(x)
    c = x.shape[1]
    # Channel windows [c - lo, c + hi] as one strided view of the zero-padded squares, summed by one
    # reduction (no Python loop over the window); pads past c only add zeros, so they are capped.
    lo, hi = min((size - 1) // 2, c), min(math.ceil((size - 1) / 2), c)
    sq = np.zeros((x.shape[0], c + lo + hi, *x.shape[2:]), dtype=st)
    np.square(x.astype(st, copy=False), out=sq[:, lo:lo + c])
    s = sq.strides
    windows = as_strided(sq, shape=(x.shape[0], lo + hi + 1, c, *x.shape[2:]), strides=(s[0], s[1], *s[1:]),
                         writeable=False)
    window = np.add.reduce(windows, axis=1)
    window *= alpha / size
    window += bias
    return (x / _lrn_power(window, beta)).astype(x.dtype, copy=False)


def _lrn_power(v: Array, beta: float) -> Array:
    """``v ** beta`` in place, the usual beta = 0.75 as sqrt(v) * sqrt(sqrt(v)): a transcendental
    power per element costs more than the rest of LRN."""
    if beta == 0.75:
        r = np.sqrt(v)
        np.sqrt(r, out=v)
        return np.multiply(v, r, out=v)
    return np.power(v, beta, out=v)


@kernel("MeanVarianceNormalization", since=9)
def mean_variance_normalization(x: Array, axes: list[int] | None = None) -> Array:
    axes_t = tuple(axis_in(a, x.ndim) for a in (axes if axes is not None else (0, 2, 3)))
    w = x.astype(_stash(x), copy=False)
    mean = quiet_mean(w, axis=axes_t, keepdims=True)
    d = w - mean
    std = np.sqrt(quiet_mean(np.square(d), axis=axes_t, keepdims=True))
    std += 1e-9  # the epsilon of ONNX's function body
    return (d / std).astype(x.dtype, copy=False)


@kernel("LpNormalization", since=1)
def lp_normalization(x: Array, axis: int = -1, p: int = 2) -> Array:
    w = x.astype(_stash(x), copy=False)
    if p == 1:
        norm = np.sum(np.abs(w), axis=axis, keepdims=True)
    elif p == 2:
        norm = np.sqrt(np.sum(np.square(w), axis=axis, keepdims=True))
    else:
        raise ValueError(f"LpNormalization supports p in (1, 2), got {p}")
    # a zero norm gives zeros (0 / 0 = 0 in ONNX's tests), not NaN
    y = np.divide(w, norm, out=np.zeros(np.broadcast_shapes(w.shape, norm.shape), w.dtype), where=norm != 0)
    return y.astype(x.dtype, copy=False)
