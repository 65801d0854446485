"""The kernel engine every target executes through: compile once into flat steps, run many.

A ``Program`` is a list of ``Step``s over numbered value slots. Compiling resolves kernels, slots
and buffer lifetimes up front; a run fills the input slots, calls each step's function on its
slots, frees each value after its last use (liveness), and reads the output slots — no graph walk,
no dict building per node. Targets build their own steps (fused kernels, numeric policies) and
hand them to ``Program``; ``steps_for_nodes`` gives the plain one-kernel-per-node steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from hal.errors import HalError, RunError, UnsupportedOpError
from hal.graph.ir import Graph, Node, ShapeOnly
from hal.kernels import KernelContext, lookup


@dataclass
class Step:
    """One call in a program: ``fn(*values[ins], **attrs)`` written to ``outs``."""

    fn: Callable[..., Any]
    ins: list[str]
    outs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    op_type: str = ""
    context_opset: int | None = None  # set when fn wants a KernelContext (control flow)


class Subgraph:
    """A graph attribute (If/Loop/Scan body) compiled lazily; outer names resolve in the scope."""

    def __init__(self, proto: onnx.GraphProto, opsets: dict[str, int]):
        self.proto = proto
        self.opsets = opsets
        self._program: Program | None = None
        self.input_names = [i.name for i in proto.input]
        self.output_names = [o.name for o in proto.output]
        #: every name the body reads, nested bodies included (outer names among them)
        self.reads = _graph_reads(proto)

    def _compile(self) -> Program:
        if self._program is None:
            from hal.graph.load import from_proto

            model = onnx.helper.make_model(
                self.proto, opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in self.opsets.items()])
            g = from_proto(model, where=f"subgraph {self.proto.name!r}", check=False, infer_shapes=False)
            # Names the body reads but neither defines nor receives come from the enclosing scope.
            defined = {i.name for i in g.inputs} | set(g.initializers) | {o for n in g.nodes for o in n.outputs}
            free = sorted(n for n in self.reads if n not in defined)
            self._program = Program(g, steps_for_nodes(g, g.nodes), extra_inputs=free)
        return self._program

    def __call__(self, *inputs: Any, scope: Mapping[str, Any] | None = None) -> list[Any]:
        prog = self._compile()
        feeds = dict(zip(self.input_names, inputs))
        outer = {n: scope[n] for n in prog.extra_inputs if scope is not None and n in scope}
        return prog.run_list(feeds, outer)


def _graph_reads(g: onnx.GraphProto) -> set[str]:
    reads = {o.name for o in g.output}
    for n in g.node:
        reads.update(i for i in n.input if i)
        for a in n.attribute:
            for sg in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                reads |= _graph_reads(sg)
    return reads


def _implicit_reads(step: Step) -> set[str]:
    """Names a step's subgraph attributes read from the enclosing scope (they keep those values alive)."""
    out: set[str] = set()
    for v in step.attrs.values():
        for sg in v if isinstance(v, list) else [v]:
            if isinstance(sg, Subgraph):
                out |= sg.reads
    return out


class _Scope(Mapping[str, Any]):
    """The values visible to a control-flow kernel: the program's live slots, then the outer scope."""

    def __init__(self, slots: dict[str, int], env: list[Any], outer: Mapping[str, Any] | None):
        self._slots, self._env, self._outer = slots, env, outer

    def __getitem__(self, k: str) -> Any:
        i = self._slots.get(k)
        if i is not None and self._env[i] is not None:
            return self._env[i]
        if self._outer is not None:
            return self._outer[k]
        raise KeyError(k)

    def __iter__(self) -> Iterator[str]:
        yield from (k for k, i in self._slots.items() if self._env[i] is not None)
        if self._outer is not None:
            yield from self._outer

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _convert_graph_attrs(node: Node, opsets: dict[str, int]) -> dict[str, Any]:
    attrs = dict(node.attrs)
    for k, v in attrs.items():
        if isinstance(v, onnx.GraphProto):
            attrs[k] = Subgraph(v, opsets)
        elif isinstance(v, list) and v and isinstance(v[0], onnx.GraphProto):
            attrs[k] = [Subgraph(x, opsets) for x in v]
    return attrs


def kernel_step(node: Node, graph: Graph) -> Step:
    """The reference kernel of one node as a step (UnsupportedOpError when no kernel exists)."""
    opset = graph.opset(node.domain)
    kdef = lookup(node.op_type, node.domain, opset)
    if kdef is None:
        dom = f"{node.domain}." if node.domain else ""
        raise UnsupportedOpError(f"no kernel for {dom}{node.op_type} at opset {opset}", where=f"node {node.name!r}",
                                 nodes=[(node.name, node.op_type, "no kernel")],
                                 hint="register one through the hal_kernels hook, or pick a target that has it")
    attrs = kdef.static_attrs(_convert_graph_attrs(node, graph.opsets), node.outputs)
    return Step(kdef.fn, list(node.inputs), list(node.outputs), attrs, node.name, node.op_type,
                opset if kdef.context else None)


def steps_for_nodes(graph: Graph, nodes: Iterable[Node]) -> list[Step]:
    return [kernel_step(n, graph) for n in nodes]


def _shape_of(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"{v.dtype}{list(v.shape)}"
    if isinstance(v, list):
        return f"seq[{len(v)}]"
    return type(v).__name__


class Program:
    """Flat steps over slots, with weights bound and lifetimes planned."""

    def __init__(self, graph: Graph, steps: Sequence[Step], *, extra_inputs: Sequence[str] = (),
                 output_names: Sequence[str] | None = None):
        self.graph = graph
        self.steps = list(steps)
        self.input_names = [i.name for i in graph.inputs]
        self.extra_inputs = list(extra_inputs)
        self.output_names = list(output_names) if output_names is not None else [o.name for o in graph.outputs]
        slots: dict[str, int] = {}

        def slot(name: str) -> int:
            if name not in slots:
                slots[name] = len(slots)
            return slots[name]

        for n in self.input_names + self.extra_inputs:
            slot(n)
        weights = {k: w for k, w in graph.initializers.items()}
        for k in weights:
            slot(k)
        for s in self.steps:
            for n in s.ins:
                if n:
                    slot(n)
            for n in s.outs:
                if n:
                    slot(n)
        for n in self.output_names:
            slot(n)
        self.slots = slots
        self._template: list[Any] = [None] * len(slots)
        for k, w in weights.items():
            self._template[slots[k]] = w
        self.shape_only = any(isinstance(w, ShapeOnly) for w in weights.values())
        # Liveness: free each intermediate right after its last reader.
        keep = {slots[n] for n in self.output_names} | {slots[k] for k in weights}
        last_use: dict[int, int] = {}
        for idx, s in enumerate(self.steps):
            for n in s.ins:
                if n:
                    last_use[slots[n]] = idx
            for n in _implicit_reads(s):
                if n in slots:
                    last_use[slots[n]] = idx
            for n in s.outs:
                if n and slots[n] not in last_use:
                    last_use[slots[n]] = idx  # produced but never read: free at once
        frees: list[list[int]] = [[] for _ in self.steps]
        for sl, idx in last_use.items():
            if sl not in keep:
                frees[idx].append(sl)
        self._plan = [
            (s.fn, tuple(slots[n] if n else -1 for n in s.ins), tuple(slots[n] if n else -1 for n in s.outs),
             s.attrs, tuple(frees[i]), s)
            for i, s in enumerate(self.steps)
        ]
        self._in_slots = [slots[n] for n in self.input_names]
        self._out_slots = [slots[n] for n in self.output_names]

    def run_list(self, feeds: Mapping[str, Any], outer: Mapping[str, Any] | None = None) -> list[Any]:
        """Run with feeds by name (already validated); returns outputs in ``output_names`` order."""
        if self.shape_only:
            raise RunError("this model's weights are declared by shape only, so it can be compiled and "
                           "estimated but not run", where=self.graph.name,
                           hint="use hal estimate, or build the model with real weights")
        env = list(self._template)
        slots = self.slots
        for name, v in feeds.items():
            i = slots.get(name)
            if i is not None:
                env[i] = v
        if outer:
            for name, v in outer.items():
                i = slots.get(name)
                if i is not None and env[i] is None:
                    env[i] = v
        for fn, ins, outs, attrs, frees, step in self._plan:
            args = [env[i] if i >= 0 else None for i in ins]
            try:
                if step.context_opset is not None:
                    res = fn(*args, _ctx=KernelContext(step.context_opset, _Scope(slots, env, outer)), **attrs)
                else:
                    res = fn(*args, **attrs)
            except HalError:
                raise
            except Exception as e:  # a kernel failure becomes a RunError naming the node
                shapes = ", ".join(_shape_of(a) for a in args)
                raise RunError(f"{step.op_type} failed: {type(e).__name__}: {e}", where=f"node {step.label!r}",
                               hint=f"inputs were ({shapes})") from e
            if len(outs) == 1:
                if outs[0] >= 0:
                    env[outs[0]] = res[0] if isinstance(res, tuple) else res
            else:
                if not isinstance(res, tuple):
                    res = (res,)
                for o, r in zip(outs, res):
                    if o >= 0:
                        env[o] = r
            for f in frees:
                env[f] = None
        return [env[i] for i in self._out_slots]

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        return dict(zip(self.output_names, self.run_list(feeds)))


def reference_program(graph: Graph) -> Program:
    """The plain program: one reference kernel per node."""
    return Program(graph, steps_for_nodes(graph, graph.nodes))
