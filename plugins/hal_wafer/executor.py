"""Run the spatial program: stage by stage in pipeline order, each region's kernels as engine steps.

Each stage's kernels are its region's nodes with the wafer's numeric policy applied, fused where the
stage allows (``fused_runs`` over the stage's own subgraph: nothing fuses across a stage cut, so a
residual join at the end of one layer and the LayerNormalization opening the next stay two steps).
The stages' steps, in pipeline order, run as one engine ``Program``: a tensor a route delivers is
the producer's array, freed after its last reader on any stage. (Run as a program a stage, the
handoffs cost 2.5-3.5 us a stage on tiny-gpt, a sixth of its run, for no change in a value.)
Nothing is shared between runs, so several threads may run one executable at once. Serialising
keeps the recipe (graph, stages, policy), not the kernels: loading rebuilds the program, so any
kernel the registry holds (closures included) survives the round trip.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from hal.engine import Program, Step, fused_runs, kernel_step
from hal.errors import RunError
from hal.graph.ir import Graph, TensorInfo, body_reads
from hal.numerics import Policy, apply_policy
from hal.specs import CompileReport
from hal_wafer.placement import Placement


@dataclass
class StageSteps:
    """One region's kernels: its steps, over the names of the values they read and write."""

    name: str
    steps: list[Step]


def implicit_reads(graph: Graph) -> set[str]:
    """Names that control-flow bodies (If / Loop / Scan) read from the enclosing graph."""
    return set().union(*(body_reads(n) for n in graph.nodes))


def stage_steps(graph: Graph, stage_nodes: list[tuple[str, list[str]]], policy: Policy
                ) -> tuple[list[StageSteps], dict[str, Any]]:
    """Each stage's steps, and the weights the policy rounded (``apply_policy``, over every stage's
    steps at once: a weight that a matrix op reads in one stage and another op in another, a tied
    embedding, gets the matrix op's rounded copy under a name of its own). A stage's steps are the
    reference kernel of each of its nodes with the policy applied, fused as its own subgraph allows
    (``fused_runs``): values another stage reads, or a control-flow body anywhere, stay outputs."""
    implicit = implicit_reads(graph)
    subs = graph.subgraphs([(f"{graph.name}/{name}", nodes) for name, nodes in stage_nodes])
    plain = [[kernel_step(n, sub) for n in sub.nodes] for sub in subs]
    steps, rounded = apply_policy([st for part in plain for st in part], graph.initializers, policy)
    out, at = [], 0
    for (name, _), sub, part in zip(stage_nodes, subs, plain):
        listed = {o.name for o in sub.outputs}
        sub.outputs = sub.outputs + [graph.values.get(o) or TensorInfo(o) for n in sub.nodes for o in n.outputs
                                     if o in implicit and o not in listed]
        # the host fuses what the policy leaves as the nodes' reference steps (all at exact, all but
        # the matrix ops at native, whose FMAC operands are bf16): the same results as one step per node
        out.append(StageSteps(name, fused_runs(sub, steps[at:at + len(part)], part)))
        at += len(part)
    return out, rounded


class WaferExecutable:
    """A compiled wafer program: placement, the stages' steps as one program, report and timeline."""

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
        self.stages: list[StageSteps] | None = None
        self.program: Program | None = None
        if graph is None:
            return
        self.stages, rounded = stage_steps(graph, stage_nodes, policy)
        run_graph = replace(graph, initializers={**graph.initializers, **rounded}) if rounded else graph
        self.program = Program(run_graph, [st for stage in self.stages for st in stage.steps])

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k in ("_recipe", "report", "placement", "_events",
                                                                  "_graph_name")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._build()

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        if self.program is None:
            raise RunError("this model's weights are declared by shape only, so it can be compiled and "
                           "estimated but not run", where=self._graph_name,
                           hint="use hal estimate, or build the model with real weights")
        # (an output that is a weight, or a kept weight-only result, leaves as a copy: run_list's own)
        return self.program.run(feeds)

    def trace(self) -> list[dict[str, Any]]:
        return [dict(e, args=dict(e["args"])) for e in self._events]

    def serialize(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)
