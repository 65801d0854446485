"""The rewrites that change the order of work (``hal.graph.rewrite``, run by ``hal.graph.passes.optimize``).

``reorder_average_pools``: a 1x1 stride-1 conv and an average pool whose windows' weights sum to
one commute, bias included. Each reordered model is checked against onnxruntime running it as
written, and the pairs that must stay as they are (padding counted in the divisor, a conv that is
not pointwise, a result read twice, a swap that would cost more) are checked to keep their order.

``pool_concat_parts``: a pool over a channel Concat pools each part, bit for bit as the pool of the
whole; the cases it must leave alone (a Concat read twice, a spatial axis, MaxPool's Indices, a
pool that does not shrink) keep their nodes.

``split_concat_convs``: a pointwise conv over a channel Concat multiplies each part by its own
columns and adds the products, against onnxruntime; shape-only weights split into shape-only
parts; a conv with many filters, a grouped one, a small image or a Concat read twice keep theirs.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper, shape_inference

import hal
from hal.graph import passes
from hal.graph.ir import ShapeOnly
from hal.graph.load import load
from hal.graph.passes import optimize


def _model(pool_first: bool, x_shape, m: int, pool: dict, conv: dict | None = None, group: int = 1,
           bias: bool = True, extra_output: bool = False, filters: tuple[int, ...] | None = None):
    rng = np.random.default_rng(7)
    c = x_shape[1]
    nd = len(x_shape) - 2
    w = rng.standard_normal((m, c // group, *(filters or (1,) * nd))).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    conv_in = ["mid" if pool_first else "x", "W", *(["B"] if bias else [])]
    pool_node = helper.make_node("AveragePool", ["x" if pool_first else "mid"], ["mid" if pool_first else "y"], **pool)
    conv_node = helper.make_node("Conv", conv_in, ["y" if pool_first else "mid"], group=group, **(conv or {}))
    nodes = [pool_node, conv_node] if pool_first else [conv_node, pool_node]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_output:
        outputs.append(helper.make_tensor_value_info("mid", TensorProto.FLOAT, None))
    inits = [numpy_helper.from_array(w, "W"), *([numpy_helper.from_array(b, "B")] if bias else [])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                          outputs, inits)
    return shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def _ops(model) -> list[str]:
    return [n.op_type for n in optimize(load(model)).nodes]


def _against_onnxruntime(model, x_shape) -> None:
    x = np.random.default_rng(3).standard_normal(x_shape).astype(np.float32)
    got = hal.InferenceSession(model).run(None, {"x": x})
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


SWAPPED = [  # (pool first, x shape, filters, pool attrs, group, bias)
    (True, (1, 32, 10, 10), 8, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, 1, True),  # Inception's pool branch
    (True, (2, 32, 9, 7), 8, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, 2, False),   # grouped, no bias, batch 2
    (True, (1, 16, 12), 4, {"kernel_shape": [5], "pads": [2, 2]}, 1, True),              # 1-D
    (True, (1, 24, 5, 6, 7), 6, {"kernel_shape": [3, 3, 3], "auto_pad": "SAME_UPPER"}, 1, True),  # 3-D, SAME
    (False, (1, 256, 16, 16), 256, {"kernel_shape": [2, 2], "strides": [2, 2]}, 1, True),  # DenseNet's transition
    (False, (1, 128, 9, 9), 128, {"kernel_shape": [3, 3], "strides": [3, 3], "ceil_mode": 1}, 1, True),
]


@pytest.mark.parametrize("pool_first,x_shape,m,pool,group,bias", SWAPPED)
def test_the_cheaper_order_is_taken_and_computes_the_same(pool_first, x_shape, m, pool, group, bias) -> None:
    model = _model(pool_first, x_shape, m, pool, group=group, bias=bias)
    assert _ops(model) == (["Conv", "AveragePool"] if pool_first else ["AveragePool", "Conv"])
    _against_onnxruntime(model, x_shape)


KEPT = {
    "padding counted in the divisor": dict(pool_first=True, x_shape=(1, 32, 8, 8), m=8,
                                           pool={"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    "a 3x3 conv": dict(pool_first=True, x_shape=(1, 32, 8, 8), m=8, pool={"kernel_shape": [3, 3], "pads": [1] * 4},
                       conv={"pads": [1, 1, 1, 1]}, filters=(3, 3)),
    "a strided conv": dict(pool_first=True, x_shape=(1, 32, 8, 8), m=8, pool={"kernel_shape": [3, 3], "pads": [1] * 4},
                           conv={"strides": [2, 2]}),
    "the pooled result read twice": dict(pool_first=True, x_shape=(1, 32, 8, 8), m=8, extra_output=True,
                                         pool={"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    "more filters than channels": dict(pool_first=True, x_shape=(1, 8, 8, 8), m=32,
                                       pool={"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    "a pool that shrinks little after a conv that shrinks": dict(pool_first=False, x_shape=(1, 64, 8, 8), m=16,
                                                           pool={"kernel_shape": [2, 2]}),
}


@pytest.mark.parametrize("case", list(KEPT))
def test_pairs_that_must_or_should_stay_keep_their_order(case) -> None:
    kw = KEPT[case]
    model = _model(**kw)
    assert _ops(model) == (["AveragePool", "Conv"] if kw["pool_first"] else ["Conv", "AveragePool"])
    _against_onnxruntime(model, kw["x_shape"])


def _concat_pool_model(pool_op: str, pool: dict, axis: int = 1, concat_output: bool = False, indices: bool = False):
    rng = np.random.default_rng(11)
    f = TensorProto.FLOAT
    nodes = [helper.make_node("Relu", ["a"], ["ra"]), helper.make_node("Relu", ["b"], ["rb"]),
             helper.make_node("Concat", ["ra", "rb", "c"], ["cat"], axis=axis),
             helper.make_node(pool_op, ["cat"], ["y", "idx"] if indices else ["y"], **pool)]
    shapes = {"a": [1, 3, 9, 10], "b": [1, 5, 9, 10], "c": [1, 2, 9, 10]}
    if axis not in (1, -3):  # a spatial axis: parts as wide as they like
        shapes = {k: [1, 4, 9, v[1] + 4] for k, v in shapes.items()}
    outputs = [helper.make_tensor_value_info("y", f, None)]
    if concat_output:
        outputs.append(helper.make_tensor_value_info("cat", f, None))
    if indices:
        outputs.append(helper.make_tensor_value_info("idx", TensorProto.INT64, None))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(k, f, v) for k, v in shapes.items()], outputs)
    model = shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    return model, {k: rng.standard_normal(v).astype(np.float32) for k, v in shapes.items()}


POOLED_PARTS = [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2]}, 1),              # SqueezeNet's
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 0, 1, 1], "ceil_mode": 1}, -3),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}, 1),
]


@pytest.mark.parametrize("op,pool,axis", POOLED_PARTS)
def test_a_pool_over_a_channel_concat_pools_each_part(monkeypatch, op, pool, axis) -> None:
    model, feeds = _concat_pool_model(op, pool, axis)
    assert _ops(model) == ["Relu", "Relu", op, op, op, "Concat"]
    got = hal.InferenceSession(model).run(None, feeds)[0]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # bit for bit as the pool of the whole concat, NaN, inf and -0.0 included
    feeds["a"][0, 0, 2, 3], feeds["b"][0, 1, 4, 4], feeds["c"][0, 0, 0, 0] = np.nan, np.inf, -0.0
    got = hal.InferenceSession(model).run(None, feeds)[0]
    monkeypatch.setattr(passes, "pool_concat_parts", lambda graph: graph)
    whole = hal.InferenceSession(model).run(None, feeds)[0]
    assert _ops(model) == ["Relu", "Relu", "Concat", op]
    np.testing.assert_array_equal(got, whole)
    assert np.isnan(got[0, 0]).any() and np.isinf(got[0, 4]).any()


HALVING = {"kernel_shape": [2, 2], "strides": [2, 2]}
KEPT_CONCATS = {
    "the concat read twice": dict(pool_op="MaxPool", pool=HALVING, concat_output=True),
    "a spatial axis": dict(pool_op="MaxPool", pool=HALVING, axis=3),
    "MaxPool's indices": dict(pool_op="MaxPool", pool=HALVING, indices=True),
    "a pool that keeps the size": dict(pool_op="MaxPool", pool={"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
}


@pytest.mark.parametrize("case", list(KEPT_CONCATS))
def test_pools_over_concats_that_stay_whole(case) -> None:
    kw = KEPT_CONCATS[case]
    model, feeds = _concat_pool_model(**kw)
    assert _ops(model) == ["Relu", "Relu", "Concat", kw["pool_op"]]
    got = hal.InferenceSession(model).run(None, feeds)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, equal_nan=True)


def _concat_conv_model(filters: int, size: int = 24, group: int = 1, concat_output: bool = False, parts=(12, 20, 8)):
    rng = np.random.default_rng(5)
    f = TensorProto.FLOAT
    names = [f"x{i}" for i in range(len(parts))]
    c = sum(parts)
    w = rng.standard_normal((filters, c // group, 1, 1)).astype(np.float32)
    b = rng.standard_normal(filters).astype(np.float32)
    nodes = [helper.make_node("Relu", [names[0]], ["r0"]),
             helper.make_node("Concat", ["r0", *names[1:]], ["cat"], axis=1),
             helper.make_node("Conv", ["cat", "W", "B"], ["conv"], group=group),
             helper.make_node("Relu", ["conv"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", f, None)]
    if concat_output:
        outputs.append(helper.make_tensor_value_info("cat", f, None))
    inputs = [helper.make_tensor_value_info(n, f, [1, p, size, size]) for n, p in zip(names, parts)]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")]
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    return model, {n: rng.standard_normal((1, p, size, size)).astype(np.float32) for n, p in zip(names, parts)}


def test_a_pointwise_conv_over_a_concat_multiplies_each_part() -> None:
    model, feeds = _concat_conv_model(filters=8)
    assert _ops(model) == ["Relu", "Conv", "Conv", "Add", "Conv", "Add", "Relu"]
    got = hal.InferenceSession(model).run(None, feeds)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)


def test_shape_only_weights_split_into_shape_only_parts() -> None:
    model, _ = _concat_conv_model(filters=8)
    graph = load(model)
    graph.initializers["W"] = ShapeOnly(graph.initializers["W"].shape, np.dtype(np.float32))
    graph = passes.optimize(graph)
    parts = [graph.initializers[n.inputs[1]] for n in graph.nodes if n.op_type == "Conv"]
    assert [(type(p), p.shape) for p in parts] == [(ShapeOnly, (8, w, 1, 1)) for w in (12, 20, 8)]


KEPT_CONVS = {
    "many filters": dict(filters=16),            # 2 x 2 adds x 16 filters > 40 channels
    "a grouped conv": dict(filters=8, group=2, parts=(12, 20, 8)),
    "a small image": dict(filters=8, size=16),   # 256 pixels
    "the concat read twice": dict(filters=8, concat_output=True),
}


@pytest.mark.parametrize("case", list(KEPT_CONVS))
def test_convs_over_concats_that_stay_whole(case) -> None:
    model, feeds = _concat_conv_model(**KEPT_CONVS[case])
    assert _ops(model) == ["Relu", "Concat", "Conv", "Relu"]
    got = hal.InferenceSession(model).run(None, feeds)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
