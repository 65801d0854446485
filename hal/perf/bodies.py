"""The work of the bodies a control-flow node runs, for the cost models (``node_flops``): an If's
larger branch, a Loop's body times its trip count, a Scan's body times the length of its scanned
axis; each body's FLOPs counted as the main graph's are, over the shapes onnx's inference gives its
values from the shapes the node feeds it (a Loop's carried values at their first shapes), bodies
within bodies the same way.

Counted only where the graph fixes it: a Loop's trip count from a weight or one hal.graph.loops
worked out (M turns: a condition that ends it sooner makes this an upper bound), a Scan's axis
from a static shape (Scan-8's batched form is not counted). A node whose bodies cannot be counted so (a trip
count the run decides, a body's inference failing, a generation op's decoder runs, whose number
max_length decides) is ``None`` here: ``hal estimate`` names it. Only FLOPs: the bodies' memory
traffic is not in the cost models' bytes. ``turns`` is how many times a Loop or Scan runs its body
(the wafer waits a wavefront a turn, each on the last one's carried values), ``body_node_runs`` how
many node runs its bodies make (a GPU launches a kernel for each).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import helper

from hal.graph.ir import Graph, Node, graph_reads

if TYPE_CHECKING:
    from collections.abc import Callable

#: per live graph (by id, with a weak reference to tell a reused id): each control-flow node's body
#: FLOPs, worked out once (a compile costs a node many times)
_CACHE: dict[int, tuple[weakref.ref, dict[str, float | None]]] = {}
#: the control-flow ops whose bodies are counted
CONTROL_FLOW = ("If", "Loop", "Scan")


def has_bodies(node: Node) -> bool:
    return any(isinstance(v, onnx.GraphProto) or (isinstance(v, list) and v and isinstance(v[0], onnx.GraphProto))
               for v in node.attrs.values())


def body_flops(node: Node, graph: Graph, flops: Callable[[Node, Graph], float]) -> float | None:
    """The FLOPs of the bodies ``node`` runs (0.0 for a node without any), counted with ``flops``
    (``node_flops``); None where they cannot be counted before the run (see the module text)."""
    if not has_bodies(node):
        return 0.0
    entry = _CACHE.get(id(graph))
    if entry is None or entry[0]() is not graph:
        key = id(graph)
        entry = _CACHE[key] = (weakref.ref(graph, lambda _, key=key: _CACHE.pop(key, None)), {})
    per_graph = entry[1]
    if node.name not in per_graph:
        try:
            per_graph[node.name] = _count(node, graph, flops)
        except Exception:  # inference or a shape the rules cannot read: not counted, and estimate says so
            per_graph[node.name] = None
    return per_graph[node.name]


def turns(node: Node, graph: Graph) -> int | None:
    """How many times a Loop or Scan runs its body, where the graph fixes it (1 for an If; None
    for a count the run decides or another node)."""
    if node.domain or node.op_type not in CONTROL_FLOW:
        return None
    if node.op_type == "If":
        return 1
    if node.op_type == "Loop":
        return _known_int(graph, node.inputs[0]) if node.inputs and node.inputs[0] else None
    n_scan = int(node.attrs.get("num_scan_inputs", 0))
    if not n_scan or graph.opset("") < 9:  # Scan-8's batched form: not counted
        return None
    if n_scan > len(node.inputs):  # a malformed node (the run says so): nothing to count
        return None
    axes = list(node.attrs.get("scan_input_axes", [0] * n_scan))
    _, dims = _info(graph, node.inputs[len(node.inputs) - n_scan])
    if not dims:  # unknown, or a scalar, which has no axis to scan
        return None
    length = dims[axes[0] % len(dims)] if axes else dims[0]
    return length if isinstance(length, int) else None


def body_node_runs(node: Node, graph: Graph) -> int:
    """How many node runs its bodies make, where the graph fixes them: a Loop's or Scan's body
    nodes times its turns, an If's larger branch's nodes; 0 otherwise (a GPU launches each one)."""
    count = turns(node, graph)
    if count is None:
        return 0
    if node.op_type == "If":
        return max(len(node.attrs[b].node) for b in ("then_branch", "else_branch"))
    return count * len(node.attrs["body"].node)


def _count(node: Node, graph: Graph, flops: Callable[[Node, Graph], float]) -> float | None:
    if node.domain or node.op_type not in CONTROL_FLOW:
        return None  # a generation op's decoder runs: as many as max_length, a run's value
    if node.op_type == "If":
        branches = [_graph_flops(node.attrs[b], [], graph, flops) for b in ("then_branch", "else_branch")]
        return None if None in branches else max(branches)
    body, count = node.attrs["body"], turns(node, graph)
    if count is None:
        return None
    if node.op_type == "Loop":
        feeds = [(onnx.TensorProto.INT64, []), (onnx.TensorProto.BOOL, []), *(_info(graph, i) for i in node.inputs[2:])]
    else:  # Scan (opset 9 on): its states, then each scanned input without its scanned axis
        n_scan = int(node.attrs.get("num_scan_inputs", 0))  # (at most its inputs: ``turns`` counted it)
        axes = list(node.attrs.get("scan_input_axes", [0] * n_scan))
        feeds = [_info(graph, i) for i in node.inputs[:len(node.inputs) - n_scan]]
        for name, axis in zip(node.inputs[len(node.inputs) - n_scan:], axes):
            kind, dims = _info(graph, name)
            axis %= len(dims)
            feeds.append((kind, dims[:axis] + dims[axis + 1:]))
    once = _graph_flops(body, feeds, graph, flops)
    return None if once is None else count * once


def _known_int(graph: Graph, name: str) -> int | None:
    w = graph.initializers.get(name)
    if w is None or not isinstance(w, np.ndarray) or w.size != 1:
        return None
    return max(int(w.reshape(-1)[0]), 0)


def _info(graph: Graph, name: str) -> tuple[int, list[Any] | None]:
    """An outer value's element type and dimensions (None unknown), as a body input takes it."""
    w = graph.initializers.get(name)
    if w is not None and hasattr(w, "dtype"):
        return helper.np_dtype_to_tensor_dtype(np.dtype(w.dtype)), list(w.shape)
    info = graph.values.get(name)
    if info is None or info.shape is None:
        return (info.elem_type if info is not None else 0), None
    return info.elem_type, [d if isinstance(d, int) else None for d in info.shape]


def _graph_flops(body: onnx.GraphProto, feeds: list[tuple[int, list[Any] | None]], outer: Graph,
                 flops: Callable[[Node, Graph], float]) -> float | None:
    """One run of ``body`` fed values of these (type, dims), the outer names it reads at their outer
    shapes: its nodes' FLOPs over the shapes onnx's inference gives them."""
    from hal.graph.load import from_proto

    g = onnx.GraphProto()
    g.CopyFrom(body)
    for vi, (kind, dims) in zip(g.input, feeds):
        vi.type.tensor_type.elem_type = kind or vi.type.tensor_type.elem_type
        if dims is not None:
            vi.type.tensor_type.ClearField("shape")
            vi.type.tensor_type.shape.SetInParent()
            for d in dims:
                vi.type.tensor_type.shape.dim.add(**({"dim_value": d} if isinstance(d, int) else {}))
    defined = {i.name for i in g.input} | {i.name for i in g.initializer} | {o for n in g.node for o in n.output}
    for name in sorted(graph_reads(body) - defined):
        kind, dims = _info(outer, name)
        if not kind:
            return None
        g.input.append(helper.make_tensor_value_info(name, kind, dims))
    del g.value_info[:]
    opsets = [helper.make_opsetid(d, v) for d, v in outer.opsets.items()]
    inner = from_proto(helper.make_model(g, opset_imports=opsets), where=f"body {body.name!r}", check=False)
    return float(sum(flops(n, inner) for n in inner.nodes))


__all__ = ["CONTROL_FLOW", "body_flops", "body_node_runs", "has_bodies", "turns"]
