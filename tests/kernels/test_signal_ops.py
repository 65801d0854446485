"""Signal ops against onnxruntime beyond onnx's node cases: the windows at every size and output
type (integer outputs truncate, so a peak must come out exactly 1), and STFT of a rank-2 signal,
which torch's TorchScript exporter writes for every ``torch.stft``."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal

TYPES = [TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT32, TensorProto.UINT8]


def _ort(m) -> list[np.ndarray]:
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
@pytest.mark.parametrize("out_type", TYPES)
def test_windows_match_onnxruntime_at_every_size(op: str, periodic: int, out_type: int) -> None:
    for size in [*range(1, 24), 200, 400, 401]:
        if size == 1 and not periodic and out_type in (TensorProto.INT32, TensorProto.UINT8):
            continue  # a symmetric window of one point is 0 / 0: NaN, which no integer holds
        node = helper.make_node(op, ["n"], ["y"], periodic=periodic, output_datatype=out_type)
        g = helper.make_graph([node], "w", [], [helper.make_tensor_value_info("y", out_type, [size])],
                              [numpy_helper.from_array(np.array(size, np.int64), "n")])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        (want,) = _ort(m)
        (got,) = hal.InferenceSession(m).run(None, {})
        assert got.dtype == want.dtype
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=2e-7, atol=1e-7, err_msg=f"size {size}")
        else:
            np.testing.assert_array_equal(got, want, err_msg=f"size {size}")


@pytest.mark.parametrize("onesided", [0, 1])
@pytest.mark.parametrize("with_window", [False, True])
def test_stft_of_a_rank_2_signal_is_a_real_one_as_in_onnxruntime(onesided: int, with_window: bool) -> None:
    # torch.onnx.export(dynamo=False) writes STFT(x[batch, n]); the spec asks for [batch, n, 1]
    x = np.random.default_rng(0).standard_normal((2, 101)).astype(np.float32)
    inits = [numpy_helper.from_array(np.array(8, np.int64), "step"),
             numpy_helper.from_array(np.array(32, np.int64), "length")]
    if with_window:
        inits.append(numpy_helper.from_array(np.hanning(32).astype(np.float32), "window"))
    node = helper.make_node("STFT", ["x", "step", "window" if with_window else "", "length"], ["y"],
                            onesided=onesided)
    g = helper.make_graph([node], "stft", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 101])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    (want,) = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for target in hal.targets():
        (got,) = hal.InferenceSession(m, target=target.name).run(None, {"x": x})
        assert got.shape == want.shape == (2, 9, 17 if onesided else 32, 2)  # (101 - 32) // 8 + 1 frames
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=target.name)
