"""What onnxruntime's quantizer writes beyond the QOperator ops of ``hal.kernels.contrib_quant``
(domain ``com.microsoft``): QAttention, where ``quantize_dynamic`` meets a transformer its
transformers optimizer fused into Attention; DynamicQuantizeLSTM, where it meets an LSTM; and the
com.microsoft QuantizeLinear / DequantizeLinear it writes when a quantized type is newer than the
model's opset (int16 / uint16 or int4 / uint4 Q/DQ in an opset-13 model). onnx defines none of
them; their contract is onnxruntime's (``docs/ContribOperators.md``), and so is their arithmetic,
as its CPU kernels do it:

* QAttention takes its input already quantized (uint8 codes, as a DynamicQuantizeLinear before it
  writes them; onnxruntime's CPU kernel runs no other input type): the integer product of the
  centred codes, ``(input - zi)(weight - zw)``, accumulated exactly, times ``input_scale x
  weight_scale`` (per tensor or per output column) in float32, plus the float bias; then Attention's
  own self-attention (``hal.kernels.contrib_attention``'s core): the same mask forms, GPT-2's 5-D
  past and present, ``unidirectional``, ``mask_filter_value`` and ``scale``;
* DynamicQuantizeLSTM is the LSTM with W (directions, input, 4 hidden) and R (directions, hidden, 4
  hidden) stored transposed as int8 / uint8 codes, with a scale and a zero point per direction or
  per direction and gate column. Each product's float operand is quantized on the fly as
  DynamicQuantizeLinear does it (uint8, a range that holds 0): X once per direction over the steps
  the longest sequence runs, the hidden state at each step; the centred codes multiply exactly and
  scale by ``a_scale x w_scale`` in float32. onnxruntime quantizes the hidden state of each batch
  row on its own when it splits the batch over its threads (more than 4 rows, or 2 or more with
  hidden <= 256) and of the whole batch otherwise; here the same, as a pool with a thread per row
  does it. A row whose sequence has ended reads 0 there (its Y output zeroed). Gates then add the
  peepholes and the summed biases, clip, and activate as onnxruntime's LSTM does; a sequence of
  length 0 ends with Y_h and Y_c zero;
* QuantizeLinear / DequantizeLinear (``axis``, default 1; the scale per tensor or a 1-D one per
  axis, no blocks) are the ONNX ops (``hal.kernels.quantize``) over the types onnxruntime's CPU
  runs them with: float32 to and from int8, uint8, int16, uint16, int4 and uint4, and int32 to
  float32 (DequantizeLinear only); uint8 without a zero point.

The integer products are exact and no numeric policy rounds them (``_round_operand`` reaches
QAttention's scaled Q K^T and probabilities x V only; DynamicQuantizeLSTM takes it and forms no
float product). Shapes for compile-time planning come from ``hal.graph.contrib``.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from hal.kernels.attention import _as_is, _from_heads, _to_heads
from hal.kernels.contrib_attention import _attend, _check_mask, _fill_mask, _scale
from hal.kernels.contrib_quant import _integer_product_to_float
from hal.kernels.quantize import dequantize_linear, dynamic_quantize_linear, quantize_linear
from hal.kernels.registry import kernel
from hal.kernels.rnn import _activations

Array = np.ndarray
DOMAIN = "com.microsoft"
_F32 = np.float32
_CODES = (np.dtype(np.uint8), np.dtype(np.int8))


def _one(v: Array | None, op: str, name: str) -> None:
    """A scale or zero point must be one value (per-tensor quantization)."""
    if v is not None and np.asarray(v).size != 1:
        raise ValueError(f"{op}: {name} must be a scalar or a 1-element vector (per-tensor quantization), "
                         f"got shape {np.asarray(v).shape}")


# --- QAttention ------------------------------------------------------------------------------------


@kernel("QAttention", since=1, domain=DOMAIN, output_count=True)
def q_attention(input, weight, bias, input_scale, weight_scale, mask_index=None, input_zero_point=None,
                weight_zero_point=None, past=None, *, num_heads=None, unidirectional=0, do_rotary=0,
                mask_filter_value=-10000.0, past_present_share_buffer=0, scale=0.0, _n_outputs=1,
                _round_operand=None):
    """onnxruntime's QAttention: input (B, S, D) codes, weight (D, 3 hidden) codes, bias (3 hidden)
    float; the dequantized QKV projection, then Attention. Outputs (B, S, hidden) and present
    (2, B, N, P + S, hidden / N)."""
    op = "QAttention (com.microsoft)"
    if num_heads is None or int(num_heads) <= 0:
        raise ValueError(f"{op} needs a positive num_heads attribute, got {num_heads}")
    if do_rotary:
        raise ValueError(f"{op}: do_rotary=1 is not supported (onnxruntime's CPU kernel refuses it too)")
    if past_present_share_buffer and past is not None:
        raise ValueError(f"{op}: past_present_share_buffer=1 (the decoder's shared KV buffer) is not supported; "
                         f"export the model with separate past and present")
    n = int(num_heads)
    for name, t, kinds in (("input", input, _CODES), ("weight", weight, _CODES)):
        if t.dtype not in kinds:
            raise ValueError(f"{op}: {name} must hold uint8 or int8 codes, got {t.dtype}; QAttention reads its "
                             f"input already quantized (a DynamicQuantizeLinear before it)")
    if input_zero_point is not None and np.asarray(input_zero_point).dtype != input.dtype:
        raise ValueError(f"{op}: input_zero_point's type {np.asarray(input_zero_point).dtype} differs from "
                         f"input's {input.dtype}")
    if input.ndim != 3:
        raise ValueError(f"{op}: input must be 3-D (batch, sequence, input_hidden), got shape {input.shape}")
    if weight.ndim != 2 or weight.shape[0] != input.shape[2]:
        raise ValueError(f"{op}: weight must be 2-D ({input.shape[2]}, 3 x hidden), got shape {weight.shape}")
    cols = weight.shape[1]
    hidden = cols // 3
    if cols % 3 or hidden == 0 or hidden % n:
        raise ValueError(f"{op}: weight's second dim {cols} must be 3 x hidden, hidden a positive multiple of "
                         f"num_heads={n}")
    if bias is None or bias.shape != (cols,):
        raise ValueError(f"{op}: bias must be 1-D ({cols},), got {None if bias is None else bias.shape}")
    _one(input_scale, op, "input_scale")
    _one(input_zero_point, op, "input_zero_point")
    for name, t in (("weight_scale", weight_scale), ("weight_zero_point", weight_zero_point)):
        if t is not None and np.asarray(t).size not in (1, cols):
            raise ValueError(f"{op}: {name} must be a scalar or per column ({cols},), got shape "
                             f"{np.asarray(t).shape}")
    b, s, _ = input.shape
    head = hidden // n
    p = 0
    if past is not None:
        if past.ndim != 5 or past.shape[0] != 2 or past.shape[1] != b or past.shape[2] != n or past.shape[4] != head:
            raise ValueError(f"{op}: past must be (2, {b}, {n}, past_sequence_length, {head}), got {past.shape}")
        p = past.shape[3]
    total = p + s

    # the integer GEMM, dequantized per tensor or per column, plus the bias (float32)
    qkv = _integer_product_to_float(input, weight, input_scale, weight_scale, input_zero_point, weight_zero_point,
                                    bias)
    q = _to_heads(qkv[..., :hidden], n)
    k = _to_heads(qkv[..., hidden:2 * hidden], n)
    v = _to_heads(qkv[..., 2 * hidden:], n)
    if past is not None:
        k = np.concatenate([past[0].astype(_F32, copy=False), k], axis=2)
        v = np.concatenate([past[1].astype(_F32, copy=False), v], axis=2)
    mask = None if mask_index is None else _check_mask(np.asarray(mask_index), b, s, total, op)
    add = _fill_mask(mask, b, s, total, p, bool(unidirectional) and s > 1, mask_filter_value, np.dtype(_F32))
    y, _ = _attend(q, k, v, add, _scale(scale, head, np.dtype(_F32)), _round_operand or _as_is)
    dtype = bias.dtype  # T3: float32 (float16 computes in float32, rounded once)
    out = _from_heads(y).astype(dtype, copy=False)
    if _n_outputs < 2:
        return out
    return out, np.stack([k, v]).astype(dtype, copy=False)


# --- DynamicQuantizeLSTM ---------------------------------------------------------------------------


def _per_direction(t: Array, dirs: int, gates: int, op: str, name: str) -> Array:
    """A scale or zero point, (dirs) or (dirs, gates), as (dirs, 1 or gates)."""
    t = np.asarray(t)
    if t.shape in ((dirs,), (dirs, 1)):
        return t.reshape(dirs, 1)
    if t.shape == (dirs, gates):
        return t
    raise ValueError(f"{op}: {name} must be ({dirs},) per direction or ({dirs}, {gates}) per channel, got shape "
                     f"{t.shape}")


def _quantized_product(a: Array, w: Array, w_scale: Array, w_zero: Array, rows: int) -> Array:
    """a (M, K) float32 quantized as DynamicQuantizeLinear does it, ``rows`` rows at a time, times
    the codes w (K, N): the centred codes' exact product, scaled by a_scale x w_scale in float32."""
    out = np.empty((a.shape[0], w.shape[1]), dtype=_F32)
    for start in range(0, a.shape[0], rows):
        codes, a_scale, a_zero = dynamic_quantize_linear(a[start:start + rows])
        out[start:start + rows] = _integer_product_to_float(codes, w, a_scale, w_scale, a_zero, w_zero, None)
    return out


@kernel("DynamicQuantizeLSTM", since=1, domain=DOMAIN, output_count=True)
def dynamic_quantize_lstm(X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None, P=None, W_scale=None,
                          W_zero_point=None, R_scale=None, R_zero_point=None, *, activation_alpha=None,
                          activation_beta=None, activations=None, clip=None, direction="forward", hidden_size=None,
                          input_forget=0, _n_outputs=3, _round_operand=None):
    """onnxruntime's LSTM over int8 / uint8 weights (gates i, o, f, c; peepholes i, o, f); X and
    each step's hidden state quantized dynamically. Outputs Y (T, dirs, N, H), Y_h and Y_c (dirs, N, H)."""
    op = "DynamicQuantizeLSTM (com.microsoft)"
    for index, (name, t) in enumerate((("W_scale", W_scale), ("W_zero_point", W_zero_point), ("R_scale", R_scale),
                                       ("R_zero_point", R_zero_point)), start=8):
        if t is None:
            raise ValueError(f"{op}: {name} (input {index}) is required")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"{op}: direction must be forward, reverse or bidirectional, got {direction!r}")
    dirs = 2 if direction == "bidirectional" else 1
    if X.ndim != 3:
        raise ValueError(f"{op}: X must be 3-D (sequence, batch, input_size), got shape {X.shape}")
    steps, batch, inputs = X.shape
    if R.ndim != 3 or R.shape[0] != dirs or R.shape[2] != 4 * R.shape[1]:
        raise ValueError(f"{op}: R must be ({dirs}, hidden, 4 x hidden) for direction {direction!r}, got {R.shape}")
    hs = R.shape[1]
    if hidden_size is not None and int(hidden_size) != hs:
        raise ValueError(f"{op}: hidden_size={hidden_size} but R is {R.shape}, hidden {hs}")
    if W.shape != (dirs, inputs, 4 * hs):
        raise ValueError(f"{op}: W must be ({dirs}, {inputs}, {4 * hs}) (directions, input_size, 4 x hidden: "
                         f"transposed from LSTM's), got {W.shape}")
    for name, t in (("W", W), ("R", R)):
        if t.dtype not in _CODES:
            raise ValueError(f"{op}: {name} must hold int8 or uint8 codes, got {t.dtype}")
    w_scale = _per_direction(W_scale, dirs, 4 * hs, op, "W_scale").astype(_F32)
    r_scale = _per_direction(R_scale, dirs, 4 * hs, op, "R_scale").astype(_F32)
    w_zero = _per_direction(W_zero_point, dirs, 4 * hs, op, "W_zero_point")
    r_zero = _per_direction(R_zero_point, dirs, 4 * hs, op, "R_zero_point")
    checks = (("B", B, (dirs, 8 * hs)), ("initial_h", initial_h, (dirs, batch, hs)),
              ("initial_c", initial_c, (dirs, batch, hs)), ("P", P, (dirs, 3 * hs)))
    for name, t, shape in checks:
        if t is not None and t.shape != shape:
            raise ValueError(f"{op}: {name} must be {shape}, got {t.shape}")
    if sequence_lens is None:
        lens = np.full(batch, steps, np.int64)
    else:
        lens = np.asarray(sequence_lens).astype(np.int64).reshape(-1)
        if lens.shape != (batch,) or np.any(lens < 0) or np.any(lens > steps):
            raise ValueError(f"{op}: sequence_lens must be ({batch},) values in [0, {steps}], got "
                             f"{np.asarray(sequence_lens).tolist()}")
    acts = _activations(activations, ["Sigmoid", "Tanh", "Tanh"], dirs, activation_alpha, activation_beta)
    bound = _F32(np.finfo(_F32).max if clip is None else clip)
    longest = int(lens.max(initial=0))
    # onnxruntime splits the batch over its threads when it is wide enough, each part quantized on its own
    rows = 1 if batch > 4 or (batch >= 2 and hs <= 256) else max(batch, 1)
    x32 = X.astype(_F32, copy=False)
    t_idx, b_idx = np.arange(steps)[:, None], np.arange(batch)[None, :]
    live = t_idx < lens[None, :]  # (T, N): the steps each row runs

    y = np.zeros((steps, dirs, batch, hs), _F32)
    y_h = np.zeros((dirs, batch, hs), _F32)
    y_c = np.zeros((dirs, batch, hs), _F32)
    for d in range(dirs):
        reverse = direction == "reverse" or d == 1
        # step s of row r reads X at lens[r] - 1 - s in reverse (and where it is past its end, X as it is)
        src = np.where(live, lens[None, :] - 1 - t_idx, t_idx) if reverse else np.broadcast_to(t_idx, live.shape)
        xs = x32[src, b_idx][:longest].reshape(longest * batch, inputs)
        iofc = _quantized_product(xs, W[d], w_scale[d], w_zero[d], max(xs.shape[0], 1))
        iofc = iofc.reshape(longest, batch, 4 * hs)
        bias = np.zeros(4 * hs, _F32) if B is None else (B[d, :4 * hs].astype(_F32) + B[d, 4 * hs:].astype(_F32))
        b_i, b_o, b_f, b_c = np.split(bias, 4)
        p_i, p_o, p_f = np.split(np.zeros(3 * hs, _F32) if P is None else P[d].astype(_F32), 3)
        f, g, h_act = acts[d]
        h = np.zeros((batch, hs), _F32) if initial_h is None else initial_h[d].astype(_F32)
        c = np.zeros((batch, hs), _F32) if initial_c is None else initial_c[d].astype(_F32)
        a = h
        ys = np.zeros((steps, batch, hs), _F32)
        for s in range(longest):
            gates = iofc[s] + _quantized_product(a, R[d], r_scale[d], r_zero[d], rows)
            gi, go, gf, gc = np.split(gates, 4, axis=-1)
            i = f(np.clip(gi + c * p_i + b_i, -bound, bound))
            fg = _F32(1) - i if input_forget else f(np.clip(gf + c * p_f + b_f, -bound, bound))
            c_new = c * fg + i * g(np.clip(gc + b_c, -bound, bound))
            o = f(np.clip(go + c_new * p_o + b_o, -bound, bound))
            h_new = (o * h_act(c_new)).astype(_F32, copy=False)
            run = live[s][:, None]
            h = np.where(run, h_new, h)
            c = np.where(run, c_new, c)
            ys[s] = np.where(run, h_new, _F32(0))
            a = ys[s]  # the next step reads this step's output: 0 for a row that has ended
        if reverse:  # back to each row's own time order
            ys = np.where(live[..., None], ys[src, b_idx], _F32(0))
        y[:, d] = ys
        ended = (lens > 0)[:, None]
        y_h[d] = np.where(ended, h, _F32(0))
        y_c[d] = np.where(ended, c, _F32(0))
    return (y, y_h, y_c)[:max(_n_outputs, 1)]


# --- QuantizeLinear / DequantizeLinear ------------------------------------------------------------

_Q_TYPES = tuple(np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16, ml_dtypes.int4, ml_dtypes.uint4))
_DQ_TYPES = (*_Q_TYPES, np.dtype(np.int32))
_FLOATS = (np.dtype(np.float32), np.dtype(np.float16))


def _axis_scale(op: str, x: Array, scale: Array, zero: Array | None, axis: int) -> None:
    """A per-tensor scale, or a 1-D one along ``axis`` (and the zero point of the same shape)."""
    scale = np.asarray(scale)
    if scale.size != 1:
        if scale.ndim != 1:
            raise ValueError(f"{op}: the scale must be a scalar or 1-D (per axis), got shape {scale.shape}; blocked "
                             f"quantization needs the ONNX-domain op (opset 21)")
        if not -x.ndim <= axis < x.ndim or x.shape[axis] != scale.size:
            raise ValueError(f"{op}: a per-axis scale of {scale.size} values does not fit axis {axis} of input shape "
                             f"{x.shape}")
    if zero is not None and np.asarray(zero).shape != scale.shape and np.asarray(zero).size != scale.size:
        raise ValueError(f"{op}: zero point of shape {np.asarray(zero).shape} differs from the scale's {scale.shape}")


@kernel("QuantizeLinear", since=1, domain=DOMAIN)
def ms_quantize_linear(x, y_scale, y_zero_point=None, *, axis=1):
    """round(x / y_scale) + y_zero_point, saturated to the zero point's type (uint8 without one)."""
    op = "QuantizeLinear (com.microsoft)"
    if x.dtype not in _FLOATS or np.asarray(y_scale).dtype not in _FLOATS:
        raise ValueError(f"{op}: x and y_scale must be float32 (or float16), got {x.dtype} and "
                         f"{np.asarray(y_scale).dtype}")
    if y_zero_point is not None and np.asarray(y_zero_point).dtype not in _Q_TYPES:
        raise ValueError(f"{op}: quantizes to int8, uint8, int16, uint16, int4 or uint4, not "
                         f"{np.asarray(y_zero_point).dtype}")
    _axis_scale(op, x, y_scale, y_zero_point, axis)
    return quantize_linear(x, y_scale, y_zero_point, axis=axis)


@kernel("DequantizeLinear", since=1, domain=DOMAIN)
def ms_dequantize_linear(x, x_scale, x_zero_point=None, *, axis=1):
    """(x - x_zero_point) x x_scale, in the scale's float type."""
    op = "DequantizeLinear (com.microsoft)"
    if x.dtype not in _DQ_TYPES:
        raise ValueError(f"{op}: dequantizes int8, uint8, int16, uint16, int32, int4 or uint4, not {x.dtype}")
    if np.asarray(x_scale).dtype not in _FLOATS:
        raise ValueError(f"{op}: x_scale must be float32 (or float16), got {np.asarray(x_scale).dtype}")
    if x_zero_point is not None and np.asarray(x_zero_point).dtype != x.dtype:
        raise ValueError(f"{op}: zero point type {np.asarray(x_zero_point).dtype} differs from x's {x.dtype}")
    _axis_scale(op, x, x_scale, x_zero_point, axis)
    return dequantize_linear(x, x_scale, x_zero_point, axis=axis)
