"""Regressions: each bug the battery or the fuzzer found, pinned by the smallest input that showed it."""

from __future__ import annotations

import io
import pickle
import zipfile
from typing import Any

import numpy as np
import onnx
import pytest
from _robust_models import F, model, session, vi
from onnx import TensorProto, helper

import hal
from hal import plugins
from hal.cli import main
from hal.graph.load import load
from hal.specs import TargetSpec
from hal.target import kernel_capability


class NoIfTarget:
    """cpu under another name that refuses If, so an If lands in a cpu fallback partition of its own."""

    spec = TargetSpec(name="no-if", vendor="Test", kind="other")

    def capability(self, graph: Any, options: Any) -> Any:
        return kernel_capability(graph, "no-if", refuse=lambda n, g: "no If here" if n.op_type == "If" else None)

    def compile(self, graph: Any, options: Any) -> Any:
        return plugins.get_target("cpu").compile(graph, options)

    def load(self, blob: bytes) -> Any:
        return plugins.get_target("cpu").load(blob)


class NoIfPlugin:
    HAL_API_VERSION = "1.0"

    @hal.hookimpl
    def hal_targets(self) -> list[Any]:
        return [NoIfTarget()]


def test_if_body_reading_an_outer_value_across_a_fallback_partition():
    # Found by the battery: the partition around the If got no input for the value its branches read
    # by name ("h"), and the branch returned None instead of a tensor.
    then_b = helper.make_graph([helper.make_node("Identity", ["h"], ["t"])], "then", [], [vi("t", F, [2])])
    else_b = helper.make_graph([helper.make_node("Neg", ["h"], ["e"])], "else", [], [vi("e", F, [2])])
    m = model([helper.make_node("Relu", ["x"], ["h"], name="relu"),
               helper.make_node("If", ["c"], ["y"], name="if", then_branch=then_b, else_branch=else_b)],
              [vi("x", F, [2]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])], [vi("y", F, [2])])
    plugins.register(NoIfPlugin(), "no-if")
    try:
        s = session(m, "no-if")
        assert [p.target for p in s.report.placement] == ["no-if", "cpu"]
        x = np.array([-1.0, 2.0], np.float32)
        np.testing.assert_array_equal(s.run(None, {"x": x, "c": np.array(True)})[0], [0.0, 2.0])
        np.testing.assert_array_equal(s.run(None, {"x": x, "c": np.array(False)})[0], [-0.0, -2.0])
    finally:
        plugins.unregister("no-if")


def test_body_reading_a_name_nobody_provides_is_a_run_error_not_none():
    from hal.engine import Subgraph

    body = helper.make_graph([helper.make_node("Identity", ["nowhere"], ["o"])], "body", [], [vi("o", F, [1])])
    with pytest.raises(hal.RunError, match="'nowhere'"):
        Subgraph(body, {"": 17})(scope={})


def test_programs_with_closure_kernels_pickle_for_the_cache():
    # Found by the cache: Softmax-13's kernel is a closure, so the cpu program could not be serialized.
    exe = hal.compile("zoo:tiny-gpt", "cpu")
    again = pickle.loads(exe.serialize())
    from hal.feeds import random_feeds

    feeds = random_feeds(hal.InferenceSession("zoo:tiny-gpt").graph, seed=1)
    for k, v in exe.run(feeds).items():
        np.testing.assert_array_equal(v, again.run(feeds)[k])


def test_opset_newer_than_onnx_knows_is_a_model_error():
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", F, [2])], [vi("y", F, [2])])
    m.opset_import[0].version = onnx.defs.onnx_opset_version() + 1
    with pytest.raises(hal.ModelError, match="newer than the newest"):
        hal.InferenceSession(m)


# -- the CLI: found by benchmarks/fuzz.py's cli target --------------------------------------------

@pytest.fixture
def model_file(tmp_path):
    p = tmp_path / "m.onnx"
    onnx.save(model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", F, [2, 3])], [vi("y", F, [2, 3])]), str(p))
    return p


def _run(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def test_cli_option_naming_a_command_argument_is_an_input_error(model_file, capsys):
    # was: TypeError "got multiple values for keyword argument 'devices'", exit 3
    code, err = _run(capsys, "run", str(model_file), "--option", "devices=[1]")
    assert code == 2 and "InputError" in err and "--devices" in err


@pytest.mark.parametrize("content", [b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2,",
                                     b"\x93NUMPY\x01\x00\x02\x00{", b"PK\x03\x04garbage", b""])
def test_cli_corrupt_npy_input_is_an_input_error(model_file, tmp_path, capsys, content):
    # was: tokenize.TokenError from numpy's header parser, exit 3
    bad = tmp_path / "x.npy"
    bad.write_bytes(content)
    code, err = _run(capsys, "run", str(model_file), "--input", f"x={bad}")
    assert code == 2 and "InputError" in err and "x.npy" in err


def test_cli_npz_given_as_one_input_is_an_input_error(model_file, tmp_path, capsys):
    npz = tmp_path / "x.npz"
    np.savez(npz, a=np.ones(2))
    code, err = _run(capsys, "run", str(model_file), "--input", f"x={npz}")
    assert code == 2 and "--inputs" in err


def test_cli_npz_that_inflates_beyond_the_bound_is_refused_before_reading(model_file, tmp_path, capsys):
    bomb = tmp_path / "bomb.npz"
    buf = io.BytesIO()
    np.save(buf, np.zeros((512, 1024), np.float32))  # 2 MiB of zeros: a few KiB compressed
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", buf.getvalue())
    assert bomb.stat().st_size < 64 << 10
    code, err = _run(capsys, "run", str(model_file), "--inputs", str(bomb), "--max-memory", "1MiB")
    assert code == 2 and "ResourceError" in err and "max_memory" in err


@pytest.mark.parametrize("dim", ["n=abc", "n=-1", "n=1.5"])
def test_cli_bad_dim_is_an_input_error(model_file, capsys, dim):
    # was: ValueError from int(), exit 3
    code, err = _run(capsys, "run", str(model_file), "--dim", dim)
    assert code == 2 and "InputError" in err and "--dim" in err


def test_cli_huge_dim_for_random_inputs_is_refused_before_allocating(tmp_path, capsys):
    p = tmp_path / "dyn.onnx"
    onnx.save(model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", F, ["n", 3])], [vi("y", F, ["n", 3])]), str(p))
    code, err = _run(capsys, "run", str(p), "--dim", f"n={2**40}")
    # (the size is bound in the session: its graph check refuses the input before any random one is drawn)
    assert code == 2 and "ResourceError" in err and "tensor 'x' float32[1099511627776, 3]" in err


@pytest.mark.parametrize("flag,value", [("--max-memory", "lots"), ("--timeout", "-1")])
def test_cli_bad_bounds_are_hal_errors(model_file, capsys, flag, value):
    code, err = _run(capsys, "run", str(model_file), flag, value)
    assert code == 2 and err.startswith("error:")


def test_cli_unwritable_output_is_an_error_line_not_an_internal_error(model_file, tmp_path, capsys):
    code, err = _run(capsys, "run", str(model_file), "--json", str(model_file / "o.json"))  # under a file
    assert code == 2 and err.startswith("error:") and "internal error" not in err


# -- found by benchmarks/fuzz.py's loader target ------------------------------------------------

def test_tensor_attribute_whose_data_does_not_fit_its_dims_is_a_model_error():
    # was: ValueError "cannot reshape array of size 0 into shape (1,)" from numpy_helper, unhandled
    node = helper.make_node("Constant", [], ["y"], name="c", value=onnx.numpy_helper.from_array(np.ones(1, np.float32)))
    node.attribute[0].t.raw_data = np.ones(2, np.float32).tobytes()  # two values for dims [1]
    with pytest.raises(hal.ModelError, match="node 'c' \\(Constant\\) has an attribute that cannot be read"):
        hal.InferenceSession(model([node], [], [vi("y", F, [1])]))


def test_declared_long_integer_vector_does_not_stall_shape_inference():
    # was: a hang — onnx's data propagation walked all 2**31 - 1 declared elements of Slice's 'ends'
    import time


    m = model([helper.make_node("Slice", ["x", "starts", "ends"], ["y"], name="slice")],
              [vi("x", F, [20, 10]), vi("starts", TensorProto.INT64, [2]), vi("ends", TensorProto.INT64, [2**31 - 1])],
              [vi("y", F, ["a", "b"])])
    t0 = time.monotonic()
    try:
        g = load(m)
        assert "off" in g.metadata["hal.data_propagation"]
    except hal.HalError:
        pass
    assert time.monotonic() - t0 < 10


def test_sequence_outputs_print_and_save_from_the_cli(tmp_path, capsys):
    # was: ValueError "inhomogeneous shape" from np.shape on a sequence of unequal arrays, exit 3
    seq_t = helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None)
    m = model([helper.make_node("SplitToSequence", ["x", "sizes"], ["seq"], name="split", axis=0)],
              [vi("x", F, [5]), vi("sizes", TensorProto.INT64, [2])], [seq_t])
    p = tmp_path / "seq.onnx"
    onnx.save(m, str(p))
    sizes = tmp_path / "sizes.npy"
    np.save(sizes, np.array([2, 3], np.int64))
    out = tmp_path / "out.npz"
    assert main(["run", str(p), "--input", f"sizes={sizes}", "--save", str(out)]) == 0, capsys.readouterr().err
    saved = np.load(out)
    assert sorted(saved.files) == ["seq.0", "seq.1"] and saved["seq.1"].shape == (3,)


def test_random_inputs_for_a_gather_with_an_out_of_range_axis(tmp_path, capsys):
    # was: IndexError in hal.feeds._index_bound, so `hal run` printed an internal error
    data = onnx.numpy_helper.from_array(np.ones((4, 3), np.float32), "data")
    m = model([helper.make_node("Gather", ["data", "i"], ["y"], name="g", axis=5)],
              [vi("i", TensorProto.INT64, [2])], [vi("y", F, ["a", "b"])], [data])
    p = tmp_path / "g.onnx"
    onnx.save(m, str(p))
    code, err = _run(capsys, "run", str(p))
    assert code == 2 and err.startswith("error:") and "internal error" not in err


@pytest.mark.parametrize("axis", [2**63 - 1, -(2**63)])
def test_axis_near_int64_limits_is_refused_before_onnx_inference(axis):
    # was: a segmentation fault inside onnx's LayerNormalization shape inference (axis = INT64_MAX)
    nodes = [helper.make_node("LayerNormalization", ["x", "w", "b"], ["y"], name="ln", axis=axis)]
    m = model(nodes, [vi("x", F, [2, 4]), vi("w", F, [4]), vi("b", F, [4])], [vi("y", F, [2, 4])])
    with pytest.raises(hal.ModelError, match="axis out of any tensor's range"):
        hal.InferenceSession(m)


def test_declared_long_float_vector_does_not_exhaust_memory_in_shape_inference():
    # was: std::bad_alloc after ~20 s in onnx's data propagation of Gather over a declared [2**32] vector
    import time

    m = model([helper.make_node("Gather", ["w", "i"], ["y"], name="g")],
              [vi("w", F, [2**32]), vi("i", TensorProto.INT64, [3, 2])], [vi("y", F, [3, 2])])
    t0 = time.monotonic()
    with pytest.raises(hal.ResourceError, match="'w'"):  # and the session refuses the 16 GiB input itself
        hal.InferenceSession(m, max_memory=1 << 30)
    assert time.monotonic() - t0 < 10


def test_metadata_that_is_not_utf8_loads():
    # was: TypeError — protobuf hands back bytes for a proto2 string field that is not valid UTF-8

    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", F, [2])], [vi("y", F, [2])])
    m.metadata_props.append(onnx.StringStringEntryProto(key="note", value="abc"))
    raw = bytearray(m.SerializeToString())
    i = raw.rfind(b"abc")
    raw[i:i + 3] = b"a\xffc"
    g = load(bytes(raw))
    assert g.metadata["note"] == "a\ufffdc"


@pytest.mark.parametrize("op", ["Conv", "ConvInteger", "MaxPool"])
def test_conv_and_pool_pads_that_ask_for_terabytes_are_refused_before_allocating(op):
    # was: MemoryError inside ConvInteger (160 GiB im2col for pads [2**32, 1, 1, 1]), a guard escape
    import tracemalloc

    elem = TensorProto.UINT8 if op == "ConvInteger" else TensorProto.FLOAT
    attrs = {"pads": [2**32, 1, 1, 1]}
    inputs = [vi("x", elem, [1, 1, 3, 3])]
    if op == "MaxPool":
        attrs["kernel_shape"] = [2, 2]
        node = helper.make_node(op, ["x"], ["y"], name="n", **attrs)
    else:
        inputs.append(vi("w", elem, [2, 1, 2, 2]))
        node = helper.make_node(op, ["x", "w"], ["y"], name="n", **attrs)
    out = TensorProto.INT32 if op == "ConvInteger" else TensorProto.FLOAT
    m = model([node], inputs, [helper.make_tensor_value_info("y", out, ["a", "b", "c", "d"])],
              opset=17)
    dtype = np.uint8 if op == "ConvInteger" else np.float32
    feeds = {i.name: np.ones([d.dim_value for d in i.type.tensor_type.shape.dim], dtype) for i in inputs}
    tracemalloc.start()
    try:
        with pytest.raises(hal.ResourceError, match="refused before allocating"):
            session(m, "cpu").run(None, feeds)
        assert tracemalloc.get_traced_memory()[1] < 64 << 20
    finally:
        tracemalloc.stop()


def test_ordinary_convolutions_pass_the_guard():
    from hal.feeds import random_feeds

    for name in ("zoo:tiny-cnn",):
        s = session(name, "cpu", max_memory=64 << 20)
        assert s.run(None, random_feeds(s.graph))[0].shape == (1, 10)


def _one_node(op: str, inputs: list, out_shape: list, **attrs) -> onnx.ModelProto:
    node = helper.make_node(op, [i.name for i in inputs], ["y"], name="n", **attrs)
    return model([node], inputs, [vi("y", F, out_shape)], opset=17)


@pytest.mark.parametrize("case", ["maxpool-rank", "maxpool-taps", "lrn-size", "avgpool-dilation", "avgpool-pads"])
def test_attribute_controlled_kernel_loops_are_refused_before_running(case):
    # was: MaxPool kernel_shape [2, 2, 2**31 - 1] on 2-D input (np.ndindex materialised 2**31 taps: MemoryError),
    # and LRN size 2**62 (a Python loop over the window: a hang)
    x = vi("x", F, [1, 1, 5, 5])
    if case == "maxpool-rank":
        m = _one_node("MaxPool", [x], ["a", "b", "c", "d"], kernel_shape=[2, 2, 2**31 - 1])
    elif case == "maxpool-taps":
        m = _one_node("MaxPool", [x], ["a", "b", "c", "d"], kernel_shape=[2**20, 2**20])
    elif case == "lrn-size":
        m = _one_node("LRN", [x], [1, 1, 5, 5], size=2**62)
    elif case == "avgpool-pads":  # was: MemoryError, 384 TiB from pads of the wrong length (5 for 2-D)
        m = _one_node("AveragePool", [x], ["a", "b", "c", "d"], kernel_shape=[3, 3], pads=[2, 2, 2, 2**40, 2**40])
        m.opset_import[0].version = 22
    else:  # was: MemoryError, 32 GiB to pad the input out to one dilated window
        m = _one_node("AveragePool", [x], ["a", "b", "c", "d"], kernel_shape=[2, 2], dilations=[2**31 - 1, 2],
                      strides=[1, 1], ceil_mode=1)
        m.opset_import[0].version = 22
    import time

    t0 = time.monotonic()
    with pytest.raises(hal.HalError, match="loop|kernel_shape|size|refused before allocating"):
        session(m, "cpu").run(None, {"x": np.ones((1, 1, 5, 5), np.float32)})
    assert time.monotonic() - t0 < 10


def test_roi_align_output_size_is_bounded():
    # was: MemoryError for a 480 GiB output (output_width 2**32), a guard escape
    inputs = [vi("x", F, [1, 1, 10, 10]), vi("rois", F, [3, 4]), vi("idx", TensorProto.INT64, [3])]
    m = _one_node("RoiAlign", inputs, ["a", "b", "c", "d"], output_height=5, output_width=2**32)
    feeds = {"x": np.ones((1, 1, 10, 10), np.float32), "rois": np.ones((3, 4), np.float32),
             "idx": np.zeros(3, np.int64)}
    with pytest.raises(hal.ResourceError, match="refused before allocating"):
        session(m, "cpu").run(None, feeds)


def test_names_that_are_not_utf8_are_a_model_error():
    # was: bytes as the graph's name reached the targets' CompileReport(model=...): ValidationError in plugins
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", F, [2])], [vi("y", F, [2])])
    m.graph.name = "gname"
    raw = bytearray(m.SerializeToString())
    i = raw.find(b"gname")
    raw[i:i + 5] = b"g\xe9ame"
    with pytest.raises(hal.ModelError, match="not valid UTF-8"):
        hal.InferenceSession(bytes(raw))


@pytest.mark.parametrize("via", ["session", "estimate"])
def test_wafer_refuses_a_shape_only_weight_of_2_pow_62_elements_fast(via, tmp_path, capsys):
    # was: a hang compiling for wafer: the fewest wafers that hold the weight (~7e8) made the pipelined
    # mode try every count up to twice that, and the refusal listed them all
    from hal.zoo.graph_builder import GraphBuilder

    b = GraphBuilder("huge")
    x = b.input("x", F, [1, 4])
    w = b.shape_only_weight("w", F, [4, 2**60])
    b.output(b.op("MatMul", [x, w], name="mm", out="y"), F, [1, 2**60])
    m = b.model({})
    import time

    t0 = time.monotonic()
    if via == "session":
        with pytest.raises(hal.ResourceError, match=r"fits in no allowed mode.*GiB") as err:
            hal.InferenceSession(m, target="wafer")
        assert "wafer" in str(err.value)
    else:
        p = tmp_path / "huge.onnx"
        onnx.save(m, p)
        assert main(["estimate", str(p), "--target", "wafer"]) != 0
        said = capsys.readouterr()
        assert "fits in no allowed mode" in said.out + said.err
    assert time.monotonic() - t0 < 30


def _lying_fold_model(op: str) -> onnx.ModelProto:
    """A weight-only ``op`` whose 2,000,000,000-byte result the model declares as one element."""
    from onnx import numpy_helper

    if op == "Expand":
        inits = [numpy_helper.from_array(np.ones(1, np.float32), "a"),
                 numpy_helper.from_array(np.array([1000, 1000, 500], np.int64), "s")]
        node = helper.make_node("Expand", ["a", "s"], ["c"], name="bomb")
    elif op == "Tile":
        inits = [numpy_helper.from_array(np.ones((1, 1000), np.float32), "a"),
                 numpy_helper.from_array(np.array([1000, 500], np.int64), "s")]
        node = helper.make_node("Tile", ["a", "s"], ["c"], name="bomb")
    else:
        inits = [numpy_helper.from_array(np.array([1000, 1000, 500], np.int64), "s")]
        node = helper.make_node("ConstantOfShape", ["s"], ["c"], name="bomb")
    return model([node, helper.make_node("ReduceSum", ["c"], ["y"], name="sum", keepdims=0)], [], [vi("y", F, [])],
                 inits, value_info=[vi("c", F, [1])])


@pytest.mark.parametrize("op", ["Expand", "Tile", "ConstantOfShape"])
def test_lpu_compile_time_folding_checks_the_size_before_running_a_kernel(op):
    # was (issue 9): hal_lpu.shapes ran weight-only kernels at capability/compile to learn shapes, trusting
    # the declared [1]; the guard must size the output from the arguments first, as hal.engine does
    import tracemalloc

    from hal_lpu.shapes import resolve_shapes

    from hal import limits

    m = _lying_fold_model(op)
    graph = load(m)
    tracemalloc.start()
    try:
        with limits.bounds(100 << 20):
            resolved = resolve_shapes(graph)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, peak
    assert "c" not in resolved.known  # not folded: left to the run, which refuses it
    with pytest.raises(hal.ResourceError, match=rf"{op} would need .*2,000,000,000 bytes"):
        session(m, "lpu", max_memory=100 << 20).run(None, {})
