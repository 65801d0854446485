"""Small models and helpers shared by the robustness tests (hostile, broken and bomb models).

Every test in tests/robustness runs on every installed target (``TARGETS``); sessions use
``fallback="allow"`` so that a target refusing an op still compiles its share while the battery
checks what hal answers.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import hal

TARGETS = [s.name for s in hal.targets()]
OPSET = 17


#: (target, case) -> why it fails today; such cases are xfail without running (reported to the owners)
KNOWN_ISSUES: dict[tuple[str, str], str] = {}


def known_issue_params(targets: list[str], case: str) -> list[Any]:
    """``targets`` as pytest params, the ones with a known issue for ``case`` marked xfail(run=False)."""
    import pytest

    return [pytest.param(t, marks=pytest.mark.xfail(run=False, reason=KNOWN_ISSUES[(t, case)]))
            if (t, case) in KNOWN_ISSUES else t for t in targets]


def session(model: Any, target: str, **kw: Any) -> hal.InferenceSession:
    """A session that lets refused nodes fall back to cpu (quietly), so every target compiles its part."""
    kw.setdefault("fallback", "allow")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hal.InferenceSession(model, target=target, **kw)


def model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
          inits: list[onnx.TensorProto] | None = None, opset: int = OPSET, **graph_kw: Any) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, inits or [], **graph_kw)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def vi(name: str, elem: int, shape: list[Any] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


F, I64 = TensorProto.FLOAT, TensorProto.INT64


def sym(rank: int) -> list[str]:
    """An output shape of symbolic dims (the checker wants a shape; inference fills in what it knows)."""
    return [f"d{i}" for i in range(rank)]


def relu_model() -> onnx.ModelProto:
    return model([helper.make_node("Relu", ["x"], ["y"], name="r")], [vi("x", F, [2, 3])], [vi("y", F, [2, 3])])


def mlp_model() -> onnx.ModelProto:
    """x[2,4] -> MatMul -> Add -> Relu -> MatMul -> Softmax: enough ops to exercise each target's program."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h0"], name="mm1"),
             helper.make_node("Add", ["h0", "b1"], ["h1"], name="add"),
             helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
             helper.make_node("MatMul", ["h2", "w2"], ["z"], name="mm2"),
             helper.make_node("Softmax", ["z"], ["y"], name="sm", axis=-1)]
    return model(nodes, [vi("x", F, [2, 4])], [vi("y", F, [2, 3])], [w1, b1, w2])


def elementwise_model() -> onnx.ModelProto:
    """Ops whose IEEE behaviour on NaN / Inf numpy defines: y = exp(x) * 2 + x / x, z = sqrt(x)."""
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    nodes = [helper.make_node("Exp", ["x"], ["e"], name="exp"),
             helper.make_node("Mul", ["e", "two"], ["m"], name="mul"),
             helper.make_node("Div", ["x", "x"], ["d"], name="div"),
             helper.make_node("Add", ["m", "d"], ["y"], name="add"),
             helper.make_node("Sqrt", ["x"], ["z"], name="sqrt"),
             helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("ReduceMax", ["x"], ["mx"], name="rmax", keepdims=0)]
    return model(nodes, [vi("x", F, [2, 4])], [vi("y", F, [2, 4]), vi("z", F, [2, 4]), vi("r", F, [2, 4]),
                                              vi("mx", F, [])], [two])


def save_external(m: onnx.ModelProto, folder: Path, location: str) -> Path:
    """Save ``m`` with its weights in external data, then point every tensor at ``location``."""
    path = folder / "m.onnx"
    onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin",
                    size_threshold=0)
    saved = onnx.load(str(path), load_external_data=False)
    for t in saved.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    path.write_bytes(saved.SerializeToString())
    return path


def matmul_with_weight() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    return model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [vi("x", F, [1, 4])],
                 [vi("y", F, [1, 3])], [w])


def symlink_supported(tmp: Path) -> bool:
    try:
        os.symlink(tmp / "nothing", tmp / ".probe")
    except (OSError, NotImplementedError):
        return False
    (tmp / ".probe").unlink()
    return True


# -- value-dependent output sizes: a tiny feed asks for an enormous tensor ------------------------

#: the max_memory the bombs run under: each hostile feed spans less, what it asks for more
BOMB_BOUND = 1 << 28


def bomb_models() -> dict[str, tuple[onnx.ModelProto, dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """op -> (model, hostile feeds, harmless feeds). Hostile feeds ask for more than ``BOMB_BOUND`` (most
    for over 1 PiB) while each spans less as an array (a zero-stride view may hold one element);
    harmless ones ask for bytes."""
    big = 2**20
    out: dict[str, tuple[onnx.ModelProto, dict[str, np.ndarray], dict[str, np.ndarray]]] = {}

    def shape_feed(*dims: int) -> np.ndarray:
        return np.array(dims, dtype=np.int64)

    out["Expand"] = (
        model([helper.make_node("Expand", ["x", "s"], ["e"], name="expand"),
               helper.make_node("Add", ["e", "e"], ["y"], name="add")],
              [vi("x", F, [1]), vi("s", I64, [3])], [vi("y", F, sym(3))]),
        {"x": np.ones(1, np.float32), "s": shape_feed(big, big, big)},
        {"x": np.ones(1, np.float32), "s": shape_feed(2, 3, 1)})
    out["Tile"] = (
        model([helper.make_node("Tile", ["x", "r"], ["y"], name="tile")],
              [vi("x", F, [2, 2]), vi("r", I64, [2])], [vi("y", F, sym(2))]),
        {"x": np.ones((2, 2), np.float32), "r": shape_feed(big * big, big)},
        {"x": np.ones((2, 2), np.float32), "r": shape_feed(2, 3)})
    out["ConstantOfShape"] = (
        model([helper.make_node("ConstantOfShape", ["s"], ["y"], name="cos")], [vi("s", I64, [3])],
              [vi("y", F, sym(3))]),
        {"s": shape_feed(big, big, big)}, {"s": shape_feed(2, 2, 2)})
    out["Range"] = (
        model([helper.make_node("Range", ["a", "b", "d"], ["y"], name="range")],
              [vi("a", F, []), vi("b", F, []), vi("d", F, [])], [vi("y", F, sym(1))]),
        {"a": np.array(0, np.float32), "b": np.array(1e18, np.float32), "d": np.array(1, np.float32)},
        {"a": np.array(0, np.float32), "b": np.array(5, np.float32), "d": np.array(1, np.float32)})
    out["Range-inf"] = (
        out["Range"][0],
        {"a": np.array(0, np.float32), "b": np.array(np.inf, np.float32), "d": np.array(1, np.float32)},
        out["Range"][2])
    out["Pad"] = (
        model([helper.make_node("Pad", ["x", "p"], ["y"], name="pad")],
              [vi("x", F, [2, 2]), vi("p", I64, [4])], [vi("y", F, sym(2))]),
        {"x": np.ones((2, 2), np.float32), "p": shape_feed(big * big, big * big, 0, 0)},
        {"x": np.ones((2, 2), np.float32), "p": shape_feed(1, 1, 1, 1)})
    out["OneHot"] = (
        model([helper.make_node("OneHot", ["i", "d", "v"], ["y"], name="onehot")],
              [vi("i", I64, [4]), vi("d", I64, []), vi("v", F, [2])], [vi("y", F, sym(2))]),
        {"i": np.arange(4, dtype=np.int64), "d": np.array(2**60, np.int64), "v": np.array([0, 1], np.float32)},
        {"i": np.arange(4, dtype=np.int64), "d": np.array(5, np.int64), "v": np.array([0, 1], np.float32)})
    out["Resize"] = (
        model([helper.make_node("Resize", ["x", "", "", "sz"], ["y"], name="resize", mode="nearest")],
              [vi("x", F, [1, 1, 2, 2]), vi("sz", I64, [4])], [vi("y", F, sym(4))]),
        {"x": np.ones((1, 1, 2, 2), np.float32), "sz": shape_feed(1, 1, big * 8, big * 8)},
        {"x": np.ones((1, 1, 2, 2), np.float32), "sz": shape_feed(1, 1, 4, 4)})
    # Dynamic dims: inputs that are cheap views (zero strides) but whose product is enormous.
    wide = np.broadcast_to(np.ones(1, np.float32), (big, 1))
    tall = np.broadcast_to(np.ones(1, np.float32), (1, big))
    out["Add-broadcast"] = (
        model([helper.make_node("Add", ["a", "b"], ["y"], name="add")],
              [vi("a", F, ["n", 1]), vi("b", F, [1, "m"])], [vi("y", F, ["n", "m"])]),
        {"a": wide, "b": tall},
        {"a": np.ones((2, 1), np.float32), "b": np.ones((1, 3), np.float32)})
    out["MatMul"] = (
        model([helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")],
              [vi("a", F, ["n", 1]), vi("b", F, [1, "m"])], [vi("y", F, ["n", "m"])]),
        {"a": wide, "b": tall},
        {"a": np.ones((2, 1), np.float32), "b": np.ones((1, 3), np.float32)})
    data = numpy_helper.from_array(np.ones((4, 4096), np.float32), "data")
    out["Gather"] = (
        model([helper.make_node("Gather", ["data", "i"], ["y"], name="gather", axis=0)],
              [vi("i", I64, ["n", "m"])], [vi("y", F, sym(3))], [data]),
        {"i": np.broadcast_to(np.zeros(1, np.int64), (2**13, 2**10))},  # 64 MB as an array; 128 GiB gathered
        {"i": np.zeros((2, 2), np.int64)})
    # DeformConv samples every input channel at every tap of the offset's grid, in float64: with
    # 2**18 channels (a zero-stride view of 38 MB) that is 302 MB however small its output
    channels = np.broadcast_to(np.ones(1, np.float32), (1, 2**18, 6, 6))
    out["DeformConv"] = (
        model([helper.make_node("DeformConv", ["x", "w", "o"], ["y"], name="deform", kernel_shape=[3, 3])],
              [vi("x", F, [1, "c", 6, 6]), vi("w", F, [1, "c", 3, 3]), vi("o", F, [1, 18, 4, 4])],
              [vi("y", F, [1, 1, 4, 4])], opset=19),
        {"x": channels, "w": np.broadcast_to(np.ones(1, np.float32), (1, 2**18, 3, 3)),
         "o": np.zeros((1, 18, 4, 4), np.float32)},
        {"x": np.ones((1, 2, 6, 6), np.float32), "w": np.ones((1, 2, 3, 3), np.float32),
         "o": np.zeros((1, 18, 4, 4), np.float32)})
    # a transform's length is an input's value: 2**40 points from an 8-sample signal
    signal = np.ones((1, 64, 1), np.float32)
    out["DFT"] = (
        model([helper.make_node("DFT", ["x", "n"], ["y"], name="dft")], [vi("x", F, [1, 64, 1]), vi("n", I64, [])],
              [vi("y", F, sym(3))], opset=20),
        {"x": signal, "n": np.array(2**40, np.int64)}, {"x": signal, "n": np.array(8, np.int64)})
    out["STFT"] = (
        model([helper.make_node("STFT", ["x", "step", "", "len"], ["y"], name="stft")],
              [vi("x", F, [1, 64, 1]), vi("step", I64, []), vi("len", I64, [])], [vi("y", F, sym(4))], opset=17),
        {"x": signal, "step": np.array(8, np.int64), "len": np.array(2**40, np.int64)},
        {"x": signal, "step": np.array(8, np.int64), "len": np.array(16, np.int64)})
    # sizes no single input bounds: attention's scores (q length x kv length), GridSample's channels
    # times its points, a recurrence's hidden_size (an attribute) times its steps
    def ones(*shape: int) -> np.ndarray:
        return np.broadcast_to(np.ones(1, np.float32), shape)

    out["Attention"] = (
        model([helper.make_node("Attention", ["q", "k", "v"], ["y"], name="attention")],
              [vi(n, F, [1, 1, "s", 1]) for n in "qkv"], [vi("y", F, [1, 1, "s", 1])], opset=23),
        {n: ones(1, 1, big * 16, 1) for n in "qkv"}, {n: np.ones((1, 1, 4, 1), np.float32) for n in "qkv"})
    out["GridSample"] = (
        model([helper.make_node("GridSample", ["x", "g"], ["y"], name="grid")],
              [vi("x", F, [1, "c", 2, 2]), vi("g", F, [1, "h", "w", 2])], [vi("y", F, [1, "c", "h", "w"])],
              opset=20),
        {"x": ones(1, big, 2, 2), "g": np.zeros((1, 1024, 1024, 2), np.float32)},
        {"x": np.ones((1, 2, 2, 2), np.float32), "g": np.zeros((1, 3, 3, 2), np.float32)})
    out["LSTM"] = (
        model([helper.make_node("LSTM", ["x", "w", "r"], ["y"], name="lstm", hidden_size=64)],
              [vi("x", F, ["s", "b", 1]), vi("w", F, [1, 256, 1]), vi("r", F, [1, 256, 64])],
              [vi("y", F, ["s", 1, "b", 64])], opset=14),
        {"x": ones(2**12, 2**12, 1), "w": np.zeros((1, 256, 1), np.float32), "r": np.zeros((1, 256, 64), np.float32)},
        {"x": np.ones((3, 2, 1), np.float32), "w": np.zeros((1, 256, 1), np.float32),
         "r": np.zeros((1, 256, 64), np.float32)})
    # Col2Im's image is an input's value and its stride an attribute: one column, any image
    out["Col2Im"] = (
        model([helper.make_node("Col2Im", ["x", "img", "blk"], ["y"], name="col2im", strides=[big, big])],
              [vi("x", F, [1, 1, 1]), vi("img", I64, [2]), vi("blk", I64, [2])], [vi("y", F, sym(4))], opset=18),
        {"x": np.ones((1, 1, 1), np.float32), "img": shape_feed(big, big), "blk": shape_feed(1, 1)},
        {"x": np.ones((1, 1, 1), np.float32), "img": shape_feed(1, 1), "blk": shape_feed(1, 1)})
    out["Multinomial"] = (
        model([helper.make_node("Multinomial", ["x"], ["y"], name="draw", sample_size=big)],
              [vi("x", F, ["b", 4])], [vi("y", TensorProto.INT32, ["b", big])], opset=17),
        {"x": ones(big, 4)}, {"x": np.zeros((1, 4), np.float32)})
    strings = np.array(["ab"], dtype=object)
    out["StringConcat"] = (
        model([helper.make_node("StringConcat", ["a", "b"], ["y"], name="concat")],
              [vi("a", TensorProto.STRING, ["n", 1]), vi("b", TensorProto.STRING, [1, "m"])],
              [vi("y", TensorProto.STRING, ["n", "m"])], opset=20),
        {"a": np.broadcast_to(strings, (big, 1)), "b": np.broadcast_to(strings, (1, big))},
        {"a": np.broadcast_to(strings, (2, 1)), "b": np.broadcast_to(strings, (1, 3))})
    # outputs that are a product of two inputs' sizes, or a multiple of one input's
    out["GatherND"] = (
        model([helper.make_node("GatherND", ["d", "i"], ["y"], name="gathernd")],
              [vi("d", F, [1, "n"]), vi("i", I64, ["k", 1])], [vi("y", F, ["k", "n"])]),
        {"d": np.zeros((1, 2**16), np.float32), "i": np.broadcast_to(np.zeros(1, np.int64), (2**16, 1))},
        {"d": np.zeros((1, 4), np.float32), "i": np.zeros((3, 1), np.int64)})
    out["NonZero"] = (
        model([helper.make_node("NonZero", ["x"], ["y"], name="nonzero")], [vi("x", TensorProto.BOOL, ["a", "b"])],
              [vi("y", I64, [2, "n"])]),
        {"x": np.broadcast_to(np.ones(1, np.bool_), (2**13, 2**14))}, {"x": np.eye(3, dtype=np.bool_)})
    out["Concat"] = (
        model([helper.make_node("Concat", ["x"] * 5, ["y"], name="concat", axis=0)], [vi("x", F, ["n", 16])],
              [vi("y", F, ["m", 16])]),
        {"x": ones(2**20, 16)}, {"x": np.ones((2, 16), np.float32)})
    out["ConcatFromSequence"] = (
        model([helper.make_node("SequenceConstruct", ["x"] * 8, ["s"], name="seq"),
               helper.make_node("ConcatFromSequence", ["s"], ["y"], name="concat_seq", axis=0)],
              [vi("x", F, ["n", 16])], [vi("y", F, ["m", 16])]),
        {"x": ones(2**20, 16)}, {"x": np.ones((2, 16), np.float32)})
    # RoiAlign samples each bin on a grid as wide as the roi over the output (the rois' values)
    out["RoiAlign"] = (
        model([helper.make_node("RoiAlign", ["x", "rois", "bi"], ["y"], name="roialign", output_height=2,
                                output_width=2)],
              [vi("x", F, [1, 4, 8, 8]), vi("rois", F, [1, 4]), vi("bi", I64, [1])], [vi("y", F, [1, 4, 2, 2])],
              opset=16),
        {"x": np.ones((1, 4, 8, 8), np.float32), "rois": np.array([[0, 0, 1e6, 1e6]], np.float32),
         "bi": np.zeros(1, np.int64)},
        {"x": np.ones((1, 4, 8, 8), np.float32), "rois": np.array([[0, 0, 7, 7]], np.float32),
         "bi": np.zeros(1, np.int64)})
    out["QLinearMatMul"] = (
        model([helper.make_node("QLinearMatMul", ["a", "s", "z", "b", "s", "z", "s", "z"], ["y"], name="qmm")],
              [vi("a", TensorProto.UINT8, ["n", 1]), vi("b", TensorProto.UINT8, [1, "m"]), vi("s", F, []),
               vi("z", TensorProto.UINT8, [])], [vi("y", TensorProto.UINT8, ["n", "m"])]),
        {"a": np.broadcast_to(np.ones(1, np.uint8), (2**16, 1)), "b": np.broadcast_to(np.ones(1, np.uint8), (1, 2**16)),
         "s": np.array(1, np.float32), "z": np.array(0, np.uint8)},
        {"a": np.ones((2, 1), np.uint8), "b": np.ones((1, 3), np.uint8), "s": np.array(1, np.float32),
         "z": np.array(0, np.uint8)})
    # a reduction keeps the dims it does not reduce: an empty input, (2**32, 0, 4), spans no bytes,
    # and reduced over its zero axis (the axes a feed's values) it is (2**32, 1, 4), 64 GiB
    empty = np.empty((2**32, 0, 4), np.float32)
    out["ReduceSum-empty"] = (
        model([helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="reduce")],
              [vi("x", F, ["a", "b", 4]), vi("axes", I64, [1])], [vi("y", F, sym(3))], opset=18),
        {"x": empty, "axes": shape_feed(1)}, {"x": np.ones((2, 3, 4), np.float32), "axes": shape_feed(1)})
    out["LayerNormalization-empty"] = (
        model([helper.make_node("LayerNormalization", ["x", "scale"], ["y"], name="norm", axis=-1)],
              [vi("x", F, ["a", 4, "c"]), vi("scale", F, ["c"])], [vi("y", F, sym(3))], opset=17),
        {"x": np.empty((2**32, 4, 0), np.float32), "scale": np.empty(0, np.float32)},
        {"x": np.ones((2, 4, 3), np.float32), "scale": np.ones(3, np.float32)})
    out["TopK-empty"] = (
        model([helper.make_node("TopK", ["x", "k"], ["y", "i"], name="topk")],
              [vi("x", F, ["a", "b"]), vi("k", I64, [1])], [vi("y", F, sym(2)), vi("i", I64, sym(2))]),
        {"x": np.empty((2**32, 0), np.float32), "k": shape_feed(0)},
        {"x": np.ones((2, 3), np.float32), "k": shape_feed(1)})
    # a sequence of views: each a numpy object header, however little it views
    out["SplitToSequence"] = (
        model([helper.make_node("SplitToSequence", ["x"], ["s"], name="split", axis=0),
               helper.make_node("SequenceLength", ["s"], ["y"], name="length")],
              [vi("x", F, ["a", "b"])], [vi("y", I64, [])]),
        {"x": np.empty((2**28, 0), np.float32)}, {"x": np.ones((3, 2), np.float32)})
    # outputs that are a product of two inputs' sizes, or of an input and an attribute
    ml = [("", OPSET), ("ai.onnx.ml", 5)]
    out["ArrayFeatureExtractor"] = (
        _with_opsets(model([helper.make_node("ArrayFeatureExtractor", ["x", "i"], ["y"], name="extract",
                                             domain="ai.onnx.ml")],
                           [vi("x", F, ["n", "c"]), vi("i", I64, ["k"])], [vi("y", F, ["n", "k"])]), ml),
        {"x": ones(2**16, 1), "i": np.zeros(2**16, np.int64)},
        {"x": np.ones((2, 3), np.float32), "i": np.array([2, 0], np.int64)})
    out["TreeEnsemble"] = (
        _with_opsets(model([helper.make_node(
            "TreeEnsemble", ["x"], ["y"], name="trees", domain="ai.onnx.ml", n_targets=big, aggregate_function=1,
            post_transform=0, tree_roots=[0], nodes_modes=numpy_helper.from_array(np.zeros(1, np.uint8)),
            nodes_featureids=[0], nodes_splits=numpy_helper.from_array(np.zeros(1, np.float32)),
            nodes_truenodeids=[0], nodes_trueleafs=[1], nodes_falsenodeids=[1], nodes_falseleafs=[1],
            leaf_targetids=[0, big - 1], leaf_weights=numpy_helper.from_array(np.ones(2, np.float32)))],
            [vi("x", F, ["n", 1])], [vi("y", F, ["n", big])]), ml),
        {"x": np.zeros((2**12, 1), np.float32)}, {"x": np.zeros((2, 1), np.float32)})
    out["LinearAttention"] = (
        model([helper.make_node("LinearAttention", ["q", "k", "v"], ["y", "state"], name="linear", q_num_heads=1,
                                kv_num_heads=1, update_rule="linear")],
              [vi(n, F, [1, "t", "d"]) for n in "qkv"], [vi("y", F, [1, "t", "d"]), vi("state", F, sym(4))],
              opset=27),
        {n: np.ones((1, 1, 2**15), np.float32) for n in "qkv"}, {n: np.ones((1, 2, 4), np.float32) for n in "qkv"})
    return out


def _with_opsets(m: onnx.ModelProto, opsets: list[tuple[str, int]]) -> onnx.ModelProto:
    del m.opset_import[:]
    m.opset_import.extend(helper.make_opsetid(d, v) for d, v in opsets)
    return m


def static_bomb_model() -> onnx.ModelProto:
    """Declared dimensions whose product needs ~4 PB: refused at compile, before anything runs."""
    return model([helper.make_node("Relu", ["x"], ["y"], name="r")], [vi("x", F, [10**6, 10**6, 1000])],
                 [vi("y", F, [10**6, 10**6, 1000])])


def constant_bomb_model() -> onnx.ModelProto:
    """ConstantOfShape of a constant shape: shape inference makes the enormous size static."""
    s = numpy_helper.from_array(np.array([2**20, 2**20, 2**20], np.int64), "s")
    return model([helper.make_node("ConstantOfShape", ["s"], ["c"], name="cos"),
                  helper.make_node("ReduceSum", ["c"], ["y"], name="sum", keepdims=0)],
                 [], [vi("y", F, [])], [s])


def lying_constant_bomb_model() -> onnx.ModelProto:
    """As above, but the model declares the 2 GB intermediate as one element: folding must not trust it."""
    s = numpy_helper.from_array(np.array([1000, 1000, 500], np.int64), "s")
    return model([helper.make_node("ConstantOfShape", ["s"], ["c"], name="cos"),
                  helper.make_node("ReduceSum", ["c"], ["y"], name="sum", keepdims=0)],
                 [], [vi("y", F, [])], [s], value_info=[vi("c", F, [1])])


def sparse_initializer_bomb_model() -> onnx.ModelProto:
    """One stored value declaring a dense [2^20, 2^20, 2^20] weight."""
    values = numpy_helper.from_array(np.array([1.0], np.float32), "w")
    indices = numpy_helper.from_array(np.array([0], np.int64), "w_idx")
    sp = helper.make_sparse_tensor(values, indices, [2**20, 2**20, 2**20])
    g = helper.make_graph([helper.make_node("Identity", ["w"], ["y"], name="id")], "g", [], [vi("y", F, sym(3))],
                          sparse_initializer=[sp])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])


def sparse_constant_bomb_model() -> onnx.ModelProto:
    values = numpy_helper.from_array(np.array([1.0], np.float32), "v")
    indices = numpy_helper.from_array(np.array([0], np.int64), "v_idx")
    sp = helper.make_sparse_tensor(values, indices, [2**20, 2**20, 2**20])
    node = helper.make_node("Constant", [], ["c"], name="const", sparse_value=sp)
    return model([node, helper.make_node("Identity", ["c"], ["y"], name="id")], [], [vi("y", F, sym(3))])


def runaway_loop_model() -> onnx.ModelProto:
    """Loop with trip count INT64_MAX and a body that is one Identity: endless without a timeout."""
    body = helper.make_graph([helper.make_node("Identity", ["c_in"], ["c_out"]),
                              helper.make_node("Identity", ["v_in"], ["v_out"])], "body",
                             [vi("i", I64, []), helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
                              vi("v_in", F, [1])],
                             [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), vi("v_out", F, [1])])
    m = numpy_helper.from_array(np.array(2**63 - 1, np.int64), "M")
    cond = numpy_helper.from_array(np.array(True), "cond")
    return model([helper.make_node("Loop", ["M", "cond", "x"], ["y"], name="loop", body=body)],
                 [vi("x", F, [1])], [vi("y", F, [1])], [m, cond])


FUNCTION_OPSETS = [helper.make_opsetid("", 18), helper.make_opsetid("local", 1)]


def local_function_model() -> onnx.ModelProto:
    """Nested functions with attribute references and a default, one of them called in an If branch:
    ScaledRelu(x; alpha) = LeakyRelu(Mul(x, 2); alpha), and Twice(x) = ScaledRelu(ScaledRelu(x)) with
    ScaledRelu's alpha left at its default once."""
    alpha = onnx.AttributeProto(name="alpha", ref_attr_name="alpha", type=onnx.AttributeProto.FLOAT)
    leaky = helper.make_node("LeakyRelu", ["m"], ["y"])
    leaky.attribute.append(alpha)
    two = helper.make_node("Constant", [], ["two"], value=helper.make_tensor("two", F, [], [2.0]))
    scaled = helper.make_function("local", "ScaledRelu", ["x"], ["y"],
                                  [two, helper.make_node("Mul", ["x", "two"], ["m"]), leaky], FUNCTION_OPSETS[:1],
                                  attribute_protos=[helper.make_attribute("alpha", 0.25)])
    twice = helper.make_function("local", "Twice", ["x"], ["y"],
                                 [helper.make_node("ScaledRelu", ["x"], ["t"], domain="local", alpha=0.5),
                                  helper.make_node("ScaledRelu", ["t"], ["y"], domain="local")], FUNCTION_OPSETS)
    then = helper.make_graph([helper.make_node("Twice", ["x"], ["a"], domain="local")], "then", [],
                             [vi("a", F, [3, 4])])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["b"])], "else", [],
                              [vi("b", F, [3, 4])])
    g = helper.make_graph([helper.make_node("Twice", ["x"], ["u"], domain="local"),
                           helper.make_node("If", ["c"], ["v"], then_branch=then, else_branch=other)], "g",
                          [vi("x", F, [3, 4]),
                           vi("c", TensorProto.BOOL, [])],
                          [vi("u", F, [3, 4]),
                           vi("v", F, [3, 4])])
    return helper.make_model(g, opset_imports=FUNCTION_OPSETS, functions=[scaled, twice])


def stacking_loop_model() -> onnx.ModelProto:
    """Loop with trip count INT64_MAX whose body emits a 1 KiB scan output a turn: no step of the body
    is large, but the stack grows without end."""
    body = helper.make_graph([helper.make_node("Identity", ["c_in"], ["c_out"]),
                              helper.make_node("Identity", ["v_in"], ["v_out"]),
                              helper.make_node("Identity", ["v_in"], ["y_scan"])], "body",
                             [vi("i", I64, []), helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
                              vi("v_in", F, [256])],
                             [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), vi("v_out", F, [256]),
                              vi("y_scan", F, [256])])
    m = numpy_helper.from_array(np.array(2**63 - 1, np.int64), "M")
    cond = numpy_helper.from_array(np.array(True), "cond")
    return model([helper.make_node("Loop", ["M", "cond", "x"], ["v", "ys"], name="loop", body=body)],
                 [vi("x", F, [256])], [vi("v", F, [256]), vi("ys", F, [None, 256])], [m, cond])


def stacking_scan_model() -> onnx.ModelProto:
    """Scan over the rows of an empty (n, 0) input whose body emits a 1 KiB constant a row: the input
    holds no bytes, the stacked output n KiB."""
    row = helper.make_tensor("row", F, [256], np.ones(256, np.float32))
    body = helper.make_graph([helper.make_node("Constant", [], ["y_row"], value=row)], "body",
                             [vi("x_row", F, [0])], [vi("y_row", F, [256])])
    return model([helper.make_node("Scan", ["x"], ["ys"], name="scan", body=body, num_scan_inputs=1)],
                 [vi("x", F, ["n", 0])], [vi("ys", F, ["n", 256])])


ML_OPSETS = [helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", 3)]


def _ml(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
        outputs: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
    return helper.make_model(helper.make_graph(nodes, "ml", inputs, outputs), opset_imports=ML_OPSETS)


def ml_models() -> list[onnx.ModelProto]:
    """ai.onnx.ml models as skl2onnx writes them, small: a preprocessing pipeline into a linear classifier
    and ZipMap, a tree ensemble of each kind, an SVM with probabilities, and the categorical encoders."""
    ml = "ai.onnx.ml"
    maps = helper.make_sequence_type_proto(helper.make_map_type_proto(
        TensorProto.STRING, helper.make_tensor_type_proto(F, [])))
    pipeline = _ml([
        helper.make_node("Imputer", ["x"], ["xi"], domain=ml, imputed_value_floats=[0.0], replaced_value_float=np.nan),
        helper.make_node("Scaler", ["xi"], ["xs"], domain=ml, offset=[0.5, 0.0, -1.0], scale=[2.0, 1.0, 0.5]),
        helper.make_node("Normalizer", ["xs"], ["xn"], domain=ml, norm="L2"),
        helper.make_node("LinearClassifier", ["xn"], ["label", "scores"], domain=ml, intercepts=[0.1, -0.2, 0.3],
                         coefficients=[0.5, -1.0, 2.0, 1.5, 0.25, -0.75, -2.0, 1.0, 0.5],
                         classlabels_strings=["a", "b", "c"], post_transform="SOFTMAX"),
        helper.make_node("ZipMap", ["scores"], ["probs"], domain=ml, classlabels_strings=["a", "b", "c"])],
        [vi("x", F, ["N", 3])], [helper.make_tensor_value_info("label", TensorProto.STRING, ["N"]),
                                 helper.make_value_info("probs", maps)])
    tree = dict(nodes_treeids=[0, 0, 0, 1, 1, 1], nodes_nodeids=[0, 1, 2, 0, 1, 2], nodes_featureids=[0, 0, 0, 1, 0, 0],
                nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF", "BRANCH_GT", "LEAF", "LEAF"],
                nodes_values=[0.5, 0, 0, -0.25, 0, 0], nodes_truenodeids=[1, 0, 0, 1, 0, 0],
                nodes_falsenodeids=[2, 0, 0, 2, 0, 0])
    leaves = dict(nodeids=[1, 2, 1, 2, 2], treeids=[0, 0, 1, 1, 1], ids=[0, 2, 1, 0, 2],
                  weights=[0.4, 0.6, 0.3, 0.2, 0.5])
    trees = _ml([helper.make_node("TreeEnsembleClassifier", ["x"], ["label", "scores"], domain=ml,
                                  classlabels_int64s=[4, 5, 6], post_transform="LOGISTIC", base_values=[0.1, 0.0, -0.1],
                                  **tree, **{f"class_{k}": v for k, v in leaves.items()}),
                 helper.make_node("TreeEnsembleRegressor", ["x"], ["y"], domain=ml, n_targets=3,
                                  aggregate_function="AVERAGE", **tree,
                                  **{f"target_{k}": v for k, v in leaves.items()})],
                [vi("x", F, ["N", 2])], [vi("label", I64, ["N"]), vi("scores", F, ["N", 3]), vi("y", F, ["N", 3])])
    svm = _ml([helper.make_node("SVMClassifier", ["x"], ["label", "scores"], domain=ml, classlabels_ints=[0, 1, 2],
                                kernel_type="RBF", kernel_params=[0.5, 0.0, 3.0], vectors_per_class=[1, 1, 1],
                                support_vectors=[0.0, 1.0, 1.0, 0.0, -1.0, -1.0],
                                coefficients=[1.0, -0.5, 0.5, 0.75, -1.0, 0.25], rho=[0.1, -0.2, 0.05],
                                prob_a=[-1.5, -2.0, -1.0], prob_b=[0.1, 0.0, -0.1]),
               helper.make_node("SVMRegressor", ["x"], ["y"], domain=ml, kernel_type="POLY",
                                kernel_params=[0.5, 1.0, 2.0], n_supports=2, support_vectors=[0.0, 1.0, 1.0, 0.0],
                                coefficients=[0.5, -0.25], rho=[0.3])],
              [vi("x", F, ["N", 2])], [vi("label", I64, ["N"]), vi("scores", F, ["N", 3]), vi("y", F, ["N", 1])])
    encoders = _ml([helper.make_node("OneHotEncoder", ["ids"], ["hot"], domain=ml, cats_int64s=[3, 1, 4], zeros=1),
                    helper.make_node("CategoryMapper", ["ids"], ["names"], domain=ml, cats_int64s=[3, 1, 4],
                                     cats_strings=["three", "one", "four"]),
                    helper.make_node("FeatureVectorizer", ["hot", "x"], ["features"], domain=ml,
                                     inputdimensions=[3, 2])],
                   [vi("ids", I64, ["N"]), vi("x", F, ["N", 2])],
                   [vi("names", TensorProto.STRING, ["N"]), vi("features", F, ["N", 5])])
    return [pipeline, trees, svm, encoders]
