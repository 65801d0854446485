"""QEmbedLayerNormalization, QLinearWhere and MatMulInteger16 (``hal.kernels.contrib_quant_more``)
against onnxruntime itself, graph optimisations off so it runs each op as written: one node at a
time over seeded codes and scales, then the models its quantizer
writes them into (a BERT its transformers optimizer fused, then quantize_dynamic with its default
op types; a CNN with Where between quantized convolutions through quantize_static in the QOperator
format), on every target. onnx defines none of these ops; onnxruntime's CPU kernels are their
reference."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from tests.kernels._onnxruntime import calibration_reader, run_as_written
from tests.kernels.test_contrib_attention import UNFUSED, _bert_feeds, _optimised
from tests.kernels.test_contrib_quant_ops import _one_node, _refused, _same

RNG = np.random.default_rng(23)
MS = "com.microsoft"
TARGETS = ["cpu", "gpu", "lpu", "wafer"]
TYPES = [np.uint8, np.int8]


def _codes(dtype: type, *shape: int) -> np.ndarray:
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max + 1, shape).astype(dtype)


def _zero(dtype: type, spread: int = 20) -> np.ndarray:
    return np.array(RNG.integers(-spread, spread) + (128 if dtype == np.uint8 else 0), dtype=dtype)


def _model(nodes: list[onnx.NodeProto], feeds: dict[str, np.ndarray], consts: dict[str, np.ndarray],
           outputs: dict[str, tuple[int, list[int] | None]], opset: int = 17) -> bytes:
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for n, v in feeds.items()],
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in outputs.items()],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                   helper.make_opsetid(MS, 1)]).SerializeToString()


def _bitwise(blob: bytes, feeds: dict[str, np.ndarray], target: str = "cpu") -> list[np.ndarray]:
    """hal's outputs equal onnxruntime's bit for bit (floats included)."""
    wants = run_as_written(blob, feeds)
    gots = hal.InferenceSession(blob, target=target, cache_dir=False).run(None, feeds)
    assert len(gots) == len(wants)
    for got, want in zip(gots, wants):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    return gots


def _any_shape(blob: bytes) -> bytes:
    """The model with every graph input's and output's dims left open, for feeds of other shapes."""
    model = onnx.load_from_string(blob)
    for value in [*model.graph.input, *model.graph.output]:
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            dim.dim_param = f"{value.name}_{i}"
    return model.SerializeToString()


# -- QEmbedLayerNormalization -------------------------------------------------------------------------

B, S, HID, VOCAB, MAXPOS = 2, 6, 16, 20, 8
IDS = RNG.integers(0, VOCAB, (B, S)).astype(np.int32)
SEGS = (np.arange(S) >= S // 2).astype(np.int32)[None].repeat(B, 0)
MASK = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 2, 1, 1, 1]], np.int32)  # a 2 does not count


def _qeln(dtype: type = np.uint8, segments: bool = True, mask: np.ndarray | None = MASK,
          **attrs) -> tuple[bytes, dict[str, np.ndarray]]:
    """A one-node model: the tables, scales and zero points as initializers (the segment's left out
    without segments); ids, segment ids and mask fed."""
    tables = {"word": (VOCAB, HID), "position": (MAXPOS, HID), "segment": (2, HID), "gamma": (HID,), "beta": (HID,)}
    codes = {f"{n}_q": _codes(dtype, *shape) for n, shape in tables.items()}
    scales = {f"{n}_s": np.float32(RNG.uniform(0.005, 0.05)) for n in tables}
    zeros = {f"{n}_z": _zero(dtype) for n in tables}
    if not segments:
        for d in (codes, scales, zeros):
            del d[next(k for k in d if k.startswith("segment"))]
    names = ("word", "position", "segment", "gamma", "beta")
    inputs = {"ids": IDS, "segs": SEGS if segments else None, "word_q": codes["word_q"],
              "position_q": codes["position_q"], "segment_q": codes.get("segment_q"), "gamma_q": codes["gamma_q"],
              "beta_q": codes["beta_q"], "mask": mask,
              **{f"{n}_s": scales.get(f"{n}_s") for n in names}, **{f"{n}_z": zeros.get(f"{n}_z") for n in names}}
    consts = tuple(n for n, v in inputs.items() if v is not None and n not in ("ids", "segs", "mask"))
    return _one_node("QEmbedLayerNormalization", inputs, ["y", "mask_index"], consts=consts, **attrs)


@pytest.mark.parametrize("dtype", TYPES)
@pytest.mark.parametrize(("segments", "mask"), [(True, MASK), (False, MASK), (True, None)])
def test_qembed_layer_norm_as_onnxruntime(dtype: type, segments: bool, mask: np.ndarray | None) -> None:
    """Rows dequantized, summed word + position (+ segment), normalised in order in float32, then the
    dequantized gamma and beta; mask_index counts each row's 1s (zeros without a mask). onnxruntime's
    loop adds in the same order: bit for bit."""
    y, mask_index = _bitwise(*_qeln(dtype, segments, mask))
    assert y.shape == (B, S, HID) and mask_index.shape == (B,) and mask_index.dtype == np.int32


def test_qembed_layer_norm_epsilon() -> None:
    """(mask_index is a required output: the schema takes two.)"""
    _bitwise(*_qeln(np.int8, epsilon=1e-3))


@pytest.mark.parametrize("target", TARGETS)
def test_qembed_layer_norm_on_every_target(target: str) -> None:
    _bitwise(*_qeln(), target=target)


def test_qembed_layer_norm_refuses_bad_input() -> None:
    """An id past its table (onnxruntime: "input index out of range"), a sequence longer than the
    position table, and tables of mixed 8-bit types."""
    blob, feeds = _qeln()
    _refused(blob, {**feeds, "ids": np.full((B, S), VOCAB, np.int32)}, "word id 20 is outside the 20-row")
    long_ids = RNG.integers(0, VOCAB, (B, MAXPOS + 1)).astype(np.int32)
    _refused(_any_shape(_qeln(segments=False, mask=None)[0]), {"ids": long_ids}, "position id 8 is outside the 8-row")
    model = onnx.load_from_string(_qeln()[0])
    beta = next(i for i in model.graph.initializer if i.name == "beta_q")
    beta.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(beta).view(np.int8), "beta_q"))
    _refused(model.SerializeToString(), _qeln()[1], "all be uint8 or all int8, got .*beta int8")


# -- a fused BERT, quantized by quantize_dynamic with its default op types -----------------------------

@pytest.fixture(scope="module")
def quantized_bert(tmp_path_factory) -> bytes:
    """The small BERT of test_contrib_attention fused by onnxruntime's transformers optimizer into
    EmbedLayerNormalization and Attention, then quantize_dynamic with its defaults (and 7-bit weights): the embedding
    becomes a QEmbedLayerNormalization (uint8 tables), each Attention a QAttention."""
    quantization = pytest.importorskip("onnxruntime.quantization")
    folder = tmp_path_factory.mktemp("qeln")
    _optimised(folder, "fused.onnx", **UNFUSED)
    # 7-bit weights (reduce_range): past them onnxruntime's uint8 x int8 sums saturate on an x86 CPU
    # without VNNI (int16 pairs), where hal's are exact (README: where onnx and onnxruntime part)
    quantization.quantize_dynamic(folder / "fused.onnx", folder / "q.onnx", reduce_range=True,
                                  extra_options={"DefaultTensorType": TensorProto.FLOAT})
    blob = (folder / "q.onnx").read_bytes()
    ops = [n.op_type for n in onnx.load_from_string(blob).graph.node if n.domain == MS]
    assert ops.count("QEmbedLayerNormalization") == 1 and ops.count("QAttention") == 2
    return blob


@pytest.mark.parametrize("target", TARGETS)
def test_the_quantized_bert_runs_as_onnxruntime_runs_it(quantized_bert: bytes, target: str) -> None:
    """End to end to float32 rounding (the attention's softmax and layer norms are not bit for bit;
    the embedding is, below)."""
    _same(quantized_bert, _bert_feeds(), target)


def test_the_quantized_berts_embedding_node_by_node(quantized_bert: bytes) -> None:
    """The QEmbedLayerNormalization alone, on the quantizer's own tables: bit for bit."""
    model = onnx.load_from_string(quantized_bert)
    node = next(n for n in model.graph.node if n.op_type == "QEmbedLayerNormalization")
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    feeds = {k: v.astype(np.int32) for k, v in _bert_feeds().items()}
    inputs = {n: inits[n] if n in inits else feeds[n.removesuffix("_int32")] for n in node.input}  # after a Cast
    _bitwise(*_one_node(node.op_type, inputs, list(node.output), consts=tuple(n for n in inputs if n in inits),
                        epsilon=helper.get_attribute_value(node.attribute[0])))


# -- QLinearWhere -------------------------------------------------------------------------------------

def _where(dtype: type, cond: np.ndarray, x: np.ndarray, y: np.ndarray, same_x: bool = False,
           same_y: bool = False) -> tuple[bytes, dict[str, np.ndarray]]:
    consts = {"xs": np.float32(0.02), "xz": _zero(dtype), "ys": np.float32(0.05), "yz": _zero(dtype, 60),
              "zs": np.float32(0.03), "zz": _zero(dtype)}
    if same_x:
        consts.update(xs=consts["zs"], xz=consts["zz"])
    if same_y:
        consts.update(ys=consts["zs"], yz=consts["zz"])
    inputs = {"c": cond, "x": x, "xs": consts["xs"], "xz": consts["xz"], "y": y, "ys": consts["ys"],
              "yz": consts["yz"], "zs": consts["zs"], "zz": consts["zz"]}
    return _one_node("QLinearWhere", inputs, ["z"], consts=tuple(consts))


@pytest.mark.parametrize("dtype", TYPES)
@pytest.mark.parametrize(("c_shape", "x_shape", "y_shape"), [
    ((2, 3, 8), (2, 3, 8), (2, 3, 8)), ((3, 1), (1, 8), (3, 8)), ((8,), (2, 3, 1), ()), ((), (4, 8), (8,))])
def test_where_requantises_each_side(dtype: type, c_shape: tuple, x_shape: tuple, y_shape: tuple) -> None:
    """Both sides through their tables, over numpy broadcasting of condition, X and Y."""
    cond = RNG.random(c_shape) < 0.5 if c_shape else np.array(True)
    (z,) = _same(*_where(dtype, np.asarray(cond), _codes(dtype, *x_shape), _codes(dtype, *y_shape)))
    assert z.shape == np.broadcast_shapes(c_shape, x_shape, y_shape)


@pytest.mark.parametrize("dtype", TYPES)
@pytest.mark.parametrize(("same_x", "same_y"), [(True, False), (False, True), (True, True)])
def test_where_copies_a_side_already_in_the_outputs_scale(dtype: type, same_x: bool, same_y: bool) -> None:
    info = np.iinfo(dtype)
    every = np.arange(info.min, info.max + 1, dtype=dtype).reshape(4, 64)  # every code, both sides
    _same(*_where(dtype, RNG.random((4, 64)) < 0.5, every, every[::-1].copy(), same_x, same_y))


def test_where_refuses_what_onnxruntime_refuses() -> None:
    blob, feeds = _where(np.uint8, RNG.random((2, 4)) < 0.5, _codes(np.uint8, 2, 4), _codes(np.uint8, 2, 4))
    model = onnx.load_from_string(blob)
    zz = next(i for i in model.graph.initializer if i.name == "zz")
    zz.CopyFrom(numpy_helper.from_array(np.int8(3), "zz"))
    _refused(model.SerializeToString(), feeds, "all be uint8 or all int8, got .*z_zero_point int8")
    _refused(_any_shape(blob), {**feeds, "x": _codes(np.uint8, 3, 4)}, r"\(2, 4\), X \(3, 4\) and Y \(2, 4\) do not")


@pytest.fixture(scope="module", params=["u8", "s8"])
def quantized_where(request, tmp_path_factory) -> tuple[bytes, dict[str, np.ndarray]]:
    """Where between two quantized convolutions, one condition computed (Greater on their dequantized
    outputs) and one fed, into a last convolution: quantize_static in the QOperator format writes
    QLinearWhere for each (with ForceQuantizeNoInputCheck; without it the Where stays float)."""
    quantization = pytest.importorskip("onnxruntime.quantization")
    folder = tmp_path_factory.mktemp("qwhere")
    rng = np.random.default_rng(31)
    weights = {"wa": (4, 3, 3, 3), "wb": (4, 3, 3, 3), "wc": (4, 4, 1, 1)}
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "wb"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Greater", ["a", "b"], ["cond"]),
             helper.make_node("Where", ["cond", "a", "b"], ["m"]),
             helper.make_node("Where", ["keep", "m", "b"], ["m2"]),
             helper.make_node("Conv", ["m2", "wc"], ["y"])]
    graph = helper.make_graph(
        nodes, "where", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8]),
                         helper.make_tensor_value_info("keep", TensorProto.BOOL, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 8, 8])],
        [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n) for n, s in weights.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "float.onnx")

    def feed() -> dict[str, np.ndarray]:
        return {"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32), "keep": rng.random((1, 1, 8, 8)) < 0.5}

    batches = [feed() for _ in range(3)]


    kw = {} if request.param == "u8" else {"activation_type": quantization.QuantType.QInt8,
                                           "weight_type": quantization.QuantType.QInt8}
    quantization.quantize_static(folder / "float.onnx", folder / "q.onnx", calibration_reader(batches),
                                 quant_format=quantization.QuantFormat.QOperator,
                                 extra_options={"ForceQuantizeNoInputCheck": True}, **kw)
    blob = (folder / "q.onnx").read_bytes()
    assert [n.op_type for n in onnx.load_from_string(blob).graph.node].count("QLinearWhere") == 2
    return blob, feed()


@pytest.mark.parametrize("target", TARGETS)
def test_a_quantized_where_model_runs_as_onnxruntime_runs_it(quantized_where, target: str) -> None:
    _same(*quantized_where, target=target)


# -- MatMulInteger16 ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("a_shape", "b_shape"), [
    ((5, 7), (7, 3)), ((2, 4, 5, 7), (7, 3)), ((2, 1, 5, 7), (3, 7, 6)), ((7,), (7, 3)), ((5, 7), (7,))])
def test_matmul_integer16_broadcasts_as_matmul(a_shape: tuple, b_shape: tuple) -> None:
    (y,) = _same(*_one_node("MatMulInteger16", {"a": _codes(np.int16, *a_shape), "b": _codes(np.int16, *b_shape)},
                            ["y"]))
    assert y.dtype == np.int32 and y.shape == np.matmul(np.ones(a_shape), np.ones(b_shape)).shape


def test_matmul_integer16_wraps_as_int32_accumulates() -> None:
    """Four (-32768)^2 products sum to 2^32: 0 in int32, as onnxruntime's accumulator wraps."""
    a = np.full((2, 4), -32768, np.int16)
    a[1, 0] = 32767
    (y,) = _same(*_one_node("MatMulInteger16", {"a": a, "b": np.full((4, 3), -32768, np.int16)}, ["y"]))
    assert y[0, 0] == 0


def test_matmul_integer16_refuses_other_types_and_shapes() -> None:
    node = helper.make_node("MatMulInteger16", ["a", "b"], ["y"], domain=MS)
    feeds = {"a": _codes(np.int16, 2, 3), "b": _codes(np.int16, 4, 2)}
    _refused(_model([node], feeds, {}, {"y": (TensorProto.INT32, [2, 2])}), feeds, "do not multiply")
    feeds = {"a": _codes(np.uint16, 2, 3), "b": _codes(np.int16, 3, 2)}
    _refused(_model([node], feeds, {}, {"y": (TensorProto.INT32, [2, 2])}), feeds, "must be int16")
