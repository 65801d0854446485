"""onnxruntime's fused transformer contrib ops (domain ``com.microsoft``), as its transformers
optimizer (``onnxruntime.transformers.optimizer``, model type "bert") and Optimum's O2+ exports write
them: Attention (the fused Q/K/V projection and self-attention, with GPT-2's 5-D past / present),
MultiHeadAttention (attention over separate, or already projected and cached, Q / K / V) and
EmbedLayerNormalization (BERT's embedding lookups summed and layer normalised, plus the mask's
lengths). onnx defines none of them; their contract is onnxruntime's (``docs/ContribOperators.md``)
and so is their arithmetic, as its CPU kernels do it:

* Attention projects once: ``input @ weights + bias`` (float32), split into Q (hidden), K (hidden)
  and V (``v_hidden``: ``qkv_hidden_sizes`` lets V differ), then per head;
* scores are ``scale * (Q @ K^T)`` plus one additive term: ``attention_bias`` (broadcast over a
  batch or head dim of 1) plus the mask, added to each other first;
* a mask becomes 0 (kept) / ``mask_filter_value`` (default -10000.0, not -inf; the optimizer writes
  float32's lowest) over (batch, query, total key) as onnxruntime's ``PrepareMask`` builds it: 1-D
  (B) end positions (keys at or past the end are filled; a negative end is refused, as there),
  Attention's 1-D (2B) end positions then start positions (keys before the start filled too), a 1-D
  (3B + 2) whose first B are read as ends, 2-D (B, total) and 3-D (B, S, total) raw masks (a value
  > 0 keeps); MultiHeadAttention also takes (B, kv_length) without past. A (B, 1) or (1, 1) mask is
  a no-op. ``unidirectional`` with more than one query writes float32's lowest (not the fill value)
  over key ``j`` of query ``i`` where ``j > past + i``, for every query row but the last, which
  onnxruntime's loop leaves whole (all it could see when keys and queries have one length; it
  differs only for causal cross-attention);
* the softmax subtracts the row's max, exponentiates, and multiplies by the reciprocal of the sum
  (MLAS); a row left all -inf is NaN there and here;
* output is ``probs @ V``, heads concatenated: (B, S, v_hidden). MultiHeadAttention adds the fused
  bias to Q, K and V before splitting heads (to Q only when K and V come in already as heads), and
  its ``qk`` output is the logits: scaled Q K^T plus bias and mask, before the softmax.

onnxruntime's MultiHeadAttention given past_key / past_value but no present output reads keys past
this step's own (its past is never concatenated: neighbouring heads' memory); here past is always
used, as with the present outputs asked for.

The 4-D Megatron mask (B, 1, M, M), rotary embedding (``do_rotary``), packed QKV / KV (5-D) in
MultiHeadAttention and the shared past/present buffer are refused with the reason: onnxruntime's
CPU kernels do not run them either. EmbedLayerNormalization sums each row and its squared
deviations in order, in float32, and divides by ``sqrt(var + epsilon)`` before gamma and beta, as
onnxruntime's loop does; its ``mask_index`` counts each mask row's 1s (values other than 1 do not
count), zeros without a mask.

float16 inputs compute in float32 and float64 in float64, rounded once at the end. A numeric policy
passes ``_round_operand``: the operands of every product these kernels form themselves (Attention's
input and weights; Q and K; the probabilities and V) are rounded by it, as a matrix unit reads them.
Shapes for compile-time planning come from ``hal.graph.contrib``.
"""

from __future__ import annotations

import numpy as np

from hal.kernels.attention import _as_is, _from_heads, _to_heads, _work_dtype
from hal.kernels.registry import kernel

Array = np.ndarray
DOMAIN = "com.microsoft"


def _fill_mask(mask: Array | None, batch: int, q_len: int, total: int, past: int, causal: bool, fill: float,
               work: np.dtype) -> Array | None:
    """The additive mask (B or 1, 1, S, T), as onnxruntime's PrepareMask makes it, or None: 0 where a key
    is kept, ``fill`` where the mask drops it, and float32's lowest (not ``fill``) over a causal future."""
    if mask is None and not causal:
        return None
    f = work.type(fill)
    zero = work.type(0)
    j = np.arange(total)
    if mask is None:
        m = np.zeros((1, 1, total), dtype=work)
    elif mask.ndim == 3:
        m = np.where(mask > 0, zero, f).astype(work)
    elif mask.ndim == 2:
        m = np.where(mask > 0, zero, f).astype(work)[:, None, :]
    else:  # 1-D: (B) end positions, (2B) end then start positions; (3B + 2) reads its first B as ends
        ends = mask[:batch].astype(np.int64).reshape(-1, 1)
        keep = j[None, :] < ends
        if mask.shape[0] == 2 * batch:
            keep &= j[None, :] >= np.minimum(mask[batch:].astype(np.int64).reshape(-1, 1), total)
        m = np.where(keep, zero, f).astype(work)[:, None, :]
    if causal:
        future = j[None, :] > past + np.arange(q_len)[:, None]  # (S, T)
        future[-1] = False  # onnxruntime leaves the last query row whole (all it sees when T == P + S)
        m = np.where(future, np.finfo(work).min, m)
    return m[:, None]


def _check_mask(mask: Array, batch: int, q_len: int, total: int, op: str) -> Array | None:
    """The mask as one of the forms onnxruntime's CPU kernel reads, None for a no-op one; else a clear error."""
    shape = mask.shape
    if mask.ndim == 1 and shape[0] in (batch, 2 * batch, 3 * batch + 2):
        if np.any(mask[:batch] < 0):
            raise ValueError(f"{op}: mask end positions must be non-negative, got {mask[:batch].tolist()}")
        return mask
    if mask.ndim == 2 and shape == (batch, total):
        return mask
    if mask.ndim == 2 and shape[1] == 1 and shape[0] in (batch, 1):
        return None  # one value per row: the same shift for every key, no mask at all
    if mask.ndim == 3 and shape == (batch, q_len, total):
        return mask
    if mask.ndim == 4:
        raise ValueError(f"{op}: a 4-D (Megatron) mask {shape} is not run by onnxruntime's CPU kernel, nor here; "
                         f"pass a 2-D (batch, total_sequence_length) or 3-D mask instead")
    forms = f"({batch}), ({2 * batch}), ({3 * batch + 2}), ({batch}, {total}) or ({batch}, {q_len}, {total})"
    raise ValueError(f"{op}: mask of shape {shape} is none of the forms onnxruntime reads: {forms}")


def mlas_softmax(x: Array, in_place: bool = False) -> Array:
    """MLAS's softmax over the last axis: exp(x - max) times the reciprocal of the row's sum (into
    ``x`` itself when ``in_place``: the same bits, two passes' buffers fewer)."""
    e = np.subtract(x, np.max(x, axis=-1, keepdims=True), out=x if in_place else None)
    np.exp(e, out=e)
    total = np.sum(e, axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        e *= np.reciprocal(total)
    return e


def _attend(q: Array, k: Array, v: Array, add: Array | None, scale: float, rd, keep_logits: bool = False
            ) -> tuple[Array, Array | None]:
    """softmax(scale * Q K^T + add) V over (B, N, S, H) x (B, N, T, H) x (B, N, T, Hv); also the logits
    when ``keep_logits`` (else the softmax runs in their buffer, and None)."""
    logits = np.matmul(rd(q), np.swapaxes(rd(k), -1, -2))
    logits *= q.dtype.type(scale)
    if add is not None:
        logits += add
    probs = mlas_softmax(logits, in_place=not keep_logits)
    return np.matmul(rd(probs), rd(v)), logits if keep_logits else None


def _attention_bias(bias: Array | None, batch: int, heads: int, q_len: int, total: int, op: str,
                    work: np.dtype) -> Array | None:
    if bias is None:
        return None
    ok = (bias.ndim == 4 and bias.shape[0] in (1, batch) and bias.shape[1] in (1, heads)
          and bias.shape[2:] == (q_len, total))
    if not ok:
        raise ValueError(f"{op}: attention_bias of shape {bias.shape} must be ({batch} or 1, {heads} or 1, "
                         f"{q_len}, {total}) (batch, heads, sequence_length, total_sequence_length)")
    return bias.astype(work, copy=False)


def _scale(scale: float, head: int, work: np.dtype) -> float:
    """The attribute, or 1 / sqrt(head_size) taken in the working precision (float32: as onnxruntime's sqrtf)."""
    if scale:
        return scale
    return work.type(1) / np.sqrt(work.type(head))


def _sum_terms(bias: Array | None, mask: Array | None) -> Array | None:
    if bias is None:
        return mask
    return bias if mask is None else bias + mask


# --- Attention -------------------------------------------------------------------------------------


@kernel("Attention", since=1, domain=DOMAIN, output_count=True)
def attention(input, weights, bias=None, mask_index=None, past=None, attention_bias=None, past_sequence_length=None,
              *, num_heads=None, qkv_hidden_sizes=None, unidirectional=0, mask_filter_value=-10000.0, scale=0.0,
              do_rotary=0, past_present_share_buffer=0, rotary_embedding_dim=0, _n_outputs=1, _round_operand=None):
    """onnxruntime's Attention: the fused QKV projection, multi-head self-attention, and GPT-2's 5-D
    past (2, B, N, P, H) -> present (2, B, N, P + S, H). Outputs (B, S, v_hidden) and present."""
    op = "Attention (com.microsoft)"
    if num_heads is None or int(num_heads) <= 0:
        raise ValueError(f"{op} needs a positive num_heads attribute, got {num_heads}")
    if do_rotary:
        raise ValueError(f"{op}: do_rotary=1 is not supported (onnxruntime's CPU kernel refuses it too); "
                         f"rewrite the model with MultiHeadAttention plus RotaryEmbedding")
    if past_present_share_buffer and past is not None:
        raise ValueError(f"{op}: past_present_share_buffer=1 (the decoder's shared KV buffer) is not supported; "
                         f"export the model with separate past and present")
    n = int(num_heads)
    if input.ndim != 3:
        raise ValueError(f"{op}: input must be 3-D (batch, sequence, input_hidden), got shape {input.shape}")
    if weights.ndim != 2 or weights.shape[0] != input.shape[2]:
        raise ValueError(f"{op}: weights must be 2-D ({input.shape[2]}, q_hidden + k_hidden + v_hidden), "
                         f"got shape {weights.shape}")
    cols = weights.shape[1]
    if qkv_hidden_sizes:
        if len(qkv_hidden_sizes) != 3:
            raise ValueError(f"{op}: qkv_hidden_sizes must have 3 values, got {list(qkv_hidden_sizes)}")
        dq, dk, dv = (int(d) for d in qkv_hidden_sizes)
    else:
        if cols % 3:
            raise ValueError(f"{op}: weights' second dim {cols} is not divisible by 3; set qkv_hidden_sizes")
        dq = dk = dv = cols // 3
    if dq != dk:
        raise ValueError(f"{op}: qkv_hidden_sizes' Q and K sizes must match, got {dq} and {dk}")
    if min(dq, dv) <= 0 or dq % n or dv % n:
        raise ValueError(f"{op}: hidden sizes {dq}, {dk}, {dv} must be positive multiples of num_heads={n}")
    if dq + dk + dv != cols:
        raise ValueError(f"{op}: qkv_hidden_sizes {[dq, dk, dv]} sum to {dq + dk + dv}, weights have {cols} columns")
    if bias is not None and bias.shape != (cols,):
        raise ValueError(f"{op}: bias must be 1-D ({cols},), got shape {bias.shape}")
    b, s, _ = input.shape
    head = dq // n
    p = 0
    if past is not None:
        if dk != dv:
            raise ValueError(f"{op}: past needs K and V of one hidden size, got {dk} and {dv}")
        if past.ndim != 5 or past.shape[0] != 2 or past.shape[1] != b or past.shape[2] != n or past.shape[4] != head:
            raise ValueError(f"{op}: past must be (2, {b}, {n}, past_sequence_length, {head}), got {past.shape}")
        p = past.shape[3]
        if attention_bias is not None:
            raise ValueError(f"{op}: onnxruntime takes past or attention_bias, not both")
    total = p + s

    work = _work_dtype(input, weights)
    rd = _round_operand or _as_is
    qkv = np.matmul(rd(input.astype(work, copy=False)), rd(weights.astype(work, copy=False)))
    if bias is not None:
        qkv += bias.astype(work, copy=False)
    q = _to_heads(qkv[..., :dq], n)
    k = _to_heads(qkv[..., dq:dq + dk], n)
    v = _to_heads(qkv[..., dq + dk:], n)
    if past is not None:
        k = np.concatenate([past[0].astype(work, copy=False), k], axis=2)
        v = np.concatenate([past[1].astype(work, copy=False), v], axis=2)

    mask = None if mask_index is None else _check_mask(np.asarray(mask_index), b, s, total, op)
    add = _sum_terms(_attention_bias(attention_bias, b, n, s, total, op, work),
                     _fill_mask(mask, b, s, total, p, bool(unidirectional) and s > 1, mask_filter_value, work))
    y, _ = _attend(q, k, v, add, _scale(scale, head, work), rd)
    out = _from_heads(y).astype(input.dtype, copy=False)
    if _n_outputs < 2:
        return out
    present = np.stack([k, v]).astype(input.dtype if past is None else past.dtype, copy=False)
    return out, present


# --- MultiHeadAttention ----------------------------------------------------------------------------


def _heads_with_bias(x: Array, bias: Array | None, start: int, n: int, op: str, name: str, work: np.dtype) -> Array:
    """(B, L, D) plus its slice of the fused bias -> (B, N, L, D / N)."""
    if x.shape[2] % n:
        raise ValueError(f"{op}: {name}'s hidden size {x.shape[2]} is not a multiple of num_heads={n}")
    x = x.astype(work, copy=False)
    if bias is not None:
        x = x + bias[start:start + x.shape[2]].astype(work, copy=False)
    return _to_heads(x, n)


@kernel("MultiHeadAttention", since=1, domain=DOMAIN, output_count=True)
def multi_head_attention(query, key=None, value=None, bias=None, key_padding_mask=None, attention_bias=None,
                         past_key=None, past_value=None, past_sequence_length=None, cache_indirection=None, *,
                         num_heads=None, mask_filter_value=-10000.0, scale=0.0, unidirectional=0, _n_outputs=1,
                         _round_operand=None):
    """onnxruntime's MultiHeadAttention over separate Q (B, S, D), K (B, L, D) and V (B, L, Dv) plus
    their fused bias, with past_key / past_value (B, N, P, H) -> present_key / present_value
    (B, N, P + L, H); or over K and V already projected and cached, (B, N, L, H) (no bias, no past).
    Outputs (B, S, Dv), present_key, present_value and qk: the scaled Q K^T plus attention_bias and
    mask, before the softmax (B, N, S, T)."""
    op = "MultiHeadAttention (com.microsoft)"
    if num_heads is None or int(num_heads) <= 0:
        raise ValueError(f"{op} needs a positive num_heads attribute, got {num_heads}")
    n = int(num_heads)
    if past_sequence_length is not None or cache_indirection is not None:
        raise ValueError(f"{op}: past_sequence_length / cache_indirection (the shared-buffer beam-search decoder) "
                         f"are not supported; export with past_key / past_value and present outputs instead")
    if query.ndim == 5 or (key is not None and key.ndim == 5):
        raise ValueError(f"{op}: packed QKV / KV (5-D query or key) is not run by onnxruntime's CPU kernel, nor "
                         f"here; pass query, key and value separately, (batch, sequence, hidden) each")
    if query.ndim != 3:
        raise ValueError(f"{op}: query must be 3-D (batch, sequence, hidden), got shape {query.shape}")
    if key is None or value is None:
        raise ValueError(f"{op}: key and value are required (packed QKV in query is not supported on CPU)")
    if (past_key is None) != (past_value is None):
        raise ValueError(f"{op}: past_key and past_value must be given together")
    b, s, d = query.shape
    if d % n:
        raise ValueError(f"{op}: query's hidden size {d} is not a multiple of num_heads={n}")
    head = d // n
    work = _work_dtype(query, key, value)
    v_hidden = value.shape[2] if value.ndim == 3 else value.shape[1] * value.shape[3]
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != 2 * d + v_hidden):
        raise ValueError(f"{op}: bias must be 1-D (hidden + hidden + v_hidden = {2 * d + v_hidden}), "
                         f"got shape {bias.shape}")
    if key.ndim == 4:  # already (B, N, L, H): a cross-attention cache, used as it is
        if value.ndim != 4 or key.shape[:2] != (b, n) or key.shape[3] != head or value.shape[:3] != key.shape[:3]:
            raise ValueError(f"{op}: 4-D key / value must be ({b}, {n}, kv_sequence, {head}) and "
                             f"({b}, {n}, kv_sequence, v_head), got {key.shape} and {value.shape}")
        if past_key is not None:
            raise ValueError(f"{op}: with 4-D key / value (the cache itself), past_key / past_value must be absent")
        q = _heads_with_bias(query, bias, 0, n, op, "query", work)  # the bias's K and V parts go unused
        k, v = key.astype(work, copy=False), value.astype(work, copy=False)
    elif key.ndim == 3 and value.ndim == 3:
        if key.shape[0] != b or key.shape[2] != d or value.shape[:2] != key.shape[:2]:
            raise ValueError(f"{op}: key must be ({b}, kv_sequence, {d}) and value ({b}, kv_sequence, v_hidden), "
                             f"got {key.shape} and {value.shape}")
        q = _heads_with_bias(query, bias, 0, n, op, "query", work)
        k = _heads_with_bias(key, bias, d, n, op, "key", work)
        v = _heads_with_bias(value, bias, 2 * d, n, op, "value", work)
        if past_key is not None:
            if (past_key.ndim != 4 or past_key.shape[:2] != (b, n) or past_key.shape[3] != head
                    or past_value.shape != (*past_key.shape[:3], v.shape[3])):
                raise ValueError(f"{op}: past_key / past_value must be ({b}, {n}, past_sequence, {head}) and ({b}, "
                                 f"{n}, past_sequence, {v.shape[3]}), got {past_key.shape} and {past_value.shape}")
            k = np.concatenate([past_key.astype(work, copy=False), k], axis=2)
            v = np.concatenate([past_value.astype(work, copy=False), v], axis=2)
    else:
        raise ValueError(f"{op}: key and value must both be 3-D (batch, kv_sequence, hidden) or both 4-D "
                         f"(batch, heads, kv_sequence, head), got {key.shape} and {value.shape}")
    total = k.shape[2]
    past = total - (key.shape[1] if key.ndim == 3 else key.shape[2])
    kv_len = total - past
    mask = None
    if key_padding_mask is not None:
        m = np.asarray(key_padding_mask)
        if m.ndim == 2 and m.shape == (b, kv_len) and kv_len != total:
            raise ValueError(f"{op}: a ({b}, kv_sequence_length) key_padding_mask with past_key is not run by "
                             f"onnxruntime's CPU kernel; pass ({b}, total_sequence_length={total})")
        if m.ndim == 1 and m.shape[0] == 2 * b != 3 * b + 2:
            raise ValueError(f"{op}: a ({2 * b},) end-and-start key_padding_mask is Attention's form; "
                             f"MultiHeadAttention reads ({b}), ({3 * b + 2}), 2-D or 3-D masks")
        mask = _check_mask(m, b, s, total, op)
    add = _sum_terms(_attention_bias(attention_bias, b, n, s, total, op, work),
                     _fill_mask(mask, b, s, total, past, bool(unidirectional) and s > 1, mask_filter_value, work))
    y, logits = _attend(q, k, v, add, _scale(scale, head, work), _round_operand or _as_is, keep_logits=_n_outputs > 3)
    outs = [_from_heads(y).astype(query.dtype, copy=False), k.astype(query.dtype, copy=False),
            v.astype(query.dtype, copy=False)]
    if _n_outputs > 3:
        outs.append(logits.astype(query.dtype, copy=False))
    return outs[0] if _n_outputs < 2 else tuple(outs[:_n_outputs])


# --- EmbedLayerNormalization -----------------------------------------------------------------------


def _rows_of(table: Array, ids: Array, op: str, name: str) -> Array:
    """``table[ids]``, refusing an id outside the table as onnxruntime does."""
    ids = np.asarray(ids).astype(np.int64, copy=False)
    if ids.size and (ids.min() < 0 or ids.max() >= table.shape[0]):
        bad = ids[(ids < 0) | (ids >= table.shape[0])].reshape(-1)[0]
        raise ValueError(f"{op}: {name} {int(bad)} is outside the {table.shape[0]}-row embedding table")
    return table[ids]


def _in_order_sum(x: Array) -> Array:
    """The sum over the last axis, added left to right in x's dtype (as a plain C loop adds)."""
    if x.shape[-1] == 0:
        return np.zeros(x.shape[:-1], dtype=x.dtype)
    return np.cumsum(x, axis=-1, dtype=x.dtype)[..., -1]


@kernel("EmbedLayerNormalization", since=1, domain=DOMAIN, output_count=True)
def embed_layer_normalization(input_ids, segment_ids, word_embedding, position_embedding, segment_embedding=None,
                              gamma=None, beta=None, mask=None, position_ids=None, *, epsilon=None, mask_index_type=1,
                              _n_outputs=1):
    """word[input_ids] + position[position_ids or 0..S-1] (+ segment[segment_ids]), layer normalised
    over hidden with gamma and beta: (B, S, hidden); mask_index (B,) int32, each mask row's count of
    1s (zeros without a mask); embedding_sum, the sum before normalisation."""
    op = "EmbedLayerNormalization (com.microsoft)"
    if gamma is None or beta is None:
        raise ValueError(f"{op}: gamma and beta are required inputs (5 and 6)")
    if epsilon is None:
        raise ValueError(f"{op} needs the epsilon attribute (onnxruntime requires it)")
    if input_ids.ndim != 2:
        raise ValueError(f"{op}: input_ids must be 2-D (batch, sequence), got shape {input_ids.shape}")
    b, s = input_ids.shape
    for name, t in (("word_embedding", word_embedding), ("position_embedding", position_embedding),
                    ("segment_embedding", segment_embedding)):
        if t is not None and (t.ndim != 2 or t.shape[1] != word_embedding.shape[-1]):
            raise ValueError(f"{op}: {name} must be 2-D (rows, {word_embedding.shape[-1]}), got shape {t.shape}")
    hidden = word_embedding.shape[1]
    if gamma.shape != (hidden,) or beta.shape != (hidden,):
        raise ValueError(f"{op}: gamma and beta must be ({hidden},), got {gamma.shape} and {beta.shape}")
    for name, t in (("segment_ids", segment_ids), ("mask", mask)):
        if t is not None and t.shape != input_ids.shape:
            raise ValueError(f"{op}: {name} must have input_ids' shape {input_ids.shape}, got {t.shape}")
    if (segment_ids is None) != (segment_embedding is None):
        raise ValueError(f"{op}: segment_ids and segment_embedding must be given together")
    if position_ids is None:
        positions = np.arange(s)[None, :]
    elif position_ids.ndim == 2 and position_ids.shape[1] == s and position_ids.shape[0] in (1, b):
        positions = position_ids
    else:
        raise ValueError(f"{op}: position_ids must be ({b}, {s}) or (1, {s}), got shape {position_ids.shape}")

    work = np.dtype(np.float64) if word_embedding.dtype == np.float64 else np.dtype(np.float32)
    total = (_rows_of(word_embedding, input_ids, op, "input id").astype(work, copy=False)
             + _rows_of(position_embedding, positions, op, "position id").astype(work, copy=False))
    if segment_ids is not None:
        total = total + _rows_of(segment_embedding, segment_ids, op, "segment id").astype(work, copy=False)
    total = np.broadcast_to(total, (b, s, hidden))
    count = work.type(hidden)
    centred = total - (_in_order_sum(total) / count)[..., None]
    std = np.sqrt(_in_order_sum(centred * centred) / count + work.type(epsilon))
    y = centred / std[..., None] * gamma.astype(work, copy=False) + beta.astype(work, copy=False)
    out = [y.astype(word_embedding.dtype, copy=False)]
    if _n_outputs > 1:
        ones = np.zeros(b, np.int32) if mask is None else np.count_nonzero(mask == 1, axis=1).astype(np.int32)
        out.append(ones)
    if _n_outputs > 2:
        out.append(np.ascontiguousarray(total).astype(word_embedding.dtype, copy=False))
    return out[0] if _n_outputs == 1 else tuple(out)
