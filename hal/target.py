"""The Target and Executable protocols a plugin implements.

A target answers what it can take (``capability``) before it compiles (``compile``); the
executable is the target's own program, runs numerically through that program, and reports what
the hardware would do. ``load`` turns ``Executable.serialize()`` bytes back into an executable
(the compile cache).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import onnx

from hal.graph.ir import Graph, Node, attribute_graphs, node_bodies, np_dtype
from hal.specs import Capability, CompileOptions, CompileReport, TargetSpec, dtype_name


@runtime_checkable
class Executable(Protocol):
    """A compiled program for one target."""

    #: what the hardware would do: latency, memory, devices, energy, per-kernel breakdown
    report: CompileReport

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Execute the program on validated feeds (name -> array); returns outputs by name.

        Must execute *through the program* (the kernels / schedule / placement the target built),
        with the target's numeric policy, and must be safe to call from several threads at once.
        Raises RunError if the program is shape-only (weights not materialised).
        """
        ...

    def trace(self) -> list[dict[str, Any]]:
        """Timeline events of the program in Chrome trace-event form (``ph``, ``name``, ``ts`` and
        ``dur`` in microseconds, ``pid``, ``tid``, ``args``)."""
        ...

    def serialize(self) -> bytes:
        """Bytes that ``Target.load`` turns back into an equivalent executable."""
        ...


@runtime_checkable
class Target(Protocol):
    """One accelerator target as a plugin provides it."""

    spec: TargetSpec

    def capability(self, graph: Graph, options: CompileOptions) -> Capability:
        """Which nodes this target takes (as fusable groups) and, for each node it refuses, why
        (op, dtype, shape or attribute). Must not compile; must be cheap."""
        ...

    def compile(self, graph: Graph, options: CompileOptions) -> Executable:
        """Lower the graph to this target's program. Works without input data and with shape-only
        weights (the executable then reports but cannot run). Raises UnsupportedOpError for a node
        it cannot take, ResourceError when the program does not fit, CompileError otherwise."""
        ...

    def load(self, blob: bytes) -> Executable:
        """Rebuild an executable from ``Executable.serialize()`` output of the same plugin version."""
        ...


#: domains whose ops hal has no kernels for, by design, and what to do instead
FOREIGN_DOMAINS = {
    "com.microsoft.nchwc": "onnxruntime writes its NCHWc layout ops only at ORT_ENABLE_ALL, laid out for the CPU "
                           "that saved the model; save it with graph_optimization_level=ORT_ENABLE_EXTENDED (its "
                           "transformers optimizer: opt_level 1 or 2)",
}


#: onnx's own domains: onnx.checker counts their nodes' inputs from the schemas; hal counts the
#: others' (onnxruntime's, a plugin's) from their kernels (``KernelDef.required_inputs``)
_ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview", "ai.onnx.preview.training"})


def no_kernel_reason(node: Node, graph: Graph) -> str:
    """Why a node with no kernel in the registry is refused: its op, domain and opset, and what to do
    where the domain is one hal leaves alone on purpose (``FOREIGN_DOMAINS``)."""
    domain = f" (domain {node.domain})" if node.domain else ""
    advice = FOREIGN_DOMAINS.get(node.domain)
    return (f"no kernel for {node.op_type}{domain} at opset {graph.opset(node.domain)}"
            + (f": {advice}" if advice else ""))


def _body_tensors(body: onnx.GraphProto, where: str) -> Iterator[tuple[str, int, str]]:
    """(name, ONNX element type, where) of every tensor an If / Loop / Scan body and the bodies in it
    declare (hal's loader has inferred their types)."""
    for vi in (*body.input, *body.output, *body.value_info):
        if vi.type.HasField("tensor_type"):
            yield vi.name, vi.type.tensor_type.elem_type, where
    for init in body.initializer:
        yield init.name, init.data_type, where
    for n in body.node:
        for a in n.attribute:
            for g in attribute_graphs(a):
                yield from _body_tensors(g, f"{where}, node {n.name or n.op_type!r}'s {a.name}")


def foreign_dtype(node: Node, graph: Graph, spec: TargetSpec) -> str | None:
    """Why ``node`` is not for a target whose spec lists the dtypes its hardware has (``TargetSpec.dtypes``):
    the first tensor it reads or writes, or one its bodies compute, of another type; None when there is
    none (always for a spec that lists no dtypes)."""
    if not spec.dtypes:
        return None
    tensors: list[tuple[str, int | np.dtype | None, str]] = []
    for v in (*node.inputs, *node.outputs):
        info = graph.values.get(v) if v else None
        if info is not None and info.kind == "tensor":
            tensors.append((v, info.dtype, ""))
    for key, body in node_bodies(node.attrs.items()):
        tensors += _body_tensors(body, f" in its {key}")
    for v, dt, where in tensors:
        dt = np_dtype(dt) if isinstance(dt, int) else dt
        if dt is not None and (name := dtype_name(dt)) not in spec.dtypes:
            return (f"{name} value {v!r}{where}: target {spec.name!r} computes in {', '.join(spec.dtypes)} only "
                    "(its spec's dtypes)")
    return None


def kernel_capability(graph: Graph, target: str | TargetSpec, refuse: Any = None) -> Capability:
    """The capability of a target that runs every node the kernel registry has a kernel for.

    Given the target's spec rather than its name, a node reading or writing a tensor of a type the
    spec's ``dtypes`` leave out is refused (``foreign_dtype``). ``refuse(node, graph)`` may return a
    reason string to refuse a node for anything else the hardware lacks (an op, a shape, an attribute).
    Each node is its own group.
    """
    from hal.kernels import lookup
    from hal.specs import NodeGroup, Refusal

    spec = None if isinstance(target, str) else target
    target = target if isinstance(target, str) else target.name
    groups, refused = [], []
    for n in graph.nodes:
        reason = None
        kdef = lookup(n.op_type, n.domain, graph.opset(n.domain))
        if kdef is None:
            reason = no_kernel_reason(n, graph)
        elif n.domain not in _ONNX_DOMAINS and len(n.inputs) < kdef.required_inputs:
            reason = (f"{n.op_type} takes at least {kdef.required_inputs} inputs, the node gives {len(n.inputs)}: "
                      f"the model is malformed")
        elif why := kdef.refusal(n.attrs, n.inputs, n.outputs, lambda v: getattr(graph.values.get(v), "dtype", None)):
            reason = f"no kernel for this form: {why}"
        elif spec is not None and (why := foreign_dtype(n, graph, spec)):
            reason = why
        elif refuse is not None:
            reason = refuse(n, graph)
        if reason:
            refused.append(Refusal(node=n.name, op_type=n.op_type, reason=reason))
        else:
            groups.append(NodeGroup(nodes=[n.name]))
    return Capability(target=target, groups=groups, refused=refused)
