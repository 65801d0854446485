"""What the tests of onnxruntime's GenAI contrib ops share (``test_contrib_genai``, ``test_contrib_gqa``):
a one-node model in the com.microsoft domain, hal's outputs, and the check against onnxruntime's."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

import hal
from tests.kernels._onnxruntime import run_as_written

MS = "com.microsoft"
TARGETS = [t.name for t in hal.targets()]


def _info(name: str, v: np.ndarray) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)


def _model(nodes: list[onnx.NodeProto], feeds: dict[str, np.ndarray], inits: list[onnx.TensorProto],
           outputs: list[tuple[str, np.dtype, list[int]]]) -> bytes:
    graph = helper.make_graph(
        nodes, "g", [_info(n, v) for n, v in feeds.items()],
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(t)), s) for n, t, s in outputs],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)])
    return model.SerializeToString()


def _hal(blob: bytes, feeds: dict[str, np.ndarray], target: str = "cpu") -> list[np.ndarray]:
    return hal.InferenceSession(blob, target=target, cache_dir=False).run(None, feeds)


def _close(blob: bytes, feeds: dict[str, np.ndarray], target: str = "cpu", rel: float = 2e-6) -> list[np.ndarray]:
    """Every output as onnxruntime's: same dtype and shape, values within ``rel`` of the largest."""
    wants, gots = run_as_written(blob, feeds), _hal(blob, feeds, target)
    for got, want in zip(gots, wants):
        assert got.dtype == want.dtype and got.shape == want.shape
        scale = float(np.max(np.abs(want.astype(np.float64)), initial=0.0)) or 1.0
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rel, atol=rel * scale)
    return gots
