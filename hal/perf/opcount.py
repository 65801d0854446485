"""FLOPs and bytes of ONNX nodes from static shapes — the raw material of every cost model.

Counts are multiply-add = 2 FLOPs. Shapes come from shape inference; a dimension that is still
symbolic counts as 1 (callers bind dynamic dimensions before compiling for estimates).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hal.graph.ir import Graph, Node

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


#: ops whose arithmetic is a matrix product: what a BLAS GEMM computes (Conv through im2col)
PRODUCT_OPS = frozenset({"MatMul", "MatMulInteger", "QLinearMatMul", "Gemm", "Conv", "ConvInteger", "QLinearConv"})


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
    k = a[-1] if a else 1
    if op == "Gemm" and attrs.get("transA", 0) and len(a) == 2:
        k = a[0]
    return 2.0 * out_numel * k


def node_flops(node: Node, graph: Graph) -> float:
    op = node.op_type
    out = _numel(shape(graph, node.outputs[0])) if node.outputs and node.outputs[0] else 0
    if op in PRODUCT_OPS:
        return product_flops(op, [shape(graph, i) for i in node.inputs], out, node.attrs)
    if op == "ConvTranspose":
        x = shape(graph, node.inputs[0])
        w = shape(graph, node.inputs[1])
        return 2.0 * _numel(x) * (int(np.prod(w[1:])) if len(w) > 1 else 1)
    if op == "Einsum":
        return 2.0 * max(out, sum(_numel(shape(graph, i)) for i in node.inputs if i))
    if op in VIEW_OPS or op in ("Transpose", "Concat", "Split", "Slice", "Gather", "Expand", "Tile", "Pad"):
        return 0.0
    if op in ("Softmax", "LogSoftmax"):
        return 5.0 * out
    if op in ("LayerNormalization", "RMSNormalization", "BatchNormalization", "InstanceNormalization",
              "GroupNormalization"):
        return 8.0 * out
    if op.startswith("Reduce") or op in ("GlobalAveragePool", "GlobalMaxPool", "ArgMax", "ArgMin"):
        return float(_numel(shape(graph, node.inputs[0])))
    if op in ("MaxPool", "AveragePool", "LpPool"):
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
