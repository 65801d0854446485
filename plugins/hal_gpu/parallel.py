"""Tensor parallelism over the GPUs of one node, Megatron-style, derived from the graph.

A GEMM whose activation is whole on every device (replicated) and whose weight splits by output
columns is *column-parallel*: each device computes its slice and the result stays split. A GEMM
whose activation is already split reads its weight split by rows (*row-parallel*): each device
holds a partial sum, and an all-reduce over the links makes it whole again. Everything between
follows its inputs: attention over split heads stays split; norms over whole rows stay whole. For
a Llama layer this gives the textbook plan — QKV and gate/up column-parallel, o_proj and
down_proj row-parallel, two all-reduces per layer — without knowing it is a Llama.

Split outputs that the graph itself reads (a KV cache) stay on their devices; split outputs only
the caller reads (logits) are all-gathered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hal.graph.ir import Graph
from hal.numerics import is_float
from hal_gpu.fusion import Kernel

#: ops whose weight operand (input 1, 2-D) the plan may split
_SPLITTABLE = frozenset({"MatMul", "Gemm"})


@dataclass
class Sharding:
    """Which values and weights are split over ``devices``, and the collectives that costs."""

    devices: int
    split: set[str] = field(default_factory=set)              # values and weights split over devices
    split_nodes: set[int] = field(default_factory=set)        # nodes whose work is split
    allreduce: dict[int, float] = field(default_factory=dict)  # kernel id -> bytes reduced after it
    allgather: dict[str, float] = field(default_factory=dict)  # graph output -> bytes gathered at the end

    def share(self, name: str) -> float:
        """The fraction of ``name`` (value or weight) one device holds."""
        return 1.0 / self.devices if name in self.split else 1.0


def _weight_dims(graph: Graph, node_op: str, w_name: str, attrs: dict) -> tuple[int, int] | None:
    """(K, N) of a GEMM weight, or None when it is not a 2-D weight."""
    w = graph.initializers.get(w_name)
    if w is None or len(w.shape) != 2:
        return None
    k, n = w.shape
    if node_op == "Gemm" and attrs.get("transB", 0):
        k, n = n, k
    return int(k), int(n)


def plan_sharding(graph: Graph, kernels: list[Kernel], devices: int,
                  value_bytes: Callable[[str], float]) -> Sharding:
    """The tensor-parallel plan of ``kernels`` over ``devices`` GPUs (trivial for one)."""
    sh = Sharding(devices)
    if devices <= 1:
        return sh
    kernel_of = {i: k.id for k in kernels for i in k.nodes}
    inits = graph.initializers
    for idx, node in enumerate(graph.nodes):
        acts = [x for x in node.inputs if x and x not in inits]
        any_split = any(x in sh.split for x in acts)
        outs = [o for o in node.outputs if o]
        if node.op_type in _SPLITTABLE and len(node.inputs) > 1 and node.inputs[1] in inits \
                and node.inputs[0] not in inits:
            dims = _weight_dims(graph, node.op_type, node.inputs[1], node.attrs)
            if dims is not None:
                k, n = dims
                if not any_split and n % devices == 0:       # column-parallel
                    sh.split.add(node.inputs[1])
                    if node.op_type == "Gemm" and len(node.inputs) > 2 and node.inputs[2] in inits:
                        sh.split.add(node.inputs[2])
                    sh.split.update(outs)
                    sh.split_nodes.add(idx)
                    continue
                if any_split and k % devices == 0:            # row-parallel: partial sums, then all-reduce
                    sh.split.add(node.inputs[1])
                    sh.split_nodes.add(idx)
                    kid = kernel_of[idx]
                    sh.allreduce[kid] = sh.allreduce.get(kid, 0.0) + sum(value_bytes(o) for o in outs)
                    continue
                if any_split:  # cannot split the weight: gather the activation first
                    sh.allgather.setdefault(node.inputs[0], value_bytes(node.inputs[0]))
                    continue
        if any_split:
            sh.split.update(outs)
            sh.split_nodes.add(idx)
    consumers: dict[str, list[int]] = {}
    for idx, node in enumerate(graph.nodes):
        for x in node.inputs:
            if x:
                consumers.setdefault(x, []).append(idx)
    for t in graph.inputs:  # per-device state (a KV cache) feeds only split work: it is split too
        cons = consumers.get(t.name, [])
        dt = t.dtype
        if cons and dt is not None and is_float(dt) and all(c in sh.split_nodes for c in cons):
            sh.split.add(t.name)
    for o in graph.outputs:
        if o.name in sh.split and not consumers.get(o.name):
            sh.allgather[o.name] = value_bytes(o.name)
    return sh
