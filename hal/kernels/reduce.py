"""Reduction kernels: Reduce* over axes, ArgMax / ArgMin.

The axes moved from an attribute to an optional input (ReduceSum at opset 13, the others at 18);
each op is registered once per form. Reducing an empty set gives the reduction's identity
(0 for sums, 1 for products, -inf / +inf or the integer limits for max / min, NaN for the mean);
empty axes under ``noop_with_empty_axes`` reduce nothing, each element alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from hal.kernels._axes import axis_in
from hal.kernels.elementwise import quiet_mean
from hal.kernels.registry import kernel

Array = np.ndarray
Axes = tuple[int, ...] | None


def _arr(x: object) -> Array:
    return x if isinstance(x, np.ndarray) else np.asarray(x)


def _identity_max(dtype: np.dtype) -> object:
    """The identity of max: -inf for floats, the smallest value for integers and bools."""
    if dtype.kind == "f" or dtype.kind == "V":
        return -np.inf
    if dtype == np.bool_:
        return False
    return np.iinfo(dtype).min


def _identity_min(dtype: np.dtype) -> object:
    if dtype.kind == "f" or dtype.kind == "V":
        return np.inf
    if dtype == np.bool_:
        return True
    return np.iinfo(dtype).max


def _acc(dtype: np.dtype) -> np.dtype:
    """Accumulator: float32 for 16-bit floats, else the dtype itself (int32 sums stay int32)."""
    return np.dtype(np.float32) if dtype.itemsize < 4 and dtype.kind in "fV" else dtype


def _total(x: Array, axes: Axes, keepdims: bool) -> Array:
    return np.sum(x, axis=axes, keepdims=keepdims, dtype=_acc(x.dtype))


def _sum(x: Array, axes: Axes, keepdims: bool) -> Array:
    return _total(x, axes, keepdims).astype(x.dtype, copy=False)


def _mean(x: Array, axes: Axes, keepdims: bool) -> Array:
    with np.errstate(invalid="ignore", divide="ignore"):
        if x.dtype.kind in "iu":
            return np.asarray(quiet_mean(x, axis=axes, keepdims=keepdims)).astype(x.dtype)
        return np.asarray(quiet_mean(x, axis=axes, keepdims=keepdims, dtype=_acc(x.dtype))).astype(x.dtype, copy=False)


def _max(x: Array, axes: Axes, keepdims: bool) -> Array:
    if x.size == 0:
        return np.max(x, axis=axes, keepdims=keepdims, initial=_identity_max(x.dtype))
    return np.max(x, axis=axes, keepdims=keepdims)


def _min(x: Array, axes: Axes, keepdims: bool) -> Array:
    if x.size == 0:
        return np.min(x, axis=axes, keepdims=keepdims, initial=_identity_min(x.dtype))
    return np.min(x, axis=axes, keepdims=keepdims)


def _prod(x: Array, axes: Axes, keepdims: bool) -> Array:
    return np.prod(x, axis=axes, keepdims=keepdims, dtype=x.dtype)


def _l1(x: Array, axes: Axes, keepdims: bool) -> Array:
    return _sum(np.abs(x), axes, keepdims)


def _sum_square(x: Array, axes: Axes, keepdims: bool) -> Array:
    return _sum(np.square(x), axes, keepdims)


def _l2(x: Array, axes: Axes, keepdims: bool) -> Array:
    return np.sqrt(_total(np.square(x), axes, keepdims)).astype(x.dtype, copy=False)


def _log_sum(x: Array, axes: Axes, keepdims: bool) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(_total(x, axes, keepdims)).astype(x.dtype, copy=False)


def _log_sum_exp(x: Array, axes: Axes, keepdims: bool) -> Array:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        m = _max(x, axes, True)
        # an all -inf (or empty) slice would give inf - inf; shift it by 0 instead
        m = np.where(np.isfinite(m), m, 0).astype(_acc(x.dtype), copy=False)
        r = np.log(_total(np.exp(x - m), axes, True)) + m
    if not keepdims:
        r = r.reshape(_kept_shape(x.shape, axes))
    return r.astype(x.dtype, copy=False)


def _kept_shape(shape: tuple[int, ...], axes: Axes) -> tuple[int, ...]:
    if axes is None:
        return ()
    return tuple(d for i, d in enumerate(shape) if i not in axes)


Reducer = Callable[[Array, Axes, bool], Array]


def _reduce(fn: Reducer, data: Array, axes: Sequence[int] | Array | None, keepdims: int,
            noop_with_empty_axes: int) -> Array:
    if axes is None or len(axes) == 0:
        if noop_with_empty_axes:
            # nothing is reduced, but each element still passes through the reduction's own arithmetic,
            # as onnxruntime and onnx's reference do: |x| for L1 and L2 (sqrt(x^2), inf past float32's
            # square), x^2 for SumSquare, log x for LogSum; the others give x back
            return _arr(fn(data.reshape((*data.shape, 1)), (data.ndim,), False))
        norm: Axes = None
    else:
        norm = tuple(sorted({axis_in(int(a), data.ndim) for a in np.asarray(axes).ravel()}))
    return _arr(fn(data, norm, bool(keepdims)))


def _register(op: str, fn: Reducer, axes_input_since: int, versions: Sequence[int]) -> None:
    name = op[len("Reduce"):].lower()

    def with_attr(data: Array, axes: Sequence[int] | None = None, keepdims: int = 1) -> Array:
        return _reduce(fn, data, axes, keepdims, 0)

    def with_input(data: Array, axes: Array | None = None, keepdims: int = 1,
                   noop_with_empty_axes: int = 0) -> Array:
        return _reduce(fn, data, axes, keepdims, noop_with_empty_axes)

    with_attr.__name__, with_input.__name__ = f"reduce_{name}_attr", f"reduce_{name}"
    for since in versions:
        kernel(op, since=since)(with_input if since >= axes_input_since else with_attr)


_REDUCERS: list[tuple[str, Reducer, int]] = [
    ("ReduceSum", _sum, 13), ("ReduceMean", _mean, 18), ("ReduceMax", _max, 18),
    ("ReduceMin", _min, 18), ("ReduceProd", _prod, 18), ("ReduceL1", _l1, 18), ("ReduceL2", _l2, 18),
    ("ReduceLogSum", _log_sum, 18), ("ReduceLogSumExp", _log_sum_exp, 18),
    ("ReduceSumSquare", _sum_square, 18),
]

for _op, _fn, _since in _REDUCERS:
    _register(_op, _fn, _since, (1, _since))


# ---- ArgMax / ArgMin ----------------------------------------------------------------------------

def _arg(fn: Callable[..., Array], data: Array, axis: int, keepdims: int, select_last_index: int) -> Array:
    axis = axis_in(axis, data.ndim)
    if select_last_index:
        flipped = np.flip(data, axis)
        idx = fn(flipped, axis=axis, keepdims=bool(keepdims))
        idx = (data.shape[axis] - 1) - idx
    else:
        idx = fn(data, axis=axis, keepdims=bool(keepdims))
    return _arr(idx).astype(np.int64, copy=False)


@kernel("ArgMax", since=1)
def argmax(data: Array, axis: int = 0, keepdims: int = 1, select_last_index: int = 0) -> Array:
    return _arg(np.argmax, data, axis, keepdims, select_last_index)


@kernel("ArgMin", since=1)
def argmin(data: Array, axis: int = 0, keepdims: int = 1, select_last_index: int = 0) -> Array:
    return _arg(np.argmin, data, axis, keepdims, select_last_index)
