"""Initializers a model also lists as graph inputs (IR 4 on) are defaults a feed may replace, as
onnxruntime's ``get_overridable_initializers``: hal compiles the program with the fed values in
place, on every target, and a run without them keeps the model's own."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.graph.load import load
from hal.overrides import MAX_VARIANTS

TARGETS = ["cpu", "gpu", "lpu", "wafer"]


def _conv_bn(ir_version: int = 8) -> onnx.ModelProto:
    """Conv -> BatchNormalization -> Relu with every weight listed as an input too (TorchScript's
    ``keep_initializers_as_inputs=True``): hal folds the BatchNormalization into the Conv's weights, and
    a Reshape's target shape is such a default too, which a replaced one changes."""
    rng = np.random.default_rng(0)
    weights = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
               "b": rng.standard_normal(4).astype(np.float32),
               "scale": rng.uniform(0.5, 2, 4).astype(np.float32), "shift": rng.standard_normal(4).astype(np.float32),
               "mean": rng.standard_normal(4).astype(np.float32), "var": rng.uniform(0.5, 2, 4).astype(np.float32),
               "shape": np.array([1, -1], np.int64)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])]
    inputs += [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
               for n, a in weights.items()]
    g = helper.make_graph(nodes, "conv_bn", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])],
                          [numpy_helper.from_array(a, n) for n, a in weights.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 15 if ir_version >= 4 else 9)])
    m.ir_version = ir_version
    return m


def _ort(m: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3  # its warning that the weights are inputs
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


X = np.random.default_rng(1).standard_normal((1, 3, 6, 6)).astype(np.float32)


@pytest.mark.parametrize("target", TARGETS)
def test_a_fed_default_replaces_the_initializer_on_every_target_as_in_onnxruntime(target):
    m = _conv_bn()
    s, theirs = hal.InferenceSession(m, target=target), _ort(m)
    assert [i.name for i in s.get_inputs()] == ["x"]
    assert [i.name for i in s.get_overridable_initializers()] == \
        [i.name for i in theirs.get_overridable_initializers()] == ["w", "b", "scale", "shift", "mean", "var", "shape"]
    fed = {"x": X, "scale": np.array([-1, 0, 3, 0.5], np.float32), "shape": np.array([4, -1], np.int64)}
    for feeds in ({"x": X}, fed, {"x": X}):  # the model's own program before and after
        (ours,) = s.run(None, feeds)
        (want,) = theirs.run(None, feeds)
        assert ours.shape == want.shape
        np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-5)
    assert s.last_run.outputs == ["y"]


def test_sessions_with_replaced_defaults_are_kept_by_value_and_bounded():
    s = hal.InferenceSession(_conv_bn())
    scales = [np.full(4, k, np.float32) for k in range(MAX_VARIANTS + 1)]
    first = s.run(None, {"x": X, "scale": scales[0]})[0]
    variants = s._overrides._variants
    kept = next(iter(variants.values()))
    s.run(None, {"x": X, "scale": scales[0].copy()})  # the same bytes: the same program
    assert len(variants) == 1 and next(iter(variants.values())) is kept
    for k in scales[1:]:
        s.run(None, {"x": X, "scale": k})
    assert len(variants) == MAX_VARIANTS and kept not in variants.values()
    np.testing.assert_array_equal(s.run(None, {"x": X, "scale": scales[0]})[0], first)


def test_before_ir_4_an_initializer_is_no_default_and_a_feed_for_it_is_refused_as_by_onnxruntime():
    m = _conv_bn(ir_version=3)
    s = hal.InferenceSession(m)
    assert s.get_overridable_initializers() == []
    with pytest.raises(hal.InputError, match="unexpected scale"):
        s.run(None, {"x": X, "scale": np.ones(4, np.float32)})
    with pytest.raises(Exception, match="Invalid input name: scale"):
        _ort(m).run(None, {"x": X, "scale": np.ones(4, np.float32)})


@pytest.mark.parametrize("value, message", [
    (np.ones(4, np.float64), "has dtype float64, but the initializer it replaces is float32"),
    (np.ones(5, np.float32), r"has shape \[5\], but the input it replaces is declared \[4\]"),
    ([1.0, 1.0, 1.0, 1.0], "is a list, not a numpy array"),
    (1.0, "is a float, not a numpy array"), (1, "is an int, not a numpy array"),
])
def test_a_default_fed_of_another_type_or_shape_is_an_input_error(value, message):
    s = hal.InferenceSession(_conv_bn())
    with pytest.raises(hal.InputError, match=message):
        s.run(None, {"x": X, "scale": value})


def test_a_default_cannot_be_replaced_where_the_model_is_gone_or_changed(tmp_path):
    m = _conv_bn()
    with pytest.raises(hal.InputError, match="built from a hal Graph"):
        hal.InferenceSession(load(m)).run(None, {"x": X, "scale": np.ones(4, np.float32)})
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    s = hal.InferenceSession(str(path))
    m.graph.node[2].op_type = "Sigmoid"
    onnx.save(m, path)
    with pytest.raises(hal.InputError, match="the model changed since this session was built"):
        s.run(None, {"x": X, "scale": np.ones(4, np.float32)})
    np.testing.assert_array_equal(s.run(None, {"x": X})[0] >= 0, True)  # its own program still runs


def test_a_string_default_can_be_replaced_too():
    # a LabelEncoder-style lookup whose keys are a string initializer listed as an input
    keys = numpy_helper.from_array(np.array(["a", "b"], dtype=object), "keys")
    g = helper.make_graph([helper.make_node("Equal", ["x", "keys"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.STRING, [2]),
                           helper.make_tensor_value_info("keys", TensorProto.STRING, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.BOOL, [2])], [keys])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    s = hal.InferenceSession(m)
    x = np.array(["a", "c"], dtype=object)
    assert s.run(None, {"x": x})[0].tolist() == [True, False]
    assert s.run(None, {"x": x, "keys": np.array(["z", "c"], dtype=object)})[0].tolist() == [False, True]
