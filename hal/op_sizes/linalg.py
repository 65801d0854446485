"""Size rules of the matrix products and the ops built on them: MatMul, Gemm, Einsum, the quantized
products, attention and the recurrent layers."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hal.op_sizes._read import broadcast, itemsize


def product_shape(a: Sequence[int], b: Sequence[int]) -> list[int] | None:
    """The shape of numpy's matmul of operands of shapes ``a`` and ``b`` (None for a scalar)."""
    if not a or not b:
        return None
    sa = list(a) if len(a) > 1 else [1, a[0]]
    sb = list(b) if len(b) > 1 else [b[0], 1]
    return [*broadcast([sa[:-2], sb[:-2]]), sa[-2], sb[-1]]


def _matmul(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    a, b = args[0], args[1]
    shape = product_shape(a.shape, b.shape)
    return None if shape is None else (shape, max(itemsize(a), itemsize(b), 4))


def _gemm(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    a, b = args[0], args[1]
    if a.ndim != 2 or b.ndim != 2:
        return None
    m = a.shape[1] if attrs.get("transA", 0) else a.shape[0]
    n = b.shape[0] if attrs.get("transB", 0) else b.shape[1]
    return [m, n], max(itemsize(a), itemsize(b))


def _einsum(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    eq = str(attrs.get("equation", "")).replace(" ", "")
    if "..." in eq or "->" not in eq:
        return None  # implicit outputs and ellipses: left to the kernel
    lhs, rhs = eq.split("->", 1)
    sizes: dict[str, int] = {}
    for term, x in zip(lhs.split(","), args):
        for letter, d in zip(term, getattr(x, "shape", ())):
            sizes[letter] = max(sizes.get(letter, 1), int(d))
    return [sizes.get(c, 1) for c in rhs], max(itemsize(x) for x in args if isinstance(x, np.ndarray))


def _matmul_wide(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """MatMulInteger's product, (…, M, N), computed as a float64 BLAS product (8 bytes an element)."""
    got = _matmul(args, attrs)
    return None if got is None else (got[0], 8)


def _qlinear_matmul(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """QLinearMatMul (a, its scale and zero point, b, ...): the float64 product of a and b."""
    return _matmul_wide([args[0], args[3]], attrs) if len(args) > 3 else None


def _attention(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """Attention's scores, (batch, q heads, q length, kv length): a few KB of Q and K with long
    sequences ask for it whole (2**17 tokens: 64 GiB), however small the output. onnxruntime's
    Attention (an op of the same name, its K its packed 2-D weights) attends its input's sequence
    after a 5-D past (2, batch, heads, past length, head size)."""
    q, k = args[0], args[1]
    past = args[4] if len(args) > 4 else None
    if q.ndim == 3 and k.ndim == 2:
        heads, q_len, kv_len = int(attrs.get("num_heads") or 1), q.shape[1], q.shape[1]
        if past is not None and getattr(past, "ndim", 0) == 5:
            kv_len += past.shape[3]
    elif q.ndim == 3 and k.ndim == 3:
        heads, q_len, kv_len = int(attrs.get("q_num_heads") or 1), q.shape[1], k.shape[1]
    elif q.ndim == 4 and k.ndim == 4:
        heads, q_len, kv_len = q.shape[1], q.shape[2], k.shape[2]
    else:
        return None
    if past is not None and getattr(past, "ndim", 0) == 4:
        kv_len += past.shape[2]
    wide = any(getattr(a, "dtype", None) == np.float64 for a in args[:3])
    return [q.shape[0], heads, q_len, kv_len], 8 if wide else 4


def _linear_attention(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """LinearAttention's state, (batch, kv heads, key head, value head), or its output, (batch, max(q,
    kv heads), length, value head), if more: one token of 32,768-wide heads (128 KB a tensor) makes a
    4 GiB state. onnx's op, and onnxruntime's, whose KV heads may outnumber the query and key heads."""
    q, v = args[0], args[2] if len(args) > 2 else None
    hq, hkv = int(attrs.get("q_num_heads") or 0), int(attrs.get("kv_num_heads") or 0)
    if hq <= 0 or hkv <= 0 or v is None or not q.ndim == v.ndim == 3:
        return None  # the kernel's error
    state = [q.shape[0], hkv, q.shape[2] // hq, v.shape[2] // hkv]
    out = [q.shape[0], max(hq, hkv), q.shape[1], v.shape[2] // hkv]
    wide = any(getattr(a, "dtype", None) == np.float64 for a in args[:4] if a is not None)
    return max(state, out, key=math.prod), 8 if wide else 4


def _recurrent(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """RNN, GRU and LSTM's Y, (seq, directions, batch, hidden_size): hidden_size is an attribute and
    the input's width may be 1, so Y can be any multiple of X."""
    x, w = args[0], args[1]
    hidden = attrs.get("hidden_size")
    if x.ndim != 3 or w.ndim != 3 or hidden is None:
        return None
    seq, batch = (x.shape[1], x.shape[0]) if attrs.get("layout", 0) else (x.shape[0], x.shape[1])
    return [seq, w.shape[0], batch, int(hidden)], max(itemsize(x), 4)


RULES: dict[str, Callable[[Sequence[Any], dict[str, Any]], tuple[list[int], int] | None]] = {
    "MatMul": _matmul, "Gemm": _gemm, "Einsum": _einsum, "MatMulInteger": _matmul_wide,
    "QLinearMatMul": _qlinear_matmul, "Attention": _attention, "FlexAttention": _attention,
    "LinearAttention": _linear_attention, "RNN": _recurrent, "GRU": _recurrent, "LSTM": _recurrent,
}
