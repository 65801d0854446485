"""onnxruntime's contrib ops (domain ``com.microsoft``) for the hybrid and multimodal LLMs its genai model
builder (0.18) writes: MRotaryEmbedding (Qwen2.5-VL, Qwen3-VL, Qwen3.5: rotary embedding with three
position streams), CausalConvWithState (LFM2's short convolutions, Qwen3.5's convolution before its
linear attention), LinearAttention, LinearAttentionGate and GatedRMSNorm (Qwen3.5's gated delta-net),
and GatedAdd. onnx defines none of them (its opset-27 CausalConvWithState and LinearAttention, which
``hal.kernels.attention`` computes, are other ops); their contract is onnxruntime's schema and their
arithmetic that of its CPU kernels:

* MRotaryEmbedding builds each token's cos / sin row from three cache rows, picked by its temporal,
  height and width positions (position_ids (3, B, S)): column c of the half rotary width comes from
  the stream that owns it, in contiguous sections (mrope_layout 0) or with H and W taking every third
  column from 1 and 2 up to 3 x their section (1); cos and sin are multiplied by ``scale`` (rounded
  to the input's type), then the row rotates as RotaryEmbedding's does.
* CausalConvWithState convolves each channel over [past_state | input] along the sequence, taps
  ``dilation`` apart, summed in float32 from the bias in tap order, then SiLU (x / (1 + e^-x), e^-x
  correctly rounded: within an ulp of the C library's expf, bit for bit but for a few in 10^4); the
  present state is the last (k - 1) x dilation positions of [past_state | input]. channels_last reads
  (B, L, d_1...) activations and (B, state, d_1...) states.
* LinearAttention runs the recurrence per key/value head in float32: S <- exp(g) S (a scalar per
  head or a row per key dimension; gated rules), retrieval r = S^T k, S <- S + k (beta (v - r))^T
  (delta rules; k v^T otherwise), o = scale q^T S; a decay or beta the rule does not name is
  shape-checked and ignored. Query heads share a head's state (GQA) or, with more KV than
  query heads, KV head h reads query head h x q_heads / kv_heads; key heads may be fewer than KV heads.
* LinearAttentionGate: decay = decay_scale x softplus(a + dt_bias), beta = sigmoid(b), in float32.
* GatedRMSNorm: each group of C = len(scale) features x / sqrt(mean(x^2) + epsilon) x scale x
  silu(gate) (or sigmoid(gate)), in float32.
* GatedAdd (plain mode): X + Y x gate, the product rounded to the type first.

Shapes for compile-time planning come from ``hal.graph.contrib``.
"""

from __future__ import annotations

import math

import numpy as np

from hal.kernels.activation import expf
from hal.kernels.attention import rotary_embedding as _onnx_rotary
from hal.kernels.contrib_genai import check_rotary_inputs
from hal.kernels.registry import kernel

Array = np.ndarray
DOMAIN = "com.microsoft"
_F32 = np.float32


def _work(*arrays: Array | None) -> list[Array | None]:
    return [None if a is None else np.asarray(a).astype(_F32) for a in arrays]


def _sigmoid(x: Array) -> Array:
    with np.errstate(over="ignore"):
        return (_F32(1) / (_F32(1) + np.exp(-x))).astype(_F32)


# --- MRotaryEmbedding ------------------------------------------------------------------------------


def _mrope_refuses(attrs: dict, inputs: list[str], outputs: list[str]) -> str | None:
    section = list(attrs.get("mrope_section", []))
    if len(section) != 3 or min(section) < 0:
        return f"MRotaryEmbedding mrope_section must be 3 non-negative integers, got {section}"
    if attrs.get("mrope_layout", 0) not in (0, 1):
        return f"MRotaryEmbedding mrope_layout must be 0 (sectioned) or 1 (interleaved), got {attrs['mrope_layout']}"
    if attrs.get("rotary_embedding_dim", 0) < 0 or attrs.get("num_heads", 0) < 0:
        return "MRotaryEmbedding rotary_embedding_dim and num_heads must not be negative"
    if attrs.get("rotary_embedding_dim", 0) > 0 and not attrs.get("num_heads", 0):
        return "MRotaryEmbedding needs num_heads when rotary_embedding_dim is set"
    return None


def mrope_streams(section: list[int], layout: int, half: int) -> Array:
    """Which position stream (0 T, 1 H, 2 W) owns each of the ``half`` cos / sin columns."""
    owner = np.zeros(half, np.int64)
    if layout == 0:
        owner[:] = np.repeat(np.arange(3), section)[:half]
    else:
        for stream in (1, 2):
            owner[stream:min(3 * section[stream], half):3] = stream
    return owner


@kernel("MRotaryEmbedding", since=1, domain=DOMAIN, refuses=_mrope_refuses)
def mrotary_embedding(input, position_ids, cos_cache, sin_cache, *, mrope_section, num_heads=0,
                      rotary_embedding_dim=0, interleaved=0, mrope_layout=0, is_packed_batching=0, scale=1.0):
    """Multimodal rotary embedding (see the module docstring): input (B, S, N x H) with num_heads, or
    (B, N, S, H); the caches (max_position, rotary_dim / 2); features past the rotary width pass."""
    why = _mrope_refuses({"mrope_section": mrope_section, "mrope_layout": mrope_layout, "num_heads": num_heads,
                          "rotary_embedding_dim": rotary_embedding_dim}, [], [])
    if why:
        raise ValueError(why)
    check_rotary_inputs("MRotaryEmbedding", input, cos_cache, sin_cache)
    if input.ndim == 4:
        batch, heads, seq, head = input.shape
    else:
        batch, seq, hidden = input.shape
        if num_heads <= 0 or hidden % num_heads:
            raise ValueError(f"MRotaryEmbedding with a 3-D input needs num_heads dividing its hidden size {hidden}, "
                             f"got {num_heads}")
        heads, head = num_heads, hidden // num_heads
    rd = rotary_embedding_dim or head
    if rd > head or rd // 2 != cos_cache.shape[1]:
        raise ValueError(f"MRotaryEmbedding rotary dimension {rd} must be at most head_size {head} and twice the "
                         f"caches' width {cos_cache.shape[1]}")
    if sum(mrope_section) != rd // 2:
        raise ValueError(f"MRotaryEmbedding mrope_section {list(mrope_section)} must sum to rotary_dim / 2 = {rd // 2}")
    pos = np.asarray(position_ids).astype(np.int64)
    if pos.shape != (3, batch, seq):
        raise ValueError(f"MRotaryEmbedding position_ids must be (3, batch, sequence) = {(3, batch, seq)}, "
                         f"got {pos.shape}")
    rows = cos_cache.shape[0]
    if not is_packed_batching and seq > rows:
        raise ValueError(f"MRotaryEmbedding: a sequence of {seq} is longer than the caches' {rows} rows")
    if pos.size and (pos.min() < 0 or pos.max() >= rows):
        raise ValueError(f"MRotaryEmbedding position ids must lie in [0, {rows}) (the caches' rows), got "
                         f"{pos.min()}..{pos.max()}")
    if not input.size:  # (onnxruntime checks no further, nor that the rotary width is even)
        return input.copy()
    owner = mrope_streams(list(mrope_section), mrope_layout, rd // 2)
    cols = np.arange(rd // 2)
    picked = pos[owner]  # (half, B, S): each column's position
    cos = (cos_cache[picked, cols[:, None, None]].astype(_F32) * _F32(scale)).astype(input.dtype)
    sin = (sin_cache[picked, cols[:, None, None]].astype(_F32) * _F32(scale)).astype(input.dtype)
    cos, sin = np.moveaxis(cos, 0, -1), np.moveaxis(sin, 0, -1)  # (B, S, half)
    return _onnx_rotary(input, cos, sin, None, interleaved=interleaved, num_heads=heads, rotary_embedding_dim=rd)


# --- CausalConvWithState ---------------------------------------------------------------------------

#: attributes onnxruntime's CPU kernel refuses or only its CUDA kernel reads, at their neutral values
_CONV_NEUTRAL = {"ndim": 1, "state_window": 0, "state_length": 0, "input_channel_offset": 0, "input_channels": 0,
                 "state_channels_last": -1, "state_update_capacity": 0}


def _conv_refuses(attrs: dict, inputs: list[str], outputs: list[str]) -> str | None:
    odd = {k: attrs[k] for k, neutral in _CONV_NEUTRAL.items() if k in attrs and attrs[k] != neutral}
    if odd:
        return (f"CausalConvWithState with {odd}: onnxruntime's CPU kernel computes ndim 1 without a state window "
                f"(the others are its CUDA kernel's)")
    if len(outputs) > 2 and outputs[2]:
        return "CausalConvWithState state_update output: onnxruntime's CUDA kernel's only"
    if str(attrs.get("activation", "none")) not in ("none", "silu", "swish"):
        return f"CausalConvWithState activation must be none, silu or swish, got {attrs['activation']!r}"
    if attrs.get("dilation", 1) < 1:
        return f"CausalConvWithState dilation must be at least 1, got {attrs['dilation']}"
    if attrs.get("channels_last", 0) not in (0, 1):
        return f"CausalConvWithState channels_last must be 0 or 1, got {attrs['channels_last']}"
    return None


@kernel("CausalConvWithState", since=1, domain=DOMAIN, refuses=_conv_refuses)
def causal_conv_with_state(input, weight, bias=None, past_state=None, *, activation="none", dilation=1,
                           channels_last=0, ndim=1, state_window=0, **cuda_only):
    """Depthwise causal 1-D convolution with a carried state: (output, present_state), see the module
    docstring. Channels-first input (B, C, L) and state (B, C, (k - 1) x dilation)."""
    why = _conv_refuses({"activation": activation, "dilation": dilation, "channels_last": channels_last,
                         "ndim": ndim, "state_window": state_window, **cuda_only}, [], [])
    if why:
        raise ValueError(why)
    if weight.ndim != 3 or weight.shape[1] != 1:
        raise ValueError(f"CausalConvWithState weight must be (channels, 1, kernel), got {weight.shape}")
    if channels_last:
        if input.ndim < 3:
            raise ValueError(f"CausalConvWithState channels_last input must be (batch, sequence, d_1, ...), got "
                             f"{input.shape}")
        lead = input.shape[2:]
        x = input.reshape(*input.shape[:2], math.prod(lead)).transpose(0, 2, 1)  # (an empty batch or sequence)
    else:
        if input.ndim != 3:
            raise ValueError(f"CausalConvWithState input must be (batch, channels, length), got {input.shape}")
        x = input
    batch, channels, length = x.shape
    k = weight.shape[2]
    pad = (k - 1) * dilation
    if weight.shape[0] != channels:
        raise ValueError(f"CausalConvWithState weight has {weight.shape[0]} channels, the input {channels}")
    if bias is not None and bias.shape != (channels,):
        raise ValueError(f"CausalConvWithState bias must be ({channels},), got {bias.shape}")
    state_shape = (batch, pad, *lead) if channels_last else (batch, channels, pad)
    if past_state is None:
        past = np.zeros((batch, channels, pad), _F32)
    elif past_state.shape != state_shape:
        raise ValueError(f"CausalConvWithState past_state must be {state_shape}, got {past_state.shape}")
    else:
        past = past_state.reshape(batch, pad, channels).transpose(0, 2, 1) if channels_last else past_state
    window = np.concatenate([past.astype(_F32), x.astype(_F32)], axis=2)  # (B, C, pad + L)
    w = weight[:, 0, :].astype(_F32)
    acc = np.broadcast_to(np.zeros(channels, _F32) if bias is None else bias.astype(_F32), (batch, channels))
    acc = np.repeat(acc[..., None], length, axis=2)
    for tap in range(k):  # in tap order, each product rounded, as the CPU kernel sums
        acc = acc + w[:, tap, None] * window[:, :, tap * dilation:tap * dilation + length]
    if str(activation) in ("silu", "swish"):  # e^-x rounded once to float32, as the C library's expf
        acc = acc / (_F32(1) + expf(-acc))
    present = window[:, :, window.shape[2] - pad:]
    if channels_last:
        acc = acc.transpose(0, 2, 1).reshape(input.shape)
        present = present.transpose(0, 2, 1).reshape(state_shape)
    state_type = input.dtype if past_state is None else past_state.dtype
    return acc.astype(input.dtype), np.ascontiguousarray(present).astype(state_type)


# --- LinearAttention -------------------------------------------------------------------------------

_RULES = ("linear", "gated", "delta", "gated_delta")


def _linear_attention_refuses(attrs: dict, inputs: list[str], outputs: list[str]) -> str | None:
    rule = str(attrs.get("update_rule", "gated_delta"))
    if rule not in _RULES:
        return f"LinearAttention update_rule must be one of {_RULES}, got {rule!r}"
    if attrs.get("q_num_heads", 0) <= 0 or attrs.get("kv_num_heads", 0) <= 0:
        return "LinearAttention needs positive q_num_heads and kv_num_heads"
    if attrs.get("state_window", 0) != 0:
        return "LinearAttention with state_window > 0: onnxruntime's CUDA kernel's only"
    named = [*inputs, "", "", "", "", "", ""]
    if not (named[1] and named[2]):
        return "LinearAttention needs key and value"
    if rule in ("gated", "gated_delta") and not named[4]:
        return f"LinearAttention update_rule {rule!r} needs decay"
    if rule in ("delta", "gated_delta") and not named[5]:
        return f"LinearAttention update_rule {rule!r} needs beta"
    return None


@kernel("LinearAttention", since=1, domain=DOMAIN, refuses=_linear_attention_refuses)
def linear_attention(query, key=None, value=None, past_state=None, decay=None, beta=None, *, q_num_heads,
                     kv_num_heads, update_rule="gated_delta", scale=0.0, chunk_size=64, state_window=0):
    """onnxruntime's LinearAttention (see the module docstring): query (B, T, Hq x dk), key (B, T, Hk x dk),
    value (B, T, Hkv x dv), past_state (B, Hkv, dk, dv); (output (B, T, max(Hq, Hkv) x dv), present_state)."""
    rule = str(update_rule)
    why = _linear_attention_refuses({"update_rule": rule, "q_num_heads": q_num_heads, "kv_num_heads": kv_num_heads,
                                     "state_window": state_window},
                                    ["q", "" if key is None else "k", "" if value is None else "v", "",
                                     "" if decay is None else "g", "" if beta is None else "b"], [])
    if why:
        raise ValueError(why)
    if query.ndim != 3 or key.ndim != 3 or value.ndim != 3:
        raise ValueError(f"LinearAttention query, key and value must be 3-D (B, T, heads x size), got "
                         f"{query.shape}, {key.shape}, {value.shape}")
    batch, steps, q_hidden = query.shape
    if key.shape[:2] != (batch, steps) or value.shape[:2] != (batch, steps):
        raise ValueError(f"LinearAttention key {key.shape} and value {value.shape} must share the query's batch and "
                         f"sequence {(batch, steps)}")
    dk, dv = q_hidden // q_num_heads, value.shape[2] // kv_num_heads
    if dk * q_num_heads != q_hidden or dv * kv_num_heads != value.shape[2] or not dk or key.shape[2] % dk:
        raise ValueError(f"LinearAttention hidden sizes {q_hidden} / {key.shape[2]} / {value.shape[2]} do not split "
                         f"into {q_num_heads} query and {kv_num_heads} value heads")
    k_heads = key.shape[2] // dk
    big, small = max(q_num_heads, kv_num_heads), min(q_num_heads, kv_num_heads)
    if big % small or kv_num_heads % k_heads:
        raise ValueError(f"LinearAttention head counts q {q_num_heads}, k {k_heads}, kv {kv_num_heads} must divide "
                         f"one another")
    q, k, v, g, b, s = _work(query, key, value, decay, beta, past_state)
    q = q.reshape(batch, steps, q_num_heads, dk)
    k = np.repeat(k.reshape(batch, steps, k_heads, dk), kv_num_heads // k_heads, axis=2)  # (B, T, Hkv, dk)
    v = v.reshape(batch, steps, kv_num_heads, dv)
    if g is not None:
        if g.shape[:2] != (batch, steps) or g.shape[2] not in (kv_num_heads, kv_num_heads * dk):
            raise ValueError(f"LinearAttention decay must be (B, T, {kv_num_heads} or {kv_num_heads * dk}), got "
                             f"{g.shape}")
        g = np.exp(g.reshape(batch, steps, kv_num_heads, g.shape[2] // kv_num_heads))[..., None]  # (B, T, Hkv, 1|dk, 1)
    if b is not None:
        if b.shape[:2] != (batch, steps) or b.shape[2] not in (kv_num_heads, 1):
            raise ValueError(f"LinearAttention beta must be (B, T, {kv_num_heads} or 1), got {b.shape}")
        b = np.broadcast_to(b, (batch, steps, kv_num_heads))[..., None]
    # a decay or beta the rule does not take is checked, as onnxruntime checks it, then left unused
    g = g if rule in ("gated", "gated_delta") else None
    b = b if rule in ("delta", "gated_delta") else None
    if s is None:
        s = np.zeros((batch, kv_num_heads, dk, dv), _F32)
    elif s.shape != (batch, kv_num_heads, dk, dv):
        raise ValueError(f"LinearAttention past_state must be {(batch, kv_num_heads, dk, dv)}, got {s.shape}")
    alpha = _F32(scale) if scale else _F32(1 / math.sqrt(dk))
    if q_num_heads >= kv_num_heads:  # each KV head's state serves its group of query heads
        reads = q.reshape(batch, steps, kv_num_heads, q_num_heads // kv_num_heads, dk)
    else:  # inverse GQA: KV head h reads query head h x Hq / Hkv
        reads = q[:, :, np.arange(kv_num_heads) * q_num_heads // kv_num_heads, None, :]
    out = np.empty((batch, steps, *reads.shape[2:4], dv), _F32)
    for t in range(steps):
        if g is not None:
            s = s * g[:, t]
        kt = k[:, t]  # (B, Hkv, dk)
        if b is not None:
            recalled = np.einsum("bhij,bhi->bhj", s, kt).astype(_F32)
            delta = b[:, t] * (v[:, t] - recalled)
        else:
            delta = v[:, t]
        s = s + kt[..., :, None] * delta[..., None, :]
        out[:, t] = alpha * np.einsum("bhgi,bhij->bhgj", reads[:, t], s)
    y = out.reshape(batch, steps, max(q_num_heads, kv_num_heads) * dv)
    state_type = query.dtype if past_state is None else past_state.dtype
    return y.astype(query.dtype), s.astype(state_type)


# --- LinearAttentionGate, GatedRMSNorm, GatedAdd ---------------------------------------------------


def _gate_refuses(attrs: dict, inputs: list[str], outputs: list[str]) -> str | None:
    if len(outputs) > 1 and outputs[1] and not (len(inputs) > 3 and inputs[3]):
        return "LinearAttentionGate's beta output needs the b input"
    return None


def _softplus(x: Array) -> Array:
    with np.errstate(over="ignore"):
        return np.where(x > 0, x + np.log(np.exp(-np.abs(x)) + _F32(1)), np.log(np.exp(np.minimum(x, 0)) + _F32(1)))


@kernel("LinearAttentionGate", since=1, domain=DOMAIN, output_count=True, refuses=_gate_refuses)
def linear_attention_gate(a, dt_bias, decay_scale, b=None, *, _n_outputs=1):
    """(decay_scale x softplus(a + dt_bias), sigmoid(b)) over a's last axis of heads, in float32."""
    heads = a.shape[-1] if a.ndim else 0
    if a.ndim < 1 or heads < 1 or np.size(dt_bias) != heads or np.size(decay_scale) != heads:
        raise ValueError(f"LinearAttentionGate dt_bias and decay_scale must hold one value per head of a's last axis "
                         f"({heads}), got {np.shape(dt_bias)} and {np.shape(decay_scale)}")
    biased = a.astype(_F32) + np.asarray(dt_bias, _F32).reshape(heads)
    decay = (np.asarray(decay_scale, _F32).reshape(heads) * _softplus(biased)).astype(a.dtype)
    if _n_outputs < 2:
        return decay
    if b is None or b.shape != a.shape:
        raise ValueError(f"LinearAttentionGate's beta output needs b of a's shape {a.shape}")
    return decay, _sigmoid(b.astype(_F32)).astype(a.dtype)


def _norm_refuses(attrs: dict, inputs: list[str], outputs: list[str]) -> str | None:
    act = str(attrs.get("activation", "silu"))
    return None if act in ("silu", "swish", "sigmoid") else \
        f"GatedRMSNorm activation must be silu, swish or sigmoid, got {act!r}"


@kernel("GatedRMSNorm", since=1, domain=DOMAIN, refuses=_norm_refuses)
def gated_rms_norm(X, scale, gate, *, activation="silu", epsilon=1e-5):
    """Each group of len(scale) features: x / sqrt(mean(x^2) + epsilon) x scale x silu(gate) (or
    sigmoid(gate)), in float32."""
    why = _norm_refuses({"activation": activation}, [], [])
    if why:
        raise ValueError(why)
    width = scale.size
    if X.ndim < 1 or gate.shape != X.shape or not width or X.shape[-1] % width:
        raise ValueError(f"GatedRMSNorm gate must have X's shape {X.shape} and X's last axis be a multiple of the "
                         f"scale's length {width}; got gate {gate.shape}")
    x, z, w = _work(X, gate, scale.reshape(-1))
    rows = x.reshape(-1, width)
    mean = (np.einsum("ij,ij->i", rows, rows) / _F32(width)).astype(_F32)
    inverse = (_F32(1) / np.sqrt(mean + _F32(epsilon))).astype(_F32)
    normed = (rows * inverse[:, None] * w).reshape(X.shape)
    act = z * _sigmoid(z) if str(activation) in ("silu", "swish") else _sigmoid(z)
    return (normed * act).astype(X.dtype)


def _add_refuses(attrs: dict, inputs: list[str], outputs: list[str]) -> str | None:
    if len(inputs) > 3 and inputs[3]:
        return "GatedAdd with gate_weight (projected mode): onnxruntime's CUDA kernel's only, for bfloat16"
    return None


@kernel("GatedAdd", since=1, domain=DOMAIN, refuses=_add_refuses)
def gated_add(X, Y, gate, gate_weight=None):
    """X + Y x gate, gate (..., 1) one value per row of X; the product rounded to X's type first."""
    if gate_weight is not None:
        raise ValueError(_add_refuses({}, ["X", "Y", "gate", "w"], []))
    if X.ndim < 1 or Y.shape != X.shape or gate.shape != (*X.shape[:-1], 1) or not X.shape[-1]:
        raise ValueError(f"GatedAdd Y must have X's shape {X.shape} and gate the shape {(*X.shape[:-1], 1)}; got "
                         f"{Y.shape} and {gate.shape}")
    return (X + Y * gate).astype(X.dtype)
