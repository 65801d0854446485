"""Small runnable models with real (seeded random) weights: a GPT-style decoder and a ResNet-style CNN.

Both are written node for node the way torch.onnx exports such modules, so the graph patterns
(attention, erf-GELU, Conv+BatchNormalization+Relu) are the ones compilers meet in practice.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from hal.zoo.graph_builder import FLOAT, INT64, GraphBuilder

TINY_GPT = {"layers": 2, "hidden": 64, "heads": 4, "ffn": 256, "vocab": 256, "seq": 16, "batch": 1}
TINY_CNN = {"channels": [16, 32], "classes": 10, "image": [1, 3, 32, 32]}


def _layer_norm(g: GraphBuilder, x: str, rng: np.random.Generator, prefix: str, width: int) -> str:
    scale = g.weight(f"{prefix}.weight", (1.0 + 0.1 * rng.standard_normal(width)).astype(np.float32))
    bias = g.weight(f"{prefix}.bias", (0.1 * rng.standard_normal(width)).astype(np.float32))
    return g.op("LayerNormalization", [x, scale, bias], name=f"{prefix}/LayerNormalization",
                axis=-1, epsilon=1e-5)


def _linear(g: GraphBuilder, x: str, rng: np.random.Generator, prefix: str, n_in: int, n_out: int,
            bias: bool = True) -> str:
    # MatMul weights are [in, out]: the transpose of torch's Linear.weight, as exporters store them
    w = (rng.standard_normal((n_in, n_out)) / math.sqrt(n_in)).astype(np.float32)
    w = g.weight(f"{prefix}.weight", w)
    y = g.op("MatMul", [x, w], name=f"{prefix}/MatMul")
    if not bias:
        return y
    b = g.weight(f"{prefix}.bias", (0.02 * rng.standard_normal(n_out)).astype(np.float32))
    return g.op("Add", [y, b], name=f"{prefix}/Add")


def _gelu_erf(g: GraphBuilder, x: str, prefix: str) -> str:
    """0.5 * x * (1 + erf(x / sqrt(2))), in torch's export order."""
    t = g.op("Div", [x, g.const(math.sqrt(2.0), np.float32)], name=f"{prefix}/Div")
    t = g.op("Erf", [t], name=f"{prefix}/Erf")
    t = g.op("Add", [t, g.const(1.0, np.float32)], name=f"{prefix}/Add")
    t = g.op("Mul", [x, t], name=f"{prefix}/Mul")
    return g.op("Mul", [t, g.const(0.5, np.float32)], name=f"{prefix}/Mul_1")


def build_tiny_gpt() -> onnx.ModelProto:
    """A 2-layer GPT-style decoder: ids [1,16] → logits [1,16,256], causal attention via Where."""
    c = TINY_GPT
    batch, seq, d, heads, vocab = c["batch"], c["seq"], c["hidden"], c["heads"], c["vocab"]
    dh = d // heads
    rng = np.random.default_rng(20240601)
    g = GraphBuilder("tiny_gpt")
    ids = g.input("input_ids", INT64, [batch, seq])

    wte = g.weight("transformer.wte.weight", (0.5 * rng.standard_normal((vocab, d))).astype(np.float32))
    wpe = g.weight("transformer.wpe.weight", (0.1 * rng.standard_normal((seq, d))).astype(np.float32))
    tok = g.op("Gather", [wte, ids], name="transformer/wte/Gather", axis=0)
    pos = g.op("Gather", [wpe, g.const(np.arange(seq, dtype=np.int64))], name="transformer/wpe/Gather",
               axis=0)
    x = g.op("Add", [tok, pos], name="transformer/Add")

    causal = g.const(np.tril(np.ones((seq, seq), dtype=bool)))
    heads_shape = g.const([batch, seq, heads, dh], np.int64)
    merged_shape = g.const([batch, seq, d], np.int64)
    for i in range(c["layers"]):
        p = f"transformer.h.{i}"
        h = _layer_norm(g, x, rng, f"{p}.ln_1", d)
        q = _linear(g, h, rng, f"{p}.attn.q_proj", d, d)
        k = _linear(g, h, rng, f"{p}.attn.k_proj", d, d)
        v = _linear(g, h, rng, f"{p}.attn.v_proj", d, d)
        q = g.op("Reshape", [q, heads_shape], name=f"{p}.attn/Reshape_q")
        q = g.op("Transpose", [q], name=f"{p}.attn/Transpose_q", perm=[0, 2, 1, 3])
        k = g.op("Reshape", [k, heads_shape], name=f"{p}.attn/Reshape_k")
        k = g.op("Transpose", [k], name=f"{p}.attn/Transpose_k", perm=[0, 2, 3, 1])  # Kᵀ directly
        v = g.op("Reshape", [v, heads_shape], name=f"{p}.attn/Reshape_v")
        v = g.op("Transpose", [v], name=f"{p}.attn/Transpose_v", perm=[0, 2, 1, 3])
        s = g.op("MatMul", [q, k], name=f"{p}.attn/MatMul_qk")
        s = g.op("Div", [s, g.const(math.sqrt(dh), np.float32)], name=f"{p}.attn/Div")
        s = g.op("Where", [causal, s, g.const(-1e4, np.float32)], name=f"{p}.attn/Where")
        s = g.op("Softmax", [s], name=f"{p}.attn/Softmax", axis=-1)
        a = g.op("MatMul", [s, v], name=f"{p}.attn/MatMul_av")
        a = g.op("Transpose", [a], name=f"{p}.attn/Transpose_out", perm=[0, 2, 1, 3])
        a = g.op("Reshape", [a, merged_shape], name=f"{p}.attn/Reshape_out")
        a = _linear(g, a, rng, f"{p}.attn.o_proj", d, d)
        x = g.op("Add", [x, a], name=f"{p}/Add_attn")

        h = _layer_norm(g, x, rng, f"{p}.ln_2", d)
        h = _linear(g, h, rng, f"{p}.mlp.fc", d, c["ffn"])
        h = _gelu_erf(g, h, f"{p}.mlp.gelu")
        h = _linear(g, h, rng, f"{p}.mlp.proj", c["ffn"], d)
        x = g.op("Add", [x, h], name=f"{p}/Add_mlp")

    x = _layer_norm(g, x, rng, "transformer.ln_f", d)
    lm_head = g.weight("lm_head.weight", (rng.standard_normal((d, vocab)) / math.sqrt(d)).astype(np.float32))
    g.op("MatMul", [x, lm_head], name="lm_head/MatMul", out="logits")
    g.output("logits", FLOAT, [batch, seq, vocab])
    return g.model({"hal.zoo": "tiny-gpt"}, doc="tiny GPT-style decoder (hal.zoo)")


def _conv_bn(g: GraphBuilder, x: str, rng: np.random.Generator, prefix: str, c_in: int, c_out: int,
             stride: int = 1, relu: bool = True) -> str:
    w = (rng.standard_normal((c_out, c_in, 3, 3)) * math.sqrt(2.0 / (c_in * 9))).astype(np.float32)
    y = g.op("Conv", [x, g.weight(f"{prefix}.conv.weight", w)], name=f"{prefix}/Conv",
             kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride])
    bn = [
        g.weight(f"{prefix}.bn.weight", (1.0 + 0.1 * rng.standard_normal(c_out)).astype(np.float32)),
        g.weight(f"{prefix}.bn.bias", (0.1 * rng.standard_normal(c_out)).astype(np.float32)),
        g.weight(f"{prefix}.bn.running_mean", (0.1 * rng.standard_normal(c_out)).astype(np.float32)),
        g.weight(f"{prefix}.bn.running_var", rng.uniform(0.5, 1.5, c_out).astype(np.float32)),
    ]
    y = g.op("BatchNormalization", [y, *bn], name=f"{prefix}/BatchNormalization", epsilon=1e-5)
    return g.op("Relu", [y], name=f"{prefix}/Relu") if relu else y


def build_tiny_cnn() -> onnx.ModelProto:
    """A ResNet-style CNN: image [1,3,32,32] → logits [1,10], with one residual block."""
    c = TINY_CNN
    c1, c2 = c["channels"]
    rng = np.random.default_rng(20240602)
    g = GraphBuilder("tiny_cnn")
    x = g.input("image", FLOAT, c["image"])
    x = _conv_bn(g, x, rng, "stem", 3, c1)
    x = g.op("MaxPool", [x], name="stem/MaxPool", kernel_shape=[2, 2], strides=[2, 2])  # 16x16
    skip = x
    x = _conv_bn(g, x, rng, "block1.0", c1, c1)
    x = _conv_bn(g, x, rng, "block1.1", c1, c1, relu=False)
    x = g.op("Add", [x, skip], name="block1/Add")
    x = g.op("Relu", [x], name="block1/Relu")
    x = _conv_bn(g, x, rng, "down", c1, c2, stride=2)  # 8x8
    x = g.op("GlobalAveragePool", [x], name="head/GlobalAveragePool")
    x = g.op("Flatten", [x], name="head/Flatten", axis=1)
    w = g.weight("fc.weight", (rng.standard_normal((c["classes"], c2)) / math.sqrt(c2)).astype(np.float32))
    b = g.weight("fc.bias", (0.02 * rng.standard_normal(c["classes"])).astype(np.float32))
    g.op("Gemm", [x, w, b], name="fc/Gemm", out="logits", transB=1)
    g.output("logits", FLOAT, [1, c["classes"]])
    return g.model({"hal.zoo": "tiny-cnn"}, doc="tiny ResNet-style CNN (hal.zoo)")


__all__ = ["TINY_CNN", "TINY_GPT", "build_tiny_cnn", "build_tiny_gpt"]
