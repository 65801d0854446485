"""The differential sweep's families for the rest of onnxruntime's com.microsoft operators that hal
implements and onnxruntime 1.32's CPU provider runs: GatherBlockQuantized (packed 2/4/8-bit uint8,
int4 / uint4, FP8 and FP4 tables), MatMulBnb4 (FP4 / NF4 weights), ScaledSiLU, MoE and QMoE, the text
ops skl2onnx writes (Tokenizer, MurmurHash3), QEmbedLayerNormalization and DynamicQuantizeLSTM.

onnx's reference has no com.microsoft kernels, so onnxruntime is the only peer: each draw is a form
its CPU provider runs. Left out, each where it is drawn: what onnxruntime's CPU kernels refuse or
fail at run time (MoE's FC3 and unfused / concatenated SwiGLU, QMoE's FP4 / FP8 / INT3 profiles and
prepacked weights: hal computes some of these after the schema, with no peer to judge them),
MatMulBnb4's transB=0 (onnxruntime reads B transposed whatever it says), bfloat16 (the judge has no
tolerance for it), 1-D GatherBlockQuantized tables (onnxruntime refuses them), DynamicQuantizeLSTM's
zero points other than the ones onnxruntime accepts and batches of more than one row (its result
depends on its thread count there), and the configurations where onnxruntime's integer products
depend on the machine (8-bit weights past 7 bits, whose uint8 x int8 sums saturate on x86 CPUs
without VNNI).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
from onnx import TensorProto

from benchmarks.differential_contrib import _ft, _ms, _no_double
from benchmarks.differential_draw import Case, dims, ri

F32, I32, U32, STR = TensorProto.FLOAT, TensorProto.INT32, TensorProto.UINT32, TensorProto.STRING



# -- GatherBlockQuantized -----------------------------------------------------------------------------

_FP_TABLES = (ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz, ml_dtypes.float8_e5m2, ml_dtypes.float8_e5m2fnuz,
              ml_dtypes.float4_e2m1fn)


def _indices(c: Case, size: int) -> str:
    """int32 / int64 indices of rank 0 to 2 into an axis of ``size``, negative ones and now and then one
    out of range (onnxruntime writes that slice's zeros)."""
    r = c.rng
    shape = dims(r, ri(r, 0, 3), 0 if r.random() < 0.1 else 1, 4)  # (an empty one now and then)
    idx = r.integers(-size, size, shape)
    if r.random() < 0.2:
        idx = np.where(r.random(shape) < 0.3, r.choice([size, size + 3, -size - 1]), idx)
    return c.weight(value=np.asarray(idx, [np.int32, np.int64][ri(r, 0, 2)]))


def _gbq(c: Case) -> list[str]:
    """GatherBlockQuantized: uint8 tables of 2-, 4- or 8-bit codes packed along the last axis (gather
    axis 0), int4 / uint4 tables along any two axes (the same one too), with and without zero
    points; FP8 / FP4 tables with block_size 0 (one block a row) and scales of 1 on other axes
    (broadcast); float32 or float16 scales (the output's type); indices of rank 0 to 2, negative and
    out of range; block sizes 16 to 64 over axes not a whole number of blocks."""
    r = c.rng
    _no_double(c)
    kind = ri(r, 0, 3)
    rank = ri(r, 2, 4)  # (onnxruntime refuses a 1-D table: "data tensor must have rank > 1")
    shape = dims(r, rank, 1, 5)
    block = int(r.choice([16, 32, 64]))
    if kind == 0:  # packed uint8
        bits = int(r.choice([2, 4, 8]))
        g_axis, q_axis = 0, int(r.choice([rank - 1, -1]))
        shape[-1] = ri(r, 1, 48) * bits // 8 or 1
        data = c.weight(value=r.integers(0, 256, shape).astype(np.uint8))
        logical = [*shape[:-1], shape[-1] * 8 // bits]
    else:
        bits = 4
        g_axis, q_axis = ri(r, -rank, rank), ri(r, -rank, rank)
        shape[q_axis] = ri(r, 1, 70)
        logical = list(shape)
        if kind == 1:
            table = [ml_dtypes.int4, ml_dtypes.uint4][ri(r, 0, 2)]
            lo, hi = (-8, 8) if table == ml_dtypes.int4 else (0, 16)
            data = c.weight(value=r.integers(lo, hi, shape).astype(table))
        else:
            table = _FP_TABLES[ri(r, 0, len(_FP_TABLES))]
            block = int(r.choice([0, 16, 32]))
            v = r.standard_normal(shape) * float(r.choice([1.0, 4.0, 100.0]))
            data = c.weight(value=v.astype(table))
    blocks = -(-logical[q_axis] // block) if block else 1
    scale_shape = list(logical)
    scale_shape[q_axis] = blocks
    if kind == 2:  # FP tables: a scale of 1 on another axis is broadcast along it
        scale_shape = [d if i == q_axis % rank or r.random() < 0.6 else 1 for i, d in enumerate(scale_shape)]
    scale_type = [np.float32, np.float16][ri(r, 0, 2)]
    scale = r.uniform(0.01, 0.5, scale_shape) * np.where(r.random(scale_shape) < 0.1, -1, 1)
    if r.random() < 0.1:  # a scale of NaN, inf or 0, or one that takes a float16 output past its range
        scale = np.where(r.random(scale_shape) < 0.3, r.choice([np.nan, np.inf, 0.0, 3e4]), scale)
    inputs = [data, _indices(c, logical[g_axis]), c.weight(value=scale.astype(scale_type))]
    if kind != 2 and r.random() < 0.5:
        if kind == 0:
            per = 8 // bits
            inputs.append(c.weight(value=r.integers(0, 256, [*scale_shape[:-1], -(-blocks // per)]).astype(np.uint8)))
        else:
            inputs.append(c.weight(value=r.integers(lo, hi, scale_shape).astype(table)))
    c.dtype = np.dtype(scale_type)
    return _ms(c, "GatherBlockQuantized", inputs, [_ft(c)], gather_axis=g_axis, quantize_axis=q_axis,
               block_size=block, bits=bits)


# -- MatMulBnb4 and ScaledSiLU ------------------------------------------------------------------------

def _bnb4(c: Case) -> list[str]:
    """MatMulBnb4: A (..., K) of rank 1 to 4, float32 or float16, times FP4 or NF4 codes (random
    bytes, N x K odd too) with their blocks' absmax (some zero or negative), block sizes 16 to 256.
    transB=0 is left out: onnxruntime's CPU kernel reads B transposed whatever transB says, against
    its schema's A @ dequant_B (hal refuses it)."""
    r = c.rng
    _no_double(c)
    k, n = ri(r, 1, 40), ri(r, 1, 24)
    block = int(r.choice([16, 32, 64, 128, 256]))
    count = n * k
    absmax = r.uniform(0.1, 3, -(-count // block)) * np.where(r.random(-(-count // block)) < 0.15, -1, 1)
    absmax[r.random(absmax.shape) < 0.1] = 0
    lead = dims(r, ri(r, 0, 3), 0 if r.random() < 0.1 else 1, 4)
    v = r.uniform(-2, 2, [*lead, k])
    if r.random() < 0.1:
        v = np.where(r.random(v.shape) < 0.1, r.choice([np.nan, np.inf, -np.inf]), v)
    a = c.feed([*lead, k], value=v.astype(c.dtype))
    inputs = [a, c.weight(value=r.integers(0, 256, (count + 1) // 2).astype(np.uint8)),
              c.weight(value=absmax.astype(c.dtype))]
    return _ms(c, "MatMulBnb4", inputs, [_ft(c)], K=k, N=n, block_size=block, quant_type=ri(r, 0, 2))


def _silu(c: Case) -> list[str]:
    """ScaledSiLU: X of rank 0 to 4, float32 or float16, with awkward values (0, -0, +-inf, NaN, large
    magnitudes) scaled by ``alpha`` or by the scalar ``scale`` input (float32 or float16, which
    overrides alpha): each step rounded to X's type."""
    r = c.rng
    _no_double(c)
    shape = dims(r, ri(r, 0, 5), 0 if r.random() < 0.05 else 1, 6)
    v = r.uniform(-12, 12, shape) * float(r.choice([1.0, 1.0, 200.0]))
    if r.random() < 0.3:
        v = np.where(r.random(shape) < 0.2, r.choice([0.0, -0.0, np.inf, -np.inf, np.nan, 1e5, -1e5]), v)
    with np.errstate(over="ignore"):  # (float16: 1e5 is inf)
        x = c.feed(shape, value=np.asarray(v).astype(c.dtype))
    alpha = float(r.choice([1.0, 1.702, 0.5, -1.25, 0.0, 30.0]))
    inputs = [x]
    if r.random() < 0.5:
        kind = [np.float32, np.float16][ri(r, 0, 2)]
        inputs.append(c.weight(value=np.array(r.choice([1.0, 0.25, -2.0, 1.702]), kind)))
    return _ms(c, "ScaledSiLU", inputs, [_ft(c)], alpha=alpha)


# -- MoE and QMoE -------------------------------------------------------------------------------------

_ACTS = ("relu", "gelu", "silu", "identity", "swiglu")


def _moe_common(c: Case) -> tuple[list[int], int, int, int, dict[str, Any]]:
    """The token shape (2-D packed or 3-D), experts, k and the routing / activation attributes."""
    r = c.rng
    tokens = [ri(r, 1, 7)] if r.random() < 0.5 else dims(r, 2, 1, 4)
    if r.random() < 0.05:  # no tokens
        tokens[-1] = 0
    experts = ri(r, 1, 7)
    k = ri(r, 1, experts + 1)
    act = str(r.choice(_ACTS))
    attrs: dict[str, Any] = {"k": k, "activation_type": act, "normalize_routing_weights": ri(r, 0, 2)}
    if k == 2 and r.random() < 0.3:
        attrs["use_sparse_mixer"] = 1
    if act == "swiglu":  # (fused and interleaved: onnxruntime's CPU kernels refuse 0 and 2)
        attrs["swiglu_fusion"] = 1
        if r.random() < 0.6:
            attrs.update(activation_alpha=float(r.choice([1.0, 1.702])), activation_beta=float(r.choice([0.0, 1.0])))
        if r.random() < 0.5:
            attrs["swiglu_limit"] = float(r.choice([7.0, 0.5]))
    return tokens, experts, k, int(np.prod(tokens)), attrs


def _router(c: Case, rows: int, experts: int) -> str:
    """The router's logits: normal draws, or whole numbers (ties between experts)."""
    r = c.rng
    v = r.standard_normal((rows, experts)) * 2
    return c.feed([rows, experts], value=(np.round(v) if r.random() < 0.3 else v).astype(c.dtype))


def _moe(c: Case) -> list[str]:
    """MoE (float32, float16) and QMoE (float32, float16; 2-, 4- and 8-bit codes, per row or in blocks
    of 16 / 32 (a last partial block too), packed zero points, accuracy_level 0 / 4, router_weights):
    2-D or 3-D tokens (none too), router logits with ties, 1 to 6 experts, top k, normalised
    routing, the sparse mixer at k = 2, the five activations of onnxruntime's CPU kernels (swiglu
    fused and interleaved, with alpha, beta and a limit), biases. FC3 is left out: onnxruntime's CPU
    kernels fail at run time (hal computes it as the CUDA kernel does, judged by
    tests/kernels/test_contrib_moe.py). Where a projection quantizes its input to int8 (8-bit blocks,
    4-bit ones at accuracy_level 4), a 1-ulp difference upstream can move one code across a rounding
    boundary, rarely (one draw of 3000 with seed 0, a 0.2% difference)."""
    r = c.rng
    _no_double(c)
    tokens, experts, _, rows, attrs = _moe_common(c)
    swiglu = attrs["activation_type"] == "swiglu"
    if r.random() < 0.4:
        hidden, inter = ri(r, 1, 9), ri(r, 1, 9)
        scale = float(r.choice([0.5, 2.0]))
        x = c.feed([*tokens, hidden], -2 * scale, 2 * scale)
        router = _router(c, rows, experts)
        rows1 = 2 * inter if swiglu else inter
        bias = r.random() < 0.5
        inputs = [x, router, c.weight([experts, rows1, hidden]), c.weight([experts, rows1]) if bias else "",
                  c.weight([experts, hidden, inter]), c.weight([experts, hidden]) if bias and r.random() < 0.7 else ""]
        return _ms(c, "MoE", inputs, [_ft(c)], **attrs)
    bits = int(r.choice([2, 4, 8]))
    block = int(r.choice([0, 16, 32]))
    hidden, inter = (int(r.choice([16, 32, 48])), int(r.choice([16, 24, 32]))) if block else (ri(r, 1, 5) * 4,
                                                                                                ri(r, 1, 5) * 4)
    x = c.feed([*tokens, hidden])
    router = _router(c, rows, experts)
    rows1 = 2 * inter if swiglu else inter
    scale = float(r.choice([0.02, 0.1])) * (0.5 if c.dtype == np.float16 else 1.0)

    def projection(out: int, cols: int) -> list[str]:
        codes = r.integers(0, 256, (experts, out, cols * bits // 8)).astype(np.uint8)
        per = (experts, out, -(-cols // block)) if block else (experts, out)
        scales = (r.uniform(0.2, 1.0, per) * scale).astype(c.dtype)
        zeros = ""
        if r.random() < 0.4:
            zp = (experts, out, -(-per[2] * bits // 8)) if block else (experts, -(-out * bits // 8))
            zeros = c.weight(value=r.integers(0, 256, zp).astype(np.uint8))
        return [c.weight(value=codes), c.weight(value=scales), zeros]

    w1, s1, z1 = projection(rows1, hidden)
    w2, s2, z2 = projection(hidden, inter)
    bias = r.random() < 0.5
    inputs = [x, router, w1, s1, c.weight([experts, rows1]) if bias else "", w2, s2,
              c.weight([experts, hidden]) if bias else "", "", "", "", z1, z2, ""]
    if r.random() < 0.3:
        inputs.append(c.weight(value=r.uniform(-0.2, 1, (rows, experts)).astype(c.dtype)))
    while not inputs[-1]:
        inputs.pop()
    attrs.update(expert_weight_bits=bits, accuracy_level=int(r.choice([0, 4])))
    if block:
        attrs["block_size"] = block
    return _ms(c, "QMoE", inputs, [_ft(c)], **attrs)


# -- Tokenizer and MurmurHash3 ------------------------------------------------------------------------

_WORDS = ("hello", "World", "a", "", " ", "  two  spaces ", "x,y;z", "naïve café", "日本語 テキスト", "tab\there",
          "new\nline", "3.14 apples", "UPPER lower", "--", "ab12cd", "emoji 😀 ok", "end.")
_SEPARATORS = ((" ",), (",", ";"), ("\\s+",), ("[.,;]",), (" ", "a"), ("",), ("\\d",), ("e",), ("^h",), ("o$",),
               ("a*",), ("l+", "o"), ("(ab|a)",), ("\\b",))
_EXPRESSIONS = ("[a-zA-Z]+", "\\w+", "[a-z]+|[0-9]+", ".", "\\S+", "[^ ]{2}", "\\p{L}+", "a*", "^\\w+", "\\w+$",
                "(a|ab)(c|bcd)?", "[0-9]*\\.?[0-9]+", "\\b\\w")


def _strings(c: Case, shape: list[int]) -> np.ndarray:
    r = c.rng
    words = [str(r.choice(_WORDS)) + (str(r.choice(_WORDS)) if r.random() < 0.3 else "")
             for _ in range(int(np.prod(shape)))]
    return np.array(words, dtype=object).reshape(shape)


def _text(c: Case) -> list[str]:
    """Tokenizer on [C] or [N, C] strings (ASCII and not, empty ones, ones all separator): by
    separators (one or two RE2 patterns, [""] for characters) or by a token expression, with and
    without marks, mincharnum 1 to 3, an empty or a visible pad; MurmurHash3 of int32, uint32, int64,
    uint64, float32, float64 (-0, NaN, inf) and string tensors, positive or signed, seeds up to 2^32 - 1."""
    r = c.rng
    if r.random() < 0.5:
        shape = [ri(r, 1, 5)] if r.random() < 0.5 else dims(r, 2, 1, 4)
        if r.random() < 0.05:  # [0], [N, 0], [0, C]
            shape[ri(r, 0, len(shape))] = 0
        x = c.feed(shape, value=_strings(c, shape))
        attrs: dict[str, Any] = {"mark": ri(r, 0, 2), "pad_value": str(r.choice(["#", ""])),
                                 "mincharnum": ri(r, 1, 4)}
        if r.random() < 0.5:
            attrs["separators"] = list(_SEPARATORS[ri(r, 0, len(_SEPARATORS))])
        else:
            attrs["tokenexp"] = str(r.choice(_EXPRESSIONS))
        if attrs.get("separators") == [""] or attrs.get("tokenexp") == ".":
            attrs["mincharnum"] = 1  # (character tokenization: onnxruntime takes no other)
        return _ms(c, "Tokenizer", [x], [STR], **attrs)
    shape = dims(r, ri(r, 0, 3), 0 if r.random() < 0.05 else 1, 5)
    kind = [np.int32, np.uint32, np.int64, np.uint64, np.float32, np.float64, object][ri(r, 0, 7)]
    if kind is object:
        value = _strings(c, shape)
    elif np.dtype(kind).kind == "f":
        value = np.asarray(r.standard_normal(shape) * 100).astype(kind)
        value[r.random(shape) < 0.2] = r.choice([0.0, -0.0, np.nan, np.inf, -np.inf, 1.0])
    else:
        info = np.iinfo(kind)
        value = r.integers(info.min, info.max, shape, dtype=kind, endpoint=True)
    positive = ri(r, 0, 2)
    seed = int(r.choice([0, 1, 42, 2**31 - 1, 2**32 - 1, ri(r, 0, 2**31)]))
    return _ms(c, "MurmurHash3", [c.feed(shape, value=np.asarray(value))], [U32 if positive else I32],
               positive=positive, seed=seed)


# -- QEmbedLayerNormalization and DynamicQuantizeLSTM -------------------------------------------------

def _qembed(c: Case) -> list[str]:
    """QEmbedLayerNormalization: uint8 or int8 tables (all of one type, as onnxruntime reads them),
    word and position tables and optionally the segment ones, gamma and beta quantized, each with its
    scale and zero point; a mask of 0s, 1s and 2s (a 2 is not counted) or none; epsilon."""
    r = c.rng
    c.dtype = np.dtype(np.float32)
    b, s, h = ri(r, 1, 4), ri(r, 1, 7), ri(r, 1, 20)
    vocab, positions, segs = ri(r, 2, 12), s + ri(r, 0, 3), ri(r, 2, 4)
    kind = [np.uint8, np.int8][ri(r, 0, 2)]
    info = np.iinfo(kind)

    def table(shape: list[int]) -> list[str]:
        codes = r.integers(info.min, info.max, shape, endpoint=True).astype(kind)
        zero = np.array(r.integers(info.min // 2, info.max // 2 + 1) if r.random() < 0.7 else 0, kind)
        return [c.weight(value=codes), c.weight(value=np.array(r.uniform(0.002, 0.08), np.float32)),
                c.weight(value=zero)]

    segments = r.random() < 0.6
    word, pos, gamma, beta = table([vocab, h]), table([positions, h]), table([h]), table([h])
    seg = table([segs, h]) if segments else ["", "", ""]
    ids = c.feed([b, s], value=r.integers(0, vocab, (b, s)).astype(np.int32))
    seg_ids = c.feed([b, s], value=r.integers(0, segs, (b, s)).astype(np.int32)) if segments else ""
    mask = c.feed([b, s], value=r.choice([0, 1, 1, 1, 2], (b, s)).astype(np.int32)) if r.random() < 0.6 else ""
    inputs = [ids, seg_ids, word[0], pos[0], seg[0], gamma[0], beta[0], mask, word[1], pos[1], seg[1], gamma[1],
              beta[1], word[2], pos[2], seg[2], gamma[2], beta[2]]
    return _ms(c, "QEmbedLayerNormalization", inputs, [F32, I32], epsilon=float(r.choice([1e-12, 1e-5, 0.1])))


#: RNN activations (name, alpha if it takes one, beta): the gate's f squashing into [0, 1], the cell's
#: g and h bounded. Unbounded ones (Relu, Softplus, Affine, Elu ...) let the state grow past float32,
#: where onnxruntime's dynamic quantization of an infinite range turns the row NaN
_GATE_ACTS = (("Sigmoid", [], []), ("HardSigmoid", [0.3], [0.4]))
_CELL_ACTS = (("Tanh", [], []), ("Softsign", [], []), ("ScaledTanh", [1.5], [0.7]), ("HardSigmoid", [0.3], [0.4]))


def _qlstm(c: Case) -> list[str]:
    """DynamicQuantizeLSTM: forward, reverse or bidirectional; int8 codes of 7 bits (onnxruntime's
    uint8 x int8 sums saturate past them on x86 without VNNI) or uint8 ones, with a scale per
    direction or per gate column and a zero point (0 for int8 codes, one value for every direction
    and column for uint8 ones: onnxruntime refuses others when it runs); the bias, sequence lengths (0 too), initial
    states, peepholes, clip, input_forget and the activations (with their alphas and betas) each
    drawn or not. One batch row: with more,
    onnxruntime quantizes each step's hidden state row by row when it splits the batch over its
    threads and the whole batch at once on one thread (the sweep's), so its result depends on its
    thread count (hal follows the split, as tests/kernels/test_contrib_quant_ops.py checks with 8)."""
    r = c.rng
    c.dtype = np.dtype(np.float32)
    steps, batch, size, hs = ri(r, 1, 6), 1, ri(r, 1, 7), ri(r, 1, 7)
    direction = str(r.choice(["forward", "reverse", "bidirectional"]))
    dirs = 2 if direction == "bidirectional" else 1
    kind = [np.int8, np.uint8][ri(r, 0, 2)]
    lo, hi = (-64, 64) if kind == np.int8 else (0, 128)
    per_column = r.random() < 0.5
    qshape = (dirs, 4 * hs) if per_column else (dirs,)

    def weights(rows: int) -> list[str]:
        zero = np.full(qshape, 0 if kind == np.int8 else ri(r, 60, 68))
        return [c.weight(value=r.integers(lo, hi, (dirs, rows, 4 * hs)).astype(kind)),
                c.weight(value=r.uniform(0.005, 0.03, qshape).astype(np.float32)),
                c.weight(value=zero.astype(kind))]

    w, r_ = weights(size), weights(hs)
    x = c.feed([steps, batch, size])
    opt = [c.weight([dirs, 8 * hs], scale=0.2) if r.random() < 0.7 else "",
           c.weight(value=r.integers(0, steps + 1, batch).astype(np.int32)) if r.random() < 0.5 else "",
           c.feed([dirs, batch, hs]) if r.random() < 0.4 else "", c.feed([dirs, batch, hs]) if r.random() < 0.4 else "",
           c.weight([dirs, 3 * hs], scale=0.2) if r.random() < 0.3 else ""]
    attrs: dict[str, Any] = {"hidden_size": hs, "direction": direction}
    if r.random() < 0.3:
        attrs["clip"] = float(r.choice([0.5, 2.0]))
    if r.random() < 0.2:
        attrs["input_forget"] = 1
    if r.random() < 0.3:  # f, g, h per direction, with their alphas and betas where they take them
        acts = [table[ri(r, 0, len(table))] for _ in range(dirs) for table in (_GATE_ACTS, _CELL_ACTS, _CELL_ACTS)]
        attrs["activations"] = [a for a, _, _ in acts]
        alphas = [v for _, al, _ in acts for v in al]
        betas = [v for _, _, be in acts for v in be]
        if alphas:
            attrs["activation_alpha"] = alphas
        if betas:
            attrs["activation_beta"] = betas
    outs = [[F32, F32, F32], [F32], [None, F32, F32], [None, None, F32]][ri(r, 0, 4)]
    return _ms(c, "DynamicQuantizeLSTM", [x, w[0], r_[0], *opt, w[1], w[2], r_[1], r_[2]], outs, **attrs)


FAMILIES: dict[str, Callable[[Case], list[str]]] = {
    "msgbq": _gbq, "msbnb4": _bnb4, "mssilu": _silu, "msmoe": _moe, "mstext": _text, "msqembed": _qembed,
    "msqlstm": _qlstm}
