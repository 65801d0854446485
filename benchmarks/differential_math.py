"""The differential sweep's elementwise families: unary float math and the activations over awkward
values (inf, NaN, -0, huge, tiny and subnormal magnitudes, the edges of each op's domain), binary
arithmetic across integer and float dtypes with broadcasting, comparisons and bit ops, the variadic
Min / Max / Sum / Mean, and casts between every dtype onnxruntime converts.

Each op is drawn in the dtypes onnxruntime has a CPU kernel for (float32 where the case's dtype has
none), so that the draws are peered; what the two peers do apart from each other is left out where
it is drawn, with its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import TensorProto, helper

from benchmarks.differential_draw import Case, dims, ri

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
FLOATS = (F16, F32, F64)
SIGNED = tuple(np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64))
UNSIGNED = tuple(np.dtype(t) for t in (np.uint8, np.uint16, np.uint32, np.uint64))
INTS = SIGNED + UNSIGNED
BOOL = np.dtype(np.bool_)
I32, I64 = np.dtype(np.int32), np.dtype(np.int64)
#: the integers onnxruntime's Min, Max, Clip and Where take (no 16-bit ones)
WIDE_INTS = (np.dtype(np.int8), I32, I64, np.dtype(np.uint8), np.dtype(np.uint32), np.dtype(np.uint64))


def _pick(c: Case, dtypes: tuple[np.dtype, ...]) -> np.dtype:
    """The case's dtype where the op takes it, else one of ``dtypes`` (float32 first)."""
    if c.dtype in dtypes:
        return c.dtype
    return F32 if F32 in dtypes and c.rng.random() < 0.5 else dtypes[ri(c.rng, 0, len(dtypes))]


def awkward(r: np.random.Generator, shape: list[int], dtype: np.dtype, lo: float = -3.0, hi: float = 3.0,
            edges: tuple[float, ...] = (), share: float = 0.3) -> np.ndarray:
    """Uniform draws in [lo, hi), a ``share`` of them replaced by awkward values: +-inf, NaN, +-0,
    huge, tiny and subnormal magnitudes of ``dtype``, and the op's ``edges`` (domain ends, ties)."""
    fi = np.finfo(dtype)
    special = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, float(fi.max) / 3, -float(fi.max) / 3,
                        float(fi.tiny), -float(fi.tiny), float(fi.smallest_subnormal) * 3, 1e4, -1e4, *edges])
    x = np.where(r.random(shape) < share, special[r.integers(0, special.size, shape)], r.uniform(lo, hi, shape))
    with np.errstate(over="ignore"):  # float16's third of float64's maximum is inf, as meant
        return np.asarray(x).astype(dtype)


def ints(r: np.random.Generator, shape: list[int], dtype: np.dtype, lo: int | None = None,
         hi: int | None = None) -> np.ndarray:
    """Integers of ``dtype`` in [lo, hi] (its whole range by default), its extremes among them."""
    info = np.iinfo(dtype)
    lo = info.min if lo is None else max(lo, info.min)
    hi = info.max if hi is None else min(hi, info.max)
    x = r.integers(lo, hi, shape, dtype=dtype, endpoint=True)
    ends = np.array([lo, hi, 0 if lo <= 0 <= hi else lo], dtype=dtype)
    return np.asarray(np.where(r.random(shape) < 0.15, ends[r.integers(0, 3, shape)], x)).astype(dtype)


def _broadcast_pair(r: np.random.Generator, rank: int) -> tuple[list[int], list[int]]:
    """Two shapes that broadcast against each other, either of them the smaller or shorter."""
    s = dims(r, rank, 1, 5)
    a = [d if r.random() < 0.7 else 1 for d in s][ri(r, 0, rank + 1) if r.random() < 0.3 else 0:]
    b = [d if r.random() < 0.7 else 1 for d in s][ri(r, 0, rank + 1) if r.random() < 0.3 else 0:]
    return a, b


# -- unary float math ---------------------------------------------------------------------------

_HALVES = (0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 1e6 + 0.5)
#: op -> (dtypes onnxruntime has kernels for, drawn range, domain edges)
_UNARY: dict[str, tuple[tuple[np.dtype, ...], float, float, tuple[float, ...]]] = {
    "Exp": (FLOATS, -20, 20, (88.7, 89.0, -103.0, 709.8, 11.09)),
    "Log": (FLOATS, 0, 10, (1.0, 0.999999, -1.0)),
    "Sqrt": (FLOATS, 0, 10, (-1.0, 4.0)),
    "Reciprocal": (FLOATS, -3, 3, ()),
    "Abs": (FLOATS, -3, 3, ()),
    "Neg": (FLOATS, -3, 3, ()),
    "Sign": (FLOATS, -3, 3, ()),
    "Floor": (FLOATS, -5, 5, _HALVES),
    "Ceil": (FLOATS, -5, 5, _HALVES),
    "Round": (FLOATS, -5, 5, _HALVES),
    "Erf": ((F16, F32), -4, 4, (3.92, -3.92, 6.0)),
    "Sin": (FLOATS, -7, 7, (3.14159265, 1e7)),
    "Cos": (FLOATS, -7, 7, (1.57079633, 1e7)),
    "Tan": ((F16, F32), -1.5, 1.5, (1.5707963, -1.5707963)),
    "Asin": ((F16, F32), -1, 1, (1.0, -1.0, 1.0001)),
    "Acos": ((F16, F32), -1, 1, (1.0, -1.0, -1.0001)),
    "Atan": ((F16, F32), -5, 5, ()),
    "Sinh": ((F16, F32), -5, 5, (89.0, -89.0, 11.8)),
    "Cosh": ((F16, F32), -5, 5, (89.0, -89.0, 11.8)),
    "Asinh": ((F16, F32), -5, 5, ()),
    "Acosh": ((F16, F32), 1, 6, (1.0, 0.9999)),
    "Atanh": ((F16, F32), -1, 1, (1.0, -1.0, 0.9999)),
    "IsNaN": (FLOATS, -3, 3, ()),
    "IsInf": (FLOATS, -3, 3, ()),
}
#: ops that may read another's result: the peers' float math is within an ulp or a few, not
#: correctly rounded (hal's float32 Erf within 4, tanh-based), and an ulp at +-1 moves Acos / Acosh /
#: Atanh / Asin past the tolerance or to NaN, one of a huge Sinh is another Sin, one at a tie
#: another Round: those ill-conditioned pairs are left out, each op still drawn on the fed values
_SECOND = ("Abs", "Neg", "Sqrt", "Reciprocal", "Exp", "Log", "Erf", "Atan", "Asinh", "Sinh", "Cosh", "IsNaN",
           "IsInf")
#: integer dtypes of the unary ops that take them
_UNARY_INT = {"Abs": INTS, "Neg": SIGNED, "Sign": INTS, "Relu": (np.dtype(np.int8), I32, I64)}


def _unary(c: Case) -> list[str]:
    """One or two unary math ops over awkward floats, or Abs / Neg / Sign / Relu over integers."""
    r = c.rng
    s = dims(r, ri(r, 0, 4), 1, 6)
    if r.random() < 0.2:
        op = str(r.choice(list(_UNARY_INT)))
        c.dtype = _pick(c, _UNARY_INT[op])
        x = c.feed(s, value=ints(r, s, c.dtype))  # Abs and Neg of the minimum wrap to it in both peers
        c.opset = 18  # (onnxruntime's int64 Relu is registered from opset 18, not 14)
        return [c.op(op, [x])]
    outs = []
    y = ""
    for step in range(ri(r, 1, 3)):
        op = str(r.choice(list(_UNARY) if step == 0 else _SECOND))
        dtypes, lo, hi, edges = _UNARY[op]
        if step == 0:
            c.dtype = _pick(c, dtypes)
            y = c.feed(s, value=awkward(r, s, c.dtype, lo, hi, edges))
        elif c.dtype not in dtypes:
            break
        attrs: dict[str, Any] = {}
        if op == "IsInf":
            attrs = {"detect_negative": ri(r, 0, 2), "detect_positive": ri(r, 0, 2)}
        c.opset = 20 if op in ("IsNaN", "IsInf") else int(r.choice([13, 20, 22])) if op == "Round" else 13
        z = c.op(op, [y], **attrs)
        if op in ("IsNaN", "IsInf"):
            outs.append(z)
            break
        y = z
    return outs or [y]


# -- activations ---------------------------------------------------------------------------------

def _gates(c: Case) -> list[str]:
    """An activation with drawn attributes over awkward floats: the smooth and piecewise gates,
    Gelu (opset 20, both approximations), PRelu with a broadcast slope, Clip with its bounds
    missing or crossed, and Hardmax / Softmax / LogSoftmax on rows holding -inf."""
    r = c.rng
    rank = ri(r, 1, 5)
    s = dims(r, rank, 1, 6)
    op = str(r.choice(["Softplus", "Softsign", "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish", "Mish",
                       "ThresholdedRelu", "Gelu", "Shrink", "LeakyRelu", "PRelu", "Clip", "Clip", "Hardmax",
                       "Softmax", "LogSoftmax", "Relu", "Sigmoid", "Tanh"]))
    narrow = {"Celu": (F32,), "Gelu": (F16, F32), "Hardmax": (F16, F32)}
    c.dtype = _pick(c, narrow.get(op, FLOATS))
    c.opset = 20 if op == "Gelu" else 18
    attrs: dict[str, Any] = {}
    if op == "Clip":
        c.dtype = _pick(c, FLOATS + WIDE_INTS)
        if c.dtype.kind == "f":
            x = c.feed(s, value=awkward(r, s, c.dtype, -4, 4))
            bound = [np.array(r.uniform(-3, 3), c.dtype) for _ in range(2)]
        else:
            x = c.feed(s, value=ints(r, s, c.dtype))
            bound = [ints(r, [], c.dtype, -100, 100) for _ in range(2)]
        lo = c.weight(value=bound[0]) if r.random() < 0.7 else ""  # a bound may be missing, and lo > hi
        hi = c.weight(value=bound[1]) if r.random() < 0.7 else ""
        return [c.op("Clip", [x, lo, hi] if hi else [x, lo] if lo else [x])]
    if op in ("Softmax", "LogSoftmax", "Hardmax"):
        # -inf entries, and whole -inf rows (NaN in both peers); Hardmax's ties go to the first
        v = np.round(awkward(r, s, c.dtype, -4, 4, share=0.0) * 2) / 2
        v[r.random(s) < 0.2] = -np.inf
        axis = ri(r, -rank, rank)
        if r.random() < 0.3:
            c.opset = 11  # flattened to 2-D at the axis
        if op == "Hardmax":
            # (NaN left out: onnxruntime's argmax skips it, onnx's reference marks several per row)
            v[r.random(s) < 0.1] = np.inf
        elif op == "Softmax" or c.dtype != F64 or c.opset > 11:
            # its row all NaN; (left out of float64 LogSoftmax-11: onnxruntime's float64 kernel
            # gives -inf beside the inf's NaN, onnx's reference does not flatten before opset 13)
            v[r.random(s) < 0.03] = np.inf
        if op != "Hardmax" and r.random() < 0.4:  # one whole row of -inf
            row = [ri(r, 0, d) for d in s]
            row[axis] = slice(None)
            v[tuple(row)] = -np.inf
        x = c.feed(s, value=v.astype(c.dtype))
        return [c.op(op, [x], axis=axis)]
    x = c.feed(s, value=awkward(r, s, c.dtype, -6, 6, (1.0, -1.0, 20.0, -20.0, 3.0, -3.0)))
    if op in ("Elu", "Celu", "LeakyRelu", "ThresholdedRelu"):
        attrs["alpha"] = float(r.choice([r.uniform(0.05, 2), 1.0, -0.5 if op != "Celu" else 0.3]))
    elif op == "Selu":
        attrs = {"alpha": float(r.uniform(0.5, 2)), "gamma": float(r.uniform(0.5, 2))}
    elif op == "HardSigmoid":
        attrs = {"alpha": float(r.uniform(-1, 1)), "beta": float(r.uniform(-1, 1))}
    elif op == "Shrink":
        attrs = {"bias": float(r.uniform(-1, 1)), "lambd": float(r.uniform(0, 2))}
    elif op == "Gelu":
        attrs["approximate"] = str(r.choice(["none", "tanh"]))
    if op == "PRelu":  # the slope broadcasts onto x one way (onnxruntime takes no slope larger than x)
        shape = [d if r.random() < 0.5 else 1 for d in s][ri(r, 0, rank + 1):]
        return [c.op("PRelu", [x, c.weight(value=r.uniform(-1, 1, shape).astype(c.dtype))])]
    return [c.op(op, [x], **attrs)]


# -- binary arithmetic ---------------------------------------------------------------------------

def _arith(c: Case) -> list[str]:
    """Add / Sub / Mul / Div / Pow / Mod across float and integer dtypes, both operands broadcast:
    integer wrapping, truncating division, fmod 0 and 1 with negative operands, float division by
    +-0, Pow of negative bases and mixed base / exponent dtypes."""
    r = c.rng
    a_shape, b_shape = _broadcast_pair(r, ri(r, 1, 4))
    op = str(r.choice(["Add", "Sub", "Mul", "Div", "Pow", "Pow", "Mod", "Mod"]))
    c.opset = 14
    fmod = 0
    if op == "Mod":
        fmod = ri(r, 0, 2)
        c.dtype = _pick(c, (FLOATS + INTS) if fmod else INTS)
    elif op == "Pow":
        c.dtype = _pick(c, (*FLOATS, I32, I64))
    elif r.random() < 0.5:
        c.dtype = INTS[ri(r, 0, len(INTS))]
    if c.dtype.kind == "f":
        a = awkward(r, a_shape, c.dtype, -10, 10, (1.0, -1.0, 2.0), share=0.2)
        if op == "Pow":
            b_dtype = c.dtype if r.random() < 0.6 else [F16, F32, F64, I32, I64][ri(r, 0, 5)]
            if b_dtype.kind == "f":  # whole, half and fractional exponents, negative bases among them
                b = awkward(r, b_shape, b_dtype, -3, 3, (0.5, -0.5, 2.0, 3.0, -1.0, -2.0), share=0.3)
                b = np.where(r.random(b_shape) < 0.4, np.round(b), b).astype(b_dtype)
            else:
                b = r.integers(-4, 5, b_shape).astype(b_dtype)
        else:
            b = awkward(r, b_shape, c.dtype, -10, 10, (1.0, -1.0, 3.0), share=0.2)
    else:
        a = ints(r, a_shape, c.dtype)
        b = ints(r, b_shape, c.dtype)
        if op in ("Div", "Mod"):  # an integer divisor of 0, or -1 under the minimum, is undefined
            a = np.where(a == np.iinfo(c.dtype).min, 7, a).astype(c.dtype) if c.dtype.kind == "i" else a
            small = ints(r, b_shape, c.dtype, -9, 9)
            b = np.where(r.random(b_shape) < 0.5, small, b)
            b = np.where(b == 0, 3, b).astype(c.dtype)
        elif op == "Pow":  # whole-number powers that stay in range, or a float exponent (rounded down)
            a = ints(r, a_shape, c.dtype, -12, 12)
            a = np.where(a == 0, 1, a).astype(c.dtype)  # (0 to a negative power: inf as an integer, undefined)
            b_dtype = c.dtype if r.random() < 0.6 else [F32, F64, I32, I64][ri(r, 0, 4)]
            b = (r.integers(-3, 7, b_shape) if b_dtype.kind == "i" else np.round(r.uniform(0, 6, b_shape), 1))
            b = b.astype(b_dtype)
    x = c.feed(a_shape, value=a)
    y = c.feed(b_shape, value=b) if r.random() < 0.6 else c.weight(value=np.asarray(b))
    if r.random() < 0.5:
        x, y = (x, y) if op in ("Pow", "Mod", "Div", "Sub") else (y, x)
    return [c.op(op, [x, y], **({"fmod": fmod} if op == "Mod" else {}))]


# -- comparisons, logic and bits -----------------------------------------------------------------

_WHERE = FLOATS + WIDE_INTS[:-1]


def _bitlogic(c: Case) -> list[str]:
    """Comparisons (NaN, +-0 and +-inf among floats) feeding And / Or / Xor / Not and Where, all
    broadcasting; BitwiseAnd / Or / Xor / Not over integers; BitShift over unsigned integers, by
    amounts up to and past the width."""
    r = c.rng
    a_shape, b_shape = _broadcast_pair(r, ri(r, 1, 4))
    k = ri(r, 0, 3)
    c.opset = 18
    if k == 0:
        dt = UNSIGNED[ri(r, 0, 4)]
        bits = dt.itemsize * 8
        x = c.feed(a_shape, value=ints(r, a_shape, dt))
        y = c.feed(b_shape, value=r.integers(0, bits + 3, b_shape).astype(dt))  # past the width: 0
        return [c.op("BitShift", [x, y], direction=str(r.choice(["LEFT", "RIGHT"])))]
    if k == 1:
        dt = INTS[ri(r, 0, len(INTS))]
        x = c.feed(a_shape, value=ints(r, a_shape, dt))
        if r.random() < 0.25:
            return [c.op("BitwiseNot", [x])]
        y = c.feed(b_shape, value=ints(r, b_shape, dt))
        return [c.op(str(r.choice(["BitwiseAnd", "BitwiseOr", "BitwiseXor"])), [x, y])]
    dt = _pick(c, FLOATS + INTS)
    if dt.kind == "f":
        def draw(shape: list[int]) -> np.ndarray:
            return np.asarray(np.round(awkward(r, shape, dt, -3, 3, share=0.3)))  # whole numbers: equal pairs
    else:
        def draw(shape: list[int]) -> np.ndarray:
            return ints(r, shape, dt, -3, 3) if r.random() < 0.7 else ints(r, shape, dt)
    x, y = c.feed(a_shape, value=draw(a_shape)), c.feed(b_shape, value=draw(b_shape))
    comparisons = ["Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"]
    cond = c.op(str(r.choice(comparisons)), [x, y])
    outs = [cond]
    if r.random() < 0.5:
        other = c.op(str(r.choice(comparisons)), [y, x] if r.random() < 0.5 else [x, x])
        cond = c.op(str(r.choice(["And", "Or", "Xor"])), [cond, other])
        outs = [cond]
    if r.random() < 0.3:
        cond = c.op("Not", [cond])
        outs = [cond]
    if r.random() < 0.5 and dt in _WHERE:
        z_shape = [d if r.random() < 0.6 else 1 for d in (a_shape if len(a_shape) >= len(b_shape) else b_shape)]
        z = c.feed(z_shape, value=draw(z_shape).astype(dt))
        outs = [c.op("Where", [cond, x, z] if r.random() < 0.5 else [cond, z, y])]
    return outs


# -- variadic ------------------------------------------------------------------------------------

_MINMAX = FLOATS + WIDE_INTS


def _variadic(c: Case) -> list[str]:
    """Min / Max / Sum / Mean of one to four inputs broadcast together, NaN and +-inf among them."""
    r = c.rng
    op = str(r.choice(["Min", "Max", "Sum", "Mean"]))
    c.dtype = _pick(c, {"Min": _MINMAX, "Max": _MINMAX, "Sum": FLOATS, "Mean": (F16, F32)}[op])
    rank = ri(r, 0, 4)
    s = dims(r, rank, 1, 5)
    inputs = []
    for _ in range(ri(r, 1, 5)):
        shape = [d if r.random() < 0.6 else 1 for d in s][ri(r, 0, rank + 1) if r.random() < 0.4 else 0:]
        if c.dtype.kind == "f":
            v = awkward(r, shape, c.dtype, -5, 5, (-0.0, 0.0), share=0.2)
            if op in ("Sum", "Mean"):  # (inf - inf is NaN in both; a huge sum overflowing float16 is also both)
                v = np.where(np.abs(v) > 1e4, np.inf, v).astype(c.dtype)
        else:
            v = ints(r, shape, c.dtype)
        inputs.append(c.feed(shape, value=v) if r.random() < 0.7 else c.weight(value=v))
    c.opset = 13
    return [c.op(op, inputs)]


# -- casts ---------------------------------------------------------------------------------------

_CASTABLE = FLOATS + INTS + (BOOL,)
_BFLOAT16 = TensorProto.BFLOAT16


def _source(r: np.random.Generator, shape: list[int], src: np.dtype, dst: np.dtype | None) -> np.ndarray:
    """Values of ``src`` that ``dst`` holds (a float to an integer: inside its range, fractions truncated;
    out-of-range and non-finite floats to integers are undefined in ONNX and left out)."""
    if src == BOOL:
        return np.asarray(r.random(shape) < 0.5)
    if src.kind == "f":
        if dst is None or dst.kind == "f" or dst == BOOL:
            # ties, float16's largest and its first overflow, its subnormals, bfloat16's rounding
            edges = (0.5, -0.5, 1.5, 2.5, 65504.0, 65520.0, 1e-6, -3e-5, 5.96e-8, 2.98e-8, 1.00390625, 3e38)
            return awkward(r, shape, src, -300, 300, edges, share=0.3)
        info = np.iinfo(dst)
        lo, hi = max(float(info.min), -60000.0), min(float(info.max), 60000.0)
        return np.asarray(r.uniform(lo, hi, shape) * r.choice([1, 1e-3, 1e-2], shape)).astype(src)
    if dst is not None and dst.kind in "iu" and r.random() < 0.5:  # integers wrap modulo the width in both
        return ints(r, shape, src)
    lo, hi = (-60000, 60000) if dst is not None and dst.kind == "f" else (None, None)
    if dst is not None and dst.kind in "iu":
        info = np.iinfo(dst)
        lo, hi = int(info.min), int(info.max)
    return ints(r, shape, src, lo, hi)


def _casts(c: Case) -> list[str]:
    """Cast and CastLike between float16/32/64, the signed and unsigned integers and bool, and
    through bfloat16 (back to float32, as bfloat16 has no tolerance in the judge)."""
    r = c.rng
    s = dims(r, ri(r, 0, 4), 1, 6)
    src = _CASTABLE[ri(r, 0, len(_CASTABLE))]
    if r.random() < 0.2:  # through bfloat16
        v = _source(r, s, src, F32 if src.kind == "f" else None)
        x = c.feed(s, value=v)
        c.opset = 13
        y = c.op("Cast", [x], to=_BFLOAT16)
        dst = [F32, F64, F16, BOOL][ri(r, 0, 4)]
        return [c.op("Cast", [y], to=helper.np_dtype_to_tensor_dtype(dst))]
    dst = _CASTABLE[ri(r, 0, len(_CASTABLE))]
    x = c.feed(s, value=_source(r, s, src, dst))
    c.opset = int(r.choice([13, 19, 21]))
    if r.random() < 0.3:
        c.opset = max(c.opset, 15)
        like = c.weight(value=np.zeros([ri(r, 0, 3)], dst))
        return [c.op("CastLike", [x, like])]
    return [c.op("Cast", [x], to=helper.np_dtype_to_tensor_dtype(dst))]


# -- fused chains --------------------------------------------------------------------------------

#: the region ops hal runs as one step (``hal.graph.fuse.REGION_OPS``) that take one input
_CHAIN_UNARY = ("Erf", "Tanh", "Sqrt", "Exp", "Neg", "Relu", "Sigmoid", "Abs", "Reciprocal")


def _chains(c: Case) -> list[str]:
    """A chain of the elementwise ops hal fuses into one step (a region, run block by block when
    float32 and large, maybe ending in a Softmax; an Add before a Relu), over awkward values with
    scalar, row and full-size operands, in float dtypes and int32 / int64."""
    r = c.rng
    rank = ri(r, 1, 4)
    s = dims(r, rank, 1, 7)
    if r.random() < 0.1:  # past one block of a float32 region (65536 elements)
        s = [*s[:-1], int(r.choice([70000, 140001])) // max(1, int(np.prod(s[:-1])))]
    c.dtype = (I32, I64)[ri(r, 0, 2)] if r.random() < 0.2 else _pick(c, FLOATS)
    whole = c.dtype.kind in "iu"

    def operand() -> str:
        shape = s if r.random() < 0.4 else [] if r.random() < 0.4 else [d if r.random() < 0.5 else 1 for d in s]
        v = ints(r, shape, c.dtype, -50, 50) if whole else awkward(r, shape, c.dtype, -3, 3, share=0.1)
        if not whole and r.random() < 0.5:
            v = np.where(v == 0, 1, v).astype(c.dtype)  # (then fewer NaN from 0 / 0)
        return c.feed(shape, value=v) if r.random() < 0.5 else c.weight(value=np.asarray(v))

    y = c.feed(s, value=ints(r, s, c.dtype, -50, 50) if whole else awkward(r, s, c.dtype, -4, 4, share=0.15))
    c.opset = 18
    for _ in range(ri(r, 1, 6)):
        k = ri(r, 0, 4)
        if k <= 1:
            op = str(r.choice(["Add", "Sub", "Mul", "Div"]))
            if whole and op == "Div":
                op = "Mul"  # (an integer divisor of 0 is undefined)
            y = c.op(op, [y, operand()] if r.random() < 0.6 else [operand(), y])
        elif k == 2 and not whole:
            op = str(r.choice(_CHAIN_UNARY))
            if op != "Erf" or c.dtype != F64:  # (onnxruntime has no float64 Erf)
                y = c.op(op, [y])
        elif k == 2:
            y = c.op(str(r.choice(["Neg", "Abs", "Relu"])), [y])
        else:
            cond = c.op(str(r.choice(["Less", "Greater", "Equal"])), [y, operand()])
            y = c.op("Where", [cond, y, operand()] if r.random() < 0.5 else [cond, operand(), y])
    if not whole and r.random() < 0.3:
        return [c.op("Softmax", [y], axis=-1 if r.random() < 0.7 else ri(r, -rank, rank))]
    if r.random() < 0.3:
        return [c.op("Relu", [c.op("Add", [y, operand()])])]
    return [y]


FAMILIES: dict[str, Callable[[Case], list[str]]] = {
    "unary": _unary, "gates": _gates, "arith": _arith, "bitlogic": _bitlogic, "variadic": _variadic,
    "casts": _casts, "chains": _chains}
