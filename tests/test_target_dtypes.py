"""``TargetSpec.dtypes``: the element types a target's hardware has. ``kernel_capability`` given the spec
refuses a node of another type with the value and the types in its reason; a spec without dtypes takes
every type; an unknown name is refused when the spec is built, listing the names hal knows."""

from __future__ import annotations

import pydantic
import pytest
from onnx import TensorProto, helper

from hal.graph.load import load
from hal.specs import TargetSpec, dtype_names
from hal.target import kernel_capability


def _graph():
    f32, f64 = TensorProto.FLOAT, TensorProto.DOUBLE
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Cast", ["r"], ["r64"], name="up", to=f64),
             helper.make_node("Sqrt", ["r64"], ["s64"], name="sqrt"),
             helper.make_node("Cast", ["s64"], ["y"], name="down", to=f32)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f32, [2])],
                          [helper.make_tensor_value_info("y", f32, [2])])
    return load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_a_spec_with_dtypes_refuses_the_nodes_of_other_types():
    spec = TargetSpec(name="npu", vendor="v", kind="other", dtypes=["float32", "float16"])
    cap = kernel_capability(_graph(), spec)
    assert cap.supported_nodes() == {"relu"}
    reasons = {r.node: r.reason for r in cap.refused}
    assert set(reasons) == {"up", "sqrt", "down"}
    assert reasons["sqrt"] == "float64 value 'r64': target 'npu' computes in float32, float16 only (its spec's dtypes)"


@pytest.mark.parametrize("target", ["npu", TargetSpec(name="npu", vendor="v", kind="other")])
def test_a_name_or_a_spec_without_dtypes_takes_every_type(target):
    assert kernel_capability(_graph(), target).supported_nodes() == {"relu", "up", "sqrt", "down"}


def test_an_unknown_dtype_name_is_refused_with_the_known_ones():
    with pytest.raises(pydantic.ValidationError, match="unknown dtype.*'fp64'.*float64, uint32"):
        TargetSpec(name="npu", vendor="v", kind="other", dtypes=["float32", "fp64"])
    assert {"float32", "bfloat16", "float8_e4m3fn", "int4", "string", "bool"} <= set(dtype_names())
