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
from hal.perf.opcount import shape
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
    #: node index -> the output axis its activations are split along (heads or rows over chips)
    act_axis: dict[int, int] = field(default_factory=dict)
    #: values of an activation split that stay split (each chip keeps its slice for the next node)
    kept_split: set[str] = field(default_factory=set)


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
        self.act_axis: dict[int, int] = {}
        self.kept_split: set[str] = set()

    def _weight_items(self, node: Node, low: Lowered) -> dict[str, int]:
        from hal_lpu.lowering import installed_operands

        installed = installed_operands(node)
        items = {}
        for i in node.inputs:
            if self.sizes.is_weight(i) and i not in items:
                fmt = self.sizes.policy.matmul_weights if i in installed else None
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
            if (low.shard is None and not self._fits(_Chip(), weights, resident, transient)
                    and act_split_axis(node, self.graph) is not None):
                i = self._split_activations(i, where)
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
                    raise self._too_big(node, int(per_col * g) + used, split=True)
                c = self._new()
                continue
            self._take(c, idx, whole, ins_res, transient, math.ceil(per_col * cols))
            shards.append(Shard(len(self.chips) - 1, lo, lo + cols, rule.columns))
            lo += cols
            if lo < rule.columns:
                c = self._new()
        self._take(c, idx, {}, out_res, 0)  # outputs are gathered on the last shard's chip
        return shards

    def _split_activations(self, start: int, where: list[list[Shard]]) -> int:
        """Split a run of nodes whose activations fit no chip along one output axis (the attention's
        heads, say) over this chip's free SRAM and the next chips: each chip computes its slice of every
        node of the run, values inside the run stay split, the run's result is gathered on the last chip.
        Returns the index of the first node after the run."""
        node = self.nodes[start]
        axis = act_split_axis(node, self.graph)
        assert axis is not None
        extent = shape(self.graph, node.outputs[0])[axis]
        run, made = [start], set(node.outputs)
        j = start + 1
        while j < len(self.nodes):
            nxt = self.nodes[j]
            if (self.lowered[j].shard is not None or not made.intersection(nxt.inputs)
                    or act_split_axis(nxt, self.graph, axis) != axis
                    or shape(self.graph, nxt.outputs[0])[axis] != extent):
                break
            run.append(j)
            made.update(o for o in nxt.outputs if o)
            j += 1
        consumers: dict[str, set[int]] = {}
        for k, n in enumerate(self.nodes):
            for i in n.inputs:
                if i in made:
                    consumers.setdefault(i, set()).add(k)
        inside = set(run)
        kept = {v for v in made if v not in self.outputs and consumers.get(v) and consumers[v] <= inside}
        per = max(self._transient(self.nodes[k], self.lowered[k]) for k in run) / extent
        weights: dict[str, int] = {}
        resident: dict[str, int] = {}
        for k in run:
            weights.update(self._weight_items(self.nodes[k], self.lowered[k]))
            resident.update({i: b for i, b in self._resident_items(self.nodes[k]).items()
                             if i not in self.nodes[run[-1]].outputs})
        shards: list[Shard] = []
        lo = 0
        c = self.chips[-1]
        while lo < extent:
            used = c.w + sum(b for k, b in weights.items() if k not in c.weights) + c.res + sum(
                b for k, b in resident.items() if k not in c.resident) + c.transient
            free = self.budget - used
            # a run between the graph's own inputs and outputs has no transient bytes: all or nothing
            cols = min(extent - lo, int(free // per)) if per else (extent - lo if free >= 0 else 0)
            if cols <= 0:
                if c.empty:
                    raise self._too_big(node, int(per) + used)
                c = self._new()
                continue
            self._take(c, start, weights, resident, c.transient + math.ceil(per * cols))
            shards.append(Shard(len(self.chips) - 1, lo, lo + cols, extent))
            lo += cols
            if lo < extent:
                c = self._new()
        out_res = {o: self.sizes.nbytes(o) for o in self.nodes[run[-1]].outputs if o in self.outputs}
        self._take(c, run[-1], {}, out_res, 0)  # the run's result is gathered on the last shard's chip
        for k in run:
            where[k] = list(shards)
            self.act_axis[k] = axis
        self.kept_split |= kept
        return run[-1] + 1

    def _too_big(self, node: Node, need: int, split: bool = False) -> ResourceError:
        """``node`` fits no chip: ``need`` bytes of weights and inputs on one, beside what ``partition``'s
        retries held back for the activations its liveness walk found live at once (``capacity - budget``).
        ``split``: ``need`` is its narrowest slice of columns."""
        weighted = any(self.sizes.is_weight(i) for i in node.inputs)
        live = self.capacity - self.budget
        what = f"node {node.name!r} ({node.op_type}) needs {need:,} bytes of SRAM on one chip"
        if live > 0:  # (had read "needs 98,877,440 ... a chip has 230,686,720 (-327,680,000 left for packing)")
            what += f" beside the {live:,} bytes held back for the activations live at once on a chip"
        else:
            what += " (weights and live activations)"
        what += f", and a chip has {self.capacity:,}"
        if live >= self.capacity:
            hint = ("the activations live at once alone fill a chip's SRAM; lower the batch or sequence, "
                    "or raise sram_bytes")
        elif split:  # the hint had said its weights cannot be split, about a split Gather or MatMul
            hint = ("it is split across chips by output columns, but its narrowest slice does not fit beside "
                    "the activations; lower the batch or sequence, use a lower precision, or raise sram_bytes")
        elif weighted:
            hint = ("its weights cannot be split across chips (only MatMul/Gemm/Conv/Gather weights, along their "
                    "output columns); use a lower precision or a larger sram_bytes")
        else:
            hint = "its activations alone do not fit one chip's SRAM; lower the batch or sequence, or raise sram_bytes"
        return ResourceError(what, where="target 'lpu'", hint=hint)


def _liveness(graph: Graph, nodes: list[Node], where: list[list[Shard]], sizes: Sizes, chips: int,
              act_axis: dict[int, int] | None = None, kept_split: set[str] | None = None) -> list[int]:
    """Peak bytes of live intermediate activations on each chip (produced there or sent to it); a value
    split over chips counts its slice on each."""
    act_axis, kept_split = act_axis or {}, kept_split or set()
    inputs = {t.name for t in graph.inputs}
    outputs = {t.name for t in graph.outputs}
    last: dict[tuple[str, int], int] = {}
    size: dict[tuple[str, int], int] = {}
    for idx, (node, shards) in enumerate(zip(nodes, where)):
        for s in shards:
            for i in node.inputs:
                if i and not sizes.is_weight(i) and i not in inputs:
                    last[(i, s.chip)] = idx
                    if idx in act_axis:
                        sliced = split_input_axis(graph, node, i, act_axis[idx]) is not None
                        size[(i, s.chip)] = int(sizes.nbytes(i) * s.frac) if sliced else sizes.nbytes(i)
    live = [0] * chips
    peak = [0] * chips
    alive: set[tuple[str, int]] = set()
    for idx, (node, shards) in enumerate(zip(nodes, where)):
        for s in shards:
            for i in node.inputs:
                key = (i, s.chip)
                if i and key in last and key not in alive:
                    alive.add(key)
                    live[s.chip] += size.get(key, sizes.nbytes(i))
        home = shards[-1].chip
        for o in node.outputs:
            if not o or o in outputs:
                continue
            if o in kept_split:
                for s in shards:
                    key = (o, s.chip)
                    size[key] = int(sizes.nbytes(o) * s.frac)
                    live[s.chip] += size[key]
                    alive.add(key)
                    last.setdefault(key, idx)
            else:
                live[home] += sizes.nbytes(o)
                alive.add((o, home))
                last.setdefault((o, home), idx)
        for s in shards:
            if len(shards) > 1 and not all(o in kept_split for o in node.outputs if o):
                part = int(sum(sizes.nbytes(o) for o in node.outputs) * s.frac)  # each part lives until the gather
                peak[s.chip] = max(peak[s.chip], live[s.chip] + part)
            peak[s.chip] = max(peak[s.chip], live[s.chip])
        for s in shards:
            for v in list(node.inputs) + list(node.outputs):
                key = (v, s.chip)
                if key in alive and last.get(key) == idx and v not in outputs:
                    alive.discard(key)
                    live[s.chip] -= size.get(key, sizes.nbytes(v))
    return peak


#: ops that compute each output element from the same position of their inputs (broadcasting)
ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Where", "Relu", "Sigmoid", "Tanh",
                         "Exp", "Log", "Neg", "Abs", "Sqrt", "Reciprocal", "Erf", "Cast", "Gelu", "Equal", "Less",
                         "Greater", "Not", "And", "Or", "Clip", "Identity", "Softplus", "HardSigmoid", "LeakyRelu"})
#: pure relabelings a split run may pass through when the leading dimensions up to the axis are unchanged
_SPLIT_VIEWS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten"})


def split_input_axis(graph: Graph, node: Node, name: str, axis: int) -> int | None:
    """The axis of input ``name`` that follows the node's output ``axis`` (right-aligned broadcasting,
    or the same leading axis through a view), or None when the input is read whole by every slice."""
    out = shape(graph, node.outputs[0])
    shp = shape(graph, name)
    if node.op_type in _SPLIT_VIEWS:
        return axis if name == node.inputs[0] else None
    a = axis - (len(out) - len(shp))
    if a < 0 or a >= len(shp) or shp[a] != out[axis] or out[axis] == 1:
        return None
    return a


def act_split_axis(node: Node, graph: Graph, want: int | None = None) -> int | None:
    """The output axis a node's activations can be split along over chips (``want``, or the first
    non-trivial one), or None. Matrix products split along batch axes (heads), elementwise ops
    along any axis, softmaxes along any axis but the normalised one, views when they keep the
    leading dimensions up to the axis."""
    outs = [o for o in node.outputs if o]
    if len(outs) != 1:
        return None
    out = shape(graph, outs[0])
    op = node.op_type
    if op in ("MatMul",):
        axes = range(len(out) - 2)
    elif op in ELEMENTWISE:
        axes = range(len(out))
    elif op in ("Softmax", "LogSoftmax"):
        norm = int(node.attrs.get("axis", -1)) % max(len(out), 1)
        axes = [a for a in range(len(out)) if a != norm]
    elif op in _SPLIT_VIEWS:
        src = shape(graph, node.inputs[0])
        axes = [a for a in range(min(len(src), len(out))) if src[:a + 1] == out[:a + 1]]
    else:
        return None
    cands = [a for a in axes if out[a] > 1]
    if want is not None:
        return want if want in cands else None
    return cands[0] if cands else None


def partition(graph: Graph, nodes: list[Node], lowered: list[Lowered], sizes: Sizes, machine: Machine,
              budget: int) -> Placement:
    """Pack the nodes onto chips within ``budget`` bytes each; packed again tighter while a chip's
    live peak overflows its SRAM. The packer counts a chip's activations as its largest node's
    transient, where the liveness walk finds all the values live at once, so the first retry leaves
    room for the largest such shortfall on an overflowing chip (lowering the budget by the overflow
    alone left a chip whose estimate sat far below it packed the same way, six times over), and the
    budgets between that one and the last that overflowed are bisected for the fewest chips."""
    cap = machine.sram_bytes
    budget = min(budget, cap)
    best: Placement | None = None  # the placement of the highest budget that fitted
    failed = None                   # the lowest budget that overflowed
    sram: list[int] = []
    for _ in range(8):
        packer = _Packer(graph, nodes, lowered, sizes, budget, machine.mxm_dim, cap)
        where = packer.pack()
        n = len(packer.chips)
        peak = _liveness(graph, nodes, where, sizes, n, packer.act_axis, packer.kept_split)
        weights = [c.w for c in packer.chips]
        resident = [c.res for c in packer.chips]
        sram = [w + r + p for w, r, p in zip(weights, resident, peak)]
        over = max(s - cap for s in sram)
        if over <= 0:
            best = Placement(n, where, weights, resident, sram, budget, packer.act_axis, packer.kept_split)
            if failed is None:
                return best
        else:
            failed = budget
            if best is None:
                shortfall = max(p - c.transient for c, p, s in zip(packer.chips, peak, sram) if s > cap)
                budget = min(budget - over, cap - shortfall)
                continue
        if failed - best.budget <= cap // 64:
            return best
        budget = (best.budget + failed) // 2
    if best is not None:
        return best
    raise ResourceError(f"activations do not fit next to the weights: a chip needs {max(sram):,} bytes of SRAM "
                        f"and has {cap:,}", where="target 'lpu'",
                        hint="the activations live at once on one chip outgrow its SRAM next to its weights; lower "
                             "the batch or sequence")
