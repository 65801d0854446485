"""Control-flow, sequence and optional kernels: their onnx node cases on cpu, and the edges the cases miss."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import hal
from hal.conformance.cases import node_cases
from hal.conformance.check import check_case
from hal.kernels import lookup

OPS = {"If", "Loop", "Scan", "SequenceEmpty", "SequenceConstruct", "SequenceAt", "SequenceInsert", "SequenceErase",
       "SequenceLength", "SplitToSequence", "ConcatFromSequence", "SequenceMap", "Optional", "OptionalHasElement",
       "OptionalGetElement"}
OTHERS = {"Range", "Identity"}  # their cases that go through Loop / sequences / optionals


def _cases():
    out = []
    for c in node_cases():
        if c.op in OPS or (c.op in OTHERS and c.ops & OPS) or c.name in ("test_identity_sequence", "test_identity_opt"):
            out.append(pytest.param(c, id=c.name))
    return out


@pytest.mark.parametrize("case", _cases())
def test_node_case_passes_on_cpu(case) -> None:
    check_case(case, "cpu")


def test_every_op_of_the_family_has_a_kernel() -> None:
    assert all(lookup(op, "", 24) is not None for op in OPS)
    assert lookup("Scan", "", 8).fn is not lookup("Scan", "", 9).fn


def _model(nodes, inputs, outputs, opset=17, initializers=()):
    g = helper.make_graph(nodes, "m", inputs, outputs, list(initializers))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _f(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_loop_body_reads_outer_values_through_a_nested_if() -> None:
    # `scale` is produced by a node of the main graph and read only inside If-inside-Loop: it must
    # stay alive until the Loop runs and reach the nested branch.
    then_g = helper.make_graph([helper.make_node("Mul", ["acc_in", "scale"], ["t"])], "then", [], [_f("t", [2])])
    else_g = helper.make_graph([helper.make_node("Identity", ["acc_in"], ["e"])], "else", [], [_f("e", [2])])
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Less", ["i", "two"], ["small"]),
         helper.make_node("If", ["small"], ["acc_out"], then_branch=then_g, else_branch=else_g),
         helper.make_node("Identity", ["acc_out"], ["scan_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), _f("acc_in", [2])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), _f("acc_out", [2]), _f("scan_out", [2])])
    model = _model(
        [helper.make_node("Add", ["x", "x"], ["scale"]),
         helper.make_node("Loop", ["n", "", "init"], ["final", "history"], body=body)],
        [_f("x", [2]), helper.make_tensor_value_info("n", TensorProto.INT64, []), _f("init", [2])],
        [_f("final", [2]), _f("history", [None, 2])],
        initializers=[onnx.numpy_helper.from_array(np.array(2, np.int64), "two")])
    sess = hal.InferenceSession(model, "cpu")
    x = np.array([1.5, 1.0], np.float32)
    final, history = sess.run(None, {"x": x, "n": np.array(4, np.int64), "init": np.ones(2, np.float32)})
    np.testing.assert_array_equal(final, [9.0, 4.0])  # doubled by 2*x twice, then kept
    assert history.shape == (4, 2)


def test_loop_with_zero_iterations_gives_empty_scan_outputs_of_the_declared_shape() -> None:
    body = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Identity", ["v"], ["v_out"]),
         helper.make_node("Identity", ["v"], ["s"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c", TensorProto.BOOL, []), _f("v", [3])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), _f("v_out", [3]), _f("s", [3])])
    model = _model([helper.make_node("Loop", ["n", "", "v0"], ["v", "s"], body=body)],
                   [helper.make_tensor_value_info("n", TensorProto.INT64, []), _f("v0", [3])],
                   [_f("v", [3]), _f("s", [None, 3])])
    v, s = hal.InferenceSession(model, "cpu").run(None, {"n": np.array(0, np.int64),
                                                         "v0": np.arange(3, dtype=np.float32)})
    np.testing.assert_array_equal(v, [0, 1, 2])
    assert s.shape == (0, 3) and s.dtype == np.float32


def _scan_body():
    return helper.make_graph(
        [helper.make_node("Add", ["s", "x"], ["s_out"]), helper.make_node("Identity", ["s_out"], ["y"])], "body",
        [_f("s", [2]), _f("x", [2])], [_f("s_out", [2]), _f("y", [2])])


def test_scan9_honours_input_axes_and_directions_and_output_axes() -> None:
    node = helper.make_node("Scan", ["s0", "xs"], ["s", "ys"], body=_scan_body(), num_scan_inputs=1,
                            scan_input_axes=[1], scan_input_directions=[1], scan_output_axes=[1])
    model = _model([node], [_f("s0", [2]), _f("xs", [2, 3])], [_f("s", [2]), _f("ys", [2, 3])], opset=16)
    xs = np.arange(6, dtype=np.float32).reshape(2, 3)
    s, ys = hal.InferenceSession(model, "cpu").run(None, {"s0": np.zeros(2, np.float32), "xs": xs})
    np.testing.assert_array_equal(s, xs.sum(axis=1))
    # reversed scan along axis 1: running sums of columns 2, 1, 0; outputs stacked along axis 1
    np.testing.assert_array_equal(ys, np.stack([xs[:, 2], xs[:, 2] + xs[:, 1], xs.sum(axis=1)], axis=1))


def test_scan8_runs_each_batch_item_to_its_sequence_length() -> None:
    node = helper.make_node("Scan", ["lens", "s0", "xs"], ["s", "ys"], body=_scan_body(), num_scan_inputs=1)
    model = _model([node], [helper.make_tensor_value_info("lens", TensorProto.INT64, [2]), _f("s0", [2, 2]),
                            _f("xs", [2, 3, 2])], [_f("s", [2, 2]), _f("ys", [2, 3, 2])], opset=8)
    xs = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    s, ys = hal.InferenceSession(model, "cpu").run(
        None, {"lens": np.array([3, 2], np.int64), "s0": np.zeros((2, 2), np.float32), "xs": xs})
    np.testing.assert_array_equal(s[0], xs[0].sum(axis=0))
    np.testing.assert_array_equal(s[1], xs[1, :2].sum(axis=0))
    np.testing.assert_array_equal(ys[1, 2], [0, 0])  # past the short sequence: zeros


def test_sequence_kernels_follow_onnx_positions_and_never_modify_their_input() -> None:
    k = {op: lookup(op, "", 17).fn for op in OPS - {"If", "Loop", "Scan", "SequenceMap"}}
    a, b, c = (np.full(2, v, np.float32) for v in (1, 2, 3))
    seq = k["SequenceConstruct"](a, b)
    assert k["SequenceEmpty"]() == []
    grown = k["SequenceInsert"](seq, c, np.array(-1))
    assert [x[0] for x in grown] == [1, 3, 2] and len(seq) == 2
    assert [x[0] for x in k["SequenceInsert"](seq, c, np.array(2))] == [1, 2, 3]
    assert [x[0] for x in k["SequenceErase"](grown, np.array(-3))] == [3, 2]
    assert [x[0] for x in k["SequenceErase"](grown)] == [1, 3]
    assert k["SequenceAt"](grown, np.array(-1))[0] == 2
    assert k["SequenceLength"](grown).dtype == np.int64 and int(k["SequenceLength"](grown)) == 3
    with pytest.raises(IndexError):
        k["SequenceAt"](seq, np.array(2))
    assert k["ConcatFromSequence"](seq, axis=-1, new_axis=1).shape == (2, 2)
    assert k["ConcatFromSequence"](seq, axis=0).shape == (4,)
    parts = k["SplitToSequence"](np.arange(5, dtype=np.float32), np.array(2))
    assert [len(p) for p in parts] == [2, 2, 1]
    assert [p.shape for p in k["SplitToSequence"](np.zeros((2, 3)), axis=1, keepdims=0)] == [(2,)] * 3
    assert k["Optional"]() is None and k["Optional"](a) is a
    assert bool(k["OptionalHasElement"](None)) is False and k["OptionalHasElement"](a).shape == ()
    with pytest.raises(ValueError):
        k["OptionalGetElement"](None)
