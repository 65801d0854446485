"""Concats that extend one another share one buffer (hal.kernels.fused.ConcatChain): the values are
np.concatenate's bit for bit, each step only appends, and every call that does not fit the buffer
(batch > 1, a read-only or foreign first input, mixed dtypes) is the plain Concat kernel."""

from __future__ import annotations

import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.engine import Program, fused_steps, steps_for_nodes
from hal.graph.load import from_proto
from hal.graph.passes import optimize
from hal.kernels import lookup
from hal.kernels.fused import ConcatChain

GROWTH = 3  # channels each layer adds


def _dense_block(layers: int = 4, batch: int = 1, axis: int = 1, *, mid_output: int | None = None,
                 second_reader: int | None = None, weight_head: bool = False) -> onnx.ModelProto:
    """A DenseNet-style block: each layer reads the running concatenation (Relu, 1x1 Conv) and the
    next concatenation appends its result. ``mid_output``: that layer's concatenation is also a graph
    output; ``second_reader``: a second Concat reads that layer's concatenation; ``weight_head``: the
    first concatenation joins two weights (a weight-only step, kept from run to run)."""
    rng = np.random.default_rng(0)
    channels = 4
    nodes, inits = [], []
    outputs = []

    def out(name: str, c: int) -> None:
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, c, 5, 5]))

    cur = "x"
    if weight_head:
        inits += [numpy_helper.from_array(rng.standard_normal((1, 2, 5, 5)).astype(np.float32), "w_a"),
                  numpy_helper.from_array(rng.standard_normal((1, 2, 5, 5)).astype(np.float32), "w_b")]
        nodes.append(helper.make_node("Concat", ["w_a", "w_b"], ["wcat"], axis=axis))
        nodes.append(helper.make_node("Concat", ["wcat", "x"], ["c_w"], axis=axis))
        cur, channels = "c_w", 8
    for k in range(layers):
        w = rng.standard_normal((GROWTH, channels, 1, 1)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{k}"))
        nodes += [helper.make_node("Relu", [cur], [f"r{k}"]),
                  helper.make_node("Conv", [f"r{k}", f"w{k}"], [f"n{k}"]),
                  helper.make_node("Concat", [cur, f"n{k}"], [f"c{k}"], axis=axis)]
        cur, channels = f"c{k}", channels + GROWTH
        if k == mid_output:
            out(cur, channels)
        if k == second_reader:
            nodes.append(helper.make_node("Concat", [cur, f"n{k}"], ["side"], axis=axis))
            out("side", channels + GROWTH)
    nodes.append(helper.make_node("Neg", [cur], ["y"]))
    out("y", channels)
    outputs.insert(0, outputs.pop())
    graph = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                              [batch, 4, 5, 5])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _x(batch: int = 1, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 4, 5, 5)).astype(np.float32)


def _programs(model: onnx.ModelProto) -> tuple[Program, Program, list]:
    graph = optimize(from_proto(model, where="dense"))
    steps = fused_steps(graph, graph.nodes)
    return Program(graph, steps), Program(graph, steps_for_nodes(graph, graph.nodes)), steps


def _chained(steps: list) -> list[bool]:
    """Per Concat step: whether it is a chain's first step (True) or a later one (False)."""
    return [s.fn.head for s in steps if isinstance(s.fn, ConcatChain)]


@pytest.mark.parametrize("batch,axis", [(1, 1), (1, -3), (2, 1)], ids=["nchw", "negative-axis", "batch2"])
def test_a_dense_block_matches_the_plain_program_bit_for_bit(batch, axis) -> None:
    model = _dense_block(batch=batch, axis=axis)
    fused, plain, steps = _programs(model)
    assert _chained(steps) == [True, False, False, False]
    x = _x(batch)
    want = plain.run_list({"x": x})
    for _ in range(2):  # a second run allocates its own buffer
        got = fused.run_list({"x": x.copy()})
        np.testing.assert_array_equal(got[0], want[0])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got[0], sess.run(None, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_each_step_appends_to_the_first_steps_buffer() -> None:
    kdef = lookup("Concat", "", 17)
    key = (kdef.domain, "Concat", kdef.since)
    head, step = ConcatChain(key, 9, True), ConcatChain(key, 9, False)
    a, b, c = (np.full((1, n, 2), v, np.float32) for n, v in ((2, 1), (3, 2), (4, 3)))
    first = head(a, b, axis=1)
    second = step(first, c, axis=1)
    assert np.shares_memory(first, second) and second.base is first.base and second.flags.c_contiguous
    np.testing.assert_array_equal(second, np.concatenate([a, b, c], axis=1))
    np.testing.assert_array_equal(first, np.concatenate([a, b], axis=1))  # the prefix is left as it was


@pytest.mark.parametrize("case", ["read-only", "not-a-prefix", "past-the-end", "batch2", "mixed-dtypes"])
def test_a_call_that_does_not_fit_is_the_plain_concat(case) -> None:
    kdef = lookup("Concat", "", 17)
    key = (kdef.domain, "Concat", kdef.since)
    head, step = ConcatChain(key, 6, True), ConcatChain(key, 6, False)
    a, b = np.ones((1, 2, 3), np.float32), np.full((1, 2, 3), 2, np.float32)
    first = head(a, b, axis=1)
    tail = np.full((1, 2, 3), 5, np.float32)
    if case == "read-only":  # a weight-only result the program keeps from run to run
        first.flags.writeable = False
    elif case == "not-a-prefix":
        first = first[:, 1:]
    elif case == "past-the-end":
        tail = np.full((1, 3, 3), 5, np.float32)
    elif case == "batch2":
        first, tail = np.ones((2, 4, 3), np.float32), np.full((2, 2, 3), 5, np.float32)
    else:
        tail = tail.astype(np.float64)
    before = first.copy()
    got = step(first, tail, axis=1)
    np.testing.assert_array_equal(got, np.concatenate([first, tail], axis=1))
    assert not np.shares_memory(got, first)
    np.testing.assert_array_equal(first, before)


def test_a_graph_output_or_a_second_concat_reader_ends_the_chain() -> None:
    _, _, steps = _programs(_dense_block(layers=5, mid_output=1))
    assert _chained(steps) == [True, False, True, False, False]  # c1 is an output: c2 starts over
    fused, plain, steps = _programs(_dense_block(layers=5, second_reader=2))
    assert _chained(steps) == [True, False, False, True, False]  # two Concats read c2: neither extends it
    x = _x()
    for got, want in zip(fused.run_list({"x": x}), plain.run_list({"x": x})):
        np.testing.assert_array_equal(got, want)


def test_a_kept_weight_only_head_is_never_written_by_the_next_step(monkeypatch) -> None:
    # the head joins two weights: left unfolded, the program keeps its result (read-only) across runs
    # and threads, so the step extending it must copy rather than write into the rest of that buffer
    monkeypatch.setattr("hal.graph.passes.FOLD_LIMIT_BYTES", 0)
    fused, plain, steps = _programs(_dense_block(layers=2, weight_head=True))
    assert _chained(steps)[0] is True
    fused.run_list({"x": _x()})
    kept = fused._prepared[0][fused.slots["wcat"]]
    assert not kept.flags.writeable and kept.base is not None
    rest = kept.base.reshape(-1)[kept.size:]
    rest[...] = np.nan  # what no run may write
    for seed in (1, 2, 3):
        x = _x(seed=seed)
        np.testing.assert_array_equal(fused.run_list({"x": x})[0], plain.run_list({"x": x})[0])
    assert np.isnan(rest).all()


def test_concurrent_runs_each_fill_their_own_buffer() -> None:
    sess = hal.InferenceSession(_dense_block(layers=6).SerializeToString(), "cpu")
    _, plain, _ = _programs(_dense_block(layers=6))
    xs = [_x(seed=s) for s in range(8)]
    want = [plain.run_list({"x": x})[0] for x in xs]
    errors: list[str] = []

    def work(k: int) -> None:
        for _ in range(20):
            if not np.array_equal(sess.run(None, {"x": xs[k]})[0], want[k]):
                errors.append(f"input {k}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("target", ["cpu", "gpu", "lpu", "wafer"])
def test_every_target_at_exact_gives_the_plain_programs_bits(target) -> None:
    model = _dense_block(layers=5)
    _, plain, _ = _programs(model)
    sess = hal.InferenceSession(model.SerializeToString(), target, precision="exact")
    for seed in (1, 2):
        x = _x(seed=seed)
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0], plain.run_list({"x": x})[0])
