"""Explicitly quantized (Q/DQ) test models, built with onnx.helper, for the targets whose matrix units
run them as int8 kernels (the GPUs' tensor cores, the LPU's MXM)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import hal


def codes(rng: np.random.Generator, shape: tuple[int, ...], dtype=np.int8) -> np.ndarray:
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


def qdq_model(op: str, per_channel: bool, *, act_uint8: bool = False, requantize: bool = True,
               float_weight: bool = False, weight_input: bool = False, seed: int = 0) -> tuple[bytes, dict]:
    """x -> QuantizeLinear -> DequantizeLinear -> op(DequantizeLinear(int8 weight codes)) [-> Q -> DQ]."""
    rng = np.random.default_rng(seed)
    if op == "Conv":
        x_shape, w_shape, axis, attrs = (1, 16, 12, 12), (32, 16, 3, 3), 0, {"pads": [1, 1, 1, 1]}
        y_shape, bias = [1, 32, 12, 12], True
    elif op == "MatMul":
        x_shape, w_shape, axis, attrs, y_shape, bias = (24, 64), (64, 48), 1, {}, [24, 48], False
    else:  # Gemm with B transposed: output channels first
        x_shape, w_shape, axis, attrs, y_shape, bias = (24, 64), (48, 64), 0, {"transB": 1}, [24, 48], True
    channels = w_shape[axis]
    act_type = np.uint8 if act_uint8 else np.int8
    inits = {"x_scale": np.float32(0.021), "x_zero": np.array(17 if act_uint8 else -3, act_type),
             "w_scale": (rng.uniform(0.002, 0.01, channels) if per_channel else np.array(0.006)).astype(np.float32),
             "w_zero": np.zeros(channels if per_channel else (), np.int8),
             "y_scale": np.float32(0.05), "y_zero": np.int8(2)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))]
    feeds = {"x": rng.normal(0, 1, x_shape).astype(np.float32)}
    if float_weight:  # a trained float weight: on no int8 grid
        inits["wd"] = rng.normal(0, 0.2, w_shape).astype(np.float32)
    else:
        if weight_input:  # codes fed at run time: the DequantizeLinear stays in the graph
            inputs.append(helper.make_tensor_value_info("wq", TensorProto.INT8, list(w_shape)))
            feeds["wq"] = codes(rng, w_shape)
        else:
            inits["wq"] = codes(rng, w_shape)
        nodes.append(helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zero"], ["wd"], axis=axis))
    operands = ["xd", "wd"]
    if bias:
        inits["b"] = rng.normal(0, 0.1, channels).astype(np.float32)
        operands.append("b")
    out = "y" if not requantize else "acc"
    nodes.append(helper.make_node(op, operands, [out], **attrs))
    if requantize:
        nodes += [helper.make_node("QuantizeLinear", ["acc", "y_scale", "y_zero"], ["yq"]),
                  helper.make_node("DequantizeLinear", ["yq", "y_scale", "y_zero"], ["y"])]
    graph = helper.make_graph(nodes, f"qdq_{op.lower()}", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString(), feeds


def quantize_static(model: onnx.ModelProto, tmp_path: Path, per_channel: bool, batches: list[dict]) -> bytes:
    """``model`` quantized by onnxruntime's ``quantize_static`` in QDQ format, int8 activations and
    weights, calibrated on ``batches``; needs onnxruntime.quantization."""
    from onnxruntime import quantization

    class Calibration(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self):
            return next(self.batches, None)

    src, dst = tmp_path / f"{model.graph.name}.onnx", tmp_path / f"{model.graph.name}_qdq_{per_channel}.onnx"
    onnx.save(model, src)
    quantization.quantize_static(src, dst, Calibration(), quant_format=quantization.QuantFormat.QDQ,
                                 per_channel=per_channel, activation_type=quantization.QuantType.QInt8,
                                 weight_type=quantization.QuantType.QInt8)
    return onnx.load(dst).SerializeToString()


def quantize_static_convnet(tmp_path: Path, per_channel: bool) -> tuple[bytes, dict]:
    """A small conv net (two Convs, a MatMul, a Gemm) through ``quantize_static``, and a feed."""
    rng = np.random.default_rng(0)
    params = {"w1": rng.normal(0, 0.3, (8, 3, 3, 3)), "b1": rng.normal(0, 0.1, 8),
              "w2": rng.normal(0, 0.2, (16, 8, 3, 3)), "b2": rng.normal(0, 0.1, 16),
              "wm": rng.normal(0, 0.05, (16 * 8 * 8, 32)), "wg": rng.normal(0, 0.2, (10, 32)),
              "bg": rng.normal(0, 0.1, 10)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Flatten", ["r2"], ["f"]),
             helper.make_node("MatMul", ["f", "wm"], ["m"]),
             helper.make_node("Relu", ["m"], ["r3"]),
             helper.make_node("Gemm", ["r3", "wg", "bg"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "convnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in params.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    batches = [{"x": rng.normal(0, 1, (2, 3, 16, 16)).astype(np.float32)} for _ in range(9)]
    return quantize_static(model, tmp_path, per_channel, batches[:8]), batches[8]


def quantize_static_zoo(tmp_path: Path, name: str, per_channel: bool) -> tuple[bytes, dict]:
    """A hal zoo model (``tiny-gpt``, ``tiny-cnn``) through ``quantize_static``, calibrated on four
    random feeds, and a fifth feed."""
    from hal.zoo import build

    model = build(name)
    inp = model.graph.input[0]
    shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
    rng = np.random.default_rng(0)
    if inp.type.tensor_type.elem_type == TensorProto.INT64:
        batches = [{inp.name: rng.integers(0, 64, shape).astype(np.int64)} for _ in range(5)]
    else:
        batches = [{inp.name: rng.normal(0, 1, shape).astype(np.float32)} for _ in range(5)]
    return quantize_static(model, tmp_path, per_channel, batches[:4]), batches[4]


def cpu_output(model: bytes, feeds: dict) -> np.ndarray:
    """The model's first output on the cpu reference target."""
    return hal.InferenceSession(model, target="cpu", cache_dir=False).run(None, feeds)[0]
