"""Size rules of onnxruntime's ops (domain com.microsoft) that can be asked for more memory than
their inputs hold: its fusions as the ops they fuse (a FusedConv's pads and strides are attributes,
as a Conv's), and its attention ops' scores and key/value cache, whose lengths come from the
inputs' lengths multiplied (MultiHeadAttention) or from a fed scalar (GroupQueryAttention's
``total_sequence_length``: one int32 can ask for a cache of 2^31 positions a head), and the mixture
of experts' per-expert buffers (MoE, QMoE); and its twins of ONNX ops whose sizes come from values
or products: CDist's (M, N) distances, CropAndResize's crop_size (Range's and LinearAttention's
are the onnx ops' rules, which read onnxruntime's forms too)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hal.op_sizes._read import itemsize
from hal.op_sizes.linalg import _gemm, product_shape
from hal.op_sizes.spatial import _conv_rule


def _fused_matmul(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """FusedMatMul's product of its operands as it reads them (transBatch moves the first axis to
    before the last, trans swaps the last two): MatMul's of those shapes."""
    read = []
    for x, trans, batch in ((args[0], "transA", "transBatchA"), (args[1], "transB", "transBatchB")):
        shape = list(x.shape)
        if attrs.get(batch, 0) and len(shape) > 2:
            shape = [*shape[1:-1], shape[0], shape[-1]]
        if attrs.get(trans, 0) and len(shape) >= 2:
            shape[-2], shape[-1] = shape[-1], shape[-2]
        read.append(shape)
    shape = product_shape(*read)
    return None if shape is None else (shape, max(itemsize(args[0]), itemsize(args[1]), 4))


def _heads(attrs: dict[str, Any], key: str = "num_heads") -> int:
    return max(1, int(attrs.get(key) or 1))


def _multi_head_attention(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """MultiHeadAttention's scores, (batch, heads, query length, past + key length)."""
    q = args[0]
    k = args[1] if len(args) > 1 else None
    past = args[6] if len(args) > 6 else None
    if q.ndim != 3:
        return None
    keys = q.shape[1] if k is None else k.shape[1] if k.ndim == 3 else k.shape[2] if k.ndim == 4 else None
    if keys is None:
        return None
    if past is not None and past.ndim == 4:
        keys += past.shape[2]
    return [q.shape[0], _heads(attrs), q.shape[1], keys], max(itemsize(q), 4)


def _group_query_attention(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """GroupQueryAttention's scores (batch, heads, query length, cache) or its present key cache
    (batch, kv heads, cache, head size), the larger: the cache holds max(total_sequence_length, the
    past's length) positions."""
    q = args[0]
    past = args[3] if len(args) > 3 else None
    total = args[6] if len(args) > 6 else None
    if q.ndim != 3 or total is None or np.size(total) < 1:
        return None
    heads, kv_heads = _heads(attrs), _heads(attrs, "kv_num_heads")
    packed = len(args) < 2 or args[1] is None
    head = max(1, q.shape[2] // (heads + 2 * kv_heads if packed else heads))
    cache = max(int(np.asarray(total).reshape(-1)[0]), past.shape[2] if past is not None and past.ndim == 4 else 0)
    scores, present = [q.shape[0], heads, q.shape[1], cache], [q.shape[0], kv_heads, cache, head]
    return max(scores, present, key=math.prod), max(itemsize(q), 4)


def _quantized_attention(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """QAttention's scores, (batch, heads, sequence, past + sequence): its input's codes and packed
    weights ask for them as onnxruntime's Attention does, its past at input 8."""
    x, past = args[0], args[8] if len(args) > 8 else None
    if x.ndim != 3:
        return None
    keys = x.shape[1] + (past.shape[3] if past is not None and past.ndim == 5 else 0)
    return [x.shape[0], _heads(attrs), x.shape[1], keys], 4


def _quantized_lstm(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """DynamicQuantizeLSTM's Y, (steps, directions, batch, hidden): hidden is R's (directions,
    hidden, 4 hidden) second axis, and the input's width may be 1."""
    x, r = args[0], args[2] if len(args) > 2 else None
    if x.ndim != 3 or r is None or r.ndim != 3:
        return None
    return [x.shape[0], r.shape[0], x.shape[1], r.shape[1]], 4


def _experts(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """MoE's and QMoE's largest float32 buffer: an expert's FC1 output for every token (tokens, FC1
    rows), the output or the router's probabilities (tokens, hidden or experts), or an expert's
    dequantised FC1 weight (FC1 rows, hidden)."""
    x, router, fc1 = args[0], args[1], args[2]
    if x.ndim < 2 or fc1.ndim != 3 or router.ndim != 2:
        return None
    tokens, hidden = math.prod(x.shape[:-1]), x.shape[-1]
    rows = fc1.shape[1]
    return max([tokens, rows], [tokens, hidden], [tokens, router.shape[1]], [rows, hidden], key=math.prod), 4


def _cdist(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """CDist's distances, (rows of A, rows of B)."""
    a, b = args[0], args[1]
    return ([a.shape[0], b.shape[0]], itemsize(a)) if a.ndim == 2 and b.ndim == 2 else None


def _crop_and_resize(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """CropAndResize's crops, (boxes, channels, crop height, crop width): the sizes are crop_size's values."""
    x, rois, crop = args[0], args[1], np.asarray(args[3]).reshape(-1)
    if x.ndim != 4 or crop.size < 2:
        return None
    return [rois.shape[0], x.shape[1], max(int(crop[0]), 0), max(int(crop[1]), 0)], max(itemsize(x), 4)


def _causal_conv(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """CausalConvWithState's window, (batch, channels, (kernel - 1) x dilation + length): a dilation
    attribute asks for a state that many positions long (ONNX's op, without it: dilation 1)."""
    x, w = args[0], args[1]
    if x.ndim < 3 or w.ndim != 3:
        return None
    length, channels = (x.shape[1], math.prod(x.shape[2:])) if attrs.get("channels_last", 0) else x.shape[1:3][::-1]
    return [x.shape[0], channels, (w.shape[2] - 1) * max(int(attrs.get("dilation", 1)), 1) + length], 4


RULES: dict[str, Callable[[Sequence[Any], dict[str, Any]], tuple[list[int], int] | None]] = {
    "CausalConvWithState": _causal_conv,
    "CDist": _cdist, "CropAndResize": _crop_and_resize, "TransposeMatMul": _fused_matmul,
    "MoE": _experts, "QMoE": _experts,
    "FusedConv": _conv_rule(1, None), "FusedGemm": _gemm, "FusedMatMul": _fused_matmul,
    "MultiHeadAttention": _multi_head_attention, "GroupQueryAttention": _group_query_attention,
    "QAttention": _quantized_attention, "DynamicQuantizeLSTM": _quantized_lstm,
}
