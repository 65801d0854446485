"""Explicitly quantized (Q/DQ) models on the LPU: a GEMM whose operands are the model's int8 codes runs
on the MXM in int8 at every precision but exact, with the model's own scales (the MXM multiplies int8
at four times its fp16 rate). int8 x int8 products summed exactly and scaled after are the reference's
float product of the dequantized operands up to fp32 rounding, so at ``native`` and ``int8`` such a
model gives the reference's numbers; before, ``native`` rounded the dequantized operands to fp16 and
``int8`` quantized them again with scales of its own (6.9e-3 to 2.3e-2 of max|cpu| off)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.graph.load import load
from hal.graph.passes import optimize
from hal.numerics import round_to
from hal.plugins import get_target
from hal.specs import CompileOptions
from tests.targets._qdq import codes, cpu_output, qdq_model, quantize_static_convnet, quantize_static_zoo


def _run(model: bytes, feeds: dict, precision: str, **options) -> tuple[np.ndarray, hal.InferenceSession]:
    sess = hal.InferenceSession(model, target="lpu", precision=precision, cache_dir=False, **options)
    return sess.run(None, feeds)[0], sess


def _products(sess) -> list:
    return [k for k in sess.report.kernels if k.unit == "MXM"]


@pytest.mark.parametrize("op", ["Conv", "MatMul", "Gemm"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_qdq_gemm_is_the_reference_and_an_int8_product(op: str, per_channel: bool) -> None:
    for requantize in (False, True):
        model, feeds = qdq_model(op, per_channel, requantize=requantize, act_uint8=op == "MatMul")
        want = cpu_output(model, feeds)
        for precision in ("native", "int8"):
            got, sess = _run(model, feeds, precision)
            np.testing.assert_array_equal(got, want)
            (k,) = _products(sess)
            assert k.details["format"] == "int8" and k.details["quantization"] == "int8 (Q/DQ)"
            # the activation's DequantizeLinear is no VXM work: the MXM streams its codes
            (dq,) = [g for g in sess.report.kernels if g.op_types == ["DequantizeLinear"] and g.unit == "MEM"]
            assert dq.bytes == 0


def test_fp16_precision_stores_the_int8_products_result_in_fp16() -> None:
    # ``fp16`` stores every result in fp16, the int8 product's too: the reference's bits rounded once
    model, feeds = qdq_model("MatMul", True, requantize=False)
    got, sess = _run(model, feeds, "fp16")
    np.testing.assert_array_equal(got, round_to(cpu_output(model, feeds), "fp16"))
    assert [k.details["format"] for k in _products(sess)] == ["int8"]


def test_a_float_weight_or_a_float_model_is_no_qdq_product() -> None:
    # a trained float weight beside a quantized activation: fp16 at native; a float model at int8 is
    # quantized by the target itself (per tensor and per output channel): int8 but no Q/DQ product
    model, feeds = qdq_model("MatMul", False, float_weight=True, requantize=False)
    got, sess = _run(model, feeds, "native")
    assert not np.array_equal(got, cpu_output(model, feeds))
    (k,) = _products(sess)
    assert k.details["format"] == "fp16" and "quantization" not in k.details
    _, sess = _run(model, feeds, "int8")
    (k,) = _products(sess)
    assert k.details["format"] == "int8" and "quantization" not in k.details
    assert "int8_qdq_gemms" not in sess.report.details["policy"]
    # at exact the products are fp32's, whatever the model says
    model, feeds = qdq_model("MatMul", True)
    _, sess = _run(model, feeds, "exact")
    assert all("format" not in k.details for k in _products(sess))
    assert "int8_qdq_gemms" not in sess.report.details["policy"]


def test_runtime_weight_codes() -> None:
    # codes fed at run time keep their DequantizeLinear (per output channel): still an int8 product,
    # both DequantizeLinears stream codes
    model, feeds = qdq_model("MatMul", True, weight_input=True, requantize=False)
    got, sess = _run(model, feeds, "native")
    np.testing.assert_array_equal(got, cpu_output(model, feeds))
    assert [k.details["format"] for k in _products(sess)] == ["int8"]
    assert [k.unit for k in sess.report.kernels if k.op_types == ["DequantizeLinear"]] == ["MEM", "MEM"]


def _big_matmul(n: int, quantized: bool, rows: int | None = None) -> bytes:
    """x (rows x n, default n x n) -> MatMul by an n x n weight: int8 codes behind Q/DQ, or the same
    values as floats."""
    rows = n if rows is None else rows
    rng = np.random.default_rng(1)
    wq, ws = codes(rng, (n, n)), rng.uniform(0.001, 0.002, n).astype(np.float32)
    inits = {"s": np.float32(0.02), "z": np.int8(0)}
    if quantized:
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                 helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
                 helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"], axis=1)]
        inits.update(wq=wq, ws=ws)
    else:
        nodes = [helper.make_node("Identity", ["x"], ["xd"])]
        inits["w"] = wq.astype(np.float32) * ws
    nodes.append(helper.make_node("MatMul", ["xd", "w"], ["y"]))
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, n])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def test_int8_product_is_priced_at_the_int8_rate_with_one_byte_weights() -> None:
    # a compute-bound 2048^3 product: the MXM instruction of the Q/DQ one takes a quarter of the float
    # one's cycles at native (fp16), as the sheet's 750 TOPS int8 against 188 TFLOPS fp16 say, with no
    # VXM conversion of its activations, and its weight is held as 1-byte codes
    n = 2048
    target = get_target("lpu")
    programs = {}
    for quantized in (True, False):
        graph = optimize(load(_big_matmul(n, quantized)))
        programs[quantized] = target.compile(graph, CompileOptions(precision="native"))
    issue = {}
    for quantized, exe in programs.items():
        (g,) = [g for g in exe.groups if g.unit == "MXM"]
        by_id = {i.id: i for i in exe.program}
        issue[quantized] = {by_id[i].op: by_id[i].issue for i in g.instructions if by_id[i].slice in ("MXM", "VXM")}
    slowdown = target.spec.hw("peak_ops_int8") / target.spec.hw("peak_flops_fp16")
    assert issue[False]["matmul"] / issue[True]["matmul"] == pytest.approx(slowdown, rel=0.01)
    assert "convert" in issue[False] and set(issue[True]) == {"matmul", "dequantize"}
    assert programs[True].report.details["weights_bytes"] < 1.01 * n * n
    assert programs[False].report.details["weights_bytes"] >= 2 * n * n


def test_a_product_split_over_chips_stays_int8_and_exact() -> None:
    # too big for one chip's SRAM: the weight's columns are shared out, each shard an int8 product
    model = _big_matmul(1024, True, rows=16)
    x = {"x": np.random.default_rng(3).normal(0, 1, (16, 1024)).astype(np.float32)}
    got, sess = _run(model, x, "native", sram_bytes=600_000)
    np.testing.assert_array_equal(got, cpu_output(model, x))
    shards = _products(sess)
    assert sess.report.devices > 1 and len(shards) > 1
    assert {k.details["format"] for k in shards} == {"int8"}


def test_quantize_static_model_matches_the_reference(tmp_path) -> None:
    pytest.importorskip("onnxruntime.quantization")
    for per_channel in (False, True):
        q, feeds = quantize_static_convnet(tmp_path, per_channel)
        want = cpu_output(q, feeds)
        for precision in ("native", "int8"):
            got, sess = _run(q, feeds, precision)
            np.testing.assert_array_equal(got, want)
            assert [k.details.get("quantization") for k in _products(sess)] == ["int8 (Q/DQ)"] * 4


def test_integer_ops_are_int8_products_at_every_precision() -> None:
    # onnxruntime's QOperator format (QLinearMatMul of uint8 and int8 codes) multiplies codes by
    # definition: int8 on the MXM even at exact, a quarter of the cycles a float product of its size
    # takes (before: priced at the fp16 rate)
    n = 1024
    rng = np.random.default_rng(0)
    inits = {"w": codes(rng, (n, n)), "as": np.float32(0.02), "az": np.uint8(128), "ws": np.float32(0.01),
             "wz": np.int8(0), "ys": np.float32(0.5), "yz": np.uint8(128)}
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "w", "ws", "wz", "ys", "yz"], ["y"])
    graph = helper.make_graph([node], "qlinear", [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [n, n])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    float_product = optimize(load(_big_matmul(n, False)))
    target = get_target("lpu")
    (float_mxm,) = [k for k in target.compile(float_product, CompileOptions(precision="native")).report.kernels
                    if k.unit == "MXM"]
    fp16 = float_mxm.details["cycles"]
    for precision in ("exact", "native"):
        report = target.compile(optimize(load(model)), CompileOptions(precision=precision)).report
        (k,) = [k for k in report.kernels if k.unit == "MXM"]
        assert k.details["format"] == "int8" and "quantization" not in k.details
        assert k.details["cycles"] < 0.3 * fp16


@pytest.mark.parametrize("name", ["tiny-gpt", "tiny-cnn"])
def test_a_quantize_static_zoo_model_is_the_reference_on_the_integer_targets(tmp_path, name: str) -> None:
    # every product of the quantized model, the attention's two activations' products included, is
    # an int8 one on the LPU and the GPU, and the outputs are the reference's bits at native
    pytest.importorskip("onnxruntime.quantization")
    model, feeds = quantize_static_zoo(tmp_path, name, per_channel=name == "tiny-cnn")
    want = cpu_output(model, feeds)
    products = 0
    for target in ("lpu", "gpu"):
        sess = hal.InferenceSession(model, target=target, precision="native", cache_dir=False)
        np.testing.assert_array_equal(sess.run(None, feeds)[0], want)
        gemms = [k for k in sess.report.kernels if set(k.op_types) & {"MatMul", "Gemm", "Conv"}]
        assert gemms and all(k.details.get("quantization") == "int8 (Q/DQ)" for k in gemms)
        products = max(products, len(gemms))
        # the report says how many of the model's GEMMs ran as int8 kernels, on either target
        details = sess.report.details
        assert (details.get("formats") or details.get("policy"))["int8_qdq_gemms"] == {"tiny-gpt": 17,
                                                                                      "tiny-cnn": 5}[name]
    assert products == {"tiny-gpt": 17, "tiny-cnn": 5}[name]
