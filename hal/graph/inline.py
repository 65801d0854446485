"""Model-local functions expanded into their callers' graphs, as onnxruntime expands them when it
loads a model: onnx's inliner does the work, after three things it does not do itself. It drops a
function's default attribute values where a call leaves the attribute out (``_with_default_attributes``
sets them at each call first); it silently leaves a call in place when the function imports an opset
the model imports at another version, even one no node of the function uses (``_with_model_opsets``
reconciles them first, and the ONNX domain's body is converted to the model's version); and a function
that calls another more than once multiplies the graph at every level, in C++ that no timeout can
interrupt (``_inlined_size`` counts the expansion first, and ``MAX_INLINED_NODES`` bounds it)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import onnx
import onnx.defs
import onnx.helper
import onnx.inliner

from hal.errors import ModelError
from hal.graph.ir import attribute_graphs

#: the most nodes expanding a model's local functions may make: a function that calls another twice
#: doubles the graph at every level, and onnx's inliner and inference, in C++ that no timeout can
#: interrupt, take about 4 s for this many; a plain graph this large is some 25 times the largest
#: exported transformer here (decoder-24l, 10,193 nodes)
MAX_INLINED_NODES = 250_000


def inline_functions(proto: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """The model with each call of a model-local function replaced by the function's body (onnx's
    inliner, recursively, in subgraphs too), as onnxruntime expands them when it loads a model: the
    TorchScript exporter's ``export_modules_as_functions`` and onnxscript write such models. ``proto``
    itself when it defines no function; a body the inliner cannot expand is a ModelError, and so is an
    expansion past MAX_INLINED_NODES (counted before the inliner runs)."""
    if not proto.functions:
        return proto
    size = _inlined_size(proto, where)
    if size > MAX_INLINED_NODES:
        raise ModelError(f"expanding its model-local functions would make more than {MAX_INLINED_NODES:,} nodes "
                         "(a function calling another more than once multiplies its nodes at every level)",
                         where=where, hint="if the model really is that large, expand its functions ahead of time "
                                           "with onnx.inliner.inline_local_functions and load the result")
    try:
        out = onnx.inliner.inline_local_functions(_with_model_opsets(_with_default_attributes(proto)),
                                                  convert_version=True)
    except Exception as e:  # the inliner's C++ raises plain exceptions of several kinds
        raise ModelError(f"its model-local functions cannot be expanded: {str(e).strip() or repr(e)}",
                         where=where, hint="check each function's inputs, outputs and attributes against "
                                           "the nodes that call it, and its opset imports against the "
                                           "model's") from None
    functions = {(f.domain, f.name): f for f in proto.functions}
    for nodes in _node_lists([out.graph.node]):
        for n in nodes:
            f = functions.get((n.domain, n.op_type))
            if f is not None:  # the inliner declined it: an opset of another version it cannot convert
                model = {o.domain or "ai.onnx": o.version for o in out.opset_import}
                own = ", ".join(f"{o.domain or 'ai.onnx'} {o.version} (the model: {model.get(o.domain or 'ai.onnx')})"
                                for o in f.opset_import if model.get(o.domain or "ai.onnx") != o.version)
                raise ModelError(f"model-local function {f.domain}::{f.name} imports {own}, and its body "
                                 "cannot be converted to the model's version", where=where,
                                 hint="export the function and the model against the same opsets")
    return out


def _with_default_attributes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model in which every call of a local function sets each attribute the function
    gives a default value (``attribute_proto``) and the call leaves out; ``proto`` itself when no
    function has one. onnx's inliner (1.23) drops such defaults, so that the attribute fell to the
    inner op's own default (LeakyRelu's 0.01 for a function's 0.25), where onnxruntime applies them.
    A call inside a function that passes on one of that function's attributes (``ref_attr_name``)
    sets it, so ``_inherit_defaults`` first covers the case where the outer call leaves it out."""
    if not any(len(f.attribute_proto) for f in proto.functions):
        return proto
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    _inherit_defaults(out)
    defaults = {(f.domain, f.name): list(f.attribute_proto) for f in out.functions if len(f.attribute_proto)}
    for nodes in _node_lists([out.graph.node, *(f.node for f in out.functions)]):
        for n in nodes:
            given = defaults.get((n.domain, n.op_type))
            if given:
                have = {a.name for a in n.attribute}
                n.attribute.extend(a for a in given if a.name not in have)
    return out


def _with_model_opsets(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model whose functions import only the domains their nodes use, at the model's
    versions where that is only a label: onnx's inliner leaves a call of a function whose imports
    differ from the model's in place (jax2onnx's functions import their own domain at 23, where the
    model imports it at 1, and call nothing in it). A domain the function uses that the model does
    not import is imported by the model at the function's version; one it imports at another version
    takes the model's where no op of it the function calls changed in between (``_same_ops``), and
    otherwise stays for the inliner to convert (the ONNX domain) or decline. ``proto`` itself when
    nothing differs."""
    model = {o.domain: o.version for o in proto.opset_import}
    local = {(f.domain, f.name) for f in proto.functions}
    added: list[tuple[str, int]] = []
    imports: dict[int, list[tuple[str, int]]] = {}  # function position -> the imports it keeps
    for i, f in enumerate(proto.functions):  # worked out on the model as given: a copy only if it changes
        used = {n.domain for nodes in _node_lists([f.node]) for n in nodes}
        kept = []
        for o in f.opset_import:
            if o.domain not in used:
                continue
            version = o.version
            if o.domain not in model:
                model[o.domain] = version
                added.append((o.domain, version))
            elif model[o.domain] != version and _same_ops(f, o.domain, version, model[o.domain], local):
                version = model[o.domain]
            kept.append((o.domain, version))
        if kept != [(o.domain, o.version) for o in f.opset_import]:
            imports[i] = kept
    if not added and not imports:
        return proto
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    out.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in added)
    for i, kept in imports.items():
        f = out.functions[i]
        del f.opset_import[:]
        f.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in kept)
    return out


def _same_ops(f: onnx.FunctionProto, domain: str, version: int, model_version: int,
              local: set[tuple[str, str]]) -> bool:
    """Whether every node of ``domain`` in ``f`` means the same at the model's version as at the
    function's: each is a call of a local function (which has no version) or an op whose schema has
    not changed between the two."""
    for nodes in _node_lists([f.node]):
        for n in nodes:
            if n.domain != domain or (n.domain, n.op_type) in local:
                continue
            try:
                since = {onnx.defs.get_schema(n.op_type, v, domain).since_version for v in (version, model_version)}
            except onnx.defs.SchemaError:
                return False
            if len(since) != 1:
                return False
    return True


def _node_lists(roots: list) -> Iterator:
    """Each node list in ``roots`` and in every subgraph under them."""
    stack = list(roots)
    while stack:
        nodes = stack.pop()
        yield nodes
        for n in nodes:
            for a in n.attribute:
                stack.extend(g.node for g in attribute_graphs(a))


def _inherit_defaults(model: onnx.ModelProto) -> None:
    """Give a function attribute with no default of its own the default of the calls that use it,
    where calls of local functions are its only uses and they agree: G calls F with F's alpha taken
    from G's b, and a call of G that leaves b out must give F its own default alpha, as onnxruntime
    does, where the inliner would drop alpha altogether. Repeated until nothing changes, for chains."""
    functions = {(f.domain, f.name): f for f in model.functions}
    changed = True
    while changed:
        changed = False
        for f in model.functions:
            uses: dict[str, list[onnx.AttributeProto | None]] = {}
            for nodes in _node_lists([f.node]):
                for n in nodes:
                    callee = functions.get((n.domain, n.op_type))
                    for a in n.attribute:
                        if a.ref_attr_name:
                            default = next((d for d in callee.attribute_proto if d.name == a.name), None) \
                                if callee is not None else None
                            uses.setdefault(a.ref_attr_name, []).append(default)
            have = {d.name for d in f.attribute_proto}
            for name, defaults in uses.items():
                if name in have or any(d is None for d in defaults):
                    continue
                renamed = [onnx.AttributeProto() for _ in defaults]
                for r, d in zip(renamed, defaults):
                    r.CopyFrom(d)
                    r.name = name
                if len({r.SerializeToString() for r in renamed}) == 1:
                    f.attribute_proto.append(renamed[0])
                    f.attribute[:] = [x for x in f.attribute if x != name]
                    changed = True


def _inlined_size(proto: onnx.ModelProto, where: str) -> int:
    """How many nodes the main graph (subgraphs included) has once every local function call is
    expanded, counted up to MAX_INLINED_NODES + 1; a function that calls itself is a ModelError."""
    cap = MAX_INLINED_NODES + 1
    functions = {(f.domain, f.name): f for f in proto.functions}

    def own_nodes(nodes: Iterable[onnx.NodeProto]) -> tuple[int, list[tuple[str, str]]]:
        """(nodes that are no call, the local functions called, once per call), subgraphs included."""
        plain, calls = 0, []
        for level in _node_lists([nodes]):
            for n in level:
                if (n.domain, n.op_type) in functions:
                    calls.append((n.domain, n.op_type))
                else:
                    plain += 1
        return plain, calls

    body = {key: own_nodes(f.node) for key, f in functions.items()}
    sizes: dict[tuple[str, str], int] = {}
    for root in functions:  # iterative post-order: a deep chain of functions needs no Python recursion
        path, todo = set(), [(root, False)]
        while todo:
            key, done = todo.pop()
            if done:
                path.discard(key)
                plain, calls = body[key]
                sizes[key] = min(cap, plain + sum(sizes[c] for c in calls))
            elif key not in sizes:
                if key in path:
                    raise ModelError(f"model-local function {key[0]}::{key[1]} calls itself", where=where,
                                     hint="model-local functions must not be recursive")
                path.add(key)
                todo.append((key, True))
                todo.extend((c, False) for c in set(body[key][1]) if c not in sizes)
    plain, calls = own_nodes(proto.graph.node)
    return min(cap, plain + sum(sizes[c] for c in calls))


__all__ = ["MAX_INLINED_NODES", "inline_functions"]
