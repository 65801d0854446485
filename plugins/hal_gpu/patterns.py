"""What a GPU compiler recognises in a graph before it forms kernels.

Op classes (views, layout ops, GEMMs, row reductions, elementwise and index ops), the graph's
producer/consumer index (``hal.graph.fuse.GraphIndex``, shared with the host engine's fusion), the
scaled-dot-product attention pattern in its exported forms, and the KV-cache append.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hal.graph.fuse import GraphIndex
from hal.graph.ir import Graph, Node
from hal.perf.opcount import costed
from hal.perf.opcount import shape as static_shape

#: ops that relabel memory: no launch, no traffic
VIEW_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Dropout", "Constant",
                      "Shape", "Size"})
LAYOUT_OPS = frozenset({"Transpose"})
GEMM_OPS = frozenset({"MatMul", "Gemm", "QGemm", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
                      "QLinearMatMul", "Conv", "ConvTranspose",
                      "ConvInteger", "QLinearConv"})
ROW_REDUCE_OPS = frozenset({"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceL1",
                            "ReduceSumSquare", "ReduceLogSumExp", "ReduceProd"})
ROW_OPS = frozenset({"Softmax", "LogSoftmax", "LayerNormalization", "RMSNormalization"}) | ROW_REDUCE_OPS
#: one output element from the same-position elements of the (broadcast) inputs
ELEMENTWISE_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Neg", "Abs", "Sign", "Reciprocal", "Sqrt", "Exp", "Log",
    "Erf", "Tanh", "Sigmoid", "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "HardSigmoid",
    "HardSwish", "Softplus", "Softsign", "Mish", "Swish", "ThresholdedRelu", "Shrink", "Clip", "Floor",
    "Ceil", "Round", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh",
    "Atanh", "Cast", "CastLike", "Where", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
    "And", "Or", "Xor", "Not", "IsNaN", "IsInf", "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor",
    "BitwiseNot", "Sum", "Max", "Min", "Mean", "BatchNormalization", "QuantizeLinear", "DequantizeLinear",
    "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu",  # onnxruntime's, domain com.microsoft
})
#: data movement a fused elementwise loop does with index arithmetic
INDEX_OPS = frozenset({"Slice", "Concat", "QLinearConcat", "Expand", "Tile", "Gather", "Split", "Pad",
                       "ConstantOfShape", "Trilu", "GatherElements", "Range"})


@dataclass
class AttentionPattern:
    """A recognised scaled-dot-product attention: S = Q·Kᵀ, score ops, softmax, prob reshapes, P·V."""

    qk: int                      # node index of the Q·Kᵀ MatMul
    score_ops: list[int]         # scale / mask / reshape nodes between Q·Kᵀ and the softmax
    softmax: int
    prob_ops: list[int]          # reshapes between the softmax and P·V
    av: int                      # node index of the P·V MatMul
    q: str
    kt: str                      # Kᵀ as Q·Kᵀ reads it: [..., D, T]
    v: str
    out: str
    keys: int                    # T, the key length
    side_inputs: list[str]       # masks, scales, conditions the score ops read

    @property
    def core(self) -> list[int]:
        return [self.qk, *self.score_ops, self.softmax, *self.prob_ops, self.av]


# -- classification --------------------------------------------------------------------------

def _last_axis(axis: int, rank: int) -> bool:
    return rank > 0 and (axis == -1 or axis == rank - 1)


def _reduce_axes(node: Node, graph: Graph) -> list[int] | None:
    if "axes" in node.attrs:
        return list(node.attrs["axes"])
    if len(node.inputs) > 1 and node.inputs[1]:
        w = graph.initializers.get(node.inputs[1])
        if w is None or not hasattr(w, "tolist"):
            return None
        return [int(a) for a in w.reshape(-1).tolist()]
    return None


def op_class(node: Node, graph: Graph) -> str:
    """view | layout | gemm | row | elem | index | other (onnxruntime's ops as ``costed``)."""
    node = costed(node)
    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        return "other"
    if any(hasattr(v, "SerializeToString") or (isinstance(v, list) and v and hasattr(v[0], "SerializeToString"))
           for v in node.attrs.values()):
        return "other"  # control flow: runs its own body
    if op in VIEW_OPS:
        return "view"
    if op in LAYOUT_OPS:
        return "layout"
    if op in GEMM_OPS:
        return "gemm"
    if op in ELEMENTWISE_OPS:
        if op == "BatchNormalization" and len([o for o in node.outputs if o]) > 1:
            return "other"
        return "elem"
    if op in INDEX_OPS:
        return "index"
    if op in ROW_OPS:
        x = static_shape(graph, node.inputs[0]) if node.inputs else ()
        rank = len(x)
        if op in ROW_REDUCE_OPS:
            axes = _reduce_axes(node, graph)
            if axes is not None and len(axes) == 1 and _last_axis(axes[0], rank) \
                    and node.attrs.get("keepdims", 1) == 1:
                return "row"
            return "other"
        default_axis = -1 if op in ("LayerNormalization", "RMSNormalization") or graph.opset() >= 13 else 1
        if _last_axis(node.attrs.get("axis", default_axis), rank):
            return "row"
        return "other"
    return "other"


# -- pattern recognition ----------------------------------------------------------------------

#: the widest head a fused attention kernel takes: FlashAttention-2 and -3 refuse wider ones ("only
#: supports head dimensions up to 256"), and a library then runs the two products and the softmax as
#: kernels of their own (DaViT's channel attention contracts 3,136 tokens)
MAX_FUSED_HEAD_DIM = 256


def _attention_at(i: int, ix: GraphIndex) -> AttentionPattern | None:
    g = ix.graph
    qk = g.nodes[i]
    if qk.op_type != "MatMul" or any(ix.is_weight(x) for x in qk.inputs):
        return None
    s_shape, kt_shape = g.static_shape(qk.outputs[0]), g.static_shape(qk.inputs[1])
    if not s_shape or len(s_shape) < 2 or not kt_shape or len(kt_shape) < 2 or kt_shape[-2] > MAX_FUSED_HEAD_DIM:
        return None
    keys = s_shape[-1]
    if kt_shape[-1] != keys:
        return None
    cur, score_ops, side = qk.outputs[0], [], []
    while True:
        c = ix.sole_consumer(cur)
        if c is None:
            return None
        node = g.nodes[c]
        if node.op_type == "Softmax":
            rank = len(g.static_shape(cur) or ())
            axis = node.attrs.get("axis", -1 if g.opset() >= 13 else 1)
            if not _last_axis(axis, rank):
                return None
            softmax = c
            break
        if node.op_type in ("Mul", "Div", "Add", "Sub", "Where"):
            if node.inputs.count(cur) != 1 or len(node.outputs) != 1:
                return None
            for x in node.inputs:
                if x and x != cur:
                    xs = g.static_shape(x)
                    if xs is None or (xs and xs[-1] not in (1, keys)):
                        return None
                    side.append(x)
        elif node.op_type == "Reshape":
            ins, outs = g.static_shape(cur), g.static_shape(node.outputs[0])
            if not ins or not outs or ins[-1] != keys or outs[-1] != keys:
                return None
        else:
            return None
        score_ops.append(c)
        cur = node.outputs[0]
    cur, prob_ops = g.nodes[softmax].outputs[0], []
    while True:
        c = ix.sole_consumer(cur)
        if c is None:
            return None
        node = g.nodes[c]
        if node.op_type == "Reshape":
            outs = g.static_shape(node.outputs[0])
            if not outs or outs[-1] != keys:
                return None
            prob_ops.append(c)
            cur = node.outputs[0]
            continue
        if node.op_type == "MatMul" and node.inputs[0] == cur and node.inputs[1] != cur:
            v_shape = g.static_shape(node.inputs[1])
            if (not v_shape or len(v_shape) < 2 or v_shape[-2] != keys or v_shape[-1] > MAX_FUSED_HEAD_DIM
                    or g.static_shape(node.outputs[0]) is None):
                return None
            return AttentionPattern(i, score_ops, softmax, prob_ops, c, qk.inputs[0], qk.inputs[1],
                                    node.inputs[1], node.outputs[0], keys, list(dict.fromkeys(side)))
        return None


#: an additive score at or below this never survives the softmax (exp underflows to 0 in any float format)
MASKED_SCORE = -1e4


def score_mask(graph: Graph, p: AttentionPattern, q_rows: int) -> np.ndarray | None:
    """[q_rows, keys] bool: the scores that can survive ``p``'s constant masks (a causal triangle, a
    sliding window, padding), or None when it has none. A Where that puts a constant at or below
    ``MASKED_SCORE`` where a constant condition says so, and an Add of a constant mask with such
    values, both count; a tile any batch or head needs is computed for all of them."""
    def values(name: str) -> np.ndarray | None:  # a constant's values (a shape-only weight has none)
        v = graph.initializers.get(name)
        return v if isinstance(v, np.ndarray) else None

    allowed = None
    cur = graph.nodes[p.qk].outputs[0]
    for i in p.score_ops:
        n = graph.nodes[i]
        keep = None
        if n.op_type == "Where" and n.inputs[0] != cur:
            cond = values(n.inputs[0])
            fill = values(n.inputs[2] if n.inputs[1] == cur else n.inputs[1])
            if cond is not None and fill is not None and fill.size == 1 and float(fill.reshape(-1)[0]) <= MASKED_SCORE:
                keep = cond.astype(bool) if n.inputs[1] == cur else ~cond.astype(bool)
        elif n.op_type == "Add":
            m = values(n.inputs[1] if n.inputs[0] == cur else n.inputs[0])
            if m is not None and m.size > 1 and m.dtype.kind == "f":
                keep = m > MASKED_SCORE
        if keep is not None and keep.ndim >= 1:
            rows = keep.reshape(-1, *keep.shape[-2:]).any(axis=0) if keep.ndim >= 2 else keep[None, :]
            try:
                rows = np.broadcast_to(rows, (q_rows, p.keys))
            except ValueError:
                rows = None
            if rows is not None:
                allowed = rows if allowed is None else allowed & rows
        cur = n.outputs[0]
    return allowed


def find_attention(graph: Graph, ix: GraphIndex | None = None) -> list[AttentionPattern]:
    """Every scaled-dot-product attention in the graph, in its exported forms."""
    ix = ix or GraphIndex(graph)
    found, taken = [], set()
    for i, n in enumerate(graph.nodes):
        if n.op_type == "MatMul" and i not in taken:
            p = _attention_at(i, ix)
            if p is not None and not taken.intersection(p.core):
                found.append(p)
                taken.update(p.core)
    return found


def is_cache_append(node: Node, ix: GraphIndex) -> bool:
    """Concat(past, new) → present where past is a feed and present an output: a KV-cache append,
    which a GPU runtime does in place (the cache buffer is allocated with room for the new rows)."""
    return (node.op_type == "Concat" and len(node.inputs) >= 2 and node.inputs[0] in ix.graph_inputs
            and node.outputs[0] in ix.graph_outputs)
