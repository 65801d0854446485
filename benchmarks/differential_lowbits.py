"""The differential sweep's low-bit and text families: casts to and from the 8-bit floats (saturating
or not) and bfloat16, int4 / uint4 casts and quantisation (opset 21+), QuantizeLinear /
DequantizeLinear of opsets 19-23 per tensor, per axis and blocked into every type onnxruntime
quantises to, DynamicQuantizeLinear over its edge values, and the string ops (StringNormalizer,
RegexFullMatch, StringConcat, StringSplit, TfIdfVectorizer).

A low-bit tensor is no output the judge compares (its tolerances are for float16/32/64): float8 and
bfloat16 are cast back to float32 inside the model (exactly: their values are float32 values), int4 /
uint4 to int8. onnxruntime is fed no ml_dtypes array, so low-bit inputs are initializers
(``numpy_helper.from_array`` writes them) or made by a Cast inside the model. float4e2m1 is left out:
onnxruntime 1.32's CPU provider has no Cast or QuantizeLinear for it. Of the arithmetic, onnxruntime
has bfloat16 kernels for no more than Sign, IsNaN, IsInf and the data movers drawn here.
"""

from __future__ import annotations

from collections.abc import Callable

import ml_dtypes
import numpy as np
from onnx import TensorProto, helper

from benchmarks.differential_draw import Case, dims, ri

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
BF16 = np.dtype(ml_dtypes.bfloat16)
INT4, UINT4 = np.dtype(ml_dtypes.int4), np.dtype(ml_dtypes.uint4)
FLOAT8 = tuple(np.dtype(t) for t in (ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz, ml_dtypes.float8_e5m2,
                                     ml_dtypes.float8_e5m2fnuz))
#: the integers QuantizeLinear gives (16-bit and 4-bit ones from opset 21)
QINTS = (*(np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16)), INT4, UINT4)


def _code(dtype: np.dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(dtype)


def _range(dtype: np.dtype) -> tuple[int, int]:
    if dtype in (INT4, UINT4):
        return (-8, 7) if dtype == INT4 else (0, 15)
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _back(c: Case, y: str, dtype: np.dtype) -> str:
    """``y`` of ``dtype`` as a type the judge compares: int4 / uint4 to int8, float8 and bfloat16 to float32."""
    if dtype in (INT4, UINT4):
        return c.op("Cast", [y], to=TensorProto.INT8)
    if dtype in FLOAT8 or dtype == BF16:
        return c.op("Cast", [y], to=TensorProto.FLOAT)
    return y


def f8_values(r: np.random.Generator, shape: list[int], f8: np.dtype, src: np.dtype) -> np.ndarray:
    """Values of ``src`` for a cast to ``f8``: the type's own values, the midpoints between neighbours
    (round-to-nearest-even ties), its largest and what lies just past it, subnormals, NaN, +-inf,
    -0 and uniform draws across its range (``f8`` may be bfloat16 too)."""
    bits = np.dtype(np.uint8 if f8.itemsize == 1 else np.uint16)
    codes = np.asarray(r.integers(0, 256 ** f8.itemsize, shape), dtype=bits).reshape(shape)
    exact = codes.view(f8).astype(np.float32)
    nxt = ((codes.astype(np.int64) + 1) % 256 ** f8.itemsize).astype(bits).view(f8).astype(np.float32)
    fi = ml_dtypes.finfo(f8)
    top = float(fi.max)
    specials = [0.0, -0.0, top, -top, top * 1.03, top * 1.07, -top * 1.07, top * 4, float(fi.smallest_subnormal),
                float(fi.smallest_subnormal) / 2, float(fi.smallest_subnormal) * 1.5, float(fi.tiny), np.nan,
                np.inf, -np.inf, 1e30]
    with np.errstate(invalid="ignore", over="ignore"):
        mid = np.where(np.isfinite(nxt) & (np.sign(nxt) == np.sign(exact)), (exact + nxt) / 2, exact)
        special = np.array(specials, np.float32)[r.integers(0, len(specials), shape)]
        k = r.integers(0, 4, shape)
        x = np.where(k == 0, exact, np.where(k == 1, mid, np.where(k == 2, special, r.uniform(-top, top, shape))))
        return np.asarray(x).astype(src)


def f8_codes(r: np.random.Generator, shape: list[int]) -> np.ndarray:
    """Random bytes of ``shape``, to view as a float8 type (every value, NaN and inf among them)."""
    return np.asarray(r.integers(0, 256, shape), dtype=np.uint8).reshape(shape)


# -- float8 and bfloat16 ------------------------------------------------------------------------

def _f8cast(c: Case) -> list[str]:
    """Cast / CastLike from float16/32/64 into each float8 type, saturating or not (opsets 19-23),
    back to float32 or float16; float8 initializers cast out; bfloat16 casts and the few bfloat16
    kernels onnxruntime has (Sign, IsNaN, IsInf, Transpose, Reshape, Identity)."""
    r = c.rng
    s = dims(r, ri(r, 0, 4), 1, 6)
    c.opset = int(r.choice([19, 21, 23]))
    k = ri(r, 0, 5)
    if k == 4:  # bfloat16
        src = (F32, F16, F64)[ri(r, 0, 3)]
        x = c.feed(s, value=f8_values(r, s, BF16, src))
        y = c.op("Cast", [x], to=TensorProto.BFLOAT16)
        op = str(r.choice(["Sign", "IsNaN", "IsInf", "Transpose", "Reshape", "Identity"]))
        if op == "Sign":  # (NaN: onnxruntime's Sign gives 0, onnx's reference NaN)
            c.feeds[x] = np.where(np.isnan(c.feeds[x]), src.type(1), c.feeds[x])
            y = c.op("Sign", [y])
        elif op == "Reshape":
            y = c.op("Reshape", [y, c.ints([-1])])
        elif op in ("IsNaN", "IsInf"):  # (onnxruntime's bfloat16 kernels of these are opset 20's)
            c.opset = max(c.opset, 21)
            return [c.op(op, [y])]
        else:
            y = c.op(op, [y])
        return [c.op("Cast", [y], to=_code((F32, F64, F16)[ri(r, 0, 3)]))]
    f8 = FLOAT8[ri(r, 0, len(FLOAT8))]
    if k == 3:  # a float8 initializer cast out, maybe through bfloat16
        w = c.weight(value=f8_codes(r, s).view(f8))
        if r.random() < 0.3:
            w = c.op("Cast", [w], to=TensorProto.BFLOAT16)
        return [c.op("Cast", [w], to=_code((F32, F16, F64)[ri(r, 0, 3)]))]
    src = (F32, F32, F16, F64)[ri(r, 0, 4)]
    x = c.feed(s, value=f8_values(r, s, f8, src))
    sat = {"saturate": ri(r, 0, 2)} if r.random() < 0.8 else {}
    if k == 2:
        y = c.op("CastLike", [x, c.weight(value=np.zeros([ri(r, 0, 3)], f8))], **sat)
    else:
        y = c.op("Cast", [x], to=_code(f8), **sat)
    if r.random() < 0.3:  # float8 to float8
        y = c.op("Cast", [y], to=_code(FLOAT8[ri(r, 0, len(FLOAT8))]), **sat)
    return [c.op("Cast", [y], to=_code((F32, F32, F16)[ri(r, 0, 3)]))]


# -- int4 / uint4 -------------------------------------------------------------------------------

def _int4(c: Case) -> list[str]:
    """Cast into int4 / uint4 (opset 21+) from integers (wrapping modulo 16, as ONNX says of integer
    casts) and from integral floats inside the range, int4 initializers cast out to integers and floats,
    and Q/DQ into int4 / uint4 per tensor, per axis or blocked."""
    r = c.rng
    s = dims(r, ri(r, 1, 4), 1, 7)
    c.opset = int(r.choice([21, 23]))
    q = (INT4, UINT4)[ri(r, 0, 2)]
    lo, hi = _range(q)
    k = ri(r, 0, 4)
    if k == 0:
        src = np.dtype(str(r.choice(["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"])))
        info = np.iinfo(src)
        v = r.integers(max(int(info.min), -200), min(int(info.max), 200), s, endpoint=True).astype(src)
        return [_back(c, c.op("Cast", [c.feed(s, value=v)], to=_code(q)), q)]
    if k == 1:  # (a fraction, or a float outside the range: onnxruntime rounds half away from zero and
        # wraps, onnx's reference truncates and gives 0 out of range; ONNX leaves both open)
        src = (F32, F16, F64)[ri(r, 0, 3)]
        v = r.integers(lo, hi, s, endpoint=True).astype(src)
        return [_back(c, c.op("Cast", [c.feed(s, value=v)], to=_code(q)), q)]
    if k == 2:
        w = c.weight(value=r.integers(lo, hi, s, endpoint=True).astype(q))
        to = (np.dtype(np.int8), np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.uint8), F32, F16)[ri(r, 0, 6)]
        return [c.op("Cast", [w], to=_code(to))]
    return _qdq(c, s, q)


# -- QuantizeLinear / DequantizeLinear ----------------------------------------------------------

def _scales(c: Case, s: list[int], mode: int, axis: int, block: int, dtype: np.dtype) -> np.ndarray:
    r = c.rng
    if mode == 0:
        shape: list[int] = [] if r.random() < 0.7 else [1]
    elif mode == 1:
        shape = [s[axis]]
    else:
        shape = list(s)
        shape[axis] = -(-s[axis] // block)
    return r.uniform(0.02, 2.0, shape).astype(dtype)


def _qdq(c: Case, s: list[int], q: np.dtype) -> list[str]:
    """x -> QuantizeLinear -> q (cast out) and -> DequantizeLinear -> float, per tensor, per axis
    (negative axes too) or blocked (opset 21+), zero point or output_dtype, over values past the range."""
    r = c.rng
    rank = len(s)
    mode = ri(r, 0, 3) if c.opset >= 21 else ri(r, 0, 2)
    axis = ri(r, -rank, rank)
    block = ri(r, 1, s[axis] + 2) if mode == 2 else 0
    if mode == 2 and int(np.prod(s)) // s[axis] * -(-s[axis] // block) == 1:
        mode, block = 0, 0  # (a blocked scale of one element: onnxruntime refuses it as per tensor)
    # x and its scale of one type, as onnxruntime takes them; float16 ones not for float8 (onnxruntime's
    # DequantizeLinear by a float16 scale fails) nor 16-bit integers (onnxruntime divides in float32, the
    # spec and onnx's reference in the scale's float16, and the reference turns an overflow into 0)
    x_dtype = F16 if q.itemsize == 1 and q not in FLOAT8 and c.opset >= 21 and r.random() < 0.25 else F32
    scale_dtype = x_dtype
    scale = _scales(c, s, mode, axis, block, scale_dtype)
    if q in FLOAT8:
        x = f8_values(c.rng, s, q, x_dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            x = (x * np.broadcast_to(_full(scale, s, axis, block), s)).astype(x_dtype)
    else:
        lo, hi = _range(q)
        span = (hi - lo) * float(np.max(scale))
        x = r.uniform(-span, span, s)
        x = np.where(r.random(s) < 0.2, np.round(x * 2) / 2, x).astype(x_dtype)  # ties of the half-way kind
    xs = c.feed(s, value=x)
    attrs: dict[str, int] = {}
    if mode:
        attrs["axis"] = axis
    if mode == 2:
        attrs["block_size"] = block
    sc = c.weight(value=scale)
    zp: list[str] = []
    if q in FLOAT8:
        # (a nonzero float8 zero point: onnxruntime fails, onnx's reference refuses)
        if r.random() < 0.5:
            zp = [c.weight(value=np.zeros(scale.shape, q))]
    elif r.random() < 0.7:
        lo, hi = _range(q)
        zp = [c.weight(value=r.integers(lo, hi, scale.shape, endpoint=True).astype(q))]
    qattrs = dict(attrs)
    if not zp and (q != np.dtype(np.uint8) or r.random() < 0.5) and c.opset >= 21:
        qattrs["output_dtype"] = _code(q)
    elif not zp and q != np.dtype(np.uint8):
        zp = [c.weight(value=np.zeros(scale.shape, q))]
    if q in FLOAT8 and r.random() < 0.7:
        qattrs["saturate"] = ri(r, 0, 2)
    y = c.op("QuantizeLinear", [xs, sc, *zp], **qattrs)
    d = c.op("DequantizeLinear", [y, sc, *zp], **attrs)
    return [_back(c, y, q), d]


def _full(scale: np.ndarray, s: list[int], axis: int, block: int) -> np.ndarray:
    """``scale`` broadcast onto shape ``s`` (per tensor, per axis or blocked)."""
    if scale.size == 1 and not block:
        return scale.reshape(())
    axis %= len(s)
    if not block:
        return scale.reshape([-1 if i == axis else 1 for i in range(len(s))])
    return np.repeat(scale, block, axis=axis).take(np.arange(s[axis]), axis=axis)


def _qlinear(c: Case) -> list[str]:
    """QuantizeLinear / DequantizeLinear of opsets 19, 21 and 23 into int8 / uint8 / int16 / uint16 /
    int4 / uint4 and the float8 types; DequantizeLinear of low-bit and int32 initializers (opset 21+
    for the 16- and 4-bit ones)."""
    r = c.rng
    s = dims(r, ri(r, 1, 4), 1, 7)
    c.opset = int(r.choice([19, 21, 23]))
    pool = QINTS[:2] + FLOAT8 if c.opset == 19 else QINTS + FLOAT8
    q = pool[ri(r, 0, len(pool))]
    if r.random() < 0.75:
        return _qdq(c, s, q)
    rank = len(s)
    axis = ri(r, -rank, rank)
    mode = ri(r, 0, 2)
    scale = _scales(c, s, mode, axis, 0, F32)
    attrs = {"axis": axis} if mode else {}
    if r.random() < 0.2:  # int32 (bias-like) values, clear of the ends: onnxruntime subtracts the zero
        # point in int32 and wraps, onnx's reference in float
        v = r.integers(-2 ** 30, 2 ** 30, s).astype(np.int32)
        zp = [c.weight(value=r.integers(-1000, 1000, scale.shape).astype(np.int32))] if r.random() < 0.5 else []
        return [c.op("DequantizeLinear", [c.weight(value=v), c.weight(value=scale), *zp], **attrs)]
    if q in FLOAT8:
        v = f8_codes(r, s).view(q)
        zp = [c.weight(value=np.zeros(scale.shape, q))] if r.random() < 0.5 else []
    else:
        lo, hi = _range(q)
        v = r.integers(lo, hi, s, endpoint=True).astype(q)
        zp = [c.weight(value=r.integers(lo, hi, scale.shape, endpoint=True).astype(q))] if r.random() < 0.6 else []
    return [c.op("DequantizeLinear", [c.weight(value=v), c.weight(value=scale), *zp], **attrs)]


def _dynq(c: Case) -> list[str]:
    """DynamicQuantizeLinear over its edges: all one value, all of one sign, zero, one element, a tiny
    or a huge range, values on the half steps of the scale."""
    r = c.rng
    c.opset = int(r.choice([11, 19, 21]))
    s = dims(r, ri(r, 0, 4), 1, 7)
    k = ri(r, 0, 5)
    if k == 0:
        x = np.full(s, float(r.choice([0.0, 1.5, -2.0, 300.0])))
    elif k == 1:
        x = r.uniform(0.1, 5, s) * float(r.choice([1, -1]))
    elif k == 2:
        x = r.uniform(-1, 1, s) * float(r.choice([1e-30, 1e-6, 1e20, 3e36]))
    elif k == 3:  # values on half steps of a range of 255 steps
        lo = -float(ri(r, 0, 255))
        x = np.asarray(lo + r.integers(0, 511, s) / 2).reshape(s)
        if x.size > 1:
            x.flat[0], x.flat[-1] = lo, lo + 255
    else:  # (no NaN: onnx's reference makes the scale NaN, onnxruntime's SIMD min/max drop it at most
        # places, keep it at some, by its lane and the length)
        x = r.uniform(-float(r.uniform(0, 5)), float(r.uniform(0, 5)), s)
    return list(c.op("DynamicQuantizeLinear", [c.feed(s, value=np.asarray(x).astype(np.float32))], outputs=3))


# -- text ---------------------------------------------------------------------------------------

_WORDS = ("Hello", "WORLD", "the", "The", "THE", "a", "", " ", "straße", "Éclair", "ΣΑΣ", "ǅ", "naïve", "İ",
          "x1", "42", "a,b", "a,,b", ",", "  two  words ", "tab\there", "ab-abab-", "日本語", "café", "e\u0301")


def _strings(c: Case, shape: list[int]) -> np.ndarray:
    return np.array(c.rng.choice(np.array(_WORDS, dtype=object), shape), dtype=object).reshape(shape)


def _text(c: Case) -> list[str]:
    """StringNormalizer (case change, stopwords either case-sensitive or not; the "C" locale: onnxruntime
    refuses the others this machine lacks), RegexFullMatch (RE2), StringConcat broadcast, StringSplit
    (its delimiter absent, empty, one or more characters; maxsplit)."""
    r = c.rng
    k = ri(r, 0, 4)
    if k == 0:
        c.opset = 10
        n = ri(r, 1, 7)
        shape = [n] if r.random() < 0.5 else [1, n]
        x = c.feed(shape, value=_strings(c, shape))
        attrs: dict[str, object] = {"case_change_action": str(r.choice(["NONE", "LOWER", "UPPER"])),
                                    "is_case_sensitive": ri(r, 0, 2)}
        if attrs["case_change_action"] != "NONE" or not attrs["is_case_sensitive"] or r.random() < 0.5:
            attrs["locale"] = "C"
        if r.random() < 0.7:
            attrs["stopwords"] = [str(w) for w in r.choice(np.array(_WORDS, dtype=object), ri(r, 1, 5))]
        return [c.op("StringNormalizer", [x], **attrs)]
    c.opset = 20
    s = dims(r, ri(r, 0, 3), 1, 5)
    x = c.feed(s, value=_strings(c, s))
    if k == 1:
        pattern = str(r.choice(["[a-z]+", "\\w+", "(?i)the", "[A-Z].*", "\\d+", ".*,.*", "", "\\s*\\S+\\s*",
                                "(a|b)+(,|-)?.*", "\\p{L}+", "[^ ]*", "caf.", "x\\d"]))
        return [c.op("RegexFullMatch", [x], pattern=pattern)]
    if k == 2:
        other = s[ri(r, 0, len(s) + 1):] if s else []
        y = c.weight(value=_strings(c, other)) if r.random() < 0.5 else c.feed(other, value=_strings(c, other))
        return [c.op("StringConcat", [x, y] if r.random() < 0.5 else [y, x])]
    attrs = {}
    if r.random() < 0.7:
        attrs["delimiter"] = str(r.choice(["", " ", ",", "ab", "-", ",,"]))
    if attrs.get("delimiter"):  # (an empty string: no substrings in onnxruntime, one "" in onnx's reference)
        c.feeds[x] = np.where(c.feeds[x] == "", "-", c.feeds[x]).astype(object)
    elif not s:
        # whitespace splitting of a 0-d string, which onnx's reference does not run: onnxruntime splits at
        # spaces alone, the spec's whitespace takes a tab too (as hal and the reference do on 1-d input,
        # where the two follow onnx), and without the reference the tab would read as hal's finding
        c.feeds[x] = np.array(str(c.feeds[x].item()).replace("\t", " "), dtype=object)
    if r.random() < 0.5:
        attrs["maxsplit"] = ri(r, 0, 4)
    return list(c.op("StringSplit", [x], outputs=2, **attrs))


def _tfidf(c: Case) -> list[str]:
    """TfIdfVectorizer over int32 / int64 / string rows: pools of 1- to 3-grams (no n-gram twice), output
    columns permuted and with gaps or, a third of the time, shared by several n-grams (TFIDF sums their
    weighted counts, IDF takes the weight of the one onnxruntime's scan finds last), TF / IDF / TFIDF
    with or without weights, min and max gram lengths, skips."""
    r = c.rng
    c.opset = 9
    strings = r.random() < 0.4
    vocab: list[object] = ["a", "b", "c", "é", "dd"] if strings else [1, 2, 3, 7, -4]
    top = ri(r, 1, 4)
    pool: list[object] = []
    counts: list[int] = []
    total = 0
    for n in range(1, top + 1):
        counts.append(len(pool))
        grams = {tuple(int(v) for v in r.integers(0, len(vocab), n)) for _ in range(ri(r, 1 if n == 1 else 0, 5))}
        for g in sorted(grams):
            pool += [vocab[j] for j in g]
        total += len(grams)
    columns = [int(v) for v in r.permutation(total + ri(r, 0, 3))[:total]]
    if r.random() < 0.3:
        columns = [int(v) for v in r.integers(0, max(total // 2, 1), total)]
    lo_n = ri(r, 1, top + 1)
    attrs: dict[str, object] = {"min_gram_length": lo_n, "max_gram_length": ri(r, lo_n, top + 1),
                                "max_skip_count": ri(r, 0, 4), "mode": str(r.choice(["TF", "IDF", "TFIDF"])),
                                "ngram_counts": counts, "ngram_indexes": columns}
    attrs["pool_strings" if strings else "pool_int64s"] = pool
    if r.random() < 0.6:
        attrs["weights"] = [float(v) for v in np.round(r.uniform(0.1, 3, total), 3)]
    shape = [ri(r, 1, 4), ri(r, 1, 9)] if r.random() < 0.6 else [ri(r, 1, 9)]
    if strings:
        v = np.array(r.choice(np.array([*vocab, "z", "A"], dtype=object), shape), dtype=object).reshape(shape)
    else:
        v = np.array(r.choice(np.array([*vocab, 0, 5]), shape)).astype((np.int32, np.int64)[ri(r, 0, 2)])
    return [c.op("TfIdfVectorizer", [c.feed(shape, value=v)], **attrs)]


FAMILIES: dict[str, Callable[[Case], list[str]]] = {
    "f8cast": _f8cast, "int4": _int4, "qlinear": _qlinear, "dynq": _dynq, "text": _text, "tfidf": _tfidf}
