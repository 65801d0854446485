"""Graph passes every target gets before capability and compile: constant folding, BatchNormalization
folding, the reorderings of ``hal.graph.rewrite`` (pools moved past what they commute with, a
pointwise conv split over a Concat's parts), dead-node removal (and of the optional outputs nobody
reads), and a layout of sibling projections' weights in one array each (no node changes).

Each pass is linear in the graph's size and keeps outputs and topological order; numerics move by
rounding at most (BatchNormalization folding, and the rewrites whose docstrings say so).
"""

from __future__ import annotations

import numpy as np

from hal import limits
from hal.graph.branches import taken_branches
from hal.graph.ir import NONDETERMINISTIC, Graph, Node, ShapeOnly, TensorInfo, Weight, body_reads
from hal.graph.loops import static_trip_counts
from hal.graph.quant import record_folded
from hal.graph.rewrite import Rewrite, pool_concat_parts, reorder_average_pools, split_concat_convs
from hal.graph.sequences import constructed_sequences, split_sequences
from hal.graph.unfuse import unfuse_onnxruntime
from hal.kernels import lookup
from hal.kernels.normalization import DEFAULT_EPSILON

#: folding never materialises a tensor larger than this (memory bombs stay for the runtime to refuse)
FOLD_LIMIT_BYTES = 64 << 20


def _static_nbytes(graph: Graph, name: str) -> int | None:
    info = graph.values.get(name)
    return info.nbytes if info is not None else None


def fold_constants(graph: Graph) -> Graph:
    """Evaluate nodes whose inputs are all weights; their outputs become weights.

    Also folds ``Shape``/``Size`` of a tensor whose shape is fully static. Skips non-deterministic
    ops, subgraph ops, shape-only weights and results whose declared size exceeds FOLD_LIMIT_BYTES.
    A weight folded from a DequantizeLinear of integer codes, or from a view of one, is noted in
    ``graph.dequantized`` (``hal.graph.quant``): its codes' type and scale axis outlive the node.
    """
    inits = dict(graph.initializers)
    record = dict(graph.dequantized)
    out_names = {o.name for o in graph.outputs}
    kept: list[Node] = []
    for n in graph.nodes:
        folded = None
        if (n.op_type not in NONDETERMINISTIC and not any(hasattr(v, "SerializeToString") for v in n.attrs.values())
                and all(o not in out_names for o in n.outputs)):
            if n.op_type in ("Shape", "Size") and not n.domain and n.inputs and n.inputs[0] not in inits:
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
                            with np.errstate(all="ignore"):  # as every run is: 0/0 in a constant is NaN
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
            record_folded(n, inits, record, graph.opset(n.domain))
        else:
            kept.append(n)
    graph.nodes = kept
    graph.initializers = inits
    graph.dequantized = record
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


#: ops whose outputs after the first are optional extras that their kernels compute only when the
#: node declares them (``output_count``): Dropout's mask, MaxPool's indices, LayerNormalization's
#: mean and inverse deviation. (Not Split, whose output count sets the split.)
OPTIONAL_TRAILING_OUTPUTS = frozenset({"Dropout", "MaxPool", "LayerNormalization"})


def remove_dead_nodes(graph: Graph) -> Graph:
    """Drop nodes none of whose outputs reach a graph output, and weights nobody reads; an optional
    output that nothing reads is dropped from the end of its node's outputs (an unread Dropout mask
    allocated a mask of ones on every run: SqueezeNet's 86K-element one, 14 us)."""
    needed = {o.name for o in graph.outputs}
    kept: list[Node] = []
    for n in reversed(graph.nodes):
        if any(o in needed for o in n.outputs if o):
            if n.op_type in OPTIONAL_TRAILING_OUTPUTS and not n.domain:
                n.outputs = n.outputs[:max(i for i, o in enumerate(n.outputs) if o in needed) + 1]
            kept.append(n)
            needed.update(i for i in n.inputs if i)
            needed.update(body_reads(n))  # subgraphs read outer names implicitly
    kept.reverse()
    graph.nodes = kept
    graph.initializers = {k: w for k, w in graph.initializers.items() if k in needed}
    graph.dequantized = {k: d for k, d in graph.dequantized.items() if k in needed}
    return graph


# --- batch normalisation folding -----------------------------------------------------------------

#: weight dtypes a fold may rewrite: computed in float64 and rounded once, the result is as close as
#: the unfolded fp32 chain (narrower floats would round the folded weights where the chain did not)
_FOLD_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _float_weight(inits: dict[str, Weight], name: str) -> Weight | None:
    w = inits.get(name) if name else None
    return w if w is not None and np.dtype(w.dtype) in _FOLD_DTYPES else None


def _inference_bn(n: Node, inits: dict[str, Weight], rank: int | None) -> bool:
    """A BatchNormalization that is a per-channel affine map: inference mode, one output, spatial
    statistics, all four parameters weights of shape (C,), and an input of known rank."""
    if (n.op_type != "BatchNormalization" or n.domain or len(n.inputs) != 5 or rank is None or rank < 2
            or any(n.outputs[1:]) or n.attrs.get("training_mode", 0) or not n.attrs.get("spatial", 1)):
        return False
    params = [_float_weight(inits, i) for i in n.inputs[1:]]
    return all(p is not None and p.ndim == 1 for p in params) and len({p.shape for p in params}) == 1  # type: ignore[union-attr]


def _per_channel(w: Weight, channels: int, rank: int) -> bool:
    """Whether a weight broadcasts against an (N, C, ...) tensor of ``rank`` as one value per channel
    (or one value for all) without changing the tensor's shape."""
    shp = tuple(w.shape)
    if len(shp) > rank:
        return False
    full = (1,) * (rank - len(shp)) + shp
    return full[0] == 1 and full[1] in (1, channels) and all(v == 1 for v in full[2:])


def _channel_vector(w: np.ndarray, channels: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(w, dtype=np.float64).reshape(-1), (channels,))


def fold_batch_norm(graph: Graph) -> Graph:
    """Fold inference BatchNormalization into the Conv before it, as inference compilers do.

    ``BN(Conv(x, W, B))`` is ``Conv(x, W * a, B * a + c)`` with ``a = scale / sqrt(var + eps)`` and
    ``c = bias - mean * a`` per output channel. A per-channel ``Mul``/``Add`` by a weight right after
    the BatchNormalization (as exported by Caffe2) is absorbed into ``a`` and ``c`` first. A value is
    only rewritten when its one reader is the next node of the chain and no graph output or subgraph
    reads it. New weights are computed in float64 and rounded once to the weights' dtype; shape-only
    weights fold to shape-only weights, so a model compiles to the same graph with or without data.
    A BatchNormalization with no Conv before it keeps its node, with the precomputed affine map as
    parameters (scale a, bias c, mean 0, var 1, epsilon 0), so its kernel is one multiply-add.
    """
    inits = graph.initializers
    rw = Rewrite(graph)
    sole_reader, fresh, producers = rw.sole_reader, rw.fresh, rw.producers
    dropped: set[int] = set()

    def add_weight(base: str, value: Weight) -> str:
        name = fresh(base)
        inits[name] = value
        elem = _elem_type(np.empty(0, dtype=value.dtype))
        graph.values[name] = TensorInfo(name, elem, tuple(value.shape))
        return name

    for bn in graph.nodes:
        info = graph.values.get(bn.inputs[0]) if bn.inputs else None
        rank = len(info.shape) if info is not None and info.shape is not None else None
        if id(bn) in dropped or not _inference_bn(bn, inits, rank):
            continue
        assert rank is not None
        scale, bias, mean, var = (inits[i] for i in bn.inputs[1:])
        channels = scale.shape[0]
        dtype = np.dtype(scale.dtype)
        shape_only = any(isinstance(w, ShapeOnly) for w in (scale, bias, mean, var))
        a = c = None
        if not shape_only:
            eps = float(bn.attrs.get("epsilon", DEFAULT_EPSILON))
            a = np.asarray(scale, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
            c = np.asarray(bias, np.float64) - np.asarray(mean, np.float64) * a
        # Absorb per-channel Mul / Add by weights that follow.
        while (nxt := sole_reader(bn.outputs[0])) is not None and nxt.op_type in ("Mul", "Add") \
                and not nxt.domain and len(nxt.inputs) == 2:
            other = nxt.inputs[1] if nxt.inputs[0] == bn.outputs[0] else nxt.inputs[0]
            k = _float_weight(inits, other)
            if k is None or np.dtype(k.dtype) != dtype or not _per_channel(k, channels, rank):
                break
            if isinstance(k, ShapeOnly):
                shape_only = True
            elif a is not None and c is not None:
                v = _channel_vector(k, channels)
                if nxt.op_type == "Mul":
                    a, c = a * v, c * v
                else:
                    c = c + v
            graph.values.pop(bn.outputs[0], None)
            bn.outputs[0] = nxt.outputs[0]
            dropped.add(id(nxt))
        conv = producers.get(bn.inputs[0])
        w = _float_weight(inits, conv.inputs[1]) if conv is not None and len(conv.inputs) > 1 else None
        b_name = conv.inputs[2] if conv is not None and len(conv.inputs) > 2 else ""
        b = _float_weight(inits, b_name) if b_name else None
        if (conv is not None and conv.op_type == "Conv" and not conv.domain and len(conv.outputs) == 1
                and sole_reader(conv.outputs[0]) is bn and w is not None and w.ndim >= 3
                and w.shape[0] == channels and np.dtype(w.dtype) == dtype
                and (not b_name or (b is not None and tuple(b.shape) == (channels,)))):
            if shape_only or isinstance(w, ShapeOnly) or isinstance(b, ShapeOnly):
                new_w: Weight = ShapeOnly(tuple(w.shape), dtype)
                new_b: Weight = ShapeOnly((channels,), dtype)
            else:
                assert a is not None and c is not None
                w64 = np.asarray(w, np.float64)
                new_w = (w64 * a.reshape(-1, *([1] * (w.ndim - 1)))).astype(dtype)
                new_b = ((np.asarray(b, np.float64) * a if b is not None else 0.0) + c).astype(dtype)
            conv.inputs = [conv.inputs[0], add_weight(f"{conv.inputs[1]}_bnfold", new_w),
                           add_weight(f"{b_name or conv.inputs[1]}_bnfold_bias", new_b)]
            graph.values.pop(conv.outputs[0], None)
            conv.outputs[0] = bn.outputs[0]
            dropped.add(id(bn))
        else:  # no Conv to take it: the BatchNormalization carries the precomputed affine map
            if shape_only:
                params: list[Weight] = [ShapeOnly((channels,), dtype)] * 4
            else:
                assert a is not None and c is not None
                params = [a.astype(dtype), c.astype(dtype), np.zeros(channels, dtype), np.ones(channels, dtype)]
            bn.inputs = [bn.inputs[0], *(add_weight(f"{bn.inputs[1 + j]}_affine", p) for j, p in enumerate(params))]
            bn.attrs = {**bn.attrs, "epsilon": 0.0}
    graph.nodes = [n for n in graph.nodes if id(n) not in dropped]
    return graph


def stack_sibling_weights(graph: Graph) -> Graph:
    """Lay out the weights of sibling MatMuls that read one activation (attention's Q, K and V
    projections, an MLP's gate and up ones: ``matmul_group`` in ``hal.graph.fuse``) as the
    consecutive matrices of one array, and their biases, if they have some, as the rows of another:
    each initializer becomes a view of the stacked copy, which replaces it, so the graph holds the
    same values in the same bytes and no node or value changes. The host step that runs such a
    group then makes one batched product over the stack (``hal.kernels.fused.MatMulGroup``)."""
    from hal.graph.fuse import find_fusions

    inits = graph.initializers
    for f in find_fusions(graph, graph.nodes):
        if f.kind != "matmul_group":
            continue
        n = len(f.pairs)
        for names in (f.inputs[1:1 + n], f.inputs[1 + n:]):
            if names:
                stacked = np.stack([inits[k] for k in names])
                for i, k in enumerate(names):
                    inits[k] = stacked[i]
    return graph


def optimize(graph: Graph) -> Graph:
    """The standard pipeline, in place: take onnxruntime's CPU fusions apart into the onnx ops they
    fused, and its Reshape-Gemm-Reshape back into a MatMul and Add (``hal.graph.unfuse``), fold
    constants, give a while-style Loop the trip count its condition fixes (``hal.graph.loops``), make a
    sequence that only carries a split's parts a Split, an If of a constant condition its taken
    branch (``hal.graph.branches``), a sequence built of tensors and only taken apart those tensors
    (``hal.graph.sequences``),
    fold BatchNormalization into Conv weights, put average pools and pointwise convs in
    their cheaper order, pool a channel Concat's parts, split a pointwise conv over a Concat's parts,
    remove what no output needs, then stack the weights of sibling MatMuls (their values and bytes
    unchanged)."""
    graph = fold_constants(unfuse_onnxruntime(graph))
    graph = constructed_sequences(taken_branches(split_sequences(static_trip_counts(graph))))
    graph = reorder_average_pools(fold_batch_norm(graph))
    return stack_sibling_weights(remove_dead_nodes(split_concat_convs(pool_concat_parts(graph))))
