"""``hal.graph.sequences.split_sequences``: a SplitToSequence read only by SequenceAt at constant
indices becomes a Split (and Squeezes), in every form the op takes (a 1-D split, a scalar chunk
with a shorter last part, no split with and without keepdims, negative and repeated indices, the
opset-11 attribute forms), against onnxruntime running the model as written, on every target,
the LPU included, which refused the sequence; a sequence read any other way, or a graph output,
stays a sequence."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.graph.load import load
from hal.graph.passes import optimize

F = TensorProto.FLOAT
X_SHAPE = [2, 10, 3]


def _model(split: np.ndarray | None, reads: list[int], *, keepdims: int = 1, opset: int = 18,
           x_dims: list | None = None, length: bool = False, seq_out: bool = False):
    inits = [numpy_helper.from_array(np.array(i, np.int64), f"i{k}") for k, i in enumerate(reads)]
    ins = ["x"]
    if split is not None:
        inits.append(numpy_helper.from_array(split, "split"))
        ins.append("split")
    nodes = [helper.make_node("SplitToSequence", ins, ["seq"], axis=1, keepdims=keepdims)]
    outs = []
    for k in range(len(reads)):
        nodes.append(helper.make_node("SequenceAt", ["seq", f"i{k}"], [f"p{k}"]))
        nodes.append(helper.make_node("Relu", [f"p{k}"], [f"y{k}"]))
        rank = 3 if keepdims or split is not None else 2
        outs.append(helper.make_tensor_value_info(f"y{k}", F, [f"d{j}" for j in range(rank)]))
    if length:
        nodes.append(helper.make_node("SequenceLength", ["seq"], ["n"]))
        outs.append(helper.make_tensor_value_info("n", TensorProto.INT64, []))
    if seq_out:
        outs.append(helper.make_tensor_sequence_value_info("seq", F, ["a", "b", "c"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, x_dims or X_SHAPE)], outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


CASES = {
    "sizes": (np.array([3, 5, 2], np.int64), [0, 2, 1], {}),
    "chunks with a shorter last": (np.array(4, np.int64), [2, 0], {}),
    "ones, kept": (None, [9, 0], {}),
    "ones, squeezed": (None, [3, 7], {"keepdims": 0}),
    "negative and repeated": (np.array([3, 5, 2], np.int64), [-1, 2, -3], {}),
    "int32 sizes": (np.array([6, 4], np.int32), [1], {}),
    "opset 11": (np.array([3, 5, 2], np.int64), [1, -1], {"opset": 11}),
    "opset 11, squeezed": (None, [0, 9], {"opset": 11, "keepdims": 0}),
    "symbolic batch": (np.array(5, np.int64), [1, 0], {"x_dims": ["b", 10, 3]}),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_split_sequence_read_at_constant_indices_is_a_split(case) -> None:
    split, reads, kw = CASES[case]
    model = _model(split, reads, **kw)
    ops = [n.op_type for n in optimize(load(model)).nodes]
    assert "SplitToSequence" not in ops and "SequenceAt" not in ops and "Split" in ops
    x = np.random.default_rng(0).standard_normal(X_SHAPE).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for target in hal.targets():
        got = hal.InferenceSession(model, target=target.name).run(None, {"x": x})
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.tobytes() == w.tobytes(), target.name


@pytest.mark.parametrize("how", ["a graph output", "a split that does not add up"])
def test_a_sequence_read_otherwise_stays_a_sequence(how) -> None:
    split = np.array([3, 5, 3] if how.startswith("a split") else [3, 5, 2], np.int64)
    model = _model(split, [0], seq_out=how == "a graph output")
    ops = [n.op_type for n in optimize(load(model)).nodes]
    assert "SplitToSequence" in ops and "Split" not in ops


def test_a_split_sequence_read_otherwise_is_a_split_and_the_sequence_of_its_parts() -> None:
    # (hal.graph.sequences.constructed_sequences) its SequenceLength is the count, and a read out of
    # range still fails at run time, as onnxruntime's does
    model = _model(np.array([3, 5, 2], np.int64), [0], length=True)
    ops = [n.op_type for n in optimize(load(model)).nodes]
    assert "Split" in ops and not {"SplitToSequence", "SequenceLength", "SequenceConstruct"} & set(ops)
    x = np.random.default_rng(0).standard_normal(X_SHAPE).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for target in hal.targets():
        got = hal.InferenceSession(model, target=target.name, fallback="error").run(None, {"x": x})
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.tobytes() == w.tobytes(), target.name
    out_of_range = _model(np.array([3, 5, 2], np.int64), [5])
    assert "SequenceAt" in [n.op_type for n in optimize(load(out_of_range)).nodes]
    with pytest.raises(hal.RunError, match="SequenceAt"):
        hal.InferenceSession(out_of_range).run(None, {"x": x})


def test_a_split_into_more_parts_than_any_model_has_stays_a_sequence():
    # fuzzing found it: a declared dimension of 2**63 - 1 split into ones (no ``split``) built a list of
    # one size per part until the process was killed; nothing is rewritten past MAX_PARTS parts
    from hal.graph.sequences import MAX_PARTS

    nodes = [helper.make_node("SplitToSequence", ["x"], ["s"], name="split", axis=0),
             helper.make_node("SequenceAt", ["s", "i"], ["y"], name="at")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [MAX_PARTS + 1, "b"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [helper.make_tensor("i", TensorProto.INT64, [], [0])])
    graph = optimize(load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])))
    assert [n.op_type for n in graph.nodes] == ["SplitToSequence", "SequenceAt"]
