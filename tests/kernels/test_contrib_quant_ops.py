"""QAttention, DynamicQuantizeLSTM and the com.microsoft QuantizeLinear / DequantizeLinear
(``hal.kernels.contrib_quant_ops``) against onnxruntime itself, graph optimisations off so it runs
each op as written: one node at a time over seeded codes, scales, masks and states, then the models
its quantizer writes them into (a BERT its transformers optimizer fused, then quantize_dynamic; an
LSTM through quantize_dynamic; QDQ models through quantize_static with int4 weights or 16-bit
activations at opset 13), on every target. onnx defines none of these ops; onnxruntime's CPU
kernels are their reference."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.kernels import contrib_quant_ops as cq
from tests.kernels._onnxruntime import calibration_reader, run_as_written
from tests.kernels.test_contrib_attention import UNFUSED, _bert_feeds, _optimised

RNG = np.random.default_rng(17)
MS = "com.microsoft"
TARGETS = ["cpu", "gpu", "lpu", "wafer"]
LOWEST = float(np.finfo(np.float32).min)



def _close(got: np.ndarray, want: np.ndarray) -> None:
    """float32 rounding: rtol 1e-5, atol 1e-6 scaled to the output's magnitude (integers exactly)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    if want.dtype.kind in "iub" or want.dtype.kind == "V":
        np.testing.assert_array_equal(got, want)
        return
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(want).max(initial=0))))


def _same(blob: bytes, feeds: dict[str, np.ndarray], target: str = "cpu", threads: int = 0) -> list[np.ndarray]:
    wants = run_as_written(blob, feeds, threads)
    gots = hal.InferenceSession(blob, target=target, cache_dir=False).run(None, feeds)
    assert len(gots) == len(wants)
    for got, want in zip(gots, wants):
        _close(got, want)
    return gots


def _one_node(op: str, inputs: dict[str, np.ndarray | None], outputs: list[str], consts: tuple[str, ...] = (),
              opset: int = 17, **attrs) -> tuple[bytes, dict[str, np.ndarray]]:
    """A one-node model: ``inputs`` in order (None: omitted), those named in ``consts`` as initializers;
    the outputs' types and shapes are what onnxruntime gives."""
    names = list(inputs)
    while names and inputs[names[-1]] is None:
        names.pop()
    node = helper.make_node(op, [n if inputs[n] is not None else "" for n in names], outputs, domain=MS, **attrs)
    feeds = {n: v for n, v in inputs.items() if v is not None and n not in consts}

    def build(out_info: list[onnx.ValueInfoProto]) -> bytes:
        graph = helper.make_graph(
            [node], "g",
            [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
             for n, v in feeds.items()],
            out_info, [numpy_helper.from_array(np.asarray(inputs[n]), n) for n in consts if inputs.get(n) is not None])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                       helper.make_opsetid(MS, 1)]).SerializeToString()

    wants = run_as_written(build([helper.make_empty_tensor_value_info(o) for o in outputs if o]), feeds)
    info = [helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(w.dtype), w.shape)
            for o, w in zip([o for o in outputs if o], wants)]
    return build(info), feeds


def _codes(dtype: type, *shape: int) -> np.ndarray:
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max + 1, shape).astype(dtype)


def _weights(dtype: type, *shape: int) -> np.ndarray:
    """int8 weight codes of 7 bits, as quantize_dynamic's reduce_range writes them: on an x86 CPU
    without VNNI, onnxruntime's uint8 x int8 products are added in int16 pairs and saturate past
    7-bit weights (hal's sums are exact, as the ops' integer arithmetic reads, and as onnxruntime's
    are on VNNI and ARM): within 7 bits both are exact on every machine."""
    return _codes(dtype, *shape) // 2 if dtype == np.int8 else _codes(dtype, *shape)


def _refused(blob: bytes, feeds: dict[str, np.ndarray], match: str) -> None:
    with pytest.raises(hal.RunError, match=match):
        hal.InferenceSession(blob, cache_dir=False).run(None, feeds)


# -- QAttention ---------------------------------------------------------------------------------------

B, S, D, N = 2, 5, 16, 4  # batch, sequence, hidden, heads
H = D // N
X = _codes(np.uint8, B, S, D)
MASKS = {
    "none": None,
    "1d-end": np.array([3, 5], np.int32),
    "1d-end-start": np.array([4, 5, 1, 0], np.int32),
    "2d": (RNG.random((B, S)) < 0.7).astype(np.int32),
    "3d": (RNG.random((B, S, S)) < 0.7).astype(np.int32),
}


def _qattention(weight_type: type = np.int8, per_column: bool = False, zero_points: bool = True, mask=None,
                past=None, outputs=("y",), x=X, **attrs) -> tuple[bytes, dict[str, np.ndarray]]:
    cols = 3 * D
    unsigned = weight_type == np.uint8
    inputs = {
        "x": x, "w": _weights(weight_type, D, cols), "b": RNG.standard_normal(cols).astype(np.float32),
        "x_scale": np.float32(0.02),
        "w_scale": RNG.uniform(0.002, 0.01, cols).astype(np.float32) if per_column else np.float32(0.004),
        "mask": mask,
        "x_zero": np.uint8(131) if zero_points else None,
        "w_zero": (None if not zero_points else
                   RNG.integers(120, 136, cols).astype(np.uint8) if per_column and unsigned else
                   RNG.integers(-4, 4, cols).astype(np.int8) if per_column else
                   np.array(128 if unsigned else 3, weight_type)),
        "past": past,
    }
    return _one_node("QAttention", inputs, list(outputs), consts=("w", "b", "x_scale", "w_scale", "x_zero", "w_zero"),
                     num_heads=N, **attrs)


@pytest.mark.parametrize("per_column", [False, True])
@pytest.mark.parametrize("weight_type", [np.int8, np.uint8])
def test_qattention_integer_projection(weight_type: type, per_column: bool) -> None:
    """The centred codes' exact product, times input_scale x weight_scale (per tensor or per column)."""
    _same(*_qattention(weight_type, per_column))


def test_qattention_without_zero_points() -> None:
    _same(*_qattention(np.int8, zero_points=False))
    _same(*_qattention(np.uint8, per_column=True, zero_points=False))


@pytest.mark.parametrize("unidirectional", [0, 1])
@pytest.mark.parametrize("mask", list(MASKS))
def test_qattention_masks(mask: str, unidirectional: int) -> None:
    """Attention's mask forms, as its CPU kernel reads them; the optimizer's fill value, float32's lowest."""
    _same(*_qattention(mask=MASKS[mask], unidirectional=unidirectional, mask_filter_value=LOWEST))


@pytest.mark.parametrize(("mask", "unidirectional"), [(None, 1), ("2d", 0), ("1d", 1)])
def test_qattention_past_and_present(mask: str | None, unidirectional: int) -> None:
    p = 3
    masks = {None: None, "2d": (RNG.random((B, p + S)) < 0.7).astype(np.int32),
             "1d": np.array([p + 2, p + S], np.int32)}
    past = RNG.standard_normal((2, B, N, p, H)).astype(np.float32)
    _same(*_qattention(mask=masks[mask], past=past, outputs=("y", "present"), unidirectional=unidirectional))
    one_step = X[:, :1].copy()
    _same(*_qattention(past=past, outputs=("y", "present"), x=one_step, unidirectional=1))


def test_qattention_scale_attribute() -> None:
    _same(*_qattention(mask=MASKS["2d"], scale=0.3))


@pytest.mark.parametrize("target", TARGETS)
def test_qattention_on_every_target(target: str) -> None:
    _same(*_qattention(np.uint8, per_column=True, mask=MASKS["2d"], unidirectional=1), target)


def test_qattention_round_operand_reaches_the_float_products_only() -> None:
    """Q and K, the probabilities and V; the integer projection is exact and no policy rounds it."""
    seen: list[tuple[int, ...]] = []

    def record(x: np.ndarray) -> np.ndarray:
        seen.append(x.shape)
        return x

    w, bias = _weights(np.int8, D, 3 * D), RNG.standard_normal(3 * D).astype(np.float32)
    args = (X, w, bias, np.float32(0.02), np.float32(0.004), MASKS["2d"], np.uint8(128), np.int8(0))
    plain = cq.q_attention(*args, num_heads=N)
    np.testing.assert_array_equal(plain, cq.q_attention(*args, num_heads=N, _round_operand=record))
    assert seen == [(B, N, S, H), (B, N, S, H), (B, N, S, S), (B, N, S, H)]


@pytest.mark.parametrize(("change", "match"), [
    ({"w": _codes(np.int8, D, 3 * D + 1)}, "3 x hidden"),
    ({"x": X.astype(np.int32)}, "uint8 or int8 codes"),
    ({"mask": np.ones((B, S + 1), np.int32)}, "none of the forms"),
    ({"w_scale": np.full(5, 0.01, np.float32)}, "per column"),
])
def test_qattention_refuses_what_it_cannot_run(change: dict, match: str) -> None:
    """Said plainly, with the node named."""
    inputs = {"x": X, "w": _weights(np.int8, D, 3 * D), "b": np.zeros(3 * D, np.float32), "x_scale": np.float32(0.02),
              "w_scale": np.float32(0.004), "mask": None}
    inputs.update(change)
    inputs["b"] = np.zeros(inputs["w"].shape[1], np.float32)
    node = helper.make_node("QAttention", [n if inputs[n] is not None else "" for n in inputs], ["y"], domain=MS,
                            num_heads=N)
    feeds = {k: inputs[k] for k in ("x", "mask") if inputs[k] is not None}
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, S, D])],
        [numpy_helper.from_array(np.asarray(inputs[k]), k) for k in ("w", "b", "x_scale", "w_scale")])
    blob = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    _refused(blob.SerializeToString(), feeds, match)


# -- a fused BERT, quantized by quantize_dynamic -------------------------------------------------------

@pytest.fixture(scope="module")
def quantized_bert(tmp_path_factory) -> dict[str, bytes]:
    """The small BERT of test_contrib_attention, fused by onnxruntime's transformers optimizer into
    Attention and EmbedLayerNormalization, then quantize_dynamic with int8 and with uint8 weights:
    each Attention becomes a QAttention after a DynamicQuantizeLinear. (EmbedLayerNormalization is
    left out of the quantization: its quantized form, QEmbedLayerNormalization, is another op.)"""
    quantization = pytest.importorskip("onnxruntime.quantization")
    folder = tmp_path_factory.mktemp("qbert")
    _optimised(folder, "fused.onnx", **UNFUSED)
    blobs = {}
    for weight_type in ("QInt8", "QUInt8"):
        quantization.quantize_dynamic(folder / "fused.onnx", folder / f"{weight_type}.onnx",
                                      weight_type=getattr(quantization.QuantType, weight_type),
                                      op_types_to_quantize=["Attention", "MatMul"], reduce_range=True,
                                      extra_options={"DefaultTensorType": TensorProto.FLOAT})
        blobs[weight_type] = (folder / f"{weight_type}.onnx").read_bytes()
        assert sum(n.op_type == "QAttention" for n in onnx.load_from_string(blobs[weight_type]).graph.node) == 2
    return blobs


@pytest.mark.parametrize("weight_type", ["QInt8", "QUInt8"])
def test_each_qattention_of_the_quantized_bert_as_onnxruntime_runs_it(quantized_bert, weight_type: str) -> None:
    """Each QAttention fed what onnxruntime computed before it, so that a last-bit difference
    upstream (which a later DynamicQuantizeLinear can turn into a whole code) neither hides nor
    fakes one here."""
    model = onnx.load_from_string(quantized_bert[weight_type])
    values = [o for n in model.graph.node for o in n.output if o]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend([helper.make_empty_tensor_value_info(v) for v in values])
    seen = dict(zip([o.name for o in probe.graph.output], run_as_written(probe.SerializeToString(), _bert_feeds())))
    seen.update(_bert_feeds())
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in (n for n in model.graph.node if n.op_type == "QAttention"):
        inputs = {name: (inits[name] if name in inits else seen[name]) if name else None for name in node.input}
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        _same(*_one_node("QAttention", inputs, list(node.output), consts=tuple(n for n in inputs if n in inits),
                         **attrs))


@pytest.mark.parametrize("target", TARGETS)
def test_the_quantized_bert_runs_as_onnxruntime_runs_it(quantized_bert, target: str) -> None:
    """End to end, int8 weights (quantize_dynamic's default): the same to float32 rounding. (With
    uint8 weights a last-bit difference in a LayerNormalization moves one code of the
    DynamicQuantizeLinear after it, and the output 1%; the test above checks those QAttentions node
    by node.)"""
    _same(quantized_bert["QInt8"], _bert_feeds(), target)


# -- DynamicQuantizeLSTM ------------------------------------------------------------------------------

T, IN = 5, 6
THREADS = 8  # at least the batch: onnxruntime then quantizes each row's hidden state alone, as hal does


def _lstm(batch: int, hidden: int, direction: str = "forward", lens: list[int] | None = None, peepholes: bool = False,
          initial: bool = False, **attrs) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A float LSTM model and its feeds."""
    dirs = 2 if direction == "bidirectional" else 1
    inputs = ["x", "W", "R", "B", "lens" if lens else "", "h0" if initial else "", "c0" if initial else "",
              "P" if peepholes else ""]
    while not inputs[-1]:
        inputs.pop()
    node = helper.make_node("LSTM", inputs, ["y", "y_h", "y_c"], hidden_size=hidden, direction=direction, **attrs)
    weights = {"W": RNG.standard_normal((dirs, 4 * hidden, IN)) * 0.5,
               "R": RNG.standard_normal((dirs, 4 * hidden, hidden)) * 0.5,
               "B": RNG.standard_normal((dirs, 8 * hidden)) * 0.2, "P": RNG.standard_normal((dirs, 3 * hidden)) * 0.2}
    feeds = {"x": RNG.standard_normal((T, batch, IN)).astype(np.float32)}
    if lens:
        feeds["lens"] = np.array(lens, np.int32)
    if initial:
        feeds["h0"] = RNG.standard_normal((dirs, batch, hidden)).astype(np.float32)
        feeds["c0"] = RNG.standard_normal((dirs, batch, hidden)).astype(np.float32)
    graph = helper.make_graph(
        [node], "lstm",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [T, dirs, batch, hidden]),
         helper.make_tensor_value_info("y_h", TensorProto.FLOAT, [dirs, batch, hidden]),
         helper.make_tensor_value_info("y_c", TensorProto.FLOAT, [dirs, batch, hidden])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items() if k in inputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), feeds


def _quantized_lstm(tmp_path, model: onnx.ModelProto, weight_type: str = "QInt8", per_channel: bool = False) -> bytes:
    quantization = pytest.importorskip("onnxruntime.quantization")
    onnx.save(model, tmp_path / "lstm.onnx")
    quantization.quantize_dynamic(tmp_path / "lstm.onnx", tmp_path / "q.onnx", per_channel=per_channel,
                                  weight_type=getattr(quantization.QuantType, weight_type),
                                  op_types_to_quantize=["LSTM"], reduce_range=True)
    blob = (tmp_path / "q.onnx").read_bytes()
    assert [n.op_type for n in onnx.load_from_string(blob).graph.node] == ["DynamicQuantizeLSTM"]
    return blob


@pytest.mark.parametrize(("batch", "hidden", "direction", "lens"), [
    (1, 8, "forward", None),
    (3, 8, "forward", [3, 5, 1]),
    (3, 8, "reverse", [5, 2, 4]),
    (3, 8, "bidirectional", [5, 2, 0]),  # a sequence of length 0: Y_h and Y_c read 0
    (6, 8, "forward", None),  # more than 4 rows: split over the threads
    (3, 260, "bidirectional", [4, 2, 3]),  # few rows and a wide state: the whole batch quantized at once
    (2, 260, "forward", [1, 5]),  # and a row that has ended reads 0 there
])
def test_quantized_lstm_directions_and_lengths(tmp_path, batch: int, hidden: int, direction: str,
                                               lens: list[int] | None) -> None:
    model, feeds = _lstm(batch, hidden, direction, lens)
    _same(_quantized_lstm(tmp_path, model), feeds, threads=THREADS)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("weight_type", ["QInt8", "QUInt8"])
def test_quantized_lstm_weight_types(tmp_path, weight_type: str, per_channel: bool) -> None:
    """Per tensor or per gate column (per_channel); int8 or uint8 codes."""
    model, feeds = _lstm(3, 8, "bidirectional", peepholes=True, initial=True)
    _same(_quantized_lstm(tmp_path, model, weight_type, per_channel), feeds, threads=THREADS)


def test_quantized_lstm_clip_and_input_forget(tmp_path) -> None:
    model, feeds = _lstm(2, 8, "forward", [5, 3], peepholes=True, clip=0.8, input_forget=1)
    _same(_quantized_lstm(tmp_path, model), feeds, threads=THREADS)


@pytest.mark.parametrize("target", TARGETS)
def test_quantized_lstm_on_every_target(tmp_path, target: str) -> None:
    model, feeds = _lstm(3, 8, "bidirectional", [4, 5, 2], initial=True)
    _same(_quantized_lstm(tmp_path, model, "QUInt8", per_channel=True), feeds, target, threads=THREADS)


def test_quantized_lstm_refuses_bad_weights() -> None:
    w, r = _weights(np.int8, 1, IN, 32), _weights(np.int8, 1, 8, 32)
    scale, zero = np.ones(1, np.float32), np.zeros(1, np.int8)
    inputs = {"x": RNG.standard_normal((T, 2, IN)).astype(np.float32), "W": w[:, :, :28], "R": r, "B": None,
              "sequence_lens": None, "initial_h": None, "initial_c": None, "P": None, "W_scale": scale,
              "W_zero_point": zero, "R_scale": scale, "R_zero_point": zero}
    names = list(inputs)
    node = helper.make_node("DynamicQuantizeLSTM", [n if inputs[n] is not None else "" for n in names], ["y"],
                            domain=MS, hidden_size=8)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, 2, IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [T, 1, 2, 8])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inputs.items() if v is not None and k != "x"])
    blob = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14), helper.make_opsetid(MS, 1)])
    _refused(blob.SerializeToString(), {"x": inputs["x"]}, r"W must be \(1, 6, 32\)")
    with pytest.raises(ValueError, match="R_zero_point"):
        cq.dynamic_quantize_lstm(inputs["x"], w, r, None, None, None, None, None, scale, zero, scale)


# -- com.microsoft QuantizeLinear / DequantizeLinear ---------------------------------------------------

Q_TYPES = [np.int8, np.uint8, np.int16, np.uint16, ml_dtypes.int4, ml_dtypes.uint4]


def _zero(dtype: type, size: int | None) -> np.ndarray:
    info = ml_dtypes.iinfo(dtype)
    middle = (int(info.min) + int(info.max)) // 2
    values = middle + RNG.integers(-2, 3, size or 1)
    return (values if size else values.reshape(())).astype(dtype)


def _round_trip(x: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, show_codes: bool, **attrs) -> bytes:
    """QuantizeLinear then DequantizeLinear (com.microsoft, opset 13) with one scale and zero point;
    the codes are an output too where onnxruntime can hand them to numpy (not 4-bit ones)."""
    names = ["x", "scale"] + (["zero"] if zero is not None else [])
    nodes = [helper.make_node("QuantizeLinear", names, ["q"], domain=MS, **attrs),
             helper.make_node("DequantizeLinear", ["q", *names[1:]], ["y"], domain=MS, **attrs)]
    code_type = helper.np_dtype_to_tensor_dtype(np.dtype(zero.dtype if zero is not None else np.uint8))
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape)]
    if show_codes:
        outs.append(helper.make_tensor_value_info("q", code_type, x.shape))
    consts = [numpy_helper.from_array(np.asarray(scale), "scale")]
    if zero is not None:
        consts.append(helper.make_tensor("zero", code_type, zero.shape, np.asarray(zero).astype(np.int64).reshape(-1)))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)], outs,
                              consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(MS, 1)]
                             ).SerializeToString()


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("dtype", Q_TYPES)
def test_quantize_and_dequantize_bit_exact(dtype: type, axis: int | None) -> None:
    """Per tensor or per axis; ties (x / scale at k + 0.5) round to even; out-of-range values
    saturate. 4-bit codes are checked through the values they dequantize to (onnxruntime hands no
    int4 array to numpy)."""
    shape = (2, 3, 4)
    size = None if axis is None else shape[axis]
    scale = np.float32(0.5) if size is None else RNG.uniform(0.05, 0.5, size).astype(np.float32)
    x = (RNG.standard_normal(shape) * 3000).astype(np.float32)
    x.reshape(-1)[:6] = np.array([0.5, -0.5, 1.5, 2.5, -3.5, 1e9], np.float32) * np.asarray(scale).reshape(-1)[0]
    attrs = {} if axis in (None, 1) else {"axis": axis}
    four_bit = np.dtype(dtype).itemsize == 1 and dtype not in (np.int8, np.uint8)
    for zero in (_zero(dtype, size), None):
        if zero is None and dtype != np.uint8:
            continue  # without a zero point the codes are uint8
        _same(_round_trip(x, scale, zero, not four_bit, **attrs), {"x": x})


def test_dequantize_int32() -> None:
    """An int32 bias, as the quantizer dequantizes it, per tensor and per axis."""
    x = RNG.integers(-(2 ** 31), 2 ** 31 - 1, (3, 8), dtype=np.int64).astype(np.int32)
    _same(*_one_node("DequantizeLinear", {"x": x, "s": np.float32(1e-4)}, ["y"], consts=("s",), opset=13))
    _same(*_one_node("DequantizeLinear", {"x": x, "s": RNG.uniform(0, 1, 8).astype(np.float32),
                                          "z": np.zeros(8, np.int32)}, ["y"], consts=("s", "z"), opset=13, axis=1))


def test_quantize_refuses_a_blocked_scale_and_a_float8_zero_point() -> None:
    x = RNG.standard_normal((4, 6)).astype(np.float32)
    with pytest.raises(ValueError, match="blocked quantization"):
        cq.ms_quantize_linear(x, np.ones((4, 2), np.float32), axis=1)
    with pytest.raises(ValueError, match="float8_e4m3fn"):
        cq.ms_quantize_linear(x, np.float32(1), np.zeros((), ml_dtypes.float8_e4m3fn))
    with pytest.raises(ValueError, match="does not fit axis"):
        cq.ms_dequantize_linear(np.zeros((4, 6), np.int8), np.ones(4, np.float32), axis=1)


def _cnn() -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "r1"], ["a"]),
             helper.make_node("GlobalAveragePool", ["a"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("MatMul", ["f", "fc"], ["y"])]
    params = {"w1": RNG.standard_normal((8, 3, 3, 3)) * .3, "b1": RNG.standard_normal(8) * .1,
              "w2": RNG.standard_normal((8, 8, 3, 3)) * .2, "fc": RNG.standard_normal((8, 5)) * .3}
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in params.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="module", params=["int4-weights", "uint4-per-channel", "int16-activations"])
def qdq_model(request, tmp_path_factory) -> tuple[bytes, dict[str, np.ndarray]]:
    """quantize_static's QDQ output: 4-bit weights in an opset-13 model go to com.microsoft Q/DQ by
    themselves; 16-bit activations do with UseQDQContribOps (else it raises the opset to 21)."""
    quantization = pytest.importorskip("onnxruntime.quantization")
    folder = tmp_path_factory.mktemp("qdq")
    onnx.save(_cnn(), folder / "float.onnx")
    rng = np.random.default_rng(9)
    batches = [{"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)} for _ in range(3)]


    qt = quantization.QuantType
    kw = {"int4-weights": {"activation_type": qt.QUInt8, "weight_type": qt.QInt4},
          "uint4-per-channel": {"activation_type": qt.QUInt8, "weight_type": qt.QUInt4, "per_channel": True},
          "int16-activations": {"activation_type": qt.QInt16, "weight_type": qt.QInt8,
                                "extra_options": {"UseQDQContribOps": True}}}[request.param]
    quantization.quantize_static(folder / "float.onnx", folder / "q.onnx", calibration_reader(batches),
                                 quant_format=quantization.QuantFormat.QDQ, **kw)
    blob = (folder / "q.onnx").read_bytes()
    ops = {(n.domain, n.op_type) for n in onnx.load_from_string(blob).graph.node if n.op_type.endswith("Linear")}
    assert ops == {(MS, "QuantizeLinear"), (MS, "DequantizeLinear")}
    return blob, {"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)}


@pytest.mark.parametrize("target", TARGETS)
def test_a_qdq_model_with_contrib_qdq_runs_as_onnxruntime_runs_it(qdq_model, target: str, request) -> None:
    """Within float32 rounding; with 16-bit activations, within a few of their codes: a convolution's
    float sum that BLAS and MLAS round one ulp apart moves a value that sits on an int16 rounding
    boundary by one code (1/65536 of the range), as it would a uint8 one 256 times less often."""
    blob, feeds = qdq_model
    if "int16" not in request.node.callspec.id:
        _same(blob, feeds, target)
        return
    (want,) = run_as_written(blob, feeds, 0)
    (got,) = hal.InferenceSession(blob, target=target, cache_dir=False).run(None, feeds)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * float(np.max(np.abs(want))))
