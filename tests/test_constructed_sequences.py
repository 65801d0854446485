"""``hal.graph.sequences.constructed_sequences`` and ``hal.graph.branches.taken_branches``: reads of a
sequence whose elements are known tensors (built by SequenceConstruct or SequenceEmpty, changed by
SequenceInsert and SequenceErase at constant positions) become reads of those tensors (SequenceAt at
constant indices, ConcatFromSequence with and without a new axis, SequenceLength, a SequenceMap over
it, whose body may hold an If), and an If of a constant condition becomes its taken branch, as torch's
two exporters write ``torch.hstack``; against onnxruntime running the model as written, on every
target, the LPU included, which had refused every such sequence. A sequence that is a graph output,
a SequenceMap over sequences of two lengths, and split sizes fed at run time stay as written."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.graph.load import load
from hal.graph.passes import optimize

F, I64 = TensorProto.FLOAT, TensorProto.INT64
SEQUENCE_OPS = {"SequenceConstruct", "SequenceAt", "ConcatFromSequence", "SequenceLength", "SequenceMap", "If"}


def _at_least_1d() -> object:
    """dynamo's body for torch.atleast_1d: a 0-d element reshaped to [1], through an If on its rank."""
    then = helper.make_graph([helper.make_node("Reshape", ["t", "one"], ["r"])], "then", [],
                             [helper.make_tensor_value_info("r", F, None)])
    other = helper.make_graph([helper.make_node("Identity", ["t"], ["i"])], "else", [],
                              [helper.make_tensor_value_info("i", F, None)])
    return helper.make_graph(
        [helper.make_node("Shape", ["t"], ["shape"]), helper.make_node("Size", ["shape"], ["rank"]),
         helper.make_node("Equal", ["rank", "zero"], ["cond"]),
         helper.make_node("If", ["cond"], ["out"], then_branch=then, else_branch=other)],
        "at_least_1d", [helper.make_tensor_value_info("t", F, None)], [helper.make_tensor_value_info("out", F, None)])


def _model(case: str, lengths: tuple[int, ...] = (5, 5, 5)):
    ins = [helper.make_tensor_value_info(f"x{k}", F, [n]) for k, n in enumerate(lengths)]
    names = [i.name for i in ins]
    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
             (("zero", 0), ("one_i", 1), ("minus_one", -1), ("one", [1]), ("k1", 1))]
    nodes = [helper.make_node("SequenceConstruct", names, ["seq"])]
    outs = [helper.make_tensor_value_info("y", F, None)]
    if case == "SequenceAt":
        nodes += [helper.make_node("SequenceAt", ["seq", "minus_one"], ["a"]),
                  helper.make_node("SequenceAt", ["seq", "one_i"], ["b"]), helper.make_node("Sub", ["a", "b"], ["y"])]
    elif case == "ConcatFromSequence":
        nodes.append(helper.make_node("ConcatFromSequence", ["seq"], ["y"], axis=0))
    elif case == "ConcatFromSequence new_axis":
        nodes.append(helper.make_node("ConcatFromSequence", ["seq"], ["y"], axis=-1, new_axis=1))
    elif case == "SequenceLength":
        nodes += [helper.make_node("SequenceLength", ["seq"], ["n"]), helper.make_node("Cast", ["n"], ["nf"], to=F),
                  helper.make_node("Mul", ["x0", "nf"], ["y"])]
    elif case == "SequenceMap with an If (dynamo's hstack)":
        nodes += [helper.make_node("SequenceMap", ["seq", "k1"], ["mapped"], body=_with_tensor_input(_at_least_1d())),
                  *[helper.make_node("SequenceAt", ["mapped", i], [f"p{i}"]) for i in ("zero", "one_i", "minus_one")],
                  helper.make_node("Concat", ["pzero", "pone_i", "pminus_one"], ["y"], axis=0)]
    elif case == "If of a constant condition (TorchScript's hstack)":
        then = helper.make_graph([helper.make_node("ConcatFromSequence", ["seq"], ["c"], axis=0)], "then", [],
                                 [helper.make_tensor_value_info("c", F, None)])
        other = helper.make_graph([helper.make_node("ConcatFromSequence", ["seq"], ["c2"], axis=1)], "else", [],
                                  [helper.make_tensor_value_info("c2", F, None)])
        nodes += [helper.make_node("SequenceAt", ["seq", "zero"], ["first"]),
                  helper.make_node("Shape", ["first"], ["shape"]), helper.make_node("Size", ["shape"], ["rank"]),
                  helper.make_node("Equal", ["rank", "one_i"], ["cond"]),
                  helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)]
    elif case == "a graph output":
        nodes.append(helper.make_node("ConcatFromSequence", ["seq"], ["y"], axis=0))
        outs.append(helper.make_tensor_sequence_value_info("seq", F, None))
    graph = helper.make_graph(nodes, "g", ins, outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _with_tensor_input(body):
    """The body also taking a tensor each turn (SequenceMap's inputs after the first may be tensors)."""
    body.input.append(helper.make_tensor_value_info("k", I64, []))
    body.initializer.append(numpy_helper.from_array(np.array(2, np.int64), "w_body"))  # one weight, every turn
    body.node.append(helper.make_node("Add", ["k", "w_body"], ["k_seen"]))
    return body


def _feeds(lengths=(5, 5, 5)):
    rng = np.random.default_rng(0)
    return {f"x{k}": rng.standard_normal(n).astype(np.float32) for k, n in enumerate(lengths)}


def _ort(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


CASES = ["SequenceAt", "ConcatFromSequence", "ConcatFromSequence new_axis", "SequenceLength",
         "SequenceMap with an If (dynamo's hstack)", "If of a constant condition (TorchScript's hstack)"]


@pytest.mark.parametrize("case", CASES)
def test_a_sequence_built_and_taken_apart_is_its_tensors_on_every_target(case) -> None:
    model = _model(case)
    ops = {n.op_type for n in optimize(load(model)).nodes}
    assert not ops & (SEQUENCE_OPS - ({"If"} if "SequenceMap" in case else set())), ops
    want = _ort(model, _feeds())
    for target in hal.targets():  # fallback="error": the LPU runs all of it
        got = hal.InferenceSession(model, target=target.name, fallback="error").run(None, _feeds())
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.tobytes() == w.tobytes(), target.name


def test_a_sequence_that_is_a_graph_output_stays_a_sequence() -> None:
    model = _model("a graph output")
    assert "SequenceConstruct" in {n.op_type for n in optimize(load(model)).nodes}
    got = hal.InferenceSession(model).run(None, _feeds())
    want = _ort(model, _feeds())
    np.testing.assert_array_equal(got[0], want[0])
    assert [a.tobytes() for a in got[1]] == [a.tobytes() for a in want[1]]


def test_a_sequence_map_over_sequences_of_two_lengths_is_left_for_the_run_to_refuse() -> None:
    model = _model("SequenceMap with an If (dynamo's hstack)")
    model.graph.node.insert(1, helper.make_node("SequenceConstruct", ["x0", "x1"], ["short"]))
    model.graph.node[2].input.insert(1, "short")  # SequenceMap(seq, short, k1): lengths 3 and 2
    body = model.graph.node[2].attribute[0].g
    body.input.insert(1, helper.make_tensor_value_info("s", F, None))
    assert {"SequenceConstruct", "SequenceMap"} <= {n.op_type for n in optimize(load(model)).nodes}
    with pytest.raises(hal.RunError, match="SequenceMap"):
        hal.InferenceSession(model).run(None, _feeds())


def test_ifs_of_constant_conditions_are_their_branches_with_names_made_distinct() -> None:
    # two Ifs whose branches each define 'b' (sibling scopes may): the second's is renamed as it is
    # inlined, and the If nested in its branch, which reads 'b', reads the renamed value; that
    # nested If is taken in turn, its branch holding a weight
    def branch(k: int):
        inner = helper.make_graph([helper.make_node("Add", ["b", "w"], ["n"])], "inner", [],
                                  [helper.make_tensor_value_info("n", F, None)],
                                  [numpy_helper.from_array(np.full(5, k, np.float32), "w")])
        return helper.make_graph(
            [helper.make_node("Mul", ["x0", "k1f"], ["b"]) if k == 1 else helper.make_node("Neg", ["x0"], ["b"]),
             helper.make_node("If", ["yes"], [f"c{k}"], then_branch=inner, else_branch=inner)], f"then{k}", [],
            [helper.make_tensor_value_info(f"c{k}", F, None)])
    other = helper.make_graph([helper.make_node("Identity", ["x0"], ["d"])], "else", [],
                              [helper.make_tensor_value_info("d", F, None)])
    graph = helper.make_graph(
        [helper.make_node("If", ["yes"], ["y1"], then_branch=branch(1), else_branch=other),
         helper.make_node("If", ["yes"], ["y2"], then_branch=branch(2), else_branch=other),
         helper.make_node("Sub", ["y1", "y2"], ["z"])], "g",
        [helper.make_tensor_value_info("x0", F, [5])], [helper.make_tensor_value_info("z", F, None)],
        [numpy_helper.from_array(np.array(True), "yes"), numpy_helper.from_array(np.array(3, np.float32), "k1f")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    ops = [n.op_type for n in optimize(load(model)).nodes]
    assert "If" not in ops, ops
    feeds = {"x0": _feeds()["x0"]}
    for target in hal.targets():
        got = hal.InferenceSession(model, target=target.name, fallback="error").run(None, feeds)
        np.testing.assert_array_equal(got[0], _ort(model, feeds)[0])


def test_inserts_and_erases_at_constant_positions_are_followed() -> None:
    # SequenceEmpty, inserts (appended, at 0, at -1), an erase at 1: [x2, x0, x1] -> erase 1 -> [x2, x1]
    ins = [helper.make_tensor_value_info(f"x{k}", F, [5]) for k in range(3)]
    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("zero", 0), ("minus_one", -1),
                                                                             ("one_i", 1))]
    nodes = [helper.make_node("SequenceEmpty", [], ["s0"], dtype=F),
             helper.make_node("SequenceInsert", ["s0", "x1"], ["s1"]),
             helper.make_node("SequenceInsert", ["s1", "x2", "zero"], ["s2"]),
             helper.make_node("SequenceInsert", ["s2", "x0", "minus_one"], ["s3"]),
             helper.make_node("SequenceErase", ["s3", "one_i"], ["s4"]),
             helper.make_node("ConcatFromSequence", ["s4"], ["y"], axis=0),
             helper.make_node("SequenceLength", ["s4"], ["n"])]
    model = helper.make_model(helper.make_graph(nodes, "g", ins, [helper.make_tensor_value_info("y", F, None),
                                                                  helper.make_tensor_value_info("n", I64, None)],
                                                inits), opset_imports=[helper.make_opsetid("", 18)])
    assert not {n.op_type for n in optimize(load(model)).nodes} & {"SequenceInsert", "SequenceErase", "SequenceEmpty"}
    want = _ort(model, _feeds())
    np.testing.assert_array_equal(want[0], np.concatenate([_feeds()["x2"], _feeds()["x1"]]))
    for target in hal.targets():
        got = hal.InferenceSession(model, target=target.name, fallback="error").run(None, _feeds())
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.tobytes() == w.tobytes(), target.name


def test_the_length_of_a_split_sequence_is_counted_only_from_sizes_known_before_the_run() -> None:
    # sizes fed at run time must still be checked against the input: a count taken from their length
    # alone would hide a split that does not add up
    def model(split_fed: bool):
        ins = [helper.make_tensor_value_info("x", F, [2, 6])]
        inits = [] if split_fed else [numpy_helper.from_array(np.array([2, 4], np.int64), "split")]
        if split_fed:
            ins.append(helper.make_tensor_value_info("split", I64, [2]))
        nodes = [helper.make_node("SplitToSequence", ["x", "split"], ["s"], axis=1),
                 helper.make_node("SequenceLength", ["s"], ["n"])]
        return helper.make_model(helper.make_graph(nodes, "g", ins, [helper.make_tensor_value_info("n", I64, [])],
                                                   inits), opset_imports=[helper.make_opsetid("", 18)])
    x = np.zeros((2, 6), np.float32)
    assert "SplitToSequence" not in {n.op_type for n in optimize(load(model(False))).nodes}
    assert hal.InferenceSession(model(False), target="lpu", fallback="error").run(None, {"x": x})[0] == 2
    fed = model(True)
    assert "SplitToSequence" in {n.op_type for n in optimize(load(fed)).nodes}
    with pytest.raises(hal.RunError):
        hal.InferenceSession(fed).run(None, {"x": x, "split": np.array([1, 1], np.int64)})
