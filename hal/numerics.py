"""Precision policies: what each number format does to a value, through ml_dtypes.

Targets use these to run their programs the way their hardware would: ``round_to`` stores a
tensor in a format and brings it back to fp32 (so the error is exactly the format's), and
``quantize`` gives fp8 and int8 weights their scales (one per output channel of a matrix op's weight,
where a policy rounds a program's weights). Accumulation stays fp32, as on tensor cores, the MXM and
the wafer's FMACs.

A float32 tensor rounds to any of them in one compiled pass (``round_scaled``, through
``hal.kernels._rounding_loops.round_float32``) with the bits of the casts it replaces; numpy's cast to
float16 alone took 2.6 ns an element, and a native-precision run rounds every matrix operand.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import ml_dtypes
import numpy as np

from hal.kernels import jit
from hal.perf.opcount import SEQUENCE_OPS

FORMATS = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8")

#: bytes per element each storage format occupies (``fp8_fnuz``: the e4m3fnuz variant of fp8 that
#: AMD's CDNA 3 matrix cores read, which a target names where its precision ``fp8`` means it)
ITEMSIZE = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "fp8_fnuz": 1, "int8": 1}

FP8_MAX = float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)  # 448
FP8_FNUZ_MAX = float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fnuz).max)  # 240

#: the fp8 formats and their ml_dtypes types: OCP e4m3fn (Transformer Engine's forward format on
#: Hopper), e4m3fnuz (exponent bias 8, no infinities, one NaN, no -0: MI300X's)
_FP8_TYPES = {"fp8": ml_dtypes.float8_e4m3fn, "fp8_fnuz": ml_dtypes.float8_e4m3fnuz}

#: the floating-point types ml_dtypes adds to numpy; their numpy kind is 'V', as its int4 types' is
_ML_FLOATS = frozenset(np.dtype(getattr(ml_dtypes, name)) for name in (
    "bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float4_e2m1fn")
    if hasattr(ml_dtypes, name))


def is_float(dtype: np.dtype) -> bool:
    """Whether ``dtype`` holds floating-point numbers: numpy's own, or bfloat16 and the float8 and
    float4 types ml_dtypes adds (a test of ``dtype.kind == "f"`` alone passes those by)."""
    return dtype.kind == "f" or dtype in _ML_FLOATS


def round_tf32(x: np.ndarray) -> np.ndarray:
    """fp32 with the mantissa rounded to TF32's 10 bits (round to nearest even), as fp32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32)
    lsb = (u >> 13) & 1
    r = ((u + 0x0FFF + lsb) & np.uint32(0xFFFFE000)).astype(np.uint32)
    finite = np.isfinite(x)
    return np.where(finite, r.view(np.float32), x)


#: the formats the compiled loop rounds float32 to, as its codes (``hal.kernels._rounding_loops``' TF32 ... INT8)
_LOOP_FORMATS = {"tf32": 0, "bf16": 1, "fp16": 2, "fp8": 3, "int8": 4}

#: the largest magnitude of the formats stored with a per-tensor scale, which maps a tensor's onto it
_TOP = {"fp8": FP8_MAX, "fp8_fnuz": FP8_FNUZ_MAX, "int8": 127.0}
#: the formats ``quantize`` stores with a scale (the others are rounded: ``round_to``)
SCALED_FORMATS = frozenset(_TOP)


def round_scaled(x: np.ndarray, fmt: str, scale: float = 1.0) -> np.ndarray | None:
    """``x / scale`` rounded to ``fmt`` and multiplied back by ``scale``, as a new float32 array in one
    compiled pass, each operation in float32 as numpy's: the bits of ``x / scale`` through the format's
    cast (fp8 clipped to its range first, int8 rounded and clipped), back to float32 and times ``scale``.
    None where that pass does not apply (x not a float32 array, an unknown format, the loops off)."""
    code = _LOOP_FORMATS.get(fmt)
    if code is None or x.__class__ is not np.ndarray or x.dtype != np.float32 or not jit.enabled():
        return None
    if not x.flags.c_contiguous:
        x = x.copy()
    out = np.empty(x.shape, dtype=np.float32)
    jit.loops().round_float32(x.reshape(-1), np.float32(scale), code, out.reshape(-1))
    return out


def round_fp16_per_tensor(x: np.ndarray) -> np.ndarray | None:
    """``x`` through fp16 with one power-of-two scale for the whole tensor, the one that puts its largest
    finite magnitude in [2**14, 2**15), the binade under fp16's top one, so no rounding can carry it past
    65504 (``hal.kernels._rounding_loops.round_fp16_per_tensor``: the maximum,
    the scale and the rounding in one compiled call), as a new float32 array; None where that call
    does not apply (x not a float32 array, the loops off)."""
    if "fp16" not in _LOOP_FORMATS or x.__class__ is not np.ndarray or x.dtype != np.float32 or not jit.enabled():
        return None
    x = np.ascontiguousarray(x)
    out = np.empty(x.shape, dtype=np.float32)
    jit.loops().round_fp16_per_tensor(x.reshape(-1), out.reshape(-1))
    return out


def round_to(x: np.ndarray, fmt: str) -> np.ndarray:
    """``x`` stored in ``fmt`` and read back as fp32 (int8 and fp8 use a per-tensor scale)."""
    if not is_float(x.dtype):
        return x
    if fmt == "fp32":
        return x
    if fmt in _TOP:
        if x.__class__ is np.ndarray and x.dtype == np.float32 and jit.enabled():
            # quantize's per-tensor scale, its amax from max and min (two passes, no |x| array);
            # a NaN among them makes both NaN: then the amax of the rest, as quantize takes it
            amax = np.maximum(x.max(), -x.min()) if x.size else np.float32(0)
            if amax != amax:
                amax = _amax(np.abs(x), None)
            fast = round_scaled(x, fmt, _scale(amax, fmt))
            if fast is not None:
                return fast
        q, scale = quantize(x, fmt)
        return (q.astype(np.float32) * scale).astype(x.dtype)
    if (fast := round_scaled(x, fmt)) is not None:
        return fast
    if fmt == "tf32":
        return round_tf32(x)
    if fmt == "bf16":
        return x.astype(ml_dtypes.bfloat16).astype(x.dtype)
    if fmt == "fp16":
        return x.astype(np.float16).astype(x.dtype)
    raise ValueError(f"unknown number format {fmt!r}; known: {', '.join(FORMATS)}")


#: float32's least subnormal, 2**-149: the smallest scale (every float32 is a multiple of it)
_LEAST_SCALE = np.float32(2.0 ** -149)


def _scale(amax: np.ndarray, fmt: str) -> np.ndarray:
    """The float32 scale that maps magnitude ``amax`` onto the format's largest (1 where amax is 0,
    infinite or NaN, as Transformer Engine's ``compute_scale_from_amax`` does: an infinity then
    saturates to the format's largest and the rest are cast unscaled, where a scale of infinity
    would make every value NaN); never below float32's least subnormal, where ``amax / top`` would
    round to 0 and every value divided by it to infinity or NaN (magnitudes under 2**-140 for fp8,
    2**-142 for int8)."""
    usable = (amax > 0) & np.isfinite(amax)
    return np.where(usable, np.maximum(np.where(usable, amax, 0) / _TOP[fmt], _LEAST_SCALE), 1.0).astype(np.float32)


def _amax(a: np.ndarray, axis: int | None) -> np.ndarray:
    """The largest of magnitudes ``a`` (over all, or over every axis but ``axis``, kept), NaNs passed
    over as the max reductions of Transformer Engine's amax kernels (``fmaxf``, ``__hmax``) pass
    them: a NaN stays NaN through the cast without setting every other value's scale; 0 where none."""
    if axis is None:
        return np.asarray(np.fmax.reduce(a, axis=None, initial=0.0), dtype=np.float32)
    red = tuple(i for i in range(a.ndim) if i != axis % a.ndim)
    return np.fmax.reduce(a, axis=red, keepdims=True, initial=0.0).astype(np.float32)


def _quantize_scale(x: np.ndarray, fmt: str, axis: int | None) -> np.ndarray:
    if fmt not in _TOP:
        raise ValueError(f"quantize supports fp8, fp8_fnuz and int8, not {fmt!r}")
    a = np.abs(x.astype(np.float32))
    if axis is None or a.size:
        amax = _amax(a, axis)
    else:
        amax = np.zeros((1,) * x.ndim, np.float32)
    return _scale(amax, fmt)


def quantize(x: np.ndarray, fmt: str, axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric quantisation to fp8 (e4m3fn; ``fp8_fnuz``: e4m3fnuz) or int8 with a scale per tensor or
    per ``axis`` slice."""
    scale = _quantize_scale(x, fmt, axis)
    y = x.astype(np.float32) / scale
    if fmt in _FP8_TYPES:
        q = np.clip(y, -_TOP[fmt], _TOP[fmt]).astype(_FP8_TYPES[fmt])
    else:
        r = np.clip(np.rint(y), -127, 127)
        q = np.where(r == r, r, 0).astype(np.int8)  # a NaN: 0, as cvt.rni.s8.f32 and the compiled loop give
    return q, scale


def quantize_codes(x: np.ndarray, fmt: str, axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``quantize``'s codes as float32 values, and its scale: the codes through the compiled rounding
    pass (``round_scaled``, the casts' bits) where it applies, not through ml_dtypes' casts and back
    (bert-bench's 512 x 384 activations to fp8: 1.41 ms that way, 0.09 ms this way)."""
    scale = _quantize_scale(x, fmt, axis)
    fast = round_scaled(np.divide(x, scale, dtype=np.float32), fmt) if x.dtype == np.float32 else None
    if fast is not None:
        return fast, scale
    q, scale = quantize(x, fmt, axis)
    return q.astype(np.float32), scale


@dataclass(frozen=True)
class Policy:
    """How a target computes at one precision setting.

    ``matmul_inputs``: format of MatMul/Gemm/Conv activations; ``matmul_weights``: format of their
    weights; ``storage``: format activations are stored in between kernels; accumulation is fp32.
    """

    name: str
    matmul_inputs: str = "fp32"
    matmul_weights: str = "fp32"
    storage: str = "fp32"

    @property
    def exact(self) -> bool:
        return self.matmul_inputs == self.matmul_weights == self.storage == "fp32"

    @property
    def weight_itemsize(self) -> int:
        return ITEMSIZE[self.matmul_weights]

    @property
    def act_itemsize(self) -> int:
        return ITEMSIZE[self.storage]


EXACT = Policy("exact")


def policy(precision: str, native: Policy) -> Policy:
    """The policy for a user's ``precision``: ``exact``, the target's ``native`` one, or a named format
    applied to matmul inputs and weights. ``fp8`` and ``int8`` store activations in 16 bits (the
    native storage format, else bf16); ``fp8`` feeds the matrix units fp8 activations (one scale per
    tensor) and weights (one per output channel), ``int8`` is weight-only (W8A16): int8 weights with a
    scale per output channel, activations read in that 16-bit format (an LPU's own int8 policy,
    ``hal_lpu.precision``, quantises its activations too)."""
    if precision == "exact":
        return EXACT
    if precision == "native":
        return native
    if precision in ("fp32", "tf32"):
        return Policy(precision, precision, precision, "fp32")
    if precision in ("bf16", "fp16"):
        return Policy(precision, precision, precision, precision)
    if precision in ("fp8", "int8"):
        act = native.storage if native.storage != "fp32" else "bf16"
        return Policy(precision, precision if precision == "fp8" else act, precision, act)
    raise ValueError(f"unknown precision {precision!r}")


# -- applying a policy to a program of engine steps --------------------------------------------

#: ops that run on matrix units: (activation input positions, weight input positions, weight out-channel axis)
MATRIX_OPS: dict[str, tuple[tuple[int, ...], tuple[int, ...], int]] = {
    "MatMul": ((0, 1), (1,), -1),
    "Gemm": ((0, 1), (1,), -1),
    "Conv": ((0, 1), (1,), 0),
    "ConvTranspose": ((0, 1), (1,), 1),
    "Einsum": ((0, 1), (), 0),
    # W and R of the recurrent ops: (directions, gates * hidden, in); their state is rounded inside
    "RNN": ((0, 1, 2), (1, 2), 1),
    "GRU": ((0, 1, 2), (1, 2), 1),
    "LSTM": ((0, 1, 2), (1, 2), 1),
    # opset 23's Attention rounds Q, K, V and its probabilities inside, after scaling
    "Attention": ((), (), 0),
    # onnxruntime's (domain com.microsoft): the fusions as the ops they fuse; MatMulNBits's weight is
    # already blocks of 4-bit codes, and its A rounds; its attention ops round inside as Attention
    # (its Attention also its input and packed weights)
    "FusedConv": ((0, 1), (1,), 0),
    "FusedGemm": ((0, 1), (1,), -1),
    "FusedMatMul": ((0, 1), (1,), -1),
    "MatMulNBits": ((0,), (), 0),
    "MultiHeadAttention": ((), (), 0),
    "GroupQueryAttention": ((), (), 0),
    "QAttention": ((), (), 0),  # its projection is an integer product: no rounding
}


def matrix_operands(op_type: str, attrs: dict) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """MATRIX_OPS's entry for a step: its weight's out-channel axis as its attributes lay the
    weight out (a transposed B holds the channels first: Gemm's and FusedGemm's axis 0,
    FusedMatMul's the one before last)."""
    acts, wpos, axis = MATRIX_OPS[op_type]
    if attrs.get("transB", 0):
        if op_type in ("Gemm", "FusedGemm"):
            axis = 0
        elif op_type == "FusedMatMul":
            axis = -2
    return acts, wpos, axis

#: matrix ops whose kernels also multiply values they make themselves (a recurrent op's state, at
#: every step; Attention's probabilities): the cost models' chained products
#: (``hal.perf.opcount.SEQUENCE_OPS``). A policy hands them ``_round_operand``, the rounding of
#: an operand as the matrix unit reads it, since rounding their inputs alone would leave those
#: products exact (before, an LSTM at ``native`` gave fp32's bits on every target)
INNER_PRODUCT_OPS = SEQUENCE_OPS


def with_operand_rounding(fn, op_type: str, round_operand):
    """``fn`` handed ``round_operand`` where ``op_type`` is one of INNER_PRODUCT_OPS; else ``fn``."""
    if op_type not in INNER_PRODUCT_OPS:
        return fn
    return partial(fn, _round_operand=round_operand)


def _matrix_call(fn, fmt_in: str, store: str, act_positions: tuple[int, ...], *args, **attrs):
    args = list(args)
    for i in act_positions:
        if i < len(args) and isinstance(args[i], np.ndarray) and is_float(args[i].dtype):
            args[i] = round_to(args[i], fmt_in)
    out = fn(*args, **attrs)  # numpy accumulates fp32 products of the rounded inputs: fp32 accumulation
    return store_value(out, store)


def _stored_call(fn, store: str, *args, **attrs):
    return store_value(fn(*args, **attrs), store)


def store_value(out, store: str):
    """A kernel's result stored in ``store`` (fp32 as is; its float32 arrays rounded, tuples item by item)."""
    if store == "fp32":
        return out
    if isinstance(out, tuple):
        return tuple(store_value(o, store) for o in out)
    if isinstance(out, np.ndarray) and out.dtype == np.float32:
        return round_to(out, store)
    return out


def apply_policy(steps: list, initializers: dict, policy: Policy) -> tuple[list, dict]:
    """Steps and weights that compute the way ``policy`` says; the reference steps when exact.

    Matrix-unit ops get their activation inputs rounded to ``policy.matmul_inputs`` and their
    weights quantised once, here, to ``policy.matmul_weights`` (per output channel for fp8/int8);
    every float32 result is stored in ``policy.storage``: where that is fp32, a step other than a
    matrix op is returned as it came. Returns (steps, replaced weights, and the matrix ops' own rounded
    copies, ``name#mxm``, of weights other steps also read).
    """
    if policy.exact:
        return steps, {}
    # weights some step reads other than as a matrix op's weight (a tied embedding's Gather): the
    # matrix ops get a rounded copy of their own (``name#mxm``), the other steps the weight as it is
    other = {name for s in steps for i, name in enumerate(s.ins) if name in initializers
             and (s.op_type not in MATRIX_OPS or i not in matrix_operands(s.op_type, s.attrs)[1])}
    weights: dict[str, np.ndarray] = {}
    out = []
    for s in steps:
        if s.op_type in MATRIX_OPS:
            acts, wpos, axis = matrix_operands(s.op_type, s.attrs)
            act_positions = []
            ins = list(s.ins)
            for i in acts:
                name = s.ins[i] if i < len(s.ins) else ""
                w = initializers.get(name) if name else None
                if i in wpos and isinstance(w, np.ndarray) and is_float(w.dtype):
                    key = f"{name}#mxm" if name in other else name
                    if key not in weights:
                        weights[key] = _quantize_axis(w, policy.matmul_weights, axis)
                    ins[i] = key
                else:  # an activation, or a constant where the op reads no weight (Einsum's, MatMul's A):
                    act_positions.append(i)  # rounded as it is read, as the GPU's and LPU's programs do
            fn = with_operand_rounding(s.fn, s.op_type, partial(round_to, fmt=policy.matmul_inputs))
            out.append(replace(s, ins=ins, fn=partial(_matrix_call, fn, policy.matmul_inputs, policy.storage,
                                                      tuple(act_positions))))
        elif policy.storage != "fp32":
            out.append(replace(s, fn=partial(_stored_call, s.fn, policy.storage)))
        else:  # results kept in fp32: the step as it is (and free to fuse with its neighbours)
            out.append(s)
    return out, weights


def _quantize_axis(w: np.ndarray, fmt: str, axis: int) -> np.ndarray:
    if fmt not in _TOP:
        return round_to(w, fmt)
    q, scale = quantize(w, fmt, axis=axis)
    return (q.astype(np.float32) * scale).astype(w.dtype)
