"""More of onnxruntime's quantized contrib ops (domain ``com.microsoft``), beyond
``hal.kernels.contrib_quant`` and ``hal.kernels.contrib_quant_ops``: QEmbedLayerNormalization, what
``quantize_dynamic`` writes by default for an EmbedLayerNormalization (its embedding tables, gamma
and beta as 8-bit codes with a scale and a zero point each); QLinearWhere, what ``quantize_static``
writes in the QOperator format for a Where between quantized values (with the
``ForceQuantizeNoInputCheck`` option); and MatMulInteger16. onnx defines none of
them; their contract is onnxruntime's (``docs/ContribOperators.md``), and so is their arithmetic,
as its CPU kernels do it:

* QEmbedLayerNormalization dequantizes the rows it reads, ``(code - zero) x scale`` in float32, sums
  word + position (+ segment) in that order, and layer normalises each row as
  EmbedLayerNormalization does (``hal.kernels.contrib_attention``): the row and its squared
  deviations summed in order in float32, ``centred / sqrt(var + epsilon) x gamma + beta`` with gamma
  and beta dequantized. Positions are 0..S-1 (the op has no position_ids). All tables share one
  8-bit type (onnxruntime reads every table in the word embedding's zero point's type).
  ``mask_index`` counts each mask row's 1s (values other than 1 do not count), zeros without one;
* QLinearWhere maps X's codes and Y's codes to Z's scale and zero point each through a 256-entry
  table (dequantise, quantise), as onnxruntime builds its lookup tables, and copies a side whose
  scale and zero point equal Z's; then Where, broadcasting condition, X and Y (numpy rules);
* MatMulInteger16 is int16 x int16 -> int32 (onnxruntime's CPU runs no other types): the products
  summed exactly and wrapped to int32 on overflow, as its int32 accumulator wraps; numpy's
  matmul broadcasting (batch dims, 1-D operands).

QLinearReduceMean is left out: onnxruntime's CPU provider has no kernel for it (1.32 refuses the
node) and its quantizer never writes it.

Results saturate to the output type's range; a NaN quantises to its lowest value
(``hal.kernels.quantize.saturate_int``). No product here is a float matrix product, so no numeric
policy applies (MatMulInteger16's is exact). Shapes for compile-time planning come from
``hal.graph.contrib``.
"""

from __future__ import annotations

import numpy as np

from hal.kernels.contrib_attention import _in_order_sum, _rows_of
from hal.kernels.contrib_quant import _dequantize, _scalar, _through_table
from hal.kernels.contrib_quant_ops import _CODES, _F32, _one
from hal.kernels.registry import kernel

Array = np.ndarray
DOMAIN = "com.microsoft"


def _code_type(op: str, pairs: list[tuple[str, Array | None]]) -> np.dtype:
    """The one 8-bit type the named codes and zero points (None: absent) share, else a clear error."""
    present = [(name, np.asarray(t).dtype) for name, t in pairs if t is not None]
    kinds = {dtype for _, dtype in present}
    if len(kinds) != 1 or next(iter(kinds)) not in _CODES:
        listed = ", ".join(f"{name} {dtype}" for name, dtype in present)
        raise ValueError(f"{op}: codes and zero points must all be uint8 or all int8, got {listed}")
    return next(iter(kinds))


# --- QEmbedLayerNormalization ----------------------------------------------------------------------


@kernel("QEmbedLayerNormalization", since=1, domain=DOMAIN, output_count=True)
def q_embed_layer_normalization(input_ids, segment_ids, word_embedding_quant, position_embedding_quant,
                                segment_embedding=None, gamma_quant=None, beta_quant=None, mask=None,
                                word_embedding_scale=None, position_embedding_scale=None,
                                segment_embedding_scale=None, gamma_scale=None, beta_scale=None,
                                word_embedding_zero_point=None, position_embedding_zero_point=None,
                                segment_embedding_zero_point=None, gamma_zero_point=None, beta_zero_point=None,
                                *, epsilon=1e-12, _n_outputs=1):
    """word[input_ids] + position[0..S-1] (+ segment[segment_ids]), each dequantized, layer
    normalised over hidden with the dequantized gamma and beta: (B, S, hidden) float32; and
    mask_index (B,) int32."""
    op = "QEmbedLayerNormalization (com.microsoft)"
    required = {"gamma_quant": gamma_quant, "beta_quant": beta_quant, "word_embedding_scale": word_embedding_scale,
                "position_embedding_scale": position_embedding_scale, "gamma_scale": gamma_scale,
                "beta_scale": beta_scale, "word_embedding_zero_point": word_embedding_zero_point,
                "position_embedding_zero_point": position_embedding_zero_point,
                "gamma_zero_point": gamma_zero_point, "beta_zero_point": beta_zero_point}
    missing = [name for name, t in required.items() if t is None]
    if missing:
        raise ValueError(f"{op}: required inputs {', '.join(missing)} are missing (inputs 5, 6 and 8-17 but the "
                         f"segment embedding's scale and zero point are required)")
    segments = segment_ids is not None
    if segments and (segment_embedding is None or segment_embedding_scale is None
                     or segment_embedding_zero_point is None):
        raise ValueError(f"{op}: segment_ids needs segment_embedding, segment_embedding_scale and "
                         f"segment_embedding_zero_point (inputs 4, 10 and 15)")
    if input_ids.ndim != 2:
        raise ValueError(f"{op}: input_ids must be 2-D (batch, sequence), got shape {input_ids.shape}")
    b, s = input_ids.shape
    tables = [("word_embedding", word_embedding_quant, word_embedding_scale, word_embedding_zero_point),
              ("position_embedding", position_embedding_quant, position_embedding_scale,
               position_embedding_zero_point)]
    if segments:
        tables.append(("segment_embedding", segment_embedding, segment_embedding_scale, segment_embedding_zero_point))
    norms = [("gamma", gamma_quant, gamma_scale, gamma_zero_point), ("beta", beta_quant, beta_scale, beta_zero_point)]
    _code_type(op, [(f"{name}{suffix}", t) for name, codes, _, zero in tables + norms
                    for suffix, t in (("", codes), ("_zero_point", zero))])
    for name, _, scale, zero in tables + norms:
        _one(scale, op, f"{name}_scale")
        _one(zero, op, f"{name}_zero_point")
    hidden = word_embedding_quant.shape[-1] if word_embedding_quant.ndim == 2 else -1
    for name, codes, _, _ in tables:
        if codes.ndim != 2 or codes.shape[1] != hidden:
            raise ValueError(f"{op}: {name} must be 2-D (rows, hidden) with word_embedding's hidden size, got "
                             f"shape {codes.shape} (word_embedding {word_embedding_quant.shape})")
    for name, codes, _, _ in norms:
        if codes.shape != (hidden,):
            raise ValueError(f"{op}: {name} must be ({hidden},), got shape {codes.shape}")
    for name, t in (("segment_ids", segment_ids), ("mask", mask)):
        if t is not None and t.shape != input_ids.shape:
            raise ValueError(f"{op}: {name} must have input_ids' shape {input_ids.shape}, got {t.shape}")

    ids = (input_ids, np.arange(s)[None, :], segment_ids)
    total = None
    for (name, codes, scale, zero), index in zip(tables, ids):
        rows = _dequantize(_rows_of(codes, index, op, f"{name.split('_')[0]} id"), scale, zero)
        total = rows if total is None else total + rows  # word + position, then + segment, in float32
    total = np.broadcast_to(total, (b, s, hidden))
    count = _F32(hidden)
    centred = total - (_in_order_sum(total) / count)[..., None]
    std = np.sqrt(_in_order_sum(centred * centred) / count + _F32(epsilon))
    gamma = _dequantize(gamma_quant, gamma_scale, gamma_zero_point)
    beta = _dequantize(beta_quant, beta_scale, beta_zero_point)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = (centred / std[..., None] * gamma + beta).astype(_F32, copy=False)
    if _n_outputs < 2:
        return y
    ones = np.zeros(b, np.int32) if mask is None else np.count_nonzero(mask == 1, axis=1).astype(np.int32)
    return y, ones


# --- QLinearWhere ----------------------------------------------------------------------------------


@kernel("QLinearWhere", since=1, domain=DOMAIN)
def qlinear_where(condition, X, x_scale, x_zero_point, Y, y_scale, y_zero_point, z_scale, z_zero_point):
    """Where(condition, X, Y) over codes: each side requantised to Z's scale and zero point through
    its table (or copied when its scale and zero point are Z's); shape: condition, X and Y broadcast."""
    op = "QLinearWhere (com.microsoft)"
    named = {"condition": condition, "X": X, "x_scale": x_scale, "x_zero_point": x_zero_point, "Y": Y,
             "y_scale": y_scale, "y_zero_point": y_zero_point, "z_scale": z_scale, "z_zero_point": z_zero_point}
    missing = [name for name, t in named.items() if t is None]
    if missing:
        raise ValueError(f"{op}: all 9 inputs are required (onnxruntime's kernel enforces it); missing "
                         f"{', '.join(missing)}")
    out = _code_type(op, [("X", X), ("x_zero_point", x_zero_point), ("Y", Y), ("y_zero_point", y_zero_point),
                          ("z_zero_point", z_zero_point)])
    for name in ("x_scale", "x_zero_point", "y_scale", "y_zero_point", "z_scale", "z_zero_point"):
        _one(named[name], op, name)
    if np.asarray(condition).dtype != np.bool_:
        raise ValueError(f"{op}: condition must be bool, got {np.asarray(condition).dtype}")
    try:
        shape = np.broadcast_shapes(np.shape(condition), X.shape, Y.shape)
    except ValueError:
        raise ValueError(f"{op}: condition {np.shape(condition)}, X {X.shape} and Y {Y.shape} do not broadcast "
                         f"together (numpy rules)") from None

    def to_z(codes: Array, scale: Array, zero: Array) -> Array:
        if _scalar(scale) == _scalar(z_scale) and _scalar(zero) == _scalar(z_zero_point):
            return codes
        return _through_table(codes, lambda v: v, scale, zero, z_scale, z_zero_point)

    z = np.where(condition, to_z(X, x_scale, x_zero_point), to_z(Y, y_scale, y_zero_point))
    return np.ascontiguousarray(np.broadcast_to(z, shape)).astype(out, copy=False)


# --- MatMulInteger16 -------------------------------------------------------------------------------

#: above this K a float64 sum of int16 products (each at most 2^30) could leave float64's exact integers
_EXACT_K = 1 << 22


@kernel("MatMulInteger16", since=1, domain=DOMAIN)
def matmul_integer16(A, B):
    """A (..., M, K) x B (..., K, N) -> int32 (..., M, N), numpy's matmul broadcasting; the exact
    sum wrapped to int32, as onnxruntime's int32 accumulator wraps."""
    op = "MatMulInteger16 (com.microsoft)"
    if A.dtype != np.int16 or B.dtype != np.int16:
        raise ValueError(f"{op}: A and B must be int16 (onnxruntime's CPU kernel runs int16 x int16 -> int32 "
                         f"only), got {A.dtype} and {B.dtype}")
    if A.ndim == 0 or B.ndim == 0:
        raise ValueError(f"{op}: A and B must be at least 1-D, got shapes {A.shape} and {B.shape}")
    k_a = A.shape[-1]
    k_b = B.shape[-2] if B.ndim > 1 else B.shape[0]
    try:
        np.broadcast_shapes(A.shape[:-2], B.shape[:-2])
        ok = k_a == k_b
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{op}: shapes {A.shape} and {B.shape} do not multiply (A's last dim must equal B's "
                         f"second to last, batch dims broadcast)")
    if k_a <= _EXACT_K:  # exact in float64, and BLAS-fast
        acc = np.matmul(A.astype(np.float64), B.astype(np.float64)).astype(np.int64)
    else:
        acc = np.matmul(A.astype(np.int64), B.astype(np.int64))
    return np.asarray(acc).astype(np.int32)  # two's-complement wrap, as int32 accumulation wraps
