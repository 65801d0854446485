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

import numpy as np
from onnx import numpy_helper

from hal.graph.ir import NONDETERMINISTIC, Graph, Node, attribute_graphs
from hal.graph.rewrite import Rewrite
from hal.kernels import lookup

#: the most iterations worked out at compile time; a longer loop is left as it is
MAX_TRIPS = 1 << 14
#: loop-carried values up to this many elements are followed (counters, not activations)
MAX_CARRIED = 64


def static_trip_counts(graph: Graph) -> Graph:
    """Each while-style Loop whose trip count is fixed by the graph given it as ``M`` (see the
    module text), in place."""
    rw = None
    for n in graph.nodes:
        if n.op_type != "Loop" or n.domain or not n.inputs or n.inputs[0]:
            continue
        trips = _trip_count(n, graph)
        if trips is None:
            continue
        rw = rw or Rewrite(graph)
        n.inputs[0] = rw.weight(graph, f"{n.name}_trip_count", np.array(trips, dtype=np.int64))
    return graph


def _trip_count(loop: Node, graph: Graph) -> int | None:
    """How many times ``loop`` runs, where only the iteration number, constants and loop-carried
    values of that kind decide its condition; None otherwise."""
    body = loop.attrs.get("body")
    if body is None or len(body.input) < 2 or not body.output:
        return None
    weights = graph.initializers
    cond = loop.inputs[1] if len(loop.inputs) > 1 else ""
    if cond and not isinstance(weights.get(cond), np.ndarray):
        return None
    iter_name, cond_in = body.input[0].name, body.input[1].name
    carried_in = [vi.name for vi in body.input[2:]]
    carried_out = [vi.name for vi in body.output[1:1 + len(carried_in)]]
    initial = loop.inputs[2:2 + len(carried_in)]
    constants = {t.name: numpy_helper.to_array(t) for t in body.initializer}
    producer = {o: i for i, p in enumerate(body.node) for o in p.output if o}
    needed: set[int] = set()
    follow: dict[str, np.ndarray] = {}  # carried inputs the condition reads -> their initial values
    todo = [body.output[0].name]
    seen: set[str] = set()
    while todo:  # the condition's cone, and the cone of each carried value it reads
        name = todo.pop()
        if not name or name in seen or name in (iter_name, cond_in) or name in constants:
            continue
        seen.add(name)
        if name in carried_in:
            j = carried_in.index(name)
            start = weights.get(initial[j]) if j < len(initial) and initial[j] else None
            if not isinstance(start, np.ndarray) or start.size > MAX_CARRIED:
                return None
            follow[name] = start
            todo.append(carried_out[j])
        elif name in producer:
            p = body.node[producer[name]]
            if p.op_type in NONDETERMINISTIC or any(attribute_graphs(a) for a in p.attribute):
                return None
            needed.add(producer[name])
            todo.extend(p.input)
        elif isinstance(weights.get(name), np.ndarray):  # an outer constant the body reads
            constants[name] = weights[name]
        else:
            return None  # data, from outside the body
    steps = []
    for i in sorted(needed):
        node = Node.from_proto(body.node[i], body.node[i].name or f"{body.node[i].op_type}_{i}")
        kdef = lookup(node.op_type, node.domain, graph.opset(node.domain))
        if kdef is None or kdef.context:
            return None
        steps.append((node, kdef, kdef.static_attrs(node.attrs, node.outputs)))
    going = bool(weights[cond].reshape(-1)[0]) if cond else True
    carried = dict(follow)
    trips = 0
    try:
        while going:
            if trips == MAX_TRIPS:
                return None
            env = {**constants, **carried, iter_name: np.array(trips, np.int64), cond_in: np.array(going)}
            for node, kdef, attrs in steps:
                res = kdef.fn(*[env[i] if i else None for i in node.inputs], **attrs)
                env.update(zip(node.outputs, res if isinstance(res, tuple) else (res,)))
            going = bool(np.asarray(env[body.output[0].name]).reshape(-1)[0])
            carried = {name: env[carried_out[carried_in.index(name)]] for name in follow}
            if any(np.asarray(v).size > MAX_CARRIED for v in carried.values()):
                return None
            trips += 1
    except Exception:  # a body the kernels refuse here is left for the run to report
        return None
    return trips


__all__ = ["MAX_TRIPS", "static_trip_counts"]
