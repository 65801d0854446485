"""onnxruntime's mixture-of-experts contrib ops (``hal.kernels.contrib_moe``, domain com.microsoft):
MoE and QMoE against onnxruntime itself, graph optimisations off, over their attributes on the cpu
target and once on every target. onnx defines neither op; onnxruntime 1.32's CPU kernels are their
reference. The forms hal computes beyond that kernel (FC3, swiglu_fusion 0 and 2, the legacy weight
layout) are checked against onnxruntime computing the same arithmetic in a form it takes (fused
interleaved swiglu, transposed weights) or, for act(FC1) x FC3 with other activations, a float64
reference."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import hal
from hal.graph.load import load
from hal.perf.opcount import node_flops
from tests.kernels._onnxruntime import run_as_written

MS = "com.microsoft"
TARGETS = [t.name for t in hal.targets()]
MOE_INPUTS = ["x", "router", "fc1", "fc1_bias", "fc2", "fc2_bias", "fc3", "fc3_bias"]
QMOE_INPUTS = ["x", "router", "fc1", "fc1_scales", "fc1_bias", "fc2", "fc2_scales", "fc2_bias", "fc3", "fc3_scales",
               "fc3_bias", "fc1_zero_points", "fc2_zero_points", "fc3_zero_points", "router_weights"]


def _rng(seed: int = 3) -> np.random.Generator:
    return np.random.default_rng(seed)


def _model(op: str, arrays: dict[str, np.ndarray], attrs: dict, shaped: bool = True) -> tuple[bytes, dict]:
    """A one-node ``op`` model: x and router fed, the other named arrays initializers, absent ones ''."""
    order = MOE_INPUTS if op == "MoE" else QMOE_INPUTS
    names = [n if n in arrays else "" for n in order]
    while not names[-1]:
        names.pop()
    x = arrays["x"]
    feeds = {"x": x, "router": arrays["router"]}
    elem = helper.np_dtype_to_tensor_dtype(x.dtype)
    graph = helper.make_graph(
        [helper.make_node(op, names, ["y"], domain=MS, **attrs)], "moe",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for n, v in feeds.items()],
        [helper.make_tensor_value_info("y", elem, x.shape if shaped else None)],
        [numpy_helper.from_array(v, n) for n, v in arrays.items() if n not in feeds])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)])
    return model.SerializeToString(), feeds


def _hal(blob: bytes, feeds: dict, target: str = "cpu") -> np.ndarray:
    return hal.InferenceSession(blob, target=target, cache_dir=False).run(None, feeds)[0]


def _close(got: np.ndarray, want: np.ndarray, rel: float) -> float:
    """``got`` as ``want``: dtype, shape, values within ``rel`` of the largest; the error, relative."""
    assert got.dtype == want.dtype and got.shape == want.shape
    g, w = got.astype(np.float64), want.astype(np.float64)
    scale = float(np.max(np.abs(w), initial=0.0)) or 1.0
    np.testing.assert_allclose(g, w, rtol=rel, atol=rel * scale)
    return float(np.max(np.abs(g - w), initial=0.0)) / scale


def _as_ort(blob: bytes, feeds: dict, target: str = "cpu", rel: float = 2e-6) -> float:
    return _close(_hal(blob, feeds, target), run_as_written(blob, feeds)[0], rel)


# -- MoE -----------------------------------------------------------------------------------------------

def _moe(tokens=(6,), hidden=8, inter=6, experts=4, *, act="relu", k=2, bias=False, fc3=False, fused=1,
         dtype=np.float32, seed=3, gain=1.0, **attrs) -> tuple[dict, dict]:
    """The arrays and attributes of a MoE node: weights in the current layout, fc1 (E, rows, hidden)."""
    rng = _rng(seed)
    rows = 2 * inter if act == "swiglu" and fused else inter
    a = {"x": rng.standard_normal((*tokens, hidden)) * gain,
         "router": rng.standard_normal((int(np.prod(tokens)), experts)) * 2,
         "fc1": rng.standard_normal((experts, rows, hidden)) / 2,
         "fc2": rng.standard_normal((experts, hidden, inter)) / 2}
    if bias:
        a["fc1_bias"], a["fc2_bias"] = rng.standard_normal((experts, rows)), rng.standard_normal((experts, hidden))
    if fc3:
        a["fc3"] = rng.standard_normal((experts, inter, hidden)) / 2
        if bias:
            a["fc3_bias"] = rng.standard_normal((experts, inter))
    attrs = {"k": k, "activation_type": act, **({"swiglu_fusion": fused} if act == "swiglu" else {}), **attrs}
    return {n: v.astype(dtype) for n, v in a.items()}, attrs


GPT_OSS = {"act": "swiglu", "fused": 1, "activation_alpha": 1.702, "activation_beta": 1.0, "swiglu_limit": 7.0,
           "normalize_routing_weights": 1, "bias": True, "gain": 3.0}


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("normalize", [0, 1])
@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("act", ["relu", "gelu", "silu", "identity"])
def test_moe_activations(act: str, k: int, normalize: int, bias: bool) -> None:
    """The softmax of the router's logits picks the top k, their probabilities (normalised among
    themselves when asked) weigh the experts; gelu is its tanh form."""
    _as_ort(*_model("MoE", *_moe(act=act, k=k, bias=bias, normalize_routing_weights=normalize)))


@pytest.mark.parametrize(("swiglu", "normalize"), [
    ({"activation_alpha": 1.702, "activation_beta": 1.0, "swiglu_limit": 7.0}, 1),  # gpt-oss
    ({"activation_alpha": 1.702, "activation_beta": 1.0, "swiglu_limit": 7.0}, 0),
    ({}, 1),  # alpha 1, beta 0, no limit
    ({"activation_alpha": 0.5, "activation_beta": -2.0, "swiglu_limit": 0.5}, 0)])
@pytest.mark.parametrize("bias", [False, True])
def test_moe_swiglu_interleaved(swiglu: dict, normalize: int, bias: bool) -> None:
    """swiglu_fusion=1: FC1's rows interleave gate (even) and linear (odd); the gate clamped above at
    the limit, the linear both ways; gate x sigmoid(alpha gate) x (linear + beta)."""
    arrays, attrs = _moe(act="swiglu", bias=bias, gain=3.0, normalize_routing_weights=normalize, **swiglu)
    _as_ort(*_model("MoE", arrays, attrs))
    if "swiglu_limit" in attrs:  # the inputs reach past the limit: it changes the result
        del attrs["swiglu_limit"]
        unclamped = _hal(*_model("MoE", arrays, attrs))
        assert not np.allclose(unclamped, run_as_written(*_model("MoE", arrays, {**attrs, "swiglu_limit": 7.0}))[0])


@pytest.mark.parametrize("tokens", [(1,), (7,), (2, 5), (1, 1)])
def test_moe_two_and_three_dimensional_input(tokens: tuple) -> None:
    """(tokens, hidden) or (batch, sequence, hidden), token by token; router (tokens, experts)."""
    _as_ort(*_model("MoE", *_moe(tokens, **GPT_OSS)))


@pytest.mark.parametrize("k", [3, 5])
def test_moe_more_experts(k: int) -> None:
    _as_ort(*_model("MoE", *_moe((9,), 16, 12, 6, act="silu", k=k, bias=True)))


def test_moe_sparse_mixer_routes_as_softmax_top2() -> None:
    """use_sparse_mixer (Phi-3.5-MoE; k must be 2) does not change onnxruntime's CPU result."""
    arrays, attrs = _moe(act="silu", bias=True)
    plain = _hal(*_model("MoE", arrays, attrs))
    _as_ort(*_model("MoE", arrays, {**attrs, "use_sparse_mixer": 1}))
    np.testing.assert_array_equal(_hal(*_model("MoE", arrays, {**attrs, "use_sparse_mixer": 1})), plain)


def test_moe_ties_go_to_the_higher_expert() -> None:
    arrays, attrs = _moe((4,), act="identity", k=1)
    arrays["router"] = np.array([[0, 0, 0, 0], [1, 2, 2, 0], [3, 0, 3, 3], [0, 0, 1, 1]], np.float32)
    _as_ort(*_model("MoE", arrays, attrs))


def _weights_out(op: str, arrays: dict) -> dict:
    """The arrays with every expert's weights 0 (QMoE: codes at their zero point) and expert e's FC2
    bias the e-th unit vector: output column e is then expert e's routing weight, exactly."""
    for name in ("fc1", "fc2"):
        arrays[name][:] = 0 if op == "MoE" else 0x88
    arrays["fc2_bias"][:] = np.eye(arrays["router"].shape[1], arrays["fc2_bias"].shape[1])
    arrays["router"] = (_rng(9).standard_normal(arrays["router"].shape) * 3).astype(np.float32)
    return arrays


@pytest.mark.parametrize(("op", "normalize", "router_weights"), [("MoE", 0, False), ("MoE", 1, False),
                                                                 ("QMoE", 0, False), ("QMoE", 1, True),
                                                                 ("QMoE", 0, True)])
def test_routing_weights_bit_for_bit(op: str, normalize: int, router_weights: bool) -> None:
    """Softmax and normalisation as onnxruntime's float32 arithmetic: exponentials summed left to
    right, each weight times the sum's reciprocal."""
    if op == "MoE":
        arrays, attrs = _moe((300,), 8, 6, 8, act="identity", k=3, bias=True, normalize_routing_weights=normalize)
    else:
        arrays, attrs = _qmoe((300,), 32, 32, 8, act="identity", k=3, bias=True, router_weights=router_weights,
                              normalize_routing_weights=normalize)
    blob, feeds = _model(op, _weights_out(op, arrays), attrs)
    np.testing.assert_array_equal(_hal(blob, feeds), run_as_written(blob, feeds)[0])


@pytest.mark.parametrize("form", [{"act": "relu", "bias": True}, GPT_OSS, {"act": "gelu", "k": 3}])
def test_moe_float16(form: dict) -> None:
    """float16 is widened, computed in float32 and rounded once, as onnxruntime's float16 kernel."""
    assert _as_ort(*_model("MoE", *_moe((2, 5), 16, 8, dtype=np.float16, **form)), rel=1e-3) < 1e-3


def test_moe_bfloat16_rounds_float32_once() -> None:
    """onnxruntime has no bfloat16 CPU kernel: hal's is its float32 result on the same values, rounded."""
    arrays, attrs = _moe(**GPT_OSS, dtype=ml_dtypes.bfloat16)
    got = _hal(*_model("MoE", arrays, attrs))
    wide = {n: v.astype(np.float32) for n, v in arrays.items()}
    want = run_as_written(*_model("MoE", wide, attrs))[0].astype(ml_dtypes.bfloat16)
    _close(got, want, 2 ** -8)


# hal computes the forms below; onnxruntime's CPU kernel refuses them (FC3 fails at run time,
# swiglu_fusion 0 / 2 when the session is built), or misreads them (the legacy layout)

def _interleave(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows of a and b alternating along axis 1: a swiglu FC1 of gate a and linear b."""
    return np.stack([a, b], axis=2).reshape(a.shape[0], 2 * a.shape[1], *a.shape[2:])


@pytest.mark.parametrize("bias", [False, True])
def test_moe_silu_fc3_is_swiglu_of_fc1_and_fc3(bias: bool) -> None:
    """Mixtral's expert silu(x W1) x (x W3) is swiglu with alpha 1, beta 0 and no limit, which
    onnxruntime computes with FC1 and FC3 interleaved."""
    arrays, attrs = _moe(act="silu", fc3=True, bias=bias, normalize_routing_weights=1)
    fused = {n: v for n, v in arrays.items() if not n.startswith("fc3")}
    fused["fc1"] = _interleave(arrays["fc1"], arrays["fc3"])
    if bias:
        fused["fc1_bias"] = _interleave(arrays["fc1_bias"], arrays["fc3_bias"])
    want = run_as_written(*_model("MoE", fused, {**attrs, "activation_type": "swiglu", "swiglu_fusion": 1}))[0]
    _close(_hal(*_model("MoE", arrays, attrs)), want, 2e-6)


def _reference(a: dict, attrs: dict) -> np.ndarray:
    """MoE in float64: softmax top-k routing, act(FC1) x FC3, FC2."""
    x = a["x"].astype(np.float64).reshape(-1, a["x"].shape[-1])
    logits = a["router"].astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    acts = {"relu": lambda h: np.maximum(h, 0), "identity": lambda h: h,
            "gelu": lambda h: 0.5 * h * (1 + np.tanh(0.7978845608 * (h + 0.044715 * h ** 3)))}
    out = np.zeros_like(x)
    for t in range(len(x)):
        top = np.argsort(-p[t], kind="stable")[:attrs["k"]]
        w = p[t, top] / (p[t, top].sum() if attrs.get("normalize_routing_weights") else 1)
        for e, we in zip(top, w):
            h = acts[attrs["activation_type"]](a["fc1"][e] @ x[t] + a["fc1_bias"][e])
            h = h * (a["fc3"][e] @ x[t] + a["fc3_bias"][e])
            out[t] += we * (a["fc2"][e] @ h + a["fc2_bias"][e])
    return out.reshape(a["x"].shape)


@pytest.mark.parametrize("act", ["relu", "gelu", "identity"])
def test_moe_fc3_gates_other_activations(act: str) -> None:
    """act(FC1) x FC3, as onnxruntime's CUDA kernel gates them."""
    arrays, attrs = _moe(act=act, fc3=True, bias=True)
    got = _hal(*_model("MoE", arrays, attrs))
    np.testing.assert_allclose(got, _reference(arrays, attrs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fusion", [0, 2])
def test_moe_swiglu_unfused_and_concatenated(fusion: int) -> None:
    """swiglu_fusion=2 holds [gate | linear] in FC1's rows, 0 the gate in FC1 and the linear in FC3:
    each as onnxruntime's interleaved form of the same rows."""
    arrays, attrs = _moe(act="swiglu", bias=True, fused=1, gain=3.0, **{k: v for k, v in GPT_OSS.items() if
                                                                       k.startswith(("activation", "swiglu"))})
    gate, linear = arrays["fc1"][:, 0::2], arrays["fc1"][:, 1::2]
    gate_b, linear_b = arrays["fc1_bias"][:, 0::2], arrays["fc1_bias"][:, 1::2]
    split = {n: v for n, v in arrays.items() if not n.startswith("fc1")}
    if fusion == 2:
        split["fc1"], split["fc1_bias"] = np.concatenate([gate, linear], 1), np.concatenate([gate_b, linear_b], 1)
    else:
        split.update(fc1=gate, fc1_bias=gate_b, fc3=linear, fc3_bias=linear_b)
    got = _hal(*_model("MoE", split, {**attrs, "swiglu_fusion": fusion}))
    _close(got, run_as_written(*_model("MoE", arrays, attrs))[0], 2e-6)


@pytest.mark.parametrize("act", ["relu", "swiglu"])
def test_moe_legacy_layout_multiplies_untransposed(act: str) -> None:
    """fc1 (E, hidden, rows) and fc2 (E, inter, hidden), the op's earlier layout: x @ fc1[e]. (onnxruntime
    1.32's CPU kernel accepts these shapes but reads their memory as the current layout.)"""
    arrays, attrs = _moe(act=act, bias=True, gain=2.0)
    legacy = {**arrays, "fc1": arrays["fc1"].transpose(0, 2, 1).copy(), "fc2": arrays["fc2"].transpose(0, 2, 1).copy()}
    _close(_hal(*_model("MoE", legacy, attrs)), run_as_written(*_model("MoE", arrays, attrs))[0], 2e-6)


@pytest.mark.parametrize(("change", "match"), [
    ({"activation_type": "geglu", "swiglu_fusion": 1}, "geglu"), ({"activation_type": "relu2"}, "relu2"),
    ({"swiglu_limit_after_activation": 1}, "swiglu_limit_after_activation"), ({"k": 0}, "at least 1"),
    ({"use_sparse_mixer": 1, "k": 1}, "k=2"), ({"fc3": True}, "takes no FC3")])
def test_moe_refuses_what_no_onnxruntime_cpu_kernel_computes(change: dict, match: str) -> None:
    """Each target refuses these when it compiles (UnsupportedOpError), as onnxruntime's CPU kernel
    does when the session is built or the node runs."""
    arrays, attrs = _moe(act="swiglu", fc3=change.pop("fc3", False))
    attrs.update(change)
    blob, feeds = _model("MoE", arrays, attrs)
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own error types
        run_as_written(blob, feeds)
    for target in TARGETS:
        with pytest.raises(hal.UnsupportedOpError, match=match):
            hal.InferenceSession(blob, target=target, cache_dir=False)


@pytest.mark.parametrize(("change", "match"), [
    ({"k": 5}, "at most the number of experts"), ({"router": np.zeros((5, 4), np.float32)}, "router_probs"),
    ({"fc2": np.zeros((4, 8, 5), np.float32)}, "fc1_experts_weights"),
    ({"fc1_bias": np.zeros((4, 7), np.float32)}, "fc1_experts_bias")])
def test_moe_bad_inputs_fail_as_in_onnxruntime(change: dict, match: str) -> None:
    arrays, attrs = _moe(bias=True)
    for name, value in change.items():
        (arrays if name in MOE_INPUTS else attrs)[name] = value
    blob, feeds = _model("MoE", arrays, attrs, shaped=False)
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own error types
        run_as_written(blob, feeds)
    with pytest.raises(hal.RunError, match=match):
        _hal(blob, feeds)


# -- QMoE ----------------------------------------------------------------------------------------------

def _codes(rng, experts: int, rows: int, cols: int, bits: int) -> np.ndarray:
    return rng.integers(0, 256, (experts, rows, cols * bits // 8)).astype(np.uint8)


def _qmoe(tokens=(5,), hidden=32, inter=32, experts=4, *, bits=4, block=0, zeros=False, act="swiglu", k=2,
          bias=False, fc3=False, router_weights=False, dtype=np.float32, seed=5, gain=1.0, scale=0.05,
          **attrs) -> tuple[dict, dict]:
    """QMoE's arrays and attributes: 2/4/8-bit codes (E, rows, cols x bits / 8), scales per row or
    per block, packed uint8 zero points."""
    rng = _rng(seed)
    rows = 2 * inter if act == "swiglu" else inter
    a = {"x": (rng.standard_normal((*tokens, hidden)) * gain).astype(dtype),
         "router": rng.standard_normal((int(np.prod(tokens)), experts)).astype(dtype)}
    shapes = {"fc1": (rows, hidden), "fc2": (hidden, inter), **({"fc3": (inter, hidden)} if fc3 else {})}
    for name, (r, c) in shapes.items():
        a[name] = _codes(rng, experts, r, c, bits)
        count = -(-c // block) if block else 0  # blocks along a row, the last one perhaps partial
        blocks = (r, count) if block else (r,)
        a[f"{name}_scales"] = rng.uniform(0.2, 1.0, (experts, *blocks)).astype(dtype) * dtype(scale)
        if zeros:
            shape = (r, -(-count * bits // 8)) if block else (-(-r * bits // 8),)
            a[f"{name}_zero_points"] = rng.integers(0, 256, (experts, *shape)).astype(np.uint8)
        if bias:
            a[f"{name}_bias"] = rng.standard_normal((experts, hidden if name == "fc2" else r)).astype(dtype)
    if router_weights:
        a["router_weights"] = rng.uniform(-0.2, 1, a["router"].shape).astype(dtype)
    attrs = {"k": k, "activation_type": act, "expert_weight_bits": bits, **({"block_size": block} if block else {}),
             **({"swiglu_fusion": 1} if act == "swiglu" else {}), **attrs}
    return a, attrs


@pytest.mark.parametrize("zeros", [False, True])
@pytest.mark.parametrize(("bits", "block"), [(4, 0), (8, 0), (2, 0), (4, 16), (4, 32), (2, 16), (8, 16), (8, 32)])
def test_qmoe_bits_blocks_and_zero_points(bits: int, block: int, zeros: bool) -> None:
    """(code - zero point) x scale, per row or per block of block_size along K, zero point 2^(bits-1)
    by default; 8-bit blocks quantise their input to int8 per block (onnxruntime has no float kernel
    for them), the others multiply in float32."""
    _as_ort(*_model("QMoE", *_qmoe(bits=bits, block=block, zeros=zeros, bias=True)))


@pytest.mark.parametrize(("bits", "block", "level"), [(4, 16, 4), (4, 32, 4), (4, 0, 4), (2, 16, 4), (4, 16, 1),
                                                      (8, 0, 4)])
def test_qmoe_accuracy_level(bits: int, block: int, level: int) -> None:
    """accuracy_level 4 quantises the input of 4-bit blocks to int8 (as MatMulNBits'); other widths,
    levels and column-wise scales multiply in float32."""
    _as_ort(*_model("QMoE", *_qmoe(bits=bits, block=block, zeros=True, accuracy_level=level)))


@pytest.mark.parametrize("zeros", [False, True])
@pytest.mark.parametrize(("bits", "level"), [(4, 0), (4, 4), (8, 0)])
def test_qmoe_a_last_partial_block(bits: int, level: int, zeros: bool) -> None:
    """block_size not dividing a projection's columns (the GenAI builder's qwen3.5-moe with
    qmoe_block_size=64 over 32 intermediate features): the rest is one last block, and onnxruntime
    dequantises that projection and multiplies in float32 at every accuracy level (hal had refused it)."""
    _as_ort(*_model("QMoE", *_qmoe(inter=24, bits=bits, block=16, zeros=zeros, bias=True, accuracy_level=level)))


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("act", ["swiglu", "relu", "gelu", "silu", "identity"])
def test_qmoe_activations_and_routing(act: str, k: int) -> None:
    """QMoE routes by the top-k logits softmaxed among themselves, whatever normalize_routing_weights."""
    for normalize in (0, 1):
        _as_ort(*_model("QMoE", *_qmoe(act=act, k=k, bias=True, normalize_routing_weights=normalize)))


@pytest.mark.parametrize("normalize", [0, 1])
def test_qmoe_router_weights_mix(normalize: int) -> None:
    """router_weights (DeepSeek-style): the router's logits choose, their weights at the chosen experts
    mix (over their sum when normalised); a weight not > 0 skips its expert."""
    _as_ort(*_model("QMoE", *_qmoe(router_weights=True, bias=True, normalize_routing_weights=normalize)))


@pytest.mark.parametrize("tokens", [(1,), (2, 3)])
def test_qmoe_gpt_oss_form(tokens: tuple) -> None:
    """The GenAI builder's int4 gpt-oss: fused interleaved swiglu, alpha 1.702, beta 1, limit 7,
    biases, blocks of 32, k=2, normalised."""
    _as_ort(*_model("QMoE", *_qmoe(tokens, 64, 32, 8, block=32, bias=True, gain=4.0, activation_alpha=1.702,
                                   activation_beta=1.0, swiglu_limit=7.0, normalize_routing_weights=1)))


@pytest.mark.parametrize(("bits", "block"), [(4, 0), (8, 32), (4, 16)])
def test_qmoe_float16(bits: int, block: int) -> None:
    _as_ort(*_model("QMoE", *_qmoe((2, 4), bits=bits, block=block, zeros=True, bias=True, dtype=np.float16,
                                   scale=0.01)), rel=1e-3)


def test_qmoe_silu_fc3_is_swiglu_of_fc1_and_fc3() -> None:
    """act(FC1) x FC3 (onnxruntime's CPU QMoE has no FC3): Mixtral's silu gate as the swiglu of the
    two projections' rows interleaved, which onnxruntime computes."""
    arrays, attrs = _qmoe(act="relu", fc3=True, bias=True, block=16)
    attrs["activation_type"] = "silu"
    fused = {n: v for n, v in arrays.items() if not n.startswith(("fc1", "fc3"))}
    for part in ("", "_scales", "_bias"):
        fused[f"fc1{part}"] = _interleave(arrays[f"fc1{part}"], arrays[f"fc3{part}"])
    want = run_as_written(*_model("QMoE", fused, {**attrs, "activation_type": "swiglu", "swiglu_fusion": 1}))[0]
    _close(_hal(*_model("QMoE", arrays, attrs)), want, 2e-6)


@pytest.mark.parametrize(("change", "match"), [
    ({"quant_type": "fp8"}, "quant_type"), ({"expert_weight_bits": 3}, "bits"), ({"weights_prepacked": 1}, "prepacked"),
    ({"activation_type": "geglu"}, "geglu"), ({"fc3_expert_weight_bits": 8}, "FC3's bits")])
def test_qmoe_refuses_at_session_build(change: dict, match: str) -> None:
    arrays, attrs = _qmoe(block=32)
    blob, _ = _model("QMoE", arrays, {**attrs, **change})
    for target in TARGETS:
        with pytest.raises(hal.UnsupportedOpError, match=match):
            hal.InferenceSession(blob, target=target, cache_dir=False)


# -- every target --------------------------------------------------------------------------------------

def _chained(blob: bytes) -> bytes:
    """The model with the MoE's output added to its input, the graph's output declared without a
    shape: inference carries past the node (``hal.graph.contrib``'s stand-in)."""
    model = onnx.load_from_string(blob)
    model.graph.node[0].output[0] = "moe"
    model.graph.node.append(helper.make_node("Add", ["moe", "x"], ["y"]))
    del model.graph.output[0].type.tensor_type.shape.dim[:]
    model.graph.output[0].type.tensor_type.ClearField("shape")
    return model.SerializeToString()


@pytest.mark.parametrize("target", TARGETS)
def test_each_op_on_every_target(target: str) -> None:
    _as_ort(*_model("MoE", *_moe((2, 3), **GPT_OSS)), target=target)
    _as_ort(*_model("MoE", *_moe((5,), act="gelu", k=3, bias=True)), target=target)
    _as_ort(*_model("MoE", *_moe((5,), act="silu", dtype=np.float16, bias=True)), target=target, rel=1e-3)
    _as_ort(*_model("QMoE", *_qmoe((4,), block=32, zeros=True, bias=True, swiglu_limit=7.0)), target=target)
    _as_ort(*_model("QMoE", *_qmoe((4,), bits=8, block=16, act="silu")), target=target)
    blob, feeds = _model("MoE", *_moe((2, 3), **GPT_OSS))
    _as_ort(_chained(blob), feeds, target=target)


@pytest.mark.parametrize(("op", "form", "per_token"), [
    ("MoE", {"act": "swiglu", "bias": True}, 12 * 8 + 8 * 6), ("MoE", {"act": "silu", "fc3": True}, 3 * 6 * 8),
    ("QMoE", {"block": 32}, 64 * 32 + 32 * 32)])
def test_the_cost_models_count_each_tokens_k_experts(op: str, form: dict, per_token: int) -> None:
    """2 FLOPs a multiply-add of FC1, FC2 (and FC3) for each of a token's k experts (QMoE's weights
    unpacked); each cost model estimates the node."""
    arrays, attrs = (_moe((2, 3), **form) if op == "MoE" else _qmoe((6,), **form))
    blob, _ = _model(op, arrays, attrs)
    (node,) = (graph := load(blob)).nodes
    assert node_flops(node, graph) == 2 * 6 * 2 * per_token
    for target in ("gpu", "lpu", "wafer"):
        (estimate,) = hal.estimate(blob, target, precision="exact").estimates
        assert estimate.status == "ok", estimate.error


def test_a_wide_expert_is_refused_before_it_allocates() -> None:
    """4096 tokens through an expert 8192 rows wide: 128 MiB of FC1 output from 64 KiB of input and
    256 KiB of weights (``hal.op_sizes.contrib``), a ResourceError naming the node."""
    arrays, attrs = _moe((4096,), 4, 8192, 1, act="relu", k=1)
    blob, feeds = _model("MoE", arrays, attrs, shaped=False)
    session = hal.InferenceSession(blob, target="cpu", cache_dir=False, max_memory=1 << 26)
    with pytest.raises(hal.ResourceError, match="MoE"):
        session.run(None, feeds)


@pytest.mark.parametrize("op", ["MoE", "QMoE"])
def test_shape_inference_carries_past_the_node(op: str) -> None:
    """The output has the input's shape and type (``hal.graph.contrib``'s stand-in): what follows it
    is sized when the model compiles."""
    blob, _ = _model(op, *(_moe((2, 3), **GPT_OSS) if op == "MoE" else _qmoe((2, 3), dtype=np.float16)))
    graph = load(_chained(blob))
    hidden = 8 if op == "MoE" else 32
    assert graph.values["y"].shape == (2, 3, hidden)
    assert graph.values["y"].dtype == (np.float32 if op == "MoE" else np.float16)


def _without_the_lowest_code(arrays: dict) -> dict:
    """4-bit FC1/FC2 codes with every 0 (value -8 x scale) made 1: each row's largest magnitude is then 7."""
    for fc in ("fc1", "fc2"):
        lo, hi = arrays[fc] & 0xF, arrays[fc] >> 4
        arrays[fc] = (np.maximum(lo, 1) | (np.maximum(hi, 1) << 4)).astype(np.uint8)
    return arrays


@pytest.mark.parametrize("zero_points", [(), ("fc2",), ("fc1",), ("fc1", "fc2")])
def test_onnxruntime_s_q4_repacking_is_named_where_a_compare_meets_it(monkeypatch, zero_points) -> None:
    """4-bit experts scaled per row, codes missing the lowest one, zero points of 8 (the default's
    value) on some projections: by the op the same numbers whichever have them. On an AVX-512 CPU
    onnxruntime 1.32 runs a projection without zero points through MLAS's blocked Q4 GEMM when the
    other has some, and packing quantises its weights a second time (4-7% of the output here); with
    ORT_USE_MLAS_Q4_GEMM_MOE=0 it computes the op as defined, as hal does. A compare where onnxruntime
    parts from hal on such a model says why on the peer's row; block-wise experts take another path."""
    from hal import peers

    arrays, attrs = _qmoe(hidden=128, inter=128, bits=4, block=0, bias=True)
    arrays = _without_the_lowest_code(arrays)
    for fc in zero_points:
        arrays[f"{fc}_zero_points"] = np.full((4, -(-arrays[fc].shape[1] // 2)), 0x88, np.uint8)
    blob, feeds = _model("QMoE", arrays, attrs)
    monkeypatch.setenv("ORT_USE_MLAS_Q4_GEMM_MOE", "0")
    _as_ort(blob, feeds)
    assert peers.known_deviations("onnxruntime", load(blob).nodes) == []
    monkeypatch.delenv("ORT_USE_MLAS_Q4_GEMM_MOE")
    (peer,) = hal.compare(blob, "cpu", inputs=feeds, peers=["onnxruntime"]).peers
    if len(zero_points) == 1 and peers._avx512():
        assert not peer.outputs[0].within_tolerance and peer.outputs[0].max_rel > 0.01
        assert "ORT_USE_MLAS_Q4_GEMM_MOE=0" in peer.reason
        assert peers.known_deviations("onnxruntime", load(blob).nodes) == [peer.reason]
    else:
        assert peer.outputs[0].within_tolerance and peer.reason is None
    blocked, blocked_attrs = _qmoe(bits=4, block=32, zeros=True)
    del blocked["fc1_zero_points"]  # (one projection with zero points, as above, but in blocks)
    assert peers.known_deviations("onnxruntime", load(_model("QMoE", blocked, blocked_attrs)[0]).nodes) == []
