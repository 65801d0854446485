"""im2col columns copied as runs of whole output rows (``hal.kernels._sliding.flat_columns``): the
window view's columns element for element, and convs built on them against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

from hal.kernels import _sliding, nn
from tests.kernels.test_kernels_fast_conv import _hal, _ort

GEOMETRIES = [  # (x shape, kernel, pads, dilations): stride 1, output as wide as the input
    ((1, 3, 7, 9), (3, 3), [1, 1, 1, 1], None),
    ((2, 4, 5, 6), (3, 5), [1, 2, 1, 2], None),           # batch 2, a wide kernel
    ((1, 2, 8, 8), (3, 3), [2, 2, 2, 2], [2, 2]),         # dilated
    ((1, 5, 6, 7), (1, 3), [0, 1, 0, 1], None),           # one row tall
    ((1, 5, 6, 7), (3, 1), [1, 0, 1, 0], None),           # one column wide: nothing wraps
    ((1, 3, 6, 6), (3, 3), [0, 0, 2, 2], None),           # every pad after the image
    ((1, 2, 4, 3), (1, 3), [0, 4, 0, 4], [1, 4]),         # taps past the row's far side: whole columns zero
    ((1, 4, 5, 5), (2, 2), [1, 0, 0, 1], None),           # uneven
]


def _window_columns(x, k, s, d, begin, end, out) -> np.ndarray:
    win = _sliding._windows(_sliding._padded(x, begin, end, 0), out, k, s, d)  # (n, c, oh, ow, kh, kw)
    return np.ascontiguousarray(win.transpose(0, 1, 4, 5, 2, 3)).reshape(x.shape[0], 1, -1, out[0] * out[1])


@pytest.mark.parametrize("xs,kernel,pads,dilations", GEOMETRIES)
def test_flat_columns_are_the_window_views(xs, kernel, pads, dilations) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xs).astype(np.float32)
    x.reshape(-1)[::7] = np.nan  # a wrapped read of a NaN must still leave a zero
    x.reshape(-1)[3::11] = np.inf
    k, s, d, begin, end, out = _sliding.window(xs[2:], kernel, None, dilations, pads, "NOTSET")
    assert _sliding.flat_columns_apply(x.shape, k, s, begin, end, out)
    got = nn._columns(x, k, s, d, begin, end, out, 1)
    np.testing.assert_array_equal(got, _window_columns(x, k, s, d, begin, end, out))
    # a band of output rows, from a buffer holding other channels too (its first image is 1)
    rows, width = xs[2] + begin[0] + end[0], xs[3]
    flat = _sliding.flat_rows(x, begin, end)
    r0, r1 = out[0] // 2, out[0]
    band = np.full((xs[1] - 1, *k, (r1 - r0) * width), 7.0, dtype=np.float32)
    _sliding.flat_columns(flat, 1, xs[1] - 1, rows, width, k, d, begin[1], (r0, r1), band)
    want = _window_columns(x, k, s, d, begin, end, out).reshape(xs[0], xs[1], *k, out[0], width)
    np.testing.assert_array_equal(band.reshape(xs[1] - 1, *k, r1 - r0, width), want[0, 1:, :, :, r0:r1])


@pytest.mark.parametrize("xs,kernel,pads,block", [
    ((1, 64, 20, 24), (64, 64, 3, 3), [1, 1, 1, 1], None),
    ((1, 64, 48, 48), (64, 64, 3, 3), [1, 1, 1, 1], None),      # banded
    ((2, 12, 9, 10), (60, 6, 3, 3), [1, 1, 1, 1], None),        # grouped, batch 2
    ((2, 12, 9, 10), (60, 4, 3, 3), [2, 1, 0, 1], 1),           # a group a block: each block's rows padded apart
])
def test_convs_on_flat_columns_match_onnxruntime(monkeypatch, xs, kernel, pads, block) -> None:
    if block is not None:
        monkeypatch.setattr(nn, "COLUMN_BLOCK", block)
    calls = []
    real = _sliding.flat_columns
    monkeypatch.setattr(nn, "flat_columns", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(nn.winograd, "applies", lambda *a, **k: False)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(kernel).astype(np.float32)
    b = rng.standard_normal(kernel[0]).astype(np.float32)
    attrs = {"pads": pads, "group": xs[1] // kernel[1]}
    got = _hal("Conv", [x, w, b], attrs)
    assert calls
    want = _ort("Conv", {"x": x, "w": w, "b": b}, attrs)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
