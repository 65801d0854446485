"""The CompileReport of an LPU program: what the schedule says the chips would do."""

from __future__ import annotations

from collections import defaultdict

from hal.graph.ir import Graph
from hal.numerics import Policy
from hal.specs import CompileOptions, CompileReport, KernelReport, MemoryLevel
from hal_lpu.cost import Machine
from hal_lpu.partition import Placement
from hal_lpu.schedule import SLICES, Instruction, ProgramBuilder

GRANULARITY = ("one instruction group per node (MEM read, slice instruction, MEM write) with repeat counts over "
               "320-byte vectors or 320x320 MXM blocks; one group per shard of a node split over chips; one C2C "
               "send per value crossing chips")


#: the details ``build_report`` adds to a group's own in its kernel (``LpuExecutable.groups`` takes
#: them off again to make the group)
KERNEL_ONLY_DETAILS = frozenset({"chip", "cycles", "start_cycle"})


def critical_path(instructions: list[Instruction]) -> dict[str, int]:
    """Cycles of the longest chain, by what they were spent on (slices; C2C = chip-to-chip hops)."""
    if not instructions:
        return {}
    cur = max(instructions, key=lambda i: (i.end, i.id))
    spent: dict[str, int] = defaultdict(int)
    while True:
        preds = [instructions[d] for d in cur.deps] + [instructions[s] for s in cur.streams]
        if not preds:
            spent[cur.slice] += cur.end
            break
        p = max(preds, key=lambda i: (i.end, i.id))
        spent[cur.slice] += cur.end - p.end
        cur = p
    return dict(sorted(spent.items()))


def _bound(unit: str, issue: int, latency: int, install_bound: bool) -> str:
    if unit == "C2C":
        return "interconnect"
    if latency >= issue:
        return "latency"
    if unit in ("MEM", "SXM") or install_bound:
        return "memory"
    return "compute"


def build_report(graph: Graph, options: CompileOptions, policy: Policy, machine: Machine, placement: Placement,
                 builder: ProgramBuilder, cycles: int, version: str, target: str, load_time_nodes: int
                 ) -> CompileReport:
    ins = builder.instructions
    sec = machine.seconds
    chips = placement.chips
    kernels = []
    busy: dict[str, int] = defaultdict(int)
    chip_first = [cycles] * chips
    chip_last = [0] * chips
    c2c_bytes = 0
    for i in ins:
        busy[i.slice] += i.issue
        if i.issue or i.latency:
            chip_first[i.chip] = min(chip_first[i.chip], i.start)
            chip_last[i.chip] = max(chip_last[i.chip], i.end)
        if i.slice == "C2C":
            c2c_bytes += i.bytes
    for g in builder.groups:
        members = [ins[k] for k in g.instructions]
        start = min(x.start for x in members)
        end = max(x.end for x in members)
        main = next((x for x in members if x.slice == g.unit), members[0])
        install_bound = g.unit == "MXM" and main.issue == machine.stream_cycles(main.bytes) and main.issue > 1
        kernels.append(KernelReport(
            name=g.name, nodes=g.nodes, op_types=g.op_types, unit=g.unit, flops=g.flops, bytes=g.bytes,
            time_s=sec(end - start), start_s=sec(start),
            bound=_bound(g.unit, sum(x.issue for x in members), sum(x.latency for x in members), install_bound),
            details={"chip": g.chip, "cycles": end - start, "start_cycle": start, **g.details}))
    qdq = {n for g in builder.groups if g.details.get("quantization") for n in g.nodes}
    latency = sec(cycles)
    span = max((last - first for first, last in zip(chip_first, chip_last) if last > first), default=cycles)
    meta = graph.metadata
    phase = meta.get("hal.phase")
    tokens = int(meta.get("hal.tokens") or meta.get("hal.batch") or 0) if phase else 0
    sram_peak = max(placement.sram) if placement.sram else 0
    util = {s: round(busy.get(s, 0) / (cycles * chips), 6) if cycles else 0.0 for s in SLICES}
    details = {
        "cycles": cycles,
        "clock_hz": machine.clock_hz,
        "chips": chips,
        "slice_utilisation": util,
        "sram_used_per_chip": placement.sram,
        "sram_weights_per_chip": placement.weights,
        "sram_bytes_per_chip": machine.sram_bytes,
        "weights_bytes": sum(placement.weights),
        "c2c_bytes": c2c_bytes,
        "c2c_sends": sum(1 for g in builder.groups if g.kind == "send"),
        "split_nodes": sum(1 for g in builder.groups if g.kind == "gather"),
        "activation_split_nodes": len(placement.act_axis),
        "c2c_striped_sends": sum(1 for i in builder.instructions
                                 if i.slice == "C2C" and machine.c2c_stripes(i.bytes) > 1),
        "instructions": len(ins),
        "instruction_groups": len(builder.groups),
        "load_time_nodes": load_time_nodes,
        "granularity": GRANULARITY,
        "critical_path_cycles": critical_path(ins),
        "pipeline_stage_cycles": span,
        "policy": {"matmul_inputs": policy.matmul_inputs, "matmul_weights": policy.matmul_weights,
                   "storage": policy.storage, "accumulation": "fp32",
                   # an explicitly quantized model's GEMMs the MXM runs in int8 (hal_lpu.lowering.int8_products)
                   **({"int8_qdq_gemms": len(qdq)} if qdq else {})},
        "energy_model": "chips x tdp_w x latency (every chip powered for the whole run)",
    }
    if phase:
        details.update({"phase": phase, "tokens": tokens})
    return CompileReport(
        target=target, plugin_version=version, model=graph.name, model_hash=graph.model_hash,
        precision=options.precision, shape_only=graph.shape_only, node_count=len(graph.nodes),
        kernel_count=len(kernels), latency_s=latency,
        throughput_per_s=machine.clock_hz / span if span else None,
        tokens_per_s=tokens / latency if tokens and latency else None,
        ttft_s=latency if phase == "prefill" else None,
        memory=[MemoryLevel(level="SRAM", bytes=sram_peak, capacity=machine.sram_bytes, per_device=True)],
        peak_memory_bytes=sram_peak, devices=chips, energy_j=machine.energy_j(cycles, chips),
        kernels=kernels, transfers_bytes=c2c_bytes, details=details)
