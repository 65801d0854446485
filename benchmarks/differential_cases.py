"""The model families ``benchmarks.differential`` draws: each builds one small model with
``onnx.helper`` from a seeded generator (``benchmarks.differential_draw``), with the attributes,
shapes, broadcasts and dtypes drawn. The network-layer families are here; ``FAMILIES`` gathers them
with those of the other ``differential_*`` modules.

Configurations where onnxruntime and onnx's reference part from each other as well as from hal are
left out, each where it is drawn, with its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import helper

from benchmarks import (
    differential_contrib,
    differential_encdec,
    differential_flow,
    differential_generation,
    differential_hybrid,
    differential_image,
    differential_legacy,
    differential_lowbits,
    differential_math,
    differential_ml,
    differential_mlmaps,
    differential_models,
    differential_msextra,
    differential_recent,
    differential_tensor,
)
from benchmarks.differential_draw import DTYPES, Case, activation, conv_attrs, dims, ri

# -- the families -------------------------------------------------------------------------------

def _reduce(c: Case) -> list[str]:
    r = c.rng
    rank = ri(r, 1, 5)
    x = c.feed(dims(r, rank), lo=0.1 if r.random() < 0.5 else -2)
    op = str(r.choice(["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                       "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]))
    axes = [int(a) for a in r.permutation(rank)[:ri(r, 0, rank + 1)]]
    c.opset = 18
    inputs = [x, c.ints(axes)] if axes or r.random() < 0.5 else [x]
    return [c.op(op, inputs, keepdims=ri(r, 0, 2), noop_with_empty_axes=ri(r, 0, 2))]


def _gather(c: Case) -> list[str]:
    r = c.rng
    rank = ri(r, 1, 4)
    s = dims(r, rank)
    x = c.feed(s)
    ax = ri(r, -rank, rank)
    k = ri(r, 0, 5)
    c.opset = 18
    if k == 0:
        return [c.op("Gather", [x, c.ints(r.integers(-s[ax], s[ax], dims(r, ri(r, 0, 3), 1, 4)))], axis=ax)]
    if k == 1:  # indices may be shorter than the data off the axis
        shape = [ri(r, 1, d + 1) for d in s]
        shape[ax] = ri(r, 1, 5)
        return [c.op("GatherElements", [x, c.ints(r.integers(-s[ax], s[ax], shape))], axis=ax)]
    if k == 2:
        b = ri(r, 0, rank)
        last = ri(r, 1, rank - b + 1)
        idx = np.stack([r.integers(-s[b + j], s[b + j], [*s[:b], ri(r, 1, 3)]) for j in range(last)], -1)
        return [c.op("GatherND", [x, c.ints(idx)], batch_dims=b)]
    reduction = str(r.choice(["none", "add", "mul", "max", "min"]))
    if k == 3:  # each slice along the axis written once (a "none" scatter of repeats is the peers' choice)
        ish = [ri(r, 1, d + 1) for d in s]
        a = ax % rank
        rows = [r.permutation(s[a])[:ish[a]] for _ in range(int(np.prod(ish)) // ish[a])]
        idx = np.moveaxis(np.stack(rows).reshape([d for i, d in enumerate(ish) if i != a] + [ish[a]]), -1, a)
        return [c.op("ScatterElements", [x, c.ints(idx), c.weight(ish)], axis=ax, reduction=reduction)]
    q = ri(r, 1, rank + 1)
    flat = r.permutation(int(np.prod(s[:q])))[:ri(r, 1, 4)]
    idx = np.stack(np.unravel_index(flat, s[:q]), -1)
    return [c.op("ScatterND", [x, c.ints(idx), c.weight([len(flat), *s[q:]])], reduction=reduction)]


def _select(c: Case) -> list[str]:
    r = c.rng
    rank = ri(r, 1, 4)
    s = dims(r, rank, 1, 7)
    x = c.feed(s)
    ax = ri(r, -rank, rank)
    k = ri(r, 0, 5)
    c.opset = 14
    if k == 0:  # a condition shorter or longer than the axis
        return [c.op("Compress", [x, c.weight(value=r.random(ri(r, 1, s[ax] + 3)) < 0.5)], axis=ax)]
    if k == 1:
        c.feeds[x] = np.round(c.feeds[x] * 2).astype(c.dtype)  # ties
        v, i = c.op("TopK", [x, c.ints([ri(r, 0, s[ax] + 1)])], outputs=2, axis=ax, largest=ri(r, 0, 2))
        return [v, i]
    if k == 2:
        c.feeds[x] = np.round(c.feeds[x]).astype(c.dtype)
        op = str(r.choice(["ArgMax", "ArgMin"]))
        return [c.op(op, [x], axis=ax, keepdims=ri(r, 0, 2), select_last_index=ri(r, 0, 2))]
    if k == 3:
        return [c.op("CumSum", [x, c.ints(ax)], exclusive=ri(r, 0, 2), reverse=ri(r, 0, 2))]
    y = c.feed(s[ri(r, 0, rank):])
    return [c.op("Where", [c.op("Greater", [x, c.weight(value=0.0)]), x, y])]


def _resize(c: Case) -> list[str]:
    r = c.rng
    c.dtype = np.dtype(np.float32)  # (onnxruntime's Resize is float32 and integer only)
    s = [ri(r, 1, 3), ri(r, 1, 4), ri(r, 1, 9), ri(r, 1, 9)]
    x = c.feed(s)
    mode = str(r.choice(["nearest", "linear", "cubic"]))
    ctm = str(r.choice(["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel", "half_pixel_symmetric",
                        "tf_crop_and_resize"]))
    attrs: dict[str, Any] = {"mode": mode, "coordinate_transformation_mode": ctm}
    if mode == "nearest":
        attrs["nearest_mode"] = str(r.choice(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]))
    if mode == "cubic":
        attrs["cubic_coeff_a"] = float(r.choice([-0.75, -0.5]))
        attrs["exclude_outside"] = ri(r, 0, 2)
    roi = ""
    if ctm == "tf_crop_and_resize":
        lo, hi = np.sort(np.round(r.uniform(0, 1, (2, 2)), 1), axis=0)
        roi = c.weight(value=np.array([0, 0, *lo, 1, 1, *hi], np.float32))
        attrs["extrapolation_value"] = 0.5
    c.opset = 19
    if r.random() < 0.5:
        scales = [1, 1, r.choice([0.5, 0.6, 0.75, 1.5, 2, 2.5, 3]), r.choice([0.5, 0.7, 1.25, 1.5, 2])]
        return [c.op("Resize", [x, roi, c.weight(value=np.array(scales, np.float32))], **attrs)]
    sizes = [*s[:2], ri(r, 1, 14), ri(r, 1, 14)]
    return [c.op("Resize", [x, roi, "", c.ints(sizes)], **attrs)]


def _slice_pad(c: Case) -> list[str]:
    r = c.rng
    rank = ri(r, 1, 5)
    s = dims(r, rank, 1, 8)
    x = c.feed(s)
    c.opset = 19
    if r.random() < 0.5:
        axes = [int(a) for a in r.permutation(rank)[:ri(r, 1, rank + 1)]]
        starts = [ri(r, -s[a] - 2, s[a] + 2) for a in axes]
        ends = [int(r.choice([ri(r, -s[a] - 2, s[a] + 2), 2**62, -2**62])) for a in axes]
        steps = [int(r.choice([1, 2, 3, -1, -2])) for _ in axes]
        return [c.op("Slice", [x, c.ints(starts), c.ints(ends), c.ints(axes), c.ints(steps)])]
    mode = str(r.choice(["constant", "reflect", "edge", "wrap"]))
    pads = [ri(r, -1 if mode == "constant" else 0, 4) for _ in range(2 * rank)]
    if mode == "reflect":
        pads = [min(p, s[i % rank] - 1) for i, p in enumerate(pads)]
    inputs = [x, c.ints(pads)] + ([c.weight(value=1.5)] if mode == "constant" and r.random() < 0.5 else [])
    return [c.op("Pad", inputs, mode=mode)]


def _pool(c: Case) -> list[str]:
    r = c.rng
    nd = ri(r, 1, 4)
    s = [ri(r, 1, 3), ri(r, 1, 4), *dims(r, nd, 2, 9)]
    x = c.feed(s)
    op = str(r.choice(["MaxPool", "AveragePool", "LpPool"]))
    k = [ri(r, 1, min(4, d + 1)) for d in s[2:]]
    attrs: dict[str, Any] = {"kernel_shape": k, "strides": [ri(r, 1, 3) for _ in k]}
    dilated = op != "LpPool" and r.random() < 0.5
    if dilated:
        attrs["dilations"] = [ri(r, 1, 3) for _ in k]
    # SAME with dilations left out: onnxruntime sizes the output apart from the spec, and onnx's
    # reference reads SAME_LOWER as SAME_UPPER; both part from each other there as from hal
    if r.random() < 0.5 or dilated:
        attrs["pads"] = [ri(r, 0, kk) for kk in k] * 2
    else:
        attrs["auto_pad"] = str(r.choice(["SAME_UPPER", "VALID"]))
    if op != "LpPool":
        attrs["ceil_mode"] = ri(r, 0, 2)
    if op == "AveragePool":
        attrs["count_include_pad"] = ri(r, 0, 2)
    if op == "LpPool":
        attrs["p"] = int(r.choice([1, 2, 3]))
    c.opset = 19
    return [c.op(op, [x], **attrs)]


def _conv(c: Case) -> list[str]:
    r = c.rng
    nd = ri(r, 1, 4)
    ch = ri(r, 1, 5)
    g = int(r.choice([1, ch]))
    x = c.feed([ri(r, 1, 3), ch, *dims(r, nd, 3, 9 if nd < 3 else 6)])
    oc = g * ri(r, 1, 3)
    k = [ri(r, 1, 4) for _ in range(nd)]
    attrs = conv_attrs(r, k, g)
    bias = [c.weight([oc])] if r.random() < 0.5 else []
    y = c.op("Conv", [x, c.weight([oc, ch // g, *k]), *bias], **attrs)
    return [activation(c, y) if r.random() < 0.5 else y]


def _norm(c: Case) -> list[str]:
    r = c.rng
    rank = ri(r, 2, 5)
    s = dims(r, rank)
    x = c.feed(s, lo=-3, hi=3)
    ch = s[1]
    k = ri(r, 0, 5)
    if k == 0:
        ax = ri(r, -rank, rank)
        tail = s[ax % rank:]
        c.opset = 17
        return list(c.op("LayerNormalization", [x, c.weight(tail), c.weight(tail)], outputs=3, axis=ax,
                         epsilon=float(r.choice([1e-5, 1e-12])), stash_type=1))
    if k == 1:
        stats = [c.weight([ch]), c.weight([ch]), c.weight([ch]), c.weight(value=r.uniform(0.5, 2, ch).astype(c.dtype))]
        c.opset = 15
        if r.random() < 0.5:
            return [c.op("BatchNormalization", [x, *stats], epsilon=1e-5)]
        return list(c.op("BatchNormalization", [x, *stats], outputs=3, epsilon=1e-5, momentum=0.9, training_mode=1))
    if k == 2:
        c.opset = 17
        return [c.op("InstanceNormalization", [x, c.weight([ch]), c.weight([ch])], epsilon=1e-5)]
    if k == 3:
        groups = int(r.choice([d for d in range(1, ch + 1) if ch % d == 0]))
        c.opset = 21
        y = c.op("GroupNormalization", [x, c.weight([ch]), c.weight([ch])], num_groups=groups, epsilon=1e-5)
        c.declared[y] = helper.np_dtype_to_tensor_dtype(c.dtype)  # (onnx's inference gives its output no type)
        return [y]
    c.opset = 13
    return [c.op("Softmax" if r.random() < 0.5 else "LogSoftmax", [x], axis=ri(r, -rank, rank))]


def _attention(c: Case) -> list[str]:
    r = c.rng
    batch, q_len, kv_len = ri(r, 1, 3), ri(r, 1, 6), ri(r, 1, 6)
    heads, head = int(r.choice([1, 2, 4])), int(r.choice([2, 4, 8]))
    kv_heads = int(r.choice([h for h in (1, 2, 4) if heads % h == 0]))
    q = c.feed([batch, heads, q_len, head])
    k, v = (c.feed([batch, kv_heads, kv_len, head]) for _ in range(2))
    attrs: dict[str, Any] = {}
    if r.random() < 0.5:
        attrs["is_causal"] = 1
    if r.random() < 0.3:
        attrs["softcap"] = float(r.choice([5.0, 30.0]))
    if r.random() < 0.3:
        attrs["scale"] = float(r.uniform(0.1, 1))
    mask = []
    if r.random() < 0.4:
        mask = [c.weight([q_len, kv_len]) if r.random() < 0.5 else c.weight(value=r.random((q_len, kv_len)) < 0.8)]
    c.opset = 23
    return [c.op("Attention", [q, k, v, *mask], **attrs)]


def _einsum(c: Case) -> list[str]:
    r = c.rng
    sizes = {ch: ri(r, 1, 4) for ch in "abcd"}
    terms = ["".join(r.choice(list("abcd"), ri(r, 0, 4))) for _ in range(ri(r, 1, 4))]
    used = sorted(set("".join(terms)))
    out = "".join(ch for ch in used if r.random() < 0.5)
    c.opset = 12
    return [c.op("Einsum", [c.feed([sizes[ch] for ch in t]) for t in terms], equation=",".join(terms) + "->" + out)]


def _mlp(c: Case) -> list[str]:
    """A product, its bias, an activation (hal fuses them into one step), maybe a second layer and a residual."""
    r = c.rng
    batch = dims(r, ri(r, 0, 3), 1, 4)
    m, k, n = dims(r, 3, 1, 40)
    x = c.feed([*batch, m, k])
    y = c.op("MatMul", [x, c.weight([k, n])])
    if r.random() < 0.8:
        bias = c.weight([n] if r.random() < 0.8 else [1, n])
        y = c.op("Add", [y, bias] if r.random() < 0.5 else [bias, y])
    y = activation(c, y)
    if r.random() < 0.5:
        y = c.op("Add", [c.op("MatMul", [y, c.weight([n, k])]), c.weight([k])])
        if r.random() < 0.5:
            y = c.op("Add", [y, x])
    return [y]


def _qkv(c: Case) -> list[str]:
    """A transformer block's attention as exporters write it: Q, K, V projections (one stacked step in
    hal), heads by Reshape and Transpose, a masked softmax, the output projection, residual, LayerNorm."""
    r = c.rng
    seq, hidden = ri(r, 1, 20), int(r.choice([8, 16, 24, 32]))
    heads = int(r.choice([h for h in (1, 2, 4, 8) if hidden % h == 0]))
    x = c.feed([ri(r, 1, 3), seq, hidden])
    qkv = []
    for _ in range(3):
        y = c.op("Add", [c.op("MatMul", [x, c.weight([hidden, hidden])]), c.weight([hidden])])
        y = c.op("Reshape", [y, c.ints([0, 0, heads, hidden // heads])])
        qkv.append(c.op("Transpose", [y], perm=[0, 2, 1, 3]))
    q, k, v = qkv
    scores = c.op("Div", [c.op("MatMul", [q, c.op("Transpose", [k], perm=[0, 1, 3, 2])]),
                          c.weight(value=float(np.sqrt(hidden // heads)))])
    if r.random() < 0.6:
        low = -1e4 if c.dtype == np.float16 else -1e9
        scores = c.op("Where", [c.weight(value=np.tril(np.ones((seq, seq), bool))), scores, c.weight(value=low)])
    o = c.op("MatMul", [c.op("Softmax", [scores], axis=-1), v])
    o = c.op("Reshape", [c.op("Transpose", [o], perm=[0, 2, 1, 3]), c.ints([0, 0, hidden])])
    o = c.op("Add", [c.op("MatMul", [o, c.weight([hidden, hidden])]), c.weight([hidden])])
    if r.random() < 0.5:
        o = c.op("Add", [o, x])
    gamma = c.weight(value=(1 + r.standard_normal(hidden) * 0.1).astype(c.dtype))
    return [c.op("LayerNormalization", [o, gamma, c.weight([hidden])], axis=-1, epsilon=1e-5)]


def _elementwise(c: Case) -> list[str]:
    """A chain of broadcasting binary ops and activations (one fused region in hal)."""
    r = c.rng
    rank = ri(r, 1, 5)
    s = dims(r, rank, 1, 7)
    y = c.feed(s, lo=-3, hi=3)
    for _ in range(ri(r, 1, 7)):
        other = [d if r.random() < 0.6 else 1 for d in s][ri(r, 0, rank):]
        k = ri(r, 0, 6)
        if k == 0:
            y = c.op("Add", [y, c.weight(other)])
        elif k == 1:
            y = c.op("Mul", [c.weight(other), y])
        elif k == 2:
            y = c.op("Div", [y, c.weight(value=r.uniform(0.5, 2, other).astype(c.dtype))])
        elif k == 3:
            y = c.op("Max", [y, c.weight(other)])
        elif k == 4:
            y = c.op("Exp", [c.op("Neg", [c.op("Abs", [y])])])
        else:
            y = activation(c, y)
    return [y]


def _quant(c: Case) -> list[str]:
    """Quantisation as quantizers write it: Quantize/DequantizeLinear per tensor or per axis, the
    integer products and DynamicQuantizeLinear (float32 in, as onnxruntime takes them)."""
    r = c.rng
    c.dtype = np.dtype(np.float32)
    kind = [np.int8, np.uint8][ri(r, 0, 2)]
    lo, hi = (0, 256) if kind == np.uint8 else (-128, 128)
    k = ri(r, 0, 4)
    c.opset = 19
    if k == 0:
        s = dims(r, ri(r, 1, 4))
        x = c.feed(s, lo=-20, hi=20)
        if r.random() < 0.5:
            scale = c.weight(value=np.float32(r.uniform(0.05, 0.3)))
            zero = c.weight(value=np.array(ri(r, 0, 10), kind))
            return [c.op("DequantizeLinear", [c.op("QuantizeLinear", [x, scale, zero]), scale, zero])]
        ax = ri(r, -len(s), len(s))
        scale = c.weight(value=r.uniform(0.05, 0.3, s[ax]).astype(np.float32))
        zero = c.weight(value=r.integers(0, 10, s[ax]).astype(kind))
        return [c.op("DequantizeLinear", [c.op("QuantizeLinear", [x, scale, zero], axis=ax), scale, zero], axis=ax)]
    m, kk, n = ri(r, 1, 6), ri(r, 1, 9), ri(r, 1, 6)
    if k == 1:
        a = c.feed([m, kk], value=r.integers(lo, hi, (m, kk)).astype(kind))
        b = c.weight(value=r.integers(lo, hi, (kk, n)).astype(kind))
        zeros = [c.weight(value=np.array(3, kind)), c.weight(value=np.array(5, kind))] if r.random() < 0.5 else []
        return [c.op("MatMulInteger", [a, b, *zeros])]
    if k == 2:
        a = c.feed([m, kk], value=r.integers(lo, hi, (m, kk)).astype(kind))
        b = c.weight(value=r.integers(lo, hi, (kk, n)).astype(kind))

        def scale() -> str:
            return c.weight(value=np.float32(r.uniform(0.01, 0.1)))

        def zero() -> str:
            return c.weight(value=np.array(r.integers(lo, hi) // 4, kind))

        return [c.op("QLinearMatMul", [a, scale(), zero(), b, scale(), zero(), scale(), zero()])]
    x = c.feed(dims(r, ri(r, 1, 4), 1, 7), lo=-float(r.uniform(0, 5)), hi=float(r.uniform(0, 5)))
    return list(c.op("DynamicQuantizeLinear", [x], outputs=3))


def _recurrent(c: Case) -> list[str]:
    """LSTM, GRU and RNN, one direction or both, with sequence lengths sometimes."""
    r = c.rng
    c.dtype = np.dtype(np.float32)  # (onnxruntime's recurrent ops are float32)
    op = str(r.choice(["LSTM", "GRU", "RNN"]))
    seq, batch, width, hidden = ri(r, 1, 5), ri(r, 1, 3), ri(r, 1, 5), ri(r, 1, 5)
    dirs = int(r.choice([1, 2]))
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    inputs = [c.feed([seq, batch, width]), c.weight([dirs, gates * hidden, width]),
              c.weight([dirs, gates * hidden, hidden]), c.weight([dirs, 2 * gates * hidden])]
    if r.random() < 0.5:
        inputs.append(c.weight(value=r.integers(1, seq + 1, batch).astype(np.int32)))
    attrs: dict[str, Any] = {"hidden_size": hidden,
                             "direction": "bidirectional" if dirs == 2 else str(r.choice(["forward", "reverse"]))}
    if op == "GRU":
        attrs["linear_before_reset"] = ri(r, 0, 2)
    c.opset = 14
    return list(c.op(op, inputs, outputs=2, **attrs))


FAMILIES: dict[str, Callable[[Case], list[str]]] = {
    "reduce": _reduce, "gather": _gather, "select": _select, "resize": _resize, "slice_pad": _slice_pad,
    "pool": _pool, "conv": _conv, "norm": _norm, "attention": _attention, "einsum": _einsum, "mlp": _mlp,
    "qkv": _qkv, "elementwise": _elementwise, "quant": _quant, "recurrent": _recurrent,
    # (appended: a family's generator is seeded by its place in this order)
    **differential_math.FAMILIES, **differential_tensor.FAMILIES, **differential_image.FAMILIES,
    **differential_flow.FAMILIES, **differential_ml.FAMILIES, **differential_contrib.FAMILIES,
    **differential_models.FAMILIES, **differential_lowbits.FAMILIES, **differential_legacy.FAMILIES,
    **differential_recent.FAMILIES, **differential_hybrid.FAMILIES, **differential_msextra.FAMILIES,
    **differential_mlmaps.FAMILIES, **differential_generation.FAMILIES,
    **differential_encdec.FAMILIES}


def build(seed: int, family: str) -> Case | None:
    """Case ``seed`` of ``family``, its model built (None where the draw makes no valid model)."""
    rng = np.random.default_rng([seed, list(FAMILIES).index(family)])
    c = Case(rng, DTYPES[ri(rng, 0, len(DTYPES))])
    try:
        c.model(FAMILIES[family](c))
    except (ValueError, onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        return None
    return c
