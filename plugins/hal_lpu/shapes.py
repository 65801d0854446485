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

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hal import limits
from hal.engine import kernel_step
from hal.errors import InputError, ResourceError
from hal.feeds import map_feed
from hal.graph.ir import Graph, Node, ShapeOnly, TensorInfo, attribute_graphs
from hal.graph.loops import trip_count_inputs
from hal.graph.passes import NONDETERMINISTIC
from hal.kernels.registry import KernelContext

#: input positions whose *values* decide the op's output shape
SHAPE_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "ConstantOfShape": (0,), "Tile": (1,), "Slice": (1, 2, 3, 4),
    "Range": (0, 1, 2), "Pad": (1, 3), "Resize": (2, 3), "Upsample": (1,), "Squeeze": (1,), "Unsqueeze": (1,),
    "TopK": (1,), "OneHot": (1,), "Split": (1,), "CenterCropPad": (1, 2), "Col2Im": (1, 2), "MaxUnpool": (2,),
    "DFT": (1, 2), "STFT": (1, 2, 3), "Compress": (1,), "AffineGrid": (1,), "BlackmanWindow": (0,),
    "HannWindow": (0,), "HammingWindow": (0,), "MelWeightMatrix": (0, 1, 2), "ReduceMean": (1,),
    "ReduceSum": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "ReduceProd": (1,), "ReduceL1": (1,),
    "ReduceL2": (1,), "ReduceLogSum": (1,), "ReduceLogSumExp": (1,), "ReduceSumSquare": (1,),
    "SplitToSequence": (1,), "GroupQueryAttention": (6,),
}
#: ops whose output shape depends on the data: a static schedule cannot size or time them
DATA_DEPENDENT = {
    "NonZero": "its output length is the number of non-zero elements",
    "Unique": "its output length is the number of distinct values",
    "Compress": "its output length depends on the condition's values",
    "NonMaxSuppression": "the number of boxes kept depends on the scores",
    "StringSplit": "the number of substrings depends on the strings",
    "ImageDecoder": "its output is the image's size, read from the encoded stream's header",
}


def _gqa_stand_ins(args: list[Any], unknown: set[int]) -> None:
    """GroupQueryAttention's seqlens_k and query_seqlens size nothing, but their zeros would put a chunk
    before an empty past: once total_sequence_length is known, every sequence that long and every
    row of the chunk a token."""
    if 6 in unknown or len(args) < 7 or args[6] is None or not np.size(args[6]):
        return
    if 5 in unknown and args[5] is not None:
        args[5] = np.full(args[5].shape, int(np.asarray(args[6]).reshape(-1)[0]) - 1, args[5].dtype)
    if 16 in unknown and len(args) > 16 and args[16] is not None and np.ndim(args[0]) == 3:
        args[16] = np.full(args[16].shape, args[0].shape[1], args[16].dtype)


#: ops with inputs that size nothing but whose zeros their kernel would refuse: what stands in for them
_STAND_INS = {"GroupQueryAttention": _gqa_stand_ins}
#: values larger than this are not evaluated at compile time (shape arithmetic is tiny)
_KNOWN_LIMIT = 1 << 16
#: graph inputs up to this many elements are read by the host before a run (trip counts, axes, pads)
HOST_SCALAR_LIMIT = 64
#: stand-in zeros for an input's value are made up to this size (and never past max_memory)
_ZEROS_LIMIT_BYTES = 64 << 20


def _static(info: TensorInfo | None) -> tuple[int, ...] | None:
    return info.static_shape if info is not None and info.kind == "tensor" else None


@dataclass
class Resolved:
    """What the compiler knows of every value's shape before the program runs."""

    values: dict[str, TensorInfo]
    #: value -> why its shape depends on data (a static schedule cannot take it)
    dynamic: dict[str, str] = field(default_factory=dict)
    #: value -> why its shape is fixed only once the host knows its inputs (a schedule per value signature)
    special: dict[str, str] = field(default_factory=dict)
    #: values computed at compile time (weights, shape arithmetic)
    known: set[str] = field(default_factory=set)
    #: values the host computes from small graph inputs before the run (scalars such as a trip count)
    host: set[str] = field(default_factory=set)
    #: host values that decide a shape or a trip count: what a specialised schedule is keyed on
    deciders: set[str] = field(default_factory=set)
    #: the values computed at compile time, by name (a specialisation's trip counts read them)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def host_candidates(graph: Graph) -> tuple[set[str], set[str]]:
    """(small graph inputs the host can read before a run, tensor inputs without a static shape)."""
    scalars, shaped = set(), set()
    for t in graph.inputs:
        info = graph.values.get(t.name, t)
        if t.name in graph.initializers or info.kind != "tensor":
            continue
        shp, dt = _static(info), info.dtype
        if shp is None:
            shaped.add(t.name)
        elif dt is not None and dt.kind in "biufV" and int(np.prod(shp, dtype=np.int64)) <= HOST_SCALAR_LIMIT:
            scalars.add(t.name)
    return scalars, shaped


def resolve_shapes(graph: Graph, host: set[str] | None = None, shaped: set[str] | None = None,
                   strict: bool = False, hints: Mapping[str, tuple[int, ...]] | None = None) -> Resolved:
    """Every value's compile-time shape where it can be fixed, and why not elsewhere.

    ``host`` names small graph inputs whose values the host reads before a run, and ``shaped``
    tensor inputs whose shape is known only then: a shape decided by them is not data-dependent in
    the sense that forbids a static schedule, it is *specialised* (a schedule per value signature).
    ``strict``: a value whose evaluation max_memory refuses is a ResourceError, not an open shape
    (a specialisation's concrete values are the run's: the run would need that tensor). ``hints``: the
    shapes a specialisation read off the declared ones (their dimension names bound by the fed
    shapes), for the values of a node reading strings that cannot be run on stand-in inputs (a
    OneHotEncoder that refuses unknown categories).
    """
    values = dict(graph.values)
    known: dict[str, np.ndarray] = {k: w for k, w in graph.initializers.items()
                                    if not isinstance(w, ShapeOnly) and w.size <= _KNOWN_LIMIT}
    dynamic: dict[str, str] = {}
    special: dict[str, str] = {}
    hostv: set[str] = set(host or ())
    deciders: set[str] = set()
    for t in graph.inputs:
        if t.kind == "tensor" and _static(values.get(t.name, t)) is None:
            if shaped and t.name in shaped:
                special[t.name] = f"graph input {t.name!r} has no static shape: one schedule per concrete shape"
            else:
                dynamic[t.name] = f"graph input {t.name!r} has no static shape"
    for node in graph.nodes:
        outs = [o for o in node.outputs if o]
        ins = [i for i in node.inputs if i]
        upstream = next((dynamic[i] for i in ins if i in dynamic), None)
        if upstream is not None:
            for o in outs:
                dynamic.setdefault(o, upstream)
            continue
        if node.op_type in ("Shape", "Size") and node.inputs and node.inputs[0] in special:
            hostv.update(outs)  # the host knows the concrete shape it specialised for
            for o in outs:
                if _static(values.get(o)) is None:
                    special[o] = special[node.inputs[0]]
            continue
        up_special = next((special[i] for i in ins if i in special), None)
        if up_special is not None:
            for o in outs:
                special.setdefault(o, up_special)
            # what the host reads to run it is a specialisation key too (a Loop's trip count on a tensor
            # of a fed shape: its output, and an If reading it, stayed open in every specialisation)
            deciders.update(i for i in _controls(node) if i in hostv)
            if _from_host(node, ins, hostv, known) and node.op_type not in _GROWS:
                hostv.update(outs)  # the host's arithmetic on a shape of unknown rank (Shape of an If's
                # output whose branches differ in rank, as silero-vad's): known when it specialises
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
            if node.inputs[0] in hostv:
                hostv.update(outs)
            continue
        if (node.op_type == "If" and node.inputs and node.inputs[0] in hostv
                and not all(_static(values.get(o)) is not None for o in outs)):
            # (an If of one static output shape needs no key: either branch fits the schedule)
            deciders.add(node.inputs[0])
            for o in outs:
                special[o] = f"If {node.name!r} takes the branch of a condition the host computes before the run"
            continue
        if node.op_type == "Loop":
            control = _controls(node)
            if any(i in hostv for i in control) and all(i in hostv or i in known for i in control):
                deciders.update(i for i in control if i in hostv)
                for o in outs:
                    special[o] = f"Loop {node.name!r} runs a trip count the host computes before the run"
                continue
        have = all(_static(values.get(o)) is not None for o in outs)
        decides = [node.inputs[p] for p in SHAPE_INPUTS.get(node.op_type, ()) if p < len(node.inputs)]
        if not have and any(d and d not in known for d in decides):
            open_ = [d for d in decides if d and d not in known]
            if all(d in hostv for d in open_):
                deciders.update(open_)
                for o in outs:
                    special[o] = (f"{node.op_type} {node.name!r} takes its output shape from {open_[0]!r}, "
                                  "which the host computes before the run")
                continue
            for o in outs:
                dynamic[o] = f"{node.op_type} {node.name!r} takes its output shape from the values of {open_[0]!r}"
            continue
        on_host = _from_host(node, ins, hostv, known)
        if have and on_host and all(math.prod(_static(values[o])) <= HOST_SCALAR_LIMIT for o in outs):
            hostv.update(outs)  # host scalar arithmetic (a trip count from start, limit, delta)
            continue
        all_known = all(i in known for i in ins)
        if have and not (all_known and all(math.prod(_static(values[o])) <= _KNOWN_LIMIT for o in outs)):
            continue
        try:
            res, refused = _evaluate(node, graph, values, known, _KNOWN_LIMIT * 8 if have else None, strict), ""
        except _KernelRefused as e:
            res, refused = None, f" (on zeros of its input shapes its kernel says {e})"
        if res is None and not have and (inferred := _inferred(node, graph, values, known)) is not None:
            values.update((info.name, info) for info in inferred if info is not None)
            continue
        if res is None:
            if not have:
                # zeros stand in for numbers, not strings: only a node reading strings takes a hint (one
                # reading numbers that fails on them fails on the run's values too: feeds that do not fit)
                strings = any(values.get(i) is not None and values[i].elem_type == onnx.TensorProto.STRING
                              for i in ins)
                for o in outs:
                    info, hinted = values.get(o), (hints or {}).get(o) if strings else None
                    if hinted is not None and info is not None and info.kind == "tensor":
                        values[o] = TensorInfo(o, info.elem_type, hinted)
                    else:
                        dynamic.setdefault(o, f"the output shape of {node.op_type} {node.name!r} is not known "
                                              f"at compile time{refused}")
            continue
        for o, r in zip(node.outputs, res):
            if not o or not isinstance(r, np.ndarray):
                continue
            if _static(values.get(o)) is None:
                values[o] = TensorInfo(o, helper.np_dtype_to_tensor_dtype(r.dtype), tuple(r.shape))
            if all_known and r.size <= _KNOWN_LIMIT:
                known[o] = r
        if on_host and all(isinstance(r, np.ndarray) and r.size <= HOST_SCALAR_LIMIT for r in res):
            hostv.update(outs)  # the same host arithmetic, whose output shape only running it told
    return Resolved(values, dynamic, special, set(known), hostv, deciders, known)


def _controls(node: Node) -> list[str]:
    """The values that decide how a control-flow node runs: an If's condition; what a Loop's trip
    count and condition depend on (hal.graph.loops), else its M and cond ("" for a while loop that
    data ends); the shape-deciding inputs of other ops (``SHAPE_INPUTS``)."""
    if node.op_type == "If":
        return node.inputs[:1]
    if node.op_type == "Loop":
        needs = trip_count_inputs(node)
        if needs is not None:
            return sorted(needs)
        return [""] if node.inputs and not node.inputs[0] else [i for i in node.inputs[:2] if i]
    return [node.inputs[p] for p in SHAPE_INPUTS.get(node.op_type, ()) if p < len(node.inputs) and node.inputs[p]]


#: ops whose output the values of their inputs may make larger than those inputs: fed host values,
#: they make a tensor, not host arithmetic
_GROWS = frozenset(SHAPE_INPUTS) - {"Reshape", "Squeeze", "Unsqueeze", "Slice", "Split", "TopK", "Compress",
                                    "SplitToSequence"} - {op for op in SHAPE_INPUTS if op.startswith("Reduce")}


def _from_host(node: Node, ins: list[str], hostv: set[str], known: Mapping[str, np.ndarray]) -> bool:
    """Whether ``node`` computes from host values (and compile-time ones) alone, deterministically and
    without a body: the host can work it out before the run, if its outputs are small."""
    return (bool(ins) and any(i in hostv for i in ins) and all(i in hostv or i in known for i in ins)
            and node.op_type not in NONDETERMINISTIC
            and not any(hasattr(v, "SerializeToString") for v in node.attrs.values()))


def loop_body_data_shape(loop: Node, static: set[str]) -> str | None:
    """Why a Loop's body has a tensor whose size the data decides (an op of ``DATA_DEPENDENT``, or a shape
    input computed on the device: torchvision's keypoint loop resizes each heatmap to its box's width),
    (Compress judged by its condition), which a static schedule of its iterations cannot size; None
    when every shape in it is fixed by
    constants, the iteration number, counters carried from those, shapes, and the outer values in
    ``static`` (the known and host values). Nested bodies are read the same way."""
    body = loop.attrs.get("body")
    if body is None:
        return None
    carried_in = [vi.name for vi in body.input[2:]]
    carried_out = [vi.name for vi in body.output[1:1 + len(carried_in)]]
    initial = loop.inputs[2:2 + len(carried_in)]
    counters = {name for name, start in zip(carried_in, initial) if start in static}
    while True:  # counters: carried values whose updates read only static values and counters
        fixed = _static_in(body, static | counters | {vi.name for vi in body.input[:2]})
        keep = {name for name, out in zip(carried_in, carried_out) if name in counters and out in fixed}
        if keep == counters:
            break
        counters = keep
    return _data_shape_in(body, static | counters | {body.input[0].name})


def _static_in(g: onnx.GraphProto, static: set[str]) -> set[str]:
    """The values of ``g`` (and of the bodies under it) fixed by ``static`` ones: constants, shapes,
    and what deterministic nodes compute from those alone."""
    known = set(static) | {t.name for t in g.initializer}
    for n in g.node:
        ins = [i for i in n.input if i]
        if n.op_type in ("Shape", "Size", "Constant") or (
                n.op_type not in NONDETERMINISTIC and not any(attribute_graphs(a) for a in n.attribute)
                and all(i in known for i in ins)):
            known.update(o for o in n.output if o)
    return known


def _data_shape_in(g: onnx.GraphProto, static: set[str]) -> str | None:
    known = _static_in(g, static)
    for n in g.node:
        label = f"{n.op_type} {n.name!r}" if n.name else n.op_type
        if n.op_type in DATA_DEPENDENT and n.op_type not in SHAPE_INPUTS:
            return f"{label} in the Loop's body has an output as long as its data"
        for p in SHAPE_INPUTS.get(n.op_type, ()):
            if p < len(n.input) and n.input[p] and n.input[p] not in known:
                return f"{label} in the Loop's body takes its output shape from {n.input[p]!r}, computed on the device"
        for a in n.attribute:
            for sub in attribute_graphs(a):
                reason = _data_shape_in(sub, known | {vi.name for vi in sub.input})
                if reason:
                    return reason
    return None


def graph_inputs_behind(graph: Graph, names: set[str]) -> set[str]:
    """The graph inputs that ``names`` are computed from (walking producers back)."""
    producer = graph.producers()
    inputs = {t.name for t in graph.inputs}
    seen, todo, found = set(), list(names), set()
    while todo:
        v = todo.pop()
        if v in seen:
            continue
        seen.add(v)
        if v in inputs:
            found.add(v)
        n = producer.get(v)
        if n is not None:
            todo.extend(i for i in n.inputs if i)
    return found


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


def _check_rough(node: Node, args: list[Any], bound: int) -> None:
    """For an op without a size rule in hal.limits: its output is at most the broadcast of its inputs
    (elementwise) or their sum (Concat and other gathers), at 8 bytes an element; refuse past the bound."""
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    total = sum(limits.nbytes_of(a.shape, 8) for a in arrays)
    try:
        shp = np.broadcast_shapes(*(a.shape for a in arrays)) if arrays else ()
        est = max(total, limits.nbytes_of(shp, 8))
    except ValueError:
        shp, est = (), total
    if est > bound:
        raise ResourceError(
            f"{node.op_type} would need up to {limits.format_bytes(est)} ({est:,} bytes) for inputs of shapes "
            f"{', '.join(str(list(a.shape)) for a in arrays)}, more than max_memory "
            f"{limits.format_bytes(bound)} ({bound:,} bytes); refused before allocating",
            where=f"node {node.name!r}", hint="pass max_memory=<bytes> if this is intended, or check the input shapes")


def _evaluate(node: Node, graph: Graph, values: dict[str, TensorInfo], known: dict[str, np.ndarray],
              max_bytes: int | None, strict: bool = False) -> tuple[Any, ...] | None:
    """The node's outputs on its known inputs and zeros elsewhere (None when that cannot be done, or when
    the output would exceed ``max_bytes`` — default: the session's max_memory — whatever shape is declared)."""
    try:
        step = kernel_step(node, graph)
    except Exception:
        return None
    # As hal.engine does before every kernel: the output's size from the arguments (Python integers,
    # nothing allocated) against the bound, and here the stand-in zeros of unknown inputs too.
    bound = max_bytes if max_bytes is not None else limits.current().max_memory
    zeros = _Zeros(values, known, min(bound, _ZEROS_LIMIT_BYTES))
    control = step.context_opset is not None
    if control:
        # control flow: its shapes come from its body, run here on stand-in values. A Loop only with its
        # trip count and condition known, the trip count small enough to be shape arithmetic (a Range's
        # loop once the host fixed its bounds); an If only with its condition known; a Scan's length is
        # its inputs' static shape.
        if node.op_type == "Loop":
            if not all((not i) or i in known for i in node.inputs[:2]):
                return None
            trip = known.get(node.inputs[0]) if node.inputs and node.inputs[0] else None
            if trip is None or trip.size != 1 or int(trip.reshape(-1)[0]) > _KNOWN_LIMIT:
                return None
        elif node.op_type == "If":
            if not node.inputs or node.inputs[0] not in known:
                return None
        elif node.op_type != "Scan":
            return None
    args = []
    for i in node.inputs:
        if not i:
            args.append(None)
            continue
        v = zeros.get(i)
        if v is None:
            info = values.get(i)
            shp, dt = _static(info), info.dtype if info is not None else None
            if strict and max_bytes is None and shp is not None and dt is not None:
                n = limits.nbytes_of(shp, dt.itemsize)
                if n > bound:
                    raise ResourceError(
                        f"{node.op_type} reads {i!r} of shape {list(shp)}: {limits.format_bytes(n)} ({n:,} bytes), "
                        f"more than max_memory {limits.format_bytes(bound)} ({bound:,} bytes); refused before "
                        "allocating", where=f"node {node.name!r}",
                        hint="pass max_memory=<bytes> if this is intended, or check the input shapes")
            return None
        args.append(v)
    if node.op_type in _STAND_INS:
        _STAND_INS[node.op_type](args, {p for p, i in enumerate(node.inputs) if i and i not in known})
    if control:
        try:
            limits.check_deadline(f"node {node.name!r}")
            with np.errstate(all="ignore"):
                res = step.fn(*args, _ctx=KernelContext(step.context_opset, zeros, node.name),  # type: ignore[arg-type]
                              **step.attrs)
        except ResourceError:
            if strict and max_bytes is None:
                raise  # a specialisation's loop stacking more than max_memory: say so, as below
            return None
        except Exception:  # a body that reads run-time values, or fails: its shapes stay open
            return None
        return res if isinstance(res, tuple) else (res,)
    try:
        limits.check_deadline(f"node {node.name!r}")
        limits.check_step(node.op_type, node.name, args, step.attrs, bound)
        if node.op_type not in limits.OUTPUT_SIZE:
            _check_rough(node, args, bound)
    except ResourceError:
        if strict and max_bytes is None:
            raise  # the concrete values of a specialisation ask for more than max_memory: say so
        return None
    except Exception:  # malformed arguments: the kernel's error is the run's to report
        return None
    try:
        with np.errstate(all="ignore"):
            res = step.fn(*args, **step.attrs)
    except Exception as e:  # a kernel error: the node stays unsized, and its reason says why
        raise _KernelRefused(f"{type(e).__name__}: {e}") from None
    return res if isinstance(res, tuple) else (res,)


def _inferred(node: Node, graph: Graph, values: dict[str, TensorInfo], known: dict[str, np.ndarray]
              ) -> list[TensorInfo | None] | None:
    """The node's output shapes from onnx's inference of it alone, on its inputs' static shapes (and
    the values known), where no stand-in could run it: zeros of its inputs' shapes past the bound
    (a whisper encoder's scores at batch 2: 72 MB). None unless every output shape is a static one."""
    if node.domain not in ("", "ai.onnx.ml") or any(hasattr(v, "SerializeToString") for v in node.attrs.values()):
        return None
    types = {}
    for i in node.inputs:
        shp = _static(values.get(i)) if i else ()
        if i and (shp is None or not values[i].elem_type):
            return None
        if i:
            types[i] = helper.make_tensor_type_proto(values[i].elem_type, shp)
    data = {i: numpy_helper.from_array(np.asarray(known[i]), i) for i in node.inputs if i and i in known}
    try:
        schema = onnx.defs.get_schema(node.op_type, graph.opset(node.domain), node.domain)
        out = onnx.shape_inference.infer_node_outputs(schema, node.to_proto(), types, data)
    except Exception:  # no schema, or inference refuses the node: the shapes stay open
        return None
    infos: list[TensorInfo | None] = []
    for o in node.outputs:
        t = out.get(o).tensor_type if o and o in out else None
        if o and (t is None or not t.HasField("shape") or not all(d.HasField("dim_value") for d in t.shape.dim)):
            return None
        infos.append(TensorInfo(o, t.elem_type, tuple(d.dim_value for d in t.shape.dim)) if t is not None else None)
    return infos


class _KernelRefused(Exception):
    """A kernel refused the stand-in arguments of a node (a model whose axis lies outside its input's rank),
    so its outputs stay unsized; the message, the kernel's, goes into the reason the LPU gives."""


class _Zeros(Mapping[str, Any]):
    """Values for compile-time evaluation: the known ones, else zeros of the static shape (bounded in
    bytes before allocating); a control-flow body reads its outer scope through it too."""

    def __init__(self, values: dict[str, TensorInfo], known: dict[str, np.ndarray], limit: int):
        self._values, self._known, self._limit = values, known, limit

    def __getitem__(self, name: str) -> Any:
        v = self.get(name)
        if v is None:
            raise KeyError(name)
        return v

    def get(self, name: str, default: Any = None) -> Any:
        if name in self._known:
            return self._known[name]
        info = self._values.get(name)
        if info is not None and info.kind == "map":  # an empty map of its types (DictVectorizer's one row)
            try:
                return map_feed(info, {})
            except InputError:
                return default
        shp, dt = _static(info), info.dtype if info is not None else None
        if shp is None or dt is None or limits.nbytes_of(shp, dt.itemsize) > self._limit:
            return default
        return np.broadcast_to(np.zeros((), dtype=dt), shp)  # one element, whatever the shape

    def __iter__(self) -> Iterator[str]:
        return iter(self._known)

    def __len__(self) -> int:
        return len(self._known)
