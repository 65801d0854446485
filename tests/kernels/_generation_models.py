"""A tiny GPT-2 style decoder in plain ONNX ops, in the form onnxruntime's generation ops drive
(input_ids, position_ids, attention_mask, past_0 ... -> logits, present_0 ...), and a model of one
GreedySearch or BeamSearch node around it, as onnxruntime.transformers.convert_generation writes
one around an exported GPT-2."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS = "com.microsoft"
OPSETS = [helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)]


def decoder(layers: int = 2, heads: int = 2, head: int = 4, vocab: int = 23, positions: int = 64, seed: int = 0,
            name: str = "decoder", barred: tuple[int, ...] = ()) -> onnx.GraphProto:
    """One attention block per layer over token and position embeddings: each query sees the keys at
    or before its position (past included) that attention_mask keeps; logits = hidden @ head, the
    tokens in ``barred`` 30 lower (so that the decoder never picks them)."""
    rng = np.random.default_rng(seed)
    hidden = heads * head
    inits, nodes = [], []

    def w(n: str, *shape: int, scale: float = 0.5) -> str:
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), n))
        return n

    def c(n: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), n))
        return n

    def node(op: str, ins: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, ins, [out], **attrs))
        return out

    c("zero", np.int64(0)), c("one", np.int64(1)), c("neg_big", np.float32(-1e4)), c("fzero", np.float32(0))
    c("shape_bshd", np.array([0, 0, heads, head], np.int64)), c("shape_bse", np.array([0, 0, hidden], np.int64))
    c("ax0", np.array([0], np.int64)), c("ax1", np.array([1], np.int64)), c("ax12", np.array([1, 2], np.int64))
    c("split_kv", np.array([1, 1], np.int64))
    c("scale", np.float32(1 / np.sqrt(head)))
    x = node("Add", [node("Gather", [w("wte", vocab, hidden), "input_ids"], "tok"),
                     node("Gather", [w("wpe", positions, hidden), "position_ids"], "pos")], "h0")
    # the causal mask over the whole (past + new) sequence: key j visible to query i when j <= past + i
    total = node("Gather", [node("Shape", ["attention_mask"], "mask_shape"), "one"], "total")
    seq = node("Gather", [node("Shape", ["input_ids"], "ids_shape"), "one"], "seq")
    past_len = node("Sub", [total, seq], "past_len")
    rows = node("Range", [past_len, total, "one"], "rows")
    cols = node("Range", ["zero", total, "one"], "cols")
    causal = node("LessOrEqual", [node("Unsqueeze", [cols, "ax0"], "cols2"),
                                  node("Unsqueeze", [rows, "ax1"], "rows2")], "causal")
    keep = node("Cast", [node("Unsqueeze", ["attention_mask", "ax12"], "mask4")], "mask_bool", to=TensorProto.BOOL)
    bias = node("Where", [node("And", [causal, keep], "visible"), "fzero", "neg_big"], "bias")
    presents = []
    def heads_of(t: str, tag: str) -> str:
        return node("Transpose", [node("Reshape", [t, "shape_bshd"], f"{tag}_r")], f"{tag}_h", perm=[0, 2, 1, 3])

    for i in range(layers):
        q = heads_of(node("MatMul", [x, w(f"wq{i}", hidden, hidden)], f"q{i}"), f"q{i}")
        k = heads_of(node("MatMul", [x, w(f"wk{i}", hidden, hidden)], f"k{i}"), f"k{i}")
        v = heads_of(node("MatMul", [x, w(f"wv{i}", hidden, hidden)], f"v{i}"), f"v{i}")
        nodes.append(helper.make_node("Split", [f"past_{i}", "split_kv"], [f"pk{i}", f"pv{i}"], axis=0))
        kk = node("Concat", [node("Squeeze", [f"pk{i}", "ax0"], f"pk_s{i}"), k], f"kk{i}", axis=2)
        vv = node("Concat", [node("Squeeze", [f"pv{i}", "ax0"], f"pv_s{i}"), v], f"vv{i}", axis=2)
        presents.append(node("Concat", [node("Unsqueeze", [kk, "ax0"], f"kk_u{i}"),
                                        node("Unsqueeze", [vv, "ax0"], f"vv_u{i}")], f"present_{i}", axis=0))
        s = node("Add", [node("Mul", [node("MatMul", [q, node("Transpose", [kk], f"kt{i}", perm=[0, 1, 3, 2])],
                                                f"qk{i}"), "scale"], f"qk_s{i}"), bias], f"scores{i}")
        o = node("MatMul", [node("Softmax", [s], f"p{i}", axis=-1), vv], f"o{i}")
        o = node("Reshape", [node("Transpose", [o], f"o_t{i}", perm=[0, 2, 1, 3]), "shape_bse"], f"o_r{i}")
        x = node("Add", [x, node("Tanh", [node("MatMul", [o, w(f"wo{i}", hidden, hidden)], f"proj{i}")],
                                 f"act{i}")], f"h{i + 1}")
    offset = np.zeros(vocab, np.float32)
    offset[list(barred)] = -30
    node("Add", [node("MatMul", [x, w("head", hidden, vocab, scale=1.0)], "scores"), c("offset", offset)], "logits")
    past_dims = [2, "batch", heads, "past", head]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT32, ["batch", s])
              for n, s in (("input_ids", "seq"), ("position_ids", "seq"), ("attention_mask", "total"))]
    inputs += [helper.make_tensor_value_info(f"past_{i}", TensorProto.FLOAT, past_dims) for i in range(layers)]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab])]
    outputs += [helper.make_tensor_value_info(f"present_{i}", TensorProto.FLOAT, [2, "batch", heads, "total", head])
                for i in range(layers)]
    return helper.make_graph(nodes, name, inputs, outputs, inits)


GREEDY_INPUTS = ["input_ids", "max_length", "min_length", "repetition_penalty", "vocab_mask", "prefix_vocab_mask",
                 "attention_mask"]
BEAM_INPUTS = ["input_ids", "max_length", "min_length", "num_beams", "num_return_sequences", "length_penalty",
               "repetition_penalty", "vocab_mask", "prefix_vocab_mask", "attention_mask"]
_TYPES = {"length_penalty": TensorProto.FLOAT, "repetition_penalty": TensorProto.FLOAT}


def search_model(op: str, feeds: dict[str, np.ndarray], outputs: list[str], dec: onnx.GraphProto | None = None,
                 init: onnx.GraphProto | None = None, **attrs) -> bytes:
    """One ``op`` node (GreedySearch / BeamSearch) over ``dec``; the inputs named in ``feeds`` are the
    graph's inputs (fed), the others omitted."""
    order = GREEDY_INPUTS if op == "GreedySearch" else BEAM_INPUTS
    names = [n if n in feeds else "" for n in order]  # all of them, as convert_generation writes them
    graphs = {"decoder": dec if dec is not None else decoder()}
    if init is not None:
        graphs["init_decoder"] = init
    node = helper.make_node(op, names, outputs, domain=MS, **graphs, **attrs)
    ins = [helper.make_tensor_value_info(n, _TYPES.get(n, TensorProto.INT32), list(v.shape)) for n, v in feeds.items()]
    outs = [helper.make_tensor_value_info(o, TensorProto.INT32 if o == "sequences" else TensorProto.FLOAT, None)
            for o in outputs if o]
    model = helper.make_model(helper.make_graph([node], op, ins, outs), opset_imports=OPSETS)
    return model.SerializeToString()


def scalar(value, dtype=np.int32) -> np.ndarray:
    return np.array([value], dtype=dtype)
