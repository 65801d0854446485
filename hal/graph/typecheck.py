"""Type checks a model gets at load, where onnx's own inference, which hal falls back to running
non-strictly, lets a model through that onnxruntime refuses: an input of a type its operator does not
take, a type parameter bound to two types, and a value declared of another type than its node makes."""

from __future__ import annotations

import functools
import sys
from collections import ChainMap
from collections.abc import Iterable, Mapping, Sequence

import onnx

from hal.errors import ModelError, a_or_an
from hal.graph.ir import Node, TensorInfo, attribute_graphs, node_bodies


def label(n: onnx.NodeProto | Node) -> str:
    """How messages name a node: its name (its op where it has none) and its op."""
    return f"node {n.name or n.op_type!r} ({n.op_type})"


#: element type -> the name schemas use in their type strings ("float", "int64", "bfloat16", ...)
_TYPE_NAMES = {value: name.lower() for name, value in onnx.TensorProto.DataType.items()}


@functools.lru_cache(maxsize=4096)
def _input_types(op_type: str, opset: int, domain: str = ""
                 ) -> tuple[tuple[str, frozenset[str], bool, str], ...] | None:
    """Per formal input of the op at ``opset`` (of the default domain unless ``domain`` is given):
    its name, the tensor types it takes, whether it is variadic, and its type parameter ("T": every
    input of one parameter has one type; "" where none binds, a fixed type or a heterogeneous
    variadic); None for an op onnx does not know."""
    try:
        schema = onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        return None
    allowed = {c.type_param_str: _type_set(c.allowed_type_strs) for c in schema.type_constraints}
    return tuple((f.name, allowed[f.type_str] if f.type_str in allowed else _type_set([f.type_str]),
                  f.option == onnx.defs.OpSchema.FormalParameterOption.Variadic,
                  f.type_str if f.type_str in allowed and f.is_homogeneous else "") for f in schema.inputs)


#: each set of allowed type strings once, its strings interned: the schemas of an op's opsets and of
#: many ops repeat the same sets, which the cache above had held a fresh copy of per entry (tiny-gpt's
#: 22 entries 41 KB, resident for the process; counted in a run's own memory by the benchmark)
_TYPE_SETS: dict[frozenset[str], frozenset[str]] = {}


def _type_set(strs: Iterable[str]) -> frozenset[str]:
    made = frozenset(map(sys.intern, strs))
    return _TYPE_SETS.setdefault(made, made)


def check_input_types(nodes: list[Node], values: dict[str, TensorInfo], opset: int, where: str) -> None:
    """Refuse, as a ModelError, a default-domain node whose input tensor has a type its operator's
    schema does not take (a float tensor as ReduceSum's axes, say), in the main graph and in every
    If, Loop and Scan body under it, as onnxruntime refuses such a model when it loads it; onnx's own
    inference, which hal falls back to running non-strictly, lets it through. 30 ms on the
    10,193-node compile graph."""
    types = {name: info.elem_type for name, info in values.items() if info.kind == "tensor"}
    for n in nodes:
        _check_node(n, n.inputs, types, opset, where, "")
        for attr, body in node_bodies(n.attrs.items()):
            _check_body(body, ChainMap(_declared_types(body), types), opset, where, f"{label(n)} {attr}: ")


def _declared_types(g: onnx.GraphProto) -> dict[str, int]:
    """The element types a body declares for its own values (inputs, initializers, value_info and
    outputs); a value its nodes make without a declared type maps to 0, unknown, so that it hides
    an outer value of the same name rather than borrowing that value's type."""
    types = {o: 0 for n in g.node for o in n.output}
    types.update((t.name, t.data_type) for t in g.initializer)
    for vi in (*g.input, *g.value_info, *g.output):
        types[vi.name] = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
    return types


def _check_body(g: onnx.GraphProto, types: ChainMap[str, int], opset: int, where: str, path: str) -> None:
    for n in g.node:
        _check_node(n, n.input, types, opset, where, path)
        for a in n.attribute:
            for body in attribute_graphs(a):
                _check_body(body, types.new_child(_declared_types(body)), opset, where,
                            f"{path}{label(n)} {a.name}: ")


def _check_node(n: onnx.NodeProto | Node, inputs: Sequence[str], types: Mapping[str, int], opset: int,
                where: str, path: str) -> None:
    """``check_input_types`` for one node, its input names' element types looked up in ``types``."""
    if n.domain not in ("", "ai.onnx"):
        return
    formal = _input_types(n.op_type, opset)
    if not formal:
        return
    bound: dict[str, tuple[str, int, str]] = {}  # type parameter -> (its type, input, name)
    for i, name in enumerate(inputs):
        elem_type = types.get(name, 0) if name else 0
        if not elem_type:
            continue
        if i >= len(formal) and not formal[-1][2]:
            continue  # more inputs than the schema has: onnx's checker answers for that
        param, allowed, _, type_param = formal[min(i, len(formal) - 1)]
        if not any(t.startswith("tensor(") for t in allowed):
            continue  # a sequence or optional parameter; its element types are checked elsewhere
        name_of = _TYPE_NAMES.get(elem_type)
        if name_of is None:
            continue  # an element type onnx does not know: not this check's to judge
        got = f"tensor({name_of})"
        if got not in allowed:
            raise ModelError(f"{path}{label(n)} takes {param!r} (input {i}) as {' or '.join(sorted(allowed))}, "
                             f"but {name!r} is {a_or_an(got)}", where=where,
                             hint="cast it to a type the operator takes, or fix the exporter that wrote it")
        if type_param:
            first = bound.setdefault(type_param, (got, i, name))
            if first[0] != got:
                raise ModelError(f"{path}{label(n)} binds its type parameter {type_param} to one type, but input "
                                 f"{first[1]} ({first[2]!r}) is {a_or_an(first[0])} and input {i} ({name!r}) "
                                 f"{a_or_an(got)}",
                                 where=where, hint="cast one of them to the other's type (onnxruntime refuses "
                                 "such a model too), or fix the exporter that wrote it")


#: what onnx's strict inference says when a value's declared element type is not the one its node makes
ELEM_TYPE_CONFLICT = "Inferred elem type differs from existing elem type"
#: ... and when its declared shape or its kind (a tensor where the node makes a sequence) is not: the
#: first is reported before a type conflict of the same node, so they too send the model to
#: ``check_declared_types``
SHAPE_CONFLICT = "Inferred shape and existing shape differ"
KIND_CONFLICT = "type case mismatch"


def check_declared_types(proto: onnx.ModelProto, where: str) -> None:
    """Refuse, as a ModelError, a model that declares a value (in value_info or as a graph output, of
    the main graph or of an If, Loop or Scan body) of another element type than the node making it
    makes, as onnxruntime refuses it ("Type Error"); onnx's non-strict inference keeps the declared
    type, and the kernels would then make, and return, values of a type the graph says they are not
    (onnxconverter-common's float16 converter leaves such a Cast, and onnxslim's leaves one in the
    branches of Optimum's merged decoders). The first such value in node order is named. Called only
    where strict inference reported the conflict (``ELEM_TYPE_CONFLICT``): it infers the graph again
    with nothing declared."""
    bare = onnx.ModelProto()
    bare.CopyFrom(proto)
    _undeclared(bare.graph)
    try:
        inferred = onnx.shape_inference.infer_shapes(bare, strict_mode=False, data_prop=False)
    except Exception:  # inference is best effort; the caller's fallback stands
        return
    _compare_declared(proto.graph, inferred.graph, where, "")


def _undeclared(g: onnx.GraphProto) -> None:
    """Clear what ``g`` and every body under it declare of the values their nodes make."""
    g.ClearField("value_info")
    for o in g.output:
        o.ClearField("type")
    for n in g.node:
        for a in n.attribute:
            for body in attribute_graphs(a):
                _undeclared(body)


def _compare_declared(g: onnx.GraphProto, inferred: onnx.GraphProto, where: str, path: str) -> None:
    """``check_declared_types`` for ``g`` against the same graph inferred with nothing declared, then
    for each body under it."""
    declared = {vi.name: vi.type.tensor_type.elem_type for vi in (*g.value_info, *g.output)
                if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type}
    made = {vi.name: vi.type.tensor_type.elem_type for vi in (*inferred.value_info, *inferred.output)
            if vi.type.HasField("tensor_type")}
    # (a sparse initializer is loaded dense, as onnxruntime loads it: a tensor declared of one is a tensor)
    declared_kind = {vi.name: _kind(vi.type) for vi in (*g.value_info, *g.output)}
    made_kind = {vi.name: _kind(vi.type) for vi in (*inferred.value_info, *inferred.output)}
    for n in g.node:
        for name in n.output:
            want, got = declared_kind.get(name), made_kind.get(name)
            if want and got and want != got:  # a sequence declared a tensor, say
                raise ModelError(f"{path}{label(n)} makes {name!r} {_KINDS.get(got, got)}, but the model declares "
                                 f"it {_KINDS.get(want, want)}", where=where, hint=_DECLARED_HINT)
            want, got = declared.get(name, 0), made.get(name, 0)
            if want and got and want != got:
                raise _declared_otherwise(n, name, got, want, where, path)
    for n, m in zip(g.node, inferred.node):
        for a, b in zip(n.attribute, m.attribute):
            for body, body_inferred in zip(attribute_graphs(a), attribute_graphs(b)):
                _compare_declared(body, body_inferred, where, f"{path}{label(n)} {a.name}: ")


#: a TypeProto's cases, in words
_KINDS = {"tensor_type": "a tensor", "sequence_type": "a sequence", "optional_type": "an optional",
          "map_type": "a map"}
_DECLARED_HINT = ("fix the declared type (the value_info or graph output), or the converter that wrote it; "
                  "onnxruntime refuses such a model too")


def _kind(t: onnx.TypeProto) -> str | None:
    kind = t.WhichOneof("value")
    return "tensor_type" if kind == "sparse_tensor_type" else kind


def _declared_otherwise(n: onnx.NodeProto | Node, name: str, made: int, declared: int, where: str,
                        path: str = "") -> ModelError:
    return ModelError(f"{path}{label(n)} makes {name!r} a tensor({_TYPE_NAMES.get(made, made)}), but the model "
                      f"declares it a tensor({_TYPE_NAMES.get(declared, declared)})", where=where, hint=_DECLARED_HINT)


#: the domains whose schemas onnx holds and hal checks declared output types against
_SCHEMA_DOMAINS = ("", "ai.onnx.ml")
#: a schema's fixed type string ("tensor(float)") -> its element type
_FIXED_TYPES = {f"tensor({name})": value for value, name in _TYPE_NAMES.items()}


@functools.lru_cache(maxsize=4096)
def _output_types(op_type: str, opset: int, domain: str) -> tuple[int | str, ...] | None:
    """Per formal output of the op: the element type its schema fixes, or the type parameter its
    inputs bind ("" where neither: a variadic or heterogeneous output); None for an op onnx does
    not know."""
    try:
        schema = onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        return None
    variadic = onnx.defs.OpSchema.FormalParameterOption.Variadic
    return tuple("" if f.option == variadic or not f.is_homogeneous else _FIXED_TYPES.get(f.type_str, f.type_str)
                 for f in schema.outputs)


def check_output_types(nodes: list[Node], values: dict[str, TensorInfo], opsets: Mapping[str, int],
                       where: str) -> None:
    """Refuse, as a ModelError, a node of the main graph whose output the model declares of another
    element type than the operator's schema gives it: a type the schema fixes (TreeEnsembleClassifier's
    float scores, which skl2onnx declares double for a double input), or the type its inputs bind to
    the output's type parameter. onnxruntime refuses such a model ("Type Error"); onnx's inference
    has no rule for some of these ops, and the kernels would return a type the graph says they do
    not. A type so made binds the nodes after it (an Identity between TreeEnsembleClassifier's float
    scores and an output declared double, as skl2onnx writes for a double input)."""
    types = {name: info.elem_type for name, info in values.items() if info.kind == "tensor"}
    for n in nodes:
        if n.domain not in _SCHEMA_DOMAINS:
            continue
        opset = opsets.get(n.domain, 1)
        outs = _output_types(n.op_type, opset, n.domain)
        if not outs:
            continue
        bound: dict[str, int] = {}
        for name, formal in zip(n.inputs, _input_types(n.op_type, opset, n.domain) or ()):
            if name and formal[3] and types.get(name):
                bound.setdefault(formal[3], types[name])
        for o, made in zip(n.outputs, outs):
            declared = types.get(o, 0) if o else 0
            if isinstance(made, str):
                made = bound.get(made, 0)
            if declared and made and made != declared:
                raise _declared_otherwise(n, o, made, declared, where)
            if o and made and not declared:  # onnx infers no type for it (an ML op's): the nodes after bind this
                types[o] = made
