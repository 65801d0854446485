"""Compile for a TSP-class LPU: lower to slice instructions, place in SRAM over chips, schedule statically.

The steps: (1) nodes whose inputs are all weights are materialised when the program is loaded
(their results become SRAM-resident constants); (2) every other node is lowered to the slice it runs
on (lowering.py); (3) weights and live activations are packed into chips' SRAM, splitting a node's
weight over chips when it does not fit (partition.py); (4) each node becomes an instruction group
(MEM read, slice instruction, MEM write), values crossing chips become C2C sends, and the list
scheduler gives every instruction its cycle (schedule.py); (5) the numeric steps, with the LPU's
precision policy applied, are ordered as the instructions that carry them were emitted.

A node whose activations fit no chip (a long prompt's attention scores) is split along an output
axis (heads) over several chips, with each chip sent only its slice (partition.py). A graph whose
shapes or trip counts are fixed only by small inputs the host reads before a run (Range's Loop, a
Reshape to a fed shape, a symbolic dimension) gets one static schedule per value signature, compiled
at run time and cached (specialise.py).
"""

from __future__ import annotations

import math
import pickle
import time
from dataclasses import replace
from functools import partial

import numpy as np

from hal.engine import Program, Step, chain_concats, fused_runs, kernel_step
from hal.errors import CompileError, ResourceError, a_or_an
from hal.graph.ir import Graph, Node, TensorInfo
from hal.graph.loops import trip_count_inputs
from hal.graph.passes import NONDETERMINISTIC
from hal.perf.opcount import VIEW_OPS
from hal.specs import Capability, CompileOptions, TargetSpec, builtin_sheet, load_spec_sheet
from hal.target import kernel_capability
from hal_lpu.cost import Machine
from hal_lpu.executor import LpuExecutable, act_shard_call, gather_shards, shard_call
from hal_lpu.lowering import Lowered, Sizes, int8_products, lower
from hal_lpu.partition import Placement, Shard, partition, split_input_axis
from hal_lpu.precision import apply_lpu_policy, lpu_policy
from hal_lpu.report import build_report
from hal_lpu.schedule import ProgramBuilder, Schedule, schedule
from hal_lpu.shapes import (
    DATA_DEPENDENT,
    SHAPE_INPUTS,
    Resolved,
    graph_inputs_behind,
    host_candidates,
    loop_body_data_shape,
    resolve_shapes,
)
from hal_lpu.specialise import SpecialisingExecutable

__version__ = "0.1.0"

#: options the target takes (declared in the spec, checked by the session)
OPTIONS = {
    "max_chips": "largest number of chips the pipeline may use (default: the largest published system)",
    "sram_bytes": "SRAM per chip in bytes, to study smaller or larger chips (default: the spec's 220 MiB)",
}


#: onnxruntime's generation ops: a decoder run each token, until max_length or every eos
GENERATION_OPS = frozenset({"GreedySearch", "BeamSearch", "Sampling", "WhisperBeamSearch"})


def _refuse(node: Node, graph: Graph, used: set[str], shapes: Resolved) -> str | None:
    dynamic, special = shapes.dynamic, shapes.special
    if node.domain == "com.microsoft" and node.op_type in GENERATION_OPS:
        return (f"{node.op_type} runs its decoder once a token, until max_length or every sequence's end: how many "
                "runs, and its outputs' length, are the run's to decide; a statically scheduled machine cannot "
                "schedule it")
    reason = DATA_DEPENDENT.get(node.op_type)
    if reason and not _fixed_at_compile_time(node, graph, shapes):
        return f"data-dependent output shape: {reason}; a statically scheduled machine cannot run it"
    if node.op_type == "If":
        cond = node.inputs[0] if node.inputs else ""
        fixed = all(shapes.values.get(o) is not None and shapes.values[o].kind == "tensor"
                    and shapes.values[o].static_shape is not None for o in node.outputs if o)
        if cond not in shapes.known and cond not in graph.initializers and cond not in shapes.host and not fixed:
            # branches of one static output shape run on the device as either one, the schedule sized
            # for both (torch.cond's data-dependent branches)
            return ("data-dependent output shape: the branch taken, which a condition computed on the device picks, "
                    "decides its output shapes; a statically scheduled machine cannot run it")
    if node.op_type == "Loop":
        trip = node.inputs[0] if node.inputs else ""
        cond = node.inputs[1] if len(node.inputs) > 1 else ""
        static = shapes.known | set(graph.initializers) | shapes.host
        inside = loop_body_data_shape(node, static)
        if inside:
            return f"data-dependent shape: {inside}; a statically scheduled machine cannot run it"
        needs = trip_count_inputs(node)  # what its trip count and condition depend on (hal.graph.loops)
        counted = needs is not None and needs <= static
        if not counted and (not trip or trip not in static or (cond and cond not in static)):
            return ("a Loop whose trip count (or condition) is computed on the device from data cannot be "
                    "statically scheduled; only one the host can compute before the run is taken")
    for o in node.outputs:
        if o and o in used:
            if o in dynamic:
                return f"data-dependent output shape: {dynamic[o]}; a statically scheduled machine cannot run it"
            info = graph.values.get(o)
            if o in special and (info is None or info.kind == "tensor"):
                continue  # fixed once the host knows its inputs: scheduled per value signature at run time
            if node.op_type != "Identity" and info is not None and info.kind not in ("tensor", "unknown"):
                return (f"output {o!r} is {a_or_an(info.kind)}, not a tensor; a statically scheduled machine's memory "
                        "holds tensors of fixed sizes only (the host builds it: fallback can place the node on "
                        "the cpu)")
            if node.op_type != "Identity" and (info is None or info.kind != "tensor" or info.static_shape is None):
                return (f"output {o!r} has no shape known at compile time; a statically scheduled machine "
                        "needs every tensor's size before it runs")
    return None


def _fixed_at_compile_time(node: Node, graph: Graph, shapes: Resolved) -> bool:
    """Whether the values that decide the output shape of an op that is data-dependent in general are
    known at compile time (a Compress whose condition is a weight, or computed from static shapes
    alone: tf2onnx's MirrorPad), so that every output's shape is."""
    deciding = [node.inputs[p] for p in SHAPE_INPUTS.get(node.op_type, ()) if p < len(node.inputs)]
    return bool(deciding) and all(d in shapes.known or d in graph.initializers for d in deciding if d) \
        and all(o in shapes.values and shapes.values[o].static_shape is not None for o in node.outputs if o)


def _int_option(options: CompileOptions, key: str, default: int | None) -> int | None:
    v = options.target_options.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise CompileError(f"option {key}={v!r} must be a positive integer", where="target 'lpu'")
    try:
        n = int(v)
    except ValueError:
        raise CompileError(f"option {key}={v!r} must be a positive integer", where="target 'lpu'") from None
    if n < 1 or n != float(v):
        raise CompileError(f"option {key}={v!r} must be a positive integer", where="target 'lpu'")
    return n


def load_time_constants(graph: Graph) -> tuple[list[Node], list[Node]]:
    """Split the nodes into (materialised at load: all inputs are weights, deterministic) and the rest."""
    known = set(graph.initializers)
    outs = {o.name for o in graph.outputs}
    const, rest = [], []
    for n in graph.nodes:
        if (n.op_type not in NONDETERMINISTIC and n.inputs and all((not i) or i in known for i in n.inputs)
                and not any(o in outs for o in n.outputs)
                and not any(hasattr(v, "SerializeToString") for v in n.attrs.values())
                and all(o and graph.values.get(o) is not None and graph.values[o].static_shape is not None
                        for o in n.outputs)):
            const.append(n)
            known.update(n.outputs)
        else:
            rest.append(n)
    return const, rest


class LpuTarget:
    """A pipeline of TSP-class chips: static, cycle-exact, SRAM-only."""

    def __init__(self, spec: TargetSpec | None = None) -> None:
        """The target of the built-in sheet, or of ``spec`` (another chip generation, a what-if)."""
        spec = spec or load_spec_sheet(builtin_sheet("lpu.toml"), version=__version__)
        self.spec = spec.model_copy(update={"options": {**OPTIONS, **spec.options}})

    def capability(self, graph: Graph, options: CompileOptions) -> Capability:
        shapes = resolve_shapes(graph, *host_candidates(graph))
        resolved = replace(graph, values=shapes.values)
        used = {i for n in graph.nodes for i in n.inputs if i} | {o.name for o in graph.outputs}
        return kernel_capability(graph, self.spec, refuse=lambda n, g: _refuse(n, resolved, used, shapes))

    def load(self, blob: bytes) -> LpuExecutable | SpecialisingExecutable:
        exe = pickle.loads(blob)
        if not isinstance(exe, (LpuExecutable, SpecialisingExecutable)):
            raise CompileError("the blob is not an lpu executable", where="target 'lpu'")
        return exe

    # -- compile ------------------------------------------------------------------------------
    def compile(self, graph: Graph, options: CompileOptions) -> LpuExecutable | SpecialisingExecutable:
        """A static program; or, when shapes or trip counts are fixed only by values the host reads
        before a run, an executable that compiles one static program per value signature (cached)."""
        self._check_options(options)
        scalars, shaped = host_candidates(graph)
        shapes = resolve_shapes(graph, scalars, shaped)
        keys = graph_inputs_behind(graph, shapes.deciders) & scalars
        by_shape = {t for t in shaped if t in shapes.special}
        if keys or by_shape:
            return SpecialisingExecutable(self, graph, options, sorted(keys), sorted(by_shape), __version__,
                                          set(shapes.special))
        # nothing is specialised, so no value's shape waits on the host: these are the static shapes
        return self.compile_static(graph, options, shapes.values)

    def _check_options(self, options: CompileOptions) -> None:
        unknown = sorted(set(options.target_options) - set(self.spec.options))
        if unknown:
            raise CompileError(f"unknown option(s) {', '.join(unknown)} for target 'lpu'", where="target 'lpu'",
                               hint="its options: " + ", ".join(self.spec.options))
        lpu_policy(options.precision)
        _int_option(options, "sram_bytes", None)
        _int_option(options, "max_chips", None)

    def compile_static(self, graph: Graph, options: CompileOptions,
                       values: dict[str, TensorInfo] | None = None) -> LpuExecutable:
        """The static schedule of a graph whose every shape is known at compile time; ``values``: its
        ``resolve_shapes`` values when the caller has them already."""
        t0 = time.perf_counter()
        unknown = sorted(set(options.target_options) - set(self.spec.options))
        if unknown:
            raise CompileError(f"unknown option(s) {', '.join(unknown)} for target 'lpu'", where="target 'lpu'",
                               hint="its options: " + ", ".join(self.spec.options))
        policy = lpu_policy(options.precision)
        machine = Machine.from_spec(self.spec, _int_option(options, "sram_bytes", None))
        max_chips = _int_option(options, "max_chips", machine.max_chips)
        assert max_chips is not None

        graph = replace(graph, values=values if values is not None else resolve_shapes(graph).values)
        const_nodes, nodes = load_time_constants(graph)
        constants = {o: (graph.values[o].static_shape, graph.values[o].dtype) for n in const_nodes
                     for o in n.outputs if o}
        int8 = int8_products(graph, policy)
        sizes = Sizes(graph, policy, constants, int8)
        lowered = [lower(n, graph, sizes) for n in nodes]
        placement = self._place(graph, nodes, lowered, sizes, machine, options.devices, max_chips)

        ref_steps = {n.name: kernel_step(n, graph) for n in graph.nodes}
        numeric = [ref_steps[n.name] for n in graph.nodes]
        weights = {k: w for k, w in graph.initializers.items()}
        steps, replaced = apply_lpu_policy(numeric, {k: w for k, w in weights.items() if isinstance(w, np.ndarray)},
                                           policy, int8)
        weights.update(replaced)
        by_name = {s.label: s for s in steps}
        # the steps the policy left as their node's reference kernel (all at exact; at native and int8,
        # which keep VXM results in fp32, all but the MXM's): these may fuse with the same bits
        untouched = [s for s in steps if s is ref_steps[s.label]]

        builder, carries = self._build(graph, nodes, lowered, placement, sizes, machine, by_name)
        del lowered, sizes, ref_steps, numeric  # the lowering is in the instructions now
        cycles = schedule(builder.instructions)
        report = build_report(graph, options, policy, machine, placement, builder, cycles, __version__,
                              self.spec.name, len(const_nodes))
        program = Schedule(sorted(builder.instructions, key=lambda i: (i.start, i.id)))
        kinds = [g.kind for g in builder.groups]
        # what only the schedule needs goes before the host program is built, whose allocations reuse
        # its memory: the compile's peak, which the process keeps resident, is then the larger of the
        # two and not their sum (with the lowering dropped above and the nodes' own steps below,
        # tiny-gpt's compile peaks at 902 KB traced, against 1,100 with all of them alive to the end)
        del builder, placement
        # in program order (see executor.py): the same values as cycle order, less host memory
        program_steps = [by_name[n.name] for n in const_nodes] + [carries[i] for i in sorted(carries)]
        # the host fuses runs of whole nodes as the cpu target does (tiny-gpt: 72 steps -> 32 at exact,
        # 32 at native too, whose MXM steps round their operands and take in their bias Adds and the
        # layout nodes before them): fewer numpy calls, the same bits; the schedule, and so every
        # cycle, latency and byte the target reports, is not touched
        program_steps = fused_runs(graph, program_steps, untouched)
        del by_name, untouched, steps, carries  # the nodes' own steps, which fused into new ones
        # Concats that extend one another share a buffer in the host program too (DenseNet's blocks)
        engine = Program(replace(graph, initializers=weights), chain_concats(graph, program_steps))
        report.compile_time_s = time.perf_counter() - t0
        return LpuExecutable(program, kinds, engine, report, machine.clock_hz, cycles)

    def _place(self, graph: Graph, nodes: list[Node], lowered: list[Lowered], sizes: Sizes, machine: Machine,
               devices: int | None, max_chips: int) -> Placement:
        placement = partition(graph, nodes, lowered, sizes, machine, machine.sram_bytes)
        if devices is not None and placement.chips < devices:
            # spread over the chips asked for: a smaller budget per chip, raised until it fits
            total = sum(placement.sram)
            budget = math.ceil(total / devices)
            while budget < machine.sram_bytes:
                try:
                    p = partition(graph, nodes, lowered, sizes, machine, budget)
                except ResourceError:
                    p = None
                if p is not None and p.chips <= devices:
                    placement = p
                    break
                budget = math.ceil(budget * 1.02)
        bound = min(max_chips, devices) if devices is not None else max_chips
        if placement.chips > bound:
            need = sum(placement.weights) + sum(placement.resident)
            which = "devices" if devices is not None and devices < max_chips else "max_chips"
            raise ResourceError(
                f"the model needs {placement.chips} chips and {which} allows {bound}: {need:,} bytes of weights "
                f"and resident tensors (plus activations) against {machine.sram_bytes:,} bytes of SRAM per chip",
                where="target 'lpu'",
                hint=f"raise {which} to at least {placement.chips}, or use a lower precision "
                     "(int8 halves fp16 weights)")
        return placement

    def _build(self, graph: Graph, nodes: list[Node], lowered: list[Lowered], placement: Placement, sizes: Sizes,
               machine: Machine, steps: dict[str, Step]) -> tuple[ProgramBuilder, dict[int, Step]]:
        b = ProgramBuilder()
        carries: dict[int, Step] = {}
        resident = {t.name for t in graph.inputs}
        avail: dict[tuple[str, int], int] = {}
        home: dict[str, int] = {}
        nbytes: dict[str, int] = {}
        mxm_of: dict[int, int] = {}  # group -> its MXM instruction (the one carrying the numeric work)
        m = machine

        def need(value: str, chip: int) -> list[int]:
            if not value or sizes.is_weight(value) or value in resident:
                return []
            key = (value, chip)
            if key not in avail:
                src = home[value]
                size = nbytes.get(value) or sizes.nbytes(value)
                g = b.group(f"send {value} chip{src}->chip{chip}", "send", src, "C2C", [], [], 0.0, size,
                            value=value, src=src, dst=chip)
                avail[key] = b.emit(g, "C2C", "send", m.c2c_cycles(size), m.c2c_latency(size) + m.superlanes,
                                    m.vector_count(size), size, deps=(avail[(value, src)],), link=chip)
            return [avail[key]]

        def emit_mxm(g: int, low: Lowered, frac: float, out_b: int, deps: tuple[int, ...]) -> int:
            """Activations through the VXM into the MXM's format (int8: a max-abs reduction for the
            scale, then the quantise), weights streamed from MEM into the planes, the product, and
            (int8) the dequantise with both scales, then the write."""
            x = b.emit(g, "MEM", "read", m.stream_cycles(low.act_bytes), m.transit_cycles,
                       m.vector_count(low.act_bytes), low.act_bytes, deps=deps)
            conv_b = low.convert_elems * (1 if low.fmt == "int8" else 2)
            if low.fmt == "int8" and low.convert_elems:
                amax = b.emit(g, "VXM", "absmax", m.vxm_cycles(low.convert_elems, conv_b), m.vxm_latency,
                              m.vector_count(conv_b), conv_b, streams=(x,))
                x = b.emit(g, "VXM", "quantize", m.vxm_cycles(low.convert_elems, conv_b), m.vxm_latency,
                           m.vector_count(conv_b), conv_b, deps=(amax,), streams=(x,))
            elif low.convert_elems:
                x = b.emit(g, "VXM", "convert", m.vxm_cycles(low.convert_elems, conv_b), m.vxm_latency,
                           m.vector_count(conv_b), conv_b, streams=(x,))
            w_b = int(low.install_bytes * frac)
            w = b.emit(g, "MEM", "read", m.stream_cycles(w_b), m.transit_cycles, m.vector_count(w_b), w_b, deps=deps)
            comp = b.emit(g, "MXM", low.op, low.issue(m, frac), low.latency(m), low.repeat(m, frac), w_b,
                          streams=(x, w))
            mxm_of[g] = comp
            tail = comp
            if low.fmt == "int8":
                n = int(low.out_elems * frac)
                tail = b.emit(g, "VXM", "dequantize", m.vxm_cycles(n, 4 * n), m.vxm_latency, m.vector_count(4 * n),
                              4 * n, streams=(comp,))
            return b.emit(g, "MEM", "write", max(m.stream_cycles(out_b), 1), m.transit_cycles,
                          m.vector_count(out_b), out_b, streams=(tail,))

        def need_slice(value: str, chip: int, k: int, size: int) -> list[int]:
            """Slice ``k`` of a value for an activation split: sent alone when it lives on another chip."""
            if not value or sizes.is_weight(value) or value in resident:
                return []
            src = home[value]
            if src == chip:
                return [avail[(value, src)]]
            key = (f"{value}#slice{k}", chip)
            if key not in avail:
                g = b.group(f"send {value}[slice {k}] chip{src}->chip{chip}", "send", src, "C2C", [], [], 0.0, size,
                            value=value, src=src, dst=chip)
                avail[key] = b.emit(g, "C2C", "send", m.c2c_cycles(size), m.c2c_latency(size) + m.superlanes,
                                    m.vector_count(size), size, deps=(avail[(value, src)],), link=chip)
            return [avail[key]]

        def emit_node(name: str, kind: str, node: Node, low: Lowered, chip: int, frac: float,
                      outs: list[str], deps: list[int] | None = None) -> int:
            if deps is None:
                deps = [d for i in node.inputs for d in need(i, chip)]
            out_b = int(low.out_bytes * frac)
            g = b.group(name, kind, chip, low.unit, [node.name], [node.op_type], low.flops * frac,
                        int(low.act_bytes + (low.weight_bytes + low.out_bytes) * frac),
                        **_formats(low, node.name in sizes.int8.nodes, sizes.policy.exact))
            if low.unit == "MEM":
                last = b.emit(g, "MEM", low.op, 0, 0, 0, 0, deps=tuple(deps))
                comp = last
            elif low.unit == "MXM":
                last = emit_mxm(g, low, frac, out_b, tuple(deps))
                comp = mxm_of[g]
            else:
                rd = b.emit(g, "MEM", "read", m.stream_cycles(low.act_bytes), m.transit_cycles,
                            m.vector_count(low.act_bytes), low.act_bytes, deps=tuple(deps))
                comp = b.emit(g, low.unit, low.op, low.issue(m, frac), low.latency(m), low.repeat(m, frac),
                              out_b, streams=(rd,))
                last = b.emit(g, "MEM", "write", max(m.stream_cycles(out_b), 1), m.transit_cycles,
                              m.vector_count(out_b), out_b, streams=(comp,))
            for o in outs:
                avail[(o, chip)] = last
                home[o] = chip
            return comp

        def emit_act_split(idx: int, node: Node, low: Lowered, shards: list[Shard], step: Step) -> None:
            """Each chip computes its slice (along ``axis``) of a node whose activations fit no chip; a
            value the next node of the run reads stays split, the run's result is gathered."""
            axis = placement.act_axis[idx]
            out = node.outputs[0]
            out_shape = graph.values[out].static_shape or ()
            kept = out in placement.kept_split
            parts = []
            for k, s in enumerate(shards):
                ins, slicing, deps = [], [], []
                for i in node.inputs:
                    if i and i in placement.kept_split:
                        ins.append(f"{i}#part{k}")
                        slicing.append(None)
                        deps.append(avail[(f"{i}#part{k}", s.chip)])
                        continue
                    ax = split_input_axis(graph, node, i, axis) if i else None
                    ins.append(i)
                    slicing.append(ax)
                    if ax is None:
                        deps.extend(need(i, s.chip))
                    else:
                        deps.extend(need_slice(i, s.chip, k, int(sizes.nbytes(i) * s.frac)))
                part = f"{out}#part{k}"
                nbytes[part] = int(sizes.nbytes(out) * s.frac)
                view = tuple(s.hi - s.lo if a == axis else d for a, d in enumerate(out_shape))
                comp = emit_node(f"{node.name}#part{k}", "shard", node, _scaled(low, s.frac, sizes, node), s.chip,
                                 1.0, [part], deps)
                carries[comp] = Step(partial(act_shard_call, step.fn, tuple(slicing), s.lo, s.hi,
                                             view if node.op_type in VIEW_OPS else None),
                                     ins, [part], step.attrs, f"{node.name}#part{k}", node.op_type)
                parts.append(part)
            if kept:
                return
            gather(node, out, parts, shards[-1].chip, axis, len(shards))

        def gather(node: Node, out: str, parts: list[str], chip: int, axis: int, count: int) -> None:
            deps = [d for p in parts for d in need(p, chip)]
            size = sizes.nbytes(out)
            g = b.group(f"{node.name}#gather", "gather", chip, "SXM", [node.name], ["Concat"], 0.0, size,
                        shards=count)
            cat = b.emit(g, "SXM", "concat", max(m.stream_cycles(size), 1), m.sxm_latency + m.transit_cycles,
                         m.vector_count(size), size, deps=tuple(deps))
            carries[cat] = Step(partial(gather_shards, axis), parts, [out], {}, f"{node.name}#gather", "Concat")
            avail[(out, chip)] = cat
            home[out] = chip

        for idx, (node, low, shards) in enumerate(zip(nodes, lowered, placement.where)):
            step = steps[node.name]
            for o in node.outputs:
                if o:
                    nbytes[o] = sizes.nbytes(o)
            if idx in placement.act_axis:
                emit_act_split(idx, node, low, shards, step)
                continue
            if len(shards) == 1:
                outs = [o for o in node.outputs if o]
                carries[emit_node(node.name, "node", node, low, shards[0].chip, 1.0, outs)] = step
                continue
            rule = low.shard
            assert rule is not None
            out = node.outputs[0]
            parts = []
            for k, s in enumerate(shards):
                part = f"{out}#shard{k}"
                nbytes[part] = int(sizes.nbytes(out) * s.frac)
                comp = emit_node(f"{node.name}#shard{k}", "shard", node, low, s.chip, s.frac, [part])
                carries[comp] = Step(partial(shard_call, step.fn, rule.weight, rule.axis, s.lo, s.hi, rule.bias,
                                             rule.bias_axis), list(step.ins), [part], step.attrs,
                                     f"{node.name}#shard{k}", node.op_type)
                parts.append(part)
            out_ndim = len(graph.values[out].static_shape or ()) if out in graph.values else 1
            gather(node, out, parts, shards[-1].chip, rule.out_axis % max(out_ndim, 1), len(shards))
        return b, carries


def _formats(low: Lowered, quantized: bool, exact: bool) -> dict[str, str]:
    """An MXM group's details: the format its products take (at exact only an integer op's: a float
    one's numbers are fp32's there whatever the timing), and for an explicitly quantized model's GEMM
    that it is one."""
    if low.unit != "MXM" or (exact and low.fmt != "int8"):
        return {}
    return {"format": low.fmt, **({"quantization": "int8 (Q/DQ)"} if quantized else {})}


def _scaled(low: Lowered, frac: float, sizes: Sizes, node: Node) -> Lowered:
    """One chip's share of a node split along an activation axis: ``frac`` of its bytes and work."""
    mxm = low.mxm
    if mxm is not None:
        batch, rows, k, n = mxm
        mxm = (max(1, round(batch * frac)), rows, k, n)
    installed_is_weight = low.unit == "MXM" and any(sizes.is_weight(i) for i in node.inputs[1:2])
    return replace(low, act_bytes=int(low.act_bytes * frac), out_bytes=int(low.out_bytes * frac),
                   flops=low.flops * frac, mxm=mxm, shard=None, convert_elems=int(low.convert_elems * frac),
                   out_elems=int(low.out_elems * frac),
                   install_bytes=low.install_bytes if installed_is_weight else int(low.install_bytes * frac))
