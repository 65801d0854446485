"""onnxruntime's transformers-optimizer fusions that only its CUDA provider computes (domain
``com.microsoft``): RelativePositionBias (T5), GroupNorm, SkipGroupNorm, BiasSplitGelu and NhwcConv
(Stable Diffusion's UNet and VAE), GemmFastGelu, GatedRelativePositionBias (WavLM). Its CPU
provider registers no kernel for them, so a model optimised for a GPU ran nowhere in hal and on no
CPU; hal computes them on every target, as ContribOperators.md and the CUDA kernels define them,
checked against onnxruntime running the standard ops each one fuses.

* RelativePositionBias: (1, heads, L, L) for query_length = key_length = L (the optimizer passes
  the total length twice; the decoder slices its last rows). Key k against query q is bucketed as
  the CUDA kernel does: r = k - q; bidirectional, half the buckets for r > 0 and |r| within the
  half, else |r| in all of them; below half of those r itself, above max_exact + int(log(r /
  max_exact) / log(max_distance / max_exact) x (buckets - max_exact)) (float32 logs, capped at the
  last bucket). bias_table is (buckets, heads) "column-major": the optimizer writes the
  embedding's transpose under the embedding's dims, so head h's bucket b is element h x buckets + b.
* GroupNorm / SkipGroupNorm: each sample's groups of C / groups channels normalised over the
  group's channels and the spatial axes (mean and variance in float32, epsilon under the root),
  then gamma, beta and SiLU where activation is 1; NHWC where channels_last is 1 (the default), else
  NCHW. SkipGroupNorm first adds skip ((N, H, W, C), (N, 1, 1, C) or (N, C)) and bias (C), and
  gives that sum too.
* BiasSplitGelu: X + bias split in halves along the last axis, left x Gelu(right) (erf form).
* NhwcConv: Conv in channels-last layout (X and the output (N, spatial..., C), W (M, kernel...,
  C / group)), as the optimizer writes it for a UNet.
* GemmFastGelu: FastGelu(X @ W + bias), Gelu's tanh form.
* GatedRelativePositionBias (WavLM): rel_pos scaled by gate_u (gate_r eco_a - 1) + 2, the two gates
  the sigmoids of the query's (with its bias) projection through weight and bias, its D columns
  summed in two halves; the packed form (token_offset) is refused.

16-bit floats are computed in float32 and rounded once.
"""

from __future__ import annotations

import numpy as np

from hal.kernels import activation as act
from hal.kernels.linalg import _matmul
from hal.kernels.nn import _conv
from hal.kernels.registry import kernel

Array = np.ndarray
DOMAIN = "com.microsoft"
_F32 = np.float32


def _wide(x: Array) -> Array:
    return x.astype(np.float32) if x.dtype.itemsize < 4 and x.dtype.kind in "fV" else x


@kernel("RelativePositionBias", since=1, domain=DOMAIN)
def relative_position_bias(bias_table, query_length, key_length, *, max_distance, is_bidirectional=0):
    length = int(np.asarray(query_length).reshape(-1)[0])
    if int(np.asarray(key_length).reshape(-1)[0]) != length:
        raise ValueError(f"RelativePositionBias needs query_length ({length}) = key_length "
                         f"({int(np.asarray(key_length).reshape(-1)[0])}), as onnxruntime's kernel does")
    if bias_table.ndim != 2 or length < 0:
        raise ValueError(f"RelativePositionBias: bias_table must be (buckets, heads), got {bias_table.shape}")
    buckets, heads = bias_table.shape
    rel = np.arange(length)[None, :] - np.arange(length)[:, None]  # key - query
    half = buckets
    base = np.zeros_like(rel)
    if is_bidirectional:
        half = buckets // 2
        base = np.where(rel > 0, half, 0)
    dist = np.abs(rel)
    exact = half // 2
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = (np.log(dist.astype(_F32) / _F32(exact)) / np.log(_F32(max_distance) / _F32(exact))
                  * _F32(half - exact))
    large = np.minimum(exact + np.trunc(np.nan_to_num(scaled, neginf=0.0)).astype(np.int64), half - 1)
    bucket = base + np.where(dist < exact, dist, large)
    flat = bias_table.reshape(-1)  # head h's bucket b at h x buckets + b
    return flat[np.arange(heads)[:, None, None] * buckets + bucket[None]][None]


def _group_norm(x: Array, gamma: Array, beta: Array, groups: int, epsilon: float, activation: int,
                channels_last: int, op: str) -> Array:
    if x.ndim < 2:
        raise ValueError(f"{op} needs an input of rank 2 or more, got {x.shape}")
    w = _wide(x)
    nhwc = w if channels_last else np.moveaxis(w, 1, -1)
    channels = nhwc.shape[-1]
    if groups < 1 or channels % groups:
        raise ValueError(f"{op}: groups ({groups}) must divide the {channels} channels")
    grouped = nhwc.reshape(nhwc.shape[0], -1, groups, channels // groups)
    mean = grouped.mean(axis=(1, 3), keepdims=True, dtype=np.float32)
    var = ((grouped - mean) ** 2).mean(axis=(1, 3), keepdims=True, dtype=np.float32)
    y = ((grouped - mean) / np.sqrt(var + _F32(epsilon))).reshape(nhwc.shape)
    y = y * _wide(gamma).astype(np.float32) + _wide(beta).astype(np.float32)
    if activation == 1:
        y = y * act.sigmoid(y)
    elif activation != 0:
        raise ValueError(f"{op}: activation must be 0 (none) or 1 (SiLU), got {activation}")
    y = y if channels_last else np.moveaxis(y, -1, 1)
    return np.ascontiguousarray(y).astype(x.dtype, copy=False)


@kernel("GroupNorm", since=1, domain=DOMAIN)
def group_norm(X, gamma, beta, *, groups, activation, epsilon=1e-5, channels_last=1):
    return _group_norm(X, gamma, beta, groups, epsilon, activation, channels_last, "GroupNorm")


def _skip_group_norm_refuses(attrs: dict, inputs: list[str], outputs: list[str]) -> str | None:
    if not int(attrs.get("channels_last", 1)):
        return "SkipGroupNorm takes NHWC input only (channels_last 1), as onnxruntime's CUDA kernel does"
    return None


@kernel("SkipGroupNorm", since=1, domain=DOMAIN, output_count=True, refuses=_skip_group_norm_refuses)
def skip_group_norm(X, gamma, beta, skip, bias=None, *, groups, activation, epsilon=1e-5, channels_last=1,
                    _n_outputs=1):
    skipped = skip.reshape(skip.shape[0], *([1] * (X.ndim - 2)), skip.shape[-1]) if skip.ndim == 2 else skip
    s = (_wide(X) + _wide(skipped)).astype(np.float32)
    if bias is not None:
        s = s + _wide(bias)
    y = _group_norm(s, gamma, beta, groups, epsilon, activation, 1, "SkipGroupNorm").astype(X.dtype)
    return (y, s.astype(X.dtype)) if _n_outputs > 1 else y


@kernel("BiasSplitGelu", since=1, domain=DOMAIN)
def bias_split_gelu(X, bias):
    s = _wide(X) + _wide(bias)
    if s.shape[-1] % 2:
        raise ValueError(f"BiasSplitGelu needs an even last dimension, got {X.shape}")
    left, right = np.split(s, 2, axis=-1)
    return (left * act.gelu(right)).astype(X.dtype)


@kernel("NhwcConv", since=1, domain=DOMAIN)
def nhwc_conv(X, W, B=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
              strides=None):
    """Conv in channels-last layout: X (N, spatial..., C), W (M, kernel..., C / group), as the
    optimizer writes it (the Conv's weights transposed) and the output channels-last too."""
    if X.ndim < 3 or W.ndim != X.ndim:
        raise ValueError(f"NhwcConv needs X (N, spatial..., C) and W (M, kernel..., C / group) of one rank, got "
                         f"{X.shape} and {W.shape}")
    first = (0, X.ndim - 1, *range(1, X.ndim - 1))  # channels-last to channels-first
    y = _conv(np.ascontiguousarray(X.transpose(first)), np.ascontiguousarray(W.transpose(first)), B, auto_pad,
              dilations, group, pads, strides)
    return np.ascontiguousarray(np.moveaxis(y, 1, -1))


def _gated_refuses(attrs: dict, inputs: list[str], outputs: list[str]) -> str | None:
    if len(inputs) > 6 and inputs[6]:
        return "GatedRelativePositionBias with token_offset (packed tokens) is not implemented"
    return None


@kernel("GatedRelativePositionBias", since=1, domain=DOMAIN, refuses=_gated_refuses)
def gated_relative_position_bias(query_layer, query_bias, rel_pos, weight, bias, eco_a, token_offset=None, *,
                                 num_heads):
    """WavLM's gated relative position bias, as the op's schema writes it in PyTorch."""
    if query_layer.ndim != 3 or query_layer.shape[-1] % num_heads:
        raise ValueError(f"GatedRelativePositionBias needs query_layer (batch, seq_len, num_heads x head_size) "
                         f"divisible by num_heads {num_heads}, got {query_layer.shape}")
    batch, seq, hidden = query_layer.shape
    q = (_wide(query_layer) + _wide(query_bias)).reshape(batch, seq, num_heads, hidden // num_heads)
    gates = _matmul(q.transpose(0, 2, 1, 3), _wide(weight)) + _wide(bias)  # (batch, heads, seq, D)
    if gates.shape[-1] % 2:
        raise ValueError(f"GatedRelativePositionBias needs an even D (weight's columns), got {gates.shape[-1]}")
    summed = act.sigmoid(gates.reshape(*gates.shape[:-1], 2, -1).sum(axis=-1))  # (batch, heads, seq, 2)
    gate_u, gate_r = summed[..., :1], summed[..., 1:]
    scale = gate_u * (gate_r * _wide(eco_a) - 1) + 2
    return (scale * _wide(rel_pos)).astype(query_layer.dtype, copy=False)


@kernel("GemmFastGelu", since=1, domain=DOMAIN)
def gemm_fast_gelu(X, W, bias=None):
    y = _matmul(_wide(X), _wide(W))
    if bias is not None:
        y = y + _wide(bias)
    return act.gelu(y, approximate="tanh").astype(X.dtype, copy=False)
