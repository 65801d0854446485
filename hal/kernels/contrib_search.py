"""onnxruntime's generation contrib ops, GreedySearch, Sampling, BeamSearch and WhisperBeamSearch
(domain ``com.microsoft``), as onnxruntime 1.32's CPU kernels compute them.
onnxruntime.transformers.convert_generation writes them around an exported GPT-2 (model_type 0; the
only one GreedySearch and Sampling take) or T5 (model_type 1, BeamSearch), its Whisper exporter
WhisperBeamSearch: the node runs its ``decoder`` graph attribute once per generated token, each
run's presents fed back as pasts. The decoders' contracts and feeds are ``hal.kernels.contrib_decoders``'.

* The next token's scores: the last position's logits (BeamSearch: their log-softmax in float32),
  then onnxruntime's logits processors in its order: repetition_penalty (each token already in the
  sequence: a score below 0 times the penalty, else over it), no_repeat_ngram_size (a token that
  would repeat an n-gram of the sequence), vocab_mask (0: barred), prefix_vocab_mask (first run
  only), min_length (eos barred while the sequence is shorter), temperature (Sampling's attribute,
  WhisperBeamSearch's input: the scores over it), then WhisperBeamSearch's timestamp rules where
  logits_processor is 1 (``_Timestamps``). A barred score is float32's lowest finite value, as
  onnxruntime writes it.
* GreedySearch takes each row's largest score (the first on a tie). Once a sequence has produced
  eos_token_id every later token of it (that eos included) is pad_token_id; the search stops when
  every sequence has, or at max_length. sequences (batch, max_length) int32; positions past an early
  stop are pad_token_id (onnxruntime leaves them unwritten: zeros or stale memory).
* Sampling (custom 0) draws where GreedySearch takes the largest: in each row the tokens whose
  probabilities (MLAS's softmax), summed from the least probable up in float32, stay within 1 -
  top_p take filter_value (the min_tokens_to_keep most probable never, past the first); then
  onnxruntime's Multinomial, exp(score - max) summed in float64 over the finite scores, searched
  for u x the total, u from libstdc++'s std::default_random_engine seeded with the seed input (0
  without one) and its uniform_real_distribution<double>, the one generator running on from row
  to row and run to run: the tokens onnxruntime draws. A cumulative probability within an ulp of 1 - top_p may fall the
  other way (MLAS's exp is not the C library's); top_p 0 puts every one there (convert_generation
  writes Sampling only for 0 < top_p < 1).
* BeamSearch adds each beam's running score (0 for the first beam of a batch, -1e9 for the others
  at the start) and takes the 2 x num_beams best over beams and tokens (ties to the lower flat
  index). In rank order, a candidate that is eos among the first num_beams closes its beam's
  sequence as a hypothesis (score over length ** length_penalty, length without the eos); the
  others continue, num_beams of them. A batch is done once it holds num_beams hypotheses and
  early_stopping is set, or when no candidate can beat its worst: onnxruntime reads the best
  candidate score of batch b from its flattened candidates at b x num_beams (not b x 2 x
  num_beams), and so does this kernel. A done batch continues with pad tokens. At the end every
  open beam of a batch not done is offered as a hypothesis; sequences (batch,
  num_return_sequences, max_length), the best first, padded with pad_token_id (a T5 sequence starts
  with decoder_start_token_id); sequences_scores their scores; scores (max_length - prompt length
  (T5: 1), batch, num_beams, vocab) each run's processed scores plus the beam scores (zero for runs
  after an early stop, which onnxruntime leaves unwritten).

Refused when a target compiles the node, as onnxruntime refuses it: decoders that break their
contract, other model types, Sampling's custom form (presence_mask, custom=1) and its debug
filtered_logits, WhisperBeamSearch's cross attention scores, extra decoding ids and no-speech
probabilities, a missing eos_token_id or pad_token_id (T5, Whisper: decoder_start_token_id), a
vocab_size attribute other than the logits' (onnxruntime then reads the logits with the wrong row
stride). At run time
(RunError): max_length not above the prompt's length or above 4096 (the beam searches), num_beams
outside 1 ... 128, num_return_sequences outside 1 ... num_beams, repetition_penalty not above 0, a
negative seed, Whisper's timestamp rules (logits_processor 1) without a beginning_timestamp_token_id
in the vocabulary, float16 logits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

from hal.kernels.activation import expf, log_softmax
from hal.kernels.contrib_attention import mlas_softmax
from hal.kernels.contrib_decoders import (
    EncoderFirstRuns,
    GptRuns,
    gpt_contract,
    t5_contract,
    t5_runs,
    vocab_of,
    whisper_contract,
    whisper_runs,
)
from hal.kernels.registry import KernelContext, kernel

Array = np.ndarray
DOMAIN = "com.microsoft"
_F32 = np.float32
_LOWEST = np.finfo(np.float32).min
#: onnxruntime's limits on max_length and num_beams
MAX_SEQUENCE_LENGTH, MAX_NUM_BEAMS = 4096, 128


# --- what the kernels take ------------------------------------------------------------------------


def _search_refuses(attrs: dict, inputs: list[str], outputs: list[str], beam: bool = False) -> str | None:
    model_type = int(attrs.get("model_type", 0))
    if model_type not in ((0, 1) if beam else (0,)):
        return (f"model_type {model_type} is not implemented: "
                + ("GPT (0) and T5 (1) decoders" if beam else "GPT decoders (model_type 0) only, as onnxruntime's CPU "
                   "kernel"))
    for name in ("eos_token_id", "pad_token_id") + (("decoder_start_token_id",) if model_type == 1 else ()):
        if int(attrs.get(name, -1)) < 0:
            return f"{name} is required and shall not be negative"
    decoder, encoder = attrs.get("decoder"), attrs.get("encoder")
    if not isinstance(decoder, onnx.GraphProto):
        return "the decoder graph attribute is required"
    if model_type == 1:
        if not isinstance(encoder, onnx.GraphProto):
            return "a T5 model (model_type 1) needs the encoder graph attribute"
        why = t5_contract(encoder, decoder)
    else:
        why = gpt_contract(decoder)
        init = attrs.get("init_decoder")
        if why is None and isinstance(init, onnx.GraphProto):
            why = gpt_contract(init, "init_decoder")
            if why is None and len(init.input) != len(decoder.input):
                why = "init_decoder and decoder shall have the same inputs"
    vocab = int(attrs.get("vocab_size", -1))
    if why is None and vocab > 0 and vocab != vocab_of(decoder):
        why = (f"vocab_size {vocab} differs from the decoder's logits ({vocab_of(decoder)}): onnxruntime's CPU kernels "
               "then read the logits with the attribute's row stride, which this kernel does not mimic")
    return why


def _beam_refuses(attrs: dict, inputs: list[str], outputs: list[str]) -> str | None:
    return _search_refuses(attrs, inputs, outputs, beam=True)


# --- logits processors -------------------------------------------------------------------------


class _Timestamps:
    """Whisper's timestamp rules (WhisperBeamSearch with logits_processor 1; onnxruntime's
    TimestampLogitsProcessor) over each row's scores and sequence: no no-timestamps or
    start-of-LM token; no start-of-transcript, translate or transcribe token once past the first
    timestamp; timestamps in pairs (after a lone one another, after a pair none) that never go back;
    the first at most 50 steps in; and text barred whenever the timestamps' log-sum-exp beats the
    best text token."""

    MAX_INITIAL = 50

    def __init__(self, eos: int, sot: int, translate: int, transcribe: int, solm: int, no_timestamps: int, begin: int):
        self.eos, self.begin = eos, begin
        self.never = [t for t in (no_timestamps, solm) if t >= 0]
        self.after_first = [t for t in (sot, translate, transcribe) if t >= 0]

    def __call__(self, scores: Array, sequences: Array) -> None:
        begin, length = self.begin, sequences.shape[1]
        for r, seq in enumerate(sequences):
            row = scores[r]
            stamps = np.flatnonzero(seq >= begin)
            sample_begin = int(stamps[0]) + 1 if stamps.size else length
            row[self.never] = _LOWEST
            if length > sample_begin:
                row[self.after_first] = _LOWEST
            last = length > 0 and seq[-1] >= begin
            penultimate = length <= sample_begin or seq[length - 2] >= begin
            if last:
                if penultimate:
                    row[begin:] = _LOWEST
                else:
                    row[:self.eos] = _LOWEST
            if stamps.size:
                floor = int(seq[stamps[-1]]) + (0 if last and not penultimate else 1)
                row[begin:floor] = _LOWEST
            if length == sample_begin:
                row[begin + self.MAX_INITIAL + 1:] = _LOWEST
            stamp_scores = row[begin:]
            peak = stamp_scores.max()
            kept = stamp_scores[stamp_scores > _LOWEST]
            total = np.cumsum(expf(kept - peak), dtype=np.float32)[-1] if kept.size else _F32(0)
            stamp_logprob = np.log(total, dtype=np.float32) + peak if total > 0 else _LOWEST
            if stamp_logprob > row[:begin].max():
                row[:begin] = _LOWEST


class _Processors:
    """onnxruntime's LogitsProcessorList, applied in its order to (rows, vocab) scores."""

    def __init__(self, batch: int, vocab: int, eos: int, min_length: int, repetition_penalty: float,
                 no_repeat_ngram_size: int, vocab_mask: Array | None, prefix_vocab_mask: Array | None,
                 temperature: float = 1.0, timestamps: _Timestamps | None = None):
        self.batch, self.eos, self.min_length, self.temperature = batch, eos, min_length, _F32(temperature)
        self.timestamps = timestamps
        self.penalty, self.ngram = _F32(repetition_penalty), no_repeat_ngram_size
        self.vocab_mask = None if vocab_mask is None else _mask(vocab_mask, (vocab,), "vocab_mask")
        self.prefix_mask = None if prefix_vocab_mask is None else _mask(prefix_vocab_mask, (batch, vocab),
                                                                        "prefix_vocab_mask")

    def __call__(self, scores: Array, sequences: Array, run: int) -> None:
        if self.penalty != 1:
            for r in range(scores.shape[0]):
                seen = np.unique(sequences[r])
                s = scores[r, seen]
                scores[r, seen] = np.where(s < 0, s * self.penalty, s / self.penalty)
        length = sequences.shape[1]
        if 0 < self.ngram <= length:
            prefix = self.ngram - 1
            for r in range(scores.shape[0]):
                seq = sequences[r]
                tail = seq[length - prefix:] if prefix else seq[:0]
                barred = [seq[j + prefix] for j in range(length - self.ngram + 1)
                          if prefix == 0 or np.array_equal(seq[j:j + prefix], tail)]
                scores[r, barred] = _LOWEST
        if self.vocab_mask is not None:
            scores[:, self.vocab_mask == 0] = _LOWEST
        if self.prefix_mask is not None and run == 1:
            beams = scores.shape[0] // self.batch
            scores[np.repeat(self.prefix_mask, beams, axis=0) == 0] = _LOWEST
        if self.min_length > 0 and length < self.min_length:
            scores[:, self.eos] = _LOWEST
        if self.temperature > 0 and self.temperature != 1:
            scores /= self.temperature
        if self.timestamps is not None:
            self.timestamps(scores, sequences)


def _mask(m: Array, shape: tuple[int, ...], name: str) -> Array:
    m = np.asarray(m)
    if m.shape != shape:
        raise ValueError(f"{name} shall have shape {shape}, got {m.shape}")
    return m


#: the inputs onnxruntime checks are scalars (shape () or (1,)); it reads the others' first value
_SCALARS = ("max_length", "min_length", "num_beams", "num_return_sequences", "length_penalty")


def _scalar(x: Array | None, default: float | int, name: str, kind: type) -> Any:
    if x is None:
        return default
    a = np.asarray(x)
    if a.size != 1 or (name in _SCALARS and a.ndim > 1):
        raise ValueError(f"{name} should be a scalar, got shape {a.shape}")
    return kind(a.reshape(-1)[0])


def _lengths(max_length: Array, min_length: Array | None, prompt: int, capped: bool) -> tuple[int, int]:
    """max_length and min_length; ``capped``: BeamSearch's limit on max_length (GreedySearch has none)."""
    longest = _scalar(max_length, MAX_SEQUENCE_LENGTH, "max_length", int)
    if longest <= prompt:
        raise ValueError(f"max_length ({longest}) shall be greater than input sequence length ({prompt})")
    if capped and longest > MAX_SEQUENCE_LENGTH:
        raise ValueError(f"max_length ({longest}) shall be no more than {MAX_SEQUENCE_LENGTH}")
    return longest, _scalar(min_length, 0, "min_length", int)  # onnxruntime takes min_length >= max_length


def _penalty(repetition_penalty: Array | None) -> float:
    p = _scalar(repetition_penalty, 1.0, "repetition_penalty", float)
    if not p > 0:
        raise ValueError(f"repetition_penalty shall be greater than 0, got {p}")
    return p


def _prompt(input_ids: Array) -> Array:
    ids = np.asarray(input_ids)
    if ids.ndim != 2:
        raise ValueError(f"input_ids shall have 2 dimensions (batch, sequence), got shape {ids.shape}")
    return ids.astype(np.int32)


# --- GreedySearch ------------------------------------------------------------------------------


def _greedy(input_ids, max_length, min_length, repetition_penalty, vocab_mask, prefix_vocab_mask, attention_mask,
            decoder, init_decoder, eos: int, pad: int, no_repeat_ngram_size: int, ctx: KernelContext,
            choose: Callable[[Array], Array], temperature: float = 1.0) -> Array:
    """The loop of GreedySearch and Sampling: each run's processed scores, ``choose`` the next tokens."""
    ids = _prompt(input_ids)
    batch, prompt = ids.shape
    longest, shortest = _lengths(max_length, min_length, prompt, capped=False)
    runs = GptRuns(ids, attention_mask, 1, pad, decoder, init_decoder, ctx)
    process = _Processors(batch, runs.vocab, eos, shortest, _penalty(repetition_penalty), no_repeat_ngram_size,
                          vocab_mask, prefix_vocab_mask, temperature)
    sequences, finished = ids, np.zeros(batch, dtype=bool)
    while sequences.shape[1] < longest:
        scores = runs.run()
        process(scores, sequences, runs.runs)
        tokens = choose(scores)
        finished |= tokens == eos
        tokens[finished] = pad
        sequences = np.concatenate([sequences, tokens[:, None]], axis=1)
        if finished.all() or sequences.shape[1] >= longest:
            break
        runs.advance(tokens, None)
    out = np.full((batch, longest), pad, dtype=np.int32)
    out[:, :sequences.shape[1]] = sequences
    return out


@kernel("GreedySearch", since=1, domain=DOMAIN, context=True, refuses=_search_refuses)
def greedy_search(input_ids, max_length, min_length=None, repetition_penalty=None, vocab_mask=None,
                  prefix_vocab_mask=None, attention_mask=None, *, decoder, eos_token_id, pad_token_id,
                  init_decoder=None, encoder=None, model_type=0, no_repeat_ngram_size=0,
                  decoder_start_token_id=-1, vocab_size=-1, _ctx: KernelContext):
    return _greedy(input_ids, max_length, min_length, repetition_penalty, vocab_mask, prefix_vocab_mask,
                   attention_mask, decoder, init_decoder, eos_token_id, pad_token_id, no_repeat_ngram_size, _ctx,
                   lambda scores: np.argmax(scores, axis=1).astype(np.int32))


# --- Sampling ----------------------------------------------------------------------------------


class _Minstd:
    """std::default_random_engine of libstdc++ (minstd_rand0: x <- 16807 x mod 2^31 - 1) and its
    std::uniform_real_distribution<double>(0, 1): two draws d1, d2, ((d1 - 1) + (d2 - 1) R) / R^2
    with R = 2^31 - 2, below 1."""

    MODULUS, RANGE = 2147483647, 2147483646.0

    def __init__(self, seed: int):
        self.x = seed % self.MODULUS or 1

    def _draw(self) -> int:
        self.x = self.x * 16807 % self.MODULUS
        return self.x

    def uniform(self) -> float:
        low = float(self._draw() - 1)
        high = float(self._draw() - 1)
        u = (low + high * self.RANGE) / (self.RANGE * self.RANGE)
        return u if u < 1.0 else float(np.nextafter(1.0, 0.0))


def _sample(scores: Array, generator: _Minstd, top_p: float, filter_value: float, keep: int) -> Array:
    """onnxruntime's SamplingCpuHelper::Sample (custom 0): in each row the tokens whose probability,
    summed from the least probable up in float32, stays within 1 - top_p are set to filter_value
    (the ``keep`` most probable never past the first); then its Multinomial draws one token per row
    from exp(score - max) over the finite scores, in float64, the generator running on."""
    rows, vocab = scores.shape
    limit = _F32(1) - _F32(top_p)
    for r in range(rows):
        order = np.argsort(scores[r], kind="stable")
        cum = np.cumsum(mlas_softmax(scores[r][order][None])[0], dtype=np.float32)
        filtered = np.flatnonzero(cum[:max(vocab - keep, 1)] <= limit)
        scores[r, order[filtered]] = _F32(filter_value)
    tokens = np.empty(rows, dtype=np.int32)
    for r in range(rows):
        row = scores[r].astype(np.float64)
        finite = np.isfinite(row)
        peak = row[finite].max() if finite.any() else float(np.finfo(np.float32).min)
        with np.errstate(over="ignore"):
            cdf = np.cumsum(np.where(finite, np.exp(row - peak), 0.0))
        tokens[r] = np.searchsorted(cdf, generator.uniform() * cdf[-1], side="right")
    return tokens


def _sampling_refuses(attrs: dict, inputs: list[str], outputs: list[str]) -> str | None:
    if int(attrs.get("custom", 0)):
        return "Sampling with custom=1 (its presence penalty and greater-first filter) is not implemented"
    if len(inputs) > 7 and inputs[7]:
        return "Sampling's presence_mask (custom sampling) is not implemented"
    if len(outputs) > 1 and outputs[1]:
        return "Sampling's filtered_logits output (written only by onnxruntime's debug builds) is not implemented"
    return _search_refuses(attrs, inputs, outputs)


@kernel("Sampling", since=1, domain=DOMAIN, context=True, refuses=_sampling_refuses)
def sampling(input_ids, max_length, min_length=None, repetition_penalty=None, vocab_mask=None, prefix_vocab_mask=None,
             attention_mask=None, presence_mask=None, seed=None, *, decoder, eos_token_id, pad_token_id,
             init_decoder=None, encoder=None, model_type=0, no_repeat_ngram_size=0, decoder_start_token_id=-1,
             vocab_size=-1, temperature=1.0, top_p=0.0, filter_value=-1e20, min_tokens_to_keep=0, custom=0,
             presence_penalty=0.0, _ctx: KernelContext):
    start = _scalar(seed, 0, "seed", int)
    if start < 0:
        raise ValueError(f"seed must be >= 0, got {start}")
    generator = _Minstd(start)
    return _greedy(input_ids, max_length, min_length, repetition_penalty, vocab_mask, prefix_vocab_mask,
                   attention_mask, decoder, init_decoder, eos_token_id, pad_token_id, no_repeat_ngram_size, _ctx,
                   lambda scores: _sample(scores, generator, top_p, filter_value, min_tokens_to_keep), temperature)


# --- BeamSearch --------------------------------------------------------------------------------


class _Hypotheses:
    """One batch's finished sequences, best first, at most ``beams`` (onnxruntime's BeamHypotheses)."""

    def __init__(self, beams: int, length_penalty: float):
        self.beams, self.length_penalty = beams, _F32(length_penalty)
        self.items: list[tuple[np.float32, Array]] = []
        self.done = False

    def add(self, sequence: Array, sum_logprobs: np.float32) -> None:
        score = _F32(sum_logprobs) / np.power(_F32(len(sequence)), self.length_penalty)
        if len(self.items) == self.beams and not score > self.items[-1][0]:
            return
        at = len(self.items)
        while at > 0 and score > self.items[at - 1][0]:
            at -= 1
        self.items.insert(at, (score, sequence.copy()))
        del self.items[self.beams:]

    def can_improve(self, best_sum_logprobs: np.float32, length: int) -> bool:
        return bool(self.items[-1][0] < _F32(best_sum_logprobs) / np.power(_F32(length), self.length_penalty))


def _beam_step(hyps: list[_Hypotheses], sequences: Array, top_scores: Array, top_flat: Array, vocab: int,
               beams: int, eos: int, pad: int, early_stopping: bool) -> tuple[Array, Array, Array]:
    """onnxruntime's BeamSearchScorer::Process: the next (scores, tokens, rows) of every beam."""
    batch = len(hyps)
    scores = np.zeros(batch * beams, dtype=np.float32)
    tokens = np.full(batch * beams, pad, dtype=np.int32)
    rows = np.zeros(batch * beams, dtype=np.int64)
    flat_scores = top_scores.reshape(-1)
    for b, hyp in enumerate(hyps):
        if hyp.done:
            continue
        kept = 0
        for j in range(2 * beams):
            token, row = int(top_flat[b, j] % vocab), b * beams + int(top_flat[b, j] // vocab)
            score = top_scores[b, j]
            if token == eos:
                if j >= beams:
                    continue
                hyp.add(sequences[row], score)
            else:
                scores[b * beams + kept], tokens[b * beams + kept], rows[b * beams + kept] = score, token, row
                kept += 1
            if kept == beams:
                break
        if len(hyp.items) < beams:
            continue
        if not early_stopping:
            best = flat_scores[b * beams:b * beams + 2 * beams].max()  # onnxruntime's offset, see the docstring
            if hyp.can_improve(best, sequences.shape[1]):
                continue
        hyp.done = True
    return scores, tokens, rows


def _beams(num_beams: Array | None, num_return_sequences: Array | None) -> tuple[int, int]:
    beams = _scalar(num_beams, 1, "num_beams", int)
    if not 1 <= beams <= MAX_NUM_BEAMS:
        raise ValueError(f"num_beams shall be a positive integer no more than {MAX_NUM_BEAMS}, got {beams}")
    returned = _scalar(num_return_sequences, 1, "num_return_sequences", int)
    if not 1 <= returned <= beams:
        raise ValueError(f"num_return_sequences ({returned}) shall be a positive integer no more than num_beams "
                         f"({beams})")
    return beams, returned


def _first_step(runs: Any, longest: int, prompt: int) -> None:
    """An encoder that makes the first step leaves the decoder no feeds when max_length allows only
    that step: onnxruntime then fails, and so does this."""
    if isinstance(runs, EncoderFirstRuns) and longest == prompt + 1:
        raise ValueError(f"max_length ({longest}) shall exceed the first decoder tokens ({prompt}) by 2 or more")


def _search(runs: Any, process: _Processors, batch: int, prompt: int, longest: int, beams: int, returned: int,
            length_penalty: Array | None, eos: int, pad: int, early_stopping: bool,
            n_outputs: int) -> Array | tuple[Array, ...]:
    """The beam search loop over ``runs`` (a ``hal.kernels.contrib_decoders`` runner): the outputs
    sequences, sequences_scores and scores (as many as asked)."""
    vocab = runs.vocab
    hyps = [_Hypotheses(beams, _scalar(length_penalty, 1.0, "length_penalty", float)) for _ in range(batch)]
    beam_scores = np.zeros((batch, beams), dtype=np.float32)
    beam_scores[:, 1:] = _F32(-1e9)
    beam_scores = beam_scores.reshape(-1)
    step_scores = np.zeros((longest - prompt, batch, beams, vocab), dtype=np.float32) if n_outputs > 2 else None
    sequences = runs.sequences
    while sequences.shape[1] < longest:
        scores = log_softmax(runs.run(), axis=-1)
        process(scores, sequences, runs.runs)
        scores += beam_scores[:, None]
        if step_scores is not None:
            step_scores[runs.runs - 1] = scores.reshape(batch, beams, vocab)
        flat = scores.reshape(batch, beams * vocab)
        top = np.argsort(-flat, axis=1, kind="stable")[:, :2 * beams]
        beam_scores, tokens, rows = _beam_step(hyps, sequences, np.take_along_axis(flat, top, axis=1), top, vocab,
                                               beams, eos, pad, early_stopping)
        sequences = np.concatenate([sequences[rows], tokens[:, None]], axis=1)
        if all(h.done for h in hyps) or sequences.shape[1] >= longest:
            break
        runs.advance(tokens, rows if beams > 1 else None)  # one beam: onnxruntime feeds the presents as they are
    for b, hyp in enumerate(hyps):
        if not hyp.done:
            for row in range(b * beams, (b + 1) * beams):
                hyp.add(sequences[row], beam_scores[row])
    out = np.full((batch, returned, longest), pad, dtype=np.int32)
    out_scores = np.zeros((batch, returned), dtype=np.float32)
    for b, hyp in enumerate(hyps):
        for k, (score, seq) in enumerate(hyp.items[:returned]):
            out[b, k, :len(seq)] = seq
            out_scores[b, k] = score
    return (out, out_scores, step_scores)[:max(n_outputs, 1)] if n_outputs > 1 else out


@kernel("BeamSearch", since=1, domain=DOMAIN, context=True, output_count=True, refuses=_beam_refuses)
def beam_search(input_ids, max_length, min_length=None, num_beams=None, num_return_sequences=None,
                length_penalty=None, repetition_penalty=None, vocab_mask=None, prefix_vocab_mask=None,
                attention_mask=None, decoder_input_ids=None, logits_processor=None, *, decoder, eos_token_id,
                pad_token_id, init_decoder=None, encoder=None, model_type=0, no_repeat_ngram_size=0,
                decoder_start_token_id=-1, early_stopping=0, vocab_size=-1, _n_outputs=1, _ctx: KernelContext):
    ids = _prompt(input_ids)
    batch, prompt = ids.shape[0], ids.shape[1] if model_type == 0 else 1  # T5's sequences start at its start token
    longest, shortest = _lengths(max_length, min_length, prompt, capped=True)
    beams, returned = _beams(num_beams, num_return_sequences)
    if model_type == 1:
        runs = t5_runs(ids, attention_mask, beams, pad_token_id, decoder_start_token_id, encoder, decoder, _ctx)
        _first_step(runs, longest, prompt)
    else:
        runs = GptRuns(ids, attention_mask, beams, pad_token_id, decoder, init_decoder, _ctx)
    process = _Processors(batch, runs.vocab, eos_token_id, shortest, _penalty(repetition_penalty),
                          no_repeat_ngram_size, vocab_mask, prefix_vocab_mask)
    return _search(runs, process, batch, prompt, longest, beams, returned, length_penalty, eos_token_id,
                   pad_token_id, bool(early_stopping), _n_outputs)


def _whisper_refuses(attrs: dict, inputs: list[str], outputs: list[str]) -> str | None:
    used = [name for name, i in zip(_WHISPER_UNSUPPORTED_INPUTS, inputs[12:14]) if i]
    asked = [name for name, o in zip(("cross_qk", "non_speech_probs"), outputs[3:5]) if o]
    if used or asked or int(attrs.get("decoder_output_cross_qk", 0)):
        return (f"WhisperBeamSearch's {', '.join(used + asked) or 'decoder_output_cross_qk'} (cross attention "
                "scores, extra decoding ids, no-speech probabilities) are not implemented")
    model_type = int(attrs.get("model_type", 2))
    if model_type != 2:
        return f"WhisperBeamSearch with model_type {model_type}: only Whisper's (2)"
    for name in ("eos_token_id", "pad_token_id", "decoder_start_token_id"):
        if int(attrs.get(name, -1)) < 0:
            return f"{name} is required and shall not be negative"
    decoder, encoder = attrs.get("decoder"), attrs.get("encoder")
    if not isinstance(decoder, onnx.GraphProto) or not isinstance(encoder, onnx.GraphProto):
        return "WhisperBeamSearch needs the encoder and decoder graph attributes"
    why = whisper_contract(encoder, decoder)
    vocab = int(attrs.get("vocab_size", -1))
    if why is None and vocab > 0 and vocab != vocab_of(decoder):
        why = f"vocab_size {vocab} differs from the decoder's logits ({vocab_of(decoder)})"
    return why


#: WhisperBeamSearch's inputs 12 and 13, which this kernel does not compute
_WHISPER_UNSUPPORTED_INPUTS = ("cross_qk_layer_head", "extra_decoding_ids")


@kernel("WhisperBeamSearch", since=1, domain=DOMAIN, context=True, output_count=True, refuses=_whisper_refuses)
def whisper_beam_search(input_features, max_length, min_length=None, num_beams=None, num_return_sequences=None,
                        length_penalty=None, repetition_penalty=None, vocab_mask=None, prefix_vocab_mask=None,
                        attention_mask=None, decoder_input_ids=None, logits_processor=None, cross_qk_layer_head=None,
                        extra_decoding_ids=None, temperature=None, *, decoder, encoder, eos_token_id, pad_token_id,
                        decoder_start_token_id=-1, init_decoder=None, model_type=2, no_repeat_ngram_size=0,
                        early_stopping=0, vocab_size=-1, decoder_output_cross_qk=0, translate_token_id=-1,
                        transcribe_token_id=-1, start_of_lm_token_id=-1, no_timestamps_token_id=-1,
                        beginning_timestamp_token_id=-1, no_speech_token_id=-1, _n_outputs=1, _ctx: KernelContext):
    features = np.asarray(input_features)
    if features.ndim != 3:
        raise ValueError(f"input_features shall have 3 dimensions (batch, features, frames), got {features.shape}")
    if attention_mask is not None and np.ndim(attention_mask) != 3:  # (read no further, as onnxruntime's)
        raise ValueError(f"attention_mask shall have 3 dimensions, got shape {np.shape(attention_mask)}")
    timestamps = None
    if _scalar(logits_processor, 0, "logits_processor", int) == 1:
        vocab = vocab_of(decoder.proto)
        if not 0 < beginning_timestamp_token_id < vocab:
            raise ValueError(f"beginning_timestamp_token_id is out of range, it is {beginning_timestamp_token_id}, "
                             f"vocab_size is {vocab} (the timestamp rules, logits_processor 1, need it)")
        timestamps = _Timestamps(eos_token_id, decoder_start_token_id, translate_token_id, transcribe_token_id,
                                 start_of_lm_token_id, no_timestamps_token_id, beginning_timestamp_token_id)
    batch = features.shape[0]
    beams, returned = _beams(num_beams, num_return_sequences)
    runs = whisper_runs(features, decoder_input_ids, beams, decoder_start_token_id, encoder, decoder, _ctx)
    prompt = runs.sequences.shape[1]
    longest, shortest = _lengths(max_length, min_length, prompt, capped=True)
    _first_step(runs, longest, prompt)
    process = _Processors(batch, runs.vocab, eos_token_id, shortest, _penalty(repetition_penalty),
                          no_repeat_ngram_size, vocab_mask, prefix_vocab_mask,
                          _scalar(temperature, 1.0, "temperature", float), timestamps)
    return _search(runs, process, batch, prompt, longest, beams, returned, length_penalty, eos_token_id,
                   pad_token_id, bool(early_stopping), _n_outputs)
