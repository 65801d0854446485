"""What the differential sweep's families draw with: ``Case``, a small model under construction from a
seeded generator (nodes, weights, fed inputs and their values), and the draws they share."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DTYPES = (np.float32, np.float32, np.float64, np.float16)
class Case:
    """A model under construction: nodes, weights (initializers), fed inputs and their values."""

    def __init__(self, rng: np.random.Generator, dtype: type):
        self.rng, self.dtype = rng, np.dtype(dtype)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.feeds: dict[str, Any] = {}  # (arrays; a map input's feed is a dict)
        self.opset = 17
        #: other domains' opsets (``{"com.microsoft": 1}``) and outputs' element types where onnx's
        #: inference knows none (an op outside its schemas), or their whole types (a sequence of maps)
        self.domains: dict[str, int] = {}
        self.declared: dict[str, int | onnx.TypeProto] = {}
        self.proto: onnx.ModelProto | None = None
        self._n = 0

    def _name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}{self._n}"

    def feed(self, shape: list[int], lo: float = -2.0, hi: float = 2.0, value: np.ndarray | None = None) -> str:
        a = self.rng.uniform(lo, hi, shape).astype(self.dtype) if value is None else value
        name = self._name("x")
        self.inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape)))
        self.feeds[name] = a
        return name

    def feed_map(self, key: int, value: int, items: dict[Any, Any]) -> str:
        """A fed map of ``key`` to scalar ``value`` elements (``TensorProto`` types); ``items`` is its feed."""
        name = self._name("x")
        self.inputs.append(helper.make_value_info(name, helper.make_map_type_proto(
            key, helper.make_tensor_type_proto(value, []))))
        self.feeds[name] = items
        return name

    def weight(self, shape: list[int] | None = None, value: Any = None, scale: float = 0.5) -> str:
        """A weight: ``value`` as given (a scalar in the case's dtype when a float), else normal draws."""
        if value is None:
            a = (self.rng.standard_normal(shape) * scale).astype(self.dtype)
        elif isinstance(value, float):
            a = np.array(value, self.dtype)
        else:
            a = np.asarray(value)
        name = self._name("w")
        self.inits.append(numpy_helper.from_array(a, name))
        return name

    def ints(self, values: Any) -> str:
        return self.weight(value=np.asarray(values, np.int64))

    def op(self, op_type: str, inputs: list[str], outputs: int = 1, **attrs: Any) -> Any:
        names = [self._name(op_type) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, **attrs))
        return names[0] if outputs == 1 else names

    def model(self, outputs: list[str]) -> onnx.ModelProto:
        """The model, its outputs typed by onnx's inference (kept as ``proto``)."""
        typed = {o: t for o, t in self.declared.items() if isinstance(t, onnx.TypeProto)}
        graph = helper.make_graph(self.nodes, "case", self.inputs,
                                  [helper.make_value_info(o, typed[o]) if o in typed else
                                   helper.make_tensor_value_info(o, self.declared.get(o, TensorProto.UNDEFINED), None)
                                   for o in outputs], self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)]
                              + [helper.make_opsetid(d, v) for d, v in self.domains.items()])
        m.ir_version = 8 if self.opset < 21 else 10
        m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
        del m.graph.value_info[:]
        if any(o.type.tensor_type.elem_type == TensorProto.UNDEFINED and o.name not in typed for o in m.graph.output):
            raise ValueError("an output's type is not inferred")
        self.proto = m
        return m


def out_list(names: Any) -> list[str]:
    """A node's output names (``Case.op``'s answer) as a list, for one output or several."""
    return [names] if isinstance(names, str) else list(names)


def ri(rng: np.random.Generator, lo: int, hi: int) -> int:
    return int(rng.integers(lo, hi))


def dims(rng: np.random.Generator, rank: int, lo: int = 1, hi: int = 6) -> list[int]:
    return [ri(rng, lo, hi) for _ in range(rank)]


def activation(c: Case, x: str) -> str:
    k = ri(c.rng, 0, 6)
    if k == 0:
        return c.op("Relu", [x])
    if k == 1:
        return c.op("Tanh", [x])
    if k == 2:
        return c.op("Sigmoid", [x])
    if k == 3:  # torch's exported erf GELU
        e = c.op("Erf", [c.op("Div", [x, c.weight(value=1.4142135)])])
        return c.op("Mul", [c.op("Mul", [x, c.op("Add", [e, c.weight(value=1.0)])]), c.weight(value=0.5)])
    if k == 4:  # and its tanh approximation
        cube = c.op("Mul", [x, c.op("Mul", [x, x])])
        inner = c.op("Add", [x, c.op("Mul", [c.weight(value=0.044715), cube])])
        inner = c.op("Mul", [c.weight(value=0.7978846), inner])
        half = c.op("Mul", [x, c.op("Add", [c.weight(value=1.0), c.op("Tanh", [inner])])])
        return c.op("Mul", [c.weight(value=0.5), half])
    return c.op("LeakyRelu", [x], alpha=float(c.rng.uniform(0, 0.3)))


def conv_attrs(rng: np.random.Generator, kernel: list[int], group: int) -> dict[str, Any]:
    """A convolution's attributes: strides, and dilations with explicit pads or an auto_pad."""
    attrs: dict[str, Any] = {"kernel_shape": kernel, "strides": [ri(rng, 1, 3) for _ in kernel], "group": group}
    if rng.random() < 0.5:
        attrs["dilations"] = [ri(rng, 1, 3) for _ in kernel]
        attrs["pads"] = [ri(rng, 0, 3) for _ in range(2 * len(kernel))]
    else:
        attrs["auto_pad"] = str(rng.choice(["SAME_UPPER", "SAME_LOWER", "VALID"]))
    return attrs
