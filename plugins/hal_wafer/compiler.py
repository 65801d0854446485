"""Compile for the wafer: stages, a mode that fits, placement on rectangles, routes, the pipeline's time.

Modes, in the order they are tried:

* **layer-pipelined** on ``wafers`` wafers (default, or ``"auto"``: the fewest that hold the model):
  every stage's weights and state live in its rectangle's SRAM; stages are split over the wafers
  in pipeline order and the wafers are chained over the system links;
* **weight streaming** (``weight_streaming="auto"`` when pipelining does not fit one wafer, or
  ``"on"``): each stage runs on the whole wafer while its weights stream in from external memory;
  only activations and state (e.g. the KV cache) stay on the wafer.

A model that fits in no allowed mode is a ResourceError that gives the bytes and PEs it needs.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Mapping
from typing import Any

from hal.errors import CompileError, ResourceError
from hal.graph.ir import Graph
from hal.numerics import Policy, policy
from hal.perf.trace import event
from hal.specs import (
    Capability,
    CompileOptions,
    CompileReport,
    KernelReport,
    MemoryLevel,
    TargetSpec,
    builtin_sheet,
    load_spec_sheet,
)
from hal.target import kernel_capability
from hal_wafer.cost import (
    StageCost,
    WaferParams,
    energy,
    pipeline_times,
    policy_itemsizes,
    stage_cost,
    streaming_time,
    transfer_time,
    value_bytes,
)
from hal_wafer.executor import WaferExecutable
from hal_wafer.placement import Placement, Region, StageNeed, min_wafers, place_wafer, split_over_wafers
from hal_wafer.routing import route_all
from hal_wafer.stages import StageInfo, analyse

__version__ = "0.1.0"

#: the wafer's own number formats: bf16 weights and FMAC operands with fp32 accumulation, activations kept in
#: fp32 between kernels. fp16 (precision="fp16") overflows the light CNNs' activations; bf16 activations cost
#: transformer logits more than the native tolerance allows.
NATIVE = Policy("native", matmul_inputs="bf16", matmul_weights="bf16", storage="fp32")

OPTIONS = {
    "wafers": "CS-3 systems (wafers) to pipeline the model over: an integer, or 'auto' for the fewest that hold "
              "it (same as devices=)",
    "weight_streaming": "'auto' (default): stream weights from external memory when the model does not fit one "
                        "wafer; 'on': always stream; 'off': never",
    "fusion": "'none' (default): every ONNX op is its own kernel on its region; 'elementwise': an elementwise op "
              "whose operands sit where its output does rides with the kernel before it",
}


class WaferTarget:
    """A Cerebras WSE-class wafer-scale engine, emulated: spatial dataflow over a 2-D mesh of PEs."""

    def __init__(self, overrides: Mapping[str, float] | None = None):
        """``overrides`` replaces hardware numbers of the sheet (e.g. a small mesh for tests)."""
        spec = load_spec_sheet(builtin_sheet("wafer.toml"), version=__version__, options=OPTIONS)
        for key, value in (overrides or {}).items():
            if key not in spec.hardware:
                raise KeyError(f"spec sheet of target 'wafer' has no hardware number {key!r}")
            spec.hardware[key] = spec.hardware[key].model_copy(
                update={"value": float(value), "note": f"overridden (sheet value {spec.hardware[key].value})"})
        self.spec: TargetSpec = spec
        self.params = WaferParams.from_spec(spec)

    def capability(self, graph: Graph, options: CompileOptions) -> Capability:
        return kernel_capability(graph, self.spec)

    def compile(self, graph: Graph, options: CompileOptions) -> WaferExecutable:
        t0 = time.perf_counter()
        p = self.params
        wafers_opt, streaming_opt, fusion = _parse_options(options)
        most = int(self.spec.hw("max_cluster_systems"))
        if isinstance(wafers_opt, int) and wafers_opt > most:  # a route per wafer pair: 10**20 had never ended
            raise ResourceError(f"{wafers_opt:,} wafers asked for; a cluster joins at most {most:,} systems",
                                where="target 'wafer'", hint=f"devices (or wafers=) at most {most:,}, or 'auto'")
        pol = policy(options.precision, NATIVE)
        stages = analyse(graph, pol)
        needs = [StageNeed(s.name, s.min_pes(p), s.work_pe_s_for(p), s.waves) for s in stages]
        mode, wafers, regions = _choose_mode(stages, needs, p, wafers_opt, streaming_opt)
        placement = Placement(mode, wafers, (p.mesh_w, p.mesh_h), regions, [s.name for s in stages])
        costs = [stage_cost(s.works, regions[s.name].w, regions[s.name].h, p, fusion) for s in stages]
        times = [c.time_s for c in costs]
        stream_s = [0.0] * len(stages)
        route_stats = None
        edges: list[tuple[int, int, float]] = []
        act_size = policy_itemsizes(pol)[0]
        if mode == "weight_streaming":
            stream_s = [streaming_time(s.stream_bytes, p) for s in stages]
            times = [max(t, x) for t, x in zip(times, stream_s)]
            starts, latency = pipeline_times(times, [(i - 1, i, 0.0) for i in range(1, len(stages))])
            interval = latency
        else:
            index = {s.name: s.index for s in stages}
            producer = {o: s.name for s in stages for o in s.outputs}
            tensor_edges = [(t, producer[t], s.name, value_bytes(graph, t, act_size))
                            for s in stages for t in s.inputs if t in producer and producer[t] != s.name]
            slowest = max(times, default=0.0)
            routes, route_stats = route_all(placement, tensor_edges, p, slowest)
            placement.routes = routes
            edges = [(index[r.src], index[r.dst], transfer_time(r.nbytes, r.hops, r.lanes, p, r.cross_wafer))
                     for r in routes]
            starts, latency = pipeline_times(times, edges)
            link_s = route_stats.max_link_bytes / p.link_bw if route_stats.links_used else 0.0
            io_s = max((r.nbytes / p.io_bw for r in routes if r.cross_wafer), default=0.0)
            interval = max(slowest, link_s, io_s)
        report = self._report(graph, options, stages, costs, times, starts, stream_s, latency, interval, placement,
                              route_stats, fusion)
        events = _events(stages, placement, times, starts, stream_s, edges)
        exe = WaferExecutable(None if graph.shape_only else graph, [(s.name, s.nodes) for s in stages], pol,
                              report, placement, events, graph.name)
        report.compile_time_s = time.perf_counter() - t0
        return exe

    def load(self, blob: bytes) -> WaferExecutable:
        exe = pickle.loads(blob)
        if not isinstance(exe, WaferExecutable):
            raise CompileError("the blob is not a wafer executable", where="target 'wafer'")
        return exe

    # -- report ------------------------------------------------------------------------------
    def _report(self, graph: Graph, options: CompileOptions, stages: list[StageInfo], costs: list[StageCost],
                times: list[float], starts: list[float], stream_s: list[float], latency: float, interval: float,
                placement: Placement, route_stats: Any, fusion: str) -> CompileReport:
        p = self.params
        streaming = placement.mode == "weight_streaming"
        kernels = []
        for s, c, t, st, xs in zip(stages, costs, times, starts, stream_s):
            r = placement.regions[s.name]
            bound = "memory" if streaming and xs >= c.time_s else c.bound
            kernels.append(KernelReport(
                name=s.name, nodes=s.nodes, op_types=s.op_types, unit=r.unit, flops=s.flops, bytes=s.bytes,
                time_s=t, start_s=st, bound=bound,
                details={"wafer": r.wafer, "pes": r.pes, "kernels": c.kernels, "work_s": c.compute_s,
                         "wavefront_s": c.wave_s, "stream_s": c.stream_s, "weight_stream_s": xs,
                         "weights_bytes": s.weight_bytes, "sram_bytes": s.sram_bytes,
                         "sram_capacity_bytes": int(r.pes * p.pe_usable_bytes)}))
        per_wafer = [0] * placement.wafers
        if streaming:
            resident = sum(s.state_bytes for s in stages) + max(
                (2 * s.weight_bytes + s.act_bytes for s in stages), default=0)
            per_wafer[0] = resident
        else:
            for s in stages:
                per_wafer[placement.regions[s.name].wafer] += s.sram_bytes
        wafer_sram = int(p.mesh_w * p.mesh_h * p.pe_sram_bytes)
        memory = [MemoryLevel(level="SRAM", bytes=max(per_wafer, default=0), capacity=wafer_sram, per_device=True)]
        weights = sum(s.weight_bytes for s in stages)
        if streaming:
            memory.append(MemoryLevel(level="external (MemoryX)", bytes=weights, capacity=int(p.external_bytes),
                                      per_device=False))
        meta = graph.metadata
        phase = meta.get("hal.phase")
        batch = int(meta.get("hal.batch", "1") or 1)
        tokens = int(meta.get("hal.tokens", str(batch)) or batch)
        tokens_per_s = ttft = None
        if latency > 0 and phase == "decode":
            tokens_per_s = batch / latency
        elif latency > 0 and phase == "prefill":
            ttft = latency
            tokens_per_s = tokens / latency
        slowest = max(range(len(stages)), key=lambda i: times[i], default=None)
        pes_used = placement.pes_used
        details: dict[str, Any] = {
            "mode": placement.mode, "wafers": placement.wafers, "fusion": fusion,
            "mesh": f"{p.mesh_w}x{p.mesh_h}", "pes_used": pes_used, "pes_total": p.wafer_pes * placement.wafers,
            "stage_count": len(stages), "stage_times_s": {s.name: t for s, t in zip(stages, times)},
            "bottleneck_stage": stages[slowest].name if slowest is not None else None,
            "pipeline_interval_s": interval, "kernels_launched": sum(c.kernels for c in costs),
            "weights_bytes": weights, "sram_bytes_per_wafer": per_wafer, "sram_capacity_per_wafer": wafer_sram,
            "host_io": "feeds are resident in their stage's SRAM before a run; host transfers are not timed",
        }
        if streaming:
            details["weight_stream_s"] = sum(stream_s)
            details["external_bandwidth_bytes_per_s"] = p.io_bw
        if route_stats is not None:
            details.update({
                "routes": len(placement.routes), "fabric_hops": route_stats.total_hops,
                "cross_wafer_routes": sum(1 for r in placement.routes if r.cross_wafer),
                "links_used": route_stats.links_used, "max_link_bytes": route_stats.max_link_bytes,
                "link_utilisation": {"max": route_stats.link_utilisation_max,
                                     "mean": route_stats.link_utilisation_mean},
                "oversubscribed_links": route_stats.oversubscribed_count,
                "oversubscribed_worst": route_stats.oversubscribed,
                "max_routes_per_link": route_stats.max_link_routes, "routing_colors": p.colors,
                "color_oversubscribed_links": route_stats.color_oversubscribed_count})
        return CompileReport(
            target=self.spec.name, plugin_version=__version__, model=graph.name, model_hash=graph.model_hash,
            precision=options.precision, shape_only=graph.shape_only, node_count=len(graph.nodes),
            kernel_count=len(kernels), latency_s=latency, throughput_per_s=(1.0 / interval) if interval > 0 else None,
            tokens_per_s=tokens_per_s, ttft_s=ttft, memory=memory,
            peak_memory_bytes=int(max(per_wafer, default=0)), devices=placement.wafers,
            energy_j=energy(latency, placement.wafers, p), kernels=kernels,
            transfers_bytes=int(sum(r.nbytes for r in placement.routes)), details=details)


def _parse_options(options: CompileOptions) -> tuple[int | str | None, str, str]:
    opts = options.target_options
    wafers: Any = opts.get("wafers")
    if wafers is not None and options.devices is not None and wafers != options.devices:
        raise CompileError(f"wafers={wafers!r} and devices={options.devices} disagree", where="target 'wafer'",
                           hint="give the wafer count once")
    wafers = wafers if wafers is not None else options.devices
    if isinstance(wafers, str) and wafers.strip().isdigit():  # from a command line
        wafers = int(wafers)
    if wafers is not None and wafers != "auto":
        if isinstance(wafers, bool) or not isinstance(wafers, int) or wafers < 1:
            raise CompileError(f"wafers must be a positive integer or 'auto', not {wafers!r}", where="target 'wafer'")
    ws = opts.get("weight_streaming", "auto")
    if isinstance(ws, bool):
        ws = "on" if ws else "off"
    ws = {"true": "on", "false": "off", "1": "on", "0": "off"}.get(str(ws).lower(), str(ws).lower())
    if ws not in ("auto", "on", "off"):
        raise CompileError(f"weight_streaming must be 'auto', 'on' or 'off', not {ws!r}", where="target 'wafer'")
    if ws == "on" and isinstance(wafers, int) and wafers > 1:
        raise CompileError("weight streaming runs on one wafer; wafers > 1 pipelines instead",
                           where="target 'wafer'", hint="drop wafers=, or set weight_streaming='off'")
    fusion = opts.get("fusion", "none")
    if fusion not in ("none", "elementwise"):
        raise CompileError(f"fusion must be 'none' or 'elementwise', not {fusion!r}", where="target 'wafer'")
    return wafers, ws, fusion


def _choose_mode(stages: list[StageInfo], needs: list[StageNeed], p: WaferParams, wafers_opt: int | str | None,
                 ws: str) -> tuple[str, int, dict[str, Region]]:
    gib = 2.0 ** 30
    tried = []
    if ws != "on":
        lower = min_wafers(needs, p)
        # Left out, the count is the fewest wafers that hold the model (the core's rule for devices=None).
        counts = range(lower, 2 * lower + 3) if wafers_opt in ("auto", None) else [wafers_opt]
        # A stage lives on one wafer: when one alone outgrows a wafer no count helps (and a declared
        # weight of 2**62 elements would make ``counts`` astronomically long).
        fits = all(n.min_pes <= p.wafer_pes for n in needs)
        for n in counts if fits else ():
            groups = split_over_wafers(needs, n, p)
            if groups is None:
                continue
            regions: dict[str, Region] = {}
            for w, group in enumerate(groups):
                placed = place_wafer(group, w, p)
                if placed is None:
                    break
                regions.update(placed)
            else:
                return "pipelined", n, regions
        need = sum(n.min_pes for n in needs)
        biggest = max(needs, key=lambda n: n.min_pes, default=None)
        tried.append(f"layer-pipelined on {_counts_text(counts)} wafer(s): the stages' weights and state need "
                     f"{need:,} PEs ({need * p.pe_usable_bytes / gib:.2f} GiB) against {p.wafer_pes:,} PEs "
                     f"({p.wafer_sram_bytes / gib:.2f} GiB usable) per wafer"
                     + (f"; largest stage {biggest.name!r} needs {biggest.min_pes:,} PEs" if biggest else ""))
    if ws == "on" or (ws == "auto" and wafers_opt in (None, 1)):
        state = sum(s.state_bytes for s in stages)
        step = max((2 * s.weight_bytes + s.act_bytes for s in stages), default=0)
        weights = sum(s.weight_bytes for s in stages)
        if state + step <= p.wafer_sram_bytes and weights <= p.external_bytes:
            full = Region(0, 0, 0, p.mesh_w, p.mesh_h)
            return "weight_streaming", 1, {s.name: full for s in stages}
        tried.append(f"weight streaming: resident state {state / gib:.2f} GiB + the largest stage's double-buffered "
                     f"weights and activations {step / gib:.2f} GiB against {p.wafer_sram_bytes / gib:.2f} GiB of "
                     f"wafer SRAM; weights {weights / gib:.2f} GiB against {p.external_bytes / gib:.0f} GiB external")
    raise ResourceError("the model fits in no allowed mode: " + "; ".join(tried), where="target 'wafer'",
                        hint="allow more wafers (wafers=N or 'auto'), allow weight_streaming, or use a smaller "
                             "model / precision")


def _counts_text(counts: range | list[Any]) -> str:
    """The wafer counts tried, short: ``2/3/4`` or ``2..9`` (``counts`` may be astronomically long)."""
    if isinstance(counts, range) and len(counts) > 4:
        return f"{counts[0]:,}..{counts[-1]:,}"
    return "/".join(map(str, counts))


def _events(stages: list[StageInfo], placement: Placement, times: list[float], starts: list[float],
            stream_s: list[float], edges: list[tuple[int, int, float]]) -> list[dict[str, Any]]:
    out = []
    for s, t, st, xs in zip(stages, times, starts, stream_s):
        r = placement.regions[s.name]
        out.append(event(s.name, st, t, pid=f"wafer{r.wafer}", tid=f"region {r.unit}", cat="stage",
                         args={"nodes": len(s.nodes), "pes": r.pes, "flops": s.flops, "weight_stream_s": xs}))
    for (a, _, t), route in zip(edges, placement.routes):
        out.append(event(f"{route.tensor}: {route.src} -> {route.dst}", starts[a] + times[a], t,
                         pid=f"wafer{placement.regions[route.src].wafer}", tid="fabric", cat="route",
                         args={"bytes": route.nbytes, "hops": route.hops, "lanes": route.lanes,
                               "cross_wafer": route.cross_wafer}))
    return out

