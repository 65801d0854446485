"""A MatMul, its bias Add and the GELU that alone reads the sum as one step (``matmul_epilogue``,
``hal.kernels.epilogue.MatMulEpilogue``): which GELUs take the compiled loops, the same bits as the
nodes one by one wherever it runs, and the fallbacks (other dtypes, other forms, scalars fed)."""

from __future__ import annotations

import pickle

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.engine import Program, fused_steps, steps_for_nodes
from hal.errors import ResourceError
from hal.graph.load import load
from hal.kernels.epilogue import MatMulEpilogue
from hal.kernels.fused import Region

SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 1e-40, 3.92, -3.92, 100.0, -100.0]


def _erf(h: str, nodes: list, swapped: bool) -> str:
    """torch's nn.GELU(): ((erf(h / sqrt2) + 1) * h) * 0.5; ``swapped``: each Add and Mul's operands
    the other way round (the same float32 results)."""
    nodes += [helper.make_node("Div", [h, "k0"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
              helper.make_node("Add", ["k1", "e"] if swapped else ["e", "k1"], ["e1"]),
              helper.make_node("Mul", ["e1", h] if swapped else [h, "e1"], ["m"]),
              helper.make_node("Mul", ["k2", "m"] if swapped else ["m", "k2"], ["y"])]
    return "y"


def _tanh(h: str, nodes: list, swapped: bool) -> str:
    """torch's gelu(approximate="tanh"): 0.5 * (h * (1 + tanh(0.79788 * (h + 0.044715 * h * (h * h)))))."""
    nodes += [helper.make_node("Mul", [h, h], ["x2"]), helper.make_node("Mul", [h, "x2"], ["x3"]),
              helper.make_node("Mul", ["k0", "x3"], ["c3"]),
              helper.make_node("Add", ["c3", h] if swapped else [h, "c3"], ["s"]),
              helper.make_node("Mul", ["k1", "s"], ["u"]), helper.make_node("Tanh", ["u"], ["t"]),
              helper.make_node("Add", ["k2", "t"], ["t1"]), helper.make_node("Mul", [h, "t1"], ["m"]),
              helper.make_node("Mul", ["k3", "m"], ["y"])]
    return "y"


def _half_first(h: str, nodes: list, swapped: bool) -> str:
    """Hugging Face's (h * 0.5) * (1 + erf(h / sqrt2)): another rounding order, not a form of ours."""
    nodes += [helper.make_node("Div", [h, "k0"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
              helper.make_node("Add", ["e", "k1"], ["e1"]), helper.make_node("Mul", [h, "k2"], ["hh"]),
              helper.make_node("Mul", ["hh", "e1"], ["y"])]
    return "y"


def _divided(h: str, nodes: list, swapped: bool) -> str:
    """The erf form with its Div the other way round (sqrt2 / h): not the form."""
    nodes += [helper.make_node("Div", ["k0", h], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
              helper.make_node("Add", ["e", "k1"], ["e1"]), helper.make_node("Mul", [h, "e1"], ["m"]),
              helper.make_node("Mul", ["m", "k2"], ["y"])]
    return "y"


SCALARS = {_erf: [1.4142135, 1.0, 0.5], _tanh: [0.044715, 0.7978846, 1.0, 0.5], _half_first: [1.4142135, 1.0, 0.5],
           _divided: [1.4142135, 1.0, 0.5]}


def _mlp(gelu, *, k: int = 8, n: int = 16, dtype=np.float32, swapped: bool = False, bias_first: bool = False,
         fed: str | None = None, x_shape: list | None = None):
    """x @ W + b and the GELU over the sum, as a graph; ``fed`` names a scalar fed as an input."""
    rng = np.random.default_rng(5)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inits = [numpy_helper.from_array(rng.standard_normal((k, n)).astype(dtype), "W"),
             numpy_helper.from_array(rng.standard_normal(n).astype(dtype), "b")]
    x_shape = x_shape or ["r", k]
    inputs = [helper.make_tensor_value_info("x", elem, x_shape)]
    for i, v in enumerate(SCALARS[gelu]):
        if f"k{i}" == fed:
            inputs.append(helper.make_tensor_value_info(fed, elem, [1]))
        else:
            inits.append(numpy_helper.from_array(np.array([v], dtype=dtype), f"k{i}"))
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"]),
             helper.make_node("Add", ["b", "mm"] if bias_first else ["mm", "b"], ["h"])]
    out = gelu("h", nodes, swapped)
    y = helper.make_tensor_value_info(out, elem, [*x_shape[:-1], n])
    graph = helper.make_graph(nodes, "mlp", inputs, [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _x(rows: int, k: int = 8, dtype=np.float32, seed: int = 2) -> np.ndarray:
    x = (np.random.default_rng(seed).standard_normal((rows, k)) * 3).astype(dtype)
    x[0, :] = 0
    x.flat[:len(SPECIALS)] = SPECIALS[:x.size]  # the sums: NaN, infinities, the clamp's edge, huge and tiny
    if rows > 2:  # sums between half of float32's largest and it: where the tail's order decides overflow
        x[-1, :] = 0
        x[-1, 0] = 2e38
    return x


def _programs(model):
    """(the fused program, the plain one, the fused steps)."""
    graph = load(model)
    steps = fused_steps(graph, graph.nodes)
    return Program(graph, steps), Program(graph, steps_for_nodes(graph, graph.nodes)), steps


@pytest.mark.parametrize("swapped", [False, True], ids=["as-exported", "operands-swapped"])
@pytest.mark.parametrize("gelu,form", [(_erf, "erf"), (_tanh, "tanh")])
def test_exported_gelus_run_as_the_products_epilogue_with_the_same_bits(gelu, form, swapped, monkeypatch):
    model = _mlp(gelu, swapped=swapped)
    fused, plain, steps = _programs(model)
    assert len(steps) == 1 and isinstance(steps[0].fn, MatMulEpilogue)
    assert steps[0].fn._form is not None and steps[0].fn._form[0] == form
    calls = []
    real = MatMulEpilogue._gelu
    monkeypatch.setattr(MatMulEpilogue, "_gelu", lambda self, *a: calls.append(a[0]) or real(self, *a))
    for rows in (1, 3, 1000, 9000):  # 9000 rows of 16: three blocks of Region.BLOCK floats, the last short
        x = _x(rows)
        got, want = fused.run_list({"x": x}), plain.run_list({"x": x})
        assert got[0].shape == (rows, 16) and np.array_equal(got[0], want[0], equal_nan=True)
    assert calls == [form == "erf"] * 4  # each through the compiled loops
    theirs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": _x(64)[1:-1]})
    np.testing.assert_allclose(fused.run_list({"x": _x(64)[1:-1]})[0], theirs[0], rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("gelu", [_half_first, _divided])
def test_other_forms_still_run_as_one_step_member_by_member(gelu, monkeypatch):
    fused, plain, steps = _programs(_mlp(gelu))
    assert len(steps) == 1 and isinstance(steps[0].fn, MatMulEpilogue) and steps[0].fn._form is None
    monkeypatch.setattr(MatMulEpilogue, "_gelu", None)  # never reached
    x = _x(40)
    assert np.array_equal(fused.run_list({"x": x})[0], plain.run_list({"x": x})[0], equal_nan=True)


@pytest.mark.parametrize("case", ["float64", "bias-first", "batched", "vector", "empty", "stored"])
def test_the_same_bits_wherever_it_runs(case):
    dtype = np.float64 if case == "float64" else np.float32
    shape = {"batched": ["a", "r", 8], "vector": [8]}.get(case)
    model = _mlp(_erf, dtype=dtype, bias_first=case == "bias-first", x_shape=shape)
    fused, plain, steps = _programs(model)
    assert isinstance(steps[0].fn, MatMulEpilogue)
    if case == "stored":  # a stored program rebuilds its kernels, the form and the kept scalars
        fused = pickle.loads(pickle.dumps(fused))
        assert fused.steps[0].fn._form is not None and fused.steps[0].fn._kept is None
    x = _x(24, dtype=dtype)
    x = {"batched": x.reshape(2, 12, 8), "vector": x[1], "empty": x[:0]}.get(case, x)
    for _ in range(2):  # the second run reads the scalars it kept
        got, want = fused.run_list({"x": x}), plain.run_list({"x": x})
        assert got[0].dtype == want[0].dtype and got[0].shape == want[0].shape
        assert np.array_equal(got[0], want[0], equal_nan=True)


def test_a_fed_scalar_is_read_on_every_run():
    fused, plain, steps = _programs(_mlp(_erf, fed="k2"))
    assert isinstance(steps[0].fn, MatMulEpilogue)
    x = _x(5)
    half = np.array([0.5], np.float32)
    first = fused.run_list({"x": x, "k2": half})[0]
    half[0] = 2.0  # the caller's array, changed in place between runs
    second = fused.run_list({"x": x, "k2": half})[0]
    assert np.array_equal(second, plain.run_list({"x": x, "k2": half})[0], equal_nan=True)
    finite = np.isfinite(first) & (first != 0) & (np.abs(first) < 1e30)
    assert np.array_equal(second[finite], first[finite] * 4)  # times 2 where it was times 0.5


def test_a_scalar_that_would_broadcast_the_result_keeps_the_region():
    # k2 of shape (1, 1, 1): the GELU's result gains a dimension, which the loops never write
    rng = np.random.default_rng(1)
    model = _mlp(_erf)
    for init in model.graph.initializer:
        if init.name == "k2":
            init.CopyFrom(numpy_helper.from_array(np.full((1, 1, 1), 0.5, np.float32), "k2"))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "r", 16]))
    fused, plain, steps = _programs(model)
    assert isinstance(steps[0].fn, MatMulEpilogue) and steps[0].fn._form is not None
    x = rng.standard_normal((3, 8)).astype(np.float32)
    got, want = fused.run_list({"x": x}), plain.run_list({"x": x})
    assert got[0].shape == (1, 3, 16) and np.array_equal(got[0], want[0])


def test_the_sum_read_elsewhere_keeps_the_pair_and_the_region_apart():
    model = _mlp(_erf)
    model.graph.output.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, ["r", 16]))
    fused, plain, steps = _programs(model)
    assert [s.op_type for s in steps] == ["MatMul+Add", "Div+Erf+Add+Mul+Mul"]
    assert not any(isinstance(s.fn, MatMulEpilogue) for s in steps) and isinstance(steps[1].fn, Region)
    x = _x(6)
    for a, b in zip(fused.run_list({"x": x}), plain.run_list({"x": x})):
        assert np.array_equal(a, b, equal_nan=True)


def test_the_step_keeps_the_products_memory_guard():
    sess = hal.InferenceSession(_mlp(_erf, k=64, n=4096), target="cpu", max_memory=4 << 20)
    assert [k.op_types for k in sess.report.kernels] == [["MatMul", "Add", "Div", "Erf", "Add", "Mul", "Mul"]]
    sess.run(None, {"x": np.ones((8, 64), np.float32)})  # 128 KiB: within the bound
    with pytest.raises(ResourceError):
        sess.run(None, {"x": np.ones((1024, 64), np.float32)})  # 16 MiB of product


@pytest.mark.parametrize("x_shape, rows, kept", [(["r", 8], (24, 8), True), ([1, "r", 8], (1, 24, 8), True),
                                                 (["a", "r", 8], (2, 12, 8), False)],
                         ids=["rows", "batch-of-one", "batch-of-two"])
def test_a_repeated_call_skips_the_checks_with_the_same_bits(x_shape, rows, kept):
    """A second call with the first one's shape, weights and scalars goes straight to numpy's product
    and the loops (the MatMul kernel is not called again) where the kernel multiplied a's rows as
    they are; a batch of two is multiplied through its reshape, so every call takes the kernel."""
    fused, plain, steps = _programs(_mlp(_erf, x_shape=x_shape))
    fn = steps[0].fn
    calls = []
    real = fn.fns[0]
    fn.fns[0] = lambda a, b: calls.append(a.shape) or real(a, b)
    for seed in (2, 3, 4):
        x = _x(24, seed=seed).reshape(rows)
        got, want = fused.run_list({"x": x}), plain.run_list({"x": x})
        assert np.array_equal(got[0], want[0], equal_nan=True)
    assert len(calls) == (1 if kept else 3) and (fn._kept_call is not None) == kept
    other = _x(7).reshape((7, 8) if len(rows) == 2 else (1, 7, 8) if kept else (7, 1, 8))
    assert np.array_equal(fused.run_list({"x": other})[0], plain.run_list({"x": other})[0], equal_nan=True)
    assert len(calls) == (2 if kept else 4)  # another shape: the kernel again


def test_a_fed_weight_is_never_kept():
    model = _mlp(_erf)
    w = next(i for i in model.graph.initializer if i.name == "W")
    weight = numpy_helper.to_array(w).copy()
    model.graph.initializer.remove(w)
    model.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, [8, 16]))
    fused, plain, steps = _programs(model)
    x = _x(5)
    fused.run_list({"x": x, "W": weight})
    weight *= 2  # the caller's array, changed in place between runs
    assert np.array_equal(fused.run_list({"x": x, "W": weight})[0], plain.run_list({"x": x, "W": weight})[0],
                          equal_nan=True)
    assert steps[0].fn._kept_call is None
