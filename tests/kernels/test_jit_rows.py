"""The compiled row loops (``hal.kernels._loops``): erf's polynomial, softmax's two passes around
numpy's exp, and LayerNormalization. erf against its numpy path bit for bit; softmax and
LayerNormalization against their numpy paths and onnxruntime on random shapes, with NaN, infinities
and large offsets; the cases that keep the numpy path; and the loops' fixed signatures."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from hal.engine import Program, fused_steps
from hal.graph.load import from_proto
from hal.graph.passes import optimize
from hal.kernels import activation, elementwise, jit
from tests.conftest import in_threads
from tests.kernels.test_jit_loops import _both_ways, _counting
from tests.kernels.test_kernels_fast_conv import _hal, _ort

pytestmark = pytest.mark.skipif(not jit.enabled(), reason="numba is not importable here (HAL_JIT=0 or missing)")
if jit.enabled():
    from hal.kernels import _loops as loops

SPECIAL = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 1e-38, 3.9, 3.92, 4.0, -4.0,
                    4.0000005, 1e19, 1.9e19, -1.9e19, 3.4e38, -3.4e38], dtype=np.float32)


def test_erf_matches_its_numpy_path_bit_for_bit(monkeypatch) -> None:
    # every 4099th float32 bit pattern (NaN payloads, denormals, huge values) and the edges of the fit
    x = np.concatenate([np.arange(0, 1 << 32, 4099, dtype=np.uint64).astype(np.uint32).view(np.float32), SPECIAL])
    with np.errstate(all="ignore"):
        got, want = _both_ways(monkeypatch, lambda: elementwise.erf_array(x))
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_an_erf_gelu_region_keeps_its_bits(monkeypatch) -> None:
    # Div+Erf+Add+Mul+Mul: one blocked region step; the erf reads the division's buffer
    x = np.random.default_rng(1).standard_normal((4, 700, 33)).astype(np.float32) * 3
    x.reshape(-1)[:SPECIAL.size] = SPECIAL
    consts = [helper.make_tensor(n, TensorProto.FLOAT, [], [v])
              for n, v in (("r2", 2 ** 0.5), ("one", 1.0), ("half", 0.5))]
    nodes = [helper.make_node("Div", ["x", "r2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["x", "a"], ["m"]),
             helper.make_node("Mul", ["m", "half"], ["y"])]
    graph = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape)], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    graph = optimize(from_proto(model, where="gelu"))
    (step,) = fused_steps(graph, graph.nodes)
    assert step.op_type == "Div+Erf+Add+Mul+Mul"
    program = Program(graph, [step])
    calls = _counting(monkeypatch, loops, "erf_tanh_arg")
    got, want = _both_ways(monkeypatch, lambda: program.run_list({"x": x})[0])
    assert calls
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    moderate = np.abs(x) < 1e30  # (x * 2 overflows in the graph's order, not in onnxruntime's Gelu)
    np.testing.assert_allclose(got[moderate], _ort("Gelu", {"x": x}, {}, opset=20)[0][moderate], rtol=1e-5, atol=1e-6)


def _random_rows(seed: int) -> np.ndarray:
    """Rows of 1-300 columns (not all a multiple of the loops' eight lanes), at spreads of 0.1-40 and
    offsets of 0, 5 or -300 (``_poison`` adds NaN and infinities)."""
    rng = np.random.default_rng(500 + seed)
    shape = (*[int(rng.integers(1, 5)) for _ in range(int(rng.integers(0, 3)))], int(rng.integers(1, 40)),
             int(rng.integers(1, 300)))
    x = rng.standard_normal(shape)  # (drawn before the spread and offset, as the seeds' cases were made)
    return (x * rng.choice([0.1, 3.0, 40.0]) + rng.choice([0.0, 5.0, -300.0])).astype(np.float32)


def _poison(x: np.ndarray, seed: int) -> np.ndarray:
    """NaN in one row, all-NaN, +inf and all -inf rows, where the shape has the rows."""
    rows = x.reshape(-1, x.shape[-1])
    rng = np.random.default_rng(seed)
    for i, v in enumerate((np.nan, "all-nan", np.inf, "all-ninf")):
        if i < rows.shape[0] - 1 and rng.random() < 0.7:
            if v == "all-nan":
                rows[i] = np.nan
            elif v == "all-ninf":
                rows[i] = -np.inf
            else:
                rows[i, int(rng.integers(0, rows.shape[1]))] = v
    return x


@pytest.mark.parametrize("seed", range(40))
def test_random_softmaxes_match_the_numpy_path_and_onnxruntime(monkeypatch, seed) -> None:
    x = _random_rows(seed)
    calls = _counting(monkeypatch, loops, "softmax_shift")
    got, want = _both_ways(monkeypatch, lambda: _hal("Softmax", [x], {}))
    assert len(calls) == 1
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(got, _ort("Softmax", {"x": x}, {})[0], rtol=1e-5, atol=1e-6)
    bad = _poison(x.copy(), seed)
    with np.errstate(all="ignore"):  # (as the engine runs every kernel)
        got, want = _both_ways(monkeypatch, lambda: _hal("Softmax", [bad], {}))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)


def test_softmax_rows_in_place_and_into_another_buffer(monkeypatch) -> None:
    w = np.random.default_rng(2).standard_normal((50, 77)).astype(np.float32)
    _, want = _both_ways(monkeypatch, lambda: activation.softmax_rows(w))
    into = np.full_like(w, 7.0)
    assert activation.softmax_rows(w, out=into) is into
    inplace = w.copy()
    assert activation.softmax_rows(inplace, out=inplace) is inplace
    for got in (into, inplace):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    np.testing.assert_array_equal(w, np.random.default_rng(2).standard_normal((50, 77)).astype(np.float32))


def _random_layer_norm(seed: int) -> tuple[list[np.ndarray | None], dict]:
    rng = np.random.default_rng(900 + seed)
    x = _random_rows(seed)
    n = x.shape[-1]
    scale = rng.standard_normal((1, n) if rng.random() < 0.2 else (n,)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if rng.random() < 0.7 else None
    return [x, scale, bias], {"epsilon": float(rng.choice([1e-5, 1e-12, 0.1]))}


def _layer_norm_float64(x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None, epsilon: float) -> np.ndarray:
    w = x.astype(np.float64)
    d = w - w.mean(axis=-1, keepdims=True)
    y = d / np.sqrt(np.mean(d * d, axis=-1, keepdims=True) + epsilon) * scale.reshape(-1)
    return y + bias if bias is not None else y


@pytest.mark.parametrize("seed", range(40))
def test_random_layer_norms_are_as_close_to_float64_as_the_numpy_path_or_onnxruntime(monkeypatch, seed) -> None:
    # rows far from zero (a mean of -300 at a spread of 0.1) lose digits to any float32 mean: each
    # path is held against the float64 result, and the loop must do no worse than both others' best
    args, attrs = _random_layer_norm(seed)
    calls = _counting(monkeypatch, loops, "layer_norm_rows")
    calls_3d = _counting(monkeypatch, loops, "layer_norm_3d")  # (b, m, n) as it is
    got, want = _both_ways(monkeypatch, lambda: _hal("LayerNormalization", args, attrs, opset=17))
    assert len(calls) + len(calls_3d) == 1 and len(calls_3d) == (args[0].ndim == 3)
    feeds = {k: v for k, v in zip(("x", "scale", "bias"), args) if v is not None}
    ort_y = _ort("LayerNormalization", feeds, attrs, opset=17)[0]
    exact = _layer_norm_float64(*args, attrs["epsilon"])
    err = [float(np.max(np.abs(y - exact))) for y in (got, want, ort_y)]
    assert err[0] <= max(err[1], err[2]) + 1e-6, err
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=2e-3)
    x = _poison(args[0].copy(), seed)  # a row's NaN or infinity makes that row NaN, and no other
    with np.errstate(all="ignore"):
        got, want = _both_ways(monkeypatch, lambda: _hal("LayerNormalization", [x, *args[1:]], attrs, opset=17))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=2e-3)


def test_layer_norms_outside_the_loop_keep_the_numpy_path(monkeypatch) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 10, 24)).astype(np.float32)
    s = rng.standard_normal(24).astype(np.float32)
    cases = [([x, rng.standard_normal((10, 24)).astype(np.float32)], {"axis": 1}, 1),  # not the last axis
             ([x.transpose(1, 0, 2), s], {}, 1),  # not contiguous
             ([x.astype(np.float64), s.astype(np.float64)], {}, 1),
             ([x.astype(np.float16), s.astype(np.float16)], {}, 1),
             ([x, s], {}, 3),  # Mean and InvStdDev asked for
             ([x, np.broadcast_to(s, (10, 24))], {}, 1)]  # a scale per element
    calls = _counting(monkeypatch, loops, "layer_norm_rows")
    calls_3d = _counting(monkeypatch, loops, "layer_norm_3d")
    for args, attrs, n_out in cases:
        got, want = _both_ways(monkeypatch, lambda a=args, k=attrs, n=n_out: _hal("LayerNormalization", a, k, opset=17,
                                                                                  n_out=n))
        for a, b in zip(got if n_out > 1 else [got], want if n_out > 1 else [want]):
            np.testing.assert_array_equal(a, b)
    assert not calls and not calls_3d


def test_the_row_loops_take_only_their_declared_types() -> None:
    # declared signatures: a run can never compile another machine code for them, only fail loudly
    for fn in (loops.erf_tanh_arg, loops.softmax_shift, loops.softmax_scale, loops.layer_norm_rows):
        assert len(fn.signatures) == 1
    with pytest.raises(TypeError):
        loops.softmax_shift(np.zeros((2, 3), dtype=np.float64))
    with pytest.raises(TypeError):
        loops.softmax_scale(np.zeros((3, 2), dtype=np.float32).T)
    ro = np.zeros((2, 3), dtype=np.float32)
    ro.flags.writeable = False
    with pytest.raises(TypeError):
        loops.softmax_shift(ro)
    assert elementwise.ERF_F32_COEF.shape == (9,)  # the loop unrolls a polynomial of degree 8


def test_concurrent_row_loops_share_no_state() -> None:
    # the loops release the GIL and write only the buffers their caller made for that call
    rng = np.random.default_rng(6)
    xs = [rng.standard_normal((64, 200)).astype(np.float32) for _ in range(4)]
    s, b = rng.standard_normal(200).astype(np.float32), rng.standard_normal(200).astype(np.float32)

    def work(i: int) -> tuple[np.ndarray, ...]:
        x = xs[i]
        return (_hal("Softmax", [x], {}), _hal("LayerNormalization", [x, s, b], {}, opset=17), elementwise.erf_array(x))

    want = [work(i) for i in range(4)]
    got = in_threads(lambda i: [work(i) for _ in range(30)][-1], 4)
    for g, w in zip(got, want):
        for a, c in zip(g, w):
            np.testing.assert_array_equal(a, c)
