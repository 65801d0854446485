"""Corners of the newer ONNX ops' kernels found by the differential sweep's families of
``benchmarks.differential_recent`` (GroupNormalization, RMSNormalization, Swish), against
onnxruntime's outputs: every target runs them."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

import hal
from tests.conftest import targets_taking
from tests.kernels._onnxruntime import run_as_written

TARGETS = [t.name for t in hal.targets()]


def _run(nodes, opset: int, feeds: dict[str, np.ndarray], target: str, weights: dict[str, np.ndarray] | None = None,
         outputs: tuple[str, ...] = ("y",)) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """onnxruntime's and ``target``'s ``outputs`` of a model of ``nodes``, typed as its first feed."""
    elem = helper.np_dtype_to_tensor_dtype(next(iter(feeds.values())).dtype)
    inputs = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for k, v in feeds.items()]
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(o, elem, None) for o in outputs],
                          [numpy_helper.from_array(v, k) for k, v in (weights or {}).items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    blob = m.SerializeToString()
    return run_as_written(blob, feeds, threads=1), hal.InferenceSession(blob, target=target).run(None, feeds)


@pytest.mark.parametrize("target", targets_taking("float64"))
def test_group_norm_21_takes_a_float64_input_s_statistics_in_float32(target):
    # stash_type defaults to 1: GroupNormalization-21's function body casts x to float32 for the mean and
    # variance, whatever x's type. hal took a float64 x's statistics in float64: 1e-7 off onnxruntime
    # (and onnx's reference), a hundred times the float64 tolerance. (Eighths in groups of 16: their
    # float32 sums are exact in any order, as onnxruntime's and numpy's orders differ)
    x = np.random.default_rng(1).integers(-24, 25, (1, 6, 2, 2, 2)) / 8.0
    w = {"s": np.linspace(-1, 1, 6), "b": np.linspace(0.5, -0.5, 6)}
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=3)
    (want,), (got,) = _run([node], 21, {"x": x}, target, w)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("opset", [18, 21])
def test_group_norm_s_variance_is_the_function_body_s_mean_square_less_square_mean(opset, target):
    # two values 0.012 apart near -2.26: the function body's E[x^2] - E[x]^2 in float32 loses a
    # third of the variance's digits, and onnxruntime and onnx's reference both give 3.1631532. hal
    # took the variance of x - mean (two passes) and gave 3.1669383
    x = np.array([[-2.250877, -2.2627306], [-0.9016357, 0.8793748]], np.float32)
    n = 1 if opset == 18 else 2  # (-18: a scale and bias per group)
    w = {"s": np.array([1.7565391, 1.1363873], np.float32)[:n], "b": np.array([1.4348801, -1.5814581], np.float32)[:n]}
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=1, epsilon=1e-6)
    (want,), (got,) = _run([node], opset, {"x": x}, target, w)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("target", targets_taking("float64"))
@pytest.mark.parametrize("op", ["RMSNormalization", "GroupNormalization", "LayerNormalization", "BatchNormalization"])
def test_a_float64_norm_adds_onnx_s_default_epsilon_as_a_float32(op, target):
    # ONNX's default epsilon is a float attribute, 1e-5 rounded to float32 (9.99999974737875e-06):
    # onnxruntime adds that to a float64 row's mean square. hal's default was 1e-5 itself: on a
    # row of values near 0.01, 1e-9 off (InstanceNormalization's too; onnxruntime has no float64 one, and
    # BatchNormalization's folding into an affine step read the same 1e-5)
    x = np.array([[0.0103, -0.0091, 0.011], [0.02, 0.003, -0.0004]])
    if op == "RMSNormalization":
        node, w, opset = helper.make_node(op, ["x", "s"], ["y"]), {"s": np.array([1.0, -0.5, 2.0])}, 23
    elif op == "LayerNormalization":
        node, w, opset = helper.make_node(op, ["x", "s"], ["y"]), {"s": np.array([1.0, -0.5, 2.0])}, 17
    elif op == "BatchNormalization":  # (a variance of the same size as the epsilon)
        x = x.reshape(1, 2, 3)
        node, opset = helper.make_node(op, ["x", "s", "b", "m", "v"], ["y"]), 15
        w = {"s": np.ones(2), "b": np.zeros(2), "m": np.array([0.001, 0.0]), "v": np.array([2e-5, 1e-5])}
    else:  # (opset 18: the statistics in x's own float64)
        x = x.reshape(2, 3, 1)
        node, opset = helper.make_node(op, ["x", "s", "b"], ["y"], num_groups=1), 18
        w = {"s": np.ones(1), "b": np.zeros(1)}
    (want,), (got,) = _run([node], opset, {"x": x}, target, w)
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("target", TARGETS)
def test_float16_swish_rounds_its_sigmoid_as_the_function_body(target):
    # Swish's body is x * Sigmoid(alpha x), each node rounding to float16: sigmoid(-18.3) = 1.1e-8 is
    # below float16's smallest subnormal, so 0, and Swish(-18.3) -0; times inf (SwiGLU as written
    # before opset 28) NaN. hal rounded once at the end: -2.4e-7, and -inf
    a = np.array([-18.31, -17.61, 2.0, -1.0], np.float16)
    b = np.array([np.inf, 3.0, -np.inf, 0.5], np.float16)
    nodes = [helper.make_node("Swish", ["a"], ["g"]), helper.make_node("Mul", ["g", "b"], ["y"])]
    want, got = _run(nodes, 24, {"a": a, "b": b}, target, outputs=("g", "y"))
    assert want[0][0] == 0 and np.isnan(want[1][0])
    for w, h in zip(want, got):
        np.testing.assert_array_equal(h, w)
