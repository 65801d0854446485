"""onnxruntime's GroupQueryAttention (``hal.kernels.contrib_gqa``; domain com.microsoft) against
onnxruntime itself, graph optimisations off: prompts, decode over ragged pasts, packed QKV, rotary,
windows, softcap, sinks, biases, position ids, output_qk, quantised KV caches and chunks, on the cpu
target and on every target. onnxruntime's CPU kernel is the reference: products and softmaxes to
float32 rounding."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.kernels.contrib_gqa import group_query_attention
from tests.kernels._genai_models import MS, TARGETS, _close, _hal, _info, _model
from tests.kernels._onnxruntime import run_as_written

RNG = np.random.default_rng(12)


def _gqa(batch: int = 2, seq: int = 5, heads: int = 4, kv_heads: int = 2, head: int = 16, past: int = 0,
         seqlens: list[int] | None = None, total: int | None = None, packed: bool = False, rotary: int = 0,
         sink: bool = False, bias: bool = False, dtype: type = np.float32, positions: list | None = None,
         qk: bool = False, shapes: bool = True, chunk: list[int] | None = None, **attrs) -> tuple[bytes, dict]:
    """A GroupQueryAttention node and its feeds; ``qk`` wires output_qk, ``shapes=False`` declares the
    outputs without shapes (as onnxruntime's GenAI builder writes symbolic ones), ``chunk`` feeds
    query_seqlens (and an empty past where there is none)."""
    def f(*shape: int) -> np.ndarray:
        return RNG.standard_normal(shape).astype(dtype)

    if packed:
        feeds = {"q": f(batch, seq, (heads + 2 * kv_heads) * head)}
        names = ["q", "", ""]
    else:
        feeds = {"q": f(batch, seq, heads * head), "k": f(batch, seq, kv_heads * head),
                 "v": f(batch, seq, kv_heads * head)}
        names = ["q", "k", "v"]
    if past or chunk is not None:
        feeds.update(pk=f(batch, kv_heads, past, head), pv=f(batch, kv_heads, past, head))
        names += ["pk", "pv"]
    else:
        names += ["", ""]
    seqlens = [past + seq - 1] * batch if seqlens is None else seqlens
    total = max(seqlens) + 1 if total is None else total
    feeds.update(sl=np.array(seqlens, np.int32), ts=np.array(total, np.int32))
    names += ["sl", "ts", "", "", "", "", "", "", "", "", "", ""]
    inits = []
    if rotary:
        inits += [numpy_helper.from_array(RNG.uniform(-1, 1, (64, rotary // 2)).astype(dtype), n) for n in "cs"]
        names[7:9] = ["c", "s"]
    if positions is not None:
        feeds["pos"] = np.array(positions, np.int64)
        names[9] = "pos"
    if bias:
        feeds["ab"] = f(batch, 1, seq, total)
        names[10] = "ab"
    if sink:
        inits.append(numpy_helper.from_array(RNG.standard_normal(heads).astype(dtype), "hs"))
        names[11] = "hs"
    if chunk is not None:
        feeds["qs"] = np.array(chunk, np.int32)
        names[16] = "qs"
    while not names[-1]:
        names.pop()
    cache = [batch, kv_heads, max(total, past), head]
    outputs = [("y", dtype, [batch, seq, heads * head]), ("pk_out", dtype, cache), ("pv_out", dtype, cache)]
    if qk:
        outputs.append(("qk", dtype, [batch, heads, seq, total]))
    node = helper.make_node("GroupQueryAttention", names, [o[0] for o in outputs], domain=MS, num_heads=heads,
                            kv_num_heads=kv_heads, do_rotary=int(bool(rotary)), **attrs)
    return _model([node], feeds, inits, [(n, t, s if shapes else None) for n, t, s in outputs]), feeds


GQA_CASES = {
    "prompt": {}, "packed": {"packed": True}, "rotary": {"rotary": 16},
    "rotary-interleaved-partial": {"rotary": 16, "head": 32, "rotary_interleaved": 1},
    "local-window": {"local_window_size": 2}, "softcap": {"softcap": 2.0}, "smooth-softmax": {"smooth_softmax": 1},
    "head-sink": {"sink": True}, "bias-softcap": {"bias": True, "softcap": 1.0}, "scale": {"scale": 0.3},
    "decode": {"seq": 1, "past": 6},
    "decode-ragged": {"seq": 1, "past": 6, "seqlens": [6, 3], "rotary": 16},
    "decode-shared-buffer": {"seq": 1, "past": 10, "seqlens": [6, 3], "total": 7, "rotary": 16},
    "decode-window": {"seq": 1, "past": 6, "seqlens": [6, 3], "local_window_size": 3},
    "decode-packed": {"seq": 1, "past": 6, "seqlens": [6, 3], "packed": True, "rotary": 16},
    "chunk-after-past": {"batch": 1, "seq": 3, "past": 4, "rotary": 16},
}


@pytest.mark.parametrize("case", GQA_CASES)
def test_group_query_attention(case: str) -> None:
    """A first prompt (its length the total), one-token decode over a past of ragged lengths (each
    sequence's seqlens_k), a buffer longer than the total, and a chunk after a past."""
    _close(*_gqa(**GQA_CASES[case]))


@pytest.mark.parametrize("rotary", [0, 16])
def test_group_query_attention_right_padded_prompt(rotary: int) -> None:
    """A shorter sequence of a first prompt, and its padding rows, which attend only the sequence's
    own keys (onnxruntime's CPU kernel caps each row at seqlens_k + 1; hal had let them see the
    padding), and the whole caches, as onnxruntime's."""
    _close(*_gqa(seqlens=[4, 2], rotary=rotary))


def test_group_query_attention_float16() -> None:
    _close(*_gqa(rotary=16, dtype=np.float16), rel=1e-3)
    _close(*_gqa(seq=1, past=6, dtype=np.float16), rel=1e-3)


def test_group_query_attention_rounds_each_product_operand() -> None:
    """A precision policy's ``_round_operand`` sees the scaled Q and K, the probabilities and V."""
    _, feeds = _gqa(batch=1, seq=3)
    seen = []

    def record(x: np.ndarray) -> np.ndarray:
        seen.append(x.shape)
        return x

    group_query_attention(feeds["q"], feeds["k"], feeds["v"], None, None, feeds["sl"], feeds["ts"], num_heads=4,
                          kv_num_heads=2, _round_operand=record)
    assert seen == [(1, 4, 3, 16), (1, 2, 3, 16), (1, 4, 3, 3), (1, 2, 3, 16)]


@pytest.mark.parametrize(("kw", "positions"), [
    ({}, [[2, 3, 4, 5, 6], [2, 3, 4, 5, 6]]),
    ({}, [[3, 0, 7, 7, 1], [0, 1, 2, 3, 4]]),  # a first prompt counts on from the first element alone
    ({"seq": 1, "past": 6, "seqlens": [6, 3]}, [[9], [1]]),  # a decode step takes each row's own
])
@pytest.mark.parametrize("rotary", [0, 16])
def test_group_query_attention_position_ids(kw: dict, positions: list, rotary: int) -> None:
    """Explicit positions, which only rotary reads (hal had refused the input), as onnxruntime's."""
    _close(*_gqa(rotary=rotary, positions=positions, **kw))


GQA_FORMS = {"prompt": {}, "right-padded": {"seqlens": [4, 2], "rotary": 16},
             **{k: GQA_CASES[k] for k in ("decode-ragged", "decode-shared-buffer", "chunk-after-past")},
             "packed-sink": {"packed": True, "sink": True, "seqlens": [4, 2]}}


@pytest.mark.parametrize("form", GQA_FORMS)
def test_group_query_attention_bidirectional(form: str) -> None:
    """causal=0: every query row sees its sequence's keys, a padding row too (hal had refused it)."""
    _close(*_gqa(causal=0, **GQA_FORMS[form]))


@pytest.mark.parametrize("form", [*GQA_FORMS, "softcap-bias", "padded-window"])
@pytest.mark.parametrize("qk_output", [1, 2])
def test_group_query_attention_qk_output(form: str, qk_output: int) -> None:
    """output_qk, (B, N, S, total_sequence_length): the scores after softcap and bias (1) or the
    probabilities (2), 0 at the keys a row does not see. A padding row of a windowed prompt sits at
    its sequence's last token there, as onnxruntime's unfused path has it."""
    kw = {**GQA_FORMS, "softcap-bias": {"softcap": 1.5, "bias": True, "seqlens": [4, 2]},
          "padded-window": {"seqlens": [4, 2], "local_window_size": 2}}[form]
    _close(*_gqa(qk=True, qk_output=qk_output, **kw))
    _close(*_gqa(qk=True, qk_output=qk_output, causal=0, **{k: v for k, v in kw.items() if k != "local_window_size"}))


@pytest.mark.parametrize(("window", "capacity", "batch", "steps", "kw"), [
    (4, 4, 2, [5, 1, 1, 1], {}),  # a prompt longer than the cache; then one position evicted a step
    (4, 6, 2, [3, 1, 1, 1, 1, 1], {"rotary": 16}),  # three rows of slack: evicted three at a time
    (3, 8, 1, [10, 2, 4, 1, 7], {"softcap": 2.0}),  # chunks after a past, some longer than the window
    (4, 5, 2, [4, 1, 1, 1], {"bias": True, "sink": True}),  # the bias read by absolute key position
    (2, 4, 2, [3, 1, 1], {"packed": True, "rotary": 16, "smooth_softmax": 1}),
])
@pytest.mark.parametrize("target", TARGETS)
def test_group_query_attention_windowed_cache(window: int, capacity: int, batch: int, steps: list, kw: dict,
                                              target: str) -> None:
    """sliding_window_cache=1 (onnxruntime's GenAI builder writes it for gemma2's local layers): the
    past holds a sequence's latest positions from row 0, L(T) of them (ContribOperators.md), the
    present too; rows past L(T) are unspecified, and onnxruntime leaves them as its scratch had them."""
    def resident(t: int) -> int:
        g = capacity - window + 1
        return t if t <= capacity else t - g * math.ceil((t - capacity) / g)

    past, tokens = None, 0
    for seq in steps:
        tokens += seq
        blob, feeds = _gqa(batch=batch, seq=seq, past=capacity, seqlens=[tokens - 1] * batch, total=tokens,
                           sliding_window_cache=1, local_window_size=window, shapes=False, **kw)
        if past is not None:
            feeds["pk"], feeds["pv"] = past
        want, got = run_as_written(blob, feeds), _hal(blob, feeds, target)
        np.testing.assert_allclose(got[0], want[0], rtol=2e-6, atol=2e-6 * float(np.abs(want[0]).max()))
        for ours, theirs in zip(got[1:], want[1:]):
            assert ours.shape == theirs.shape == (batch, 2, capacity, 16)
            np.testing.assert_allclose(ours[:, :, :resident(tokens)], theirs[:, :, :resident(tokens)], rtol=1e-6,
                                       atol=1e-6)
        past = want[1], want[2]


@pytest.mark.parametrize(("chunk", "kw"), [
    ([3, 2], {"seq": 3, "seqlens": [2, 1], "total": 3, "rotary": 16}),  # a right-padded prompt
    ([3, 1], {"seq": 3, "past": 5, "seqlens": [6, 4], "total": 8}),  # chunks of a batch after pasts
    ([0, 2], {"seq": 2, "past": 5, "seqlens": [4, 5], "total": 7}),  # an idle entry
    ([2, 3], {"seq": 3, "past": 6, "seqlens": [8, 5], "total": 9, "sliding_window_cache": 1, "local_window_size": 4}),
    ([3, 2], {"seq": 3, "past": 6, "seqlens": [8, 7], "total": 9, "softcap": 2.0, "local_window_size": 3}),
])
@pytest.mark.parametrize("target", TARGETS)
def test_group_query_attention_padded_chunks(chunk: list, kw: dict, target: str) -> None:
    """query_seqlens (chunked prefill at one query shape): only each entry's first query_seqlens rows
    are tokens, appended after seqlens_k + 1 - query_seqlens cached ones, a batch of chunks at once
    (hal had refused the input). Padding rows' outputs and the cache past its tokens are unspecified.
    The LPU sizes the node with every row a token standing in for the fed counts."""
    blob, feeds = _gqa(chunk=chunk, shapes=False, **kw)
    want, got = run_as_written(blob, feeds), _hal(blob, feeds, target)
    windowed = kw.get("sliding_window_cache")
    for b, (rows, tokens) in enumerate(zip(chunk, feeds["sl"] + 1)):
        np.testing.assert_allclose(got[0][b, :rows], want[0][b, :rows], rtol=1e-6, atol=1e-6)
        held = min(tokens, 6) if windowed else tokens  # a window of 6 holds 6 after 8 tokens
        for ours, theirs in zip(got[1:], want[1:]):
            np.testing.assert_allclose(ours[b, :, :held], theirs[b, :, :held], rtol=1e-6, atol=1e-6)


def _quantised_gqa(kind: str, bits: int, head: int = 16, flat: bool = False, **kw) -> tuple[bytes, dict]:
    """``_gqa`` with int8 (or 4-bit packed uint8) caches of random codes, one scale (PER_TENSOR) or one
    per KV head and feature (PER_CHANNEL; ``flat``: as one vector, as the GenAI builder writes them),
    and an empty past where the prompt has none."""
    blob, feeds = _gqa(head=head, shapes=False, k_quant_type=kind, v_quant_type=kind, kv_cache_bit_width=bits, **kw)
    model = onnx.load_from_string(blob)
    node, (batch, kv_heads) = model.graph.node[0], (feeds["q"].shape[0], 2)
    node.input[3:5] = ["pk", "pv"]
    node.input.extend([""] * (12 - len(node.input)) + ["ks", "vs"])
    capacity = feeds["pk"].shape[2] if "pk" in feeds else 0
    code = np.int8 if bits == 8 else np.uint8
    for name in ("pk", "pv"):
        low = -128 if bits == 8 else 0
        feeds[name] = RNG.integers(low, low + 256, (batch, kv_heads, capacity, head * bits // 8)).astype(code)
    for name in ("ks", "vs"):
        shape = (1,) if kind == "PER_TENSOR" else (kv_heads * head,) if flat else (1, kv_heads, 1, head)
        feeds[name] = RNG.uniform(0.02, 0.06, shape).astype(np.float32)
    del model.graph.input[:]
    model.graph.input.extend(_info(n, v) for n, v in feeds.items())
    for out in model.graph.output[1:3]:
        out.type.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(np.dtype(code))
    return model.SerializeToString(), feeds


@pytest.mark.parametrize(("form", "kw"), [
    ("decode-ragged", {"seq": 1, "past": 5, "seqlens": [5, 3]}),
    ("prompt-empty-past", {"seq": 4, "seqlens": [3, 3]}),
    ("chunk-after-past", {"batch": 1, "seq": 3, "past": 4, "rotary": 16}),
    ("shared-buffer", {"seq": 1, "past": 10, "seqlens": [6, 3], "total": 7}),
    ("windowed", {"seq": 1, "past": 6, "seqlens": [8, 5], "total": 9, "sliding_window_cache": 1,
                  "local_window_size": 4}),
])
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("kind", ["PER_TENSOR", "PER_CHANNEL"])
def test_group_query_attention_quantised_cache(kind: str, bits: int, form: str, kw: dict) -> None:
    """onnxruntime's int8 and int4 KV caches: the past read as codes x scale, the new tokens' codes
    x / scale rounded half to even (4-bit: + 8, two to a byte, low nibble first), attention over what
    the codes hold; the present's codes as onnxruntime's wherever it holds tokens."""
    blob, feeds = _quantised_gqa(kind, bits, head=32, **kw)
    want, got = run_as_written(blob, feeds), _hal(blob, feeds)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6 * float(np.abs(want[0]).max()))
    held = [min(n, 6) if form == "windowed" else n for n in feeds["sl"] + 1]  # a window of 6 holds 6 after 9
    for ours, theirs in zip(got[1:], want[1:]):
        assert ours.dtype == theirs.dtype == feeds["pk"].dtype and ours.shape == theirs.shape
        for b, n in enumerate(held):
            np.testing.assert_array_equal(ours[b, :, :n], theirs[b, :, :n])


@pytest.mark.parametrize(("attrs", "match"), [
    ({"causal": 0, "local_window_size": 2}, "local_window_size must be -1 when causal is 0"),
    ({"qk": True}, "output_qk is wired but qk_output is 0"),
    ({"causal": 2}, "causal and sliding_window_cache must be 0 or 1"),
    ({"sliding_window_cache": 1}, "sliding_window_cache=1 needs a local_window_size"),
    ({"sliding_window_cache": 1, "local_window_size": 2, "qk": True, "qk_output": 1}, "and no output_qk"),
    ({"k_quant_type": "PER_TENSOR"}, "onnxruntime takes one for both"),
    ({"k_quant_type": "PER_TENSOR", "v_quant_type": "PER_TENSOR"}, "needs kv_cache_bit_width 4 or 8"),
    ({"k_quant_type": "PER_BLOCK", "v_quant_type": "PER_BLOCK", "kv_cache_bit_width": 8}, "computes NONE, PER_TENSOR"),
])
def test_group_query_attention_refuses_what_it_does_not_compute(attrs: dict, match: str) -> None:
    # when the session is compiled, so fallback can see the node (it had been a RunError mid-run)
    blob, feeds = _gqa(**attrs)
    with pytest.raises(hal.UnsupportedOpError, match=match):
        _hal(blob, feeds)
    blob, feeds = _gqa(seq=1, past=4, seqlens=[6, 3], total=7)  # 6 tokens said cached, the past holds 4
    with pytest.raises(hal.RunError, match="past holds 4"):
        _hal(blob, feeds)


def test_group_query_attention_refuses_a_float8_cache_when_compiled() -> None:
    """A float8 KV cache: onnxruntime's CPU kernel has no registration for it and refuses the session;
    hal refuses the node when it compiles (the registry's ``refuses`` reads the cache's declared
    type), where the kernel had raised only once a run read the cache."""
    f8, f32 = TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT
    node = helper.make_node("GroupQueryAttention", ["q", "k", "v", "pk", "pv", "sl", "tl", "", "", "", "", "", "ks",
                                                    "vs"], ["o", "ok", "ov"], domain=MS, num_heads=2, kv_num_heads=1,
                            k_quant_type="PER_TENSOR", v_quant_type="PER_TENSOR", kv_cache_bit_width=8)
    ins = [helper.make_tensor_value_info(n, t, s) for n, t, s in (
        ("q", f32, [1, 1, 16]), ("k", f32, [1, 1, 8]), ("v", f32, [1, 1, 8]), ("pk", f8, [1, 1, 4, 8]),
        ("pv", f8, [1, 1, 4, 8]), ("sl", TensorProto.INT32, [1]), ("tl", TensorProto.INT32, []))]
    outs = [helper.make_tensor_value_info(n, t, None) for n, t in (("o", f32), ("ok", f8), ("ov", f8))]
    scales = [numpy_helper.from_array(np.array([0.1], np.float32), n) for n in ("ks", "vs")]
    blob = helper.make_model(helper.make_graph([node], "gqa", ins, outs, scales), opset_imports=[
        helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)]).SerializeToString()
    with pytest.raises(Exception, match="NOT_IMPLEMENTED"):
        run_as_written(blob, {})
    for target in TARGETS:
        with pytest.raises(hal.UnsupportedOpError, match="float8_e4m3fn KV cache"):
            hal.InferenceSession(blob, target=target, fallback="allow", cache_dir=False)


@pytest.mark.parametrize("target", TARGETS)
def test_group_query_attention_on_every_target(target: str) -> None:
    _close(*_gqa(seq=1, past=6, seqlens=[6, 3], rotary=16), target=target)
    _close(*_quantised_gqa("PER_CHANNEL", 4, flat=True, seq=1, past=5, seqlens=[5, 3]), target=target)


@pytest.mark.parametrize("form", ["right-padded", "decode-ragged", "chunk-after-past"])
@pytest.mark.parametrize("target", TARGETS)
def test_group_query_attention_of_undeclared_shapes(form: str, target: str) -> None:
    """Outputs declared without shapes, as onnxruntime's GenAI builder writes them: the LPU sizes them
    once the host has read total_sequence_length (it had refused a prompt, its zeros seqlens_k putting
    the prompt's tokens before a past)."""
    _close(*_gqa(qk=True, qk_output=2, shapes=False, **GQA_FORMS[form]), target=target)
