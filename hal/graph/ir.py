"""hal's graph IR: nodes in topological order, tensor infos from shape inference, weights.

Weights are numpy arrays, or ``ShapeOnly`` placeholders (shape + dtype, no data) so that large
models can be compiled and estimated without materialising them.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hal.graph.attrs import node_attributes


@dataclass(frozen=True)
class DeclaredTensor:
    """A tensor known by shape and dtype, with the array-like sizes code asks of a weight."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def ndim(self) -> int:
        return len(self.shape)


@dataclass(frozen=True)
class ShapeOnly(DeclaredTensor):
    """A weight declared by shape and dtype only."""


#: model metadata key listing the graph inputs that are shape-only weights (comma-separated)
SHAPE_ONLY_KEY = "hal.shape_only_weights"
#: graph metadata key on a partition of a model that fallback cut: "i/n", its index (0-based, as the
#: session's placement numbers it) and the partitions in all (specs/interface.md §4)
PARTITION_KEY = "hal.partition"
#: ops whose result is not a function of their inputs alone
NONDETERMINISTIC = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                              "Multinomial", "Bernoulli", "Dropout"})


Weight = np.ndarray | ShapeOnly
Dim = int | str | None


_NP_DTYPES: dict[int, np.dtype | None] = {}


def np_dtype(elem_type: int) -> np.dtype | None:
    """numpy dtype of an ONNX tensor element type (ml_dtypes for float8/int4/bfloat16)."""
    try:
        return _NP_DTYPES[elem_type]
    except (KeyError, TypeError):  # TypeError: not hashable, left to the lookup below
        pass
    if elem_type == 0:
        return None
    try:
        dt = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        dt = None
    if isinstance(elem_type, int):
        _NP_DTYPES[elem_type] = dt
    return dt


@dataclass(slots=True)
class TensorInfo:
    """What is known statically of one value: ONNX type, numpy dtype and (symbolic) shape."""

    name: str
    elem_type: int = 0
    shape: tuple[Dim, ...] | None = None
    kind: str = "tensor"  # tensor | sequence | optional | map | sparse_tensor | unknown
    type_proto: onnx.TypeProto | None = None

    @property
    def dtype(self) -> np.dtype | None:
        return np_dtype(self.elem_type)

    @property
    def static_shape(self) -> tuple[int, ...] | None:
        """The shape when every dimension is a known integer, else None."""
        shape = self.shape
        if shape is None:
            return None
        for d in shape:
            if not isinstance(d, int):
                return None
        return shape if type(shape) is tuple else tuple(shape)  # type: ignore[return-value]

    @property
    def nbytes(self) -> int | None:
        s, dt = self.static_shape, self.dtype
        if s is None or dt is None:
            return None
        return int(np.prod(s, dtype=np.int64)) * dt.itemsize

    def describe(self) -> str:
        dt = self.dtype.name if self.dtype is not None else self.kind
        shp = "?" if self.shape is None else "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"
        return f"{self.name}: {dt}{shp}"

    @classmethod
    def from_value_info(cls, vi: onnx.ValueInfoProto) -> TensorInfo:
        t = vi.type
        which = t.WhichOneof("value")
        if which == "tensor_type":
            tt = t.tensor_type
            shape = None
            if tt.HasField("shape"):
                shape = tuple(
                    d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim
                )
            # the fields say all of a plain tensor type: a copy of it (1.2 KB each, in protobuf's own
            # arenas) is kept only where it carries denotations, for to_onnx to write back
            annotated = bool(t.denotation) or (tt.HasField("shape") and any(d.denotation for d in tt.shape.dim))
            return cls(sys.intern(vi.name), tt.elem_type, shape, "tensor", _own_copy(t) if annotated else None)
        kinds = {"sequence_type": "sequence", "optional_type": "optional", "map_type": "map",
                 "sparse_tensor_type": "sparse_tensor"}
        return cls(sys.intern(vi.name), 0, None, kinds.get(which or "", "unknown"), _own_copy(t))


def _own_copy(t: onnx.TypeProto) -> onnx.TypeProto:
    """A detached copy: a sub-message would keep the whole inferred ModelProto (weights too) alive."""
    own = onnx.TypeProto()
    own.CopyFrom(t)
    return own


@dataclass(slots=True)
class Node:
    """One ONNX node; ``attrs`` are Python values (subgraphs stay onnx.GraphProto here)."""

    name: str
    op_type: str
    domain: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, proto: onnx.NodeProto, name: str) -> Node:
        # protobuf decodes a new str at every read: interned, a value's name is one object in its
        # producer, its readers, its TensorInfo and the dicts keyed by it
        intern = sys.intern
        return cls(intern(name), intern(proto.op_type), proto.domain if proto.domain != "ai.onnx" else "",
                   [intern(x) for x in proto.input], [intern(x) for x in proto.output], node_attributes(proto))

    def to_proto(self) -> onnx.NodeProto:
        n = helper.make_node(self.op_type, self.inputs, self.outputs, name=self.name, domain=self.domain or None)
        for k, v in self.attrs.items():
            n.attribute.append(self._attribute(k, v))
        return n

    def _attribute(self, key: str, v: Any) -> onnx.AttributeProto:
        """``attrs[key]`` back as an AttributeProto: a tensor (a Constant's value) from its array, and
        an empty list with the type the operator's schema gives it (no element tells it)."""
        if isinstance(v, np.ndarray):
            return helper.make_attribute(key, numpy_helper.from_array(v))
        if isinstance(v, list) and v and all(isinstance(x, np.ndarray) for x in v):
            return helper.make_attribute(key, [numpy_helper.from_array(x) for x in v])
        if isinstance(v, list) and not v:
            try:
                kind = onnx.defs.get_schema(self.op_type, domain=self.domain).attributes[key].type
            except (onnx.defs.SchemaError, KeyError):
                kind = onnx.AttributeProto.INTS
            return helper.make_attribute(key, [], attr_type=kind)
        return helper.make_attribute(key, v)


def attribute_graphs(a: onnx.AttributeProto) -> list[onnx.GraphProto]:
    """The graphs an attribute holds: its one graph (If's branches, a Loop or Scan body) or its list."""
    return ([a.g] if a.HasField("g") else []) + list(a.graphs)


def graph_reads(g: onnx.GraphProto) -> set[str]:
    """The names a body (If/Loop/Scan graph) reads from outside itself, nested bodies included."""
    reads = {o.name for o in g.output}
    for n in g.node:
        reads.update(i for i in n.input if i)
        for a in n.attribute:
            for sg in attribute_graphs(a):
                reads |= graph_reads(sg)
    defined = {i.name for i in g.input} | {t.name for t in g.initializer} | {
        t.values.name for t in g.sparse_initializer} | {o for n in g.node for o in n.output if o}
    return reads - defined


def rename_reads(node: Node, names: dict[str, str]) -> None:
    """``node`` reading each value ``old`` of ``names`` as ``names[old]``, its bodies too, in place."""
    node.inputs = [names.get(i, i) for i in node.inputs]
    for k, v in node.attrs.items():
        if isinstance(v, onnx.GraphProto):
            node.attrs[k] = renamed_reads(v, names)
        elif isinstance(v, list) and v and all(isinstance(g, onnx.GraphProto) for g in v):
            node.attrs[k] = [renamed_reads(g, names) for g in v]


def renamed_reads(g: onnx.GraphProto, names: dict[str, str]) -> onnx.GraphProto:
    """A copy of body ``g`` reading each outer value ``old`` of ``names`` as ``names[old]``, nested
    bodies included (``g`` itself when it reads none). ONNX forbids a body to define a name its
    scope already has, so every occurrence of an outer name is a read of the outer value."""
    if not graph_reads(g) & names.keys():
        return g
    copy = onnx.GraphProto()
    copy.CopyFrom(g)
    _rename_reads(copy, names)
    return copy


def _rename_reads(g: onnx.GraphProto, names: dict[str, str]) -> None:
    for n in g.node:
        for k, i in enumerate(n.input):
            if i in names:
                n.input[k] = names[i]
        for a in n.attribute:
            for sg in attribute_graphs(a):
                _rename_reads(sg, names)
    for o in g.output:
        if o.name in names:
            o.name = names[o.name]


def node_bodies(attrs: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, onnx.GraphProto]]:
    """The graph attributes among a node's (name, value) pairs (``Node.attrs.items()``): If's
    branches, a Loop or Scan body; a list of graphs gives one pair each."""
    for name, v in attrs:
        for g in v if isinstance(v, list) else [v]:
            if isinstance(g, onnx.GraphProto):
                yield name, g


def body_reads(node: Node) -> set[str]:
    """The outer names the node's graph attributes read implicitly (they keep those values alive)."""
    out: set[str] = set()
    for _, g in node_bodies(node.attrs.items()):
        out |= graph_reads(g)
    return out


def graph_copy(model: Any) -> Any:
    """A copy of a hal Graph, which ``hal.graph.load.load`` hands back as it is and the passes then change
    in place (a session optimises its graph; bisect adds every intermediate as an output); a path, bytes
    or proto as it is, since each load of one makes a graph of its own."""
    if isinstance(model, Graph):
        import copy

        return copy.deepcopy(model)
    return model


@dataclass(frozen=True)
class Dequantized:
    """What constant folding knows of a weight it made from a DequantizeLinear of integer codes
    (``hal.graph.passes.fold_constants``): the codes' type, the axis its scales run along (None: one
    scale for the whole tensor) and the block size (0: none). A plugin that runs such GEMMs on
    integer units (the GPUs' Q/DQ kernels, as TensorRT does) reads it here, where the folded weight
    alone is a float array like any other."""

    codes: np.dtype
    axis: int | None
    block_size: int = 0


@dataclass
class Graph:
    """A model as hal sees it after loading: ready for passes, capability and compile."""

    name: str
    nodes: list[Node]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    initializers: dict[str, Weight]
    values: dict[str, TensorInfo]
    opsets: dict[str, int]
    ir_version: int = 8
    metadata: dict[str, str] = field(default_factory=dict)
    model_hash: str = ""
    functions: list[onnx.FunctionProto] = field(default_factory=list)
    #: initializers the model also lists as inputs (IR 4 on): defaults a feed may replace (hal.overrides)
    overridable: list[TensorInfo] = field(default_factory=list)
    #: weights folded from a DequantizeLinear of integer codes (and views of them that keep their values)
    dequantized: dict[str, Dequantized] = field(default_factory=dict)

    def opset(self, domain: str = "") -> int:
        return self.opsets.get("" if domain == "ai.onnx" else domain, 1)

    @property
    def shape_only(self) -> bool:
        return any(isinstance(w, ShapeOnly) for w in self.initializers.values())

    def info(self, name: str) -> TensorInfo | None:
        return self.values.get(name)

    def static_shape(self, name: str) -> tuple[int, ...] | None:
        """A weight's shape, or a value's when shape inference knows every dimension; else None."""
        w = self.initializers.get(name)
        if w is not None:
            return tuple(w.shape)
        info = self.values.get(name)
        return info.static_shape if info is not None else None

    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs if o}

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = defaultdict(list)
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    out[i].append(n)
        return out

    def weight_bytes(self) -> int:
        return sum(int(w.nbytes) for w in self.initializers.values())

    def subgraph(self, node_names: Iterable[str], name: str | None = None) -> Graph:
        """The nodes named (kept in order) as a graph of their own: inputs are what they read from
        outside (weights travel along), outputs what the rest of the graph or the model reads."""
        return self.subgraphs([(name or f"{self.name}/part", node_names)])[0]

    def subgraphs(self, parts: Sequence[tuple[str, Iterable[str]]]) -> list[Graph]:
        """``subgraph`` of each (graph name, node names) part, from one pass over the graph: cutting
        a graph into many parts (pipeline stages) costs about what cutting out one does."""
        member: dict[str, tuple[int, ...]] = {}
        for pi, (_, names) in enumerate(parts):
            for nm in names:
                m = member.get(nm, ())
                if not m or m[-1] != pi:
                    member[nm] = (*m, pi)
        reads = self.reads()
        outside = (-1,)  # a reader in no part
        readers: dict[str, set[tuple[int, ...]]] = {}  # value -> the parts of the nodes that read it
        by_part: list[list[tuple[Node, list[str]]]] = [[] for _ in parts]
        for n, rd in zip(self.nodes, reads):
            m = member.get(n.name, outside)
            for pi in m:
                if pi >= 0:
                    by_part[pi].append((n, rd))
            for i in rd:
                if i:
                    readers.setdefault(i, set()).add(m)
        model_outputs = {o.name for o in self.outputs}
        out = []
        for pi, ((gname, _), members) in enumerate(zip(parts, by_part)):
            nodes = [n for n, _ in members]
            produced = {o for n in nodes for o in n.outputs if o}
            inputs, inits, seen = [], {}, set()
            for _, rd in members:
                for i in rd:
                    if not i or i in produced or i in seen:
                        continue
                    seen.add(i)
                    if i in self.initializers:
                        inits[i] = self.initializers[i]
                    else:
                        inputs.append(self.values.get(i) or TensorInfo(i))
            outputs = [self.values.get(o) or TensorInfo(o) for n in nodes for o in n.outputs
                       if o and (o in model_outputs or any(pi not in m for m in readers.get(o, ())))]
            out.append(Graph(gname, nodes, inputs, outputs, inits, self.values, self.opsets, self.ir_version,
                             self.metadata, self.model_hash, self.functions,
                             dequantized={k: d for k, d in self.dequantized.items() if k in inits}))
        return out

    def reads(self) -> list[list[str]]:
        """What each node reads: its inputs, then (sorted) the outer values its If/Loop/Scan bodies read
        by name that are not among its inputs."""
        bodies = {id(n): body_reads(n) for n in self.nodes if next(node_bodies(n.attrs.items()), None)}
        outer: set[str] = set()
        if any(bodies.values()):
            outer = {o for n in self.nodes for o in n.outputs if o} | set(self.initializers) | {
                i.name for i in self.inputs}
        return [[*n.inputs, *sorted((bodies[id(n)] & outer) - set(n.inputs))] if id(n) in bodies else n.inputs
                for n in self.nodes]

    def to_onnx(self) -> onnx.ModelProto:
        """Back to a ModelProto (shape-only weights are declared as inputs, as the zoo does)."""
        from onnx import numpy_helper

        inits, shape_only_inputs = [], []
        for k, w in self.initializers.items():
            if isinstance(w, ShapeOnly):
                shape_only_inputs.append(helper.make_tensor_value_info(
                    k, helper.np_dtype_to_tensor_dtype(w.dtype), list(w.shape)))
            else:
                inits.append(numpy_helper.from_array(np.asarray(w), k))

        def vi(t: TensorInfo) -> onnx.ValueInfoProto:
            if t.type_proto is not None:
                v = onnx.ValueInfoProto()
                v.name = t.name
                v.type.CopyFrom(t.type_proto)
                return v
            return helper.make_tensor_value_info(t.name, t.elem_type, t.shape)

        # before IR version 4 every initializer must also be a graph input (the light zoo is IR 3)
        declared = {i.name for i in self.inputs}
        init_inputs = [helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in inits
                       if self.ir_version < 4 and t.name not in declared]
        g = helper.make_graph([n.to_proto() for n in self.nodes], self.name,
                              [vi(t) for t in self.inputs] + shape_only_inputs + init_inputs,
                              [vi(t) for t in self.outputs], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in self.opsets.items()],
                              ir_version=self.ir_version)
        m.functions.extend(self.functions)
        meta = dict(self.metadata)
        if shape_only_inputs:
            meta[SHAPE_ONLY_KEY] = ",".join(v.name for v in shape_only_inputs)
        for k, v in meta.items():
            m.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
        return m


def weights_by_shape(model: onnx.ModelProto, which: Callable[[onnx.TensorProto], bool]) -> onnx.ModelProto:
    """A copy of ``model`` whose initializers ``which`` picks are declared by shape only (graph inputs
    listed under SHAPE_ONLY_KEY, as a model whose weights are not at hand is): what compiles and
    estimates see without data."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g, names, keep = m.graph, [], []
    for init in g.initializer:
        if which(init):
            g.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
            names.append(init.name)
        else:
            keep.append(init)
    del g.initializer[:]
    g.initializer.extend(keep)
    m.metadata_props.append(onnx.StringStringEntryProto(key=SHAPE_ONLY_KEY, value=",".join(names)))
    return m

