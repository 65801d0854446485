"""onnxruntime's quantized contrib ops (domain ``com.microsoft``), as its quantizer writes them in
the QOperator format and as the ONNX Model Zoo's int8 models hold them: QLinearAdd, QLinearMul,
QLinearSigmoid, QLinearLeakyRelu, QLinearSoftmax, QLinearConcat, QLinearGlobalAveragePool,
QLinearAveragePool and QGemm; and the two its graph optimiser fuses a dynamically quantized MatMul
into, as a model it saved holds them: MatMulIntegerToFloat and DynamicQuantizeMatMul. onnx defines
none of them; their contract is onnxruntime's
(``docs/ContribOperators.md``), and so is their arithmetic where it is fixed:

* a unary op (Sigmoid, LeakyRelu) and a Concat input whose scale or zero point differs from the
  output's map each of the 256 codes through a table: dequantise, apply, quantise, as onnxruntime
  builds its lookup tables;
* Add and Mul work in float32 on the codes less their zero points, times scale ratios formed once
  (A's scale over C's, or A's times B's over C's), rounded half to even;
* the softmax indexes a table of exponentials by each code's distance from its row's largest and
  divides in float32, as onnxruntime's integer softmax does;
* the average pool sums dequantised windows and counts a ceil-mode overhang with
  count_include_pad (the float AveragePool does not); the global pool sums the centred codes
  exactly and scales once;
* QGemm accumulates the centred codes exactly (int32's range, in float64) with its int32 bias, then
  scales by alpha and the scales: quantised to Y's zero point's type, or float32 without y_scale;
  MatMulIntegerToFloat the same, to float32, plus its float bias; DynamicQuantizeMatMul first
  quantises A as DynamicQuantizeLinear does.

Results saturate to the output type's range; a NaN quantises to its lowest value
(``hal.kernels.quantize.saturate_int``). Shapes for compile-time planning come from
``hal.graph.contrib``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hal.kernels.pool import _pool_setup, _reduce_windows
from hal.kernels.quantize import dynamic_quantize_linear, quantize_linear, saturate_int
from hal.kernels.registry import kernel

Array = np.ndarray
DOMAIN = "com.microsoft"
_F32 = np.float32


def _scalar(v: Array | None, default: float = 0.0) -> float:
    return default if v is None else float(np.asarray(v).reshape(-1)[0])


def _codes(dtype: np.dtype) -> Array:
    """Every value of an 8-bit type, in code order (uint8 0..255, int8 -128..127)."""
    if np.dtype(dtype) not in (np.dtype(np.uint8), np.dtype(np.int8)):
        raise ValueError(f"quantized codes are uint8 or int8, got {np.dtype(dtype)}")
    info = np.iinfo(dtype)
    return np.arange(info.min, info.max + 1, dtype=np.int32)


def _dequantize(x: Array, scale: Array, zero: Array | None) -> Array:
    return (x.astype(np.int32) - np.int32(_scalar(zero))).astype(_F32) * _F32(_scalar(scale))


def _quantize(v: Array, scale: Array, zero: Array | None, dtype: np.dtype) -> Array:
    """QuantizeLinear of float32 ``v`` with a float32 scale, to ``dtype`` (zero point 0 when absent)."""
    return quantize_linear(np.asarray(v, _F32), np.asarray(_scalar(scale), _F32),
                           np.asarray(_scalar(zero), dtype=dtype))


def _through_table(x: Array, f: Callable[[Array], Array], x_scale: Array, x_zero: Array | None,
                   y_scale: Array, y_zero: Array | None) -> Array:
    """``x``'s codes mapped through quantise(f(dequantise(code))), one table entry per code."""
    out = np.asarray(y_zero).dtype if y_zero is not None else x.dtype
    codes = _codes(x.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        table = _quantize(f(_dequantize(codes.astype(x.dtype), x_scale, x_zero)), y_scale, y_zero, out)
    return table[x.astype(np.int32) - codes[0]]


def _out_type(zero: Array | None, like: Array) -> np.dtype:
    return np.asarray(zero).dtype if zero is not None else like.dtype


@kernel("QLinearAdd", since=1, domain=DOMAIN)
def qlinear_add(A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale, C_zero_point=None):
    c_scale = _F32(_scalar(C_scale))
    a = (A.astype(np.int32) - np.int32(_scalar(A_zero_point))).astype(_F32) * (_F32(_scalar(A_scale)) / c_scale)
    b = (B.astype(np.int32) - np.int32(_scalar(B_zero_point))).astype(_F32) * (_F32(_scalar(B_scale)) / c_scale)
    with np.errstate(invalid="ignore", over="ignore"):
        return saturate_int(np.rint(a + b).astype(np.float64) + _scalar(C_zero_point), _out_type(C_zero_point, A))


@kernel("QLinearMul", since=1, domain=DOMAIN)
def qlinear_mul(A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale, C_zero_point=None):
    ratio = _F32(_scalar(A_scale)) * _F32(_scalar(B_scale)) / _F32(_scalar(C_scale))
    product = ((A.astype(np.int32) - np.int32(_scalar(A_zero_point)))
               * (B.astype(np.int32) - np.int32(_scalar(B_zero_point)))).astype(_F32) * ratio
    with np.errstate(invalid="ignore", over="ignore"):
        return saturate_int(np.rint(product).astype(np.float64) + _scalar(C_zero_point), _out_type(C_zero_point, A))


def _sigmoid(v: Array) -> Array:
    return _F32(1) / (_F32(1) + np.exp(-v))


@kernel("QLinearSigmoid", since=1, domain=DOMAIN)
def qlinear_sigmoid(X, X_scale, X_zero_point, Y_scale, Y_zero_point=None):
    return _through_table(X, _sigmoid, X_scale, X_zero_point, Y_scale, Y_zero_point)


@kernel("QLinearLeakyRelu", since=1, domain=DOMAIN)
def qlinear_leaky_relu(X, X_scale, X_zero_point, Y_scale, Y_zero_point=None, alpha=0.01):
    a = _F32(alpha)
    return _through_table(X, lambda v: np.where(v >= 0, v, v * a), X_scale, X_zero_point, Y_scale, Y_zero_point)


@kernel("QLinearSoftmax", since=1, domain=DOMAIN)
def qlinear_softmax(X, X_scale, x_zero_point, y_scale, y_zero_point=None, axis=None, opset=13):
    """onnxruntime's integer softmax: each row's codes index a table of exponentials (float32, from
    float64 exp((code - 255 + shift) x_scale), the shift keeping a row's sum in range), summed in
    order in float32, each divided into floor(1 / y_scale) and rounded, plus the zero point. The
    row is the axis (opset 13 on) or everything from the axis on (before); results saturate. A row
    whose exponentials sum to no positive number (an infinite or NaN scale) reads the zero point,
    where onnxruntime leaves it unwritten."""
    if axis is None:
        axis = -1 if opset >= 13 else 1
    axis = axis % X.ndim if X.ndim else 0
    out = _out_type(y_zero_point, X)
    rows = np.moveaxis(X, axis, -1) if opset >= 13 else X.reshape(int(np.prod(X.shape[:axis])), -1)
    length = rows.shape[-1] if rows.ndim else 1
    if not rows.size:
        return np.empty(X.shape, dtype=out)
    signed = X.dtype == np.int8
    x_scale = float(_F32(_scalar(X_scale)))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        shift = max(0.0, float(np.log(np.float64(np.finfo(_F32).max / _F32(length)))) - 5.0) / x_scale
        table = np.exp((np.arange(256, dtype=np.float64) - 255 + shift) * x_scale).astype(_F32)
        codes = rows.astype(np.int32)
        top = codes.max(axis=-1, keepdims=True)
        # the distance from the row's largest code, as an index into the table (255: the largest)
        e = table[255 - top + codes] if not signed else table[(127 - top + codes + 128) & 255]
        total = np.cumsum(e, axis=-1, dtype=_F32)[..., -1:]  # in order, as onnxruntime adds
        y = np.rint((e * np.floor(_F32(1) / _F32(_scalar(y_scale)))) / total).astype(np.float64)
        y = np.where(total > 0, y, 0.0) + _scalar(y_zero_point)
    y = saturate_int(y, out)
    return np.moveaxis(y, -1, axis) if opset >= 13 else y.reshape(X.shape)


@kernel("QLinearConcat", since=1, domain=DOMAIN)
def qlinear_concat(Y_scale, Y_zero_point, *inputs, axis=0):
    """Inputs come in (X, X_scale, X_zero_point) triples; one already in Y's scale and zero point is
    copied, any other goes through its requantisation table."""
    out = _out_type(Y_zero_point, inputs[0])
    parts = []
    for x, scale, zero in zip(inputs[0::3], inputs[1::3], inputs[2::3]):
        if _scalar(scale) == _scalar(Y_scale) and _scalar(zero) == _scalar(Y_zero_point) and x.dtype == out:
            parts.append(x)
        else:
            parts.append(_through_table(x, lambda v: v, scale, zero, Y_scale, Y_zero_point))
    return np.concatenate(parts, axis=axis)


@kernel("QLinearGlobalAveragePool", since=1, domain=DOMAIN)
def qlinear_global_average_pool(X, x_scale, x_zero_point, y_scale, y_zero_point=None, channels_last=0):
    spatial = tuple(range(1, X.ndim - 1)) if channels_last else tuple(range(2, X.ndim))
    count = int(np.prod([X.shape[a] for a in spatial])) if spatial else 1
    total = (X.astype(np.int64) - np.int64(_scalar(x_zero_point))).sum(axis=spatial, keepdims=True)
    # the sum of the centred codes, scaled once: x_scale / (y_scale x count)
    scale = _F32(_scalar(x_scale)) / (_F32(_scalar(y_scale)) * _F32(max(count, 1)))
    with np.errstate(invalid="ignore", over="ignore"):
        y = np.rint(total.astype(_F32) * scale).astype(np.float64) + _scalar(y_zero_point)
    return saturate_int(y, _out_type(y_zero_point, X))


@kernel("QLinearAveragePool", since=1, domain=DOMAIN)
def qlinear_average_pool(X, x_scale, x_zero_point, y_scale, y_zero_point=None, auto_pad="NOTSET", ceil_mode=0,
                         channels_last=0, count_include_pad=0, kernel_shape=None, pads=None, strides=None):
    """onnxruntime's quantised average pool: the sum of a window's dequantised values inside the
    image over the window's size with ``count_include_pad`` (pads and a ceil-mode window's overhang
    alike, where the float AveragePool leaves the overhang out), else over the values summed; then
    round(mean / y_scale + y_zero_point), both in float32."""
    v = _dequantize(X, x_scale, x_zero_point)
    if channels_last:
        v = np.moveaxis(v, -1, 1)
    k, s, d, begin, _, end, out = _pool_setup(v, kernel_shape, strides, None, pads, auto_pad, ceil_mode)
    widths = [(0, 0), (0, 0), *zip(begin, end)]
    total = _reduce_windows(np.pad(v, widths), out, k, s, d, np.add)
    if count_include_pad:
        mean = total / _F32(np.prod(k))
    else:
        inside = np.pad(np.ones((1, 1, *v.shape[2:]), dtype=_F32), widths)
        mean = total / _reduce_windows(inside, out, k, s, d, np.add)
    if channels_last:
        mean = np.moveaxis(mean, 1, -1)
    dtype = _out_type(y_zero_point, X)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        y = np.rint(mean.astype(_F32) / _F32(_scalar(y_scale)) + _F32(_scalar(y_zero_point)))
    return saturate_int(y.astype(np.float64), dtype)


@kernel("QGemm", since=1, domain=DOMAIN)
def qgemm(A, a_scale, a_zero_point, B, b_scale, b_zero_point, C=None, y_scale=None, y_zero_point=None, *,
          alpha=1.0, transA=0, transB=0):
    """alpha (A - za)(B - zb) + C, the products of the centred codes accumulated exactly, C an int32
    bias in A x B's scale; B's scale and zero point per tensor or per output column."""
    a = A.T if transA else A
    b = B.T if transB else B
    zb = np.asarray(b_zero_point).astype(np.float64).reshape(-1)
    acc = (a.astype(np.float64) - _scalar(a_zero_point)) @ (b.astype(np.float64) - (zb if zb.size > 1 else zb[0]))
    if C is not None:
        acc = acc + np.asarray(C).astype(np.float64)
    scale = _F32(alpha) * _F32(_scalar(a_scale)) * np.asarray(b_scale, dtype=_F32).reshape(-1)
    if y_scale is None:
        return (acc.astype(_F32) * (scale if scale.size > 1 else scale[0])).astype(_F32)
    multiplier = scale / _F32(_scalar(y_scale))
    with np.errstate(invalid="ignore", over="ignore"):
        y = np.rint(acc.astype(_F32) * (multiplier if multiplier.size > 1 else multiplier[0])).astype(np.float64)
    return saturate_int(y + _scalar(y_zero_point), _out_type(y_zero_point, A))


def _integer_product_to_float(a: Array, b: Array, a_scale: Array, b_scale: Array, a_zero: Array | None,
                              b_zero: Array | None, bias: Array | None) -> Array:
    """(A - za)(B - zb) accumulated exactly, times a_scale x b_scale (per tensor, or b's per column)
    in float32, plus the bias: onnxruntime's MatMulIntegerToFloat and the tail of DynamicQuantizeMatMul."""
    zb = np.asarray(b_zero).astype(np.float64).reshape(-1) if b_zero is not None else np.zeros(1)
    acc = np.matmul(a.astype(np.float64) - _scalar(a_zero), b.astype(np.float64) - (zb if zb.size > 1 else zb[0]))
    scale = _F32(_scalar(a_scale)) * np.asarray(b_scale, dtype=_F32).reshape(-1)
    y = acc.astype(_F32) * (scale if scale.size > 1 else scale[0])
    return (y + np.asarray(bias, dtype=_F32) if bias is not None else y).astype(_F32)


@kernel("MatMulIntegerToFloat", since=1, domain=DOMAIN)
def matmul_integer_to_float(A, B, a_scale, b_scale, a_zero_point=None, b_zero_point=None, bias=None):
    return _integer_product_to_float(A, B, a_scale, b_scale, a_zero_point, b_zero_point, bias)


@kernel("DynamicQuantizeMatMul", since=1, domain=DOMAIN)
def dynamic_quantize_matmul(A, B, b_scale, b_zero_point=None, bias=None):
    """A quantised to uint8 as DynamicQuantizeLinear does it (a range holding 0), then
    MatMulIntegerToFloat."""
    codes, scale, zero = dynamic_quantize_linear(np.asarray(A, dtype=_F32))
    return _integer_product_to_float(codes, B, scale, b_scale, zero, b_zero_point, bias)
