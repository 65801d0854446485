"""The cost models count the bodies a control-flow node runs (``hal.perf.bodies``): a Loop's body
times its trip count, a Scan's times its scanned length, an If's larger branch, over the shapes the
node feeds them. Before, such a node counted one FLOP an output element, and a model whose work is
in a loop estimated at a few microseconds; where the run decides how often a body runs, ``hal
estimate`` names the node instead."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.graph.load import load
from hal.graph.passes import optimize
from hal.perf.opcount import node_flops

F = TensorProto.FLOAT
WIDTH = 64


def _vi(name: str, kind: int = F, dims: list | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, kind, dims)


def _loop(trips: int | None) -> onnx.ModelProto:
    """x (4, WIDTH) through x @ W ``trips`` times (a fed trip count when None)."""
    body = helper.make_graph([helper.make_node("MatMul", ["x_in", "W"], ["x_out"]),
                              helper.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
                             [_vi("i", TensorProto.INT64, []), _vi("cond_in", TensorProto.BOOL, []), _vi("x_in")],
                             [_vi("cond_out", TensorProto.BOOL, []), _vi("x_out")])
    inits = [numpy_helper.from_array(np.eye(WIDTH, dtype=np.float32), "W")]
    inputs = [_vi("x", F, [4, WIDTH])]
    if trips is None:
        inputs.append(_vi("M", TensorProto.INT64, []))
    else:
        inits.append(numpy_helper.from_array(np.array(trips, np.int64), "M"))
    graph = helper.make_graph([helper.make_node("Loop", ["M", "", "x"], ["y"], name="turns", body=body)], "loop",
                              inputs, [_vi("y", F, [4, WIDTH])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _flops(model: onnx.ModelProto) -> list[float]:
    graph = optimize(load(model.SerializeToString()))
    return [node_flops(n, graph) for n in graph.nodes]


PRODUCT = 2 * 4 * WIDTH * WIDTH  # one turn's x @ W


@pytest.mark.parametrize("trips", [1, 10, 100])
def test_a_loop_counts_its_body_times_its_trip_count(trips):
    (flops,) = _flops(_loop(trips))
    assert flops == 4 * WIDTH + trips * PRODUCT


def test_a_scan_counts_its_body_times_its_length_and_an_if_its_larger_branch():
    scan_body = helper.make_graph([helper.make_node("MatMul", ["s", "W"], ["s2"]),
                                   helper.make_node("Add", ["s2", "xt"], ["s3"]),
                                   helper.make_node("Identity", ["s3"], ["out"])], "body",
                                  [_vi("s"), _vi("xt")], [_vi("s3"), _vi("out")])
    then = helper.make_graph([helper.make_node("MatMul", ["flat", "W"], ["t"])], "then", [], [_vi("t")])
    other = helper.make_graph([helper.make_node("Relu", ["flat"], ["e"])], "else", [], [_vi("e")])
    nodes = [helper.make_node("Scan", ["s0", "xs"], ["sN", "outs"], body=scan_body, num_scan_inputs=1),
             helper.make_node("Reshape", ["xs", "rows"], ["flat"]),
             helper.make_node("If", ["c"], ["z"], then_branch=then, else_branch=other)]
    graph = helper.make_graph(nodes, "g", [_vi("s0", F, [1, WIDTH]), _vi("xs", F, [7, 1, WIDTH]),
                                           _vi("c", TensorProto.BOOL, [])], [_vi("sN"), _vi("outs"), _vi("z")],
                              [numpy_helper.from_array(np.eye(WIDTH, dtype=np.float32), "W"),
                               numpy_helper.from_array(np.array([7, WIDTH]), "rows")])
    scan, _, branch = _flops(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert scan == WIDTH + 7 * (2 * WIDTH * WIDTH + WIDTH)  # its state's elements, then 7 turns
    assert branch == 7 * WIDTH + 2 * 7 * WIDTH * WIDTH  # its output, then the product (the larger branch)


def test_every_target_estimates_a_loop_by_its_turns():
    # the wafer also waits a wavefront a turn, each on the last one's carried values
    for target in ("gpu", "lpu", "wafer"):
        ten, hundred = (hal.estimate(_loop(t).SerializeToString(), target).estimates[0] for t in (10, 100))
        assert ten.uncosted == hundred.uncosted == []
        assert hundred.latency_s > 5 * ten.latency_s, target  # the body's products dominate


def test_a_trip_count_the_run_decides_is_named_not_counted():
    (flops,) = _flops(_loop(None))
    assert flops == 4 * WIDTH  # its own output only
    (est,) = hal.estimate(_loop(None).SerializeToString(), "gpu").estimates
    assert est.uncosted == ["turns (Loop)"]


def test_a_gpu_launches_a_loops_body_every_turn():
    # an Identity body does no arithmetic, but each of its 2^63 - 1 turns is a kernel launch on a GPU
    # (and a wavefront on the wafer): the loop had estimated at 4.7 us
    body = helper.make_graph([helper.make_node("Identity", ["c_in"], ["c_out"]),
                              helper.make_node("Identity", ["v_in"], ["v_out"])], "body",
                             [_vi("i", TensorProto.INT64, []), _vi("c_in", TensorProto.BOOL, []), _vi("v_in", F, [1])],
                             [_vi("c_out", TensorProto.BOOL, []), _vi("v_out", F, [1])])
    graph = helper.make_graph([helper.make_node("Loop", ["M", "", "x"], ["y"], body=body)], "g", [_vi("x", F, [1])],
                              [_vi("y", F, [1])], [numpy_helper.from_array(np.array(2**63 - 1, np.int64), "M")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    for est in hal.estimate(model, "gpu,wafer").estimates:
        assert est.latency_s > 1e9, est.target
