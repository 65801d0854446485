"""onnxruntime's quantized contrib ops (``hal.kernels.contrib_quant``, domain com.microsoft) against
onnxruntime itself, graph optimisations off so it runs each op as written: one node at a time over
seeded codes and scales, then whole models its own quantizer writes in the QOperator format, on
every target. onnx defines none of these ops; onnxruntime's kernels are their reference."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.graph.load import load
from tests.kernels._onnxruntime import calibration_reader, run_as_written

RNG = np.random.default_rng(5)
MS = "com.microsoft"
TYPES = [(TensorProto.UINT8, np.uint8), (TensorProto.INT8, np.int8)]


def _model(node: onnx.NodeProto, feeds: dict[str, np.ndarray], consts: dict[str, np.ndarray], out_type: int,
           out_shape: list[int] | None, opset: int = 13) -> bytes:
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for n, v in feeds.items()],
        [helper.make_tensor_value_info(node.output[0], out_type, out_shape)],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)])
    return model.SerializeToString()



def _same(blob: bytes, feeds: dict[str, np.ndarray], target: str = "cpu") -> np.ndarray:
    (want,) = run_as_written(blob, feeds)
    (got,) = hal.InferenceSession(blob, target=target, cache_dir=False).run(None, feeds)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    return got


def _codes(dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max + 1, shape).astype(dtype)


def _scales(dtype: type, *names: str) -> dict[str, np.ndarray]:
    """A scale and a zero point per name (name_s, name_z), seeded."""
    out = {}
    for n in names:
        out[f"{n}_s"] = np.float32(RNG.uniform(0.005, 0.05))
        out[f"{n}_z"] = np.array(RNG.integers(-20, 20) + (128 if dtype == np.uint8 else 0), dtype=dtype)
    return out


@pytest.mark.parametrize(("qtype", "dtype"), TYPES)
@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
def test_binary_ops_broadcast_as_onnxruntime(op: str, qtype: int, dtype: type) -> None:
    feeds = {"a": _codes(dtype, (2, 3, 8)), "b": _codes(dtype, (8,))}
    node = helper.make_node(op, ["a", "a_s", "a_z", "b", "b_s", "b_z", "c_s", "c_z"], ["c"], domain=MS)
    _same(_model(node, feeds, _scales(dtype, "a", "b", "c"), qtype, [2, 3, 8]), feeds)


@pytest.mark.parametrize(("qtype", "dtype"), TYPES)
@pytest.mark.parametrize(("op", "attrs"), [("QLinearSigmoid", {}), ("QLinearLeakyRelu", {"alpha": 0.1})])
def test_unary_ops_through_their_tables(op: str, attrs: dict, qtype: int, dtype: type) -> None:
    info = np.iinfo(dtype)
    feeds = {"x": np.arange(info.min, info.max + 1, dtype=dtype).reshape(4, 64)}  # every code
    node = helper.make_node(op, ["x", "x_s", "x_z", "y_s", "y_z"], ["y"], domain=MS, **attrs)
    _same(_model(node, feeds, _scales(dtype, "x", "y"), qtype, [4, 64]), feeds)


@pytest.mark.parametrize(("qtype", "dtype"), TYPES)
@pytest.mark.parametrize(("opset", "axis"), [(13, -1), (13, 1), (12, 1), (12, 2)])
def test_softmax_as_onnxruntime_computes_it(qtype: int, dtype: type, opset: int, axis: int) -> None:
    info = np.iinfo(dtype)
    # rows spread over part of the range: no probability rounds to the top code (see below)
    feeds = {"x": RNG.integers(info.min, info.min + 60, (2, 5, 6)).astype(dtype)}
    consts = {"x_s": np.float32(0.05), "x_z": np.array(info.min + 30, dtype=dtype),
              "y_s": np.float32(1 / 256), "y_z": np.array(info.min, dtype=dtype)}
    node = helper.make_node("QLinearSoftmax", ["x", "x_s", "x_z", "y_s", "y_z"], ["y"], domain=MS, axis=axis,
                            opset=opset)
    _same(_model(node, feeds, consts, qtype, [2, 5, 6], opset=opset), feeds)


def test_softmax_of_a_row_one_code_dominates() -> None:
    """A probability that rounds to 1 reads the type's top code (zero point -128, scale 1/256: 256
    past the zero point, 127 saturated), as onnxruntime 1.32 gives it."""
    feeds = {"x": np.array([[-128, -128, 127], [0, 1, 2]], dtype=np.int8)}
    consts = {"x_s": np.float32(0.5), "x_z": np.int8(0), "y_s": np.float32(1 / 256), "y_z": np.int8(-128)}
    node = helper.make_node("QLinearSoftmax", ["x", "x_s", "x_z", "y_s", "y_z"], ["y"], domain=MS, axis=-1, opset=13)
    assert _same(_model(node, feeds, consts, TensorProto.INT8, [2, 3]), feeds)[0, 2] == 127


@pytest.mark.parametrize(("qtype", "dtype"), TYPES)
def test_concat_requantises_each_input_to_the_output(qtype: int, dtype: type) -> None:
    feeds = {"a": _codes(dtype, (2, 3, 4)), "b": _codes(dtype, (2, 1, 4)), "c": _codes(dtype, (2, 2, 4))}
    consts = _scales(dtype, "y", "a", "b")
    consts.update({"c_s": consts["y_s"], "c_z": consts["y_z"]})  # already in the output's scale: copied
    node = helper.make_node("QLinearConcat", ["y_s", "y_z", "a", "a_s", "a_z", "b", "b_s", "b_z", "c", "c_s", "c_z"],
                            ["y"], domain=MS, axis=1)
    _same(_model(node, feeds, consts, qtype, [2, 6, 4]), feeds)


@pytest.mark.parametrize(("qtype", "dtype"), TYPES)
@pytest.mark.parametrize("channels_last", [0, 1])
def test_global_average_pool(qtype: int, dtype: type, channels_last: int) -> None:
    feeds = {"x": _codes(dtype, (2, 5, 7, 3) if channels_last else (2, 3, 5, 7))}
    node = helper.make_node("QLinearGlobalAveragePool", ["x", "x_s", "x_z", "y_s", "y_z"], ["y"], domain=MS,
                            channels_last=channels_last)
    _same(_model(node, feeds, _scales(dtype, "x", "y"), qtype, [2, 1, 1, 3] if channels_last else [2, 3, 1, 1]), feeds)


@pytest.mark.parametrize(("qtype", "dtype"), TYPES)
@pytest.mark.parametrize(("attrs", "shape"), [
    ({"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1, "count_include_pad": 1}, [2, 3, 4, 4]),
    ({"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}, [2, 3, 4, 4]),
    ({"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}, [2, 3, 7, 7]),
    ({"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}, [2, 3, 4, 4]),
    ({"kernel_shape": [2, 2], "channels_last": 1}, [2, 6, 6, 3]),
])
def test_average_pool_counts_as_onnxruntime(qtype: int, dtype: type, attrs: dict, shape: list[int]) -> None:
    """With count_include_pad a ceil-mode window's overhang counts too (7x7 over 2x2 windows), where
    the float AveragePool leaves it out."""
    feeds = {"x": _codes(dtype, (2, 6, 6, 3) if attrs.get("channels_last") else (2, 3, 7, 7))}
    node = helper.make_node("QLinearAveragePool", ["x", "x_s", "x_z", "y_s", "y_z"], ["y"], domain=MS, **attrs)
    _same(_model(node, feeds, _scales(dtype, "x", "y"), qtype, shape), feeds)


@pytest.mark.parametrize(("qtype", "dtype"), TYPES)
@pytest.mark.parametrize(("trans_a", "trans_b", "per_column", "bias", "quantized"), [
    (0, 0, False, True, True), (0, 1, True, True, True), (1, 0, False, False, True), (0, 1, True, True, False)])
def test_qgemm(qtype: int, dtype: type, trans_a: int, trans_b: int, per_column: bool, bias: bool,
               quantized: bool) -> None:
    m, k, n = 5, 16, 6
    feeds = {"a": _codes(dtype, (k, m) if trans_a else (m, k))}
    consts = _scales(dtype, "a", "y")
    consts["b"] = _codes(np.int8 if dtype == np.int8 else np.uint8, (n, k) if trans_b else (k, n))
    consts["b_s"] = RNG.uniform(0.005, 0.05, n).astype(np.float32) if per_column else np.float32(0.02)
    consts["b_z"] = np.zeros(n, consts["b"].dtype) if per_column else np.array(3, consts["b"].dtype)
    consts["c"] = RNG.integers(-500, 500, n).astype(np.int32)
    ins = ["a", "a_s", "a_z", "b", "b_s", "b_z", "c" if bias else ""] + (["y_s", "y_z"] if quantized else [])
    node = helper.make_node("QGemm", ins, ["y"], domain=MS, transA=trans_a, transB=trans_b, alpha=0.75)
    _same(_model(node, feeds, consts, qtype if quantized else TensorProto.FLOAT, [m, n]), feeds)


def _float_out(node: onnx.NodeProto, feeds: dict[str, np.ndarray], consts: dict[str, np.ndarray],
               shape: list[int]) -> np.ndarray:
    return _same(_model(node, feeds, consts, TensorProto.FLOAT, shape), feeds)


@pytest.mark.parametrize("b_type", [np.int8, np.uint8])
@pytest.mark.parametrize("per_column", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_the_fused_dynamic_matmuls(b_type: type, per_column: bool, bias: bool) -> None:
    """MatMulIntegerToFloat and DynamicQuantizeMatMul, which onnxruntime's optimiser makes of a
    dynamically quantized MatMul (and a model it saved holds)."""
    n = 6
    # int8 weights of 7 bits, as onnxruntime's quantizer writes them with reduce_range: on an AVX2 machine
    # without VNNI, MLAS's uint8 x int8 kernel adds products in pairs into int16 (vpmaddubsw) and
    # saturates beyond 255 * 64 * 2; hal computes the exact sums, as MLAS does on VNNI and ARM
    consts = {"b": _codes(b_type, (16, n)) // (2 if b_type == np.int8 else 1),
              "bs": (RNG.uniform(0.01, 0.05, n) if per_column else np.array(0.02)).astype(np.float32),
              "bz": (np.zeros(n) if per_column else np.array(3 if b_type == np.uint8 else 0)).astype(b_type),
              "bias": RNG.standard_normal(n).astype(np.float32),
              "as": np.float32(0.03), "az": np.uint8(120)}
    extra = ["bias"] if bias else []
    dynamic = helper.make_node("DynamicQuantizeMatMul", ["a", "b", "bs", "bz", *extra], ["y"], domain=MS)
    _float_out(dynamic, {"a": RNG.standard_normal((2, 5, 16)).astype(np.float32)}, consts, [2, 5, n])
    integer = helper.make_node("MatMulIntegerToFloat", ["a", "b", "as", "bs", "az", "bz", *extra], ["y"], domain=MS)
    _float_out(integer, {"a": _codes(np.uint8, (2, 5, 16))}, consts, [2, 5, n])


def test_codes_of_a_wide_type_are_refused_not_tabled() -> None:
    """A table has an entry per code: an int32 input would ask for 2^32 of them."""
    feeds = {"x": np.arange(6, dtype=np.int32).reshape(2, 3)}
    node = helper.make_node("QLinearSigmoid", ["x", "x_s", "x_z", "y_s", "y_z"], ["y"], domain=MS)
    consts = {"x_s": np.float32(0.1), "x_z": np.int32(0), "y_s": np.float32(0.1), "y_z": np.int32(0)}
    with pytest.raises(hal.RunError, match="uint8 or int8"):
        hal.InferenceSession(_model(node, feeds, consts, TensorProto.INT32, [2, 3]), cache_dir=False).run(None, feeds)


# -- whole models, as onnxruntime's quantizer writes them -----------------------------------------

def _float_model() -> onnx.ModelProto:
    """A small CNN with a residual Add, a sigmoid gate, a concatenation, pools and a classifier."""
    w1 = (RNG.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    w2 = (RNG.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32)
    fc = (RNG.standard_normal((10, 16)) * 0.3).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["res"]),
        helper.make_node("Sigmoid", ["res"], ["gate"]),
        helper.make_node("Mul", ["res", "gate"], ["silu"]),
        helper.make_node("AveragePool", ["silu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Concat", ["pool", "pool"], ["cat"], axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fc_b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 12, 12])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [2, 10])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
                               numpy_helper.from_array(fc, "fc"),
                               numpy_helper.from_array(np.linspace(-1, 1, 10).astype(np.float32), "fc_b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module", params=["u8", "s8-per-channel"])
def quantized(request, tmp_path_factory) -> tuple[bytes, dict[str, np.ndarray]]:
    quantization = pytest.importorskip("onnxruntime.quantization")
    folder = tmp_path_factory.mktemp("quantized")
    onnx.save(_float_model(), folder / "float.onnx")
    rng = np.random.default_rng(3)
    batches = [{"x": rng.standard_normal((2, 3, 12, 12)).astype(np.float32)} for _ in range(4)]


    kw = ({} if request.param == "u8" else
          {"activation_type": quantization.QuantType.QInt8, "weight_type": quantization.QuantType.QInt8,
           "per_channel": True})
    quantization.quantize_static(folder / "float.onnx", folder / "q.onnx", calibration_reader(batches),
                                 quant_format=quantization.QuantFormat.QOperator, **kw)
    return (folder / "q.onnx").read_bytes(), {"x": rng.standard_normal((2, 3, 12, 12)).astype(np.float32)}


def test_the_quantizer_writes_the_contrib_ops(quantized) -> None:
    blob, _ = quantized
    ops = {n.op_type for n in onnx.load_from_string(blob).graph.node if n.domain == MS}
    assert {"QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearConcat", "QLinearGlobalAveragePool",
            "QLinearAveragePool", "QGemm", "QLinearSoftmax"} <= ops


@pytest.mark.parametrize("target", [t.name for t in hal.targets()])
def test_a_quantized_model_runs_as_onnxruntime_runs_it(quantized, target: str) -> None:
    blob, feeds = quantized
    _same(blob, feeds, target)


def test_values_after_the_contrib_ops_have_shapes(quantized) -> None:
    """onnx's shape inference stops at an op it does not know; the stand-ins of ``hal.graph.contrib``
    carry it through, so compile-time planning and the cost models see every value's size."""
    blob, _ = quantized
    graph = load(blob)
    unknown = [o for n in graph.nodes for o in n.outputs if o and (graph.values.get(o) is None
                                                                  or graph.values[o].static_shape is None)]
    assert not unknown
    gemm = next(n for n in graph.nodes if n.op_type == "QGemm")
    assert graph.values[gemm.outputs[0]].static_shape == (2, 10)


@pytest.fixture(scope="module", params=["QInt8", "QUInt8"])
def optimised_dynamic(request, tmp_path_factory) -> tuple[str, dict[str, np.ndarray]]:
    """An MLP quantized by quantize_dynamic, then optimised and saved by onnxruntime: its MatMuls
    become DynamicQuantizeMatMul with the bias folded in."""
    quantization = pytest.importorskip("onnxruntime.quantization")
    folder = tmp_path_factory.mktemp("dynamic")
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 10])],
                              [numpy_helper.from_array(rng.standard_normal((32, 64)).astype(np.float32), "w1"),
                               numpy_helper.from_array(rng.standard_normal((64, 10)).astype(np.float32), "w2"),
                               numpy_helper.from_array(rng.standard_normal(64).astype(np.float32), "b1")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "float.onnx")
    quantization.quantize_dynamic(folder / "float.onnx", folder / "q.onnx",
                                  weight_type=getattr(quantization.QuantType, request.param))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(folder / "optimised.onnx")
    ort.InferenceSession(str(folder / "q.onnx"), options, providers=["CPUExecutionProvider"])
    return str(folder / "optimised.onnx"), {"x": rng.standard_normal((4, 32)).astype(np.float32)}


@pytest.mark.parametrize("target", [t.name for t in hal.targets()])
def test_a_model_onnxruntime_optimised_runs_as_it_runs_it(optimised_dynamic, target: str) -> None:
    path, feeds = optimised_dynamic
    assert "DynamicQuantizeMatMul" in {n.op_type for n in onnx.load(path).graph.node}
    _same(open(path, "rb").read(), feeds, target)
    model = onnx.load(path)
    del model.graph.value_info[:]  # onnxruntime saves its own shapes; hal's stand-ins find them again
    graph = load(model.SerializeToString())
    assert all(graph.values[o].static_shape is not None for n in graph.nodes for o in n.outputs if o)
