"""Bisect a numeric disagreement: the first node whose output diverges from the reference.

Both targets run a copy of the model in which every intermediate float tensor is also a graph
output; walking the nodes in topological order, the first node whose output differs beyond the
tolerance while all of its float inputs agree is where the error is born. The path from it to the
disagreeing model output shows how the error grows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from hal.graph.ir import Graph, TensorInfo
from hal.graph.load import ModelLike, load
from hal.graph.passes import optimize
from hal.numerics import is_float
from hal.session import REFERENCE_TARGET, InferenceSession


class PathStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: str
    op_type: str
    tensor: str
    max_rel: float


class BisectResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str
    output: str
    tolerance: float
    found: bool
    node: str | None = None
    op_type: str | None = None
    max_rel: float | None = None
    inputs_max_rel: float | None = Field(default=None, description="worst disagreement among its inputs")
    path: list[PathStep] = Field(default_factory=list, description="from the first diverging node to the output")


def _rel(a: Any, b: Any) -> float:
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)) or not is_float(a.dtype):
        return 0.0
    if a.shape != b.shape:
        return float("inf")
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    both_nan = np.isnan(a64) & np.isnan(b64)
    d = np.where(both_nan, 0.0, np.abs(a64 - b64))
    d = np.nan_to_num(d, nan=np.inf, posinf=np.inf)
    scale = float(np.nanmax(np.abs(b64))) if b64.size else 0.0
    worst = float(d.max()) if d.size else 0.0
    return worst / scale if scale > 0 else worst


def _with_all_outputs(graph: Graph) -> Graph:
    outs = {o.name for o in graph.outputs}
    extra = []
    for n in graph.nodes:
        for o in n.outputs:
            info = graph.values.get(o)
            if o and o not in outs and info is not None and info.kind == "tensor" and info.dtype is not None \
                    and is_float(info.dtype):
                extra.append(info)
                outs.add(o)
    graph.outputs = list(graph.outputs) + [TensorInfo(t.name, t.elem_type, t.shape, t.kind, t.type_proto)
                                           for t in extra]
    return graph


def bisect(model: ModelLike, target: str, feeds: Mapping[str, np.ndarray], *, output: str | None = None,
           precision: str = "exact", tolerance: float = 1e-4, **target_options: Any) -> BisectResult:
    """Find the first node on ``target`` whose output diverges from the cpu reference."""
    ref_graph, r_vals = _reference_values(model, feeds)
    tgt_graph = _with_all_outputs(optimize(load(model)))
    sess = InferenceSession(tgt_graph, target=target, precision=precision, fallback="allow", **target_options)
    t_vals = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, dict(feeds))))
    return _first_divergence(model, target, ref_graph, r_vals, t_vals, output, tolerance)


def bisect_peer(model: ModelLike, peer: str, feeds: Mapping[str, np.ndarray], *, output: str | None = None,
                tolerance: float = 1e-4) -> BisectResult:
    """Find the first node whose output in ``peer`` (``hal.peers``) diverges from the cpu reference:
    the model as written, every float value hal's reference holds also an output of the peer's run,
    which runs with its graph optimisations off (a fused kernel would hide the node that parts)."""
    import onnx

    from hal.graph.load import parse_model
    from hal.peers import run_peer

    ref_graph, r_vals = _reference_values(model, feeds)
    proto = onnx.ModelProto()
    proto.CopyFrom(parse_model(model)[0])
    made = {o for n in proto.graph.node for o in n.output} - {o.name for o in proto.graph.output}
    for t in ref_graph.outputs:  # the float tensors _with_all_outputs added
        if t.name in made:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(t.name, t.elem_type, None))
    got, _ = run_peer(peer, proto, feeds, optimize=False)
    t_vals = dict(zip([o.name for o in proto.graph.output], got))
    return _first_divergence(model, peer, ref_graph, r_vals, t_vals, output, tolerance)


def _reference_values(model: ModelLike, feeds: Mapping[str, np.ndarray]) -> tuple[Graph, dict[str, Any]]:
    """The reference's graph with every float value an output, and those values for ``feeds``."""
    ref_graph = _with_all_outputs(optimize(load(model)))
    ref = InferenceSession(ref_graph, target=REFERENCE_TARGET)
    return ref_graph, dict(zip([o.name for o in ref.get_outputs()], ref.run(None, dict(feeds))))


def _first_divergence(model: ModelLike, target: str, ref_graph: Graph, r_vals: dict[str, Any],
                      t_vals: dict[str, Any], output: str | None, tolerance: float) -> BisectResult:
    """The first node upstream of the disagreeing output whose outputs part from the reference's
    while its inputs agree (values one side lacks count as agreeing)."""
    model_outputs = [o.name for o in load(model).outputs]
    out_name = output or max(model_outputs, key=lambda n: _rel(t_vals.get(n), r_vals.get(n)))
    result = BisectResult(target=target, output=out_name, tolerance=tolerance, found=False)
    if _rel(t_vals.get(out_name), r_vals.get(out_name)) <= tolerance:
        return result
    producer = ref_graph.producers()
    # Only nodes upstream of the disagreeing output matter.
    upstream, stack = set(), [out_name]
    while stack:
        t = stack.pop()
        n = producer.get(t)
        if n is None or n.name in upstream:
            continue
        upstream.add(n.name)
        stack.extend(i for i in n.inputs if i)
    for n in ref_graph.nodes:
        if n.name not in upstream:
            continue
        err = max((_rel(t_vals.get(o), r_vals.get(o)) for o in n.outputs if o in r_vals), default=0.0)
        if err <= tolerance:
            continue
        in_err = max((_rel(t_vals.get(i), r_vals.get(i)) for i in n.inputs if i in r_vals), default=0.0)
        if in_err > tolerance:
            continue  # inherited, not born here
        result.found, result.node, result.op_type = True, n.name, n.op_type
        result.max_rel, result.inputs_max_rel = err, in_err
        result.path = _path(ref_graph, n.name, out_name, producer, t_vals, r_vals)
        return result
    return result


def _path(graph: Graph, start: str, out: str, producer: dict, t_vals: dict, r_vals: dict) -> list[PathStep]:
    """The chain of producers from the model output back to ``start``, following the worst input."""
    chain = []
    t = out
    seen = set()
    while t in producer and t not in seen:
        seen.add(t)
        n = producer[t]
        chain.append(PathStep(node=n.name, op_type=n.op_type, tensor=t, max_rel=_rel(t_vals.get(t), r_vals.get(t))))
        if n.name == start:
            break
        ins = [i for i in n.inputs if i in r_vals and i in producer]
        if not ins:
            break
        t = max(ins, key=lambda i: _rel(t_vals.get(i), r_vals.get(i)))
    chain.reverse()
    return chain
