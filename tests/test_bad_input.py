"""Bad input gets a clear HalError subclass saying what, where and what to do — never a crash."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal


def _relu_model(opset: int = 17) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="r")], "g", [x], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


# -- models -------------------------------------------------------------------------------------

def test_missing_file_is_a_model_error_naming_it(tmp_path):
    with pytest.raises(hal.ModelError, match="nope.onnx: no such file"):
        hal.InferenceSession(str(tmp_path / "nope.onnx"))


def test_truncated_file_is_a_model_error(tmp_path):
    from hal.zoo import build

    data = build("tiny-cnn").SerializeToString()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(hal.ModelError) as ei:
        hal.InferenceSession(str(p))
    assert str(p) in str(ei.value)


def test_random_bytes_are_a_model_error(tmp_path):
    p = tmp_path / "noise.onnx"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(hal.ModelError, match="noise.onnx"):
        hal.InferenceSession(str(p))


def test_empty_file_is_a_model_error(tmp_path):
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    with pytest.raises(hal.ModelError, match="empty"):
        hal.InferenceSession(str(p))


def test_valid_protobuf_that_is_not_a_model_is_a_model_error():
    meta_only = onnx.ModelProto(ir_version=8, producer_name="not-a-model")
    with pytest.raises(hal.ModelError, match="no graph"):
        hal.InferenceSession(meta_only.SerializeToString())


def test_checker_failure_is_a_model_error_with_the_checkers_message():
    m = _relu_model()
    m.graph.node[0].input[0] = "undefined_tensor"
    with pytest.raises(hal.ModelError, match=r"onnx\.checker.*undefined_tensor"):
        hal.InferenceSession(m)


def test_unknown_op_is_unsupported_naming_node_op_opset_and_targets():
    m = _relu_model()
    m.graph.node[0].op_type = "FrobnicateX"
    m.graph.node[0].domain = "com.example"
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(hal.UnsupportedOpError) as ei:
        hal.InferenceSession(m)
    msg = str(ei.value)
    assert "r (FrobnicateX)" in msg and "opset 1" in msg and "runs on:" in msg


# -- feeds --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sess():
    return hal.InferenceSession(_relu_model())


def test_missing_feed_lists_what_the_model_expects(sess):
    with pytest.raises(hal.InputError, match=r"missing x.*expects: x: float32\[2, 3\]"):
        sess.run(None, {})


def test_extra_feed_is_named(sess):
    with pytest.raises(hal.InputError, match="unexpected zzz"):
        sess.run(None, {"x": np.zeros((2, 3), np.float32), "zzz": np.zeros(1)})


def test_wrong_dtype_says_how_to_cast(sess):
    with pytest.raises(hal.InputError, match=r"dtype float64, expected float32.*astype"):
        sess.run(None, {"x": np.zeros((2, 3))})


def test_wrong_rank_and_shape_are_input_errors(sess):
    with pytest.raises(hal.InputError, match="rank 1"):
        sess.run(None, {"x": np.zeros(6, np.float32)})
    with pytest.raises(hal.InputError, match="dimension 1 must be 3"):
        sess.run(None, {"x": np.zeros((2, 4), np.float32)})


def test_non_array_feed_and_non_dict_feeds_are_input_errors(sess):
    with pytest.raises(hal.InputError, match="not a numpy array"):
        sess.run(None, {"x": [[0.0] * 3] * 2})
    with pytest.raises(hal.InputError, match="must be a dict"):
        sess.run(None, [np.zeros((2, 3), np.float32)])


def test_unknown_output_name_is_an_input_error(sess):
    with pytest.raises(hal.InputError, match="unknown output"):
        sess.run(["nope"], {"x": np.zeros((2, 3), np.float32)})


def test_bad_options_are_compile_errors():
    with pytest.raises(hal.CompileError, match="precision"):
        hal.InferenceSession(_relu_model(), precision="fp4")
    with pytest.raises(hal.CompileError, match="does not offer precision 'bf16'"):
        hal.InferenceSession(_relu_model(), precision="bf16")
    with pytest.raises(hal.CompileError, match="unknown option"):
        hal.InferenceSession(_relu_model(), warp_speed=True)
    with pytest.raises(hal.HalError, match="no target named 'tpu'.*installed targets: .*cpu"):
        hal.InferenceSession(_relu_model(), target="tpu")


@pytest.mark.parametrize("index", [4, -5])
def test_gather_index_out_of_range_is_a_run_error_naming_the_node(index):
    data = onnx.numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "data")
    g = helper.make_graph([helper.make_node("Gather", ["data", "i"], ["y"], name="lookup", axis=0)], "g",
                          [helper.make_tensor_value_info("i", TensorProto.INT64, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [data])
    sess = hal.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    np.testing.assert_array_equal(sess.run(None, {"i": np.array([-1, 0], np.int64)})[0], [[9, 10, 11], [0, 1, 2]])
    with pytest.raises(hal.RunError, match=f"lookup.*index {index} is out of bounds for axis 0 with size 4"):
        sess.run(None, {"i": np.array([0, index], np.int64)})


def test_shape_only_model_refuses_to_run_with_a_clear_error():
    sess = hal.InferenceSession("zoo:llama-2-7b", zoo_params={"context": 8})
    feeds = {i.name: np.zeros([d for d in i.shape], dtype=i.dtype) for i in sess.get_inputs()}
    with pytest.raises(hal.RunError, match="shape only"):
        sess.run(None, feeds)


# -- CLI ----------------------------------------------------------------------------------------

def _hal(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hal.cli", *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))


def test_cli_prints_one_line_and_exits_non_zero_without_traceback(tmp_path):
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"not a model")
    res = _hal("run", str(p))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ModelError:")
    assert "Traceback" not in res.stderr


def test_cli_debug_shows_the_traceback(tmp_path):
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"not a model")
    res = _hal("--debug", "run", str(p))
    assert res.returncode != 0 and "Traceback" in res.stderr


def _declared_float16(where: str) -> onnx.ModelProto:
    # what onnxconverter-common's float16 converter left in a BERT: a Cast to float whose value_info
    # (or, here also, the graph output) says float16, feeding a Sub with a float16 constant
    nodes = [helper.make_node("Cast", ["m"], ["mc"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Sub", ["one", "mc"], ["y"], name="sub")]
    mc = helper.make_tensor_value_info("mc", TensorProto.FLOAT16 if where == "value_info" else TensorProto.FLOAT,
                                       [2, 3])
    y_type = TensorProto.FLOAT16 if where == "value_info" else TensorProto.DOUBLE
    one = onnx.numpy_helper.from_array(np.array(1, np.float16 if where == "value_info" else np.float32), "one")
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("m", TensorProto.INT64, [2, 3])],
                          [helper.make_tensor_value_info("y", y_type, [2, 3])], initializer=[one], value_info=[mc])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("where", ["value_info", "output"])
def test_a_value_declared_of_another_type_than_its_node_makes_is_a_model_error(where):
    # was: onnx's non-strict inference kept the declared type, Sub ran in float32 and the model
    # returned float32 for an output it declares float16 (onnxruntime refuses it: "Type Error")
    m = _declared_float16(where)
    ort = pytest.importorskip("onnxruntime")
    with pytest.raises(Exception, match="Type Error"):
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    want = ("node 'cast' (Cast) makes 'mc' a tensor(float), but the model declares it a tensor(float16)"
            if where == "value_info" else "node 'sub' (Sub) makes 'y' a tensor(float), but the model declares it "
                                          "a tensor(double)")
    for target in hal.targets():
        with pytest.raises(hal.ModelError, match=re.escape(want)) as ei:
            hal.InferenceSession(m, target=target.name)
        assert "onnxruntime refuses" in ei.value.hint


def test_a_value_declared_of_another_type_and_shape_is_a_model_error_too():
    """onnx's strict inference names the shape first, and hal had checked types only after a type
    conflict: MaxPool's indices declared int32 (its outputs 5 wide, of 8) ran and came out int64 (onnxruntime:
    Type Error)."""
    g = helper.make_graph([helper.make_node("MaxPool", ["x"], ["y", "z"], kernel_shape=[5, 5], pads=[2, 2, 2, 2])],
                          "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 5, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 5, 5]),
                           helper.make_tensor_value_info("z", TensorProto.INT32, [1, 1, 5, 5])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 22)])
    with pytest.raises(hal.ModelError, match=r"makes 'z' a tensor\(int64\), but the model declares it a "):
        hal.InferenceSession(m.SerializeToString())


def test_a_sequence_declared_a_tensor_is_a_model_error_at_load():
    """onnxruntime: "type case mismatch"; hal had loaded it and returned a list for a tensor output."""
    g = helper.make_graph([helper.make_node("SequenceConstruct", ["x", "x"], ["y"], name="pair")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(hal.ModelError, match=r"node 'pair' \(SequenceConstruct\) makes 'y' a sequence, but the model "
                                             "declares it a tensor"):
        hal.InferenceSession(m.SerializeToString())


@pytest.mark.parametrize("declared", ["value_info", "branch output"])
def test_a_value_declared_of_another_type_in_an_if_branch_is_a_model_error(declared):
    # onnxslim's float16 conversion of Optimum's merged decoders leaves a Cast to float declared
    # float16 inside the use_cache branch: hal checked the main graph only, and returned float32
    # logits the model declares float16 (onnxruntime refuses it)
    f16 = TensorProto.FLOAT16
    vi = [helper.make_tensor_value_info("c", f16, [2])] if declared == "value_info" else []
    then = helper.make_graph([helper.make_node("Cast", ["x"], ["c"], name="cast", to=TensorProto.FLOAT),
                              helper.make_node("Identity", ["c"], ["t"], name="id")], "then", [],
                             [helper.make_tensor_value_info("t", f16, [2])], value_info=vi)
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", f16, [2])])
    g = helper.make_graph([helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then,
                                            else_branch=other)], "g",
                          [helper.make_tensor_value_info("x", f16, [2]),
                           helper.make_tensor_value_info("cond", TensorProto.BOOL, [1])],
                          [helper.make_tensor_value_info("y", f16, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    ort = pytest.importorskip("onnxruntime")
    with pytest.raises(Exception, match="TypeInferenceError"):
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    want = ("node 'branch' (If) then_branch: " + ("node 'cast' (Cast) makes 'c'" if declared == "value_info"
                                                  else "node 'id' (Identity) makes 't'")
            + " a tensor(float), but the model declares it a tensor(float16)")
    for target in hal.targets():
        with pytest.raises(hal.ModelError, match=re.escape(want)):
            hal.InferenceSession(m, target=target.name)


def test_an_output_declared_of_another_type_than_its_schema_gives_is_a_model_error():
    # skl2onnx's decision tree for a double input declares its scores double; TreeEnsembleClassifier
    # makes float scores whatever its input, onnx's inference has no rule for them at ai.onnx.ml 1
    # (the opset skl2onnx imports), and hal ran the model and returned float32 (onnxruntime refuses
    # it: "Type Error")
    node = helper.make_node("TreeEnsembleClassifier", ["x"], ["label", "scores"], name="trees", domain="ai.onnx.ml",
                            nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[0, 0, 0],
                            nodes_values=[0.5, 0.0, 0.0], nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"],
                            nodes_truenodeids=[1, 0, 0], nodes_falsenodeids=[2, 0, 0], class_treeids=[0, 0],
                            class_nodeids=[1, 2], class_ids=[0, 1], class_weights=[1.0, 1.0],
                            classlabels_int64s=[0, 1])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", 1])],
                          [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
                           helper.make_tensor_value_info("scores", TensorProto.DOUBLE, ["N", 2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)])
    ort = pytest.importorskip("onnxruntime")
    with pytest.raises(Exception, match="Type Error"):
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    with pytest.raises(hal.ModelError, match=re.escape("node 'trees' (TreeEnsembleClassifier) makes 'scores' a "
                                                       "tensor(float), but the model declares it a tensor(double)")):
        hal.InferenceSession(m)
    m.graph.output[1].type.tensor_type.elem_type = TensorProto.FLOAT
    _, scores = hal.InferenceSession(m).run(None, {"x": np.array([[0.0], [1.0]])})
    assert scores.dtype == np.float32
    # the scores through an Identity (skl2onnx's gradient boosting for a double input): the Identity's
    # output is the trees' float, which no inference had told it; hal ran that one too
    m.graph.node[0].output[1] = "raw"
    m.graph.node.append(helper.make_node("Identity", ["raw"], ["scores"], name="named"))
    m.graph.output[1].type.tensor_type.elem_type = TensorProto.DOUBLE
    with pytest.raises(Exception, match="Type Error"):
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    with pytest.raises(hal.ModelError, match=re.escape("node 'named' (Identity) makes 'scores' a tensor(float), "
                                                       "but the model declares it a tensor(double)")):
        hal.InferenceSession(m)


@pytest.mark.parametrize(("node", "a", "b"), [
    (helper.make_node("Add", ["a", "b"], ["y"], name="add"), [2, 4, 3, 32], [4, 32]),  # PatchTST's TorchScript export
    (helper.make_node("MatMul", ["a", "b"], ["y"], name="mm"), [2, 3], [4, 5]),
])
def test_static_shapes_an_op_cannot_combine_are_a_model_error_when_loaded(node, a, b):
    # as onnxruntime refuses the model; hal had compiled it and failed at each run (the LPU calling
    # the node's shape data-dependent)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, a),
                                        helper.make_tensor_value_info("b", TensorProto.FLOAT, b)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    ort = pytest.importorskip("onnxruntime")
    with pytest.raises(Exception, match="Incompatible dimensions"):
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for target in ("cpu", "lpu"):
        with pytest.raises(hal.ModelError, match=f"op_type:{node.op_type}, node name: {node.name}.*Incompatible"):
            hal.InferenceSession(m, target=target)


@pytest.mark.parametrize("opset", [11, 13])
def test_a_squeeze_of_an_axis_of_static_size_other_than_one_is_a_model_error_when_loaded(opset):
    # diffusers' PixArt transformer as dynamo exported it (an axis of 16 squeezed): onnxruntime refuses
    # the model, hal had compiled it and failed at each run
    squeeze = (helper.make_node("Squeeze", ["x", "axes"], ["y"], name="sq") if opset >= 13 else
               helper.make_node("Squeeze", ["x"], ["y"], name="sq", axes=[1]))
    g = helper.make_graph([squeeze], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.array([1], np.int64), "axes")] if opset >= 13 else [])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    ort = pytest.importorskip("onnxruntime")
    with pytest.raises(Exception, match="must be 1 instead of 16"):
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for target in ("cpu", "lpu"):
        with pytest.raises(hal.ModelError, match="op_type:Squeeze.*Dimension of input 1 must be 1 instead of 16"):
            hal.InferenceSession(m, target=target)


def test_an_optional_graph_input_left_out_of_the_feeds_is_empty():
    # as onnxruntime takes it (OptionalHasElement false); hal had refused it as 'missing o', its own
    # hint marking o optional
    optional = helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [3, 4]))
    graph = helper.make_graph([helper.make_node("OptionalHasElement", ["o"], ["has"])], "g",
                              [helper.make_value_info("o", optional)],
                              [helper.make_tensor_value_info("has", TensorProto.BOOL, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    ort = pytest.importorskip("onnxruntime")
    assert not ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})[0]
    for target in hal.targets():
        session = hal.InferenceSession(model, target=target.name)
        assert not session.run(None, {})[0] and not session.run(None, {"o": None})[0]
        assert session.run(None, {"o": np.ones((3, 4), np.float32)})[0]
    with pytest.raises(hal.InputError, match="missing x"):  # a tensor input still has to be fed
        hal.InferenceSession(_relu_model()).run(None, {})


def test_an_error_inside_a_body_names_the_node_running_it():
    # a Gather out of range in an If's branch: the error named only the branch's node, which the main
    # graph does not hold (a generation op's decoder node read the same way)
    branch = helper.make_graph([helper.make_node("Gather", ["table", "i"], ["picked"], name="pick")], "b", [],
                               [helper.make_tensor_value_info("picked", TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], name="choose", then_branch=branch, else_branch=branch)], "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("i", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(np.arange(3, dtype=np.float32), "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(hal.RunError, match="node 'choose' > node 'pick': Gather failed"):
        hal.InferenceSession(model).run(None, {"c": np.array(True), "i": np.array(7)})


def test_a_conv_whose_weight_does_not_fit_its_input_says_so_in_onnx_terms():
    # numpy's matmul had said "mismatch in its core dimension 0, with gufunc signature (n?,k),(k,m?)"
    w = numpy_helper.from_array(np.ones((4, 5, 3, 3), np.float32), "W")
    g = helper.make_graph([helper.make_node("Conv", ["x", "W"], ["y"], name="conv")], "c",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    sess = hal.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(hal.RunError, match=r"W's channels \(5\) x group") as ei:
        sess.run(None, {"x": np.ones((1, 3, 8, 8), np.float32)})
    assert "node 'conv'" in str(ei.value) and "gufunc" not in str(ei.value)
