"""Stages: the graph cut into pipeline stages (one per layer where names say so), with what each needs.

A stage is a contiguous run of the graph's topological order, so running stages in pipeline order
runs every node after its producers. Where node names carry a layer index (``layers.3``,
``blocks.3``, ``h.3`` as exporters and the zoo write them) each layer is a stage, nodes before the
first layer form ``embed`` and nodes after the last ``head``. Otherwise the order is cut into
stages of balanced work, each ending after a contraction (MatMul, Conv, Gemm) where possible.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from hal.graph.ir import Graph, Node
from hal.numerics import Policy
from hal_wafer.cost import CONTRACTION_OPS, OpWork, WaferParams, op_work, policy_itemsizes, value_bytes

_LAYER = re.compile(r"(?:^|[/._:])(?:layers?|blocks?|block|h)[._]?(\d+)(?=$|[/._:])")
#: the most stages a graph without layer names is cut into
MAX_GENERIC_STAGES = 64


@dataclass
class StageInfo:
    """One pipeline stage: its nodes, the values crossing its boundary, and what it needs of a region."""

    index: int
    name: str
    nodes: list[str]
    op_types: list[str]
    inputs: list[str]           # activations it reads from other stages or the feeds (weights excluded)
    outputs: list[str]          # values it produces that later stages or the model read
    works: list[OpWork] = field(default_factory=list)
    flops: float = 0.0
    bytes: float = 0.0
    weight_bytes: int = 0
    stream_bytes: int = 0       # weight bytes one run reads (a lookup table only its gathered rows)
    state_bytes: int = 0        # feeds and model outputs it holds (KV cache, ids, logits)
    act_bytes: int = 0          # peak live activations inside the stage
    waves: int = 0

    @property
    def sram_bytes(self) -> int:
        return self.weight_bytes + self.state_bytes + self.act_bytes

    def work_pe_s_for(self, p: WaferParams) -> float:
        """Seconds its kernels' work would take on one PE (SRAM traffic or FMACs, whichever is slower)."""
        return sum(max(w.flops / (p.pe_flops_16 * (p.fp32_ratio if w.fp32 else 1.0)), w.bytes / p.pe_mem_bw)
                   for w in self.works)

    def min_pes(self, p: WaferParams) -> int:
        return max(1, math.ceil(self.sram_bytes / p.pe_usable_bytes))


def _layer_key(name: str) -> int | None:
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def group_nodes(graph: Graph) -> list[tuple[str, list[Node]]]:
    """Nodes cut into (stage name, nodes) runs of the topological order."""
    nodes = graph.nodes
    keys = [_layer_key(n.name) for n in nodes]
    if len({k for k in keys if k is not None}) >= 2:
        return _by_layer(nodes, keys)
    return _by_work(graph)


def _by_layer(nodes: list[Node], keys: list[int | None]) -> list[tuple[str, list[Node]]]:
    last_keyed = max(i for i, k in enumerate(keys) if k is not None)
    runs: list[tuple[str, list[Node]]] = []
    label = "embed"
    seen: dict[str, int] = {}
    for i, (n, k) in enumerate(zip(nodes, keys)):
        if i > last_keyed:
            label = "head"
        elif k is not None:
            label = f"layer{k}"
        if runs and runs[-1][0].split("#")[0] == label:
            runs[-1][1].append(n)
            continue
        seen[label] = seen.get(label, -1) + 1
        # a layer that comes back after another becomes a stage of its own
        runs.append((label if not seen[label] else f"{label}#{seen[label]}", [n]))
    return runs


def _by_work(graph: Graph) -> list[tuple[str, list[Node]]]:
    from hal.perf.opcount import costed, node_cost

    nodes = graph.nodes
    if not nodes:
        return []
    cost = [max(1.0, c.flops + c.bytes_weights) for c in (node_cost(n, graph) for n in nodes)]
    contracts = [costed(n).op_type in CONTRACTION_OPS for n in nodes]
    heavy = sum(contracts)
    k = max(1, min(MAX_GENERIC_STAGES, heavy, len(nodes)))
    target = sum(cost) / k
    runs: list[tuple[str, list[Node]]] = []
    acc, cur = 0.0, []
    for n, c, contraction in zip(nodes, cost, contracts, strict=True):
        cur.append(n)
        acc += c
        if (acc >= target and contraction) or acc >= 2 * target:
            runs.append((f"stage{len(runs)}", cur))
            acc, cur = 0.0, []
    if cur:
        if runs and acc < target / 4:
            runs[-1][1].extend(cur)
        else:
            runs.append((f"stage{len(runs)}", cur))
    return runs


def analyse(graph: Graph, policy: Policy) -> list[StageInfo]:
    """Cut the graph into stages and measure each: work, wavefronts, weights, state, activations."""
    act, wgt = policy_itemsizes(policy)
    runs = group_nodes(graph)
    stage_of: dict[str, int] = {}
    for si, (_, ns) in enumerate(runs):
        for n in ns:
            for o in n.outputs:
                if o:
                    stage_of[o] = si
    feeds = {i.name for i in graph.inputs}
    model_outputs = {o.name for o in graph.outputs}
    readers: dict[str, set[int]] = {}
    for si, (_, ns) in enumerate(runs):
        for n in ns:
            for i in n.inputs:
                if i and i not in graph.initializers:
                    readers.setdefault(i, set()).add(si)
    stages = []
    for si, (name, ns) in enumerate(runs):
        produced = [o for n in ns for o in n.outputs if o]
        own = set(produced)
        inputs = list(dict.fromkeys(i for n in ns for i in n.inputs
                                    if i and i not in own and i not in graph.initializers))
        outputs = [o for o in produced if o in model_outputs or any(r != si for r in readers.get(o, ()))]
        st = StageInfo(si, name, [n.name for n in ns], list(dict.fromkeys(n.op_type for n in ns)), inputs, outputs)
        st.works = [op_work(n, graph, policy) for n in ns]
        st.flops = sum(w.flops for w in st.works)
        st.bytes = sum(w.bytes for w in st.works)
        st.waves = sum(w.waves for w in st.works)
        weights = dict.fromkeys(i for n in ns for i in n.inputs if i and i in graph.initializers)
        st.weight_bytes = sum(value_bytes(graph, w, wgt) for w in weights)
        st.stream_bytes = st.weight_bytes - sum(_table_savings(graph, ns, weights, act, wgt))
        st.state_bytes = (sum(value_bytes(graph, i, act) for i in inputs if i in feeds)
                          + sum(value_bytes(graph, o, act) for o in outputs if o in model_outputs))
        st.act_bytes = _peak_activations(graph, ns, inputs, set(outputs), feeds, act)
        stages.append(st)
    return stages


def _table_savings(graph: Graph, nodes: list[Node], weights: dict[str, None], act: int | None,
                   wgt: int | None) -> list[int]:
    """For each weight only ever gathered from, its bytes less the rows the gathers read."""
    users: dict[str, list[Node]] = {}
    for n in nodes:
        for i in dict.fromkeys(n.inputs):
            if i in weights:
                users.setdefault(i, []).append(n)
    out = []
    for w, ns in users.items():
        if all(n.op_type in ("Gather", "GatherElements", "GatherND") and n.inputs[0] == w
               and w not in n.inputs[1:] for n in ns):
            rows = sum(value_bytes(graph, n.outputs[0], act) for n in ns)
            out.append(max(0, value_bytes(graph, w, wgt) - rows))
    return out


def _peak_activations(graph: Graph, nodes: list[Node], inputs: list[str], keep: set[str], feeds: set[str],
                      itemsize: int | None) -> int:
    last: dict[str, int] = {}
    for idx, n in enumerate(nodes):
        for i in n.inputs:
            if i and i not in graph.initializers:
                last[i] = idx
    live = sum(value_bytes(graph, i, itemsize) for i in inputs if i not in feeds)
    peak = live
    for idx, n in enumerate(nodes):
        live += sum(value_bytes(graph, o, itemsize) for o in n.outputs if o)
        peak = max(peak, live)
        for v in {*(i for i in n.inputs if i), *(o for o in n.outputs if o)}:
            if last.get(v, idx) == idx and v not in keep and v not in feeds and v not in graph.initializers:
                live -= value_bytes(graph, v, itemsize)
    return int(peak)
