"""Corners of hal's graph passes and engine that the whole-network sweep families
(``benchmarks.differential_models``) draw, pinned against onnxruntime on every target: the engine's
output and buffer hazards, the average-pool / pointwise-conv reordering, the rewrites over a channel
Concat (tests/test_differential.py runs the drawn networks themselves)."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from tests.kernels._onnxruntime import run_as_written

TARGETS = [t.name for t in hal.targets()]


def _model(nodes: list[onnx.NodeProto], feeds: dict[str, np.ndarray], outputs: list[str],
           inits: dict[str, np.ndarray], opset: int = 17) -> bytes:
    elem = {o: helper.np_dtype_to_tensor_dtype(v.dtype) for o, v in {**feeds, **inits}.items()}
    graph = helper.make_graph(
        nodes, "corner",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()],
        [helper.make_tensor_value_info(o, elem.get(o, TensorProto.FLOAT), None) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m.SerializeToString()


def _run(blob: bytes, feeds: dict[str, np.ndarray], target: str) -> list[np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hal.InferenceSession(blob, target=target).run(None, feeds)


def _same(want: list[np.ndarray], got: list[np.ndarray]) -> None:
    assert len(want) == len(got)
    for w, g in zip(want, got):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-5, atol=1e-5)
        assert np.asarray(g).shape == w.shape


@pytest.mark.parametrize("target", TARGETS)
def test_outputs_that_alias_inputs_weights_and_consumed_values(target: str) -> None:
    # An input returned as an output, a weight returned, a value returned and read on by elementwise
    # steps that could run in its buffer, Reshape / Transpose views of it read after those steps, an
    # Identity chain, one output listed twice, a dead branch: each output must be what onnxruntime
    # returns, the caller's feeds untouched, and a second run must not overwrite the first's outputs.
    r = np.random.default_rng(0)
    x = r.standard_normal((2, 3, 4)).astype(np.float32)
    inits = {"w": r.standard_normal((2, 3, 4)).astype(np.float32), "b": r.standard_normal(4).astype(np.float32)}
    nodes = [
        helper.make_node("Add", ["x", "b"], ["a"]),
        helper.make_node("Reshape", ["a", "flat_shape"], ["a_flat"]),
        helper.make_node("Transpose", ["a"], ["a_t"], perm=[2, 0, 1]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Mul", ["r", "r"], ["sq"]),
        helper.make_node("Tanh", ["sq"], ["th"]),
        helper.make_node("Neg", ["a_flat"], ["n"]),
        helper.make_node("Identity", ["th"], ["i1"]),
        helper.make_node("Identity", ["i1"], ["i2"]),
        helper.make_node("Exp", ["a_t"], ["dead"]),
        helper.make_node("Sub", ["i2", "w"], ["out"]),
    ]
    inits["flat_shape"] = np.array([-1], np.int64)
    blob = _model(nodes, {"x": x}, ["out", "a", "x", "w", "n", "a_t", "out"], inits)
    kept = x.copy()
    want = run_as_written(blob, {"x": x})
    first = _run(blob, {"x": x}, target)
    snapshot = [np.array(g, copy=True) for g in first]
    _same(want, first)
    np.testing.assert_array_equal(x, kept)
    session = hal.InferenceSession(blob, target=target)
    session.run(None, {"x": x[::-1].copy()})
    again = session.run(None, {"x": x})
    _same(want, again)
    for s, g in zip(snapshot, first):
        np.testing.assert_array_equal(np.asarray(g), s)


@pytest.mark.parametrize("target", TARGETS)
def test_shapes_computed_at_run_time(target: str) -> None:
    # Exporters' dynamic reshape (Shape -> Gather -> Unsqueeze -> Concat -> Reshape), an Expand to a
    # Shape-derived shape and a ConstantOfShape, over a value that is also returned.
    r = np.random.default_rng(1)
    x = r.standard_normal((3, 2, 5)).astype(np.float32)
    fill = helper.make_tensor("fill", TensorProto.FLOAT, [1], [0.5])
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("Expand", ["row", "s"], ["big"]),
        helper.make_node("ConstantOfShape", ["s"], ["half"], value=fill),
        helper.make_node("Mul", ["big", "half"], ["m"]),
        helper.make_node("Add", ["m", "x"], ["y"]),
        helper.make_node("Relu", ["flat"], ["rf"]),
    ]
    inits = {"zero": np.array(0, np.int64), "axes0": np.array([0], np.int64), "minus1": np.array([-1], np.int64),
             "row": r.standard_normal((1, 1, 5)).astype(np.float32)}
    blob = _model(nodes, {"x": x}, ["y", "rf", "flat"], inits)
    _same(run_as_written(blob, {"x": x}), _run(blob, {"x": x}, target))


POOLS = [dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, count_include_pad=1),
         dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0),
         dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1, pads=[1, 1, 0, 0], count_include_pad=0),
         dict(kernel_shape=[3, 3], strides=[2, 2], dilations=[2, 2], ceil_mode=1, count_include_pad=1),
         dict(kernel_shape=[3, 3], strides=[3, 3], auto_pad="SAME_LOWER", count_include_pad=0)]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("conv_first", [True, False])
@pytest.mark.parametrize("pool", range(len(POOLS)))
def test_average_pool_beside_a_pointwise_conv(target: str, conv_first: bool, pool: int) -> None:
    # hal swaps such a pair where the other order costs less (a 1x1 conv widening the map before a
    # stride-2 pool, a stride-1 pool before one narrowing it); a biased conv commutes with a pool only
    # where each window's weights sum to one, ceil mode's partial windows and dilations included.
    r = np.random.default_rng(pool)
    c, m = (3, 8) if conv_first else (8, 2)
    x = r.standard_normal((1, c, 8, 7)).astype(np.float32)
    inits = {"w": r.standard_normal((m, c, 1, 1)).astype(np.float32), "b": r.standard_normal(m).astype(np.float32)}
    conv = helper.make_node("Conv", ["x" if conv_first else "y", "w", "b"], ["y" if conv_first else "z"])
    avg = helper.make_node("AveragePool", ["y" if conv_first else "x"], ["z" if conv_first else "y"], **POOLS[pool])
    blob = _model([conv, avg] if conv_first else [avg, conv], {"x": x}, ["z"], inits, opset=19)
    _same(run_as_written(blob, {"x": x}), _run(blob, {"x": x}, target))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("reader", ["Conv", "MaxPool", "AveragePool"])
def test_channel_concat_read_by_a_pool_or_a_pointwise_conv(target: str, reader: str) -> None:
    # Inception's branches concatenated on channels, then a squeeze to one channel (hal splits the
    # conv over the parts on maps of 512 pixels and more) or a stride-2 pool (hal pools each part).
    r = np.random.default_rng(2)
    x = r.standard_normal((2, 3, 24, 24)).astype(np.float32)
    inits = {"w1": r.standard_normal((2, 3, 1, 1)).astype(np.float32),
             "w3": r.standard_normal((3, 3, 3, 3)).astype(np.float32),
             "sq": r.standard_normal((1, 8, 1, 1)).astype(np.float32), "sqb": np.array([0.3], np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["b1"]),
             helper.make_node("Conv", ["x", "w3"], ["b3"], pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["x"], ["bp"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["b3"], ["b3r"]),
             helper.make_node("Concat", ["b1", "b3r", "bp"], ["cat"], axis=1)]
    if reader == "Conv":
        nodes.append(helper.make_node("Conv", ["cat", "sq", "sqb"], ["y"], kernel_shape=[1, 1]))
    else:
        nodes.append(helper.make_node(reader, ["cat"], ["y"], kernel_shape=[2, 2], strides=[2, 2]))
    blob = _model(nodes, {"x": x}, ["y"], inits)
    _same(run_as_written(blob, {"x": x}), _run(blob, {"x": x}, target))
