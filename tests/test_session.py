"""The unified API on the reference target: light zoo, exported transformers, placement/fallback."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import hal
from hal import plugins
from hal.target import kernel_capability
from tests.conftest import FIXTURES, LIGHT_MODELS, assert_light_output, light_case_with_scores


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_matches_expected_output_on_cpu(name):
    """The shipped output (see ``assert_light_output``), and the scores the final Softmax reads
    within float32 rounding, over some 60 layers, of onnxruntime's."""
    model, feeds, expected = light_case_with_scores(name)
    out, *scores = hal.InferenceSession(model, target="cpu").run(None, feeds)
    if scores:
        np.testing.assert_allclose(scores[0], _ort(onnx.load_from_string(model), feeds)[1], rtol=1e-5)
    assert_light_output(out, scores[0] if scores else None, expected)


def _ort(path_or_model, feeds):
    data = path_or_model.SerializeToString() if isinstance(path_or_model, onnx.ModelProto) else str(path_or_model)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


@pytest.mark.parametrize("fixture", ["bert_tiny.onnx", "gpt_tiny.onnx", "bert_tiny_dynamo.onnx"])
def test_exported_transformer_matches_onnxruntime(fixture):
    path = FIXTURES / fixture
    sess = hal.InferenceSession(str(path))
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "LayerNormalization" in ops and "MatMul" in ops and "Softmax" in ops
    rng = np.random.default_rng(1)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else 2 for d in i.shape]
        if "mask" in i.name:
            m = np.ones(shape, np.int64)
            m[..., -3:] = 0  # padding exercises the additive mask
            feeds[i.name] = m
        else:
            feeds[i.name] = rng.integers(0, 512, size=shape).astype(np.int64)
    ours = sess.run(None, feeds)
    theirs = _ort(path, feeds)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_tiny_gpt_matches_onnxruntime_and_runs_fast():
    from hal.zoo import build

    model = build("tiny-gpt")
    sess = hal.InferenceSession("zoo:tiny-gpt")
    ids = np.random.default_rng(0).integers(0, 256, size=(1, 16)).astype(np.int64)
    (ours,) = sess.run(None, {"input_ids": ids})
    (theirs,) = _ort(model, {"input_ids": ids})
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_session_describes_inputs_and_outputs_like_onnxruntime():
    sess = hal.InferenceSession("zoo:tiny-gpt")
    (i,) = sess.get_inputs()
    assert (i.name, i.shape, i.type) == ("input_ids", [1, 16], "tensor(int64)")
    (o,) = sess.get_outputs()
    assert o.name == "logits" and o.type == "tensor(float)"
    assert sess.report.target == "cpu" and sess.report.node_count > 0


def test_output_names_select_outputs():
    sess = hal.InferenceSession("zoo:tiny-gpt")
    ids = np.zeros((1, 16), np.int64)
    assert len(sess.run(["logits"], {"input_ids": ids})) == 1


def test_last_run_reports_the_latest_run_when_read():
    sess = hal.InferenceSession("zoo:tiny-gpt", target="gpu")
    assert sess.last_run is None
    ids = np.zeros((1, 16), np.int64)
    sess.run(["logits"], {"input_ids": ids})
    first = sess.last_run
    assert first is not None and first.target == "gpu" and first.outputs == ["logits"]
    assert first.wall_time_s > 0 and first.modelled_latency_s == sess.report.latency_s
    assert sess.last_run is first  # built once, when first read
    sess.run(None, {"input_ids": ids})
    assert sess.last_run is not first and sess.last_run.outputs == ["logits"]
    hal.specs.RunReport.model_validate(sess.last_run.model_dump())  # a valid report, though built unvalidated


def _two_op_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Softmax", ["r"], ["s"], name="softmax", axis=-1),
             helper.make_node("Neg", ["s"], ["y"], name="neg")]
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])


class _RefusesSoftmax:
    """A fixture target: the reference kernels, but it refuses Softmax."""

    from hal.specs import TargetSpec

    spec = TargetSpec(name="no-softmax", vendor="test", kind="other")

    def capability(self, graph, options):
        return kernel_capability(graph, self.spec.name,
                                 lambda n, g: "no exp unit" if n.op_type == "Softmax" else None)

    def compile(self, graph, options):
        from hal_cpu.compiler import CpuTarget

        exe = CpuTarget().compile(graph, options)
        exe.report.target = self.spec.name
        return exe

    def load(self, blob):
        raise NotImplementedError


class _Plugin:
    HAL_API_VERSION = "1.0"

    @hal.hookimpl
    def hal_targets(self):
        return [_RefusesSoftmax()]


@pytest.fixture
def refusing_target():
    plugins.register(_Plugin(), "no-softmax-plugin")
    yield "no-softmax"
    plugins.unregister("no-softmax-plugin")


def test_fallback_error_names_each_refused_node_and_reason(refusing_target):
    with pytest.raises(hal.UnsupportedOpError) as ei:
        hal.InferenceSession(_two_op_model(), target=refusing_target)
    msg = str(ei.value)
    assert "softmax (Softmax): no exp unit" in msg and "runs on: cpu" in msg
    assert ei.value.nodes == [("softmax", "Softmax", "no exp unit")]


def test_fallback_allow_places_refused_nodes_on_cpu_and_reports_it(refusing_target):
    sess = hal.InferenceSession(_two_op_model(), target=refusing_target, fallback="allow")
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    (y,) = sess.run(None, {"x": x})
    (ref,) = hal.InferenceSession(_two_op_model()).run(None, {"x": x})
    np.testing.assert_array_equal(y, ref)
    where = {p.node: (p.target, p.partition, p.reason) for p in sess.report.placement}
    assert where["relu"][0] == "no-softmax" and where["neg"][0] == "no-softmax"
    assert where["softmax"] == ("cpu", 1, "no exp unit")
    assert sess.report.details["partitions"] == 3
    assert sess.report.transfers_bytes == 2 * 2 * 3 * 4  # r to cpu, s back


def test_fallback_warn_warns(refusing_target):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hal.InferenceSession(_two_op_model(), target=refusing_target, fallback="warn")
    assert any(issubclass(w.category, hal.FallbackWarning) and "softmax" in str(w.message) for w in caught)


def test_compile_returns_the_targets_executable():
    exe = hal.compile("zoo:tiny-cnn", target="cpu")
    out = exe.run({"image": np.zeros((1, 3, 32, 32), np.float32)})
    assert out["logits"].shape == (1, 10)
    # one kernel per step: a fused step (MatMul+Add) names the nodes it runs, every node in exactly one
    assert exe.report.kernel_count == len(exe.report.kernels) <= exe.report.node_count
    assert sum(len(k.nodes) for k in exe.report.kernels) == exe.report.node_count


def test_dynamic_dimension_is_bound_per_run():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17)])
    sess = hal.InferenceSession(m)
    for b in (1, 3, 7):
        (out,) = sess.run(None, {"x": -np.ones((b, 4), np.float32)})
        assert out.shape == (b, 4) and not out.any()


def test_estimate_compiles_a_shape_only_llm_without_weights():
    (e,) = hal.estimate("zoo:llama-2-7b", "cpu", precision="exact").estimates
    assert e.status == "ok" and e.devices == 1
    assert e.memory_bytes > 6.7e9 * 2  # fp16 weights are counted, never allocated


def test_program_runs_steps_fed_only_by_weights_once():
    from hal.engine import Program, steps_for_nodes
    from hal.graph.load import load

    f = TensorProto.FLOAT
    c = np.array([1.0, -2.0, 3.0], np.float32)
    nodes = [helper.make_node("Neg", ["c"], ["n"], name="neg"), helper.make_node("Add", ["x", "n"], ["y"], name="add"),
             helper.make_node("Abs", ["c"], ["a"], name="abs")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f, [3])],
                          [helper.make_tensor_value_info(n, f, [3]) for n in ("y", "a")],
                          [onnx.numpy_helper.from_array(c, "c")])
    graph = load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    calls: dict[str, int] = {}

    def counted(step):
        def fn(*a, **k):
            calls[step.op_type] = calls.get(step.op_type, 0) + 1
            return step.fn(*a, **k)
        return dataclasses.replace(step, fn=fn)

    prog = Program(graph, [counted(s) for s in steps_for_nodes(graph, graph.nodes)])
    for k in range(3):
        x = np.full(3, float(k), np.float32)
        y, a = prog.run_list({"x": x})
        np.testing.assert_array_equal(y, x - c)
        np.testing.assert_array_equal(a, np.abs(c))
        a[:] = 7  # an output kept from run to run is handed out as a copy
    assert calls == {"Neg": 1, "Abs": 1, "Add": 3}


def test_elementwise_steps_reuse_a_buffer_only_when_nothing_else_sees_it():
    # Relu's output is reshaped (a view) before Add reads it last: Add must not write into it; Relu, Sub
    # and Tanh below may compute in place. Checked against onnxruntime, over repeated runs.
    f = TensorProto.FLOAT
    c = onnx.numpy_helper.from_array(np.full((2, 3), 0.5, np.float32), "c")
    shp = onnx.numpy_helper.from_array(np.array([3, 2], np.int64), "shp")
    nodes = [helper.make_node("Relu", ["x"], ["t"]), helper.make_node("Reshape", ["t", "shp"], ["v"]),
             helper.make_node("Add", ["t", "c"], ["u"]), helper.make_node("Relu", ["u"], ["r"]),
             helper.make_node("Mul", ["r", "r"], ["m"]), helper.make_node("Sub", ["c", "m"], ["s"]),
             helper.make_node("Tanh", ["s"], ["th"]), helper.make_node("Reshape", ["th", "shp"], ["w"]),
             helper.make_node("Add", ["v", "w"], ["y"]), helper.make_node("Identity", ["x"], ["xi"]),
             helper.make_node("Relu", ["xi"], ["z"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f, [2, 3])],
                          [helper.make_tensor_value_info("y", f, [3, 2]), helper.make_tensor_value_info("z", f, [2, 3]),
                           helper.make_tensor_value_info("u", f, [2, 3])], [c, shp])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    sess = hal.InferenceSession(m)
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((2, 3)).astype(np.float32)
        kept = x.copy()
        ours = sess.run(None, {"x": x})
        for a, b in zip(ours, _ort(m, {"x": x})):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(x, kept)  # a feed is never a buffer to reuse


def test_two_input_sum_max_min_run_in_place_and_three_input_sum_does_not():
    # a = Relu(x), b = Neg(x): Sum(a, b) may write into a or b (each read last there); Max(s, a2) must
    # not write into a2, which Min reads after it; Sum of three keeps its own kernel. Against onnxruntime.
    from hal.engine import reference_program
    from hal.graph.load import load

    f = TensorProto.FLOAT
    c = onnx.numpy_helper.from_array(np.full((1, 3), 0.25, np.float32), "c")
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"), helper.make_node("Neg", ["x"], ["b"], name="neg"),
             helper.make_node("Sum", ["a", "b"], ["s"], name="sum2"),
             helper.make_node("Abs", ["x"], ["a2"], name="abs"),
             helper.make_node("Max", ["s", "a2"], ["m"], name="max"),
             helper.make_node("Min", ["a2", "c"], ["n"], name="min"),
             helper.make_node("Sum", ["m", "n", "x"], ["y"], name="sum3")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f, [2, 3])],
                          [helper.make_tensor_value_info("y", f, [2, 3])], [c])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    prog = reference_program(load(m))
    in_place = {prog.steps[i].label: pos for i, pos in prog._inplace.items()}
    assert in_place["sum2"] == (0, 1)
    assert in_place["max"] == (0,)  # a2 is still read by min
    assert in_place["min"] == (0,) and "sum3" not in in_place
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((2, 3)).astype(np.float32)
        kept = x.copy()
        np.testing.assert_allclose(prog.run_list({"x": x})[0], _ort(m, {"x": x})[0], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(x, kept)


@pytest.mark.parametrize("owner_read_later", [False, True])
def test_a_view_of_a_whole_buffer_is_reused_in_place_only_when_nothing_else_holds_the_buffer(owner_read_later):
    # v = Reshape(MatMul(x, w)) is a view of all of t's buffer, as Conv's result is of its GEMM's: once
    # t has no reader left, Relu(v) may write into it; while Add still reads t, it must not.
    import weakref

    from hal.engine import Program, steps_for_nodes
    from hal.graph.load import load

    f = TensorProto.FLOAT
    w = onnx.numpy_helper.from_array(np.arange(-6.0, 6.0, dtype=np.float32).reshape(3, 4), "w")
    shp = onnx.numpy_helper.from_array(np.array([4, 2], np.int64), "shp")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["t"]), helper.make_node("Reshape", ["t", "shp"], ["v"]),
             helper.make_node("Relu", ["v"], ["r"])]
    outs = [helper.make_tensor_value_info("r", f, [4, 2])]
    if owner_read_later:
        nodes.append(helper.make_node("Add", ["t", "t"], ["u"]))
        outs.append(helper.make_tensor_value_info("u", f, [2, 4]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f, [2, 3])], outs, [w, shp])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    graph = load(m)
    owners: list[weakref.ref] = []

    def watched(step):
        def fn(*a, **k):
            v = step.fn(*a, **k)
            owners.append(weakref.ref(v.base))  # a weak reference: the owner's count stays as it was
            return v
        return dataclasses.replace(step, fn=fn)

    steps = [watched(s) if s.op_type == "Reshape" else s for s in steps_for_nodes(graph, graph.nodes)]
    prog = Program(graph, steps)
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((2, 3)).astype(np.float32)
        got = prog.run_list({"x": x})
        for a, b in zip(got, _ort(m, {"x": x})):
            np.testing.assert_array_equal(a, b)
        owner = owners[-1]()
        assert (owner is not None and got[0].base is owner) is not owner_read_later


@pytest.mark.parametrize("given", [True, False])
def test_a_feed_is_overwritten_in_place_only_when_the_caller_gives_it_away(given):
    # run_list(consume=True) empties the feeds dict (a caller giving its feeds away): the run holds x
    # alone and Relu may write into it; a lent feed (the caller still holds it) is never written.
    from hal.engine import Program, steps_for_nodes
    from hal.graph.load import load

    f = TensorProto.FLOAT
    x_info, r_info = helper.make_tensor_value_info("x", f, [3, 4]), helper.make_tensor_value_info("r", f, [3, 4])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"])], "g", [x_info], [r_info])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    graph = load(m)
    prog = Program(graph, steps_for_nodes(graph, graph.nodes))
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    before, addr = x.copy(), x.ctypes.data
    feeds = {"x": x}
    if given:
        del x
    got = prog.run_list(feeds, consume=given)[0]
    np.testing.assert_array_equal(got, np.maximum(before, 0))
    assert (got.ctypes.data == addr) is given
    if given:
        assert feeds == {}
    else:
        np.testing.assert_array_equal(feeds["x"], before)


def test_weight_only_step_never_overwrites_a_value_a_later_run_still_reads():
    # r = Relu(w) is kept from run to run and read by Mul every run; Add, hoisted with it, reads r last
    f = TensorProto.FLOAT
    w = onnx.numpy_helper.from_array(np.array([-1.0, 2.0, -3.0], np.float32), "w")
    w2 = onnx.numpy_helper.from_array(np.array([10.0, 20.0, 30.0], np.float32), "w2")
    nodes = [helper.make_node("Relu", ["w"], ["r"]), helper.make_node("Mul", ["x", "r"], ["k"]),
             helper.make_node("Add", ["r", "w2"], ["a"]), helper.make_node("Add", ["k", "a"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f, [3])],
                          [helper.make_tensor_value_info("y", f, [3])], [w, w2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    from hal.engine import reference_program
    from hal.graph.load import load

    prog = reference_program(load(m))  # not optimize()d: compile-time folding would take r and a away
    for k in range(3):
        x = np.full(3, float(k), np.float32)
        np.testing.assert_array_equal(prog.run_list({"x": x})[0], _ort(m, {"x": x})[0])


def test_a_programs_weights_cannot_be_written_through_the_buffer_they_view():
    # onnx's loader hands out reshaped views of writeable arrays: a read-only view alone would leave
    # the weight writeable through its base (and kernels that keep a weight's transform, such as
    # Winograd's, rely on no one writing it)
    from hal.engine import reference_program
    from hal.graph.load import load

    f = TensorProto.FLOAT
    w = helper.make_tensor("w", f, (2, 3), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # float_data: not raw bytes
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", f, [1, 2])],
                          [helper.make_tensor_value_info("y", f, [1, 3])], [w])
    prog = reference_program(load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])))
    held = [v for v in prog._template if isinstance(v, np.ndarray)]
    assert held
    for v in held:
        while isinstance(v, np.ndarray):
            assert not v.flags.writeable
            v = v.base


@pytest.mark.parametrize("target", ["cpu", "wafer"])
def test_graph_without_nodes_is_one_program_with_a_report(target):
    # was: StopIteration building the report (no partition at all), found by the fuzzer
    f = TensorProto.FLOAT
    w = onnx.numpy_helper.from_array(np.ones(2, np.float32), "w")
    g = helper.make_graph([], "g", [helper.make_tensor_value_info("x", f, [2])],
                          [helper.make_tensor_value_info("x", f, [2]), helper.make_tensor_value_info("w", f, [2])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    sess = hal.InferenceSession(m, target=target)
    assert sess.report.target == target and sess.report.node_count == 0
    x = np.array([1.0, -1.0], np.float32)
    for _ in range(2):
        got = sess.run(None, {"x": x})
        for a, b in zip(got, _ort(m, {"x": x})):
            np.testing.assert_array_equal(a, b)
        got[1][:] = 5  # the weight handed out is the caller's copy


class _ReportingTarget:
    """The cpu target's program under a report that ``spoil`` changes after it was built."""

    def __init__(self, spoil):
        self._cpu = plugins.get_target("cpu")
        self.spec = self._cpu.spec.model_copy(update={"name": "spoiled"})
        self._spoil = spoil

    def capability(self, graph, options):
        return kernel_capability(graph, "spoiled")

    def compile(self, graph, options):
        exe = self._cpu.compile(graph, options)
        exe.report = exe.report.model_copy(deep=True)
        self._spoil(exe.report)
        return exe

    def load(self, blob):
        return self._cpu.load(blob)


def _spoil_kernel(r):
    r.kernels[2].flops = "lots"


def _spoil_kernels(r):
    r.kernels = {"k": r.kernels[0]}


def _spoil_latency(r):
    r.latency_s = "fast"


def _spoil_placement(r):
    r.placement = [{"node": "n", "op_type": "Add", "target": "spoiled"}]  # no partition


@pytest.mark.parametrize("spoil, why", [
    (_spoil_kernel, "kernels.2.flops: Input should be a valid number"),
    (_spoil_kernels, "kernels: TypeError: a dict, not a list"),
    (_spoil_latency, "latency_s: Input should be a valid number"),
    (_spoil_placement, "placement.0.partition: Field required"),
])
def test_a_report_spoiled_after_it_was_built_is_a_plugin_error_naming_the_field(spoil, why):
    from hal.errors import PluginError
    from hal.graph.load import load
    from hal.session import compile_graph
    from hal.specs import CompileOptions

    with pytest.raises(PluginError, match="invalid compile report") as e:
        compile_graph(load("zoo:tiny-gpt"), _ReportingTarget(spoil), CompileOptions())
    assert why in str(e.value)



def _shared_dimension_names() -> onnx.ModelProto:
    """Optimum's merged seq2seq decoder in small: ``past`` and ``states`` share the dimension name
    ``enc``, and the first step feeds an empty past (the branch it takes does not read it); ``a`` and
    ``b`` share ``n`` and meet in a broadcasting Add."""
    f = TensorProto.FLOAT
    then = helper.make_graph([helper.make_node("Concat", ["past", "states"], ["t"], axis=1)], "then", [],
                             [helper.make_tensor_value_info("t", f, None)])
    other = helper.make_graph([helper.make_node("Identity", ["states"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", f, None)])
    nodes = [helper.make_node("If", ["use_cache"], ["kv"], then_branch=then, else_branch=other),
             helper.make_node("Add", ["a", "b"], ["y"])]
    g = helper.make_graph(nodes, "merged", [
        helper.make_tensor_value_info("use_cache", TensorProto.BOOL, [1]),
        helper.make_tensor_value_info("past", f, ["batch", "enc", 4]),
        helper.make_tensor_value_info("states", f, ["batch", "enc", 4]),
        helper.make_tensor_value_info("a", f, ["n"]), helper.make_tensor_value_info("b", f, ["n"])],
        [helper.make_tensor_value_info("kv", f, ["batch", "k", 4]), helper.make_tensor_value_info("y", f, ["n"])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("target", ["cpu", "gpu", "lpu", "wafer"])
def test_inputs_sharing_a_dimension_name_may_be_fed_two_lengths_as_in_onnxruntime(target):
    # the IR asks feeds to agree on a shared name; onnxruntime does not check it, and Optimum's
    # ORTModelForSeq2SeqLM feeds every past empty at its first step, the encoder's too: hal refused that
    m = _shared_dimension_names()
    rng = np.random.default_rng(0)
    s = hal.InferenceSession(m, target=target)
    for use_cache, past_len, n_b in ((False, 0, 1), (True, 3, 5)):
        feeds = {"use_cache": np.array([use_cache]), "past": rng.standard_normal((2, past_len, 4), np.float32),
                 "states": rng.standard_normal((2, 6, 4), np.float32),
                 "a": rng.standard_normal(5, np.float32), "b": rng.standard_normal(n_b, np.float32)}
        for ours, theirs in zip(s.run(None, feeds), _ort(m, feeds)):
            assert ours.shape == theirs.shape
            np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("target", ["cpu", "gpu", "lpu", "wafer"])
def test_a_dimension_declared_negative_is_a_free_one_as_in_onnxruntime(target):
    # paddle2onnx declares some free dimensions as dim_value -1: hal asked feeds for a size of -1,
    # and onnx's inference, carrying the -1 on, refused the ReduceSum after it
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("ReduceSum", ["r"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    s = hal.InferenceSession(m, target=target)
    assert s.get_inputs()[0].shape == [None, 5]
    for n in (3, 1):
        x = np.random.default_rng(n).standard_normal((n, 5)).astype(np.float32)
        (ours,), (theirs,) = s.run(None, {"x": x}), _ort(m, {"x": x})
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)


@pytest.mark.parametrize("target", ["cpu", "gpu", "lpu", "wafer"])
def test_a_graph_output_without_a_shape_field_is_of_unknown_rank_as_in_onnxruntime(target):
    # onnx's checker requires the field where its IR reads a missing one as unknown rank: skl2onnx's
    # GaussianProcessRegressor declares its return_std output so, and hal refused the model
    g = helper.make_graph([helper.make_node("Sqrt", ["x"], ["std"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 1])],
                          [helper.make_tensor_value_info("std", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert not m.graph.output[0].type.tensor_type.HasField("shape")
    x = np.array([[4.0], [9.0], [2.0]], np.float32)
    s = hal.InferenceSession(m, target=target)
    assert s.get_outputs()[0].shape == [3, 1]  # inferred
    np.testing.assert_array_equal(s.run(None, {"x": x})[0], _ort(m, {"x": x})[0])
    assert not m.graph.output[0].type.tensor_type.HasField("shape")  # the model given is left as it was


@pytest.mark.parametrize("target", ["cpu", "gpu", "lpu", "wafer"])
def test_a_graph_output_without_a_type_takes_its_producers_as_in_onnxruntime(target):
    # how one reads an intermediate value out of a model (ValueInfoProto(name=...) appended to its
    # outputs): onnxruntime runs it, hal had refused it (onnx's checker requires the field)
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Cast", ["r"], ["y"], to=6)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [onnx.ValueInfoProto(name="r"), onnx.ValueInfoProto(name="y")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = np.array([[-1, 2, 3], [4, -5, 6.5]], np.float32)
    s = hal.InferenceSession(m, target=target)
    assert [(o.type, o.shape) for o in s.get_outputs()] == [("tensor(float)", [2, 3]), ("tensor(int32)", [2, 3])]
    for ours, theirs in zip(s.run(None, {"x": x}), _ort(m, {"x": x})):
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)
    assert not m.graph.output[0].HasField("type")  # the model given is left as it was


@pytest.mark.parametrize("target", ["cpu", "gpu", "lpu", "wafer"])
def test_a_known_domain_the_model_does_not_import_is_read_at_its_newest_version_as_in_onnxruntime(target):
    # NNCF's weight compression writes com.microsoft MatMulNBits into a model importing ai.onnx alone;
    # onnx's checker refuses that, onnxruntime runs it (a missing domain at its newest version)
    g = helper.make_graph([helper.make_node("Gelu", ["x"], ["g"], domain="com.microsoft"),
                           helper.make_node("Normalizer", ["g"], ["y"], domain="ai.onnx.ml", norm="L2")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(hal.InferenceSession(m, target=target).run(None, {"x": x})[0], _ort(m, {"x": x})[0],
                               rtol=1e-6, atol=1e-7)
    assert [o.domain for o in m.opset_import] == [""]  # the model given is left as it was
    m.graph.node[0].domain = "com.example"  # a domain nobody knows stays an error naming it
    with pytest.raises(hal.ModelError, match="com.example"):
        hal.InferenceSession(m, target=target)


def test_an_output_that_is_a_view_of_a_feed_is_the_callers_own():
    """A Reshape of an input had returned a view of the caller's array: refilling the feed's buffer for
    the next run changed the last run's output (onnxruntime copies it)."""
    g = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"]), helper.make_node("Identity", ["x"], ["z"])],
                          "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6]),
                           helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor("s", TensorProto.INT64, [1], [6])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    for target in ("cpu", "gpu", "lpu", "wafer"):
        for view in (True, False):  # the feed a view of the caller's array, or that array itself
            x = np.zeros((2, 3), np.float32)
            y, z = hal.InferenceSession(m, target=target).run(None, {"x": x[:] if view else x})
            x[:] = 7
            assert not y.any() and not z.any(), (target, view)
