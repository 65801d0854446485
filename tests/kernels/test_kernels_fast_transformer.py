"""The transformer hot-path kernels (LayerNormalization, RMSNormalization, Softmax, MatMul) on the
shapes and layouts a transformer feeds them, against onnx's ReferenceEvaluator and onnxruntime.

The onnx node cases (test_kernels_math.py) cover the ops' semantics on small inputs; these cover the
fast paths: rows reduced with BLAS, strided and transposed inputs, N-D @ 2-D MatMul as one GEMM,
masked (-inf) and NaN softmax rows, 16-bit inputs computed in float32.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from hal.kernels import lookup

LAYER_NORM = lookup("LayerNormalization", opset=17).fn
RMS_NORM = lookup("RMSNormalization", opset=23).fn
SOFTMAX = lookup("Softmax", opset=13).fn
SOFTMAX_1 = lookup("Softmax", opset=11).fn
MATMUL = lookup("MatMul", opset=13).fn

_ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
         np.dtype(np.float16): TensorProto.FLOAT16}


def _model(op: str, inputs: list[np.ndarray], n_out: int, opset: int, **attrs: object) -> onnx.ModelProto:
    names = [f"in{i}" for i in range(len(inputs))]
    outs = [f"out{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    # Y has X's type; LayerNormalization's Mean and InvStdDev are float32 (stash_type 1)
    out_types = [_ELEM[inputs[0].dtype]] + [TensorProto.FLOAT] * (n_out - 1)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, _ELEM[a.dtype], a.shape) for n, a in zip(names, inputs)],
        [helper.make_tensor_value_info(o, t, None) for o, t in zip(outs, out_types)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _reference(op: str, inputs: list[np.ndarray], n_out: int, opset: int, **attrs: object) -> list[np.ndarray]:
    model = _model(op, inputs, n_out, opset, **attrs)
    return ReferenceEvaluator(model).run(None, {f"in{i}": a for i, a in enumerate(inputs)})


def _onnxruntime(op: str, inputs: list[np.ndarray], n_out: int, opset: int, **attrs: object) -> list[np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    model = _model(op, inputs, n_out, opset, **attrs)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {f"in{i}": np.ascontiguousarray(a) for i, a in enumerate(inputs)})


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---- LayerNormalization / RMSNormalization ----------------------------------------------------------

LAYER_CASES = [
    ("bert rows", (4, 128, 384), -1),
    ("tiny rows", (1, 16, 64), -1),
    ("two trailing axes", (2, 3, 4, 5), 2),
    ("from axis 1", (2, 3, 4, 5), 1),
    ("whole tensor", (3, 7), 0),
]


@pytest.mark.parametrize(("shape", "axis"), [c[1:] for c in LAYER_CASES], ids=[c[0] for c in LAYER_CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_normalization_matches_onnx_reference_with_its_statistics(shape, axis, dtype) -> None:
    rng = _rng(0)
    x = (rng.normal(0.5, 2.0, size=shape)).astype(dtype)
    norm_shape = shape[axis % len(shape):]
    scale = rng.normal(size=norm_shape).astype(dtype)
    bias = rng.normal(size=norm_shape).astype(dtype)
    got = LAYER_NORM(x, scale, bias, axis=axis, epsilon=1e-5)
    want = _reference("LayerNormalization", [x, scale, bias], 3, 17, axis=axis, epsilon=1e-5)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    assert got[0].dtype == dtype
    # Mean and InvStdDev are float32 by the spec (stash_type 1), which onnx's reference leaves as X's type
    assert got[1].dtype == got[2].dtype == np.float32
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w.astype(g.dtype), **(tol if g.dtype == dtype else {"rtol": 1e-6, "atol": 1e-6}))


def test_layer_normalization_of_a_transposed_view_matches_onnxruntime() -> None:
    rng = _rng(1)
    x = rng.normal(size=(4, 384, 128)).astype(np.float32).transpose(0, 2, 1)  # (4, 128, 384), not contiguous
    scale = rng.normal(size=384).astype(np.float32)
    bias = rng.normal(size=384).astype(np.float32)
    got = LAYER_NORM(x, scale, bias, epsilon=1e-12)
    want = _onnxruntime("LayerNormalization", [x, scale, bias], 3, 17, epsilon=1e-12)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_layer_normalization_of_a_large_offset_keeps_the_variance() -> None:
    # E[x^2] - E[x]^2 would lose it all in float32; the kernel subtracts the mean first
    rng = _rng(2)
    x = (1e4 + rng.normal(size=(8, 256))).astype(np.float32)
    scale = np.ones(256, np.float32)
    y, _, inv_std = LAYER_NORM(x, scale, None)
    want = _reference("LayerNormalization", [x, scale], 3, 17)
    np.testing.assert_allclose(y, want[0], rtol=1e-3, atol=2e-3)
    np.testing.assert_allclose(inv_std, want[2], rtol=1e-3)


def test_layer_normalization_float16_is_computed_in_float32() -> None:
    rng = _rng(3)
    x = rng.normal(size=(6, 96)).astype(np.float16)
    scale = rng.normal(size=96).astype(np.float16)
    bias = rng.normal(size=96).astype(np.float16)
    got = LAYER_NORM(x, scale, bias)
    want = _onnxruntime("LayerNormalization", [x, scale, bias], 3, 17)
    assert got[0].dtype == np.float16 and got[1].dtype == np.float32
    np.testing.assert_allclose(got[0].astype(np.float32), want[0].astype(np.float32), rtol=4e-3, atol=4e-3)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-3)


@pytest.mark.parametrize(("shape", "axis"), [((4, 128, 384), -1), ((2, 3, 4, 5), 1), ((5, 6), 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rms_normalization_matches_onnx_reference(shape, axis, dtype) -> None:
    rng = _rng(4)
    x = rng.normal(size=shape).astype(dtype)
    scale = rng.normal(size=shape[axis % len(shape):]).astype(dtype)
    got = RMS_NORM(x, scale, axis=axis, epsilon=1e-6)
    (want,) = _reference("RMSNormalization", [x, scale], 1, 23, axis=axis, epsilon=1e-6)
    assert got.dtype == want.dtype and got.shape == want.shape
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    np.testing.assert_allclose(got, want, **tol)


def test_rms_normalization_bfloat16_rounds_once_from_float32() -> None:
    rng = _rng(5)
    x32 = rng.normal(size=(3, 64)).astype(np.float32)
    x = x32.astype(ml_dtypes.bfloat16)
    scale = np.ones(64, ml_dtypes.bfloat16)
    got = RMS_NORM(x, scale)
    (want,) = _reference("RMSNormalization", [x.astype(np.float32), scale.astype(np.float32)], 1, 23)
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=8e-3, atol=1e-2)


# ---- Softmax --------------------------------------------------------------------------------------

def test_softmax_attention_scores_match_onnxruntime() -> None:
    rng = _rng(6)
    scores = rng.normal(0.0, 3.0, size=(4, 12, 128, 128)).astype(np.float32)
    scores[:2, :, :, 64:] += np.finfo(np.float32).min  # a padding mask, as exported BERTs add it
    got = SOFTMAX(scores)
    (want,) = _onnxruntime("Softmax", [scores], 1, 13)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.sum(axis=-1), 1.0, rtol=1e-5)


def test_softmax_rows_with_inf_nan_and_huge_values_match_onnx_reference() -> None:
    x = np.array([
        [1000.0, 999.0, -1000.0, 0.0],           # exp would overflow without the row maximum
        [-np.inf, 0.0, -np.inf, 1.0],            # masked entries
        [np.nan, 0.0, 1.0, 2.0],                 # NaN spreads over its row
        [-np.inf, -np.inf, -np.inf, -np.inf],   # a fully masked row is NaN, as onnx computes it
        [np.inf, 0.0, 1.0, 2.0],
    ], dtype=np.float32)
    with np.errstate(invalid="ignore"):
        got = SOFTMAX(x)
        (want,) = _reference("Softmax", [x], 1, 13)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0.0, equal_nan=True)


@pytest.mark.parametrize("shape", [(64, 16), (3, 64), (5, 65), (2, 1)], ids=str)
def test_short_and_long_softmax_rows_take_the_same_row_maximum(shape) -> None:
    """Rows up to SHORT_ROW take their maximum down a transposed copy, longer ones along the rows:
    the same maxima either way, NaN only for an all-NaN row (fmax), and softmax as onnxruntime's."""
    from hal.kernels.activation import SHORT_ROW, row_max

    assert SHORT_ROW == 64
    w = _rng(12).normal(0.0, 4.0, size=shape).astype(np.float32)
    w[0, 0] = np.nan  # one NaN: the row maximum ignores it
    w[-1, :] = np.nan if shape[0] > 1 else w[-1, :]  # an all-NaN row stays NaN
    w[len(w) // 2, -1] = -np.inf
    assert np.array_equal(row_max(w), np.fmax.reduce(w, axis=1, keepdims=True), equal_nan=True)
    x = np.ascontiguousarray(w[: max(1, len(w) - 1)])  # without the NaN rows: against onnxruntime
    x[0, 0] = 0.5
    (want,) = _onnxruntime("Softmax", [x], 1, 13)
    np.testing.assert_allclose(SOFTMAX(x), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("axis", [0, 1, -2, -1])
def test_softmax_any_axis_of_a_strided_view_matches_onnx_reference(axis: int) -> None:
    x = _rng(7).normal(size=(6, 5, 8)).astype(np.float64).transpose(2, 0, 1)[::2]
    got = SOFTMAX(x, axis=axis)
    (want,) = _reference("Softmax", [np.ascontiguousarray(x)], 1, 13, axis=axis)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


def test_softmax_opset_11_flattens_at_axis_and_float16_rounds_once() -> None:
    x = _rng(8).normal(size=(2, 3, 16)).astype(np.float16)
    got = SOFTMAX_1(x, axis=1)
    (want,) = _onnxruntime("Softmax", [x], 1, 11, axis=1)
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2e-3, atol=1e-4)


# ---- MatMul -------------------------------------------------------------------------------------

MATMUL_CASES = [
    ("N-D @ 2-D", (4, 128, 384), (384, 96), None),
    ("1-D @ 2-D", (384,), (384, 7), None),
    ("2-D @ 1-D", (9, 384), (384,), None),
    ("attention scores", (4, 12, 128, 32), (4, 12, 32, 128), None),
    ("broadcast batch", (1, 12, 16, 32), (4, 1, 32, 16), None),
    ("strided heads", (4, 128, 12, 32), (4, 128, 12, 32), "heads"),
    ("batch of one @ 2-D", (1, 16, 64), (64, 64), None),
    ("batch of one, 4-D @ 2-D", (1, 1, 16, 64), (64, 48), None),
    ("no rows, batch of one", (1, 0, 64), (64, 8), None),
    ("small strided heads", (1, 16, 4, 16), (1, 16, 4, 16), "heads"),
]


@pytest.mark.parametrize(("a_shape", "b_shape", "layout"), [c[1:] for c in MATMUL_CASES],
                         ids=[c[0] for c in MATMUL_CASES])
def test_matmul_matches_onnxruntime(a_shape, b_shape, layout) -> None:
    rng = _rng(9)
    a = rng.normal(size=a_shape).astype(np.float32)
    b = rng.normal(size=b_shape).astype(np.float32)
    if layout == "heads":  # q and k^T as a BERT export feeds them: transposed views
        a, b = a.transpose(0, 2, 1, 3), b.transpose(0, 2, 3, 1)
    got = MATMUL(a, b)
    (want,) = _onnxruntime("MatMul", [a, b], 1, 13)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_matmul_batch_of_one_and_small_strided_heads_are_the_gemm_of_contiguous_operands() -> None:
    """The shortcuts (a batch of one against a 2-D weight without reshapes, small batched views
    without copies) compute each product with the same BLAS call as the long way: the same bits."""
    rng = _rng(11)
    a = rng.normal(size=(1, 16, 64)).astype(np.float32)
    w = rng.normal(size=(64, 64)).astype(np.float32)
    assert np.array_equal(MATMUL(a, w), (a[0] @ w)[None])
    q = rng.normal(size=(1, 16, 4, 16)).astype(np.float32).transpose(0, 2, 1, 3)
    k = rng.normal(size=(1, 16, 4, 16)).astype(np.float32).transpose(0, 2, 3, 1)
    assert not q.flags.c_contiguous and not k.flags.c_contiguous
    assert np.array_equal(MATMUL(q, k), np.matmul(np.ascontiguousarray(q), np.ascontiguousarray(k)))


@pytest.mark.parametrize("a_shape, b_shape, as_is", [
    ((16, 64), (64, 8), True), ((1, 16, 64), (64, 8), True), ((2, 16, 64), (64, 8), False),
    ((1, 4, 16, 16), (1, 4, 16, 16), True), ((4, 64, 64), (4, 64, 64), False), ((16, 64), (3, 64, 8), True),
    ((64,), (64, 8), False)])
def test_matmul_as_is_says_when_the_kernel_multiplies_its_operands_unchanged(monkeypatch, a_shape, b_shape,
                                                                            as_is) -> None:
    """``linalg.matmul_as_is``, which fused steps trust to repeat a call by np.matmul alone, against what
    the MatMul kernel hands np.matmul: the very arrays (no reshape, no contiguous copy), or not."""
    from hal.kernels import linalg

    class Numpy:  # numpy, with its matmul recording whether it got the caller's arrays
        def __getattr__(self, name):
            return getattr(np, name)

        def matmul(self, x, y):
            seen.append(x is a and y is b)
            return np.matmul(x, y)

    seen: list[bool] = []
    monkeypatch.setattr(linalg, "np", Numpy())
    rng = _rng(12)
    a = rng.normal(size=a_shape).astype(np.float32)
    b = rng.normal(size=b_shape).astype(np.float32)
    if a.ndim > 2 and b.ndim > 2:  # batches on both sides: strided views (attention's heads), which a copy changes
        a = np.swapaxes(np.swapaxes(a, -1, -2).copy(), -1, -2)
    linalg.matmul(a, b)
    assert linalg.matmul_as_is(a, b) == as_is
    # never as is where the kernel changes an operand; a vector, which it does not, is left out all the same
    assert seen == [True] if as_is else (seen == [False] or a.ndim < 2)
    assert not linalg.matmul_as_is(a.astype(np.float64), b.astype(np.float64))


def test_matmul_float16_accumulates_in_float32() -> None:
    rng = _rng(10)
    a = rng.normal(size=(2, 8, 256)).astype(np.float16)
    b = rng.normal(size=(256, 8)).astype(np.float16)
    got = MATMUL(a, b)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float64), exact, rtol=2e-3, atol=2e-2)
