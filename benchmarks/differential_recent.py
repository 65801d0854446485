"""The differential sweep's families for the newer ai.onnx operators: BitCast and CumProd (opset
26), RMSNormalization and RotaryEmbedding (23), TensorScatter (24), GroupNormalization (18 and 21),
Swish (24) and the Optional ops (15 and 18). onnxruntime 1.32's CPU provider has kernels for BitCast,
CumProd, RMSNormalization, RotaryEmbedding, TensorScatter and the Optional ops; GroupNormalization
and Swish it runs by expanding their function bodies, which hal follows step by step where their
roundings show (GroupNormalization's E[x^2] - E[x]^2 variance in its stash type, a float16 Swish's
sigmoid rounded to float16).

Left out, each where it is drawn: the types onnxruntime's kernels lack (bool, complex, 8- and 4-bit
BitCasts; float16 CumProd; float64 RotaryEmbedding), bfloat16 fed or returned (its Python binding
takes none: BitCast reaches it only in the middle of a model), Swish at opsets 25 and 26 and
SwiGLU (opset 28), which onnxruntime does not expand, invalid writes (a linear TensorScatter past
the cache's end, negative write indices, which onnxruntime refuses in circular mode too), and an
optional made by If at opset 15 (If-13 gives no optionals). Optionals are not graph outputs: what
is compared is OptionalHasElement's flag and the element read back.

Some verdicts stay follows_onnx rather than agree, hal matching onnx's reference step for step:
GroupNormalization's float32 statistics summed in another order than onnxruntime's (a float64 x's
outputs 1e-7 apart, where the float64 tolerance is 1e-9; a float32 group whose variance cancels;
a constant group with epsilon 0, 0 / 0 or a variance of a few ulps by the order), and Swish where
onnxruntime's float32 Sigmoid, an approximation, loses digits in its tails (5e-4 of sigmoid(-9.8),
and below -18 it gives 0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import TensorProto, helper

from benchmarks.differential_draw import Case, dims, ri
from benchmarks.differential_flow import _Body, _seq, _t

#: the same-width types onnxruntime's BitCast takes, by byte width (bfloat16 is never fed or returned:
#: onnxruntime's Python binding takes and gives no bfloat16 arrays)
_WIDTHS = {1: ("int8", "uint8"), 2: ("int16", "uint16", "float16", "bfloat16"),
           4: ("int32", "uint32", "float32"), 8: ("int64", "uint64", "float64")}
_ONNX = {name: TensorProto.BFLOAT16 if name == "bfloat16" else helper.np_dtype_to_tensor_dtype(np.dtype(name))
         for names in _WIDTHS.values() for name in names}


def _awkward(c: Case, shape: list[int], lo: float = -2.0, hi: float = 2.0, p: float = 0.3) -> np.ndarray:
    """Uniform draws in the case's dtype; with probability ``p`` some entries set to 0, -0, +-inf or NaN."""
    r = c.rng
    a = r.uniform(lo, hi, shape).astype(c.dtype)
    if a.size and r.random() < p:
        specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan], a.dtype)
        mask = r.random(a.shape) < 0.25
        a[mask] = r.choice(specials, int(mask.sum()))
    return a


def _floats(c: Case, allowed: tuple[Any, ...]) -> None:
    """The case's dtype kept where ``allowed`` holds it, else float32."""
    if c.dtype not in [np.dtype(d) for d in allowed]:
        c.dtype = np.dtype(np.float32)


# -- BitCast ----------------------------------------------------------------------------------------

def _bits(c: Case, shape: list[int], name: str) -> np.ndarray:
    """Random bit patterns of type ``name``; float types mostly ordinary values with their specials
    (NaN, +-inf, -0, subnormals, the largest finite) mixed in."""
    r = c.rng
    dt = np.dtype(name)
    raw = r.integers(0, 256, [*shape, dt.itemsize], dtype=np.uint8).view(dt).reshape(shape)
    if dt.kind != "f" or r.random() < 0.25:
        return raw
    a = r.uniform(-4, 4, shape).astype(dt)
    fi = np.finfo(dt)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, fi.max, -fi.max, fi.smallest_subnormal, fi.tiny], dt)
    mask = r.random(shape) < 0.3
    a[mask] = r.choice(specials, int(mask.sum()))
    return a


def _bitcast(c: Case) -> list[str]:
    """BitCast (opset 26) between every pair of same-width types onnxruntime's kernel takes: random
    bit patterns, floats with NaN, infinities, -0 and subnormals; ranks 0 to 4 with empty dims, the
    input sometimes transposed or reversed first. A bfloat16 result is read back through a second
    BitCast or a Cast to float32. And the bit tricks exporters write (``_bit_trick``)."""
    r = c.rng
    c.opset = 26
    width = int(r.choice(list(_WIDTHS)))
    src = str(r.choice([t for t in _WIDTHS[width] if t != "bfloat16"]))
    c.dtype = np.dtype(src)
    rank = ri(r, 0, 5)
    shape = dims(r, rank, 0 if r.random() < 0.15 else 1, 5)
    signed = {1: "int8", 2: "int16", 4: "int32", 8: "int64"}[width]
    if np.dtype(src).kind == "f" and r.random() < 0.35:
        return [_bit_trick(c, shape, src, signed)]
    x = c.feed(shape, value=_bits(c, shape, src))
    if rank >= 2 and r.random() < 0.3:
        x = c.op("Transpose", [x], perm=[int(p) for p in r.permutation(rank)])
    elif rank and r.random() < 0.2:  # reversed along an axis
        x = c.op("Slice", [x, c.ints([-1]), c.ints([-(2**62)]), c.ints([ri(r, -rank, rank)]), c.ints([-1])])
    to = str(r.choice([t for t in _WIDTHS[width] if t != src]))
    y = c.op("BitCast", [x], to=_ONNX[to])
    if to == "bfloat16":
        if r.random() < 0.5:
            return [c.op("Cast", [y], to=TensorProto.FLOAT)]
        back = str(r.choice(["int16", "uint16", "float16"]))
        return [c.op("BitCast", [y], to=_ONNX[back])]
    return [y]


def _bit_trick(c: Case, shape: list[int], src: str, signed: str) -> str:
    """A float ``src`` through its bits as the ``signed`` integer of its width: |x| by masking the
    sign bit, -x by flipping it, or (float32) the fast inverse square root, 0x5f3759df - i / 2 and a
    Newton step."""
    r = c.rng
    k = ri(r, 0, 3) if src == "float32" else ri(r, 0, 2)
    if k == 2:  # the fast inverse square root: positive floats (a negative one's i / 2 overflows the Sub)
        x = c.feed(shape, value=r.uniform(0.01, 100, shape).astype(np.float32))
        i = c.op("BitCast", [x], to=TensorProto.INT32)
        i = c.op("Div", [i, c.weight(value=np.array(2, np.int32))])
        i = c.op("Sub", [c.weight(value=np.array(0x5F3759DF, np.int32)), i])
        y = c.op("BitCast", [i], to=TensorProto.FLOAT)
        half_x = c.op("Mul", [x, c.weight(value=0.5)])  # one Newton step: y (1.5 - x / 2 y^2)
        step = c.op("Sub", [c.weight(value=1.5), c.op("Mul", [half_x, c.op("Mul", [y, y])])])
        return c.op("Mul", [y, step])
    x = c.feed(shape, value=_bits(c, shape, src))
    i = c.op("BitCast", [x], to=_ONNX[signed])
    info = np.iinfo(np.dtype(signed))
    mask = c.weight(value=np.array(info.max if k == 0 else info.min, signed))
    i = c.op("BitwiseAnd" if k == 0 else "BitwiseXor", [i, mask])
    return c.op("BitCast", [i], to=_ONNX[src])


# -- CumProd ----------------------------------------------------------------------------------------

def _cumprod(c: Case) -> list[str]:
    """CumProd (opset 26) over float32, float64 and the 32- and 64-bit integers, exclusive and
    reverse, along an axis given as a 0-d or one-element, int32 or int64 tensor (a weight or fed),
    negative or not; ranks 1 to 4 with empty dims, floats with zeros, infinities and NaN and products
    that overflow, integers across their range (products wrap, signed ones too, as onnxruntime's and
    numpy's do). float16 is left out: onnxruntime has no float16 CumProd."""
    r = c.rng
    c.opset = 26
    kind = str(r.choice(["float", "float", "int32", "int64", "uint32", "uint64"]))
    rank = ri(r, 1, 5)
    shape = dims(r, rank, 0 if r.random() < 0.15 else 1, 6)
    if kind == "float":
        _floats(c, (np.float32, np.float64))
        big = 1e20 if r.random() < 0.2 else 1.6  # (products past float32's range: inf, and inf * 0 NaN)
        x = c.feed(shape, value=_awkward(c, shape, -big, big))
    else:
        c.dtype = np.dtype(kind)
        v = r.integers(0 if kind[0] == "u" else -3, 4, shape).astype(kind)
        x = c.feed(shape, value=_values(c, shape) if r.random() < 0.3 else v)  # (past the range: they wrap)
    ax = ri(r, -rank, rank)
    axis_value = np.array(ax if r.random() < 0.7 else [ax], str(r.choice(["int64", "int32"])))
    axis = c.feed(list(axis_value.shape), value=axis_value) if r.random() < 0.3 else c.weight(value=axis_value)
    attrs = {name: ri(r, 0, 2) for name in ("exclusive", "reverse") if r.random() < 0.8}
    return [c.op("CumProd", [x, axis], **attrs)]


# -- RMSNormalization, GroupNormalization, Swish ----------------------------------------------------

def _rmsnorm(c: Case) -> list[str]:
    """RMSNormalization (opset 23): ranks 1 to 4, every axis (negative too), the scale of the
    normalized shape, of a suffix of it, with 1s to broadcast, or of x's own shape; epsilons from 0
    to 1, rows of zeros (0 / 0 with epsilon 0), large values whose squares overflow float16, infinities
    and NaN; float32, float64, float16."""
    r = c.rng
    c.opset = 23
    rank = ri(r, 1, 5)
    shape = dims(r, rank, 1, 6)
    ax = ri(r, -rank, rank)
    scale_to = len(shape) - ax % rank if r.random() < 0.7 else ri(r, 1, rank + 1)
    shape_s = [d if r.random() < 0.8 else 1 for d in shape[rank - scale_to:]]
    big = 400.0 if r.random() < 0.2 else 2.0
    v = _awkward(c, shape, -big, big, p=0.15)
    if r.random() < 0.2:
        v.reshape(-1)[: max(1, v.size // 2)] = 0
    x = c.feed(shape, value=v)
    scale = c.weight(shape_s) if r.random() < 0.7 else c.feed(shape_s)
    attrs: dict[str, Any] = {"axis": ax} if ax != -1 or r.random() < 0.5 else {}
    if r.random() < 0.7:
        attrs["epsilon"] = float(r.choice([1e-5, 1e-6, 0.0, 0.1, 1.0]))
    if r.random() < 0.3:
        attrs["stash_type"] = 1
    return [c.op("RMSNormalization", [x, scale], **attrs)]


def _groupnorm(c: Case) -> list[str]:
    """GroupNormalization: opset 18's form (a scale and bias per group, opsets 18 to 20) and opset
    21's (per channel, stash_type float32 or float64; opsets 21 to 24), both run by onnxruntime
    through their function bodies. (N, C, ...) of rank 2 to 5, every divisor of C as num_groups,
    epsilons down to 0 with constant groups (zero variance), infinities and NaN; scale and bias as
    weights or fed. (Nothing after it: onnx's inference gives its output no type, which the next
    node's inference would need.)"""
    r = c.rng
    rank = ri(r, 2, 6)
    shape = [ri(r, 1, 4), ri(r, 1, 7), *dims(r, rank - 2, 1, 5)]
    ch = shape[1]
    groups = int(r.choice([d for d in range(1, ch + 1) if ch % d == 0]))
    old = r.random() < 0.4
    c.opset = ri(r, 18, 21) if old else ri(r, 21, 25)
    v = _awkward(c, shape, -3, 3, p=0.1)
    if r.random() < 0.2:  # a constant group: zero variance
        v.reshape(shape[0], groups, -1)[0, 0] = v.dtype.type(r.uniform(-1, 1))
    x = c.feed(shape, value=v)
    n = groups if old else ch
    scale, bias = (c.weight([n]), c.weight([n])) if r.random() < 0.7 else (c.feed([n]), c.feed([n]))
    attrs: dict[str, Any] = {"num_groups": groups}
    if r.random() < 0.7:
        attrs["epsilon"] = float(r.choice([1e-5, 1e-6, 0.0, 0.5]))
    if not old and r.random() < 0.3:
        attrs["stash_type"] = int(r.choice([1, 11]))  # (float32 statistics, or float64)
    y = c.op("GroupNormalization", [x, scale, bias], **attrs)
    c.declared[y] = helper.np_dtype_to_tensor_dtype(c.dtype)  # (onnx's inference types no GroupNormalization)
    return [y]


def _swish(c: Case) -> list[str]:
    """Swish (opset 24; onnxruntime runs its function body, x * Sigmoid(alpha x)) with alphas
    negative, zero, fractional and large, on values that saturate the sigmoid both ways, infinities,
    NaN and -0; float32, float64, float16. And SwiGLU as written before opset 28: the two halves of a
    Split, Swish(a) * b (SwiGLU itself is opset 28, whose function body onnxruntime cannot expand)."""
    r = c.rng
    c.opset = 24  # (onnxruntime finds no Swish at opsets 25 and 26: it expands it at 24 alone)
    rank = ri(r, 0, 4)
    shape = dims(r, rank, 0 if r.random() < 0.1 else 1, 6)
    wide = float(r.choice([3.0, 20.0, 120.0]))
    attrs = {"alpha": float(r.choice([1.0, 0.5, 1.702, -1.0, 0.0, 4.0]))} if r.random() < 0.7 else {}
    if rank and r.random() < 0.35:
        ax = ri(r, -rank, rank)
        shape[ax % rank] *= 2
        a, b = c.op("Split", [c.feed(shape, value=_awkward(c, shape, -wide, wide))], outputs=2, axis=ax, num_outputs=2)
        return [c.op("Mul", [c.op("Swish", [a], **attrs), b])]
    return [c.op("Swish", [c.feed(shape, value=_awkward(c, shape, -wide, wide))], **attrs)]


# -- RotaryEmbedding and TensorScatter --------------------------------------------------------------

def _rotary(c: Case) -> list[str]:
    """RotaryEmbedding (opset 23) on (B, N, S, H) or (B, S, N * H) with num_heads, halves or
    interleaved pairs, the whole head or a partial rotary_embedding_dim; caches (positions, d / 2)
    read through position_ids (repeated, out of order) or per token (B, S, d / 2) without them; real
    angles or arbitrary cos / sin values, a prompt of one token or several; float32 and float16
    (float64 left out: onnxruntime's kernel has none)."""
    r = c.rng
    c.opset = 23
    _floats(c, (np.float32, np.float16))
    b, n, s, h = ri(r, 1, 4), ri(r, 1, 4), ri(r, 1, 6), 2 * ri(r, 1, 5)
    rd = 2 * ri(r, 1, h // 2 + 1) if r.random() < 0.4 else 0
    half = (rd or h) // 2
    four = r.random() < 0.5
    xs = [b, n, s, h] if four else [b, s, n * h]
    x = c.feed(xs, value=_awkward(c, xs, p=0.1))
    attrs: dict[str, Any] = {"interleaved": ri(r, 0, 2)} if r.random() < 0.8 else {}
    if not four or r.random() < 0.3:
        attrs["num_heads"] = n
    if rd or r.random() < 0.2:
        attrs["rotary_embedding_dim"] = rd or h
    if r.random() < 0.6:
        positions = s + ri(r, 0, 6)
        pos = c.feed([b, s], value=r.integers(0, positions, (b, s)).astype(np.int64))
        if r.random() < 0.5:
            angle = np.arange(positions)[:, None] * (10000.0 ** (-np.arange(half) / half))[None, :]
            caches = [np.cos(angle), np.sin(angle)]
        else:
            caches = [r.uniform(-1.5, 1.5, (positions, half)) for _ in range(2)]
        inputs = [x, *(c.weight(value=a.astype(c.dtype)) for a in caches), pos]
    else:
        inputs = [x, c.feed([b, s, half], lo=-1, hi=1), c.feed([b, s, half], lo=-1, hi=1)]
    return [c.op("RotaryEmbedding", inputs, **attrs)]


_SCATTER_TYPES = ("float32", "float64", "float16", "int8", "uint8", "int16", "uint16", "int32", "uint32",
                  "int64", "uint64", "bool")


def _tscatter(c: Case) -> list[str]:
    """TensorScatter (opset 24), the KV-cache write: caches of rank 2 to 5 in every type onnxruntime's
    kernel takes, the sequence axis anywhere but the batch (the default -2, or named, negative or
    not), updates of 0 up to max_sequence_length tokens, per-row write_indices or none; linear (the
    writes fitting the cache) or circular (wrapping); sometimes a second write after the first, as
    a prefill and a decoding step."""
    r = c.rng
    c.opset = 24
    c.dtype = np.dtype(str(r.choice(_SCATTER_TYPES)))
    rank = ri(r, 2, 6)
    shape = [ri(r, 1, 4), *dims(r, rank - 1, 1, 5)]
    ax = ri(r, 1, rank)
    attrs: dict[str, Any] = {}
    if ax != rank - 2 or r.random() < 0.5:
        attrs["axis"] = ax if r.random() < 0.5 else ax - rank
    circular = r.random() < 0.4
    if circular or r.random() < 0.3:
        attrs["mode"] = "circular" if circular else "linear"
    cache = c.feed(shape, value=_values(c, shape))
    out = cache
    for _ in range(1 if r.random() < 0.7 else 2):
        max_len = shape[ax]
        seq = ri(r, 0 if r.random() < 0.1 else 1, max_len + 1)
        upd = [*shape[:ax], seq, *shape[ax + 1:]]
        inputs = [out, c.feed(upd, value=_values(c, upd))]
        if r.random() < 0.75:
            # (a linear write past the end is invalid; a negative index onnxruntime refuses, circular too)
            hi = 3 * max_len if circular else max_len - seq + 1
            inputs.append(c.feed([shape[0]], value=r.integers(0, hi, shape[0]).astype(np.int64)))
        out = c.op("TensorScatter", inputs, **attrs)
    return [out]


def _values(c: Case, shape: list[int]) -> np.ndarray:
    """Values of the case's type: booleans, integers across the type's range, strings (object),
    floats with specials."""
    r = c.rng
    if c.dtype == np.object_:
        return np.asarray(r.choice(["", "a", "bc", "déjà", "x y"], shape)).astype(object)
    if c.dtype == np.bool_:
        return np.asarray(r.random(shape) < 0.5)
    if c.dtype.kind in "iu":
        info = np.iinfo(c.dtype)
        return np.asarray(r.integers(info.min, info.max, shape, dtype=c.dtype, endpoint=True))
    return _awkward(c, shape)


# -- Optional ---------------------------------------------------------------------------------------

def _optional(c: Case) -> list[str]:
    """Optional, OptionalHasElement and OptionalGetElement (opsets 15 to 17, and 18's forms that take
    a plain tensor or sequence, or no input at all): optionals of a tensor (float, integer, bool or
    string) or of a sequence of two, full or empty (Optional with its type alone), or full or empty
    by a fed flag (an If whose branches give one each); the element read back where it is known to
    be there, else under an If on OptionalHasElement that reads it only in the branch where it is
    (the other gives a fed default), as exporters guard optional arguments."""
    r = c.rng
    c.opset = ri(r, 15, 18) if r.random() < 0.4 else ri(r, 18, 25)
    if r.random() < 0.3:
        c.dtype = np.dtype(str(r.choice(["int32", "int64", "bool", "object"])))  # (object: strings)
    elem = helper.np_dtype_to_tensor_dtype(c.dtype)
    s = dims(r, ri(r, 0, 4), 0 if r.random() < 0.1 else 1, 5)
    x = c.feed(s, value=_values(c, s))
    seq = r.random() < 0.3
    if seq:
        held, t = c.op("SequenceConstruct", [x, c.feed(s, value=_values(c, s))]), _seq(elem, s)
    else:
        held, t = x, _t(elem, s)
    k = ri(r, 0, 5)
    if k == 0:
        opt, known = c.op("Optional", [held]), True
    elif k == 1:
        opt, known = c.op("Optional", [], type=t), False
    elif k == 2 and c.opset >= 16:  # full or empty by a fed flag (If-16 on: If-13 gives no optionals)
        flag = c.feed([], value=np.array(r.random() < 0.5))
        ot = helper.make_optional_type_proto(t)
        opt = c.op("If", [flag], then_branch=_branch(c, lambda: c.op("Optional", [held]), ot),
                   else_branch=_branch(c, lambda: c.op("Optional", [], type=t), ot))
        known = False
    elif c.opset >= 18 and k == 3:  # a plain tensor or sequence where an optional is taken
        opt, known = held, True
    else:  # no input (opset 18), or an empty optional before it
        opt, known = ("" if c.opset >= 18 else c.op("Optional", [], type=t)), False
    has = c.op("OptionalHasElement", [opt])
    if known:
        return [has, _read(c, c.op("OptionalGetElement", [opt]), seq, s)]
    if not opt:
        return [has]
    fallback = c.feed(s, value=_values(c, s))
    then = _branch(c, lambda: _read(c, c.op("OptionalGetElement", [opt]), seq, s), _t(elem, None))
    other = _branch(c, lambda: c.op("Identity", [fallback]), _t(elem, None))
    got = c.op("If", [has], then_branch=then, else_branch=other)
    return [has, got]


def _branch(c: Case, body: Callable[[], str], t: Any) -> Any:
    """An If branch of no inputs: ``body``'s nodes, its one output of type ``t``."""
    b = _Body(c, [])
    return b.graph([(body(), t)])


def _read(c: Case, v: str, seq: bool, s: list[int]) -> str:
    """The optional's element ``v`` (of tensors of shape ``s``) as a tensor: a sequence's concatenated
    or stacked (0-d ones stacked), a tensor through Identity (a graph output must be a node's)."""
    if seq:
        return c.op("ConcatFromSequence", [v], axis=0, new_axis=int(not s or c.rng.random() < 0.2))
    return c.op("Identity", [v])


FAMILIES: dict[str, Callable[[Case], list[str]]] = {
    "bitcast": _bitcast, "cumprod": _cumprod, "rmsnorm": _rmsnorm, "groupnorm": _groupnorm, "swish": _swish,
    "rotary": _rotary, "tscatter": _tscatter, "optional": _optional}
