"""Compile for a GPU: lower to kernels, shape them, place them on devices, cost them, build the program.

The same code serves every GPU sheet (``gpu`` = H100 SXM, ``gpu-h200`` = H200 SXM, ``gpu-mi300x`` =
MI300X): the numbers are the sheet's, the decisions (fusion, tiles, tensor parallelism) follow from them.
"""

from __future__ import annotations

import math
import pickle
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hal.errors import CompileError, ResourceError
from hal.graph.ir import PARTITION_KEY, Graph
from hal.numerics import ITEMSIZE, Policy, is_float
from hal.numerics import policy as precision_policy
from hal.perf.memory import MemoryPlan, plan_memory
from hal.perf.opcount import costed
from hal.perf.opcount import shape as static_shape
from hal.specs import (
    Capability,
    CompileOptions,
    CompileReport,
    KernelReport,
    MemoryLevel,
    NodeGroup,
    load_spec_sheet,
)
from hal.target import kernel_capability
from hal_gpu.cost import KernelCost, Sizes, kernel_cost, timeline
from hal_gpu.executor import GpuExecutable, build_program
from hal_gpu.fusion import Kernel, plan_kernels
from hal_gpu.hardware import Gpu
from hal_gpu.parallel import Requirement, Sharding, TensorParallel
from hal_gpu.patterns import GEMM_OPS, GraphIndex, is_cache_append
from hal_gpu.tiling import parse_tile

__version__ = "0.1.0"

#: what the tensor cores use when asked for the target's own numerics: TF32 inputs for fp32
#: GEMMs (16-bit models keep their 16-bit inputs), fp32 accumulation and fp32 storage
NATIVE = Policy("native", matmul_inputs="tf32", matmul_weights="tf32", storage="fp32")

#: the fp8 variant a sheet's matrix cores read where it is not OCP e4m3fn (448 at most), by sheet
#: name: CDNA 3's is e4m3fnuz (240 at most, no infinities; the MI300X sheet's peak_flops_fp8 note)
FP8_FORMAT = {"gpu-mi300x": "fp8_fnuz"}

OPTIONS = {
    "cuda_graphs": "bool: capture the program as one CUDA graph (one launch, per-node gaps) instead of "
                   "launching each kernel from the host (default False)",
    "tile": "GEMM tile 'BMxBNxBK' for every GEMM kernel instead of the per-kernel choice; its BN is also "
            "the fused attention kernel's key block",
}

_DTYPE_FORMAT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64", "int8": "int8",
                 "uint8": "int8", "float8_e4m3fn": "fp8", "float8_e5m2": "fp8"}


class _Formats:
    """Storage sizes and tensor-core formats under one precision policy."""

    def __init__(self, graph: Graph, pol: Policy, keep_wide: set[int], int8: set[int] = frozenset()):
        self.graph, self.policy, self.keep_wide, self.int8 = graph, pol, keep_wide, int8
        self.gemm_weights: dict[str, int] = {}
        for i, n in enumerate(map(costed, graph.nodes)):
            w = 3 if n.op_type in ("QLinearMatMul", "QLinearConv", "QGemm") else 1  # after A's scale and zero point
            if n.op_type in GEMM_OPS and len(n.inputs) > w and n.inputs[w] in graph.initializers:
                self.gemm_weights[n.inputs[w]] = i
        # float weights (a DequantizeLinear's, folded) that only int8 kernels read: held as int8 codes
        operands = {(i, pos) for i in int8 for pos in (0, 1)}
        read = {}
        for i, n in enumerate(graph.nodes):
            for pos, x in enumerate(n.inputs):
                if x in graph.initializers:
                    read[x] = read.get(x, True) and (i, pos) in operands
        self.int8_weights = {x for x, only in read.items() if only}

    def _narrow(self, dtype: np.dtype | None, fmt: str) -> int:
        if dtype is None:
            return 4
        if not is_float(dtype) or self.policy.exact:
            return dtype.itemsize
        return min(dtype.itemsize, ITEMSIZE[fmt])

    def value(self, name: str) -> float:
        info = self.graph.values.get(name)
        if info is None:
            return 0.0
        n = 1
        for d in static_shape(self.graph, name):
            n *= d
        return float(n * self._narrow(info.dtype, self.policy.storage))

    def weight(self, name: str) -> float:
        w = self.graph.initializers[name]
        if name in self.int8_weights and not self.policy.exact:
            return float(w.size)  # int8 codes (their scales: one per tensor or output channel)
        fmt = self.policy.storage
        i = self.gemm_weights.get(name)
        if i is not None:
            fmt = self.policy.storage if i in self.keep_wide else self.policy.matmul_weights
        return float(w.size * self._narrow(np.dtype(w.dtype), fmt))

    def act_itemsize(self) -> int:
        return 4 if self.policy.exact else ITEMSIZE[self.policy.storage]

    def gemm(self, idx: int) -> str:
        """The input format the tensor cores run GEMM node ``idx`` in."""
        node = self.graph.nodes[idx]
        info = self.graph.values.get(node.inputs[0]) or self.graph.values.get(node.outputs[0])
        own = _DTYPE_FORMAT.get(info.dtype.name, "fp32") if info is not None and info.dtype is not None else "fp32"
        if self.policy.exact:
            return own
        if idx in self.int8:
            return "int8"  # explicit Q/DQ: an int8 kernel whatever the precision (TensorRT's)
        fmt = self.policy.storage if idx in self.keep_wide else self.policy.matmul_inputs
        if ITEMSIZE.get(own, 4) < ITEMSIZE[fmt] or own == "fp64":
            return own  # 16-bit models are not widened to TF32
        return fmt


def _logits_gemms(graph: Graph, ix: GraphIndex) -> set[int]:
    """GEMMs whose result (through views) is an output nothing in the graph reads: the logits
    projection, which FP8/INT8 recipes (TensorRT-LLM, ModelOpt) leave in 16-bit."""
    out = set()
    for o in graph.outputs:
        if ix.consumers.get(o.name):
            continue
        cur = o.name
        while cur in ix.producer:
            n = graph.nodes[ix.producer[cur]]
            if n.op_type in ("MatMul", "Gemm"):
                out.add(ix.producer[cur])
                break
            if n.op_type not in ("Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Transpose"):
                break
            cur = n.inputs[0]
    return out


def _counts_text(counts: list[int]) -> str:
    """1, 2, 4 or 8."""
    words = [str(c) for c in counts]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _unusable_what(tp: TensorParallel, devices: int, model: str) -> str:
    """Why tensor parallelism cannot use ``devices`` GPUs: the head counts and widths it does not divide."""
    blocking = tp.blocking(devices)
    if not blocking:
        gemms = [r for b in tp.blocks for r in b.requirements]
        why = (f"nothing in it splits over {devices}: the only GEMMs it could split feed nothing but the "
               f"graph's outputs (an LM head, a classifier), and {devices} does not divide " + _listed(gemms)
               if gemms else
               "it has no GEMM with a 2-D weight for tensor parallelism to split (only MatMul and Gemm split)")
        return f"tensor parallelism cannot use {devices} GPUs for {model!r}: {why}"
    return (f"tensor parallelism cannot use {devices} GPUs for {model!r}: it splits attention by whole heads "
            f"and every attention and MLP block's weights by whole columns, and {devices} does not divide "
            + _listed(blocking))


def _listed(reqs: list[Requirement], most: int = 4) -> str:
    """The distinct extents of ``reqs``, head counts first, each at its first place."""
    seen: dict[int, Requirement] = {}
    for r in sorted(reqs, key=lambda r: r.what != "heads"):  # stable: each extent at its first place
        seen.setdefault(r.extent, r)
    order = sorted(seen.values(), key=lambda r: (r.what != "heads", -r.extent))
    text = ", ".join(r.describe() for r in order[:most])
    return text + (f" (and {len(order) - most} more)" if len(order) > most else "")


def _unusable_hint(tp: TensorParallel, devices: int, usable: list[int], fits: Callable[[int], bool],
                   most: int) -> str:
    """The counts that are usable, and the nearest of them either side of ``devices`` that fit in HBM."""
    widths = tp.widths()
    whence = f" (the divisors of {math.gcd(*widths)} up to the {most} of one node)" if widths else ""
    text = f"tensor parallelism can use {_counts_text(usable)} GPUs for this model{whence}"
    below = next((d for d in reversed(usable) if d < devices and fits(d)), None)
    above = next((d for d in usable if d > devices and fits(d)), None)
    near = [f"devices={d}" for d in (below, above) if d is not None]
    if near:
        which = "the usable counts" if len(near) > 1 else "the usable count"
        return (f"{text}; use {' or '.join(near)} ({which} nearest {devices} whose per-GPU share fits in HBM), "
                "or leave devices unset to take the fewest that fit")
    return f"{text}; none of them fits the model in HBM at this precision: choose a narrower one such as fp8"


class GpuTarget:
    """A GPU described by one spec sheet: kernels, fusion, waves, HBM plan, tensor parallelism."""

    def __init__(self, sheet: str | Path):
        self.spec = load_spec_sheet(sheet, version=__version__, options=dict(OPTIONS))
        self.gpu = Gpu.from_spec(self.spec)
        # capability's kernel plan, handed to the compile of the same graph object that usually follows
        # (planning a 10k-node graph takes ~85 ms); taken once, so no compile sees another's kernels
        self._planned: tuple[weakref.ref[Graph], int, list[Kernel]] | None = None
        self._planned_lock = threading.Lock()

    def _plan(self, graph: Graph, *, keep: bool) -> list[Kernel]:
        with self._planned_lock:
            held, self._planned = self._planned, None
        if held is not None and held[0]() is graph and held[1] == len(graph.nodes):
            return held[2]
        kernels = plan_kernels(graph)
        if keep:
            with self._planned_lock:
                self._planned = (weakref.ref(graph, self._forget), len(graph.nodes), kernels)
        return kernels

    def _forget(self, ref: weakref.ref[Graph]) -> None:
        """The planned graph is gone (its compile came from the cache, or never came): drop its kernels."""
        with self._planned_lock:
            if self._planned is not None and self._planned[0] is ref:
                self._planned = None

    # -- capability ------------------------------------------------------------------------
    def capability(self, graph: Graph, options: CompileOptions) -> Capability:
        cap = kernel_capability(graph, self.spec)
        refused = {r.node for r in cap.refused}
        try:
            kernels = self._plan(graph, keep=not refused)
        except Exception:  # capability must answer even where the planner would not
            return cap
        groups = []
        for k in kernels:
            names = [graph.nodes[i].name for i in k.nodes if graph.nodes[i].name not in refused]
            if names:
                groups.append(NodeGroup(nodes=names, label=k.name))
        return Capability(target=self.spec.name, groups=groups, refused=cap.refused)

    # -- compile ---------------------------------------------------------------------------
    def _options(self, options: CompileOptions) -> tuple[bool, tuple[int, int, int] | None]:
        where = f"target {self.spec.name!r}"
        if options.precision not in self.spec.precisions:
            raise CompileError(f"precision {options.precision!r} is not offered", where=where,
                               hint=f"it offers: {', '.join(self.spec.precisions)}")
        unknown = sorted(set(options.target_options) - set(OPTIONS))
        if unknown:
            raise CompileError(f"unknown option(s) {', '.join(unknown)}", where=where,
                               hint="its options: " + "; ".join(f"{k}: {v}" for k, v in OPTIONS.items()))
        graphs = options.target_options.get("cuda_graphs", False)
        if not isinstance(graphs, (bool, np.bool_)):
            raise CompileError(f"cuda_graphs must be True or False, not {graphs!r}", where=where)
        tile = options.target_options.get("tile")
        if tile is not None:
            try:
                tile = parse_tile(tile)
            except ValueError as e:
                raise CompileError(str(e), where=where, hint="e.g. tile='128x256x64'") from None
        return bool(graphs), tile

    def compile(self, graph: Graph, options: CompileOptions) -> GpuExecutable:
        t0 = time.perf_counter()
        cuda_graphs, tile = self._options(options)
        gpu = self.gpu
        pol = precision_policy(options.precision, NATIVE)
        ix = GraphIndex(graph)
        kernels = self._plan(graph, keep=False)
        keep_wide = _logits_gemms(graph, ix) if pol.matmul_weights in ("fp8", "int8") else set()
        fmt = _Formats(graph, pol, keep_wide, {i for k in kernels for i in k.int8})
        appended, cache_inputs = {}, set()
        for n in graph.nodes:
            if is_cache_append(n, ix):
                cache_inputs.add(n.inputs[0])
                appended[n.outputs[0]] = sum(fmt.value(x) for x in n.inputs[1:] if x)
        sizes = Sizes(fmt.value, fmt.weight, appended, cache_inputs)
        sh, plan, need = self._place(graph, kernels, options.devices, sizes)
        overhead = gpu.graph_node_overhead_s if cuda_graphs else gpu.launch_overhead_s
        costs = [kernel_cost(k, graph, gpu, sizes, sh, fmt.gemm, fmt.act_itemsize(), tile, overhead)
                 for k in kernels]
        tl = timeline(costs, sh, gpu, cuda_graphs)
        report = self._report(graph, options, pol, kernels, costs, tl, sh, plan, need, sizes, cuda_graphs)
        key_blocks = {c.kernel.id: c.launch.tile[1] for c in costs
                      if c.kernel.attention is not None and c.launch is not None and len(c.launch.tile) > 1}
        program = build_program(graph, kernels, pol, keep_wide=keep_wide, key_blocks=key_blocks,
                                fp8=FP8_FORMAT.get(self.spec.name, "fp8"), accumulation=gpu.fp8_accumulation)
        report.compile_time_s = time.perf_counter() - t0
        return GpuExecutable(program, report, tl.events)

    def _memory(self, graph: Graph, kernels: list[Kernel], sizes: Sizes, sh: Sharding) -> MemoryPlan:
        def value(n: str) -> int:
            return int(sizes.appended.get(n, sizes.value(n)) * sh.share(n))

        def weight(n: str) -> int:
            return int(sizes.weight(n) * sh.share(n))

        return plan_memory(graph, [(k.inputs, k.outputs) for k in kernels], value, weight)

    def _place(self, graph: Graph, kernels: list[Kernel], devices: int | None, sizes: Sizes
               ) -> tuple[Sharding, MemoryPlan, list[tuple[int, int]]]:
        """The tensor-parallel degree: the one asked for, else the smallest usable one whose per-device
        HBM fits.

        A count is usable when the plan can split every attention and MLP block over it by whole heads
        and whole columns (``TensorParallel``, whose docstring gives the rule and why): a count asked
        for that is not is a CompileError naming the head counts and widths it does not divide, the
        counts that are usable and the nearest of them that fit; left to the target, only usable
        counts are tried."""
        gpu, where = self.gpu, f"target {self.spec.name!r}"
        tp = TensorParallel(graph, partition=PARTITION_KEY in graph.metadata)
        usable = tp.counts(gpu.max_devices)
        if devices is not None and devices > gpu.max_devices:
            raise ResourceError(f"tensor parallelism over {devices} GPUs is not modelled: one node holds "
                                f"{gpu.max_devices}", where=where,
                                hint=f"use devices <= {gpu.max_devices}; tensor parallelism can use "
                                     f"{_counts_text(usable)} GPUs for this model")
        tried: list[tuple[int, int]] = []
        placed: dict[int, tuple[Sharding, MemoryPlan]] = {}

        def place(d: int) -> tuple[Sharding, MemoryPlan]:
            if d not in placed:
                sh = tp.plan(kernels, d, sizes.value)
                placed[d] = sh, self._memory(graph, kernels, sizes, sh)
                tried.append((d, placed[d][1].peak_bytes))
            return placed[d]

        def fits(d: int) -> bool:
            return place(d)[1].peak_bytes <= gpu.hbm_bytes

        if devices is not None and not tp.usable(devices):
            raise CompileError(_unusable_what(tp, devices, graph.name), where=where,
                               hint=_unusable_hint(tp, devices, usable, fits, gpu.max_devices))
        for d in [devices] if devices else usable:
            sh, plan = place(d)
            if plan.peak_bytes <= gpu.hbm_bytes:
                return sh, plan, list(tried)
        gb = 1e9
        asked = list(tried)
        detail = "; ".join(f"{d} GPU(s): {b / gb:.1f} GB per GPU" for d, b in asked)
        if devices:
            more = next((d for d in usable if d > devices and fits(d)), None)
            hint = (f"use devices={more}, the next count tensor parallelism can use for this model whose "
                    f"per-GPU share fits ({placed[more][1].peak_bytes / gb:.1f} GB per GPU), or choose a "
                    "narrower precision such as fp8" if more is not None else
                    f"no count tensor parallelism can use for this model in one node of {gpu.max_devices} "
                    f"({_counts_text(usable)}) fits: choose a narrower precision such as fp8")
        else:
            hint = (f"choose a narrower precision such as fp8 (tensor parallelism is modelled within one node "
                    f"of {gpu.max_devices} GPUs, and can use {_counts_text(usable)} of them for this model)")
        raise ResourceError(
            f"the model needs more HBM than the allowed GPUs have: {detail}, but each GPU has "
            f"{gpu.hbm_bytes / gb:.1f} GB (weights {sum(sizes.weight(w) for w in graph.initializers) / gb:.1f} GB "
            f"in all at this precision)", where=where, hint=hint)

    def _report(self, graph: Graph, options: CompileOptions, pol: Policy, kernels: list[Kernel],
                costs: list[KernelCost], tl, sh: Sharding, plan: MemoryPlan, tried, sizes: Sizes,
                cuda_graphs: bool) -> CompileReport:
        gpu = self.gpu
        names = [n.name for n in graph.nodes]
        reports = []
        by_kernel = {c.kernel.id: c for c in costs}
        coll_after = {c.after: c for c in tl.collectives if c.after is not None}
        for kc in costs:
            k = kc.kernel
            if not k.launched:
                continue
            details = {"kind": k.kind, "format": kc.fmt, "compute_s": kc.compute_s, "memory_s": kc.memory_s,
                       "overhead_s": kc.overhead_s, "latency_s": kc.latency_s,
                       **({} if kc.launch is None else kc.launch.details()),
                       **{key: v for key, v in kc.extra.items() if key != "start_s"}}
            if k.int8 and kc.fmt == "int8":  # int8 x int8 products, int32 accumulation, scaled after
                details["quantization"] = "int8 (Q/DQ)"
            reports.append(KernelReport(
                name=k.name, nodes=[names[i] for i in k.nodes], op_types=[graph.nodes[i].op_type for i in k.nodes],
                unit=kc.unit, flops=kc.flops, bytes=kc.bytes, time_s=kc.time_s, start_s=kc.extra.get("start_s"),
                bound=kc.bound, details=details))
            c = coll_after.get(k.id)
            if c is not None:
                reports.append(self._collective_report(c, tl))
        for c in tl.collectives:
            if c.after is None:
                reports.append(self._collective_report(c, tl))
        del by_kernel
        latency = tl.latency_s
        meta = graph.metadata
        phase = meta.get("hal.phase")
        batch = int(meta.get("hal.batch", "1") or 1)
        tokens = int(meta.get("hal.tokens", "0") or 0)
        tokens_per_s = ttft = None
        if phase == "decode":
            tokens_per_s = batch / latency if latency > 0 else None
        elif phase == "prefill":
            ttft = latency
            tokens_per_s = tokens / latency if latency > 0 and tokens else None
        act_total = sum(int(sizes.appended.get(o, sizes.value(o)) * sh.share(o)) for k in kernels for o in k.outputs)
        act_total += plan.inputs_bytes
        kv = sum(int(sizes.value(x) * sh.share(x)) for x in sizes.cache_inputs)
        launched = [c for c in costs if c.kernel.launched]
        bound_time = {b: sum(c.time_s for c in launched if c.bound == b) for b in ("compute", "memory", "latency")}
        qdq = 0 if pol.exact else sum(len(k.int8) for k in kernels if k.launched)
        return CompileReport(
            target=self.spec.name, plugin_version=__version__, model=graph.name, model_hash=graph.model_hash,
            precision=options.precision, shape_only=graph.shape_only, node_count=len(graph.nodes),
            kernel_count=len(reports), latency_s=latency, throughput_per_s=1.0 / latency if latency > 0 else None,
            tokens_per_s=tokens_per_s, ttft_s=ttft,
            memory=[MemoryLevel(level="HBM", bytes=int(plan.peak_bytes), capacity=int(gpu.hbm_bytes), per_device=True)],
            peak_memory_bytes=int(plan.peak_bytes), devices=sh.devices, energy_j=tl.energy_j, kernels=reports,
            details={
                "gpu": self.spec.vendor, "cuda_graphs": cuda_graphs, "tensor_parallel": sh.devices,
                "devices_tried": [{"devices": d, "peak_bytes_per_device": b} for d, b in tried],
                "formats": {"matmul_inputs": pol.matmul_inputs, "weights": pol.matmul_weights,
                            "storage": pol.storage,
                            # how fp8 products are summed: the sheet's rule (hal_gpu.accumulation), or fp32
                            **({"fp8_accumulation": {"bits": gpu.fp8_accumulation_bits,
                                                     "block": gpu.fp8_accumulation_block,
                                                     "promotion_blocks": gpu.fp8_promotion_blocks}
                                if gpu.fp8_accumulation.truncates else "fp32"}
                               if pol.matmul_inputs == "fp8" else {}),
                            # an explicitly quantized model's GEMMs run as int8 kernels (hal.graph.quant)
                            **({"int8_qdq_gemms": qdq} if qdq else {})},
                "fused_attention_kernels": sum(1 for k in kernels if k.attention is not None),
                "gpu_kernels": len(launched), "view_groups": len(kernels) - len(launched),
                "launch_overhead_s": tl.launch_overhead_s,
                "allreduce_count": sum(1 for c in tl.collectives if c.kind == "allreduce"),
                "allreduce_s": sum(c.time_s for c in tl.collectives if c.kind == "allreduce"),
                "collective_s": tl.collective_s,
                "weights_bytes_per_device": int(plan.weights_bytes),
                "peak_activation_bytes_per_device": int(plan.peak_activation_bytes),
                "activation_bytes_total": int(act_total), "kv_cache_bytes_per_device": kv,
                "flops_per_device": sum(c.flops for c in launched),
                "hbm_bytes_per_device": sum(c.bytes for c in launched),
                "time_by_bound_s": bound_time, "phase": phase, "batch": batch, "tokens": tokens,
                # output heads this count does not divide: whole on every GPU, and counted so
                **({"tensor_parallel_replicated": list(sh.replicated)} if sh.replicated else {}),
            })

    def _collective_report(self, c, tl) -> KernelReport:
        start = next((s for name, _, s, _, _ in tl.events if name == c.name), None)
        return KernelReport(name=c.name, op_types=["AllReduce" if c.kind == "allreduce" else "AllGather"],
                            unit="links", flops=0.0, bytes=c.bytes, time_s=c.time_s, start_s=start,
                            bound="interconnect", details={"kind": c.kind})

    def load(self, blob: bytes) -> GpuExecutable:
        try:
            exe = pickle.loads(blob)
        except Exception as e:
            raise CompileError(f"cannot read the cached executable: {type(e).__name__}: {e}",
                               where=f"target {self.spec.name!r}", hint="recompile the model") from None
        if not isinstance(exe, GpuExecutable) or exe.report.target != self.spec.name:
            raise CompileError(f"the blob is not a {self.spec.name} executable", where=f"target {self.spec.name!r}",
                               hint="recompile the model for this target")
        return exe


__all__ = ["NATIVE", "OPTIONS", "GpuTarget"]
