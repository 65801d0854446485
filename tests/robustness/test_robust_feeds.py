"""Feeds, on every installed target: NaN and Inf propagate as IEEE 754 (as numpy computes them) and
never crash; feeds of the wrong kind, dtype, rank or shape are InputErrors listing what is expected."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _robust_models import TARGETS, elementwise_model, mlp_model, relu_model, session

import hal

pytestmark = pytest.mark.parametrize("target", TARGETS)

SPECIALS = np.array([[np.nan, np.inf, -np.inf, 0.0], [-0.0, 1.0, -2.5, 1e38]], np.float32)


def _numpy_elementwise(x: np.ndarray) -> list[np.ndarray]:
    with np.errstate(all="ignore"):
        e = np.exp(x)
        return [e * np.float32(2) + x / x, np.sqrt(x), np.maximum(x, np.float32(0)), np.max(x)]


def _same_ieee(got: np.ndarray, want: np.ndarray) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-6, atol=0)


def test_nan_and_inf_propagate_as_numpy_computes_them(target):
    s = session(elementwise_model(), target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's floating-point warnings must not surface, even under -W error
        got = s.run(None, {"x": SPECIALS.copy()})
    for g, w in zip(got, _numpy_elementwise(SPECIALS)):
        _same_ieee(g, w)


def test_nan_through_matmul_and_softmax_poisons_only_its_row(target):
    s = session(mlp_model(), target)
    x = np.ones((2, 4), np.float32)
    x[0, 1] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (y,) = s.run(None, {"x": x})
    assert np.isnan(y[0]).all() and np.isfinite(y[1]).all()
    np.testing.assert_allclose(y[1].sum(), 1.0, rtol=1e-5)


def test_inf_through_softmax_gives_what_numpy_gives(target):
    s = session(mlp_model(), target)
    x = np.full((2, 4), np.inf, np.float32)
    x[1] = [1e30, -1e30, 3.0, -np.inf]
    (y,) = s.run(None, {"x": x})  # inf - inf inside softmax is NaN, as in numpy; never an exception
    assert y.shape == (2, 3)
    (ref,) = session(mlp_model(), "cpu").run(None, {"x": x})
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))


def test_input_that_is_not_a_feed_dict_is_an_input_error(target):
    s = session(relu_model(), target)
    for bad in ([np.zeros((2, 3), np.float32)], None, "x", np.zeros((2, 3), np.float32)):
        with pytest.raises(hal.InputError, match=r"must be a dict.*expects: x: float32\[2, 3\]"):
            s.run(None, bad)


@pytest.mark.parametrize("value", [[[0.0] * 3] * 2, 1.5, "abc", None, b"\0" * 24, {"a": 1}])
def test_feed_that_is_not_an_array_is_an_input_error(target, value):
    s = session(relu_model(), target)
    with pytest.raises(hal.InputError, match="not a numpy array"):
        s.run(None, {"x": value})


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32, np.int64, np.bool_, np.complex64, object, "U3"])
def test_feed_of_the_wrong_dtype_is_an_input_error(target, dtype):
    s = session(relu_model(), target)
    with pytest.raises(hal.InputError, match="expected float32"):
        s.run(None, {"x": np.zeros((2, 3), dtype=dtype)})


@pytest.mark.parametrize("shape", [(), (6,), (2, 3, 1), (1, 2, 3)])
def test_feed_of_the_wrong_rank_is_an_input_error(target, shape):
    s = session(relu_model(), target)
    with pytest.raises(hal.InputError, match=r"rank .*expected rank 2"):
        s.run(None, {"x": np.zeros(shape, np.float32)})


@pytest.mark.parametrize("shape", [(2, 4), (3, 3), (0, 3), (2, 0)])
def test_feed_of_the_wrong_shape_is_an_input_error(target, shape):
    s = session(relu_model(), target)
    with pytest.raises(hal.InputError, match="must be"):
        s.run(None, {"x": np.zeros(shape, np.float32)})


def test_missing_extra_and_unknown_outputs_are_input_errors(target):
    s = session(relu_model(), target)
    with pytest.raises(hal.InputError, match="missing x"):
        s.run(None, {})
    with pytest.raises(hal.InputError, match="unexpected"):
        s.run(None, {"x": np.zeros((2, 3), np.float32), 7: np.zeros(1)})
    with pytest.raises(hal.InputError, match="unknown output"):
        s.run(["nope"], {"x": np.zeros((2, 3), np.float32)})


def test_odd_but_valid_arrays_run(target):
    s = session(relu_model(), target)
    base = np.arange(-12, 12, dtype=np.float32).reshape(4, 6)
    for x in (base[::2, ::2], np.asfortranarray(base[:2, :3]), base[:2, :3].copy().view(np.float32),
              np.broadcast_to(np.float32(-1), (2, 3))):
        (y,) = s.run(None, {"x": x})
        np.testing.assert_array_equal(y, np.maximum(x, 0))
    ro = np.ones((2, 3), np.float32)
    ro.flags.writeable = False
    (y,) = s.run(None, {"x": ro})
    np.testing.assert_array_equal(y, ro)


def test_a_failed_run_leaves_the_session_usable(target):
    s = session(relu_model(), target)
    with pytest.raises(hal.InputError):
        s.run(None, {"x": np.zeros((9, 9), np.float32)})
    (y,) = s.run(None, {"x": -np.ones((2, 3), np.float32)})
    assert not y.any()
