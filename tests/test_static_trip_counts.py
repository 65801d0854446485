"""A while-style Loop whose condition only the iteration number, constants and loop-carried counters
decide is given the trip count it runs (``hal.graph.loops``): the same values on every target, and
the LPU, which schedules every iteration before the run, takes it (tf2onnx writes such a Loop for
every tf.while_loop, tf_keras' SimpleRNN among them)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.graph.ir import Node
from hal.graph.load import load
from hal.graph.passes import optimize

F, I32, B = TensorProto.FLOAT, TensorProto.INT32, TensorProto.BOOL


def _while(limit: int = 5, cond_from: str = "counter", start: bool = True, scan: bool = False, m: int | None = None):
    """t counts up from 0 while t + 1 < limit (``cond_from="counter"``), or while the row's sum is
    positive (``"data"``), or while a counter stepped by the data is below the limit (``"carried data"``);
    each iteration adds row t of x to acc, and with ``scan`` emits it too."""
    step = "row_sum" if cond_from == "carried data" else "one"
    nodes = [helper.make_node("Add", ["t_in", "one"], ["t_out"]),
             helper.make_node("Gather", ["x", "t_in"], ["row"], axis=0),
             helper.make_node("Add", ["acc_in", "row"], ["acc_out"]),
             helper.make_node("ReduceSum", ["row"], ["row_sum_f"], keepdims=0),
             helper.make_node("Cast", ["row_sum_f"], ["row_sum"], to=I32),
             helper.make_node("Add", ["u_in", step], ["u_out"])]
    if cond_from == "data":
        nodes.append(helper.make_node("Greater", ["row_sum_f", "zero_f"], ["cond_out"]))
    else:
        nodes.append(helper.make_node("Less", ["u_out" if cond_from == "carried data" else "t_out", "limit"],
                                      ["cond_out"]))
    outs = [helper.make_tensor_value_info("cond_out", B, []), helper.make_tensor_value_info("t_out", I32, []),
            helper.make_tensor_value_info("acc_out", F, [3]), helper.make_tensor_value_info("u_out", I32, [])]
    if scan:
        nodes.append(helper.make_node("Identity", ["acc_out"], ["emitted"]))
        outs.append(helper.make_tensor_value_info("emitted", F, [3]))
    body = helper.make_graph(
        nodes, "body", [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
                        helper.make_tensor_value_info("cond_in", B, []),
                        helper.make_tensor_value_info("t_in", I32, []), helper.make_tensor_value_info("acc_in", F, [3]),
                        helper.make_tensor_value_info("u_in", I32, [])], outs,
        [numpy_helper.from_array(np.array(v, t), n) for n, v, t in
         (("one", 1, np.int32), ("limit", limit, np.int32), ("zero_f", 0, np.float32))])
    loop_outs = ["t_fin", "y", "u_fin"] + (["ys"] if scan else [])
    g = helper.make_graph(
        [helper.make_node("Loop", ["" if m is None else "m", "c0", "t0", "a0", "t0"], loop_outs, name="while",
                          body=body)], "g",
        [helper.make_tensor_value_info("x", F, [30, 3])],  # past what the LPU's host reads (64 elements)
        [helper.make_tensor_value_info("y", F, [3]),
         *([helper.make_tensor_value_info("ys", F, ["n", 3])] if scan else [])],
        [numpy_helper.from_array(np.array(start), "c0"), numpy_helper.from_array(np.array(0, np.int32), "t0"),
         numpy_helper.from_array(np.zeros(3, np.float32), "a0"),
         *([numpy_helper.from_array(np.array(m, np.int64), "m")] if m is not None else [])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _trip_count(m) -> np.ndarray | None:
    g = optimize(load(m))
    loop = next(n for n in g.nodes if n.op_type == "Loop")
    return g.initializers.get(loop.inputs[0]) if loop.inputs[0] else None


X = np.abs(np.random.default_rng(0).standard_normal((30, 3))).astype(np.float32) + 1
X[3] = -1  # the data's condition (a positive row) ends the loop there


@pytest.mark.parametrize("limit, start, scan", [(5, True, False), (5, True, True), (1, True, True), (5, False, True)])
def test_a_loop_counted_by_its_condition_gets_its_trip_count_and_runs_on_every_target(limit, start, scan):
    m = _while(limit, start=start, scan=scan)
    assert int(_trip_count(m)) == (limit if start else 0)  # the turn that makes t + 1 reach limit is the last
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": X})
    for target in hal.targets():  # the lpu among them: it refused the Loop ("trip count computed on the device")
        got = hal.InferenceSession(m, target=target.name).run(None, {"x": X})
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=target.name)


@pytest.mark.parametrize("cond_from", ["data", "carried data"])
def test_a_loop_whose_condition_the_data_decides_keeps_no_trip_count(cond_from):
    m = _while(cond_from=cond_from)
    assert _trip_count(m) is None
    with pytest.raises(hal.UnsupportedOpError, match="trip count"):
        hal.InferenceSession(m, target="lpu")
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": X})
    np.testing.assert_allclose(hal.InferenceSession(m).run(None, {"x": X})[0], want[0], rtol=1e-6)


def _while_over_rows() -> object:
    """tf2onnx's form for a tf.while_loop over a tensor of dynamic length: the limit is Shape(x)[0],
    cast, fed in as a carried value; the body counts t up and adds row t of x to acc while t + 1 < limit."""
    body = helper.make_graph(
        [helper.make_node("Add", ["t_in", "one"], ["t_out"]),
         helper.make_node("Less", ["t_out", "limit_in"], ["cond_out"]),
         helper.make_node("Identity", ["limit_in"], ["limit_out"]),
         helper.make_node("Gather", ["x", "t_in"], ["row"], axis=0),
         helper.make_node("Add", ["acc_in", "row"], ["acc_out"])],
        "body", [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", B, []), helper.make_tensor_value_info("t_in", I32, []),
                 helper.make_tensor_value_info("limit_in", I32, []), helper.make_tensor_value_info("acc_in", F, [3])],
        [helper.make_tensor_value_info("cond_out", B, []), helper.make_tensor_value_info("t_out", I32, []),
         helper.make_tensor_value_info("limit_out", I32, []), helper.make_tensor_value_info("acc_out", F, [3])],
        [numpy_helper.from_array(np.array(1, np.int32), "one")])
    nodes = [helper.make_node("Shape", ["x"], ["shape"], start=0, end=1),
             helper.make_node("Squeeze", ["shape"], ["n64"]),
             helper.make_node("Cast", ["n64"], ["n"], to=I32),
             helper.make_node("Less", ["t0", "n"], ["c0"]),
             helper.make_node("Loop", ["", "c0", "t0", "n", "a0"], ["t_fin", "n_fin", "y"], name="while", body=body)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, ["rows", 3])],
                          [helper.make_tensor_value_info("y", F, [3])],
                          [numpy_helper.from_array(np.array(0, np.int32), "t0"),
                           numpy_helper.from_array(np.zeros(3, np.float32), "a0")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_a_while_loop_over_a_dynamic_length_runs_on_the_lpu_once_the_host_knows_the_length():
    # the LPU refused it ("a trip count computed on the device"): the condition reads only the length
    # the host knows from the fed shape, so each shape gets its own schedule with the trip count in it
    m = _while_over_rows()
    s, theirs = hal.InferenceSession(m, target="lpu"), ort.InferenceSession(m.SerializeToString())
    for rows in (5, 2, 5):
        x = np.random.default_rng(rows).standard_normal((rows, 3)).astype(np.float32)
        np.testing.assert_allclose(s.run(None, {"x": x})[0], theirs.run(None, {"x": x})[0], rtol=1e-6)
    spec = s.report.details["specialisation"]
    assert spec["compiles"] == 2 and spec["cache_hits"] == 1


@pytest.mark.parametrize("m, trips", [(2**63 - 1, 5), (3, None)])
def test_a_loop_given_a_trip_count_its_condition_ends_first_gets_the_count_it_runs(m, trips):
    # jax2onnx gives its while loops the largest int64 as M: the condition ends them, 5 turns in; an M
    # of 3 ends the loop first and stays
    model = _while(5, m=m)
    got = _trip_count(model)
    assert int(got) == (trips if trips is not None else m)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": X})
    for target in hal.targets():
        out = hal.InferenceSession(model, target=target.name).run(None, {"x": X})
        np.testing.assert_allclose(out[0], want[0], rtol=1e-6, err_msg=target.name)


@pytest.mark.parametrize("m", [100_000, None])
def test_a_loop_passing_its_condition_on_is_counted_by_m_alone_without_running_the_body(m):
    # a for loop (M, and a condition the body hands on through an Identity) keeps its M however large;
    # without M it would never end, and gets none: neither is worked out turn by turn
    from hal.graph.loops import trip_count

    body = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Add", ["a", "one"], ["a_out"])], "b",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("c", B, []),
         helper.make_tensor_value_info("a", F, [])],
        [helper.make_tensor_value_info("c_out", B, []), helper.make_tensor_value_info("a_out", F, [])],
        [numpy_helper.from_array(np.array(1, np.float32), "one")])
    loop = Node("loop", "Loop", "", ["" if m is None else "M", "T", "a0"], ["y"], {"body": body})
    known = {"T": np.array(True), **({} if m is None else {"M": np.array(m, np.int64)})}
    assert trip_count(loop, known, lambda domain: 17) == m
