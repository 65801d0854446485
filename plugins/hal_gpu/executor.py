"""The GPU executable: the kernel list as engine steps, run in launch order with the target's numerics.

A fused kernel runs its member nodes' reference kernels in order — the values between them are
what the GPU keeps in registers, so only the kernel's outputs are stored in the policy's storage
format. The fused attention kernel is one step running the blocked online-softmax implementation.
Matrix-unit ops see their inputs rounded to the policy's input format and their weights quantised
once, here (per output channel for fp8/int8), and accumulate in fp32; an int8 kernel of an explicitly
quantized model (``Kernel.int8``) takes its dequantized operands as they are, at every precision.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np

from hal.engine import Program, Step, fused_steps, kernel_step
from hal.engine.fusion import bias_of_product
from hal.engine.views import fold_views
from hal.errors import RunError
from hal.graph.fuse import GraphIndex
from hal.graph.ir import Graph, Node
from hal.kernels import lookup
from hal.kernels.score_chain import ScoreChain, member
from hal.numerics import (
    MATRIX_OPS,
    SCALED_FORMATS,
    Policy,
    is_float,
    matrix_operands,
    quantize,
    round_to,
    with_operand_rounding,
)
from hal.perf.trace import event
from hal.specs import CompileReport
from hal_gpu.accumulation import Accumulation
from hal_gpu.attention import FlashAttention, ScoreOp
from hal_gpu.fusion import Kernel


class RegistryKernel:
    """A registry kernel a wrapped step calls, pickled by its registry key (some kernels are closures)."""

    def __init__(self, op_type: str, domain: str, opset: int):
        self.key = (op_type, domain, opset)
        kdef = lookup(op_type, domain, opset)
        if kdef is None:
            raise RunError(f"no kernel for {op_type} at opset {opset}", where="program load",
                           hint="recompile: the stored program came from another hal")
        self.fn = kdef.fn

    def __call__(self, *args: Any, **attrs: Any) -> Any:
        return self.fn(*args, **attrs)

    def __reduce__(self):
        return (RegistryKernel, self.key)


def _kernel(node, graph: Graph) -> RegistryKernel:
    return RegistryKernel(node.op_type, node.domain, graph.opset(node.domain))


_F32 = np.dtype(np.float32)


def round_input(x: Any, fmt: str) -> Any:
    """``x`` as the tensor cores would read it in ``fmt`` (never widened, dtype kept)."""
    if not isinstance(x, np.ndarray) or not is_float(x.dtype):
        return x
    if fmt in ("fp32", "tf32") and x.dtype.itemsize < 4:
        return x
    return round_to(x.astype(np.float32, copy=False), fmt).astype(x.dtype, copy=False)


def _store(out: Any, fmt: str) -> Any:
    if isinstance(out, np.ndarray) and out.dtype == np.float32 and fmt != "fp32":
        return round_to(out, fmt)
    return out


def matrix_call(fn, fmt: str, positions: tuple[int, ...], store: tuple[str | None, ...], *args, **attrs):
    """A matrix-unit op: inputs rounded to ``fmt``, products accumulated in fp32, outputs stored."""
    args = list(args)
    narrow = None
    for i in positions:
        if i >= len(args):
            continue
        x = args[i]
        if x.__class__ is np.ndarray and x.dtype == _F32:  # the usual operand: rounded, dtype kept
            args[i] = round_to(x, fmt)
        elif isinstance(x, np.ndarray) and is_float(x.dtype):
            args[i] = round_input(x, fmt)
            if args[i].dtype.itemsize < 4:
                narrow = args[i].dtype
    if narrow is not None:  # 16-bit operands: fp32 accumulation, result in the operand type
        args = [a.astype(np.float32) if isinstance(a, np.ndarray) and is_float(a.dtype) else a for a in args]
        out = fn(*args, **attrs)
        out = out.astype(narrow) if isinstance(out, np.ndarray) and out.dtype == np.float32 else out
    else:
        out = fn(*args, **attrs)
    return _stored(out, store)


def stored_call(fn, store: tuple[str | None, ...], *args, **attrs):
    """Any other op of a fused kernel: its outputs that leave the kernel are stored in the policy's format."""
    return _stored(fn(*args, **attrs), store)


def _stored(out: Any, store: tuple[str | None, ...]) -> Any:
    if isinstance(out, tuple):
        return tuple(_store(o, s) if s else o for o, s in zip(out, store))
    return _store(out, store[0]) if store and store[0] else out


def quantize_weight(w: np.ndarray, fmt: str, axis: int) -> np.ndarray:
    """A weight as the matrix unit holds it: fp8/int8 with a scale per output channel, else rounded."""
    if not is_float(w.dtype) or (fmt in ("fp32", "tf32") and w.dtype.itemsize < 4):
        return w
    if fmt in SCALED_FORMATS:
        q, scale = quantize(w, fmt, axis=axis if w.ndim > 1 else None)
        return (q.astype(np.float32) * scale).astype(w.dtype)
    return round_to(w.astype(np.float32, copy=False), fmt).astype(w.dtype, copy=False)


def _attention_step(k: Kernel, graph: Graph, fmt: str | None, store: str | None, key_block: int) -> Step:
    p = k.attention
    assert p is not None
    side = list(p.side_inputs)
    chain = {graph.nodes[p.qk].outputs[0]} | {graph.nodes[i].outputs[0] for i in p.score_ops}
    ops = []
    for i in p.score_ops:
        n = graph.nodes[i]
        if n.op_type == "Reshape":
            ops.append(ScoreOp(None, shape=graph.values[n.outputs[0]].static_shape))
            continue
        st = kernel_step(n, graph)
        args = tuple(None if not x else -1 if x in chain else side.index(x) for x in n.inputs)
        ops.append(ScoreOp(_kernel(n, graph), args, tuple(sorted(st.attrs.items()))))
    prob_shapes = tuple(graph.values[graph.nodes[i].outputs[0]].static_shape for i in p.prob_ops)
    fn = FlashAttention(score_ops=tuple(ops), prob_shapes=prob_shapes, keys=p.keys, key_block=key_block, fmt=fmt,
                        store=store, chain=_score_chain(ops))
    return Step(fn, [p.q, p.kt, p.v, *side], [p.out], {}, k.name, "FusedAttention", shapes_follow_inputs=True)


def _score_chain(ops: list[ScoreOp]) -> ScoreChain | None:
    """The score ops as one compiled pass a row (``hal.kernels.score_chain``), when each is an
    Add, Sub, Mul, Div or Where of the running scores and side inputs, without attributes."""
    members = []
    for op in ops:
        m = None if op.fn is None or op.attrs or None in op.args else member(op.call[0], op.args, -1)
        if m is None:
            return None
        members.append(m)
    return ScoreChain(members)


def _narrow_float(graph: Graph, name: str) -> bool:
    info = graph.values.get(name)
    return info is not None and info.dtype is not None and is_float(info.dtype) and info.dtype.itemsize < 4


def build_program(graph: Graph, kernels: list[Kernel], policy: Policy, *, keep_wide: set[int],
                  key_blocks: dict[int, int], fp8: str = "fp8", accumulation: Accumulation | None = None) -> Program:
    """The engine program of the kernel list under ``policy``.

    ``keep_wide``: GEMM node indices that keep 16-bit inputs and weights under fp8/int8 (the logits
    projection, as FP8 recipes do); ``key_blocks``: attention kernel id -> key block width; ``fp8``:
    the number format the matrix cores read where the policy says fp8 (``hal.numerics``' ``fp8``,
    OCP e4m3fn, or ``fp8_fnuz``, e4m3fnuz); ``accumulation``: how the matrix units sum fp8 products
    (``hal_gpu.accumulation``): MatMul and Gemm nodes with fp8 inputs are summed that way.
    With ``exact`` numerics a 16-bit attention runs its nodes' reference steps inside the kernel:
    the reference rounds every intermediate to 16 bits, which a fused fp32 kernel cannot reproduce.
    """
    exact = policy.exact
    narrow_act = policy.storage if policy.matmul_inputs in ("fp8", "int8") else policy.matmul_inputs
    int8 = {i for k in kernels for i in k.int8}  # int8 kernels (explicit Q/DQ): their operands as they are
    users: dict[str, set[tuple[str, int]]] = {}
    for j, n in enumerate(graph.nodes):
        for pos, x in enumerate(n.inputs):
            if x in graph.initializers:
                users.setdefault(x, set()).add(("int8" if j in int8 else n.op_type, pos))
    weights: dict[str, np.ndarray] = {}
    steps: list[Step] = []
    pending: list[Node] = []  # nodes whose reference steps run as they are: fused where the host engine can

    index = GraphIndex(graph)  # one index for every slice fused below: building it is O(graph)
    def fuses_attention(k: Kernel) -> bool:
        """Whether the kernel's attention runs as one step (see this function's text)."""
        return k.attention is not None and not (exact and _narrow_float(graph, k.attention.q))

    # nodes a step made already: bias Adds that joined the MatMul they read, where results stay in
    # fp32 (a wrapped MatMul's result is then what the Add, its reference step, reads either way),
    # and never an attention kernel's own nodes
    done: set[int] = set()
    for k in kernels:
        if fuses_attention(k):
            done.update(k.attention.core)  # type: ignore[union-attr]

    def flush() -> None:
        steps.extend(fused_steps(graph, pending, index, fold=False))
        pending.clear()

    for k in kernels:
        outs = set(k.outputs)
        fused = fuses_attention(k)
        core = set(k.attention.core) if fused and k.attention is not None else set()
        ordered = [i for i in k.nodes if i not in core]
        if fused and k.attention is not None:
            av = k.attention.av
            ordered = [i for i in ordered if i < av] + [-1] + [i for i in ordered if i > av]
        for i in ordered:
            if i == -1:
                flush()
                steps.append(_attention_step(k, graph, None if exact else narrow_act,
                                             None if exact else policy.storage, key_blocks.get(k.id, 128)))
                continue
            if i in done:
                continue
            node = graph.nodes[i]
            # results leaving the kernel are stored in the policy's format (nothing to do for fp32)
            store = tuple(policy.storage if o in outs and policy.storage != "fp32" else None for o in node.outputs)
            # an int8 kernel's int8 x int8 products, accumulated exactly in int32 and scaled after,
            # are the float product of its dequantized operands up to fp32 rounding: the reference's
            matrix = node.op_type in MATRIX_OPS and i not in int8
            if exact or (not matrix and not any(store)):
                pending.append(node)  # the node's reference step: the same bits fused with its neighbours
                continue
            flush()
            st = kernel_step(node, graph)
            if matrix:
                acts, wpos, axis = matrix_operands(node.op_type, node.attrs)
                fmt_in = policy.storage if i in keep_wide else policy.matmul_inputs
                fmt_w = policy.storage if i in keep_wide else policy.matmul_weights
                fmt_in, fmt_w = (fp8 if f == "fp8" else f for f in (fmt_in, fmt_w))
                positions = []
                for pos in acts:
                    x = node.inputs[pos] if pos < len(node.inputs) else ""
                    w = graph.initializers.get(x) if x else None
                    if pos in wpos and isinstance(w, np.ndarray) and users.get(x) == {(node.op_type, pos)}:
                        if x not in weights:
                            weights[x] = quantize_weight(w, fmt_w, axis)
                    else:
                        positions.append(pos)
                fn = with_operand_rounding(_kernel(node, graph), node.op_type, partial(round_input, fmt=fmt_in))
                if (accumulation is not None and accumulation.truncates and fmt_in == fp8
                        and node.op_type in ("MatMul", "Gemm")):  # B's scales: per channel where it is a weight
                    fn = partial(accumulation.fp8_product, fn, fp8, None if 1 in positions else axis)
                steps.append(replace(st, fn=partial(matrix_call, fn, fmt_in, tuple(positions), store)))
                joined = bias_of_product(graph, index, steps[-1]) if policy.storage == "fp32" else None
                if joined is not None and (add := index.position[id(joined[1])]) not in done:
                    steps[-1] = joined[0]  # (tiny-gpt at native: 36 -> 28 steps, 323 -> 287 us a run)
                    done.add(add)
            else:
                steps.append(replace(st, fn=partial(stored_call, _kernel(node, graph), store)))
    flush()
    # layout nodes fold into the step reading them once all steps are made: the Reshape+Transposes
    # that make Q, K and V fold into the fused attention kernel (tiny-gpt: 34 -> 28 steps)
    steps = fold_views(graph, steps, index)
    run_graph = replace(graph, initializers={**graph.initializers, **weights}) if weights else graph
    return Program(run_graph, steps)


class GpuExecutable:
    """A compiled GPU program: run it, read its report, trace its kernel timeline, cache it."""

    def __init__(self, program: Program, report: CompileReport,
                 events: list[tuple[str, str, float, float, dict]]):
        self.program = program
        self.report = report
        self._events = events

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        return self.program.run(feeds)

    def trace(self) -> list[dict[str, Any]]:
        pid = f"{self.report.target} x{self.report.devices}" if self.report.devices > 1 else self.report.target
        return [event(name, start, dur, pid=pid, tid=lane, cat=name.split(":", 1)[0], args=dict(args))
                for name, lane, start, dur, args in self._events]

    def serialize(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)
