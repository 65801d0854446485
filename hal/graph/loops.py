"""Trip counts the graph fixes: a while-style Loop (no trip count ``M``) whose condition is computed
only from the iteration number, constants, and loop-carried values updated from those alone runs a
number of times known before the run. This pass works that number out, running just those nodes of
the body, and gives it to the Loop as ``M``; nothing the Loop computes changes (a Loop stops at
whichever of ``M`` and its condition ends it first), but a target that schedules every iteration
before it runs (the LPU) can now take it. tf2onnx writes such a Loop for every ``tf.while_loop``
(tf_keras' SimpleRNN, GRU with ``reset_after=False``, and masked LSTM and GRU) even where every shape
is static. Part of the standard pipeline (``hal.graph.passes.optimize``), after constant folding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from hal.graph.ir import NONDETERMINISTIC, Graph, Node, TensorInfo, attribute_graphs
from hal.graph.rewrite import Rewrite
from hal.kernels import lookup

#: the most iterations worked out at compile time; a longer loop is left as it is
MAX_TRIPS = 1 << 14
#: loop-carried values up to this many elements are followed (counters, not activations)
MAX_CARRIED = 64


def static_trip_counts(graph: Graph) -> Graph:
    """Each while-style Loop whose trip count is fixed by the graph given it as ``M`` (see the
    module text), in place."""
    counted = list(_counted(graph, graph.initializers))
    if counted:
        rw = Rewrite(graph)
        for _, n, trips in counted:
            n.inputs[0] = rw.weight(graph, f"{n.name}_trip_count", np.array(trips, dtype=np.int64))
    return graph


def with_trip_counts(graph: Graph, values: Mapping[str, np.ndarray]) -> Graph:
    """``graph`` with each while-style Loop whose trip count ``values`` (outer values known before the
    run: the LPU's host values, once a specialisation fixed them) decide given it as ``M``; the graph
    itself when there is none. Its nodes are shared, not changed: a Loop given ``M`` is a copy."""
    counted = list(_counted(graph, {**values, **graph.initializers}))
    if not counted:
        return graph
    nodes, weights, infos = list(graph.nodes), dict(graph.initializers), dict(graph.values)
    for i, n, trips in counted:
        name = f"{n.name}_trip_count"
        while name in infos or name in weights:
            name += "_"
        weights[name] = np.array(trips, dtype=np.int64)
        infos[name] = TensorInfo(name, TensorProto.INT64, ())
        nodes[i] = replace(n, inputs=[name, *n.inputs[1:]])
    return replace(graph, nodes=nodes, initializers=weights, values=infos)


def _counted(graph: Graph, known: Mapping[str, Any]) -> Iterator[tuple[int, Node, int]]:
    """(position, Loop, the trip count it runs) for each while-style Loop of ``graph`` whose count the
    values of ``known`` fix and its ``M`` does not already say."""
    for i, n in enumerate(graph.nodes):
        if _while_loop(n, known):
            trips = trip_count(n, known, graph.opset)
            if trips is not None and not (n.inputs[0] and trips == _limit(n, known)):
                yield i, n, trips


def _while_loop(n: Node, known: Mapping[str, Any]) -> bool:
    """Whether ``n`` is a Loop with no trip count, or one ``known`` holds (jax2onnx gives its while
    loops the largest int64), so that its condition may be what ends it."""
    return n.op_type == "Loop" and not n.domain and bool(n.inputs) and (
        not n.inputs[0] or isinstance(known.get(n.inputs[0]), np.ndarray))


def _limit(n: Node, known: Mapping[str, Any]) -> int | None:
    """The trip count ``M`` a Loop is given, where it is given and ``known`` holds it."""
    m = known.get(n.inputs[0]) if n.inputs and n.inputs[0] else None
    return int(np.asarray(m).reshape(-1)[0]) if isinstance(m, np.ndarray) and m.size == 1 else None


def _passed_on(body: onnx.GraphProto) -> str:
    """The value a body's condition output is, through any Identity nodes."""
    producer = {p.output[0]: p for p in body.node if p.op_type == "Identity" and p.output}
    name, seen = body.output[0].name, set()
    while name in producer and name not in seen:
        seen.add(name)
        name = producer[name].input[0]
    return name


def trip_count_inputs(loop: Node) -> set[str] | None:
    """The outer values a while-style Loop's trip count depends on (its initial condition, the initial
    values of the carried values its condition reads, the outer values its condition's nodes read),
    where only those, the iteration number and the body's constants decide it; None otherwise."""
    cone = _condition_cone(loop)
    return None if cone is None else cone[2]


def _condition_cone(loop: Node) -> tuple[list[int], dict[str, int], set[str]] | None:
    """(the body nodes that compute the condition, in order; the carried inputs they read, by their
    position; the outer values they and the trip count depend on), or None where a body node there is
    random or holds a subgraph, or the body is no Loop body."""
    body = loop.attrs.get("body")
    if body is None or len(body.input) < 2 or not body.output:
        return None
    iter_name, cond_in = body.input[0].name, body.input[1].name
    carried_in = [vi.name for vi in body.input[2:]]
    carried_out = [vi.name for vi in body.output[1:1 + len(carried_in)]]
    initial = loop.inputs[2:2 + len(carried_in)]
    constants = {t.name for t in body.initializer}
    producer = {o: i for i, p in enumerate(body.node) for o in p.output if o}
    needed: set[int] = set()
    follow: dict[str, int] = {}
    outer = {i for i in loop.inputs[:2] if i}  # its trip count M, where given, and initial condition
    todo, seen = [body.output[0].name], set()
    while todo:  # the condition's cone, and the cone of each carried value it reads
        name = todo.pop()
        if not name or name in seen or name in (iter_name, cond_in) or name in constants:
            continue
        seen.add(name)
        if name in carried_in:
            j = carried_in.index(name)
            if j >= len(initial) or not initial[j]:
                return None
            follow[name] = j
            outer.add(initial[j])
            todo.append(carried_out[j])
        elif name in producer:
            p = body.node[producer[name]]
            if p.op_type in NONDETERMINISTIC or any(attribute_graphs(a) for a in p.attribute):
                return None
            needed.add(producer[name])
            todo.extend(p.input)
        else:
            outer.add(name)  # a value from outside the body
    return sorted(needed), follow, outer


def trip_count(loop: Node, known: Mapping[str, Any], opset: Callable[[str], int]) -> int | None:
    """How many times ``loop`` runs (at most its ``M``, where given), where only the iteration number,
    constants and the values of ``known`` (outer values by name) decide its condition; None otherwise,
    or past MAX_TRIPS."""
    cone = _condition_cone(loop)
    if cone is None or not all(isinstance(known.get(n), np.ndarray) for n in cone[2]):
        return None
    order, follow, _ = cone
    body = loop.attrs["body"]
    iter_name, cond_in = body.input[0].name, body.input[1].name
    carried_out = {name: body.output[1 + j].name for name, j in follow.items()}
    carried = {name: known[loop.inputs[2 + j]] for name, j in follow.items()}
    constants = {t.name: numpy_helper.to_array(t) for t in body.initializer}
    constants.update((n, known[n]) for n in cone[2])
    steps = []
    for i in order:
        node = Node.from_proto(body.node[i], body.node[i].name or f"{body.node[i].op_type}_{i}")
        kdef = lookup(node.op_type, node.domain, opset(node.domain))
        if kdef is None or kdef.context:
            return None
        steps.append((node, kdef, kdef.static_attrs(node.attrs, node.outputs)))
    cond = loop.inputs[1] if len(loop.inputs) > 1 else ""
    going = bool(np.asarray(known[cond]).reshape(-1)[0]) if cond else True
    limit = _limit(loop, known) if loop.inputs[0] else None
    if _passed_on(body) == cond_in:  # the condition passed on unchanged: a for loop, or an endless one
        return None if going and limit is None else limit if going else 0
    trips = 0
    try:
        while going and (limit is None or trips < limit):
            if trips == MAX_TRIPS or any(np.asarray(v).size > MAX_CARRIED for v in carried.values()):
                return None
            env = {**constants, **carried, iter_name: np.array(trips, np.int64), cond_in: np.array(going)}
            with np.errstate(all="ignore"):  # as every run is
                for node, kdef, attrs in steps:
                    res = kdef.fn(*[env[i] if i else None for i in node.inputs], **attrs)
                    env.update(zip(node.outputs, res if isinstance(res, tuple) else (res,)))
            going = bool(np.asarray(env[body.output[0].name]).reshape(-1)[0])
            carried = {name: env[out] for name, out in carried_out.items()}
            trips += 1
    except Exception:  # a body the kernels refuse here is left for the run to report
        return None
    return trips


__all__ = ["MAX_TRIPS", "static_trip_counts", "trip_count", "trip_count_inputs", "with_trip_counts"]
