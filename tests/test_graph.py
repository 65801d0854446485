"""The graph front end: safe external data, folding, dead-node removal, topological order."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.graph.ir import SHAPE_ONLY_KEY, Node, ShapeOnly
from hal.graph.load import load
from hal.graph.passes import optimize
from tests.conftest import FIXTURES


def _matmul_model_with_weight(w: np.ndarray) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, w.shape[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, w.shape[1]])
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y],
                          [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _save_external(model: onnx.ModelProto, folder, location: str) -> str:
    path = os.path.join(folder, "m.onnx")
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin",
                    size_threshold=0)
    m = onnx.load(path, load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    with open(path, "wb") as f:
        f.write(m.SerializeToString())
    return path


def test_external_data_beside_the_model_is_loaded(tmp_path):
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    path = _save_external(_matmul_model_with_weight(w), tmp_path, "w.bin")
    (y,) = hal.InferenceSession(path).run(None, {"x": np.ones((1, 4), np.float32)})
    np.testing.assert_array_equal(y, np.ones((1, 4), np.float32) @ w)


@pytest.mark.parametrize("location", ["/etc/passwd", "../w.bin", "sub/../../w.bin"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, location):
    w = np.ones((4, 3), np.float32)
    folder = tmp_path / "model"
    folder.mkdir()
    path = _save_external(_matmul_model_with_weight(w), folder, location)
    with pytest.raises(hal.ModelError, match="external-data location"):
        hal.InferenceSession(path)


def test_external_data_through_a_link_leading_outside_is_refused(tmp_path):
    w = np.ones((4, 3), np.float32)
    folder = tmp_path / "model"
    folder.mkdir()
    path = _save_external(_matmul_model_with_weight(w), folder, "w.bin")
    outside = tmp_path / "secret.bin"
    os.replace(folder / "w.bin", outside)
    os.symlink(outside, folder / "link.bin")
    m = onnx.load(path, load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "link.bin"
    with open(path, "wb") as f:
        f.write(m.SerializeToString())
    with pytest.raises(hal.ModelError, match="outside the model's folder"):
        hal.InferenceSession(path)


def test_external_data_from_bytes_needs_a_path(tmp_path):
    path = _save_external(_matmul_model_with_weight(np.ones((4, 3), np.float32)), tmp_path, "w.bin")
    with pytest.raises(hal.ModelError, match="external data"):
        hal.InferenceSession(open(path, "rb").read())


def test_constant_subgraphs_fold_and_dead_nodes_go():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    nodes = [
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.full((2, 3), 2, np.float32))),
        helper.make_node("Mul", ["c", "c"], ["c4"]),          # foldable
        helper.make_node("Shape", ["x"], ["sx"]),              # static shape: foldable
        helper.make_node("Reshape", ["x", "sx"], ["xr"]),
        helper.make_node("Add", ["xr", "c4"], ["y"]),
        helper.make_node("Neg", ["x"], ["unused"]),            # dead
    ]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    g = optimize(load(m))
    assert [n.op_type for n in g.nodes] == ["Reshape", "Add"]
    np.testing.assert_array_equal(g.initializers["c4"], np.full((2, 3), 4, np.float32))
    (out,) = hal.InferenceSession(m).run(None, {"x": np.ones((2, 3), np.float32)})
    np.testing.assert_array_equal(out, np.full((2, 3), 5, np.float32))


def test_optional_outputs_nobody_reads_are_dropped_from_the_end():
    # Dropout's mask, MaxPool's indices and LayerNormalization's statistics are computed only when
    # declared: an unread one is dropped, a read one (by a node or as a graph output) kept, and
    # Split, whose output count sets the split, keeps every output
    import onnxruntime as ort

    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Dropout", ["x"], ["d", "mask"]),                        # mask unread
        helper.make_node("MaxPool", ["d"], ["p", "idx"], kernel_shape=[2, 2], strides=[2, 2]),  # indices unread
        helper.make_node("LayerNormalization", ["p", "s", "b"], ["ln", "mean", "inv"]),  # inv read
        helper.make_node("Split", ["ln"], ["s0", "s1"], axis=3, num_outputs=2),   # s1 unread
        helper.make_node("Dropout", ["s0"], ["y", "m2"]),                         # m2 a graph output
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f, [1, 2, 4, 4])],
                          [helper.make_tensor_value_info("y", f, [1, 2, 2, 1]),
                           helper.make_tensor_value_info("inv", f, [1, 2, 2, 1]),
                           helper.make_tensor_value_info("m2", TensorProto.BOOL, [1, 2, 2, 1])],
                          [numpy_helper.from_array(np.full(2, 1.5, np.float32), "s"),
                           numpy_helper.from_array(np.full(2, 0.5, np.float32), "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    graph = optimize(load(m))
    assert [n.outputs for n in graph.nodes] == [["d"], ["p"], ["ln", "mean", "inv"], ["s0", "s1"], ["y", "m2"]]
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)
    got = hal.InferenceSession(m).run(None, {"x": x})
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_folding_never_materialises_a_memory_bomb():
    shape = numpy_helper.from_array(np.array([1 << 20, 1 << 20], np.int64), "shape")
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1 << 20, 1 << 20])
    m = helper.make_model(helper.make_graph([helper.make_node("ConstantOfShape", ["shape"], ["y"])], "g", [], [y],
                                            [shape]), opset_imports=[helper.make_opsetid("", 17)])
    g = optimize(load(m))  # 4 TiB if folded: must stay a node
    assert [n.op_type for n in g.nodes] == ["ConstantOfShape"]


def test_nodes_out_of_order_are_sorted_and_cycles_refused():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    nodes = [helper.make_node("Neg", ["a"], ["y"], name="second"), helper.make_node("Relu", ["x"], ["a"], name="first")]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    g = load(m, check=False)
    assert [n.name for n in g.nodes] == ["first", "second"]
    cyc = [helper.make_node("Neg", ["b"], ["a"], name="p"), helper.make_node("Neg", ["a"], ["b"], name="q"),
           helper.make_node("Relu", ["a"], ["y"], name="r")]
    m2 = helper.make_model(helper.make_graph(cyc, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(hal.ModelError, match="cycle"):
        load(m2, check=False)
    with pytest.raises(hal.ModelError):
        load(m2)


def _conv_bn_model(second_reader: bool, rng: np.random.Generator) -> onnx.ModelProto:
    """x -> Conv(W, B) -> BatchNormalization -> Relu -> Mul(k) -> ...; with ``second_reader`` the
    Conv's output is also added to the result, so the BatchNormalization must stay a node."""
    c_in, c = 3, 4
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("W", rng.standard_normal((c, c_in, 3, 3))), ("B", rng.standard_normal(c)),
        ("scale", rng.uniform(0.5, 2, c)), ("bias", rng.standard_normal(c)),
        ("mean", rng.standard_normal(c)), ("var", rng.uniform(0.1, 3, c)),
        ("scale2", rng.uniform(0.5, 2, c)), ("bias2", rng.standard_normal(c)),
        ("mean2", rng.standard_normal(c)), ("var2", rng.uniform(0.1, 3, c)),
        ("k", rng.standard_normal((c, 1, 1))), ("t", rng.standard_normal((1, c, 1, 1)))]]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["conv", "scale", "bias", "mean", "var"], ["bn"], epsilon=1e-3),
             helper.make_node("Relu", ["bn"], ["r"]),
             # a BatchNormalization with no Conv before it, then a per-channel Mul and Add (Caffe2's export)
             helper.make_node("BatchNormalization", ["r", "scale2", "bias2", "mean2", "var2"], ["bn2"]),
             helper.make_node("Mul", ["k", "bn2"], ["m"]),
             helper.make_node("Add", ["m", "t"], ["a"] if second_reader else ["y"])]
    if second_reader:
        nodes.append(helper.make_node("Add", ["a", "conv"], ["y"]))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, c_in, 6, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, c, 6, 5])
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                             opset_imports=[helper.make_opsetid("", 15)])


@pytest.mark.parametrize("second_reader", [False, True])
def test_batch_norm_folds_into_the_conv_before_it_unless_the_conv_output_has_another_reader(second_reader):
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    model = _conv_bn_model(second_reader, rng)
    ops = [n.op_type for n in optimize(load(model)).nodes]
    if second_reader:  # the Conv's output is read twice: its BatchNormalization stays
        assert ops == ["Conv", "BatchNormalization", "Relu", "BatchNormalization", "Add"]
    else:  # BN into the Conv's weights; Mul and Add into the second BN's parameters
        assert ops == ["Conv", "Relu", "BatchNormalization"]
    feeds = {"x": rng.standard_normal((2, 3, 6, 5)).astype(np.float32)}
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    (got,) = hal.InferenceSession(model).run(None, feeds)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_batch_norm_fold_leaves_shared_weights_and_graph_outputs_alone():
    rng = np.random.default_rng(1)
    model = _conv_bn_model(False, rng)
    # the Conv's output is also a graph output, and a second Conv reads the same weights
    model.graph.output.append(helper.make_tensor_value_info("conv", TensorProto.FLOAT, [2, 4, 6, 5]))
    model.graph.node.append(helper.make_node("Conv", ["x", "W"], ["conv2"], pads=[1, 1, 1, 1]))
    model.graph.output.append(helper.make_tensor_value_info("conv2", TensorProto.FLOAT, [2, 4, 6, 5]))
    g = optimize(load(model))
    assert [n.op_type for n in g.nodes].count("BatchNormalization") == 2
    np.testing.assert_array_equal(g.initializers["W"], numpy_helper.to_array(model.graph.initializer[0]))
    feeds = {"x": rng.standard_normal((2, 3, 6, 5)).astype(np.float32)}
    from onnx.reference import ReferenceEvaluator

    want = ReferenceEvaluator(model).run(None, feeds)
    got = hal.InferenceSession(model).run(None, feeds)
    for w, h in zip(want, got):
        np.testing.assert_allclose(h, w, rtol=1e-5, atol=1e-5)


def test_an_optimized_graph_goes_back_to_onnx_and_onnxruntime_agrees():
    """``Graph.to_onnx`` (what a plugin hands its own toolchain): the loaded, folded graph of a light
    model passes onnx's full checker and runs in onnxruntime to the shipped reference output."""
    import onnxruntime as ort

    from tests.conftest import light_case

    path, feeds, expected = light_case("light_squeezenet")
    g = optimize(load(path))
    proto = g.to_onnx()
    onnx.checker.check_model(proto, full_check=True)
    assert len(proto.graph.node) == len(g.nodes) and {i.name for i in proto.graph.initializer} == set(g.initializers)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, feeds)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)
    again = load(proto)  # and hal loads what it wrote
    assert [n.op_type for n in again.nodes] == [n.op_type for n in g.nodes]


def test_a_loaded_graph_with_constant_nodes_goes_back_to_onnx():
    """Before folding, the exporter's Constant nodes hold arrays (their tensor attribute), and an
    empty list attribute has no element to tell its type: both come back as onnx wrote them."""
    import onnxruntime as ort

    from tests.conftest import FIXTURES

    path = FIXTURES / "bert_tiny.onnx"
    g = load(path)
    assert any(n.op_type == "Constant" for n in g.nodes)
    proto = g.to_onnx()
    onnx.checker.check_model(proto, full_check=True)
    feeds = {"input_ids": np.arange(32, dtype=np.int64).reshape(2, 16), "attention_mask": np.ones((2, 16), np.int64)}
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_array_equal(got[0], want[0])
    empty = helper.make_node("LabelEncoder", ["x"], ["y"], name="enc", domain="ai.onnx.ml")
    empty.attribute.append(helper.make_attribute("values_floats", [], attr_type=onnx.AttributeProto.FLOATS))
    node = Node.from_proto(empty, "enc")
    assert node.attrs == {"values_floats": []} and node.to_proto().attribute[0].type == onnx.AttributeProto.FLOATS


def test_inputs_and_outputs_go_back_to_onnx_with_their_whole_types():
    """A plain tensor's type is its element type and shape (symbolic dims included), kept as fields;
    a type with denotations, or a sequence, keeps its TypeProto so that to_onnx writes it back."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 224, 224])
    x.type.denotation = "TENSOR"
    x.type.tensor_type.shape.dim[1].denotation = "DATA_CHANNEL"
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 5])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, ["n", 5])
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)
    nodes = [helper.make_node("SequenceConstruct", ["x"], ["s"]), helper.make_node("Neg", ["z"], ["w"])]
    graph = helper.make_graph(nodes, "types", [x, z], [seq, w])
    g = load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert g.values["x"].type_proto is not None and g.values["s"].type_proto is not None
    assert g.values["w"].type_proto is None and g.values["w"].shape == ("n", 5)
    proto = g.to_onnx()
    back = {v.name: v.type for v in (*proto.graph.input, *proto.graph.output)}
    assert (back["x"], back["z"], back["w"]) == (x.type, z.type, w.type)
    assert back["s"].sequence_type.elem_type.tensor_type.elem_type == TensorProto.FLOAT  # (its shape inferred)


def test_shape_only_weights_go_back_as_declared_inputs():
    g = load("zoo:llama-2-7b", zoo_params={"context": 16, "prompt": 8})
    shape_only = {k: w for k, w in g.initializers.items() if isinstance(w, ShapeOnly)}
    assert shape_only
    proto = g.to_onnx()
    listed = dict((p.key, p.value) for p in proto.metadata_props)[SHAPE_ONLY_KEY].split(",")
    assert set(listed) == set(shape_only)
    assert {i.name for i in proto.graph.initializer} == set(g.initializers) - set(shape_only)
    again = load(proto)
    assert {k: (w.shape, w.dtype) for k, w in again.initializers.items() if isinstance(w, ShapeOnly)} == {
        k: (w.shape, w.dtype) for k, w in shape_only.items()}


@pytest.mark.parametrize("fixture", ["gpt_tiny.onnx", "bert_tiny.onnx"])
@pytest.mark.parametrize("passes", [False, True])
def test_a_values_name_is_one_string_object_across_the_graph(fixture, passes):
    g = load(FIXTURES / fixture)
    g = optimize(g) if passes else g
    by_name: dict[str, str] = {}
    names = [*(x for n in g.nodes for x in (*n.inputs, *n.outputs) if x), *g.values, *g.initializers,
             *(t.name for t in g.values.values())]
    for x in names:
        assert by_name.setdefault(x, x) is x, f"{x!r} is held as two string objects"
    assert len(by_name) > 100


def test_the_schema_type_cache_holds_each_set_of_type_strings_once():
    """The load's type check caches each op's allowed input types: one frozenset per distinct set, its
    strings interned (it had held a fresh copy per op and opset: 41 KB for tiny-gpt's 22 ops)."""
    import sys

    from hal.graph.typecheck import _input_types

    add, sub = _input_types("Add", 14), _input_types("Sub", 14)
    assert add[0][1] is sub[0][1] and "tensor(float)" in add[0][1]
    assert all(sys.intern(s) is s for s in add[0][1])
    assert _input_types("Add", 13)[0][1] != add[0][1]  # (opset 14 added the 8- and 16-bit integers)
