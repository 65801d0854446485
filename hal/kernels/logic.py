"""Logic, comparison and cast kernels: comparisons, And / Or / Xor / Not, Where, Cast, CastLike, BitCast.

Casts cover every ONNX dtype through ml_dtypes (bfloat16, the float8 family, float4, int4/uint4,
int2/uint2), float8 saturation, the float8e8m0 rounding modes, and strings in both directions.
"""

from __future__ import annotations

from collections.abc import Callable

import ml_dtypes
import numpy as np
from onnx import TensorProto
from onnx.helper import tensor_dtype_to_np_dtype

from hal.kernels.elementwise import legacy_broadcast
from hal.kernels.registry import kernel

Array = np.ndarray


def _arr(x: object) -> Array:
    return x if isinstance(x, np.ndarray) else np.asarray(x)


# ---- comparison and boolean logic ---------------------------------------------------------------

def _compare(ufunc: np.ufunc) -> Callable[[Array, Array], Array]:
    def run(a: Array, b: Array) -> Array:
        if a.dtype == object or b.dtype == object:  # string tensors compare elementwise as Python objects
            return _arr(ufunc(a, b)).astype(np.bool_)
        return _arr(ufunc(a, b))

    return run


_BINARY: list[tuple[str, np.ufunc, int]] = [
    ("Equal", np.equal, 7), ("Less", np.less, 7), ("Greater", np.greater, 7),
    ("LessOrEqual", np.less_equal, 12), ("GreaterOrEqual", np.greater_equal, 12),
    ("And", np.logical_and, 7), ("Or", np.logical_or, 7), ("Xor", np.logical_xor, 7),
]


def _register(op: str, fn: Callable[[Array, Array], Array], modern: int) -> None:
    fn.__name__ = op.lower()
    kernel(op, since=modern)(fn)
    if modern == 7:  # opset 1 carried the limited broadcast / axis attributes

        def legacy(a: Array, b: Array, broadcast: int = 0, axis: int | None = None) -> Array:
            return fn(a, legacy_broadcast(a, b, broadcast, axis))

        legacy.__name__ = f"{op.lower()}_legacy"
        kernel(op, since=1)(legacy)


for _op, _ufunc, _since in _BINARY:
    _register(_op, _compare(_ufunc), _since)


@kernel("Not", since=1)
def not_(x: Array) -> Array:
    return _arr(np.logical_not(x))


@kernel("Where", since=9)
def where(condition: Array, x: Array, y: Array) -> Array:
    return _arr(np.where(condition, x, y))


# ---- Cast ---------------------------------------------------------------------------------------

_FLOAT8 = {np.dtype(t) for t in (ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz,
                                  ml_dtypes.float8_e5m2, ml_dtypes.float8_e5m2fnuz)}
_E8M0 = np.dtype(ml_dtypes.float8_e8m0fnu)
_STRING = np.dtype(object)


def _to_e8m0(x: Array, saturate: int, round_mode: str) -> Array:
    """float8e8m0 keeps only a float32's exponent; ``round_mode`` says which way the mantissa goes."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32)
    exponent = ((bits >> 23) & 0xFF).astype(np.uint16)
    mantissa = bits & 0x7FFFFF
    special = exponent == 0xFF
    if round_mode == "up":
        bump = mantissa != 0
    elif round_mode == "nearest":  # halfway rounds up, except out of the float32 subnormal range
        bump = ((mantissa & 0x400000) != 0) & (((mantissa & 0x3FFFFF) != 0) | (exponent > 0))
    elif round_mode == "down":
        bump = np.zeros(bits.shape, dtype=bool)
    else:
        raise ValueError(f"Cast round_mode must be up, down or nearest, got {round_mode!r}")
    bump &= ~special
    if saturate:
        bump &= exponent != 0xFE
    exponent += bump
    exponent[special] = 0xFF
    return exponent.astype(np.uint8).view(_E8M0)


def _from_strings(x: Array, dtype: np.dtype) -> Array:
    def parse(s: object) -> object:
        text = s.decode() if isinstance(s, bytes) else str(s)
        if dtype.kind in "iu":
            try:
                return int(text)
            except ValueError:
                return int(float(text))
        return float(text)  # float() reads INF, +INF, -inf and NaN in any case

    wide = np.float64 if dtype.kind not in "iu" else (np.uint64 if dtype.kind == "u" else np.int64)
    values = np.array([parse(s) for s in x.ravel()], dtype=wide).reshape(x.shape)
    return values.astype(dtype)


def _to_strings(x: Array) -> Array:
    # numpy prints each value's shortest round-tripping form in its own precision ("0.1" for float32)
    if x.dtype.kind == "V":
        x = x.astype(np.float32)
    return x.astype(np.str_).astype(object)


def cast_to(x: Array, dtype: np.dtype, saturate: int = 1, round_mode: str = "up") -> Array:
    """``x`` converted to ``dtype`` with ONNX Cast semantics (object dtype means string)."""
    if dtype == _STRING:
        return x if x.dtype == _STRING else _to_strings(x)
    if x.dtype == _STRING:
        return _from_strings(x, dtype)
    if x.dtype == dtype:
        return x
    if dtype in _FLOAT8 and saturate:
        fi = ml_dtypes.finfo(dtype)
        x = np.clip(x.astype(np.float32) if x.dtype.kind not in "f" else x, float(fi.min), float(fi.max))
        return _arr(x).astype(dtype)
    if dtype == _E8M0:
        return _to_e8m0(x, saturate, round_mode)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN / out-of-range to integers is undefined in ONNX
        return _arr(x.astype(dtype))


def _np_dtype(to: int) -> np.dtype:
    return _STRING if to == TensorProto.STRING else np.dtype(tensor_dtype_to_np_dtype(to))


@kernel("Cast", since=1)
def cast(x: Array, to: int | str = TensorProto.FLOAT, saturate: int = 1, round_mode: str = "up") -> Array:
    if isinstance(to, str):  # opset 1 named the type as a string
        to = TensorProto.DataType.Value(to.upper())
    return cast_to(x, _np_dtype(int(to)), saturate, round_mode)


@kernel("CastLike", since=15)
def cast_like(x: Array, target_type: Array, saturate: int = 1, round_mode: str = "up") -> Array:
    return cast_to(x, target_type.dtype, saturate, round_mode)


@kernel("BitCast", since=26)
def bitcast(x: Array, to: int) -> Array:
    dtype = _np_dtype(to)
    if dtype == _STRING or x.dtype == _STRING:
        raise ValueError("BitCast does not take or give strings")
    if dtype.itemsize != x.dtype.itemsize:
        raise ValueError(f"BitCast needs equal bit widths, got {x.dtype} and {dtype}")
    return x.view(dtype)
