"""The decoder graphs onnxruntime's generation ops (``hal.kernels.contrib_search``) drive: the
contract each must keep (checked when a target compiles the node, as onnxruntime checks it when it
builds the session, in its words where it has them) and the feeds from run to run, as onnxruntime
1.32's CPU kernels make them.

* GPT (model_type 0; GptSubgraph): inputs input_ids, position_ids, attention_mask (int32), then
  past_0 ... one per layer, each (2, batch x beams, heads, past length, head size) with heads and
  head size declared; outputs logits (batch x beams, sequence, vocab) and present_0 ... The first
  run: input_ids repeated per beam; attention_mask the fed one, or 1 where a token is not
  pad_token_id; position_ids count the tokens that are not pad_token_id (0 at a pad, whatever the
  mask says); the pasts empty. Later runs feed each row's new token, its position (the prompt's
  count of tokens, then one more each run), the mask grown by a 1, and the presents as pasts, each
  beam's taken from the beam it continues. ``init_decoder``, where given, takes the first run.
* T5 (model_type 1; T5EncoderSubgraph / T5DecoderSubgraph, the format onnxruntime 1.32's
  convert_generation writes): ``encoder`` takes encoder_input_ids and encoder_attention_mask
  (int32; the fed attention_mask, else 0 only at the pads that lead a row) and gives
  present_key_cross_0, present_value_cross_0 ... per layer, once, at the batch's size; the decoder
  takes input_ids (batch x beams, 1), encoder_attention_mask, past_key_self_0, past_value_self_0 ...
  per layer, then past_key_cross_0 ... (each (batch x beams, heads, length, head size)) and gives
  logits and present_key_self_0, present_value_self_0 ... The first run feeds decoder_start_token_id,
  empty self pasts and the encoder's outputs repeated per beam; later runs the new tokens and the
  self presents (each beam's from the beam it continues), the cross pasts and mask as they were.
* Whisper (WhisperBeamSearch, model_type 2; WhisperEncoderSubgraph / WhisperDecoderSubgraph, as
  onnxruntime 1.32's whisper convert_to_onnx writes them): ``encoder`` takes encoder_input_ids (the
  features) and decoder_input_ids (the fed ones, else decoder_start_token_id) and gives logits,
  encoder_hidden_states, then present_key_self_0, present_value_self_0 ... and the cross ones,
  once, at the batch's size: its logits choose the first token; the decoder takes input_ids
  (batch x beams, 1), the self pasts and the cross pasts, and gives logits and the self presents.
* T5's older format (earlier convert_generation releases; onnxruntime 1.32 still runs it): the
  encoder also takes decoder_input_ids (the start tokens) and makes the first step, as Whisper's
  does (logits, encoder_hidden_states, self and cross presents); the decoder takes input_ids,
  encoder_attention_mask, encoder_hidden_states where it declares them, then the pasts.

The encoders that make the first step run through ``EncoderFirstRuns``: their logits are the first
step's, their self and cross presents (with T5's mask and hidden states) the decoder's first feeds.

Refused (a reason string from ``gpt_contract`` / ``t5_contract`` / ``whisper_contract``): names,
ranks and types the contract fixes; decoders sharing past and present buffers (past_sequence_length)
or fed the whole sequence. At run time: float16 logits (onnxruntime's CPU kernels compute float32
only).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from hal.kernels.registry import KernelContext

Array = np.ndarray
_INT32, _FLOAT, _FLOAT16 = onnx.TensorProto.INT32, onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


def dims(vi: onnx.ValueInfoProto) -> list[int | None] | None:
    """A value's declared dimensions (None for a symbolic one), or None without a shape."""
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]


def _elem(vi: onnx.ValueInfoProto) -> int:
    return vi.type.tensor_type.elem_type


def _names(values: Any, expected: list[str], what: str, kind: str) -> str | None:
    for k, (v, name) in enumerate(zip(values, expected)):
        if v.name != name:
            return f"{what} {kind} {k} shall be named {name}, got {v.name!r}"
    return None


def _logits(vi: onnx.ValueInfoProto, what: str) -> str | None:
    shape = dims(vi)
    if shape is None or len(shape) != 3 or not shape[2]:
        return f"the {what}'s logits shall be declared (batch, sequence, vocab), the vocab size a number, got {shape}"
    if _elem(vi) not in (_FLOAT, _FLOAT16):
        return f"the {what}'s logits shall be float or float16"
    return None


def vocab_of(decoder: onnx.GraphProto) -> int:
    """The vocabulary size the decoder's logits declare."""
    return dims(decoder.output[0])[2]


def gpt_contract(decoder: onnx.GraphProto, what: str = "decoder") -> str | None:
    """Why ``decoder`` is not a GPT decoder the generation ops can drive, or None."""
    ins, outs = list(decoder.input), list(decoder.output)
    if len(outs) < 2:
        return f"the {what} graph needs logits and at least one present output (it has {len(outs)} outputs)"
    if len(ins) != len(outs) + 2:
        if len(ins) in (len(outs) + 3, len(outs) + 4):
            return (f"the {what} graph shares its past and present buffers (past_sequence_length), "
                    "which this kernel does not implement")
        return f"the {what} graph needs as many inputs as outputs plus 2, got {len(ins)} inputs and {len(outs)} outputs"
    why = (_names(ins, ["input_ids", "position_ids", "attention_mask", "past_0"], what, "input")
           or _names(outs, ["logits", "present_0"], what, "output"))
    if why:
        return why
    for k in range(3):
        if _elem(ins[k]) != _INT32:
            return f"{what} input {ins[k].name} shall be int32"
    past = dims(ins[3])
    if past is None or len(past) != 5 or past[0] != 2 or not past[2] or not past[4]:
        return (f"the {what}'s past_0 shall be declared (2, batch, heads, past length, head size) with heads and "
                f"head size numbers, got {past}")
    why = _logits(outs[0], what)
    if why is None and (_elem(ins[3]) != _elem(outs[0]) or _elem(outs[1]) != _elem(outs[0])):
        why = f"the {what}'s past_0 and present_0 shall have the logits' type"
    return why


def t5_contract(encoder: onnx.GraphProto, decoder: onnx.GraphProto) -> str | None:
    """Why ``encoder`` and ``decoder`` are not a T5 pair the generation ops can drive, or None."""
    ein, eout, din, dout = list(encoder.input), list(encoder.output), list(decoder.input), list(decoder.output)
    older = len(ein) == 3  # the encoder also makes the decoder's first step
    why = _names(ein, ["encoder_input_ids", "encoder_attention_mask", "decoder_input_ids"][:len(ein)], "encoder",
                 "input")
    if why or len(ein) not in (2, 3):
        return why or f"the encoder shall take 2 inputs (3 in the older format), got {len(ein)}"
    head = eout[:2] if older else []
    layers = (len(eout) - len(head)) // (4 if older else 2)
    if layers < 1 or len(eout) != len(head) + (4 if older else 2) * layers:
        return (f"the encoder's outputs shall be {'logits, encoder_hidden_states, the self and ' if older else 'the '}"
                f"cross keys and values of each layer, got {len(eout)} outputs")
    hidden = len(din) > 2 and din[2].name == "encoder_hidden_states"
    if hidden and not older:
        return "a decoder that takes encoder_hidden_states needs an encoder that gives them (the older format)"
    if len(din) != 2 + hidden + 4 * layers or len(dout) != 1 + 2 * layers:
        return (f"the decoder shall take input_ids, encoder_attention_mask and 4 pasts per layer and give logits and 2 "
                f"presents per layer ({layers} layers, the encoder's), got {len(din)} inputs and {len(dout)} outputs"
                " (a past_sequence_length input shares buffers, which this kernel does not implement)")
    self_names = [f"past_{kv}_self_{i}" for i in range(layers) for kv in ("key", "value")]
    cross_names = [f"past_{kv}_cross_{i}" for i in range(layers) for kv in ("key", "value")]
    presents = [n.replace("past", "present") for n in (*self_names, *cross_names)]
    first = ["input_ids", "encoder_attention_mask"] + (["encoder_hidden_states"] if hidden else [])
    why = (_names(eout, ["logits", "encoder_hidden_states", *presents] if older else presents[2 * layers:], "encoder",
                  "output")
           or _names(din, [*first, *self_names, *cross_names], "decoder", "input")
           or _names(dout, ["logits", *presents[:2 * layers]], "decoder", "output"))
    if why:
        return why
    for vi, what in ((ein[0], "encoder"), (ein[1], "encoder"), (din[0], "decoder"), (din[1], "decoder")):
        if _elem(vi) != _INT32:
            return f"{what} input {vi.name} shall be int32"
    ids, past = dims(din[0]), dims(din[len(first)])
    if ids is None or len(ids) != 2 or ids[1] != 1:
        return f"the decoder's input_ids shall be declared (batch, 1), one token a run, got {ids}"
    if past is None or len(past) != 4 or not past[1] or not past[3]:
        return (f"the decoder's past_key_self_0 shall be declared (batch, heads, past length, head size) with heads "
                f"and head size numbers, got {past}")
    return _logits(dout[0], "decoder") or (_logits(eout[0], "encoder") if older else None)


def whisper_contract(encoder: onnx.GraphProto, decoder: onnx.GraphProto) -> str | None:
    """Why ``encoder`` and ``decoder`` are not a Whisper pair WhisperBeamSearch can drive, or None."""
    ein, eout, din, dout = list(encoder.input), list(encoder.output), list(decoder.input), list(decoder.output)
    why = (_names(ein, ["encoder_input_ids", "decoder_input_ids"], "encoder", "input")
           or _names(eout, ["logits", "encoder_hidden_states"], "encoder", "output"))
    if why or len(ein) != 2:
        return why or f"the encoder shall take 2 inputs (the features and the first decoder tokens), got {len(ein)}"
    layers = (len(eout) - 2) // 4
    if layers < 1 or len(eout) != 2 + 4 * layers:
        return f"the encoder's outputs shall be logits, encoder_hidden_states and 4 presents per layer, got {len(eout)}"
    if len(din) != 1 + 4 * layers or len(dout) != 1 + 2 * layers:
        return (f"the decoder shall take input_ids and 4 pasts per layer and give logits and 2 presents per layer "
                f"({layers} layers, the encoder's), got {len(din)} inputs and {len(dout)} outputs (sharing past and "
                "present buffers or giving cross attention scores, which this kernel does not implement)")
    self_names = [f"past_{kv}_self_{i}" for i in range(layers) for kv in ("key", "value")]
    cross_names = [n.replace("self", "cross") for n in self_names]
    presents = [n.replace("past", "present") for n in (*self_names, *cross_names)]
    why = (_names(eout[2:], presents, "encoder", "output")
           or _names(din, ["input_ids", *self_names, *cross_names], "decoder", "input")
           or _names(dout, ["logits", *presents[:2 * layers]], "decoder", "output"))
    if why:
        return why
    ids, past = dims(din[0]), dims(din[1])
    if ids is None or len(ids) != 2 or ids[1] != 1:
        return f"the decoder's input_ids shall be declared (batch, 1), one token a run, got {ids}"
    if past is None or len(past) != 4:
        return f"the decoder's past_key_self_0 shall be declared (batch, heads, past length, head size), got {past}"
    return _logits(dout[0], "decoder") or _logits(eout[0], "encoder")


def _float32_logits(proto: onnx.GraphProto) -> None:
    if _elem(proto.output[0]) != _FLOAT:
        raise ValueError("the decoder computes float16 logits; onnxruntime's CPU generation kernels take float32 only")


class DecoderRuns:
    """A decoder's feeds from run to run: ``run`` one run's last logits, ``advance`` to the next."""

    decoder: Any
    ctx: KernelContext
    feeds: list[Array]
    #: where the pasts that the presents replace start in ``feeds``, and how many there are
    first_past: int
    pasts: int

    def __init__(self, decoder: Any, ctx: KernelContext):
        self.decoder, self.ctx, self.runs = decoder, ctx, 0
        _float32_logits(decoder.proto)
        self.vocab = vocab_of(decoder.proto)

    def graph(self) -> Any:
        return self.decoder

    def run(self) -> Array:
        """One decoder run; the last position's logits (rows, vocab) in float32."""
        graph = self.graph()
        self.runs += 1
        self.outs = graph(*self.feeds, scope=self.ctx.scope)
        logits = np.asarray(self.outs[0])
        if logits.ndim != 3 or logits.shape[0] != self.feeds[0].shape[0] or logits.shape[2] != self.vocab:
            raise ValueError(f"the decoder's logits have shape {logits.shape}, not (batch x beams, sequence, "
                             f"{self.vocab})")
        return logits[:, -1].astype(np.float32)

    def advance(self, tokens: Array, rows: Array | None, axis: int) -> None:
        """Each row's new token; the presents (``rows``: the row each continues, along ``axis``) as pasts."""
        self.feeds[0] = tokens.astype(np.int32).reshape(-1, 1)
        presents = self.outs[1:1 + self.pasts]
        self.feeds[self.first_past:self.first_past + self.pasts] = (
            presents if rows is None else [np.take(np.asarray(p), rows, axis=axis) for p in presents])


class GptRuns(DecoderRuns):
    """The GPT decoder's feeds (onnxruntime's CreateGptInputs / UpdateGptFeeds)."""

    def __init__(self, input_ids: Array, attention_mask: Array | None, beams: int, pad: int,
                 decoder: Any, init_decoder: Any, ctx: KernelContext):
        super().__init__(decoder, ctx)
        self.init_decoder = init_decoder
        proto = decoder.proto
        past = dims(proto.input[3])
        ids = np.asarray(input_ids, dtype=np.int32)
        if ids.shape[1] == 0:
            raise ValueError("input_ids holds no token (sequence length 0): the decoder's first run has none to give "
                             "logits for (onnxruntime's process crashes on it)")
        not_pad = ids != pad
        positions = np.where(not_pad, np.cumsum(not_pad, axis=1, dtype=np.int32) - 1, 0).astype(np.int32)
        mask = not_pad.astype(np.int32) if attention_mask is None else np.asarray(attention_mask, dtype=np.int32)
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask of shape {mask.shape} does not match input_ids' {ids.shape}")
        self.lengths = np.repeat(not_pad.sum(axis=1, dtype=np.int32), beams)
        empty = np.zeros((2, ids.shape[0] * beams, past[2], 0, past[4]), dtype=np.float32)
        self.first_past, self.pasts = 3, len(proto.input) - 3
        self.feeds = [np.repeat(ids, beams, axis=0), np.repeat(positions, beams, axis=0),
                      np.repeat(mask, beams, axis=0)] + [empty] * self.pasts
        self.sequences = np.repeat(ids, beams, axis=0)

    def graph(self) -> Any:
        return self.init_decoder if self.runs == 0 and self.init_decoder is not None else self.decoder

    def advance(self, tokens: Array, rows: Array | None, axis: int = 1) -> None:
        if self.runs > 1:
            self.lengths = self.lengths + 1
        self.feeds[1] = self.lengths.reshape(-1, 1).copy()
        mask = self.feeds[2]
        self.feeds[2] = np.concatenate([mask, np.ones((mask.shape[0], 1), dtype=np.int32)], axis=1)
        super().advance(tokens, rows, axis)


def _encoder_mask(input_ids: Array, attention_mask: Array | None, pad: int) -> Array:
    """T5's encoder_attention_mask: the fed one, else 0 only at the pads before a row's first token
    (T5's tokenizer ends a row with one), as onnxruntime's CreateEncoderInputs makes it."""
    ids = np.asarray(input_ids)
    if attention_mask is None:
        return (np.cumsum(ids != pad, axis=1) > 0).astype(np.int32)
    mask = np.asarray(attention_mask, dtype=np.int32)
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask of shape {mask.shape} does not match input_ids' {ids.shape}")
    return mask


class T5Runs(DecoderRuns):
    """The T5 encoder's one run and the decoder's feeds (onnxruntime's CreateEncoderInputs,
    T5DecoderSubgraph::CreateInitialFeeds, UpdateDecoderFeeds)."""

    def __init__(self, input_ids: Array, attention_mask: Array | None, beams: int, pad: int, start: int,
                 encoder: Any, decoder: Any, ctx: KernelContext):
        super().__init__(decoder, ctx)
        ids, mask = np.asarray(input_ids, dtype=np.int32), _encoder_mask(input_ids, attention_mask, pad)
        cross = [np.repeat(np.asarray(o), beams, axis=0) for o in encoder(ids, mask, scope=ctx.scope)]
        past = dims(decoder.proto.input[2])
        rows = ids.shape[0] * beams
        empty = np.zeros((rows, past[1], 0, past[3]), dtype=np.float32)
        self.first_past, self.pasts = 2, len(cross)
        self.sequences = np.full((rows, 1), start, dtype=np.int32)
        self.feeds = [self.sequences, np.repeat(mask, beams, axis=0)] + [empty] * self.pasts + cross

    def advance(self, tokens: Array, rows: Array | None, axis: int = 0) -> None:
        super().advance(tokens, rows, axis)


class EncoderFirstRuns(DecoderRuns):
    """An encoder that also makes the decoder's first step (Whisper's; T5's older format): the first
    run's logits are the encoder's, each batch's repeated per beam; the decoder's first feeds are
    ``head`` (T5's mask, and hidden states where its decoder takes them) and the encoder's self and
    cross presents, all repeated per beam (not reordered by the first step's beams: a batch's beams
    hold the same ones)."""

    def __init__(self, outs: list[Any], head: list[Array], first_ids: Array, beams: int, encoder: Any, decoder: Any,
                 ctx: KernelContext):
        super().__init__(decoder, ctx)
        _float32_logits(encoder.proto)
        self.beams, self.encoder_logits = beams, np.asarray(outs[0])
        self.pending = [np.repeat(np.asarray(o), beams, axis=0) for o in (*head, *outs[2:])]
        self.first_past, self.pasts = 1 + len(head), (len(outs) - 2) // 2
        self.sequences = np.repeat(first_ids, beams, axis=0)
        self.feeds = [self.sequences]

    def run(self) -> Array:
        if self.runs:
            return super().run()
        self.runs = 1
        logits = self.encoder_logits
        if logits.ndim != 3 or logits.shape[2] != self.vocab:
            raise ValueError(f"the encoder's logits have shape {logits.shape}, not (batch, sequence, {self.vocab})")
        return np.repeat(logits[:, -1], self.beams, axis=0).astype(np.float32)

    def advance(self, tokens: Array, rows: Array | None, axis: int = 0) -> None:
        if self.runs == 1:
            self.feeds = [tokens.astype(np.int32).reshape(-1, 1), *self.pending]
            return
        super().advance(tokens, rows, axis)


def whisper_runs(features: Array, decoder_input_ids: Array | None, beams: int, start: int, encoder: Any,
                 decoder: Any, ctx: KernelContext) -> EncoderFirstRuns:
    """Whisper's encoder (onnxruntime's WhisperEncoderSubgraph) over the features and the first
    decoder tokens (the fed ones, else the start token), then its decoder."""
    batch = np.shape(features)[0]
    ids = (np.full((batch, 1), start, dtype=np.int32) if decoder_input_ids is None
           else np.asarray(decoder_input_ids, dtype=np.int32))
    if ids.ndim != 2 or ids.shape[0] != batch:
        raise ValueError(f"decoder_input_ids shall be (batch, sequence) with the features' batch {batch}, got "
                         f"{ids.shape}")
    return EncoderFirstRuns(encoder(features, ids, scope=ctx.scope), [], ids, beams, encoder, decoder, ctx)


def t5_runs(input_ids: Array, attention_mask: Array | None, beams: int, pad: int, start: int, encoder: Any,
            decoder: Any, ctx: KernelContext) -> DecoderRuns:
    """T5's runs in either format: ``T5Runs``, or the older one's encoder, which also takes the start
    tokens and makes the first step, then its decoder (fed the mask, and the hidden states where it
    takes them)."""
    if len(encoder.proto.input) == 2:
        return T5Runs(input_ids, attention_mask, beams, pad, start, encoder, decoder, ctx)
    ids, mask = np.asarray(input_ids, dtype=np.int32), _encoder_mask(input_ids, attention_mask, pad)
    first = np.full((ids.shape[0], 1), start, dtype=np.int32)
    outs = encoder(ids, mask, first, scope=ctx.scope)
    head = [mask] + ([outs[1]] if decoder.proto.input[2].name == "encoder_hidden_states" else [])
    return EncoderFirstRuns(outs, head, first, beams, encoder, decoder, ctx)
