"""The differential sweep's families of old opsets' forms, as converters of opsets 1-12 wrote them and
models in the wild still carry them: attributes that later became inputs (Slice-1, Pad-2, Split-2,
Squeeze/Unsqueeze-1/11, ReduceX-1/11, TopK-1, Clip-6, Upsample-7), the softmaxes' flatten-at-axis rows
before opset 13, binary ops' ``broadcast``/``axis`` of opset 6, BatchNormalization's ``spatial``,
Dropout's mask, the pools' attributes as each opset added them, and the opset-9/10/11 firsts (Scatter,
OneHot, Where, Shrink, NonZero, MeanVarianceNormalization, Resize-10/11). Each draw sets the model's
opset inside the span where that form holds (``onnx.defs.get_schema(op, max_inclusive_version=v)``).

Configurations where onnxruntime and onnx's reference part from each other as well as from hal are
left out, each where it is drawn, with its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import helper, numpy_helper

from benchmarks.differential_draw import Case, dims, out_list, ri

INTS = (np.int64, np.int32)
#: OneHot's (indices, depth, values) dtypes that onnxruntime has kernels for
ONEHOT = [(np.int64, np.int64, np.float32), (np.int64, np.int64, np.float16), (np.int64, np.int64, np.int64),
          (np.int64, np.int32, np.float32), (np.int64, np.float32, np.float32), (np.int64, np.float32, np.int32),
          (np.int32, np.int32, np.float32), (np.int32, np.float32, np.float16), (np.float32, np.float32, np.float32),
          (np.float32, np.int64, np.int64)]


def _at(c: Case, lo: int, hi: int) -> int:
    """The model's opset, drawn in [lo, hi]: a span where the drawn form is the schema. float16 from
    opset 6 (onnxruntime's float16 fallback inserts a Cast with the integer ``to`` of opset 6)."""
    if c.dtype == np.float16 and hi >= 6:
        lo = max(lo, 6)
    c.opset = ri(c.rng, lo, hi + 1)
    return c.opset


def _given(c: Case, value: Any) -> str:
    """An input that later opsets turned from an attribute: a weight, or at times fed at run time (so
    both hal's folded and its run-time paths are drawn). Lists are int64."""
    a = np.asarray(value, np.int64) if isinstance(value, list) else np.asarray(value)
    return c.feed(list(a.shape), value=a) if c.rng.random() < 0.3 else c.weight(value=a)


def _no64(c: Case) -> None:
    """float32 in place of float64, for the ops onnxruntime has no float64 kernel of."""
    if c.dtype == np.float64:
        c.dtype = np.dtype(np.float32)


def _vals(c: Case, shape: list[int]) -> np.ndarray:
    """Values of ``shape`` in the case's dtype: small integers, or floats in [-2, 2)."""
    r = c.rng
    return (r.integers(-9, 10, shape) if c.dtype.kind == "i" else r.uniform(-2, 2, shape)).astype(c.dtype)


# -- the families -------------------------------------------------------------------------------

def _oldshape(c: Case) -> list[str]:
    """Slice-1 (attributes) / 10 / 11, Pad-2 (attributes) / 11 (inputs), Split-2 / 11 / 13 / 18,
    Squeeze / Unsqueeze-1 / 11 (axes attribute, negative from 11), Concat-4, Flatten-1 / 9 / 11,
    Reshape-5, Transpose-1, DepthToSpace-1 / 11, SpaceToDepth-1, Gather-1 / 11, Tile-6, Expand-8,
    Shape-1, Size-1, Identity-1, over float and (where the schema takes them) integer dtypes."""
    r = c.rng
    k = ri(r, 0, 13)
    if k not in (5, 7, 8) and r.random() < 0.3:  # (Flatten-1 and DepthToSpace-1 are float only)
        c.dtype = np.dtype(INTS[ri(r, 0, 2)])
    rank = ri(r, 1, 5)
    s = dims(r, rank, 1, 6)
    squeeze = k == 3 and r.random() < 0.5
    ones = [int(i) for i in r.permutation(rank)[:ri(r, 0, rank + 1)]] if squeeze else []
    s = [1 if i in ones else d for i, d in enumerate(s)]
    x = c.feed(s, value=_vals(c, s))
    if k == 0:
        v = _at(c, 1, 12)
        neg = v >= 11  # negative axes from opset 11
        axes = [int(i) - (rank if neg and r.random() < 0.5 else 0) for i in r.permutation(rank)[:ri(r, 1, rank + 1)]]
        starts = [ri(r, -s[i] - 2, s[i] + 2) for i in axes]
        ends = [int(r.choice([ri(r, -s[i] - 2, s[i] + 2), 2**31 - 1, 2**62])) for i in axes]
        if v < 10:
            attrs = {"axes": axes} if r.random() < 0.8 or len(axes) < rank else {}
            if not attrs:
                starts, ends = [starts[axes.index(i)] for i in range(rank)], [ends[axes.index(i)] for i in range(rank)]
            return [c.op("Slice", [x], starts=starts, ends=ends, **attrs)]
        steps = [_given(c, [int(r.choice([1, 2, 3, -1, -2])) for _ in axes])] if r.random() < 0.6 else []
        return [c.op("Slice", [x, _given(c, starts), _given(c, ends), _given(c, axes), *steps])]
    if k == 1:
        v = _at(c, 2, 12)
        mode = str(r.choice(["constant", "reflect", "edge"]))
        pads = [ri(r, 0, 4) for _ in range(2 * rank)]
        if mode == "reflect":
            pads = [min(p, s[i % rank] - 1) for i, p in enumerate(pads)]
        if mode == "edge" and c.dtype.kind == "i":
            mode = "constant"
        value = float(r.choice([0.0, 1.5, -2.0]))
        if c.dtype.kind == "i":  # (Pad-2 is float only)
            v = _at(c, 11, 12)
            value = float(int(value))
        if v < 11:
            return [c.op("Pad", [x], pads=pads, mode=mode, **({"value": value} if r.random() < 0.7 else {}))]
        cv = [_given(c, np.array(value, c.dtype))] if mode == "constant" and r.random() < 0.6 else []
        return [c.op("Pad", [x, _given(c, pads), *cv], mode=mode)]
    if k == 2:
        v = int(r.choice([2, 11, 13, 18]))
        _at(c, v, {2: 10, 11: 12, 13: 17, 18: 18}[v])
        ax = ri(r, -rank if v >= 11 else 0, rank)
        d = s[ax]
        if v == 18 and r.random() < 0.5:
            n = ri(r, 1, d + 1)
            return out_list(c.op("Split", [x], outputs=n, axis=ax, num_outputs=n))
        if r.random() < 0.3 and v < 18:  # equal parts, by the output count
            n = int(r.choice([q for q in range(1, d + 1) if d % q == 0]))
            return out_list(c.op("Split", [x], outputs=n, axis=ax))
        cuts = np.sort(r.integers(0, d + 1, ri(r, 0, 4)))
        split = np.diff([0, *cuts, d]).tolist()
        if v < 13:
            return out_list(c.op("Split", [x], outputs=len(split), axis=ax, split=split))
        return out_list(c.op("Split", [x, _given(c, split)], outputs=len(split), axis=ax))
    if k == 3:
        v = _at(c, 1, 12)
        neg = v >= 11
        if squeeze:
            if not ones or r.random() < 0.2:
                return [c.op("Squeeze", [x])]
            return [c.op("Squeeze", [x], axes=[i - (rank if neg and r.random() < 0.5 else 0) for i in ones])]
        n = ri(r, 1, 4)
        out = rank + n
        axes = [int(i) - (out if neg and r.random() < 0.5 else 0) for i in r.permutation(out)[:n]]
        return [c.op("Unsqueeze", [x], axes=axes)]
    if k == 4:
        v = _at(c, 4, 12)
        ax = ri(r, -rank if v >= 11 else 0, rank)
        a = ax % rank
        parts = [x] + [c.weight(value=_vals(c, [*s[:a], ri(r, 1, 4), *s[a + 1:]])) for _ in range(ri(r, 1, 4))]
        return [c.op("Concat", list(r.permutation(parts)), axis=ax)]
    if k == 5:
        v = _at(c, 1, 12)
        ax = ri(r, -rank if v >= 11 else 0, rank + 1)
        return [c.op("Flatten", [x], **({"axis": ax} if r.random() < 0.8 else {}))]
    if k == 6:
        _at(c, 5, 12)
        total = int(np.prod(s))
        shape = list(r.permutation([*s[1:], s[0]])) if r.random() < 0.5 else [total]
        if r.random() < 0.6:
            shape[ri(r, 0, len(shape))] = -1
        shape = [0 if i < rank and d == s[i] and r.random() < 0.5 else d for i, d in enumerate(shape)]
        return [c.op("Reshape", [x, _given(c, shape)])]
    if k in (7, 8):
        b = ri(r, 1, 3)
        n, hw = ri(r, 1, 3), dims(r, 2, 1, 4)
        v = _at(c, 1, 12)
        if k == 7:
            y = c.feed([n, b * b * ri(r, 1, 3), *hw])
            mode = {"mode": str(r.choice(["DCR", "CRD"]))} if v >= 11 and r.random() < 0.8 else {}
            return [c.op("DepthToSpace", [y], blocksize=b, **mode)]
        y = c.feed([n, ri(r, 1, 4), hw[0] * b, hw[1] * b])
        return [c.op("SpaceToDepth", [y], blocksize=b)]
    if k == 9:
        v = _at(c, 1, 12)
        ax = ri(r, -rank if v >= 11 else 0, rank)
        lo = -s[ax] if v >= 11 else 0  # negative indices from opset 11
        return [c.op("Gather", [x, c.ints(r.integers(lo, s[ax], dims(r, ri(r, 0, 3), 1, 4)))], axis=ax)]
    if k == 10:
        _at(c, 6, 12)
        return [c.op("Tile", [x, _given(c, dims(r, rank, 1, 4))])]
    if k == 11:
        _at(c, 8, 12)
        shape = [d if d > 1 else int(r.choice([1, ri(r, 1, 4)])) for d in s]
        shape = dims(r, ri(r, 0, 3), 1, 4) + shape if r.random() < 0.5 else shape[ri(r, 0, rank):]
        return [c.op("Expand", [x, _given(c, shape)])]
    _at(c, 1, 12)
    perm = {} if r.random() < 0.3 else {"perm": [int(p) for p in r.permutation(rank)]}
    return [c.op("Shape", [x]), c.op("Size", [x]), c.op("Identity", [c.op("Transpose", [x], **perm)])]


def _oldreduce(c: Case) -> list[str]:
    """ReduceX-1 / 11 (axes an attribute, negative from 11; ReduceSum's an input from 13, the others'
    from 18), ArgMax / ArgMin-1 / 11 / 12 (select_last_index from 12, over ties), TopK-1 (k an
    attribute) / 10 (an input) / 11 (largest, sorted), Softmax / LogSoftmax / Hardmax-1 / 11, whose
    rows are everything from the axis on (the input flattened to 2-D there), not one axis as from 13."""
    r = c.rng
    rank = ri(r, 1, 5)
    s = dims(r, rank, 1, 6)
    k = ri(r, 0, 4)
    if k == 0:
        op = str(r.choice(["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                           "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]))
        v = _at(c, 1, 12 if op == "ReduceSum" else 17)
        if op in ("ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd") and r.random() < 0.3:
            c.dtype = np.dtype(INTS[ri(r, 0, 2)])
            x = c.feed(s, value=r.integers(-4 if op != "ReduceProd" else -2, 5, s).astype(c.dtype))
        else:
            x = c.feed(s, lo=0.1 if op.startswith("ReduceLog") or r.random() < 0.3 else -2)
        axes = [int(a) - (rank if v >= 11 and r.random() < 0.5 else 0)
                for a in r.permutation(rank)[:ri(r, 1, rank + 1)]]
        attrs = {"axes": axes, "keepdims": ri(r, 0, 2)}
        return [c.op(op, [x], **{a: w for a, w in attrs.items() if r.random() < 0.8})]
    if k == 1:
        v = _at(c, 1, 12)
        if r.random() < 0.3:
            c.dtype = np.dtype(INTS[ri(r, 0, 2)])
        x = c.feed(s, value=r.integers(-2, 3, s).astype(c.dtype))  # ties
        attrs = {"axis": ri(r, -rank if v >= 11 else 0, rank), "keepdims": ri(r, 0, 2)}
        if v >= 12:
            attrs["select_last_index"] = ri(r, 0, 2)
        return [c.op(str(r.choice(["ArgMax", "ArgMin"])), [x], **{a: w for a, w in attrs.items() if r.random() < 0.8})]
    if k == 2:
        v = _at(c, 1, 12)
        x = c.feed(s, value=(r.permutation(int(np.prod(s))).reshape(s) * 0.25 - 2).astype(c.dtype))  # no ties
        ax = ri(r, -rank, rank)
        kk = ri(r, 0 if v >= 10 else 1, s[ax] + 1)
        attrs = {"axis": ax} if r.random() < 0.8 or ax % rank != rank - 1 else {}
        if v < 10:
            return list(c.op("TopK", [x], outputs=2, k=kk, **attrs))
        if v >= 11:
            attrs["largest"] = ri(r, 0, 2)
            # sorted=0 left out: the order it leaves is the implementation's (onnxruntime's heap order,
            # the reference's sorted one)
        return list(c.op("TopK", [x, _given(c, [kk])], outputs=2, **attrs))
    op = str(r.choice(["Softmax", "LogSoftmax", "Hardmax"]))
    if op == "Hardmax":
        _no64(c)
    v = _at(c, 1, 12)
    x = c.feed(s, value=np.round(r.uniform(-2, 2, s)).astype(c.dtype) if op == "Hardmax" else None)
    attrs = {"axis": ri(r, -rank if v >= 11 else 0, rank)} if r.random() < 0.8 or rank < 2 else {}
    return [c.op(op, [x], **attrs)]


def _oldnorm(c: Case) -> list[str]:
    """BatchNormalization-7 (``spatial``) / 9 in inference, Dropout-7 / 10 / 12 (ratio an attribute, then
    an input; the mask as T, then bool), InstanceNormalization-6, LRN-1, MeanVarianceNormalization-9
    (its default axes [0, 2, 3] and others), Upsample-7 (scales an attribute) / 9 (an input), Resize-10
    (scales, asymmetric) and 11 (roi, scales or sizes, tf_half_pixel_for_nn, which 13 dropped)."""
    r = c.rng
    k = ri(r, 0, 7)
    rank = ri(r, 3, 5)
    s = dims(r, rank, 1, 5)
    ch = s[1]
    if k == 0:
        v = _at(c, 7, 13)
        x = c.feed(s, lo=-3, hi=3)
        spatial = ri(r, 0, 2) if v < 9 and r.random() < 0.5 else 1
        ps = [ch] if spatial else s[1:]
        stats = [c.weight(ps), c.weight(ps), c.weight(ps), c.weight(value=r.uniform(0.5, 2, ps).astype(c.dtype))]
        attrs = {"epsilon": float(r.choice([1e-5, 1e-3]))}
        if v < 9 and (r.random() < 0.5 or not spatial):  # (the reference has no spatial=0: onnxruntime alone)
            attrs["spatial"] = spatial
        y = c.op("BatchNormalization", [x, *stats], **attrs)
        return [c.op("Relu", [y]) if r.random() < 0.3 else y]
    if k == 1:
        v = int(r.choice([7, 10, 12]))
        _at(c, v, {7: 9, 10: 11, 12: 12}[v])
        x = c.feed(s)
        # Dropout-7's mask (of the input's type) left out: onnxruntime's is zeros, the reference's True (bool)
        n = 1 if v < 10 else ri(r, 1, 3)
        if v < 12:
            return out_list(c.op("Dropout", [x], outputs=n, **({"ratio": 0.3} if r.random() < 0.5 else {})))
        extra = [_given(c, np.array(0.25, c.dtype)), c.weight(value=np.array(False))] if r.random() < 0.5 else []
        return out_list(c.op("Dropout", [x, *extra], outputs=n, seed=1))
    if k == 2:
        _no64(c)
        _at(c, 6, 12)
        x = c.feed(s, lo=-3, hi=3)
        return [c.op("InstanceNormalization", [x, c.weight([ch]), c.weight([ch])],
                     **({"epsilon": 1e-3} if r.random() < 0.5 else {}))]
    if k == 3:  # (onnxruntime's LRN takes 4-D input and odd sizes only)
        _no64(c)
        _at(c, 1, 12)
        x = c.feed([*s[:2], *dims(r, 2, 1, 5)], lo=-3, hi=3)
        return [c.op("LRN", [x], size=int(r.choice([1, 3, 5])), alpha=float(r.choice([1e-4, 0.01, 0.5])),
                     beta=float(r.choice([0.75, 0.5, 1.0])), bias=float(r.choice([1.0, 2.0])))]
    if k == 4:
        c.dtype = np.dtype(np.float32)  # (onnxruntime's MeanVarianceNormalization: float32 only)
        _at(c, 9, 12)
        s = dims(r, 4, 1, 5)
        x = c.feed(s, lo=-3, hi=3)
        axes = {} if r.random() < 0.4 else {"axes": sorted(int(a) for a in r.permutation(4)[:ri(r, 1, 5)])}
        return [c.op("MeanVarianceNormalization", [x], **axes)]
    c.dtype = np.dtype(np.float32)  # (onnxruntime's Upsample and Resize are float32 and integer only)
    s = [ri(r, 1, 3), ri(r, 1, 3), ri(r, 1, 6), ri(r, 1, 6)]
    x = c.feed(s)
    mode = str(r.choice(["nearest", "linear"]))
    up = [1.0, 1.0, float(r.choice([1, 1.5, 2, 3])), float(r.choice([1, 2, 2.5, 4]))]
    if k == 5:
        if _at(c, 7, 9) < 9:
            return [c.op("Upsample", [x], scales=up, mode=mode)]
        return [c.op("Upsample", [x, _given(c, np.array(up, np.float32))], mode=mode)]
    v = _at(c, 10, 12)
    scales = [1.0, 1.0, float(r.choice([0.5, 0.6, 0.75, 1.5, 2, 3])), float(r.choice([0.5, 0.7, 1.25, 2]))]
    if v == 10:
        return [c.op("Resize", [x, _given(c, np.array(scales, np.float32))], mode=mode)]
    mode = str(r.choice(["nearest", "linear", "cubic"]))
    ctm = str(r.choice(["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel", "tf_half_pixel_for_nn"]
                       if mode == "nearest" else ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"]))
    attrs: dict[str, Any] = {"mode": mode, "coordinate_transformation_mode": ctm, **{
        "nearest": {"nearest_mode": str(r.choice(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]))},
        "cubic": {"cubic_coeff_a": float(r.choice([-0.75, -0.5])), "exclude_outside": ri(r, 0, 2)}}.get(mode, {})}
    roi = c.weight(value=np.zeros(0, np.float32))
    if ctm == "tf_half_pixel_for_nn":
        # scales float32 holds exactly: onnx's reference does not run this mode, and a float32 0.6 puts
        # onnxruntime's float32 source coordinate on a tie the exact one misses (1.5 / 0.6f: 2.5 there,
        # 2.4999999 here), the float64 / float32 parting the README names, with no reference to judge it
        scales = [{0.6: 0.625, 0.7: 0.75}.get(v, v) for v in scales]
    if r.random() < 0.5:
        return [c.op("Resize", [x, roi, _given(c, np.array(scales, np.float32))], **attrs)]
    sizes = [*s[:2], ri(r, 1, 12), ri(r, 1, 12)]
    return [c.op("Resize", [x, roi, c.weight(value=np.zeros(0, np.float32)), _given(c, sizes)], **attrs)]


def _oldpool(c: Case) -> list[str]:
    """MaxPool-1 / 8 (storage_order, the Indices output) / 10 (ceil_mode, dilations) / 12 (int8, uint8),
    AveragePool-1 / 7 (count_include_pad) / 10 (ceil_mode), LpPool-2 (p an integer), the global pools,
    with explicit pads or auto_pad."""
    r = c.rng
    nd = ri(r, 1, 4)
    s = [ri(r, 1, 3), ri(r, 1, 4), *dims(r, nd, 2, 8 if nd < 3 else 5)]
    op = str(r.choice(["MaxPool", "MaxPool", "AveragePool", "LpPool", "Global"]))
    if op != "MaxPool":
        _no64(c)
    # (onnxruntime's AveragePool starts at opset 7, its float64 MaxPool at 8)
    v = _at(c, {"MaxPool": 8 if c.dtype == np.float64 else 1, "AveragePool": 7, "LpPool": 2, "Global": 1}[op], 12)
    if op == "Global":
        return [c.op(str(r.choice(["GlobalMaxPool", "GlobalAveragePool"])), [c.feed(s)])]
    k = [ri(r, 1, min(4, d + 1)) for d in s[2:]]
    attrs: dict[str, Any] = {"kernel_shape": k}
    if r.random() < 0.8:  # (strides past the kernel under SAME: onnxruntime refuses the negative pads)
        attrs["strides"] = [ri(r, 1, kk + 1) for kk in k]
    dilated = op == "MaxPool" and v >= 10 and r.random() < 0.4
    if dilated:
        # a dilated kernel longer than the input left out: onnxruntime's division truncates the
        # negative span to one output, the reference's floors it to none
        attrs["dilations"] = [min(ri(r, 1, 3), (d - 1) // (kk - 1) if kk > 1 else 2) for kk, d in zip(k, s[2:])]
    # SAME with dilations left out, as in the current pool family: the peers size it apart
    if (r.random() < 0.6 or dilated) and r.random() < 0.8:
        attrs["pads"] = [ri(r, 0, kk) for kk in k] * 2
    elif not dilated:
        attrs["auto_pad"] = str(r.choice(["SAME_UPPER", "VALID"]))
    if v >= 10 and op != "LpPool" and r.random() < 0.6:
        attrs["ceil_mode"] = ri(r, 0, 2)
    if op == "AveragePool" and v >= 7 and r.random() < 0.7:
        attrs["count_include_pad"] = ri(r, 0, 2)
    if op == "LpPool":
        attrs["p"] = int(r.choice([1, 2, 3]))
    if op == "MaxPool" and v >= 12 and r.random() < 0.3:
        c.dtype = np.dtype([np.int8, np.uint8][ri(r, 0, 2)])
    x = c.feed(s, value=r.integers(0 if c.dtype == np.uint8 else -128, 128, s).astype(c.dtype)
               if c.dtype.kind in "iu" else None)
    if op == "MaxPool" and v >= 8 and c.dtype.kind == "f" and r.random() < 0.5:
        return list(c.op("MaxPool", [x], outputs=2, **attrs, **({"storage_order": ri(r, 0, 2)} if r.random() < 0.6
                                                                 else {})))
    return [c.op(op, [x], **attrs)]


def _oldmath(c: Case) -> list[str]:
    """Binary ops of opset 6 (``broadcast=1`` and ``axis``: the second operand lined up with the first
    from the axis; onnxruntime has none, the reference is their peer) and their opset-7 broadcast,
    Clip-6 (attributes) / 11 (inputs) / 12 (integers), LeakyRelu / Elu / Selu / HardSigmoid-6,
    ThresholdedRelu-10, PRelu-7 / 9 (a slope broadcast to the input), Sum / Max / Min / Mean-6 (one shape)
    / 8 (broadcast), Gemm-6 (``broadcast``) / 7 / 9 / 11 (C optional), Pow-7 / 12 (an integer exponent)."""
    r = c.rng
    rank = ri(r, 1, 5)
    s = dims(r, rank, 1, 6)
    k = ri(r, 0, 7)
    if k == 0:
        op = str(r.choice(["Add", "Sub", "Mul", "Div"]))
        x = c.feed(s)
        ax = ri(r, 0, rank)
        t = s[ax:ax + ri(r, 0, rank - ax + 1)]
        b = c.weight(value=(r.uniform(0.5, 2, t) * r.choice([-1, 1])).astype(c.dtype))
        if r.random() < 0.25:  # opset 6: without an axis, the second operand lines up with the trailing ones
            _at(c, 6, 6)
            if r.random() < 0.2:
                return [c.op(op, [x, c.weight(s)])]
            attrs = {"axis": ax} if r.random() < 0.8 or ax + len(t) != rank else {}
            return [c.op(op, [x, b], broadcast=1, **attrs)]
        _at(c, 7, 12)
        return [c.op(op, [x, c.weight(value=r.uniform(0.5, 2, s[ri(r, 0, rank):]).astype(c.dtype))])]
    if k == 1:
        v = int(r.choice([6, 11, 12]))
        if v < 12:
            _no64(c)
        _at(c, v, {6: 10, 11: 11, 12: 12}[v])
        if v == 12 and r.random() < 0.5:
            c.dtype = np.dtype(INTS[ri(r, 0, 2)])
        x = c.feed(s, value=_vals(c, s))
        lo, hi = sorted(r.choice([-1.5, -0.5, 0.0, 0.5, 1.0, 2.0], 2))
        if v == 6:
            return [c.op("Clip", [x], **{a: float(w) for a, w in (("min", lo), ("max", hi)) if r.random() < 0.7})]
        mn = _given(c, np.array(lo, c.dtype)) if r.random() < 0.7 else ""
        mx = [_given(c, np.array(hi, c.dtype))] if r.random() < 0.7 else []
        return [c.op("Clip", [x, mn, *mx] if mx or mn else [x])]
    if k == 2:
        _no64(c)
        x = c.feed(s, lo=-4, hi=4)
        op = str(r.choice(["LeakyRelu", "Elu", "Selu", "HardSigmoid", "ThresholdedRelu"]))
        _at(c, 10 if op == "ThresholdedRelu" else 6, 12)
        attrs = {"LeakyRelu": {"alpha": 0.1}, "Elu": {"alpha": 0.7}, "Selu": {"alpha": 1.5, "gamma": 1.1},
                 "HardSigmoid": {"alpha": 0.3, "beta": 0.4}, "ThresholdedRelu": {"alpha": 0.5}}[op]
        return [c.op(op, [x], **(attrs if r.random() < 0.6 else {}))]
    if k == 3:
        _no64(c)
        _at(c, 7, 12)
        x = c.feed(s)
        t = [d if r.random() < 0.5 else 1 for d in s][ri(r, 0, rank):]
        return [c.op("PRelu", [x, c.weight(value=r.uniform(-0.5, 0.5, t).astype(c.dtype))])]
    if k == 4:
        op = str(r.choice(["Sum", "Max", "Min", "Mean"]))
        if op != "Sum":
            _no64(c)
        v = _at(c, 6, 12)
        n = ri(r, 1, 4)
        shapes = [s] * n if v < 8 else [[d if r.random() < 0.6 else 1 for d in s][ri(r, 0, rank):] for _ in range(n)]
        if v >= 12 and op in ("Max", "Min") and r.random() < 0.4:
            c.dtype = np.dtype(INTS[ri(r, 0, 2)])
            return [c.op(op, [c.feed(t, value=r.integers(-9, 10, t).astype(c.dtype)) for t in shapes])]
        return [c.op(op, [c.feed(t) for t in shapes])]
    if k == 5:
        v = int(r.choice([6, 7, 11], p=[0.2, 0.4, 0.4]))  # (onnxruntime has no Gemm-6: the reference's alone)
        _at(c, v, {6: 6, 7: 10, 11: 12}[v])
        m, kk, n = dims(r, 3, 1, 7)
        ta, tb = ri(r, 0, 2), ri(r, 0, 2)
        a = c.feed([kk, m] if ta else [m, kk])
        b = c.weight([n, kk] if tb else [kk, n])
        attrs: dict[str, Any] = {"transA": ta, "transB": tb}
        if r.random() < 0.5:
            attrs.update(alpha=float(r.choice([0.5, 2.0])), beta=float(r.choice([0.0, 1.5])))
        cs = [m, n] if r.random() < 0.4 else [[n], [1, n], [m, 1], [1]][ri(r, 0, 4)]
        if v == 6:
            attrs["broadcast"] = int(cs != [m, n])
        if v >= 11 and r.random() < 0.3:
            return [c.op("Gemm", [a, b], **attrs)]
        return [c.op("Gemm", [a, b, c.weight(cs)], **attrs)]
    v = _at(c, 7, 12)
    x = c.feed(s, lo=0.1, hi=3)
    t = s[ri(r, 0, rank):]
    if v == 12 and r.random() < 0.5:
        return [c.op("Pow", [x, c.weight(value=r.integers(-2, 4, t).astype(INTS[ri(r, 0, 2)]))])]
    return [c.op("Pow", [x, c.weight(value=r.uniform(-2, 3, t).astype(c.dtype))])]

def _oldnine(c: Case) -> list[str]:
    """The ops opsets 9-11 brought and their first forms: Scatter-9 / 11 and ScatterElements-11,
    OneHot-9 / 11 (negative indices from 11), Where-9, NonZero-9, ConstantOfShape-9, Shrink-9, Sign-9,
    Erf-9, IsNaN-9, IsInf-10, Compress-9 / 11, Cast-6 / 9 (float and integer), MatMul-9 on integers."""
    r = c.rng
    rank = ri(r, 1, 4)
    s = dims(r, rank, 1, 6)
    k = ri(r, 0, 10)
    if k == 0:
        op = "Scatter" if r.random() < 0.5 else "ScatterElements"
        v = _at(c, 9, 10) if op == "Scatter" else _at(c, 11, 12)  # (onnxruntime: no Scatter from opset 11)
        if r.random() < 0.3:
            c.dtype = np.dtype(INTS[ri(r, 0, 2)])
        x = c.feed(s, value=r.integers(-9, 10, s).astype(c.dtype))
        ax = ri(r, -rank if v >= 11 else 0, rank)
        a = ax % rank
        ish = [ri(r, 1, d + 1) for d in s]
        rows = [r.permutation(s[a])[:ish[a]] for _ in range(int(np.prod(ish)) // ish[a])]
        idx = np.moveaxis(np.stack(rows).reshape([d for i, d in enumerate(ish) if i != a] + [ish[a]]), -1, a)
        if v >= 11 and r.random() < 0.3:
            idx = np.where(r.random(idx.shape) < 0.5, idx - s[a], idx)
        upd = c.weight(value=r.integers(-9, 10, ish).astype(c.dtype))
        return [c.op(op, [x, c.ints(idx), upd], **({"axis": ax} if r.random() < 0.8 or ax else {}))]
    if k == 1:
        v = _at(c, 9, 12)
        depth = ri(r, 1, 6)
        it, dt, vt = ONEHOT[ri(r, 0, len(ONEHOT))]
        idx = r.integers(-depth if v >= 11 else 0, depth + 2, s).astype(it)
        vals = c.weight(value=np.array([0, 3], vt))
        d = c.weight(value=np.array([depth], dt))
        return [c.op("OneHot", [c.feed(s, value=idx), d, vals], **({"axis": ri(r, -rank - 1, rank + 1)}
                                                                    if r.random() < 0.7 else {}))]
    if k == 2:
        _at(c, 9, 12)
        x = c.feed(s)
        y = c.feed(s[ri(r, 0, rank):])
        return [c.op("Where", [c.op("Greater", [x, c.weight(value=0.0)]), x, y])]
    if k == 3:
        _no64(c)
        _at(c, 9, 12)
        x = c.feed(s, value=(r.integers(-1, 2, s) * r.random(s).round(1)).astype(c.dtype))
        return [c.op("NonZero", [x])]
    if k == 4:
        _at(c, 9, 12)
        shape = _given(c, s)
        if r.random() < 0.5:
            return [c.op("ConstantOfShape", [shape])]
        dt = [c.dtype, np.dtype(np.int64), np.dtype(np.int32)][ri(r, 0, 3)]
        return [c.op("ConstantOfShape", [shape], value=numpy_helper.from_array(np.array([3], dt)))]
    if k == 5:
        _at(c, 9, 12)
        x = c.feed(s, lo=-3, hi=3)
        return [c.op("Shrink", [x], **({"lambd": float(r.choice([0.0, 0.5, 1.5])), "bias": float(r.choice([0.0, 0.3]))}
                                      if r.random() < 0.7 else {}))]
    if k == 6:
        v = _at(c, 9, 12)
        op = str(r.choice(["Sign", "Erf", "IsNaN"] + (["IsInf"] if v >= 10 else [])))
        if op == "Erf":
            _no64(c)
        if op == "IsInf" and c.dtype == np.float16:  # (IsInf takes float16 from opset 20)
            c.dtype = np.dtype(np.float32)
        a = np.where(r.random(s) < 0.4, r.choice([np.nan, np.nan, np.inf, -np.inf, 0.0], s), r.uniform(-3, 3, s))
        x = c.feed(s, value=a.astype(c.dtype))
        attrs = {"detect_negative": ri(r, 0, 2), "detect_positive": ri(r, 0, 2)} if op == "IsInf" else {}
        return [c.op(op, [x], **attrs)]
    if k == 7:
        v = _at(c, 9, 12)
        x = c.feed(s)
        ax = {"axis": ri(r, -rank if v >= 11 else 0, rank)} if r.random() < 0.7 else {}
        n = s[ax["axis"]] if ax else int(np.prod(s))
        y = c.op("Compress", [x, c.weight(value=r.random(ri(r, 1, n + 1)) < 0.5)], **ax)
        c.declared[y] = helper.np_dtype_to_tensor_dtype(c.dtype)  # (no inference before opset 11)
        return [y]
    if k == 8:
        _at(c, 6, 12)
        dts = [np.float32, np.float64, np.float16, np.int32, np.int64, np.int8, np.uint8]
        src, dst = np.dtype(dts[ri(r, 0, 7)]), np.dtype(dts[ri(r, 0, 7)])
        a = r.integers(0, 100, s) if np.dtype(dst).kind == "u" or src.kind == "u" else r.integers(-100, 100, s)
        if src.kind == "f":
            a = a + (r.random(s).round(2) if dst.kind == "f" else 0)
        return [c.op("Cast", [c.feed(s, value=a.astype(src))], to=int(helper.np_dtype_to_tensor_dtype(dst)))]
    _at(c, 9, 12)
    c.dtype = np.dtype(INTS[ri(r, 0, 2)])
    m, kk, n = dims(r, 3, 1, 6)
    shape = [*s[:-1], m, kk]
    a = c.feed(shape, value=r.integers(-9, 10, shape).astype(c.dtype))
    return [c.op("MatMul", [a, c.weight(value=r.integers(-9, 10, [kk, n]).astype(c.dtype))])]


def _oldblocks(c: Case) -> list[str]:
    """Blocks as opset 7-12 exporters wrote them, the shapes hal fuses: LayerNorm spelt out with
    ReduceMean-1 / 11 (axes an attribute), attention scores into Softmax-1 / 11 at any axis (its
    flattened rows), an elementwise chain into Softmax / LogSoftmax, Conv with BatchNormalization-7 / 9
    and Relu, the erf GELU after MatMul, and a classifier head (GlobalAveragePool, Flatten, Gemm)."""
    r = c.rng
    k = ri(r, 0, 6)
    if k == 0:
        v = _at(c, 7, 12)
        s = dims(r, ri(r, 2, 4), 1, 6)
        x = c.feed(s, lo=-3, hi=3)
        ax = [len(s) - 1] if v < 11 or r.random() < 0.5 else [-1]
        d = c.op("Sub", [x, c.op("ReduceMean", [x], axes=ax)])
        var = c.op("ReduceMean", [c.op("Pow", [d, c.weight(value=2.0)]) if r.random() < 0.5 else c.op("Mul", [d, d])],
                   axes=ax)
        y = c.op("Div", [d, c.op("Sqrt", [c.op("Add", [var, c.weight(value=1e-5)])])])
        return [c.op("Add", [c.op("Mul", [y, c.weight([s[-1]])]), c.weight([s[-1]])])]
    if k == 1:
        v = _at(c, 8, 12)
        b, h, q, kv, e = ri(r, 1, 3), ri(r, 1, 3), ri(r, 1, 6), ri(r, 1, 6), int(r.choice([2, 4]))
        qs, ks, vs = c.feed([b, h, q, e]), c.feed([b, h, kv, e]), c.feed([b, h, kv, e])
        sc = c.op("Div", [c.op("MatMul", [qs, c.op("Transpose", [ks], perm=[0, 1, 3, 2])]),
                          c.weight(value=float(np.sqrt(e)))])
        if r.random() < 0.5:
            sc = c.op("Add", [sc, c.weight([1, 1, q, kv] if r.random() < 0.5 else [kv])])
        ax = int(r.choice([3, -1, 2, 1])) if v >= 11 else int(r.choice([3, 2, 1]))
        return [c.op("MatMul", [c.op("Softmax", [sc], axis=ax), vs])]
    if k == 2:  # (from opset 7: onnxruntime has no binary op of 6, onnx's inference types none before 6)
        v = _at(c, 7, 12)
        s = dims(r, ri(r, 2, 5), 1, 5)
        y = c.feed(s, lo=-3, hi=3)
        for _ in range(ri(r, 1, 4)):
            op = str(r.choice(["Add", "Mul", "Sub", "Div", "Exp", "Neg", "Abs"]))
            if op in ("Exp", "Neg", "Abs"):
                y = c.op(op, [y] if op != "Exp" else [c.op("Neg", [c.op("Abs", [y])])])
            else:
                y = c.op(op, [y, c.weight(value=r.uniform(0.5, 2, s[ri(r, 0, len(s)):]).astype(c.dtype))])
        ax = {"axis": ri(r, -len(s) if v >= 11 else 0, len(s))} if r.random() < 0.8 else {}
        return [c.op(str(r.choice(["Softmax", "LogSoftmax"])), [y], **ax)]
    if k == 3:
        _no64(c)  # (onnxruntime's Conv: float32 and float16)
        v = _at(c, 7, 12)
        ch, oc = ri(r, 1, 4), ri(r, 1, 5)
        x = c.feed([ri(r, 1, 3), ch, *dims(r, 2, 3, 7)])
        y = c.op("Conv", [x, c.weight([oc, ch, 3, 3]), *([c.weight([oc])] if r.random() < 0.5 else [])],
                 kernel_shape=[3, 3], pads=[1, 1, 1, 1] if r.random() < 0.5 else [0, 0, 0, 0])
        stats = [c.weight([oc]), c.weight([oc]), c.weight([oc]), c.weight(value=r.uniform(0.5, 2, oc).astype(c.dtype))]
        y = c.op("BatchNormalization", [y, *stats], epsilon=1e-5, **({"spatial": 1} if v < 9 else {}))
        return [c.op("Relu", [y]) if r.random() < 0.7 else y]
    if k == 4:
        _no64(c)
        _at(c, 9, 12)
        m, kk, n = ri(r, 1, 9), ri(r, 1, 17), ri(r, 1, 17)
        y = c.op("Add", [c.op("MatMul", [c.feed([ri(r, 1, 3), m, kk]), c.weight([kk, n])]), c.weight([n])])
        e = c.op("Erf", [c.op("Div", [y, c.weight(value=1.4142135)])])
        return [c.op("Mul", [c.op("Mul", [y, c.op("Add", [e, c.weight(value=1.0)])]), c.weight(value=0.5)])]
    _no64(c)
    _at(c, 7, 12)
    ch, n = ri(r, 1, 6), ri(r, 1, 6)
    y = c.op("GlobalAveragePool", [c.feed([ri(r, 1, 3), ch, *dims(r, 2, 1, 5)])])
    y = c.op("Flatten", [y], axis=1) if r.random() < 0.5 else c.op("Reshape", [y, c.ints([0, -1])])
    y = c.op("Gemm", [y, c.weight([n, ch]), c.weight([n])], transB=1)
    return [c.op("Softmax", [y]) if r.random() < 0.5 else c.op("Relu", [y])]

FAMILIES: dict[str, Callable[[Case], list[str]]] = {
    "oldshape": _oldshape, "oldreduce": _oldreduce, "oldnorm": _oldnorm, "oldpool": _oldpool,
    "oldmath": _oldmath, "oldnine": _oldnine, "oldblocks": _oldblocks}
