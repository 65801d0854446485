"""Shapes for onnxruntime's quantized contrib ops (``hal.kernels.contrib_quant``), which onnx's
shape inference does not know: each is inferred as the standard op that moves its data the same
way, so inference carries on past it instead of stopping there.

``shadowed(proto)`` is a copy of the model for inference only: a QLinearAdd reads as an Add of its
two operands, a QLinearConcat as a Concat of its inputs, QGemm as the integer product of its
(transposed) operands cast to its output type, the unary ops as Identity, the pools as a MaxPool over
the same windows or a ReduceMax over the image (both take 8-bit integers); the inferred value_info then belongs
to the real model, whose node names and outputs are the same. The helper values it adds carry a
prefix and are dropped (``restored``).
"""

from __future__ import annotations

from collections.abc import Callable

import onnx
from onnx import TensorProto, helper

DOMAIN = "com.microsoft"
#: the prefix of the values a shadow adds (the integer products' operands and results)
PREFIX = "__hal_shadow_"
_UNARY = frozenset({"QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax"})
_POOL_ATTRS = ("auto_pad", "ceil_mode", "kernel_shape", "pads", "strides")


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _reduce_max(x: str, out: str, rank: int | None, opset: int) -> list[onnx.NodeProto] | None:
    """A global pool's stand-in: the maximum over the spatial axes, kept (8-bit types allowed)."""
    if rank is None or rank < 3:
        return None
    axes = list(range(2, rank))
    if opset < 18:
        return [helper.make_node("ReduceMax", [x], [out], axes=axes, keepdims=1)]
    name = PREFIX + out + "_axes"
    axes_tensor = helper.make_tensor(name, TensorProto.INT64, [len(axes)], axes)
    return [helper.make_node("Constant", [], [name], value=axes_tensor),
            helper.make_node("ReduceMax", [x, name], [out], keepdims=1)]


def _shadow(node: onnx.NodeProto, types: dict[str, int], ranks: dict[str, int], opset: int
            ) -> list[onnx.NodeProto] | None:
    """The standard nodes that stand for one contrib node in inference (None: none that fits)."""
    op, ins, out, a = node.op_type, list(node.input), node.output[0], _attrs(node)
    if op in ("QLinearAdd", "QLinearMul") and len(ins) >= 4:
        return [helper.make_node("Add", [ins[0], ins[3]], [out])]
    if op in _UNARY and ins:
        return [helper.make_node("Identity", [ins[0]], [out])]
    if op == "QLinearConcat" and len(ins) >= 5:
        return [helper.make_node("Concat", ins[2::3], [out], axis=a.get("axis", 0))]
    if op == "QLinearGlobalAveragePool" and ins and not a.get("channels_last", 0):
        return _reduce_max(ins[0], out, ranks.get(ins[0]), opset)
    if op == "QLinearAveragePool" and ins and not a.get("channels_last", 0) and "kernel_shape" in a:
        kept = {k: v.decode() if isinstance(v, bytes) else v for k, v in a.items() if k in _POOL_ATTRS}
        return [helper.make_node("MaxPool", [ins[0]], [out], **kept)]
    if op in ("MatMulIntegerToFloat", "DynamicQuantizeMatMul") and len(ins) >= 2:
        a_in = ins[0]
        nodes = []
        if op == "DynamicQuantizeMatMul":  # A is float: its codes' shape is its shape
            nodes.append(helper.make_node("Cast", [a_in], [PREFIX + out + "_a"], to=TensorProto.UINT8))
            a_in = PREFIX + out + "_a"
        return [*nodes, helper.make_node("MatMulInteger", [a_in, ins[1]], [PREFIX + out + "_ab"]),
                helper.make_node("Cast", [PREFIX + out + "_ab"], [out], to=TensorProto.FLOAT)]
    if op == "QGemm" and len(ins) >= 6:
        a_in, b_in = ins[0], ins[3]
        nodes = []
        if a.get("transA", 0):
            nodes.append(helper.make_node("Transpose", [a_in], [PREFIX + out + "_a"]))
            a_in = PREFIX + out + "_a"
        if a.get("transB", 0):
            nodes.append(helper.make_node("Transpose", [b_in], [PREFIX + out + "_b"]))
            b_in = PREFIX + out + "_b"
        # quantized when y_scale is given (to y_zero_point's type, else A's, as the kernel), else float
        quantized = len(ins) > 7 and bool(ins[7])
        zero = ins[8] if len(ins) > 8 and ins[8] else ins[0]
        to = types.get(zero, TensorProto.UINT8) if quantized else TensorProto.FLOAT
        nodes += [helper.make_node("MatMulInteger", [a_in, b_in], [PREFIX + out + "_ab"]),
                  helper.make_node("Cast", [PREFIX + out + "_ab"], [out], to=to)]
        return nodes
    return None


def shadowed(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, int] | None:
    """A copy of ``proto`` (inferred already: its value_info gives the types and ranks the stand-ins
    need) whose contrib nodes are their standard stand-ins, and how many stood in; None when none
    can. A stand-in that needs its input's rank (a global pool) waits for an inference that knows it."""
    graph = proto.graph
    if not any(n.domain == DOMAIN for n in graph.node):
        return None
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    types = {t.name: t.data_type for t in graph.initializer}
    ranks = {t.name: len(t.dims) for t in graph.initializer}
    for v in list(graph.input) + list(graph.value_info):
        types[v.name] = v.type.tensor_type.elem_type
        if v.type.tensor_type.HasField("shape"):
            ranks[v.name] = len(v.type.tensor_type.shape.dim)
    nodes, count = [], 0
    for n in graph.node:
        stand_in = _shadow(n, types, ranks, opset) if n.domain == DOMAIN else None
        if stand_in is None:
            nodes.append(n)
        else:
            nodes.extend(stand_in)
            count += 1
    if not count:
        return None
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    return copy, count


def infer(inferred: onnx.ModelProto, run: Callable[[onnx.ModelProto], onnx.ModelProto]) -> onnx.ModelProto:
    """``inferred`` inferred again (``run``) through its contrib nodes' stand-ins, as long as each
    pass lets more of them stand in (a rank a global pool needs comes from the pass before)."""
    done = 0
    while (shadow := shadowed(inferred)) is not None and shadow[1] > done:
        inferred, done = restored(run(shadow[0]), inferred), shadow[1]
    return inferred


def restored(inferred: onnx.ModelProto, proto: onnx.ModelProto) -> onnx.ModelProto:
    """``inferred`` (a shadow's inference) with ``proto``'s own nodes back, the helper values gone."""
    del inferred.graph.node[:]
    inferred.graph.node.extend(proto.graph.node)
    kept = [v for v in inferred.graph.value_info if not v.name.startswith(PREFIX)]
    del inferred.graph.value_info[:]
    inferred.graph.value_info.extend(kept)
    return inferred
