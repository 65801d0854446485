"""Bad model files and graphs, on every installed target: each ends in the right HalError with a
useful message, and the next session on the same target still works."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from _robust_models import (
    TARGETS,
    F,
    matmul_with_weight,
    mlp_model,
    model,
    relu_model,
    save_external,
    session,
    symlink_supported,
    vi,
)
from onnx import helper, numpy_helper

import hal

pytestmark = pytest.mark.parametrize("target", TARGETS)


def _works_after(target: str) -> None:
    """The target is still usable after a failure: a good model compiles and runs."""
    (y,) = session(mlp_model(), target).run(None, {"x": np.ones((2, 4), np.float32)})
    assert y.shape == (2, 3) and np.all(np.isfinite(y))


# -- files --------------------------------------------------------------------------------------

@pytest.mark.parametrize("cut", [1, 7, 0.5, -1])
def test_truncated_file_is_a_model_error_naming_the_file(tmp_path, target, cut):
    data = mlp_model().SerializeToString()
    n = int(len(data) * cut) if isinstance(cut, float) else (cut if cut > 0 else len(data) + cut)
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[:n])
    with pytest.raises(hal.ModelError) as ei:
        session(str(p), target)
    assert "cut.onnx" in str(ei.value)
    _works_after(target)


@pytest.mark.parametrize("seed", range(3))
def test_random_bytes_are_a_model_error(tmp_path, target, seed):
    p = tmp_path / "noise.onnx"
    p.write_bytes(np.random.default_rng(seed).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    with pytest.raises(hal.ModelError, match="noise.onnx"):
        session(str(p), target)


def test_bytes_with_flipped_bits_are_a_model_error_or_a_working_model(target):
    data = bytearray(mlp_model().SerializeToString())
    rng = np.random.default_rng(1)
    for _ in range(20):
        mutated = bytearray(data)
        for i in rng.integers(0, len(data), 3):
            mutated[i] ^= 1 << int(rng.integers(0, 8))
        try:
            s = session(bytes(mutated), target)
            s.run(None, {i.name: np.ones([d if isinstance(d, int) else 1 for d in i.shape], i.dtype)
                         for i in s.get_inputs()})
        except hal.HalError:
            pass


def test_valid_protobuf_that_is_not_a_model_is_a_model_error(target):
    tensor = numpy_helper.from_array(np.ones(3, np.float32), "t")
    with pytest.raises(hal.ModelError, match="no graph|not a valid ONNX"):
        session(tensor.SerializeToString(), target)
    with pytest.raises(hal.ModelError, match="no graph"):
        session(onnx.ModelProto(ir_version=8, producer_name="x").SerializeToString(), target)


def test_a_folder_and_a_missing_path_are_model_errors(tmp_path, target):
    with pytest.raises(hal.ModelError, match="folder"):
        session(str(tmp_path), target)
    with pytest.raises(hal.ModelError, match="no such file"):
        session(str(tmp_path / "absent.onnx"), target)


# -- graphs -------------------------------------------------------------------------------------

def test_model_without_opset_import_is_a_model_error(target):
    m = relu_model()
    del m.opset_import[:]
    with pytest.raises(hal.ModelError, match="opset"):
        session(m, target)


def test_duplicate_output_names_are_a_model_error(target):
    m = model([helper.make_node("Relu", ["x"], ["y"], name="a"), helper.make_node("Neg", ["x"], ["y"], name="b")],
              [vi("x", F, [2])], [vi("y", F, [2])])
    with pytest.raises(hal.ModelError, match="y"):
        session(m, target)


def test_duplicate_node_names_are_renamed_not_refused(target):
    m = model([helper.make_node("Relu", ["x"], ["h"], name="same"), helper.make_node("Neg", ["h"], ["y"], name="same")],
              [vi("x", F, [2])], [vi("y", F, [2])])
    (y,) = session(m, target).run(None, {"x": np.array([-1.0, 2.0], np.float32)})
    np.testing.assert_array_equal(y, [-0.0, -2.0])


def test_dangling_input_is_a_model_error_naming_it(target):
    m = model([helper.make_node("Add", ["x", "ghost"], ["y"], name="add")], [vi("x", F, [2])], [vi("y", F, [2])])
    with pytest.raises(hal.ModelError, match="ghost"):
        session(m, target)


def test_missing_initializer_is_a_model_error_naming_it(target):
    m = matmul_with_weight()
    del m.graph.initializer[:]
    with pytest.raises(hal.ModelError, match="'?w'?"):
        session(m, target)


def test_output_nobody_produces_is_a_model_error(target):
    m = model([helper.make_node("Relu", ["x"], ["h"], name="r")], [vi("x", F, [2])], [vi("nowhere", F, [2])])
    with pytest.raises(hal.ModelError, match="nowhere"):
        session(m, target)


def _cyclic_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="n1"), helper.make_node("Relu", ["a"], ["b"], name="n2")]
    return model(nodes, [vi("x", F, [2])], [vi("a", F, [2])])


def test_cycle_is_a_model_error(target):
    m = _cyclic_model()
    with pytest.raises(hal.ModelError, match="cycle|topologically|not output of any previous"):
        session(m, target)


def test_cycle_is_found_even_without_the_checker(target):
    from hal.graph.load import load

    with pytest.raises(hal.ModelError, match="cycle through node"):
        load(_cyclic_model(), check=False, infer_shapes=False)


def test_unknown_domain_is_unsupported_naming_node_and_domain(target):
    m = relu_model()
    m.graph.node[0].domain = "com.vendor.secret"
    m.opset_import.append(helper.make_opsetid("com.vendor.secret", 3))
    with pytest.raises(hal.UnsupportedOpError) as ei:
        session(m, target)
    assert "Relu" in str(ei.value) and ei.value.nodes and ei.value.nodes[0][0] == "r"


def test_domain_without_opset_import_is_a_model_error(target):
    m = relu_model()
    m.graph.node[0].domain = "com.vendor.secret"
    with pytest.raises(hal.ModelError, match="com.vendor.secret"):
        session(m, target)


@pytest.mark.parametrize("opset", [0, 999])
def test_unknown_opset_version_is_a_model_error(target, opset):
    with pytest.raises(hal.ModelError, match="opset|Opset|version"):
        session(relu_model_at(opset), target)


def relu_model_at(opset: int) -> onnx.ModelProto:
    m = relu_model()
    m.opset_import[0].version = opset
    return m


def test_attribute_of_the_wrong_type_is_a_model_error(target):
    m = model([helper.make_node("Softmax", ["x"], ["y"], name="sm", axis="last")], [vi("x", F, [2, 3])],
              [vi("y", F, [2, 3])])
    with pytest.raises(hal.ModelError, match="axis"):
        session(m, target)


def test_out_of_range_attribute_is_a_hal_error_naming_the_node(target):
    m = model([helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=7)], [vi("x", F, [2, 3])],
              [vi("y", F, [2, 3])])
    with pytest.raises(hal.HalError) as ei:
        s = session(m, target)
        s.run(None, {"x": np.ones((2, 3), np.float32)})
    assert "sm" in str(ei.value) or "axis" in str(ei.value)


def test_declared_output_shape_that_contradicts_inference_runs_as_onnxruntime_does(target):
    # Exporters write wrong value_info often enough that onnxruntime only warns: hal runs the program.
    m = model([helper.make_node("Relu", ["x"], ["y"], name="r")], [vi("x", F, [2, 3])], [vi("y", F, [5, 7, 9])])
    (y,) = session(m, target).run(None, {"x": -np.ones((2, 3), np.float32)})
    assert y.shape == (2, 3) and not y.any()


def test_initializer_whose_data_does_not_match_its_dims_is_a_model_error(target):
    m = matmul_with_weight()
    m.graph.initializer[0].dims[:] = [400, 300]
    with pytest.raises(hal.ModelError):
        session(m, target)


def _field(num: int, payload: bytes | int) -> bytes:
    """One protobuf field: varint for ints, length-delimited for bytes (enough to hand-craft nesting)."""
    def varint(v: int) -> bytes:
        out = bytearray()
        while True:
            out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
            v >>= 7
            if not v:
                return bytes(out)
    if isinstance(payload, int):
        return varint(num << 3) + varint(payload)
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def test_nesting_deeper_than_protobuf_allows_is_a_model_error(target):
    graph = _field(2, b"leaf")
    for _ in range(500):  # Graph{node: Node{op_type: If, attribute: Attribute{name, g: Graph, type: GRAPH}}}
        attr = _field(1, b"then_branch") + _field(6, graph) + _field(20, 5)
        graph = _field(1, _field(4, b"If") + _field(5, attr))
    data = _field(1, 8) + _field(7, graph) + _field(8, _field(2, 17))
    with pytest.raises(hal.ModelError, match="not a valid ONNX protobuf"):
        session(data, target)


@pytest.mark.parametrize("depth", [5, 30])
def test_deeply_nested_subgraphs_are_refused_or_run_without_a_crash(target, depth):
    inner = helper.make_graph([helper.make_node("Identity", ["x"], ["o0"])], "b0", [], [vi("o0", F, [1])])
    for d in range(1, depth):
        other = helper.make_graph([helper.make_node("Neg", ["x"], [f"n{d}"])], f"e{d}", [], [vi(f"n{d}", F, [1])])
        inner = helper.make_graph(
            [helper.make_node("If", ["c"], [f"o{d}"], then_branch=inner, else_branch=other)], f"b{d}", [],
            [vi(f"o{d}", F, [1])])
    m = model(list(inner.node), [vi("x", F, [1]), helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, [])],
              [vi(f"o{depth - 1}", F, [1])])
    for form in (m, m.SerializeToString()):  # parsing bytes meets protobuf's recursion limit
        try:
            s = session(form, target)
            (y,) = s.run(None, {"x": np.ones(1, np.float32), "c": np.array(True)})
            assert y.tolist() == [1.0]
        except hal.HalError:
            pass


# -- external data ------------------------------------------------------------------------------

@pytest.mark.parametrize("location", ["/etc/passwd", "../w.bin", "sub/../../w.bin", "..\\w.bin", "C:\\w.bin", "",
                                      "w.bin\x00.txt", "w\nbin"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, target, location):
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "w.bin").write_bytes(b"\0" * 48)
    path = save_external(matmul_with_weight(), folder, location)
    with pytest.raises(hal.ModelError, match="external-data location"):
        session(str(path), target)


@pytest.mark.parametrize("linked", ["file", "folder"])
def test_external_data_through_a_link_leading_outside_is_refused(tmp_path, target, linked):
    if not symlink_supported(tmp_path):
        pytest.skip("no symlinks here")
    folder = tmp_path / "model"
    folder.mkdir()
    path = save_external(matmul_with_weight(), folder, "w.bin")
    if linked == "file":  # model/link.bin -> ../secret.bin
        os.replace(folder / "w.bin", tmp_path / "secret.bin")
        os.symlink(tmp_path / "secret.bin", folder / "link.bin")
        location = "link.bin"
    else:  # model/data -> ../elsewhere, holding w.bin
        outside = tmp_path / "elsewhere"
        outside.mkdir()
        os.replace(folder / "w.bin", outside / "w.bin")
        os.symlink(outside, folder / "data")
        location = "data/w.bin"
    path = save_external(onnx.load(str(path), load_external_data=False), folder, location)
    with pytest.raises(hal.ModelError, match="outside the model's folder"):
        session(str(path), target)


def test_external_data_beside_the_model_loads_and_runs(tmp_path, target):
    path = save_external(matmul_with_weight(), tmp_path, "w.bin")
    (y,) = session(str(path), target).run(None, {"x": np.ones((1, 4), np.float32)})
    np.testing.assert_allclose(y, np.ones((1, 4), np.float32) @ np.arange(12, dtype=np.float32).reshape(4, 3),
                               rtol=1e-6)


def test_external_data_missing_or_short_is_a_model_error(tmp_path, target):
    path = save_external(matmul_with_weight(), tmp_path, "w.bin")
    (tmp_path / "w.bin").write_bytes(b"\0" * 8)  # 8 of the 48 bytes the tensor declares
    with pytest.raises(hal.ModelError):
        session(str(path), target)
    (tmp_path / "w.bin").unlink()
    with pytest.raises(hal.ModelError, match="does not exist"):
        session(str(path), target)


def test_external_data_in_bytes_needs_the_file_path(tmp_path, target):
    path = save_external(matmul_with_weight(), tmp_path, "w.bin")
    with pytest.raises(hal.ModelError, match="external data"):
        session(path.read_bytes(), target)


def test_unknown_op_in_the_default_domain_names_node_and_op(target):
    m = model([helper.make_node("FrobnicateX", ["x"], ["y"], name="frob")], [vi("x", F, [2])], [vi("y", F, [2])])
    with pytest.raises(hal.HalError) as ei:
        session(m, target)
    assert isinstance(ei.value, (hal.ModelError, hal.UnsupportedOpError)) and "FrobnicateX" in str(ei.value)
