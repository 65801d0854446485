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

from hal.errors import InputError
from hal.graph.ir import Graph, TensorInfo, graph_copy
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
    reason: str | None = Field(default=None, description="why no node was found, where none was")


def _rel(a: Any, b: Any) -> float:
    """How far ``a`` is from the reference's ``b``, as ``hal.compare.diff`` measures an output: max |a-b| over
    the values finite in both, over max |b| there; inf where a NaN or inf stands against another kind of value
    (NaN against NaN, or the same infinity, agrees), where the shapes differ, or where integers or booleans
    differ at all (they are compared exactly); 0 for what is not an array or holds neither."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):  # a sequence: its worst tensor
        return float("inf") if len(a) != len(b) else max(map(_rel, a, b), default=0.0)
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        return 0.0
    exact = a.dtype.kind in "biu" and b.dtype.kind in "biu"
    if not exact and not (is_float(a.dtype) and is_float(b.dtype)):
        return 0.0
    if a.shape != b.shape:
        return float("inf")
    if exact:
        return 0.0 if np.array_equal(a, b) else float("inf")
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    fa, fb = np.isfinite(a64), np.isfinite(b64)
    if not (fa.all() and fb.all()):
        same = (np.isnan(a64) & np.isnan(b64)) | (~fa & ~fb & (a64 == b64))  # NaN and NaN, or the same infinity
        if not ((fa & fb) | same).all():
            return float("inf")
    finite = fa & fb
    worst = float(np.abs(a64[finite] - b64[finite]).max()) if finite.any() else 0.0
    scale = float(np.abs(b64[finite]).max()) if finite.any() else 0.0
    return worst / scale if scale > 0 else (0.0 if worst == 0 else float("inf"))


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
    tolerance = _checked_tolerance(tolerance)
    outputs = _check_output(model, output)
    ref_graph, r_vals = _reference_values(model, feeds)
    tgt_graph = _with_all_outputs(optimize(load(graph_copy(model))))
    sess = InferenceSession(tgt_graph, target=target, precision=precision, fallback="allow", **target_options)
    t_vals = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, dict(feeds))))
    return _first_divergence(outputs, target, ref_graph, r_vals, t_vals, output, tolerance)


def _checked_tolerance(tolerance: Any) -> float:
    if isinstance(tolerance, (bool, np.bool_)) or not isinstance(tolerance, (int, float, np.integer, np.floating)) \
            or not np.isfinite(tolerance) or tolerance < 0:
        raise InputError(f"tolerance must be a finite number >= 0, not {tolerance!r}", where="bisect",
                         hint="the largest max |output - cpu| / max |cpu| that still agrees, e.g. tolerance=1e-2 "
                              "(hal.compare.TOLERANCE holds compare's, per precision)")
    return float(tolerance)


def _check_output(model: ModelLike, output: str | None) -> list[str]:
    """The model's output names (before any pass adds to them); an InputError where ``output`` is none of them."""
    names = [o.name for o in load(model).outputs]  # (a Graph as it is: only read)
    if output is not None and output not in names:
        raise InputError(f"output {output!r} is not an output of the model", where="bisect",
                         hint=f"its outputs: {', '.join(names)}; or leave output out to take the one that "
                              "disagrees most")
    return names


def bisect_peer(model: ModelLike, peer: str, feeds: Mapping[str, np.ndarray], *, output: str | None = None,
                tolerance: float = 1e-4) -> BisectResult:
    """Find the first node whose output in ``peer`` (``hal.peers``) diverges from the cpu reference:
    the model as written, every float value hal's reference holds also an output of the peer's run,
    which runs with its graph optimisations off (a fused kernel would hide the node that parts)."""
    import onnx

    from hal.graph.load import parse_model
    from hal.peers import run_peer

    tolerance = _checked_tolerance(tolerance)
    outputs = _check_output(model, output)
    ref_graph, r_vals = _reference_values(model, feeds)
    proto = onnx.ModelProto()
    proto.CopyFrom(parse_model(model)[0])
    made = {o for n in proto.graph.node for o in n.output} - {o.name for o in proto.graph.output}
    for t in ref_graph.outputs:  # the float tensors _with_all_outputs added
        if t.name in made:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(t.name, t.elem_type, None))
    got, _ = run_peer(peer, proto, feeds, optimize=False)
    t_vals = dict(zip([o.name for o in proto.graph.output], got))
    return _first_divergence(outputs, peer, ref_graph, r_vals, t_vals, output, tolerance)


def _reference_values(model: ModelLike, feeds: Mapping[str, np.ndarray]) -> tuple[Graph, dict[str, Any]]:
    """The reference's graph with every float value an output, and those values for ``feeds``."""
    ref_graph = _with_all_outputs(optimize(load(graph_copy(model))))
    ref = InferenceSession(ref_graph, target=REFERENCE_TARGET)
    return ref_graph, dict(zip([o.name for o in ref.get_outputs()], ref.run(None, dict(feeds))))


def _first_divergence(model_outputs: list[str], target: str, ref_graph: Graph, r_vals: dict[str, Any],
                      t_vals: dict[str, Any], output: str | None, tolerance: float) -> BisectResult:
    """The first node upstream of the disagreeing output whose outputs part from the reference's
    while its inputs agree (values one side lacks count as agreeing)."""
    out_name = output or max(model_outputs, key=lambda n: _rel(t_vals.get(n), r_vals.get(n)))
    result = BisectResult(target=target, output=out_name, tolerance=tolerance, found=False)
    if (err := _rel(t_vals.get(out_name), r_vals.get(out_name))) <= tolerance:
        result.reason = (f"{out_name!r} agrees within {tolerance:g} (max rel {err:.3g}) in bisect's run, so there is "
                         "nothing to bisect; where compare found it beyond, the target's program differs once every "
                         "intermediate is kept (it fused or rounded otherwise), or the output is no tensor bisect "
                         "measures (a map)")
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
    result.reason = (f"{out_name!r} differs by {err:.3g}, but no node upstream of it has an output beyond "
                     f"{tolerance:g} while its inputs agree (its values are not tensors bisect measures)")
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
