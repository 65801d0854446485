"""A sequence that only carries a tensor's parts to reads at constant positions becomes the parts
themselves: SplitToSequence, read only by SequenceAt at constant indices, is a Split (and, for
``keepdims=0`` without ``split``, a Squeeze of each part read). torch's exporter writes this for a
``tensor.split`` (``dynamo=True, optimize=False``: GPT-2's q, k, v from its fused c_attn); the
values and bits are the same, and a target that schedules every tensor's size before it runs (the
LPU) then sees tensors of known shape where it saw a sequence, which it cannot lay out. Part of the
standard pipeline (``hal.graph.passes.optimize``), after constant folding, which makes the exporter's
index Constants weights.
"""

from __future__ import annotations

import numpy as np

from hal.graph.ir import Graph, Node, TensorInfo
from hal.graph.rewrite import Rewrite


def _index(graph: Graph, name: str) -> int | None:
    """A constant scalar integer input's value, or None."""
    w = graph.initializers.get(name)
    if not isinstance(w, np.ndarray) or w.size != 1 or w.dtype.kind not in "iu":
        return None
    return int(w.reshape(()))


def _sizes(graph: Graph, n: Node, dim: object) -> list[int] | None:
    """The parts' lengths along the axis: ``split``'s own when 1-D, chunks of a scalar ``split``
    (the last one shorter), ones without it; None when not known before the run."""
    split = n.inputs[1] if len(n.inputs) > 1 else ""
    w = graph.initializers.get(split) if split else None
    if split and (not isinstance(w, np.ndarray) or w.dtype.kind not in "iu" or w.ndim > 1):
        return None
    if w is not None and w.ndim == 1:
        sizes = [int(s) for s in w]
        return sizes if all(s >= 0 for s in sizes) and (not isinstance(dim, int) or sum(sizes) == dim) else None
    if not isinstance(dim, int) or dim < 0:
        return None
    chunk = int(w.reshape(())) if w is not None else 1
    if chunk <= 0:
        return None
    return [min(chunk, dim - start) for start in range(0, dim, chunk)]


def split_sequences(graph: Graph) -> Graph:
    """SplitToSequence read only by SequenceAt at constant, in-range indices as a Split (see the
    module text), in place."""
    if not any(n.op_type == "SplitToSequence" and not n.domain for n in graph.nodes):
        return graph
    rw = Rewrite(graph)
    opset = graph.opset()
    replaced: dict[int, list[Node]] = {}
    for n in graph.nodes:
        if n.op_type != "SplitToSequence" or n.domain or not n.inputs or len(n.outputs) != 1:
            continue
        seq, x = n.outputs[0], n.inputs[0]
        readers = rw.consumers.get(seq, [])
        info = graph.values.get(x)
        if seq in rw.pinned or not readers or info is None or info.shape is None:
            continue
        rank = len(info.shape)
        axis = int(n.attrs.get("axis", 0))
        if not -rank <= axis < rank:
            continue
        axis %= rank
        sizes = _sizes(graph, n, info.shape[axis])
        if not sizes:
            continue
        reads: list[tuple[Node, int]] = []
        for r in readers:
            at = r.op_type == "SequenceAt" and not r.domain and len(r.inputs) == 2
            i = _index(graph, r.inputs[1]) if at else None
            if i is None or not -len(sizes) <= i < len(sizes) or r.inputs[0] != seq:
                break
            reads.append((r, i % len(sizes)))
        else:
            replaced.update(_as_split(graph, rw, n, x, info, axis, sizes, reads, opset))
    Rewrite.splice(graph, replaced)
    return graph


def _as_split(graph: Graph, rw: Rewrite, n: Node, x: str, info: TensorInfo, axis: int, sizes: list[int],
              reads: list[tuple[Node, int]], opset: int) -> dict[int, list[Node]]:
    """The nodes replacing ``n`` (a Split, then any Squeezes) and its readers (an Identity for a
    second read of one part; nothing for the first, whose output the Split or Squeeze writes)."""
    squeeze = len(n.inputs) < 2 or not n.inputs[1]
    squeeze = squeeze and int(n.attrs.get("keepdims", 1)) == 0
    first: dict[int, str] = {}
    replaced: dict[int, list[Node]] = {}
    for r, i in reads:
        if i in first:
            replaced[id(r)] = [Node(rw.fresh(f"{r.name}_Identity"), "Identity", "", [first[i]], list(r.outputs))]
        else:
            first[i] = r.outputs[0]
            replaced[id(r)] = []
    parts, after = [], []
    for i, size in enumerate(sizes):
        part = first[i] if i in first and not squeeze else rw.fresh(f"{n.outputs[0]}_{i}")
        shape = (*info.shape[:axis], size, *info.shape[axis + 1:])
        graph.values[part] = TensorInfo(part, info.elem_type, shape)
        parts.append(part)
        if squeeze and i in first:
            out = first[i]
            graph.values[out] = TensorInfo(out, info.elem_type, (*info.shape[:axis], *info.shape[axis + 1:]))
            if opset >= 13:
                axes = rw.weight(graph, f"{n.name}_axes", np.array([axis], np.int64))
                after.append(Node(rw.fresh(f"{n.name}_Squeeze"), "Squeeze", "", [part, axes], [out]))
            else:
                after.append(Node(rw.fresh(f"{n.name}_Squeeze"), "Squeeze", "", [part], [out], {"axes": [axis]}))
    if opset >= 13:
        split = rw.weight(graph, f"{n.name}_split", np.array(sizes, np.int64))
        node = Node(n.name, "Split", "", [x, split], parts, {"axis": axis})
    else:
        node = Node(n.name, "Split", "", [x], parts, {"axis": axis, "split": sizes})
    replaced[id(n)] = [node, *after]
    graph.values.pop(n.outputs[0], None)
    return replaced
