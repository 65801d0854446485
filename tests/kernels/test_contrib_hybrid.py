"""onnxruntime's contrib ops for hybrid and multimodal LLMs (``hal.kernels.contrib_hybrid``, domain
com.microsoft) against onnxruntime itself, graph optimisations off: MRotaryEmbedding, CausalConvWithState,
LinearAttention, LinearAttentionGate, GatedRMSNorm and GatedAdd, over their attributes on the cpu target
and once on every target; the forms onnxruntime's CPU kernels refuse, hal refuses when it compiles."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import hal
from hal.kernels.contrib_hybrid import mrope_streams
from tests.kernels._onnxruntime import run_as_written

RNG = np.random.default_rng(5)
MS = "com.microsoft"
TARGETS = [t.name for t in hal.targets()]


def _model(node: onnx.NodeProto, feeds: dict[str, np.ndarray], inits: dict[str, np.ndarray] | None = None) -> bytes:
    ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for n, v in feeds.items()]
    outs = [onnx.ValueInfoProto(name=n) for n in node.output if n]
    graph = helper.make_graph([node], "g", ins, outs,
                              [numpy_helper.from_array(v, n) for n, v in (inits or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)])
    return model.SerializeToString()


def _close(blob: bytes, feeds: dict[str, np.ndarray], target: str = "cpu", rel: float = 2e-6) -> float:
    """Every output as onnxruntime's: same dtype and shape, values within ``rel`` of the largest;
    returns the worst error relative to each output's largest value."""
    wants = run_as_written(blob, feeds)
    gots = hal.InferenceSession(blob, target=target, cache_dir=False).run(None, feeds)
    worst = 0.0
    for got, want in zip(gots, wants, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        scale = float(np.max(np.abs(want.astype(np.float64)), initial=0.0)) or 1.0
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rel, atol=rel * scale)
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - want), initial=0.0)) / scale)
    return worst


def _refused(blob: bytes, match: str) -> None:
    with pytest.raises(hal.HalError, match=match):
        hal.InferenceSession(blob, target="cpu", cache_dir=False, fallback="error")


# -- MRotaryEmbedding --------------------------------------------------------------------------------

def _mrope(shape: tuple, section: list[int], layout: int, *, num_heads: int = 0, rotary_dim: int = 0,
           interleaved: int = 0, scale: float | None = None, dtype: type = np.float32, rows: int = 24) -> tuple:
    heads = shape[1] if len(shape) == 4 else num_heads
    head = shape[3] if len(shape) == 4 else shape[2] // num_heads
    half = (rotary_dim or head) // 2
    batch, seq = shape[0], shape[2] if len(shape) == 4 else shape[1]
    attrs = {"mrope_section": section, "mrope_layout": layout, "interleaved": interleaved,
             **({"num_heads": heads} if num_heads else {}),
             **({"rotary_embedding_dim": rotary_dim} if rotary_dim else {}),
             **({"scale": scale} if scale is not None else {})}
    node = helper.make_node("MRotaryEmbedding", ["x", "p", "c", "s"], ["y"], domain=MS, **attrs)
    feeds = {"x": RNG.standard_normal(shape).astype(dtype), "p": RNG.integers(0, rows, (3, batch, seq))}
    caches = {n: RNG.uniform(-1, 1, (rows, half)).astype(dtype) for n in ("c", "s")}
    return _model(node, feeds, caches), feeds


def test_mrope_streams_own_the_columns_as_the_schema_says() -> None:
    assert mrope_streams([2, 3, 3], 0, 8).tolist() == [0, 0, 1, 1, 1, 2, 2, 2]
    assert mrope_streams([4, 2, 2], 1, 8).tolist() == [0, 1, 2, 0, 1, 2, 0, 0]


@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize(("shape", "section", "layout", "num_heads", "rotary_dim"), [
    ((2, 5, 64), [2, 3, 3], 0, 4, 0), ((2, 5, 64), [4, 2, 2], 1, 4, 0), ((2, 5, 64), [2, 1, 1], 1, 4, 8),
    ((2, 5, 64), [1, 1, 2], 0, 4, 8), ((2, 4, 5, 16), [2, 3, 3], 0, 0, 0), ((2, 4, 5, 16), [6, 1, 1], 1, 4, 16),
    ((1, 3, 32), [8, 0, 0], 0, 2, 0), ((1, 3, 32), [0, 8, 0], 1, 2, 0)])
def test_mrotary_embedding(shape: tuple, section: list, layout: int, num_heads: int, rotary_dim: int,
                           interleaved: int) -> None:
    """Sectioned and interleaved layouts, 3-D and 4-D inputs, partial rotary widths (the rest passes),
    half-wise or interleaved pairs; one ulp for onnxruntime's fused multiply-add."""
    _close(*_mrope(shape, section, layout, num_heads=num_heads, rotary_dim=rotary_dim, interleaved=interleaved),
           rel=5e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_mrotary_embedding_scales_the_caches(dtype: type) -> None:
    _close(*_mrope((2, 5, 64), [2, 3, 3], 0, num_heads=4, scale=0.75, dtype=dtype),
           rel=1e-3 if dtype == np.float16 else 5e-7)


def test_mrotary_embedding_float16() -> None:
    _close(*_mrope((2, 4, 5, 16), [4, 2, 2], 1, dtype=np.float16), rel=1e-3)


@pytest.mark.parametrize(("attrs", "match"), [
    ({"mrope_section": [2, 3]}, "mrope_section must be 3"), ({"mrope_layout": 2}, "mrope_layout must be 0"),
    ({"rotary_embedding_dim": 8}, "needs num_heads")])
def test_mrotary_embedding_refuses_what_onnxruntime_refuses(attrs: dict, match: str) -> None:
    node = helper.make_node("MRotaryEmbedding", ["x", "p", "c", "s"], ["y"], domain=MS,
                            **{"mrope_section": [2, 3, 3], **attrs})
    feeds = {"x": np.zeros((1, 2, 4, 16), np.float32), "p": np.zeros((3, 1, 2), np.int64)}
    blob = _model(node, feeds, {n: np.zeros((8, 8), np.float32) for n in "cs"})
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own error
        run_as_written(blob, feeds)
    _refused(blob, match)


def test_mrotary_embedding_refuses_a_position_past_the_caches() -> None:
    blob, feeds = _mrope((1, 3, 32), [2, 3, 3], 0, num_heads=2, rows=8)
    feeds["p"][1, 0, 2] = 8
    with pytest.raises(Exception, match="out of range"):
        run_as_written(blob, feeds)
    with pytest.raises(hal.RunError, match=r"must lie in \[0, 8\)"):
        hal.InferenceSession(blob, target="cpu", cache_dir=False).run(None, feeds)


# -- CausalConvWithState -----------------------------------------------------------------------------

def _conv(batch: int, channels: int, length: int, k: int, *, bias: bool = True, past: bool = True,
          activation: str = "none", dilation: int = 1, channels_last: int = 0, lead: tuple = ()) -> tuple:
    attrs = {"activation": activation, **({"dilation": dilation} if dilation != 1 else {}),
             **({"channels_last": 1} if channels_last else {})}
    pad = (k - 1) * dilation
    ch = lead or (channels,)
    channels = int(np.prod(ch))
    x_shape = (batch, length, *ch) if channels_last else (batch, channels, length)
    state = (batch, pad, *ch) if channels_last else (batch, channels, pad)
    feeds = {"x": RNG.standard_normal(x_shape).astype(np.float32)}
    if past:
        feeds["past"] = RNG.standard_normal(state).astype(np.float32)
    inits = {"w": RNG.standard_normal((channels, 1, k)).astype(np.float32)}
    if bias:
        inits["b"] = RNG.standard_normal(channels).astype(np.float32)
    node = helper.make_node("CausalConvWithState", ["x", "w", "b" if bias else "", "past" if past else ""],
                            ["y", "present"], domain=MS, **attrs)
    return _model(node, feeds, inits), feeds


@pytest.mark.parametrize(("length", "k", "bias", "past", "activation", "dilation"), [
    (6, 4, True, True, "none", 1), (1, 4, True, True, "silu", 1), (1, 3, False, True, "none", 1),
    (5, 3, False, False, "swish", 1), (1, 2, True, False, "silu", 1), (7, 3, True, True, "silu", 2),
    (1, 4, False, True, "none", 3), (2, 6, True, True, "none", 1), (1, 1, True, True, "silu", 1)])
def test_causal_conv_with_state(length: int, k: int, bias: bool, past: bool, activation: str,
                                dilation: int) -> None:
    """Prefill and decode (L = 1, onnxruntime's fast path), kernel widths 1..6, bias and past state
    present or absent, SiLU, dilated taps: bit for bit (the taps summed in order from the bias), SiLU
    within an ulp (exp's rounding)."""
    _close(*_conv(2, 5, length, k, bias=bias, past=past, activation=activation, dilation=dilation),
           rel=0 if activation == "none" else 2e-7)


@pytest.mark.parametrize(("length", "lead", "dilation"), [(4, (6,), 1), (1, (2, 3), 2), (3, (2, 3), 1)])
def test_causal_conv_with_state_channels_last(length: int, lead: tuple, dilation: int) -> None:
    _close(*_conv(2, 0, length, 3, activation="silu", dilation=dilation, channels_last=1, lead=lead), rel=2e-7)


@pytest.mark.parametrize(("attrs", "match"), [
    ({"ndim": 2}, "ndim"), ({"state_window": 2}, "state_window"), ({"activation": "relu"}, "activation"),
    ({"dilation": 0}, "dilation")])
def test_causal_conv_with_state_refuses_what_onnxruntime_refuses(attrs: dict, match: str) -> None:
    node = helper.make_node("CausalConvWithState", ["x", "w"], ["y", "present"], domain=MS, **attrs)
    feeds = {"x": np.zeros((1, 2, 3), np.float32)}
    blob = _model(node, feeds, {"w": np.ones((2, 1, 2), np.float32)})
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own error
        run_as_written(blob, feeds)
    _refused(blob, match)


def test_causal_conv_with_state_float16() -> None:
    blob, feeds = _conv(2, 6, 4, 4, activation="silu")
    model = onnx.load_from_string(blob)
    for t in model.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    for v in model.graph.input:
        v.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    _close(model.SerializeToString(), {n: v.astype(np.float16) for n, v in feeds.items()}, rel=1e-3)


# -- LinearAttention ---------------------------------------------------------------------------------

def _linear(rule: str, hq: int, hkv: int, hk: int, dk: int, dv: int, *, steps: int = 5, batch: int = 2,
            per_key_decay: bool = False, shared_beta: bool = False, past: bool = True, scale: float | None = None,
            dtype: type = np.float32) -> tuple:
    feeds = {"q": RNG.standard_normal((batch, steps, hq * dk)), "k": RNG.standard_normal((batch, steps, hk, dk)),
             "v": RNG.standard_normal((batch, steps, hkv * dv))}
    feeds["k"] = (feeds["k"] / np.linalg.norm(feeds["k"], axis=-1, keepdims=True)).reshape(batch, steps, hk * dk)
    names = ["q", "k", "v", "", "", ""]
    if past:
        feeds["past"], names[3] = RNG.standard_normal((batch, hkv, dk, dv)) * 0.5, "past"
    if rule in ("gated", "gated_delta"):
        feeds["g"], names[4] = -RNG.uniform(0.01, 1, (batch, steps, hkv * (dk if per_key_decay else 1))), "g"
    if rule in ("delta", "gated_delta"):
        feeds["b"], names[5] = RNG.uniform(0, 1, (batch, steps, 1 if shared_beta else hkv)), "b"
    while not names[-1]:
        names.pop()
    attrs = {"q_num_heads": hq, "kv_num_heads": hkv, "update_rule": rule, **({"scale": scale} if scale else {})}
    node = helper.make_node("LinearAttention", names, ["o", "present"], domain=MS, **attrs)
    feeds = {n: v.astype(dtype) for n, v in feeds.items()}
    return _model(node, feeds), feeds


@pytest.mark.parametrize("rule", ["linear", "gated", "delta", "gated_delta"])
@pytest.mark.parametrize(("hq", "hkv", "hk", "dk", "dv", "steps"), [
    (2, 2, 2, 8, 8, 5), (4, 2, 2, 8, 4, 5), (2, 4, 2, 16, 16, 4), (2, 4, 4, 8, 8, 1), (2, 2, 1, 8, 12, 3)])
def test_linear_attention(rule: str, hq: int, hkv: int, hk: int, dk: int, dv: int, steps: int) -> None:
    """Each update rule over query heads sharing a KV head's state, KV heads reading a shared query
    head (Qwen3.5's inverse GQA), key heads fewer than KV heads, one step (decode) and several."""
    _close(*_linear(rule, hq, hkv, hk, dk, dv, steps=steps), rel=2e-6)


@pytest.mark.parametrize(("kw", "rel"), [({"per_key_decay": True}, 2e-6), ({"shared_beta": True}, 2e-6),
                                         ({"past": False, "scale": 0.3}, 2e-6), ({"dtype": np.float16}, 2e-3),
                                         ({"steps": 9, "per_key_decay": True, "shared_beta": True}, 2e-6)])
def test_linear_attention_forms(kw: dict, rel: float) -> None:
    """A decay per key dimension, one beta for all heads, no past (zeros), an explicit scale, float16
    (computed in float32, rounded once)."""
    _close(*_linear("gated_delta", 2, 4, 2, 64, 64 if "dtype" not in kw else 16, **kw), rel=rel)


@pytest.mark.parametrize(("attrs", "names", "match"), [
    ({"update_rule": "gated"}, ["q", "k", "v"], "needs decay"),
    ({"update_rule": "delta"}, ["q", "k", "v"], "needs beta"),
    ({"state_window": 2}, ["q", "k", "v"], "state_window"), ({"update_rule": "fast"}, ["q", "k", "v"], "update_rule")])
def test_linear_attention_refuses_what_onnxruntime_refuses(attrs: dict, names: list, match: str) -> None:
    node = helper.make_node("LinearAttention", names, ["o", "present"], domain=MS,
                            **{"q_num_heads": 2, "kv_num_heads": 2, "update_rule": "linear", **attrs})
    feeds = {n: np.zeros((1, 2, 16), np.float32) for n in names}
    blob = _model(node, feeds)
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own error
        run_as_written(blob, feeds)
    _refused(blob, match)


# -- LinearAttentionGate, GatedRMSNorm, GatedAdd -----------------------------------------------------

@pytest.mark.parametrize(("dtype", "beta"), [(np.float32, True), (np.float32, False), (np.float16, True)])
def test_linear_attention_gate(dtype: type, beta: bool) -> None:
    feeds = {"a": (RNG.standard_normal((2, 5, 4)) * 8).astype(dtype)}
    if beta:
        feeds["b"] = (RNG.standard_normal((2, 5, 4)) * 4).astype(dtype)
    inits = {"dt": RNG.standard_normal(4).astype(np.float32),
             "scale": -np.exp(RNG.standard_normal(4)).astype(np.float32)}
    node = helper.make_node("LinearAttentionGate", ["a", "dt", "scale", *(["b"] if beta else [])],
                            ["decay", *(["beta"] if beta else [])], domain=MS)
    _close(_model(node, feeds, inits), feeds, rel=1e-3 if dtype == np.float16 else 1e-6)


def test_linear_attention_gate_refuses_beta_without_b() -> None:
    node = helper.make_node("LinearAttentionGate", ["a", "dt", "scale"], ["decay", "beta"], domain=MS)
    feeds = {"a": np.zeros((1, 2, 4), np.float32)}
    blob = _model(node, feeds, {n: np.ones(4, np.float32) for n in ("dt", "scale")})
    with pytest.raises(Exception, match="b input is required"):
        run_as_written(blob, feeds)
    _refused(blob, "needs the b input")


@pytest.mark.parametrize(("shape", "width", "activation", "dtype"), [
    ((2, 5, 16), 16, "silu", np.float32), ((2, 5, 64), 16, "swish", np.float32), ((3, 32), 8, "sigmoid", np.float32),
    ((2, 5, 64), 16, "silu", np.float16), ((2, 3, 4, 8), 8, "sigmoid", np.float16)])
def test_gated_rms_norm(shape: tuple, width: int, activation: str, dtype: type) -> None:
    """Groups of len(scale) features normalised apart (a packed per-head norm), SiLU or sigmoid gate."""
    feeds = {"x": RNG.standard_normal(shape).astype(dtype), "gate": (RNG.standard_normal(shape) * 3).astype(dtype)}
    node = helper.make_node("GatedRMSNorm", ["x", "scale", "gate"], ["y"], domain=MS, activation=activation,
                            epsilon=1e-6)
    blob = _model(node, feeds, {"scale": RNG.uniform(0.5, 1.5, width).astype(dtype)})
    _close(blob, feeds, rel=1e-3 if dtype == np.float16 else 1e-6)


def test_gated_rms_norm_refuses_an_unknown_activation() -> None:
    node = helper.make_node("GatedRMSNorm", ["x", "scale", "gate"], ["y"], domain=MS, activation="relu")
    feeds = {"x": np.ones((2, 8), np.float32), "gate": np.ones((2, 8), np.float32)}
    _refused(_model(node, feeds, {"scale": np.ones(8, np.float32)}), "activation must be silu")


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_gated_add(dtype: type) -> None:
    """X + round(Y x gate): bit for bit."""
    feeds = {"x": RNG.standard_normal((2, 3, 8)).astype(dtype), "y": RNG.standard_normal((2, 3, 8)).astype(dtype),
             "g": RNG.standard_normal((2, 3, 1)).astype(dtype)}
    _close(_model(helper.make_node("GatedAdd", ["x", "y", "g"], ["o"], domain=MS), feeds), feeds, rel=0)


def test_gated_add_refuses_the_projected_mode() -> None:
    node = helper.make_node("GatedAdd", ["x", "y", "g", "w"], ["o"], domain=MS)
    feeds = {"x": np.ones((2, 4), np.float32), "y": np.ones((2, 4), np.float32), "g": np.ones((2, 5), np.float32)}
    _refused(_model(node, feeds, {"w": np.ones((5, 1), np.float32)}), "gate_weight")


# -- every target ------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
def test_each_op_on_every_target(target: str) -> None:
    _close(*_mrope((2, 5, 64), [2, 3, 3], 0, num_heads=4), target=target, rel=5e-7)
    _close(*_mrope((2, 5, 64), [2, 1, 1], 1, num_heads=4, rotary_dim=8), target=target, rel=5e-7)
    _close(*_conv(2, 5, 6, 4, activation="silu"), target=target, rel=2e-7)
    _close(*_conv(2, 0, 1, 3, channels_last=1, lead=(6,)), target=target, rel=0)
    _close(*_linear("gated_delta", 2, 4, 2, 16, 16), target=target, rel=2e-6)
    feeds = {"x": RNG.standard_normal((2, 3, 16)).astype(np.float32),
             "g": RNG.standard_normal((2, 3, 16)).astype(np.float32)}
    node = helper.make_node("GatedRMSNorm", ["x", "s", "g"], ["y"], domain=MS)
    _close(_model(node, feeds, {"s": np.ones(8, np.float32)}), feeds, target=target, rel=1e-6)
    feeds = {"a": _f32(2, 3, 4), "b": _f32(2, 3, 4)}
    node = helper.make_node("LinearAttentionGate", ["a", "dt", "c", "b"], ["d", "beta"], domain=MS)
    _close(_model(node, feeds, {"dt": np.ones(4, np.float32), "c": -np.ones(4, np.float32)}), feeds, target=target,
           rel=1e-6)


# -- shapes: inference carries past each op (hal.graph.contrib's stand-ins) ---------------------------

def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("case", ["mrope", "conv", "conv-last", "gate", "norm", "add", "la-inverse", "la-gqa"])
def test_shapes_carry_past_each_op(case: str) -> None:
    from tests.test_contrib_shapes import _agrees, _case

    p = np.zeros((3, 2, 5), np.int64)
    args = {
        "mrope": ("MRotaryEmbedding", {"x": _f32(2, 5, 32), "p": p, "c": _f32(8, 4), "s": _f32(8, 4)}, 1,
                  {"num_heads": 4, "mrope_section": [2, 1, 1]}),
        "conv": ("CausalConvWithState", {"x": _f32(2, 6, 5), "w": _f32(6, 1, 3), "b": None, "past": _f32(2, 6, 2)}, 2,
                 {"activation": "silu"}),
        "conv-last": ("CausalConvWithState", {"x": _f32(2, 5, 6), "w": _f32(6, 1, 3), "b": _f32(6),
                                              "past": _f32(2, 4, 6)}, 2, {"channels_last": 1, "dilation": 2}),
        "gate": ("LinearAttentionGate", {"a": _f32(2, 5, 4), "dt": _f32(4), "c": _f32(4), "b": _f32(2, 5, 4)}, 2, {}),
        "norm": ("GatedRMSNorm", {"x": _f32(2, 5, 32), "s": _f32(8), "g": _f32(2, 5, 32)}, 1, {}),
        "add": ("GatedAdd", {"x": _f32(2, 5, 8), "y": _f32(2, 5, 8), "g": _f32(2, 5, 1)}, 1, {}),
        "la-inverse": ("LinearAttention", {"q": _f32(2, 5, 16), "k": _f32(2, 5, 16), "v": _f32(2, 5, 48),
                                           "past": _f32(2, 4, 8, 12)}, 2, {"q_num_heads": 2, "kv_num_heads": 4,
                                                                           "update_rule": "linear"}),
        "la-gqa": ("LinearAttention", {"q": _f32(2, 5, 32), "k": _f32(2, 5, 16), "v": _f32(2, 5, 24),
                                       "past": _f32(2, 2, 8, 12)}, 2, {"q_num_heads": 4, "kv_num_heads": 2,
                                                                       "update_rule": "linear"}),
    }[case]
    op, inputs, n_out, attrs = args
    _agrees(*_case(op, inputs, n_out, **attrs))


def test_a_huge_dilation_is_refused_before_its_state_is_allocated() -> None:
    """(k - 1) x dilation positions of state a channel: a dilation attribute of 2^30 asks for 768 GiB."""
    node = helper.make_node("CausalConvWithState", ["x", "w"], ["y", "p"], domain=MS, dilation=2 ** 30)
    feeds = {"x": np.zeros((1, 64, 2), np.float32)}
    sess = hal.InferenceSession(_model(node, feeds, {"w": np.ones((64, 1, 4), np.float32)}), target="cpu",
                                cache_dir=False)
    with pytest.raises(hal.HalError, match=r"would need a tensor of shape \[1, 64, 3221225474\]"):
        sess.run(None, feeds)
