"""An If whose condition is a weight (constant folding made it one: torch's TorchScript exporter
tests ``Size(Shape(x)) == 1`` of a tensor whose rank is static, as in every ``torch.hstack``) becomes
the nodes of the branch it takes. The values and bits are the same; a target that schedules every
tensor's size before it runs (the LPU) then sees the taken branch's ops, and what they read, as ops
of the graph (a sequence read inside the branch can then become the tensors it carries,
``hal.graph.sequences``). Part of the standard pipeline (``hal.graph.passes.optimize``), after
constant folding.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from hal.graph.ir import Graph, Node
from hal.graph.rewrite import Rewrite


def _condition(graph: Graph, n: Node) -> bool | None:
    w = graph.initializers.get(n.inputs[0]) if n.inputs else None
    if not isinstance(w, np.ndarray) or w.size != 1 or w.dtype != np.bool_:
        return None
    return bool(w.reshape(()))


#: rounds of ``taken_branches``: each inlines one level of nested Ifs of constant conditions
MAX_ROUNDS = 8


def taken_branches(graph: Graph) -> Graph:
    """Each If of a constant condition as its taken branch's nodes (see the module text), in place;
    an If the branch held is taken the next round."""
    for _ in range(MAX_ROUNDS):
        if not _take(graph):
            break
    return graph


def _take(graph: Graph) -> bool:
    if not any(n.op_type == "If" and not n.domain for n in graph.nodes):
        return False
    rw = Rewrite(graph)
    replaced: dict[int, list[Node]] = {}
    for n in graph.nodes:
        if n.op_type != "If" or n.domain:
            continue
        cond = _condition(graph, n)
        branch = n.attrs.get("then_branch" if cond else "else_branch") if cond is not None else None
        if isinstance(branch, onnx.GraphProto) and len(branch.output) == len(n.outputs):
            nodes = _inlined(graph, rw, n, branch)
            if nodes is not None:
                replaced[id(n)] = nodes
    Rewrite.splice(graph, replaced)
    return bool(replaced)


def _inlined(graph: Graph, rw: Rewrite, n: Node, branch: onnx.GraphProto) -> list[Node] | None:
    """The branch's nodes, its values under names free in the graph (nested bodies reading them
    renamed too), then an Identity onto each of the If's outputs; None for sparse weights."""
    if branch.sparse_initializer:
        return None
    names = {t.name: rw.weight(graph, t.name, numpy_helper.to_array(t).copy()) for t in branch.initializer}
    nodes = rw.body_nodes(graph, branch, names, n.name)
    for out, vi in zip(n.outputs, branch.output):
        if out:
            nodes.append(Node(rw.fresh(f"{n.name}/{out}"), "Identity", "", [names.get(vi.name, vi.name)], [out]))
    return nodes
