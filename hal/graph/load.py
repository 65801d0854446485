"""Safe loading: a path, bytes, a ModelProto or ``zoo:NAME`` in; a checked, shape-inferred Graph out.

Every failure is a ModelError naming the file and what is wrong. External data is read only from
inside the model's folder: absolute locations, ``..`` and links that resolve outside are refused.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from hal import limits
from hal.errors import HalError, InputError, ModelError, ResourceError
from hal.graph import contrib
from hal.graph.attrcheck import check_before_inference
from hal.graph.inline import inline_functions
from hal.graph.ir import SHAPE_ONLY_KEY, Graph, Node, ShapeOnly, TensorInfo, attribute_graphs, np_dtype
from hal.graph.typecheck import (
    ELEM_TYPE_CONFLICT,
    KIND_CONFLICT,
    SHAPE_CONFLICT,
    check_declared_types,
    check_input_types,
    check_output_types,
)

ModelLike = str | os.PathLike | bytes | onnx.ModelProto | Graph


def _external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    return [t for t in _get_all_tensors(model) if uses_external_data(t)]


def check_external_data(model: onnx.ModelProto, base_dir: Path | None, where: str) -> None:
    """Refuse external-data locations that could read outside the model's folder."""
    tensors = _external_tensors(model)
    if not tensors:
        return
    if base_dir is None:
        raise ModelError("the model keeps weights in external data files, but was given as bytes",
                         where=where, hint="load it from its path so hal can find the data beside it")
    root = base_dir.resolve()
    for t in tensors:
        loc = next((e.value for e in t.external_data if e.key == "location"), "")
        if not isinstance(loc, str) or any(ord(ch) < 32 for ch in loc):  # NUL, newlines: no file is named so
            raise ModelError(f"tensor {t.name!r} has an external-data location {loc!r} that is not a file name",
                             where=where, hint="external data must sit beside the model, by relative path")
        p = Path(loc)
        if not loc or p.is_absolute() or loc.startswith(("/", "\\")) or (len(loc) > 1 and loc[1] == ":"):
            raise ModelError(f"tensor {t.name!r} has an absolute or empty external-data location {loc!r}",
                             where=where, hint="external data must sit beside the model, by relative path")
        if ".." in p.parts or ".." in loc.replace("\\", "/").split("/"):
            raise ModelError(f"tensor {t.name!r} has external-data location {loc!r} containing '..'",
                             where=where, hint="external data must sit inside the model's folder")
        target = (root / p).resolve()
        if root != target and root not in target.parents:
            raise ModelError(f"tensor {t.name!r}: external-data location {loc!r} resolves to {target}, "
                             "outside the model's folder", where=where,
                             hint="a link may not lead out of the model's folder")
        if not target.is_file():
            raise ModelError(f"tensor {t.name!r}: external-data file {loc!r} does not exist", where=where)


def parse_model(model: str | os.PathLike | bytes | onnx.ModelProto, *, zoo_params: dict[str, Any] | None = None
                ) -> tuple[onnx.ModelProto, str, Path | None]:
    """Read the model; returns (proto, description for messages, folder for external data)."""
    if isinstance(model, onnx.ModelProto):
        where = model.graph.name or "<ModelProto>"
        if not model.HasField("graph"):
            raise ModelError("the ModelProto has no graph: it is not an ONNX model", where=where,
                             hint="build it with onnx.helper.make_model(graph, ...), or onnx.load the file")
        return model, where, None
    if isinstance(model, (bytes, bytearray, memoryview)):
        where, data, base = "<bytes>", bytes(model), None
    else:
        if not isinstance(model, (str, os.PathLike)):
            raise not_a_model(model)
        s = os.fspath(model)
        if isinstance(s, bytes):  # a path-like object may name itself in bytes
            s = os.fsdecode(s)
        if not isinstance(s, str):
            raise not_a_model(model)
        if s.startswith("zoo:"):
            from hal import zoo

            return zoo.build(s[4:], **(zoo_params or {})), s, None
        if not s:
            raise ModelError("the model path is empty", where="model",
                             hint="pass the path of an .onnx file, or zoo:NAME for a built-in model")
        path = Path(s)
        where = str(path)
        if not path.exists():
            raise ModelError("no such file", where=where, hint="check the path, or use zoo:NAME for a built-in model")
        if path.is_dir():
            raise ModelError("is a folder, not an .onnx file", where=where)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ModelError(f"cannot read the file: {e.strerror or e}", where=where) from None
        base = path.parent
    if not data:
        raise ModelError("the file is empty", where=where)
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ModelError(f"not a valid ONNX protobuf ({e})", where=where,
                         hint="the file is truncated or not an ONNX model") from None
    if not proto.HasField("graph"):
        raise ModelError("the protobuf has no graph: it is not an ONNX model", where=where)
    check_external_data(proto, base, where)
    if base is not None and _external_tensors(proto):
        try:
            onnx.load_external_data_for_model(proto, str(base))
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot read external data: {e}", where=where) from None
    return proto, where, base


#: what ``model`` may be, in words
MODEL_FORMS = "a path (str or pathlib.Path) to an .onnx file, 'zoo:NAME', bytes, an onnx.ModelProto or a hal Graph"


def not_a_model(model: Any) -> ModelError:
    """The error for a ``model`` argument of no form hal loads (an int, None, a list, a GraphProto, ...)."""
    cls = type(model)
    kind = cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    if isinstance(model, Graph):  # parse_model's callers that need the ONNX model itself (a peer, a rebuild)
        return ModelError("this needs the ONNX model (a path, bytes or ModelProto), not a hal Graph", where="model",
                          hint="pass the model the Graph was loaded from")
    hint = "wrap the graph in a model: onnx.helper.make_model(graph, opset_imports=[...])" \
        if isinstance(model, onnx.GraphProto) else "e.g. 'model.onnx', 'zoo:tiny-gpt' or onnx.load('model.onnx')"
    return ModelError(f"model must be {MODEL_FORMS}, not {kind}", where="model", hint=hint)


def _check(proto: onnx.ModelProto, where: str) -> None:
    if not proto.opset_import:
        raise ModelError("the model imports no opset", where=where, hint="set opset_import (e.g. ai.onnx 17)")
    newest = onnx.defs.onnx_opset_version()
    for o in proto.opset_import:  # ops of an unreleased opset have no defined meaning yet
        if o.domain in ("", "ai.onnx") and o.version > newest:
            raise ModelError(f"the model imports ai.onnx opset {o.version}, newer than the newest this onnx "
                             f"knows ({newest})", where=where, hint="upgrade onnx, or re-export at a released opset")
    try:
        with contrib.onnx_checkable(proto), _shapes_declared(proto):
            onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        msg = str(e).strip().splitlines()
        raise ModelError(f"onnx.checker: {' '.join(msg[:3])}", where=where,
                         hint="fix the model, or re-export it with a current exporter") from None
    except (ValueError, RuntimeError) as e:  # protobuf-level oddities the checker trips on
        raise ModelError(f"onnx.checker failed: {e}", where=where) from None


@contextlib.contextmanager
def _shapes_declared(proto: onnx.ModelProto) -> Iterator[None]:
    """``proto`` with a shape field (of rank 0) on each graph input and output tensor that has none, and
    a type on each graph output that has none, for the block: onnx's checker requires both fields,
    where its IR reads a missing shape as a tensor of unknown rank and onnxruntime runs such models
    (skl2onnx's GaussianProcessRegressor declares its ``return_std`` output so; an output appended
    as ``ValueInfoProto(name=...)`` to read an intermediate value out takes its producer's type).
    The check is of the graph's structure; the model keeps its own types, inference fills them in."""
    bare = [vi.type.tensor_type for vi in (*proto.graph.input, *proto.graph.output)
            if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape")]
    untyped = [vi for vi in proto.graph.output if not vi.HasField("type")]
    try:
        for t in bare:
            t.shape.SetInParent()
        for vi in untyped:
            vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
            vi.type.tensor_type.shape.SetInParent()
        yield
    finally:
        for t in bare:
            t.ClearField("shape")
        for vi in untyped:
            vi.ClearField("type")


#: what onnx's strict inference says of static shapes an op cannot take (broadcasting, MatMul; a
#: Squeeze of an axis not of size 1), which onnxruntime refuses when it loads the model
INCOMPATIBLE_DIMENSIONS = ("Incompatible dimensions", "must be 1 instead of")

#: onnx's data propagation walks (and allocates) every element of 1-D tensors, in C++ that cannot be
#: interrupted: a declared or inferred length past this (shape tensors are rank-sized) turns it off
DATA_PROP_MAX_ELEMENTS = 1 << 16


def _long_vector(proto: onnx.ModelProto, skip: int = 0) -> str | None:
    """The name of a 1-D tensor longer than DATA_PROP_MAX_ELEMENTS (declared, or inferred without data
    propagation; subgraphs included), or None. The main graph's last ``skip`` inputs are not looked at
    (the weights ``_light`` declared there)."""
    try:
        probe = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=False)
    except Exception:  # the real pass reports what is wrong
        probe = proto
    stack = [probe.graph]
    while stack:
        g = stack.pop()
        ins = list(g.input)
        if g is probe.graph and skip:
            ins = ins[:len(ins) - skip]
        for vi in (*ins, *g.output, *g.value_info):
            tt = vi.type.tensor_type
            if tt.HasField("shape") and len(tt.shape.dim) == 1 and tt.shape.dim[0].dim_value > DATA_PROP_MAX_ELEMENTS:
                return vi.name
        for n in g.node:
            for a in n.attribute:
                stack.extend(attribute_graphs(a))
    return None


#: initializers with more elements than this go to shape inference as declared inputs (type and shape,
#: no data): no shape is computed from a weight's values, and the data would be copied into C++ and back
_LIGHT_MIN_ELEMENTS = 1024
#: integer vectors stay whole: shapes, axes, pads, repeats and sizes are read from them
_SHAPE_DATA_TYPES = (onnx.TensorProto.INT64, onnx.TensorProto.INT32)


def _light(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """The model for shape inference: large weights declared as inputs after the graph's own, without
    their data. Returns it and how many inputs were appended (``proto`` itself and 0 when none is large)."""
    g = proto.graph
    declared = {i.name for i in g.input}  # a weight that is also an input (IR < 4) keeps its data
    heavy = {t.name: t for t in g.initializer
             if isinstance(t.name, str) and t.name not in declared and math.prod(t.dims) > _LIGHT_MIN_ELEMENTS
             and not (t.data_type in _SHAPE_DATA_TYPES and len(t.dims) <= 1)}
    if not heavy:
        return proto, 0
    light = onnx.ModelProto()
    light.ir_version = proto.ir_version
    light.opset_import.extend(proto.opset_import)
    light.metadata_props.extend(proto.metadata_props)
    light.functions.extend(proto.functions)
    lg = light.graph
    lg.name = g.name
    lg.node.extend(g.node)
    lg.input.extend(g.input)
    lg.output.extend(g.output)
    lg.value_info.extend(g.value_info)
    lg.sparse_initializer.extend(g.sparse_initializer)
    lg.initializer.extend(t for t in g.initializer if t.name not in heavy)
    lg.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in heavy.values())
    added = len(heavy)
    return light, added


def _infer(proto: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """The model with inferred value_info; its large weights are declared inputs with no data (see
    ``_light``): take weights from ``proto``, and only its first ``len(proto.graph.input)`` inputs."""
    check_before_inference(proto, where)
    proto, added = _light(proto)
    proto = inline_functions(proto, where)
    long_vector = _long_vector(proto, added)
    data_prop = long_vector is None
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=data_prop)
        strict_error = None
    except onnx.shape_inference.InferenceError as e:
        strict_error = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
    except (ValueError, RuntimeError) as e:
        strict_error = str(e)
    except MemoryError:  # onnx's C++ (std::bad_alloc): shapes or propagated values too large to hold
        raise ResourceError("shape inference ran out of memory", where=where,
                            hint="the model declares or computes tensors far larger than memory") from None
    if strict_error is not None:
        if any(c in strict_error for c in (ELEM_TYPE_CONFLICT, SHAPE_CONFLICT, KIND_CONFLICT)):
            check_declared_types(proto, where)
        if any(s in strict_error for s in INCOMPATIBLE_DIMENSIONS):  # as onnxruntime refuses it: it would fail
            raise ModelError(f"shape inference: {strict_error.removeprefix('[ShapeInferenceError] ')}", where=where,
                             hint="an op's inputs have static shapes it cannot take (no broadcast, a product's "
                                  "inner dimensions differ, a squeezed axis not of size 1): re-export the model")
        # Some valid models defeat strict inference (e.g. unknown custom domains): keep what is known.
        try:
            inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=data_prop)
        except Exception as e:  # inference is best effort; a model it cannot read is a ModelError
            raise ModelError(f"shape inference failed: {e}", where=where) from None
        inferred.metadata_props.append(onnx.StringStringEntryProto(key="hal.inference_warning", value=strict_error))
    # onnxruntime's ops, which onnx does not know: inferred again through their standard stand-ins,
    # so the values after them get shapes too (best effort, as above)
    try:
        inferred = contrib.infer(inferred, lambda m: onnx.shape_inference.infer_shapes(m, data_prop=data_prop))
    except Exception:  # the first inference stands
        pass
    if long_vector is not None:
        inferred.metadata_props.append(onnx.StringStringEntryProto(
            key="hal.data_propagation", value=f"off: 1-D tensor {long_vector!r} is longer than "
                                              f"{DATA_PROP_MAX_ELEMENTS} elements"))
    return inferred


def _toposort(nodes: list[onnx.NodeProto], available: set[str], where: str) -> list[onnx.NodeProto]:
    """Nodes in an order where every input is produced before use; cycles are a ModelError."""
    produced_by: dict[str, int] = {}
    for idx, n in enumerate(nodes):
        for o in n.output:
            if o:
                produced_by[o] = idx
    # already in order (as exporters write them): the depth-first walk below would return this same order
    if all(produced_by.get(i, -1) < idx or i in available for idx, n in enumerate(nodes) for i in n.input if i):
        return list(nodes)
    deps = [{produced_by[i] for i in n.input if i and i in produced_by and i not in available} for n in nodes]
    order, state = [], [0] * len(nodes)
    for start in range(len(nodes)):
        if state[start]:
            continue
        stack = [(start, iter(sorted(deps[start])))]
        state[start] = 1
        while stack:
            idx, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                state[idx] = 2
                order.append(idx)
            elif state[nxt] == 1:
                raise ModelError(f"the graph has a cycle through node {nodes[nxt].name or nodes[nxt].op_type!r}",
                                 where=where)
            elif state[nxt] == 0:
                state[nxt] = 1
                stack.append((nxt, iter(sorted(deps[nxt]))))
    return [nodes[i] for i in order]


def sparse_to_dense(st: onnx.SparseTensorProto) -> np.ndarray:
    """A sparse initializer as a dense array (indices flat [NNZ] or per-dimension [NNZ, rank])."""
    values = numpy_helper.to_array(st.values)
    idx = numpy_helper.to_array(st.indices).astype(np.int64)
    # A few stored values can declare an enormous dense shape: refuse it before allocating.
    limits.check_alloc(f"sparse tensor {st.values.name!r}", list(st.dims), values.dtype, where="model")
    dense = np.zeros(tuple(st.dims), dtype=values.dtype)
    if idx.ndim == 1:
        dense.reshape(-1)[idx] = values
    else:
        dense[tuple(idx.T)] = values
    return dense


def _check_names(g: onnx.GraphProto, where: str) -> None:
    """Names must be text: protobuf hands back bytes for a proto2 string that is not valid UTF-8."""
    if isinstance(g.name, str) and all(isinstance(v.name, str) for v in (*g.input, *g.output, *g.value_info)) \
            and all(isinstance(t.name, str) for t in g.initializer) \
            and all(isinstance(x, str) for n in g.node for x in (n.name, n.op_type, n.domain, *n.input, *n.output)):
        return  # the common case, without naming every field
    fields = [("graph name", g.name)] + [(f"value {v.name!r}", v.name) for v in (*g.input, *g.output, *g.value_info)]
    fields += [(f"initializer {t.name!r}", t.name) for t in g.initializer]
    for n in g.node:
        fields += [(f"node {n.name!r}", x) for x in (n.name, n.op_type, n.domain, *n.input, *n.output)]
    bad = next((what for what, x in fields if not isinstance(x, str)), None)
    if bad is not None:
        raise ModelError(f"{bad} holds a name that is not valid UTF-8 text", where=where,
                         hint="ONNX names are UTF-8 strings; re-export the model")


def _text(v: str | bytes) -> str:
    return v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v


def _ir3_weights_declared(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Before IR version 4 every initializer is also a graph input (its default value). onnxruntime
    saves the weights its optimiser makes (a Conv with a BatchNormalization folded in) as initializers
    alone, whatever the model's IR version, and runs such models; so does hal: a copy of ``proto``
    with those weights declared as inputs too, which is how an IR-3 model reads (``proto`` itself
    when none is missing)."""
    if proto.ir_version >= 4:
        return proto
    declared = {i.name for i in proto.graph.input}
    missing = [t for t in proto.graph.initializer if t.name not in declared]
    if not missing:
        return proto
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    copy.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in missing)
    return copy


@functools.cache
def _domain_versions() -> dict[str, int]:
    """The newest version of each operator domain onnx defines, and onnxruntime's contrib domain's."""
    newest: dict[str, int] = {contrib.DOMAIN: 1}
    for s in onnx.defs.get_all_schemas_with_history():
        newest[s.domain] = max(newest.get(s.domain, 1), s.since_version)
    newest[""] = onnx.defs.onnx_opset_version()
    return newest


def _domains_imported(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` that imports each known domain its graph's nodes use and it does not import,
    at that domain's newest version, as onnxruntime reads such a model (NNCF's weight compression
    writes com.microsoft MatMulNBits into a model that imports ai.onnx alone); ``proto`` itself when
    nothing is missing. A domain nobody here knows stays missing, for the checker to name."""
    def domains(g: onnx.GraphProto) -> Iterator[str]:
        for n in g.node:
            yield "" if n.domain == "ai.onnx" else n.domain
            for a in n.attribute:
                for body in attribute_graphs(a):
                    yield from domains(body)

    imported = {"" if o.domain == "ai.onnx" else o.domain for o in proto.opset_import}
    used = set(domains(proto.graph)) - imported
    if not used or not imported:  # a model importing nothing at all is refused by _check
        return proto
    newest = _domain_versions()
    missing = sorted(d for d in used if d in newest)
    if not missing:
        return proto
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    copy.opset_import.extend(helper.make_opsetid(d, newest[d]) for d in missing)
    return copy


def _negative_dims_unknown(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` in which every declared dimension of negative size is unknown instead, as
    onnxruntime reads it (paddle2onnx declares some free dimensions as -1, which no feed could match
    and onnx's inference carries into the shapes it infers); ``proto`` itself when it declares none."""
    def values(g: onnx.GraphProto) -> Iterator[onnx.ValueInfoProto]:
        yield from (*g.input, *g.output, *g.value_info)
        for n in g.node:
            for a in n.attribute:
                for body in attribute_graphs(a):
                    yield from values(body)

    def negative(vi: onnx.ValueInfoProto) -> list[onnx.TensorShapeProto.Dimension]:
        t = vi.type.tensor_type
        return [d for d in t.shape.dim if d.HasField("dim_value") and d.dim_value < 0] \
            if vi.type.HasField("tensor_type") and t.HasField("shape") else []

    if not any(negative(vi) for vi in values(proto.graph)):
        return proto
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for vi in values(copy.graph):
        for d in negative(vi):
            d.ClearField("dim_value")
    return copy


def model_hash(proto: onnx.ModelProto) -> str:
    return hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()[:16]


def from_proto(proto: onnx.ModelProto, *, where: str = "<model>", check: bool = True,
               infer_shapes: bool = True) -> Graph:
    """Build the IR from a proto: check it, infer shapes, order nodes, collect weights."""
    digest = model_hash(proto)  # the model as given (hal.overrides reads it again to compare)
    proto = _domains_imported(_ir3_weights_declared(proto))
    if check:
        _check(proto, where)
    proto = _negative_dims_unknown(proto)
    weights = proto.graph  # the inferred model declares the large weights as inputs, without data
    had_functions = len(proto.functions) > 0
    n_inputs = len(weights.input)
    if infer_shapes:
        proto = _infer(proto, where)
    else:
        proto = inline_functions(proto, where)
    g = proto.graph
    _check_names(weights, where)
    if had_functions:  # the nodes inlined from its functions come from their bodies, not checked above
        _check_names(g, where)
    # protobuf hands back bytes for a string field that is not valid UTF-8
    meta = {_text(p.key): _text(p.value) for p in proto.metadata_props}
    shape_only_names = {n for n in meta.get(SHAPE_ONLY_KEY, "").split(",") if n}

    initializers: dict[str, Any] = {}
    for t in weights.initializer:
        try:
            initializers[sys.intern(t.name)] = numpy_helper.to_array(t)
        except (ValueError, TypeError) as e:
            raise ModelError(f"initializer {t.name!r} cannot be read: {e}", where=where) from None
    for st in weights.sparse_initializer:
        try:
            initializers[st.values.name] = sparse_to_dense(st)
        except (ValueError, TypeError, IndexError) as e:
            raise ModelError(f"sparse initializer {st.values.name!r} cannot be read: {e}", where=where) from None

    values: dict[str, TensorInfo] = {}
    graph_inputs = list(g.input)[:n_inputs]
    for vi in (*g.value_info, *graph_inputs, *g.output):
        info = TensorInfo.from_value_info(vi)
        values[info.name] = info
    for name, arr in initializers.items():
        values.setdefault(name, TensorInfo(name, onnx.helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape))

    inputs, overridable = [], []
    for vi in graph_inputs:
        if vi.name in initializers:
            if proto.ir_version >= 4:  # the initializer is the input's default (before IR 4, every one is listed)
                overridable.append(values[vi.name])
            continue
        info = values[vi.name]
        if vi.name in shape_only_names:
            if info.static_shape is None or info.dtype is None:
                raise ModelError(f"shape-only weight {vi.name!r} needs a static shape and dtype", where=where)
            initializers[vi.name] = ShapeOnly(info.static_shape, info.dtype)
            continue
        inputs.append(info)

    protos = list(g.node)
    for n, name in zip(protos, node_names(protos)):
        n.name = name
    available = set(initializers) | {i.name for i in inputs}
    ordered = _toposort(protos, available, where)
    nodes = []
    for n in ordered:
        try:
            nodes.append(Node.from_proto(n, n.name))
        except (ValueError, TypeError, KeyError) as e:  # e.g. a tensor attribute whose data does not fit its dims
            raise ModelError(f"node {n.name!r} ({n.op_type}) has an attribute that cannot be read: {e}",
                             where=where) from None

    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in proto.opset_import}
    check_input_types(nodes, values, opsets.get("", 1), where)
    check_output_types(nodes, values, opsets, where)
    return Graph(g.name or "model", nodes, inputs, [values[o.name] for o in g.output], initializers, values,
                 opsets, proto.ir_version, meta, digest, list(proto.functions), overridable)


def node_names(protos: list[onnx.NodeProto]) -> list[str]:
    """Each node's name in hal's messages: its own, else "<op>_<index>"; a repeated one
    "<name>__<index>"."""
    names: list[str] = []
    seen: set[str] = set()
    for i, n in enumerate(protos):
        name = n.name
        if not name or name in seen:
            name = f"{n.op_type}_{i}" if not name else f"{name}__{i}"
        names.append(name)
        seen.add(name)
    return names


def load(model: ModelLike, *, check: bool = True, infer_shapes: bool = True,
         zoo_params: dict[str, Any] | None = None, dims: dict[str, int] | None = None) -> Graph:
    """Load any model form into a Graph (see module docstring); a Graph passes through. ``dims``
    binds open input dimensions by name before shape inference (``hal.graph.dims``); a caller's
    ModelProto is copied first, never changed."""
    if isinstance(model, Graph):
        if dims:
            raise ModelError("dims binds a model's open dimensions before it is loaded, and this one is "
                             "a loaded Graph", where=model.name, hint="pass the model (a path, bytes or a "
                             "ModelProto) instead, or graph.to_onnx()")
        return model
    proto, where, _ = parse_model(model, zoo_params=zoo_params)
    if not dims:
        return from_proto(proto, where=where, check=check, infer_shapes=infer_shapes)
    from hal.graph.dims import bind_dims, unbind_dims

    if proto is model:
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        proto = copy
    bound = bind_dims(proto, dims, where)
    try:
        return from_proto(proto, where=where, check=check, infer_shapes=infer_shapes)
    except ModelError as e:
        if not (infer_shapes and e.what.startswith("shape inference")
                and any(s in e.what for s in INCOMPATIBLE_DIMENSIONS)):
            raise
        error = e
    # the sizes bound do not fit the graph: if it loads with them open, they disagree with one another
    # (a mask of `total` bound apart from `past` + `seq`, '*' giving one size to all), not the model
    unbind_dims(proto, bound)
    try:
        from_proto(proto, where=where, check=check, infer_shapes=infer_shapes)
    except HalError:
        raise error from None
    shown = ", ".join(dict.fromkeys(f"{n or f'{i}[{a}]'}={size}" for i, a, n, size in bound))
    raise InputError(f"the dimension sizes bound ({shown}) do not fit the graph: "
                     f"{error.what.removesuffix('.')}", where=where,
                     hint="the model loads with those dimensions open, so the sizes given disagree with one "
                          "another (e.g. a mask's length must be past + seq; '*' gives every one the same size): "
                          "bind each to the size it will run with (dims=, hal --dim NAME=N), or leave it open"
                     ) from None


__all__ = ["MODEL_FORMS", "ModelLike", "check_external_data", "from_proto", "load", "model_hash", "node_names",
           "not_a_model", "np_dtype", "parse_model"]
