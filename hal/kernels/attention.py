"""Attention-family kernels: Attention, FlexAttention, LinearAttention, RotaryEmbedding,
CausalConvWithState and TensorScatter (the KV-cache write).

float16 / bfloat16 inputs are computed in float32 and rounded once at the end; float32 stays float32
and float64 stays float64. Grouped-query attention never copies K / V per query head: Q is viewed as
``(batch, kv_heads, group, seq, head)`` so one batched matmul serves each group (query head ``h``
reads K / V head ``h // group``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view

from hal.kernels._axes import axis_in
from hal.kernels.elementwise import row_sums
from hal.kernels.registry import KernelContext, kernel

Array = np.ndarray


def _work_dtype(*arrays: Array | None) -> np.dtype:
    """float64 if any input is float64, else float32 (float16 / bfloat16 widen to float32)."""
    if any(a is not None and a.dtype == np.float64 for a in arrays):
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def _np_dtype(onnx_type: int) -> np.dtype:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(onnx_type))


def _to_heads(x: Array, num_heads: int) -> Array:
    """(batch, seq, heads * head) -> (batch, heads, seq, head)."""
    b, s, hidden = x.shape
    if num_heads <= 0 or hidden % num_heads:
        raise ValueError(f"hidden size {hidden} is not a multiple of num_heads={num_heads}")
    return x.reshape(b, s, num_heads, hidden // num_heads).transpose(0, 2, 1, 3)


def _from_heads(x: Array) -> Array:
    """(batch, heads, seq, head) -> (batch, seq, heads * head)."""
    b, h, s, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, s, h * d)


def _grouped(q: Array, kv_heads: int) -> Array:
    """(batch, q_heads, ...) -> (batch, kv_heads, group, ...): query head h reads kv head h // group."""
    b, hq = q.shape[:2]
    if kv_heads <= 0 or hq % kv_heads:
        raise ValueError(f"q_num_heads ({hq}) must be a positive multiple of kv_num_heads ({kv_heads})")
    return q.reshape(b, kv_heads, hq // kv_heads, *q.shape[2:])


def _as_is(x: Array) -> Array:
    return x


def _scores(q: Array, k: Array) -> Array:
    """q (B, Hq, Sq, D) @ k (B, Hkv, Skv, D)^T -> (B, Hq, Sq, Skv), GQA by grouping."""
    qg = _grouped(q, k.shape[1])
    s = np.matmul(qg, np.swapaxes(k, -1, -2)[:, :, None])
    return s.reshape(q.shape[0], q.shape[1], q.shape[2], k.shape[2])


def _weighted(p: Array, v: Array) -> Array:
    """p (B, Hq, Sq, Skv) @ v (B, Hkv, Skv, Dv) -> (B, Hq, Sq, Dv), GQA by grouping."""
    pg = _grouped(p, v.shape[1])
    y = np.matmul(pg, v[:, :, None])
    return y.reshape(p.shape[0], p.shape[1], p.shape[2], v.shape[3])


def _softmax_last(x: Array) -> Array:
    """Softmax over the last axis; an all -inf row gives zeros, not NaN."""
    if x.size == 0:
        return np.exp(x)
    m = np.fmax.reduce(x, axis=-1, keepdims=True)  # faster than max; a NaN row still ends NaN via exp
    m[np.isneginf(m)] = 0
    e = np.subtract(x, m)
    np.exp(e, out=e)
    s = row_sums(e.reshape(-1, e.shape[-1])).reshape(m.shape)
    s[s == 0] = 1
    e /= s
    return e


def _softmax_at(x: Array, precision: int | None, work: np.dtype) -> Array:
    """Softmax computed at ``softmax_precision`` (inputs and result rounded to it), returned in ``work``."""
    if precision is None:
        return _softmax_last(x)
    sp = _np_dtype(precision)
    inner = np.float64 if sp == np.float64 else np.float32
    p = _softmax_last(x.astype(sp).astype(inner))
    return p.astype(sp).astype(work)


# --- Attention -------------------------------------------------------------------------------------


def _attention_bias(attn_mask: Array | None, nonpad: Array | None, past_len: int | None, q_len: int,
                    kv_len: int, is_causal: int, left: int, right: int, work: np.dtype) -> Array | None:
    """The additive bias (broadcastable to (B, Hq, Sq, Skv)): float mask plus 0 / -inf constraints."""
    allowed = None
    add = None
    if attn_mask is not None:
        m = np.asarray(attn_mask)
        pad = kv_len - m.shape[-1]
        if pad > 0:  # a short mask is padded with "not attended"
            fill = False if m.dtype == np.bool_ else -np.inf
            m = np.pad(m, [(0, 0)] * (m.ndim - 1) + [(0, pad)], constant_values=fill)
        if m.dtype == np.bool_:
            allowed = m
        else:
            add = m.astype(work)
    windowed = left >= 0 or right >= 0
    if is_causal or windowed:
        if past_len is not None:
            offset: Any = past_len
        elif nonpad is not None:
            offset = (nonpad.astype(np.int64).reshape(-1) - q_len).reshape(-1, 1, 1, 1)
        else:
            offset = 0
        pos = np.arange(q_len).reshape(q_len, 1) + offset  # absolute query position: (Sq, 1) or (B, 1, Sq, 1)
        j = np.arange(kv_len)
        rules = []
        if is_causal:
            rules.append(j <= pos)
        if left >= 0:
            rules.append(j >= pos - left)
        if right >= 0:
            rules.append(j <= pos + right)
        for r in rules:
            allowed = r if allowed is None else allowed & r
    if nonpad is not None:
        valid = np.arange(kv_len) < nonpad.astype(np.int64).reshape(-1, 1, 1, 1)
        allowed = valid if allowed is None else allowed & valid
    if allowed is None:
        return add
    bias = np.where(allowed, work.type(0), work.type(-np.inf))
    return bias if add is None else bias + add


@kernel("Attention", since=23, output_count=True)
def attention(Q, K, V, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None, *,
              is_causal=0, kv_num_heads=None, q_num_heads=None, qk_matmul_output_mode=0, scale=None,
              softcap=0.0, softmax_precision=None, left_window_size=-1, right_window_size=-1, _n_outputs=1,
              _round_operand=None):
    """Scaled dot-product attention, opsets 23-25 (nonpad_kv_seqlen from 24, windows from 25).

    Outputs Y, present_key, present_value, qk_matmul_output (the last by ``qk_matmul_output_mode``:
    0 raw Q·K^T, 1 after softcap, 2 after softcap and bias, 3 after softmax). A numeric policy passes
    ``_round_operand`` (``hal.numerics.INNER_PRODUCT_OPS``): the operands of both products, the scaled
    Q and K, the probabilities and V, are rounded by it, as a matrix unit reads them.
    """
    if (past_key is None) != (past_value is None):
        raise ValueError("Attention: past_key and past_value must be given together")
    three_d = Q.ndim == 3
    if three_d:
        if q_num_heads is None or kv_num_heads is None:
            raise ValueError("Attention with 3D inputs needs q_num_heads and kv_num_heads")
        q4, k4, v4 = _to_heads(Q, q_num_heads), _to_heads(K, kv_num_heads), _to_heads(V, kv_num_heads)
    elif Q.ndim == 4:
        q4, k4, v4 = Q, K, V
    else:
        raise ValueError(f"Attention needs 3D or 4D inputs, got Q of rank {Q.ndim}")
    present_key = k4 if past_key is None else np.concatenate([past_key, k4], axis=2)
    present_value = v4 if past_value is None else np.concatenate([past_value, v4], axis=2)

    work = _work_dtype(Q, K, V)
    q_len, head = q4.shape[2], q4.shape[3]
    kv_len = present_key.shape[2]
    # Q and K are each scaled by sqrt(scale) (overflow guard). A scale attribute is a float32, whose
    # root the spec's function body takes in float32 (onnxruntime and onnx's reference do too): a float64
    # model's scores move by 1e-8 of themselves against the float64 root. The default scale's is float64.
    root = work.type(math.sqrt(1.0 / math.sqrt(head)) if scale is None else np.sqrt(np.float32(scale)))
    qs = q4.astype(work) * root
    ks = present_key.astype(work) * root
    rd = _round_operand or _as_is
    raw = _scores(rd(qs), rd(ks))
    capped = raw
    if softcap > 0:
        capped = np.tanh(raw / work.type(softcap)) * work.type(softcap)

    bias = _attention_bias(attn_mask, nonpad_kv_seqlen, None if past_key is None else past_key.shape[2],
                           q_len, kv_len, is_causal, left_window_size, right_window_size, work)
    logits = capped if bias is None else capped + bias
    probs = _softmax_at(logits, softmax_precision, work)
    if bias is not None:
        # fully-masked rows (every key's bias is -inf) give zeros, decided on the bias, not the logits
        dead = np.isneginf(np.max(bias, axis=-1, keepdims=True))
        if dead.any():
            probs = np.where(dead, work.type(0), probs)
    y = _weighted(rd(probs), rd(present_value.astype(work)))
    if three_d:
        y = _from_heads(y)
    outs: list[Array | None] = [y.astype(Q.dtype), present_key, present_value]
    if _n_outputs > 3:
        qk = {0: raw, 1: capped, 2: logits, 3: probs}.get(qk_matmul_output_mode)
        if qk is None:
            raise ValueError(f"Attention qk_matmul_output_mode must be 0-3, got {qk_matmul_output_mode}")
        qk = np.broadcast_to(qk, raw.shape)
        outs.append(qk.astype(Q.dtype))
    return outs[0] if _n_outputs <= 1 else tuple(outs[:_n_outputs])  # one output: the array itself


# --- FlexAttention ---------------------------------------------------------------------------------


def _call_mod(graph: Any, x: Array, ctx: KernelContext, dtype: np.dtype) -> Array:
    outs = graph(x, scope=ctx.scope)
    if len(outs) != 1:
        raise ValueError(f"FlexAttention modifier graphs return one tensor, got {len(outs)}")
    return np.asarray(outs[0]).astype(dtype, copy=False)


@kernel("FlexAttention", since=1, domain="ai.onnx.preview", context=True)
def flex_attention(Q, K, V, *, scale=None, score_mod=None, prob_mod=None, softmax_precision=None,
                   _ctx: KernelContext):
    """softmax(score_mod(Q·K^T * scale)) -> prob_mod -> @ V on rank-4 inputs, GQA by head groups.

    The modifier graphs see scores and probabilities in ``softmax_precision`` (float32 by default,
    float64 for float64 inputs).
    """
    if Q.ndim != 4 or K.ndim != 4 or V.ndim != 4:
        raise ValueError(f"FlexAttention needs rank-4 Q, K, V, got {Q.shape}, {K.shape}, {V.shape}")
    if softmax_precision is not None:
        sm = _np_dtype(softmax_precision)
    else:
        sm = np.dtype(np.float64) if Q.dtype == np.float64 else np.dtype(np.float32)
    work = np.dtype(np.float64) if np.float64 in (Q.dtype, sm) else np.dtype(np.float32)
    if scale is None:
        scale = 1.0 / math.sqrt(Q.shape[3])
    root = work.type(math.sqrt(scale))
    scores = _scores(Q.astype(work) * root, K.astype(work) * root).astype(sm, copy=False)
    if score_mod is not None:
        scores = _call_mod(score_mod, scores, _ctx, sm)
    inner = np.float64 if sm == np.float64 else np.float32
    probs = _softmax_last(scores.astype(inner, copy=False)).astype(sm, copy=False)
    if prob_mod is not None:
        probs = _call_mod(prob_mod, probs, _ctx, sm)
    y = _weighted(probs.astype(work, copy=False), V.astype(work))
    return y.astype(Q.dtype)


# --- LinearAttention -------------------------------------------------------------------------------


@kernel("LinearAttention", since=27)
def linear_attention(query, key, value, past_state=None, decay=None, beta=None, *, chunk_size=64,
                     kv_num_heads=None, q_num_heads=None, scale=0.0, update_rule="gated_delta"):
    """Recurrent linear attention over time (linear / gated / delta / gated_delta update rules).

    The state S (batch, kv_heads, d_k, d_v) runs in float32 (float64 for float64 inputs); each query
    head reads its group's state: o_t = scale * q_t^T S_t.
    """
    if update_rule not in ("linear", "gated", "delta", "gated_delta"):
        raise ValueError(f"LinearAttention update_rule must be linear, gated, delta or gated_delta, "
                         f"got {update_rule!r}")
    if q_num_heads is None or kv_num_heads is None:
        raise ValueError("LinearAttention needs q_num_heads and kv_num_heads")
    gated = update_rule in ("gated", "gated_delta")
    delta = update_rule in ("delta", "gated_delta")
    if gated != (decay is not None):
        raise ValueError(f"LinearAttention update_rule {update_rule!r} {'needs' if gated else 'forbids'} decay")
    if delta != (beta is not None):
        raise ValueError(f"LinearAttention update_rule {update_rule!r} {'needs' if delta else 'forbids'} beta")
    work = _work_dtype(query, key, value, past_state)
    b, t, _ = query.shape
    q = _grouped(_to_heads(query, q_num_heads).astype(work), kv_num_heads)  # (B, Hkv, G, T, dk)
    k = _to_heads(key, kv_num_heads).astype(work)  # (B, Hkv, T, dk)
    v = _to_heads(value, kv_num_heads).astype(work)  # (B, Hkv, T, dv)
    dk, dv = k.shape[3], v.shape[3]
    if q.shape[4] != dk:
        raise ValueError(f"LinearAttention query head size {q.shape[4]} differs from key head size {dk}")
    g = None
    if gated:
        if decay.shape[-1] == kv_num_heads:  # one log-decay per head
            g = np.exp(decay.astype(work)).reshape(b, t, kv_num_heads, 1, 1)
        elif decay.shape[-1] == kv_num_heads * dk:  # one per key dimension
            g = np.exp(decay.astype(work)).reshape(b, t, kv_num_heads, dk, 1)
        else:
            raise ValueError(f"LinearAttention decay last dim must be {kv_num_heads} or {kv_num_heads * dk}, "
                             f"got {decay.shape[-1]}")
    bt = None
    if delta:
        if beta.shape[-1] not in (kv_num_heads, 1):
            raise ValueError(f"LinearAttention beta last dim must be {kv_num_heads} or 1, got {beta.shape[-1]}")
        bt = beta.astype(work).reshape(b, t, beta.shape[-1], 1)
    if past_state is not None:
        if past_state.shape != (b, kv_num_heads, dk, dv):
            raise ValueError(f"LinearAttention past_state shape {past_state.shape} is not {(b, kv_num_heads, dk, dv)}")
        state = past_state.astype(work)
    else:
        state = np.zeros((b, kv_num_heads, dk, dv), dtype=work)
    if not scale:
        scale = 1.0 / math.sqrt(dk)
    out = np.empty((b, kv_num_heads, q.shape[2], t, dv), dtype=work)
    for i in range(t):
        k_t, v_t = k[:, :, i], v[:, :, i]
        if g is not None:
            state = state * g[:, i]
        if bt is not None:
            recalled = np.matmul(k_t[:, :, None, :], state)[:, :, 0]  # S^T k: (B, Hkv, dv)
            v_t = bt[:, i] * (v_t - recalled)
        state = state + k_t[..., :, None] * v_t[..., None, :]
        out[:, :, :, i] = np.matmul(q[:, :, :, i], state)
    out *= work.type(scale)
    y = _from_heads(out.reshape(b, q_num_heads, t, dv))
    state_dtype = query.dtype if past_state is None else past_state.dtype
    return y.astype(query.dtype), state.astype(state_dtype)


# --- RotaryEmbedding -------------------------------------------------------------------------------


@kernel("RotaryEmbedding", since=23)
def rotary_embedding(X, cos_cache, sin_cache, position_ids=None, *, interleaved=0, num_heads=0,
                     rotary_embedding_dim=0):
    """Rotate the first ``rotary_embedding_dim`` features of each head (halves, or even/odd pairs)."""
    if X.ndim == 4:  # (B, H, S, D): caches (B, S, d/2) broadcast over heads
        x = X
        head = X.shape[3]
    elif X.ndim == 3:  # (B, S, H*D) -> (B, S, H, D): caches (B, S, 1, d/2)
        if not num_heads:
            raise ValueError("RotaryEmbedding with a 3D input needs num_heads")
        x = X.reshape(X.shape[0], X.shape[1], num_heads, -1)
        head = x.shape[3]
    else:
        raise ValueError(f"RotaryEmbedding needs a 3D or 4D input, got rank {X.ndim}")
    rd = rotary_embedding_dim or head
    if rd % 2 or rd > head:
        raise ValueError(f"RotaryEmbedding rotary_embedding_dim {rd} must be even and at most head_size {head}")
    if position_ids is not None:
        cos_cache, sin_cache = cos_cache[position_ids], sin_cache[position_ids]
    if cos_cache.shape[-1] != rd // 2 or sin_cache.shape[-1] != rd // 2:
        raise ValueError(f"RotaryEmbedding caches' last dim must be rotary_embedding_dim/2 = {rd // 2}, got "
                         f"{cos_cache.shape[-1]} and {sin_cache.shape[-1]}")
    work = _work_dtype(X, cos_cache)
    axis = 1 if X.ndim == 4 else 2  # the heads axis the caches broadcast over
    cos = np.expand_dims(cos_cache.astype(work), axis)
    sin = np.expand_dims(sin_cache.astype(work), axis)
    xw = x.astype(work)
    if interleaved:
        first, second = slice(0, rd, 2), slice(1, rd, 2)
    else:
        first, second = slice(0, rd // 2), slice(rd // 2, rd)
    x1, x2 = xw[..., first], xw[..., second]
    out = xw.copy()
    out[..., first] = cos * x1 - sin * x2
    out[..., second] = sin * x1 + cos * x2
    return out.reshape(X.shape).astype(X.dtype)


# --- CausalConvWithState ---------------------------------------------------------------------------


@kernel("CausalConvWithState", since=27)
def causal_conv_with_state(input, weight, bias=None, past_state=None, *, activation="none"):
    """Depthwise causal conv1d over [past_state | input], optional fused SiLU; returns (output, state)."""
    if activation not in ("none", "silu", "swish"):
        raise ValueError(f"CausalConvWithState activation must be none, silu or swish, got {activation!r}")
    if input.ndim != 3 or weight.ndim != 3:
        raise ValueError(f"CausalConvWithState needs rank-3 input and weight, got {input.shape}, {weight.shape}")
    b, c, _ = input.shape
    k = weight.shape[2]
    pad = np.zeros((b, c, k - 1), dtype=input.dtype) if past_state is None else past_state.astype(input.dtype)
    padded = np.concatenate([pad, input], axis=2)  # (B, C, k - 1 + L)
    work = _work_dtype(input, weight)
    windows = sliding_window_view(padded.astype(work), k, axis=2)  # (B, C, L, k)
    y = np.einsum("bclk,ck->bcl", windows, weight[:, 0, :].astype(work))
    if bias is not None:
        y += bias.astype(work)[:, None]
    if activation != "none":
        y = y / (1 + np.exp(-y))
    present = padded[:, :, padded.shape[2] - (k - 1):]
    return y.astype(input.dtype), present.copy()


# --- TensorScatter ---------------------------------------------------------------------------------


@kernel("TensorScatter", since=24)
def tensor_scatter(past_cache, update, write_indices=None, *, axis=-2, mode="linear"):
    """Write ``update`` into a copy of the cache along ``axis`` from each batch row's write index."""
    if mode not in ("linear", "circular"):
        raise ValueError(f"TensorScatter mode must be linear or circular, got {mode!r}")
    axis = axis_in(axis, past_cache.ndim)
    if axis == 0:
        raise ValueError("TensorScatter axis cannot be the batch axis")
    batch, max_len, seq = past_cache.shape[0], past_cache.shape[axis], update.shape[axis]
    others = [d for i, d in enumerate(past_cache.shape) if i != axis]
    if others != [d for i, d in enumerate(update.shape) if i != axis] or seq > max_len:
        raise ValueError(f"TensorScatter update shape {update.shape} does not fit cache {past_cache.shape}")
    starts = np.zeros(batch, dtype=np.int64) if write_indices is None else write_indices.astype(np.int64)
    idx = starts.reshape(batch, 1) + np.arange(seq)  # (B, seq)
    if mode == "circular":
        idx %= max_len
    elif seq and (idx.min() < 0 or idx.max() >= max_len):
        raise ValueError(f"TensorScatter linear write past the cache end ({max_len})")
    present = past_cache.copy()
    view = np.moveaxis(present, axis, 1)  # (B, max_len, ...) view into present
    view[np.arange(batch)[:, None], idx] = np.moveaxis(update, axis, 1)
    return present
