"""LayerNormalization steps (``hal.kernels.fused_norm``): an Add and the LayerNormalization of its
sum as one step (``add_layer_norm``, ``AddLayerNorm``): one compiled loop with the bits of the two
kernels, the sum still a result for its other readers, the step at the Add's place, the two kernels in
turn wherever the loop does not apply; and a LayerNormalization alone (``LayerNorm``), which keeps
what its operands decided from call to call."""

from __future__ import annotations

import pickle

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.engine import Program, steps_for_nodes
from hal.kernels import normalization
from hal.kernels.fused_norm import AddLayerNorm, LayerNorm
from tests.conftest import fused_and_plain

N = 64
SPECIALS = np.array([np.nan, np.inf, -np.inf, -0.0, 3e38, 1e-45], np.float32)


def _model(*, a_shape=(2, 5, N), b_shape=(2, 5, N), elem=TensorProto.FLOAT, bias: bool = True, axis: int = -1,
           residual: bool = True, between: bool = False, scale_from: str = "weight", stats: bool = False):
    """y = LayerNorm(a' + b') [, z = (a' + b') + y]: a' = a ** 1 and b' = b ** 1 are intermediates
    (Pow: no region op, so no region takes the Add). ``between``: a Sigmoid of the sum before the
    LayerNormalization, read by the output z; ``scale_from``: the scale a weight, a node run before
    the Add ("early") or after it ("late")."""
    np_t = helper.tensor_dtype_to_np_dtype(elem)
    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array(np.ones((), np_t), "one"),
             numpy_helper.from_array((rng.standard_normal(N) + 1).astype(np_t), "gamma"),
             numpy_helper.from_array(rng.standard_normal(N).astype(np_t), "beta")]
    nodes = [helper.make_node("Pow", ["a", "one"], ["na"]), helper.make_node("Pow", ["b", "one"], ["nb"])]
    scale = "gamma"
    if scale_from == "early":
        nodes.append(helper.make_node("Abs", ["gamma"], ["g2"]))
        scale = "g2"
    nodes.append(helper.make_node("Add", ["na", "nb"], ["s"], name="join"))
    if scale_from == "late":
        nodes.append(helper.make_node("Abs", ["gamma"], ["g2"]))
        scale = "g2"
    if between:
        nodes.append(helper.make_node("Sigmoid", ["s"], ["sig"]))
    outs = ["y", "mean", "inv"] if stats else ["y"]
    nodes.append(helper.make_node("LayerNormalization", ["s", scale, "beta"] if bias else ["s", scale], outs,
                                  name="norm", axis=axis, epsilon=1e-5))
    shape = list(np.broadcast_shapes(a_shape, b_shape))
    outputs = [helper.make_tensor_value_info("y", elem, shape)]
    if residual:
        nodes.append(helper.make_node("Add", ["s", "y"], ["z"], name="residual"))
        outputs.append(helper.make_tensor_value_info("z", elem, shape))
    if between:
        outputs.append(helper.make_tensor_value_info("sig", elem, shape))
    inputs = [helper.make_tensor_value_info(n, elem, list(shape))
              for n, shape in (("a", a_shape), ("b", b_shape))]
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(a_shape=(2, 5, N), b_shape=(2, 5, N), dtype=np.float32, seed: int = 0, specials: bool = False):
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal(a_shape) * 3 + 40).astype(dtype)  # rows far from zero: the mean's digits count
    b = (rng.standard_normal(b_shape) * 3).astype(dtype)
    if specials:
        a.reshape(-1, N)[1, :len(SPECIALS)] = SPECIALS  # a row with a NaN and infinities: all NaN after
        b.reshape(-1, N)[2, :2] = [3e38, 3e38]  # a sum that overflows
    return {"a": a, "b": b}


def _same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert np.array_equal(g, w, equal_nan=True)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_one_loop_with_the_bits_of_the_two_kernels_and_the_sum_kept(bias, monkeypatch):
    calls = []
    real = normalization.add_layer_norm_into
    monkeypatch.setattr(normalization, "add_layer_norm_into", lambda *a: calls.append(1) or real(*a))
    steps, fused, got, want = fused_and_plain(_model(bias=bias), _feeds(specials=True))
    join = [s for s in steps if isinstance(s.fn, AddLayerNorm)]
    assert [s.op_type for s in join] == ["Add+LayerNormalization"] and join[0].outs == ["s", "y"]
    assert join[0].guarded_as == "Add" and join[0].nodes == ("join", "norm")
    _same(got, want)  # y, and z = s + y: the sum came out too
    assert np.isnan(got[0]).any() and np.isfinite(got[0]).any()
    assert calls == [1]
    _same(fused.run_list(_feeds(seed=1)), Program(fused.graph, steps_for_nodes(fused.graph, fused.graph.nodes))
          .run_list(_feeds(seed=1)))
    # the second call took what the first worked out: the loop's machine code, called directly
    assert calls == [1] and join[0].fn._kept[4] is not None
    stored = pickle.loads(pickle.dumps(fused))
    _same(stored.run_list(_feeds(specials=True)), want)


@pytest.mark.parametrize("a_shape,b_shape", [((1, 16, N), (16, N)), ((16, N), (1, 16, N)),
                                             ((1, 2, 8, N), (2, 8, N))], ids=["ab", "ba", "4-axes"])
def test_leading_ones_pair_up_a_position_embedding(a_shape, b_shape, monkeypatch):
    # GPT-2's first join: the tokens' (1, 16, 64) embeddings and the positions' (16, 64); the loop
    # takes arrays of 2 or 3 axes as they are, and more as rows
    calls = []
    real = normalization.add_layer_norm_into
    monkeypatch.setattr(normalization, "add_layer_norm_into", lambda *a: calls.append(1) or real(*a))
    _, _, got, want = fused_and_plain(_model(a_shape=a_shape, b_shape=b_shape), _feeds(a_shape, b_shape))
    _same(got, want)
    assert calls == [1] and got[0].shape == (a_shape if len(a_shape) >= len(b_shape) else b_shape)


@pytest.mark.parametrize("case", ["broadcast", "float64", "float16", "axis-1", "scale-early"])
def test_other_operands_and_layouts_keep_the_bits(case):
    a_shape, b_shape = (2, 5, N), ((N,) if case == "broadcast" else (2, 5, N))
    dtype = {"float64": np.float64, "float16": np.float16}.get(case, np.float32)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    model = _model(a_shape=a_shape, b_shape=b_shape, elem=elem, axis=1 if case == "axis-1" else -1,
                   scale_from="early" if case == "scale-early" else "weight")
    if case == "axis-1":  # normalised over (5, 64): a scale and bias of that shape
        for init in model.graph.initializer[1:]:
            init.CopyFrom(numpy_helper.from_array(np.tile(numpy_helper.to_array(init), (5, 1)), init.name))
    steps, _, got, want = fused_and_plain(model, _feeds(a_shape, b_shape, dtype))
    assert any(isinstance(s.fn, AddLayerNorm) for s in steps)
    _same(got, want)


@pytest.mark.parametrize("case", ["scale-made-after-the-add", "mean-asked", "sum-is-the-norms-scale"])
def test_not_fused(case):
    if case == "sum-is-the-norms-scale":
        model = _model()
        model.graph.node[-2].input[1] = "s"  # LayerNorm(s, s, beta): the scale is the sum itself
    else:
        model = _model(scale_from="late") if case == "scale-made-after-the-add" else _model(stats=True, residual=False)
    steps, _, got, want = fused_and_plain(model, _feeds())
    assert not any(isinstance(s.fn, AddLayerNorm) for s in steps)
    _same(got, want)


def test_a_reader_of_the_sum_between_the_two_still_reads_it():
    # the step runs at the Add's place: the Sigmoid between them reads the sum the step made
    steps, _, got, want = fused_and_plain(_model(between=True), _feeds())
    ops = [s.op_type for s in steps]
    assert ops.index("Add+LayerNormalization") < ops.index("Sigmoid")
    _same(got, want)


def test_onnxruntime_agrees_on_every_target():
    # a pre-LN block's join as onnxruntime runs it (its SkipLayerNormalization fusion), on each target
    model = _model()
    feeds = _feeds(seed=3)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for target in [t.name for t in hal.targets()]:
        got = hal.InferenceSession(model, target=target).run(None, feeds)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=target)


def _alone(axis: int = -1, shape=(2, 5, N)):
    """y = LayerNorm(a ** 1): a LayerNormalization no Add feeds."""
    model = _model(a_shape=shape, b_shape=shape, residual=False, axis=axis)
    graph = model.graph
    graph.node[2].op_type, graph.node[2].input[:] = "Identity", ["na"]  # the join: s = a' alone
    if axis != -1:  # normalised over the last two axes: a scale and bias of that shape
        for init in graph.initializer[1:]:
            init.CopyFrom(numpy_helper.from_array(np.tile(numpy_helper.to_array(init), (shape[-2], 1)), init.name))
    return model


def test_a_layer_norm_alone_keeps_its_plan_and_the_kernels_bits(monkeypatch):
    steps, fused, got, want = fused_and_plain(_alone(), _feeds(specials=True))
    norm = [s for s in steps if isinstance(s.fn, LayerNorm)]
    assert [s.op_type for s in norm] == ["LayerNormalization"] and norm[0].attrs == {}
    _same(got, want)
    assert np.isnan(got[0]).any() and np.isfinite(got[0]).any()
    plain = Program(fused.graph, steps_for_nodes(fused.graph, fused.graph.nodes))
    plans = []
    real = normalization.layer_norm_plan
    monkeypatch.setattr(normalization, "layer_norm_plan", lambda *a: plans.append(1) or real(*a))
    for seed in (1, 2):
        fused.run_list(_feeds(seed=seed))
    assert plans == []  # the same shapes and weights: the plan the first run worked out
    monkeypatch.undo()
    for seed in (1, 2):
        _same(fused.run_list(_feeds(seed=seed)), plain.run_list(_feeds(seed=seed)))
    _same(pickle.loads(pickle.dumps(fused)).run_list(_feeds(specials=True)), want)


def test_a_layer_norm_alone_plans_again_for_new_shapes_and_other_layouts():
    norm = LayerNorm(("", "LayerNormalization", 17), {"axis": -1, "epsilon": 1e-5, "_n_outputs": 1})
    rng = np.random.default_rng(0)
    scale, bias = rng.standard_normal(N).astype(np.float32), rng.standard_normal(N).astype(np.float32)
    for x in [rng.standard_normal((3, N)), rng.standard_normal((2, 7, N)),
              rng.standard_normal((N, 6)).T,  # not C-contiguous: the kernel, after a plan for (6, 64)
              rng.standard_normal((2, 7, N))]:
        x = x.astype(np.float32)
        want = normalization.layer_normalization(x, scale, bias, axis=-1, epsilon=1e-5, _n_outputs=1)
        assert np.array_equal(norm(x, scale, bias), want)
        assert np.array_equal(norm(x, scale, None),
                              normalization.layer_normalization(x, scale, None, epsilon=1e-5, _n_outputs=1))
    other = scale[::-1].copy()  # other weights (a stored program's copies, say): planned again
    assert np.array_equal(norm(x, other, bias), normalization.layer_normalization(x, other, bias, epsilon=1e-5,
                                                                                    _n_outputs=1))
    x64 = rng.standard_normal((3, N))  # float64: the kernel's own statistics
    assert np.array_equal(norm(x64, scale.astype(np.float64), bias.astype(np.float64)),
                          normalization.layer_normalization(x64, scale.astype(np.float64), bias.astype(np.float64),
                                                            epsilon=1e-5, _n_outputs=1))


def test_a_layer_norm_over_two_axes_runs_the_kernel():
    steps, _, got, want = fused_and_plain(_alone(axis=-2), _feeds())
    assert any(isinstance(s.fn, LayerNorm) for s in steps)
    _same(got, want)
