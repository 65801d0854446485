"""Shape-only Llama-family decoders at their published sizes, for compile-time estimates.

The graphs are built from primitive ops (no contrib ops, no functions) the way an exporter
writes a Llama layer: RMSNorm as x·rsqrt(mean(x²)+eps)·w, rotary embedding as
x·cos + rotate_half(x)·sin, grouped-query attention, SwiGLU MLP. Everything is float16 except
the token ids.

Weights are not initializers: each is a graph input with its full shape and dtype, listed under
the ``hal.shape_only_weights`` metadata key, so a 405B model is a few hundred KB of proto.
MatMul weights are stored [in, out] (the transpose of torch's Linear.weight, as exporters store
them) under the Hugging Face parameter names.

GQA is written by reshaping Q [B, heads, S, D] to [B, kv_heads, n_rep·S, D] rather than by
Expand-ing K/V to all heads: the KV cache is then read once per KV head, as a GQA kernel
reads it, and no repeated K/V tensor appears that a cost model would count as traffic.

Prefill outputs logits for every prompt position ([batch, prompt, vocab], as Hugging Face /
optimum exports do) unless ``logits="last"``, which keeps only the last position
([batch, 1, vocab], what a serving engine computes before sampling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx

from hal.errors import ModelError
from hal.zoo.graph_builder import FLOAT16, INT64, GraphBuilder


@dataclass(frozen=True)
class LlamaConfig:
    """One published Llama configuration (the fields of its config.json that shape the graph)."""

    description: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    rope_theta: float
    rms_eps: float
    max_positions: int
    published_params: int
    rope_scaling: str = "none"

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def params_count(self) -> int:
        """Learned parameters: embedding + layers + final norm + LM head (rotary tables excluded)."""
        d, hd = self.hidden, self.head_dim
        attn = d * self.heads * hd + 2 * d * self.kv_heads * hd + self.heads * hd * d
        layer = attn + 3 * d * self.ffn + 2 * d
        return self.layers * layer + 2 * self.vocab * d + d

    def as_dict(self) -> dict:
        return {
            "layers": self.layers, "hidden": self.hidden, "heads": self.heads,
            "kv_heads": self.kv_heads, "head_dim": self.head_dim, "ffn": self.ffn, "vocab": self.vocab,
            "rope_theta": self.rope_theta, "rope_scaling": self.rope_scaling, "rms_eps": self.rms_eps,
            "max_positions": self.max_positions, "params_count": self.params_count,
            "published_params": self.published_params, "dtype": "float16",
        }


# Every number below is from the model's config.json on huggingface.co/meta-llama/<repo> and the
# papers; published_params is the safetensors parameter total shown on that model page.
LLAMA_CONFIGS: dict[str, LlamaConfig] = {
    # meta-llama/Llama-2-7b-hf config.json; Touvron et al. 2023, arXiv:2307.09288, Table 1
    "llama-2-7b": LlamaConfig("Llama 2 7B (MHA, 4k context)", layers=32, hidden=4096, heads=32,
                              kv_heads=32, ffn=11008, vocab=32000, rope_theta=10000.0, rms_eps=1e-5,
                              max_positions=4096, published_params=6_738_415_616),
    # meta-llama/Llama-2-70b-hf config.json; arXiv:2307.09288 (GQA with 8 KV heads for 70B)
    "llama-2-70b": LlamaConfig("Llama 2 70B (GQA 64/8, 4k context)", layers=80, hidden=8192, heads=64,
                               kv_heads=8, ffn=28672, vocab=32000, rope_theta=10000.0, rms_eps=1e-5,
                               max_positions=4096, published_params=68_976_648_192),
    # meta-llama/Llama-3.1-8B config.json; Llama 3 Herd of Models, arXiv:2407.21783, Table 3
    "llama-3.1-8b": LlamaConfig("Llama 3.1 8B (GQA 32/8, 128k context)", layers=32, hidden=4096,
                                heads=32, kv_heads=8, ffn=14336, vocab=128256, rope_theta=500000.0,
                                rms_eps=1e-5, max_positions=131072, published_params=8_030_261_248,
                                rope_scaling="llama3 (factor 8)"),
    # meta-llama/Llama-3.1-70B config.json; arXiv:2407.21783, Table 3
    "llama-3.1-70b": LlamaConfig("Llama 3.1 70B (GQA 64/8, 128k context)", layers=80, hidden=8192,
                                 heads=64, kv_heads=8, ffn=28672, vocab=128256, rope_theta=500000.0,
                                 rms_eps=1e-5, max_positions=131072, published_params=70_553_706_496,
                                 rope_scaling="llama3 (factor 8)"),
    # meta-llama/Llama-3.1-405B config.json; arXiv:2407.21783, Table 3 (126 layers, 16384, 53248)
    "llama-3.1-405b": LlamaConfig("Llama 3.1 405B (GQA 128/8, 128k context)", layers=126, hidden=16384,
                                  heads=128, kv_heads=8, ffn=53248, vocab=128256, rope_theta=500000.0,
                                  rms_eps=1e-5, max_positions=131072, published_params=405_853_388_800,
                                  rope_scaling="llama3 (factor 8)"),
    # meta-llama/Llama-3.3-70B-Instruct config.json: the Llama 3.1 70B architecture, retrained
    "llama-3.3-70b": LlamaConfig("Llama 3.3 70B Instruct (GQA 64/8, 128k context)", layers=80,
                                 hidden=8192, heads=64, kv_heads=8, ffn=28672, vocab=128256,
                                 rope_theta=500000.0, rms_eps=1e-5, max_positions=131072,
                                 published_params=70_553_706_496, rope_scaling="llama3 (factor 8)"),
}

LLM_PARAMS: dict[str, object] = {"phase": "decode", "batch": 1, "context": 1024, "prompt": 512,
                                 "logits": "all"}

#: the lowest float16, the additive mask value torch uses (finfo(float16).min)
_MASK_VALUE = float(np.finfo(np.float16).min)


def _as_int(name: str, key: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, str)):
        raise ModelError(f"parameter {key}={value!r} must be an integer", where=f"zoo:{name}")
    try:
        number = int(value)
    except ValueError:
        raise ModelError(f"parameter {key}={value!r} must be an integer", where=f"zoo:{name}") from None
    if number < minimum:
        raise ModelError(f"parameter {key}={number} must be >= {minimum}", where=f"zoo:{name}")
    return number


class _LlamaWriter:
    """Writes one Llama graph; one instance per build."""

    def __init__(self, cfg: LlamaConfig, g: GraphBuilder, batch: int, seq: int, past: int):
        self.cfg, self.g, self.batch, self.seq, self.past = cfg, g, batch, seq, past
        self.n_rep = cfg.heads // cfg.kv_heads

    def weight(self, name: str, shape: list[int]) -> str:
        return self.g.shape_only_weight(name, FLOAT16, shape)

    def linear(self, x: str, weight_name: str, n_in: int, n_out: int, name: str) -> str:
        """x @ W with W [in, out] (the transpose of torch's Linear.weight, as exporters store it)."""
        return self.g.op("MatMul", [x, self.weight(weight_name, [n_in, n_out])], name=name)

    def rms_norm(self, x: str, weight_name: str, prefix: str) -> str:
        g = self.g
        w = self.weight(weight_name, [self.cfg.hidden])
        sq = g.op("Mul", [x, x], name=f"{prefix}/Mul_sq")
        ms = g.op("ReduceMean", [sq], name=f"{prefix}/ReduceMean", axes=[-1], keepdims=1)
        ms = g.op("Add", [ms, g.const(self.cfg.rms_eps, np.float16)], name=f"{prefix}/Add_eps")
        rs = g.op("Sqrt", [ms], name=f"{prefix}/Sqrt")
        rs = g.op("Reciprocal", [rs], name=f"{prefix}/Reciprocal")
        y = g.op("Mul", [x, rs], name=f"{prefix}/Mul_norm")
        return g.op("Mul", [y, w], name=f"{prefix}/Mul_weight")

    def rotary(self, x: str, cos: str, sin: str, prefix: str, out: str | None = None) -> str:
        """x·cos + rotate_half(x)·sin, rotate_half(x) = concat(-x[..., D/2:], x[..., :D/2])."""
        g, half, d = self.g, self.cfg.head_dim // 2, self.cfg.head_dim
        axis = g.const([-1], np.int64)
        x1 = g.op("Slice", [x, g.const([0], np.int64), g.const([half], np.int64), axis],
                  name=f"{prefix}/Slice_1")
        x2 = g.op("Slice", [x, g.const([half], np.int64), g.const([d], np.int64), axis],
                  name=f"{prefix}/Slice_2")
        rot = g.op("Concat", [g.op("Neg", [x2], name=f"{prefix}/Neg"), x1], name=f"{prefix}/Concat", axis=-1)
        a = g.op("Mul", [x, cos], name=f"{prefix}/Mul_cos")
        b = g.op("Mul", [rot, sin], name=f"{prefix}/Mul_sin")
        return g.op("Add", [a, b], name=f"{prefix}/Add", out=out)

    def heads(self, x: str, n_heads: int, prefix: str, out: str | None = None) -> str:
        """[B, S, n·D] → [B, n, S, D]."""
        g = self.g
        x = g.op("Reshape", [x, g.const([self.batch, self.seq, n_heads, self.cfg.head_dim], np.int64)],
                 name=f"{prefix}/Reshape")
        return g.op("Transpose", [x], name=f"{prefix}/Transpose", out=out, perm=[0, 2, 1, 3])

    def attention(self, x: str, i: int, cos: str, sin: str, mask: str | None) -> str:
        g, c = self.g, self.cfg
        p, wp = f"layers.{i}.self_attn", f"model.layers.{i}.self_attn"
        hd, kv, n_rep, b, s = c.head_dim, c.kv_heads, self.n_rep, self.batch, self.seq
        q = self.linear(x, f"{wp}.q_proj.weight", c.hidden, c.heads * hd, f"{p}/q_proj")
        k = self.linear(x, f"{wp}.k_proj.weight", c.hidden, kv * hd, f"{p}/k_proj")
        v = self.linear(x, f"{wp}.v_proj.weight", c.hidden, kv * hd, f"{p}/v_proj")
        # without a past (prefill) the new K/V are the presents themselves
        k_out, v_out = (None, None) if self.past else (f"present_key_{i}", f"present_value_{i}")
        q = self.rotary(self.heads(q, c.heads, f"{p}/q_heads"), cos, sin, f"{p}/q_rotary")
        k = self.rotary(self.heads(k, kv, f"{p}/k_heads"), cos, sin, f"{p}/k_rotary", out=k_out)
        v = self.heads(v, kv, f"{p}/v_heads", out=v_out)
        if self.past:
            cache = [b, kv, self.past, hd]
            past_k = self.g.input(f"past_key_{i}", FLOAT16, cache)
            past_v = self.g.input(f"past_value_{i}", FLOAT16, cache)
            k = g.op("Concat", [past_k, k], name=f"{p}/Concat_k", out=f"present_key_{i}", axis=2)
            v = g.op("Concat", [past_v, v], name=f"{p}/Concat_v", out=f"present_value_{i}", axis=2)
        total = self.past + s
        for name in (f"present_key_{i}", f"present_value_{i}"):
            g.output(name, FLOAT16, [b, kv, total, hd])

        # GQA: query head h = kv·n_rep + r, so [B, heads, S, D] is [B, kv, n_rep·S, D] in memory
        qg = g.op("Reshape", [q, g.const([b, kv, n_rep * s, hd], np.int64)], name=f"{p}/Reshape_gqa")
        kt = g.op("Transpose", [k], name=f"{p}/Transpose_k", perm=[0, 1, 3, 2])
        scores = g.op("MatMul", [qg, kt], name=f"{p}/MatMul_qk")
        scores = g.op("Mul", [scores, g.const(1.0 / math.sqrt(hd), np.float16)], name=f"{p}/Mul_scale")
        if mask is not None:
            scores = g.op("Reshape", [scores, g.const([b, kv, n_rep, s, total], np.int64)],
                          name=f"{p}/Reshape_mask")
            scores = g.op("Add", [scores, mask], name=f"{p}/Add_mask")
        probs = g.op("Softmax", [scores], name=f"{p}/Softmax", axis=-1)
        if mask is not None:
            probs = g.op("Reshape", [probs, g.const([b, kv, n_rep * s, total], np.int64)],
                         name=f"{p}/Reshape_probs")
        a = g.op("MatMul", [probs, v], name=f"{p}/MatMul_av")
        a = g.op("Reshape", [a, g.const([b, c.heads, s, hd], np.int64)], name=f"{p}/Reshape_heads")
        a = g.op("Transpose", [a], name=f"{p}/Transpose_out", perm=[0, 2, 1, 3])
        a = g.op("Reshape", [a, g.const([b, s, c.heads * hd], np.int64)], name=f"{p}/Reshape_out")
        return self.linear(a, f"{wp}.o_proj.weight", c.heads * hd, c.hidden, f"{p}/o_proj")

    def mlp(self, x: str, i: int) -> str:
        g, c = self.g, self.cfg
        p, wp = f"layers.{i}.mlp", f"model.layers.{i}.mlp"
        gate = self.linear(x, f"{wp}.gate_proj.weight", c.hidden, c.ffn, f"{p}/gate_proj")
        up = self.linear(x, f"{wp}.up_proj.weight", c.hidden, c.ffn, f"{p}/up_proj")
        act = g.op("Mul", [gate, g.op("Sigmoid", [gate], name=f"{p}/Sigmoid")], name=f"{p}/Mul_silu")
        h = g.op("Mul", [act, up], name=f"{p}/Mul_up")
        return self.linear(h, f"{wp}.down_proj.weight", c.ffn, c.hidden, f"{p}/down_proj")


def build_llm(name: str, *, phase: object = "decode", batch: object = 1, context: object = 1024,
              prompt: object = 512, logits: object = "all", config: LlamaConfig | None = None
              ) -> onnx.ModelProto:
    """The shape-only graph of LLAMA_CONFIGS[name] (or ``config``) for one decode step or one prefill."""
    cfg = config if config is not None else LLAMA_CONFIGS[name]
    where = f"zoo:{name}"
    if phase not in ("decode", "prefill"):
        raise ModelError(f"parameter phase={phase!r} must be 'decode' or 'prefill'", where=where)
    if logits not in ("all", "last"):
        raise ModelError(f"parameter logits={logits!r} must be 'all' or 'last'", where=where)
    batch = _as_int(name, "batch", batch, 1)
    context = _as_int(name, "context", context, 1)
    prompt = _as_int(name, "prompt", prompt, 1)
    seq, past = (1, context) if phase == "decode" else (prompt, 0)
    if past + seq > cfg.max_positions:
        raise ModelError(f"{past + seq} positions exceed the model's {cfg.max_positions}", where=where,
                         hint="lower context/prompt")

    g = GraphBuilder(name.replace("-", "_").replace(".", "_"))
    w = _LlamaWriter(cfg, g, batch, seq, past)
    ids = g.input("input_ids", INT64, [batch, seq])
    x = g.op("Gather", [w.weight("model.embed_tokens.weight", [cfg.vocab, cfg.hidden]), ids],
             name="embed_tokens/Gather", axis=0)

    # rotary tables cover the positions this run touches; decode reads only row `past`
    cos_table = w.weight("rotary.cos", [past + seq, cfg.head_dim])
    sin_table = w.weight("rotary.sin", [past + seq, cfg.head_dim])
    if past:
        rows = [g.const([past], np.int64), g.const([past + seq], np.int64), g.const([0], np.int64)]
        cos = g.op("Slice", [cos_table, *rows], name="rotary/Slice_cos")
        sin = g.op("Slice", [sin_table, *rows], name="rotary/Slice_sin")
    else:
        cos, sin = cos_table, sin_table

    mask = None
    if seq > 1:
        fill = onnx.numpy_helper.from_array(np.array([_MASK_VALUE], dtype=np.float16), "value")
        full = g.op("ConstantOfShape", [g.const([seq, past + seq], np.int64)],
                    name="causal_mask/ConstantOfShape", value=fill)
        # keep j > i + past (the future) at the mask value, zero elsewhere
        mask = g.op("Trilu", [full, g.const(np.int64(past + 1))], name="causal_mask/Trilu", upper=1)

    for i in range(cfg.layers):
        h = w.rms_norm(x, f"model.layers.{i}.input_layernorm.weight", f"layers.{i}.input_layernorm")
        x = g.op("Add", [x, w.attention(h, i, cos, sin, mask)], name=f"layers.{i}/Add_attn")
        h = w.rms_norm(x, f"model.layers.{i}.post_attention_layernorm.weight",
                       f"layers.{i}.post_attention_layernorm")
        x = g.op("Add", [x, w.mlp(h, i)], name=f"layers.{i}/Add_mlp")

    out_seq = seq
    if logits == "last" and seq > 1:
        x = g.op("Slice", [x, g.const([seq - 1], np.int64), g.const([seq], np.int64), g.const([1], np.int64)],
                 name="last_position/Slice")
        out_seq = 1
    x = w.rms_norm(x, "model.norm.weight", "norm")
    g.op("MatMul", [x, w.weight("lm_head.weight", [cfg.hidden, cfg.vocab])], name="lm_head/MatMul",
         out="logits")
    # logits first among outputs, presents in layer order after it
    g.outputs.insert(0, onnx.helper.make_tensor_value_info("logits", FLOAT16, [batch, out_seq, cfg.vocab]))

    tokens = batch * seq
    meta = {"hal.zoo": name, "hal.phase": phase, "hal.batch": str(batch), "hal.tokens": str(tokens),
            "hal.context": str(past)}
    if phase == "prefill":
        meta["hal.prompt"] = str(prompt)
    return g.model(meta, doc=f"{cfg.description}: shape-only {phase} graph (hal.zoo)")
