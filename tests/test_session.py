"""The unified API on the reference target: light zoo, exported transformers, placement/fallback."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import hal
from hal import plugins
from hal.target import kernel_capability
from tests.conftest import FIXTURES, LIGHT_MODELS, light_case


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_matches_expected_output_on_cpu(name):
    path, feeds, expected = light_case(name)
    sess = hal.InferenceSession(str(path), target="cpu")
    (out,) = sess.run(None, feeds)
    np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-5)


def _ort(path_or_model, feeds):
    data = path_or_model.SerializeToString() if isinstance(path_or_model, onnx.ModelProto) else str(path_or_model)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


@pytest.mark.parametrize("fixture", ["bert_tiny.onnx", "gpt_tiny.onnx"])
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
    assert exe.report.kernel_count == exe.report.node_count


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
