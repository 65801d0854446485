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

from hal.engine import Program, fused_runs, kernel_step, weight_only_values
from hal.errors import RunError
from hal.graph.ir import Graph, TensorInfo, body_reads
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


def implicit_reads(graph: Graph) -> set[str]:
    """Names that control-flow bodies (If / Loop / Scan) read from the enclosing graph."""
    return set().union(*(body_reads(n) for n in graph.nodes))


def build_stage_program(graph: Graph, name: str, node_names: list[str], policy: Policy,
                        implicit: set[str] = frozenset(), constant: set[str] = frozenset(),
                        sub: Graph | None = None) -> StageProgram:
    """One stage's program: the reference kernel of each node, with ``policy`` applied, and what it
    leaves as those kernels fused (``fused_runs``). Values in ``implicit`` (read by a control-flow
    body elsewhere) that it produces are sent on too; values in ``constant`` (weight-only, see
    ``weight_only_values``) it receives hoist like its own weights."""
    if sub is None:
        sub = graph.subgraph(node_names, name=f"{graph.name}/{name}")
    listed = {o.name for o in sub.outputs}
    sub.outputs = sub.outputs + [graph.values.get(o) or TensorInfo(o) for n in sub.nodes for o in n.outputs
                                 if o in implicit and o not in listed]
    # the host fuses what the policy leaves as the nodes' reference steps (all at exact, all but the
    # matrix ops at native, whose FMAC operands are bf16): the same results as one step per node
    plain = [kernel_step(n, sub) for n in sub.nodes]
    steps, rounded = apply_policy(plain, sub.initializers, policy)
    steps = fused_runs(sub, steps, plain)
    if rounded:
        sub.initializers = {**sub.initializers, **rounded}
    defined = {i.name for i in sub.inputs} | set(sub.initializers) | {o for n in sub.nodes for o in n.outputs}
    outer_names = sorted(implicit_reads(sub) - defined)
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
        self._steps: list[tuple[StageProgram, tuple[tuple[str, bool], ...], tuple[str, ...]]] = []
        self._constants: dict[str, np.ndarray] = {}
        if graph is None:
            return
        implicit = implicit_reads(graph)
        constant = weight_only_values(graph)
        subs = graph.subgraphs([(f"{graph.name}/{name}", nodes) for name, nodes in stage_nodes])
        self.stages = [build_stage_program(graph, name, nodes, policy, implicit, constant, sub)
                       for (name, nodes), sub in zip(stage_nodes, subs)]
        self.output_names = [o.name for o in graph.outputs]
        keep = set(self.output_names)
        frees = frees_after(self.stages, keep)
        self._constants = {o: graph.initializers[o] for o in keep if o in graph.initializers}
        # per stage, worked out once: its inputs, each with whether no later stage reads it (then the
        # stage is handed it, not lent it), and what else to drop once it has run (values only its
        # control-flow bodies read)
        self._steps = [(st, tuple((n, n in last) for n in st.inputs), tuple(last.difference(st.inputs)))
                       for st, last in zip(self.stages, frees)]

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
        if self._constants:
            env.update(self._constants)
        with np.errstate(all="ignore"):  # once for every stage (each program's run_list would enter it again)
            for st, taken, dropped in self._steps:
                outer = ({n: env[n] for n in st.outer if n in env} or None) if st.outer else None
                # a tensor no later stage reads is handed over, not lent: the stage frees it after its
                # last reader there, instead of the tensor living until the whole stage has run
                ins = {n: env.pop(n, None) if last else env.get(n) for n, last in taken}
                # a stage's kept weight-only results travel to later stages uncopied (read-only) ...
                env.update(zip(st.outputs, st.program.run_list_ignoring_errors(ins, outer, share_weights=True,
                                                                               consume=True)))
                for n in dropped:
                    env.pop(n, None)
        # ... and leave the executable as copies, so a caller mutating an output cannot change a later run
        out = {}
        for n in self.output_names:
            v = env[n]
            if n in self._constants:
                v = v.copy()
            elif isinstance(v, np.ndarray):
                for st in self.stages:
                    if st.program.holds(v):
                        v = v.copy()
                        break
            out[n] = v
        return out

    def trace(self) -> list[dict[str, Any]]:
        return [dict(e, args=dict(e["args"])) for e in self._events]

    def serialize(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)


def frees_after(stages: list[StageProgram], keep: set[str]) -> list[set[str]]:
    """For each stage, the tensors no later stage reads (dropped once it has run)."""
    last: dict[str, int] = {}
    for i, st in enumerate(stages):
        for n in st.inputs + st.outer:
            last[n] = i
    out: list[set[str]] = [set() for _ in stages]
    for n, i in last.items():
        if n not in keep:
            out[i].add(n)
    return out
