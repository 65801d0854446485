"""The built-in model zoo: valid, deterministic ONNX; runnable models run; LLMs have published sizes."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import shape_inference

from hal.errors import ModelError
from hal.zoo import SHAPE_ONLY_KEY, ZooEntry, build, list_models
from hal.zoo.llm import LlamaConfig, build_llm

ALLOWED_OPS = {
    "MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Erf", "Tanh", "Relu",
    "Sigmoid", "Softmax", "LayerNormalization", "Reshape", "Transpose", "Concat", "Split", "Slice",
    "Gather", "Unsqueeze", "Squeeze", "Shape", "Cast", "Where", "Equal", "Less", "Expand", "Range",
    "ConstantOfShape", "Max", "Min", "Flatten", "Trilu", "ReduceMean", "ReduceSum", "Neg", "Conv",
    "MaxPool", "GlobalAveragePool", "BatchNormalization",
}
RUNNABLE = ["tiny-gpt", "tiny-cnn"]
LLMS = ["llama-2-7b", "llama-2-70b", "llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "llama-3.3-70b"]
PUBLISHED = {  # parameter totals from the model pages / papers
    "llama-2-7b": 6.74e9, "llama-2-70b": 68.98e9, "llama-3.1-8b": 8.03e9, "llama-3.1-70b": 70.55e9,
    "llama-3.1-405b": 405.85e9, "llama-3.3-70b": 70.55e9,
}
LLM_CASES = [(name, phase) for name in LLMS for phase in ("decode", "prefill")]


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # ORT warns that it cannot constant-fold fp16 Trilu; not our concern
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _meta(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _shape(value: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value for d in value.type.tensor_type.shape.dim]


def _build_llm(name: str, phase: str) -> onnx.ModelProto:
    if phase == "decode":
        return build(name, phase=phase, context=1024)
    return build(name, phase=phase, prompt=128)


def _assert_valid(model: onnx.ModelProto) -> None:
    assert model.ir_version == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert not model.functions
    onnx.checker.check_model(model, full_check=True)
    inferred = shape_inference.infer_shapes(model, strict_mode=True, check_type=True)
    typed = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output]}
    for node in model.graph.node:
        assert node.op_type in ALLOWED_OPS and node.domain == "", node.op_type
        for out in node.output:
            assert out in typed, f"{node.name}: no inferred shape for {out}"
            assert all(d.HasField("dim_value") for d in typed[out].type.tensor_type.shape.dim), out


def test_list_models_names_every_model_with_its_kind_and_params():
    entries = {e.name: e for e in list_models()}
    assert set(entries) == set(RUNNABLE) | set(LLMS)
    assert all(isinstance(e, ZooEntry) for e in entries.values())
    assert {entries[n].kind for n in RUNNABLE} == {"runnable"}
    assert {entries[n].kind for n in LLMS} == {"shape-only"}
    assert entries["tiny-gpt"].config == {} and entries["tiny-gpt"].params == {}
    llama = entries["llama-3.1-405b"]
    assert llama.params["phase"] == "decode" and llama.params["context"] == 1024
    assert {"layers", "hidden", "heads", "kv_heads", "ffn", "vocab", "params_count"} <= set(llama.config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        llama.name = "other"  # type: ignore[misc]


def test_unknown_model_raises_model_error_listing_known_names():
    with pytest.raises(ModelError, match=r"llama-3\.1-8b") as err:
        build("gpt-17")
    assert "gpt-17" in str(err.value) and "tiny-cnn" in str(err.value)


@pytest.mark.parametrize("params", [
    {"phase": "train"}, {"batch": 0}, {"batch": "two"}, {"batch": True}, {"context": -1},
    {"context": 200_000}, {"logits": "first"}, {"temperature": 1.0},
])
def test_bad_llm_parameter_raises_model_error(params):
    with pytest.raises(ModelError):
        build("llama-3.1-8b", **params)


def test_runnable_model_rejects_parameters():
    with pytest.raises(ModelError, match="batch"):
        build("tiny-gpt", batch=2)


@pytest.mark.parametrize("name", RUNNABLE)
def test_runnable_model_is_valid_and_deterministic(name):
    model = build(name)
    _assert_valid(model)
    assert build(name).SerializeToString() == model.SerializeToString()
    assert _meta(model) == {"hal.zoo": name}
    assert len(model.graph.initializer) > 0


def test_tiny_gpt_runs_in_onnxruntime_with_finite_logits():
    model = build("tiny-gpt")
    assert [(i.name, _shape(i)) for i in model.graph.input] == [("input_ids", [1, 16])]
    ids = np.random.default_rng(0).integers(0, 256, (1, 16), dtype=np.int64)
    (logits,) = _session(model).run(None, {"input_ids": ids})
    assert logits.shape == (1, 16, 256) and logits.dtype == np.float32
    assert np.isfinite(logits).all() and logits.std() > 1e-3


def test_tiny_gpt_is_causal():
    session = _session(build("tiny-gpt"))
    ids = np.random.default_rng(1).integers(0, 256, (1, 16), dtype=np.int64)
    changed = ids.copy()
    changed[0, 10:] = (changed[0, 10:] + 1) % 256
    a, b = session.run(None, {"input_ids": ids})[0], session.run(None, {"input_ids": changed})[0]
    np.testing.assert_allclose(a[:, :10], b[:, :10], rtol=1e-5, atol=1e-5)
    assert not np.allclose(a[:, 10:], b[:, 10:])


def test_tiny_cnn_runs_in_onnxruntime_with_finite_logits():
    model = build("tiny-cnn")
    image = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    (logits,) = _session(model).run(None, {"image": image})
    assert logits.shape == (1, 10) and np.isfinite(logits).all() and logits.std() > 1e-3
    ops = {n.op_type for n in model.graph.node}
    assert {"Conv", "BatchNormalization", "Relu", "MaxPool", "Add", "GlobalAveragePool", "Gemm"} <= ops


@pytest.mark.parametrize(("name", "phase"), LLM_CASES)
def test_llm_graph_is_valid_with_shape_only_weights(name, phase):
    model = _build_llm(name, phase)
    _assert_valid(model)
    assert model.ByteSize() < 2_000_000
    assert all(t.data_type == onnx.TensorProto.INT64 or np.prod(t.dims) <= 8 for t in model.graph.initializer)
    meta = _meta(model)
    weights = meta[SHAPE_ONLY_KEY].split(",")
    inputs = {i.name: i for i in model.graph.input}
    assert set(weights) <= set(inputs)
    assert all(inputs[w].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 for w in weights)
    assert meta["hal.zoo"] == name and meta["hal.phase"] == phase and meta["hal.batch"] == "1"
    assert meta["hal.tokens"] == ("1" if phase == "decode" else "128")
    assert meta["hal.context"] == ("1024" if phase == "decode" else "0")


@pytest.mark.parametrize("name", LLMS)
def test_llm_parameter_count_matches_published_size(name):
    model = build(name)
    weights = set(_meta(model)[SHAPE_ONLY_KEY].split(","))
    learned = [i for i in model.graph.input if i.name in weights and not i.name.startswith("rotary.")]
    count = sum(int(np.prod(_shape(i))) for i in learned)
    config = next(e.config for e in list_models() if e.name == name)
    assert count == config["params_count"]
    assert abs(count - PUBLISHED[name]) / PUBLISHED[name] < 0.02


def test_llm_decode_signature_has_kv_cache_per_layer():
    model = build("llama-3.1-8b", phase="decode", batch=2, context=1024)
    inputs = {i.name: _shape(i) for i in model.graph.input}
    outputs = {o.name: _shape(o) for o in model.graph.output}
    assert inputs["input_ids"] == [2, 1]
    assert model.graph.input[0].name == "input_ids"
    for i in range(32):
        assert inputs[f"past_key_{i}"] == inputs[f"past_value_{i}"] == [2, 8, 1024, 128]
        assert outputs[f"present_key_{i}"] == outputs[f"present_value_{i}"] == [2, 8, 1025, 128]
    assert model.graph.output[0].name == "logits" and outputs["logits"] == [2, 1, 128256]
    assert _meta(model)["hal.tokens"] == "2"


def test_llm_prefill_signature_and_last_position_logits():
    model = build("llama-2-7b", phase="prefill", batch=2, prompt=64)
    inputs = {i.name: _shape(i) for i in model.graph.input}
    outputs = {o.name: _shape(o) for o in model.graph.output}
    assert inputs["input_ids"] == [2, 64] and not any(n.startswith("past_") for n in inputs)
    assert outputs["logits"] == [2, 64, 32000] and outputs["present_key_31"] == [2, 32, 64, 128]
    assert _meta(model)["hal.tokens"] == "128"
    last = build("llama-2-7b", phase="prefill", prompt=64, logits="last")
    assert _shape(last.graph.output[0]) == [1, 1, 32000]


@pytest.mark.parametrize("name", ["llama-3.1-8b", "llama-3.1-405b"])
def test_llm_build_is_deterministic(name):
    assert build(name).SerializeToString() == build(name).SerializeToString()


# --- the Llama graph computes a Llama: a tiny config run in onnxruntime against numpy -----------------

TINY_LLAMA = LlamaConfig("test", layers=2, hidden=64, heads=8, kv_heads=2, ffn=96, vocab=100,
                         rope_theta=10000.0, rms_eps=1e-5, max_positions=64, published_params=0)


def _random_weights(model: onnx.ModelProto, rng: np.random.Generator) -> dict[str, np.ndarray]:
    weights = set(_meta(model)[SHAPE_ONLY_KEY].split(","))
    feeds = {}
    for value in model.graph.input:
        if value.name in weights and not value.name.startswith("rotary."):
            shape = _shape(value)
            if value.name.endswith("norm.weight"):
                w = 1.0 + 0.2 * rng.standard_normal(shape)
            else:
                w = rng.standard_normal(shape) / np.sqrt(shape[0])
            feeds[value.name] = w.astype(np.float16)
    return feeds


def _rotary_tables(n: int, cfg: LlamaConfig) -> tuple[np.ndarray, np.ndarray]:
    inv_freq = 1.0 / cfg.rope_theta ** (np.arange(0, cfg.head_dim, 2) / cfg.head_dim)
    freqs = np.arange(n)[:, None] * inv_freq[None]
    angles = np.concatenate([freqs, freqs], -1)
    return np.cos(angles).astype(np.float16), np.sin(angles).astype(np.float16)


def _reference_llama(cfg: LlamaConfig, w16: dict, ids: np.ndarray, cos16, sin16) -> np.ndarray:
    """Hugging Face LlamaForCausalLM's forward in float32 numpy (repeat_kv for GQA)."""
    w = {k: v.astype(np.float32) for k, v in w16.items()}
    cos, sin = cos16.astype(np.float32), sin16.astype(np.float32)
    d, n_rep, (b, s) = cfg.head_dim, cfg.heads // cfg.kv_heads, ids.shape

    def rms(x, weight):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + cfg.rms_eps) * weight

    def rotate(x):
        return x * cos + np.concatenate([-x[..., d // 2:], x[..., :d // 2]], -1) * sin

    def split(x, n):
        return x.reshape(b, s, n, d).transpose(0, 2, 1, 3)

    x = w["model.embed_tokens.weight"][ids]
    for i in range(cfg.layers):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = rotate(split(h @ w[p + "self_attn.q_proj.weight"], cfg.heads))
        k = np.repeat(rotate(split(h @ w[p + "self_attn.k_proj.weight"], cfg.kv_heads)), n_rep, axis=1)
        v = np.repeat(split(h @ w[p + "self_attn.v_proj.weight"], cfg.kv_heads), n_rep, axis=1)
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + np.triu(np.full((s, s), -1e9), 1)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        x = x + (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, -1) @ w[p + "self_attn.o_proj.weight"]
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        gate = h @ w[p + "mlp.gate_proj.weight"]
        silu = gate / (1 + np.exp(-gate))
        x = x + (silu * (h @ w[p + "mlp.up_proj.weight"])) @ w[p + "mlp.down_proj.weight"]
    return rms(x, w["model.norm.weight"]) @ w["lm_head.weight"]


def test_llama_graph_matches_reference_in_prefill_and_decode():
    cfg, batch, seq = TINY_LLAMA, 2, 8
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab, (batch, seq), dtype=np.int64)
    cos, sin = _rotary_tables(seq, cfg)
    prefill = build_llm("test", phase="prefill", batch=batch, prompt=seq, config=cfg)
    weights = _random_weights(prefill, rng)
    expected = _reference_llama(cfg, weights, ids, cos, sin)

    full = _session(prefill).run(None, {"input_ids": ids, "rotary.cos": cos, "rotary.sin": sin, **weights})
    np.testing.assert_allclose(full[0].astype(np.float32), expected, atol=2e-2)

    # prefill seq-1 tokens, then decode the last one from the returned KV cache
    head = build_llm("test", phase="prefill", batch=batch, prompt=seq - 1, config=cfg)
    cache_outs = _session(head).run(None, {"input_ids": ids[:, :-1], "rotary.cos": cos[:-1],
                                           "rotary.sin": sin[:-1], **weights})
    cache = dict(zip([o.name for o in head.graph.output], cache_outs))
    decode = build_llm("test", phase="decode", batch=batch, context=seq - 1, config=cfg)
    feeds = {"input_ids": ids[:, -1:], "rotary.cos": cos, "rotary.sin": sin, **weights}
    for i in range(cfg.layers):
        feeds[f"past_key_{i}"] = cache[f"present_key_{i}"]
        feeds[f"past_value_{i}"] = cache[f"present_value_{i}"]
    step = _session(decode).run(None, feeds)
    np.testing.assert_allclose(step[0][:, 0].astype(np.float32), expected[:, -1], atol=2e-2)

    last = build_llm("test", phase="prefill", batch=batch, prompt=seq, logits="last", config=cfg)
    tail = _session(last).run(None, {"input_ids": ids, "rotary.cos": cos, "rotary.sin": sin, **weights})
    np.testing.assert_allclose(tail[0][:, 0].astype(np.float32), expected[:, -1], atol=2e-2)
