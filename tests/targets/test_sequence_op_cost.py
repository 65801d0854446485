"""The cost models of the ops that run a chain of matrix products in one node (``SEQUENCE_OPS``):
RNN, GRU and LSTM, a product per time step, and opset 23's Attention, two with a softmax between.

They were counted as elementwise ops (an LSTM's FLOPs were its output's elements: 840 where it does
241,920; an Attention's were 64x short) and run on the GPU's CUDA cores, the LPU's VXM and no
wafer contraction, with no cost for the steps' order. Now their FLOPs are their products', they
run on each target's matrix unit, and each step of a recurrence waits for the last: an LSTM over
64 steps of one row takes longer than over one step of 64 rows, at the same FLOPs, on every target.
An Attention node costs what the same attention costs as the MatMul-Softmax-MatMul pattern the GPU
recognises (whose kernel is calibrated on an H200)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from benchmarks.calibration_gpu_holdout import attention_model
from hal.graph.load import load
from hal.perf.opcount import node_flops

TARGETS = ["gpu", "lpu", "wafer"]


def _lstm(steps: int, batch: int, size: int = 64, hidden: int = 64, bidirectional: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    dirs = 2 if bidirectional else 1
    w = rng.standard_normal((dirs, 4 * hidden, size)).astype(np.float32)
    r = rng.standard_normal((dirs, 4 * hidden, hidden)).astype(np.float32)
    node = helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=hidden,
                            direction="bidirectional" if bidirectional else "forward")
    graph = helper.make_graph([node], "lstm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [steps, batch, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [steps, dirs, batch, hidden])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(r, "r")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def _attention_node(b: int, h: int, s: int, d: int, dtype: int, causal: bool) -> onnx.ModelProto:
    """``attention_model``'s attention as one opset 23 Attention node (K not transposed)."""
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=int(causal))
    graph = helper.make_graph([node], "attention",
                              [helper.make_tensor_value_info(n, dtype, [b, h, s, d]) for n in "qkv"],
                              [helper.make_tensor_value_info("y", dtype, [b, h, s, d])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])


def _flops(model: onnx.ModelProto) -> float:
    graph = load(model.SerializeToString())
    return sum(node_flops(n, graph) for n in graph.nodes)


def test_flops_are_the_products_flops() -> None:
    # a forward LSTM: per step and row, [x, h] (64 + 64) by 4 gates x 64 hidden, plus the gates' elementwise
    products = 2.0 * 10 * 3 * 4 * 64 * (64 + 64)
    assert products < _flops(_lstm(10, 3)) < 1.05 * products
    assert _flops(_lstm(10, 3, bidirectional=True)) == 2 * _flops(_lstm(10, 3))
    # Attention: what its MatMul-Softmax-MatMul pattern counts, but the pattern's scale Mul
    for causal in (False, True):
        pattern = _flops(attention_model(2, 4, 128, 32, TensorProto.FLOAT, causal))
        scale_mul = 2 * 4 * 128 * 128
        assert _flops(_attention_node(2, 4, 128, 32, TensorProto.FLOAT, causal)) == pattern - scale_mul


def _kernel(model: onnx.ModelProto, target: str, op: str):
    report = hal.compile(model.SerializeToString(), target=target).report
    return report, next(k for k in report.kernels if op in k.op_types)


@pytest.mark.parametrize("target", TARGETS)
def test_a_recurrence_pays_for_its_steps_order(target: str) -> None:
    """64 steps of one row against one step of 64 rows: the same products, the same FLOPs, but the
    first waits 63 times for the state it multiplies next."""
    long_report, long = _kernel(_lstm(64, 1), target, "LSTM")
    wide_report, wide = _kernel(_lstm(1, 64), target, "LSTM")
    assert long.flops == wide.flops
    if target != "wafer":  # the wafer reports a stage, not a kernel
        assert long.unit == {"gpu": "tensor cores", "lpu": "MXM"}[target]
    assert long_report.latency_s > 5 * wide_report.latency_s


def test_the_gpu_pays_a_gemm_latency_per_step() -> None:
    from hal_gpu.hardware import Gpu

    from hal.plugins import get_target

    gpu = Gpu.from_spec(get_target("gpu").spec)
    _, k8 = _kernel(_lstm(8, 1), "gpu", "LSTM")
    _, k64 = _kernel(_lstm(64, 1), "gpu", "LSTM")
    assert k64.details["sequential_steps"] == 64 and k8.details["sequential_steps"] == 8
    assert k64.time_s >= 64 * gpu.gemm_latency("fp32")
    assert 6 < k64.time_s / k8.time_s < 8.5


@pytest.mark.parametrize(("b", "h", "s", "d"), [(1, 32, 4096, 128), (64, 16, 512, 128), (1, 8, 1024, 64)])
@pytest.mark.parametrize("causal", [False, True])
def test_an_attention_node_costs_what_its_pattern_costs_on_the_gpu(b: int, h: int, s: int, d: int,
                                                                   causal: bool) -> None:
    _, pattern = _kernel(attention_model(b, h, s, d, TensorProto.FLOAT16, causal), "gpu-h200", "Softmax")
    _, node = _kernel(_attention_node(b, h, s, d, TensorProto.FLOAT16, causal), "gpu-h200", "Attention")
    assert pattern.details["kind"] == "attention"
    assert node.time_s == pytest.approx(pattern.time_s, rel=0.01)


@pytest.mark.parametrize("target", ["lpu", "wafer"])
def test_an_attention_node_runs_as_products(target: str) -> None:
    """On the LPU, Q·Kᵀ and P·V on the MXM with K and V installed; on the wafer, a contraction with K
    and V kept in SRAM. Fused, the node keeps its 4k x 4k scores off memory (on the LPU it also
    fits one chip, where the pattern's scores take three), but its products remain: at least a
    tenth of the pattern's time, where as an elementwise op it took 1/500 on the LPU, 1/60 on the
    wafer."""
    node = _attention_node(1, 8, 4096, 64, TensorProto.FLOAT16, False)
    report, k = _kernel(node, target, "Attention")
    assert k.flops == pytest.approx(_flops(node))
    if target == "lpu":
        assert k.unit == "MXM"
    pattern = hal.compile(attention_model(1, 8, 4096, 64, TensorProto.FLOAT16).SerializeToString(), target=target)
    assert report.latency_s > 0.1 * pattern.report.latency_s
