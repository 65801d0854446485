"""The differential sweep's families for onnxruntime's com.microsoft operators that hal implements:
the GELUs and fused products, the skip / simplified / embedding layer normalisations, Attention and
MultiHeadAttention, GroupQueryAttention and RotaryEmbedding, the quantised products and QLinear ops,
and the odd tensor ops (Inverse, Trilu, GridSample, Unique, CDist, CropAndResize ...).

onnx's reference has no com.microsoft kernels, so onnxruntime is the only peer: its CPU provider must
run the draw (16-bit floats it runs through the casts it inserts where it has no float16 kernel).
Ops onnxruntime's CPU provider lacks (BiasAdd, BiasSplitGelu, GemmFastGelu, GroupNorm, NhwcConv,
DecoderMaskedMultiHeadAttention: CUDA only) are not drawn. Each contrib node's outputs are declared
(``c.declared``), as onnx's inference does not know these ops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import TensorProto, helper

from benchmarks.differential_draw import Case, dims, ri

_MS = "com.microsoft"
F32, I32, I64 = TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64


def _ms(c: Case, op: str, inputs: list[str], types: list[int | None], domain: str = _MS, **attrs: Any) -> list[str]:
    """A com.microsoft node (or an ONNX-domain one onnxruntime registers from opset 1, which onnx's
    inference types not below 17); ``types`` one element type per output (None: an optional one left
    out), each declared. Its output names, the left-out ones dropped."""
    if domain:
        c.domains[domain] = 1
    names = [c._name(op) if t is not None else "" for t in types]
    c.nodes.append(helper.make_node(op, inputs, names, domain=domain, **attrs))
    for n, t in zip(names, types):
        if n:
            c.declared[n] = t
    return [n for n in names if n]


def _ft(c: Case) -> int:
    return helper.np_dtype_to_tensor_dtype(c.dtype)


def _no_double(c: Case) -> None:
    if c.dtype == np.float64:
        c.dtype = np.dtype(np.float32)


# -- GELUs and fused products ---------------------------------------------------------------------

_GEMM_ACTIVATIONS = {"Relu": {}, "Tanh": {}, "Sigmoid": {}, "Softplus": {}, "Softsign": {},
                     "LeakyRelu": {"alpha": 0.1}, "HardSigmoid": {"alpha": 0.2, "beta": 0.5}, "Elu": {"alpha": 1.3},
                     "Selu": {"alpha": 1.6, "gamma": 1.05}, "Celu": {"alpha": 0.7}, "ThresholdedRelu": {"alpha": 0.4},
                     "ParametricSoftplus": {"alpha": 1.5, "beta": 0.8}, "ScaledTanh": {"alpha": 2.0, "beta": 0.6}}
_CONV_ACTIVATIONS = {"": [], "Relu": [], "Tanh": [], "Sigmoid": [], "LeakyRelu": [0.15], "Clip": [-0.5, 0.8],
                     "HardSigmoid": [0.3, 0.4]}


def _fused_matmul(c: Case) -> list[str]:
    r = c.rng
    m, k, n = dims(r, 3, 1, 7)
    attrs: dict[str, Any] = {"alpha": float(r.choice([1.0, 0.5, -1.25]))}
    if r.random() < 0.4:  # batch transposes: A, B of one rank, stored [M, b..., K] for [b..., M, K]
        batch = dims(r, ri(r, 1, 3), 1, 4)
        shapes = []
        for side, (rows, cols) in (("A", (m, k)), ("B", (k, n))):
            tb, tr = ri(r, 0, 2), ri(r, 0, 2)
            attrs[f"transBatch{side}"], attrs[f"trans{side}"] = tb, tr
            mat = [cols, rows] if tr else [rows, cols]
            shapes.append([mat[0], *batch, mat[1]] if tb else [*batch, *mat])
        return _ms(c, "FusedMatMul", [c.feed(shapes[0]), c.feed(shapes[1])], [_ft(c)], **attrs)
    batch = dims(r, ri(r, 0, 3), 1, 4)
    a_batch = [d if r.random() < 0.7 else 1 for d in batch][ri(r, 0, len(batch) + 1):]
    b_batch = [d if r.random() < 0.7 else 1 for d in batch][ri(r, 0, len(batch) + 1):]
    ta, tb = ri(r, 0, 2), ri(r, 0, 2)
    a = [*a_batch, *([k, m] if ta else [m, k])]
    b = [*b_batch, *([n, k] if tb else [k, n])]
    if r.random() < 0.15:
        a, ta = [k], 0
    elif r.random() < 0.15:  # transA with a 1-D B left out: onnxruntime reads A's memory in the transposed
        # shape untransposed (A (6, 3) as (3, 6)), against its docs' transA(A) and its 2-D B path
        b, ta, tb = [k], 0, 0
        a = [*a_batch, m, k]
    return _ms(c, "FusedMatMul", [c.feed(a), c.feed(b)], [_ft(c)], transA=ta, transB=tb, **attrs)


def _gelu(c: Case) -> list[str]:
    """Gelu, FastGelu (with and without a bias), BiasGelu, QuickGelu, FusedMatMul (transposes of the
    matrices and of the batch, alpha), TransposeMatMul, FusedGemm with each activation onnxruntime's
    functors take, FusedConv with MLAS's fused activations and the Z sum."""
    r = c.rng
    k = ri(r, 0, 8)
    # onnxruntime has no float64 Gelu (its Erf), BiasGelu, FusedGemm, FusedConv; its float64 FastGelu is
    # its schema's function body, with the docs' six-digit constants (0.797885 x + 0.035677 x^3), where
    # its float kernel takes sqrt(2 / pi) and 0.044715 sqrt(2 / pi): onnxruntime parts from itself by 2e-7
    if k in (0, 1, 2, 5, 6, 7):
        _no_double(c)
    s = dims(r, ri(r, 1, 4), 1, 7)
    if k == 0:
        return _ms(c, "Gelu", [c.feed(s, -6, 6)], [_ft(c)])
    if k == 1:
        bias = [c.weight(s[-1:])] if r.random() < 0.5 else []
        return _ms(c, "FastGelu", [c.feed(s, -6, 6), *bias], [_ft(c)])
    if k == 2:
        return _ms(c, "BiasGelu", [c.feed(s, -6, 6), c.weight(s[-1:])], [_ft(c)])
    if k == 3:
        return _ms(c, "QuickGelu", [c.feed(s, -8, 8)], [_ft(c)], alpha=float(r.choice([1.702, 1.0, 0.5, -0.75])))
    if k == 4:
        return _fused_matmul(c)
    m, kk, n = dims(r, 3, 1, 7)
    ta, tb = ri(r, 0, 2), ri(r, 0, 2)
    if k == 5:
        name = str(r.choice(list(_GEMM_ACTIVATIONS)))
        attrs = {f"activation_{p}": v for p, v in _GEMM_ACTIVATIONS[name].items()}
        bias = [c.weight([[], [n], [1, n], [m, 1], [m, n]][ri(r, 0, 5)])] if r.random() < 0.7 else []
        return _ms(c, "FusedGemm", [c.feed([kk, m] if ta else [m, kk]), c.weight([n, kk] if tb else [kk, n]), *bias],
                   [_ft(c)], transA=ta, transB=tb, alpha=float(r.choice([1.0, 0.7])),
                   beta=float(r.choice([1.0, -0.5])), activation=name, **attrs)
    if k == 6:
        return _ms(c, "TransposeMatMul", [c.feed([kk, m] if ta else [m, kk]), c.feed([n, kk] if tb else [kk, n])],
                   [_ft(c)], transA=ta, transB=tb, alpha=float(r.choice([1.0, 2.0])))
    c.dtype = np.dtype(np.float32)  # (onnxruntime's FusedConv is float32)
    nd, ch = ri(r, 1, 3), ri(r, 1, 4)
    g = int(r.choice([1, ch]))
    oc, ks = g * ri(r, 1, 3), [ri(r, 1, 4) for _ in range(nd)]
    x = c.feed([ri(r, 1, 3), ch, *dims(r, nd, 3, 8)])
    name = str(r.choice(list(_CONV_ACTIVATIONS)))
    attrs: dict[str, Any] = {"kernel_shape": ks, "strides": [ri(r, 1, 3) for _ in ks], "group": g,
                             "pads": [ri(r, 0, kk) for kk in ks] * 2}
    act = {"activation": name, "activation_params": _CONV_ACTIVATIONS[name]} if name else {}
    attrs.update({key: v for key, v in act.items() if v})
    inputs = [x, c.weight([oc, ch // g, *ks]), c.weight([oc])]
    out = [(d + 2 * p - kk) // st + 1
           for d, p, kk, st in zip(c.feeds[x].shape[2:], attrs["pads"], ks, attrs["strides"])]
    if r.random() < 0.4:
        inputs.append(c.feed([c.feeds[x].shape[0], oc, *out]))
    return _ms(c, "FusedConv", inputs, [F32], **attrs)


# -- layer normalisations --------------------------------------------------------------------------

def _norm(c: Case) -> list[str]:
    """SkipLayerNormalization and SkipSimplifiedLayerNormalization (skip of the input's shape, (1, S, H)
    or (S, H); with and without beta and bias; each optional output), onnxruntime's ONNX-domain
    SimplifiedLayerNormalization and pre-17 LayerNormalization (a float32 scale for 16-bit X), and
    EmbedLayerNormalization (segments, mask, position ids)."""
    r = c.rng
    _no_double(c)
    k = ri(r, 0, 5)
    b, s, h = ri(r, 1, 4), ri(r, 1, 6), ri(r, 1, 17)
    eps, ft = float(r.choice([1e-5, 1e-12, 0.1])), _ft(c)
    if k <= 1:
        shape = [b, s, h] if r.random() < 0.7 else [b * s, h]
        skip = shape if len(shape) == 2 else [shape, [1, s, h], [s, h]][ri(r, 0, 3)]
        x = c.feed(shape, -3, 3)
        gamma = c.weight(value=(1 + r.standard_normal(h) * 0.2).astype(c.dtype))
        extra: list[str] = [] if k == 1 or r.random() < 0.3 else [c.weight([h])]  # beta
        if r.random() < 0.5:
            extra = [extra[0] if extra else "", c.weight([h])] if k == 0 else [c.weight([h])]  # bias
        outs = [[ft], [ft, F32], [ft, F32, F32], [ft, F32, F32, ft], [ft, None, None, ft]][ri(r, 0, 5)]
        op = "SkipLayerNormalization" if k == 0 else "SkipSimplifiedLayerNormalization"
        return _ms(c, op, [x, c.feed(skip, -3, 3), gamma, *extra], outs, epsilon=eps)
    if k <= 3:
        rank = ri(r, 1, 5)
        shape, axis = dims(r, rank, 1, 7), ri(r, -rank, rank)
        scale_type = np.float32 if r.random() < 0.3 else c.dtype
        tail = shape[axis % rank:]
        c.opset = int(r.choice([13, 17])) if k == 2 else int(r.choice([13, 16]))
        inputs = [c.feed(shape, -3, 3), c.weight(value=(1 + r.standard_normal(tail) * 0.2).astype(scale_type))]
        yt = helper.np_dtype_to_tensor_dtype(np.dtype(scale_type))
        if k == 2:
            outs = [yt] if r.random() < 0.6 else [yt, F32]
            return _ms(c, "SimplifiedLayerNormalization", inputs, outs, "", axis=axis, epsilon=eps)
        if r.random() < 0.7:
            inputs.append(c.weight(value=r.standard_normal(tail).astype(scale_type)))
        # mean and inv_std_dev of a 16-bit X with a float32 scale over every axis left out: onnxruntime's
        # kernel writes them 0-d where its own shape inference says (1, ..., 1), and warns of it
        whole = axis % rank == 0 and scale_type != c.dtype
        outs = [[yt], [yt, F32, F32]][0 if whole else ri(r, 0, 2)]
        return _ms(c, "LayerNormalization", inputs, outs, "", axis=axis, epsilon=eps)
    c.dtype = np.dtype(np.float32)  # (onnxruntime's EmbedLayerNormalization is float32)
    vocab, segs, positions = ri(r, 2, 12), ri(r, 2, 4), s + ri(r, 0, 4)
    ids = c.feed([b, s], value=r.integers(0, vocab, (b, s)).astype(np.int32))
    seg = c.feed([b, s], value=r.integers(0, segs, (b, s)).astype(np.int32)) if r.random() < 0.7 else ""
    inputs = [ids, seg, c.weight([vocab, h]), c.weight([positions, h]), c.weight([segs, h]) if seg else "",
              c.weight(value=(1 + r.standard_normal(h) * 0.2).astype(np.float32)), c.weight([h])]
    if r.random() < 0.5:
        inputs.append(c.feed([b, s], value=(r.random((b, s)) < 0.7).astype(np.int32)))
    if r.random() < 0.4:
        pos = r.integers(0, positions, (b, s) if r.random() < 0.5 else (1, s)).astype(np.int32)
        inputs += [""] * (8 - len(inputs)) + [c.feed(list(pos.shape), value=pos)]
    outs = [[F32, I32], [F32, I32, F32]][ri(r, 0, 2)]
    return _ms(c, "EmbedLayerNormalization", inputs, outs, epsilon=eps)


# -- Attention and MultiHeadAttention --------------------------------------------------------------

def _mask(c: Case, b: int, s: int, total: int, kinds: str) -> str:
    """A mask_index / key_padding_mask (int32) of one of ``kinds``: "e" ends (B), "s" ends then starts
    (2B), "2" a raw (B, total), "3" a raw (B, S, total); each row keeps a key."""
    r, kind = c.rng, str(c.rng.choice(list(kinds)))
    if kind == "e":
        return c.feed([b], value=r.integers(1, total + 1, b).astype(np.int32))
    if kind == "s":
        ends = r.integers(1, total + 1, b)
        return c.feed([2 * b], value=np.concatenate([ends, [ri(r, 0, e) for e in ends]]).astype(np.int32))
    shape = [b, total] if kind == "2" else [b, s, total]
    raw = (r.random(shape) < 0.7).astype(np.int32)
    raw[..., 0] = 1
    return c.feed(shape, value=raw)


def _bias(c: Case, b: int, n: int, s: int, total: int) -> str:
    return c.feed([b if c.rng.random() < 0.5 else 1, n if c.rng.random() < 0.5 else 1, s, total], -3, 3)


def _attention(c: Case) -> list[str]:
    """Attention (the fused projection: V's own width by qkv_hidden_sizes, no bias, the mask kinds of
    onnxruntime's PrepareMask, GPT-2's past / present, unidirectional, attention_bias, scale,
    mask_filter_value) and MultiHeadAttention (Q, K, V of their own lengths, K and V already as heads,
    its fused bias, key_padding_mask, attention_bias, past_key / past_value and the presents)."""
    r = c.rng
    _no_double(c)
    ft = _ft(c)
    b, s, n, h = ri(r, 1, 3), ri(r, 1, 5), int(r.choice([1, 2, 4])), int(r.choice([2, 4, 8]))
    hv = h if r.random() < 0.7 else int(r.choice([2, 4, 6]))
    attrs: dict[str, Any] = {"num_heads": n}
    if r.random() < 0.3:
        attrs["scale"] = float(r.uniform(0.1, 1.0))
    if r.random() < 0.2:
        attrs["mask_filter_value"] = float(r.choice([-1e4, -3.4028234663852886e38, -50.0]))
    if r.random() < 0.5:
        width = ri(r, 1, 9)
        sizes = [n * h, n * h, n * hv]
        past = sizes[2] == sizes[0] and r.random() < 0.35
        p = ri(r, 1, 4) if past else 0
        total = p + s
        attrs.update({"qkv_hidden_sizes": sizes} if hv != h else {})
        if r.random() < 0.3:
            attrs["unidirectional"] = 1
        # start positions with unidirectional left out: a row before its start sees only keys at the
        # fill value, -10000, where float32 holds 3 decimals, and the order each peer rounds in decides
        kinds = "e23" if "unidirectional" in attrs else "es23"
        inputs = [c.feed([b, s, width]), c.weight([width, sum(sizes)]), c.weight([sum(sizes)]) if r.random() < 0.8
                  else "", _mask(c, b, s, total, kinds) if r.random() < 0.6 else "",
                  c.feed([2, b, n, p, h]) if past else ""]
        if not past and r.random() < 0.25:  # (onnxruntime refuses past with attention_bias)
            inputs.append(_bias(c, b, n, s, total))
        return _ms(c, "Attention", inputs, [ft, ft] if past else [ft], **attrs)
    kv = ri(r, 1, 5)
    form = ri(r, 0, 3)  # 0: 3-D K, V; 1: K and V as heads (B, N, L, H); 2: 3-D with past and presents
    hv = hv if form == 0 else h  # (K and V as heads, and the pasts, share one head size there)
    past = ri(r, 1, 4) if form == 2 else 0
    kv = s if form == 2 else kv
    total = past + kv
    k, v = (c.feed([b, n, kv, h]), c.feed([b, n, kv, hv])) if form == 1 else \
        (c.feed([b, kv, n * h]), c.feed([b, kv, n * hv]))
    inputs = [c.feed([b, s, n * h]), k, v, c.weight([2 * n * h + n * hv]) if r.random() < 0.5 and form != 1 else "",
              _mask(c, b, s, total, "e2" if form == 2 else "e23") if r.random() < 0.5 else "",
              _bias(c, b, n, s, total) if r.random() < 0.3 else ""]
    outs: list[int | None] = [ft]
    if form != 1 and r.random() < 0.2:
        attrs["unidirectional"] = 1
    if form == 2:
        inputs += [c.feed([b, n, past, h]), c.feed([b, n, past, hv])]
        outs = [ft, ft, ft]
    while inputs[-1] == "":
        inputs.pop()
    return _ms(c, "MultiHeadAttention", inputs, outs, **attrs)


# -- GroupQueryAttention and RotaryEmbedding -------------------------------------------------------

def _caches(c: Case, positions: int, half: int) -> list[str]:
    """cos / sin caches (positions, half) of real angles."""
    angle = np.arange(positions)[:, None] * (10000.0 ** (-np.arange(half) / max(half, 1)))[None, :]
    return [c.weight(value=np.cos(angle).astype(c.dtype)), c.weight(value=np.sin(angle).astype(c.dtype))]


def _gqa(c: Case) -> list[str]:
    """GroupQueryAttention: a first prompt (right padded sequences) or a decoding step after a past of
    each sequence's own length; packed or separate Q, K, V; rotary (interleaved or not) from cos / sin
    caches; local_window_size, softcap, smooth_softmax, scale, attention_bias, head_sink. And
    RotaryEmbedding on (B, S, hidden) or (B, N, S, H), partial rotary dims, position ids as (B, S) or one
    offset."""
    r = c.rng
    _no_double(c)
    ft = _ft(c)
    b = ri(r, 1, 4)
    if r.random() < 0.3:
        h, n, s = int(r.choice([2, 4, 8])), int(r.choice([1, 2, 3])), ri(r, 1, 5)
        rd = int(r.choice([d for d in (2, 4, 8) if d <= h])) if r.random() < 0.4 else 0
        half, positions = (rd or h) // 2, s + ri(r, 0, 6)
        x = c.feed([b, n, s, h] if r.random() < 0.4 else [b, s, n * h])
        if r.random() < 0.5:
            pos = c.feed([b, s], value=r.integers(0, positions, (b, s)).astype(np.int64))
        else:
            pos = c.feed([1], value=np.array([ri(r, 0, positions - s + 1)], np.int64))
        attrs: dict[str, Any] = {"interleaved": ri(r, 0, 2)}
        attrs.update({"num_heads": n} if rd or r.random() < 0.5 else {}, **({"rotary_embedding_dim": rd} if rd else {}))
        return _ms(c, "RotaryEmbedding", [x, pos, *_caches(c, positions, half)], [ft], **attrs)
    h = int(r.choice([8, 16]))  # (onnxruntime's kernel takes heads of a multiple of 8, 16 to rotate)
    kvn = int(r.choice([1, 2]))
    n, decode = kvn * int(r.choice([1, 2, 3])), r.random() < 0.5
    if decode:
        s, past = 1, ri(r, 1, 6)
        lengths = r.integers(1, past + 1, b) if r.random() < 0.5 else np.full(b, past)  # cached tokens
        seqlens, total = lengths, int(lengths.max()) + 1  # (seqlens: + 1 new token - 1)
    else:
        s, past = ri(r, 1, 6), 0
        seqlens = r.integers(0, s, b) if r.random() < 0.3 else np.full(b, s - 1)
        total = s
    attrs = {"num_heads": n, "kv_num_heads": kvn}
    packed = r.random() < 0.3
    q = c.feed([b, s, (n + 2 * kvn) * h] if packed else [b, s, n * h])
    inputs = [q, "", ""] if packed else [q, c.feed([b, s, kvn * h]), c.feed([b, s, kvn * h])]
    inputs += [c.feed([b, kvn, past, h]), c.feed([b, kvn, past, h])] if decode else ["", ""]
    inputs += [c.feed([b], value=seqlens.astype(np.int32)), c.weight(value=np.array(total, np.int32))]
    if h == 16 and r.random() < 0.6:
        attrs.update(do_rotary=1, rotary_interleaved=ri(r, 0, 2))
        rows = total + ri(r, 0, 4)
        inputs += _caches(c, rows, h // 2)
    # a window over a right-padded prompt left out: its padding rows see the keys of a window run past
    # the sequence's end on onnxruntime's float32 path, of one ending at its last token on its other
    # (float16, softcap, smooth_softmax: onnxruntime parts from itself; those rows are no tokens)
    if r.random() < 0.3 and (decode or (seqlens == s - 1).all()):
        attrs["local_window_size"] = ri(r, 1, total + 1)
    for name, p, value in (("softcap", 0.25, float(r.choice([2.0, 30.0]))), ("smooth_softmax", 0.2, 1),
                           ("scale", 0.2, float(r.uniform(0.2, 1.0)))):
        if r.random() < p:
            attrs[name] = value
    extra = []
    if r.random() < 0.2:
        extra = ["", _bias(c, b, n, s, total)]
    if r.random() < 0.15:
        extra = (extra or ["", ""]) + [c.weight([n])]
    if attrs.get("do_rotary") and r.random() < 0.3:  # explicit positions, which rotary alone reads
        pos = seqlens[:, None] if decode else np.arange(s)[None, :] + ri(r, 0, rows - s + 1)
        extra = [c.feed([b, s], value=np.broadcast_to(pos, (b, s)).astype(np.int64)), *extra[1:]]
    if extra:
        inputs += [""] * (9 - len(inputs)) + extra
    outs = [ft, ft, ft]
    if r.random() < 0.2:
        attrs["qk_output"] = ri(r, 1, 3)
        outs.append(ft)
    return _ms(c, "GroupQueryAttention", inputs, outs, **attrs)


# -- quantised products ----------------------------------------------------------------------------

def _codes(c: Case, shape: list[int], kind: type, weights: bool = False) -> np.ndarray:
    """Random codes; int8 ``weights`` in 7 bits, as onnxruntime's quantizer writes them with reduce_range:
    MLAS's AVX2 uint8 x int8 kernel (vpmaddubsw) saturates each pair of products to int16 where the
    full range exceeds it (2 x 255 x 128), onnxruntime's documented caveat, which hal does not copy."""
    info = np.iinfo(kind)
    lo, hi = (-64, 64) if weights and kind == np.int8 else (info.min, int(info.max) + 1)
    return c.rng.integers(lo, hi, shape).astype(kind)


def _qscalar(c: Case, kind: type, spread: int = 20) -> str:
    """A zero point of ``kind`` near the middle of its range."""
    return c.weight(value=np.array((128 if kind == np.uint8 else 0) + ri(c.rng, -spread, spread + 1), kind))


def _scale(c: Case, lo: float = 0.005, hi: float = 0.05, shape: tuple = ()) -> str:
    return c.weight(value=c.rng.uniform(lo, hi, shape).astype(np.float32))


def _sz(c: Case, kind: type) -> list[str]:
    return [_scale(c), _qscalar(c, kind)]


def _nbits(c: Case) -> list[str]:
    """MatMulNBits: 2, 4 and 8 bits, block sizes 16 to 256 (K not their multiple too), no zero points,
    packed uint8 ones or (4-bit) float ones, a bias, accuracy_level 0 or 4, float32 or float16 A."""
    r = c.rng
    _no_double(c)
    bits = int(r.choice([2, 4, 8]))
    block = int(r.choice([16, 32, 64, 128, 256]))
    k, n = ri(r, 1, 80), ri(r, 1, 7)
    blocks = -(-k // block)
    a = c.feed([*dims(r, ri(r, 0, 2), 1, 3), ri(r, 1, 5), k])
    inputs = [a, c.weight(value=r.integers(0, 256, (n, blocks, block * bits // 8)).astype(np.uint8)),
              c.weight(value=r.uniform(0.01, 0.2, n * blocks).astype(c.dtype))]
    z = ri(r, 0, 3)
    if z == 1:
        inputs.append(c.weight(value=r.integers(0, 256, (n, -(-blocks * bits // 8))).astype(np.uint8)))
    elif z == 2 and bits == 4:
        inputs.append(c.weight(value=r.uniform(0, 15, n * blocks).astype(c.dtype)))
    if r.random() < 0.4:
        inputs += [""] * (5 - len(inputs)) + [c.weight([n])]
    return _ms(c, "MatMulNBits", inputs, [_ft(c)], K=k, N=n, bits=bits, block_size=block,
               accuracy_level=int(r.choice([0, 4])))


def _qmatmul(c: Case) -> list[str]:
    """MatMulNBits, DynamicQuantizeMatMul, MatMulIntegerToFloat (per tensor or per column B, zero
    points, bias), QGemm (float or quantised output, per column B, C, transposes, alpha),
    MatMulInteger16 and QAttention (mask, past, unidirectional)."""
    r = c.rng
    k = ri(r, 0, 6)
    if k == 0:
        return _nbits(c)
    c.dtype = np.dtype(np.float32)
    akind, bkind = [np.uint8, np.int8][ri(r, 0, 2)], [np.uint8, np.int8][ri(r, 0, 2)]
    if akind == np.int8 and k == 2:  # (onnxruntime's MatMulIntegerToFloat has no int8 x uint8)
        bkind = np.int8
    m, kk, n = ri(r, 1, 6), ri(r, 1, 12), ri(r, 1, 6)
    cols = (n,) if r.random() < 0.4 else ()
    b = c.weight(value=_codes(c, [kk, n], bkind, weights=True))
    bzero = c.weight(value=(np.full(cols, 0, bkind) + r.integers(-5, 6, cols)).astype(bkind)) if cols else \
        _qscalar(c, bkind, 5)
    if k == 1:
        return _ms(c, "DynamicQuantizeMatMul", [c.feed([*dims(r, ri(r, 0, 2), 1, 3), m, kk], -3, 3), b,
                                                _scale(c, shape=cols), bzero if r.random() < 0.7 else "",
                                                c.weight([n]) if r.random() < 0.5 else ""], [F32])
    if k == 2:
        shape = [*dims(r, ri(r, 0, 2), 1, 3), m, kk]
        a = c.feed(shape, value=_codes(c, shape, akind))
        inputs = [a, b, _scale(c), _scale(c, shape=cols), _qscalar(c, akind) if r.random() < 0.7 else "",
                  bzero if r.random() < 0.7 else "", c.weight([n]) if r.random() < 0.5 else ""]
        while inputs[-1] == "":
            inputs.pop()
        return _ms(c, "MatMulIntegerToFloat", inputs, [F32])
    if k == 3:
        ta, tb = ri(r, 0, 2), ri(r, 0, 2)
        akind = np.uint8  # (onnxruntime's QGemm takes uint8 A)
        a = c.feed([kk, m] if ta else [m, kk], value=_codes(c, [kk, m] if ta else [m, kk], akind))
        bt = c.weight(value=_codes(c, [n, kk] if tb else [kk, n], bkind, weights=True))
        inputs = [a, _scale(c), _qscalar(c, akind), bt, _scale(c, shape=cols), bzero,
                  c.weight(value=r.integers(-500, 500, [[n], [m, n], [1, n]][ri(r, 0, 3)]).astype(np.int32))
                  if r.random() < 0.5 else ""]
        quantised = r.random() < 0.5
        if quantised:
            inputs += [_scale(c, 0.02, 0.5), _qscalar(c, akind)]
        return _ms(c, "QGemm", inputs, [TensorProto.UINT8 if quantised else F32], transA=ta, transB=tb,
                   alpha=float(r.choice([1.0, 0.5])))
    if k == 4:
        a, w = (r.integers(-3000, 3000, shape).astype(np.int16) for shape in ([m, kk], [kk, n]))
        return _ms(c, "MatMulInteger16", [c.feed([m, kk], value=a), c.weight(value=w)], [I32])
    bt, s, heads, h = ri(r, 1, 3), ri(r, 1, 5), int(r.choice([1, 2])), int(r.choice([2, 4]))
    hidden = heads * h
    past = ri(r, 1, 3) if r.random() < 0.3 else 0
    inputs = [c.feed([bt, s, kk], value=_codes(c, [bt, s, kk], np.uint8)),
              c.weight(value=_codes(c, [kk, 3 * hidden], bkind, weights=True)), c.weight([3 * hidden]), _scale(c),
              _scale(c), _mask(c, bt, s, past + s, "e2") if r.random() < 0.5 else "", _qscalar(c, np.uint8),
              _qscalar(c, bkind, 5)]
    attrs: dict[str, Any] = {"num_heads": heads}
    if r.random() < 0.3:
        attrs["unidirectional"] = 1
    if past:
        inputs.append(c.feed([2, bt, heads, past, h]))
    return _ms(c, "QAttention", inputs, [F32, F32] if past else [F32], **attrs)


def _qlinear(c: Case) -> list[str]:
    """The QLinear ops on uint8 and int8 codes: Add and Mul (broadcasting), Sigmoid, LeakyRelu, Softmax
    (its opset's axis), Concat of inputs in their own scales, GlobalAveragePool and AveragePool (NCHW
    or channels last), Where; and the com.microsoft Quantize / DequantizeLinear (per axis)."""
    r = c.rng
    c.dtype = np.dtype(np.float32)
    kind = [np.uint8, np.int8][ri(r, 0, 2)]
    qt = helper.np_dtype_to_tensor_dtype(np.dtype(kind))
    k = ri(r, 0, 9)
    rank = ri(r, 1, 5)
    x = c.feed(s := dims(r, rank, 1, 6), value=_codes(c, s, kind))
    if k <= 1:
        other = [d if r.random() < 0.6 else 1 for d in s][ri(r, 0, rank):]
        y = c.feed(other, value=_codes(c, other, kind))
        return _ms(c, ["QLinearAdd", "QLinearMul"][k], [x, *_sz(c, kind), y, *_sz(c, kind),
                                                        _scale(c, 0.01, [0.2, 4.0][k]), _qscalar(c, kind)], [qt])
    if k == 2:
        return _ms(c, "QLinearSigmoid", [x, _scale(c, 0.01, 0.1), _qscalar(c, kind), _scale(c, 0.002, 0.01),
                                         _qscalar(c, kind, 128 if kind == np.int8 else 0)], [qt])
    if k == 3:
        return _ms(c, "QLinearLeakyRelu", [x, *_sz(c, kind), *_sz(c, kind)], [qt],
                   alpha=float(r.choice([0.01, 0.2, 0.5])))
    if k == 4:
        opset = int(r.choice([11, 13]))
        zero = c.weight(value=np.array(-128 if kind == np.int8 else 0, kind))
        y_scale = c.weight(value=np.float32(1 / 256))
        return _ms(c, "QLinearSoftmax", [x, _scale(c, 0.01, 0.3), _qscalar(c, kind), y_scale, zero], [qt],
                   axis=ri(r, -rank, rank), opset=opset)
    if k == 5:
        ax = ri(r, -rank, rank)
        parts = []
        for _ in range(ri(r, 1, 4)):
            shape = list(s)
            shape[ax] = ri(r, 1, 4)
            same = r.random() < 0.3
            parts += [c.feed(shape, value=_codes(c, shape, kind)), *(["ys", "yz"] if same else _sz(c, kind))]
        ys, yz = _sz(c, kind)
        parts = [ys if p == "ys" else yz if p == "yz" else p for p in parts]
        return _ms(c, "QLinearConcat", [ys, yz, *parts], [qt], axis=ax)
    if k in (6, 7):
        nd = ri(r, 1, 3)
        shape = [ri(r, 1, 3), *dims(r, nd, 1, 7), ri(r, 1, 4)]
        last = r.random() < 0.5
        if not last:
            shape = [shape[0], shape[-1], *shape[1:-1]]
        x = c.feed(shape, value=_codes(c, shape, kind))
        q = [x, *_sz(c, kind), *_sz(c, kind)]
        if k == 6:
            return _ms(c, "QLinearGlobalAveragePool", q, [qt], channels_last=int(last))
        spatial = shape[1:-1] if last else shape[2:]
        ks = [ri(r, 1, min(4, d + 1)) for d in spatial]
        attrs = {"kernel_shape": ks, "strides": [ri(r, 1, 3) for _ in ks], "pads": [ri(r, 0, kk) for kk in ks] * 2,
                 "count_include_pad": ri(r, 0, 2), "ceil_mode": ri(r, 0, 2), "channels_last": int(last)}
        return _ms(c, "QLinearAveragePool", q, [qt], **attrs)
    if k == 8 and r.random() < 0.5:
        other = [d if r.random() < 0.6 else 1 for d in s][ri(r, 0, rank):]
        cond = c.feed(other, value=r.random(other) < 0.5)
        ys = s[ri(r, 0, rank):]
        y = c.feed(ys, value=_codes(c, ys, kind))
        return _ms(c, "QLinearWhere", [cond, x, *_sz(c, kind), y, *_sz(c, kind), *_sz(c, kind)], [qt])
    ax = ri(r, -rank, rank)
    per_axis = r.random() < 0.5
    shape = (s[ax],) if per_axis else ()
    scale = _scale(c, 0.02, 0.2, shape)
    zero = c.weight(value=(np.full(shape, 128 if kind == np.uint8 else 0) + r.integers(-9, 10, shape)).astype(kind))
    f = c.feed(s, -10, 10)
    q = _ms(c, "QuantizeLinear", [f, scale, zero], [qt], axis=ax)[0]
    return _ms(c, "DequantizeLinear", [q, scale, zero], [F32], axis=ax) if r.random() < 0.6 else [q]


# -- tensor ops --------------------------------------------------------------------------------

def _misc(c: Case) -> list[str]:
    """Inverse (batched, float16 to float64), Trilu (k and upper), GridSample (its modes, paddings,
    align_corners), Unique (repeats), CDist (both metrics), Range of each type, ExpandDims, GatherND,
    Pad (constant / reflect / edge), CropAndResize (boxes past the image, both modes)."""
    r = c.rng
    ft = _ft(c)
    k = ri(r, 0, 10)
    if k == 0:
        n, batch = ri(r, 1, 6), dims(r, ri(r, 0, 3), 1, 4)
        m = r.uniform(-1, 1, [*batch, n, n]) + np.eye(n) * float(r.choice([n, 2 * n]))
        return _ms(c, "Inverse", [c.feed(list(m.shape), value=m.astype(c.dtype))], [ft])
    if k == 1:
        s = dims(r, ri(r, 2, 5), 1, 6)
        kk = [c.ints(ri(r, -4, 5))] if r.random() < 0.6 else []
        return _ms(c, "Trilu", [c.feed(s), *kk], [ft], upper=ri(r, 0, 2))
    if k == 2:
        _no_double(c)
        n, ch = ri(r, 1, 3), ri(r, 1, 3)
        x = c.feed([n, ch, ri(r, 1, 6), ri(r, 1, 6)])
        grid = c.feed([n, ri(r, 1, 5), ri(r, 1, 5), 2], -1.3, 1.3)
        return _ms(c, "GridSample", [x, grid], [_ft(c)], mode=str(r.choice(["bilinear", "nearest", "bicubic"])),
                   padding_mode=str(r.choice(["zeros", "border", "reflection"])), align_corners=ri(r, 0, 2))
    if k == 3:
        _no_double(c)
        x = np.round(r.uniform(-3, 3, ri(r, 1, 12))).astype(c.dtype)
        return _ms(c, "Unique", [c.feed(list(x.shape), value=x)], [_ft(c), I64, I64])
    if k == 4:
        c.dtype = np.dtype(np.float32 if c.dtype == np.float16 else c.dtype)
        kk = ri(r, 1, 5)
        return _ms(c, "CDist", [c.feed([ri(r, 1, 6), kk]), c.feed([ri(r, 1, 6), kk])], [_ft(c)],
                   metric=str(r.choice(["sqeuclidean", "euclidean"])))
    if k == 5:
        kind = [np.int32, np.int64, np.float32, np.float64][ri(r, 0, 4)]
        start, step = r.integers(-5, 5), int(r.choice([1, 2, 3, -1, -2]))
        limit = start + step * ri(r, 0, 6) + (0 if r.random() < 0.5 else int(np.sign(step)))
        if np.dtype(kind).kind == "f":
            step = float(step) * float(r.choice([1.0, 0.5, 0.3]))
        vals = [c.weight(value=np.array(v, kind)) for v in (start, limit, step)]
        return _ms(c, "Range", vals if r.random() < 0.7 or step != 1 else vals[:2],
                   [helper.np_dtype_to_tensor_dtype(np.dtype(kind))])
    if k == 6:
        s = dims(r, ri(r, 0, 4), 1, 5)
        return _ms(c, "ExpandDims", [c.feed(s), c.weight(value=np.array(ri(r, -len(s) - 1, len(s) + 1), np.int32))],
                   [ft])
    if k == 7:
        s = dims(r, ri(r, 1, 4), 1, 5)
        last, lead = ri(r, 1, len(s) + 1), dims(r, ri(r, 0, 3), 1, 4)
        idx = np.stack([r.integers(0, d, lead) for d in s[:last]], -1).astype(np.int64)
        return _ms(c, "GatherND", [c.feed(s), c.ints(idx)], [ft])
    if k == 8:
        _no_double(c)  # (onnxruntime's contrib Pad has no float64)
        s = dims(r, ri(r, 1, 4), 1, 6)
        mode = str(r.choice(["constant", "reflect", "edge"]))
        pads = [ri(r, 0, 4) for _ in range(2 * len(s))]
        if mode == "reflect":
            pads = [min(p, s[i % len(s)] - 1) for i, p in enumerate(pads)]
        pads_in = c.ints(pads if r.random() < 0.5 else [pads])
        value = [c.weight(value=np.array([1.5], c.dtype))] if mode == "constant" and r.random() < 0.5 else []
        return _ms(c, "Pad", [c.feed(s), pads_in, *value], [_ft(c)], mode=mode)
    c.dtype = np.dtype(np.float32)  # (onnxruntime's CropAndResize is float32)
    n, ch, hh, ww, boxes = ri(r, 1, 3), ri(r, 1, 3), ri(r, 1, 7), ri(r, 1, 7), ri(r, 1, 4)
    rois = np.sort(r.uniform(-0.2, 1.2, (boxes, 2, 2)), axis=1).reshape(boxes, 4)[:, [0, 2, 1, 3]]
    return _ms(c, "CropAndResize", [c.feed([n, ch, hh, ww]), c.weight(value=rois.astype(np.float32)),
                                    c.weight(value=r.integers(0, n, boxes).astype(np.int32)),
                                    c.weight(value=np.array([ri(r, 1, 5), ri(r, 1, 5)], np.int32))], [F32],
               mode=str(r.choice(["bilinear", "nearest"])), extrapolation_value=float(r.choice([0.0, -1.0])))


FAMILIES: dict[str, Callable[[Case], list[str]]] = {
    "msgelu": _gelu, "msnorm": _norm, "msattn": _attention, "msgqa": _gqa, "msqmatmul": _qmatmul,
    "msqlinear": _qlinear, "msmisc": _misc}
