"""Size rules of the tensor ops: broadcasting, shape-making, gathering, joining and splitting,
and the reductions of an empty input."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hal.op_sizes._read import broadcast, first, ints, itemsize


def _elementwise(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    if len(arrays) < 2:
        return None
    shape = arrays[0].shape
    if all(a.shape == shape for a in arrays):
        return None  # no broadcasting: the output is no larger than an input already in memory
    return broadcast([a.shape for a in arrays]), max(itemsize(a) for a in arrays)


def _expand(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int]:
    x, shape = args[0], args[1]
    return broadcast([x.shape, ints(shape)]), itemsize(x)


def _tile(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int]:
    x = args[0]
    if len(args) >= 3:  # Tile-1: (input, tiles, axis)
        shape = list(x.shape)
        axis = int(first(args[2])) % max(x.ndim, 1)
        shape[axis] *= max(int(first(args[1])), 0)
        return shape, itemsize(x)
    reps = ints(args[1])
    return [d * max(r, 0) for d, r in zip(x.shape, reps)], itemsize(x)


def _constant_of_shape(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int]:
    value = attrs.get("value")
    return ints(args[0]), itemsize(value) if value is not None else 4


def _range(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    start, limit = first(args[0]), first(args[1])
    delta = first(args[2]) if len(args) > 2 and args[2] is not None else 1  # onnxruntime's leaves it out
    if np.asarray(start).dtype.kind in "iu":
        s, lim, d = int(start), int(limit), int(delta)
        if d == 0:
            return None
        n = max(-((s - lim) // d), 0)
    else:
        s, lim, d = float(start), float(limit), float(delta)
        if d == 0 or math.isnan(s) or math.isnan(lim) or math.isnan(d):
            return None
        q = (lim - s) / d
        if math.isinf(q):
            return [2**63], itemsize(args[0])  # an endless range: refuse rather than let numpy try
        n = max(math.ceil(q), 0)
    return [n], itemsize(args[0])


def _pad(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    x = args[0]
    pads = attrs.get("pads", attrs.get("paddings")) if len(args) < 2 or args[1] is None else ints(args[1])
    if pads is None:
        return None
    rank = x.ndim
    axes = ints(args[3]) if len(args) > 3 and args[3] is not None else list(range(rank))
    n = len(axes)
    out = list(x.shape)
    for i, a in enumerate(axes[: len(pads) // 2]):
        a %= max(rank, 1)
        out[a] = max(out[a] + int(pads[i]) + int(pads[i + n]), 0)
    return out, itemsize(x)


def _one_hot(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int]:
    indices, depth, values = args[0], args[1], args[2]
    d = first(depth)
    d = int(d) if math.isfinite(float(d)) else 2**63
    return [*indices.shape, max(d, 0)], itemsize(values)


def _center_crop_pad(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int]:
    x, shape = args[0], ints(args[1])
    axes = attrs.get("axes")
    out = list(x.shape)
    for a, s in zip(range(x.ndim) if axes is None else axes, shape):
        out[a % x.ndim] = s
    return out, itemsize(x)


def _gather(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int]:
    data, indices = args[0], np.asarray(args[1])
    axis = int(attrs.get("axis", 0)) % max(data.ndim, 1)
    return [*data.shape[:axis], *indices.shape, *data.shape[axis + 1:]], itemsize(data)


def _gather_nd(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """GatherND's output, indices' index tuples times data's slices: a product of two inputs."""
    data, indices = args[0], np.asarray(args[1])
    b = int(attrs.get("batch_dims", 0))
    if indices.ndim < 1 or not 0 <= b < min(data.ndim, indices.ndim):
        return None
    m = indices.shape[-1]
    return [*data.shape[:b], *indices.shape[b:-1], *data.shape[b + m:]], itemsize(data)


def _non_zero(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """NonZero's indices, (rank, count) int64, at most (rank, size): 8 x rank bytes a boolean."""
    x = args[0]
    return [max(x.ndim, 1), x.size], 8


def _concat(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """Concat's output: the same tensor may be an input many times (or a view spanning more than it
    holds), so the inputs in memory do not bound it."""
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    if len(arrays) < 2 or arrays[0].ndim == 0:
        return None
    axis = int(attrs.get("axis", 0)) % arrays[0].ndim
    shape = list(arrays[0].shape)
    shape[axis] = sum(a.shape[axis] if a.ndim == arrays[0].ndim else 0 for a in arrays)
    return shape, max(itemsize(a) for a in arrays)


def _concat_from_sequence(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """ConcatFromSequence's output: all the sequence's tensors, which may be one tensor many times."""
    items = [a for a in (args[0] if args and isinstance(args[0], (list, tuple)) else ()) if isinstance(a, np.ndarray)]
    if not items:
        return None
    return [sum(a.size for a in items)], max(itemsize(a) for a in items)


#: bytes a numpy view takes as an object (its header, shape and strides), whatever it views
VIEW_BYTES = 128


def _split_to_sequence(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """SplitToSequence's pieces, each a view of ``VIEW_BYTES``: an input of no bytes, (2**28, 0), split
    along its first axis is 2**28 views (32 GiB of headers)."""
    x = args[0]
    split = np.asarray(args[1]) if len(args) > 1 and args[1] is not None else None
    if x.ndim == 0:
        return None
    n = x.shape[int(attrs.get("axis", 0)) % x.ndim]
    if split is None:
        pieces = n
    elif split.ndim == 0:
        step = int(split)
        if step <= 0:
            return None  # the kernel's error
        pieces = -(-n // step)
    else:
        pieces = split.size
    return [pieces], VIEW_BYTES


def _constant(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    sparse = attrs.get("sparse_value")
    if sparse is None or not hasattr(sparse, "dims"):
        return None
    from onnx import helper

    try:
        item = np.dtype(helper.tensor_dtype_to_np_dtype(sparse.values.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        item = 8
    return [int(d) for d in sparse.dims], item


def _reduced_empty(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """A reduction's output (or a normalisation's statistics) where its input is empty: the dims it
    does not reduce survive, so (2**32, 0, 4), no bytes, reduced over its zero axis is (2**32, 1, 4),
    64 GiB. Bounded by the input's shape with each 0 read as 1, in float64 (the accumulators); the
    axes may be a run's values (ReduceSum's second input), so the bound does not read them."""
    x = args[0] if args else None
    if not isinstance(x, np.ndarray) or x.size:
        return None  # a non-empty input bounds its reduction's elements
    return [max(int(d), 1) for d in x.shape], 8


def _string_concat(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """StringConcat broadcasts: each output is a new Python string, 64 bytes at least (its header and
    the array's pointer to it)."""
    if len(args) != 2 or not all(isinstance(a, np.ndarray) for a in args):
        return None
    return broadcast([args[0].shape, args[1].shape]), 64


def _multinomial(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """Multinomial's draws against each class, (batch, sample_size, classes) booleans, or its float64
    uniforms (batch, sample_size) if larger: sample_size is an attribute, the batch dynamic."""
    x, samples = args[0], int(attrs.get("sample_size", 1))
    if x.ndim != 2:
        return None
    return max(([x.shape[0], samples, x.shape[1]], 1), ([x.shape[0], samples], 8),
               key=lambda t: math.prod(t[0]) * t[1])


_BROADCASTING = ("Add", "Sub", "Mul", "Div", "Pow", "Mod", "And", "Or", "Xor", "Equal", "Greater", "Less",
                 "GreaterOrEqual", "LessOrEqual", "Where", "Max", "Min", "Sum", "Mean", "PRelu", "BitShift",
                 "BitwiseAnd", "BitwiseOr", "BitwiseXor")

#: ops that reduce their input (or take its statistics): an empty input still keeps the dims they keep
REDUCING_OPS = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin", "GlobalAveragePool",
                "GlobalMaxPool", "GlobalLpPool", "Det", "TopK", "LayerNormalization", "GroupNormalization",
                "InstanceNormalization", "LpNormalization", "MeanVarianceNormalization", "RMSNormalization")

RULES: dict[str, Callable[[Sequence[Any], dict[str, Any]], tuple[list[int], int] | None]] = {
    **dict.fromkeys(_BROADCASTING, _elementwise), **dict.fromkeys(REDUCING_OPS, _reduced_empty),
    "Expand": _expand, "Tile": _tile, "ConstantOfShape": _constant_of_shape, "Range": _range, "Pad": _pad,
    "OneHot": _one_hot, "CenterCropPad": _center_crop_pad, "Gather": _gather, "GatherND": _gather_nd,
    "NonZero": _non_zero, "Concat": _concat, "ConcatFromSequence": _concat_from_sequence,
    "SplitToSequence": _split_to_sequence, "Constant": _constant, "StringConcat": _string_concat,
    "Multinomial": _multinomial,
}
