"""A block's output projection, the residual join that alone reads it and the LayerNormalization
of the join as one step (``projection_norm`` in ``hal.graph.fuse``, ``ProjectionNorm``):
bit-identical to the nodes one by one, in either operand order, NaN payloads included; a kept
call repeats itself as one compiled call; where it cannot, the two fused steps' kernels run."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from hal.engine import Program, fused_steps, steps_for_nodes
from hal.graph.load import load
from hal.kernels import blas, jit
from hal.kernels.fused_norm import ProjectionNorm

K, N = 32, 24


def _model(*, bias_first=False, product_first=True, sum_out=False, x_shape=(1, 16)):
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((K, N)) / np.sqrt(K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    b[3] = np.nan  # a bias NaN of its own payload: the Add's first operand's NaN wins
    b.view(np.uint32)[3] = 0x7FC00001
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b"),
             numpy_helper.from_array((1 + 0.1 * rng.standard_normal(N)).astype(np.float32), "gamma"),
             numpy_helper.from_array((0.1 * rng.standard_normal(N)).astype(np.float32), "beta")]
    nodes = [helper.make_node("MatMul", ["a", "W"], ["mm"], name="proj"),
             helper.make_node("Add", ["b", "mm"] if bias_first else ["mm", "b"], ["h"], name="bias"),
             helper.make_node("Add", ["h", "x"] if product_first else ["x", "h"], ["s"], name="join"),
             helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["y"], name="norm", axis=-1,
                              epsilon=1e-5)]
    inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [*x_shape, K]),
              helper.make_tensor_value_info("x", TensorProto.FLOAT, [*x_shape, N])]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "s")]
    if sum_out:
        outputs.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "proj_norm", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(seed=0, x_shape=(1, 16)):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((*x_shape, K)).astype(np.float32)
    x = rng.standard_normal((*x_shape, N)).astype(np.float32)
    a.reshape(-1)[[0, 40, 77]] = [np.inf, -np.inf, np.nan]  # inf * 0 and NaN rows: NaNs of other payloads
    x.reshape(-1)[[3, 5]] = np.nan  # (column 3: the bias's NaN meets x's in the join)
    return {"a": a, "x": x}


def _programs(model):
    graph = load(model)
    steps = fused_steps(graph, graph.nodes)
    return steps, Program(graph, steps), Program(graph, steps_for_nodes(graph, graph.nodes))


def _same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        assert np.array_equal(g.view(np.uint32), w.view(np.uint32))


@pytest.mark.parametrize("bias_first", [False, True], ids=["bias-second", "bias-first"])
@pytest.mark.parametrize("product_first", [True, False], ids=["product-first", "residual-first"])
@pytest.mark.parametrize("x_shape", [(1, 16), (16,)], ids=["batch-of-one", "rows"])
def test_one_step_with_the_bits_of_the_nodes_and_a_kept_call_as_one_loop(bias_first, product_first, x_shape):
    steps, fused, plain = _programs(_model(bias_first=bias_first, product_first=product_first, x_shape=x_shape))
    (step,) = steps
    assert isinstance(step.fn, ProjectionNorm) and step.op_type == "MatMul+Add+Add+LayerNormalization"
    assert step.outs == ["s", "y"] and step.guarded_as == "MatMul"
    with np.errstate(all="ignore"):
        for seed in range(3):
            _same(fused.run_list(_feeds(seed, x_shape)), plain.run_list(_feeds(seed, x_shape)))
    if not (jit.enabled() and blas.available()):
        assert step.fn._kept is None
        return
    assert step.fn._kept is not None  # the second call on went through the one loop
    calls = []
    real = step.fn._kept[8]
    step.fn._kept = (*step.fn._kept[:8], lambda *a: calls.append(1) or real(*a), step.fn._kept[9])
    with np.errstate(all="ignore"):
        _same(fused.run_list(_feeds(7, x_shape)), plain.run_list(_feeds(7, x_shape)))
    assert calls == [1]


def test_not_joined_where_the_projection_is_read_elsewhere():
    steps, fused, plain = _programs(_model(sum_out=True))
    assert not any(isinstance(s.fn, ProjectionNorm) for s in steps)
    assert [s.op_type for s in steps] == ["MatMul+Add", "Add+LayerNormalization"]
    with np.errstate(all="ignore"):
        _same(fused.run_list(_feeds()), plain.run_list(_feeds()))


def test_other_shapes_and_a_transposed_activation_take_the_kernels():
    steps, fused, plain = _programs(_model(x_shape=(1, 16)))
    with np.errstate(all="ignore"):
        for _ in range(2):
            fused.run_list(_feeds())
        kept = steps[0].fn._kept
        for feeds in (_feeds(1, (1, 9)), {"a": np.asfortranarray(_feeds(2)["a"][0])[None], "x": _feeds(2)["x"]}):
            _same(fused.run_list(dict(feeds)), plain.run_list(dict(feeds)))
    if kept is not None:
        assert steps[0].fn._kept[0] in ((1, 16, K), (1, 9, K))


def test_a_stored_program_forgets_what_it_kept():
    _, fused, _ = _programs(_model())
    with np.errstate(all="ignore"):
        fused.run_list(_feeds())
        want = fused.run_list(_feeds(3))
        again = pickle.loads(pickle.dumps(fused))
        assert again.steps[0].fn._kept is None
        _same(again.run_list(_feeds(3)), want)


def test_without_the_direct_loops_the_parts_run_with_the_same_bits(monkeypatch):
    monkeypatch.setattr(blas, "_AVAILABLE", False)
    steps, fused, plain = _programs(_model())
    with np.errstate(all="ignore"):
        for seed in range(3):
            _same(fused.run_list(_feeds(seed)), plain.run_list(_feeds(seed)))
    assert steps[0].fn._kept is None
