"""Tensor parallelism over the GPUs of one node, Megatron-style, derived from the graph.

A GEMM whose activation is whole on every device (replicated) and whose weight splits by output
columns is *column-parallel*: each device computes its slice and the result stays split. A GEMM
whose activation is already split reads its weight split by rows (*row-parallel*): each device
holds a partial sum, and an all-reduce over the links makes it whole again. Everything between
follows its inputs: attention over split heads stays split; norms over whole rows stay whole. For
a Llama layer this gives the textbook plan — QKV and gate/up column-parallel, o_proj and
down_proj row-parallel, two all-reduces per layer — without knowing it is a Llama.

Split outputs that the graph itself reads (a KV cache) stay on their devices; split outputs only
the caller reads (logits) are all-gathered.

Which device counts the plan can use
------------------------------------
The plan is worked out once per graph, as if every count divided everything (``TensorParallel``),
and each split is followed along the axis it splits: a column-parallel GEMM splits its N output
columns; a Reshape of that width into [heads, head_dim] narrows the split to the heads, a Reshape
of query heads into KV groups (GQA) to the KV heads, a Split of a fused QKV projection to each
part's columns; Transposes, elementwise ops, attention's own batched GEMMs and a KV-cache Concat
carry the split axis along (an op it does not know ends the following, not the split: its block
then keeps the widths met so far as its requirements). Every width and head count met on
the way is a *requirement*: a device count must divide it, or a device would hold part of a head
(whose attention it cannot compute alone) or a ragged slice of a weight.

The split values fall into *blocks* (connected runs of split work). A block closed by a
row-parallel GEMM — an attention or MLP block, the bulk of the weights — has no honest partial
form: a count that does not divide its requirements is refused (``blocking`` says why, ``counts``
which counts do), never planned with the block silently left whole, which would report N devices
while each one holds and computes nearly the whole model (and is charged N times the energy).
That is the rule Megatron-LM and vLLM apply (heads and KV heads divisible by the tensor-parallel
size). A block closed only by an all-gather of graph outputs — an LM head, a classifier — may stay
whole: when the count does not divide its width it is replicated, every device holding all of its
weight and computing all of it, which the memory, time and energy figures then count, and
``Sharding.replicated`` names it for the report (serving stacks pad the vocabulary instead; hal
does not change the model's shapes). A count under which nothing splits at all is refused too, in a
whole model; a partition that fallback cut off (``hal.partition`` in its metadata) runs whole on every
device instead, since the model's other partitions split over them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hal.graph.ir import Graph
from hal.numerics import is_float
from hal_gpu.fusion import Kernel
from hal_gpu.patterns import ELEMENTWISE_OPS, ROW_REDUCE_OPS

#: ops whose weight operand (input 1, 2-D) the plan may split
_SPLITTABLE = frozenset({"MatMul", "Gemm"})
#: ops that only reinterpret their input's elements in a new shape
_RESHAPES = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"})
#: ops that map each output element to the same-position (broadcast) input elements
_BROADCASTS = ELEMENTWISE_OPS | {"Expand", "Tile", "Dropout"}


@dataclass
class Sharding:
    """Which values and weights are split over ``devices``, and the collectives that costs."""

    devices: int
    split: set[str] = field(default_factory=set)              # values and weights split over devices
    split_nodes: set[int] = field(default_factory=set)        # nodes whose work is split
    allreduce: dict[int, float] = field(default_factory=dict)  # kernel id -> bytes reduced after it
    allgather: dict[str, float] = field(default_factory=dict)  # graph output -> bytes gathered at the end
    replicated: list[str] = field(default_factory=list)       # GEMMs the plan splits elsewhere, whole here

    def share(self, name: str) -> float:
        """The fraction of ``name`` (value or weight) one device holds."""
        return 1.0 / self.devices if name in self.split else 1.0


@dataclass(frozen=True)
class Requirement:
    """A width or head count the device count must divide, and where the plan meets it."""

    extent: int
    what: str   # "output columns", "input rows", "heads"
    node: str

    def describe(self) -> str:
        return f"the {self.extent} {self.what} of {self.node!r}"


@dataclass(frozen=True)
class _Track:
    """The split of a value: axis ``axis`` is [outer, extent, inner] and the extent is what splits."""

    axis: int
    outer: int
    extent: int


@dataclass
class _Block:
    nodes: set[int] = field(default_factory=set)
    values: set[str] = field(default_factory=set)
    requirements: list[Requirement] = field(default_factory=list)
    closed_by_allreduce: bool = False
    gemms: list[str] = field(default_factory=list)  # its column-parallel GEMMs, by node name


def _weight_dims(graph: Graph, node_op: str, w_name: str, attrs: dict) -> tuple[int, int] | None:
    """(K, N) of a GEMM weight, or None when it is not a 2-D weight."""
    w = graph.initializers.get(w_name)
    if w is None or len(w.shape) != 2:
        return None
    k, n = w.shape
    if node_op == "Gemm" and attrs.get("transB", 0):
        k, n = n, k
    return int(k), int(n)


def _static(graph: Graph, name: str) -> tuple[int, ...] | None:
    shape = graph.static_shape(name)
    if shape is None or any(d < 0 for d in shape):
        return None
    return tuple(shape)


def _ints(graph: Graph, name: str | None) -> list[int] | None:
    """The integers of a constant input (Slice axes, Reduce axes), None when not a constant."""
    w = graph.initializers.get(name) if name else None
    if not isinstance(w, np.ndarray) or w.dtype.kind not in "iu":
        return None
    return [int(v) for v in w.reshape(-1)]


def _reshaped(t: _Track, src: tuple[int, ...], dst: tuple[int, ...]) -> tuple[_Track, int | None] | None:
    """``t`` through a reshape ``src`` -> ``dst``: (the new track, a narrowed extent or None).

    The split covers the ``extent`` middle part of its axis. In the new shape it starts inside one
    axis: when it fits there it stays whole; when it spans that axis and inner ones (a width
    reshaped to [heads, head_dim]) it narrows to that axis's part, which is then what must split."""
    before = math.prod(src[:t.axis]) * t.outer
    lead = 1
    for j, size in enumerate(dst):
        upto = lead * size
        if upto > before and before % lead == 0 and upto % before == 0:
            room = upto // before
            if room % t.extent == 0:
                return _Track(j, before // lead, t.extent), None
            if t.extent % room == 0 and room > 1:
                return _Track(j, before // lead, room), room
            return None
        lead = upto
    return None


def _follow(graph: Graph, node, tracks: dict[str, _Track]
            ) -> tuple[_Track | list[_Track] | None, int | list[int] | None]:
    """The split axis of ``node``'s first output (of each output, a list, for a Split), from its split
    inputs: (track, the extent(s) the split narrowed to, if it did)."""
    op, out = node.op_type, node.outputs[0] if node.outputs else ""
    dst = _static(graph, out) if out else None
    held = [(pos, x, tracks[x]) for pos, x in enumerate(node.inputs) if x and x in tracks]
    if dst is None or not held:
        return None, None
    pos, x, t = held[0]
    src = _static(graph, x)
    if src is None:
        return None, None
    rank = len(src)
    if op in _RESHAPES:
        got = _reshaped(t, src, dst) if math.prod(src) == math.prod(dst) else None
        return (None, None) if got is None else got
    if op == "Transpose":
        perm = list(node.attrs.get("perm", range(rank - 1, -1, -1)))
        return (_Track(perm.index(t.axis), t.outer, t.extent) if len(perm) == rank else None), None
    if op == "MatMul":  # activation x activation (attention's Q·Kᵀ and P·V); the first split input decides
        if rank < 2 or (pos == 0 and t.axis == rank - 1) or (pos == 1 and t.axis == rank - 2):
            return None, None  # the contraction axis: each device would hold a partial sum
        axis = len(dst) - rank + t.axis
        return (_Track(axis, t.outer, t.extent) if 0 <= axis < len(dst) else None), None
    if op == "Split":  # a fused QKV projection's parts: each part split alike (its weight laid out per device)
        axis = int(node.attrs.get("axis", 0)) % rank
        shapes = [_static(graph, o) if o else None for o in node.outputs]
        if any(sh is None or len(sh) != rank for sh in shapes):
            return None, None
        if axis != t.axis:
            return [t] * len(shapes), None
        if t.outer != 1 or t.extent != src[axis]:
            return None, None
        parts = [_Track(axis, 1, sh[axis]) for sh in shapes]
        return parts, sorted({p.extent for p in parts})
    if op == "Concat":
        axis = int(node.attrs.get("axis", 0)) % rank
        return (t if axis != t.axis and len(dst) == rank else None), None
    if op == "Slice":
        if "starts" in node.attrs:  # Slice-1: axes and starts are attributes
            axes = list(node.attrs.get("axes", range(len(node.attrs["starts"]))))
        elif len(node.inputs) > 3 and node.inputs[3]:
            axes = _ints(graph, node.inputs[3])
        else:
            axes = list(range(len(_ints(graph, node.inputs[1]) or [0] * rank)))
        if axes is None or t.axis in [a % rank for a in axes] or len(dst) != rank:
            return None, None
        return t, None
    if op in ("Softmax", "LogSoftmax"):
        axis = int(node.attrs.get("axis", -1 if graph.opset() >= 13 else 1)) % rank
        hit = t.axis == axis if graph.opset() >= 13 else t.axis >= axis
        return (None if hit else t), None
    if op in ("LayerNormalization", "RMSNormalization"):
        return (None if t.axis >= int(node.attrs.get("axis", -1)) % rank else t), None
    if op in ROW_REDUCE_OPS:
        axes = node.attrs.get("axes")
        axes = list(axes) if axes is not None else _ints(graph, node.inputs[1]) if len(node.inputs) > 1 else None
        if not axes:
            return None, None
        axes = [a % rank for a in axes]
        if t.axis in axes:
            return None, None
        keep = int(node.attrs.get("keepdims", 1))
        return _Track(t.axis if keep else t.axis - sum(a < t.axis for a in axes), t.outer, t.extent), None
    if op in _BROADCASTS:
        axis = len(dst) - rank + t.axis
        ok = 0 <= axis < len(dst) and dst[axis] == src[t.axis]
        return (_Track(axis, t.outer, t.extent) if ok else None), None
    return None, None


class TensorParallel:
    """The tensor-parallel structure of one graph, for any device count (see the module docstring).

    A ``partition`` (one piece of a model that fallback cut, between nodes the host runs) runs on the
    devices the model was given whatever it holds: a count under which nothing in it splits (an
    elementwise tail, a Softmax with no GEMM) is usable, every device computing it whole, as a
    replicated LM head is. Refusing it would refuse the whole model, whose other partitions split."""

    def __init__(self, graph: Graph, partition: bool = False):
        self.graph = graph
        self.partition = partition
        inits = graph.initializers
        split: set[str] = set()
        self._nodes: set[int] = set()
        self._row: set[int] = set()
        self._column: set[int] = set()
        self._weights: dict[int, list[str]] = {}  # node -> the weights (and bias) it splits
        tracks: dict[str, _Track] = {}
        reqs: dict[int, list[Requirement]] = {}
        for idx, node in enumerate(graph.nodes):
            acts = [x for x in node.inputs if x and x not in inits]
            any_split = any(x in split for x in acts)
            outs = [o for o in node.outputs if o]
            if node.op_type in _SPLITTABLE and len(node.inputs) > 1 and node.inputs[1] in inits \
                    and node.inputs[0] not in inits:
                dims = _weight_dims(graph, node.op_type, node.inputs[1], node.attrs)
                if dims is not None:
                    k, n = dims
                    self._nodes.add(idx)
                    if not any_split:                              # column-parallel
                        self._column.add(idx)
                        ws = [node.inputs[1]]
                        if node.op_type == "Gemm" and len(node.inputs) > 2 and node.inputs[2] in inits:
                            ws.append(node.inputs[2])
                        self._weights[idx] = ws
                        split.update(outs)
                        reqs[idx] = [Requirement(n, "output columns", node.name)]
                        shape = _static(graph, outs[0]) if outs else None
                        if shape:
                            tracks[outs[0]] = _Track(len(shape) - 1, 1, n)
                    else:                                          # row-parallel: partial sums, then all-reduce
                        self._row.add(idx)
                        self._weights[idx] = [node.inputs[1]]
                        reqs[idx] = [Requirement(k, "input rows", node.name)]
                    continue
            if any_split:
                split.update(outs)
                self._nodes.add(idx)
                try:
                    t, narrowed = _follow(graph, node, tracks)
                except (ValueError, IndexError, TypeError, ZeroDivisionError):  # a malformed attribute:
                    t, narrowed = None, None                                  # the split is not followed
                for o, to in zip(node.outputs, t if isinstance(t, list) else [t], strict=False):
                    if o and to is not None:
                        tracks[o] = to
                for e in narrowed if isinstance(narrowed, list) else [] if narrowed is None else [narrowed]:
                    what = "columns of a part" if node.op_type == "Split" else "heads"
                    reqs.setdefault(idx, []).append(Requirement(e, what, node.name))
        self._consumers: dict[str, list[int]] = {}
        for idx, node in enumerate(graph.nodes):
            for x in node.inputs:
                if x:
                    self._consumers.setdefault(x, []).append(idx)
        self._state = set()  # per-device state (a KV cache) feeds only split work: it is split too
        for t in graph.inputs:
            cons = self._consumers.get(t.name, [])
            dt = t.dtype
            if cons and dt is not None and is_float(dt) and all(c in self._nodes for c in cons):
                self._state.add(t.name)
        self._split = split
        self.blocks = self._blocks(reqs)

    def _blocks(self, reqs: dict[int, list[Requirement]]) -> list[_Block]:
        """The split work in connected blocks: nodes joined by the split values between them."""
        graph = self.graph
        parent = {i: i for i in self._nodes}

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        producer = {o: i for i, n in enumerate(graph.nodes) for o in n.outputs if o}
        for idx in self._nodes:
            if idx in self._column:
                continue
            for x in graph.nodes[idx].inputs:
                p = producer.get(x)
                if x in self._split and p in parent and p not in self._row:
                    parent[find(idx)] = find(p)
        for name in self._state:
            cons = self._consumers[name]
            for c in cons[1:]:
                parent[find(c)] = find(cons[0])
        by_root: dict[int, _Block] = {}
        for idx in sorted(self._nodes):
            b = by_root.setdefault(find(idx), _Block())
            node = graph.nodes[idx]
            b.nodes.add(idx)
            b.values.update(self._weights.get(idx, []))
            if idx not in self._row:
                b.values.update(o for o in node.outputs if o)
            b.requirements.extend(reqs.get(idx, []))
            b.closed_by_allreduce |= idx in self._row
            if idx in self._column:
                b.gemms.append(node.name)
        for name in self._state:
            by_root[find(self._consumers[name][0])].values.add(name)
        return list(by_root.values())

    # -- which counts ----------------------------------------------------------------------------
    def blocking(self, devices: int) -> list[Requirement]:
        """The requirements of blocks that must split which ``devices`` does not divide."""
        return [r for b in self.blocks if b.closed_by_allreduce for r in b.requirements if r.extent % devices]

    def _splits(self, b: _Block, devices: int) -> bool:
        return all(r.extent % devices == 0 for r in b.requirements)

    def usable(self, devices: int) -> bool:
        """Whether tensor parallelism can use ``devices`` GPUs: every block that must split splits,
        and something does (in a ``partition``, nothing need)."""
        if devices <= 1:
            return True
        return not self.blocking(devices) and (self.partition or any(self._splits(b, devices) for b in self.blocks))

    def counts(self, up_to: int) -> list[int]:
        """The device counts from 1 to ``up_to`` that ``usable`` allows, smallest first."""
        return [d for d in range(1, up_to + 1) if self.usable(d)]

    def widths(self) -> list[int]:
        """The distinct requirements of the blocks that must split, largest first."""
        return sorted({r.extent for b in self.blocks if b.closed_by_allreduce for r in b.requirements},
                      reverse=True)

    # -- the plan ----------------------------------------------------------------------------------
    def plan(self, kernels: list[Kernel], devices: int, value_bytes: Callable[[str], float]) -> Sharding:
        """The plan over ``devices`` GPUs (trivial for one); ``devices`` must be ``usable``."""
        sh = Sharding(devices)
        if devices <= 1:
            return sh
        if not self.usable(devices):
            raise ValueError(f"tensor parallelism cannot use {devices} devices here")
        kernel_of = {i: k.id for k in kernels for i in k.nodes}
        for b in self.blocks:
            if not self._splits(b, devices):  # an output head that stays whole on every device
                sh.replicated.extend(b.gemms)
                continue
            sh.split.update(b.values)
            sh.split_nodes.update(b.nodes)
        graph = self.graph
        for idx, node in enumerate(graph.nodes):
            if idx in self._row and idx in sh.split_nodes:
                kid = kernel_of[idx]
                sh.allreduce[kid] = sh.allreduce.get(kid, 0.0) + sum(value_bytes(o) for o in node.outputs if o)
        for o in graph.outputs:
            if o.name in sh.split and not self._consumers.get(o.name):
                sh.allgather[o.name] = value_bytes(o.name)
        return sh


__all__ = ["Requirement", "Sharding", "TensorParallel"]
