"""Sibling MatMuls that read one activation, each with its bias Add or each without (attention's
Q, K and V projections): the graph pass lays their weights and biases out as one array each
(``stack_sibling_weights``, the same values in the same bytes), and the host runs them as one step
(``MatMulGroup``): one batched product where the weights are stacked, each apart elsewhere, always
the bits of the nodes apart."""

from __future__ import annotations

import pickle

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import hal
from hal.engine import Program, fused_steps, steps_for_nodes
from hal.graph.load import from_proto
from hal.graph.passes import optimize
from hal.kernels.fused import MatMulBias, MatMulGroup

SPECIAL = np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45, 3.4e38], dtype=np.float32)


def _projections(x_shape: tuple[int, ...], *, dtype=np.float32, shared_weight: bool = False, odd_one: bool = False,
                 reader_between: bool = False, transposed: bool = False, biases: str = "all") -> onnx.ModelProto:
    """x -> three MatMul + bias Add projections (q, k, v), each a graph output. ``shared_weight``: k
    reads q's weight; ``odd_one``: v's weight has another width; ``reader_between``: a Neg of q sits
    between q's Add and k's MatMul in node order; ``transposed``: the projections read x's transpose
    (x is then given as (K, M), and the step reads a transposed view of it); ``biases``: "all", "none"
    (bare MatMuls, as Llama exports them) or "q" (q's alone)."""
    rng = np.random.default_rng(0)
    k = x_shape[-1]
    inits, nodes, outputs = [], [], []
    t = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    x_in = x_shape[::-1] if transposed else x_shape
    if transposed:
        nodes.append(helper.make_node("Transpose", ["xt"], ["x"], name="transpose"))
    for i, name in enumerate("qkv"):
        width = 5 if odd_one and name == "v" else 6
        w = "w_q" if shared_weight and name == "k" else f"w_{name}"
        if w == f"w_{name}":
            inits.append(numpy_helper.from_array((rng.standard_normal((k, width)) * 2).astype(dtype), w))
        if biases == "all" or biases == name:
            inits.append(numpy_helper.from_array(rng.standard_normal(width).astype(dtype), f"b_{name}"))
            nodes += [helper.make_node("MatMul", ["x", w], [f"p_{name}"], name=f"mm_{name}"),
                      helper.make_node("Add", [f"p_{name}", f"b_{name}"] if i != 1 else [f"b_{name}", f"p_{name}"],
                                       [name], name=f"add_{name}")]
        else:
            nodes.append(helper.make_node("MatMul", ["x", w], [name], name=f"mm_{name}"))
        outputs.append(helper.make_tensor_value_info(name, t, [*x_shape[:-1], width]))
        if reader_between and name == "q":
            nodes.append(helper.make_node("Neg", ["q"], ["nq"], name="neg_q"))
            outputs.append(helper.make_tensor_value_info("nq", t, [*x_shape[:-1], width]))
    inputs = [helper.make_tensor_value_info("xt" if transposed else "x", t, list(x_in))]
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _x(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    with np.errstate(over="ignore"):  # (3.4e38 is inf in float16)
        x.reshape(-1)[:min(SPECIAL.size, x.size)] = SPECIAL[:x.size].astype(dtype)
    return x


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint16 if a.itemsize == 2 else np.uint32)


def _same(got: list, want: list) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype and np.array_equal(_bits(g), _bits(w))


@pytest.mark.parametrize("shape", [(2, 5, 8), (5, 8), (1, 1, 8), (3, 1, 4, 8)], ids=str)
def test_three_projections_are_one_batched_step_with_the_bits_of_the_pairs(shape) -> None:
    model = _projections(shape)
    originals = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    graph = optimize(from_proto(model, where="qkv"))
    weights = [graph.initializers[f"w_{n}"] for n in "qkv"]
    assert all(np.array_equal(graph.initializers[k], v) for k, v in originals.items())  # values untouched
    assert weights[0].base is not None and all(w.base is weights[0].base for w in weights)  # one array
    (step,) = fused_steps(graph, graph.nodes)
    assert isinstance(step.fn, MatMulGroup) and step.outs == ["q", "k", "v"]
    fused, plain = Program(graph, [step]), Program(graph, steps_for_nodes(graph, graph.nodes))
    want = plain.run_list({"x": _x(shape)})
    _same(fused.run_list({"x": _x(shape)}), want)
    assert step.fn._layout is not None and step.fn._layout[1] is weights[0].base  # the batched product ran
    # a stored program's weights come back apart: each pair runs alone, the same bits
    stored = pickle.loads(pickle.dumps(fused))
    _same(stored.run_list({"x": _x(shape)}), want)
    assert stored.steps[0].fn._layout[1] is None


@pytest.mark.parametrize("shape", [(2, 5, 8), (1, 1, 8)], ids=str)
def test_bare_sibling_matmuls_are_one_batched_step_and_a_biased_one_stays_apart(shape) -> None:
    graph = optimize(from_proto(_projections(shape, biases="none"), where="qkv"))
    (step,) = fused_steps(graph, graph.nodes)
    assert isinstance(step.fn, MatMulGroup) and step.op_type == "MatMul+MatMul+MatMul"
    want = Program(graph, steps_for_nodes(graph, graph.nodes)).run_list({"x": _x(shape)})
    _same(Program(graph, [step]).run_list({"x": _x(shape)}), want)
    assert step.fn._layout[1] is graph.initializers["w_q"].base  # the batched product ran
    _same(pickle.loads(pickle.dumps(Program(graph, [step]))).run_list({"x": _x(shape)}), want)  # apart
    # q with its bias, k and v without: the bare two are a group, q's pair a step of its own
    graph = optimize(from_proto(_projections(shape, biases="q"), where="qkv"))
    steps = fused_steps(graph, graph.nodes)
    assert [s.op_type for s in steps] == ["MatMul+Add", "MatMul+MatMul"]
    _same(Program(graph, steps).run_list({"x": _x(shape)}),
          Program(graph, steps_for_nodes(graph, graph.nodes)).run_list({"x": _x(shape)}))


@pytest.mark.parametrize("case", ["1-D activation", "float16", "weights apart", "transposed activation"])
def test_where_the_batched_product_does_not_apply_each_pair_runs_alone(case, monkeypatch) -> None:
    shape, dtype = ((8,), np.float32) if case == "1-D activation" else ((3, 8), np.float16 if case == "float16"
                                                                        else np.float32)
    transposed = case == "transposed activation"
    graph = from_proto(_projections(shape, dtype=dtype, transposed=transposed), where="qkv")
    if case != "weights apart":
        graph = optimize(graph)
    steps = fused_steps(graph, graph.nodes)  # (the Transpose kernel's result is a transposed view)
    assert isinstance(steps[-1].fn, MatMulGroup) and len(steps) == 1 + transposed
    calls = []
    real = MatMulBias.__call__
    monkeypatch.setattr(MatMulBias, "__call__", lambda self, *a: calls.append(1) or real(self, *a))
    feeds = {"xt": _x(shape[::-1], dtype)} if transposed else {"x": _x(shape, dtype)}
    got = Program(graph, steps).run_list(feeds)
    assert len(calls) == 3  # each pair through the pair's own kernel
    _same(got, Program(graph, steps_for_nodes(graph, graph.nodes)).run_list(feeds))


def test_a_shared_weight_or_another_width_keeps_pairs_apart_and_a_reader_between_runs_after() -> None:
    for kwargs, grouped in (({"shared_weight": True}, None), ({"odd_one": True}, ["q", "k"])):
        graph = from_proto(_projections((2, 8), **kwargs), where="qkv")
        loaded = dict(graph.initializers)
        graph = optimize(graph)
        groups = [s.outs for s in fused_steps(graph, graph.nodes) if isinstance(s.fn, MatMulGroup)]
        assert groups == ([grouped] if grouped else [])
        assert (graph.initializers["w_q"] is loaded["w_q"]) == (grouped is None)  # only a group's are stacked
        assert graph.initializers["w_v"] is loaded["w_v"]
    # the group runs at its first MatMul, so a reader of q placed before k's MatMul reads it computed
    model = _projections((2, 8), reader_between=True)
    graph = optimize(from_proto(model, where="qkv"))
    steps = fused_steps(graph, graph.nodes)
    assert [s.op_type for s in steps] == ["MatMul+Add+MatMul+Add+MatMul+Add", "Neg"]
    _same(Program(graph, steps).run_list({"x": _x((2, 8))}),
          Program(graph, steps_for_nodes(graph, graph.nodes)).run_list({"x": _x((2, 8))}))
    sess = hal.InferenceSession(model, target="cpu")  # and through a session, every output by name
    np.testing.assert_array_equal(sess.run(["nq"], {"x": _x((2, 8))})[0], -sess.run(["q"], {"x": _x((2, 8))})[0])
