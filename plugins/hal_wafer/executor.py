"""Run the spatial program: stage by stage in pipeline order, each region's kernels as engine steps.

Each stage is its own engine ``Program`` (the kernels its region runs, with the wafer's numeric
policy applied); a run hands each stage the tensors its routes deliver, collects what it sends on,
and drops a tensor once the last stage that reads it has run. Nothing is shared between runs, so
several threads may run one executable at once. Serialising keeps the recipe (graph, stages,
policy), not the kernels: loading rebuilds each region's program, so any kernel the registry holds
(closures included) survives the round trip.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hal.engine import Program, kernel_step, weight_only_values
from hal.errors import RunError
from hal.graph.ir import Graph, Node, TensorInfo, body_reads
from hal.numerics import Policy, apply_policy
from hal.specs import CompileReport
from hal_wafer.placement import Placement


@dataclass
class StageProgram:
    """The program of one region: its steps over its own slots, the tensors it receives and sends."""

    name: str
    program: Program
    inputs: list[str]
    outputs: list[str]
    outer: list[str]      # names its control-flow bodies read from earlier stages


def _subgraph_reads(proto: Any) -> set[str]:
    """Names a body reads from the scopes around it (what it, and bodies nested in it, do not define)."""
    defined = {i.name for i in proto.input} | {t.name for t in proto.initializer}
    defined |= {o for node in proto.node for o in node.output if o}
    reads = {o.name for o in proto.output}
    for node in proto.node:
        reads.update(i for i in node.input if i)
        for a in node.attribute:
            if a.HasField("g"):
                reads |= _subgraph_reads(a.g)
            for g in a.graphs:
                reads |= _subgraph_reads(g)
    return reads - defined


def implicit_reads(graph: Graph) -> set[str]:
    """Names that control-flow bodies (If / Loop / Scan) read from the enclosing graph."""
    reads: set[str] = set()
    for n in graph.nodes:
        for v in n.attrs.values():
            for g in (v if isinstance(v, list) else [v]):
                if hasattr(g, "node"):
                    reads |= _subgraph_reads(g)
    return reads


def stage_graphs(graph: Graph, stage_nodes: list[tuple[str, list[str]]]) -> list[Graph]:
    """``graph.subgraph`` of every stage, in one pass over the graph instead of one per stage (a
    24-layer decoder has ~7,000 nodes and ~50 stages)."""
    outer = {o for n in graph.nodes for o in n.outputs if o} | set(graph.initializers) | {i.name for i in graph.inputs}
    reads = {n.name: [*n.inputs, *sorted(body_reads(n) & outer)] for n in graph.nodes}
    stage_of = {name: si for si, (_, names) in enumerate(stage_nodes) for name in names}
    readers: dict[str, set[int]] = {}
    by_stage: list[list[Node]] = [[] for _ in stage_nodes]
    for n in graph.nodes:
        si = stage_of.get(n.name, -1)
        if si >= 0:
            by_stage[si].append(n)
        for i in reads[n.name]:
            if i:
                readers.setdefault(i, set()).add(si)
    model_outputs = {o.name for o in graph.outputs}
    out = []
    for si, ((name, _), nodes) in enumerate(zip(stage_nodes, by_stage)):
        produced = {o for n in nodes for o in n.outputs if o}
        inputs, inits, seen = [], {}, set()
        for n in nodes:
            for i in reads[n.name]:
                if not i or i in produced or i in seen:
                    continue
                seen.add(i)
                if i in graph.initializers:
                    inits[i] = graph.initializers[i]
                else:
                    inputs.append(graph.values.get(i) or TensorInfo(i))
        outputs = [graph.values.get(o) or TensorInfo(o) for n in nodes for o in n.outputs
                   if o and (o in model_outputs or any(r != si for r in readers.get(o, ())))]
        out.append(Graph(f"{graph.name}/{name}", nodes, inputs, outputs, inits, graph.values, graph.opsets,
                         graph.ir_version, graph.metadata, graph.model_hash, graph.functions))
    return out


def build_stage_program(graph: Graph, name: str, node_names: list[str], policy: Policy,
                        implicit: set[str] = frozenset(), constant: set[str] = frozenset(),
                        sub: Graph | None = None) -> StageProgram:
    """One stage's program: the reference kernel of each node, with ``policy`` applied. Values in
    ``implicit`` (read by a control-flow body elsewhere) that it produces are sent on too; values in
    ``constant`` (weight-only, see ``weight_only_values``) it receives hoist like its own weights."""
    if sub is None:
        sub = graph.subgraph(node_names, name=f"{graph.name}/{name}")
    listed = {o.name for o in sub.outputs}
    sub.outputs = sub.outputs + [graph.values.get(o) or TensorInfo(o) for n in sub.nodes for o in n.outputs
                                 if o in implicit and o not in listed]
    steps = [kernel_step(n, sub) for n in sub.nodes]
    steps, rounded = apply_policy(steps, sub.initializers, policy)
    if rounded:
        sub.initializers = {**sub.initializers, **rounded}
    defined = {i.name for i in sub.inputs} | set(sub.initializers) | {o for n in sub.nodes for o in n.outputs}
    outer = set()
    for n in sub.nodes:
        for v in n.attrs.values():
            for g in (v if isinstance(v, list) else [v]):
                if hasattr(g, "node"):
                    outer |= _subgraph_reads(g)
    outer_names = sorted(o for o in outer if o not in defined)
    program = Program(sub, steps, extra_inputs=outer_names,
                      constant_inputs=[n for n in [i.name for i in sub.inputs] + outer_names if n in constant])
    return StageProgram(name, program, [i.name for i in sub.inputs], [o.name for o in sub.outputs], outer_names)


class WaferExecutable:
    """A compiled wafer program: placement, per-region programs, report and timeline."""

    def __init__(self, graph: Graph | None, stage_nodes: list[tuple[str, list[str]]], policy: Policy,
                 report: CompileReport, placement: Placement, events: list[dict[str, Any]], graph_name: str):
        """``graph`` is None when the weights are shape-only: the program then reports but cannot run."""
        self._recipe = (graph, stage_nodes, policy)
        self.report = report
        self.placement = placement
        self._events = events
        self._graph_name = graph_name
        self._build()

    def _build(self) -> None:
        graph, stage_nodes, policy = self._recipe
        self.stages: list[StageProgram] | None = None
        self._frees: list[list[str]] = []
        self._constants: dict[str, np.ndarray] = {}
        if graph is None:
            return
        implicit = implicit_reads(graph)
        constant = weight_only_values(graph)
        self.stages = [build_stage_program(graph, name, nodes, policy, implicit, constant, sub)
                       for (name, nodes), sub in zip(stage_nodes, stage_graphs(graph, stage_nodes))]
        self.output_names = [o.name for o in graph.outputs]
        keep = set(self.output_names)
        self._frees = frees_after(self.stages, keep)
        self._constants = {o: graph.initializers[o] for o in keep if o in graph.initializers}

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k in ("_recipe", "report", "placement", "_events",
                                                                  "_graph_name")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._build()

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        if self.stages is None:
            raise RunError("this model's weights are declared by shape only, so it can be compiled and "
                           "estimated but not run", where=self._graph_name,
                           hint="use hal estimate, or build the model with real weights")
        env: dict[str, Any] = dict(feeds)
        env.update(self._constants)
        for st, frees in zip(self.stages, self._frees):
            ins = {n: env.get(n) for n in st.inputs}
            outer = {n: env[n] for n in st.outer if n in env} or None
            # a stage's kept weight-only results travel to later stages uncopied (read-only) ...
            env.update(zip(st.outputs, st.program.run_list(ins, outer, share_weights=True)))
            for n in frees:
                env.pop(n, None)
        # ... and leave the executable as copies, so a caller mutating an output cannot change a later run
        stages = self.stages
        return {n: env[n].copy() if n in self._constants or any(st.program.holds(env[n]) for st in stages)
                else env[n]
                for n in self.output_names}

    def trace(self) -> list[dict[str, Any]]:
        return [dict(e, args=dict(e["args"])) for e in self._events]

    def serialize(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)


def frees_after(stages: list[StageProgram], keep: set[str]) -> list[list[str]]:
    """For each stage, the tensors no later stage reads (dropped once it has run)."""
    last: dict[str, int] = {}
    for i, st in enumerate(stages):
        for n in st.inputs + st.outer:
            last[n] = i
    out: list[list[str]] = [[] for _ in stages]
    for n, i in last.items():
        if n not in keep:
            out[i].append(n)
    return out
