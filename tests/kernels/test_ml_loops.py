"""The ai.onnx.ml kernels' fast paths: a classifier's first maximum and SOFTMAX over a few classes as
compiled row loops, Normalizer's row sums a column at a time, and a linear model's checked weights
kept per node (``hal.kernels.ml.laid_out``). Each gives the bits of the path it replaces."""

from __future__ import annotations

import numpy as np
import pytest

from hal.kernels import jit, ml, ml_features, ml_linear
from tests.kernels.test_jit_loops import _both_ways, _counting

pytestmark = pytest.mark.skipif(not jit.enabled(), reason="numba is not importable here (HAL_JIT=0 or missing)")
if jit.enabled():
    from hal.kernels import _loops as loops

SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e308, -1e308, 5e-324]


def _scores(rows: int, width: int, seed: int) -> np.ndarray:
    """Random float64 scores, some rows holding NaN, infinities, ties and huge values."""
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((rows, width)) * 30
    s[: rows // 4] = rng.choice([*SPECIAL, 1.0, 2.0], size=(rows // 4, width))
    s[rows // 4] = 7.0  # a tie across the row: the first column wins
    return s


@pytest.mark.parametrize("width", [1, 2, 3, 5, 7, 8, 12])
def test_first_max_and_softmax_keep_the_numpy_bits(width, monkeypatch):
    s = _scores(400, width, width)
    maxes = _counting(monkeypatch, loops, "first_max_rows")
    got, want = _both_ways(monkeypatch, lambda: ml_linear._first_max(s))
    assert maxes and np.array_equal(got, want)
    assert got[400 // 4] == 0
    shifts = _counting(monkeypatch, loops, "shift_by_row_max")
    with np.errstate(all="ignore"):
        got, want = _both_ways(monkeypatch, lambda: ml.apply_post_transform(s, "SOFTMAX"))
    assert bool(shifts) == (width < 8)  # wider rows keep numpy's reduction (it adds 8 or more pairwise)
    np.testing.assert_array_equal(got.view(np.uint64), want.view(np.uint64))


@pytest.mark.parametrize("width", [1, 2, 3, 8, 16, 17, 40])
def test_row_sums_add_front_to_back_as_cumsum(width):
    v = np.abs(np.random.default_rng(width).standard_normal((300, width))).astype(np.float32) * 1e3
    v[0, :] = np.float32(3.4e38)  # overflows to inf part way, as cumsum does
    with np.errstate(all="ignore"):
        want = np.cumsum(v, axis=1, dtype=np.float32)[:, -1]
        np.testing.assert_array_equal(ml_features._row_sums(v).view(np.uint32), want.view(np.uint32))


def test_a_linear_models_checked_weights_are_kept_per_node_and_follow_its_attributes():
    x = np.random.default_rng(0).standard_normal((50, 3)).astype(np.float32)
    coef, bias, labels = [1.0, -2.0, 0.5, 0.0, 3.0, -1.0], [0.1, -0.2], [4, 9]
    first = ml_linear.linear_classifier(x, coefficients=coef, intercepts=bias, classlabels_ints=labels)
    again = ml_linear.linear_classifier(x, coefficients=coef, intercepts=bias, classlabels_ints=labels)
    for a, b in zip(first, again):
        assert np.array_equal(a, b)
    # other attribute objects (another node, or the same values changed) are laid out anew
    other = ml_linear.linear_classifier(x, coefficients=[-v for v in coef], intercepts=bias, classlabels_ints=labels)
    assert not np.array_equal(other[1], first[1])
    scores = x.astype(np.float64) @ np.array(coef).reshape(2, 3).T + np.array(bias)
    assert np.array_equal(first[0], np.array(labels)[np.argmax(scores, axis=1)])
    # a bad node raises on every run: what a build raises is not kept
    for _ in range(2):
        with pytest.raises(ValueError, match="6 values, expected classes x features = 2 x 4"):
            ml_linear.linear_classifier(np.ones((2, 4), np.float32), coefficients=coef, intercepts=bias,
                                        classlabels_ints=labels)
    y = ml_linear.linear_regressor(x, coefficients=coef[:3], intercepts=[0.5])
    np.testing.assert_array_equal(y, (x @ np.float32(coef[:3]) + np.float32(0.5))[:, None])
