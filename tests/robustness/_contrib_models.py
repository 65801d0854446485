"""Models of onnxruntime's contrib ops (domain com.microsoft) for the fuzzer's corpus and the tests:
its quantized QOperator ops in one CNN, its transformer, GenAI and fusion ops in one graph, its
hybrid LLM ops with contrib twins of ONNX ops in another, and its generation ops in a third."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from _robust_models import I64, F, vi
from onnx import TensorProto, helper, numpy_helper


def quantized_contrib_model() -> onnx.ModelProto:
    """A CNN in onnxruntime's QOperator format, every com.microsoft quantized op it writes in one
    small graph (``hal.kernels.contrib_quant``): quantise, QLinearConv, QLinearAdd, QLinearSigmoid,
    QLinearMul, QLinearConcat, QLinearAveragePool, QLinearGlobalAveragePool, QGemm, QLinearSoftmax,
    dequantise, DynamicQuantizeMatMul and MatMulIntegerToFloat. For the fuzzer's corpus."""
    ms = "com.microsoft"
    rng = np.random.default_rng(9)
    consts = {"s": np.float32(0.05), "z": np.uint8(128), "p": np.float32(1 / 256), "pz": np.uint8(0),
              "w": rng.integers(0, 255, (4, 3, 3, 3)).astype(np.uint8), "ws": np.float32(0.01), "wz": np.uint8(127),
              "fc": rng.integers(0, 255, (8, 5)).astype(np.uint8), "fcb": rng.integers(-50, 50, 5).astype(np.int32),
              "fc2": rng.integers(0, 255, (5, 4)).astype(np.uint8), "fc2b": rng.standard_normal(4).astype(np.float32)}

    def q(op: str, ins: list[str], out: str, **attrs: Any) -> onnx.NodeProto:
        return helper.make_node(op, ins, [out], domain=ms, **attrs)

    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("QLinearConv", ["xq", "s", "z", "w", "ws", "wz", "s", "z"], ["c"], pads=[1, 1, 1, 1]),
        q("QLinearAdd", ["c", "s", "z", "c", "s", "z", "s", "z"], "a"),
        q("QLinearSigmoid", ["a", "s", "z", "p", "pz"], "g"),
        q("QLinearMul", ["a", "s", "z", "g", "p", "pz", "s", "z"], "m"),
        q("QLinearConcat", ["s", "z", "m", "s", "z", "a", "s", "z"], "cat", axis=1),
        q("QLinearAveragePool", ["cat", "s", "z", "s", "z"], "pool", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1,
          count_include_pad=1),
        q("QLinearGlobalAveragePool", ["pool", "s", "z", "s", "z"], "gap"),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        q("QGemm", ["flat", "s", "z", "fc", "ws", "wz", "fcb", "s", "z"], "logits"),
        q("QLinearSoftmax", ["logits", "s", "z", "p", "pz"], "probs", axis=-1, opset=13),
        helper.make_node("DequantizeLinear", ["probs", "p", "pz"], ["pf"]),
        q("DynamicQuantizeMatMul", ["pf", "fc2", "ws", "wz", "fc2b"], "d"),
        q("MatMulIntegerToFloat", ["probs", "fc2", "p", "ws", "pz", "wz"], "e"),
        helper.make_node("Add", ["d", "e"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "qoperator", [vi("x", F, [1, 3, 7, 7])], [vi("y", F, [1, 4])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(ms, 1)])


def transformer_contrib_model() -> onnx.ModelProto:
    """onnxruntime's transformer, GenAI and fusion contrib ops (``hal.kernels.contrib_fused``,
    ``contrib_attention``, ``contrib_genai``) in one small graph: EmbedLayerNormalization, Attention,
    SkipLayerNormalization, FusedMatMul, GatherBlockQuantized, BiasGelu, MatMulNBits,
    SkipSimplifiedLayerNormalization, MultiHeadAttention, RotaryEmbedding, GroupQueryAttention (also
    with a windowed cache), FastGelu, QuickGelu, MoE (gpt-oss's SwiGLU experts) and
    SimplifiedLayerNormalization (ONNX domain), and a convolutional branch through FusedConv and
    FusedGemm. For the fuzzer's corpus."""
    ms = "com.microsoft"
    rng = np.random.default_rng(10)

    def f32(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    # hidden 16 in 2 heads of 8 (onnxruntime's GroupQueryAttention wants head sizes in multiples of 8)
    consts = {"word": f32(16, 16), "pos": f32(8, 16), "segtab": f32(2, 16), "gamma": f32(16) + 1, "beta": f32(16),
              "wqkv": f32(16, 48), "bqkv": f32(48), "b16": f32(16), "w1t": f32(32, 16), "b32": f32(32),
              "tab": rng.integers(0, 256, (16, 16)).astype(np.uint8), "tabs": np.abs(f32(16, 2)) + 0.05,
              "nb": rng.integers(0, 256, (16, 2, 8)).astype(np.uint8), "nbs": np.abs(f32(32)) + 0.05,
              "cos": np.cos(np.outer(np.arange(8), [1.0, 0.3, 0.1, 0.03])).astype(np.float32),
              "sin": np.sin(np.outer(np.arange(8), [1.0, 0.3, 0.1, 0.03])).astype(np.float32),
              "lens": np.array([3, 3], np.int32), "total": np.array(4, np.int32),
              "wconv": f32(4, 3, 3, 3), "bconv": f32(4), "wg": f32(4, 3), "bg": f32(3),
              "window": np.zeros((2, 2, 4, 8), np.float32), "router": f32(8, 4), "e1": f32(4, 16, 16),
              "e1b": f32(4, 16), "e2": f32(4, 16, 8), "e2b": f32(4, 16)}

    def c(op: str, ins: list[str], outs: list[str], **attrs: Any) -> onnx.NodeProto:
        return helper.make_node(op, ins, outs, domain=ms, **attrs)

    nodes = [
        c("EmbedLayerNormalization", ["ids", "segs", "word", "pos", "segtab", "gamma", "beta", "mask"],
          ["emb", "mask_index"], epsilon=1e-5),
        c("Attention", ["emb", "wqkv", "bqkv", "mask_index"], ["att"], num_heads=2),
        c("SkipLayerNormalization", ["att", "emb", "gamma", "beta", "b16"], ["sln"], epsilon=1e-5),
        c("FusedMatMul", ["sln", "w1t"], ["fm"], transB=1, alpha=0.5),
        c("GatherBlockQuantized", ["tab", "ids", "tabs"], ["rows"], block_size=16, gather_axis=0, quantize_axis=1,
          bits=4),
        helper.make_node("Add", ["fm", "rows"], ["fmr"]),
        c("BiasGelu", ["fmr", "b32"], ["g1"]),
        c("MatMulNBits", ["g1", "nb", "nbs"], ["nbo"], K=32, N=16, bits=4, block_size=16),
        c("SkipSimplifiedLayerNormalization", ["nbo", "sln", "gamma"], ["ssl"], epsilon=1e-5),
        c("MultiHeadAttention", ["ssl", "ssl", "ssl"], ["mha"], num_heads=2),
        c("RotaryEmbedding", ["mha", "posids", "cos", "sin"], ["rot"], num_heads=2),
        c("GroupQueryAttention", ["rot", "mha", "mha", "", "", "lens", "total"], ["gqa", "pk", "pv"], num_heads=2,
          kv_num_heads=2),
        c("GroupQueryAttention", ["gqa", "mha", "mha", "window", "window", "lens", "total"], ["gqw", "pkw", "pvw"],
          num_heads=2, kv_num_heads=2, local_window_size=2, sliding_window_cache=1),
        c("FastGelu", ["gqw", "b16"], ["fg"]),
        c("QuickGelu", ["fg"], ["qg"]),
        c("MoE", ["qg", "router", "e1", "e1b", "e2", "e2b"], ["moe"], k=2, activation_type="swiglu", swiglu_fusion=1,
          activation_alpha=1.702, activation_beta=1.0, swiglu_limit=7.0, normalize_routing_weights=1),
        helper.make_node("SimplifiedLayerNormalization", ["moe", "gamma"], ["y"], epsilon=1e-5),
        c("FusedConv", ["img", "wconv", "bconv"], ["conv"], activation="Relu", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["conv"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        c("FusedGemm", ["flat", "wg", "bg"], ["y2"], activation="LeakyRelu", activation_alpha=0.1),
    ]
    inputs = [vi("ids", TensorProto.INT32, [2, 4]), vi("segs", TensorProto.INT32, [2, 4]),
              vi("mask", TensorProto.INT32, [2, 4]), vi("posids", I64, [2, 4]), vi("img", F, [1, 3, 6, 6])]
    graph = helper.make_graph(nodes, "transformer_contrib", inputs, [vi("y", F, [2, 4, 16]), vi("y2", F, [1, 3])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ms, 1)])


def hybrid_contrib_model() -> onnx.ModelProto:
    """onnxruntime's hybrid and multimodal LLM ops (``hal.kernels.contrib_hybrid``) and contrib twins of
    ONNX ops (``contrib_misc``) in one small graph: MRotaryEmbedding, CausalConvWithState,
    LinearAttentionGate, LinearAttention (gated delta rule), GatedRMSNorm, GatedAdd, TransposeMatMul,
    Trilu and Pad. For the fuzzer's corpus."""
    ms = "com.microsoft"
    rng = np.random.default_rng(12)

    def f32(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    consts = {"cos": np.cos(np.outer(np.arange(24), [1.0, 0.3, 0.1, 0.03])).astype(np.float32),
              "sin": np.sin(np.outer(np.arange(24), [1.0, 0.3, 0.1, 0.03])).astype(np.float32),
              "cw": f32(16, 1, 3), "cb": f32(16), "cpast": f32(2, 2, 16), "dt": f32(2),
              "dscale": -np.ones(2, np.float32), "lpast": f32(2, 2, 8, 8), "nscale": f32(16) + 1, "wt": f32(16, 16),
              "pads": np.array([0, 0, 0, 0, 0, 1])}

    def c(op: str, ins: list[str], outs: list[str], **attrs: Any) -> onnx.NodeProto:
        return helper.make_node(op, ins, outs, domain=ms, **attrs)

    nodes = [
        c("MRotaryEmbedding", ["x", "pos", "cos", "sin"], ["rot"], num_heads=2, mrope_section=[2, 1, 1]),
        c("CausalConvWithState", ["rot", "cw", "cb", "cpast"], ["conv", "cpresent"], channels_last=1,
          activation="silu"),
        c("LinearAttentionGate", ["gate_a", "dt", "dscale", "gate_b"], ["decay", "beta"]),
        c("LinearAttention", ["conv", "conv", "rot", "lpast", "decay", "beta"], ["att", "lpresent"], q_num_heads=2,
          kv_num_heads=2, update_rule="gated_delta"),
        c("GatedRMSNorm", ["att", "nscale", "x"], ["norm"]),
        helper.make_node("ReduceMean", ["rot"], ["row"], axes=[-1]),
        c("GatedAdd", ["norm", "x", "row"], ["gadd"]),
        c("TransposeMatMul", ["gadd", "wt"], ["tm"], transB=1, alpha=0.5),
        c("Trilu", ["tm"], ["tri"], upper=0),
        c("Pad", ["tri", "pads"], ["y"]),
    ]
    inputs = [vi("x", F, [2, 4, 16]), vi("pos", I64, [3, 2, 4]), vi("gate_a", F, [2, 4, 2]), vi("gate_b", F, [2, 4, 2])]
    graph = helper.make_graph(nodes, "hybrid_contrib", inputs, [vi("y", F, [2, 4, 17])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ms, 1)])


def generation_contrib_model() -> onnx.ModelProto:
    """onnxruntime's generation ops (``hal.kernels.contrib_search``) in one graph over the tiny decoders
    of tests/kernels/_generation_models.py: GreedySearch, Sampling and BeamSearch around one GPT-style
    decoder, BeamSearch around a T5 pair, and WhisperBeamSearch with its timestamp rules. For the
    fuzzer's corpus; ``ids`` (2, 5) int32 and ``feats`` (2, 6, 10) float are fed, the rest are weights."""
    from tests.kernels._generation_models import decoder, first_step_encoder, t5_decoder, t5_encoder

    ms = "com.microsoft"
    consts = {"max_len": np.array([11], np.int32), "min_len": np.array([0], np.int32),
              "beams": np.array([3], np.int32), "returned": np.array([2], np.int32),
              "penalty": np.array([1.0], np.float32), "rep": np.array([1.2], np.float32),
              "seed": np.array([5], np.int32), "ts": np.array([1], np.int32)}
    gpt = {"decoder": decoder(barred=(2,)), "eos_token_id": 10, "pad_token_id": 2}
    beam_ins = ["ids", "max_len", "min_len", "beams", "returned", "penalty", "rep"]
    nodes = [
        helper.make_node("GreedySearch", ["ids", "max_len", "min_len", "rep"], ["greedy"], domain=ms,
                         no_repeat_ngram_size=2, **gpt),
        helper.make_node("Sampling", ["ids", "max_len", "", "", "", "", "", "", "seed"], ["sampled"], domain=ms,
                         top_p=0.8, temperature=0.9, **gpt),
        helper.make_node("BeamSearch", beam_ins, ["gpt_beams", "gpt_scores"], domain=ms, **gpt),
        helper.make_node("BeamSearch", beam_ins, ["t5_beams"], domain=ms, model_type=1, encoder=t5_encoder(),
                         decoder=t5_decoder(barred=(0,)), decoder_start_token_id=0, eos_token_id=12, pad_token_id=0),
        helper.make_node("WhisperBeamSearch", ["feats", *beam_ins[1:], "", "", "", "", "ts"], ["whisper_beams"],
                         domain=ms, encoder=first_step_encoder(), decoder=t5_decoder(masked=False, seed=10),
                         decoder_start_token_id=11, eos_token_id=10, pad_token_id=10, beginning_timestamp_token_id=16,
                         no_timestamps_token_id=15, start_of_lm_token_id=14, translate_token_id=12,
                         transcribe_token_id=13),
    ]
    i32 = TensorProto.INT32
    outputs = [vi("greedy", i32, [2, 11]), vi("sampled", i32, [2, 11]), vi("gpt_beams", i32, [2, 2, 11]),
               vi("gpt_scores", F, [2, 2]), vi("t5_beams", i32, [2, 2, 11]), vi("whisper_beams", i32, [2, 2, 11])]
    graph = helper.make_graph(nodes, "generation_contrib", [vi("ids", i32, [2, 5]), vi("feats", F, [2, 6, 10])],
                              outputs, [numpy_helper.from_array(v, k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ms, 1)])
