"""onnxruntime's transformer, GenAI and fusion contrib ops together in one graph, and its hybrid LLM
ops and contrib twins of ONNX ops in another (the fuzzer's ``transformer_contrib_model`` and
``hybrid_contrib_model``): every target runs them as onnxruntime runs them, and with their declared
shapes stripped every value still gets one (``hal.graph.contrib``), GroupQueryAttention's present
key and value aside (sized by a fed total length)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import hal
from hal.graph.load import load
from tests.kernels._onnxruntime import run_as_written

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "robustness"))
import _contrib_models as cm


@pytest.fixture(scope="module")
def model_and_feeds() -> tuple[bytes, dict[str, np.ndarray], list[np.ndarray]]:
    blob = cm.transformer_contrib_model().SerializeToString()
    rng = np.random.default_rng(0)
    feeds = {"ids": rng.integers(0, 16, (2, 4)).astype(np.int32), "segs": rng.integers(0, 2, (2, 4)).astype(np.int32),
             "mask": np.array([[1, 1, 1, 1], [1, 1, 1, 0]], np.int32),
             "posids": np.tile(np.arange(4), (2, 1)).astype(np.int64),
             "img": rng.standard_normal((1, 3, 6, 6)).astype(np.float32)}
    want = run_as_written(blob, feeds)
    return blob, feeds, want


@pytest.mark.parametrize("target", [t.name for t in hal.targets()])
def test_every_target_runs_it_as_onnxruntime(model_and_feeds, target: str) -> None:
    blob, feeds, want = model_and_feeds
    got = hal.InferenceSession(blob, target=target, cache_dir=False).run(None, feeds)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(w))))


def test_every_value_gets_a_shape() -> None:
    model = cm.transformer_contrib_model()
    del model.graph.value_info[:]
    graph = load(model.SerializeToString())
    unknown = {o for n in graph.nodes for o in n.outputs
               if o and (o not in graph.values or graph.values[o].static_shape is None)}
    assert unknown == {"pk", "pv"}  # sized by a fed total length (a windowed cache's are its past's)


@pytest.mark.parametrize("target", [t.name for t in hal.targets()])
def test_the_hybrid_model_runs_as_onnxruntime_on_every_target_and_every_value_gets_a_shape(target: str) -> None:
    model = cm.hybrid_contrib_model()
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((2, 4, 16)).astype(np.float32), "pos": rng.integers(0, 24, (3, 2, 4)),
             "gate_a": rng.standard_normal((2, 4, 2)).astype(np.float32),
             "gate_b": rng.standard_normal((2, 4, 2)).astype(np.float32)}
    (want,), (got,) = run_as_written(model.SerializeToString(), feeds), hal.InferenceSession(
        model, target=target, cache_dir=False).run(None, feeds)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(want))))
    del model.graph.value_info[:]
    graph = load(model.SerializeToString())
    assert all(graph.values[o].static_shape is not None for n in graph.nodes for o in n.outputs if o)


@pytest.mark.parametrize("target", [t.name for t in hal.targets()])
def test_the_generation_model_runs_as_onnxruntime_on_every_target(target: str) -> None:
    """The fuzzer's generation model: every search's tokens onnxruntime's (the greedy and sampled
    ones up to where onnxruntime stops writing: the decoder never picks pad 2, so a column all pad
    is where every row had ended)."""
    model = cm.generation_contrib_model()
    feeds = {"ids": np.array([[3, 5, 7, 9, 11], [2, 2, 4, 6, 8]], np.int32),
             "feats": np.random.default_rng(0).standard_normal((2, 6, 10)).astype(np.float32)}
    want = run_as_written(model.SerializeToString(), feeds)
    got = hal.InferenceSession(model, target=target, fallback="allow", cache_dir=False).run(None, feeds)
    for name, g, w in zip([o.name for o in model.graph.output], got, want):
        if name in ("greedy", "sampled"):
            ended = [c for c in range(5, w.shape[1]) if (w[:, c] == 2).all()]
            g, w = (g[:, :ended[0] + 1], w[:, :ended[0] + 1]) if ended else (g, w)
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5, err_msg=name)
