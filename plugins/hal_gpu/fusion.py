"""Lowering a graph to GPU kernels: which nodes run together in one launch.

The passes, in the order a GPU graph compiler runs them:

1. pattern recognition — scaled-dot-product attention (MatMul → scale → mask → Softmax → MatMul in
   its exported forms) becomes one fused attention kernel; a row reduction takes its one-input
   prologue (x·x before ReduceMean in an RMSNorm); GEMMs that read the same activation with
   weights of the same depth become one wider GEMM (Q/K/V, gate/up); layout ops that only feed a
   GEMM or attention operand are folded into that operand's load;
2. greedy vertical fusion in topological order — views are free, elementwise chains fuse with each
   other and with their siblings, and into the epilogue of the GEMM/conv/norm that produced them
   when they keep its output shape;
3. a topological sort of the resulting kernels.

A node joins a kernel only when that keeps the kernel graph acyclic: each kernel carries the exact
set of kernels it depends on (a bitset), so the check is one AND.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from hal.graph.ir import Graph, Node
from hal.graph.quant import qdq_gemms
from hal.perf.opcount import shape as static_shape
from hal_gpu.patterns import (
    GEMM_OPS,
    ROW_REDUCE_OPS,
    AttentionPattern,
    GraphIndex,
    find_attention,
    is_cache_append,
    op_class,
)


@dataclass
class Kernel:
    """One unit of the lowered program: the nodes one GPU kernel runs, fused."""

    id: int
    kind: str                    # gemm | attention | row | elementwise | other | view
    nodes: list[int] = field(default_factory=list)
    anchor: int | None = None    # the node that sets the kernel's shape (the GEMM, the reduction)
    gemms: list[int] = field(default_factory=list)
    attention: AttentionPattern | None = None
    tile_values: set[str] = field(default_factory=set)
    sealed: bool = False         # a constant-derived table many kernels read: never absorbs consumers
    ancestors: int = 0           # bitset of every kernel this one depends on, transitively
    name: str = ""
    inputs: list[str] = field(default_factory=list)    # values read from outside (activations + weights)
    outputs: list[str] = field(default_factory=list)   # values other kernels or the caller read
    int8: set[int] = field(default_factory=set)        # its GEMMs that are int8 kernels (explicit Q/DQ)

    @property
    def launched(self) -> bool:
        return self.kind != "view"


# -- fusion -----------------------------------------------------------------------------------

def _numel(graph: Graph, name: str) -> int:
    n = 1
    for d in static_shape(graph, name):
        n *= d
    return n


class _Fuser:
    def __init__(self, graph: Graph):
        self.g = graph
        self.ix = GraphIndex(graph)
        self.kernels: list[Kernel] = []
        self.kernel_of_node: list[int] = [-1] * len(graph.nodes)
        self.kernel_of_value: dict[str, int] = {}
        self.children: list[set[int]] = []
        self.readers: dict[str, list[int]] = {}     # value -> kernels that read it (sibling fusion)
        self.label: dict[int, str] = {}
        self.label_kernel: dict[str, int] = {}
        self.label_kind: dict[str, str] = {}
        self.attention: dict[str, AttentionPattern] = {}
        self.classes = [op_class(n, graph) for n in graph.nodes]
        self.int8: set[int] = set()
        self._index = {id(n): i for i, n in enumerate(graph.nodes)}

    # pattern labels ------------------------------------------------------------------------
    def prelabel(self) -> None:
        g, ix = self.g, self.ix
        for p in find_attention(g, ix):
            lab = f"attention:{g.nodes[p.qk].name}"
            self.attention[lab] = p
            self.label_kind[lab] = "attention"
            for i in p.core:
                self.label[i] = lab
        self.int8 = qdq_gemms(g, ix, [i for i, c in enumerate(self.classes) if c == "gemm" and i not in self.label])
        # horizontal GEMMs: one wide GEMM for every MatMul group reading the same activation (int8
        # kernels apart from float ones)
        for value, cons in ix.consumers.items():
            if ix.is_weight(value):
                continue
            mms = [c for c in cons if c not in self.label and self._weight_matmul(c, value)]
            by_depth: dict[tuple, list[int]] = {}
            for c in mms:
                w = g.initializers[g.nodes[c].inputs[1]]
                by_depth.setdefault((w.shape[0], str(w.dtype), c in self.int8), []).append(c)
            for group in by_depth.values():
                if len(group) > 1:
                    lab = f"gemm:{g.nodes[group[0]].name}"
                    self.label_kind[lab] = "gemm"
                    for c in group:
                        self.label[c] = lab
        for i, n in enumerate(g.nodes):
            cls = self.classes[i]
            if cls == "gemm" and i not in self.label:
                lab = f"gemm:{n.name}"
                self.label[i] = lab
                self.label_kind[lab] = "gemm"
            elif cls == "row" and n.op_type in ROW_REDUCE_OPS and i not in self.label:
                # the reduction's one-input prologue (x·x of a mean square) runs in the row kernel
                p = ix.producer.get(n.inputs[0])
                if p is not None and p not in self.label and self.classes[p] == "elem" \
                        and ix.sole_consumer(n.inputs[0]) == i and len(set(ix.activations(g.nodes[p]))) == 1:
                    lab = f"row:{n.name}"
                    self.label_kind[lab] = "row"
                    self.label[p] = self.label[i] = lab
        # layout/view chains that only feed a GEMM or attention operand fold into its operand load
        for i, n in enumerate(g.nodes):
            lab = self.label.get(i)
            if lab is None or self.label_kind[lab] not in ("gemm", "attention"):
                continue
            operands = n.inputs[:2] if self.classes[i] == "gemm" else []
            if lab in self.attention:
                p = self.attention[lab]
                operands = {p.qk: [p.q, p.kt], p.av: [p.v]}.get(i, [])
            for x in operands:
                while x and not ix.is_weight(x):
                    prod = ix.producer.get(x)
                    if prod is None or prod in self.label or ix.sole_consumer(x) is None:
                        break
                    if self.classes[prod] not in ("view", "layout"):
                        if i in self.int8 and g.nodes[prod].op_type == "DequantizeLinear":
                            self.label[prod] = lab  # the int8 kernel reads the codes, and scales after
                        break
                    self.label[prod] = lab
                    act = ix.activations(g.nodes[prod])
                    x = act[0] if act else ""

    def _weight_matmul(self, i: int, value: str) -> bool:
        n = self.g.nodes[i]
        if n.op_type != "MatMul" or n.inputs[0] != value or n.inputs[1] == value:
            return False
        w = self.g.initializers.get(n.inputs[1])
        return w is not None and len(w.shape) == 2

    # kernels --------------------------------------------------------------------------------
    def _input_kernels(self, node: Node, exclude: int = -1) -> set[int]:
        out = set()
        for x in self.ix.reads[self._index[id(node)]]:
            k = self.kernel_of_value.get(x) if x else None
            if k is not None and k != exclude:
                out.add(k)
        return out

    def _deps(self, kernels: set[int]) -> int:
        bits = 0
        for k in kernels:
            bits |= self.kernels[k].ancestors | (1 << k)
        return bits

    def _new(self, i: int, kind: str) -> int:
        k = Kernel(len(self.kernels), kind)
        self.kernels.append(k)
        self.children.append(set())
        ins = self._input_kernels(self.g.nodes[i])
        k.ancestors = self._deps(ins)
        self._add(k.id, i, ins)
        return k.id

    def _acyclic(self, kid: int, node: Node) -> bool:
        return not (self._deps(self._input_kernels(node, exclude=kid)) >> kid) & 1

    def _join(self, kid: int, i: int) -> None:
        node = self.g.nodes[i]
        ins = self._input_kernels(node, exclude=kid)
        new = self._deps(ins) & ~self.kernels[kid].ancestors
        if new:
            self.kernels[kid].ancestors |= new
            todo, seen = list(self.children[kid]), {kid}
            while todo:  # whatever depends on this kernel now depends on its new inputs too
                k = todo.pop()
                if k in seen:
                    continue
                seen.add(k)
                if self.kernels[k].ancestors | new != self.kernels[k].ancestors:
                    self.kernels[k].ancestors |= new
                    todo.extend(self.children[k])
        self._add(kid, i, ins)

    def _add(self, kid: int, i: int, ins: set[int]) -> None:
        k, node = self.kernels[kid], self.g.nodes[i]
        k.nodes.append(i)
        self.kernel_of_node[i] = kid
        for src in ins:
            self.children[src].add(kid)
        for x in node.inputs:
            if x:
                readers = self.readers.setdefault(x, [])
                if not readers or readers[-1] != kid:
                    readers.append(kid)
        for o in node.outputs:
            if o:
                self.kernel_of_value[o] = kid
        cls = self.classes[i]
        if cls == "gemm":
            k.gemms.append(i)
            k.tile_values.update(o for o in node.outputs if o)
            if k.anchor is None or k.kind != "gemm":
                k.anchor = i
        elif cls in ("row", "other") and k.anchor is None:
            k.anchor = i
            k.tile_values.update(o for o in node.outputs if o)
        elif cls in ("elem", "view", "layout") and any(x in k.tile_values for x in node.inputs):
            k.tile_values.update(o for o in node.outputs if o)

    def _epilogue_ok(self, k: Kernel, i: int) -> bool:
        """Can elementwise node i run in the epilogue of GEMM/row/other kernel k (same output tile)?"""
        node, g = self.g.nodes[i], self.g
        if self.classes[i] == "index":
            # stores with an index remap: into a KV-cache slot, or into the Split's parts
            if k.kind == "gemm" and node.op_type == "Split":
                return node.inputs[0] in k.tile_values
            return is_cache_append(node, self.ix) and any(x in k.tile_values for x in node.inputs[1:])
        if self.classes[i] != "elem" or len([o for o in node.outputs if o]) != 1:
            return False
        out = _numel(g, node.outputs[0])
        if k.kind == "row":
            return out <= _numel(g, g.nodes[k.anchor].inputs[0]) if k.anchor is not None else False
        if not any(x in k.tile_values and _numel(g, x) == out for x in node.inputs if x):
            return False
        return all(_numel(g, x) <= out for x in node.inputs if x)

    def _place(self, i: int) -> None:
        node, cls, ix = self.g.nodes[i], self.classes[i], self.ix
        lab = self.label.get(i)
        if lab is not None:
            kid = self.label_kernel.get(lab)
            if kid is not None and self._acyclic(kid, node):
                self._join(kid, i)
                return
            if kid is None:
                kid = self._new(i, self.label_kind[lab])
                self.label_kernel[lab] = kid
                self.kernels[kid].name = lab
                self.kernels[kid].attention = self.attention.get(lab)
                return
            # a pattern member that cannot join (never expected): lose the pattern, keep correctness
            self.kernels[kid].attention = None
            self.kernels[kid].kind = "other" if self.kernels[kid].kind == "attention" else self.kernels[kid].kind
        acts = ix.activations(node)
        producers = [self.kernel_of_value[x] for x in acts if x in self.kernel_of_value]
        if cls in ("view", "layout"):
            for kid in producers:
                k = self.kernels[kid]
                # (a view's other operand, a Reshape's shape, may come from a kernel after this one)
                if not k.sealed and self._acyclic(kid, node):
                    self._join(kid, i)
                    if cls == "layout" and k.kind == "view":
                        k.kind = "elementwise"
                    return
            self._new(i, "view" if cls == "view" else "elementwise")
            return
        if cls in ("elem", "index"):
            # 1. a producing elementwise/row kernel
            for kid in reversed(producers):
                k = self.kernels[kid]
                if k.kind in ("elementwise", "view", "row") and not k.sealed \
                        and (k.kind != "row" or self._epilogue_ok(k, i)) and self._acyclic(kid, node):
                    self._join(kid, i)
                    if k.kind == "view":
                        k.kind = "elementwise"
                    return
            # 2. a sibling elementwise kernel reading one of the same values
            for x in acts:
                for kid in reversed(self.readers.get(x, [])[-8:]):
                    k = self.kernels[kid]
                    if k.kind == "elementwise" and not k.sealed and self._acyclic(kid, node):
                        self._join(kid, i)
                        return
            # 3. the epilogue of the GEMM / norm / op that produced its input
            for kid in reversed(producers):
                k = self.kernels[kid]
                if k.kind in ("gemm", "other", "row") and not k.sealed and self._epilogue_ok(k, i) \
                        and self._acyclic(kid, node):
                    self._join(kid, i)
                    return
            kid = self._new(i, "elementwise")
            outs = [o for o in node.outputs if o]
            if not acts and sum(len(ix.consumers.get(o, [])) for o in outs) > 1:
                self.kernels[kid].sealed = True  # a table of constants read by many: keep it apart
            return
        if cls == "row":
            for kid in reversed(producers):
                k = self.kernels[kid]
                if k.kind == "elementwise" and not k.sealed and self._acyclic(kid, node) and all(
                        ix.sole_consumer(x) == i for x in acts if self.kernel_of_value.get(x) == kid):
                    self._join(kid, i)
                    k.kind, k.anchor = "row", i
                    return
            self._new(i, "row")
            return
        self._new(i, "gemm" if cls == "gemm" else "other")

    def run(self) -> list[Kernel]:
        self.prelabel()
        for i in range(len(self.g.nodes)):
            self._place(i)
        return self._finish()

    def _finish(self) -> list[Kernel]:
        g, ix = self.g, self.ix
        # topological order of kernels, earliest first node first
        indeg = [0] * len(self.kernels)
        for k, ch in enumerate(self.children):
            for c in ch:
                if c != k:
                    indeg[c] += 1
        heap = [(k.nodes[0], k.id) for k in self.kernels if indeg[k.id] == 0]
        heapq.heapify(heap)
        order: list[Kernel] = []
        while heap:
            _, kid = heapq.heappop(heap)
            order.append(self.kernels[kid])
            for c in self.children[kid]:
                if c == kid:
                    continue
                indeg[c] -= 1
                if indeg[c] == 0:
                    heapq.heappush(heap, (self.kernels[c].nodes[0], c))
        if len(order) != len(self.kernels):  # every join checks _acyclic first: a cycle is a bug here
            raise RuntimeError("kernel graph has a cycle")
        for k in order:
            k.nodes.sort()
            members = set(k.nodes)
            produced = {o for i in k.nodes for o in g.nodes[i].outputs if o}
            ins, outs = [], []
            for i in k.nodes:
                for x in ix.reads[i]:
                    if x and x not in produced and x not in ins and (x in ix.producer or x in g.initializers
                                                                     or x in ix.graph_inputs):
                        ins.append(x)
                for o in g.nodes[i].outputs:
                    if o and (o in ix.graph_outputs or any(c not in members for c in ix.consumers.get(o, []))):
                        outs.append(o)
            k.inputs, k.outputs = ins, outs
            if k.kind == "gemm":
                k.int8 = {i for i in k.gemms if i in self.int8}
            if not k.name:
                anchor = k.anchor if k.anchor is not None else k.nodes[0]
                k.name = f"{k.kind}:{g.nodes[anchor].name}"
        return order


def plan_kernels(graph: Graph) -> list[Kernel]:
    """The graph as GPU kernels in launch order (view-only groups included, with ``launched`` False)."""
    return _Fuser(graph).run()


__all__ = ["GEMM_OPS", "AttentionPattern", "GraphIndex", "Kernel", "find_attention", "is_cache_append",
           "plan_kernels"]
