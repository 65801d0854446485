"""Corners of the hybrid / state-space / linear-attention contrib kernels (``hal.kernels.contrib_hybrid``)
found by the differential sweep's hybrid families (``benchmarks.differential_hybrid``), against
onnxruntime's outputs: every target runs them."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from tests.kernels._onnxruntime import run_as_written

TARGETS = [t.name for t in hal.targets()]
MS = "com.microsoft"
RNG = np.random.default_rng(11)


def _model(node, feeds: dict[str, np.ndarray], inits: dict[str, np.ndarray] | None = None) -> bytes:
    ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for n, v in feeds.items()]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in node.output]
    g = helper.make_graph([node], "g", ins, outs, [numpy_helper.from_array(v, n) for n, v in (inits or {}).items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    m.ir_version = 8
    return m.SerializeToString()


def _same(blob: bytes, feeds: dict[str, np.ndarray], target: str, rtol: float = 1e-5) -> list[np.ndarray]:
    want = run_as_written(blob, feeds, threads=1)
    got = hal.InferenceSession(blob, target=target, cache_dir=False).run(None, feeds)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * max(1.0, float(np.abs(w).max(initial=0))))
    return want


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("rule", "given"), [("linear", "gb"), ("gated", "gb"), ("delta", "gb"), ("linear", "g")])
def test_linear_attention_leaves_a_decay_or_beta_its_rule_does_not_take(rule, given, target):
    # the schema's "linear" rule is S + k v^T, "gated" exp(g) S + k v^T, "delta" no decay: onnxruntime
    # checks the shape of a decay or beta the rule does not name and leaves it unused. hal applied
    # whichever was given (a linear rule's output 3.5 off where onnxruntime's is 6.5)
    feeds = {"q": _f32(1, 5, 8), "k": _f32(1, 5, 8), "v": _f32(1, 5, 8)}
    feeds["k"] /= np.linalg.norm(feeds["k"].reshape(1, 5, 2, 4), axis=-1).repeat(4, axis=-1)
    names = ["q", "k", "v", "", "g", "b" if "b" in given else ""]
    feeds["g"] = np.full((1, 5, 2), -1.0, np.float32)
    if "b" in given:
        feeds["b"] = np.full((1, 5, 2), 0.5, np.float32)
    while not names[-1]:
        names.pop()
    node = helper.make_node("LinearAttention", names, ["o", "s"], domain=MS, q_num_heads=2, kv_num_heads=2,
                            update_rule=rule)
    want = _same(_model(node, feeds), feeds, target)
    plain = {n: v for n, v in feeds.items() if n in ("q", "k", "v") or n in {"gated": "g", "delta": "b"}.get(rule, "")}
    kept = [n if n in plain else "" for n in names]
    while not kept[-1]:
        kept.pop()
    alone = helper.make_node("LinearAttention", kept, ["o", "s"], domain=MS, q_num_heads=2, kv_num_heads=2,
                             update_rule=rule)
    np.testing.assert_array_equal(want[0], run_as_written(_model(alone, plain), plain, threads=1)[0])


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("shape", [(2, 0, 8), (0, 3, 8)])
def test_mrotary_embedding_of_an_empty_batch_or_sequence_is_empty(shape, target):
    # onnxruntime hands back the empty input (checking its shapes, not that the rotary width is even);
    # hal failed reshaping the empty (B, S, N, H) view ("cannot reshape array of size 0")
    node = helper.make_node("MRotaryEmbedding", ["x", "p", "c", "s"], ["y"], domain=MS, mrope_section=[1, 1, 0],
                            num_heads=2)
    feeds = {"x": np.zeros(shape, np.float32), "p": np.zeros((3, shape[0], shape[1]), np.int64)}
    want = _same(_model(node, feeds, {"c": _f32(6, 2), "s": _f32(6, 2)}), feeds, target)
    assert want[0].shape == shape


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("x", "state"), [((2, 0, 2, 3), (2, 4, 2, 3)), ((0, 5, 6), (0, 4, 6))])
def test_causal_conv_with_state_channels_last_of_an_empty_batch_or_sequence(x, state, target):
    # channels_last (B, L, d_1, ...) with L = 0 (the state passes through) or B = 0: hal folded the
    # channel axes by a reshape to (B, L, -1), which numpy cannot size when the array is empty
    node = helper.make_node("CausalConvWithState", ["x", "w", "b", "p"], ["y", "present"], domain=MS, channels_last=1,
                            dilation=2, activation="silu")
    channels = int(np.prod(x[2:]))
    feeds = {"x": _f32(*x), "p": _f32(*state)}
    want = _same(_model(node, feeds, {"w": _f32(channels, 1, 3), "b": _f32(channels)}), feeds, target)
    assert want[1].shape == state


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("batch", "steps"), [(2, 0), (0, 3)])
def test_linear_attention_of_an_empty_batch_or_sequence_with_a_decay(batch, steps, target):
    # an empty sequence leaves the past state as it was (an empty batch, an empty state); hal split the
    # decay into heads by a reshape to (B, T, H, -1), which numpy cannot size when it is empty
    feeds = {"q": _f32(batch, steps, 8), "k": _f32(batch, steps, 8), "v": _f32(batch, steps, 12),
             "p": _f32(batch, 2, 4, 6), "g": _f32(batch, steps, 8), "b": _f32(batch, steps, 1)}
    node = helper.make_node("LinearAttention", ["q", "k", "v", "p", "g", "b"], ["o", "s"], domain=MS,
                            q_num_heads=2, kv_num_heads=2)
    want = _same(_model(node, feeds), feeds, target)
    np.testing.assert_array_equal(want[1], feeds["p"])
