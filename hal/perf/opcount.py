"""FLOPs and bytes of ONNX nodes from static shapes — the raw material of every cost model.

Counts are multiply-add = 2 FLOPs. Shapes come from shape inference; a dimension that is still
symbolic counts as 1 (callers bind dynamic dimensions before compiling for estimates).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from hal.graph.ir import Graph, Node
from hal.perf.bodies import body_flops, has_bodies

#: ops that only relabel memory on any target (no arithmetic, often no data movement)
VIEW_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Dropout", "Shape", "Size",
                      "Constant", "ConstantOfShape"})
#: elementwise / activation ops: ~1 FLOP per output element (transcendentals counted as a few)
_TRANSCENDENTAL = {"Exp": 4, "Log": 4, "Erf": 8, "Tanh": 6, "Sigmoid": 5, "Gelu": 10, "Softplus": 6,
                   "Sqrt": 2, "Pow": 8, "Sin": 6, "Cos": 6, "Reciprocal": 2, "Div": 2}


@dataclass(frozen=True)
class NodeCost:
    flops: float
    bytes_in: float   # activations read (weights excluded)
    bytes_weights: float
    bytes_out: float

    @property
    def bytes(self) -> float:
        return self.bytes_in + self.bytes_weights + self.bytes_out


def _numel(shape) -> int:
    if shape is None:
        return 0
    return math.prod(d if isinstance(d, int) and d >= 0 else 1 for d in shape)


def tensor_bytes(graph: Graph, name: str, itemsize: int | None = None) -> int:
    """Bytes of one tensor (weights or activations); unknown shapes count 0."""
    if not name:
        return 0
    w = graph.initializers.get(name)
    if w is not None:
        return int(w.size) * (itemsize or np.dtype(w.dtype).itemsize)
    info = graph.values.get(name)
    if info is None or info.shape is None:
        return 0
    dt = info.dtype
    return _numel(info.shape) * (itemsize or (dt.itemsize if dt is not None else 4))


def shape(graph: Graph, name: str) -> tuple[int, ...]:
    w = graph.initializers.get(name)
    if w is not None:
        return tuple(w.shape)
    info = graph.values.get(name)
    if info is None or info.shape is None:
        return ()
    return tuple(d if isinstance(d, int) and d >= 0 else 1 for d in info.shape)


#: onnxruntime's ops (domain com.microsoft; SimplifiedLayerNormalization, which it registers in the
#: ONNX domain) that do a standard op's work, by that op: the cost models read
#: them as it (``costed``). A fusion is the op it fuses (its activation rides along, as a GPU's
#: epilogue or the next unit's pass), a product of packed weights a MatMul whose weight bytes are
#: the packed ones, an activation or normalisation with a bias or skip added in onnx's own.
COSTED_AS: dict[str, str] = {
    "FusedConv": "Conv", "FusedGemm": "Gemm", "FusedMatMul": "MatMul", "MatMulNBits": "MatMul",
    "Gelu": "Gelu", "FastGelu": "Gelu", "BiasGelu": "Gelu", "QuickGelu": "Sigmoid", "BiasAdd": "Add",
    "SkipLayerNormalization": "LayerNormalization", "SkipSimplifiedLayerNormalization": "RMSNormalization",
    "SimplifiedLayerNormalization": "RMSNormalization", "EmbedLayerNormalization": "LayerNormalization",
    "RotaryEmbedding": "RotaryEmbedding", "GatherBlockQuantized": "Gather", "DynamicQuantizeLSTM": "LSTM",
    "QuantizeLinear": "QuantizeLinear", "DequantizeLinear": "DequantizeLinear",
    "QEmbedLayerNormalization": "LayerNormalization", "QLinearWhere": "Where", "MatMulInteger16": "MatMulInteger",
    "TransposeMatMul": "MatMul", "CDist": "MatMul", "MatMulBnb4": "MatMul",
    "MRotaryEmbedding": "RotaryEmbedding", "GatedRMSNorm": "RMSNormalization", "GatedAdd": "Add",
    "GroupNorm": "GroupNormalization", "SkipGroupNorm": "GroupNormalization", "BiasSplitGelu": "Gelu",
    "GemmFastGelu": "MatMul", "RelativePositionBias": "Gather", "NhwcConv": "Conv", "GatedRelativePositionBias": "Mul",
}
_MS = "com.microsoft"


def costed(node: Node) -> Node:
    """``node`` as the cost models read it: one of COSTED_AS as its standard op (same inputs, outputs
    and attributes; a FusedMatMul's transposes kept as ``_costed_from``), any other node as it is."""
    if node.domain != _MS and (node.domain or node.op_type != "SimplifiedLayerNormalization"):
        return node
    std = COSTED_AS.get(node.op_type)
    if std is None:
        return node
    return replace(node, op_type=std, domain="", attrs={**node.attrs, "_costed_from": node.op_type})


#: ops whose arithmetic is a matrix product: what a BLAS GEMM computes (Conv through im2col)
#: (QGemm, MatMulIntegerToFloat, DynamicQuantizeMatMul: onnxruntime's, domain com.microsoft)
PRODUCT_OPS = frozenset({"MatMul", "MatMulInteger", "QLinearMatMul", "Gemm", "QGemm", "Conv", "ConvInteger",
                         "QLinearConv", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"})


def reduced_length(a: Sequence[int], attrs: Mapping[str, Any]) -> int:
    """A matrix product's reduced length from its A: A's last axis; a FusedMatMul's (``costed``) as
    its transposes read A (transA: the axis before, or the first where transBatchA moved it)."""
    if not a:
        return 1
    if attrs.get("_costed_from") in ("FusedMatMul", "TransposeMatMul") and attrs.get("transA", 0):
        return a[0] if attrs.get("transBatchA", 0) and len(a) > 2 else a[-2] if len(a) >= 2 else a[-1]
    return a[-1]


def product_flops(op: str, inputs: Sequence[Sequence[int]], out_numel: int, attrs: Mapping[str, Any]) -> float:
    """FLOPs of one of PRODUCT_OPS from its inputs' shapes and its output's element count: each output
    element is a dot product over the reduced length (A's last axis, or a filter's C/group x taps).
    The same rule serves static shapes (``node_flops``) and a run's actual arrays (the benchmark's
    BLAS floor)."""
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        i = 3 if op == "QLinearConv" else 1
        w = inputs[i] if len(inputs) > i else ()
        return 2.0 * out_numel * (math.prod(w[1:]) if len(w) > 1 else 1)
    a = inputs[0] if inputs else ()
    k = reduced_length(a, attrs)
    if op in ("Gemm", "QGemm") and attrs.get("transA", 0) and len(a) == 2:
        k = a[0]
    return 2.0 * out_numel * k


#: ops whose kernels run a chain of matrix products on the matrix units (each target's compiler
#: lowers them as such): the recurrent ops, a product per step, and attention, two: opset 23's
#: Attention and onnxruntime's (``ATTENTION_OPS``)
SEQUENCE_OPS = frozenset({"RNN", "GRU", "LSTM", "Attention", "MultiHeadAttention", "GroupQueryAttention",
                          "QAttention"})
#: the attention ops, (domain, op type): their sizes come from ``attention_dims``
ATTENTION_OPS = frozenset({("", "Attention"), (_MS, "Attention"), (_MS, "QAttention"), (_MS, "MultiHeadAttention"),
                           (_MS, "GroupQueryAttention")})
#: onnxruntime's attention ops that project their input by packed Q, K, V weights first: the past's position
PACKED_ATTENTION_PAST = {"Attention": 4, "QAttention": 8}


def chained(node: Node) -> bool:
    """Whether ``node`` is one of SEQUENCE_OPS: onnx's recurrent ops (onnxruntime's quantized LSTM
    as ``costed``), or an attention op."""
    if (node.domain, node.op_type) in ATTENTION_OPS:
        return True
    node = costed(node)
    return not node.domain and node.op_type in SEQUENCE_OPS


#: gates of the recurrent ops, and FLOPs per gate element besides its products (the two biases,
#: the gate's activation) and per state element (LSTM's cell update, GRU's blend)
_RECURRENT_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_GATE_ELEMENT_FLOPS = 2 + 5
_STATE_ELEMENT_FLOPS = 4


@dataclass(frozen=True)
class RecurrentDims:
    directions: int
    steps: int       # time steps, each waiting for the last one's state
    batch: int
    input: int
    hidden: int
    gates: int


def recurrent_dims(node: Node, graph: Graph) -> RecurrentDims | None:
    """An RNN's, GRU's or LSTM's sizes from X (layout 0: steps first) and R; None where unknown.
    onnxruntime's DynamicQuantizeLSTM (``costed``) holds R transposed: (directions, hidden, 4 hidden)."""
    node = costed(node)
    if node.op_type not in _RECURRENT_GATES or len(node.inputs) < 3:
        return None
    x, r = shape(graph, node.inputs[0]), shape(graph, node.inputs[2])
    if len(x) != 3 or len(r) != 3:
        return None
    steps, batch = (x[1], x[0]) if node.attrs.get("layout", 0) else (x[0], x[1])
    hidden = r[1] if node.attrs.get("_costed_from") == "DynamicQuantizeLSTM" else r[-1]
    return RecurrentDims(r[0], steps, batch, x[2], hidden, _RECURRENT_GATES[node.op_type])


def recurrent_flops(node: Node, graph: Graph) -> float:
    """Each step of each direction multiplies the step's input by W and the state by R (gates x
    hidden columns each), then runs its gates elementwise."""
    d = recurrent_dims(node, graph)
    if d is None:
        return 0.0
    products = 2.0 * d.gates * d.hidden * (d.input + d.hidden)
    per_row = products + d.gates * d.hidden * _GATE_ELEMENT_FLOPS + d.hidden * _STATE_ELEMENT_FLOPS
    return float(d.directions * d.steps * d.batch) * per_row


@dataclass(frozen=True)
class AttentionDims:
    batch: int
    heads: int       # query heads (key and value heads may be fewer: grouped-query attention)
    queries: int
    keys: int        # the past the node is given included
    head: int        # Q's and K's head size
    value: int       # V's head size


def _input(graph: Graph, node: Node, i: int) -> tuple[int, ...]:
    return shape(graph, node.inputs[i]) if len(node.inputs) > i and node.inputs[i] else ()


def _packed_attention_dims(node: Node, graph: Graph) -> AttentionDims | None:
    """onnxruntime's Attention: input (B, S, hidden) projected by packed weights to Q, K and V
    (``qkv_hidden_sizes``, or three equal thirds), num_heads each, after a past (2, B, heads, P, head)."""
    x, w = _input(graph, node, 0), _input(graph, node, 1)
    past = _input(graph, node, PACKED_ATTENTION_PAST[node.op_type])
    heads = int(node.attrs.get("num_heads", 0))
    if len(x) != 3 or len(w) != 2 or heads < 1:
        return None
    sizes = list(node.attrs.get("qkv_hidden_sizes", [])) or [w[1] // 3] * 3
    if len(sizes) != 3 or any(d % heads for d in sizes):
        return None
    return AttentionDims(x[0], heads, x[1], x[1] + (past[3] if len(past) == 5 else 0), sizes[0] // heads,
                         sizes[2] // heads)


def _separate_attention_dims(node: Node, graph: Graph) -> AttentionDims | None:
    """onnxruntime's MultiHeadAttention and GroupQueryAttention: query (B, S, heads x head), key and
    value (B, L, kv heads x head) or, MultiHeadAttention's cache, (B, heads, L, head); a past
    (B, kv heads, P, head) before them. GroupQueryAttention's present (sized by a fed total length)
    gives its keys where known; a packed QKV query holds all three."""
    q, k, v = (_input(graph, node, i) for i in range(3))
    gqa = node.op_type == "GroupQueryAttention"
    past = _input(graph, node, 3 if gqa else 6)
    heads = int(node.attrs.get("num_heads", 0))
    kv_heads = int(node.attrs.get("kv_num_heads", heads)) if gqa else heads
    if len(q) != 3 or heads < 1 or kv_heads < 1:
        return None
    if not k:  # packed QKV (B, S, (heads + 2 kv heads) x head)
        if q[2] % (heads + 2 * kv_heads):
            return None
        head = value = q[2] // (heads + 2 * kv_heads)
        keys = q[1]
    elif len(k) == 3 and len(v) == 3:
        if q[2] % heads or v[2] % kv_heads:
            return None
        head, value, keys = q[2] // heads, v[2] // kv_heads, k[1]
    elif len(k) == 4 and len(v) == 4:
        return AttentionDims(q[0], heads, q[1], k[2], k[3], v[3])
    else:
        return None
    info = graph.values.get(node.outputs[1]) if gqa and len(node.outputs) > 1 and node.outputs[1] else None
    present = info.static_shape if info is not None else None
    if present is not None and len(present) == 4:
        return AttentionDims(q[0], heads, q[1], present[2], head, value)
    return AttentionDims(q[0], heads, q[1], keys + (past[2] if len(past) == 4 else 0), head, value)


def attention_dims(node: Node, graph: Graph) -> AttentionDims | None:
    """An attention op's sizes (``ATTENTION_OPS``); None where unknown. opset 23's Attention: 4-D
    inputs (batch, heads, sequence, head size) or 3-D ones (batch, sequence, heads x head size, with
    q_num_heads and kv_num_heads)."""
    if node.domain == _MS:
        if node.op_type in PACKED_ATTENTION_PAST:
            return _packed_attention_dims(node, graph)
        if node.op_type in ("MultiHeadAttention", "GroupQueryAttention"):
            return _separate_attention_dims(node, graph)
        return None
    q, k, v = (shape(graph, node.inputs[i]) for i in range(3))
    past = shape(graph, node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] else ()
    if len(q) == 3 and len(k) == 3 and len(v) == 3:
        heads, kv_heads = int(node.attrs.get("q_num_heads", 0)), int(node.attrs.get("kv_num_heads", 0))
        if heads < 1 or kv_heads < 1 or q[2] % heads or k[2] % kv_heads or v[2] % kv_heads:
            return None  # heads that do not divide the hidden sizes: the node cannot run
        batch, queries, head, keys, value = q[0], q[1], q[2] // heads, k[1], v[2] // kv_heads
    elif len(q) == 4 and len(k) == 4 and len(v) == 4:
        batch, heads, queries, head = q
        keys, value = k[2], v[3]
    else:
        return None
    return AttentionDims(batch, heads, queries, keys + (past[2] if len(past) == 4 else 0), head, value)


def attention_flops(node: Node, graph: Graph) -> float:
    """Q·Kᵀ and P·V over every head, the softmax between (as ``Softmax`` counts it), and one more
    FLOP a score where a mask or causality applies."""
    d = attention_dims(node, graph)
    if d is None:
        return 0.0
    scores = float(d.batch * d.heads * d.queries * d.keys)
    projection = 0.0
    if node.domain == _MS and node.op_type in PACKED_ATTENTION_PAST:  # the packed Q, K, V projection first
        x, w = _input(graph, node, 0), _input(graph, node, 1)
        projection = 2.0 * _numel(x) * (w[1] if len(w) == 2 else 0)
    return projection + scores * (2.0 * d.head + 2.0 * d.value + 5.0 + (1.0 if attention_masked(node) else 0.0))


def attention_masked(node: Node) -> bool:
    """Whether an attention op masks its scores: a mask input, or causal (opset 23's is_causal,
    onnxruntime's unidirectional; GroupQueryAttention always)."""
    if node.domain == _MS:
        mask = {"Attention": 3, "QAttention": 5, "MultiHeadAttention": 4}.get(node.op_type)
        return node.op_type == "GroupQueryAttention" or bool(node.attrs.get("unidirectional", 0)) or (
            mask is not None and len(node.inputs) > mask and bool(node.inputs[mask]))
    return (len(node.inputs) > 3 and bool(node.inputs[3])) or bool(node.attrs.get("is_causal", 0))


def attention_causal(node: Node) -> bool:
    """Whether query i (after the past) sees only the keys up to its own position."""
    if node.domain == _MS:
        return node.op_type == "GroupQueryAttention" or bool(node.attrs.get("unidirectional", 0))
    return bool(node.attrs.get("is_causal", 0))


#: onnxruntime's mixture-of-experts ops: their experts' products come from ``experts_flops``
EXPERT_OPS = frozenset({(_MS, "MoE"), (_MS, "QMoE")})


def experts_flops(node: Node, graph: Graph) -> float:
    """MoE / QMoE: each token runs k experts' FC1, FC2 (and FC3) products, an expert's weights
    (its share of each projection's, unpacked from QMoE's bytes) times 2 FLOPs a multiply-add."""
    x = shape(graph, node.inputs[0]) if node.inputs else ()
    tokens = _numel(x[:-1])
    quantized = node.op_type == "QMoE"
    projections = (2, 5, 8) if quantized else (2, 4, 6)  # fc1, fc2, fc3 weights
    bits = int(node.attrs.get("expert_weight_bits", 4))
    per_token = 0.0
    for j, i in enumerate(projections):
        w = shape(graph, node.inputs[i]) if i < len(node.inputs) and node.inputs[i] else ()
        if len(w) != 3 or w[0] < 1:
            continue
        unpack = 8 / int(node.attrs.get(f"fc{j + 1}_expert_weight_bits", bits) or bits) if quantized else 1
        per_token += _numel(w) / w[0] * unpack
    return 2.0 * tokens * max(1, int(node.attrs.get("k", 1))) * per_token


def linear_attention_flops(node: Node, graph: Graph) -> float:
    """LinearAttention (onnx's and onnxruntime's): each token and head reads its (key head x value
    head) state into its output and writes k^T v into it (2 FLOPs a multiply-add each); the delta
    rules also read k's row of the state, the gated ones decay it."""
    q, v = shape(graph, node.inputs[0]), shape(graph, node.inputs[2]) if len(node.inputs) > 2 else ()
    hq, hkv = int(node.attrs.get("q_num_heads", 0)), int(node.attrs.get("kv_num_heads", 0))
    if len(q) != 3 or len(v) != 3 or hq < 1 or hkv < 1:
        return 0.0
    rule = str(node.attrs.get("update_rule", "linear"))
    per = 4.0 + 2.0 * ("delta" in rule) + 1.0 * ("gated" in rule)
    return per * q[0] * q[1] * max(hq, hkv) * (q[2] // hq) * (v[2] // hkv)


def node_flops(node: Node, graph: Graph) -> float:
    if has_bodies(node):  # its own outputs, and its bodies' runs where the graph fixes them (hal.perf.bodies)
        own = _numel(shape(graph, node.outputs[0])) if node.outputs and node.outputs[0] else 0
        return float(own) + (body_flops(node, graph, node_flops) or 0.0)
    if node.op_type == "LinearAttention" and node.domain in ("", _MS):
        return linear_attention_flops(node, graph)
    if node.op_type == "CausalConvWithState" and node.domain == _MS and len(node.inputs) > 1:
        w = shape(graph, node.inputs[1])  # a depthwise window over the state and the input
        out = _numel(shape(graph, node.outputs[0])) if node.outputs and node.outputs[0] else 0
        return 2.0 * out * (w[-1] if w else 1)
    if (node.domain, node.op_type) in ATTENTION_OPS:
        return attention_flops(node, graph)
    if (node.domain, node.op_type) in EXPERT_OPS:
        return experts_flops(node, graph)
    node = costed(node)
    op = node.op_type
    out = _numel(shape(graph, node.outputs[0])) if node.outputs and node.outputs[0] else 0
    if op in PRODUCT_OPS:
        return product_flops(op, [shape(graph, i) for i in node.inputs], out, node.attrs)
    if op in _RECURRENT_GATES and not node.domain:
        return recurrent_flops(node, graph)
    if op == "ConvTranspose":
        x = shape(graph, node.inputs[0])
        w = shape(graph, node.inputs[1])
        return 2.0 * _numel(x) * (int(np.prod(w[1:])) if len(w) > 1 else 1)
    if op == "Einsum":
        return 2.0 * max(out, sum(_numel(shape(graph, i)) for i in node.inputs if i))
    if op in VIEW_OPS or op in ("Transpose", "Concat", "QLinearConcat", "Split", "Slice", "Gather", "Expand", "Tile",
                                 "Pad"):
        return 0.0
    if op in ("Softmax", "LogSoftmax", "QLinearSoftmax"):
        return 5.0 * out
    if op in ("LayerNormalization", "RMSNormalization", "BatchNormalization", "InstanceNormalization",
              "GroupNormalization"):
        return 8.0 * out
    if op.startswith("Reduce") or op in ("GlobalAveragePool", "QLinearGlobalAveragePool", "GlobalMaxPool", "ArgMax",
                                         "ArgMin"):
        return float(_numel(shape(graph, node.inputs[0])))
    if op in ("MaxPool", "AveragePool", "QLinearAveragePool", "LpPool"):
        ks = node.attrs.get("kernel_shape", [1])
        return float(out * int(np.prod(ks)))
    return float(out * _TRANSCENDENTAL.get(op, 1))


def node_cost(node: Node, graph: Graph, act_itemsize: int | None = None, weight_itemsize: int | None = None
              ) -> NodeCost:
    """FLOPs and bytes moved by one node, optionally at other storage sizes (precision policies)."""
    b_in = b_w = 0
    for i in node.inputs:
        if not i:
            continue
        if i in graph.initializers:
            b_w += tensor_bytes(graph, i, weight_itemsize)
        else:
            b_in += tensor_bytes(graph, i, act_itemsize)
    b_out = sum(tensor_bytes(graph, o, act_itemsize) for o in node.outputs if o)
    if node.op_type in VIEW_OPS:
        b_in = b_out = 0
    return NodeCost(node_flops(node, graph), float(b_in), float(b_w), float(b_out))
