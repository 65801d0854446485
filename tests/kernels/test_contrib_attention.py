"""onnxruntime's fused transformer contrib ops (``hal.kernels.contrib_attention``, domain com.microsoft:
Attention, MultiHeadAttention, EmbedLayerNormalization) against onnxruntime itself, graph
optimisations off so it runs each op as written: one node at a time over seeded inputs, every mask
form its CPU kernel reads, past / present, unidirectional, attention_bias; then a small BERT built
here that onnxruntime's transformers optimizer fuses, as it fuses real ones. onnx defines none of
these ops; onnxruntime's CPU kernels are their reference."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.kernels import contrib_attention as ca
from tests.kernels._onnxruntime import run_as_written

RNG = np.random.default_rng(11)
MS = "com.microsoft"
TARGETS = ["cpu", "gpu", "lpu", "wafer"]
LOWEST = float(np.finfo(np.float32).min)
B, S, D, N = 2, 5, 16, 4  # batch, sequence, hidden, heads
H = D // N


def _f32(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _bits(*shape: int, p: float = 0.7) -> np.ndarray:
    """A seeded 0/1 int32 mask, about p of it ones."""
    return (RNG.random(shape) < p).astype(np.int32)


def _node(op: str, inputs: dict[str, np.ndarray | None], outputs: list[str], **attrs) -> onnx.NodeProto:
    names = list(inputs)
    while names and inputs[names[-1]] is None:
        names.pop()
    return helper.make_node(op, [n if inputs[n] is not None else "" for n in names], outputs, domain=MS, **attrs)


def _model(op: str, inputs: dict[str, np.ndarray | None], outputs: list[str], consts: tuple[str, ...] = (),
           **attrs) -> tuple[bytes, dict[str, np.ndarray]]:
    """A one-node model: ``inputs`` in order (None: omitted), those named in ``consts`` as initializers;
    the outputs' types and shapes are what onnxruntime gives."""
    feeds = {n: v for n, v in inputs.items() if v is not None and n not in consts}
    node = _node(op, inputs, outputs, **attrs)

    def build(out_info: list[onnx.ValueInfoProto]) -> bytes:
        graph = helper.make_graph(
            [node], "g",
            [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
             for n, v in feeds.items()],
            out_info, [numpy_helper.from_array(inputs[n], n) for n in consts if inputs.get(n) is not None])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
        return model.SerializeToString()

    probe = build([helper.make_tensor_value_info(o, TensorProto.INT32 if o == "mask_index" else TensorProto.FLOAT, None)
                   for o in outputs if o])
    wants = run_as_written(probe, feeds)
    info = [helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(w.dtype), w.shape)
            for o, w in zip([o for o in outputs if o], wants)]
    return build(info), feeds



def _close(got: np.ndarray, want: np.ndarray) -> None:
    """float32 rounding: rtol 1e-5, atol 1e-6 scaled to the output's magnitude (ints exactly)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    if want.dtype.kind in "iub":
        np.testing.assert_array_equal(got, want)
        return
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(want).max(initial=0))))


def _same(blob: bytes, feeds: dict[str, np.ndarray], target: str = "cpu") -> list[np.ndarray]:
    wants = run_as_written(blob, feeds)
    gots = hal.InferenceSession(blob, target=target, cache_dir=False).run(None, feeds)
    assert len(gots) == len(wants)
    for got, want in zip(gots, wants):
        _close(got, want)
    return gots


def _run_hal(blob: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return hal.InferenceSession(blob, cache_dir=False).run(None, feeds)


# -- Attention ----------------------------------------------------------------------------------------

X = _f32(B, S, D)
W = _f32(D, 3 * D, scale=0.3)
BIAS = _f32(3 * D)

MASKS = {
    "none": None,
    "1d-end": np.array([3, 5], np.int32),
    "1d-end-start": np.array([4, 5, 1, 0], np.int32),  # a start past an end leaves a row with nothing kept
    "1d-3b+2": np.array([2, 5, 1, 1, 3, 0, 4, 5], np.int32),  # only the first B (the ends) are read
    "2d": _bits(B, S),
    "2d-dummy": np.ones((B, 1), np.int32),  # one value per row: no mask
    "3d": _bits(B, S, S),
    "2d-all-masked": np.zeros((B, S), np.int32),
}


def _attention(mask=None, past=None, attention_bias=None, weights=W, bias=BIAS, x=X, outputs=("y",), **attrs):
    inputs = {"x": x, "w": weights, "b": bias, "mask": mask, "past": past, "attention_bias": attention_bias}
    return _model("Attention", inputs, list(outputs), consts=("w", "b"), num_heads=N, **attrs)


@pytest.mark.parametrize("unidirectional", [0, 1])
@pytest.mark.parametrize("mask", list(MASKS))
def test_attention_every_mask_form(mask: str, unidirectional: int) -> None:
    """A dropped key gets mask_filter_value (-10000 by default); a causal future float32's lowest."""
    _same(*_attention(MASKS[mask], unidirectional=unidirectional))


@pytest.mark.parametrize("mask_filter_value", [LOWEST, -1e9])
def test_attention_mask_filter_value(mask_filter_value: float) -> None:
    """The optimizer writes float32's lowest; a 3-D mask with a fully-masked row and causal on top."""
    mask = np.ones((B, S, S), np.int32)
    mask[:, 2, :] = 0
    _same(*_attention(mask, unidirectional=1, mask_filter_value=mask_filter_value))
    _same(*_attention(MASKS["1d-end-start"], mask_filter_value=mask_filter_value))


@pytest.mark.parametrize(("mask", "unidirectional"), [(None, 0), (None, 1), ("2d", 1), ("1d", 1), ("3d", 0)])
def test_attention_past_and_present(mask: str | None, unidirectional: int) -> None:
    """GPT-2's 5-D cache: present = past then this step's K and V; masks span past + sequence."""
    p = 3
    masks = {None: None, "2d": _bits(B, p + S), "1d": np.array([p + 2, p + S], np.int32), "3d": _bits(B, S, p + S)}
    _same(*_attention(masks[mask], past=_f32(2, B, N, p, H), outputs=("y", "present"), unidirectional=unidirectional))


def test_attention_one_step_decode_and_present_without_past() -> None:
    _same(*_attention(None, past=_f32(2, B, N, 4, H), x=X[:, :1].copy(), outputs=("y", "present"), unidirectional=1))
    _same(*_attention(MASKS["2d"], outputs=("y", "present")))


@pytest.mark.parametrize("shape", [(B, N, S, S), (1, N, S, S), (B, 1, S, S), (1, 1, S, S)])
def test_attention_bias_broadcasts_over_batch_and_heads(shape: tuple[int, ...]) -> None:
    _same(*_attention(MASKS["1d-end"], attention_bias=_f32(*shape)))


def test_attention_qkv_hidden_sizes() -> None:
    """V of another width (output v_hidden wide), and a pruned model whose Q/K/V are narrower than the input."""
    _same(*_attention(weights=_f32(D, 2 * D + 8, scale=0.3), bias=_f32(2 * D + 8), qkv_hidden_sizes=[D, D, 8]))
    _same(*_attention(MASKS["2d"], weights=_f32(D, 8 + 8 + 24, scale=0.3), bias=_f32(40), qkv_hidden_sizes=[8, 8, 24]))


def test_attention_scale_and_no_bias() -> None:
    _same(*_attention(MASKS["3d"], scale=0.3))
    _same(*_attention(MASKS["2d"], bias=None))


@pytest.mark.parametrize("target", TARGETS)
def test_attention_on_every_target(target: str) -> None:
    _same(*_attention(MASKS["2d"], attention_bias=_f32(1, N, S, S), unidirectional=1), target)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mask": np.ones((B, 1, S, S), np.int32)}, "4-D"),
    ({"do_rotary": 1}, "do_rotary"),
    ({"mask": np.ones((B, S + 1), np.int32)}, "none of the forms"),
    ({"mask": np.array([-1, 3], np.int32)}, "non-negative"),
    ({"weights": _f32(D, 3 * D + 1), "bias": _f32(3 * D + 1)}, "divisible by 3"),
])
def test_attention_refuses_what_it_cannot_run(kwargs: dict, match: str) -> None:
    """Each said plainly, with the node named: onnxruntime's CPU kernel refuses these too."""
    inputs = {"x": X, "w": kwargs.get("weights", W), "b": kwargs.get("bias", BIAS), "mask": kwargs.get("mask")}
    attrs = {k: v for k, v in kwargs.items() if k not in ("weights", "bias", "mask")}
    node = _node("Attention", inputs, ["y"], num_heads=N, **attrs)
    feeds = {k: v for k, v in inputs.items() if v is not None and k not in ("w", "b")}
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, S, D])],
        [numpy_helper.from_array(inputs["w"], "w"), numpy_helper.from_array(inputs["b"], "b")])
    blob = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    with pytest.raises(hal.RunError, match=match):
        _run_hal(blob.SerializeToString(), feeds)


# -- MultiHeadAttention -------------------------------------------------------------------------------

L, P = 7, 3  # key / value sequence, past
Q, K, V = _f32(B, S, D), _f32(B, L, D), _f32(B, L, D)
QKV_BIAS = _f32(3 * D)


def _mha(query=Q, key=K, value=V, bias=QKV_BIAS, key_padding_mask=None, attention_bias=None, past_key=None,
         past_value=None, outputs=("y",), **attrs):
    inputs = {"query": query, "key": key, "value": value, "bias": bias, "key_padding_mask": key_padding_mask,
              "attention_bias": attention_bias, "past_key": past_key, "past_value": past_value}
    return _model("MultiHeadAttention", inputs, list(outputs), consts=("bias",), num_heads=N, **attrs)


@pytest.mark.parametrize("unidirectional", [0, 1])
@pytest.mark.parametrize("mask", ["none", "1d-end", "1d-3b+2", "2d", "3d"])
def test_mha_masks_on_cross_attention(mask: str, unidirectional: int) -> None:
    """Keys of another length than the queries. Causal on cross-attention leaves the last query
    row whole, as onnxruntime's loop does (it only matters when the key length differs)."""
    masks = {"none": None, "1d-end": np.array([4, 7], np.int32), "2d": _bits(B, L), "3d": _bits(B, S, L),
             "1d-3b+2": np.array([3, 6, 0, 1, 2, 0, 5, 9], np.int32)}
    _same(*_mha(key_padding_mask=masks[mask], unidirectional=unidirectional))


def test_mha_without_bias_or_mask() -> None:
    """onnxruntime takes its flash-attention path here (an online softmax); the results agree to rounding."""
    _same(*_mha(bias=None))
    _same(*_mha(bias=None, query=Q, key=Q, value=Q, unidirectional=1))


@pytest.mark.parametrize("unidirectional", [0, 1])
@pytest.mark.parametrize("mask", [None, "1d", "2d-total", "3d"])
def test_mha_past_and_present(mask: str | None, unidirectional: int) -> None:
    """past_key / past_value (B, N, P, H) before this step's K and V; present_key / present_value out."""
    masks = {None: None, "1d": np.array([P + 4, P + L], np.int32), "2d-total": _bits(B, P + L),
             "3d": _bits(B, S, P + L)}
    _same(*_mha(key_padding_mask=masks[mask], past_key=_f32(B, N, P, H), past_value=_f32(B, N, P, H),
                outputs=("y", "present_key", "present_value"), unidirectional=unidirectional))


def test_mha_self_attention_with_past_is_causal_from_the_past() -> None:
    _same(*_mha(key=Q, value=_f32(B, S, D), past_key=_f32(B, N, P, H), past_value=_f32(B, N, P, H),
                key_padding_mask=_bits(B, P + S), outputs=("y", "present_key", "present_value"), unidirectional=1))


def test_mha_value_of_another_width() -> None:
    _same(*_mha(value=_f32(B, L, 8), bias=_f32(2 * D + 8), outputs=("y", "present_key", "present_value")))


@pytest.mark.parametrize("shape", [(B, N, S, L), (1, N, S, L), (B, 1, S, L), (1, 1, S, L)])
def test_mha_attention_bias_broadcasts(shape: tuple[int, ...]) -> None:
    _same(*_mha(attention_bias=_f32(*shape), key_padding_mask=_bits(B, L)))


def test_mha_key_and_value_already_in_heads() -> None:
    """A cross-attention cache: key / value (B, N, L, H) used as they are; a bias then reaches Q only."""
    k4, v4 = _f32(B, N, L, H), _f32(B, N, L, H)
    _same(*_mha(key=k4, value=v4, bias=None, outputs=("y", "present_key", "present_value")))
    _same(*_mha(key=k4, value=v4, key_padding_mask=np.array([3, 7], np.int32)))
    _same(*_mha(key=k4, value=v4))


def test_mha_qk_output_is_the_logits() -> None:
    """The fourth output: scale Q K^T + attention_bias + mask, before the softmax."""
    _same(*_mha(key_padding_mask=np.array([4, 7], np.int32), attention_bias=_f32(B, N, S, L), scale=0.3,
                outputs=("y", "present_key", "present_value", "qk")))
    _same(*_mha(outputs=("y", "", "", "qk"), mask_filter_value=-1e4, unidirectional=1))


@pytest.mark.parametrize("target", TARGETS)
def test_mha_on_every_target(target: str) -> None:
    _same(*_mha(key_padding_mask=_bits(B, P + L), attention_bias=_f32(1, N, S, P + L), past_key=_f32(B, N, P, H),
                past_value=_f32(B, N, P, H), outputs=("y", "present_key", "present_value")), target)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"query": _f32(B, S, N, 3, H), "key": None, "value": None, "bias": None}, "packed"),
    ({"key": _f32(B, L, N, 2, H), "value": None, "bias": None}, "packed"),
    ({"key": None, "value": None}, "key and value are required"),
    ({"key_padding_mask": np.array([3, 7, 0, 1], np.int32)}, "Attention's form"),
    ({"key_padding_mask": _bits(B, L), "past_key": _f32(B, N, P, H), "past_value": _f32(B, N, P, H)},
     "total_sequence_length"),
])
def test_mha_refuses_what_it_cannot_run(kwargs: dict, match: str) -> None:
    inputs = {"query": Q, "key": K, "value": V, "bias": QKV_BIAS, "key_padding_mask": None, "attention_bias": None,
              "past_key": None, "past_value": None}
    inputs.update(kwargs)
    node = _node("MultiHeadAttention", inputs, ["y"], num_heads=N)
    feeds = {k: v for k, v in inputs.items() if v is not None and k != "bias"}
    inits = [numpy_helper.from_array(inputs["bias"], "bias")] if inputs["bias"] is not None else []
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, S, D])], inits)
    blob = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    with pytest.raises(hal.RunError, match=match):
        _run_hal(blob.SerializeToString(), feeds)


# -- EmbedLayerNormalization --------------------------------------------------------------------------

VOCAB, MAXPOS, SEGMENTS, HID, SEQ = 40, 12, 2, 24, 6
WORDS = _f32(VOCAB, HID, scale=3.0) + 1  # far from zero: the mean matters
POSITIONS, SEGMENT_TABLE = _f32(MAXPOS, HID), _f32(SEGMENTS, HID)
GAMMA, BETA = _f32(HID), _f32(HID)
IDS = RNG.integers(0, VOCAB, (B, SEQ)).astype(np.int32)
SEGMENT_IDS = RNG.integers(0, SEGMENTS, (B, SEQ)).astype(np.int32)
ELN_MASK = np.array([[1, 1, 1, 0, 0, 0], [1, 2, 1, 1, 0, 1]], np.int32)  # a 2 is not counted


def _eln(segments=True, mask=ELN_MASK, position_ids=None, ids=IDS, outputs=("y", "mask_index"), **attrs):
    inputs = {"ids": ids, "segment_ids": SEGMENT_IDS if segments else None, "words": WORDS, "positions": POSITIONS,
              "segment_table": SEGMENT_TABLE if segments else None, "gamma": GAMMA, "beta": BETA, "mask": mask,
              "position_ids": position_ids}
    return _model("EmbedLayerNormalization", inputs, list(outputs),
                  consts=("words", "positions", "segment_table", "gamma", "beta"), **{"epsilon": 1e-12, **attrs})


@pytest.mark.parametrize(("segments", "mask", "position_ids"), [
    (True, ELN_MASK, None), (False, None, None),
    (True, None, RNG.integers(0, MAXPOS, (B, SEQ)).astype(np.int32)),
    (True, ELN_MASK, RNG.integers(0, MAXPOS, (1, SEQ)).astype(np.int32)),
])
def test_embed_layer_norm_bit_exact(segments: bool, mask: np.ndarray | None, position_ids: np.ndarray | None) -> None:
    """Each row summed and its squared deviations summed in order in float32, as onnxruntime's loop
    does: the same bits. mask_index counts each mask row's 1s (zeros without a mask)."""
    blob, feeds = _eln(segments, mask, position_ids, outputs=("y", "mask_index", "embedding_sum"))
    wants = run_as_written(blob, feeds)
    gots = _run_hal(blob, feeds)
    for got, want in zip(gots, wants):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert gots[1].tolist() == ([3, 4] if mask is not None else [0, 0])


@pytest.mark.parametrize("target", TARGETS)
def test_embed_layer_norm_on_every_target(target: str) -> None:
    _same(*_eln(epsilon=1e-5), target)


def test_embed_layer_norm_refuses_an_id_outside_its_table() -> None:
    blob, feeds = _eln()
    feeds["ids"] = IDS + VOCAB
    with pytest.raises(hal.RunError, match="outside the 40-row embedding table"):
        _run_hal(blob, feeds)


# -- the products a numeric policy rounds ------------------------------------------------------------

def test_round_operand_reaches_every_product() -> None:
    """Attention rounds the input and weights, Q and K, the probabilities and V; MultiHeadAttention
    the last four; rounding to float32 itself changes nothing."""
    seen: list[tuple[int, ...]] = []

    def record(x: np.ndarray) -> np.ndarray:
        seen.append(x.shape)
        return x.astype(np.float32)

    plain = ca.attention(X, W, BIAS, MASKS["2d"], num_heads=N)
    rounded = ca.attention(X, W, BIAS, MASKS["2d"], num_heads=N, _round_operand=record)
    np.testing.assert_array_equal(plain, rounded)
    assert seen == [(B, S, D), (D, 3 * D), (B, N, S, H), (B, N, S, H), (B, N, S, S), (B, N, S, H)]
    seen.clear()
    ca.multi_head_attention(Q, K, V, QKV_BIAS, num_heads=N, _round_operand=record)
    assert seen == [(B, N, S, H), (B, N, L, H), (B, N, S, L), (B, N, L, H)]


# -- a whole model, as onnxruntime's transformers optimizer fuses it ----------------------------------

def _bert(batch: int = 2, seq: int = 8, hidden: int = 32, heads: int = 4, ffn: int = 64, layers: int = 2,
          vocab: int = 50, maxpos: int = 16) -> onnx.ModelProto:
    """A small BERT in the node patterns torch's exporter writes (tests/fixtures/bert_tiny.onnx),
    with BERT's embeddings (word + token type + sliced position ids) so the optimizer finds every
    fusion: EmbedLayerNormalization, Attention, and (unless told not to) SkipLayerNormalization / BiasGelu."""
    rng = np.random.default_rng(7)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(name: str, *shape: int, scale: float = 0.2) -> str:
        return const(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    def add(op: str, inputs: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def layer_norm(x: str, name: str) -> str:
        gain = const(f"{name}.g", (1 + rng.standard_normal(hidden) * .1).astype(np.float32))
        return add("LayerNormalization", [x, gain, weight(f"{name}.b", hidden, scale=.1)], f"{name}.out", epsilon=1e-12)

    def linear(x: str, name: str, n_in: int, n_out: int) -> str:
        return add("Add", [weight(f"{name}.bias", n_out, scale=.1), add("MatMul", [x, weight(f"{name}.w", n_in, n_out)],
                                                                           f"{name}.mm")], f"{name}.out")

    # embeddings: word + token type, then position ids sliced to the input's length
    words = add("Gather", [weight("word_embeddings", vocab, hidden, scale=1.0), "input_ids"], "emb.words")
    types = add("Gather", [weight("token_type_embeddings", 2, hidden, scale=1.0), "token_type_ids"], "emb.types")
    summed = add("Add", [words, types], "emb.add0")
    length = add("Gather", [add("Shape", ["input_ids"], "emb.shape"), const("one", np.array(1, np.int64))], "emb.len")
    ends = add("Unsqueeze", [length, const("axis0", np.array([0], np.int64))], "emb.ends")
    ids = add("Slice", [const("position_ids", np.arange(maxpos, dtype=np.int64)[None]), const("zero1", np.array([0])),
                        ends, const("axis1", np.array([1])), const("step1", np.array([1]))], "emb.position_ids")
    positions = add("Gather", [weight("position_embeddings", maxpos, hidden, scale=1.0), ids], "emb.positions")
    x = layer_norm(add("Add", [summed, positions], "emb.add1"), "emb.norm")
    # the additive mask: (1 - mask) * lowest, (B, 1, 1, S)
    m = add("Unsqueeze", ["attention_mask", const("axes1", np.array([1], np.int64))], "mask.unsq1")
    m = add("Unsqueeze", [m, const("axes2", np.array([2], np.int64))], "mask.unsq2")
    m = add("Sub", [const("f1", np.array(1.0, np.float32)), add("Cast", [m], "mask.cast", to=TensorProto.FLOAT)],
            "mask.sub")
    mask = add("Mul", [m, const("lowest", np.array(LOWEST, np.float32))], "mask.add")
    split = const("split_shape", np.array([batch, seq, heads, hidden // heads], np.int64))
    merge = const("merge_shape", np.array([batch, seq, hidden], np.int64))
    for i in range(layers):
        p = f"l{i}"
        q = add("Transpose", [add("Reshape", [linear(x, f"{p}.q", hidden, hidden), split], f"{p}.q.r")], f"{p}.q.t",
                perm=[0, 2, 1, 3])
        k = add("Transpose", [add("Reshape", [linear(x, f"{p}.k", hidden, hidden), split], f"{p}.k.r")], f"{p}.k.t",
                perm=[0, 2, 3, 1])
        v = add("Transpose", [add("Reshape", [linear(x, f"{p}.v", hidden, hidden), split], f"{p}.v.r")], f"{p}.v.t",
                perm=[0, 2, 1, 3])
        scores = add("Div", [add("MatMul", [q, k], f"{p}.qk"),
                             const(f"{p}.sqrt", np.array(np.sqrt(hidden // heads), np.float32))], f"{p}.scaled")
        probs = add("Softmax", [add("Add", [scores, mask], f"{p}.masked")], f"{p}.probs", axis=-1)
        ctx = add("Transpose", [add("MatMul", [probs, v], f"{p}.ctx")], f"{p}.ctx.t", perm=[0, 2, 1, 3])
        ctx = add("Reshape", [ctx, merge], f"{p}.ctx.r")
        x = layer_norm(add("Add", [x, linear(ctx, f"{p}.o", hidden, hidden)], f"{p}.res1"), f"{p}.norm1")
        h = linear(x, f"{p}.ffn1", hidden, ffn)
        erf = add("Erf", [add("Div", [h, const(f"{p}.r2", np.array(np.sqrt(2), np.float32))], f"{p}.d")], f"{p}.erf")
        gelu = add("Mul", [add("Mul", [h, add("Add", [erf, const(f"{p}.f1", np.array(1, np.float32))], f"{p}.e1")],
                               f"{p}.g0"), const(f"{p}.half", np.array(0.5, np.float32))], f"{p}.gelu")
        x = layer_norm(add("Add", [x, linear(gelu, f"{p}.ffn2", ffn, hidden)], f"{p}.res2"), f"{p}.norm2")
    graph = helper.make_graph(
        nodes, "bert",
        [helper.make_tensor_value_info(n, TensorProto.INT64, [batch, seq])
         for n in ("input_ids", "token_type_ids", "attention_mask")],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [batch, seq, hidden])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _bert_feeds(batch: int = 2, seq: int = 8, vocab: int = 50) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(8)
    mask = np.ones((batch, seq), np.int64)
    mask[1, seq - 3:] = 0  # the second row right-padded
    return {"input_ids": rng.integers(0, vocab, (batch, seq)).astype(np.int64),
            "token_type_ids": (np.arange(seq) >= seq // 2).astype(np.int64)[None].repeat(batch, 0),
            "attention_mask": mask}


#: the fusions into other helpers' ops (SkipLayerNormalization, Gelu, BiasGelu) off
UNFUSED = {"enable_skip_layer_norm": False, "enable_bias_skip_layer_norm": False, "enable_bias_gelu": False,
           "enable_gelu": False}


def _optimised(tmp_path, name: str, **options) -> tuple[bytes, set[str]]:
    """The small BERT through optimize_model(model_type="bert"), saved and read back."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    onnx.save(_bert(), tmp_path / "bert.onnx")
    fusion = FusionOptions("bert")
    for key, value in options.items():
        setattr(fusion, key, value)
    optimised = optimize_model(str(tmp_path / "bert.onnx"), model_type="bert", num_heads=4, hidden_size=32,
                               optimization_options=fusion, opt_level=0)
    optimised.save_model_to_file(str(tmp_path / name))
    blob = (tmp_path / name).read_bytes()
    return blob, {n.op_type for n in onnx.load_from_string(blob).graph.node if n.domain == MS}


def test_the_helper_built_bert_matches_its_unfused_self() -> None:
    """The graph the fusion tests start from runs the same in hal and onnxruntime before fusing."""
    _same(_bert().SerializeToString(), _bert_feeds())


@pytest.mark.parametrize("target", TARGETS)
def test_an_optimizer_fused_bert_runs_as_onnxruntime_runs_it(tmp_path, target: str) -> None:
    """Attention and EmbedLayerNormalization fused (the skip-layer-norm and bias-gelu fusions off, so
    nothing else from com.microsoft is left); EmbedLayerNormalization's mask_index feeds each Attention."""
    blob, ops = _optimised(tmp_path, "fused.onnx", **UNFUSED)
    assert ops == {"Attention", "EmbedLayerNormalization"}
    _same(blob, _bert_feeds(), target)


def test_an_optimizer_fused_bert_with_raw_masks_or_multi_head_attention(tmp_path) -> None:
    """The optimizer's other forms: the raw 2-D mask to Attention, and MultiHeadAttention (its
    --use_multi_head_attention: the Q/K/V MatMuls stay, their biases fused) instead."""
    from onnxruntime.transformers.fusion_options import AttentionMaskFormat

    raw, ops = _optimised(tmp_path, "raw.onnx", attention_mask_format=AttentionMaskFormat.AttentionMask, **UNFUSED)
    assert "Attention" in ops
    _same(raw, _bert_feeds())
    mha, ops = _optimised(tmp_path, "mha.onnx", use_multi_head_attention=True, **UNFUSED)
    assert "MultiHeadAttention" in ops
    _same(mha, _bert_feeds())


def test_an_optimizer_fully_fused_bert(tmp_path) -> None:
    """The default fusions add SkipLayerNormalization and BiasGelu (hal.kernels.contrib_fused)."""
    blob, ops = _optimised(tmp_path, "full.onnx")
    assert {"Attention", "EmbedLayerNormalization", "SkipLayerNormalization", "BiasGelu"} <= ops
    missing = [op for op in sorted(ops) if hal.kernels.lookup(op, MS) is None]
    if missing:
        pytest.skip(f"no kernel yet for {', '.join(missing)}")
    _same(blob, _bert_feeds())
