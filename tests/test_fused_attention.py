"""An attention's core as one step (``attention_core`` in ``hal.graph.fuse``, ``AttentionCore``):
the scores' MatMul, the scale-and-mask Softmax region and the MatMul by V, with the head splits
folded in, bit-identical to the nodes one by one; the kept fast path on a repeated call, and the
kernels in turn wherever it does not apply (writable side inputs, large or changed shapes)."""

from __future__ import annotations

import pickle

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hal import zoo
from hal.engine import Program, fused_steps, steps_for_nodes
from hal.graph.load import load
from hal.kernels.fused_attention import AttentionCore
from tests.conftest import fused_and_plain

B, S, H, D = 1, 16, 4, 16


def _model(*, b=B, s=S, mask: str = "where", mask_fed: bool = False, scale_first: bool = False,
           scores_out: bool = False, probs_out: bool = False):
    """y = heads joined of softmax(mask(QK^T / scale)) V, Q, K and V split into heads by
    Reshape+Transpose. ``mask``: "where" (a causal condition picking -inf), "add" (an additive
    [b, 1, 1, s] mask) or "none"; ``mask_fed``: the mask is a graph input (a caller's writable array);
    ``scale_first``: the scale is Mul(1/scale, scores) with the scores second; ``scores_out`` /
    ``probs_out``: the scores or the probabilities are graph outputs too."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(np.array([0, 0, H, D], np.int64), "split"),  # (0: the input's size)
             numpy_helper.from_array(np.array([0, 0, H * D], np.int64), "join"),
             numpy_helper.from_array(np.array([float(np.sqrt(D))] if not scale_first else [1 / np.sqrt(D)],
                                              np.float32), "scale")]
    nodes = [helper.make_node("Reshape", [x, "split"], [f"{x}4"]) for x in "qkv"]
    nodes += [helper.make_node("Transpose", ["q4"], ["qh"], perm=[0, 2, 1, 3]),
              helper.make_node("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
              helper.make_node("Transpose", ["v4"], ["vh"], perm=[0, 2, 1, 3]),
              helper.make_node("MatMul", ["qh", "kt"], ["scores"], name="qk")]
    nodes.append(helper.make_node("Mul", ["scale", "scores"], ["scaled"]) if scale_first
                 else helper.make_node("Div", ["scores", "scale"], ["scaled"]))
    inputs = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [b, s, H * D]) for x in "qkv"]
    if mask == "where":
        inits += [numpy_helper.from_array(np.tril(np.ones((s, s), bool)), "causal"),
                  numpy_helper.from_array(np.array([-np.inf], np.float32), "neg")]
        nodes.append(helper.make_node("Where", ["causal", "scaled", "neg"], ["masked"]))
    elif mask == "none":
        nodes[-1].output[0] = "masked"
    else:
        m = np.where(rng.random((b, 1, 1, s)) < 0.25, -1e4, 0).astype(np.float32)
        if mask_fed:
            inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [b, 1, 1, s]))
        else:
            inits.append(numpy_helper.from_array(m, "mask"))
        nodes.append(helper.make_node("Add", ["scaled", "mask"], ["masked"]))
    nodes += [helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
              helper.make_node("MatMul", ["probs", "vh"], ["heads"], name="pv"),
              helper.make_node("Transpose", ["heads"], ["heads_t"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["heads_t", "join"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [b, s, H * D])]
    if scores_out:
        outputs.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, None))
    if probs_out:
        outputs.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "attention", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(b=B, s=S, seed=0, mask=False, kv=None):
    """Q, K and V (of ``kv`` keys where given: a cross-attention's), and the mask if ``mask``."""
    rng = np.random.default_rng(seed)
    feeds = {x: (rng.standard_normal((b, s if x == "q" or kv is None else kv, H * D)) * 2).astype(np.float32)
             for x in "qkv"}
    if mask:
        feeds["mask"] = np.where(rng.random((b, 1, 1, s)) < 0.25, -1e4, 0).astype(np.float32)
    return feeds


def _same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert np.array_equal(g, w, equal_nan=True)


def _core(steps):
    cores = [s for s in steps if isinstance(s.fn, AttentionCore)]
    assert len(cores) == 1, [s.op_type for s in steps]
    return cores[0]


@pytest.mark.parametrize("kw", [{}, {"mask": "add"}, {"mask": "add", "mask_fed": True}, {"scale_first": True}],
                         ids=["causal", "additive", "fed-mask", "scale-first"])
def test_one_step_from_heads_to_heads_with_the_bits_of_the_nodes(kw):
    feeds = _feeds(mask=kw.get("mask_fed", False))
    steps, fused, got, want = fused_and_plain(_model(**kw), feeds)
    core = _core(steps)
    scale, masking = "Mul" if kw.get("scale_first") else "Div", "Where" if kw.get("mask", "where") == "where" else "Add"
    assert core.op_type.startswith("Reshape+") and core.op_type.endswith(f"+MatMul+{scale}+{masking}+Softmax+MatMul")
    assert len(core.views) == 3  # Q's, K's and V's head splits run inside the step
    _same(got, want)
    for seed in (1, 2):  # again: the kept path where it applies, the same bits
        f = _feeds(seed=seed, mask=kw.get("mask_fed", False))
        _same(fused.run_list(dict(f)), fused_and_plain(_model(**kw), f)[3])
    # the fast path keeps its decisions only for read-only side inputs (weights): a fed mask may
    # change in place between runs, so that step goes through the kernels every time
    assert (core.fn._kept is None) == kw.get("mask_fed", False)
    ref = ort.InferenceSession(_model(**kw).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got[0], ref.run(None, feeds)[0], rtol=1e-5, atol=1e-6)


def test_a_fed_mask_changed_in_place_is_read_again():
    model = _model(mask="add", mask_fed=True)
    feeds = _feeds(mask=True)
    _, fused, first, _ = fused_and_plain(model, feeds)
    feeds["mask"][...] = 0
    feeds["mask"][..., :5] = -np.inf  # the first five keys masked out now
    _same(fused.run_list(dict(feeds)), fused_and_plain(model, feeds)[3])
    assert not np.array_equal(first[0], fused.run_list(dict(feeds))[0])


def test_other_shapes_after_a_kept_call_take_the_kernels_again():
    """One program (head splits by Reshape's 0s, a scale without a mask), runs of other shapes in
    turn: 2x40 is past ``SMALL_BATCHED`` (the products copy their views, as ``linalg._matmul``
    does), so that call keeps nothing; a new small shape is kept in place of the old one, and so
    are 24 keys for the same 16 queries (a cross-attention's K and V)."""
    model = _model(mask="none")
    graph = load(model)
    fused = Program(graph, fused_steps(graph, graph.nodes))
    plain = Program(graph, steps_for_nodes(graph, graph.nodes))
    core = _core(fused.steps).fn
    for (b, s, kv), kept in (((1, 16, 16), (1, H, S, D)), ((2, 40, 40), (1, H, S, D)), ((1, 7, 7), (1, H, 7, D)),
                             ((1, 16, 16), (1, H, S, D)), ((1, 16, 24), (1, H, D, 24))):
        feeds = _feeds(b, s, seed=s, kv=kv)
        _same(fused.run_list(dict(feeds)), plain.run_list(dict(feeds)))
        assert core._kept is not None and kept in core._kept[:2], (b, s, kv)
        _same(fused.run_list(dict(feeds)), plain.run_list(dict(feeds)))  # (kept, or not, again)


def test_not_fused_where_the_scores_or_the_probabilities_are_read_elsewhere():
    for kw in ({"scores_out": True}, {"probs_out": True}):
        model = _model(**kw)
        steps, _, got, want = fused_and_plain(model, _feeds())
        assert not any(isinstance(s.fn, AttentionCore) for s in steps), kw
        _same(got, want)


def test_a_stored_program_rebuilds_the_step_and_forgets_what_it_kept():
    model = _model()
    graph = load(model)
    steps = fused_steps(graph, graph.nodes)
    core = _core(steps).fn
    prog = Program(graph, steps)
    want = prog.run_list(_feeds())
    assert core._kept is not None
    again = pickle.loads(pickle.dumps(prog))
    assert _core(again.steps).fn._kept is None
    _same(again.run_list(_feeds()), want)


def test_tiny_gpt_runs_each_layers_attention_as_one_step_with_the_bits_of_its_nodes():
    model = zoo.build("tiny-gpt")
    feeds = {"input_ids": np.random.default_rng(0).integers(0, 100, (1, 16)).astype(np.int64)}
    steps, fused, got, want = fused_and_plain(model, feeds)
    assert sum(isinstance(s.fn, AttentionCore) for s in steps) == 2
    _same(got, want)
    _same(fused.run_list(dict(feeds)), want)  # the kept path


def test_the_cpu_memory_plan_counts_the_scores_and_probabilities_the_step_holds():
    import hal

    b, s = 2, 40
    sess = hal.InferenceSession(_model(b=b, s=s), cache_dir=False)
    weights = sum(w.nbytes for w in load(_model(b=b, s=s)).initializers.values())
    qkv, heads, scores = 3 * b * s * H * D * 4, b * s * H * D * 4, b * H * s * s * 4
    # Q, K and V in, the scores and the probabilities inside the step, the heads out: all at once
    assert sess.report.peak_memory_bytes >= weights + qkv + 2 * scores + heads


def test_concurrent_runs_of_changing_shapes_share_no_kept_state():
    """One program run from four threads, each with its own shapes (kept ones, one past
    ``SMALL_BATCHED``, a cross-attention's): a kept call is one tuple, replaced whole, so a run never
    repeats another shape's decisions; every output has the plain program's bits."""
    from tests.conftest import in_threads

    model = _model(mask="none")
    graph = load(model)
    fused = Program(graph, fused_steps(graph, graph.nodes))
    plain = Program(graph, steps_for_nodes(graph, graph.nodes))
    cases = [_feeds(b, s, seed=i, kv=kv) for i, (b, s, kv) in enumerate([(1, 16, 16), (1, 7, 7), (2, 40, 40),
                                                                          (1, 16, 24)])]
    want = [plain.run_list(dict(f))[0] for f in cases]
    got = in_threads(lambda i: [fused.run_list(dict(cases[i]))[0] for _ in range(40)], 4)
    for runs, w in zip(got, want):
        for g in runs:
            _same([g], [w])
