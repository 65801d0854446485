"""The differential sweep's families for onnxruntime's generation ops GreedySearch and BeamSearch
(com.microsoft, model_type 0): one node around a tiny random GPT-style decoder graph (input_ids,
position_ids, attention_mask, past_0 ... -> logits, present_0 ...): token (and position) embeddings,
then a layer or two, each a one-head causal attention over the pasts and the new tokens or a
tanh MLP that passes the pasts through; the logits a projection of the last hidden states. Drawn:
the vocabulary (5 ... 40), hidden size (4 ... 16), batch (1 ... 3), prompt lengths (1 ... 6,
left-padded through attention_mask, sometimes with a hole), max_length, min_length (at times past
max_length), repetition_penalty, vocab_mask, prefix_vocab_mask, no_repeat_ngram_size, eos and pad
ids (at times one id), and for BeamSearch num_beams (1 ... 4), num_return_sequences,
length_penalty, early_stopping and the sequences_scores and scores outputs.

The weights are normal draws, so the logits never tie exactly (argmax and top-k order ties as
each implementation likes); decoders' logits in float32 agree to rounding, far inside any gap a
draw meets in practice.

Left out or masked, as onnxruntime leaves them undefined:
* GreedySearch leaves the sequences' columns after an early stop (every sequence at eos)
  unwritten (zeros or stale memory): the model's output keeps the columns up to the first column
  past the prompt that is pad in every row (where the last sequence ended) and pads the rest;
* BeamSearch leaves the scores of the runs after an early stop unwritten: the scores output is
  drawn only with eos barred by vocab_mask, with tokens enough that no row is all barred (there eos
  ties with the rest and may end a beam after all), so no beam ends;
* a barred token's score is float32's lowest and a beam's start -1e9 (beams past the first), which
  would make the judge's tolerance (relative to the largest magnitude) meaningless: scores under
  -1e4 are set to 0 in both peers' outputs by the model itself.
Not drawn: model_type 1 (T5) and WhisperBeamSearch (their encoder graphs are another family's
work), Sampling (its draws are libstdc++'s generator), float16 decoders (onnxruntime's CPU kernels
are float32 only), init_decoder and vocab_size.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from benchmarks.differential_contrib import _ms
from benchmarks.differential_draw import Case, ri

_MS = "com.microsoft"
F32, I32 = TensorProto.FLOAT, TensorProto.INT32


class _Decoder:
    """A GPT-style decoder graph under construction, its weights drawn from the case's generator."""

    def __init__(self, c: Case, vocab: int, hidden: int, positions: int):
        self.r, self.hidden = c.rng, hidden
        self.nodes: list = []
        self.inits: list = []
        self._n = 0
        for name, v in (("zero", np.int64(0)), ("one", np.int64(1)), ("ax0", [0]), ("ax1", [1]), ("ax12", [1, 2]),
                        ("fzero", np.float32(0)), ("neg_big", np.float32(-1e4)),
                        ("scale", np.float32(1 / np.sqrt(hidden)))):
            self.const(name, np.asarray(v, np.int64) if isinstance(v, list) else v)
        # position embeddings always: without them and attention a decoder's next logits depend on the
        # last token alone, and beams that take the same steps in another order tie to float32 rounding
        # (a finding of hypotheses swapped, onnxruntime's scores -1.0022203 twice, hal's -1.0022202)
        tokens = self.node("Gather", [self.weight([vocab, hidden], 1.0), "input_ids"])
        where = self.node("Gather", [self.weight([positions, hidden], 0.5), "position_ids"])
        self.x = self.node("Add", [tokens, where])

    def const(self, name: str, value) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, shape: list[int], scale: float) -> str:
        self._n += 1
        return self.const(f"w{self._n}", (self.r.standard_normal(shape) * scale).astype(np.float32))

    def node(self, op: str, ins: list[str], out: str | None = None, **attrs) -> str:
        self._n += 1
        out = out or f"{op.lower()}{self._n}"
        self.nodes.append(helper.make_node(op, ins, [out], **attrs))
        return out

    def bias(self) -> str:
        """0 where a query may see a key (at or before its position, kept by attention_mask), else -1e4."""
        total = self.node("Gather", [self.node("Shape", ["attention_mask"]), "one"])
        seq = self.node("Gather", [self.node("Shape", ["input_ids"]), "one"])
        rows = self.node("Range", [self.node("Sub", [total, seq]), total, "one"])
        cols = self.node("Range", ["zero", total, "one"])
        cols, rows = self.node("Unsqueeze", [cols, "ax0"]), self.node("Unsqueeze", [rows, "ax1"])
        causal = self.node("LessOrEqual", [cols, rows])
        keep = self.node("Cast", [self.node("Unsqueeze", ["attention_mask", "ax12"])], to=TensorProto.BOOL)
        return self.node("Where", [self.node("And", [causal, keep]), "fzero", "neg_big"])

    def layer(self, i: int, attend: bool, bias: str) -> None:
        """present_i: the past and this run's (key, value); x plus tanh of attention's output (or of an MLP)."""
        h = self.hidden
        k, v = (self.node("Unsqueeze", [self.node("MatMul", [self.x, self.weight([h, h], 0.5)]), "ax1"])
                for _ in range(2))  # (batch, 1 head, seq, hidden)
        pk, pv = f"pk{i}", f"pv{i}"
        split = self.const(f"split{i}", np.array([1, 1], np.int64))
        self.nodes.append(helper.make_node("Split", [f"past_{i}", split], [pk, pv], axis=0))
        kk = self.node("Concat", [self.node("Squeeze", [pk, "ax0"]), k], axis=2)
        vv = self.node("Concat", [self.node("Squeeze", [pv, "ax0"]), v], axis=2)
        self.node("Concat", [self.node("Unsqueeze", [kk, "ax0"]), self.node("Unsqueeze", [vv, "ax0"])],
                  f"present_{i}", axis=0)
        if attend:
            q = self.node("Unsqueeze", [self.node("MatMul", [self.x, self.weight([h, h], 0.5)]), "ax1"])
            s = self.node("MatMul", [q, self.node("Transpose", [kk], perm=[0, 1, 3, 2])])
            s = self.node("Add", [self.node("Mul", [s, "scale"]), bias])
            o = self.node("Squeeze", [self.node("MatMul", [self.node("Softmax", [s], axis=-1), vv]), "ax1"])
        else:
            o = self.node("Add", [self.x, self.weight([h], 0.5)])
        self.x = self.node("Add", [self.x, self.node("Tanh", [self.node("MatMul", [o, self.weight([h, h], 0.7)])])])


def _decoder(c: Case, vocab: int, positions: int) -> helper.GraphProto:
    r = c.rng
    hidden = ri(r, 4, 17)
    d = _Decoder(c, vocab, hidden, positions)
    layers = ri(r, 1, 3)
    bias = d.bias()
    for i in range(layers):
        d.layer(i, r.random() < 0.7, bias)
    d.node("Add", [d.node("MatMul", [d.x, d.weight([hidden, vocab], 1.5)]), d.weight([vocab], 0.5)], "logits")
    ins = [helper.make_tensor_value_info(n, I32, ["batch", s])
           for n, s in (("input_ids", "seq"), ("position_ids", "seq"), ("attention_mask", "total"))]
    ins += [helper.make_tensor_value_info(f"past_{i}", F32, [2, "batch", 1, "past", hidden]) for i in range(layers)]
    outs = [helper.make_tensor_value_info("logits", F32, ["batch", "seq", vocab])]
    outs += [helper.make_tensor_value_info(f"present_{i}", F32, [2, "batch", 1, "total", hidden])
             for i in range(layers)]
    return helper.make_graph(d.nodes, "decoder", ins, outs, d.inits)


def _i32(c: Case, value) -> str:
    return c.feed([], value=np.asarray(value, np.int32).reshape(1))


def _left_padded(c: Case, ids: np.ndarray, pad: int) -> np.ndarray:
    """Pads leading some rows (the first row whole), as a tokenizer pads a batch on the left: the mask."""
    r, (batch, length) = c.rng, ids.shape
    lead = [0] + [ri(r, 0, length) for _ in range(batch - 1)]
    mask = np.array([[0] * p + [1] * (length - p) for p in lead], np.int32)
    ids[mask == 0] = pad
    return mask


def _common(c: Case, beam: bool) -> tuple[list[str], dict, int, int, int]:
    """The prompt, lengths and processors every search takes: the node's inputs (named as its
    schema orders them, "" for the ones left out, beam's num_beams etc. still to fill), its
    attributes, and (prompt, max_length, vocab)."""
    r = c.rng
    c.dtype = np.dtype(np.float32)
    c.domains[_MS] = 1
    vocab, batch, prompt = ri(r, 5, 41), ri(r, 1, 4), ri(r, 1, 7)
    longest = prompt + ri(r, 1, 8)
    eos, pad = (int(t) for t in r.choice(vocab, 2, replace=False))
    if r.random() < 0.15:
        pad = eos
    ids = r.integers(0, vocab, (batch, prompt)).astype(np.int32)
    mask = None
    if r.random() < 0.5:  # left padding (the first row's prompt whole)
        mask = _left_padded(c, ids, pad)
        if prompt > 2 and r.random() < 0.3:  # a hole inside a row's tokens, its id left as it is
            mask[ri(r, 0, batch), ri(r, 1, prompt - 1)] = 0
    names = {"input_ids": c.feed(list(ids.shape), value=ids), "max_length": _i32(c, longest)}
    # onnxruntime's BeamSearch fails without its first seven inputs (convert_generation names them all)
    if r.random() < 0.4 or beam:
        names["min_length"] = _i32(c, ri(r, 0, longest + 3) if r.random() < 0.6 else 0)
    if r.random() < 0.4 or beam:
        names["repetition_penalty"] = c.feed([1], value=np.array([r.uniform(0.5, 2.0) if r.random() < 0.6 else 1.0],
                                                                 np.float32))
    if r.random() < 0.35:  # at least a few tokens left
        vm = (r.random(vocab) < 0.8).astype(np.int32)
        vm[r.choice(vocab, 3, replace=False)] = 1
        names["vocab_mask"] = c.feed([vocab], value=vm)
    if r.random() < 0.3:
        pm = (r.random((batch, vocab)) < 0.6).astype(np.int32)
        pm[:, ri(r, 0, vocab)] = 1
        names["prefix_vocab_mask"] = c.feed([batch, vocab], value=pm)
    if mask is not None:
        names["attention_mask"] = c.feed(list(mask.shape), value=mask)
    attrs = {"decoder": _decoder(c, vocab, longest + 2), "eos_token_id": eos, "pad_token_id": pad}
    if r.random() < 0.3:
        attrs["no_repeat_ngram_size"] = ri(r, 1, 4)
    order = ["input_ids", "max_length", "min_length"] + (
        ["num_beams", "num_return_sequences", "length_penalty"] if beam else []) + [
        "repetition_penalty", "vocab_mask", "prefix_vocab_mask", "attention_mask"]
    return [names.get(n, n if n in ("num_beams", "num_return_sequences", "length_penalty") else "")
            for n in order], attrs, prompt, longest, vocab


def _node(c: Case, op: str, inputs: list[str], outputs: list[int | None], attrs: dict) -> list[str]:
    """The com.microsoft node (``_ms``), its trailing left-out inputs dropped."""
    while not inputs[-1]:
        inputs.pop()
    return _ms(c, op, inputs, outputs, **attrs)


def _greedy(c: Case) -> list[str]:
    """GreedySearch: the prompt, lengths, processors and ids drawn; the sequences, past the first
    column after the prompt that is pad in every row, set to pad (onnxruntime leaves them unwritten)."""
    inputs, attrs, prompt, longest, _ = _common(c, beam=False)
    (seq,) = _node(c, "GreedySearch", inputs, [I32], attrs)
    pad = c.weight(value=np.int32(attrs["pad_token_id"]))
    all_pad = c.op("ReduceMin", [c.op("Cast", [c.op("Equal", [seq, pad])], to=I32)], axes=[0], keepdims=0)
    after = np.zeros(longest, np.int32)
    after[prompt:] = 1
    ended = c.op("CumSum", [c.op("Mul", [all_pad, c.weight(value=after)]), c.ints(0)], exclusive=1)
    out = c.op("Where", [c.op("Greater", [ended, c.weight(value=np.int32(0))]), pad, seq])
    c.declared[out] = I32
    return [out]


def _tame(c: Case, x: str) -> str:
    """Scores under -1e4 (barred tokens, the first run's later beams) as 0."""
    out = c.op("Where", [c.op("Less", [x, c.weight(value=-1e4)]), c.weight(value=0.0), x])
    c.declared[out] = F32
    return out


def _beam(c: Case) -> list[str]:
    """BeamSearch: as GreedySearch, with num_beams, num_return_sequences, length_penalty and
    early_stopping drawn, and the sequences_scores and scores outputs (scores only with eos barred)."""
    r = c.rng
    inputs, attrs, *_, vocab = _common(c, beam=True)
    beams = ri(r, 1, 5)
    fill = {"num_beams": _i32(c, beams), "num_return_sequences": _i32(c, ri(r, 1, beams + 1)),
            "length_penalty": c.feed([1], value=np.array([r.choice([1.0, r.uniform(0.3, 2.5)])], np.float32))}
    inputs = [fill.get(n, n) for n in inputs]
    if r.random() < 0.5:
        attrs["early_stopping"] = 1
    want = ri(r, 1, 4)
    if want == 3:  # no early stop: eos barred by the vocab mask. Where a row's every token is barred (the
        # last tokens used up by no_repeat_ngram_size 1, a prefix mask's few) eos ties with the rest at
        # float32's lowest and may close a beam after all (then onnxruntime leaves later scores unwritten):
        # so no prefix mask or 1-grams here, and the vocab mask keeps more tokens than beams can use up.
        inputs[8] = ""
        if attrs.get("no_repeat_ngram_size") == 1:
            del attrs["no_repeat_ngram_size"]
        if not inputs[7]:
            inputs[7] = c.feed([vocab], value=np.ones(vocab, np.int32))
        vm = c.feeds[inputs[7]]
        vm[r.permutation(vocab)[:2 * beams + 2]] = 1
        vm[attrs["eos_token_id"]] = 0
    outs = _node(c, "BeamSearch", inputs, [I32, F32 if want > 1 else None, F32 if want > 2 else None], attrs)
    return [outs[0]] + [_tame(c, o) for o in outs[1:] if o]


FAMILIES: dict[str, Callable[[Case], list[str]]] = {
    "greedysearch": _greedy,
    "beamsearch": _beam,
}
