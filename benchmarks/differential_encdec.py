"""The differential sweep's families for onnxruntime's encoder-decoder generation ops (com.microsoft):
BeamSearch over a T5 encoder and decoder (model_type 1, t5beam) and WhisperBeamSearch (whisperbeam),
one node around a tiny random pair of graphs in the forms onnxruntime 1.32 drives (their contracts
are ``hal.kernels.contrib_decoders``'). The encoder: T5's token embeddings (encoder_input_ids,
encoder_attention_mask) or Whisper's features (batch, mels, frames) projected, learned positions, at
times a layer of self attention (T5's over the keys the mask keeps), then each decoder layer's cross
keys and values. The decoder, one token a run (input_ids, T5's encoder_attention_mask, the self and
cross pasts): token and position embeddings, per layer self attention over the pasts and the token
and cross attention (T5's masked), then the logits. In T5's older format and in Whisper's the encoder
also takes decoder_input_ids and makes the first step with the decoder's weights (logits,
encoder_hidden_states, the self presents); the older T5 decoder at times takes encoder_hidden_states
too (their mean added to its embeddings). Drawn: the vocabulary (T5: 5 ... 40; Whisper: 3 ... 12
text tokens, eos, start of transcript, 0 ... 2 languages, translate, transcribe, start of LM,
no-speech, no-timestamps, then 2 ... 9 timestamps, at times more than the 51 the first may choose
from), heads (1, 2) and head size (2 ... 4), layers (1, 2), batch (1 ... 3), the logits' bias (at times
favouring eos, so that more beams end); for T5 the format (the current one or the older), the
encoder's tokens (1 ... 6, left padded with pad, the mask at times fed, sometimes with a hole), eos,
pad (at times eos), decoder_start_token_id (pad, as T5's, or any), and at times decoder_input_ids and
logits_processor (onnxruntime's T5 search reads neither); for Whisper the features' mels (2 ... 8) and
frames (1 ... 8), decoder_start_token_id (at times not the start of transcript), decoder_input_ids
(left out, the start token, a task prompt of start, language, task and a timestamp or
no-timestamps, or any tokens), logits_processor (1: the timestamp rules with their token ids, some
left out; at times 0 fed), temperature (0.5 ... 1.5), pad (at times not eos), no_speech_token_id and a
3-D attention_mask (onnxruntime checks its rank and reads no more); for both max_length (1 ... 8
past the prompt, 2 or more where the encoder makes the first step), min_length (at times past
max_length), num_beams (1 ... 4), num_return_sequences, length_penalty, repetition_penalty,
vocab_mask, prefix_vocab_mask, no_repeat_ngram_size, early_stopping, vocab_size (the logits' own) and
the sequences_scores and scores outputs.

Exact ties are drawn: the first run's beams past the first all at -1e9 (its logits the same for
every beam), barred tokens all at float32's lowest; both peers take the lower index first
(onnxruntime's TopK). The learned positions keep beams that take the same tokens in another order
apart (self attention alone would not see the order).

Left out or masked, as onnxruntime leaves them undefined (as in ``differential_generation``):
* the scores of the runs after an early stop (every batch done) are unwritten: the scores output is
  drawn only with eos barred by vocab_mask, tokens enough left, and no prefix mask or 1-grams (a
  row all barred ties eos with the rest, and it may close a beam after all); nor with the timestamp
  rules, which with the vocab mask can bar a row's every token;
* a barred token's score is float32's lowest (-inf under a temperature below 1) and a beam's start
  -1e9, which would make the judge's tolerance meaningless: scores under -1e4 are set to 0 in both
  peers' outputs by the model itself.
Not drawn: max_length one past the prompt where the encoder makes the first step (onnxruntime then
fails: no decoder run to feed), a 2-D attention_mask for Whisper (onnxruntime refuses it), the forms
hal refuses (cross_qk, cross_qk_layer_head, extra_decoding_ids, non_speech_probs,
decoder_output_cross_qk) and the timestamp rules without beginning_timestamp_token_id (a run error
in both), init_decoder (onnxruntime's T5 and Whisper searches ignore it), decoders sharing past and
present buffers, float16 decoders (onnxruntime's CPU kernels are float32 only).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from benchmarks.differential_draw import Case, ri
from benchmarks.differential_generation import _i32, _left_padded, _node, _tame

_MS = "com.microsoft"
F32, I32 = TensorProto.FLOAT, TensorProto.INT32
#: WhisperBeamSearch's inputs (BeamSearch's are the first twelve, its first named input_ids)
_INPUTS = ["input_features", "max_length", "min_length", "num_beams", "num_return_sequences", "length_penalty",
           "repetition_penalty", "vocab_mask", "prefix_vocab_mask", "attention_mask", "decoder_input_ids",
           "logits_processor", "cross_qk_layer_head", "extra_decoding_ids", "temperature"]


class _Graph:
    """A subgraph under construction. Its weights are the pair's (``shared``: each drawn from the
    case's generator when a graph first takes it), so an encoder that makes the first step computes
    it with the decoder's weights, as an exporter's does."""

    def __init__(self, c: Case, shared: dict[str, np.ndarray], heads: int, head: int, tag: str):
        self.r, self.shared, self.tag = c.rng, shared, tag
        self.heads, self.head, self.hidden = heads, head, heads * head
        self.nodes: list = []
        self.inits: list = []
        self.taken: set[str] = set()
        self._n = 0
        self._consts = {"zero": np.int64(0), "one": np.int64(1), "two": np.int64(2), "ax0": np.array([0]),
                        "ax1": np.array([1]), "ax12": np.array([1, 2]), "bshd": np.array([0, 0, heads, head]),
                        "bse": np.array([0, 0, heads * head]), "fzero": np.float32(0), "neg_big": np.float32(-1e4),
                        "scale": np.float32(1 / np.sqrt(head))}

    def k(self, name: str) -> str:
        """Constant ``name`` in this graph (an initializer from its first use; named apart from the outer
        graph's names)."""
        if name not in self.taken:
            self.taken.add(name)
            v = self._consts[name]
            self.inits.append(numpy_helper.from_array(v.astype(np.int64) if v.dtype.kind == "i" else v,
                                                      f"{self.tag}_{name}"))
        return f"{self.tag}_{name}"

    def weight(self, key: str, shape: list[int], scale: float = 0.5) -> str:
        if key not in self.shared:
            self.shared[key] = (self.r.standard_normal(shape) * scale).astype(np.float32)
        self._consts.setdefault(key, self.shared[key])
        return self.k(key)

    def node(self, op: str, ins: list[str], out: str | None = None, **attrs) -> str:
        self._n += 1
        out = out or f"{self.tag}_{op.lower()}{self._n}"
        self.nodes.append(helper.make_node(op, ins, [out], **attrs))
        return out

    def heads_of(self, x: str, key: str) -> str:
        """x (batch, sequence, hidden) times weight ``key``, as (batch, heads, sequence, head)."""
        p = self.node("MatMul", [x, self.weight(key, [self.hidden, self.hidden])])
        return self.node("Transpose", [self.node("Reshape", [p, self.k("bshd")])], perm=[0, 2, 1, 3])

    def attend(self, x: str, q: str, k: str, v: str, bias: str | None, key: str) -> str:
        """x + tanh(softmax(q k^T / sqrt(head) + bias) v, the heads merged, projected by weight ``key``)."""
        s = self.node("MatMul", [q, self.node("Transpose", [k], perm=[0, 1, 3, 2])])
        s = self.node("Mul", [s, self.k("scale")])
        if bias is not None:
            s = self.node("Add", [s, bias])
        o = self.node("MatMul", [self.node("Softmax", [s], axis=-1), v])
        o = self.node("Reshape", [self.node("Transpose", [o], perm=[0, 2, 1, 3]), self.k("bse")])
        proj = self.node("MatMul", [o, self.weight(key, [self.hidden, self.hidden], 0.7)])
        return self.node("Add", [x, self.node("Tanh", [proj])])

    def keep_bias(self, mask: str) -> str:
        """0 where the (batch, keys) ``mask`` keeps a key, else -1e4, as (batch, 1, 1, keys)."""
        keep = self.node("Cast", [self.node("Unsqueeze", [mask, self.k("ax12")])], to=TensorProto.BOOL)
        return self.node("Where", [keep, self.k("fzero"), self.k("neg_big")])

    def positions(self, x: str, ids: str, past: str | None, key: str, count: int) -> str:
        """x plus the learned positions (weight ``key``) of ``ids``' tokens, counted on from the past's length."""
        seq = self.node("Gather", [self.node("Shape", [ids]), self.k("one")])
        first = self.k("zero") if past is None else self.node("Gather", [self.node("Shape", [past]), self.k("two")])
        where = self.node("Range", [first, self.node("Add", [first, seq]), self.k("one")])
        return self.node("Add", [x, self.node("Gather", [self.weight(key, [count, self.hidden]), where])])

    def causal(self, ids: str) -> str:
        """0 where a query may see a key (at or before it) among ``ids``' tokens, else -1e4."""
        seq = self.node("Gather", [self.node("Shape", [ids]), self.k("one")])
        at = self.node("Range", [self.k("zero"), seq, self.k("one")])
        seen = self.node("LessOrEqual", [self.node("Unsqueeze", [at, self.k("ax0")]),
                                         self.node("Unsqueeze", [at, self.k("ax1")])])
        return self.node("Where", [seen, self.k("fzero"), self.k("neg_big")])

    def graph(self, name: str, ins: list, outs: list) -> helper.GraphProto:
        return helper.make_graph(self.nodes, name, ins, outs, self.inits)


def _vi(name: str, elem: int, shape: list) -> helper.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _steps(g: _Graph, ids: str, layers: int, vocab: int, positions: int, cross: list[str], cross_bias: str | None,
           hidden: str | None, first: bool) -> None:
    """The decoder's computation over ``ids`` (the first step's tokens when ``first``, else one token after
    the self pasts): token and position embeddings (plus the encoder's mean hidden state where ``hidden``),
    then per layer self attention (causal) and cross attention over the cross keys ``cross`` (biased by
    ``cross_bias``); outputs logits and present_key_self_i, present_value_self_i."""
    past = None if first else "past_key_self_0"
    x = g.node("Gather", [g.weight("emb", [vocab, g.hidden], 1.0), ids])
    x = g.positions(x, ids, past, "pos", positions)
    if hidden is not None:
        x = g.node("Add", [x, g.node("ReduceMean", [hidden], axes=[1])])
    causal = g.causal(ids) if first else None
    for i in range(layers):
        q, k, v = (g.heads_of(x, f"w{t}{i}") for t in "qkv")
        if first:
            kk = g.node("Identity", [k], f"present_key_self_{i}")
            vv = g.node("Identity", [v], f"present_value_self_{i}")
        else:
            kk = g.node("Concat", [f"past_key_self_{i}", k], f"present_key_self_{i}", axis=2)
            vv = g.node("Concat", [f"past_value_self_{i}", v], f"present_value_self_{i}", axis=2)
        x = g.attend(x, q, kk, vv, causal, f"wo{i}")
        x = g.attend(x, g.heads_of(x, f"wqc{i}"), cross[2 * i], cross[2 * i + 1], cross_bias, f"woc{i}")
    logits = g.node("MatMul", [x, g.weight("head", [g.hidden, vocab], 2 / np.sqrt(g.hidden))])
    g.node("Add", [logits, g.weight("bias", [vocab])], "logits")


def _presents(layers: int, kind: str, shape: list) -> list:
    return [_vi(f"present_{kv}_{kind}_{i}", F32, shape) for i in range(layers) for kv in ("key", "value")]


def _pair(c: Case, vocab: int, eos: int, positions: int, source: str, older: bool, hidden_fed: bool,
          mels: int = 0) -> tuple[helper.GraphProto, helper.GraphProto]:
    """The encoder and decoder graphs. ``source``: "t5" (tokens and their mask) or "whisper" (features
    (batch, mels, frames)); ``older``: the encoder also takes decoder_input_ids and makes the first
    step (Whisper's always does); ``hidden_fed``: the decoder takes encoder_hidden_states too. The
    logits' bias at times favours eos, so that more beams end."""
    r = c.rng
    heads, head, layers = ri(r, 1, 3), ri(r, 2, 5), ri(r, 1, 3)
    lift = (r.standard_normal(vocab) * 0.5).astype(np.float32)
    if r.random() < 0.5:
        lift[eos] += np.float32(r.uniform(0, 3))
    shared: dict[str, np.ndarray] = {"bias": lift}
    e = _Graph(c, shared, heads, head, "enc")
    if source == "t5":
        h = e.node("Gather", [e.weight("enc_emb", [vocab, e.hidden], 1.0), "encoder_input_ids"])
        bias = e.keep_bias("encoder_attention_mask")
        ins = [_vi(n, I32, ["batch", "enc_seq"]) for n in ("encoder_input_ids", "encoder_attention_mask")]
    else:
        frames = e.node("Transpose", ["encoder_input_ids"], perm=[0, 2, 1])
        h = e.node("Tanh", [e.node("MatMul", [frames, e.weight("proj", [mels, e.hidden], 0.8)])])
        bias = None
        ins = [_vi("encoder_input_ids", F32, ["batch", mels, "enc_seq"])]
    h = e.positions(h, "encoder_input_ids" if source == "t5" else h, None, "enc_pos", 8)
    if r.random() < 0.6:  # an encoder layer
        q, k, v = (e.heads_of(h, f"enc_w{t}") for t in "qkv")
        h = e.attend(h, q, k, v, bias, "enc_wo")
    cross = [e.node("Identity", [e.heads_of(h, f"wc{kv}{i}")], f"present_{kv}_cross_{i}")
             for i in range(layers) for kv in ("key", "value")]
    cross_outs = _presents(layers, "cross", ["batch", heads, "enc_seq", head])
    if older:
        h = e.node("Identity", [h], "encoder_hidden_states")
        _steps(e, "decoder_input_ids", layers, vocab, positions, cross, bias, h if hidden_fed else None, True)
        ins.append(_vi("decoder_input_ids", I32, ["batch", "seq"]))
        outs = [_vi("logits", F32, ["batch", "seq", vocab]), _vi(h, F32, ["batch", "enc_seq", e.hidden]),
                *_presents(layers, "self", ["batch", heads, "seq", head]), *cross_outs]
    else:
        outs = cross_outs
    encoder = e.graph("encoder", ins, outs)
    d = _Graph(c, shared, heads, head, "dec")
    ins = [_vi("input_ids", I32, ["batch", 1])]
    if source == "t5":
        ins.append(_vi("encoder_attention_mask", I32, ["batch", "enc_seq"]))
    if hidden_fed:
        ins.append(_vi("encoder_hidden_states", F32, ["batch", "enc_seq", d.hidden]))
    bias = d.keep_bias("encoder_attention_mask") if source == "t5" else None
    past_cross = [f"past_{kv}_cross_{i}" for i in range(layers) for kv in ("key", "value")]
    _steps(d, "input_ids", layers, vocab, positions, past_cross, bias, "encoder_hidden_states" if hidden_fed else None,
           False)
    ins += [_vi(f"past_{kv}_self_{i}", F32, ["batch", heads, "past", head]) for i in range(layers)
            for kv in ("key", "value")]
    ins += [_vi(n, F32, ["batch", heads, "enc_seq", head]) for n in past_cross]
    outs = [_vi("logits", F32, ["batch", 1, vocab]), *_presents(layers, "self", ["batch", heads, "total", head])]
    return encoder, d.graph("decoder", ins, outs)


def _search(c: Case, names: dict[str, str], attrs: dict, vocab: int, batch: int, longest: int,
            scores: bool) -> list[int | None]:
    """The inputs and attributes both searches share: min_length, num_beams, num_return_sequences,
    length_penalty and repetition_penalty always (convert_generation names them), at times vocab_mask,
    prefix_vocab_mask, no_repeat_ngram_size, early_stopping and vocab_size. Fills ``names`` and
    ``attrs``; the output types (sequences, and sequences_scores and scores as drawn; scores only where
    ``scores`` allows, with eos barred)."""
    r = c.rng
    eos = attrs["eos_token_id"]
    beams = ri(r, 1, 5)
    names["min_length"] = _i32(c, ri(r, 0, longest + 3) if r.random() < 0.6 else 0)
    names["num_beams"] = _i32(c, beams)
    names["num_return_sequences"] = _i32(c, ri(r, 1, beams + 1))
    names["length_penalty"] = c.feed([1], value=np.array([r.choice([1.0, r.uniform(0.3, 2.5)])], np.float32))
    names["repetition_penalty"] = c.feed([1], value=np.array([r.uniform(0.5, 2.0) if r.random() < 0.6 else 1.0],
                                                             np.float32))
    vm = None
    if r.random() < 0.35:  # at least a few tokens left
        vm = (r.random(vocab) < 0.8).astype(np.int32)
        vm[r.choice(vocab, 3, replace=False)] = 1
    prefix = r.random() < 0.3
    if prefix:
        pm = (r.random((batch, vocab)) < 0.6).astype(np.int32)
        pm[:, ri(r, 0, vocab)] = 1
    if r.random() < 0.3:
        attrs["no_repeat_ngram_size"] = ri(r, 1, 4)
    if r.random() < 0.5:
        attrs["early_stopping"] = 1
    if r.random() < 0.15:
        attrs["vocab_size"] = vocab
    want = ri(r, 1, 4 if scores else 3)
    if want == 3:  # no early stop: eos barred (differential_generation's _beam says why so)
        prefix = False
        if attrs.get("no_repeat_ngram_size") == 1:
            del attrs["no_repeat_ngram_size"]
        vm = np.ones(vocab, np.int32) if vm is None else vm
        vm[r.permutation(vocab)[:2 * beams + 2]] = 1
        vm[eos] = 0
    if vm is not None:
        names["vocab_mask"] = c.feed([vocab], value=vm)
    if prefix:
        names["prefix_vocab_mask"] = c.feed([batch, vocab], value=pm)
    return [I32, F32 if want > 1 else None, F32 if want > 2 else None]


def _beam_node(c: Case, op: str, names: dict[str, str], outs: list, attrs: dict) -> list[str]:
    """The node, its inputs in the schema's order (the left-out ones empty, trailing ones dropped); the
    sequences, and the scores with those under -1e4 as 0 (``_tame``)."""
    order = _INPUTS if op == "WhisperBeamSearch" else ["input_ids", *_INPUTS[1:12]]
    got = _node(c, op, [names.get(n, "") for n in order], outs, attrs)
    return [got[0]] + [_tame(c, o) for o in got[1:]]


def _t5(c: Case) -> list[str]:
    """BeamSearch over a T5 pair (model_type 1): the encoder's tokens (left padded, at times with the
    mask fed, holes in it), decoder_start_token_id, eos and pad, and the search's inputs drawn; the
    current format or the older one (the encoder makes the first step; its decoder at times takes
    encoder_hidden_states); at times decoder_input_ids and logits_processor, which it does not read."""
    r = c.rng
    c.dtype = np.dtype(np.float32)
    c.domains[_MS] = 1
    vocab, batch, length = ri(r, 5, 41), ri(r, 1, 4), ri(r, 1, 7)
    eos, pad = (int(t) for t in r.choice(vocab, 2, replace=False))
    if r.random() < 0.15:
        pad = eos
    start = pad if r.random() < 0.6 else ri(r, 0, vocab)  # (T5 starts its decoder at pad)
    older = r.random() < 0.35
    longest = ri(r, 3 if older else 2, 10)
    ids = r.integers(0, vocab, (batch, length)).astype(np.int32)
    names: dict[str, str] = {}
    if r.random() < 0.5:
        mask = _left_padded(c, ids, pad)
        if r.random() < 0.5:  # fed (else onnxruntime's: 0 at the leading pads)
            if length > 2 and r.random() < 0.3:
                mask[ri(r, 0, batch), ri(r, 1, length - 1)] = 0
            names["attention_mask"] = c.feed(list(mask.shape), value=mask)
    names["input_ids"] = c.feed(list(ids.shape), value=ids)
    names["max_length"] = _i32(c, longest)
    if r.random() < 0.1:  # (onnxruntime's T5 search reads neither: its decoder starts at the start token)
        names["decoder_input_ids"] = c.feed([batch, 2], value=r.integers(0, vocab, (batch, 2), dtype=np.int32))
    if r.random() < 0.1:
        names["logits_processor"] = _i32(c, ri(r, 0, 2))
    encoder, decoder = _pair(c, vocab, eos, longest + 1, "t5", older, older and r.random() < 0.5)
    attrs = {"encoder": encoder, "decoder": decoder, "model_type": 1, "decoder_start_token_id": start,
             "eos_token_id": eos, "pad_token_id": pad}
    outs = _search(c, names, attrs, vocab, batch, longest, scores=True)
    return _beam_node(c, "BeamSearch", names, outs, attrs)


def _layout(c: Case) -> tuple[int, dict[str, int]]:
    """Whisper's vocabulary in small: text tokens, eos, start of transcript, up to two languages,
    translate, transcribe, start of LM, no-speech, no-timestamps, then the timestamps (at times
    more than the 51 the first may choose from): the vocabulary's size, the special ids by name."""
    r = c.rng
    text = ri(r, 3, 13)
    langs = ri(r, 0, 3)
    ids = {"eos": text, "sot": text + 1, "langs": langs}
    at = text + 2 + langs
    for name in ("translate", "transcribe", "solm", "no_speech", "no_timestamps"):
        ids[name], at = at, at + 1
    ids["begin"] = at
    return at + (ri(r, 52, 56) if r.random() < 0.1 else ri(r, 2, 10)), ids


def _whisper(c: Case) -> list[str]:
    """WhisperBeamSearch: the features (batch, mels, frames), decoder_input_ids (left out, the start
    token, a prompt of task tokens or any tokens, at times a timestamp), the timestamp rules
    (logits_processor 1) with their token ids, temperature, and the search's inputs drawn."""
    r = c.rng
    c.dtype = np.dtype(np.float32)
    c.domains[_MS] = 1
    vocab, special = _layout(c)
    eos, start = special["eos"], special["sot"] if r.random() < 0.85 else ri(r, 0, vocab)
    pad = eos if r.random() < 0.7 else ri(r, 0, vocab)
    batch, mels, frames = ri(r, 1, 4), ri(r, 2, 9), ri(r, 1, 9)
    stamps = r.random() < 0.4
    names = {"input_features": c.feed([batch, mels, frames], value=r.standard_normal((batch, mels, frames))
                                      .astype(np.float32))}
    form = ri(r, 0, 4)
    prompt = np.full((batch, 1), start, np.int32)
    if form == 2:  # the task tokens, as Whisper's processor writes them
        task = [start] + ([special["sot"] + ri(r, 1, special["langs"] + 1)] if special["langs"] else [])
        task.append(special[str(r.choice(["translate", "transcribe"]))])
        if stamps and r.random() < 0.5:
            task.append(special["begin"] + ri(r, 0, vocab - special["begin"]))
        elif r.random() < 0.3:
            task.append(special["no_timestamps"])
        prompt = np.array([task] * batch, np.int32)
    elif form == 3:  # any tokens
        prompt = r.integers(0, vocab, (batch, ri(r, 1, 4))).astype(np.int32)
    if form:
        names["decoder_input_ids"] = c.feed(list(prompt.shape), value=prompt)
    longest = prompt.shape[1] + ri(r, 2, 9)
    names["max_length"] = _i32(c, longest)
    encoder, decoder = _pair(c, vocab, eos, longest + 1, "whisper", True, False, mels)
    attrs = {"encoder": encoder, "decoder": decoder, "decoder_start_token_id": start, "eos_token_id": eos,
             "pad_token_id": pad}
    if r.random() < 0.5:
        attrs["model_type"] = 2
    if stamps or r.random() < 0.3:  # (without logits_processor 1 the ids are not read)
        attrs["beginning_timestamp_token_id"] = special["begin"]
        for name in ("translate", "transcribe", "no_timestamps"):
            if r.random() < 0.85:
                attrs[f"{name}_token_id"] = special[name]
        if r.random() < 0.85:
            attrs["start_of_lm_token_id"] = special["solm"]
    if stamps or r.random() < 0.2:
        names["logits_processor"] = _i32(c, int(stamps))
    if r.random() < 0.2:
        attrs["no_speech_token_id"] = special["no_speech"]
    if r.random() < 0.3:
        names["temperature"] = c.feed([1], value=np.array([r.uniform(0.5, 1.5)], np.float32))
    if r.random() < 0.1:  # (onnxruntime checks it has 3 dimensions, and reads no more of it)
        names["attention_mask"] = c.feed([batch, mels, frames], value=r.integers(0, 2, (batch, mels, frames),
                                                                                  dtype=np.int32))
    outs = _search(c, names, attrs, vocab, batch, longest, scores=not stamps)
    return _beam_node(c, "WhisperBeamSearch", names, outs, attrs)


FAMILIES: dict[str, Callable[[Case], list[str]]] = {
    "t5beam": _t5,
    "whisperbeam": _whisper,
}
