"""An Add (or a Sum of two) and the Relu that alone reads it as one step (``add_relu``,
``hal.kernels.fused_relu.AddRelu``): one compiled pass with the bits of the two kernels, run into an
operand's buffer where the engine may, and the two kernels in turn wherever the pass does not apply."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from hal.engine import Program, steps_for_nodes
from hal.kernels.fused_relu import AddRelu
from tests.conftest import fused_and_plain

SPECIALS = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, -1e-45, 3e38, -3e38, 1.0, -1.0, 2.5], np.float32)


def _model(op: str = "Add", *, n_inputs: int = 2, b_shape: tuple[int, ...] = (2, 3, 4, 5), elem=TensorProto.FLOAT,
           extra_reader: bool = False, lent: bool = False):
    """Relu(op(a', b')) where a' = a ** 1 and b' = b ** 1 are intermediates the run holds alone (or,
    with ``lent``, a' is the feed a itself, which the caller holds). (Pow is no region op: an
    elementwise producer would join the Add and the Relu in a region of its own.)"""
    names = ["a" if lent else "na", "nb", "nc"][:n_inputs]
    nodes = [helper.make_node("Pow", ["a", "one"], ["na"]), helper.make_node("Pow", ["b", "one"], ["nb"]),
             helper.make_node("Pow", ["a", "one"], ["nc"])]
    nodes += [helper.make_node(op, names, ["s"], name="join"), helper.make_node("Relu", ["s"], ["y"], name="relu")]
    outputs = [helper.make_tensor_value_info("y", elem, [2, 3, 4, 5])]
    if extra_reader:
        nodes.append(helper.make_node("Sigmoid", ["s"], ["z"]))
        outputs.append(helper.make_tensor_value_info("z", elem, [2, 3, 4, 5]))
    inputs = [helper.make_tensor_value_info("a", elem, [2, 3, 4, 5]), helper.make_tensor_value_info("b", elem, b_shape)]
    one = numpy_helper.from_array(np.ones((), helper.tensor_dtype_to_np_dtype(elem)), "one")
    graph = helper.make_graph(nodes, "g", inputs, outputs, [one])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(dtype=np.float32, b_shape=(2, 3, 4, 5), seed: int = 0):
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal((2, 3, 4, 5)) * 3).astype(dtype)
    b = (rng.standard_normal(b_shape) * 3).astype(dtype)
    if dtype == np.float32 and b.shape == a.shape:
        a.flat[:len(SPECIALS)] = SPECIALS
        b.flat[:len(SPECIALS)] = SPECIALS[::-1]  # NaN + x, inf - inf, -0 + -0, 3e38 + 3e38, ...
        a.flat[20], b.flat[20] = -0.0, -0.0  # summed to -0: the Relu's +0
    return {"a": a, "b": b}


def _same(got, want):
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert np.array_equal(g, w, equal_nan=True)
        assert np.array_equal(np.signbit(g), np.signbit(w))  # -0 and +0 apart


@pytest.mark.parametrize("lent", [False, True], ids=["into-a", "into-b"])
@pytest.mark.parametrize("op", ["Add", "Sum"])
def test_one_pass_into_an_operand_with_the_bits_of_the_two_kernels(op, lent, monkeypatch):
    calls = []
    real = AddRelu._into
    monkeypatch.setattr(AddRelu, "_into", lambda self, a, b, out: calls.append(out is b) or real(self, a, b, out))
    steps, fused, got, want = fused_and_plain(_model(op, lent=lent), _feeds())
    join = [s for s in steps if isinstance(s.fn, AddRelu)]
    assert [s.op_type for s in join] == [f"{op}+Relu"] and join[0].guarded_as == op
    _same(got, want)
    assert (np.asarray(got[0]) == 0).any() and np.isnan(got[0]).any() and np.isinf(got[0]).any()
    # each run writes into the operand it reads last: a' (a Neg's result), or b' where a is the caller's feed
    assert calls == [lent]
    _same(fused.run_list(_feeds(seed=1)), Program(fused.graph, steps_for_nodes(fused.graph, fused.graph.nodes))
          .run_list(_feeds(seed=1)))
    stored = pickle.loads(pickle.dumps(fused))
    _same(stored.run_list(_feeds()), want)


def test_a_new_array_where_no_operand_is_the_runs_alone():
    # both operands are the caller's feeds: the step writes a new array and leaves them alone
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    t = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3, 4, 5]) for n in ("a", "b", "y")]
    model = helper.make_model(helper.make_graph(nodes, "g", t[:2], t[2:]),
                              opset_imports=[helper.make_opsetid("", 17)])
    feeds = _feeds()
    before = {k: v.copy() for k, v in feeds.items()}
    steps, _, got, want = fused_and_plain(model, feeds)
    assert isinstance(steps[0].fn, AddRelu)
    _same(got, want)
    for k in feeds:
        assert np.array_equal(feeds[k], before[k], equal_nan=True)


@pytest.mark.parametrize("case", ["broadcast", "float64", "int32"])
def test_other_operands_run_the_two_kernels(case):
    b_shape = (5,) if case == "broadcast" else (2, 3, 4, 5)
    dtype = {"float64": np.float64, "int32": np.int32}.get(case, np.float32)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    steps, _, got, want = fused_and_plain(_model(b_shape=b_shape, elem=elem), _feeds(dtype, b_shape))
    assert any(isinstance(s.fn, AddRelu) for s in steps)
    _same(got, want)


@pytest.mark.parametrize("case", ["three-inputs", "sum-read-elsewhere", "in-a-larger-region"])
def test_not_fused(case):
    if case == "in-a-larger-region":  # a Mul feeding the Add: the three are one elementwise region
        model = _model()
        model.graph.node[0].op_type = "Mul"
    else:
        model = _model("Sum", n_inputs=3) if case == "three-inputs" else _model(extra_reader=True)
    steps, _, got, want = fused_and_plain(model, _feeds())
    assert not any(isinstance(s.fn, AddRelu) for s in steps)
    if case == "in-a-larger-region":
        assert "Mul+Add+Relu" in [s.op_type for s in steps]
    _same(got, want)
