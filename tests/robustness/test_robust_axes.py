"""Axis arguments outside their input's rank, and windows of another rank than the input's, are the
model's error on every target. numpy had not always said so: a modulo wrapped a Reduce or ArgMax axis
onto some axis, a 0-d CumSum grew an axis, and an AveragePool with no kernel_shape over a rank-2 input
(what torch's TorchScript exporter writes for an unbatched adaptive_avg_pool1d) returned its input.
onnxruntime refuses each of these models (its shape inference, or its kernel at run time)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from _robust_models import I64, TARGETS, F, model, session, vi
from onnx import helper

import hal


def _with_ints(node: onnx.NodeProto, name: str, value: list[int]) -> onnx.NodeProto:
    node.attribute.append(helper.make_attribute(name, value, attr_type=onnx.AttributeProto.INTS))
    return node


CASES = {
    "ReduceSum-axes-5": ([helper.make_node("ReduceSum", ["x"], ["y"], axes=[5])], [2, 3], 11,
                         "axis 5 is out of range for a rank-2 input"),
    "ReduceMax-scalar": ([helper.make_node("ReduceMax", ["x"], ["y"], axes=[0])], [], 13,
                         "axis 0 given for a rank-0 input"),
    "ArgMax-axis-5": ([helper.make_node("ArgMax", ["x"], ["y"], axis=5)], [2, 3], 13,
                      "axis 5 is out of range"),
    "ArgMin-axis--3": ([helper.make_node("ArgMin", ["x"], ["y"], axis=-3)], [2, 3], 13,
                       "axis -3 is out of range"),
    "CumSum-scalar": ([helper.make_node("Constant", [], ["a"], value_int=0),
                       helper.make_node("CumSum", ["x", "a"], ["y"])], [], 14, "rank-0 input, which has no axes"),
    "LayerNormalization-axis-2": ([helper.make_node("LayerNormalization", ["x", "s"], ["y"], axis=2)], [2, 3], 17,
                                  "axis 2 is out of range"),
    "Softmax-11-axis-7": ([helper.make_node("Softmax", ["x"], ["y"], axis=7)], [2, 3], 11, "axis 7 is out of range"),
    "Flatten-axis-3": ([helper.make_node("Flatten", ["x"], ["y"], axis=3)], [2, 3], 13, "axis 3 is out of range"),
    "AveragePool-rank-2": ([_with_ints(helper.make_node("AveragePool", ["x"], ["y"]), "kernel_shape", [])], [8, 8], 17,
                           "the input must be N x C x D1"),
    "MaxPool-window-1d-over-2d": ([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2])], [1, 1, 4, 4], 17,
                                  "a 1-d window over an input with 2 spatial axes"),
}


def _case(name: str):
    nodes, shape, opset, said = CASES[name]
    if nodes[-1].op_type == "LayerNormalization":
        nodes = [helper.make_node("Constant", [], ["s"], value_floats=[1.0, 1.0, 1.0]), *nodes]
    out_type = I64 if nodes[-1].op_type.startswith("Arg") else F
    return model(nodes, [vi("x", F, shape)], [vi("y", out_type, None)], opset=opset), shape, said


@pytest.mark.parametrize("name", sorted(CASES))
def test_onnxruntime_refuses_each_case_too(name):
    m, shape, _ = _case(name)
    x = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    with pytest.raises(Exception):  # noqa: B017 - at load (shape inference) or at run (its kernel)
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_an_axis_outside_the_inputs_rank_is_refused_naming_it(name, target):
    m, shape, said = _case(name)
    x = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    with pytest.raises(hal.HalError, match=said) as e:
        session(m, target).run(None, {"x": x})
    assert isinstance(e.value, hal.RunError)  # the kernel's, naming the node (a refused node falls back)


@pytest.mark.skipif("lpu" not in TARGETS, reason="the lpu target is not installed")
def test_the_lpu_refusing_such_a_node_at_compile_time_gives_the_kernels_reason():
    # it sizes every tensor at compile time: a node it cannot size is refused then, and the reason
    # had said only that the shape was not known, as if data decided it
    m, _, said = _case("ArgMax-axis-5")
    with pytest.raises(hal.UnsupportedOpError, match=f"its kernel says ValueError: {said}"):
        hal.InferenceSession(m, target="lpu", fallback="error")
