"""The differential sweep's tensor families: shape and data movement (Reshape with 0 and -1, Transpose,
Expand, Tile, Concat, Split, Squeeze/Unsqueeze, Flatten, over float and integer dtypes), rearrangements
(DepthToSpace, SpaceToDepth, Trilu, ReverseSequence, CenterCropPad), generators and shape queries (OneHot,
Range, EyeLike, ConstantOfShape, Shape, Size), data-dependent selections (NonZero, Unique), products and
the normalisations beside them (MatMul, Gemm, Det, MeanVarianceNormalization, LpNormalization), and the
losses (SoftmaxCrossEntropyLoss, NegativeLogLikelihoodLoss).

Configurations where onnxruntime and onnx's reference part from each other as well as from hal are
left out, each where it is drawn, with its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import helper

from benchmarks.differential_draw import Case, dims, out_list, ri

#: integer dtypes the movement ops draw beside the case's float one (onnxruntime has kernels for them)
INTS = (np.int64, np.int32, np.int8, np.uint8)


def _values(c: Case, shape: list[int], dtype: Any = None) -> np.ndarray:
    """Values of ``shape`` in ``dtype`` (the case's by default): small integers, or floats in [-2, 2)."""
    dt = np.dtype(c.dtype if dtype is None else dtype)
    if dt == np.bool_:
        return c.rng.random(shape) < 0.5
    if dt.kind == "u":
        return c.rng.integers(0, 100, shape).astype(dt)
    if dt.kind == "i":
        return c.rng.integers(-50, 50, shape).astype(dt)
    return c.rng.uniform(-2, 2, shape).astype(dt)


def _any_dtype(c: Case, p_int: float = 0.4, kinds: tuple = INTS) -> None:
    """An integer (or other) dtype of ``kinds`` for the case at times, in place of its float one."""
    if c.rng.random() < p_int:
        c.dtype = np.dtype(kinds[ri(c.rng, 0, len(kinds))])



def _input(c: Case, shape: list[int]) -> str:
    """A fed input of ``shape``, or (at times) a weight, so both the run-time and the folded paths are drawn."""
    a = _values(c, shape)
    return c.feed(shape, value=a) if c.rng.random() < 0.8 else c.weight(value=a)


# -- the families -------------------------------------------------------------------------------

def _movement(c: Case) -> list[str]:
    """Reshape (0 kept or meant, -1), Transpose, Expand both ways, Tile, Concat with empty parts, Split
    by sizes or num_outputs, Squeeze/Unsqueeze with negative axes, Flatten at every axis."""
    r = c.rng
    _any_dtype(c, 0.4, (*INTS, np.bool_))
    rank = ri(r, 1, 5)
    s = dims(r, rank, 1, 5)
    k = ri(r, 0, 9)
    c.opset = 18
    if k == 0:
        allowzero = ri(r, 0, 2)
        if allowzero and r.random() < 0.5:  # an empty tensor, its zero dimensions meant as zeros
            s[ri(r, 0, rank)] = 0
            shape = list(r.permutation(s))
            if r.random() < 0.5:
                shape = [*shape, 1]
            return [c.op("Reshape", [_input(c, s), c.ints(shape)], allowzero=1)]
        total = int(np.prod(s))
        # a factorisation of the size, then a dimension kept (0) and one inferred (-1)
        shape = []
        left = total
        for _ in range(ri(r, 1, 4)):
            f = int(r.choice([d for d in range(1, left + 1) if left % d == 0]))
            shape.append(f)
            left //= f
        shape.append(left)
        shape = list(r.permutation(shape))
        if r.random() < 0.6:
            shape[ri(r, 0, len(shape))] = -1
        if not allowzero:  # a 0 copies the input's dimension: where the two agree, it may stand for it
            shape = [0 if i < rank and d == s[i] and r.random() < 0.5 else d for i, d in enumerate(shape)]
        return [c.op("Reshape", [_input(c, s), c.ints(shape)], allowzero=allowzero)]
    if k == 6:  # some dimensions of 1 to squeeze, by negative axes too, or all of them
        for i in r.permutation(rank)[:ri(r, 0, rank + 1)]:
            s[i] = 1
        x = _input(c, s)
        ones = [i for i, d in enumerate(s) if d == 1]
        if r.random() < 0.3 or not ones:
            return [c.op("Squeeze", [x])]
        axes = [int(a) - (rank if r.random() < 0.5 else 0) for a in r.permutation(ones)[:ri(r, 1, len(ones) + 1)]]
        return [c.op("Squeeze", [x, c.ints(axes)])]
    x = _input(c, s)
    if k == 1:
        perm = {} if r.random() < 0.3 else {"perm": [int(p) for p in r.permutation(rank)]}
        return [c.op("Transpose", [x], **perm)]
    if k == 2:  # the shape may widen a 1 of the input, keep a dimension with its own 1, and add leading ones
        shape = [int(r.choice([d, 1] if d > 1 else [1, ri(r, 1, 4)])) for d in s][ri(r, 0, rank):]
        shape = dims(r, ri(r, 0, 3), 1, 4) + shape
        return [c.op("Expand", [x, c.ints(shape)])]
    if k == 3:
        return [c.op("Tile", [x, c.ints(dims(r, rank, 0, 4))])]
    if k == 4:
        ax = ri(r, -rank, rank)
        parts = [x]
        for _ in range(ri(r, 1, 4)):
            t = list(s)
            t[ax] = ri(r, 0, 4)
            parts.append(_input(c, t))
        return [c.op("Concat", list(r.permutation(parts)), axis=ax)]
    if k == 5:
        ax = ri(r, -rank, rank)
        d = s[ax]
        if r.random() < 0.5:  # uneven: the last chunk takes what is left
            n = ri(r, 1, d + 1)
            return out_list(c.op("Split", [x], outputs=n, axis=ax, num_outputs=n))
        cuts = np.sort(r.integers(0, d + 1, ri(r, 0, 4)))
        split = np.diff([0, *cuts, d]).tolist()
        if r.random() < 0.3:  # the opset 11 attribute
            c.opset = 11
            return out_list(c.op("Split", [x], outputs=len(split), axis=ax, split=split))
        return out_list(c.op("Split", [x, c.ints(split)], outputs=len(split), axis=ax))
    if k == 7:
        n = ri(r, 1, 4)
        out_rank = rank + n
        axes = [int(a) - (out_rank if r.random() < 0.5 else 0) for a in r.permutation(out_rank)[:n]]
        return [c.op("Unsqueeze", [x, c.ints(axes)])]
    return [c.op("Flatten", [x], axis=ri(r, -rank, rank + 1))]


def _views(c: Case) -> list[str]:
    """Two to six layout and elementwise nodes in a row (hal folds the layout ones into their reader as
    views and runs some elementwise ones in their operand's buffer), an earlier value read again
    downstream or returned beside the last, and a Reshape to a shape computed by Shape as exporters write."""
    r = c.rng
    _any_dtype(c, 0.25)
    if c.dtype.kind == "u":  # (Neg and Abs of unsigned integers: onnxruntime has no kernels for them)
        c.dtype = np.dtype(np.int32)
    s = dims(r, ri(r, 1, 5), 1, 5)
    vals = [(_input(c, s), s)]
    for _ in range(ri(r, 2, 7)):
        x, s = vals[-1] if r.random() < 0.75 else vals[ri(r, 0, len(vals))]
        rank = len(s)
        k = ri(r, 0, 9)
        if k == 0:
            perm = [int(p) for p in r.permutation(rank)]
            y, t = c.op("Transpose", [x], perm=perm), [s[p] for p in perm]
        elif k == 1:  # a factorisation of the size, one dimension inferred
            total, t = int(np.prod(s)), []
            while total > 1 and len(t) < 3:
                t.append(int(r.choice([d for d in range(1, total + 1) if total % d == 0])))
                total //= t[-1]
            t = [*t, total]
            shape = list(t)
            shape[ri(r, 0, len(t))] = -1
            y = c.op("Reshape", [x, c.ints(shape)])
        elif k == 2:
            a = ri(r, -rank - 1, rank + 1)
            y = c.op("Unsqueeze", [x, c.ints([a])])
            t = list(s)
            t.insert(a % (rank + 1), 1)
        elif k == 3:
            ones = [i for i, d in enumerate(s) if d == 1]
            if not ones:
                continue
            y, t = c.op("Squeeze", [x, c.ints(ones)]), [d for d in s if d != 1]
        elif k == 4:
            a = ri(r, 0, rank + 1)
            y, t = c.op("Flatten", [x], axis=a), [int(np.prod(s[:a])), int(np.prod(s[a:]))]
        elif k == 5:
            ops = ["Neg", "Abs", "Identity"]
            ops += [] if c.dtype.kind in "iu" else ["Relu", "Tanh", "Exp", "Floor", "Dropout"]
            y, t = c.op(str(r.choice(ops)), [x]), s
        elif k == 6:  # a broadcast operand, or another value of the same shape, on either side
            same = [v for v, u in vals if u == s and v != x]
            other = same[ri(r, 0, len(same))] if same and r.random() < 0.5 else c.weight(
                value=_values(c, [d if r.random() < 0.6 else 1 for d in s][ri(r, 0, rank + 1):]))
            y, t = c.op(str(r.choice(["Add", "Mul", "Sub"])), [x, other] if r.random() < 0.5 else [other, x]), s
        elif k == 7:
            lead = dims(r, ri(r, 1, 3), 1, 4)
            y, t = c.op("Expand", [x, c.ints([*lead, *s])]), [*lead, *s]
        else:  # a reshape back to an earlier value's shape, read off it at run time
            same = [(v, u) for v, u in vals if int(np.prod(u)) == int(np.prod(s)) and u != s]
            if not same:
                continue
            src, t = same[ri(r, 0, len(same))]
            y = c.op("Reshape", [x, c.op("Shape", [src])])
        vals.append((y, t))
    c.opset = 18
    outs = [vals[-1][0]]
    if len(vals) > 2 and r.random() < 0.5:
        outs.append(vals[ri(r, 1, len(vals) - 1)][0])
    return outs


def _rearrange(c: Case) -> list[str]:
    """DepthToSpace (DCR, CRD), SpaceToDepth, Trilu (k either side of the diagonal and past it, batched),
    ReverseSequence (either axis order), CenterCropPad (crops and pads of odd and even difference)."""
    r = c.rng
    k = ri(r, 0, 7)
    c.opset = 18
    if k == 5:  # Pad's axes input, which slice_pad leaves out: negative axes, crops, integer dtypes
        _any_dtype(c, 0.3)
        rank = ri(r, 1, 4)
        s = dims(r, rank, 1, 6)
        axes = [int(a) - (rank if r.random() < 0.5 else 0) for a in r.permutation(rank)[:ri(r, 1, rank + 1)]]
        mode = str(r.choice(["constant", "reflect", "edge", "wrap"]))
        lo = -1 if mode == "constant" else 0
        pads = [ri(r, lo, 4) for _ in range(2 * len(axes))]
        if mode == "reflect":
            pads = [min(p, s[axes[i % len(axes)]] - 1) for i, p in enumerate(pads)]
        value = [c.weight(value=np.array(3, c.dtype))] if mode == "constant" and r.random() < 0.5 else [""]
        c.opset = 19
        return [c.op("Pad", [_input(c, s), c.ints(pads), *value, c.ints(axes)], mode=mode)]
    if k == 6:  # Upsample (opset 9): scales of 1 and up; onnxruntime's takes float32, int32 and uint8, and
        # linear for 2-D inputs and 4-D ones scaled on the last two axes only
        c.dtype = np.dtype([np.float32, np.float32, np.int32, np.uint8][ri(r, 0, 4)])
        rank = ri(r, 1, 5)
        mode = "linear" if rank in (2, 4) and c.dtype == np.float32 and r.random() < 0.5 else "nearest"
        scales = np.array([r.choice([1.0, 1.0, 2.0, 1.5, 3.0, 2.5]) for _ in range(rank)], np.float32)
        if mode == "linear" and rank == 4:
            scales[:2] = 1
        c.opset = 9
        return [c.op("Upsample", [_input(c, dims(r, rank, 1, 5)), c.weight(value=scales)], mode=mode)]
    if k == 0:
        if r.random() < 0.2:
            c.dtype = np.dtype(np.uint8)  # (onnxruntime's DepthToSpace takes it beside the floats)
        bs = ri(r, 1, 4)
        n, ch, h, w = ri(r, 1, 3), bs * bs * ri(r, 1, 4), ri(r, 1, 4), ri(r, 1, 4)
        return [c.op("DepthToSpace", [_input(c, [n, ch, h, w])], blocksize=bs, mode=str(r.choice(["DCR", "CRD"])))]
    if k == 1:
        bs = ri(r, 1, 4)
        s = [ri(r, 1, 3), ri(r, 1, 4), bs * ri(r, 1, 4), bs * ri(r, 1, 4)]
        return [c.op("SpaceToDepth", [_input(c, s)], blocksize=bs)]
    if k == 2:
        if r.random() < 0.4:
            c.dtype = np.dtype([np.int64, np.bool_][ri(r, 0, 2)])
        s = [*dims(r, ri(r, 0, 3), 1, 4), ri(r, 1, 6), ri(r, 1, 6)]
        kk = [c.ints(ri(r, -s[-2] - 1, s[-1] + 2))] if r.random() < 0.7 else []
        return [c.op("Trilu", [_input(c, s), *kk], upper=ri(r, 0, 2))]
    if k == 3:
        _any_dtype(c, 0.3)
        s = dims(r, ri(r, 2, 5), 1, 5)
        time, batch = (0, 1) if r.random() < 0.5 else (1, 0)
        lens = r.integers(1, s[time] + 1, s[batch]).astype(np.int64)
        return [c.op("ReverseSequence", [_input(c, s), c.ints(lens)], time_axis=time, batch_axis=batch)]
    _any_dtype(c, 0.3)
    rank = ri(r, 1, 4)
    s = dims(r, rank, 1, 7)
    x = _input(c, s)
    if r.random() < 0.5:
        return [c.op("CenterCropPad", [x, c.ints(dims(r, rank, 1, 9))])]
    axes = [int(a) - (rank if r.random() < 0.5 else 0) for a in r.permutation(rank)[:ri(r, 1, rank + 1)]]
    return [c.op("CenterCropPad", [x, c.ints(dims(r, len(axes), 1, 9))], axes=axes)]


def _makers(c: Case) -> list[str]:
    """OneHot (negative and out-of-range indices, a float depth, the off/on values), Range (float and
    integer, either direction, empty), EyeLike (k past the matrix, dtype), ConstantOfShape (empty
    shapes, dtypes) and Shape (start/end clamped) / Size feeding the next op."""
    r = c.rng
    k = ri(r, 0, 5)
    c.opset = 18
    if k == 0:
        # (indices, depth, values) in the combinations onnxruntime has kernels for
        it, dt, vt = [(np.int64, np.int64, np.int64), (np.int64, np.float32, np.float32),
                      (np.float32, np.float32, np.float32), (np.int32, np.float32, np.float32),
                      (np.int64, np.int32, np.float32), (np.float32, np.int64, np.int64)][ri(r, 0, 6)]
        depth = ri(r, 1, 7)
        rank = ri(r, 1, 4)
        idx = r.integers(-depth - 2, depth + 2, dims(r, rank, 1, 5)).astype(it)
        values = np.array(r.choice([[0, 1], [-2, 5], [3, 3]])).astype(vt)
        indices = c.feed(list(idx.shape), value=idx) if r.random() < 0.5 else c.weight(value=idx)
        # a float depth may have a fraction, cast off (below 1 left out: onnxruntime refuses the node, onnx's
        # reference takes a depth of 1)
        d = np.array(depth + (0.5 if np.dtype(dt).kind == "f" and r.random() < 0.3 else 0), dt)
        return [c.op("OneHot", [indices, c.weight(value=d), c.weight(value=values)],
                     axis=ri(r, -rank - 1, rank + 1))]
    if k == 1:
        dt = np.dtype([np.float32, np.float64, np.int32, np.int64, np.int16][ri(r, 0, 5)])
        if dt.kind == "f":
            start, limit = (float(v) for v in np.round(r.uniform(-5, 5, 2), 1))
            delta = float(r.choice([0.5, 1.0, 0.3, 0.1, 0.2, 2.5, -0.5, -1.0, -0.7, -0.1]))
        else:
            start, limit = ri(r, -10, 10), ri(r, -10, 10)
            delta = int(r.choice([1, 2, 3, -1, -2, -4]))
        args = [np.array(v, dt) for v in (start, limit, delta)]
        return [c.op("Range", [c.feed([], value=a) if r.random() < 0.5 else c.weight(value=a) for a in args])]
    if k == 2:
        _any_dtype(c, 0.3)
        if c.dtype in (np.int8, np.uint8, np.float16):  # (onnxruntime's EyeLike takes neither)
            c.dtype = np.dtype(np.float32)
        s = dims(r, 2, 1, 6)
        attrs: dict[str, Any] = {"k": ri(r, -s[0] - 1, s[1] + 2)}
        if r.random() < 0.5:
            attrs["dtype"] = int(r.choice([1, 6, 7, 11]))
        return [c.op("EyeLike", [_input(c, s)], **attrs)]
    if k == 3:
        s = dims(r, ri(r, 0, 4), 0, 4)
        attrs = {}
        if r.random() < 0.7:
            dt = np.dtype([np.float32, np.float64, np.int64, np.int32, np.float16, np.bool_, np.uint8][ri(r, 0, 7)])
            attrs["value"] = helper.make_tensor("value", helper.np_dtype_to_tensor_dtype(dt), [1],
                                                [dt.type(r.choice([0, 1, 3, 7]))])
        if r.random() < 0.5:
            shape = c.ints(s)
        else:  # the shape of a fed tensor
            shape = c.op("Shape", [c.feed(s)])
        return [c.op("ConstantOfShape", [shape], **attrs)]
    _any_dtype(c, 0.3)
    rank = ri(r, 0, 5)
    s = dims(r, rank, 0 if r.random() < 0.2 else 1, 5)
    x = _input(c, s)
    if r.random() < 0.3:
        return [c.op("Size", [x])]
    attrs = {}
    if r.random() < 0.6:
        attrs["start"] = ri(r, -rank - 2, rank + 2)
    if r.random() < 0.6:
        attrs["end"] = ri(r, -rank - 2, rank + 2)
    y = c.op("Shape", [x], **attrs)
    if r.random() < 0.5:  # a shape computed on, as exporters do
        y = c.op("Concat", [y, c.ints([2])], axis=0)
        return [c.op("Expand", [c.weight(value=np.ones(1, c.dtype)), c.op("Abs", [y])])]
    return [y]


def _distinct(c: Case) -> list[str]:
    """NonZero (rank 0 to 4, bool, integer and float inputs) and Unique (flattened or along an axis,
    sorted or in order of first appearance, all four outputs)."""
    r = c.rng
    c.opset = 18
    if r.random() < 0.4:
        c.dtype = np.dtype([c.dtype, np.bool_, np.int64, np.int32, np.uint8][ri(r, 0, 5)])
        if c.dtype.kind == "f":  # (onnxruntime's NonZero takes float32 of the floats)
            c.dtype = np.dtype(np.float32)
        s = dims(r, ri(r, 0, 5), 0 if r.random() < 0.1 else 1, 5)
        a = _values(c, s)
        a = np.where(c.rng.random(s) < 0.5, a, np.zeros_like(a)).astype(a.dtype)
        return [c.op("NonZero", [c.feed(s, value=a)])]
    c.dtype = np.dtype([c.dtype, np.int64, np.int8][ri(r, 0, 3)])
    if c.dtype == np.float16:  # (onnxruntime's Unique takes float32, float64, int64, int8)
        c.dtype = np.dtype(np.float32)
    rank = ri(r, 1, 4)
    s = dims(r, rank, 1, 5)
    attrs: dict[str, Any] = {"sorted": ri(r, 0, 2)}
    if r.random() < 0.5:
        ax = ri(r, -rank, rank)
        attrs["axis"] = ax
        # repeated slices along the axis: a few distinct ones drawn, then picked
        t = list(s)
        t[ax] = ri(r, 1, 4)
        base = np.round(_values(c, t)).astype(c.dtype)
        a = np.take(base, r.integers(0, t[ax], s[ax]), axis=ax)
    else:
        a = r.integers(-3, 4, s).astype(c.dtype) * (c.dtype.type(1.5) if c.dtype.kind == "f" else 1)
        a = a.astype(c.dtype)
    outs = c.op("Unique", [c.feed(s, value=a)], outputs=4, **attrs)
    return list(outs[:ri(r, 1, 5)])


def _products(c: Case) -> list[str]:
    """MatMul with broadcast batch dimensions and 1-D operands (integer too), Gemm (transposes,
    alpha/beta, C of every broadcastable shape), Det (singular matrices too), MeanVarianceNormalization
    over drawn axes and LpNormalization (p 1 and 2, any axis, zero vectors)."""
    r = c.rng
    k = ri(r, 0, 5)
    c.opset = 18
    if k == 0:
        if r.random() < 0.25:
            c.dtype = np.dtype([np.int32, np.int64][ri(r, 0, 2)])
        m, kk, n = dims(r, 3, 1, 6)
        batch = dims(r, ri(r, 0, 3), 1, 4)
        a = [*[d if r.random() < 0.6 else 1 for d in batch], m, kk][ri(r, 0, len(batch) + 1):]
        b = [*[d if r.random() < 0.6 else 1 for d in batch], kk, n][ri(r, 0, len(batch) + 1):]
        if r.random() < 0.2:
            a = [kk]
        if r.random() < 0.2:
            b = [kk]
        ins = []
        for shape in (a, b):  # an operand transposed in the graph at times, as exporters write B^T
            if len(shape) > 1 and r.random() < 0.3:
                swap = [*range(len(shape) - 2), len(shape) - 1, len(shape) - 2]
                ins.append(c.op("Transpose", [_input(c, [shape[i] for i in swap])], perm=swap))
            else:
                ins.append(_input(c, shape))
        y = c.op("MatMul", ins)
        if r.random() < 0.3 and len(a) > 1 and len(b) > 1:  # a bias (hal fuses it into the product)
            bias = c.weight(value=_values(c, [m, n][ri(r, 0, 3):] if r.random() < 0.7 else [1, n]))
            y = c.op("Add", [y, bias] if r.random() < 0.5 else [bias, y])
        return [y]
    if k == 1:
        m, kk, n = dims(r, 3, 1, 6)
        ta, tb = ri(r, 0, 2), ri(r, 0, 2)
        a = _input(c, [kk, m] if ta else [m, kk])
        b = _input(c, [n, kk] if tb else [kk, n])
        attrs: dict[str, Any] = {"transA": ta, "transB": tb}
        if r.random() < 0.5:
            attrs["alpha"] = float(r.choice([0.5, -1.0, 2.0, 0.0]))
        if r.random() < 0.5:
            attrs["beta"] = float(r.choice([0.5, -1.0, 2.0, 0.0]))
        cs = [[[], [1], [n], [1, n], [m, 1], [m, n], [1, 1]][ri(r, 0, 7)]] if r.random() < 0.8 else []
        return [c.op("Gemm", [a, b, *[_input(c, s) for s in cs]], **attrs)]
    if k == 2:
        if c.dtype == np.float64:  # (onnxruntime's Det takes float32 and float16)
            c.dtype = np.dtype(np.float32)
        n = ri(r, 1, 5)
        s = [*dims(r, ri(r, 0, 3), 1, 4), n, n]
        a = _values(c, s)
        if n > 1 and r.random() < 0.3:  # a repeated row: exactly singular
            a[..., -1, :] = a[..., 0, :]
        return [c.op("Det", [c.feed(s, value=a)])]
    rank = ri(r, 1, 5)
    s = dims(r, rank, 1, 5)
    a = _values(c, s)
    if k == 3:
        c.dtype = np.dtype(np.float32)  # (onnxruntime's MeanVarianceNormalization is float32 only)
        a = a.astype(c.dtype)
        c.opset = 13
        # (the default axes, [0, 2, 3], are given as such: onnx's inference of the function body fails without them)
        axes = [int(x) for x in r.permutation(rank)[:ri(r, 1, rank + 1)]]
        if rank == 4 and r.random() < 0.3:
            axes = [0, 2, 3]
        return [c.op("MeanVarianceNormalization", [c.feed(s, value=a)], axes=axes)]
    ax = ri(r, -rank, rank)
    if r.random() < 0.3:  # a vector of zeros along the axis
        a[tuple(slice(0, 1) if i != ax % rank else slice(None) for i in range(rank))] = 0
    return [c.op("LpNormalization", [c.feed(s, value=a)], axis=ax, p=ri(r, 1, 3))]


def _losses(c: Case) -> list[str]:
    """SoftmaxCrossEntropyLoss (with its log_prob output at times) and NegativeLogLikelihoodLoss, 2-D
    and N-D, reductions none/sum/mean, class weights, an ignore_index that occurs in the targets or not."""
    r = c.rng
    n, ch = ri(r, 1, 5), ri(r, 1, 6)
    extra = dims(r, ri(r, 0, 3), 1, 4)
    target = r.integers(0, ch, [n, *extra]).astype(np.int64 if r.random() < 0.7 else np.int32)
    attrs: dict[str, Any] = {"reduction": str(r.choice(["none", "sum", "mean"]))}
    if r.random() < 0.5:
        ignore = int(r.choice([-1, -100, ri(r, 0, ch)]))
        attrs["ignore_index"] = ignore
        if r.random() < 0.7:  # it occurs, but not everywhere
            hit = r.random(target.shape) < 0.3
            hit.flat[0] = False
            target = np.where(hit, ignore, target).astype(target.dtype)
    weight = [c.weight(value=r.uniform(0.2, 2, ch).astype(c.dtype))] if r.random() < 0.5 else []
    labels = c.feed(list(target.shape), value=target)
    c.opset = 13
    if r.random() < 0.5:
        scores = c.feed([n, ch, *extra], lo=-3, hi=3)
        outs = 2 if r.random() < 0.5 else 1
        return out_list(c.op("SoftmaxCrossEntropyLoss", [scores, labels, *weight], outputs=outs, **attrs))
    logp = c.op("LogSoftmax", [c.feed([n, ch, *extra], lo=-3, hi=3)], axis=1) if r.random() < 0.5 else \
        c.feed([n, ch, *extra], lo=-3, hi=0)
    return [c.op("NegativeLogLikelihoodLoss", [logp, labels, *weight], **attrs)]


FAMILIES: dict[str, Callable[[Case], list[str]]] = {
    "movement": _movement, "views": _views, "rearrange": _rearrange, "makers": _makers, "distinct": _distinct,
    "products": _products, "losses": _losses}
