"""Compile for the host: the reference kernels (fused where the engine can run several nodes as one
step with the same results), lifetimes planned, nothing modelled."""

from __future__ import annotations

import pickle
import time

from hal.engine import reference_program
from hal.errors import CompileError
from hal.graph.ir import Graph
from hal.perf.memory import plan_memory
from hal.perf.opcount import node_cost, tensor_bytes
from hal.specs import (
    Capability,
    CompileOptions,
    CompileReport,
    KernelReport,
    MemoryLevel,
    builtin_sheet,
    load_spec_sheet,
)
from hal.target import kernel_capability
from hal_cpu.executor import CpuExecutable

__version__ = "0.1.0"


class CpuTarget:
    """Host numpy: exact fp32 and exact integers."""

    def __init__(self) -> None:
        self.spec = load_spec_sheet(builtin_sheet("cpu.toml"), version=__version__)

    def capability(self, graph: Graph, options: CompileOptions) -> Capability:
        return kernel_capability(graph, self.spec)

    def compile(self, graph: Graph, options: CompileOptions) -> CpuExecutable:
        t0 = time.perf_counter()
        if options.precision != "exact":
            raise CompileError(f"the cpu target computes exactly; precision {options.precision!r} is not offered",
                               where="target 'cpu'", hint="use precision='exact' or an accelerator target")
        if options.target_options:
            raise CompileError(f"unknown options {sorted(options.target_options)} for target 'cpu'",
                               where="target 'cpu'", hint="the cpu target takes no target-specific options")
        program = reference_program(graph, fuse=True)
        plan = plan_memory(graph, [(s.ins, [*s.outs, *s.scratch]) for s in program.steps],
                           lambda n: tensor_bytes(graph, n))
        by_name = {n.name: n for n in graph.nodes}
        kernels = []
        for s in program.steps:  # one kernel per step: a fused step lists the nodes it runs
            members = [by_name[x] for x in (s.nodes or (s.label,))]
            costs = [node_cost(n, graph) for n in members]
            kernels.append(KernelReport(name=s.label, nodes=[n.name for n in members],
                                        op_types=[n.op_type for n in members], unit="host",
                                        flops=sum(c.flops for c in costs), bytes=sum(c.bytes for c in costs)))
        report = CompileReport(
            target=self.spec.name, plugin_version=__version__, model=graph.name, model_hash=graph.model_hash,
            precision="exact", shape_only=graph.shape_only, node_count=len(graph.nodes),
            kernel_count=len(kernels), memory=[MemoryLevel(level="host", bytes=plan.peak_bytes)],
            peak_memory_bytes=plan.peak_bytes, devices=1, kernels=kernels,
            details={"weights_bytes": plan.weights_bytes, "peak_activation_bytes": plan.peak_activation_bytes,
                     "flops": sum(k.flops for k in kernels)},
        )
        report.compile_time_s = time.perf_counter() - t0
        return CpuExecutable(program, report)

    def load(self, blob: bytes) -> CpuExecutable:
        exe = pickle.loads(blob)
        if not isinstance(exe, CpuExecutable):
            raise CompileError("the blob is not a cpu executable", where="target 'cpu'")
        return exe
