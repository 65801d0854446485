"""Tiny decoders in plain ONNX ops, in the forms onnxruntime's generation ops drive, and a model of
one GreedySearch or BeamSearch node around them, as onnxruntime.transformers.convert_generation
writes one around an exported GPT-2 or T5:

* ``decoder``: GPT-2 style (input_ids, position_ids, attention_mask, past_0 ... -> logits,
  present_0 ...);
* ``t5_encoder`` and ``t5_decoder``: T5 style (encoder_input_ids, encoder_attention_mask ->
  present_key_cross_0, present_value_cross_0 ...; input_ids, encoder_attention_mask,
  past_key_self_0, past_value_self_0 ..., past_key_cross_0 ... -> logits, present_key_self_0 ...);
* ``first_step_encoder`` and ``t5_decoder(masked=False)``: Whisper style (encoder_input_ids (the
  features), decoder_input_ids -> logits, encoder_hidden_states, the self and cross presents); with
  ``t5=True`` and ``t5_decoder(hidden=...)``, T5's older format (the encoder also takes
  encoder_attention_mask).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS = "com.microsoft"
OPSETS = [helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)]


class _Graph:
    """Nodes and initializers of a graph being built, with random weights from ``seed``."""

    def __init__(self, seed: int, heads: int, head: int):
        self.rng = np.random.default_rng(seed)
        self.heads, self.head, self.hidden = heads, head, heads * head
        self.inits: list[onnx.TensorProto] = []
        self.nodes: list[onnx.NodeProto] = []
        for n, v in (("zero", np.int64(0)), ("one", np.int64(1)), ("neg_big", np.float32(-1e4)),
                     ("fzero", np.float32(0)), ("shape_bshd", np.array([0, 0, heads, head], np.int64)),
                     ("shape_bse", np.array([0, 0, heads * head], np.int64)), ("ax0", np.array([0], np.int64)),
                     ("ax1", np.array([1], np.int64)), ("ax12", np.array([1, 2], np.int64)),
                     ("split_kv", np.array([1, 1], np.int64)), ("scale", np.float32(1 / np.sqrt(head)))):
            self.const(n, v)

    def weight(self, n: str, *shape: int, scale: float = 0.5) -> str:
        self.inits.append(numpy_helper.from_array((self.rng.standard_normal(shape) * scale).astype(np.float32), n))
        return n

    def const(self, n: str, value) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), n))
        return n

    def node(self, op: str, ins: list[str], out: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, ins, [out], **attrs))
        return out

    def heads_of(self, x: str, weight: str, tag: str) -> str:
        """x @ weight as (batch, heads, sequence, head)."""
        p = self.node("MatMul", [x, self.weight(weight, self.hidden, self.hidden)], f"{tag}_p")
        return self.node("Transpose", [self.node("Reshape", [p, "shape_bshd"], f"{tag}_r")], f"{tag}_h",
                         perm=[0, 2, 1, 3])

    def attend(self, x: str, q: str, k: str, v: str, bias: str, tag: str) -> str:
        """x + tanh(softmax(q k^T / sqrt(d) + bias) v, merged, projected)."""
        kt = self.node("Transpose", [k], f"{tag}_kt", perm=[0, 1, 3, 2])
        qk = self.node("Mul", [self.node("MatMul", [q, kt], f"{tag}_qk"), "scale"], f"{tag}_qks")
        s = self.node("Add", [qk, bias], f"{tag}_s")
        o = self.node("MatMul", [self.node("Softmax", [s], f"{tag}_p", axis=-1), v], f"{tag}_o")
        o = self.node("Transpose", [o], f"{tag}_ot", perm=[0, 2, 1, 3])
        o = self.node("Reshape", [o, "shape_bse"], f"{tag}_or")
        proj = self.node("MatMul", [o, self.weight(f"{tag}_wo", self.hidden, self.hidden)], f"{tag}_proj")
        return self.node("Add", [x, self.node("Tanh", [proj], f"{tag}_act")], f"{tag}_out")

    def mask_bias(self, mask: str, tag: str, visible: str | None = None) -> str:
        """0 where the (batch, keys) ``mask`` keeps a key (and ``visible`` allows it), -1e4 elsewhere."""
        keep = self.node("Unsqueeze", [mask, "ax12"], f"{tag}_m4")
        keep = self.node("Cast", [keep], f"{tag}_mb", to=TensorProto.BOOL)
        if visible is not None:
            keep = self.node("And", [visible, keep], f"{tag}_vis")
        return self.node("Where", [keep, "fzero", "neg_big"], f"{tag}_bias")

    def logits(self, x: str, vocab: int, barred: tuple[int, ...]) -> None:
        offset = np.zeros(vocab, np.float32)
        offset[list(barred)] = -30
        self.node("Add", [self.node("MatMul", [x, self.weight("head", self.hidden, vocab, scale=1.0)], "raw"),
                          self.const("offset", offset)], "logits")


def decoder(layers: int = 2, heads: int = 2, head: int = 4, vocab: int = 23, positions: int = 64, seed: int = 0,
            name: str = "decoder", barred: tuple[int, ...] = ()) -> onnx.GraphProto:
    """GPT-2 style: one attention block per layer over token and position embeddings, each query
    seeing the keys at or before its position (past included) that attention_mask keeps; logits =
    hidden @ head, the tokens in ``barred`` 30 lower (so that the decoder never picks them)."""
    g = _Graph(seed, heads, head)
    x = g.node("Add", [g.node("Gather", [g.weight("wte", vocab, g.hidden), "input_ids"], "tok"),
                       g.node("Gather", [g.weight("wpe", positions, g.hidden), "position_ids"], "pos")], "h0")
    # key j is visible to query i when j <= past + i
    total = g.node("Gather", [g.node("Shape", ["attention_mask"], "mask_shape"), "one"], "total")
    seq = g.node("Gather", [g.node("Shape", ["input_ids"], "ids_shape"), "one"], "seq")
    rows = g.node("Range", [g.node("Sub", [total, seq], "past_len"), total, "one"], "rows")
    cols = g.node("Range", ["zero", total, "one"], "cols")
    causal = g.node("LessOrEqual", [g.node("Unsqueeze", [cols, "ax0"], "cols2"),
                                    g.node("Unsqueeze", [rows, "ax1"], "rows2")], "causal")
    bias = g.mask_bias("attention_mask", "self", causal)
    for i in range(layers):
        q, k, v = (g.heads_of(x, f"w{c}{i}", f"{c}{i}") for c in "qkv")
        g.nodes.append(helper.make_node("Split", [f"past_{i}", "split_kv"], [f"pk{i}", f"pv{i}"], axis=0))
        kk = g.node("Concat", [g.node("Squeeze", [f"pk{i}", "ax0"], f"pk_s{i}"), k], f"kk{i}", axis=2)
        vv = g.node("Concat", [g.node("Squeeze", [f"pv{i}", "ax0"], f"pv_s{i}"), v], f"vv{i}", axis=2)
        g.node("Concat", [g.node("Unsqueeze", [kk, "ax0"], f"kk_u{i}"), g.node("Unsqueeze", [vv, "ax0"], f"vv_u{i}")],
               f"present_{i}", axis=0)
        x = g.attend(x, q, kk, vv, bias, f"l{i}")
    g.logits(x, vocab, barred)
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT32, ["batch", s])
              for n, s in (("input_ids", "seq"), ("position_ids", "seq"), ("attention_mask", "total"))]
    inputs += [helper.make_tensor_value_info(f"past_{i}", TensorProto.FLOAT, [2, "batch", heads, "past", head])
               for i in range(layers)]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab])]
    outputs += [helper.make_tensor_value_info(f"present_{i}", TensorProto.FLOAT, [2, "batch", heads, "total", head])
                for i in range(layers)]
    return helper.make_graph(g.nodes, name, inputs, outputs, g.inits)


def t5_encoder(layers: int = 2, heads: int = 2, head: int = 4, vocab: int = 23, seed: int = 1) -> onnx.GraphProto:
    """T5 style: an attention block over the token embeddings (keys the mask keeps), then each
    decoder layer's cross keys and values."""
    g = _Graph(seed, heads, head)
    x = g.node("Gather", [g.weight("emb", vocab, g.hidden), "encoder_input_ids"], "h0")
    q, k, v = (g.heads_of(x, f"enc_w{c}", f"enc_{c}") for c in "qkv")
    x = g.attend(x, q, k, v, g.mask_bias("encoder_attention_mask", "enc"), "enc")
    outputs = []
    for i in range(layers):
        for kv in ("key", "value"):
            g.node("Identity", [g.heads_of(x, f"cross_w{kv}{i}", f"cross_{kv}{i}")], f"present_{kv}_cross_{i}")
            outputs.append(helper.make_tensor_value_info(f"present_{kv}_cross_{i}", TensorProto.FLOAT,
                                                         ["batch", heads, "enc_seq", head]))
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT32, ["batch", "enc_seq"])
              for n in ("encoder_input_ids", "encoder_attention_mask")]
    return helper.make_graph(g.nodes, "t5 encoder", inputs, outputs, g.inits)


def t5_decoder(layers: int = 2, heads: int = 2, head: int = 4, vocab: int = 23, seed: int = 2,
               barred: tuple[int, ...] = (), masked: bool = True, hidden: bool = False) -> onnx.GraphProto:
    """T5 style, one token a run: per layer self-attention over the past and the token, then cross
    attention over the encoder's keys that encoder_attention_mask keeps (``masked``; Whisper's
    decoder takes no mask: all of them). ``hidden``: it also takes encoder_hidden_states (T5's older
    format), their mean added to the token's embedding."""
    g = _Graph(seed, heads, head)
    x = g.node("Gather", [g.weight("emb", vocab, g.hidden), "input_ids"], "h0")
    if hidden:
        x = g.node("Add", [x, g.node("ReduceMean", ["encoder_hidden_states"], "hidden_mean", axes=[1])], "h0_hidden")
    cross_bias = g.mask_bias("encoder_attention_mask", "cross") if masked else "fzero"
    for i in range(layers):
        q, k, v = (g.heads_of(x, f"w{c}{i}", f"{c}{i}") for c in "qkv")
        kk = g.node("Concat", [f"past_key_self_{i}", k], f"present_key_self_{i}", axis=2)
        vv = g.node("Concat", [f"past_value_self_{i}", v], f"present_value_self_{i}", axis=2)
        x = g.attend(x, q, kk, vv, "fzero", f"self{i}")
        x = g.attend(x, g.heads_of(x, f"wq_cross{i}", f"qc{i}"), f"past_key_cross_{i}", f"past_value_cross_{i}",
                     cross_bias, f"cross{i}")
    g.logits(x, vocab, barred)
    self_pasts = [f"past_{kv}_self_{i}" for i in range(layers) for kv in ("key", "value")]
    cross_pasts = [f"past_{kv}_cross_{i}" for i in range(layers) for kv in ("key", "value")]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT32, ["batch", 1])]
    if masked:
        inputs.append(helper.make_tensor_value_info("encoder_attention_mask", TensorProto.INT32, ["batch", "enc_seq"]))
    if hidden:
        inputs.append(helper.make_tensor_value_info("encoder_hidden_states", TensorProto.FLOAT,
                                                    ["batch", "enc_seq", g.hidden]))
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", heads, "past", head]) for n in self_pasts]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", heads, "enc_seq", head])
               for n in cross_pasts]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1, vocab])]
    outputs += [helper.make_tensor_value_info(n.replace("past", "present"), TensorProto.FLOAT,
                                              ["batch", heads, "total", head]) for n in self_pasts]
    return helper.make_graph(g.nodes, "t5 decoder", inputs, outputs, g.inits)


def first_step_encoder(layers: int = 2, heads: int = 2, head: int = 4, vocab: int = 23, mels: int = 6,
                       seed: int = 3, t5: bool = False) -> onnx.GraphProto:
    """An encoder that also makes the decoder's first step. Whisper style: the features (batch,
    mels, frames) projected to the hidden states; T5's older style (``t5``): the tokens
    (encoder_input_ids, encoder_attention_mask) through masked self attention. Then each layer's
    cross keys and values from the hidden states, and the first decoder tokens through self
    attention (each layer's self keys and values) and cross attention, to the logits."""
    g = _Graph(seed, heads, head)
    cross_bias = "fzero"
    if t5:
        x = g.node("Gather", [g.weight("enc_emb", vocab, g.hidden), "encoder_input_ids"], "enc0")
        cross_bias = g.mask_bias("encoder_attention_mask", "enc")
        q, k, v = (g.heads_of(x, f"enc_w{c}", f"enc_{c}") for c in "qkv")
        h = g.node("Identity", [g.attend(x, q, k, v, cross_bias, "enc")], "encoder_hidden_states")
    else:
        frames = g.node("Transpose", ["encoder_input_ids"], "frames", perm=[0, 2, 1])
        h = g.node("Tanh", [g.node("MatMul", [frames, g.weight("proj", mels, g.hidden)], "proj_out")],
                   "encoder_hidden_states")
    x = g.node("Gather", [g.weight("emb", vocab, g.hidden), "decoder_input_ids"], "x0")
    selfs, crosses = [], []
    for i in range(layers):
        q, k, v = (g.heads_of(x, f"w{c}{i}", f"{c}{i}") for c in "qkv")
        selfs += [g.node("Identity", [k], f"present_key_self_{i}"), g.node("Identity", [v], f"present_value_self_{i}")]
        x = g.attend(x, q, k, v, "fzero", f"self{i}")
        ck, cv = (g.node("Identity", [g.heads_of(h, f"wc{c}{i}", f"c{c}{i}")], f"present_{n}_cross_{i}")
                  for c, n in (("k", "key"), ("v", "value")))
        crosses += [ck, cv]
        x = g.attend(x, g.heads_of(x, f"wq_cross{i}", f"qc{i}"), ck, cv, cross_bias, f"cross{i}")
    g.logits(x, vocab, ())
    if t5:
        inputs = [helper.make_tensor_value_info(n, TensorProto.INT32, ["batch", "frames"])
                  for n in ("encoder_input_ids", "encoder_attention_mask")]
    else:
        inputs = [helper.make_tensor_value_info("encoder_input_ids", TensorProto.FLOAT, ["batch", mels, "frames"])]
    inputs.append(helper.make_tensor_value_info("decoder_input_ids", TensorProto.INT32, ["batch", "seq"]))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab]),
               helper.make_tensor_value_info(h, TensorProto.FLOAT, ["batch", "frames", g.hidden])]
    outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", heads, "seq", head]) for n in selfs]
    outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", heads, "frames", head]) for n in crosses]
    return helper.make_graph(g.nodes, "t5 encoder and first step" if t5 else "whisper encoder", inputs, outputs,
                             g.inits)


GREEDY_INPUTS = ["input_ids", "max_length", "min_length", "repetition_penalty", "vocab_mask", "prefix_vocab_mask",
                 "attention_mask"]
BEAM_INPUTS = ["input_ids", "max_length", "min_length", "num_beams", "num_return_sequences", "length_penalty",
               "repetition_penalty", "vocab_mask", "prefix_vocab_mask", "attention_mask"]
SAMPLING_INPUTS = [*GREEDY_INPUTS, "presence_mask", "seed"]
WHISPER_INPUTS = ["input_features", *BEAM_INPUTS[1:], "decoder_input_ids", "logits_processor", "cross_qk_layer_head",
                  "extra_decoding_ids", "temperature"]
_TYPES = {"length_penalty": TensorProto.FLOAT, "repetition_penalty": TensorProto.FLOAT,
          "input_features": TensorProto.FLOAT, "temperature": TensorProto.FLOAT}


def search_model(op: str, feeds: dict[str, np.ndarray], outputs: list[str], dec: onnx.GraphProto | None = None,
                 init: onnx.GraphProto | None = None, enc: onnx.GraphProto | None = None, **attrs) -> bytes:
    """One ``op`` node (GreedySearch, BeamSearch, Sampling, WhisperBeamSearch) over ``dec`` (and
    ``init`` / ``enc``); the inputs named in ``feeds`` are the graph's inputs (fed), the others omitted."""
    order = {"GreedySearch": GREEDY_INPUTS, "BeamSearch": BEAM_INPUTS, "Sampling": SAMPLING_INPUTS}.get(
        op, WHISPER_INPUTS)
    names = [n if n in feeds else "" for n in order]
    while len(names) > len(GREEDY_INPUTS) and not names[-1]:  # convert_generation names the first seven or ten
        names.pop()
    graphs = {"decoder": dec if dec is not None else decoder()}
    for name, g in (("init_decoder", init), ("encoder", enc)):
        if g is not None:
            graphs[name] = g
    node = helper.make_node(op, names, outputs, domain=MS, **graphs, **attrs)
    ins = [helper.make_tensor_value_info(n, _TYPES.get(n, TensorProto.INT32), list(v.shape)) for n, v in feeds.items()]
    outs = [helper.make_tensor_value_info(o, TensorProto.INT32 if o == "sequences" else TensorProto.FLOAT, None)
            for o in outputs if o]
    model = helper.make_model(helper.make_graph([node], op, ins, outs), opset_imports=OPSETS)
    return model.SerializeToString()


def scalar(value, dtype=np.int32) -> np.ndarray:
    return np.array([value], dtype=dtype)
