"""Fused host steps: the groups ``hal.graph.fuse.find_fusions`` finds, each run as one step by the
kernels of ``hal.kernels.fused``, bit-identical to one reference kernel per node."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hal.engine.program import Program, Step, steps_for_nodes
from hal.graph.fuse import GraphIndex, find_fusions
from hal.graph.ir import Graph, Node
from hal.kernels import lookup


def _key(step: Step, node: Node, graph: Graph) -> tuple[str, str, int]:
    kdef = lookup(node.op_type, node.domain, graph.opset(node.domain))
    assert kdef is not None and kdef.fn is step.fn
    return (kdef.domain, node.op_type, kdef.since)


def fused_steps(graph: Graph, nodes: Iterable[Node], index: GraphIndex | None = None) -> list[Step]:
    """``steps_for_nodes`` with the groups ``hal.graph.fuse.find_fusions`` finds run as one step each
    (hal.kernels.fused): MatMul + bias Add, elementwise regions (GELU chains, attention scale and
    mask) and the Softmax after one. Results are bit-identical to the plain steps; a fused step's
    ``nodes`` names the nodes it runs and its label and op type join theirs with "+". A caller
    fusing many slices of one graph passes the graph's ``GraphIndex`` once (building it is O(graph))."""
    from hal.kernels.fused import MatMulBias, Region  # imports the kernel families: load them on first use

    nodes = list(nodes)
    plain = steps_for_nodes(graph, nodes)
    fused: dict[int, Step] = {}
    covered: set[int] = set()
    for f in find_fusions(graph, nodes, index):
        members = [nodes[k] for k in f.members]
        steps = [plain[k] for k in f.members]
        if any(s.context_opset is not None for s in steps):
            continue
        keys = [_key(s, n, graph) for s, n in zip(steps, members)]
        out = members[-1].outputs[0]
        label = "+".join(n.name for n in members)
        op = "+".join(n.op_type for n in members)
        if f.kind == "matmul_bias":
            fn: Any = MatMulBias(keys[0], keys[1], f.bias_first)
            step = Step(fn, list(f.inputs), [out], {}, label, op, None, tuple(n.name for n in members), "MatMul")
        else:
            n_elem = len(f.refs)
            fn = Region(keys[:n_elem], f.refs, [s.attrs for s in steps[:n_elem]], [n.op_type for n in members[:n_elem]],
                        [n.name for n in members[:n_elem]], keys[n_elem] if f.softmax is not None else None,
                        steps[-1].attrs if f.softmax is not None else None)
            step = Step(fn, list(f.inputs), [out], {}, label, op, None, tuple(n.name for n in members), "")
        fused[f.members[-1]] = step
        covered.update(f.members)
    return [fused[k] if k in fused else s for k, s in enumerate(plain) if k in fused or k not in covered]


def reference_program(graph: Graph, *, fuse: bool = False) -> Program:
    """The plain program: one reference kernel per node (``fuse``: with ``fused_steps``, the same results)."""
    return Program(graph, (fused_steps if fuse else steps_for_nodes)(graph, graph.nodes))
