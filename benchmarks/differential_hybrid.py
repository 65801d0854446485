"""The differential sweep's families for onnxruntime's com.microsoft ops of hybrid, state-space and
linear-attention sequence models (``hal.kernels.contrib_hybrid``): CausalConvWithState ("msconvstate"),
LinearAttention and LinearAttentionGate ("mslinattn"), GatedRMSNorm and GatedAdd ("msgated"), and
MRotaryEmbedding ("msmrope").

onnx's reference has no com.microsoft kernels, so onnxruntime (1.32's CPU provider) is the only peer.
Each op is drawn in float32 and float16 (onnxruntime has float16 kernels for GatedAdd, GatedRMSNorm,
LinearAttentionGate and MRotaryEmbedding, and runs CausalConvWithState and LinearAttention's float
kernels through the casts it inserts), and GatedRMSNorm and LinearAttentionGate, the two with
bfloat16 CPU kernels, in bfloat16 between Casts; none has a float64 kernel, so float64 draws become
float32. Values are awkward now and then: zeros, rows of zeros, +-30, +-inf and NaN, and an empty
batch or sequence. Each contrib node's outputs are declared (``c.declared``): onnx's inference knows
none.

Left out, as onnxruntime's CPU provider refuses them (hal refuses them too, tested in
tests/kernels/test_contrib_hybrid.py): CausalConvWithState's ndim 2 and 3, its state_window and the
CUDA-only attributes at any but their neutral values (drawn at those), its state_update output;
LinearAttention's state_window > 0; GatedAdd's projected mode (gate_weight: CUDA, bfloat16 only).
Nor bfloat16 for the other four ops (the CPU provider has no bfloat16 kernel for them). Shapes
onnxruntime refuses (a decay or beta of the wrong width, head counts that do not divide, positions
past the caches, a 3-D MRotaryEmbedding input without num_heads, an odd rotary width) are not drawn:
hal refuses each as well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import TensorProto

from benchmarks.differential_contrib import _ft, _ms, _no_double
from benchmarks.differential_draw import Case, dims, ri

FLOAT, FLOAT16, BF16 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16



def _awkward(c: Case, a: np.ndarray, p: float, special: bool) -> np.ndarray:
    """``a`` with, now and then, zeros, large or tiny magnitudes (and, where ``special``, +-inf and NaN)
    written into it, or a whole row of zeros."""
    r = c.rng
    if a.size and r.random() < p:
        a = a.copy()
        flat = a.reshape(-1)
        idx = r.integers(0, flat.size, max(1, flat.size // 8))
        values = [0.0, 30.0, -30.0, 1e-3] + ([np.inf, -np.inf, np.nan] if special and r.random() < 0.5 else [])
        flat[idx] = np.array(r.choice(values, idx.size), a.dtype)
        if a.ndim > 1 and r.random() < 0.5:
            a[(0,) * (a.ndim - 1)] = 0
    return a


def _feed(c: Case, shape: list[int], lo: float = -2.0, hi: float = 2.0, p: float = 0.15, special: bool = True) -> str:
    return c.feed(shape, value=_awkward(c, c.rng.uniform(lo, hi, shape).astype(c.dtype), p, special))


def _bf16(c: Case, op: str, inputs: list[str], cast: list[bool], outputs: int, **attrs: Any) -> list[str]:
    """``op`` in bfloat16: the float32 inputs marked in ``cast`` cast to bfloat16 on the way in (numpy
    feeds have no bfloat16), its outputs to float16 on the way out. Judged at float16's tolerance, the
    judge's nearest to bfloat16's 8 bits: at float32's, a float32 difference far inside its tolerance
    becomes a bfloat16 step where the two fall either side of a rounding midpoint (onnxruntime's
    approximated sigmoid is 2e-5 from the exact one, hal's 6e-8)."""
    inputs = [c.op("Cast", [n], to=BF16) if n and bf else n for n, bf in zip(inputs, cast)]
    return [c.op("Cast", [n], to=FLOAT16) for n in _ms(c, op, inputs, [BF16] * outputs, **attrs)]


def _some(c: Case, n: int, p: float = 0.05) -> int:
    """``n``, or now and then 0 (an empty batch or sequence)."""
    return 0 if c.rng.random() < p else n


# -- CausalConvWithState ----------------------------------------------------------------------------

def _conv_state(c: Case) -> list[str]:
    """CausalConvWithState: channels-first (B, C, L) or channels_last (B, L, d_1[, d_2]) activations,
    1 to 37 channels, kernel widths 1..6 (1: an empty state), dilation 1..3 (or the attribute left
    out), bias and past_state each present or absent, activation none / silu / swish (or its default),
    decode (L = 1), prefill up to 33 steps and an empty batch or sequence, the CUDA kernel's
    attributes now and then at their neutral values; float32 and float16."""
    r = c.rng
    _no_double(c)
    b, length, k = _some(c, ri(r, 1, 4)), _some(c, int(r.choice([1, 1, 2, 3, 5, 8, 33]))), ri(r, 1, 7)
    attrs: dict[str, Any] = {}
    dilation = int(r.choice([1, 1, 2, 3]))
    if dilation != 1 or r.random() < 0.3:
        attrs["dilation"] = dilation
    act = str(r.choice(["", "none", "silu", "swish"]))
    if act:
        attrs["activation"] = act
    last = r.random() < 0.4
    lead = dims(r, ri(r, 1, 3), 1, 4) if last else [int(r.choice([1, 2, 3, 5, 6, 16, 37]))]
    channels, pad = int(np.prod(lead)), (k - 1) * dilation
    if last or r.random() < 0.2:
        attrs["channels_last"] = int(last)
    if r.random() < 0.15:  # the CUDA kernel's attributes, written at the neutral values the CPU kernel takes
        attrs.update({"ndim": 1, "state_window": 0, "state_length": 0, "input_channel_offset": 0, "input_channels": 0,
                      "state_channels_last": -1, "state_update_capacity": 0})
    x = _feed(c, [b, length, *lead] if last else [b, channels, length], -3, 3)
    inputs = [x, c.weight([channels, 1, k], scale=0.7), c.weight([channels]) if r.random() < 0.6 else ""]
    if r.random() < 0.7:
        inputs.append(_feed(c, [b, pad, *lead] if last else [b, channels, pad], -3, 3))
    while not inputs[-1]:
        inputs.pop()
    ft = _ft(c)
    return _ms(c, "CausalConvWithState", inputs, [ft, ft], **attrs)


# -- LinearAttention and LinearAttentionGate --------------------------------------------------------

_RULES = ("linear", "gated", "delta", "gated_delta")


def _heads(c: Case) -> tuple[int, int, int]:
    """(query heads, key heads, KV heads): standard GQA (query heads a multiple of the KV heads) or
    Qwen3.5's inverse GQA (KV heads a multiple of the query heads), or all equal; the key heads one a
    KV head, one a query head, or any divisor of the KV heads."""
    r = c.rng
    kind = ri(r, 0, 3)
    small, times = int(r.choice([1, 2])), int(r.choice([1, 2, 3]))
    hq, hkv = [(small, small), (small * times, small), (small, small * times)][kind]
    hk = min(hq, hkv)
    if r.random() < 0.25:
        hk = int(r.choice([d for d in range(1, hkv + 1) if hkv % d == 0]))
    return hq, hk, hkv


def _gate(c: Case, b: int, t: int, h: int, beta: bool, bf16: bool = False) -> list[str]:
    """A LinearAttentionGate over (B, T, H) projections: (decay[, beta]), in bfloat16 where asked."""
    r = c.rng
    a = _feed(c, [b, t, h], -6, 6)
    dt = c.weight(value=r.uniform(-2, 2, h).astype(np.float32))
    scale = c.weight(value=(-np.exp(r.uniform(-2, 1.5, h)) if r.random() < 0.8 else r.uniform(-2, 2, h))
                     .astype(np.float32))
    inputs = [a, dt, scale]
    if beta or r.random() < 0.3:
        inputs.append(_feed(c, [b, t, h], -6, 6))
    if bf16:
        return _bf16(c, "LinearAttentionGate", inputs, [True, False, False, True], 1 + beta)
    return _ms(c, "LinearAttentionGate", inputs, [_ft(c)] * (1 + beta))


def _linear_attention(c: Case) -> list[str]:
    """LinearAttention under each update rule (and the default, gated_delta), standard and inverse
    GQA and key heads fewer than KV heads, a decay per head or per key dimension, a beta per head or
    one for all, past_state present or absent, an explicit scale, decode (T = 1) and prefill, keys
    L2-normalised for the delta rules (as the schema asks); LinearAttentionGate alone (its beta
    output or not, b without it) and feeding LinearAttention's decay and beta (Qwen3.5's gated
    delta-net); float32 and float16, a float32 past_state beside float16 activations, and the gate
    alone in bfloat16."""
    r = c.rng
    _no_double(c)
    b, t = _some(c, ri(r, 1, 3)), _some(c, int(r.choice([1, 1, 2, 3, 4, 7, 70])))
    if r.random() < 0.2:
        return _gate(c, b, t, ri(r, 1, 6), r.random() < 0.6, c.dtype == np.float32 and r.random() < 0.3)
    hq, hk, hkv = _heads(c)
    dk, dv = int(r.choice([1, 2, 3, 4, 8, 16, 32])), int(r.choice([1, 2, 3, 4, 8, 16, 33]))
    rule = str(r.choice(_RULES))
    attrs: dict[str, Any] = {"q_num_heads": hq, "kv_num_heads": hkv}
    if rule != "gated_delta" or r.random() < 0.5:
        attrs["update_rule"] = rule
    if r.random() < 0.3:
        attrs["scale"] = float(r.choice([0.0, 0.25, 1.0, -0.5, 2.0]))
    if r.random() < 0.2:
        attrs["chunk_size"] = int(r.choice([1, 2, 16, 64]))
    if r.random() < 0.1:
        attrs["state_window"] = 0
    q = _feed(c, [b, t, hq * dk])
    keys = r.standard_normal((b, t, hk, dk))
    if "delta" in rule:
        keys /= np.maximum(np.linalg.norm(keys, axis=-1, keepdims=True), 1e-3)
    k = c.feed([b, t, hk * dk], value=keys.reshape(b, t, hk * dk).astype(c.dtype))
    v = _feed(c, [b, t, hkv * dv])
    past, st = "", _ft(c)
    if r.random() < 0.6:  # (a float32 state beside float16 activations now and then: S is its own type)
        past = c.feed([b, hkv, dk, dv], value=r.uniform(-1, 1, (b, hkv, dk, dv)).astype(
            np.float32 if r.random() < 0.3 else c.dtype))
        st = _ft(c) if c.feeds[past].dtype == c.dtype else FLOAT
    decay = beta = ""
    fused = "gated_delta" == rule and r.random() < 0.4
    if fused:
        decay, beta = _gate(c, b, t, hkv, True)
    # a decay or beta the rule does not take is given now and then: onnxruntime checks its shape and
    # leaves it unused
    if not fused and ("gated" in rule or r.random() < 0.2):
        decay = _feed(c, [b, t, hkv * (dk if r.random() < 0.4 else 1)], -1.5, 0.0)
    if not fused and ("delta" in rule or r.random() < 0.2):
        beta = _feed(c, [b, t, 1 if r.random() < 0.3 else hkv], 0, 1)
    inputs = [q, k, v, past, decay, beta]
    while not inputs[-1]:
        inputs.pop()
    return _ms(c, "LinearAttention", inputs, [_ft(c), st], **attrs)


# -- GatedRMSNorm and GatedAdd ----------------------------------------------------------------------

def _gated(c: Case) -> list[str]:
    """GatedRMSNorm (ranks 1..4, the last axis one to three groups of len(scale), activation silu /
    swish / sigmoid or its default, epsilon from 1e-12 to 0.5, rows of zeros) and GatedAdd in plain
    mode (ranks 1..4, the gate (..., 1), zeros and large gates); float32, float16 and (GatedRMSNorm)
    bfloat16."""
    r = c.rng
    _no_double(c)
    lead = [_some(c, d) for d in dims(r, ri(r, 0, 4), 1, 5)]
    if r.random() < 0.5:
        width = int(r.choice([1, 2, 3, 7, 8, 16, 33, 64]))
        shape = [*lead, width * ri(r, 1, 4)]
        attrs: dict[str, Any] = {}
        act = str(r.choice(["", "silu", "swish", "sigmoid"]))
        if act:
            attrs["activation"] = act
        if r.random() < 0.6:
            attrs["epsilon"] = float(r.choice([1e-12, 1e-6, 1e-5, 0.1, 0.5]))
        scale = (r.uniform(0.5, 1.5, width) * r.choice([1, -1], width)).astype(c.dtype)
        scale = c.weight(value=scale.reshape(1, width) if r.random() < 0.1 else scale)  # ((1, C): the same C)
        inputs = [_feed(c, shape, -3, 3, 0.3), scale, _feed(c, shape, -8, 8)]
        if c.dtype == np.float32 and r.random() < 0.25:
            return _bf16(c, "GatedRMSNorm", inputs, [True] * 3, 1, **attrs)
        return _ms(c, "GatedRMSNorm", inputs, [_ft(c)], **attrs)
    shape = [*lead, int(r.choice([1, 2, 5, 8, 17, 64]))]
    gate = _feed(c, [*lead, 1], -3, 3, 0.3)
    return _ms(c, "GatedAdd", [_feed(c, shape, -3, 3), _feed(c, shape, -3, 3), gate], [_ft(c)])


# -- MRotaryEmbedding --------------------------------------------------------------------------------

def _split(r: np.random.Generator, total: int) -> list[int]:
    """``total`` split into three non-negative sections."""
    cuts = sorted(r.integers(0, total + 1, 2))
    return [int(cuts[0]), int(cuts[1] - cuts[0]), int(total - cuts[1])]


def _mrope(c: Case) -> list[str]:
    """MRotaryEmbedding: 3-D (B, S, N x H) input with num_heads or 4-D (B, N, S, H), the whole head
    rotated or a partial rotary_embedding_dim (the rest passing through), mrope_section any split of
    the half width (zero sections, one stream owning all), sectioned and interleaved layouts, pairs
    half-wise or interleaved, scale, three position streams drawn apart or equal (text tokens), the
    caches longer than the sequence; float32 and float16."""
    r = c.rng
    _no_double(c)
    b, s, n = _some(c, ri(r, 1, 3)), _some(c, ri(r, 1, 6)), ri(r, 1, 4)
    head = 2 * int(r.choice([1, 2, 3, 4, 5, 8, 16, 32]))
    rd = 2 * ri(r, 1, head // 2 + 1) if r.random() < 0.4 else 0
    half = (rd or head) // 2
    rows = max(s + ri(r, -3, 6), 1)
    if rows < s or r.random() < 0.2:  # (a sequence past the caches' rows needs packed batching)
        attrs_packed = {"is_packed_batching": 1}
    else:
        attrs_packed = {"is_packed_batching": 0} if r.random() < 0.1 else {}
    attrs: dict[str, Any] = {"mrope_section": _split(r, half), **attrs_packed}
    layout = ri(r, 0, 3)
    if layout < 2:
        attrs["mrope_layout"] = layout
    if r.random() < 0.5:
        attrs["interleaved"] = ri(r, 0, 2)
    if r.random() < 0.3:
        attrs["scale"] = float(r.choice([0.5, 1.0, 1.5, -1.0]))
    four = r.random() < 0.4
    if rd or not four or r.random() < 0.3:
        attrs["num_heads"] = n
    if rd:
        attrs["rotary_embedding_dim"] = rd
    x = _feed(c, [b, n, s, head] if four else [b, s, n * head], -3, 3)
    pos = r.integers(0, rows, (3, b, s))
    if r.random() < 0.3:  # text tokens: the three streams alike
        pos[1:] = pos[0]
    angles = r.uniform(0, 6.3, (rows, half))
    cos, sin = np.cos(angles), np.sin(angles)
    if r.random() < 0.2:  # caches other than a rotation's
        cos, sin = r.uniform(-2, 2, (rows, half)), r.uniform(-2, 2, (rows, half))
    inputs = [x, c.feed(list(pos.shape), value=pos.astype(np.int64)), c.weight(value=cos.astype(c.dtype)),
              c.weight(value=sin.astype(c.dtype))]
    return _ms(c, "MRotaryEmbedding", inputs, [_ft(c)], **attrs)


FAMILIES: dict[str, Callable[[Case], list[str]]] = {
    "msconvstate": _conv_state, "mslinattn": _linear_attention, "msgated": _gated, "msmrope": _mrope}
