"""SRAM allocation and the pipeline partition: which chip holds each node's weights and runs it.

Every weight and live activation must sit in some chip's SRAM (there is no DRAM). Nodes are packed
in program order onto chips (a pipeline); a node that does not fit what is left of the current chip
starts the next one — at the cheapest nearby cut, so that no large activation has to cross — and a
node larger than a whole chip is split along its weight's output columns (in 320-column groups, the
MXM block width) over this chip and the next ones: tensor-parallel shards that run at the same
time. Graph inputs (token ids, the KV cache) are resident on every chip that reads them; graph
outputs stay on the chip that makes them.
Afterwards a liveness walk per chip checks the real peak, and the packing is redone tighter if a
chip overflows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hal.errors import ResourceError
from hal.graph.ir import Graph, Node
from hal_lpu.cost import Machine
from hal_lpu.lowering import Lowered, Sizes


@dataclass(frozen=True)
class Shard:
    """A node's share on one chip: output columns [lo, hi) of ``total`` (0, 0, 0 when not split)."""

    chip: int
    lo: int = 0
    hi: int = 0
    total: int = 0

    @property
    def frac(self) -> float:
        return (self.hi - self.lo) / self.total if self.total else 1.0


@dataclass
class Placement:
    chips: int
    where: list[list[Shard]]        # per node: one Shard, or several when split over chips
    weights: list[int]              # weight bytes per chip
    resident: list[int]             # graph inputs / outputs held per chip
    sram: list[int]                 # weights + resident + peak live activations, per chip
    budget: int                     # packing budget per chip that was used


@dataclass
class _Chip:
    weights: set[str] = field(default_factory=set)
    resident: set[str] = field(default_factory=set)
    w: int = 0
    res: int = 0
    transient: int = 0
    empty: bool = True
    log: list[tuple[int, dict[str, int], dict[str, int], int, int]] = field(default_factory=list)


class _Packer:
    def __init__(self, graph: Graph, nodes: list[Node], lowered: list[Lowered], sizes: Sizes, budget: int,
                 column_group: int, capacity: int):
        self.graph, self.nodes, self.lowered, self.sizes = graph, nodes, lowered, sizes
        self.budget, self.group, self.capacity = budget, column_group, capacity
        self.inputs = {t.name for t in graph.inputs}
        self.outputs = {t.name for t in graph.outputs}
        self.chips = [_Chip()]

    def _weight_items(self, node: Node, low: Lowered) -> dict[str, int]:
        from hal_lpu.lowering import MXM_OPS

        items = {}
        for i in node.inputs:
            if self.sizes.is_weight(i) and i not in items:
                fmt = (self.sizes.policy.matmul_weights
                       if node.op_type in MXM_OPS and i == node.inputs[MXM_OPS[node.op_type]] else None)
                items[i] = self.sizes.nbytes(i, fmt)
        return items

    def _resident_items(self, node: Node) -> dict[str, int]:
        items = {i: self.sizes.nbytes(i) for i in node.inputs if i in self.inputs}
        items.update({o: self.sizes.nbytes(o) for o in node.outputs if o in self.outputs})
        return items

    def _transient(self, node: Node, low: Lowered) -> int:
        acts = sum(self.sizes.nbytes(i) for i in node.inputs
                   if i and not self.sizes.is_weight(i) and i not in self.inputs)
        return acts + sum(self.sizes.nbytes(o) for o in node.outputs if o and o not in self.outputs)

    def _new(self) -> _Chip:
        self.chips.append(_Chip())
        return self.chips[-1]

    def _fits(self, c: _Chip, weights: dict[str, int], resident: dict[str, int], transient: int) -> bool:
        w = sum(b for k, b in weights.items() if k not in c.weights)
        r = sum(b for k, b in resident.items() if k not in c.resident)
        return c.w + w + c.res + r + max(c.transient, transient) <= self.budget

    def _take(self, c: _Chip, idx: int, weights: dict[str, int], resident: dict[str, int], transient: int,
              split_bytes: int = 0) -> None:
        c.log.append((idx, weights, resident, transient, split_bytes))
        for k, b in weights.items():
            if k not in c.weights:
                c.weights.add(k)
                c.w += b
        for k, b in resident.items():
            if k not in c.resident:
                c.resident.add(k)
                c.res += b
        c.w += split_bytes
        c.transient = max(c.transient, transient)
        c.empty = False

    def _cut_bytes(self) -> list[int]:
        """Bytes of activations crossing a chip boundary placed before each node (the pipeline's cut)."""
        n = len(self.nodes)
        produced = {o: k for k, node in enumerate(self.nodes) for o in node.outputs if o}
        last: dict[str, int] = {}
        for k, node in enumerate(self.nodes):
            for i in node.inputs:
                if i in produced:
                    last[i] = k
        diff = [0] * (n + 2)
        for v, k in last.items():
            b = self.sizes.nbytes(v)
            diff[produced[v] + 1] += b
            diff[k + 1] -= b
        cut, run = [], 0
        for k in range(n + 1):
            run += diff[k]
            cut.append(run)
        return cut

    def _rewind(self, c: _Chip, j: int) -> None:
        """Take every node from index ``j`` on off chip ``c`` (they move to the next chip)."""
        log = [e for e in c.log if e[0] < j]
        c.__init__()
        for idx, w, r, t, sb in log:
            self._take(c, idx, w, r, t, sb)

    def pack(self) -> list[list[Shard]]:
        """Place every node; a chip boundary is moved back to a much cheaper cut when one is close by."""
        cut = self._cut_bytes()
        where: list[list[Shard]] = [[] for _ in self.nodes]
        i = 0
        while i < len(self.nodes):
            node, low = self.nodes[i], self.lowered[i]
            weights = self._weight_items(node, low)
            resident = self._resident_items(node)
            transient = self._transient(node, low)
            c = self.chips[-1]
            if self._fits(c, weights, resident, transient):
                self._take(c, i, weights, resident, transient)
                where[i] = [Shard(len(self.chips) - 1)]
                i += 1
                continue
            if low.shard is None or self._fits(_Chip(), weights, resident, transient):
                # a node that fits a chip moves to the next chip whole; only larger ones are split
                if not c.empty:
                    first = c.log[0][0]
                    better = [j for j in range(first + 1, i) if 4 * cut[j] <= cut[i]]
                    if better:  # sending a large activation costs more than leaving SRAM unused
                        self._rewind(c, better[-1])
                        self._new()
                        i = better[-1]
                        continue
                    c = self._new()
                if not self._fits(c, weights, resident, transient):
                    raise self._too_big(node, sum(weights.values()) + sum(resident.values()) + transient)
                self._take(c, i, weights, resident, transient)
                where[i] = [Shard(len(self.chips) - 1)]
                i += 1
                continue
            where[i] = self._split(i, node, low, weights, resident, transient)
            i += 1
        return where

    def _split(self, idx: int, node: Node, low: Lowered, weights: dict[str, int], resident: dict[str, int],
               transient: int) -> list[Shard]:
        rule = low.shard
        assert rule is not None
        split_names = {node.inputs[rule.weight]} | ({node.inputs[rule.bias]} if rule.bias is not None else set())
        split_bytes = sum(b for k, b in weights.items() if k in split_names)
        whole = {k: b for k, b in weights.items() if k not in split_names}
        ins_res = {k: b for k, b in resident.items() if k not in node.outputs}
        out_res = {k: b for k, b in resident.items() if k in node.outputs}
        per_col = split_bytes / max(rule.columns, 1)
        g = self.group if rule.columns >= 2 * self.group else 1
        shards: list[Shard] = []
        lo = 0
        c = self.chips[-1]
        while lo < rule.columns:
            used = c.w + sum(b for k, b in whole.items() if k not in c.weights) + c.res + sum(
                b for k, b in ins_res.items() if k not in c.resident) + max(c.transient, transient)
            free = self.budget - used
            cols = min(rule.columns - lo, int(free // per_col) // g * g if per_col > 0 else rule.columns - lo)
            if cols <= 0:
                if c.empty:
                    raise self._too_big(node, int(per_col * g) + used)
                c = self._new()
                continue
            self._take(c, idx, whole, ins_res, transient, math.ceil(per_col * cols))
            shards.append(Shard(len(self.chips) - 1, lo, lo + cols, rule.columns))
            lo += cols
            if lo < rule.columns:
                c = self._new()
        self._take(c, idx, {}, out_res, 0)  # outputs are gathered on the last shard's chip
        return shards

    def _too_big(self, node: Node, need: int) -> ResourceError:
        weighted = any(self.sizes.is_weight(i) for i in node.inputs)
        return ResourceError(
            f"node {node.name!r} ({node.op_type}) needs {need:,} bytes of SRAM on one chip (weights and live "
            f"activations), and a chip has {self.capacity:,}"
            + (f" ({self.budget:,} left for packing after the activations)" if self.budget < self.capacity else ""),
            where="target 'lpu'",
            hint=("its weights cannot be split across chips (only MatMul/Gemm/Conv/Gather weights, along their "
                  "output columns); use a lower precision or a larger sram_bytes") if weighted else
                 "its activations alone do not fit one chip's SRAM; lower the batch or sequence, or raise sram_bytes")


def _liveness(graph: Graph, nodes: list[Node], where: list[list[Shard]], sizes: Sizes, chips: int) -> list[int]:
    """Peak bytes of live intermediate activations on each chip (produced there or sent to it)."""
    inputs = {t.name for t in graph.inputs}
    outputs = {t.name for t in graph.outputs}
    last: dict[tuple[str, int], int] = {}
    for idx, (node, shards) in enumerate(zip(nodes, where)):
        for s in shards:
            for i in node.inputs:
                if i and not sizes.is_weight(i) and i not in inputs:
                    last[(i, s.chip)] = idx
    live = [0] * chips
    peak = [0] * chips
    alive: set[tuple[str, int]] = set()
    for idx, (node, shards) in enumerate(zip(nodes, where)):
        for s in shards:
            for i in node.inputs:
                key = (i, s.chip)
                if i and key in last and key not in alive:
                    alive.add(key)
                    live[s.chip] += sizes.nbytes(i)
        home = shards[-1].chip
        for o in node.outputs:
            if o and o not in outputs:
                live[home] += sizes.nbytes(o)
                alive.add((o, home))
                last.setdefault((o, home), idx)
        for s in shards:
            if len(shards) > 1:  # each shard's partial output lives until the gather
                part = int(sum(sizes.nbytes(o) for o in node.outputs) * s.frac)
                peak[s.chip] = max(peak[s.chip], live[s.chip] + part)
            peak[s.chip] = max(peak[s.chip], live[s.chip])
        for s in shards:
            for v in list(node.inputs) + list(node.outputs):
                key = (v, s.chip)
                if key in alive and last.get(key) == idx and v not in outputs:
                    alive.discard(key)
                    live[s.chip] -= sizes.nbytes(v)
    return peak


def partition(graph: Graph, nodes: list[Node], lowered: list[Lowered], sizes: Sizes, machine: Machine,
              budget: int) -> Placement:
    """Pack the nodes onto chips within ``budget`` bytes each; retried tighter if a chip's live peak overflows."""
    cap = machine.sram_bytes
    budget = min(budget, cap)
    for _ in range(6):
        packer = _Packer(graph, nodes, lowered, sizes, budget, machine.mxm_dim, cap)
        where = packer.pack()
        n = len(packer.chips)
        peak = _liveness(graph, nodes, where, sizes, n)
        weights = [c.w for c in packer.chips]
        resident = [c.res for c in packer.chips]
        sram = [w + r + p for w, r, p in zip(weights, resident, peak)]
        over = max(s - cap for s in sram)
        if over <= 0:
            return Placement(n, where, weights, resident, sram, budget)
        budget -= over
    raise ResourceError(f"activations do not fit next to the weights: a chip needs {max(sram):,} bytes of SRAM "
                        f"and has {cap:,}", where="target 'lpu'",
                        hint="a single activation is too large for one chip's SRAM; lower the batch or sequence")
