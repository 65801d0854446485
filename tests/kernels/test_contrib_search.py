"""onnxruntime's generation contrib ops (``hal.kernels.contrib_search``): GreedySearch and BeamSearch
around a GPT-style decoder, against onnxruntime 1.32 itself over their inputs and attributes (every
logits processor, early stops, length penalties, a separate init_decoder), on the cpu target and once
on every target; and the decoders and inputs both refuse."""

from __future__ import annotations

import numpy as np
import pytest

import hal
from hal.errors import RunError, UnsupportedOpError
from tests.kernels._generation_models import (
    decoder,
    first_step_encoder,
    scalar,
    search_model,
    t5_decoder,
    t5_encoder,
)
from tests.kernels._onnxruntime import run_as_written

TARGETS = [t.name for t in hal.targets()]
EOS_OFTEN, EOS_RARE, PAD = 10, 22, 2  # the tiny decoder emits token 10 often, 22 never in these runs, 2 never
DEC = decoder(barred=(PAD,))
IDS = np.array([[3, 5, 7, 9, 11], [PAD, PAD, 4, 6, 8], [PAD, 13, 1, 1, 7]], np.int32)
MASK = np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 1, 1, 0, 1]], np.int32)  # a hole the pads don't show
VOCAB_MASK = np.ones(23, np.int32)
VOCAB_MASK[[8, 17]] = 0
PREFIX_MASK = np.ones((3, 23), np.int32)
PREFIX_MASK[0, [17, 8]] = 0
PREFIX_MASK[2, :12] = 0


def _compare(op: str, feeds: dict, outputs: list[str], target: str = "cpu", **attrs) -> None:
    """hal's outputs as onnxruntime's: the token ids exactly, the scores within 2e-5. onnxruntime
    leaves what follows an early stop unwritten (GreedySearch's last columns, BeamSearch's scores
    for the runs it skipped): those are compared up to the stop, hal's pad / zero after it."""
    attrs.setdefault("dec", DEC)
    blob = search_model(op, feeds, outputs, **attrs)
    want = run_as_written(blob, feeds)
    got = hal.InferenceSession(blob, target=target, fallback="allow", cache_dir=False).run(None, feeds)
    assert len(got) == len(want)
    if op in ("GreedySearch", "Sampling"):
        written = _written(want[0], feeds["input_ids"].shape[1])
        assert (got[0][:, written:] == PAD).all()
        got, want = [got[0][:, :written]], [want[0][:, :written]]
    np.testing.assert_array_equal(got[0], want[0])
    if len(got) > 2:
        runs = int(np.any(got[2] != 0, axis=(1, 2, 3)).sum())
        assert runs and not got[2][runs:].any()
        got[2], want[2] = got[2][:runs], want[2][:runs]
    for g, w in zip(got[1:], want[1:]):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)


def _written(sequences: np.ndarray, prompt: int) -> int:
    """The columns a greedy search wrote: up to the first one all pad (the decoder never picks pad:
    there the last sequence ended), or all."""
    ended = [c for c in range(prompt, sequences.shape[1]) if (sequences[:, c] == PAD).all()]
    return ended[0] + 1 if ended else sequences.shape[1]


GREEDY = {
    "plain": ({}, {}),
    "eos_rare": ({}, {"eos_token_id": EOS_RARE}),
    "mask": ({"attention_mask": MASK}, {}),
    "min_length": ({"min_length": scalar(9)}, {}),
    "min_length_past_max": ({"min_length": scalar(14)}, {}),
    "penalty_up": ({"repetition_penalty": scalar(1.6, np.float32)}, {}),
    "penalty_down": ({"repetition_penalty": scalar(0.6, np.float32)}, {}),
    "ngram1": ({}, {"no_repeat_ngram_size": 1}),
    "ngram2": ({}, {"no_repeat_ngram_size": 2}),
    "ngram3": ({}, {"no_repeat_ngram_size": 3}),
    "vocab_mask": ({"vocab_mask": VOCAB_MASK}, {}),
    "prefix_mask": ({"prefix_vocab_mask": PREFIX_MASK}, {}),
    "everything": ({"min_length": scalar(8), "repetition_penalty": scalar(1.3, np.float32), "vocab_mask": VOCAB_MASK,
                    "prefix_vocab_mask": PREFIX_MASK, "attention_mask": MASK}, {"no_repeat_ngram_size": 2}),
    "init_decoder": ({}, {"init": decoder(seed=5, name="init", barred=(PAD,))}),
    "deeper": ({}, {"dec": decoder(layers=3, heads=3, head=2, seed=7, barred=(PAD,))}),
}


@pytest.mark.parametrize("case", GREEDY)
def test_greedy_search_matches_onnxruntime(case):
    extra, attrs = GREEDY[case]
    attrs = {"eos_token_id": EOS_OFTEN, "pad_token_id": PAD, **attrs}
    _compare("GreedySearch", {"input_ids": IDS, "max_length": scalar(14), **extra}, ["sequences"], **attrs)


def test_greedy_search_one_prompt_one_step():
    """A batch of one whose prompt leaves room for a single token."""
    _compare("GreedySearch", {"input_ids": IDS[:1], "max_length": scalar(6)}, ["sequences"], eos_token_id=EOS_RARE,
             pad_token_id=PAD)


SAMPLING = {
    "top_p_small": ({}, {"top_p": 0.01}),
    "top_p_half": ({"seed": scalar(42)}, {"top_p": 0.5}),
    "top_p_wide_warm": ({"seed": scalar(7)}, {"top_p": 0.9, "temperature": 1.4}),
    "top_p_all_cold": ({"seed": scalar(3)}, {"top_p": 0.99, "temperature": 0.6}),
    "keep_three": ({"seed": scalar(4)}, {"top_p": 0.01, "min_tokens_to_keep": 3}),
    "seed_past_modulus": ({"seed": scalar(2**31 - 1)}, {"top_p": 0.8}),
    "processors": ({"seed": scalar(11), "repetition_penalty": scalar(1.5, np.float32), "min_length": scalar(9),
                    "vocab_mask": VOCAB_MASK, "prefix_vocab_mask": PREFIX_MASK, "attention_mask": MASK},
                   {"top_p": 0.7, "no_repeat_ngram_size": 2}),
    "eos_rare": ({"seed": scalar(5)}, {"top_p": 0.95, "eos_token_id": EOS_RARE}),
}


@pytest.mark.parametrize("case", SAMPLING)
def test_sampling_matches_onnxruntime(case):
    """Sampling draws onnxruntime's tokens: its generator (libstdc++'s minstd_rand0 from the seed
    input, 0 without one) running on from row to row and run to run, its top-p filter and its
    Multinomial's float64 cumulative sums."""
    extra, attrs = SAMPLING[case]
    _compare("Sampling", {"input_ids": IDS, "max_length": scalar(16), **extra}, ["sequences"],
             **{"eos_token_id": EOS_OFTEN, "pad_token_id": PAD, **attrs})


def test_sampling_forms_not_computed_are_refused():
    feeds = {"input_ids": IDS, "max_length": scalar(9), "seed": scalar(-1)}
    blob = search_model("Sampling", feeds, ["sequences"], dec=DEC, eos_token_id=EOS_OFTEN, pad_token_id=PAD, top_p=0.5)
    with pytest.raises(Exception, match="Seed must be >= 0"):
        run_as_written(blob, feeds)
    with pytest.raises(RunError, match="seed must be >= 0"):
        hal.InferenceSession(blob, target="cpu", cache_dir=False).run(None, feeds)
    feeds["seed"] = scalar(1)
    for attrs, word in (({"custom": 1}, "custom=1"), ({}, "presence_mask")):
        fed = {**feeds, "presence_mask": np.zeros((3, 23), np.int32)} if word == "presence_mask" else feeds
        blob = search_model("Sampling", fed, ["sequences"], dec=DEC, eos_token_id=EOS_OFTEN, pad_token_id=PAD,
                            top_p=0.5, **attrs)
        with pytest.raises(UnsupportedOpError, match=word):
            hal.InferenceSession(blob, target="cpu", cache_dir=False)


def _beam_feeds(beams: int = 3, returned: int = 2, length_penalty: float = 1.0, **extra) -> dict:
    """The seven inputs convert_generation always names, and ``extra``."""
    return {"input_ids": IDS, "max_length": scalar(13), "min_length": scalar(0), "num_beams": scalar(beams),
            "num_return_sequences": scalar(returned), "length_penalty": scalar(length_penalty, np.float32),
            "repetition_penalty": scalar(1.0, np.float32), **extra}


BEAM = {
    "plain": (_beam_feeds(), {}),
    "one_beam": (_beam_feeds(1, 1), {}),
    "two_beams": (_beam_feeds(2, 2), {}),
    "four_beams_all_returned": (_beam_feeds(4, 4), {}),
    "early_stopping": (_beam_feeds(3, 3), {"early_stopping": 1}),
    "short_penalty": (_beam_feeds(3, 3, 0.4), {}),
    "long_penalty": (_beam_feeds(3, 3, 2.5), {}),
    "eos_rare": (_beam_feeds(3, 3), {"eos_token_id": EOS_RARE}),
    "min_length": (_beam_feeds(3, 2, min_length=scalar(10)), {}),
    "penalty": (_beam_feeds(3, 2, repetition_penalty=scalar(1.8, np.float32)), {}),
    "ngram": (_beam_feeds(3, 2), {"no_repeat_ngram_size": 2}),
    "masks": (_beam_feeds(3, 2, vocab_mask=VOCAB_MASK, prefix_vocab_mask=PREFIX_MASK, attention_mask=MASK), {}),
    "init_decoder": (_beam_feeds(2, 2), {"init": decoder(seed=5, name="init", barred=(PAD,))}),
}


@pytest.mark.parametrize("outputs", [["sequences"], ["sequences", "sequences_scores", "scores"]], ids=["seq", "all"])
@pytest.mark.parametrize("case", BEAM)
def test_beam_search_matches_onnxruntime(case, outputs):
    feeds, attrs = BEAM[case]
    attrs = {"eos_token_id": EOS_OFTEN, "pad_token_id": PAD, **attrs}
    _compare("BeamSearch", feeds, outputs, **attrs)


T5_PAD, T5_EOS_OFTEN = 0, 12  # pad is also the decoder's start token, as in T5; the tiny decoder never picks it
T5 = {"enc": t5_encoder(), "dec": t5_decoder(barred=(T5_PAD,)), "model_type": 1, "decoder_start_token_id": T5_PAD,
      "pad_token_id": T5_PAD}
T5_IDS = np.where(IDS == PAD, T5_PAD, IDS)
T5_CASES = {
    "plain": (_beam_feeds(3, 3, input_ids=T5_IDS), {"eos_token_id": EOS_RARE}),
    "eos": (_beam_feeds(3, 2, input_ids=T5_IDS), {}),
    "early_stopping": (_beam_feeds(3, 3, input_ids=T5_IDS), {"early_stopping": 1}),
    "one_beam": (_beam_feeds(1, 1, input_ids=T5_IDS), {}),
    # pad ids inside and after a row's tokens: only leading ones are masked (T5's tokenizer ends with one)
    "inner_pads": (_beam_feeds(2, 2, input_ids=np.array([[3, 0, 7, 9, 0], [0, 0, 4, 0, 8], [0, 13, 1, 1, 7]],
                                                       np.int32)), {}),
    "penalties": (_beam_feeds(2, 2, 0.5, input_ids=T5_IDS, repetition_penalty=scalar(1.5, np.float32),
                              min_length=scalar(9)), {"no_repeat_ngram_size": 2}),
    "masks": (_beam_feeds(3, 2, input_ids=T5_IDS, vocab_mask=VOCAB_MASK, prefix_vocab_mask=PREFIX_MASK,
                          attention_mask=MASK), {}),
}


T5_OLDER = {"enc": first_step_encoder(t5=True), "dec": t5_decoder(barred=(T5_PAD,), hidden=True)}


@pytest.mark.parametrize("outputs", [["sequences"], ["sequences", "sequences_scores", "scores"]], ids=["seq", "all"])
@pytest.mark.parametrize("older", [False, True], ids=["format", "older_format"])
@pytest.mark.parametrize("case", T5_CASES)
def test_t5_beam_search_matches_onnxruntime(case, older, outputs):
    """model_type 1: the encoder once, its cross keys and values repeated per beam; the decoder from
    decoder_start_token_id with empty self pasts; the encoder's mask 0 only at leading pads. The
    older format's encoder also makes the first step (its logits, hidden states and self presents)."""
    feeds, attrs = T5_CASES[case]
    _compare("BeamSearch", feeds, outputs, **{**T5, "eos_token_id": T5_EOS_OFTEN, **(T5_OLDER if older else {}),
                                               **attrs})


def test_t5_older_format_without_hidden_states():
    """The older format's decoder may leave encoder_hidden_states out (onnxruntime then feeds the
    presents right after the mask)."""
    _compare("BeamSearch", _beam_feeds(3, 2, input_ids=T5_IDS), ["sequences", "sequences_scores"],
             **{**T5, **T5_OLDER, "dec": t5_decoder(barred=(T5_PAD,)), "eos_token_id": T5_EOS_OFTEN})


WHISPER = {"enc": first_step_encoder(), "dec": t5_decoder(barred=(21,), masked=False), "decoder_start_token_id": 20,
           "pad_token_id": 21, "eos_token_id": 5}  # the tiny pair emits token 5 often, 22 never
FEATURES = np.random.default_rng(0).standard_normal((3, 6, 10)).astype(np.float32)


def _whisper_feeds(beams: int = 3, returned: int = 2, **extra) -> dict:
    return {**_beam_feeds(beams, returned, max_length=scalar(11), **extra), "input_features": FEATURES}


WHISPER_CASES = {
    "plain": (_whisper_feeds(3, 3), {"eos_token_id": EOS_RARE}),
    "eos": (_whisper_feeds(), {}),
    "early_stopping": (_whisper_feeds(4, 4), {"early_stopping": 1}),
    "one_beam": (_whisper_feeds(1, 1), {}),
    "prompt": (_whisper_feeds(decoder_input_ids=np.array([[20, 5], [20, 7], [20, 9]], np.int32)), {}),
    "temperature": (_whisper_feeds(temperature=scalar(0.6, np.float32), length_penalty=1.7), {}),
    "processors": (_whisper_feeds(repetition_penalty=scalar(1.4, np.float32), min_length=scalar(8),
                                  vocab_mask=VOCAB_MASK, prefix_vocab_mask=PREFIX_MASK), {"no_repeat_ngram_size": 2}),
}


@pytest.mark.parametrize("outputs", [["sequences"], ["sequences", "sequences_scores", "scores"]], ids=["seq", "all"])
@pytest.mark.parametrize("case", WHISPER_CASES)
def test_whisper_beam_search_matches_onnxruntime(case, outputs):
    """WhisperBeamSearch: the encoder once (features and the first decoder tokens), its logits the
    first step's, its self and cross presents repeated per beam; then the decoder."""
    feeds, attrs = WHISPER_CASES[case]
    feeds = {k: v for k, v in feeds.items() if k != "input_ids"}
    _compare("WhisperBeamSearch", feeds, outputs, **{**WHISPER, **attrs})


TIMESTAMPS = {"beginning_timestamp_token_id": 16, "no_timestamps_token_id": 15, "start_of_lm_token_id": 14,
              "translate_token_id": 12, "transcribe_token_id": 13}
TIMESTAMPED = {**WHISPER, **TIMESTAMPS, "decoder_start_token_id": 11, "eos_token_id": 10, "pad_token_id": 10,
               "dec": t5_decoder(masked=False, seed=10)}  # text 0 ... 9, eos 10, special 11 ... 15, timestamps 16 ...


@pytest.mark.parametrize(("beams", "prompt"), [(3, None), (1, [11, 13]), (2, [11, 12, 16])],
                         ids=["start", "task", "timestamp_fed"])
def test_whisper_timestamp_rules_match_onnxruntime(beams, prompt):
    """logits_processor 1: the timestamp rules among the processors (timestamps in pairs, never going
    back, the first within 50 steps, text barred when the timestamps' log-sum-exp beats it)."""
    feeds = {k: v for k, v in _whisper_feeds(beams, 1, logits_processor=scalar(1)).items() if k != "input_ids"}
    if prompt is not None:
        feeds["decoder_input_ids"] = np.array([prompt] * 3, np.int32)
    _compare("WhisperBeamSearch", {**feeds, "max_length": scalar(14)}, ["sequences", "sequences_scores"],
             **TIMESTAMPED)


def test_whisper_forms_not_computed_are_refused():
    """The timestamp rules without a beginning timestamp in the vocabulary fail as in onnxruntime;
    cross attention scores are refused when compiled."""
    feeds = {k: v for k, v in _whisper_feeds(logits_processor=scalar(1)).items() if k != "input_ids"}
    blob = search_model("WhisperBeamSearch", feeds, ["sequences"], **WHISPER)
    with pytest.raises(Exception, match="beginning_timestamp_token_id is out of range"):
        run_as_written(blob, feeds)
    with pytest.raises(RunError, match="beginning_timestamp_token_id is out of range"):
        hal.InferenceSession(blob, target="cpu", cache_dir=False).run(None, feeds)
    feeds.pop("logits_processor")
    # an attention_mask is checked for its rank only, as onnxruntime reads no more of it; hal had run one of two
    masked = {**feeds, "attention_mask": np.ones((feeds["input_features"].shape[0], 5), np.int32)}
    blob = search_model("WhisperBeamSearch", masked, ["sequences"], **WHISPER)
    with pytest.raises(Exception, match="attention_mask.*3 dimensions"):
        run_as_written(blob, masked)
    with pytest.raises(RunError, match=r"attention_mask shall have 3 dimensions, got shape \(3, 5\)"):
        hal.InferenceSession(blob, target="cpu", cache_dir=False).run(None, masked)
    blob = search_model("WhisperBeamSearch", feeds, ["sequences", "", "", "cross_qk"], **WHISPER)
    with pytest.raises(UnsupportedOpError, match="cross_qk"):
        hal.InferenceSession(blob, target="cpu", cache_dir=False)


def test_the_lpu_says_why_it_leaves_generation_to_the_cpu():
    blob = search_model("BeamSearch", _beam_feeds(), ["sequences"], dec=DEC, eos_token_id=EOS_OFTEN, pad_token_id=PAD)
    with pytest.raises(UnsupportedOpError, match="BeamSearch runs its decoder once a token"):
        hal.InferenceSession(blob, target="lpu", cache_dir=False)


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_generates(target):
    """Every target runs the node (the LPU on the cpu beside it: the sequences' length is a run's value)."""
    _compare("BeamSearch", _beam_feeds(2, 2, attention_mask=MASK), ["sequences", "sequences_scores"], target,
             eos_token_id=EOS_OFTEN, pad_token_id=PAD)
    _compare("GreedySearch", {"input_ids": IDS, "max_length": scalar(12)}, ["sequences"], target,
             eos_token_id=EOS_RARE, pad_token_id=PAD)
    _compare("BeamSearch", _beam_feeds(2, 1, input_ids=T5_IDS), ["sequences"], target,
             **{**T5, "eos_token_id": T5_EOS_OFTEN})
    _compare("WhisperBeamSearch", {k: v for k, v in _whisper_feeds(2, 1).items() if k != "input_ids"}, ["sequences"],
             target, **WHISPER)
    _compare("Sampling", {"input_ids": IDS, "max_length": scalar(12), "seed": scalar(9)}, ["sequences"], target,
             eos_token_id=EOS_OFTEN, pad_token_id=PAD, top_p=0.8)


def test_an_empty_prompt_is_a_run_error():
    # onnxruntime's process dies on it (a segmentation fault), so only hal's side is checked
    for op, feeds in (("GreedySearch", {"input_ids": np.zeros((2, 0), np.int32), "max_length": scalar(4)}),
                      ("BeamSearch", _beam_feeds(input_ids=np.zeros((3, 0), np.int32)))):
        blob = search_model(op, feeds, ["sequences"], dec=DEC, eos_token_id=EOS_OFTEN, pad_token_id=PAD)
        with pytest.raises(RunError, match="input_ids holds no token"):
            hal.InferenceSession(blob, target="cpu", cache_dir=False).run(None, feeds)


BAD_RUNS = {
    "length_penalty_not_a_scalar": ("BeamSearch", _beam_feeds(2, 1, length_penalty=np.ones((1, 1), np.float32)),
                                    "length_penalty should be a scalar"),
    "max_length_not_past_prompt": ("GreedySearch", {"input_ids": IDS, "max_length": scalar(5)}, "max_length"),
    "max_length_too_long": ("BeamSearch", _beam_feeds(2, 1, max_length=scalar(5000)), "max_length"),
    "more_returned_than_beams": ("BeamSearch", _beam_feeds(2, 3), "num_return_sequences"),
    "no_beams": ("BeamSearch", _beam_feeds(0, 1), "num_beams"),
    "zero_penalty": ("BeamSearch", _beam_feeds(2, 1, repetition_penalty=scalar(0.0, np.float32)),
                     "repetition_penalty"),
}


@pytest.mark.parametrize("case", BAD_RUNS)
def test_inputs_onnxruntime_refuses_are_run_errors(case):
    op, feeds, word = BAD_RUNS[case]
    blob = search_model(op, feeds, ["sequences"], dec=DEC, eos_token_id=EOS_OFTEN, pad_token_id=PAD)
    with pytest.raises(Exception, match=word):
        run_as_written(blob, feeds)
    session = hal.InferenceSession(blob, target="cpu", cache_dir=False)
    with pytest.raises(RunError, match=word):
        session.run(None, feeds)


def _renamed(graph, old: str, new: str):
    """``graph`` with the value ``old`` called ``new`` everywhere."""
    g = graph.__class__()
    g.CopyFrom(graph)
    for v in (*g.input, *g.output):
        v.name = new if v.name == old else v.name
    for n in g.node:
        n.input[:] = [new if i == old else i for i in n.input]
        n.output[:] = [new if o == old else o for o in n.output]
    return g


def _symbolic_heads(graph):
    g = graph.__class__()
    g.CopyFrom(graph)
    g.input[3].type.tensor_type.shape.dim[2].dim_param = "heads"
    return g


def _widened_ids(graph):
    """``graph`` with its input_ids declared (batch, sequence): onnxruntime then feeds the whole sequence."""
    g = graph.__class__()
    g.CopyFrom(graph)
    g.input[0].type.tensor_type.shape.dim[1].dim_param = "sequence"
    return g


BAD_GRAPHS = {
    "input_name": ({"dec": _renamed(decoder(), "position_ids", "positions")}, "position_ids"),
    "output_name": ({"dec": _renamed(decoder(), "logits", "next_scores")}, "logits"),
    "heads_unknown": ({"dec": _symbolic_heads(decoder())}, "heads"),
    "t5_without_encoder": ({"model_type": 1, "decoder_start_token_id": 0}, "encoder graph"),
    "padded_vocab": ({"vocab_size": 20}, "vocab_size"),
    "t5_decoder_taking_hidden_states": (
        {**T5, "dec": _renamed(t5_decoder(), "past_key_self_0", "encoder_hidden_states")}, "encoder_hidden_states"),
    "t5_decoder_fed_sequences": ({**T5, "dec": _widened_ids(t5_decoder())}, "one token a run"),
}


@pytest.mark.parametrize("case", BAD_GRAPHS)
def test_decoders_onnxruntime_refuses_are_refused_when_compiled(case):
    attrs, word = BAD_GRAPHS[case]
    feeds = _beam_feeds()
    blob = search_model("BeamSearch", feeds, ["sequences"], **{"eos_token_id": EOS_OFTEN, "pad_token_id": PAD, **attrs})
    if case not in ("padded_vocab", "t5_decoder_fed_sequences"):  # onnxruntime takes these (the first with the
        # logits read at the attribute's stride, the second feeding the sequence so far each run)
        with pytest.raises(Exception, match="subgraph|Fail|FAIL"):
            run_as_written(blob, feeds)
    with pytest.raises(UnsupportedOpError, match=word):
        hal.InferenceSession(blob, target="cpu", fallback="error", cache_dir=False)


def test_estimates_say_which_bodies_they_leave_out(tmp_path, capsys):
    """The cost models count a generation node's own inputs and outputs, not its decoder's runs:
    ``hal estimate`` says so rather than let a few microseconds stand for a whole generation."""
    from hal.cli import main

    feeds = _beam_feeds()
    path = tmp_path / "beams.onnx"
    path.write_bytes(search_model("BeamSearch", feeds, ["sequences"], dec=DEC, eos_token_id=EOS_OFTEN,
                                  pad_token_id=PAD))
    (est,) = hal.estimate(str(path), "gpu").estimates
    assert est.status == "ok" and est.uncosted == ["BeamSearch_0 (BeamSearch)"]
    assert main(["estimate", str(path), "--target", "gpu"]) == 0
    assert "not in these figures: the bodies of BeamSearch_0 (BeamSearch)" in " ".join(capsys.readouterr().out.split())
    (plain,) = hal.estimate("zoo:tiny-cnn", "gpu").estimates
    assert plain.uncosted == []
