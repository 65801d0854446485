"""Layout nodes folded into their reader (hal.engine.views): the same results as one kernel per node,
fewer steps, each view's own error, the reader's memory guard, and the cases left alone."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.engine import Program, fused_steps, steps_for_nodes
from hal.errors import ResourceError, RunError
from hal.graph.load import from_proto
from hal.graph.passes import optimize
from hal.plugins import get_target
from hal.specs import CompileOptions

F = TensorProto.FLOAT
RNG = np.random.default_rng(7)


def _init(name: str, a: np.ndarray):
    return numpy_helper.from_array(a, name)


def _attention_model():
    """Heads split by Reshape (with a 0 to copy) and Transpose, Q·Kᵀ, softmax, P·V, heads joined by
    Transpose and Reshape, an Unsqueeze/Squeeze pair and a Flatten: each view feeds one node."""
    d, h = 8, 2
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name="q_proj"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], name="k_proj"),
        helper.make_node("MatMul", ["x", "wv"], ["v"], name="v_proj"),
        helper.make_node("Reshape", ["q", "heads"], ["q4"], name="reshape_q"),
        helper.make_node("Transpose", ["q4"], ["qh"], name="transpose_q", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["k", "heads"], ["k4"], name="reshape_k"),
        helper.make_node("Transpose", ["k4"], ["kt"], name="transpose_k", perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["v", "heads"], ["v4"], name="reshape_v"),
        helper.make_node("Transpose", ["v4"], ["vh"], name="transpose_v", perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["qh", "kt"], ["s"], name="qk"),
        helper.make_node("Softmax", ["s"], ["p"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["p", "vh"], ["o"], name="av"),
        helper.make_node("Transpose", ["o"], ["ot"], name="transpose_o", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ot", "joined"], ["o3"], name="reshape_o"),
        helper.make_node("Unsqueeze", ["o3", "ax0"], ["o4"], name="unsqueeze"),
        helper.make_node("Squeeze", ["o4", "ax0"], ["o5"], name="squeeze"),
        helper.make_node("MatMul", ["o5", "wo"], ["y3"], name="o_proj"),
        helper.make_node("Flatten", ["y3"], ["y2"], name="flatten", axis=2),
        helper.make_node("Sigmoid", ["y2"], ["y"], name="sigmoid"),
    ]
    inits = [_init(n, RNG.standard_normal((d, d)).astype(np.float32)) for n in ("wq", "wk", "wv", "wo")]
    inits += [_init("heads", np.array([0, 6, h, d // h], np.int64)), _init("joined", np.array([0, 6, d], np.int64)),
              _init("ax0", np.array([0], np.int64))]
    graph = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("x", F, ["b", 6, d])],
                              [helper.make_tensor_value_info("y", F, ["b", 48])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


VIEW_NODES = {"reshape_q", "transpose_q", "reshape_k", "transpose_k", "reshape_v", "transpose_v", "transpose_o",
              "reshape_o", "unsqueeze", "squeeze", "flatten"}
#: the steps the nodes that are not views run as: the q, k and v projections are one (``MatMulGroup``)
STEPS = 19 - len(VIEW_NODES) - 2


def test_views_run_inside_their_reader_with_the_same_bits():
    model = _attention_model()
    graph = from_proto(model, where="attn")
    x = RNG.standard_normal((3, 6, 8)).astype(np.float32)
    plain = Program(graph, steps_for_nodes(graph, graph.nodes))
    steps = fused_steps(graph, graph.nodes)
    folded = Program(graph, steps)
    assert len(graph.nodes) == 19 and len(steps) == STEPS
    assert not VIEW_NODES & {s.label for s in steps}  # no view is a step of its own
    by_reader = {s.nodes[-1]: s for s in steps if s.views}
    assert by_reader["qk"].label == "reshape_q+transpose_q+reshape_k+transpose_k+qk"
    assert by_reader["qk"].op_type == "Reshape+Transpose+Reshape+Transpose+MatMul"
    assert by_reader["qk"].ins == ["q", "k"] and by_reader["qk"].guarded_as == "MatMul"
    assert [v.label for v in dict(by_reader["o_proj"].views)[0]] == ["transpose_o", "reshape_o", "unsqueeze", "squeeze"]
    for _ in range(2):
        (want,) = plain.run_list({"x": x})
        (got,) = folded.run_list({"x": x})
        np.testing.assert_array_equal(got, want)
    theirs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(got, theirs[0], rtol=1e-5, atol=1e-5)


def test_cpu_target_reports_folded_views_and_stores_them():
    model = _attention_model()
    cpu = get_target("cpu")
    exe = cpu.compile(optimize(from_proto(model, where="attn")), CompileOptions())
    reported = [n for k in exe.report.kernels for n in k.nodes]
    assert sorted(reported) == sorted(n.name for n in model.graph.node)  # every node, once
    assert exe.report.kernel_count == STEPS
    x = RNG.standard_normal((2, 6, 8)).astype(np.float32)
    want = exe.run({"x": x})["y"]
    loaded = cpu.load(exe.serialize())  # views pickle (the kernel ones by key)
    np.testing.assert_array_equal(loaded.run({"x": x})["y"], want)


def test_a_failing_folded_view_names_its_own_node():
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"], name="to_4x3"),
             helper.make_node("MatMul", ["r", "w"], ["y"], name="mm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, ["n", 6])],
                              [helper.make_tensor_value_info("y", F, [4, 2])],
                              [_init("shape", np.array([4, 3], np.int64)), _init("w", np.ones((3, 2), np.float32))])
    sess = hal.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), target="cpu")
    assert [k.nodes for k in sess.report.kernels] == [["to_4x3", "mm"]]
    np.testing.assert_array_equal(sess.run(None, {"x": np.ones((2, 6), np.float32)})[0], np.full((4, 2), 3.0))
    with pytest.raises(RunError) as e:
        sess.run(None, {"x": np.ones((3, 6), np.float32)})
    assert "Reshape failed" in str(e.value) and "to_4x3" in str(e.value) and "float32[3, 6]" in str(e.value)


@pytest.mark.parametrize("chain", [2, 3])
def test_a_failing_view_inside_a_chain_names_its_own_node(chain):
    # a chain of Transposes and Reshapes runs as the ndarray methods in one call; where one fails, the
    # chain runs again view by view, and the error names the node that failed, not its neighbours
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="swap", perm=[1, 0])]
    if chain == 3:
        nodes.append(helper.make_node("Transpose", ["t"], ["t2"], name="swap_back", perm=[1, 0]))
        nodes.append(helper.make_node("Transpose", ["t2"], ["t3"], name="swap_again", perm=[1, 0]))
        last = "t3"
    else:
        last = "t"
    nodes += [helper.make_node("Reshape", [last, "shape"], ["r"], name="to_4x3"),
              helper.make_node("MatMul", ["r", "w"], ["y"], name="mm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [6, "n"])],
                              [helper.make_tensor_value_info("y", F, [4, 2])],
                              [_init("shape", np.array([4, 3], np.int64)), _init("w", np.ones((3, 2), np.float32))])
    sess = hal.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), target="cpu")
    assert [len(k.nodes) for k in sess.report.kernels] == [len(nodes)]
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], x.T.reshape(4, 3) @ np.ones((3, 2), np.float32))
    with pytest.raises(RunError) as e:
        sess.run(None, {"x": np.ones((6, 3), np.float32)})
    assert "Reshape failed" in str(e.value) and "to_4x3" in str(e.value) and "float32[3, 6]" in str(e.value)
    assert "swap" not in str(e.value)


def test_the_reader_keeps_its_memory_guard_on_the_viewed_shapes():
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], name="t", perm=[1, 0]),
             helper.make_node("MatMul", ["xt", "w"], ["y"], name="mm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [64, "n"])],
                              [helper.make_tensor_value_info("y", F, ["n", 4096])],
                              [_init("w", np.ones((64, 4096), np.float32))])
    sess = hal.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), target="cpu",
                                max_memory=4 << 20)
    assert [k.nodes for k in sess.report.kernels] == [["t", "mm"]]
    sess.run(None, {"x": np.ones((64, 8), np.float32)})  # 128 KiB of product
    with pytest.raises(ResourceError):
        sess.run(None, {"x": np.ones((64, 1024), np.float32)})  # 16 MiB: the guard saw (1024, 64) @ (64, 4096)


def test_views_left_as_steps():
    """Not folded: a view of a weight or of a value computed from weights alone (kept after the first
    run), one read twice or by two nodes, a graph output, one feeding an in-place kernel (Add), and a
    Reshape whose shape is computed."""
    nodes = [
        helper.make_node("Transpose", ["w"], ["wt"], name="of_weight"),
        helper.make_node("MatMul", ["x", "wt"], ["a"], name="mm_w"),
        helper.make_node("Transpose", ["a"], ["at"], name="read_twice"),
        helper.make_node("MatMul", ["at", "at"], ["b"], name="square"),
        helper.make_node("Transpose", ["b"], ["bt"], name="two_readers"),
        helper.make_node("Relu", ["bt"], ["c"], name="relu"),
        helper.make_node("Sigmoid", ["bt"], ["d"], name="sigmoid"),
        helper.make_node("Transpose", ["c"], ["out1"], name="is_output"),
        helper.make_node("Transpose", ["d"], ["dt"], name="into_add"),
        helper.make_node("Add", ["dt", "c"], ["e"], name="add"),
        helper.make_node("Shape", ["e"], ["shape"], name="shape"),
        helper.make_node("Reshape", ["e", "shape"], ["out2"], name="computed_shape"),
        helper.make_node("Cast", ["w"], ["wc"], name="cast_w", to=F),
        helper.make_node("Transpose", ["wc"], ["wct"], name="of_weight_only"),
        helper.make_node("MatMul", ["c", "wct"], ["out3"], name="mm_wo"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [4, 4])],
                              [helper.make_tensor_value_info("out1", F, [4, 4]),
                               helper.make_tensor_value_info("out2", F, [4, 4]),
                               helper.make_tensor_value_info("out3", F, [4, 4])],
                              [_init("w", RNG.standard_normal((4, 4)).astype(np.float32))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    g = from_proto(model, where="g")
    steps = fused_steps(g, g.nodes)
    assert [s.label for s in steps] == [n.name for n in g.nodes]
    assert not any(s.views for s in steps)
    x = RNG.standard_normal((4, 4)).astype(np.float32)
    want = Program(g, steps_for_nodes(g, g.nodes)).run_list({"x": x})
    for a, b in zip(Program(g, steps).run_list({"x": x}), want):
        np.testing.assert_array_equal(a, b)


def test_a_value_copied_by_its_views_is_freed_before_the_reader_runs():
    """Transpose then Reshape copies its input; folded into the Sigmoid reading it, the input (read
    last there) is let go before the Sigmoid allocates, as the Reshape's own step would have: the
    folded run's peak is the plain run's (two 1 MiB arrays at once), not a third array more."""
    import tracemalloc

    nodes = [helper.make_node("Mul", ["x", "two"], ["m"], name="mul"),
             helper.make_node("Transpose", ["m"], ["t"], name="t", perm=[1, 0]),
             helper.make_node("Reshape", ["t", "flat"], ["r"], name="r"),
             helper.make_node("Sigmoid", ["r"], ["y"], name="sigmoid")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [512, 512])],
                              [helper.make_tensor_value_info("y", F, [1, 262144])],
                              [_init("two", np.array(2, np.float32)), _init("flat", np.array([1, -1], np.int64))])
    g = from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), where="g")
    steps = fused_steps(g, g.nodes)
    assert [s.label for s in steps] == ["mul", "t+r+sigmoid"]
    x = np.ones((512, 512), np.float32)
    peaks = []
    for prog in (Program(g, steps_for_nodes(g, g.nodes)), Program(g, steps)):
        prog.run_list({"x": x})
        tracemalloc.start()
        prog.run_list({"x": x})
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < peaks[0] + (256 << 10), peaks


def test_a_long_chain_of_views_folds_in_order_into_its_reader():
    # 2,001 Reshapes alternating [4, 6] -> [24] -> [4, 6] before a MatMul: one step, its views in the
    # chain's order (folding rebuilt the reader per view once, which made a chain's compile quadratic)
    n = 2001
    nodes = [helper.make_node("Reshape", [f"v{i}" if i else "x", "flat" if i % 2 == 0 else "grid"], [f"v{i + 1}"],
                              name=f"r{i}") for i in range(n)]
    nodes += [helper.make_node("Reshape", [f"v{n}", "grid"], ["g"], name="last"),
              helper.make_node("MatMul", ["g", "w"], ["y"], name="mm")]
    w = RNG.standard_normal((6, 3)).astype(np.float32)
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", F, [4, 6])],
                              [helper.make_tensor_value_info("y", F, [4, 3])],
                              [_init("flat", np.array([24], np.int64)), _init("grid", np.array([4, 6], np.int64)),
                               _init("w", w)])
    g = from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), where="chain")
    (step,) = fused_steps(g, g.nodes)
    assert step.nodes == (*(f"r{i}" for i in range(n)), "last", "mm")
    assert step.op_type == "+".join(["Reshape"] * (n + 1) + ["MatMul"]) and step.guarded_as == "MatMul"
    assert step.ins == ["x", "w"] and [v.label for v in dict(step.views)[0]] == [*(f"r{i}" for i in range(n)), "last"]
    x = RNG.standard_normal((4, 6)).astype(np.float32)
    (y,) = Program(g, [step]).run_list({"x": x})
    np.testing.assert_array_equal(y, x @ w)
