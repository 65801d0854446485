"""Free dimension overrides: a model's open input dimensions (``dim_param`` names such as ``batch``,
or ones with no name) bound to sizes before it is loaded, as onnxruntime's
``SessionOptions.add_free_dimension_override_by_name`` does. Shape inference then carries the sizes
through the graph, so a target compiles, and its cost model prices, the shapes that will run: left
open, a dimension is priced as 1 (``hal.perf.opcount.shape``) whatever size is fed later."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import onnx

from hal.errors import InputError
from hal.feeds import as_int

#: the name that binds every open dimension no other entry names (as ``hal.feeds.random_feeds`` reads it)
EVERY_OTHER = "*"


def checked_dims(dims: Any, where: str = "dims") -> dict[str, int] | None:
    """``dims`` as a dict of name -> size (None or empty: None); an InputError for anything else."""
    if dims is None:
        return None
    if not isinstance(dims, Mapping):
        raise InputError(f"dims must be a dict of dimension name -> size, not {type(dims).__name__}", where=where,
                         hint="e.g. dims={'batch': 8}; '*' binds every open dimension not named")
    for k in dims:
        if not isinstance(k, str) or not k:
            raise InputError(f"a dimension name must be a non-empty string, not {k!r}", where=where)
    return {k: as_int(v, f"dims[{k!r}]", 0, where) for k, v in dims.items()} or None


def open_dims(graph: onnx.GraphProto) -> list[tuple[str, int, str | None]]:
    """The open dimensions of the graph's inputs (initializers excluded): (input, axis, its name or None)."""
    weights = {t.name for t in graph.initializer}
    out = []
    for vi in graph.input:
        if vi.name in weights or not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        for axis, d in enumerate(vi.type.tensor_type.shape.dim):
            if not d.HasField("dim_value"):
                out.append((vi.name, axis, d.dim_param or None))
    return out


def bind_dims(proto: onnx.ModelProto, dims: Mapping[str, int], where: str) -> list[tuple[str, int, str | None, int]]:
    """Set the graph inputs' open dimensions that ``dims`` names (``*``: every other) to those sizes,
    in ``proto`` itself. A name no open dimension has is an InputError listing the ones there are.
    Returns what it bound: (input, axis, the dimension's name or None, size), for ``unbind_dims``."""
    found = open_dims(proto.graph)
    names = {n for _, _, n in found if n}
    if unknown := sorted(k for k in dims if k != EVERY_OTHER and k not in names):
        shown = ", ".join(f"{n or '?'} ({i}[{a}])" for i, a, n in found) or "none: every input's shape is fixed"
        raise InputError(f"no input has a dimension named {', '.join(map(repr, unknown))}", where=where,
                         hint=f"the inputs' open dimensions: {shown}; '*' binds every one not named")
    every = dims.get(EVERY_OTHER)
    wanted = {(i, a): dims.get(n, every) if n else every for i, a, n in found}
    named = {(i, a): n for i, a, n in found}
    bound = []
    for vi in proto.graph.input:
        for axis, d in enumerate(vi.type.tensor_type.shape.dim if vi.type.HasField("tensor_type") else ()):
            size = wanted.get((vi.name, axis))
            if size is not None:
                d.dim_value = size  # (a oneof: the name goes)
                bound.append((vi.name, axis, named[(vi.name, axis)], size))
    return bound


def unbind_dims(proto: onnx.ModelProto, bound: list[tuple[str, int, str | None, int]]) -> None:
    """Open again, in ``proto`` itself, the dimensions ``bind_dims`` bound (its return value)."""
    opened = {(i, a): n for i, a, n, _ in bound}
    for vi in proto.graph.input:
        for axis, d in enumerate(vi.type.tensor_type.shape.dim if vi.type.HasField("tensor_type") else ()):
            if (vi.name, axis) in opened:
                name = opened[(vi.name, axis)]
                if name:
                    d.dim_param = name
                else:
                    d.ClearField("dim_value")


__all__ = ["EVERY_OTHER", "bind_dims", "checked_dims", "open_dims", "unbind_dims"]
