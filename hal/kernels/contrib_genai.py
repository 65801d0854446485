"""onnxruntime's contrib ops (domain ``com.microsoft``) that the LLMs its genai model builder and
Olive write hold: MatMulNBits and GatherBlockQuantized (weights in 2/4/8-bit blocks), and
RotaryEmbedding (GroupQueryAttention, the decoder's attention with its KV cache, is
``hal.kernels.contrib_gqa``'s). onnx defines none of them; their contract is onnxruntime's
(``docs/ContribOperators.md``) and their arithmetic that of its CPU kernels:

* the quantized weights unpack low bits first (a byte holds codes 0, 1 of a 4-bit row in its low
  and high nibble); a block's value is (code - zero point) x scale in float32, the zero point
  2^(bits-1) where MatMulNBits has none (GatherBlockQuantized: likewise for uint8 data, 0 for
  int4 / uint4 data); the last block of a row K not a multiple of block_size long is padded and
  the padding dropped. GatherBlockQuantized's FP8 / FP4 data (the four float8 types, float4e2m1) is
  its float value times the scale, with no zero point: ``block_size`` 0 makes a row along
  quantize_axis one block, and a scale of 1 on another axis is broadcast along it. A float zero
  point (MatMulNBits) folds in as code x scale - zero x scale, as onnxruntime's reorder path
  computes it. With ``g_idx`` (row k reads block g_idx[k]) packed
  zero points still apply, where onnxruntime 1.32's CPU kernel reads 8 for every block (a bug).
* MatMulNBits takes ``weight_prepacked`` 0, which onnxruntime 1.32's optimiser writes into every
  MatMulNBits of a model it saves; 1 (B in a provider's own packed layout) is refused.
* MatMulNBits dequantises B once per call and multiplies in float32 (float16 A is widened and the
  result rounded once), bias added after the product; with ``accuracy_level`` 4 onnxruntime's CPU
  kernel first quantises A to int8 per block of ``block_size`` along K (symmetric, scale
  max|a| / 127, round half to even), takes each block's integer dot product with B's centred codes
  exactly and sums the blocks' products with A's scale times B's in float32: so does this kernel.
  Levels 0-3 compute in float32 on a CPU, and so do 2-bit weights at level 4 in blocks other than
  32, 64 and 128 (MLAS's x64 int8 kernels for 2 bits take only those; onnxruntime falls back to its
  float one).
* RotaryEmbedding rotates the first ``rotary_embedding_dim`` features of each head by the cos /
  sin cache rows its position ids pick (halves, or even/odd pairs when interleaved).

Shapes for compile-time planning come from ``hal.graph.contrib``.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from hal.kernels.attention import rotary_embedding as _onnx_rotary
from hal.kernels.registry import kernel

Array = np.ndarray
DOMAIN = "com.microsoft"
_F32 = np.float32
_INT4 = (np.dtype(ml_dtypes.int4), np.dtype(ml_dtypes.uint4))
_FP_TABLES = tuple(np.dtype(t) for t in (ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz, ml_dtypes.float8_e5m2,
                                         ml_dtypes.float8_e5m2fnuz, ml_dtypes.float4_e2m1fn))


def unpack_codes(packed: Array, bits: int) -> Array:
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
    codes = unpack_codes(B, bits).reshape(N, k_blocks * block_size)[:, :K].astype(np.int32)
    scale = np.asarray(scales).reshape(N, k_blocks).astype(_F32)
    if zero_points is None:
        zero = np.full((N, k_blocks), 1 << (bits - 1), dtype=np.int32)
    elif zero_points.dtype == np.uint8:
        per_row = -(-k_blocks * bits // 8)
        if zero_points.size != N * per_row:
            raise ValueError(f"MatMulNBits packed uint8 zero_points must hold N x ceil(k_blocks x bits / 8) = "
                             f"{N} x {per_row} bytes, got shape {zero_points.shape}")
        zero = unpack_codes(zero_points.reshape(N, per_row), bits)[:, :k_blocks].astype(np.int32)
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


def _prepacked(attrs: dict, inputs: list[str], outputs: list[str]) -> str | None:
    if attrs.get("weight_prepacked", 0):
        return ("MatMulNBits with weight_prepacked=1 holds B in an execution provider's own packed layout, "
                "not the schema's blocks; save the model from onnxruntime's CPU provider (it writes 0)")
    return None


#: the block sizes of 2-bit weights MLAS's x64 int8 kernels (accuracy_level 4) take
_INT8_2BIT_BLOCKS = (32, 64, 128)


@kernel("MatMulNBits", since=1, domain=DOMAIN, refuses=_prepacked)
def matmul_nbits(A, B, scales, zero_points=None, g_idx=None, bias=None, *, K, N, bits=4, block_size,
                 accuracy_level=0, weight_prepacked=0):
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
    int8 = bits != 2 or block_size in _INT8_2BIT_BLOCKS
    if accuracy_level == 4 and int8 and g_idx is None and not float_zero:
        y = int8_blocked_product(a.reshape(-1, K), codes - zero, scale, block_size).reshape(*A.shape[:-1], N)
    else:
        if float_zero:  # code x scale - zero x scale, each rounded
            w = codes.astype(_F32) * scale + (-scale * zero)
        else:
            w = (codes - zero).astype(_F32) * scale
        y = np.matmul(a, w.T.astype(work))
    if bias is not None:
        y = y + bias.reshape(N).astype(work)
    return y.astype(A.dtype)


def int8_blocked_product(a: Array, centred: Array, scale: Array, block_size: int) -> Array:
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
    int4 / uint4 data holds one code per element along any axes; FP8 / FP4 data is its float value
    times the scale (no zero point), with ``block_size`` 0 one block the whole axis and a scale of 1
    on another axis broadcast along it. Out-of-range indices read zeros, as onnxruntime's kernel
    writes them."""
    fp = data.dtype in _FP_TABLES
    if (block_size < 16 or block_size & (block_size - 1)) and not (fp and block_size == 0):
        raise ValueError(f"GatherBlockQuantized block_size must be a power of 2 and at least 16 (or 0 for FP8 / FP4 "
                         f"data), got {block_size}")
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
        codes = unpack_codes(data, bits).astype(np.int32)
        default_zero = 1 << (bits - 1)
    elif data.dtype in _INT4:
        if bits != 4:
            raise ValueError(f"GatherBlockQuantized with int4 / uint4 data needs bits 4, got {bits}")
        codes = data.astype(np.int32)
        default_zero = 0
    elif fp:
        if zero_points is not None:
            raise ValueError(f"GatherBlockQuantized with {data.dtype} data takes no zero_points (FP8 / FP4 "
                             f"quantization is symmetric)")
        codes = data.astype(_F32)
        default_zero = 0
    else:
        raise ValueError(f"GatherBlockQuantized data must be uint8, int4, uint4, FP8 or FP4, got {data.dtype}")
    length = codes.shape[q_axis]
    width = block_size or max(length, 1)
    blocks = -(-length // width)
    want = list(codes.shape)
    want[q_axis] = blocks
    if scales.ndim != rank or any(s != w and not (fp and i != q_axis and s == 1)
                                  for i, (s, w) in enumerate(zip(scales.shape, want))):
        raise ValueError(f"GatherBlockQuantized scales must have shape {tuple(want)} (data's, with "
                         f"ceil({length} / block_size {block_size}) along quantize_axis"
                         f"{'; 1 on another axis to broadcast' if fp else ''}), got {scales.shape}")
    if zero_points is None:
        zero = np.int32(default_zero)
    elif data.dtype == np.uint8:
        per = 8 // bits
        zp_shape = [*want[:-1], -(-blocks // per)]
        if zero_points.shape != tuple(zp_shape):
            raise ValueError(f"GatherBlockQuantized packed zero_points must have shape {tuple(zp_shape)}, got "
                             f"{zero_points.shape}")
        zero = unpack_codes(zero_points, bits)[..., :blocks].astype(np.int32)
    else:
        if zero_points.shape != tuple(want) or zero_points.dtype != data.dtype:
            raise ValueError(f"GatherBlockQuantized zero_points must be {data.dtype} of shape {tuple(want)}, got "
                             f"{zero_points.dtype} {zero_points.shape}")
        zero = zero_points.astype(np.int32)
    idx = np.asarray(indices).astype(np.int64)
    size = codes.shape[g_axis]
    valid = (idx >= -size) & (idx < size)
    safe = np.where(valid, np.where(idx < 0, idx + size, idx), 0)
    expand = np.arange(length) // width  # each element's block along quantize_axis
    scale32 = np.asarray(scales, dtype=_F32)
    if g_axis == q_axis:  # rare: dequantise everything, then gather
        scale_full = np.take(scale32, expand, axis=q_axis)
        zero_full = zero if np.ndim(zero) == 0 else np.take(zero, expand, axis=q_axis)
        out = np.take((codes - zero_full).astype(_F32) * scale_full, safe, axis=g_axis)
    else:  # gather the codes and their blocks' scales / zero points, then dequantise what was gathered
        q_out = q_axis if q_axis < g_axis else q_axis + idx.ndim - 1
        rows = safe if scale32.shape[g_axis] == size else np.zeros_like(safe)  # (a broadcast scale: its one row)
        scale_g = np.take(np.take(scale32, rows, axis=g_axis), expand, axis=q_out)
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


def check_rotary_inputs(op: str, input: Array, cos_cache: Array, sin_cache: Array) -> None:
    """A rotary op's input, (B, S, hidden) or (B, N, S, H), and its cos / sin caches, 2-D of one shape."""
    if input.ndim not in (3, 4):
        raise ValueError(f"{op} input must be (batch, sequence, hidden) or (batch, heads, sequence, head_size), got "
                         f"shape {input.shape}")
    if cos_cache.ndim != 2 or cos_cache.shape != sin_cache.shape:
        raise ValueError(f"{op} cos_cache and sin_cache must be 2-D of one shape, got {cos_cache.shape} and "
                         f"{sin_cache.shape}")


@kernel("RotaryEmbedding", since=1, domain=DOMAIN)
def rotary_embedding(input, position_ids, cos_cache, sin_cache, *, interleaved=0, num_heads=0,
                     rotary_embedding_dim=0, scale=1.0, is_packed_batching=0):
    """onnxruntime's RotaryEmbedding: input (B, S, hidden) or (B, N, S, H); position_ids one offset
    (positions offset .. offset + S - 1) or (B, S); caches (max_position, rotary_dim / 2). Without
    ``rotary_embedding_dim`` a head is twice the caches' width and rotated whole; features past
    the rotary dimension pass through. ``scale`` and ``is_packed_batching`` do not change the CPU
    kernel's result (the caches come precomputed), nor this one's."""
    check_rotary_inputs("RotaryEmbedding", input, cos_cache, sin_cache)
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
