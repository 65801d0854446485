"""Hopper's fp8 accumulation (``hal.kernels._accumulation_loops``, ``hal_gpu.accumulation``): the
compiled loop against a plain model written from its description, the ONNX wrappers against numpy's
shapes, and the gpu targets' fp8 GEMMs summed by their sheets' rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.kernels import jit
from hal.kernels.linalg import gemm, matmul
from hal.numerics import quantize

pytestmark = pytest.mark.skipif(not jit.enabled(), reason="the compiled loops are off")

hal_gpu = pytest.importorskip("hal_gpu")
from hal_gpu.accumulation import Accumulation  # noqa: E402


def _exponent(x: float) -> int:
    return math.frexp(x)[1] - 1  # floor(log2 |x|)


def plain_model(a: np.ndarray, b: np.ndarray, bits: int, block: int, promote: int) -> np.ndarray:
    """One dot product at a time, as the description says: per block, the products and the running
    sum aligned to the largest exponent (a product's the sum of its operands'), each truncated
    toward zero to ``bits`` places below it, summed exactly, the sum truncated to ``bits`` places
    below its own leading one; promoted into an fp32 total."""
    m, k = a.shape
    out = np.empty((m, b.shape[1]), dtype=np.float32)
    for i in range(m):
        for j in range(b.shape[1]):
            acc, total = 0.0, np.float32(0)
            for n, lo in enumerate(range(0, k, block), start=1):
                terms = [(float(a[i, t]) * float(b[t, j]), _exponent(float(a[i, t])) + _exponent(float(b[t, j])))
                         for t in range(lo, min(k, lo + block)) if a[i, t] != 0 and b[t, j] != 0]
                if acc != 0:
                    terms.append((acc, _exponent(acc)))
                if terms:
                    q = 2.0 ** (max(e for _, e in terms) - bits)
                    acc = float(sum(math.trunc(v / q) * q for v, _ in terms))  # exact: few bits each
                    if acc:  # the sum kept to ``bits`` places below its own leading one
                        q = 2.0 ** (_exponent(acc) - bits)
                        acc = math.trunc(acc / q) * q
                if promote and n % promote == 0:
                    total, acc = np.float32(total + np.float32(acc)), 0.0
            out[i, j] = np.float32(total + np.float32(acc)) if promote else np.float32(acc)
    return out


def _fp8_values(rng: np.random.Generator, shape: tuple[int, ...], signed: bool) -> np.ndarray:
    v = (1 + rng.integers(0, 8, shape) / 8) * 2.0 ** rng.integers(-6, 9, shape)
    v[rng.random(shape) < 0.1] = 0.0  # zeros take no part in a block's alignment
    return (v * (rng.choice([-1.0, 1.0], shape) if signed else 1.0)).astype(np.float32)


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize(("bits", "block", "promote"), [(13, 32, 0), (13, 32, 2), (10, 16, 0), (20, 8, 3)])
def test_loop_is_the_plain_model_bit_for_bit(signed, bits, block, promote):
    rng = np.random.default_rng(7 + bits + block + promote + signed)
    a, b = _fp8_values(rng, (5, 100), signed), _fp8_values(rng, (100, 7), signed)
    got = Accumulation(bits, block, promote).matmul(a, b)
    want = plain_model(a, b, bits, block, promote)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize(("bits", "block", "promote"), [(13, 32, 0), (13, 32, 4), (20, 8, 3)])
def test_loop_with_full_float32_significands_is_the_plain_model(bits, block, promote):
    # operands of 24 significant bits, whose products float32 cannot hold: the float64 path (fp8
    # codes, of 4, take the float32 one in the test above, but for 20 places, whose block sums
    # float32 cannot hold either)
    rng = np.random.default_rng(11 + bits + promote)
    a = (rng.standard_normal((4, 150)) * 2.0 ** rng.integers(-8, 8, (4, 150))).astype(np.float32)
    b = rng.standard_normal((150, 6)).astype(np.float32)
    a[0, :40] = 0.0
    got = Accumulation(bits, block, promote).matmul(a, b)
    np.testing.assert_array_equal(got.view(np.uint32), plain_model(a, b, bits, block, promote).view(np.uint32))


def test_the_truncation_loses_what_fp32_keeps():
    """Positive terms over a wide range: each block drops what lies 13 places under its largest, so
    the sum comes out below the exact one, by far more than fp32's rounding."""
    rng = np.random.default_rng(3)
    a, b = _fp8_values(rng, (16, 4096), False), _fp8_values(rng, (4096, 16), False)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    got = Accumulation(13, 32, 0).matmul(a, b)
    rel = (got - exact) / exact
    assert (rel <= 0).all() and rel.min() < -1e-3
    assert np.abs((a @ b - exact) / exact).max() < 1e-5
    promoted = Accumulation(13, 32, 4).matmul(a, b)  # an fp32 total every 128 products: less lost
    assert np.abs((promoted - exact) / exact).mean() < 0.25 * np.abs(rel).mean()


def test_no_truncation_non_float32_or_non_finite_is_numpys_matmul():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((4, 9)).astype(np.float32), rng.standard_normal((9, 3)).astype(np.float32)
    np.testing.assert_array_equal(Accumulation(0, 32, 0).matmul(a, b), np.matmul(a, b))
    wide = a.astype(np.float64)
    np.testing.assert_array_equal(Accumulation(13, 32, 0).matmul(wide, b), np.matmul(wide, b))
    a[1, 2] = np.nan
    np.testing.assert_array_equal(Accumulation(13, 32, 0).matmul(a, b), np.matmul(a, b))


@pytest.mark.parametrize(("sa", "sb"), [((3, 40), (40,)), ((40,), (40, 5)), ((2, 1, 3, 40), (4, 40, 5)),
                                        ((2, 3, 40), (40, 5)), ((40,), (40,))])
def test_matmul_takes_onnx_shapes(sa, sb):
    """numpy's matmul shapes (a vector as a one-row or one-column matrix, batch axes broadcast),
    each product the plain model's."""
    rng = np.random.default_rng(2)
    a, b = _fp8_values(rng, sa, True), _fp8_values(rng, sb, True)
    got = Accumulation(13, 32, 0).matmul(a, b)
    want_shape = np.matmul(a, b).shape
    assert got.shape == want_shape and got.dtype == np.float32
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    a3 = np.broadcast_to(a2, (*batch, *a2.shape[-2:])).reshape(-1, *a2.shape[-2:])
    b3 = np.broadcast_to(b2, (*batch, *b2.shape[-2:])).reshape(-1, *b2.shape[-2:])
    want = np.stack([plain_model(x, y, 13, 32, 0) for x, y in zip(a3, b3)]).reshape(want_shape)
    np.testing.assert_array_equal(got, want)


def _rounded(x: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x`` as hal's fp8 policy rounds it (per tensor, or per ``axis`` slice): codes, scale, and the
    rounded fp32 operand the GEMM step is handed."""
    q, s = quantize(x, "fp8", axis=axis)
    return q.astype(np.float32), s, q.astype(np.float32) * s


def test_an_fp8_product_runs_on_the_codes_and_scales_the_sum_after():
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((6, 200)).astype(np.float32), (rng.standard_normal((200, 5)) * 0.02).astype(np.float32)
    (qx, sx, dx), (qw, sw, dw) = _rounded(x, None), _rounded(w, -1)
    acc = Accumulation(13, 32, 0)
    for operand, q, axis in ((dx, qx, None), (dw, qw, -1)):  # quantising a rounded operand again: its codes
        np.testing.assert_array_equal(quantize(operand, "fp8", axis=axis)[0].astype(np.float32), q)
    got = acc.fp8_product(matmul, "fp8", -1, dx, dw)
    np.testing.assert_allclose(got, acc.matmul(qx, qw) * (sx * sw), rtol=2e-7, atol=0)
    # the rounded fp32 operands summed as they are lose far more: their scales' significands are long
    exact = dx.astype(np.float64) @ dw.astype(np.float64)
    assert np.abs(acc.matmul(dx, dw) - exact).mean() > 2 * np.abs(got - exact).mean()
    # Gemm: transposed operands (a transposed weight's channels first), then alpha, beta and C
    c = rng.standard_normal(5).astype(np.float32)
    (qwt, swt, dwt) = _rounded(np.ascontiguousarray(w.T), 0)
    y = acc.fp8_product(gemm, "fp8", 0, np.ascontiguousarray(dx.T), dwt, c, alpha=0.5, beta=2.0, transA=1, transB=1)
    want = acc.matmul(qx, qwt.T) * (sx * swt.T)
    want *= 0.5
    want += c * 2.0
    np.testing.assert_allclose(y, want, rtol=2e-7, atol=1e-7)
    # where the rule is fp32 (MI300X) or an operand is not finite: the Gemm kernel's own arithmetic
    np.testing.assert_array_equal(Accumulation(0, 32, 0).fp8_product(gemm, "fp8", -1, dx, dw, c, beta=2.0),
                                  gemm(dx, dw, c, beta=2.0))


def _fp8_model(k: int = 1024) -> tuple[bytes, dict[str, np.ndarray], np.ndarray]:
    """A MatMul feeding a Relu (a GEMM whose result is the graph's output is a logits projection,
    which the fp8 policy keeps in 16 bits), positive operands over a wide range: sums that lose
    more to the truncation than the 16-bit storage after it rounds away."""
    rng = np.random.default_rng(5)
    w = np.exp(rng.standard_normal((k, 32)) * 2).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["A", "W"], ["Y"]), helper.make_node("Relu", ["Y"], ["Z"])], "g",
                          [helper.make_tensor_value_info("A", TensorProto.FLOAT, [8, k])],
                          [helper.make_tensor_value_info("Z", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "W")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString(), {"A": np.exp(rng.standard_normal((8, k)) * 2).astype(np.float32)}, w


def test_hopper_targets_sum_fp8_gemms_by_their_sheets_and_mi300x_in_fp32(monkeypatch):
    from hal_gpu import accumulation

    blob, feeds, _ = _fp8_model()
    seen: list[tuple[int, int, int]] = []
    real = accumulation.Accumulation.matmul

    def spy(self, a, b):
        seen.append((self.bits, self.block, self.promote))
        return real(self, a, b)

    monkeypatch.setattr(accumulation.Accumulation, "matmul", spy)
    outs = {}
    for target in ("gpu", "gpu-h200", "gpu-mi300x"):
        seen.clear()
        outs[target] = hal.InferenceSession(blob, target=target, precision="fp8", cache_dir=False).run(None, feeds)[0]
        assert seen == ([] if target == "gpu-mi300x" else [(13, 32, 0)]), target
    np.testing.assert_array_equal(outs["gpu"], outs["gpu-h200"])
    # the truncation shows against the same fp8 operands summed in fp32
    monkeypatch.setattr(accumulation.Accumulation, "truncates", property(lambda self: False))
    plain = hal.InferenceSession(blob, target="gpu-h200", precision="fp8", cache_dir=False).run(None, feeds)[0]
    assert (outs["gpu-h200"] <= plain).all() and (outs["gpu-h200"] < plain).any()


def test_the_compile_report_says_how_fp8_products_are_summed():
    blob, _, _ = _fp8_model()
    formats = {t: hal.compile(blob, target=t, precision="fp8", cache_dir=False).report.details["formats"]
               for t in ("gpu-h200", "gpu-mi300x")}
    assert formats["gpu-h200"]["fp8_accumulation"] == {"bits": 13, "block": 32, "promotion_blocks": 0}
    assert formats["gpu-mi300x"]["fp8_accumulation"] == "fp32"
    native = hal.compile(blob, target="gpu-h200", precision="native", cache_dir=False).report.details["formats"]
    assert "fp8_accumulation" not in native
