"""Indexing kernels: gather / scatter, selection (Compress, NonZero, OneHot), ordering (TopK, Unique),
scans (CumSum) and ReverseSequence.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hal.kernels._axes import axis_in
from hal.kernels.registry import kernel


def _scalar_int(v: Any) -> int:
    return int(np.asarray(v).reshape(-1)[0])


def _wrap(indices: np.ndarray, dim: int | np.ndarray) -> np.ndarray:
    """Negative indices counted from the end, as int64."""
    idx = indices.astype(np.int64, copy=False)
    return np.where(idx < 0, idx + dim, idx)


# --- Gather family -----------------------------------------------------------------------------------


@kernel("Gather", since=1)
def gather(data, indices, axis=0):
    # take reads negative indices from the end itself and raises on any outside [-n, n); an array's
    # own method, where np.take's dispatch to it was a third of tiny-gpt's embedding lookup
    axis = axis_in(axis, data.ndim)
    if data.__class__ is np.ndarray:
        return np.asarray(data.take(indices, axis=axis))
    return np.asarray(np.take(data, indices, axis=axis))


@kernel("GatherElements", since=11)
def gather_elements(data, indices, axis=0):
    """Off ``axis``, ``indices`` may be shorter than ``data`` (as onnxruntime and torch.gather allow): it
    reads the leading part of those dimensions."""
    axis = axis_in(axis, data.ndim)
    if indices.ndim != data.ndim:
        raise ValueError(f"indices have rank {indices.ndim} but data rank {data.ndim}; GatherElements needs them equal")
    if indices.shape != data.shape:
        over = [d for d in range(data.ndim) if d != axis and indices.shape[d] > data.shape[d]]
        if over:
            raise ValueError(f"indices shape {list(indices.shape)} exceeds data shape {list(data.shape)} in "
                             f"dimension {over[0]}; off axis {axis} each must be at most data's")
        data = data[tuple(slice(None) if d == axis else slice(0, n) for d, n in enumerate(indices.shape))]
    return np.take_along_axis(data, _wrap(indices, data.shape[axis]), axis=axis)


@kernel("GatherND", since=11)
def gather_nd(data, indices, batch_dims=0):
    b = batch_dims
    m = indices.shape[-1]
    batch = data.shape[:b]
    nb = int(np.prod(batch, dtype=np.int64))
    d = data.reshape(nb, *data.shape[b:])
    idx = _wrap(indices.reshape(nb, -1, m), np.array(data.shape[b:b + m], dtype=np.int64))
    picked = d[(np.arange(nb)[:, None], *np.moveaxis(idx, -1, 0))]
    return picked.reshape((*batch, *indices.shape[b:-1], *data.shape[b + m:]))


# --- Scatter family ----------------------------------------------------------------------------------

_REDUCE = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatter_into(out: np.ndarray, index: tuple, updates: np.ndarray, reduction: str) -> np.ndarray:
    if reduction == "none":
        out[index] = updates
    else:
        _REDUCE[reduction].at(out, index, updates)
    return out


def _scatter_elements(data, indices, updates, axis, reduction):
    axis = axis_in(axis, data.ndim)
    index = list(np.indices(indices.shape, sparse=True))
    index[axis] = _wrap(indices, data.shape[axis])
    return _scatter_into(data.copy(), tuple(index), updates, reduction)


@kernel("Scatter", since=9)
def scatter(data, indices, updates, axis=0):
    return _scatter_elements(data, indices, updates, axis, "none")


@kernel("ScatterElements", since=11)
def scatter_elements(data, indices, updates, axis=0, reduction="none"):
    return _scatter_elements(data, indices, updates, axis, reduction)


@kernel("ScatterND", since=11)
def scatter_nd(data, indices, updates, reduction="none"):
    m = indices.shape[-1]
    idx = _wrap(indices, np.array(data.shape[:m], dtype=np.int64))
    return _scatter_into(data.copy(), tuple(np.moveaxis(idx, -1, 0)), updates, reduction)


# --- Selection ---------------------------------------------------------------------------------------


@kernel("Compress", since=9)
def compress(input, condition, axis=None):
    """A condition shorter than the axis (or the flattened input) drops what lies past it, as the spec
    says; one longer has its excess ignored, as onnxruntime does (numpy raised where it held a True)."""
    keep = condition.reshape(-1).astype(bool, copy=False)
    n = input.size if axis is None else input.shape[axis_in(axis, input.ndim)]
    return np.compress(keep[:n], input, axis=axis)


@kernel("NonZero", since=9)
def non_zero(x):
    if x.ndim == 0:
        return np.zeros((0, int(bool(x))), dtype=np.int64)
    return np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


@kernel("OneHot", since=9)
def one_hot(indices, depth, values, axis=-1):
    depth = int(np.asarray(depth).reshape(-1)[0])
    axis = axis_in(axis, indices.ndim + 1)
    idx = _wrap(indices.astype(np.int64), depth)
    hot = idx[..., None] == np.arange(depth, dtype=np.int64)
    out = np.where(hot, values[1], values[0]).astype(values.dtype, copy=False)
    return np.moveaxis(out, -1, axis)


# --- Ordering ----------------------------------------------------------------------------------------


def _topk(x: np.ndarray, k: int, axis: int, largest: int) -> tuple:
    axis = axis_in(axis, x.ndim)
    n = x.shape[axis]
    if largest:
        # Stable descending order that keeps the lower index first among equal values.
        order = np.flip(np.argsort(np.flip(x, axis), axis=axis, kind="stable"), axis)
        order = (n - 1) - order
    else:
        order = np.argsort(x, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis)
    return np.take_along_axis(x, idx, axis=axis), idx.astype(np.int64, copy=False)


@kernel("TopK", since=1)
def top_k_1(x, axis=-1, k=None):
    return _topk(x, k, axis, 1)


@kernel("TopK", since=10)
def top_k(x, k, axis=-1, largest=1, sorted=1):
    return _topk(x, _scalar_int(k), axis, largest)


@kernel("Unique", since=11)
def unique(x, axis=None, sorted=1):
    flat = x.reshape(-1) if axis is None else x
    y, first, inverse, counts = np.unique(flat, return_index=True, return_inverse=True,
                                          return_counts=True, axis=axis)
    inverse = inverse.reshape(-1)
    if not sorted:
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        y = np.take(y, order, axis=0 if axis is None else axis)
        first, counts, inverse = first[order], counts[order], rank[inverse]
    i64 = np.int64
    return y, first.astype(i64), inverse.astype(i64), counts.astype(i64)


# --- Scans and sequence reversal ----------------------------------------------------------------------


@kernel("CumSum", since=11)
def cum_sum(x, axis, exclusive=0, reverse=0):
    axis = axis_in(_scalar_int(axis), x.ndim)
    src = np.flip(x, axis) if reverse else x
    out = np.cumsum(src, axis=axis, dtype=x.dtype)
    if exclusive:
        shifted = np.zeros_like(out)
        lead = [slice(None)] * x.ndim
        tail = [slice(None)] * x.ndim
        lead[axis], tail[axis] = slice(1, None), slice(None, -1)
        shifted[tuple(lead)] = out[tuple(tail)]
        out = shifted
    return np.flip(out, axis) if reverse else out


@kernel("ReverseSequence", since=10)
def reverse_sequence(input, sequence_lens, batch_axis=1, time_axis=0):
    x = np.moveaxis(input, (time_axis, batch_axis), (0, 1))
    t = np.arange(x.shape[0], dtype=np.int64)[:, None]
    lens = sequence_lens.astype(np.int64)[None, :]
    src = np.where(t < lens, lens - 1 - t, t)
    out = x[src, np.arange(x.shape[1])[None, :]]
    return np.ascontiguousarray(np.moveaxis(out, (0, 1), (time_axis, batch_axis)))
