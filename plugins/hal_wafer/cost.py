"""Time on the wafer, from the program: stages on regions of PEs, wavefronts across them, routes between them.

The model, in the order the hardware does it:

* **A stage runs its ops as kernels on its region.** Activations are spread over every PE of the
  region (a GEMV keeps its input split along the rows and its output along the columns), so each
  op works on every PE's slice. A kernel starts on the region with a wavefront from the region's
  entry corner that carries its operands (``w + h`` router hops to the far corner); a reduction
  (ReduceMean, Softmax's max and sum, a normalisation's moments) adds a second wavefront that
  brings the reduced value back to every PE. Kernels of one stage run one after another, as the
  exported graph lists them (``fusion="none"``); with ``fusion="elementwise"`` an elementwise op
  whose operands are laid out like its output joins the kernel before it and costs no wavefront.
* **Each kernel's work** runs on the region's PEs at the per-PE SRAM bandwidth and FMAC rate
  (whichever is slower); a contraction also streams its operand / partial-sum vectors through the
  mesh links (one wavelet per link per hop).
* **Between stages**, each tensor edge travels its dimension-ordered route: hops × hop latency plus
  its bytes over the route's parallel lanes; between wafers it crosses the system I/O link.
* **The pipeline**: a run's latency is the longest path through stages and transfers (pipeline
  fill); the steady-state throughput is one run per slowest stage or link.
* **Weight streaming** runs each stage on the whole wafer while its weights stream in from
  external memory; a stage takes the longer of its kernels and its weight transfer.
* **Energy** is the systems' power × the run's latency.

Every number comes from the spec sheet (``WaferParams.from_spec``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hal.graph.ir import Graph, Node
from hal.numerics import ITEMSIZE, Policy, is_float
from hal.perf.bodies import turns
from hal.perf.opcount import ATTENTION_OPS, SEQUENCE_OPS, VIEW_OPS, chained, costed, node_flops, recurrent_dims, shape
from hal.specs import TargetSpec

#: ops that contract a dimension (GEMV / GEMM / convolution): broadcast in, reduce out; the
#: recurrent ops and Attention contract too, a chain of them (``SEQUENCE_OPS``)
CONTRACTION_OPS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum", "MatMulInteger", "ConvInteger",
                             "QLinearMatMul", "QLinearConv", "QGemm", "MatMulIntegerToFloat",
                             "DynamicQuantizeMatMul"}) | SEQUENCE_OPS
#: ops that reduce across PEs and bring the result back: wavefronts they cost
REDUCTION_WAVES = {"Softmax": 4, "LogSoftmax": 4, "Hardmax": 4, "LayerNormalization": 4, "GroupNormalization": 4,
                   "InstanceNormalization": 4, "RMSNormalization": 2, "LpNormalization": 2,
                   "MeanVarianceNormalization": 4, "GlobalAveragePool": 2, "GlobalMaxPool": 2, "GlobalLpPool": 2,
                   "ArgMax": 2, "ArgMin": 2, "TopK": 2, "CumSum": 2, "QLinearSoftmax": 4,
                   "QLinearGlobalAveragePool": 2}
#: ops that move data between PEs without arithmetic (layout changes)
MOVEMENT_OPS = frozenset({"Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements", "GatherND",
                          "ScatterElements", "ScatterND", "Expand", "Tile", "Pad", "DepthToSpace", "SpaceToDepth",
                          "Resize", "ReverseSequence", "Compress", "OneHot", "Trilu", "QLinearConcat"})
#: ops that do one thing per element with operands already where the output is
ELEMENTWISE_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Neg", "Abs", "Exp", "Log", "Sqrt", "Reciprocal", "Relu", "LeakyRelu",
    "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf", "Gelu", "Softplus", "Softsign", "Elu", "Selu",
    "Celu", "Mish", "Clip", "Cast", "CastLike", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Tan", "Where",
    "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "Max", "Min", "Mean",
    "Sum", "Mod", "IsNaN", "IsInf", "BatchNormalization", "ThresholdedRelu", "BitShift", "Shrink",
    "QuantizeLinear", "DequantizeLinear", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu"})


@dataclass(frozen=True)
class WaferParams:
    """The spec-sheet numbers the wafer model reads, in SI units."""

    mesh_w: int
    mesh_h: int
    pe_sram_bytes: float
    pe_reserved_bytes: float
    pe_mem_bw: float            # bytes/s each PE reads and writes its SRAM at
    pe_flops_16: float          # 16-bit FLOP/s of one PE
    fp32_ratio: float           # fp32 rate / 16-bit rate
    link_bw: float              # bytes/s of one mesh link in one direction
    hop_s: float                # router latency of one mesh hop
    io_bw: float                # bytes/s into / out of one wafer (weight streaming, wafer-to-wafer)
    interwafer_latency_s: float
    power_w: float              # one system
    external_bytes: float       # MemoryX capacity
    colors: int                 # routes one PE's router can carry

    @classmethod
    def from_spec(cls, spec: TargetSpec) -> WaferParams:
        hw = spec.hw
        pes = hw("pe_count")
        return cls(
            mesh_w=int(hw("fabric_width")), mesh_h=int(hw("fabric_height")),
            pe_sram_bytes=hw("pe_sram_bytes"), pe_reserved_bytes=hw("pe_sram_reserved_bytes"),
            pe_mem_bw=hw("memory_bandwidth") / pes, pe_flops_16=2.0 * hw("pe_fmac_per_cycle_fp16") * hw("clock_hz"),
            fp32_ratio=hw("fp32_rate_ratio"),
            # every PE drives its links in both directions: aggregate / (PEs × neighbours × 2)
            link_bw=hw("fabric_bandwidth") / (pes * hw("mesh_neighbors") * 2),
            hop_s=hw("router_hop_latency_s"), io_bw=hw("system_io_bandwidth"),
            interwafer_latency_s=hw("interwafer_latency_s"), power_w=hw("system_power_w"),
            external_bytes=hw("memoryx_bytes"), colors=int(hw("routing_colors")))

    @property
    def pe_usable_bytes(self) -> float:
        return self.pe_sram_bytes - self.pe_reserved_bytes

    @property
    def wafer_pes(self) -> int:
        return self.mesh_w * self.mesh_h

    @property
    def wafer_sram_bytes(self) -> float:
        return self.wafer_pes * self.pe_usable_bytes


@dataclass(frozen=True)
class OpWork:
    """One node's work, independent of where it is placed."""

    name: str
    op_type: str
    flops: float
    bytes: float          # SRAM traffic: activations in and out plus weights
    stream_in: float      # bytes a contraction broadcasts along the rows (its moving operand)
    stream_out: float     # bytes of partial sums it reduces down the columns
    waves: int            # wavefronts across the region
    fp32: bool
    fusable: bool         # elementwise with operands laid out like its output


def _numel(shp: tuple[int, ...]) -> int:
    return int(math.prod(shp))  # Python integers: exact for any declared size (np.prod wraps at 2**63)


def _is_float(graph: Graph, name: str) -> bool:
    dt = _dtype(graph, name)
    return dt is not None and is_float(dt)


def _dtype(graph: Graph, name: str) -> np.dtype | None:
    w = graph.initializers.get(name)
    if w is not None:
        return np.dtype(w.dtype)
    info = graph.values.get(name)
    return info.dtype if info is not None else None


def value_bytes(graph: Graph, name: str, itemsize: int | None) -> int:
    """Bytes of a value as the policy stores it (floats at ``itemsize``, others at their own size)."""
    if not name:
        return 0
    w = graph.initializers.get(name)
    if w is not None:
        size, own = int(w.size), np.dtype(w.dtype).itemsize
    else:
        info = graph.values.get(name)
        if info is None or info.shape is None:
            return 0
        size = _numel(shape(graph, name))
        own = info.dtype.itemsize if info.dtype is not None else 4
    if itemsize is not None and _is_float(graph, name):
        return size * itemsize
    return size * own


def policy_itemsizes(policy: Policy) -> tuple[int | None, int | None]:
    """(activation, weight) bytes per float element; None keeps the model's own dtype (exact)."""
    if policy.exact:
        return None, None
    return ITEMSIZE[policy.storage], ITEMSIZE[policy.matmul_weights]


def is_view(node: Node, graph: Graph) -> bool:
    """Ops that only relabel memory: no kernel, no wavefront (a transpose that moves only size-1 axes too)."""
    if node.op_type in VIEW_OPS:
        return True
    if node.op_type == "Transpose" and node.inputs and node.inputs[0]:
        shp = shape(graph, node.inputs[0])
        if not shp:
            return False
        perm = node.attrs.get("perm", list(reversed(range(len(shp)))))
        moved = [shp[p] for p in perm if p < len(shp) and shp[p] != 1]
        return moved == [d for d in shp if d != 1]
    return False


def _kv_inputs(node: Node) -> list[str]:
    """An attention op's key and value inputs and their past (``ATTENTION_OPS``)."""
    if node.domain:
        past = {"Attention": [4], "QAttention": [8], "MultiHeadAttention": [6, 7],
                "GroupQueryAttention": [3, 4]}[node.op_type]
        kv = [] if node.op_type in ("Attention", "QAttention") else [1, 2]
    else:
        kv, past = [1, 2], [4, 5]
    return [node.inputs[i] for i in kv + past if i < len(node.inputs)]


def op_work(node: Node, graph: Graph, policy: Policy) -> OpWork:
    """FLOPs, SRAM bytes, streamed bytes and wavefronts of one node under ``policy``."""
    act, wgt = policy_itemsizes(policy)
    node = costed(node)
    op = node.op_type
    if is_view(node, graph):
        return OpWork(node.name, op, 0.0, 0.0, 0.0, 0.0, 0, False, True)
    b_w = 0
    acts = []
    for i in node.inputs:
        if not i:
            continue
        if i in graph.initializers:
            b_w += value_bytes(graph, i, wgt)
        else:
            acts.append(value_bytes(graph, i, act))
    b_in = sum(acts)
    if op in ("Gather", "GatherElements", "GatherND") and b_w:
        b_w = 0  # a lookup reads only the rows it gathers (counted with its output)
    b_out = sum(value_bytes(graph, o, act) for o in node.outputs if o)
    flops = node_flops(node, graph)
    fp32 = policy.exact and any(_dtype(graph, i) == np.float32 for i in node.inputs if i)
    stream_in = stream_out = 0.0
    waves = 1
    if (node.domain, op) in ATTENTION_OPS:
        # K and V (and their past) stay in SRAM, the queries stream in; a wavefront for each product
        # and the softmax's between them (onnxruntime's Attention projects its K and V itself)
        stationary = sum(value_bytes(graph, i, act) for i in _kv_inputs(node) if i and i not in graph.initializers)
        stream_in, stream_out = float(b_in - stationary), float(b_out)
        waves = 2 + REDUCTION_WAVES["Softmax"]
    elif op in CONTRACTION_OPS:
        # the stationary operand (the weights, else the largest activation: a KV cache) stays in SRAM
        stream_in = float(b_in if b_w else b_in - max(acts, default=0))
        stream_out = float(b_out)
        if (r := recurrent_dims(node, graph) if chained(node) else None) is not None:
            waves = max(1, r.steps)  # W and R stay; each step's product waits for the last step's state
    elif op in ("Loop", "Scan") and not node.domain:
        waves = max(1, turns(node, graph) or 1)  # each turn of its body waits for the last one's carried values
    elif op in REDUCTION_WAVES:
        waves = REDUCTION_WAVES[op]
    elif op.startswith("Reduce"):
        waves = 2
    out_shape = shape(graph, node.outputs[0]) if node.outputs and node.outputs[0] else ()
    fusable = op in ELEMENTWISE_OPS and all(
        (not i) or i in graph.initializers or shape(graph, i) == out_shape for i in node.inputs)
    return OpWork(node.name, op, flops, float(b_in + b_w + b_out), stream_in, stream_out, waves, fp32, fusable)


@dataclass(frozen=True)
class StageCost:
    time_s: float
    compute_s: float      # SRAM / FMAC work on the PEs
    wave_s: float         # wavefront hops
    stream_s: float       # contraction vectors through the links
    kernels: int          # kernels launched (after fusion)
    bound: str            # compute | memory | latency | interconnect


def stage_cost(works: list[OpWork], w: int, h: int, p: WaferParams, fusion: str = "none") -> StageCost:
    """Time of one stage's kernels on a ``w`` × ``h`` region (kernels one after another)."""
    pes = max(1, w * h)
    compute = memory = wave = stream = 0.0
    kernels = 0
    hops = (w - 1) + (h - 1) + 1  # corner to far corner, plus the hop into the region
    for k in works:
        if k.waves == 0:
            continue
        rate = p.pe_flops_16 * (p.fp32_ratio if k.fp32 else 1.0)
        compute += k.flops / (pes * rate)
        memory += k.bytes / (pes * p.pe_mem_bw)
        if fusion == "elementwise" and k.fusable and kernels:
            continue
        kernels += 1
        wave += k.waves * hops * p.hop_s
        # operand segments travel along the h rows, partial sums down the w columns, one link each
        stream += (k.stream_in / h + k.stream_out / w) / p.link_bw
    work = max(compute, memory)
    total = work + wave + stream
    parts = {"compute" if compute >= memory else "memory": work, "latency": wave, "interconnect": stream}
    bound = max(parts, key=parts.__getitem__)
    return StageCost(total, work, wave, stream, kernels, bound)


def stage_cost_proxy(work_pe_s: float, waves: int, w: int, h: int, p: WaferParams) -> float:
    """The placer's cheap estimate of a stage's time: PE-seconds of work spread over the region plus
    wavefronts across it (no per-op walk)."""
    return work_pe_s / max(1, w * h) + waves * (w + h - 1) * p.hop_s


def transfer_time(nbytes: float, hops: int, lanes: int, p: WaferParams, cross_wafer: bool) -> float:
    """One tensor edge over its route: hop latency plus its bytes over the lanes (and the wafer link)."""
    t = hops * p.hop_s + nbytes / (max(1, lanes) * p.link_bw)
    if cross_wafer:
        t += p.interwafer_latency_s + nbytes / p.io_bw
    return t


def streaming_time(weight_bytes: float, p: WaferParams) -> float:
    """Time to bring one stage's weights onto the wafer from external memory."""
    return weight_bytes / p.io_bw


def pipeline_times(stage_times: list[float], edges: list[tuple[int, int, float]]) -> tuple[list[float], float]:
    """Start time of each stage and the run's latency: a longest path over stages in pipeline order,
    where ``edges`` are (producer stage, consumer stage, transfer seconds)."""
    into: dict[int, list[tuple[int, float]]] = {}
    for a, b, t in edges:
        into.setdefault(b, []).append((a, t))
    start = [0.0] * len(stage_times)
    end = [0.0] * len(stage_times)
    for i, t in enumerate(stage_times):
        s = 0.0
        for a, x in into.get(i, ()):
            s = max(s, end[a] + x)
        start[i] = s
        end[i] = s + t
    return start, max(end, default=0.0)


def energy(latency_s: float, wafers: int, p: WaferParams) -> float:
    return p.power_w * wafers * latency_s

