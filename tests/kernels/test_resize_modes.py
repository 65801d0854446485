"""Resize's coordinate modes beyond onnx's node cases, against onnxruntime: ``tf_half_pixel_for_nn``
(Resize-11's, which onnxruntime runs at every opset and tf2onnx writes for every half-pixel nearest
resize, Keras' ``Resizing(interpolation="nearest")`` among them)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("scales", [(1.75, 0.5), (2.0, 3.0), (0.75, 1.5)])
@pytest.mark.parametrize("nearest_mode", ["floor", "round_prefer_ceil", "round_prefer_floor", "ceil"])
def test_tf_half_pixel_for_nn_matches_onnxruntime_on_every_target(opset, scales, nearest_mode):
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 6)).astype(np.float32)
    out = [2, 3, int(4 * scales[0]), int(6 * scales[1])]
    node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="nearest", nearest_mode=nearest_mode,
                            coordinate_transformation_mode="tf_half_pixel_for_nn")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)],
                          [numpy_helper.from_array(np.array([1, 1, *scales], np.float32), "scales"),
                           numpy_helper.from_array(np.zeros(0, np.float32), "roi")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    so = ort.SessionOptions()
    so.log_severity_level = 3  # its warning that the mode is Resize-11's
    (want,) = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    # each output picks input pixels, none in between: the source index is what is tested
    for target in hal.targets():
        (got,) = hal.InferenceSession(m, target=target.name).run(None, {"x": x})
        np.testing.assert_array_equal(got, want, err_msg=target.name)
