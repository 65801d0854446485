"""The compiled loops (``hal.kernels.jit``, ``hal.kernels._loops``): 2-D max and average pools and a
depthwise 3x3 conv, each against onnxruntime and against the same kernel's numpy path on random geometries
(padding, strides, dilations, ceil mode, channel multipliers, strided views, NaN and infinities),
and the switches that turn them off."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from hal.kernels import jit, pool
from tests.conftest import in_threads
from tests.kernels.test_kernels_fast_conv import _hal, _ort

pytestmark = pytest.mark.skipif(not jit.enabled(), reason="numba is not importable here (HAL_JIT=0 or missing)")
if jit.enabled():
    from hal.kernels import _loops as loops


def _counting(monkeypatch, module, name: str) -> list[int]:
    calls: list[int] = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a: calls.append(1) or real(*a))
    return calls


def _both_ways(monkeypatch, fn):
    """fn() through the compiled loop, then through the numpy path."""
    got = fn()
    monkeypatch.setattr(jit, "_ENABLED", False)
    want = fn()
    monkeypatch.setattr(jit, "_ENABLED", True)
    return got, want


def _random_max_pool(seed: int) -> tuple[np.ndarray, dict]:
    """A seeded random 2-D MaxPool: kernels 1-4, strides 1-3, dilations 1-2, uneven pads, ceil mode,
    images down to one row, float32 or float64, with NaN and infinities in some."""
    rng = np.random.default_rng(3000 + seed)
    k = [int(rng.integers(1, 5)) for _ in range(2)]
    d = [int(rng.integers(1, 3)) if rng.random() < 0.3 else 1 for _ in range(2)]
    s = [int(rng.integers(1, 4)) for _ in range(2)]
    pads = [int(rng.integers(0, k[i % 2])) for i in range(4)]  # ONNX: a pad smaller than the window
    size = [max(int(rng.integers(1, 30)), (k[i] - 1) * d[i] + 1 - pads[i] - pads[i + 2]) for i in range(2)]
    dtype = np.float64 if rng.random() < 0.25 else np.float32
    x = rng.standard_normal((int(rng.integers(1, 3)), int(rng.integers(1, 5)), *size)).astype(dtype)
    if rng.random() < 0.3:
        flat = x.reshape(-1)
        flat[rng.integers(0, flat.size, 3)] = [np.nan, np.inf, -np.inf]
    attrs = {"kernel_shape": k, "strides": s, "pads": pads, "dilations": d, "ceil_mode": int(rng.random() < 0.3)}
    return x, attrs


@pytest.mark.parametrize("seed", range(80))
def test_random_max_pools_match_the_numpy_path_bit_for_bit(monkeypatch, seed) -> None:
    monkeypatch.setattr(pool, "JIT_MIN_OUT_WIDTH", 1)  # every width through the loop
    calls = _counting(monkeypatch, loops, "pool2d")
    x, attrs = _random_max_pool(seed)
    got, want = _both_ways(monkeypatch, lambda: _hal("MaxPool", [x], attrs))
    assert len(calls) == 1
    assert got.shape == want.shape and got.dtype == x.dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want, err_msg=str(attrs))  # NaN where NaN, the same infinities


@pytest.mark.parametrize("seed", range(20))
def test_random_max_pools_match_onnxruntime(monkeypatch, seed) -> None:
    monkeypatch.setattr(pool, "JIT_MIN_OUT_WIDTH", 1)
    x, attrs = _random_max_pool(seed)
    x = np.nan_to_num(x.astype(np.float32), nan=0.0, posinf=np.inf, neginf=-np.inf)  # its max drops some NaN
    np.testing.assert_array_equal(_hal("MaxPool", [x], attrs), _ort("MaxPool", {"x": x}, attrs)[0],
                                  err_msg=str(attrs))


@pytest.mark.parametrize("seed", range(60))
def test_random_average_pools_match_the_numpy_path_bit_for_bit(monkeypatch, seed) -> None:
    # the same geometries, counting the padding or not; float16 pools in float32 on both paths
    monkeypatch.setattr(pool, "JIT_MIN_OUT_WIDTH", 1)
    calls = _counting(monkeypatch, loops, "pool2d")
    x, attrs = _random_max_pool(seed)
    attrs["count_include_pad"] = seed % 2
    if seed % 7 == 3:
        x = x.astype(np.float16)
    with np.errstate(all="ignore"):  # inf - inf in a window: NaN, on both paths
        got, want = _both_ways(monkeypatch, lambda: _hal("AveragePool", [x], attrs))
    whole = attrs["kernel_shape"] == list(x.shape[2:]) and not any(attrs["pads"])
    assert len(calls) == (0 if whole and got.shape[2:] == (1, 1) else 1)  # a whole-image mean: row sums
    assert got.shape == want.shape and got.dtype == x.dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want, err_msg=str(attrs))


@pytest.mark.parametrize("seed", range(20))
def test_random_average_pools_match_onnxruntime(monkeypatch, seed) -> None:
    monkeypatch.setattr(pool, "JIT_MIN_OUT_WIDTH", 1)
    x, attrs = _random_max_pool(seed)
    x = np.nan_to_num(x.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    attrs["count_include_pad"] = seed % 2
    np.testing.assert_allclose(_hal("AveragePool", [x], attrs), _ort("AveragePool", {"x": x}, attrs)[0],
                               rtol=1e-6, atol=1e-6, err_msg=str(attrs))


def test_a_max_pool_reads_a_strided_view_in_place(monkeypatch) -> None:
    # a transposed input (no copy first) and a NaN on the row and column two windows share
    monkeypatch.setattr(pool, "JIT_MIN_OUT_WIDTH", 1)
    x = np.random.default_rng(4).standard_normal((2, 3, 13, 11)).astype(np.float32).transpose(0, 1, 3, 2)
    x[1, 2, 3, 3] = np.nan
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    got, want = _both_ways(monkeypatch, lambda: _hal("MaxPool", [x], attrs))
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[1, 2, 1:3, 1:3]).all() and np.isnan(got).sum() == 4


def test_narrow_max_pools_keep_the_numpy_passes(monkeypatch) -> None:
    calls = _counting(monkeypatch, loops, "pool2d")
    x = np.ones((1, 2, 14, 14), dtype=np.float32)
    _hal("MaxPool", [x], {"kernel_shape": [2, 2], "strides": [2, 2]})  # 7 columns out
    assert calls == []
    _hal("MaxPool", [x], {"kernel_shape": [3, 3], "strides": [1, 1]})  # 12
    assert calls == [1]


def _random_depthwise3x3(seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """A seeded random depthwise 3x3 Conv at dilation 1: strides 1-3, uneven pads 0-2, channel
    multipliers 1-3, images down to 1x1, with or without a bias, float32 or float64."""
    rng = np.random.default_rng(4000 + seed)
    c, mult = int(rng.integers(2, 9)), int(rng.integers(1, 4))
    s = [int(rng.integers(1, 4)) for _ in range(2)]
    pads = [int(rng.integers(0, 3)) for _ in range(4)]
    size = [max(int(rng.integers(1, 24)), 3 - pads[i] - pads[i + 2]) for i in range(2)]
    dtype = np.float64 if rng.random() < 0.25 else np.float32
    inputs = {"x": rng.standard_normal((int(rng.integers(1, 3)), c, *size)).astype(dtype),
              "w": rng.standard_normal((c * mult, 1, 3, 3)).astype(dtype)}
    if rng.random() < 0.6:
        inputs["b"] = rng.standard_normal(c * mult).astype(dtype)
    return inputs, {"group": c, "strides": s, "kernel_shape": [3, 3], "pads": pads}


@pytest.mark.parametrize("seed", range(60))
def test_random_depthwise_3x3_convs_match_onnxruntime_and_the_numpy_path(monkeypatch, seed) -> None:
    calls = _counting(monkeypatch, loops, "depthwise3x3")
    inputs, attrs = _random_depthwise3x3(seed)
    got, numpy_path = _both_ways(monkeypatch, lambda: _hal("Conv", list(inputs.values()), attrs))
    assert len(calls) == 1
    assert got.shape == numpy_path.shape and got.dtype == inputs["x"].dtype and got.flags.c_contiguous
    tol = 1e-12 if got.dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got, numpy_path, rtol=tol, atol=tol, err_msg=str(attrs))
    f32 = {k: v.astype(np.float32) for k, v in inputs.items()}
    np.testing.assert_allclose(got, _ort("Conv", f32, attrs)[0], rtol=1e-5, atol=1e-5, err_msg=str(attrs))


def test_a_depthwise_conv_reads_a_channel_shuffle_in_place(monkeypatch) -> None:
    # ShuffleNet's shuffle (reshape, transpose, reshape) folded into the conv's input as a view
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 2, 6, 9, 9)).astype(np.float32).transpose(0, 2, 1, 3, 4).reshape(1, 12, 9, 9)
    view = np.ndarray((1, 12, 9, 9), dtype=np.float32, buffer=np.ascontiguousarray(x))  # same values
    strided = rng.standard_normal((1, 12, 9, 18)).astype(np.float32)[..., ::2]
    w = rng.standard_normal((12, 1, 3, 3)).astype(np.float32)
    attrs = {"group": 12, "pads": [1, 1, 1, 1], "strides": [2, 2]}
    np.testing.assert_array_equal(_hal("Conv", [x, w], attrs), _hal("Conv", [view, w], attrs))
    got, want = _both_ways(monkeypatch, lambda: _hal("Conv", [strided, w], attrs))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_non_finite_values_reach_the_same_depthwise_outputs(monkeypatch) -> None:
    # a NaN or an infinity in the image reaches every output whose window reads it; an infinite
    # bias its whole channel
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 4, 10, 10)).astype(np.float32)
    x[0, 0, 4, 4], x[0, 1, 0, 9], x[0, 2, 9, 0] = np.nan, np.inf, -np.inf
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    b = np.array([0.5, -1, np.inf, 2], dtype=np.float32)
    attrs = {"group": 4, "pads": [1, 1, 1, 1]}
    with np.errstate(all="ignore"):  # as the engine runs every kernel
        got, want = _both_ways(monkeypatch, lambda: _hal("Conv", [x, w, b], attrs))
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.array_equal(np.isinf(got), np.isinf(want))
    assert np.isnan(got[0, 0, 3:6, 3:6]).all() and np.isnan(got[0, 0]).sum() == 9
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_concurrent_calls_share_no_state() -> None:
    # the loops release the GIL and write only the buffers their caller passes
    rng = np.random.default_rng(8)
    xs = [rng.standard_normal((1, 16, 40, 40)).astype(np.float32) for _ in range(4)]
    w = rng.standard_normal((16, 1, 3, 3)).astype(np.float32)
    attrs = {"group": 16, "pads": [1, 1, 1, 1]}
    pool_attrs = {"kernel_shape": [3, 3], "strides": [2, 2]}
    want = [(_hal("Conv", [x, w], attrs), _hal("MaxPool", [x], pool_attrs)) for x in xs]
    got = in_threads(lambda i: [(_hal("Conv", [xs[i], w], attrs), _hal("MaxPool", [xs[i]], pool_attrs))
                                for _ in range(20)][-1], 4)
    for (a, b), (c, d) in zip(got, want):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


@pytest.mark.parametrize("value", ["0", "off"])
def test_hal_jit_off_runs_the_numpy_paths(value) -> None:
    code = ("import numpy as np; from hal.kernels import jit, lookup;"
            "k = lookup('MaxPool', '', 19); x = np.arange(400, dtype=np.float32).reshape(1, 1, 20, 20);"
            "y = k.fn(x, **k.static_attrs({'kernel_shape': [2, 2], 'strides': [2, 2]}, ['y']));"
            "import sys; print(jit.enabled(), jit.status(), 'numba' in sys.modules, float(y.sum()))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, HAL_JIT=value))
    assert res.returncode == 0, res.stderr
    x = np.arange(400, dtype=np.float32).reshape(20, 20)
    assert res.stdout.split() == ["False", "off", "(HAL_JIT=0)", "False", str(float(x[1::2, 1::2].sum()))]


def test_without_numba_the_kernels_run_their_numpy_paths(monkeypatch) -> None:
    monkeypatch.setattr(jit, "_ENABLED", None)
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba now raises ImportError
    assert not jit.enabled() and jit.status() == "off (numba not importable)"
    x = np.random.default_rng(9).standard_normal((1, 3, 20, 20)).astype(np.float32)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2]}
    np.testing.assert_array_equal(_hal("MaxPool", [x], attrs), _ort("MaxPool", {"x": x}, attrs)[0])


def test_a_model_run_compiles_no_loop_after_load() -> None:
    # jit.load() readies the float32 loops a model's kernels call (read-only weights and divisors
    # included): a run that compiled one more would hold its machine code as the run's own memory
    from onnx import TensorProto, helper, numpy_helper

    import hal

    rng = np.random.default_rng(10)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], group=8, pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["c"], ["m"], kernel_shape=[3, 3], strides=[2, 2]),
             helper.make_node("AveragePool", ["m"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "loops", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 20, 20])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 9, 9])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    jit.load()
    before = (len(loops.depthwise3x3.signatures), len(loops.pool2d.signatures))
    x = rng.standard_normal((1, 8, 20, 20)).astype(np.float32)
    got = hal.InferenceSession(model, target="cpu").run(None, {"x": x})[0]
    assert (len(loops.depthwise3x3.signatures), len(loops.pool2d.signatures)) == before
    want = _ort("AveragePool", {"m": _ort("MaxPool", {"c": _ort("Conv", {"x": x, "w": numpy_helper.to_array(inits[0]),
                                                                          "b": numpy_helper.to_array(inits[1])},
                                                                     {"group": 8, "pads": [1, 1, 1, 1]})[0]},
                                          {"kernel_shape": [3, 3], "strides": [2, 2]})[0]},
                {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_session_loads_the_loops_before_its_first_run_and_a_shape_only_one_does_not() -> None:
    # numba's start and its cache are a second or more once per process: paid inside the first run, they
    # had made `hal run` report "host run 1.11 s" of a 1.6 ms run; a compile-only (shape-only) session
    # never runs a loop and leaves numba unimported
    code = ("import sys, hal; hal.InferenceSession('zoo:{}', target='cpu', cache_dir=False);"
            "print('hal.kernels._loops' in sys.modules, 'numba' in sys.modules)")
    for model, loaded in (("tiny-cnn", "True True"), ("llama-2-7b", "False False")):
        res = subprocess.run([sys.executable, "-c", code.format(model)], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == loaded.split(), (model, res.stdout)
