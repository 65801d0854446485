"""Linear quantisation kernels: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear.

Scales and zero points are per tensor (a scalar or a one-element vector), per axis (a vector along
``axis``) or blocked (the input's rank, ``ceil(D/block_size)`` along ``axis``); all three broadcast
against the input through ``_expand``. Integer targets round half to even and saturate to their
range; the 8-bit floats saturate (or not) as Cast does; float4 saturates by construction. Every
small type (int4/uint4, int2/uint2, float4e2m1, the float8 family) comes from ml_dtypes.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
from onnx.helper import tensor_dtype_to_np_dtype

from hal.kernels import jit
from hal.kernels._axes import axis_in
from hal.kernels.logic import cast_to
from hal.kernels.registry import kernel

Array = np.ndarray

# Integer quantised types and their saturation ranges (ml_dtypes' int4 / int2 have no numpy iinfo).
_INT_RANGES: dict[np.dtype, tuple[int, int]] = {
    np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127),
    np.dtype(np.uint16): (0, 65535), np.dtype(np.int16): (-32768, 32767),
    np.dtype(ml_dtypes.uint4): (0, 15), np.dtype(ml_dtypes.int4): (-8, 7),
    np.dtype(ml_dtypes.uint2): (0, 3), np.dtype(ml_dtypes.int2): (-2, 1),
    np.dtype(np.int32): (-(2 ** 31), 2 ** 31 - 1),
}
_FLOAT8 = {np.dtype(t) for t in (ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz,
                                  ml_dtypes.float8_e5m2, ml_dtypes.float8_e5m2fnuz)}
_WIDE_FLOATS = {np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)}


def _expand(value: Array, shape: tuple[int, ...], axis: int, block_size: int) -> Array:
    """A scale or zero point shaped to broadcast against an input of ``shape``."""
    value = np.asarray(value)
    if value.size == 1:  # a one-element scale is per tensor, whatever its rank
        return value.reshape(())
    axis = axis_in(axis, len(shape))
    if not block_size:
        if value.ndim != 1:
            raise ValueError(f"per-axis quantisation needs a 1-D scale, got shape {value.shape}")
        dims = [1] * len(shape)
        dims[axis] = value.size
        return value.reshape(dims)
    if block_size < 0:
        raise ValueError("block_size must be positive")
    if value.ndim != len(shape):
        raise ValueError(f"blocked quantisation needs a scale of rank {len(shape)}, got shape {value.shape}")
    blocks = -(-shape[axis] // block_size)
    if value.shape[axis] != blocks:
        raise ValueError(f"block_size {block_size} cuts axis {axis} of an input of shape {shape} into {blocks} "
                         f"block(s), but the scale has {value.shape[axis]}")
    # a block longer than the axis is the axis: repeating by more would only be sliced off
    full = np.repeat(value, min(block_size, shape[axis]), axis=axis)
    full = full[(slice(None),) * axis + (slice(0, shape[axis]),)]
    if full.shape != tuple(shape):
        raise ValueError(f"blocked scale of shape {value.shape} does not fit input of shape {shape}")
    return full


def _dtype(code: int) -> np.dtype:
    return np.dtype(tensor_dtype_to_np_dtype(code))


def saturate_int(q: Array, dtype: np.dtype) -> Array:
    """Rounded values ``q`` as the integer ``dtype``, saturated to its range. A NaN (a zero or NaN
    scale, an infinite input over an infinite scale) becomes the range's lowest value, as in
    onnxruntime, whose clamp keeps the NaN and whose conversion reads it as INT32_MIN; the spec
    leaves it open, and a plain cast would wrap it to whatever its low bits say (0 for int8)."""
    lo, hi = _INT_RANGES[dtype]
    with np.errstate(invalid="ignore"):
        q = np.clip(q, lo, hi)
        return np.where(np.isnan(q), lo, q).astype(np.int64).astype(dtype)


_F32 = np.dtype(np.float32)
_CODES = (np.dtype(np.int8), np.dtype(np.uint8))


def _channels(x: Array, scale: Array, zero: Array | None, axis: int
              ) -> tuple[tuple[int, int, int], Array, Array] | None:
    """x's (outer, channels, inner) view for a scale (and zero point) per tensor or per axis, with both
    as 1-D float32 and float64 arrays of one value a channel; None where the scale fits neither."""
    if scale.size == 1 and (zero is None or np.size(zero) == 1):
        shape = (1, 1, x.size)
    else:
        if scale.ndim != 1 or (zero is not None and np.shape(zero) != scale.shape) or not x.ndim:
            return None
        axis = axis_in(axis, x.ndim)
        if x.shape[axis] != scale.size:
            return None
        shape = (int(np.prod(x.shape[:axis])), scale.size, int(np.prod(x.shape[axis + 1:])))
    z = np.zeros(scale.size, np.float64) if zero is None else np.asarray(zero, np.float64).reshape(-1)
    return shape, np.ascontiguousarray(scale, _F32).reshape(-1), z


def _quantize_compiled(x: Array, scale: Array, zero: Array | None, axis: int, out: np.dtype,
                       dequantized: bool = False) -> Array | None:
    """QuantizeLinear of float32 to int8 or uint8, per tensor or per axis, in one compiled pass
    (``hal.kernels._quant_loops``, the numpy path's bits: a QDQ squeezenet's 41 QuantizeLinears,
    per tensor took 8.8 ms a run that way, 0.6 this way), or with ``dequantized`` its codes
    dequantized again with the same scale and zero point, as float32; None where it does not apply
    (x or the scale not float32, codes of another type, the loops off)."""
    if not (out in _CODES and x.dtype == _F32 == scale.dtype and x.size and jit.enabled()):
        return None
    got = _channels(x, scale, zero, axis)
    if got is None:
        return None
    shape, s, z = got
    lo, hi = _INT_RANGES[out]
    y = np.empty(x.shape, _F32 if dequantized else out)
    jit.loops().quantize_float32(np.ascontiguousarray(x).reshape(shape), s, z, float(lo), float(hi), dequantized,
                                 y.reshape(shape))
    return y


@kernel("QuantizeLinear", since=10)
def quantize_linear(x: Array, y_scale: Array, y_zero_point: Array | None = None, axis: int = 1,
                    saturate: int = 1, block_size: int = 0, output_dtype: int = 0, precision: int = 0
                    ) -> Array:
    if y_zero_point is not None:
        out = np.asarray(y_zero_point).dtype
        if output_dtype and _dtype(output_dtype) != out:
            raise ValueError(f"QuantizeLinear output_dtype {_dtype(output_dtype)} differs from zero point's {out}")
    else:
        out = _dtype(output_dtype) if output_dtype else np.dtype(np.uint8)
    y_scale = np.asarray(y_scale)
    # The division runs in ``precision`` if given, else in the scale's type (16-bit floats included).
    work = _dtype(precision) if precision else y_scale.dtype
    fast = _quantize_compiled(x, y_scale, y_zero_point, axis, out) if work == _F32 and not block_size else None
    if fast is not None:
        return fast
    scale = _expand(y_scale, x.shape, axis, block_size).astype(work)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = np.asarray(x.astype(work) / scale)
        if out in _INT_RANGES:
            q = np.rint(q.astype(np.float64))
            if y_zero_point is not None:
                q = q + _expand(y_zero_point, x.shape, axis, block_size).astype(np.float64)
            return saturate_int(q, out)
        if y_zero_point is not None:  # float targets: the zero point is (almost always) 0, but is honoured
            zp = _expand(y_zero_point, x.shape, axis, block_size).astype(np.float32)
            if np.any(zp):  # adding a zero point of 0 would turn -0 into +0 (onnxruntime and onnx keep -0)
                q = q.astype(np.float32) + zp
        q = q.astype(np.float32)  # one rounding to the 8/4-bit float, from float32 as Cast does
        if out in _FLOAT8:
            return cast_to(q, out, saturate)
        if out == np.dtype(ml_dtypes.float4_e2m1fn):  # no inf / NaN: the cast saturates by itself
            return np.asarray(q.astype(out))
    raise ValueError(f"QuantizeLinear cannot quantise to {out}")


@kernel("DequantizeLinear", since=10)
def dequantize_linear(x: Array, x_scale: Array, x_zero_point: Array | None = None, axis: int = 1,
                      block_size: int = 0, output_dtype: int = 0) -> Array:
    x_scale = np.asarray(x_scale)
    out = _dtype(output_dtype) if output_dtype else x_scale.dtype
    if (out == _F32 == x_scale.dtype and x.dtype in _CODES and not block_size and x.size and jit.enabled()
            and (x_zero_point is None or np.asarray(x_zero_point).dtype == x.dtype)
            and (got := _channels(x, x_scale, x_zero_point, axis)) is not None):
        # one compiled pass (``hal.kernels._quant_loops``), the bits of the numpy path below
        shape, s, z = got
        y = np.empty(x.shape, _F32)
        jit.loops().dequantize_float32(np.ascontiguousarray(x).reshape(shape), s, z, y.reshape(shape))
        return y
    # The product runs in the output type; 16-bit floats multiply in float32 and round once.
    work = np.dtype(np.float32) if out in _WIDE_FLOATS else out
    dx = x.astype(np.float32 if x.dtype in _FLOAT8 or x.dtype.kind == "V" else np.float64)
    if x_zero_point is not None and x.dtype in _INT_RANGES:
        if np.asarray(x_zero_point).dtype != x.dtype:
            raise ValueError(f"DequantizeLinear zero point type {x_zero_point.dtype} differs from input's {x.dtype}")
        dx = dx - _expand(x_zero_point, x.shape, axis, block_size).astype(dx.dtype)
    scale = _expand(x_scale, x.shape, axis, block_size).astype(work)
    return np.asarray(dx.astype(work) * scale).astype(out)


@kernel("DynamicQuantizeLinear", since=11)
def dynamic_quantize_linear(x: Array) -> tuple[Array, Array, Array]:
    """uint8 quantisation whose range always holds 0: scale = (max - min) / 255, zero point rounds.

    Non-finite inputs follow onnx's reference (``onnx.reference`` DynamicQuantizeLinear), where
    the peers part:

    * Any NaN (all NaN, some NaN, NaN beside an infinity) makes the range NaN: scale NaN, zero
      point 255 (the reference's ``max(0, min(255, nan))`` reads the NaN as 255) and every code 0
      (x / NaN is NaN, which ``saturate_int`` makes the lowest code; the reference's NaN-to-uint8
      cast gives 0 on x86). onnxruntime's CPU provider agrees only sometimes: its vectorised
      min/max (8 or more elements) keeps a NaN by lane position, so an all-NaN input of 8+ gives
      NaN and 255, one of 1-7 gives 1.0 and 0, and a single NaN among finite values is dropped
      (with or without a neighbour's value) at most positions but kept at the last. No rule
      reproduces that, so hal takes the reference's.
    * An infinity is kept in the range (scale inf; zero point 255 for -inf, 0 for +inf alone,
      and 255 for both, whose -inf / inf is NaN): onnx's reference and onnxruntime agree.

    Where the reference gives no usable answer hal keeps onnxruntime's (and its own earlier) one: an
    empty input (the reference's max of nothing raises) gives scale 1.0, zero point 0; an all-zero
    input, whose spec formula gives a zero scale, gives scale 1.0 as onnxruntime's does (the
    reference writes 1/255 there; finite data is left as it was)."""
    x32 = x.astype(np.float32)
    if x32.size and np.isnan(x32).any():
        with np.errstate(invalid="ignore"):
            y = saturate_int(np.full(x32.shape, np.nan), np.dtype(np.uint8))
        return y, np.asarray(np.float32(np.nan), dtype=x.dtype), np.asarray(255, dtype=np.uint8)
    hi = np.float32(max(0.0, float(np.fmax.reduce(x32, axis=None)))) if x32.size else np.float32(0)
    lo = np.float32(min(0.0, float(np.fmin.reduce(x32, axis=None)))) if x32.size else np.float32(0)
    scale = np.float32(1.0) if hi == lo else np.float32((hi - lo) / np.float32(255))
    with np.errstate(invalid="ignore"):
        initial = np.float32(0) - lo / scale
        # an infinite range gives a NaN here (-inf / inf), which onnxruntime's min(255, z) reads as 255
        zero_point = np.float32(255) if np.isnan(initial) else np.rint(np.clip(initial, 0, 255))
        y = saturate_int(np.rint(x32 / scale) + zero_point, np.dtype(np.uint8))
    return y, np.asarray(scale, dtype=x.dtype), np.asarray(zero_point).astype(np.uint8)
