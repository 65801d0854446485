"""Which nodes may run as one host step: the producer/consumer index and the fusion matcher.

``GraphIndex`` (shared with the gpu plugin's pattern recognition) knows each value's producer, its
reading nodes (implicit subgraph reads included) and the graph outputs. ``find_fusions`` groups
nodes the engine runs as one step:

- ``matmul_bias``: a MatMul whose output only a bias Add reads (the Add's other input a 1-D weight);
- ``matmul_group``: MatMuls that read one activation through weights of one shape, each with its
  bias Add (a ``matmul_bias`` pair) or each without (attention's Q, K and V projections, an MLP's
  gate and up ones), one batched product over their weights where
  ``hal.graph.passes.stack_sibling_weights`` laid those out as one array;
- ``region``: elementwise nodes joined through values each read by exactly one node of the group
  (the exported erf/tanh GELU, Div/Mul scale + mask Add/Where), optionally ending in the Softmax
  that alone reads the region's result;
- ``matmul_epilogue``: a ``matmul_bias`` pair and the region (without a Softmax) that alone reads
  the sum (a transformer MLP's first projection and its GELU), the region as the product's epilogue;
- ``attention_core``: a MatMul whose product only a Softmax region reads, as its chain's head (an
  attention's scores, scaled and masked), and the MatMul that alone reads the Softmax's result as
  its first operand (the probabilities times V): one step from Q and K to the heads' outputs;
- ``relu_pool``: a Relu whose output only a MaxPool reads (a CNN's stem, VGG's blocks), the pool
  run first and the Relu on its smaller result: max commutes with max(., 0), and every window of
  such a pool (no dilation, no ceil mode, pads within the kernel) holds an element of the image;
- ``norm_relu``: an inference BatchNormalization whose output only a Relu reads (DenseNet's
  pre-activation before each conv), one pass over the tensor instead of three;
- ``add_relu``: an Add, or a Sum of two, whose output only a Relu reads (ResNet's residual joins),
  one pass instead of two;
- ``add_layer_norm``: an Add and a LayerNormalization of its sum whose scale and bias are there
  before the Add runs (a transformer's residual join and the next LayerNormalization: onnxruntime's
  SkipLayerNormalization), one pass over each row; the sum stays a result of the step, for its
  other readers, and the step runs at the Add's place;
- ``projection_norm``: a ``matmul_bias`` pair whose sum only the Add of an ``add_layer_norm`` reads
  (a block's output projection, the residual join and the next block's LayerNormalization), as one
  step at the Add's place.

Every other value inside a group has exactly one reading node, is not a graph output and is not
read by a subgraph, so computing the group as one step changes no other step's inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from hal.graph.ir import Graph, Node

#: elementwise ops a region may hold: each kernel returns a fresh array of the broadcast shape,
#: computed position by position (so blocks of the flattened operands give the same elements)
REGION_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Erf", "Tanh", "Where", "Sqrt", "Exp", "Neg", "Relu",
                        "Sigmoid", "Abs", "Reciprocal"})


class GraphIndex:
    """Producers, consumers and graph outputs of a graph, by value name (implicit subgraph reads count)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        self.graph_inputs = {i.name for i in graph.inputs}
        self.reads: list[list[str]] = graph.reads()
        self.position: dict[int, int] = {id(n): i for i, n in enumerate(graph.nodes)}
        for i, n in enumerate(graph.nodes):
            for o in n.outputs:
                if o:
                    self.producer[o] = i
        for i, reads in enumerate(self.reads):
            for x in reads:  # a subgraph's own names are not values of this graph
                if x and (x in self.producer or x in graph.initializers or x in self.graph_inputs):
                    self.consumers.setdefault(x, []).append(i)
        self.graph_outputs = {o.name for o in graph.outputs}

    def sole_consumer(self, value: str) -> int | None:
        """The one node reading ``value`` (once), or None: several readers, none, or a graph output."""
        c = self.consumers.get(value, [])
        if len(c) != 1 or value in self.graph_outputs:
            return None
        return c[0]

    def is_weight(self, value: str) -> bool:
        return value in self.graph.initializers

    def activations(self, node: Node) -> list[str]:
        return [x for x in node.inputs if x and x not in self.graph.initializers]


@dataclass
class Fusion:
    """Nodes (indices into the list given to ``find_fusions``, in order) that run as one step."""

    #: "matmul_bias" | "matmul_group" | "region" | "matmul_epilogue" | "relu_pool" | "norm_relu" | "add_relu"
    #: | "add_layer_norm" | "attention_core" | "projection_norm" | "quantize_dequantize"
    kind: str
    members: list[int]
    inputs: list[str] = field(default_factory=list)   # the step's inputs, in call order
    #: region: per member, each input as an index into ``inputs`` (>= 0) or ~k for member k's result;
    #: matmul_epilogue: the region's members' (0 the pair's sum, i >= 1 the step's input i + 2);
    #: attention_core: the region's members' (0 the scores, i >= 1 the step's input i + 1)
    refs: list[tuple[int, ...]] = field(default_factory=list)
    softmax: int | None = None    # region: the Softmax member reading the result, if any
    bias_first: bool = False      # matmul_bias, matmul_epilogue, projection_norm: the Add reads the bias first
    product_first: bool = False   # projection_norm: the residual Add reads the projection first
    #: matmul_group: per MatMul, in node order, (its index, its bias Add's index or -1)
    pairs: list[tuple[int, int]] = field(default_factory=list)

    @property
    def at(self) -> int:
        """The member whose place the step takes: a group's outputs are read from its first
        MatMul's (or that one's Add) on, so it runs at its first MatMul, and an Add's sum from the
        Add on, so ``add_layer_norm`` runs at the Add (``projection_norm`` at its residual Add);
        any other group at its last member."""
        if self.kind == "projection_norm":
            return self.members[2]
        return self.members[0] if self.kind in ("matmul_group", "add_layer_norm") else self.members[-1]


def _has_body(v: object) -> bool:
    return isinstance(v, onnx.GraphProto) or (isinstance(v, list) and bool(v) and isinstance(v[0], onnx.GraphProto))


def _plain(node: Node) -> bool:
    """A default-domain node with one output and no subgraph attribute."""
    return (node.domain in ("", "ai.onnx") and len(node.outputs) == 1 and bool(node.outputs[0])
            and not any(_has_body(v) for v in node.attrs.values()))


def find_fusions(graph: Graph, nodes: Sequence[Node], ix: GraphIndex | None = None) -> list[Fusion]:
    """The groups of ``nodes`` to run as single steps (see the module docstring)."""
    ix = ix or GraphIndex(graph)
    where = {id(n): k for k, n in enumerate(nodes)}
    gpos = ix.position

    def sole_reader(value: str) -> int | None:
        """The position in ``nodes`` of the one node reading ``value``, if it is in ``nodes``."""
        c = ix.sole_consumer(value)
        return None if c is None else where.get(id(graph.nodes[c]))

    def producer(value: str) -> int | None:
        """The position in ``nodes`` of the node computing ``value``, if it is in ``nodes``."""
        p = ix.producer.get(value)
        return None if p is None else where.get(id(graph.nodes[p]))

    used: set[int] = set()
    out: list[Fusion] = []
    for k, n in enumerate(nodes):
        if n.op_type != "MatMul" or not _plain(n) or id(n) not in gpos or len(n.inputs) != 2:
            continue
        a = sole_reader(n.outputs[0])
        if a is None or a <= k:
            continue
        add = nodes[a]
        if add.op_type != "Add" or not _plain(add) or len(add.inputs) != 2 or add.inputs.count(n.outputs[0]) != 1:
            continue
        bias = add.inputs[1] if add.inputs[0] == n.outputs[0] else add.inputs[0]
        w = graph.initializers.get(bias)
        if not isinstance(w, np.ndarray) or w.ndim != 1 or bias in ix.graph_inputs:
            continue
        used |= {k, a}
        out.append(Fusion("matmul_bias", [k, a], [*n.inputs, bias], bias_first=add.inputs[0] == bias))
    alone = [Fusion("matmul", [k], list(n.inputs)) for k, n in enumerate(nodes)
             if n.op_type == "MatMul" and k not in used and _plain(n) and id(n) in gpos and len(n.inputs) == 2]
    out = _sibling_groups(graph, ix, out, alone)
    used.update(k for f in out if f.kind == "matmul_group" for k in f.members)

    # an Add and its Relu that would make a region of their own: one compiled pass instead
    for k, n in enumerate(nodes):
        if (n.op_type not in ("Add", "Sum") or k in used or not _plain(n) or len(n.inputs) != 2 or n.attrs
                or not all(n.inputs) or id(n) not in gpos):
            continue
        r = sole_reader(n.outputs[0])
        if r is None or r <= k or r in used or nodes[r].op_type != "Relu" or not _plain(nodes[r]):
            continue
        after = sole_reader(nodes[r].outputs[0])
        feeders = [p for x in n.inputs if sole_reader(x) == k and (p := producer(x)) is not None]
        if any(nodes[p].op_type in REGION_OPS and p not in used and _plain(nodes[p]) for p in feeders) or (
                after is not None and nodes[after].op_type in (*REGION_OPS, "Softmax")):
            continue  # (a larger region takes them)
        used |= {k, r}
        out.append(Fusion("add_relu", [k, r], list(n.inputs)))

    # regions: union elementwise nodes along single-reader edges
    parent = list(range(len(nodes)))

    def find(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    elem = [k for k, n in enumerate(nodes) if k not in used and n.op_type in REGION_OPS and _plain(n)
            and id(n) in gpos]
    is_elem = set(elem)
    for k in elem:
        c = sole_reader(nodes[k].outputs[0])
        if c is not None and c in is_elem and c > k:
            parent[find(k)] = find(c)
    groups: dict[int, list[int]] = {}
    for k in elem:
        groups.setdefault(find(k), []).append(k)
    for members in groups.values():
        members.sort()
        root = members[-1]
        s = sole_reader(nodes[root].outputs[0])
        soft = None
        if s is not None and s > root and s not in used and nodes[s].op_type == "Softmax" and _plain(nodes[s]) \
                and len(nodes[s].inputs) == 1:
            soft = s
        if len(members) < 2 and soft is None:
            continue
        inside = {nodes[m].outputs[0]: j for j, m in enumerate(members)}
        slot: dict[str, int] = {}  # the region's inputs, in order of first use (dict: linear in region size)
        refs: list[tuple[int, ...]] = []
        for j, m in enumerate(members):
            refs.append(tuple(~inside[x] if x in inside and inside[x] < j else slot.setdefault(x, len(slot))
                              for x in nodes[m].inputs))
        out.append(Fusion("region", members + ([soft] if soft is not None else []), list(slot), refs, soft))
        used.update(members)
    out = _epilogues(graph, ix, nodes, out)
    out = _attention_cores(graph, ix, nodes, where, out, used)
    for k, n in enumerate(nodes):
        if n.op_type != "Relu" or k in used or not _plain(n) or len(n.inputs) != 1 or id(n) not in gpos:
            continue
        p = sole_reader(n.outputs[0])
        if p is not None and p > k and p not in used and _pool_after_relu(nodes[p]):
            used |= {k, p}
            out.append(Fusion("relu_pool", [k, p], [n.inputs[0]]))
    for k, n in enumerate(nodes):
        if (n.op_type != "BatchNormalization" or k in used or not _plain(n) or len(n.inputs) != 5
                or n.attrs.get("training_mode", 0) or id(n) not in gpos):
            continue
        r = sole_reader(n.outputs[0])
        if r is not None and r > k and r not in used and nodes[r].op_type == "Relu" and _plain(nodes[r]):
            used |= {k, r}
            out.append(Fusion("norm_relu", [k, r], list(n.inputs)))
    out = _projections_into_norms(ix, nodes, where, out, _norms_after_adds(graph, ix, nodes, where, used))
    for k, n in enumerate(nodes):  # an explicitly quantized model's QuantizeLinear and DequantizeLinear pairs
        r = sole_reader(n.outputs[0]) if n.op_type == "QuantizeLinear" and _plain(n) and id(n) in gpos else None
        if r is not None and r > k and _dequantizes(n, nodes[r]):
            out.append(Fusion("quantize_dequantize", [k, r], list(n.inputs)))
    out.sort(key=lambda f: f.members[-1])
    return out


def _dequantizes(q: Node, dq: Node) -> bool:
    """Whether ``dq`` dequantizes ``q``'s codes with ``q``'s own scale, zero point and axis (and no
    other attribute of either: block sizes, output types, saturation and precision stay apart)."""
    return (dq.op_type == "DequantizeLinear" and _plain(dq) and dq.inputs[0] == q.outputs[0]
            and dq.inputs[1:] == q.inputs[1:] and 2 <= len(q.inputs) <= 3 and set(q.attrs) <= {"axis"}
            and set(dq.attrs) <= {"axis"} and q.attrs.get("axis", 1) == dq.attrs.get("axis", 1))


def _projections_into_norms(ix: GraphIndex, nodes: Sequence[Node], where: dict[int, int], fusions: list[Fusion],
                            norms: list[Fusion]) -> list[Fusion]:
    """``fusions`` and ``norms`` (``add_layer_norm``), with each ``matmul_bias`` pair whose sum only
    a norm's Add reads joined to that norm as one ``projection_norm``."""
    pairs = {nodes[f.members[1]].outputs[0]: f for f in fusions if f.kind == "matmul_bias"}
    joined: set[int] = set()
    out = []
    for f in norms:
        add = nodes[f.members[0]]
        for pos, x in enumerate(add.inputs):
            pair = pairs.get(x)
            c = ix.sole_consumer(x)
            if pair is None or id(pair) in joined or c is None or where.get(id(ix.graph.nodes[c])) != f.members[0]:
                continue
            joined.add(id(pair))
            # inputs: the pair's (a, W, bias), the residual's other operand, the norm's scale (and bias)
            f = Fusion("projection_norm", [*pair.members, *f.members],
                       [*pair.inputs, add.inputs[1 - pos], *f.inputs[2:]], bias_first=pair.bias_first,
                       product_first=pos == 0)
            break
        out.append(f)
    return [f for f in fusions if id(f) not in joined] + out


def _norms_after_adds(graph: Graph, ix: GraphIndex, nodes: Sequence[Node], where: dict[int, int], used: set[int]
                      ) -> list[Fusion]:
    """``add_layer_norm`` fusions among ``nodes`` (``where``: a node's position there, by id) not
    ``used`` by another group, which it marks used: an Add of two values and the first
    LayerNormalization (one output) that normalises its sum, whose scale and bias are weights, feeds
    or results of nodes before the Add, so the step can run at the Add's place."""
    out = []
    for k, n in enumerate(nodes):
        if (n.op_type != "Add" or k in used or not _plain(n) or len(n.inputs) != 2 or not all(n.inputs)
                or id(n) not in ix.position):
            continue
        at = ix.position[id(n)]
        for c in ix.consumers.get(n.outputs[0], []):
            norm = graph.nodes[c]
            j = where.get(id(norm))
            if (j is None or j <= k or j in used or norm.op_type != "LayerNormalization" or not _plain(norm)
                    or len(norm.inputs) not in (2, 3) or norm.inputs[0] != n.outputs[0]):
                continue
            if all(not x or (x != n.outputs[0] and ix.producer.get(x, -1) < at) for x in norm.inputs[1:]):
                used |= {k, j}
                out.append(Fusion("add_layer_norm", [k, j], [*n.inputs, *norm.inputs[1:]]))
                break
    return out


def _sibling_groups(graph: Graph, ix: GraphIndex, pairs: list[Fusion], alone: list[Fusion]) -> list[Fusion]:
    """``pairs`` (``matmul_bias`` fusions) with those that read one activation through weights of
    one shape and dtype, and biases likewise, as one ``matmul_group`` each; and the MatMuls of
    ``alone`` (stand-ins of one member, their inputs the MatMul's) that do so without a bias, the
    same way (attention's Q, K and V projections, with biases or without). A group's members, its
    step's inputs (the activation, the weights, then the biases, in node order) and per MatMul its
    index and its Add's (-1 for none). A weight or bias that two of them share keeps them apart
    (one array cannot be two consecutive matrices)."""
    groups: dict[tuple, list[Fusion]] = {}
    for f in pairs + alone:
        a, w = f.inputs[:2]
        wa = graph.initializers.get(w)
        if a in graph.initializers or not isinstance(wa, np.ndarray) or wa.ndim != 2 or w in ix.graph_inputs:
            continue
        ba = graph.initializers.get(f.inputs[2]) if len(f.inputs) == 3 else None
        bias = None if ba is None else (ba.shape, ba.dtype)
        groups.setdefault((a, wa.shape, wa.dtype, bias), []).append(f)
    grouped: set[int] = set()
    out: list[Fusion] = []
    for fs in groups.values():
        ws, bs = [f.inputs[1] for f in fs], [f.inputs[2] for f in fs if len(f.inputs) == 3]
        if len(fs) < 2 or len(set(ws)) < len(ws) or len(set(bs)) < len(bs):
            continue
        grouped.update(id(f) for f in fs)
        out.append(Fusion("matmul_group", sorted(k for f in fs for k in f.members), [fs[0].inputs[0], *ws, *bs],
                          pairs=[(f.members[0], f.members[1] if len(f.members) == 2 else -1) for f in fs]))
    return [f for f in pairs if id(f) not in grouped] + out


def _epilogues(graph: Graph, ix: GraphIndex, nodes: Sequence[Node], fusions: list[Fusion]) -> list[Fusion]:
    """``fusions`` with each ``matmul_bias`` pair whose sum only one Softmax-free region reads (all
    its readers members of that region, not a graph output) joined with that region as one
    ``matmul_epilogue``: the step's inputs are the pair's (a, b, bias) and then the region's others,
    and its ``refs`` the region's over the sum (0) and those (see ``Fusion.refs``)."""
    pairs = {nodes[f.members[1]].outputs[0]: f for f in fusions if f.kind == "matmul_bias"}
    if not pairs:
        return fusions
    joined: set[int] = set()
    out: list[Fusion] = []
    for f in fusions:
        if f.kind != "region" or f.softmax is not None:
            continue
        mine = {id(nodes[k]) for k in f.members}
        for x in f.inputs:
            p = pairs.get(x)
            if p is None or id(p) in joined or x in ix.graph_outputs or not all(
                    id(graph.nodes[c]) in mine for c in ix.consumers.get(x, ())):
                continue
            pos = f.inputs.index(x)
            others = [i for i in range(len(f.inputs)) if i != pos]
            renumber = {pos: 0, **{i: j + 1 for j, i in enumerate(others)}}
            refs = [tuple(renumber[r] if r >= 0 else r for r in refs) for refs in f.refs]
            joined.update((id(p), id(f)))
            out.append(Fusion("matmul_epilogue", p.members + f.members, p.inputs + [f.inputs[i] for i in others],
                              refs, bias_first=p.bias_first))
            break
    return [f for f in fusions if id(f) not in joined] + out


def _attention_cores(graph: Graph, ix: GraphIndex, nodes: Sequence[Node], where: dict[int, int],
                     fusions: list[Fusion], used: set[int]) -> list[Fusion]:
    """``fusions`` with each Softmax region whose first member alone reads a MatMul's product (its
    scores), and whose Softmax result a MatMul alone reads as its first operand, joined with both
    MatMuls (marked ``used``) as one ``attention_core``: the step's inputs are the first product's
    two, the region's others, then the second product's other operand (V); its ``refs`` the
    region's over the scores (0) and those. ``where``: a node's position in ``nodes``, by id."""
    joined: set[int] = set()
    out: list[Fusion] = []
    for f in fusions:
        if f.kind != "region" or f.softmax is None:
            continue
        first = nodes[f.members[0]]
        gfirst = ix.position[id(first)]
        # the scores: a MatMul's product that the region's first member alone reads, once
        k, scores = next(((j, x) for x in first.inputs if x and x not in ix.graph_outputs
                          and ix.consumers.get(x) == [gfirst] and (p := ix.producer.get(x)) is not None
                          and (j := where.get(id(graph.nodes[p]))) is not None and j not in used
                          and nodes[j].op_type == "MatMul"), (None, ""))
        probs = nodes[f.softmax].outputs[0]
        c = ix.sole_consumer(probs)
        r = where.get(id(graph.nodes[c])) if c is not None else None
        if k is None or r is None or r in used or r <= f.softmax:
            continue
        mm, mix = nodes[k], nodes[r]
        if (mix.op_type != "MatMul" or not _plain(mm) or not _plain(mix) or len(mm.inputs) != 2
                or len(mix.inputs) != 2 or mix.inputs[0] != probs or mix.inputs[1] == probs):
            continue
        pos = f.inputs.index(scores)
        others = [i for i in range(len(f.inputs)) if i != pos]
        renumber = {pos: 0, **{i: j + 1 for j, i in enumerate(others)}}
        refs = [tuple(renumber[x] if x >= 0 else x for x in refs) for refs in f.refs]
        used.update((k, r))
        joined.add(id(f))
        out.append(Fusion("attention_core", [k, *f.members, r], [*mm.inputs, *(f.inputs[i] for i in others),
                                                                 mix.inputs[1]], refs, f.softmax))
    return [f for f in fusions if id(f) not in joined] + out


def _pool_after_relu(node: Node) -> bool:
    """A MaxPool without Indices each of whose windows reads an element of the image
    (so none is all padding, whose -inf the Relu before it would not have seen): no dilation, no
    ceil mode, explicit pads no wider than the kernel less one, or SAME / VALID."""
    if node.op_type != "MaxPool" or not _plain(node) or len(node.inputs) != 1:
        return False
    a = node.attrs
    k = a.get("kernel_shape")
    if not k or any(v != 1 for v in a.get("dilations") or ()) or a.get("ceil_mode", 0) \
            or a.get("storage_order", 0):
        return False
    pads = a.get("pads") or [0] * (2 * len(k))
    if a.get("auto_pad", "NOTSET") == "NOTSET":
        return len(pads) == 2 * len(k) and all(0 <= p <= v - 1 for p, v in zip(pads, [*k, *k]))
    return a.get("auto_pad") in ("SAME_UPPER", "SAME_LOWER", "VALID")


__all__ = ["REGION_OPS", "Fusion", "GraphIndex", "find_fusions"]
