"""onnxruntime's contrib ops (domain ``com.microsoft``) that the LLMs its genai model builder and
Olive write hold: MatMulNBits and GatherBlockQuantized (weights in 2/4/8-bit blocks), and
RotaryEmbedding and GroupQueryAttention (the decoder's attention with its KV cache). onnx defines
none of them; their contract is onnxruntime's (``docs/ContribOperators.md``) and their arithmetic
that of its CPU kernels:

* the quantized weights unpack low bits first (a byte holds codes 0, 1 of a 4-bit row in its low
  and high nibble); a block's value is (code - zero point) x scale in float32, the zero point
  2^(bits-1) where MatMulNBits has none (GatherBlockQuantized: likewise for uint8 data, 0 for
  int4 / uint4 data); the last block of a row K not a multiple of block_size long is padded and
  the padding dropped. A float zero point (MatMulNBits) folds in as code x scale - zero x scale,
  as onnxruntime's reorder path computes it. With ``g_idx`` (row k reads block g_idx[k]) packed
  zero points still apply, where onnxruntime 1.32's CPU kernel reads 8 for every block (a bug).
* MatMulNBits dequantises B once per call and multiplies in float32 (float16 A is widened and the
  result rounded once), bias added after the product; with ``accuracy_level`` 4 onnxruntime's CPU
  kernel first quantises A to int8 per block of ``block_size`` along K (symmetric, scale
  max|a| / 127, round half to even), takes each block's integer dot product with B's centred codes
  exactly and sums the blocks' products with A's scale times B's in float32: so does this kernel.
  Levels 0-3 compute in float32 on a CPU.
* RotaryEmbedding rotates the first ``rotary_embedding_dim`` features of each head by the cos /
  sin cache rows its position ids pick (halves, or even/odd pairs when interleaved).
* GroupQueryAttention appends the new keys and values to the cache at each sequence's end
  (``seqlens_k`` + 1 = its total length), attends causally (to the last ``local_window_size``
  keys, itself included, when set) or, with causal=0, to its whole sequence, query head h reading
  KV head h // (num_heads / kv_num_heads); softcap, then attention_bias, then a softmax whose
  denominator also holds exp(head_sink - max) (smooth_softmax: a sink of 0). Products and softmax
  in float32 (float16 widened, rounded once). output_qk (qk_output 1 or 2) holds the scores after
  softcap and bias, or the probabilities, 0 where a query does not look. With sliding_window_cache
  the past and present hold each sequence's latest L(T) positions from row 0 (the eviction rule of
  ContribOperators.md), the rows after them zeros where onnxruntime leaves its scratch.

Shapes for compile-time planning come from ``hal.graph.contrib``.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

from hal.kernels.attention import _scores, _weighted
from hal.kernels.attention import rotary_embedding as _onnx_rotary
from hal.kernels.registry import kernel

Array = np.ndarray
DOMAIN = "com.microsoft"
_F32 = np.float32
_INT4 = (np.dtype(ml_dtypes.int4), np.dtype(ml_dtypes.uint4))


def _unpack(packed: Array, bits: int) -> Array:
    """uint8 bytes (..., n) -> their codes (..., n * 8 / bits), low bits first, as uint8."""
    per = 8 // bits
    if per == 1:
        return packed
    shifts = (np.arange(per, dtype=np.uint8) * bits).astype(np.uint8)
    codes = (packed[..., None] >> shifts) & np.uint8((1 << bits) - 1)
    return codes.reshape(*packed.shape[:-1], packed.shape[-1] * per)


def _float_work(x: Array) -> np.dtype:
    return np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(_F32)


# --- MatMulNBits -----------------------------------------------------------------------------------


def _nbits_weight(B: Array, scales: Array, zero_points: Array | None, g_idx: Array | None, *, K: int, N: int,
                  bits: int, block_size: int) -> tuple[Array, Array, Array]:
    """B's codes (N, K) as int32, with each element's scale (N, K) float32 and zero point (N, K)."""
    k_blocks = -(-K // block_size)
    blob = block_size * bits // 8
    if B.dtype != np.uint8 or B.shape != (N, k_blocks, blob):
        raise ValueError(f"MatMulNBits B must be uint8 of shape (N, k_blocks, blob_size) = {(N, k_blocks, blob)} "
                         f"for K={K}, N={N}, bits={bits}, block_size={block_size}; got {B.dtype} {B.shape}")
    if scales.size != N * k_blocks:
        raise ValueError(f"MatMulNBits scales must hold N x k_blocks = {N} x {k_blocks} values, got shape "
                         f"{scales.shape}")
    codes = _unpack(B, bits).reshape(N, k_blocks * block_size)[:, :K].astype(np.int32)
    scale = np.asarray(scales).reshape(N, k_blocks).astype(_F32)
    if zero_points is None:
        zero = np.full((N, k_blocks), 1 << (bits - 1), dtype=np.int32)
    elif zero_points.dtype == np.uint8:
        per_row = -(-k_blocks * bits // 8)
        if zero_points.size != N * per_row:
            raise ValueError(f"MatMulNBits packed uint8 zero_points must hold N x ceil(k_blocks x bits / 8) = "
                             f"{N} x {per_row} bytes, got shape {zero_points.shape}")
        zero = _unpack(zero_points.reshape(N, per_row), bits)[:, :k_blocks].astype(np.int32)
    else:
        if bits == 8:
            raise ValueError("MatMulNBits with 8-bit weights takes uint8 zero points, not float ones (as "
                             "onnxruntime's CPU kernel); quantize the zero points too")
        if zero_points.size != N * k_blocks:
            raise ValueError(f"MatMulNBits float zero_points must hold N x k_blocks = {N} x {k_blocks} values, "
                             f"got shape {zero_points.shape}")
        zero = zero_points.reshape(N, k_blocks).astype(_F32)
    if g_idx is not None:
        block = np.asarray(g_idx).reshape(-1).astype(np.int64)[:K]
        if block.size != K or (block.size and (block.min() < 0 or block.max() >= k_blocks)):
            raise ValueError(f"MatMulNBits g_idx must give each of the K={K} rows a block in [0, {k_blocks})")
    else:
        block = np.arange(K) // block_size
    return codes, scale[:, block], zero[:, block]


@kernel("MatMulNBits", since=1, domain=DOMAIN)
def matmul_nbits(A, B, scales, zero_points=None, g_idx=None, bias=None, *, K, N, bits=4, block_size,
                 accuracy_level=0):
    """A (..., K) @ the dequantised B^T (K, N) (+ bias): see the module docstring."""
    if bits not in (2, 4, 8):
        raise ValueError(f"MatMulNBits bits must be 2, 4 or 8, got {bits}")
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"MatMulNBits block_size must be a power of 2 and at least 16, got {block_size}")
    if A.shape[-1:] != (K,):
        raise ValueError(f"MatMulNBits A's last dimension must be K={K}, got shape {A.shape}")
    if bias is not None and bias.size != N:
        raise ValueError(f"MatMulNBits bias must hold N={N} values, got shape {bias.shape}")
    codes, scale, zero = _nbits_weight(B, scales, zero_points, g_idx, K=K, N=N, bits=bits, block_size=block_size)
    work = _float_work(A)
    a = A.astype(work)
    float_zero = zero.dtype != np.int32
    if accuracy_level == 4 and g_idx is None and not float_zero:
        y = _int8_blocked_product(a.reshape(-1, K), codes - zero, scale, block_size).reshape(*A.shape[:-1], N)
    else:
        if float_zero:  # code x scale - zero x scale, each rounded
            w = codes.astype(_F32) * scale + (-scale * zero)
        else:
            w = (codes - zero).astype(_F32) * scale
        y = np.matmul(a, w.T.astype(work))
    if bias is not None:
        y = y + bias.reshape(N).astype(work)
    return y.astype(A.dtype)


def _int8_blocked_product(a: Array, centred: Array, scale: Array, block_size: int) -> Array:
    """accuracy_level 4: A (M, K) quantised to int8 per block along K, each block's integer dot
    product with B's centred codes (N, K), times A's block scale x B's, summed over blocks in float32."""
    m, k = a.shape
    n = centred.shape[0]
    blocks = -(-k // block_size)
    pad = blocks * block_size - k
    ab = np.pad(a.astype(_F32), ((0, 0), (0, pad))).reshape(m, blocks, block_size)
    amax = np.max(np.abs(ab), axis=-1)  # (M, blocks)
    a_scale = (amax / _F32(127)).astype(_F32)
    with np.errstate(divide="ignore"):
        inverse = np.where(amax > 0, _F32(127) / np.where(amax > 0, amax, _F32(1)), _F32(0)).astype(_F32)
    qa = np.rint(ab * inverse[..., None]).astype(np.float64)  # |code| <= 127
    cb = np.pad(centred, ((0, 0), (0, pad))).reshape(n, blocks, block_size).astype(np.float64)
    dots = np.einsum("mbk,nbk->mnb", qa, cb)  # exact: integers well inside float64's 2^53
    b_scale = scale[:, ::block_size][:, :blocks]  # (N, blocks): each block's scale
    terms = dots.astype(_F32) * (a_scale[:, None, :] * b_scale[None, :, :])
    return np.cumsum(terms, axis=-1, dtype=_F32)[..., -1]


# --- GatherBlockQuantized --------------------------------------------------------------------------


@kernel("GatherBlockQuantized", since=1, domain=DOMAIN)
def gather_block_quantized(data, indices, scales, zero_points=None, *, gather_axis=0, quantize_axis=1,
                           block_size=128, bits=4):
    """Gather then dequantise: (code - zero point) x scale in float32, to the scales' type. uint8 data
    packs 8 / bits codes per byte along its last axis (which must be quantize_axis, gather_axis 0);
    int4 / uint4 data holds one code per element along any axes. Out-of-range indices read zeros,
    as onnxruntime's kernel writes them."""
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"GatherBlockQuantized block_size must be a power of 2 and at least 16, got {block_size}")
    rank = data.ndim
    g_axis = gather_axis % rank if -rank <= gather_axis < rank else None
    q_axis = quantize_axis % rank if -rank <= quantize_axis < rank else None
    if g_axis is None or q_axis is None:
        raise ValueError(f"GatherBlockQuantized gather_axis {gather_axis} / quantize_axis {quantize_axis} out of "
                         f"range for data of rank {rank}")
    if data.dtype == np.uint8:
        if bits not in (2, 4, 8):
            raise ValueError(f"GatherBlockQuantized with uint8 data needs bits 2, 4 or 8, got {bits}")
        if g_axis != 0 or q_axis != rank - 1:
            raise ValueError("GatherBlockQuantized with uint8 data needs gather_axis 0 and quantize_axis the last "
                             f"axis, got {gather_axis} and {quantize_axis}")
        codes = _unpack(data, bits).astype(np.int32)
        default_zero = 1 << (bits - 1)
    elif data.dtype in _INT4:
        if bits != 4:
            raise ValueError(f"GatherBlockQuantized with int4 / uint4 data needs bits 4, got {bits}")
        codes = data.astype(np.int32)
        default_zero = 0
    else:
        raise ValueError(f"GatherBlockQuantized data must be uint8, int4 or uint4, got {data.dtype}")
    length = codes.shape[q_axis]
    blocks = -(-length // block_size)
    want = list(codes.shape)
    want[q_axis] = blocks
    if scales.shape != tuple(want):
        raise ValueError(f"GatherBlockQuantized scales must have shape {tuple(want)} (data's, with "
                         f"ceil({length} / block_size {block_size}) along quantize_axis), got {scales.shape}")
    if zero_points is None:
        zero = np.int32(default_zero)
    elif data.dtype == np.uint8:
        per = 8 // bits
        zp_shape = [*want[:-1], -(-blocks // per)]
        if zero_points.shape != tuple(zp_shape):
            raise ValueError(f"GatherBlockQuantized packed zero_points must have shape {tuple(zp_shape)}, got "
                             f"{zero_points.shape}")
        zero = _unpack(zero_points, bits)[..., :blocks].astype(np.int32)
    else:
        if zero_points.shape != tuple(want) or zero_points.dtype != data.dtype:
            raise ValueError(f"GatherBlockQuantized zero_points must be {data.dtype} of shape {tuple(want)}, got "
                             f"{zero_points.dtype} {zero_points.shape}")
        zero = zero_points.astype(np.int32)
    idx = np.asarray(indices).astype(np.int64)
    size = codes.shape[g_axis]
    valid = (idx >= -size) & (idx < size)
    safe = np.where(valid, np.where(idx < 0, idx + size, idx), 0)
    expand = np.arange(length) // block_size  # each element's block along quantize_axis
    if g_axis == q_axis:  # rare: dequantise everything, then gather
        scale_full = np.take(np.asarray(scales, dtype=_F32), expand, axis=q_axis)
        zero_full = zero if np.ndim(zero) == 0 else np.take(zero, expand, axis=q_axis)
        out = np.take((codes - zero_full).astype(_F32) * scale_full, safe, axis=g_axis)
    else:  # gather the codes and their blocks' scales / zero points, then dequantise what was gathered
        q_out = q_axis if q_axis < g_axis else q_axis + idx.ndim - 1
        scale_g = np.take(np.take(np.asarray(scales, dtype=_F32), safe, axis=g_axis), expand, axis=q_out)
        zero_g = zero if np.ndim(zero) == 0 else np.take(np.take(zero, safe, axis=g_axis), expand, axis=q_out)
        out = (np.take(codes, safe, axis=g_axis) - zero_g).astype(_F32) * scale_g
    if not valid.all():
        mask_shape = [1] * g_axis + list(idx.shape) + [1] * (rank - g_axis - 1)
        out = np.where(valid.reshape(mask_shape), out, _F32(0))
    return out.astype(scales.dtype)


# --- RotaryEmbedding -------------------------------------------------------------------------------


def _positions(position_ids: Array, batch: int, seq: int, cache_rows: int, op: str) -> Array:
    """(B, S) int64 positions: ``position_ids`` as given, or a one-element offset counted up from."""
    pos = np.asarray(position_ids).astype(np.int64)
    if pos.size == 1 and pos.ndim <= 1:
        pos = np.broadcast_to(pos.reshape(()) + np.arange(seq), (batch, seq))
    elif pos.shape != (batch, seq):
        raise ValueError(f"{op} position_ids must be one offset or of shape (batch, sequence) = {(batch, seq)}, "
                         f"got {pos.shape}")
    if pos.size and (pos.min() < 0 or pos.max() >= cache_rows):
        raise ValueError(f"{op} position ids must lie in [0, {cache_rows}) (the cos / sin caches' rows), got "
                         f"{pos.min()}..{pos.max()}")
    return pos


@kernel("RotaryEmbedding", since=1, domain=DOMAIN)
def rotary_embedding(input, position_ids, cos_cache, sin_cache, *, interleaved=0, num_heads=0,
                     rotary_embedding_dim=0, scale=1.0, is_packed_batching=0):
    """onnxruntime's RotaryEmbedding: input (B, S, hidden) or (B, N, S, H); position_ids one offset
    (positions offset .. offset + S - 1) or (B, S); caches (max_position, rotary_dim / 2). Without
    ``rotary_embedding_dim`` a head is twice the caches' width and rotated whole; features past
    the rotary dimension pass through. ``scale`` and ``is_packed_batching`` do not change the CPU
    kernel's result (the caches come precomputed), nor this one's."""
    if input.ndim not in (3, 4):
        raise ValueError(f"RotaryEmbedding input must be (batch, sequence, hidden) or (batch, heads, sequence, "
                         f"head_size), got shape {input.shape}")
    if cos_cache.ndim != 2 or cos_cache.shape != sin_cache.shape:
        raise ValueError(f"RotaryEmbedding cos_cache and sin_cache must be 2-D of one shape, got {cos_cache.shape} "
                         f"and {sin_cache.shape}")
    if rotary_embedding_dim > 0 and not num_heads:
        raise ValueError("RotaryEmbedding needs num_heads when rotary_embedding_dim is set")
    batch, seq = input.shape[0], input.shape[2 if input.ndim == 4 else 1]
    hidden = input.shape[1] * input.shape[3] if input.ndim == 4 else input.shape[2]
    head = hidden // num_heads if rotary_embedding_dim > 0 else 2 * cos_cache.shape[1]
    heads = num_heads or (hidden // head if head else 0)
    if not head or not heads or heads * head != hidden:
        raise ValueError(f"RotaryEmbedding cannot split hidden size {hidden} into heads (num_heads={num_heads}, "
                         f"caches {cos_cache.shape[1]} wide)")
    rd = rotary_embedding_dim or head
    pos = _positions(position_ids, batch, seq, cos_cache.shape[0], "RotaryEmbedding")
    return _onnx_rotary(input, cos_cache, sin_cache, pos, interleaved=interleaved, num_heads=heads,
                        rotary_embedding_dim=rd)


# --- GroupQueryAttention ---------------------------------------------------------------------------

#: optional inputs past head_sink (quantised caches, per-head Q/K norms, padded query chunks) and
#: attributes this kernel refuses rather than ignores, with their neutral values
_GQA_UNSUPPORTED_INPUTS = ("k_scale", "v_scale", "q_norm_weight", "k_norm_weight", "query_seqlens")


def _split_heads(x: Array, heads: int) -> Array:
    b, s, hidden = x.shape
    return x.reshape(b, s, heads, hidden // heads).transpose(0, 2, 1, 3)


#: the attributes this kernel computes at their neutral values only
_GQA_NEUTRAL = {"k_quant_type": "NONE", "v_quant_type": "NONE"}


def _gqa_unsupported(attrs: dict, used_inputs: list[str], qk_out: bool) -> str | None:
    """What of GroupQueryAttention this kernel does not compute, or onnxruntime refuses: ``used_inputs``,
    a non-neutral attribute of ``attrs``, a combination its schema rules out; None when it computes
    the node."""
    if used_inputs:
        return f"GroupQueryAttention input(s) {used_inputs} (quantised KV caches, Q/K norms, padded query chunks)"
    odd = {k: attrs[k] for k, neutral in _GQA_NEUTRAL.items() if k in attrs and attrs[k] != neutral}
    if odd:
        return f"GroupQueryAttention with {odd}: this kernel computes unquantised caches"
    causal, qk_output = attrs.get("causal", 1), attrs.get("qk_output", 0)
    window, windowed = attrs.get("local_window_size", -1), attrs.get("sliding_window_cache", 0)
    if causal not in (0, 1) or qk_output not in (0, 1, 2) or windowed not in (0, 1):
        return (f"GroupQueryAttention causal and sliding_window_cache must be 0 or 1 and qk_output 0, 1 or 2, got "
                f"{causal}, {windowed} and {qk_output}")
    if not causal and window != -1:
        return "GroupQueryAttention local_window_size must be -1 when causal is 0 (bidirectional attention)"
    if windowed and (window <= 0 or qk_out):
        return ("GroupQueryAttention with sliding_window_cache=1 needs a local_window_size and no output_qk (which "
                "onnxruntime does not compute with it either)")
    if qk_out and not qk_output:
        return "GroupQueryAttention output_qk is wired but qk_output is 0: set it to 1 (scores) or 2 (probabilities)"
    return None


def _full_caches(past_key: Array | None, past_value: Array | None, k: Array, v: Array, past: Array,
                 capacity: int) -> tuple[Array, Array, Array]:
    """The present key and value caches, (B, kv heads, capacity, H): each sequence's kept past, its new
    tokens after it, zeros after those; and each row's position, (1, capacity)."""
    batch, heads, seq, head = k.shape
    slots = np.arange(capacity)
    new_at = slots[None, :] - past[:, None]  # (B, capacity): index into the new tokens
    from_past = slots[None, :] < past[:, None]
    from_new = (new_at >= 0) & (new_at < seq)
    present = []
    for old, new in ((past_key, k), (past_value, v)):
        cache = np.zeros((batch, heads, capacity, head), dtype=k.dtype)
        if old is not None:
            n = min(old.shape[2], capacity)
            cache[:, :, :n] = np.where(from_past[:, None, :n, None], old[:, :, :n].astype(k.dtype), 0)
        picked = np.take_along_axis(new, np.clip(new_at, 0, max(seq - 1, 0))[:, None, :, None], axis=2)
        present.append(np.where(from_new[:, None, :, None], picked, cache))
    return present[0], present[1], slots[None, :]


def _resident(tokens: Array, capacity: int, window: int) -> Array:
    """How many of a sequence's latest positions a windowed cache holds after ``tokens`` (onnxruntime's
    L(T)): all of them up to its capacity, then capacity - window + 1 fewer at each eviction."""
    g = capacity - window + 1
    return np.where(tokens <= capacity, tokens, tokens - g * -(-(tokens - capacity) // g))


def _window_caches(past_key: Array, past_value: Array, k: Array, v: Array, past: Array,
                   window: int) -> tuple[Array, Array, Array, Array, Array]:
    """sliding_window_cache=1: the past holds each sequence's last ``_resident`` positions at rows 0...
    The keys and values attention reads, those rows then the new tokens, (B, kv heads, K, H), and
    their absolute positions (B, K), -1 past a sequence's; and the present caches, the past's
    capacity long, holding the latest ``_resident`` positions from row 0, zeros after."""
    seq, capacity = k.shape[2], past_key.shape[2]
    held, kept = _resident(past, capacity, window), _resident(past + seq, capacity, window)
    rows = np.arange(int(held.max(initial=0)) + seq)
    new_at = rows[None, :] - held[:, None]  # (B, K): index into the new tokens
    key_pos = np.where(new_at < seq, past[:, None] - held[:, None] + rows[None, :], -1)
    from_past, from_new = (new_at < 0)[:, None, :, None], (new_at < seq)[:, None, :, None]
    at = np.arange(capacity)
    keep = np.minimum((held + seq - kept)[:, None] + at[None, :], len(rows) - 1)[:, None, :, None]
    stays = (at[None, :] < kept[:, None])[:, None, :, None]
    caches = []
    for old, new in ((past_key, k), (past_value, v)):
        pasts = np.take_along_axis(old.astype(k.dtype), np.minimum(rows, capacity - 1)[None, None, :, None], 2)
        news = np.take_along_axis(new, np.clip(new_at, 0, seq - 1)[:, None, :, None], axis=2)
        read = np.where(from_past, pasts, np.where(from_new, news, 0))
        caches += [read, np.where(stays, np.take_along_axis(read, keep, 2), 0)]
    return caches[0], caches[2], key_pos, caches[1], caches[3]


def _gqa_refuses(attrs: dict, inputs: list[str], outputs: list[str]) -> str | None:
    """``_gqa_unsupported`` read off the node (the registry's ``refuses``), so a target refuses the
    node when it compiles and fallback can place it."""
    return _gqa_unsupported(attrs, [n for n, i in zip(_GQA_UNSUPPORTED_INPUTS, inputs[12:]) if i],
                            len(outputs) > 3 and bool(outputs[3]))


@kernel("GroupQueryAttention", since=1, domain=DOMAIN, output_count=True, refuses=_gqa_refuses)
def group_query_attention(query, key=None, value=None, past_key=None, past_value=None, seqlens_k=None,
                          total_sequence_length=None, cos_cache=None, sin_cache=None, position_ids=None,
                          attention_bias=None, head_sink=None, *unsupported, num_heads, kv_num_heads, scale=0.0,
                          local_window_size=-1, do_rotary=0, rotary_interleaved=0, softcap=0.0, smooth_softmax=0,
                          causal=1, qk_output=0, sliding_window_cache=0, k_quant_type="NONE", v_quant_type="NONE",
                          kv_cache_bit_width=None, qk_norm_epsilon=None, q_norm_epsilon=None, k_norm_epsilon=None,
                          mask_filter_value=None, _n_outputs=3, _round_operand=None):
    """onnxruntime's GroupQueryAttention on a CPU (see the module docstring). Batch b holds
    ``seqlens_k[b] + 1`` tokens after this step; a first prompt (sequence length equal to
    ``total_sequence_length``) starts each sequence at position 0, a later step (one token, or a
    chunk of batch 1) appends after the seqlens_k[b] + 1 - S cached ones. present_key / value are
    (B, kv_num_heads, max(total_sequence_length, past length), head_size): the kept past, the new
    keys (rotated when ``do_rotary``), zeros after; with sliding_window_cache, the past's length
    (``_window_caches``). Rows of a first prompt past a shorter sequence's
    end (right padding) attend that sequence's keys, as onnxruntime's CPU kernel has them. output_qk
    is (B, num_heads, S, total_sequence_length)."""
    rd = _round_operand or (lambda x: x)
    attrs = {"causal": causal, "qk_output": qk_output, "local_window_size": local_window_size,
             "sliding_window_cache": sliding_window_cache, "k_quant_type": k_quant_type, "v_quant_type": v_quant_type}
    why = _gqa_unsupported(attrs, [n for n, v in zip(_GQA_UNSUPPORTED_INPUTS, unsupported) if v is not None],
                           _n_outputs > 3)
    if why:  # called directly: the registry's ``refuses`` keeps such a node from any compiled program
        raise ValueError(why)
    if seqlens_k is None or total_sequence_length is None:
        raise ValueError("GroupQueryAttention needs seqlens_k and total_sequence_length")
    if num_heads <= 0 or kv_num_heads <= 0 or num_heads % kv_num_heads:
        raise ValueError(f"GroupQueryAttention num_heads ({num_heads}) must be a positive multiple of kv_num_heads "
                         f"({kv_num_heads})")
    if (past_key is None) != (past_value is None):
        raise ValueError("GroupQueryAttention: past_key and past_value must be given together")
    if query.ndim != 3:
        raise ValueError(f"GroupQueryAttention query must be (batch, sequence, hidden), got shape {query.shape}")
    batch, seq, hidden = query.shape
    if key is None:  # packed (B, S, (N + 2 kvN) H)
        if value is not None:
            raise ValueError("GroupQueryAttention: with packed QKV (no key), value must be absent too")
        head = hidden // (num_heads + 2 * kv_num_heads)
        if head * (num_heads + 2 * kv_num_heads) != hidden:
            raise ValueError(f"GroupQueryAttention packed QKV hidden size {hidden} is not (num_heads + 2 "
                             f"kv_num_heads) x head_size")
        q_part, k_part, v_part = np.split(query, [num_heads * head, (num_heads + kv_num_heads) * head], axis=-1)
    else:
        if value is None or key.shape != value.shape or key.shape[:2] != (batch, seq):
            raise ValueError(f"GroupQueryAttention key and value must both be (batch, sequence, kv_hidden) like "
                             f"query's first two dims {(batch, seq)}, got {key.shape} and "
                             f"{None if value is None else value.shape}")
        head = hidden // num_heads
        if head * num_heads != hidden or key.shape[2] != kv_num_heads * head:
            raise ValueError(f"GroupQueryAttention hidden sizes {hidden} / {key.shape[2]} do not split into "
                             f"{num_heads} / {kv_num_heads} heads of one size")
        q_part, k_part, v_part = query, key, value
    work = np.dtype(_F32)
    q = _split_heads(q_part, num_heads).astype(work)
    k = _split_heads(k_part, kv_num_heads).astype(work)
    v = _split_heads(v_part, kv_num_heads).astype(work)

    total = int(np.asarray(total_sequence_length).reshape(-1)[0])
    lengths = np.asarray(seqlens_k).reshape(-1).astype(np.int64) + 1  # tokens per sequence after this step
    if lengths.shape != (batch,):
        raise ValueError(f"GroupQueryAttention seqlens_k must hold one value per batch ({batch}), got shape "
                         f"{np.shape(seqlens_k)}")
    past_capacity = 0 if past_key is None else past_key.shape[2]
    if past_key is not None and (past_key.shape != past_value.shape or past_key.shape[:2] != (batch, kv_num_heads)
                                 or past_key.shape[3] != head):
        raise ValueError(f"GroupQueryAttention past_key / past_value must be (batch, kv_num_heads, length, head_size)"
                         f" = ({batch}, {kv_num_heads}, *, {head}), got {past_key.shape} and {past_value.shape}")
    capacity = past_capacity if sliding_window_cache else max(total, past_capacity)
    first_prompt = seq == total
    if not first_prompt and seq > 1 and batch != 1:
        raise ValueError("GroupQueryAttention: a chunk of several tokens after a past needs batch size 1")
    past = np.zeros(batch, np.int64) if first_prompt and not sliding_window_cache else lengths - seq
    if sliding_window_cache:  # the past's rows are its sequence's latest positions, however many came before
        if past_key is None or capacity < local_window_size:
            raise ValueError(f"GroupQueryAttention with sliding_window_cache needs a past at least local_window_size "
                             f"({local_window_size}) long, got {None if past_key is None else past_capacity}")
        if (past < 0).any():
            raise ValueError(f"GroupQueryAttention seqlens_k {lengths - 1} hold fewer than the {seq} new token(s)")
    elif (past < 0).any() or (past + seq > capacity).any():
        raise ValueError(f"GroupQueryAttention seqlens_k {lengths - 1} do not fit {seq} new token(s) in a cache of "
                         f"{capacity}")
    elif (past > past_capacity).any():
        raise ValueError(f"GroupQueryAttention seqlens_k {lengths - 1} say {past} token(s) are cached before these "
                         f"{seq}, but the past holds {past_capacity}")

    if do_rotary:
        if cos_cache is None or sin_cache is None:
            raise ValueError("GroupQueryAttention with do_rotary needs cos_cache and sin_cache")
        steps = np.arange(seq)
        pos = past[:, None] + steps[None, :]  # a first prompt's padding rows too count on from 0
        if position_ids is not None:  # explicit positions, which rotary alone reads; a first prompt
            # uses only the first element, counting on from it in every row (ContribOperators.md, and
            # onnxruntime's CPU kernel)
            pos = np.broadcast_to(np.asarray(position_ids).astype(np.int64), (batch, seq))
            if first_prompt:
                pos = np.broadcast_to(pos[0, 0] + steps[None, :], (batch, seq))
            if pos.min(initial=0) < 0:
                raise ValueError(f"GroupQueryAttention position_ids hold a negative position {pos.min()}")
        if pos.max(initial=0) >= cos_cache.shape[0]:
            raise ValueError(f"GroupQueryAttention positions up to {pos.max()} pass the cos / sin caches' "
                             f"{cos_cache.shape[0]} rows")
        rot = 2 * cos_cache.shape[1]
        q = _onnx_rotary(q, cos_cache.astype(work), sin_cache.astype(work), pos, interleaved=rotary_interleaved,
                         rotary_embedding_dim=rot)
        k = _onnx_rotary(k, cos_cache.astype(work), sin_cache.astype(work), pos, interleaved=rotary_interleaved,
                         rotary_embedding_dim=rot)

    # the keys and values attention reads, each one's position, and the present caches
    if sliding_window_cache:
        keys, values, key_pos, present_key, present_value = _window_caches(past_key, past_value, k, v, past,
                                                                            local_window_size)
    else:
        present_key, present_value, key_pos = _full_caches(past_key, past_value, k, v, past, capacity)
        keys, values = present_key, present_value

    alpha = float(_F32(scale)) if scale else 1.0 / math.sqrt(head)
    root = work.type(math.sqrt(alpha))
    logits = _scores(rd(q * root), rd(keys * root))  # (B, N, S, K)
    if softcap > 0:
        logits = np.tanh(logits / work.type(softcap)) * work.type(softcap)
    # no query sees a key past its sequence's end: a first prompt's padding rows (right padding) see
    # only the sequence's own keys, as onnxruntime's CPU kernel caps each row at seqlens_k[b] + 1
    at = key_pos[:, None, :]  # (B or 1, 1, K)
    allowed = np.broadcast_to((at >= 0) & (at < lengths[:, None, None]), (batch, seq, key_pos.shape[1]))
    if causal:  # query s of batch b sits at past[b] + s and sees the keys up to it (the last
        # local_window_size of them)
        where = past[:, None] + np.arange(seq)[None, :]  # (B, S)
        if _n_outputs > 3:  # onnxruntime computes output_qk on its unfused path, where a padding row
            # sits at its sequence's last token (the fused path, which hal follows otherwise, lets its
            # window run past the end)
            where = np.minimum(where, lengths[:, None] - 1)
        allowed = allowed & (at <= where[:, :, None])
        if local_window_size > 0:
            allowed &= at > where[:, :, None] - local_window_size
    allowed = allowed[:, None]  # (B, 1, S, K)
    if attention_bias is not None:
        bias = np.asarray(attention_bias).astype(work)
        if bias.ndim != 4 or bias.shape[2] != seq or bias.shape[0] not in (1, batch) or \
                bias.shape[1] not in (1, num_heads):
            raise ValueError(f"GroupQueryAttention attention_bias must be (batch or 1, num_heads or 1, {seq}, "
                             f"total_sequence_length), got {bias.shape}")
        if sliding_window_cache:  # the columns of the positions read, by absolute position
            cols = np.broadcast_to(np.clip(key_pos, 0, bias.shape[3] - 1)[:, None, None, :],
                                   (batch, bias.shape[1], seq, key_pos.shape[1]))
            picked = np.take_along_axis(np.broadcast_to(bias, (batch, *bias.shape[1:])), cols, axis=3)
            logits = logits + np.where((key_pos < bias.shape[3])[:, None, None, :], picked, 0)
        else:
            width = min(bias.shape[3], capacity)
            logits = logits.copy()
            logits[..., :width] += bias[..., :width]
    scores = logits
    logits = np.where(allowed, logits, -np.inf)
    top = np.max(logits, axis=-1, keepdims=True)
    sink = None
    if head_sink is not None or smooth_softmax:
        sink = (np.zeros(num_heads, work) if head_sink is None else np.asarray(head_sink).astype(work).reshape(-1))
        if sink.shape != (num_heads,):
            raise ValueError(f"GroupQueryAttention head_sink must hold num_heads ({num_heads}) values, got "
                             f"{np.shape(head_sink)}")
        top = np.maximum(top, sink.reshape(1, num_heads, 1, 1))
    top = np.where(np.isfinite(top), top, 0)
    e = np.exp(logits - top)
    total_e = e.sum(axis=-1, keepdims=True)
    if sink is not None:
        total_e = total_e + np.exp(sink.reshape(1, num_heads, 1, 1) - top)
    probs = e / np.where(total_e > 0, total_e, 1)
    y = _weighted(rd(probs), rd(values))  # (B, N, S, H)
    out = y.transpose(0, 2, 1, 3).reshape(batch, seq, num_heads * head).astype(query.dtype)
    cache_type = query.dtype if past_key is None else past_key.dtype
    outputs = (out, present_key.astype(cache_type), present_value.astype(cache_type))
    if _n_outputs > 3:  # output_qk (B, N, S, total_sequence_length): the scaled scores (1) or the
        # probabilities (2), 0 at the keys a query does not see
        qk = np.where(allowed, scores if qk_output == 1 else probs, 0)[..., :total]
        width = total - qk.shape[-1]
        outputs += (np.pad(qk, [(0, 0)] * 3 + [(0, width)]).astype(query.dtype),)
    return outputs[:max(_n_outputs, 1)]
