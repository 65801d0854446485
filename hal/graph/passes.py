"""Graph passes every target gets before capability and compile: constant folding, dead-node removal.

Each pass is linear in the graph's size and keeps outputs, numerics and topological order.
"""

from __future__ import annotations

import numpy as np

from hal import limits
from hal.graph.ir import Graph, Node, ShapeOnly, TensorInfo, body_reads
from hal.kernels import lookup

#: ops whose result is not a function of their inputs alone
NONDETERMINISTIC = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                              "Multinomial", "Bernoulli", "Dropout"})
#: folding never materialises a tensor larger than this (memory bombs stay for the runtime to refuse)
FOLD_LIMIT_BYTES = 64 << 20


def _static_nbytes(graph: Graph, name: str) -> int | None:
    info = graph.values.get(name)
    return info.nbytes if info is not None else None


def fold_constants(graph: Graph) -> Graph:
    """Evaluate nodes whose inputs are all weights; their outputs become weights.

    Also folds ``Shape``/``Size`` of a tensor whose shape is fully static. Skips non-deterministic
    ops, subgraph ops, shape-only weights and results whose declared size exceeds FOLD_LIMIT_BYTES.
    """
    inits = dict(graph.initializers)
    out_names = {o.name for o in graph.outputs}
    kept: list[Node] = []
    for n in graph.nodes:
        folded = None
        if (n.op_type not in NONDETERMINISTIC and not any(hasattr(v, "SerializeToString") for v in n.attrs.values())
                and all(o not in out_names for o in n.outputs)):
            if n.op_type in ("Shape", "Size") and n.inputs[0] not in inits:
                info = graph.values.get(n.inputs[0])
                if info is not None and info.static_shape is not None:
                    folded = (_fold_shape(n, info),)
            elif all((not i) or (i in inits and not isinstance(inits[i], ShapeOnly)) for i in n.inputs):
                sizes = [_static_nbytes(graph, o) for o in n.outputs if o]
                if all(s is not None and s <= FOLD_LIMIT_BYTES for s in sizes):
                    kdef = lookup(n.op_type, n.domain, graph.opset(n.domain))
                    if kdef is not None and not kdef.context:
                        try:
                            args = [inits[i] if i else None for i in n.inputs]
                            # Declared shapes can lie: bound the real output before the kernel allocates.
                            limits.check_step(n.op_type, n.name, args, n.attrs, FOLD_LIMIT_BYTES)
                            res = kdef.fn(*args, **kdef.static_attrs(n.attrs, n.outputs))
                        except Exception:  # leave it for run time, where errors name the node
                            res = None
                        if res is not None:
                            folded = res if isinstance(res, tuple) else (res,)
        if folded is not None and all(isinstance(r, np.ndarray) for r in folded):
            for o, r in zip(n.outputs, folded):
                if o:
                    inits[o] = r
                    info = graph.values.get(o)
                    if info is None or info.shape is None:
                        graph.values[o] = TensorInfo(o, _elem_type(r), r.shape)
        else:
            kept.append(n)
    graph.nodes = kept
    graph.initializers = inits
    return graph


def _elem_type(a: np.ndarray) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(a.dtype)


def _fold_shape(n: Node, info: TensorInfo) -> np.ndarray:
    shp = info.static_shape
    assert shp is not None
    if n.op_type == "Size":
        return np.array(int(np.prod(shp, dtype=np.int64)), dtype=np.int64)
    rank = len(shp)
    start = n.attrs.get("start", 0)
    end = n.attrs.get("end", rank)
    start = max(0, min(rank, start + rank if start < 0 else start))
    end = max(0, min(rank, end + rank if end < 0 else end))
    return np.array(shp[start:end], dtype=np.int64)


def remove_dead_nodes(graph: Graph) -> Graph:
    """Drop nodes none of whose outputs reach a graph output, and weights nobody reads."""
    needed = {o.name for o in graph.outputs}
    kept: list[Node] = []
    for n in reversed(graph.nodes):
        if any(o in needed for o in n.outputs if o):
            kept.append(n)
            needed.update(i for i in n.inputs if i)
            needed.update(body_reads(n))  # subgraphs read outer names implicitly
    kept.reverse()
    graph.nodes = kept
    graph.initializers = {k: w for k, w in graph.initializers.items() if k in needed}
    return graph


def optimize(graph: Graph) -> Graph:
    """The standard pipeline, in place: fold constants, then remove what no output needs."""
    return remove_dead_nodes(fold_constants(graph))
