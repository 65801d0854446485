"""A conv's bias added inside its GEMM (``hal.kernels.nn._with_bias``): a row of ones under each
group's im2col columns and the bias as one more weight column, in place of a pass over the output.

Each geometry takes one of the paths that build the row (the window view's columns, the row-run
columns, a 1x1 conv's copied or strided input, a band of output rows, groups, batches, 3-D), checked
against onnxruntime and against the same conv without a bias plus the bias added after; the cases
the rule leaves to the pass over the output are checked to keep it.
"""

from __future__ import annotations

import numpy as np
import pytest

from hal.kernels import nn
from tests.kernels.test_kernels_fast_conv import _hal, _ort

IN_GEMM = [  # (x shape, w shape, attrs): every one adds its bias in the GEMM
    ((1, 3, 40, 40), (16, 3, 3, 3), {"strides": [2, 2]}),                      # window view, stride 2
    ((1, 8, 20, 20), (64, 8, 3, 3), {"pads": [1, 1, 1, 1]}),                   # row-run columns
    ((2, 8, 20, 20), (64, 8, 3, 3), {"pads": [1, 1, 1, 1]}),                   # ... two images
    ((1, 4, 30, 30), (64, 4, 5, 5), {"pads": [2, 1, 2, 1], "dilations": [1, 2]}),  # window view, dilated
    ((1, 6, 30, 30), (24, 6, 1, 1), {}),                                       # 1x1: input copied
    ((2, 8, 14, 14), (32, 2, 1, 1), {"group": 4}),                             # ... grouped, two images
    ((1, 8, 14, 14), (32, 2, 1, 1), {"group": 4, "strides": [2, 2]}),          # ... grouped, strided
    ((1, 6, 30, 30), (8, 6, 1, 1), {"strides": [2, 2], "pads": [1, 0, 0, 1]}),  # 1x1, strided and padded
    ((1, 2, 12, 12, 12), (8, 2, 3, 3, 3), {"pads": [1] * 6}),                  # 3-D
    ((1, 32, 64, 64), (64, 32, 3, 3), {"pads": [1, 1, 1, 1]}),                 # banded (4.7 MB of columns)
]

BIAS_PASS = [  # the rule keeps the pass over the output
    ((1, 64, 20, 20), (16, 64, 1, 1), {}),                   # 1x1 with fewer filters: no copy of the input
    ((1, 32, 6, 6), (64, 32, 3, 3), {"pads": [1, 1, 1, 1]}),  # 288 weight columns for 36 pixels
    ((1, 8, 16, 16), (8, 1, 3, 3), {"group": 8}),            # depthwise
]


def _bias_passes(monkeypatch) -> list[tuple[int, ...]]:
    passes: list[tuple[int, ...]] = []
    real = nn.apply_per_channel

    def counted(op, y, b, out=None):
        passes.append(y.shape)
        return real(op, y, b, out=out)

    monkeypatch.setattr(nn, "apply_per_channel", counted)
    return passes


def _case(xs, ws, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    return x, w, b


@pytest.mark.parametrize("xs,ws,attrs", IN_GEMM)
def test_the_bias_is_added_in_the_gemm(monkeypatch, xs, ws, attrs) -> None:
    x, w, b = _case(xs, ws)
    passes = _bias_passes(monkeypatch)
    got = _hal("Conv", [x, w, b], attrs)
    assert passes == []
    np.testing.assert_allclose(got, _ort("Conv", {"x": x, "w": w, "b": b}, attrs)[0], rtol=1e-4, atol=1e-4)
    plain = _hal("Conv", [x, w], attrs) + b.reshape(-1, *([1] * (x.ndim - 2)))
    np.testing.assert_allclose(got, plain, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("xs,ws,attrs", BIAS_PASS)
def test_the_rule_keeps_the_pass_over_the_output(monkeypatch, numpy_loops, xs, ws, attrs) -> None:
    x, w, b = _case(xs, ws)  # (a depthwise 3x3 case would run the compiled loop, which adds its bias itself)
    passes = _bias_passes(monkeypatch)
    got = _hal("Conv", [x, w, b], attrs)
    assert len(passes) == 1
    np.testing.assert_allclose(got, _ort("Conv", {"x": x, "w": w, "b": b}, attrs)[0], rtol=1e-4, atol=1e-4)


def test_non_finite_biases_and_inputs_come_through() -> None:
    # an inf or NaN bias times the row of ones is itself: its channel ends inf or NaN everywhere, as
    # with the bias added after; a NaN in the image reaches the outputs whose windows read it
    x, w, b = _case((1, 3, 24, 24), (16, 3, 3, 3), seed=3)
    b[[2, 5, 9]] = [np.inf, -np.inf, np.nan]
    x[0, 1, 7, 7] = np.nan
    attrs = {"strides": [2, 2], "pads": [1, 1, 1, 1]}
    got = _hal("Conv", [x, w, b], attrs)
    plain = _hal("Conv", [x, w], attrs) + b[:, None, None]
    np.testing.assert_allclose(got, plain, rtol=1e-6, atol=1e-5, equal_nan=True)
    assert np.isposinf(got[0, 2, 6:]).all() and np.isneginf(got[0, 5, 6:]).all() and np.isnan(got[0, 9]).all()
    assert np.isnan(got[0, 0, 3:5, 3:5]).all() and np.isfinite(got[0, 0, 6:]).all()


def test_a_float16_conv_adds_its_bias_in_float32_once() -> None:
    # 16-bit floats run the GEMM in float32 with the bias column and round once at the end
    x, w, b = (a.astype(np.float16) for a in _case((1, 3, 20, 20), (8, 3, 3, 3), seed=4))
    got = _hal("Conv", [x, w, b], {"strides": [2, 2]})
    assert got.dtype == np.float16
    want = _hal("Conv", [x.astype(np.float32), w.astype(np.float32), b.astype(np.float32)], {"strides": [2, 2]})
    np.testing.assert_array_equal(got, want.astype(np.float16))
