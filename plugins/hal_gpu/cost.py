"""Time, traffic and energy of the lowered program: a roofline per kernel, laid on one timeline.

Per kernel (per device): FLOPs are its nodes' FLOPs; bytes are what crosses HBM — the values it
reads from other kernels, the weights it streams, the values it writes for other kernels (what a
fused kernel keeps in registers and shared memory never reaches HBM). Time is

    max(FLOPs / (peak[format] x efficiency x wave efficiency x tile efficiency),
        bytes / (HBM bandwidth x efficiency x SM fill))  [+ GEMM latency]  + launch overhead

where a GEMM kernel (convolutions and fused attention included) also pays a fixed latency:
filling its pipeline before the first MMA and writing its last tiles after it, which no amount of
parallel work hides and which sets the time of small GEMMs. A tensor-core GEMM with a row that is
not a multiple of 16 bytes runs at the library's fallback rates (``rows_misaligned``). Launch
overhead is that of an eagerly launched kernel, or — with ``cuda_graphs`` — the gap between nodes
of a captured graph plus one graph launch for the whole program. A row-parallel GEMM is followed
by a ring all-reduce over the links; energy is power x time, the power of each kernel between idle
and TDP by how hard it drives its busiest unit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hal.graph.ir import Graph, Node
from hal.perf.bodies import body_node_runs
from hal.perf.opcount import (
    ATTENTION_OPS,
    attention_causal,
    attention_dims,
    chained,
    costed,
    node_flops,
    recurrent_dims,
    reduced_length,
)
from hal.perf.opcount import shape as static_shape
from hal_gpu.fusion import Kernel
from hal_gpu.hardware import Gpu
from hal_gpu.parallel import Sharding
from hal_gpu.patterns import score_mask
from hal_gpu.tiling import (
    Launch,
    attention_launches,
    causal_tiles,
    gemm_launches,
    live_fraction,
    masked_schedule,
    stream_launch,
    tiles_schedule,
)

#: ops that read only the part of a weight table they output
_PARTIAL_READ = frozenset({"Gather", "Slice", "GatherElements", "GatherND"})


@dataclass
class Sizes:
    """Bytes of values and weights as the program stores them (precision policy applied)."""

    value: Callable[[str], float]       # an activation, whole
    weight: Callable[[str], float]      # a weight, whole
    appended: dict[str, float]          # KV-cache append outputs -> bytes of the appended rows only
    cache_inputs: set[str]              # feeds a KV-cache append extends in place


@dataclass
class KernelCost:
    kernel: Kernel
    flops: float
    bytes: float
    compute_s: float
    memory_s: float
    overhead_s: float
    fmt: str
    unit: str
    launch: Launch | None
    extra: dict = field(default_factory=dict)
    peak: float = 0.0   # FLOP/s of the unit it runs on, for utilisation
    latency_s: float = 0.0  # GPU time beyond the roofline (a GEMM's pipeline fill and drain)

    @property
    def roofline_s(self) -> float:
        return max(self.compute_s, self.memory_s)

    @property
    def busy_s(self) -> float:
        """Time the kernel runs on the GPU."""
        return self.roofline_s + self.latency_s

    @property
    def time_s(self) -> float:
        return self.busy_s + self.overhead_s

    @property
    def bound(self) -> str:
        if self.overhead_s + self.latency_s > self.roofline_s:
            return "latency"
        return "compute" if self.compute_s >= self.memory_s else "memory"


@dataclass
class Collective:
    name: str
    kind: str            # allreduce | allgather
    bytes: float
    time_s: float
    after: int | None    # kernel id it follows (None: end of program)


@dataclass
class Timeline:
    costs: list[KernelCost]
    collectives: list[Collective]
    events: list[tuple[str, str, float, float, dict]]   # (name, lane, start, duration, args)
    latency_s: float
    launch_overhead_s: float
    collective_s: float
    energy_j: float


def _numel(graph: Graph, name: str) -> int:
    return math.prod(static_shape(graph, name))


def _per_device(dim: int, share: float) -> int:
    """One device's part of a split dimension: at least 1, unless there is nothing to split."""
    return max(1, round(dim * share)) if dim else 0


def kernel_bytes(k: Kernel, graph: Graph, sizes: Sizes, sh: Sharding) -> float:
    """HBM bytes one device moves for kernel ``k``."""
    members = [graph.nodes[i] for i in k.nodes]
    total = 0.0
    for x in k.inputs:
        readers = [n for n in members if x in n.inputs]
        if x in sizes.cache_inputs and all(n.op_type == "Concat" and n.inputs[0] == x for n in readers):
            continue  # appended in place: the old rows are not touched
        if x in graph.initializers:
            b = sizes.weight(x)
            if readers and all(n.op_type in _PARTIAL_READ and n.inputs[0] == x for n in readers):
                b = min(b, sum(sizes.value(n.outputs[0]) for n in readers))
        else:
            b = sizes.value(x)
        total += b * sh.share(x)
    for o in k.outputs:
        total += sizes.appended.get(o, sizes.value(o)) * sh.share(o)
    return total


def _gemm_dims(graph: Graph, idx: int) -> tuple[int, int, int, int]:
    """(batch, M, N, K) of one GEMM-class node as the tensor cores see it (convolutions as implicit GEMM;
    onnxruntime's ops as ``costed``: N from the output, as a packed weight's shape does not give it)."""
    n = costed(graph.nodes[idx])
    out = static_shape(graph, n.outputs[0])
    op = n.op_type
    if op in ("Conv", "ConvInteger", "QLinearConv", "ConvTranspose"):
        # implicit GEMM: rows are batch x spatial positions; a transposed conv is the same GEMM run backwards
        transposed = op == "ConvTranspose"
        w = static_shape(graph, n.inputs[3] if op == "QLinearConv" else n.inputs[1])
        rows_of = static_shape(graph, n.inputs[0]) if transposed else out
        group = int(n.attrs.get("group", 1))
        rows = (rows_of[0] if rows_of else 1) * math.prod(rows_of[2:])
        channels = (w[0] if w else 1) // max(1, group)
        reduce = math.prod(w[1:])
        return (group, rows, reduce, channels) if transposed else (group, rows, channels, reduce)
    a = static_shape(graph, n.inputs[0])
    if op in ("Gemm", "QGemm"):
        m, nn = (out[0], out[1]) if len(out) == 2 else (1, 1)
        k = (a[0] if n.attrs.get("transA", 0) else a[-1]) if a else 1
        return 1, m, nn, k
    b = static_shape(graph, n.inputs[3] if op == "QLinearMatMul" else n.inputs[1])
    m = a[-2] if len(a) >= 2 else 1
    k = reduced_length(a, n.attrs)
    nn = (out[-1] if out else 1) if len(b) >= 2 else 1
    total = _numel(graph, n.outputs[0])
    return (0 if total == 0 else max(1, total // max(1, m * nn))), m, nn, k


#: GEMM ops whose operands are plain row-major matrices (convolutions are laid out by the library)
_ROW_MAJOR_GEMMS = frozenset({"MatMul", "Gemm", "MatMulInteger", "QLinearMatMul"})


def rows_misaligned(graph: Graph, idx: int, itemsize: int) -> bool:
    """Whether a row of GEMM ``idx``'s A, B or C is not a multiple of 16 bytes in its tensor-core
    format: cuBLAS then cannot use the Hopper path (TMA copies, wgmma) and falls back to kernels
    that load element by element (on the H200: GPT-2's vocabulary of 50257 made TF32 GEMMs 1.6-2.9x
    slower than 50260; N or K = 4097 made bf16 ones 3.4-6.4x slower than 4096)."""
    n = costed(graph.nodes[idx])
    if n.op_type not in _ROW_MAJOR_GEMMS:
        return False
    _, m, cols, k = _gemm_dims(graph, idx)
    rows = [k, cols]  # A is [M, K], B is [K, N], C is [M, N]
    if n.op_type == "Gemm":
        rows = [m if n.attrs.get("transA", 0) else k, k if n.attrs.get("transB", 0) else cols, cols]
    return any(r > 1 and (r * itemsize) % 16 for r in rows)


def _roofline(ln: Launch, flops: float, rate: float, nbytes: float, mem_rate: float) -> tuple[float, float]:
    """(compute, memory) seconds of one launch; an empty grid does no work."""
    if ln.empty:
        return 0.0, 0.0
    return flops / (rate * ln.wave_efficiency * ln.tile_efficiency), nbytes / (mem_rate * ln.sm_fill)


def _best(launches: list[Launch], flops_of: Callable[[Launch], float], rate: float, bytes_of: Callable[[Launch], float],
          mem_rate: float) -> tuple[Launch, float, float]:
    best = None
    for ln in launches:
        c, m = _roofline(ln, flops_of(ln), rate, bytes_of(ln), mem_rate)
        key = (max(c, m), c + m, ln.split, -math.prod(ln.tile))  # then the least wasted work
        if best is None or key < best[0]:
            best = (key, ln, c, m)
    assert best is not None
    return best[1], best[2], best[3]


def kernel_cost(k: Kernel, graph: Graph, gpu: Gpu, sizes: Sizes, sh: Sharding,
                gemm_format: Callable[[int], str], act_itemsize: float,
                tile: tuple[int, int, int] | None, overhead_s: float) -> KernelCost:
    """The roofline of one kernel on one device."""
    flops = sum(node_flops(graph.nodes[i], graph) * (1.0 / sh.devices if i in sh.split_nodes else 1.0)
                for i in k.nodes)
    nbytes = kernel_bytes(k, graph, sizes, sh)
    mem_rate = gpu.hbm_rate
    if k.kind == "gemm" and k.gemms:
        first = k.gemms[0]
        fmt = gemm_format(first)
        batch, m, _, kk = _gemm_dims(graph, first)
        n_total = sum(_gemm_dims(graph, i)[2] for i in k.gemms)  # a horizontal GEMM: widths add up
        share = 1.0 / sh.devices if first in sh.split_nodes else 1.0
        # a column-parallel GEMM splits N, a row-parallel one K; either way each device has share of the work
        n_dev = _per_device(n_total, share) if graph.nodes[first].inputs[0] not in sh.split else n_total
        k_dev = _per_device(kk, share) if graph.nodes[first].inputs[0] in sh.split else kk
        itemsize = 1 if fmt in ("fp8", "int8") else 2 if fmt in ("bf16", "fp16") else 4
        gemm_flops = 2.0 * batch * m * n_dev * k_dev
        epilogue = max(0.0, flops - gemm_flops)
        launches = gemm_launches(batch, m, n_dev, k_dev, itemsize, gpu, tile)
        rate = gpu.gemm_rate(fmt)
        # the CUDA cores' SGEMM loads element by element anyway; the tensor cores need aligned rows
        misaligned = fmt not in ("fp32", "fp64") and any(rows_misaligned(graph, i, itemsize) for i in k.gemms)
        if misaligned:
            rate = min(rate, gpu.misaligned_gemm_flops)
            mem_rate = min(mem_rate, gpu.misaligned_hbm_rate(itemsize))

        def flops_of(ln: Launch) -> float:  # the epilogue's FLOPs run on the CUDA cores, at their rate
            return gemm_flops + epilogue * rate / gpu.vector_flops

        def bytes_of(ln: Launch) -> float:  # split-K partial sums: written and read back in fp32
            return nbytes + (2.0 * batch * m * n_dev * 4 * ln.split if ln.split > 1 else 0.0)

        ln, c, mm = _best(launches, flops_of, rate, bytes_of, mem_rate)
        return KernelCost(k, flops, bytes_of(ln), c, mm, overhead_s, fmt, "tensor cores", ln,
                          {"m": m, "n": n_dev, "k": k_dev, "batch": batch, "misaligned_rows": misaligned},
                          gpu.peak[fmt],
                          0.0 if ln.empty else gpu.gemm_latency(fmt))
    if k.kind == "attention" and k.attention is not None:
        p = k.attention
        fmt = gemm_format(p.qk)
        q = static_shape(graph, p.q)
        kt = static_shape(graph, p.kt)
        head_dim = kt[-2] if len(kt) >= 2 else 1
        q_rows = q[-2] if len(q) >= 2 else 1
        batch_heads = _per_device(_numel(graph, p.q) // max(1, q_rows * head_dim), sh.share(p.q))
        itemsize = 2 if fmt in ("bf16", "fp16", "fp8", "int8") else 4
        launches = attention_launches(batch_heads, q_rows, p.keys, head_dim, itemsize, gpu,
                                      tile[1] if tile else None)
        peak = gpu.peak["fp16" if fmt in ("fp8", "int8") else fmt]
        # the kernel's MMAs run over the head rounded up to its head tile (80 and 96 as 128)
        padded = -(-max(1, head_dim) // gpu.attention_head_tile) * gpu.attention_head_tile
        efficiency = gpu.attention_efficiency(padded) * max(1, head_dim) / padded
        if not launches:
            launches = [stream_launch(_numel(graph, p.out), itemsize, gpu)]
        work = _AttentionWork(score_mask(graph, p, q_rows), batch_heads, p.keys, gpu)
        ln, c, mm = _best(launches, lambda ln: flops * work(ln), peak * efficiency, lambda _: nbytes, mem_rate)
        live = work.live
        return KernelCost(k, flops, nbytes, c, mm, overhead_s, fmt, "tensor cores", ln,
                          {"batch_heads": batch_heads, "query_rows": q_rows, "keys": p.keys, "head_dim": head_dim,
                           "score_bytes_kept_on_chip": batch_heads * q_rows * p.keys * 4,
                           "efficiency": round(efficiency, 4), "live_tiles": round(live(ln)[0], 4),
                           "masked_time_share": round(live(ln)[1], 4)},
                          peak, 0.0 if ln.empty else gpu.gemm_latency(fmt))
    chain = next((i for i in k.nodes if chained(graph.nodes[i])), None)
    if chain is not None and k.launched:
        return _chained_cost(k, graph, graph.nodes[chain], flops, nbytes, mem_rate, gpu, gemm_format(chain),
                             act_itemsize, overhead_s)
    anchor = graph.nodes[k.anchor] if k.anchor is not None else graph.nodes[k.nodes[0]]
    if k.kind == "row":
        x = anchor.inputs[0]
        dims = static_shape(graph, x)
        row = dims[-1] if dims else 1
        ln = stream_launch(_per_device(_numel(graph, x), sh.share(x)), act_itemsize, gpu, row=row)
    else:
        outs = [o for o in k.outputs] or [o for o in anchor.outputs if o]
        numel = max((_per_device(_numel(graph, o), sh.share(o)) for o in outs), default=1)
        ln = stream_launch(numel, act_itemsize, gpu)
    if not k.launched:  # views: no launch, no traffic
        return KernelCost(k, 0.0, 0.0, 0.0, 0.0, 0.0, "fp32", "view", None, {}, gpu.vector_flops)
    c, mm = _roofline(ln, flops, gpu.vector_flops, nbytes, mem_rate)
    # a control-flow node launches its bodies' kernels turn after turn (hal.perf.bodies)
    launches = 1 + sum(body_node_runs(graph.nodes[i], graph) for i in k.nodes)
    return KernelCost(k, flops, nbytes, c, mm, overhead_s * launches, "fp32", "SM", ln, {}, gpu.vector_flops)


class _AttentionWork:
    """A fused attention kernel's work per launch, relative to its FLOPs: each CTA's fixed work over
    a row's keys, scaled by the share of the unmasked kernel's time a constant mask leaves (given
    as the scores it lets through, ``allowed``, or for a causal Attention node as its ``causal``
    (queries, keys))."""

    def __init__(self, allowed: np.ndarray | None, batch_heads: int, keys: int, gpu: Gpu,
                 causal: tuple[int, int] | None = None):
        self.allowed, self.causal, self.batch_heads, self.keys, self.gpu = allowed, causal, batch_heads, keys, gpu
        self.masked: dict[tuple[tuple[int, ...], int], tuple[float, float]] = {}

    def live(self, ln: Launch) -> tuple[float, float]:
        """(share of tiles a constant mask leaves to compute, share of the unmasked kernel's time)"""
        if (self.allowed is None and self.causal is None) or len(ln.tile) != 2:
            return 1.0, 1.0
        key = (ln.tile, ln.split)
        if key not in self.masked:
            slots, cta = self.gpu.sm_count, self.gpu.attention_cta_overhead_keys
            if self.allowed is not None:
                self.masked[key] = (live_fraction(self.allowed, *ln.tile),
                                    masked_schedule(self.allowed, *ln.tile, self.batch_heads, slots, cta, ln.split))
            else:
                queries, keys = self.causal
                bq, bkv = ln.tile
                split = max(1, ln.split)
                blocks = math.ceil(math.ceil(keys / bkv) / split) * split
                tiles = causal_tiles(queries, keys, bq, bkv, blocks)
                self.masked[key] = ((1.0, 1.0) if tiles is None or not tiles.size else
                                    (float(tiles[:, :math.ceil(keys / bkv)].mean()),
                                     tiles_schedule(tiles, bkv, self.batch_heads, slots, cta, split)))
        return self.masked[key]

    def __call__(self, ln: Launch) -> float:
        return (1.0 + self.gpu.attention_cta_overhead_keys * ln.split / max(1, self.keys)) * self.live(ln)[1]


def _all_of(_: Launch) -> float:
    return 1.0


def _chained_cost(k: Kernel, graph: Graph, node: Node, flops: float, nbytes: float, mem_rate: float, gpu: Gpu,
                  fmt: str, act_itemsize: float, overhead_s: float) -> KernelCost:
    """One library kernel running a chain of products on the tensor cores: opset 23's Attention as a
    fused attention kernel (at ``attention_efficiency`` for its head size), or an RNN, GRU or LSTM as
    cuDNN runs it: the input products at once, then a product per time step that waits for the last
    step's state, so a GEMM's latency per step, which sets the time of a long sequence at a small
    batch."""
    peak = gpu.peak["fp16" if fmt in ("fp8", "int8") else fmt]
    rate, steps, extra = gpu.gemm_rate(fmt), 1, {}
    out = node.outputs[0] if node.outputs and node.outputs[0] else ""
    launches = [stream_launch(_numel(graph, out) if out else 1, act_itemsize, gpu)]
    work: Callable[[Launch], float] = _all_of
    if (node.domain, node.op_type) in ATTENTION_OPS:
        if (a := attention_dims(node, graph)) is not None:  # as a recognised attention pattern is costed
            padded = -(-max(1, a.head) // gpu.attention_head_tile) * gpu.attention_head_tile
            rate = peak * gpu.attention_efficiency(padded) * max(1, a.head) / padded
            itemsize = 2 if fmt in ("bf16", "fp16", "fp8", "int8") else 4
            launches = attention_launches(a.batch * a.heads, a.queries, a.keys, a.head, itemsize, gpu, None) or launches
            # is_causal: query i (after the past) sees the keys up to its own position
            causal = (a.queries, a.keys) if attention_causal(node) else None
            work = _AttentionWork(None, a.batch * a.heads, a.keys, gpu, causal)
            extra = {"batch_heads": a.batch * a.heads, "query_rows": a.queries, "keys": a.keys, "head_dim": a.head}
    elif (r := recurrent_dims(node, graph)) is not None:
        steps = max(1, r.steps)
        extra = {"directions": r.directions, "batch": r.batch, "hidden": r.hidden}
    extra["sequential_steps"] = steps
    if len(launches) == 1:  # a stream launch: one tile dimension
        ln = launches[0]
        c, mm = _roofline(ln, flops * work(ln), rate, nbytes, mem_rate)
    else:
        ln, c, mm = _best(launches, lambda ln: flops * work(ln), rate, lambda _: nbytes, mem_rate)
    return KernelCost(k, flops, nbytes, c, mm, overhead_s, fmt, "tensor cores", ln, extra, peak,
                      steps * gpu.gemm_latency(fmt))


def allreduce_s(nbytes: float, devices: int, gpu: Gpu) -> float:
    """A ring all-reduce: 2(n-1)/n of the message over each device's links, plus a fixed latency."""
    return gpu.allreduce_latency_s + 2.0 * (devices - 1) / devices * nbytes / gpu.allreduce_bandwidth(devices)


def allgather_s(nbytes: float, devices: int, gpu: Gpu) -> float:
    return gpu.allreduce_latency_s + (devices - 1) / devices * nbytes / gpu.allreduce_bandwidth(devices)


def _power(gpu: Gpu, util: float) -> float:
    return gpu.idle_w + (gpu.tdp_w - gpu.idle_w) * max(0.0, min(1.0, util))


def timeline(costs: list[KernelCost], sh: Sharding, gpu: Gpu, cuda_graphs: bool) -> Timeline:
    """Lay the kernels and collectives end to end on one device (all devices run the same program)."""
    events: list[tuple[str, str, float, float, dict]] = []
    collectives: list[Collective] = []
    per_op = gpu.graph_node_overhead_s if cuda_graphs else gpu.launch_overhead_s
    t = gpu.graph_launch_overhead_s if cuda_graphs else 0.0
    overhead = t
    if cuda_graphs:
        events.append(("cudaGraphLaunch", "host", 0.0, t, {}))
    energy = t * gpu.idle_w
    coll_total = 0.0
    for kc in costs:
        if not kc.kernel.launched:
            continue
        kc.extra["start_s"] = t
        events.append((kc.kernel.name, "stream", t, kc.time_s, kc.extra))
        busy = kc.busy_s
        util = 0.0
        if busy > 0:
            util = max(kc.flops / (kc.peak * busy) if kc.peak else 0.0, kc.bytes / (gpu.hbm_bandwidth * busy))
        energy += busy * _power(gpu, util) + kc.overhead_s * gpu.idle_w
        overhead += kc.overhead_s
        t += kc.time_s
        nb = sh.allreduce.get(kc.kernel.id)
        if nb:
            dur = allreduce_s(nb, sh.devices, gpu) + per_op
            collectives.append(Collective(f"allreduce:{kc.kernel.name}", "allreduce", nb, dur, kc.kernel.id))
            events.append((f"allreduce:{kc.kernel.name}", "stream", t, dur, {"bytes": nb, "devices": sh.devices}))
            energy += dur * gpu.idle_w
            coll_total += dur
            overhead += per_op
            t += dur
    for name, nb in sh.allgather.items():
        dur = allgather_s(nb, sh.devices, gpu) + per_op
        collectives.append(Collective(f"allgather:{name}", "allgather", nb, dur, None))
        events.append((f"allgather:{name}", "stream", t, dur, {"bytes": nb, "devices": sh.devices}))
        energy += dur * gpu.idle_w
        coll_total += dur
        overhead += per_op
        t += dur
    return Timeline(costs, collectives, events, t, overhead, coll_total, energy * sh.devices)
