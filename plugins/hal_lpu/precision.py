"""The LPU's number formats: what the MXM is fed at each precision setting, through hal.numerics.

The MXM multiplies fp16 or int8 operands and accumulates in fp32; the VXM computes in fp32. At
``native`` the compiler feeds the MXM fp16 with a power-of-two scale per tensor (an exponent offset
the VXM applies for free), so the error is fp16's 11-bit mantissa while the range follows the
data; at ``int8`` activations are quantised per tensor and weights per output channel, with their
scales. ``fp16`` also stores every VXM result in fp16, unscaled, as a plain fp16 pipeline would.
An explicitly quantized model's GEMMs take the model's own int8 codes at every precision but exact
(``hal_lpu.lowering.int8_products``): int8 x int8 products summed exactly and scaled after, which is
the reference's float product of the dequantized operands up to fp32 rounding, so those steps
multiply their operands as they are, and the codes' DequantizeLinear outputs are never rounded.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np

from hal.errors import CompileError
from hal.numerics import (
    EXACT,
    MATRIX_OPS,
    Policy,
    is_float,
    matrix_operands,
    quantize,
    round_fp16_per_tensor,
    round_scaled,
    round_to,
    store_value,
    with_operand_rounding,
)
from hal_lpu.lowering import NO_INT8, Int8Products


def lpu_policy(precision: str) -> Policy:
    """MXM inputs in fp16 (native) or int8 with scales (int8), fp32 accumulation; VXM keeps fp32."""
    if precision == "exact":
        return EXACT
    if precision == "native":
        return Policy("native", matmul_inputs="fp16", matmul_weights="fp16", storage="fp32")
    if precision == "fp16":
        return Policy("fp16", matmul_inputs="fp16", matmul_weights="fp16", storage="fp16")
    if precision == "int8":
        return Policy("int8", matmul_inputs="int8", matmul_weights="int8", storage="fp32")
    raise CompileError(f"the lpu target does not offer precision {precision!r}", where="target 'lpu'",
                       hint="it offers: exact, native, fp16, int8")


def round_scaled_fp16(x: np.ndarray) -> np.ndarray:
    """``x`` as the MXM sees it in fp16: scaled by a power of two so its largest magnitude sits just
    under fp16's top binade, rounded to fp16, scaled back (the scaling itself is exact)."""
    if not isinstance(x, np.ndarray) or not is_float(x.dtype) or x.size == 0:
        return x
    if x.size <= SMALL_OPERAND and (fast := round_fp16_per_tensor(x)) is not None:
        return fast  # the largest magnitude, the scale and the rounding in one call
    amax = _finite_amax(x)
    if amax == 0.0:
        return round_to(x, "fp16")
    # 2**floor(log2(amax)) is 2**(e - 1) for amax = m 2**e, 0.5 <= m < 1; never below the dtype's
    # least subnormal, which every value is a multiple of (a smaller scale would be 0)
    least = _LEAST_EXPONENT.get(x.dtype, -149)
    scale = x.dtype.type(math.ldexp(1.0, max(math.frexp(amax)[1] - 15, least)))
    fast = round_scaled(x, "fp16", scale)
    return fast if fast is not None else (round_to(x / scale, "fp16") * scale).astype(x.dtype)


#: up to this many elements, a float32 operand's scale and rounding are one compiled call (tiny-gpt's
#: 16x64 operands: 2.1 us, against 4.0 through a compiled maximum and a compiled rounding with Python
#: between them); past it numpy's vectorised max and min are faster than the loop's maximum (800K
#: floats: 225 against 375 us)
SMALL_OPERAND = 1 << 14


#: the exponent of each dtype's least subnormal: the smallest per-tensor scale it can hold
_LEAST_EXPONENT = {np.dtype(np.float16): -24, np.dtype(np.float32): -149, np.dtype(np.float64): -1074}


def _finite_amax(x: np.ndarray) -> float:
    """The largest finite magnitude in x (0 when none)."""
    hi, lo = float(x.max()), float(x.min())
    if math.isfinite(hi) and math.isfinite(lo):
        return max(hi, -lo)
    finite = np.abs(x[np.isfinite(x)])  # NaN or infinities: the rest
    return float(finite.max()) if finite.size else 0.0


def mxm_operand(x: Any, fmt: str) -> Any:
    """An activation operand of the MXM in ``fmt`` (fp16 scaled per tensor, or int8 with a scale)."""
    if not isinstance(x, np.ndarray) or not is_float(x.dtype) or fmt == "fp32":
        return x
    return round_scaled_fp16(x) if fmt == "fp16" else round_to(x, fmt)


def mxm_weight(w: np.ndarray, fmt: str, axis: int) -> np.ndarray:
    """A weight installed in the MXM: fp16 scaled per tensor, or int8 per output channel."""
    if not is_float(w.dtype) or fmt == "fp32":
        return w
    if fmt == "int8":
        q, scale = quantize(w, "int8", axis=axis)
        return (q.astype(np.float32) * scale).astype(w.dtype)
    return round_scaled_fp16(w)


def mxm_call(fn: Any, fmt: str, store: str, positions: tuple[int, ...], /, *args: Any, **attrs: Any) -> Any:
    """A matrix op on the MXM: operands in ``fmt``, products accumulated in fp32 (numpy's float32
    matmul of the rounded operands), the result stored in ``store``."""
    operands = list(args)
    for i in positions:
        if i < len(operands):
            operands[i] = mxm_operand(operands[i], fmt)
    out = fn(*operands, **attrs)
    return out if store == "fp32" else store_value(out, store)


def vxm_call(fn: Any, store: str, /, *args: Any, **attrs: Any) -> Any:
    return store_value(fn(*args, **attrs), store)


def apply_lpu_policy(steps: list, weights: dict[str, Any], policy: Policy,
                     int8: Int8Products = NO_INT8) -> tuple[list, dict[str, np.ndarray]]:
    """Steps computing as the LPU does under ``policy``, and the weights the MXM installs (new or
    replaced ones only). A weight that other ops also read gets its own MXM copy (``name#mxm``);
    ``int8``'s products and codes are computed as they are (at most stored in the policy's format)."""
    if policy.exact:
        return steps, {}
    as_weight: dict[str, int] = {}
    other: set[str] = set()
    for s in steps:
        wpos = MATRIX_OPS[s.op_type][1] if s.op_type in MATRIX_OPS and s.label not in int8.nodes else ()
        for i, name in enumerate(s.ins):
            if name in weights:
                if i in wpos:
                    as_weight[name] = as_weight.get(name, 0) + 1
                else:
                    other.add(name)
    installed: dict[str, np.ndarray] = {}
    out = []
    for s in steps:
        if s.label in int8.nodes or (s.outs and all(o in int8.codes for o in s.outs)):
            out.append(s if policy.storage == "fp32" or s.label not in int8.nodes
                       else replace(s, fn=partial(vxm_call, s.fn, policy.storage)))
        elif s.op_type in MATRIX_OPS:
            acts, wpos, axis = matrix_operands(s.op_type, s.attrs)
            ins = list(s.ins)
            positions = []
            for i in acts:
                name = ins[i] if i < len(ins) else ""
                w = weights.get(name) if name else None
                if i in wpos and isinstance(w, np.ndarray) and is_float(w.dtype):
                    key = f"{name}#mxm" if name in other else name
                    if key not in installed:
                        installed[key] = mxm_weight(w, policy.matmul_weights, axis)
                    ins[i] = key
                else:
                    positions.append(i)
            fn = with_operand_rounding(s.fn, s.op_type, partial(mxm_operand, fmt=policy.matmul_inputs))
            out.append(replace(s, ins=ins, fn=partial(mxm_call, fn, policy.matmul_inputs, policy.storage,
                                                      tuple(positions))))
        elif policy.storage != "fp32":
            out.append(replace(s, fn=partial(vxm_call, s.fn, policy.storage)))
        else:
            out.append(s)
    return out, installed
