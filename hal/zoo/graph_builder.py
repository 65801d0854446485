"""A small ONNX graph writer shared by the zoo's model builders.

It keeps node and value names unique, deduplicates constants (one initializer per
distinct value, so a 126-layer model does not carry 126 copies of a reshape shape),
and records shape-only weights: graph inputs that stand for weights which are never
materialised (see ``SHAPE_ONLY_KEY``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hal.graph.ir import SHAPE_ONLY_KEY

OPSET = 17
IR_VERSION = 8


class GraphBuilder:
    """Accumulates nodes, inputs, outputs and initializers; ``model()`` returns the ModelProto."""

    def __init__(self, graph_name: str):
        self.graph_name = graph_name
        self.nodes: list[onnx.NodeProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.shape_only_weights: list[str] = []
        self._consts: dict[tuple[str, tuple[int, ...], bytes], str] = {}
        self._used: set[str] = set()

    def _unique(self, name: str) -> str:
        if name not in self._used:
            self._used.add(name)
            return name
        i = 1
        while f"{name}_{i}" in self._used:
            i += 1
        self._used.add(f"{name}_{i}")
        return f"{name}_{i}"

    def input(self, name: str, elem_type: int, shape: Sequence[int]) -> str:
        """Declare a graph input (a feed)."""
        name = self._unique(name)
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def shape_only_weight(self, name: str, elem_type: int, shape: Sequence[int]) -> str:
        """Declare a weight by shape and dtype only: a graph input listed under SHAPE_ONLY_KEY."""
        name = self.input(name, elem_type, shape)
        self.shape_only_weights.append(name)
        return name

    def weight(self, name: str, array: np.ndarray) -> str:
        """Add a weight with data, as an initializer."""
        name = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, value: np.ndarray | Sequence[int] | float, dtype: np.dtype | type | None = None) -> str:
        """A small constant (shape, axes, scale, eps) as an initializer, shared by equal values."""
        array = np.asarray(value, dtype=dtype)
        if array.dtype == np.float64 and dtype is None:
            array = array.astype(np.float32)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.weight(f"const_{len(self._consts)}", array)
        return self._consts[key]

    def op(self, op_type: str, inputs: Sequence[str], *, name: str, out: str | None = None,
           n_out: int = 1, **attrs) -> str:
        """Append one node; returns its output name (``n_out > 1`` → use ``op_multi``)."""
        return self.op_multi(op_type, inputs, name=name, outs=[out] if out else None, n_out=n_out,
                             **attrs)[0]

    def op_multi(self, op_type: str, inputs: Sequence[str], *, name: str,
                 outs: Sequence[str] | None = None, n_out: int = 1, **attrs) -> list[str]:
        """Append one node with several outputs; returns the output names."""
        node_name = self._unique(name)
        if outs is None:
            outs = [self._unique(f"{node_name}_output_{i}") for i in range(n_out)]
        else:
            outs = [self._unique(o) for o in outs]
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outs), name=node_name, **attrs))
        return list(outs)

    def output(self, name: str, elem_type: int, shape: Sequence[int]) -> None:
        """Declare a graph output (the value ``name`` must already be produced by a node)."""
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))

    def model(self, metadata: dict[str, str], doc: str = "") -> onnx.ModelProto:
        """The finished ModelProto (opset 17, IR 8) with ``metadata`` as metadata_props."""
        weights = set(self.shape_only_weights)
        # feeds first, then the shape-only weights; each group in declaration order
        inputs = sorted(self.inputs, key=lambda v: v.name in weights)
        graph = helper.make_graph(self.nodes, self.graph_name, inputs, self.outputs,
                                  initializer=self.initializers, doc_string=doc)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  ir_version=IR_VERSION, producer_name="hal.zoo")
        props = dict(metadata)
        if self.shape_only_weights:
            props[SHAPE_ONLY_KEY] = ",".join(self.shape_only_weights)
        helper.set_model_props(model, props)
        return model


FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16
INT64 = TensorProto.INT64
BOOL = TensorProto.BOOL
