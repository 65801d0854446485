"""ONNX attributes to the Python values kernels receive (see hal.kernels.registry)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import onnx
from onnx import AttributeProto, numpy_helper

A = AttributeProto


def attribute_value(attr: AttributeProto, graph_factory: Callable[[onnx.GraphProto], Any] | None = None
                    ) -> Any:
    """One attribute as int, float, str, list, ndarray or (through ``graph_factory``) a subgraph."""
    t = attr.type
    if t == A.INT:
        return int(attr.i)
    if t == A.FLOAT:
        return float(attr.f)
    if t == A.STRING:
        return attr.s.decode("utf-8", errors="replace")
    if t == A.INTS:
        return [int(v) for v in attr.ints]
    if t == A.FLOATS:
        return [float(v) for v in attr.floats]
    if t == A.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in attr.strings]
    if t == A.TENSOR:
        return numpy_helper.to_array(attr.t)
    if t == A.TENSORS:
        return [numpy_helper.to_array(x) for x in attr.tensors]
    if t == A.GRAPH:
        return graph_factory(attr.g) if graph_factory else attr.g
    if t == A.GRAPHS:
        return [graph_factory(g) if graph_factory else g for g in attr.graphs]
    if t == A.SPARSE_TENSOR:
        return attr.sparse_tensor
    if t == A.TYPE_PROTO:
        return attr.tp
    if t == A.TYPE_PROTOS:
        return list(attr.type_protos)
    raise ValueError(f"attribute {attr.name!r} has unknown type {t}")


def node_attributes(node: onnx.NodeProto, graph_factory: Callable[[onnx.GraphProto], Any] | None = None
                    ) -> dict[str, Any]:
    """All attributes a node sets, by name (attributes it leaves unset are absent)."""
    return {a.name: attribute_value(a, graph_factory) for a in node.attribute}
