"""Corners of old opsets' forms (opsets 1-12) that the differential sweep's legacy families found,
against onnxruntime's outputs: every target runs them."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

import hal
from tests.kernels._onnxruntime import run_as_written as _onnxruntime

TARGETS = [t.name for t in hal.targets()]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(("shape", "relu"), [((2, 4, 2), False), ((1, 3, 2, 2), True), ((3, 2), False)])
def test_batch_normalization_7_spatial_0_normalises_each_activation(shape, relu, dtype, target):
    # BatchNormalization-7/8 with spatial=0 takes statistics per activation, shaped (C, D1, ..., Dn),
    # broadcast over the batch alone; onnxruntime runs it so (onnx's reference raises). hal reshaped
    # them to a per-channel column and failed to broadcast (C*D1*...*Dn, 1) against the input.
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape).astype(dtype)
    stats = [rng.standard_normal(shape[1:]) for _ in range(3)] + [rng.uniform(0.5, 2, shape[1:])]
    inits = [numpy_helper.from_array(s.astype(dtype), f"s{i}") for i, s in enumerate(stats)]
    nodes = [helper.make_node("BatchNormalization", ["x", "s0", "s1", "s2", "s3"], ["b" if relu else "y"],
                              epsilon=1e-5, spatial=0)]
    if relu:
        nodes.append(helper.make_node("Relu", ["b"], ["y"]))
    t = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", t, shape)],
                          [helper.make_tensor_value_info("y", t, shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 7)])
    m.ir_version = 8
    blob = m.SerializeToString()
    (want,) = _onnxruntime(blob, {"x": x})
    (got,) = hal.InferenceSession(blob, target=target).run(None, {"x": x})
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32),
                               rtol=1e-2 if dtype == np.float16 else 1e-5, atol=2e-3 if dtype == np.float16 else 1e-6)
