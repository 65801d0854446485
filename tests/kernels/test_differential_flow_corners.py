"""Control-flow and signal corners found by the differential sweep's flow families
(``benchmarks.differential_flow``), against onnxruntime's outputs on every target."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from tests.kernels._onnxruntime import run_as_written as _onnxruntime

TARGETS = [t.name for t in hal.targets()]


def _scan_8(lens: list[int], directions: list[int]) -> bytes:
    """Scan-8 over xs [batch, 4, 2] with one state [batch, 2]: state += x, scan output state * x."""
    def pair(a: str, b: str) -> list:
        return [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in (a, b)]

    body = helper.make_graph(
        [helper.make_node("Add", ["s", "x"], ["s2"]), helper.make_node("Mul", ["s2", "x"], ["y"])], "body",
        pair("s", "x"), pair("s2", "y"))
    node = helper.make_node("Scan", ["lens", "s0", "xs"], ["s_final", "ys"], body=body, num_scan_inputs=1,
                            directions=directions)
    batch = len(lens)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("s0", TensorProto.FLOAT, [batch, 2]),
                                        helper.make_tensor_value_info("xs", TensorProto.FLOAT, [batch, 4, 2])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in node.output],
                          [numpy_helper.from_array(np.array(lens, np.int64), "lens")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 8)])
    m.ir_version = 8
    return m.SerializeToString()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("lens", [[3, 1], [2], [1, 2, 3]])
@pytest.mark.parametrize("direction", [0, 1])
def test_scan_8_pads_short_sequences_out_to_the_scan_axis(lens, direction, target):
    # every sequence_lens entry short of the scan axis (4): the spec pads scan outputs "to the
    # maximum-sequence-length", the dimension of the inputs' axis 1, and onnxruntime does; hal padded
    # them only out to the longest entry, an output of [batch, 3, 2] where onnxruntime's is [batch, 4, 2]
    rng = np.random.default_rng(len(lens) + direction)
    feeds = {"s0": rng.standard_normal((len(lens), 2)).astype(np.float32),
             "xs": rng.standard_normal((len(lens), 4, 2)).astype(np.float32)}
    blob = _scan_8(lens, [direction])
    want = _onnxruntime(blob, feeds)
    got = hal.InferenceSession(blob, target=target).run(None, feeds)
    for w, g in zip(want, got):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
