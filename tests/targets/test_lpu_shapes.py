"""What the LPU's compile-time shapes make of ops whose sizes are data-dependent in general: a Compress
whose condition is known, a node reading strings sized from its declared shape once a specialisation
binds its dimension names, and a Loop whose body sizes a tensor from data (refused when compiled, so
fallback can place it)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.errors import RunError, UnsupportedOpError


@pytest.mark.parametrize("condition", ["weight", "from shape", "fed"])
def test_compress_runs_where_its_condition_is_known_at_compile_time(condition):
    # tf2onnx writes MirrorPad (tf.pad SYMMETRIC) as a Compress whose condition it builds from the input's
    # static shape (Shape -> ConstantOfShape -> ScatterElements): the lpu refused every Compress by op
    f = TensorProto.FLOAT
    keep = np.array([1, 0, 1, 1, 0, 1], bool)
    nodes, inits, inputs = [], [], [helper.make_tensor_value_info("x", f, [2, 6])]
    if condition == "weight":
        inits.append(numpy_helper.from_array(keep, "cond"))
    elif condition == "from shape":  # ones of x's width, with position 1 and 4 set to 0
        nodes += [helper.make_node("Shape", ["x"], ["shape"], start=1),
                  helper.make_node("ConstantOfShape", ["shape"], ["ones"],
                                   value=numpy_helper.from_array(np.array([1], np.int64))),
                  helper.make_node("ScatterElements", ["ones", "at", "zeros"], ["flags"]),
                  helper.make_node("Cast", ["flags"], ["cond"], to=TensorProto.BOOL)]
        inits += [numpy_helper.from_array(np.array([1, 4], np.int64), "at"),
                  numpy_helper.from_array(np.zeros(2, np.int64), "zeros")]
    else:
        inputs.append(helper.make_tensor_value_info("cond", TensorProto.BOOL, [6]))
    nodes.append(helper.make_node("Compress", ["x", "cond"], ["y"], axis=1))
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", f, [2, "k"])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    feeds = {"x": x, **({"cond": keep} if condition == "fed" else {})}
    if condition == "fed":
        with pytest.raises(UnsupportedOpError, match="data-dependent output shape: its output length depends"):
            hal.InferenceSession(m, target="lpu")
        return
    (y,) = hal.InferenceSession(m, target="lpu").run(None, feeds)
    np.testing.assert_array_equal(y, x[:, keep])


def test_a_node_that_cannot_run_on_stand_in_values_takes_its_declared_shape_when_specialised():
    # skl2onnx's OneHotEncoder (handle_unknown='error': zeros=0) of a batch of category ids: shape
    # inference gives Y [N, 2, 3], but the zeros the LPU ran the node on to size it are no category, and
    # the node refuses unknown ones; with N bound by the fed X, the declared shape sizes it
    node = helper.make_node("OneHotEncoder", ["X"], ["Y"], domain="ai.onnx.ml", cats_int64s=[7, 8, 9], zeros=0)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.INT64, ["N", 2])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 2, 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    lpu, cpu = hal.InferenceSession(m, target="lpu"), hal.InferenceSession(m, target="cpu")
    for rows in (3, 1):
        x = np.array([[7, 8], [9, 7], [8, 8]][:rows], dtype=np.int64)
        np.testing.assert_array_equal(lpu.run(None, {"X": x})[0], cpu.run(None, {"X": x})[0])
    with pytest.raises(RunError, match="OneHotEncoder"):  # an unknown category is still the run's error
        lpu.run(None, {"X": np.array([[7, 5]], dtype=np.int64)})


def test_a_loop_whose_body_sizes_a_tensor_from_data_is_refused_when_compiled_so_fallback_can_place_it():
    # torchvision's keypoint R-CNN loops over its boxes and resizes each heatmap to its box's width: the
    # trip count is the host's, but no static schedule sizes the body's Resize. The LPU took the Loop
    # and then refused it at run time, where no fallback can move a node
    body = helper.make_graph(
        [helper.make_node("Gather", ["heat", "i"], ["hi"], axis=0),
         helper.make_node("Gather", ["width", "i"], ["wi"], axis=0),
         helper.make_node("Cast", ["wi"], ["wl"], to=TensorProto.INT64),
         helper.make_node("Unsqueeze", ["wl", "ax0"], ["wl1"]),
         helper.make_node("Concat", ["rows", "wl1"], ["sizes"], axis=0),
         helper.make_node("Resize", ["hi", "", "", "sizes"], ["r"], mode="linear"),
         helper.make_node("ReduceMax", ["r"], ["m"], keepdims=0),
         helper.make_node("Identity", ["cond"], ["cond_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("m", TensorProto.FLOAT, [])],
        [numpy_helper.from_array(np.array([0], np.int64), "ax0"),
         numpy_helper.from_array(np.array([8], np.int64), "rows")])
    g = helper.make_graph(
        [helper.make_node("ReduceMax", ["heat"], ["peak"], axes=[1, 2], keepdims=0),
         helper.make_node("Abs", ["peak"], ["width"]),
         helper.make_node("Loop", ["n", "yes"], ["out"], name="boxes", body=body)], "g",
        [helper.make_tensor_value_info("heat", TensorProto.FLOAT, [3, 8, 8])],  # past what the host reads
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(np.array(3, np.int64), "n"), numpy_helper.from_array(np.array(True), "yes")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(UnsupportedOpError, match="Resize in the Loop's body takes its output shape from 'sizes'"):
        hal.InferenceSession(m, target="lpu")
    heat = np.abs(np.random.default_rng(0).standard_normal((3, 8, 8)).astype(np.float32)) * 3 + 1
    got = hal.InferenceSession(m, target="lpu", fallback="allow").run(None, {"heat": heat})[0]
    np.testing.assert_array_equal(got, hal.InferenceSession(m, target="cpu").run(None, {"heat": heat})[0])


def test_a_dict_vectorizer_of_a_map_input_is_one_row_wide_as_its_vocabulary():
    # skl2onnx declares its output [?, V]: the LPU sized it on an empty map of the input's types (one row)
    # where it had no stand-in for a map, and refused it as data-dependent
    mt = helper.make_map_type_proto(TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, None))
    node = helper.make_node("DictVectorizer", ["X"], ["Y"], domain="ai.onnx.ml", string_vocabulary=["a", "b", "c"])
    g = helper.make_graph([node], "g", [helper.make_value_info("X", mt)],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 3)])
    (y,) = hal.InferenceSession(m, target="lpu").run(None, {"X": {"a": 1.0, "c": 3.0, "zzz": 9.0}})
    np.testing.assert_array_equal(y, [[1, 0, 3]])


def test_a_node_whose_inputs_are_too_big_to_stand_in_for_takes_onnxs_inference_of_it(monkeypatch):
    # the compiler sizes a node by running it on zeros of its inputs' shapes, up to a bound (64 MiB):
    # a whisper encoder's scores at batch 2 (72 MB) passed it, and its Softmax was refused as of no
    # known shape. onnx's inference of the one node sizes it now. The bound is lowered to keep this small.
    import hal_lpu.shapes

    monkeypatch.setattr(hal_lpu.shapes, "_ZEROS_LIMIT_BYTES", 4096)
    f = TensorProto.FLOAT
    g = helper.make_graph([helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
                           helper.make_node("MatMul", ["x", "xt"], ["s"]),
                           helper.make_node("Softmax", ["s"], ["y"], axis=-1)], "g",
                          [helper.make_tensor_value_info("x", f, ["b", 64, 16])],
                          [helper.make_tensor_value_info("y", f, ["b", 64, 64])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).standard_normal((3, 64, 16)).astype(np.float32)  # scores: 48 KB
    got = hal.InferenceSession(m, target="lpu", fallback="error").run(None, {"x": x})[0]
    np.testing.assert_allclose(got, hal.InferenceSession(m, target="cpu").run(None, {"x": x})[0], rtol=1e-6)


def test_host_arithmetic_stays_on_the_host_through_a_node_whose_shape_only_running_it_tells():
    # onnx's AffineGrid function body: a size fed as an input goes through an If (taken at compile time)
    # whose branches declare no shapes, then a Concat into ConstantOfShape. The host worked the size out,
    # but past the node of open declared shape the LPU took it for device data and refused the model
    i64, f = TensorProto.INT64, TensorProto.FLOAT
    then_g = helper.make_graph([helper.make_node("Split", ["size"], ["a_t", "b_t"], num_outputs=2)], "then", [],
                               [helper.make_tensor_value_info(n, i64, None) for n in ("a_t", "b_t")])
    else_g = helper.make_graph([helper.make_node("Split", ["size"], ["a_e", "b_e", "c_e"], num_outputs=3)], "else",
                               [], [helper.make_tensor_value_info(n, i64, None) for n in ("a_e", "b_e")])
    nodes = [helper.make_node("Size", ["size"], ["n"]), helper.make_node("Constant", [], ["two"], value_int=2),
             helper.make_node("Equal", ["n", "two"], ["is2"]),
             helper.make_node("If", ["is2"], ["a", "b"], then_branch=then_g, else_branch=else_g),
             helper.make_node("Concat", ["a", "b"], ["shape"], axis=0),
             helper.make_node("ConstantOfShape", ["shape"], ["y"], value=helper.make_tensor("v", f, [1], [1.0]))]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("size", i64, [2])],
                          [helper.make_tensor_value_info("y", f, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    s = hal.InferenceSession(m, target="lpu", fallback="error")
    for size in ([2, 3], [4, 1]):
        (y,) = s.run(None, {"size": np.array(size, np.int64)})
        np.testing.assert_array_equal(y, np.ones(size, np.float32))


def test_an_if_on_a_shape_of_unknown_rank_is_taken_on_the_host():
    # silero-vad (its op15 and half models): an If on Shape(x)[0] returns rank 3 or 4, and a second If
    # reads Shape(that)[1]. Both conditions are host arithmetic on fed shapes, but the second shape's
    # length was open, and the LPU took it for device data and refused the model
    f = TensorProto.FLOAT
    then1 = helper.make_graph([helper.make_node("Relu", ["x"], ["y_t"])], "t1", [],
                              [helper.make_tensor_value_info("y_t", f, None)])
    else1 = helper.make_graph([helper.make_node("Constant", [], ["a3"], value_ints=[3]),
                               helper.make_node("Unsqueeze", ["x", "a3"], ["y_e"])], "e1", [],
                              [helper.make_tensor_value_info("y_e", f, None)])
    then2 = helper.make_graph([helper.make_node("Constant", [], ["a1"], value_ints=[1]),
                               helper.make_node("Squeeze", ["z", "a1"], ["o_t"])], "t2", [],
                              [helper.make_tensor_value_info("o_t", f, None)])
    else2 = helper.make_graph([helper.make_node("Identity", ["z"], ["o_e"])], "e2", [],
                              [helper.make_tensor_value_info("o_e", f, None)])
    nodes = [helper.make_node("Shape", ["x"], ["sx"], start=1, end=2),
             helper.make_node("Constant", [], ["one"], value_ints=[1]),
             helper.make_node("Equal", ["sx", "one"], ["c1v"]), helper.make_node("Squeeze", ["c1v"], ["c1"]),
             helper.make_node("If", ["c1"], ["y"], then_branch=then1, else_branch=else1),
             helper.make_node("Sigmoid", ["y"], ["z"]),
             helper.make_node("Shape", ["z"], ["sz"]), helper.make_node("Constant", [], ["i1"], value_int=1),
             helper.make_node("Gather", ["sz", "i1"], ["d1"]), helper.make_node("Cast", ["d1"], ["d1f"], to=f),
             helper.make_node("Constant", [], ["o"], value_float=1.0),
             helper.make_node("Equal", ["d1f", "o"], ["c2"]),
             helper.make_node("If", ["c2"], ["out"], then_branch=then2, else_branch=else2)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f, [2, "b", 8])],
                          [helper.make_tensor_value_info("out", f, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 15)])
    lpu, cpu = (hal.InferenceSession(m, target=t, fallback="error") for t in ("lpu", "cpu"))
    for b in (1, 3):
        x = np.random.default_rng(b).standard_normal((2, b, 8)).astype(np.float32)
        want = cpu.run(None, {"x": x})[0]
        assert want.ndim == (2 if b == 1 else 4)  # each of the first If's branches is taken once
        np.testing.assert_array_equal(lpu.run(None, {"x": x})[0], want)


def _loop_then_if() -> onnx.ModelProto:
    """A Loop of a fed trip count over x of a fed length, then an If on a fed flag whose branches read
    the Loop's output from the outer scope (as an onnxscript function with a loop, then one with an If)."""
    body = helper.make_graph(
        [helper.make_node("Constant", [], ["half"], value_float=0.5), helper.make_node("Mul", ["y", "half"], ["y2"]),
         helper.make_node("Identity", ["cin"], ["cout"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cin", TensorProto.BOOL, []),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor_value_info("cout", TensorProto.BOOL, []),
         helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["N"])])

    def branch(name: str, op: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node("Constant", [], [f"{name}_k"], value_float=7.0),
                                  helper.make_node(op, ["a", f"{name}_k"], [f"{name}_out"])], name, [],
                                 [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, ["N"])])

    graph = helper.make_graph(
        [helper.make_node("Loop", ["n", "", "x"], ["a"], body=body),
         helper.make_node("If", ["flag"], ["b"], then_branch=branch("t", "Add"), else_branch=branch("e", "Sub"))],
        "loop_then_if", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"]),
                         helper.make_tensor_value_info("n", TensorProto.INT64, []),
                         helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N"])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_a_loop_on_a_fed_shape_keys_its_trip_count():
    # the Loop's output, on a tensor of a fed shape, was marked specialised before its trip count
    # became a key: every specialisation left it open, and the If reading it was refused
    model = _loop_then_if()
    session = hal.InferenceSession(model, target="lpu")
    for length, trips, flag in ((4, 3, True), (6, 0, False), (4, 5, False)):
        feeds = {"x": np.arange(length, dtype=np.float32), "n": np.array(trips), "flag": np.array(flag)}
        want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
        np.testing.assert_allclose(session.run(None, feeds)[0], want[0], rtol=1e-6)


def test_an_if_of_one_static_output_shape_runs_whatever_decides_its_branch():
    # torch.cond on data (ReduceSum > 0 picks sin or cos of x): which branch runs is the device's
    # business, the output's shape is not; the LPU had refused it as a data-dependent output shape
    def branch(name: str, op: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node(op, ["x"], [f"{name}_y"])], name, [],
                                 [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [16, 8])])

    nodes = [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
             helper.make_node("Greater", ["total", "zero"], ["positive"]),
             helper.make_node("If", ["positive"], ["y"], then_branch=branch("t", "Sin"),
                              else_branch=branch("e", "Cos"))]
    graph = helper.make_graph(nodes, "cond", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 8])],
                              [numpy_helper.from_array(np.array(0, np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session = hal.InferenceSession(model, target="lpu")
    for sign in (1, -1):
        x = sign * np.abs(np.random.default_rng(0).standard_normal((16, 8))).astype(np.float32)
        np.testing.assert_allclose(session.run(None, {"x": x})[0], np.sin(x) if sign > 0 else np.cos(x), rtol=1e-6)
    # x small enough for the host to read: the schedule had been keyed on its float values (a compile
    # a run); one static schedule takes either branch
    small = model.__class__()
    small.CopyFrom(model)
    for vi in (small.graph.input[0], small.graph.output[0], *(a.g.output[0] for a in small.graph.node[2].attribute)):
        vi.type.tensor_type.shape.dim[0].dim_value = 3
    session = hal.InferenceSession(small, target="lpu")
    for seed in range(4):
        x = np.random.default_rng(seed).standard_normal((3, 8)).astype(np.float32)
        want = np.sin(x) if x.sum() > 0 else np.cos(x)
        np.testing.assert_allclose(session.run(None, {"x": x})[0], want, rtol=1e-6)
    assert "specialisation" not in session.report.details
    branches = [a for a in model.graph.node[2].attribute]
    branches[1].g.output[0].type.tensor_type.shape.dim[0].dim_value = 4  # the else branch now 4 rows
    model.graph.output[0].type.tensor_type.ClearField("shape")
    with pytest.raises(UnsupportedOpError, match="the branch taken, which a condition computed on the device picks"):
        hal.InferenceSession(model, target="lpu")


def test_a_program_compiled_per_run_reports_the_latest_runs_kernels():
    # an LPU program whose shapes follow its feeds had shown "0 kernels for 2 nodes" after every run
    # (hal run, hal compare, hal profile's empty table): only the figures were the latest run's
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "r"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    s = hal.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), target="lpu")
    assert s.report.details["figures_follow_runs"] is True
    s.run(None, {"x": np.ones((3, 4), np.float32)})
    assert s.report.kernel_count == len(s.report.kernels) > 0
    assert all(k.time_s > 0 for k in s.report.kernels)
