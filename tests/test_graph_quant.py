"""hal.graph.quant: what constant folding records of a weight made of integer codes, and how views
carry it (Graph.dequantized), read against the ops' own semantics."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from hal.graph.ir import Dequantized, Node
from hal.graph.load import load
from hal.graph.passes import optimize
from hal.graph.quant import carried, dequantize_of

I8 = np.dtype(np.int8)


def _node(op: str, **attrs) -> Node:
    return Node("n", op, "", ["a", "b"], ["y"], attrs)


def test_dequantize_of_reads_the_scale_axis_as_the_op_does() -> None:
    assert dequantize_of(_node("DequantizeLinear", axis=0), I8, 2, 48, 13) == Dequantized(I8, 0)
    assert dequantize_of(_node("DequantizeLinear", axis=-1), I8, 2, 64, 13) == Dequantized(I8, 1)
    assert dequantize_of(_node("DequantizeLinear"), I8, 2, 64, 13) == Dequantized(I8, 1)  # axis defaults to 1
    assert dequantize_of(_node("DequantizeLinear", axis=1), I8, 2, 1, 13) == Dequantized(I8, None)
    assert dequantize_of(_node("DequantizeLinear", axis=0), I8, 2, 1, 10) == Dequantized(I8, None)
    assert dequantize_of(_node("DequantizeLinear", axis=0, block_size=32), I8, 2, 96, 21).block_size == 32
    # float8 codes, an axis out of range, an unknown rank or scale count, another op: nothing known
    assert dequantize_of(_node("DequantizeLinear"), np.dtype(np.float16), 2, 1, 13) is None
    assert dequantize_of(_node("DequantizeLinear", axis=2), I8, 2, 48, 13) is None
    assert dequantize_of(_node("DequantizeLinear", axis=0), I8, None, 48, 13) is None
    assert dequantize_of(_node("DequantizeLinear"), I8, 2, None, 13) is None
    assert dequantize_of(_node("QuantizeLinear"), I8, 2, 1, 13) is None


@pytest.mark.parametrize(("perm", "axis", "moved"), [([1, 0], 0, 1), ([1, 0], 1, 0), ([2, 0, 1], 0, 1),
                                                     ([2, 0, 1], 2, 0), (None, 0, 2)])
def test_a_transpose_carries_a_per_slice_scale_to_where_its_axis_goes(perm, axis, moved) -> None:
    rank = 3 if perm is None else len(perm)
    node = _node("Transpose") if perm is None else _node("Transpose", perm=perm)
    got = carried(node, Dequantized(I8, axis), rank)
    assert got == Dequantized(I8, moved)
    x = np.zeros((2, 3, 4)[:rank])
    assert np.transpose(x, perm).shape[moved] == x.shape[axis]


def test_a_reshape_keeps_one_scale_and_loses_a_per_slice_one() -> None:
    for op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
        assert carried(_node(op), Dequantized(I8, None), 2) == Dequantized(I8, None)
        assert carried(_node(op), Dequantized(I8, 0), 2) is None
    assert carried(_node("Identity"), Dequantized(I8, 1), None) == Dequantized(I8, 1)
    assert carried(_node("Transpose"), Dequantized(I8, 0), None) is None  # rank unknown
    assert carried(_node("Transpose", perm=[1, 0]), Dequantized(I8, 0, 32), 2) is None  # blocks
    assert carried(_node("Relu"), Dequantized(I8, None), 2) is None


def test_folding_records_what_it_folds_and_pruning_drops_it() -> None:
    codes = np.arange(-24, 24, dtype=np.int8).reshape(6, 8)
    nodes = [helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"], axis=0),
             helper.make_node("Transpose", ["w"], ["wt"]),
             helper.make_node("DequantizeLinear", ["uq", "us"], ["u"]),  # nothing reads u
             helper.make_node("MatMul", ["x", "wt"], ["y"])]
    inits = {"wq": codes, "ws": np.linspace(0.1, 0.6, 6).astype(np.float32),
             "uq": codes.astype(np.uint8), "us": np.float32(0.5)}
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 6])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    g = optimize(load(model.SerializeToString()))
    assert [n.op_type for n in g.nodes] == ["MatMul"]
    assert g.dequantized == {"wt": Dequantized(I8, 1)}  # w and u: folded, then read by no node
    np.testing.assert_array_equal(g.initializers["wt"], (codes * inits["ws"][:, None]).T)


def test_a_conv_split_over_a_concat_keeps_its_weights_record() -> None:
    # a pointwise Conv over a channel Concat runs as one Conv per part (hal.graph.rewrite): each
    # part's weight is a slice along the input channels, its per-output-channel scales unchanged
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("QuantizeLinear", [x, "s", "z"], [f"{x}q"]) for x in ("a", "b")]
    nodes += [helper.make_node("DequantizeLinear", [f"{x}q", "s", "z"], [f"{x}d"]) for x in ("a", "b")]
    nodes += [helper.make_node("Concat", ["ad", "bd"], ["c"], axis=1),
              helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"], axis=0),
              helper.make_node("Conv", ["c", "w"], ["y"])]
    inits = {"s": np.float32(0.05), "z": np.int8(0), "wq": rng.integers(-127, 128, (8, 32, 1, 1)).astype(np.int8),
             "ws": rng.uniform(0.01, 0.02, 8).astype(np.float32)}
    shape = [1, 16, 32, 32]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape) for x in "ab"],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 32, 32])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    g = optimize(load(model.SerializeToString()))
    weights = [n.inputs[1] for n in g.nodes if n.op_type == "Conv"]
    assert len(weights) == 2
    assert all(g.dequantized[w] == Dequantized(I8, 0) for w in weights)
