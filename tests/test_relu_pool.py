"""A Relu and the MaxPool that alone reads it, run as one step pooled first (``ReluPool``): the plain
program's bits, onnxruntime's values, and no fusion where a window could be all padding or the
Relu's result is read elsewhere."""

from __future__ import annotations

import pickle

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.engine import Program, fused_steps, steps_for_nodes
from hal.graph.load import from_proto
from hal.graph.passes import optimize


def _conv_relu_pool(pool: dict, extra_reader: bool = False, indices: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "b")
    pool_out = ["y", "idx"] if indices else ["y"]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], pool_out, name="pool", **pool)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, list("nchw"))]
    if indices:
        outputs.append(helper.make_tensor_value_info("idx", TensorProto.INT64, list("nchw")))
    if extra_reader:
        nodes.append(helper.make_node("Neg", ["r"], ["n"], name="neg"))
        outputs.append(helper.make_tensor_value_info("n", TensorProto.FLOAT, list("nchw")))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 11, 12])],
                              outputs, [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _feeds(nan: bool = True) -> dict[str, np.ndarray]:
    x = np.random.default_rng(1).standard_normal((1, 3, 11, 12)).astype(np.float32)
    if nan:
        x[0, 0, 2, 3] = np.nan  # a NaN stays NaN through both orders (onnxruntime's MaxPool may drop it)
    x[0, 1, 5:, :] = -3.0    # windows of negatives only: the Relu's 0 after the pool's max
    x[0, 2, 0, 0] = -np.inf
    return {"x": x}


POOLS = {
    "3x3 stride 2": {"kernel_shape": [3, 3], "strides": [2, 2]},
    "padded": {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 2, 2]},
    "SAME": {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
    "2x2": {"kernel_shape": [2, 2], "strides": [2, 2]},
}


@pytest.mark.parametrize("pool", POOLS.values(), ids=POOLS.keys())
def test_relu_then_pool_runs_pooled_first_bit_identically(pool) -> None:
    model = _conv_relu_pool(pool)
    graph = optimize(from_proto(model, where="relu-pool"))
    plain = Program(graph, steps_for_nodes(graph, graph.nodes))
    fused = Program(graph, fused_steps(graph, graph.nodes))
    assert [s.op_type for s in fused.steps] == ["Conv", "Relu+MaxPool"]
    want = plain.run_list(_feeds())[0]
    for prog in (fused, pickle.loads(pickle.dumps(fused))):  # a stored program rebuilds the kernel
        got = prog.run_list(_feeds())[0]
        assert got.dtype == want.dtype and np.array_equal(got.view(np.uint32), want.view(np.uint32))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    ref = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(hal.InferenceSession(model, target="cpu").run(None, _feeds(nan=False))[0],
                               ref.run(None, _feeds(nan=False))[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pool,extra,indices", [
    ({"kernel_shape": [3, 3], "pads": [3, 0, 0, 0]}, False, False),       # a window of padding only
    ({"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, False, False),
    ({"kernel_shape": [2, 2], "dilations": [2, 2]}, False, False),
    ({"kernel_shape": [3, 3], "strides": [2, 2]}, True, False),           # the Relu's result read again
    ({"kernel_shape": [3, 3], "strides": [2, 2]}, False, True),           # MaxPool's Indices asked for
], ids=["all-pad window", "ceil mode", "dilated", "second reader", "indices"])
def test_relu_and_pool_stay_apart_where_the_order_could_matter(pool, extra, indices) -> None:
    model = _conv_relu_pool(pool, extra, indices)
    graph = optimize(from_proto(model, where="relu-pool"))
    fused = Program(graph, fused_steps(graph, graph.nodes))
    assert "Relu+MaxPool" not in [s.op_type for s in fused.steps]
    plain = Program(graph, steps_for_nodes(graph, graph.nodes))
    for a, b in zip(fused.run_list(_feeds()), plain.run_list(_feeds())):
        assert np.array_equal(a, b, equal_nan=True)
