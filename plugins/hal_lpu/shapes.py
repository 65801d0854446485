"""Compile-time shapes: a static schedule needs every tensor's size before the program runs.

ONNX shape inference leaves a shape open when it is computed inside the graph (Shape -> Gather ->
Concat -> Reshape, as exported functions write it). Such a shape is still a compile-time constant
when it is derived only from static input shapes and weights, so this pass tracks which values are
known at compile time (weights, constants, Shape/Size of static tensors, and small ops over them)
and finds the open shapes by running the node's kernel on its known inputs and zeros elsewhere.
That is sound only where no *data* decides the shape: an op whose shape-deciding inputs (Reshape's
shape, Expand's shape, Slice's starts, TopK's k, ...) are not known at compile time has a
data-dependent output, and so has everything downstream of it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper

from hal import limits
from hal.engine import kernel_step
from hal.graph.ir import Graph, Node, ShapeOnly, TensorInfo

#: input positions whose *values* decide the op's output shape
SHAPE_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "ConstantOfShape": (0,), "Tile": (1,), "Slice": (1, 2, 3, 4),
    "Range": (0, 1, 2), "Pad": (1, 3), "Resize": (2, 3), "Upsample": (1,), "Squeeze": (1,), "Unsqueeze": (1,),
    "TopK": (1,), "OneHot": (1,), "Split": (1,), "CenterCropPad": (1, 2), "Col2Im": (1, 2), "MaxUnpool": (2,),
    "DFT": (1,), "STFT": (2, 3), "Compress": (1,), "AffineGrid": (1,), "BlackmanWindow": (0,),
    "HannWindow": (0,), "HammingWindow": (0,), "MelWeightMatrix": (0, 1, 2), "ReduceMean": (1,),
    "ReduceSum": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "ReduceProd": (1,), "ReduceL1": (1,),
    "ReduceL2": (1,), "ReduceLogSum": (1,), "ReduceLogSumExp": (1,), "ReduceSumSquare": (1,),
}
#: values larger than this are not evaluated at compile time (shape arithmetic is tiny)
_KNOWN_LIMIT = 1 << 16


def _static(info: TensorInfo | None) -> tuple[int, ...] | None:
    return info.static_shape if info is not None and info.kind == "tensor" else None


def resolve_shapes(graph: Graph) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """(values with the shapes this pass could fix, {value: why its shape depends on data})."""
    values = dict(graph.values)
    known: dict[str, np.ndarray] = {k: w for k, w in graph.initializers.items()
                                    if not isinstance(w, ShapeOnly) and w.size <= _KNOWN_LIMIT}
    dynamic: dict[str, str] = {}
    for t in graph.inputs:
        if t.kind == "tensor" and _static(values.get(t.name, t)) is None:
            dynamic[t.name] = f"graph input {t.name!r} has no static shape"
    for node in graph.nodes:
        outs = [o for o in node.outputs if o]
        ins = [i for i in node.inputs if i]
        upstream = next((dynamic[i] for i in ins if i in dynamic), None)
        if upstream is not None:
            for o in outs:
                dynamic.setdefault(o, upstream)
            continue
        if node.op_type in ("Shape", "Size") and node.inputs and node.inputs[0] not in known:
            shp = _shape_of(values, graph, node.inputs[0])
            if shp is not None:
                known[outs[0]] = v = _shape_value(node, shp)
                values[outs[0]] = TensorInfo(outs[0], helper.np_dtype_to_tensor_dtype(v.dtype), tuple(v.shape))
                continue
        if node.op_type == "Identity":  # an alias: whatever its input is (sequences too), so is its output
            src = values.get(node.inputs[0])
            if src is not None and _static(values.get(outs[0])) is None:
                values[outs[0]] = TensorInfo(outs[0], src.elem_type, src.shape, src.kind, src.type_proto)
            if node.inputs[0] in known:
                known[outs[0]] = known[node.inputs[0]]
            continue
        have = all(_static(values.get(o)) is not None for o in outs)
        decides = [node.inputs[p] for p in SHAPE_INPUTS.get(node.op_type, ()) if p < len(node.inputs)]
        if not have and any(d and d not in known for d in decides):
            d = next(d for d in decides if d and d not in known)
            for o in outs:
                dynamic[o] = f"{node.op_type} {node.name!r} takes its output shape from the values of {d!r}"
            continue
        all_known = all(i in known for i in ins)
        small = have and all(int(np.prod(_static(values[o]), dtype=np.int64)) <= _KNOWN_LIMIT for o in outs)
        if have and not (all_known and small):
            continue
        res = _evaluate(node, graph, values, known, _KNOWN_LIMIT * 8 if have else None)
        if res is None:
            if not have:
                for o in outs:
                    dynamic.setdefault(o, f"the output shape of {node.op_type} {node.name!r} is not known "
                                          "at compile time")
            continue
        for o, r in zip(node.outputs, res):
            if not o or not isinstance(r, np.ndarray):
                continue
            if _static(values.get(o)) is None:
                values[o] = TensorInfo(o, helper.np_dtype_to_tensor_dtype(r.dtype), tuple(r.shape))
            if all_known and r.size <= _KNOWN_LIMIT:
                known[o] = r
    return values, dynamic


def _shape_of(values: dict[str, TensorInfo], graph: Graph, name: str) -> tuple[int, ...] | None:
    w = graph.initializers.get(name)
    if w is not None:
        return tuple(w.shape)
    return _static(values.get(name))


def _shape_value(node: Node, shp: tuple[int, ...]) -> np.ndarray:
    if node.op_type == "Size":
        return np.array(int(np.prod(shp, dtype=np.int64)), dtype=np.int64)
    rank = len(shp)
    start = int(node.attrs.get("start", 0))
    end = int(node.attrs.get("end", rank))
    start = max(0, min(rank, start + rank if start < 0 else start))
    end = max(0, min(rank, end + rank if end < 0 else end))
    return np.array(shp[start:end], dtype=np.int64)


def _evaluate(node: Node, graph: Graph, values: dict[str, TensorInfo], known: dict[str, np.ndarray],
              max_bytes: int | None) -> tuple[Any, ...] | None:
    """The node's outputs on its known inputs and zeros elsewhere (None when that cannot be done, or when
    the output would exceed ``max_bytes`` — default: the session's max_memory — whatever shape is declared)."""
    try:
        step = kernel_step(node, graph)
    except Exception:
        return None
    if step.context_opset is not None:
        return None  # control flow: its shapes come from its body, evaluated only at run time
    args = []
    for i in node.inputs:
        if not i:
            args.append(None)
        elif i in known:
            args.append(known[i])
        else:
            info = values.get(i)
            shp, dt = _static(info), info.dtype if info is not None else None
            if shp is None or dt is None or int(np.prod(shp, dtype=np.int64)) > (1 << 24):
                return None
            args.append(np.zeros(shp, dtype=dt))
    try:
        limits.check_step(node.op_type, node.name, args, step.attrs, max_bytes)
        with np.errstate(all="ignore"):
            res = step.fn(*args, **step.attrs)
    except Exception:  # too large to evaluate here, or a kernel error: the run reports it, naming the node
        return None
    return res if isinstance(res, tuple) else (res,)
