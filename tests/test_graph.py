"""The graph front end: safe external data, folding, dead-node removal, topological order."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.graph.load import load
from hal.graph.passes import optimize


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
