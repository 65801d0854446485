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
import onnx
from onnx import numpy_helper

from hal.graph.ir import Graph, Node, TensorInfo
from hal.graph.rewrite import Rewrite


def _index(graph: Graph, name: str) -> int | None:
    """A constant scalar integer input's value, or None."""
    w = graph.initializers.get(name)
    if not isinstance(w, np.ndarray) or w.size != 1 or w.dtype.kind not in "iu":
        return None
    return int(w.reshape(()))


#: the most parts a SplitToSequence may have to become a Split: a model's splits have a handful (GPT-2's
#: q, k, v), and a list of one size per part along a declared dimension of 2**63 - 1 never ended
MAX_PARTS = 4096


def _sizes(graph: Graph, n: Node, dim: object) -> list[int] | None:
    """The parts' lengths along the axis: ``split``'s own when 1-D, chunks of a scalar ``split``
    (the last one shorter), ones without it; None when not known before the run or more than
    ``MAX_PARTS``."""
    split = n.inputs[1] if len(n.inputs) > 1 else ""
    w = graph.initializers.get(split) if split else None
    if split and (not isinstance(w, np.ndarray) or w.dtype.kind not in "iu" or w.ndim > 1):
        return None
    if w is not None and w.ndim == 1:
        if w.size > MAX_PARTS:
            return None
        sizes = [int(s) for s in w]
        return sizes if all(s >= 0 for s in sizes) and (not isinstance(dim, int) or sum(sizes) == dim) else None
    if not isinstance(dim, int) or dim < 0:
        return None
    chunk = int(w.reshape(())) if w is not None else 1
    if chunk <= 0 or -(-dim // chunk) > MAX_PARTS:
        return None
    return [min(chunk, dim - start) for start in range(0, dim, chunk)]


def _split_parts(graph: Graph, n: Node) -> tuple[TensorInfo, int, list[int]] | None:
    """(its input's info, the axis counted from the front, the parts' sizes) of a SplitToSequence
    whose sizes are known before the run; else None."""
    if n.op_type != "SplitToSequence" or n.domain or not n.inputs or len(n.outputs) != 1:
        return None
    info = graph.values.get(n.inputs[0])
    if info is None or info.shape is None:
        return None
    rank, axis = len(info.shape), int(n.attrs.get("axis", 0))
    if not -rank <= axis < rank:
        return None
    sizes = _sizes(graph, n, info.shape[axis % rank])
    return (info, axis % rank, sizes) if sizes else None


def split_sequences(graph: Graph) -> Graph:
    """SplitToSequence read only by SequenceAt at constant, in-range indices as a Split (see the
    module text), in place."""
    if not any(n.op_type == "SplitToSequence" and not n.domain for n in graph.nodes):
        return graph
    rw = Rewrite(graph)
    opset = graph.opset()
    replaced: dict[int, list[Node]] = {}
    for n in graph.nodes:
        split = _split_parts(graph, n)
        seq = n.outputs[0] if split else ""
        readers = rw.consumers.get(seq, [])
        if not split or seq in rw.pinned or not readers:
            continue
        info, axis, sizes = split
        x = n.inputs[0]
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
    first: dict[int, str] = {}
    replaced: dict[int, list[Node]] = {}
    for r, i in reads:
        if i in first:
            replaced[id(r)] = [Node(rw.fresh(f"{r.name}_Identity"), "Identity", "", [first[i]], list(r.outputs))]
        else:
            first[i] = r.outputs[0]
            replaced[id(r)] = []
    replaced[id(n)] = _split_nodes(graph, rw, n, x, info, axis, sizes, first, opset)
    graph.values.pop(n.outputs[0], None)
    return replaced


def _split_nodes(graph: Graph, rw: Rewrite, n: Node, x: str, info: TensorInfo, axis: int, sizes: list[int],
                 named: dict[int, str], opset: int) -> list[Node]:
    """SplitToSequence ``n``'s parts as a Split (then, for ``keepdims=0`` without ``split``, a Squeeze
    of each part read), part i written under ``named[i]`` where given."""
    squeeze = len(n.inputs) < 2 or not n.inputs[1]
    squeeze = squeeze and int(n.attrs.get("keepdims", 1)) == 0
    parts, after = [], []
    for i, size in enumerate(sizes):
        part = named[i] if i in named and not squeeze else rw.fresh(f"{n.outputs[0]}_{i}")
        shape = (*info.shape[:axis], size, *info.shape[axis + 1:])
        graph.values[part] = TensorInfo(part, info.elem_type, shape)
        parts.append(part)
        if squeeze and i in named:
            out = named[i]
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
    return [node, *after]


# --- sequences built from tensors -------------------------------------------------------------------

#: rounds of ``constructed_sequences``: each unrolls one level of SequenceMap over a built sequence
MAX_ROUNDS = 8


def constructed_sequences(graph: Graph) -> Graph:
    """Reads of a sequence whose elements are known tensors become reads of those tensors, in place.
    A sequence's elements are known when it is built by SequenceConstruct or SequenceEmpty, then
    changed by SequenceInsert and SequenceErase at constant positions; a SplitToSequence of sizes known
    before the run becomes a Split and the SequenceConstruct of its parts. SequenceAt at a constant index
    reads that element, ConcatFromSequence is a Concat (of each element unsqueezed, for
    ``new_axis=1``), SequenceLength is the count, and a SequenceMap over such sequences is its body
    once per element, whose outputs are sequences built again (the next round reads those); the
    SequenceLength of a SplitToSequence whose sizes are known is their count. The
    sequence ops nothing reads any more are left for ``remove_dead_nodes``; a sequence a graph output
    or a body reads stays. torch's exporters write this for ``torch.hstack``, ``vstack`` and
    ``dstack``; the values and bits are the same."""
    for _ in range(MAX_ROUNDS):
        if not _read_elements(graph):
            break
    return graph


def _elements(graph: Graph) -> dict[str, list[str]]:
    """The tensors each sequence of known elements holds, in order."""
    known: dict[str, list[str]] = {}
    for n in graph.nodes:
        if n.domain or len(n.outputs) != 1:
            continue
        op, ins = n.op_type, n.inputs
        if op == "SequenceConstruct" and ins:
            known[n.outputs[0]] = list(ins)
        elif op == "SequenceEmpty":
            known[n.outputs[0]] = []
        elif op in ("SequenceInsert", "SequenceErase") and ins and ins[0] in known:
            parts = list(known[ins[0]])
            given = len(ins) > (2 if op == "SequenceInsert" else 1) and ins[-1]
            at = _index(graph, ins[-1]) if given else (len(parts) if op == "SequenceInsert" else -1)
            if op == "SequenceInsert" and at is not None and -len(parts) <= at <= len(parts):
                parts.insert(at + len(parts) if at < 0 else at, ins[1])
            elif op == "SequenceErase" and at is not None and -len(parts) <= at < len(parts):
                del parts[at]
            else:
                continue  # a position out of range: the run's error to report
            known[n.outputs[0]] = parts
    return known


def _splits_built(graph: Graph, rw: Rewrite) -> bool:
    """Each SplitToSequence whose sizes are known before the run, and that no graph output or body
    reads, as a Split (and Squeezes) of its parts and a SequenceConstruct of them, in place."""
    replaced: dict[int, list[Node]] = {}
    opset = graph.opset()
    for n in graph.nodes:
        split = _split_parts(graph, n)
        if split and n.outputs[0] not in rw.pinned:
            info, axis, sizes = split
            named = {i: rw.fresh(f"{n.outputs[0]}_part{i}") for i in range(len(sizes))}
            replaced[id(n)] = [*_split_nodes(graph, rw, n, n.inputs[0], info, axis, sizes, named, opset),
                               Node(rw.fresh(f"{n.name}_parts"), "SequenceConstruct", "", list(named.values()),
                                    [n.outputs[0]])]
    Rewrite.splice(graph, replaced)
    return bool(replaced)


def _split_counts(graph: Graph) -> dict[str, int]:
    """How many parts each SplitToSequence makes whose sizes are known before the run (one a graph
    output reads: the others are Splits by now; sizes fed at run time must still be checked against
    the input, by the split itself)."""
    return {n.outputs[0]: len(split[2]) for n in graph.nodes if (split := _split_parts(graph, n))}


def _read_elements(graph: Graph) -> bool:
    if not any(n.op_type in ("SequenceConstruct", "SequenceEmpty", "SplitToSequence") and not n.domain
               for n in graph.nodes):
        return False
    rw = Rewrite(graph)
    if _splits_built(graph, rw):
        return True  # the next round reads the sequences they build
    known = _elements(graph)
    counted = _split_counts(graph)
    replaced: dict[int, list[Node]] = {}
    opset = graph.opset()
    for r in graph.nodes:
        if r.domain or not r.inputs:
            continue
        if r.op_type == "SequenceLength" and r.inputs[0] in counted:
            count = rw.weight(graph, f"{r.name}_count", np.array(counted[r.inputs[0]], np.int64))
            replaced[id(r)] = [Node(r.name, "Identity", "", [count], list(r.outputs))]
            continue
        if r.inputs[0] not in known:
            continue
        parts = known[r.inputs[0]]
        if r.op_type == "SequenceAt" and len(r.inputs) == 2:
            i = _index(graph, r.inputs[1])
            if i is not None and -len(parts) <= i < len(parts):
                replaced[id(r)] = [Node(r.name, "Identity", "", [parts[i]], list(r.outputs))]
        elif r.op_type == "SequenceLength":
            count = rw.weight(graph, f"{r.name}_count", np.array(len(parts), np.int64))
            replaced[id(r)] = [Node(r.name, "Identity", "", [count], list(r.outputs))]
        elif r.op_type == "ConcatFromSequence" and parts:
            replaced[id(r)] = _as_concat(graph, rw, r, parts, opset)
        elif r.op_type == "SequenceMap" and (seqs := _map_inputs(graph, r, known)) is not None:
            replaced[id(r)] = _unrolled(graph, rw, r, seqs, known)
    Rewrite.splice(graph, replaced)
    return bool(replaced)


def _map_inputs(graph: Graph, r: Node, known: dict[str, list[str]]) -> list[str | None] | None:
    """For each input of SequenceMap ``r``: the sequence's name, or None for a tensor handed to every
    turn; None when its body cannot be copied, a sequence's elements are not known, or the lengths
    differ or are 0 (the run's to handle)."""
    body = r.attrs.get("body")
    if not isinstance(body, onnx.GraphProto) or body.sparse_initializer:
        return None
    out: list[str | None] = []
    for i in r.inputs:
        info = graph.values.get(i)
        if i in known:
            out.append(i)
        elif info is not None and info.kind == "tensor":
            out.append(None)
        else:
            return None
    lengths = {len(known[s]) for s in out if s is not None}
    return out if out and out[0] is not None and len(lengths) == 1 and 0 not in lengths else None


def _as_concat(graph: Graph, rw: Rewrite, r: Node, parts: list[str], opset: int) -> list[Node]:
    axis = int(r.attrs.get("axis", 0))
    if not int(r.attrs.get("new_axis", 0)):
        return [Node(r.name, "Concat", "", list(parts), list(r.outputs), {"axis": axis})]
    nodes, stacked = [], []
    axes = rw.weight(graph, f"{r.name}_axes", np.array([axis], np.int64)) if opset >= 13 else None
    for p in parts:
        out = rw.fresh(f"{p}_unsqueezed")
        info = graph.values.get(p)
        if info is not None:
            graph.values[out] = TensorInfo(out, info.elem_type, None)
        nodes.append(Node(rw.fresh(f"{r.name}_Unsqueeze"), "Unsqueeze", "", [p, axes], [out]) if axes else
                     Node(rw.fresh(f"{r.name}_Unsqueeze"), "Unsqueeze", "", [p], [out], {"axes": [axis]}))
        stacked.append(out)
    return [*nodes, Node(r.name, "Concat", "", stacked, list(r.outputs), {"axis": axis})]


def _unrolled(graph: Graph, rw: Rewrite, r: Node, seqs: list[str | None], known: dict[str, list[str]]) -> list[Node]:
    """SequenceMap ``r`` as its body once per element (its values renamed per turn), then a
    SequenceConstruct of each output's turns."""
    body: onnx.GraphProto = r.attrs["body"]
    count = len(known[seqs[0]])  # type: ignore[index]
    nodes: list[Node] = []
    turns: list[list[str]] = [[] for _ in body.output]
    weights = {w.name: rw.weight(graph, w.name, numpy_helper.to_array(w).copy()) for w in body.initializer}
    for t in range(count):  # every turn reads the body's weights, once in the graph
        names = {vi.name: (known[s][t] if s is not None else outer)
                 for vi, s, outer in zip(body.input, seqs, r.inputs)}
        names.update(weights)
        nodes += rw.body_nodes(graph, body, names, r.name, f"_{t}")
        for k, vi in enumerate(body.output):
            turns[k].append(names.get(vi.name, vi.name))
    for out, parts in zip(r.outputs, turns):
        if out:
            nodes.append(Node(rw.fresh(f"{r.name}/{out}"), "SequenceConstruct", "", parts, [out]))
    return nodes
