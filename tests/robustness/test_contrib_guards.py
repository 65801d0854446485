"""onnxruntime's ops that can ask for more memory than their inputs hold (``hal.op_sizes.contrib``)
are refused before they allocate, as a ResourceError that names the node: a fed int32 total
length sizes GroupQueryAttention's cache; long queries and keys square into attention scores; a
fused convolution's pads are attributes. Without the rules each of these allocated (or died trying).
Where the feeds' sizes are declared, the shape stand-ins (``hal.graph.contrib``) let the compile
refuse them first; here they are symbolic, so the run's guard does."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.errors import ResourceError

MS = "com.microsoft"
LIMIT = 1 << 26  # 64 MiB


def _model(node: onnx.NodeProto, inputs: dict[str, tuple[int, list[int]]], outputs: list[tuple[str, int]],
           inits: list[onnx.TensorProto] = ()) -> bytes:
    """Feeds of symbolic sizes (each dim its own name), so nothing is planned before a run."""
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, t, [f"{n}{i}" for i in range(len(s))])
                                            for n, (t, s) in inputs.items()],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [f"{n}{i}" for i in range(r)])
                               for n, r in outputs], list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)]
                             ).SerializeToString()


def _refused(blob: bytes, feeds: dict[str, np.ndarray], node: str) -> None:
    session = hal.InferenceSession(blob, target="cpu", cache_dir=False, max_memory=LIMIT)
    with pytest.raises(ResourceError, match=node):
        session.run(None, feeds)


def test_a_fed_total_length_cannot_size_a_group_query_cache() -> None:
    node = helper.make_node("GroupQueryAttention", ["q", "k", "v", "", "", "lens", "total"], ["y", "pk", "pv"],
                            domain=MS, name="gqa", num_heads=4, kv_num_heads=2)
    f32 = TensorProto.FLOAT
    blob = _model(node, {"q": (f32, [1, 5, 32]), "k": (f32, [1, 5, 16]), "v": (f32, [1, 5, 16]),
                         "lens": (TensorProto.INT32, [1]), "total": (TensorProto.INT32, [])},
                  [("y", 3), ("pk", 4), ("pv", 4)])
    ones = {n: np.ones(s, np.float32) for n, s in (("q", (1, 5, 32)), ("k", (1, 5, 16)), ("v", (1, 5, 16)))}
    _refused(blob, {**ones, "lens": np.array([4], np.int32), "total": np.array(2**31 - 1, np.int32)}, "gqa")


@pytest.mark.parametrize("op", ["MultiHeadAttention", "Attention", "QAttention"])
def test_long_sequences_cannot_square_into_scores(op: str) -> None:
    """2^13 queries by 2^13 keys of 4 features: 1 MiB in, 256 MiB of scores a head."""
    n = 1 << 13
    if op == "QAttention":
        consts = [numpy_helper.from_array(np.asarray(v), k) for k, v in
                  {"w": np.ones((4, 12), np.int8), "b": np.zeros(12, np.float32), "s": np.float32(0.1)}.items()]
        node = helper.make_node(op, ["q", "w", "b", "s", "s"], ["y"], domain=MS, name="att", num_heads=1)
        blob = _model(node, {"q": (TensorProto.UINT8, [1, n, 4])}, [("y", 3)], consts)
        feeds = {"q": np.ones((1, n, 4), np.uint8)}
    elif op == "Attention":
        w = numpy_helper.from_array(np.ones((4, 12), np.float32), "w")
        node = helper.make_node(op, ["q", "w"], ["y"], domain=MS, name="att", num_heads=1)
        blob = _model(node, {"q": (TensorProto.FLOAT, [1, n, 4])}, [("y", 3)], [w])
        feeds = {"q": np.ones((1, n, 4), np.float32)}
    else:
        node = helper.make_node(op, ["q", "k", "v"], ["y"], domain=MS, name="att", num_heads=1)
        blob = _model(node, {x: (TensorProto.FLOAT, [1, n, 4]) for x in "qkv"}, [("y", 3)])
        feeds = {x: np.ones((1, n, 4), np.float32) for x in "qkv"}
    _refused(blob, feeds, "att")


def test_fused_conv_pads_cannot_ask_for_terabytes() -> None:
    w = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")
    node = helper.make_node("FusedConv", ["x", "w"], ["y"], domain=MS, name="conv", activation="Relu",
                            pads=[1 << 20, 1 << 20, 1 << 20, 1 << 20])
    blob = _model(node, {"x": (TensorProto.FLOAT, [1, 1, 2, 2])}, [("y", 4)], [w])
    _refused(blob, {"x": np.ones((1, 1, 2, 2), np.float32)}, "conv")


def test_fused_matmul_reads_its_operands_transposed() -> None:
    """(2^14, 2) x (2^14, 2) read with transB as (2^14, 2) x (2, 2^14): a 1 GiB product."""
    node = helper.make_node("FusedMatMul", ["a", "b"], ["y"], domain=MS, name="mm", transB=1)
    blob = _model(node, {"a": (TensorProto.FLOAT, [1 << 14, 2]), "b": (TensorProto.FLOAT, [1 << 14, 2])}, [("y", 2)])
    _refused(blob, {"a": np.ones((1 << 14, 2), np.float32), "b": np.ones((1 << 14, 2), np.float32)}, "mm")


@pytest.mark.parametrize("target", ["cpu", "gpu", "lpu", "wafer"])
def test_an_onnxruntime_op_short_of_inputs_is_refused_not_a_plugin_fault(target: str) -> None:
    """onnx's checker counts onnx ops' inputs, not onnxruntime's: a FusedMatMul given A alone (fuzz
    seed 30) reached the GPU's cost model, which indexed its B (a PluginError). Every target now
    refuses such a node from its kernel's signature, before planning it."""
    node = helper.make_node("FusedMatMul", ["a"], ["y"], domain=MS, name="mm")
    blob = _model(node, {"a": (TensorProto.FLOAT, [4, 4])}, [("y", 2)])
    with pytest.raises(hal.UnsupportedOpError, match=r"mm \(FusedMatMul\): FusedMatMul takes at least 2 inputs"):
        hal.InferenceSession(blob, target=target, cache_dir=False)
