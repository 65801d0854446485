"""onnxruntime's GroupQueryAttention (domain ``com.microsoft``), the decoder's attention with its KV
cache that onnxruntime's GenAI builder and Olive write, as onnxruntime's CPU kernel computes it
(``docs/ContribOperators.md``; onnx does not define it).

GroupQueryAttention appends the new keys and values to the cache at each sequence's end
(``seqlens_k`` + 1 = its total length), attends causally (to the last ``local_window_size``
keys, itself included, when set) or, with causal=0, to its whole sequence, query head h reading
KV head h // (num_heads / kv_num_heads); softcap, then attention_bias, then a softmax whose
denominator also holds exp(head_sink - max) (smooth_softmax: a sink of 0). Products and softmax
in float32 (float16 widened, rounded once). output_qk (qk_output 1 or 2) holds the scores after
softcap and bias, or the probabilities, 0 where a query does not look. With sliding_window_cache
the past and present hold each sequence's latest L(T) positions from row 0 (the eviction rule of
ContribOperators.md), the rows after them zeros where onnxruntime leaves its scratch. Quantised
caches (k_quant_type = v_quant_type PER_TENSOR or PER_CHANNEL, int8 or packed int4): see
``_KvQuant``; attention reads what the codes hold, the new tokens' included. With query_seqlens
(chunked prefill at one query shape) only each entry's first query_seqlens rows are tokens,
appended after seqlens_k + 1 - query_seqlens cached ones; the other rows' outputs are unspecified.
Refused: the per-head Q/K norm inputs, which onnxruntime's CPU kernel refuses too.

Shapes for compile-time planning come from ``hal.graph.contrib``.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

from hal.kernels.attention import _scores, _weighted
from hal.kernels.attention import rotary_embedding as _onnx_rotary
from hal.kernels.contrib_genai import DOMAIN, unpack_codes
from hal.kernels.registry import kernel

Array = np.ndarray
_F32 = np.float32


#: optional inputs past the caches' scales (per-head Q/K norms, which onnxruntime's CUDA and WebGPU
#: kernels read), which this kernel refuses rather than ignores
_GQA_UNSUPPORTED_INPUTS = ("q_norm_weight", "k_norm_weight")
#: the KV cache quantisations onnxruntime's CPU kernel computes
_GQA_QUANT = ("NONE", "PER_TENSOR", "PER_CHANNEL")


def _split_heads(x: Array, heads: int) -> Array:
    b, s, hidden = x.shape
    return x.reshape(b, s, heads, hidden // heads).transpose(0, 2, 1, 3)


def _gqa_unsupported(attrs: dict, used_inputs: list[str], qk_out: bool) -> str | None:
    """What of GroupQueryAttention this kernel does not compute, or onnxruntime refuses: ``used_inputs``,
    a non-neutral attribute of ``attrs``, a combination its schema rules out; None when it computes
    the node."""
    if used_inputs:
        return f"GroupQueryAttention input(s) {used_inputs} (Q/K norms, which onnxruntime's CPU kernel refuses)"
    quant = [str(attrs.get(f"{c}_quant_type", "NONE")) for c in "kv"]
    if any(q not in _GQA_QUANT for q in quant):
        return f"GroupQueryAttention k_quant_type / v_quant_type {quant}: this kernel computes {', '.join(_GQA_QUANT)}"
    if quant[0] != quant[1]:
        return (f"GroupQueryAttention k_quant_type {quant[0]} with v_quant_type {quant[1]}: onnxruntime takes one "
                "for both")
    if quant != ["NONE", "NONE"] and attrs.get("kv_cache_bit_width") not in (4, 8):
        return (f"GroupQueryAttention with a quantised cache needs kv_cache_bit_width 4 or 8, got "
                f"{attrs.get('kv_cache_bit_width')}")
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


def _full_caches(past_key: Array | None, past_value: Array | None, k: Array, v: Array, past: Array, fresh: Array,
                 capacity: int) -> tuple[Array, Array, Array, Array]:
    """The present key and value caches, (B, kv heads, capacity, H): each sequence's kept past, its
    ``fresh`` new tokens after it, zeros after those; each row's position, (1, capacity); the rows
    filled, (B, capacity)."""
    batch, heads, seq, head = k.shape
    slots = np.arange(capacity)
    new_at = slots[None, :] - past[:, None]  # (B, capacity): index into the new tokens
    from_past = slots[None, :] < past[:, None]
    from_new = (new_at >= 0) & (new_at < fresh[:, None])
    present = []
    for old, new in ((past_key, k), (past_value, v)):
        cache = np.zeros((batch, heads, capacity, head), dtype=k.dtype)
        if old is not None:
            n = min(old.shape[2], capacity)
            cache[:, :, :n] = np.where(from_past[:, None, :n, None], old[:, :, :n].astype(k.dtype), 0)
        picked = np.take_along_axis(new, np.clip(new_at, 0, max(seq - 1, 0))[:, None, :, None], axis=2)
        present.append(np.where(from_new[:, None, :, None], picked, cache))
    return present[0], present[1], slots[None, :], from_past | from_new


def _resident(tokens: Array, capacity: int, window: int) -> Array:
    """How many of a sequence's latest positions a windowed cache holds after ``tokens`` (onnxruntime's
    L(T)): all of them up to its capacity, then capacity - window + 1 fewer at each eviction."""
    g = capacity - window + 1
    return np.where(tokens <= capacity, tokens, tokens - g * -(-(tokens - capacity) // g))


def _window_caches(past_key: Array, past_value: Array, k: Array, v: Array, past: Array, fresh: Array,
                   window: int) -> tuple[Array, Array, Array, Array, Array, Array]:
    """sliding_window_cache=1: the past holds each sequence's last ``_resident`` positions at rows 0...
    The keys and values attention reads, those rows then the ``fresh`` new tokens, (B, kv heads, K, H), and
    their absolute positions (B, K), -1 past a sequence's; the present caches, the past's capacity
    long, holding the latest ``_resident`` positions from row 0, zeros after; and the rows filled."""
    seq, capacity = k.shape[2], past_key.shape[2]
    held, kept = _resident(past, capacity, window), _resident(past + fresh, capacity, window)
    rows = np.arange(int(held.max(initial=0)) + seq)
    new_at = rows[None, :] - held[:, None]  # (B, K): index into the new tokens
    key_pos = np.where(new_at < fresh[:, None], past[:, None] - held[:, None] + rows[None, :], -1)
    from_past, from_new = (new_at < 0)[:, None, :, None], (new_at < fresh[:, None])[:, None, :, None]
    at = np.arange(capacity)
    keep = np.minimum((held + fresh - kept)[:, None] + at[None, :], len(rows) - 1)[:, None, :, None]
    stays = (at[None, :] < kept[:, None])[:, None, :, None]
    caches = []
    for old, new in ((past_key, k), (past_value, v)):
        pasts = np.take_along_axis(old.astype(k.dtype), np.minimum(rows, capacity - 1)[None, None, :, None], 2)
        news = np.take_along_axis(new, np.clip(new_at, 0, seq - 1)[:, None, :, None], axis=2)
        read = np.where(from_past, pasts, np.where(from_new, news, 0))
        caches += [read, np.where(stays, np.take_along_axis(read, keep, 2), 0)]
    return caches[0], caches[2], key_pos, caches[1], caches[3], stays[:, 0, :, 0]


class _KvQuant:
    """One KV cache's quantisation (``k_quant_type`` / ``v_quant_type``), as onnxruntime's CPU kernel
    stores it: symmetric codes, x / scale rounded half to even and clipped, int8 (-128..127) at 8
    bits, at 4 bits (-8..7) + 8 packed two to a uint8, low nibble first; the scale one number
    (PER_TENSOR) or one per KV head and feature (PER_CHANNEL, of any shape of that many: the GenAI
    builder writes a flat vector), broadcast over positions."""

    def __init__(self, kind: str, bits: int | None, scale: Array | None, name: str, shape: tuple[int, ...]):
        self.kind, self.bits = str(kind), bits
        if self.kind == "NONE":
            return
        if scale is None:
            raise ValueError(f"GroupQueryAttention with {name}_quant_type {self.kind} needs {name}_scale")
        heads, head = shape[1], shape[3]
        if np.size(scale) != (1 if self.kind == "PER_TENSOR" else heads * head):
            raise ValueError(f"GroupQueryAttention {name}_scale of shape {np.shape(scale)} is not one scale "
                             f"({self.kind}) for each of the cache's {heads} heads of {head} features")
        self.scale = np.asarray(scale, dtype=_F32).reshape(1, -1 if self.kind == "PER_TENSOR" else heads, 1,
                                                           1 if self.kind == "PER_TENSOR" else head)
        self.dtype = np.dtype(np.int8 if bits == 8 else np.uint8)

    def stored_width(self, head: int) -> int:
        return head // 2 if self.kind != "NONE" and self.bits == 4 else head

    def read(self, cache: Array | None, name: str) -> Array | None:
        """A past cache as float32 numbers."""
        if cache is None or self.kind == "NONE":
            return cache
        if cache.dtype != self.dtype:
            raise ValueError(f"GroupQueryAttention past_{name} of a {self.bits}-bit quantised cache must be "
                             f"{self.dtype}, got {cache.dtype}")
        codes = cache.astype(np.int32) if self.bits == 8 else unpack_codes(cache, 4).astype(np.int32) - 8
        return codes.astype(_F32) * self.scale

    def stored(self, x: Array, filled: Array) -> tuple[Array, Array]:
        """(what attention reads: x as its codes hold it, the codes as stored, 0 in rows not ``filled``)."""
        if self.kind == "NONE":
            return x, x
        top = 127 if self.bits == 8 else 7
        codes = np.clip(np.rint(x / self.scale), -top - 1, top)
        if self.bits == 8:
            packed = codes.astype(np.int8)
        else:
            nibbles = (codes + 8).astype(np.uint8)
            packed = nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)
        return codes.astype(_F32) * self.scale, np.where(filled[:, None, :, None], packed, 0).astype(self.dtype)


#: the KV cache element types onnxruntime's CPU kernel registers (the model's float type, int8 / uint8 codes)
_CACHE_TYPES = tuple(np.dtype(t) for t in (np.float32, np.float16, ml_dtypes.bfloat16, np.int8, np.uint8))


def _gqa_refuses(attrs: dict, inputs: list[str], outputs: list[str], types: dict | None = None) -> str | None:
    """``_gqa_unsupported`` read off the node (the registry's ``refuses``), so a target refuses the
    node when it compiles and fallback can place it; and a cache of a type onnxruntime's CPU kernel
    has no registration for (float8: it refuses the session, 'NOT_IMPLEMENTED')."""
    for name in (*inputs[3:5], *outputs[1:3]):
        kind = (types or {}).get(name)
        if kind is not None and kind not in _CACHE_TYPES:
            return f"GroupQueryAttention with a {kind} KV cache ({name!r}), which onnxruntime's CPU kernel lacks"
    return _gqa_unsupported(attrs, [n for n, i in zip(_GQA_UNSUPPORTED_INPUTS, inputs[14:16]) if i],
                            len(outputs) > 3 and bool(outputs[3]))


@kernel("GroupQueryAttention", since=1, domain=DOMAIN, output_count=True, refuses=_gqa_refuses)
def group_query_attention(query, key=None, value=None, past_key=None, past_value=None, seqlens_k=None,
                          total_sequence_length=None, cos_cache=None, sin_cache=None, position_ids=None,
                          attention_bias=None, head_sink=None, k_scale=None, v_scale=None, q_norm_weight=None,
                          k_norm_weight=None, query_seqlens=None, *, num_heads,
                          kv_num_heads, scale=0.0,
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
             "sliding_window_cache": sliding_window_cache, "k_quant_type": k_quant_type, "v_quant_type": v_quant_type,
             "kv_cache_bit_width": kv_cache_bit_width}
    why = _gqa_unsupported(attrs, [n for n, v in zip(_GQA_UNSUPPORTED_INPUTS, (q_norm_weight, k_norm_weight))
                                   if v is not None],
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
    quant = [_KvQuant(kind, kv_cache_bit_width, sc, name, (batch, kv_num_heads, 0, head))
             for kind, sc, name in ((k_quant_type, k_scale, "k"), (v_quant_type, v_scale, "v"))]
    widths = [qz.stored_width(head) for qz in quant]
    if past_key is not None and (past_key.shape[:3] != past_value.shape[:3]
                                 or past_key.shape[:2] != (batch, kv_num_heads)
                                 or [past_key.shape[3], past_value.shape[3]] != widths):
        raise ValueError(f"GroupQueryAttention past_key / past_value must be (batch, kv_num_heads, length, head_size)"
                         f" = ({batch}, {kv_num_heads}, *, {head}) (4-bit caches half as wide), got {past_key.shape} "
                         f"and {past_value.shape}")
    if past_key is None and any(qz.kind != "NONE" for qz in quant):
        raise ValueError("GroupQueryAttention with a quantised cache needs past_key and past_value (empty at the "
                         "first prompt), whose type the present takes")
    cache_types = [query.dtype if c is None else c.dtype for c in (past_key, past_value)]
    past_key, past_value = quant[0].read(past_key, "key"), quant[1].read(past_value, "value")
    capacity = past_capacity if sliding_window_cache else max(total, past_capacity)
    if query_seqlens is None:  # every row of the chunk a token
        fresh, first_prompt = np.full(batch, seq, np.int64), seq == total
        if not first_prompt and seq > 1 and batch != 1:
            raise ValueError("GroupQueryAttention: a chunk of several tokens after a past needs batch size 1")
    else:  # a right-padded chunk: its first query_seqlens[b] rows are tokens, after the cached ones
        fresh, first_prompt = np.asarray(query_seqlens).reshape(-1).astype(np.int64), False
        if fresh.shape != (batch,) or (fresh < 0).any() or (fresh > np.minimum(seq, lengths)).any():
            raise ValueError(f"GroupQueryAttention query_seqlens {fresh} must hold one count per batch in [0, "
                             f"min({seq}, seqlens_k + 1 = {lengths})]")
        if not causal or past_key is None:
            raise ValueError("GroupQueryAttention query_seqlens needs causal=1 and past_key / past_value")
    past = np.zeros(batch, np.int64) if first_prompt and not sliding_window_cache else lengths - fresh
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
        keys, values, key_pos, present_key, present_value, filled = _window_caches(past_key, past_value, k, v, past,
                                                                                    fresh, local_window_size)
    else:
        present_key, present_value, key_pos, filled = _full_caches(past_key, past_value, k, v, past, fresh,
                                                                   capacity)
        keys, values = present_key, present_value
    # a quantised cache: attention reads what its codes hold, the present is the codes
    read = np.ones((batch, keys.shape[2]), bool)
    (keys, _), (values, _) = quant[0].stored(keys, read), quant[1].stored(values, read)
    (_, present_key), (_, present_value) = quant[0].stored(present_key, filled), quant[1].stored(present_value, filled)

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
    outputs = (out, present_key.astype(cache_types[0]), present_value.astype(cache_types[1]))
    if _n_outputs > 3:  # output_qk (B, N, S, total_sequence_length): the scaled scores (1) or the
        # probabilities (2), 0 at the keys a query does not see
        qk = np.where(allowed, scores if qk_output == 1 else probs, 0)[..., :total]
        width = total - qk.shape[-1]
        outputs += (np.pad(qk, [(0, 0)] * 3 + [(0, width)]).astype(query.dtype),)
    return outputs[:max(_n_outputs, 1)]
