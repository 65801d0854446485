"""Explicitly quantized (Q/DQ) models on the GPU: DequantizeLinear -> Conv/MatMul/Gemm -> QuantizeLinear
runs as an int8 kernel, as TensorRT fuses it: int8 x int8 products accumulated exactly in int32 and
scaled after, so the result is the reference's up to fp32 rounding at every precision (no TF32, bf16
or fp16 rounding of its operands), priced at the int8 tensor-core rate, and its report says so."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.graph.load import load
from hal.graph.passes import optimize
from hal.plugins import get_target
from hal.specs import CompileOptions
from tests.targets._qdq import codes, cpu_output, qdq_model, quantize_static_convnet

GPUS = ["gpu", "gpu-h200", "gpu-mi300x"]


def _run(model: bytes, feeds: dict, target: str, precision: str) -> tuple[np.ndarray, hal.InferenceSession]:
    sess = hal.InferenceSession(model, target=target, precision=precision, cache_dir=False)
    return sess.run(None, feeds)[0], sess


def _gemm_kernels(sess) -> list:
    return [k for k in sess.report.kernels if set(k.op_types) & {"Conv", "MatMul", "Gemm"}]


@pytest.mark.parametrize("op", ["Conv", "MatMul", "Gemm"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_qdq_gemm_at_native_is_the_reference_and_an_int8_kernel(op: str, per_channel: bool) -> None:
    # without the requantisation every output shows TF32 rounding of the operands; with it, values
    # land a quantisation step off (before: 7.7e-3 of max|cpu|, 89 of 4608 Conv outputs)
    for requantize in (False, True):
        model, feeds = qdq_model(op, per_channel, requantize=requantize, act_uint8=op == "MatMul")
        want = cpu_output(model, feeds)
        got, sess = _run(model, feeds, "gpu", "native")
        np.testing.assert_array_equal(got, want)
        (k,) = _gemm_kernels(sess)
        assert k.details["format"] == "int8" and k.details["quantization"] == "int8 (Q/DQ)"
        # the activation's DequantizeLinear is the int8 kernel's operand load: it reads the codes
        assert k.op_types[0] == "DequantizeLinear"


@pytest.mark.parametrize("target", GPUS)
@pytest.mark.parametrize("precision", ["native", "tf32", "bf16", "fp16", "fp8", "int8"])
def test_explicit_quantization_overrides_the_precision(target: str, precision: str) -> None:
    # TensorRT: with Q/DQ in the network a quantized layer runs in int8 whatever the builder's flags;
    # the requantised int8 codes it writes are the reference's at every precision
    model, feeds = qdq_model("Conv", True, seed=3)
    m = onnx.load_from_string(model)
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("yq", TensorProto.INT8, [1, 32, 12, 12]))
    model = m.SerializeToString()
    want = cpu_output(model, feeds)
    got, sess = _run(model, feeds, target, precision)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, want)
    assert [k.details["format"] for k in _gemm_kernels(sess)] == ["int8"]


def test_runtime_weight_codes_and_a_float_weight() -> None:
    # codes fed at run time keep their DequantizeLinear (per output channel): still an int8 kernel;
    # a trained float weight beside a quantized activation is no int8 GEMM (TF32 at native)
    model, feeds = qdq_model("MatMul", True, weight_input=True, requantize=False)
    got, sess = _run(model, feeds, "gpu", "native")
    np.testing.assert_array_equal(got, cpu_output(model, feeds))
    (k,) = _gemm_kernels(sess)
    assert k.details["format"] == "int8" and k.op_types.count("DequantizeLinear") == 2
    model, feeds = qdq_model("MatMul", False, float_weight=True, requantize=False)
    got, sess = _run(model, feeds, "gpu", "native")
    assert not np.array_equal(got, cpu_output(model, feeds))
    (k,) = _gemm_kernels(sess)
    assert k.details["format"] == "tf32" and "quantization" not in k.details


def test_int8_kernel_is_priced_at_the_int8_rate() -> None:
    # a compute-bound 2048^3 QDQ MatMul: faster than the TF32 peak allows, within the int8 one, its
    # weight held as 1-byte codes
    n = 2048
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"], axis=1),
             helper.make_node("MatMul", ["xd", "wd"], ["acc"]),
             helper.make_node("QuantizeLinear", ["acc", "s", "z"], ["y"])]
    inits = [numpy_helper.from_array(a, k) for k, a in
             {"s": np.float32(0.02), "z": np.int8(0), "wq": codes(rng, (n, n)),
              "ws": rng.uniform(0.001, 0.002, n).astype(np.float32)}.items()]
    graph = helper.make_graph(nodes, "qdq_big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, [n, n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    target = get_target("gpu")
    report = target.compile(optimize(load(model.SerializeToString())), CompileOptions(precision="native")).report
    (k,) = [k for k in report.kernels if "MatMul" in k.op_types]
    peak = {key: target.spec.hw(f"peak_flops_{key}") for key in ("tf32", "int8")}
    rate = k.flops / k.details["compute_s"]
    assert peak["tf32"] < rate <= peak["int8"] * target.spec.hw("gemm_efficiency_fp8")
    assert k.details["format"] == "int8" and k.details["latency_s"] == target.spec.hw("gemm_latency_s")
    assert report.details["weights_bytes_per_device"] < 1.01 * n * n


def test_quantize_static_model_matches_the_reference(tmp_path) -> None:
    pytest.importorskip("onnxruntime.quantization")
    for per_channel in (False, True):
        q, feeds = quantize_static_convnet(tmp_path, per_channel)
        want = cpu_output(q, feeds)
        for target in GPUS:
            got, sess = _run(q, feeds, target, "native")
            np.testing.assert_array_equal(got, want)
            assert [k.details["format"] for k in _gemm_kernels(sess)] == ["int8"] * 4


def _weight_only_qdq(w_nodes: list, w_inits: dict, weight: str, x_shape=(24, 64), y_shape=(24, 48)) -> bytes:
    """x -> Q -> DQ -> MatMul(., ``weight``), the weight made by ``w_nodes`` from ``w_inits``."""
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]), *w_nodes,
             helper.make_node("MatMul", ["xd", weight], ["y"])]
    inits = {"s": np.float32(0.02), "z": np.int8(0), **w_inits}
    graph = helper.make_graph(nodes, "qdq_weight",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(y_shape))],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def _formats(model: bytes) -> list:
    x = np.random.default_rng(2).normal(0, 1, (24, 64)).astype(np.float32)
    got, sess = _run(model, {"x": x}, "gpu", "native")
    want = cpu_output(model, {"x": x})
    if _gemm_kernels(sess)[0].details["format"] == "int8":
        np.testing.assert_array_equal(got, want)
    return [k.details["format"] for k in _gemm_kernels(sess)]


def test_folding_records_a_weights_dequantize_linear_through_a_transpose() -> None:
    # a weight stored as its output channels' rows (ModelOpt, pytorch-quantization): DequantizeLinear
    # per row (axis 0), then a Transpose, both folded into one float weight; the record carries the
    # scales' axis to the MatMul's output channels (axis 1), so the GEMM is an int8 one
    rng = np.random.default_rng(4)
    scales = rng.uniform(0.002, 0.01, 48).astype(np.float32)
    model = _weight_only_qdq([helper.make_node("DequantizeLinear", ["wq", "ws"], ["wt"], axis=0),
                              helper.make_node("Transpose", ["wt"], ["w"], perm=[1, 0])],
                             {"wq": codes(rng, (48, 64)), "ws": scales}, "w")
    graph = optimize(load(model))
    assert "w" in graph.initializers and not any(n.op_type == "DequantizeLinear" and n.inputs[0] == "wq"
                                                 for n in graph.nodes)
    assert graph.dequantized["w"].axis == 1 and graph.dequantized["w"].codes == np.int8
    assert _formats(model) == ["int8"]
    # the same codes with their scales along the input channels are no per-output-channel int8 weight
    model = _weight_only_qdq([helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"], axis=0)],
                             {"wq": codes(rng, (64, 48)), "ws": rng.uniform(0.002, 0.01, 64).astype(np.float32)}, "w")
    assert _formats(model) == ["tf32"]
    # a per-row scale through a Reshape is no longer known to sit on one axis: a float GEMM
    model = _weight_only_qdq([helper.make_node("DequantizeLinear", ["wq", "ws"], ["wt"], axis=0),
                              helper.make_node("Reshape", ["wt", "shape"], ["w"])],
                             {"wq": codes(rng, (48, 64)), "ws": scales, "shape": np.array([64, 48])}, "w")
    assert _formats(model) == ["tf32"]


def test_a_float_weight_on_an_int8_grid_without_a_dequantize_linear_stays_float() -> None:
    # integer multiples of one scale, stored as float32 (folded by some other tool, or a ternary
    # network's weights): no DequantizeLinear for TensorRT to fuse, so no int8 kernel; the same
    # values behind one are (before, hal guessed from the values and made both int8)
    rng = np.random.default_rng(5)
    grid = codes(rng, (64, 48))
    scale = np.float32(0.0078125)
    model = _weight_only_qdq([], {"w": grid.astype(np.float32) * scale}, "w")
    assert _formats(model) == ["tf32"]
    model = _weight_only_qdq([helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"])],
                             {"wq": grid, "ws": scale}, "w")
    assert _formats(model) == ["int8"]


def test_the_record_survives_partitioning_and_the_compile_cache(tmp_path) -> None:
    rng = np.random.default_rng(6)
    model = _weight_only_qdq([helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"], axis=1)],
                             {"wq": codes(rng, (64, 48)), "ws": rng.uniform(0.002, 0.01, 48).astype(np.float32)}, "w")
    graph = optimize(load(model))
    part = graph.subgraph([n.name for n in graph.nodes if n.op_type == "MatMul"])
    assert part.dequantized == {"w": graph.dequantized["w"]}
    x = {"x": rng.normal(0, 1, (24, 64)).astype(np.float32)}
    for _ in range(2):  # compiled, then loaded from the cache
        sess = hal.InferenceSession(model, target="gpu", precision="native", cache_dir=tmp_path)
        assert [k.details["format"] for k in _gemm_kernels(sess)] == ["int8"]
        np.testing.assert_array_equal(sess.run(None, x)[0], cpu_output(model, x))


def test_a_fake_quantised_float_weight_folds_to_a_recorded_int8_one() -> None:
    # pytorch-quantization's export: the trained float weight, QuantizeLinear and DequantizeLinear per
    # output row, then a Transpose into the MatMul; all three fold, the record follows the codes
    rng = np.random.default_rng(7)
    w = rng.normal(0, 0.2, (48, 64)).astype(np.float32)
    scales = (np.abs(w).max(axis=1) / 127).astype(np.float32)
    model = _weight_only_qdq([helper.make_node("QuantizeLinear", ["wf", "ws", "wz"], ["wq"], axis=0),
                              helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
                              helper.make_node("Transpose", ["wd"], ["w"], perm=[1, 0])],
                             {"wf": w, "ws": scales, "wz": np.zeros(48, np.int8)}, "w")
    assert optimize(load(model)).dequantized["w"].axis == 1
    assert _formats(model) == ["int8"]
