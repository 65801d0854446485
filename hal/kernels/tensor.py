"""Tensor-manipulation kernels: shape and layout, constants, padding, dropout.

Layout kernels (Reshape, Transpose, Slice, Squeeze, Unsqueeze, Flatten, Split, Expand, Identity) return
numpy views of their input where numpy can express one: kernels never write into their inputs, so
sharing memory is safe and saves a copy on every layout op.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper, numpy_helper

from hal.kernels._axes import axis_in
from hal.kernels.registry import kernel


def _ints(v: Any) -> list[int]:
    """An int list from an attribute list or an integer tensor input (an integer array's ``tolist``:
    Python ints in one C call, where converting element by element cost a Reshape 2-3 us)."""
    if v.__class__ is np.ndarray and v.dtype.kind in "iu":
        return v.reshape(-1).tolist()
    return [int(i) for i in np.asarray(v).reshape(-1)]


# --- Reshape / Flatten / Squeeze / Unsqueeze -------------------------------------------------------


def _reshape(data: np.ndarray, shape: list[int], allowzero: int) -> np.ndarray:
    if not allowzero:
        shape = [data.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return data.reshape(shape)


@kernel("Reshape", since=1)
def reshape_1(data, shape=None, consumed_inputs=None):
    return _reshape(data, _ints(shape), 0)


@kernel("Reshape", since=5)
def reshape(data, shape, allowzero=0):
    return _reshape(data, _ints(shape), allowzero)


@kernel("Flatten", since=1)
def flatten(data, axis=1):
    axis = data.ndim if axis == data.ndim else axis_in(axis, data.ndim)  # Flatten's range ends at r
    outer = int(np.prod(data.shape[:axis], dtype=np.int64))
    inner = int(np.prod(data.shape[axis:], dtype=np.int64))
    return data.reshape(outer, inner)


def _squeeze(data: np.ndarray, axes: Any) -> np.ndarray:
    if axes is None:
        return np.squeeze(data)
    return np.squeeze(data, axis=tuple(axis_in(a, data.ndim) for a in _ints(axes)))


@kernel("Squeeze", since=1)
def squeeze_1(data, axes=None):
    return _squeeze(data, axes)


@kernel("Squeeze", since=13)
def squeeze(data, axes=None):
    return _squeeze(data, axes)


@kernel("Unsqueeze", since=1)
def unsqueeze_1(data, axes=None):
    return np.expand_dims(data, tuple(_ints(axes)))


@kernel("Unsqueeze", since=13)
def unsqueeze(data, axes):
    return np.expand_dims(data, tuple(_ints(axes)))


# --- Transpose / Concat / Split / Slice ------------------------------------------------------------


@kernel("Transpose", since=1)
def transpose(data, perm=None):
    return np.transpose(data, perm)


@kernel("Concat", since=1)
def concat_1(*inputs, axis=1):
    return np.concatenate(inputs, axis=axis)


@kernel("Concat", since=4)
def concat(*inputs, axis):
    return np.concatenate(inputs, axis=axis)


def _split(x: np.ndarray, split: list[int] | None, axis: int, num_outputs: int | None,
           n_outputs: int | None = None) -> tuple:
    axis = axis_in(axis, x.ndim)
    dim = x.shape[axis]
    if num_outputs is not None and n_outputs is not None and num_outputs != n_outputs:
        raise ValueError(f"Split has {n_outputs} outputs but num_outputs={num_outputs}")
    num_outputs = num_outputs or n_outputs
    if split is not None and not split:  # an empty 'split' input is an absent one, as onnxruntime reads it
        split = None
    if split is not None and (sum(split) != dim or any(p < 0 for p in split)
                              or (n_outputs is not None and len(split) != n_outputs)):
        raise ValueError(f"Split's parts {split} must be {n_outputs or len(split)} non-negative lengths adding up "
                         f"to the axis's {dim}")
    if split is None:
        if num_outputs is None:
            raise ValueError("Split without 'split' needs the node's output count (num_outputs)")
        # Equal chunks of ceil(dim / n); the last takes what is left (ONNX 18 semantics, exact when even).
        chunk = -(-dim // num_outputs)
        split = [min(chunk, max(dim - i * chunk, 0)) for i in range(num_outputs)]
    bounds = np.cumsum(split)[:-1]
    return tuple(np.split(x, bounds, axis=axis))


@kernel("Split", since=1, output_count=True)
def split_1(x, split=None, axis=0, num_outputs=None, _n_outputs=None):
    return _split(x, None if split is None else _ints(split), axis, num_outputs, _n_outputs)


@kernel("Split", since=2, output_count=True)
def split_2(x, split=None, axis=0, num_outputs=None, _n_outputs=None):
    return _split(x, None if split is None else _ints(split), axis, num_outputs, _n_outputs)


@kernel("Split", since=13, output_count=True)
def split(x, split=None, axis=0, num_outputs=None, _n_outputs=None):
    return _split(x, None if split is None else _ints(split), axis, num_outputs, _n_outputs)


def _slice(data: np.ndarray, starts: list[int], ends: list[int], axes: list[int] | None,
           steps: list[int] | None) -> np.ndarray:
    if axes is None:
        axes = list(range(len(starts)))
    if steps is None:
        steps = [1] * len(starts)
    index = [slice(None)] * data.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = axis_in(a, data.ndim)
        index[a] = _onnx_slice(s, e, st, data.shape[a])
    return data[tuple(index)]


def _onnx_slice(start: int, end: int, step: int, dim: int) -> slice:
    """ONNX's clamping of start/end, as a Python slice (they differ for a negative step)."""
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    start = min(max(start, 0), dim - 1)
    end = min(max(end, -1), dim - 1)
    return slice(start, None if end < 0 else end, step)


@kernel("Slice", since=1)
def slice_1(data, starts=None, ends=None, axes=None):
    return _slice(data, starts, ends, axes, None)


@kernel("Slice", since=10)
def slice_(data, starts, ends, axes=None, steps=None):
    return _slice(data, _ints(starts), _ints(ends), None if axes is None else _ints(axes),
                  None if steps is None else _ints(steps))


# --- Shape queries and pass-through ----------------------------------------------------------------


@kernel("Shape", since=1)
def shape(data, start=0, end=None):
    return np.array(data.shape[start:end], dtype=np.int64)


@kernel("Size", since=1)
def size(data):
    return np.array(data.size, dtype=np.int64)


@kernel("Identity", since=1)
def identity(x):
    return x


@kernel("Expand", since=8)
def expand(x, shape):
    out = np.broadcast_shapes(x.shape, tuple(_ints(shape)))
    return np.broadcast_to(x, out)


@kernel("Tile", since=1)
def tile_1(x, tiles, axis):
    reps = [1] * x.ndim
    reps[axis_in(int(np.asarray(axis).reshape(-1)[0]), x.ndim)] = int(np.asarray(tiles).reshape(-1)[0])
    return np.tile(x, reps)


@kernel("Tile", since=6)
def tile(x, repeats):
    return np.tile(x, _ints(repeats))


# --- Pad ---------------------------------------------------------------------------------------------

_NP_PAD_MODE = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


def _pad(data: np.ndarray, pads: list[int], mode: str, value: Any, axes: list[int] | None) -> np.ndarray:
    rank = data.ndim
    axes = list(range(rank)) if axes is None else [axis_in(a, rank) for a in axes]
    n = len(axes)
    before, after = [0] * rank, [0] * rank
    for i, a in enumerate(axes):
        before[a], after[a] = pads[i], pads[i + n]
    if short := [a for a in range(rank) if data.shape[a] + before[a] + after[a] < 0]:
        a = short[0]
        raise ValueError(f"Pad: pads {before[a]} and {after[a]} take more than axis {a}'s {data.shape[a]} "
                         f"elements (a size of {data.shape[a] + before[a] + after[a]}); negative pads may crop "
                         "an axis to nothing, no further")
    if any(p < 0 for p in before + after):  # negative pads crop
        data = data[tuple(slice(max(-b, 0), data.shape[i] - max(-e, 0))
                          for i, (b, e) in enumerate(zip(before, after)))]
        before = [max(b, 0) for b in before]
        after = [max(e, 0) for e in after]
    width = list(zip(before, after))
    if not any(before + after):
        return data
    if mode == "constant":
        fill = 0 if value is None else np.asarray(value).reshape(-1)[0]
        out = np.empty([s + b + e for s, b, e in zip(data.shape, before, after)], dtype=data.dtype)
        out.fill(fill)
        out[tuple(slice(b, b + s) for b, s in zip(before, data.shape))] = data
        return out
    return np.pad(data, width, mode=_NP_PAD_MODE[mode])


@kernel("Pad", since=1)
def pad_1(data, paddings=None, mode="constant", value=0.0):
    return _pad(data, paddings, mode, value, None)


@kernel("Pad", since=2)
def pad_2(data, pads=None, mode="constant", value=0.0):
    return _pad(data, pads, mode, value, None)


@kernel("Pad", since=11)
def pad(data, pads, constant_value=None, axes=None, mode="constant"):
    return _pad(data, _ints(pads), mode, constant_value, None if axes is None else _ints(axes))


# --- Generators: Range, ConstantOfShape, Constant, EyeLike, Trilu -----------------------------------


@kernel("Range", since=11)
def range_(start, limit, delta, stash_type=1):
    dtype = np.asarray(start).dtype
    # Scalars by the spec; 1-element tensors are accepted too (onnx's own expanded functions make them).
    start, limit, delta = (np.asarray(v).reshape(-1)[0] for v in (start, limit, delta))
    if dtype.kind in "iu":
        s, lim, d = int(start), int(limit), int(delta)
        n = max(-((s - lim) // d), 0)
        return (s + np.arange(n, dtype=np.int64) * d).astype(dtype)
    work = np.dtype(np.float32) if stash_type == 1 and dtype.itemsize < 4 else dtype
    s, lim, d = (np.asarray(v).astype(work)[()] for v in (start, limit, delta))
    n = max(int(np.ceil((float(lim) - float(s)) / float(d))), 0)
    return (s + np.arange(n, dtype=work) * d).astype(dtype)


@kernel("ConstantOfShape", since=9)
def constant_of_shape(input, value=None):
    fill = np.zeros(1, dtype=np.float32) if value is None else np.asarray(value).reshape(-1)
    out = np.empty(_ints(input), dtype=fill.dtype)
    out.fill(fill[0])
    return out


def _sparse_to_dense(sparse: Any) -> np.ndarray:
    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    dense = np.zeros(list(sparse.dims), dtype=values.dtype)
    if indices.ndim == 1:  # linearised indices
        dense.reshape(-1)[indices] = values
    else:
        dense[tuple(indices.T)] = values
    return dense


@kernel("Constant", since=1)
def constant(value=None, sparse_value=None, value_float=None, value_floats=None, value_int=None,
             value_ints=None, value_string=None, value_strings=None):
    if value is not None:
        return np.asarray(value)
    if sparse_value is not None:
        return _sparse_to_dense(sparse_value)
    if value_float is not None:
        return np.array(value_float, dtype=np.float32)
    if value_floats is not None:
        return np.array(value_floats, dtype=np.float32)
    if value_int is not None:
        return np.array(value_int, dtype=np.int64)
    if value_ints is not None:
        return np.array(value_ints, dtype=np.int64)
    if value_string is not None:
        return np.array(value_string, dtype=object)
    if value_strings is not None:
        return np.array(value_strings, dtype=object)
    raise ValueError("Constant sets none of its value attributes")


@kernel("EyeLike", since=9)
def eye_like(input, dtype=None, k=0):
    out = input.dtype if dtype is None else helper.tensor_dtype_to_np_dtype(dtype)
    return np.eye(input.shape[0], input.shape[1], k=k, dtype=out)


@kernel("Trilu", since=14)
def trilu(input, k=None, upper=1):
    k = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    return np.triu(input, k) if upper else np.tril(input, k)


# --- Depth / space rearrangements and CenterCropPad --------------------------------------------------


@kernel("DepthToSpace", since=1)
def depth_to_space(input, blocksize, mode="DCR"):
    b, c, h, w = input.shape
    bs = blocksize
    if mode == "DCR":
        tmp = input.reshape(b, bs, bs, c // (bs * bs), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        tmp = input.reshape(b, c // (bs * bs), bs, bs, h, w).transpose(0, 1, 4, 2, 5, 3)
    return tmp.reshape(b, c // (bs * bs), h * bs, w * bs)


@kernel("SpaceToDepth", since=1)
def space_to_depth(input, blocksize, mode="DCR"):
    b, c, h, w = input.shape
    bs = blocksize
    tmp = input.reshape(b, c, h // bs, bs, w // bs, bs)
    tmp = tmp.transpose(0, 3, 5, 1, 2, 4) if mode == "DCR" else tmp.transpose(0, 1, 3, 5, 2, 4)
    return tmp.reshape(b, c * bs * bs, h // bs, w // bs)


@kernel("CenterCropPad", since=18)
def center_crop_pad(input_data, shape, axes=None):
    rank = input_data.ndim
    axes = list(range(rank)) if axes is None else [axis_in(a, rank) for a in axes]
    out_shape = list(input_data.shape)
    src = [slice(None)] * rank
    dst = [slice(None)] * rank
    for a, target in zip(axes, _ints(shape)):
        dim = input_data.shape[a]
        out_shape[a] = target
        if target < dim:
            off = (dim - target) // 2
            src[a] = slice(off, off + target)
        elif target > dim:
            off = (target - dim) // 2
            dst[a] = slice(off, off + dim)
    out = np.zeros(out_shape, dtype=input_data.dtype)
    out[tuple(dst)] = input_data[tuple(src)]
    return out


# --- Dropout ------------------------------------------------------------------------------------------


def _dropout(data: np.ndarray, ratio: float, training: bool, seed: int | None, mask_dtype: Any,
             n_outputs: int) -> Any:
    """The output, and the mask when the node asks for it (``n_outputs`` 2): an inference Dropout
    that reads only its output allocates nothing."""
    if not training or ratio == 0:
        return data if n_outputs < 2 else (data, np.ones(data.shape, dtype=mask_dtype))
    keep = np.random.RandomState(seed).uniform(0.0, 1.0, data.shape) >= ratio
    out = ((keep * data) * data.dtype.type(1.0 / (1.0 - ratio))).astype(data.dtype, copy=False)
    return out if n_outputs < 2 else (out, keep.astype(mask_dtype, copy=False))


@kernel("Dropout", since=1, output_count=True)
def dropout_1(data, ratio=0.5, is_test=0, consumed_inputs=None, _n_outputs=2):
    # Inference semantics: the reference target never trains, as in onnxruntime's inference path.
    return _dropout(data, ratio, False, None, data.dtype, _n_outputs)


@kernel("Dropout", since=7, output_count=True)
def dropout_7(data, ratio=0.5, _n_outputs=2):
    return _dropout(data, ratio, False, None, data.dtype, _n_outputs)


@kernel("Dropout", since=10, output_count=True)
def dropout_10(data, ratio=0.5, _n_outputs=2):
    return _dropout(data, ratio, False, None, np.bool_, _n_outputs)


@kernel("Dropout", since=12, output_count=True)
def dropout(data, ratio=None, training_mode=None, seed=None, _n_outputs=2):
    r = 0.5 if ratio is None else float(np.asarray(ratio).reshape(-1)[0])
    training = training_mode is not None and bool(np.asarray(training_mode).reshape(-1)[0])
    return _dropout(data, r, training, seed, np.bool_, _n_outputs)


# --- Upsample (deprecated by Resize at opset 10) ------------------------------------------------------


def _upsample(x: np.ndarray, scales: list[float], mode: str) -> np.ndarray:
    """Separable resampling, asymmetric coordinates (out / scale), output dim floor(in * scale)."""
    if any(not s >= 1 for s in scales):  # Upsample only upsamples (Resize, from opset 10, also shrinks)
        raise ValueError(f"Upsample scales must each be >= 1, got {scales}")
    out = x
    for axis, scale in enumerate(scales):
        if scale == 1.0:
            continue
        n_in = x.shape[axis]
        pos = np.arange(int(np.floor(n_in * scale)), dtype=np.float64) / scale
        if mode == "nearest":
            out = np.take(out, np.minimum(np.floor(pos).astype(np.int64), n_in - 1), axis=axis)
            continue
        pos = np.minimum(pos, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        shape = [1] * x.ndim
        shape[axis] = -1
        frac = (pos - lo).astype(x.dtype).reshape(shape)
        a, b = np.take(out, lo, axis=axis), np.take(out, hi, axis=axis)
        out = a + (b - a) * frac
    return out if out is not x else x.copy()


@kernel("Upsample", since=1)
def upsample_1(x, height_scale=None, width_scale=None, mode="nearest"):
    scales = [1.0] * (x.ndim - 2) + [float(height_scale), float(width_scale)]
    return _upsample(x, scales, "nearest" if mode == "nearest" else "linear")


@kernel("Upsample", since=7)
def upsample_7(x, scales=None, mode="nearest"):
    return _upsample(x, [float(s) for s in scales], mode)


@kernel("Upsample", since=9)
def upsample(x, scales, mode="nearest"):
    return _upsample(x, [float(s) for s in np.asarray(scales).reshape(-1)], mode)
