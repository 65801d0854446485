"""A mean over nothing is 0 / 0 = NaN, given quietly on every target: numpy's mean warned of an
empty slice (a RuntimeWarning the caller saw, which the engine's errstate cannot silence) in
ReduceMean, GlobalAveragePool and the normalisations that average over their input (torch's
var_mean over an empty tensor exports to one). So is a 0 / 0 among the constants a session folds
when it compiles (onnx-asr's resamplers build a sinc filter that way and mask its NaN with a Where)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _robust_models import TARGETS, F, model, session, vi
from onnx import helper, numpy_helper

import hal

ONES, ZEROS = np.ones(2, np.float32), np.zeros(2, np.float32)
CASES = {
    "ReduceMean": ([helper.make_node("ReduceMean", ["x"], ["y"], axes=[1])], (2, 0), 13, {}),
    "GlobalAveragePool": ([helper.make_node("GlobalAveragePool", ["x"], ["y"])], (1, 2, 0), 13, {}),
    "MeanVarianceNormalization": ([helper.make_node("MeanVarianceNormalization", ["x"], ["y"], axes=[0, 2])],
                                  (1, 2, 0), 13, {}),
    "LayerNormalization": ([helper.make_node("LayerNormalization", ["x", "s"], ["y"], axis=1)], (2, 0), 17,
                           {"s": np.ones(0, np.float32)}),
    "InstanceNormalization": ([helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"])], (1, 2, 0), 17,
                              {"s": ONES, "b": ZEROS}),
    "GroupNormalization": ([helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=1)],
                           (1, 2, 0), 21, {"s": ONES, "b": ZEROS}),
}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_mean_over_nothing_is_nan_without_a_warning(name, target):
    nodes, shape, opset, weights = CASES[name]
    m = model(nodes, [vi("x", F, list(shape))], [vi("y", F, None)],
              [numpy_helper.from_array(v, k) for k, v in weights.items()], opset=opset)
    s = session(m, target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (y,) = s.run(None, {"x": np.zeros(shape, np.float32)})
    assert y.dtype == np.float32 and np.isnan(y).all()
    if name in ("ReduceMean", "GlobalAveragePool"):
        assert y.size == 2  # one mean (of nothing) per row or channel


@pytest.mark.parametrize("target", TARGETS)
def test_a_constant_zero_over_zero_folds_without_a_warning(target):
    t = np.arange(4, dtype=np.float32)
    nodes = [helper.make_node("Sin", ["t"], ["s"]), helper.make_node("Div", ["s", "t"], ["sinc"]),
             helper.make_node("Equal", ["t", "zero"], ["at0"]),
             helper.make_node("Where", ["at0", "one", "sinc"], ["w"]), helper.make_node("Mul", ["x", "w"], ["y"])]
    weights = {"t": t, "zero": np.float32(0), "one": np.float32(1)}
    m = model(nodes, [vi("x", F, [4])], [vi("y", F, None)], [numpy_helper.from_array(np.asarray(v), k)
                                                            for k, v in weights.items()], opset=17)
    with warnings.catch_warnings(record=True) as seen:  # (as errors, they would stop the folding instead)
        warnings.simplefilter("always")
        (y,) = hal.InferenceSession(m, target=target, fallback="allow").run(None, {"x": np.ones(4, np.float32)})
    assert not [str(w.message) for w in seen if issubclass(w.category, RuntimeWarning)]
    np.testing.assert_allclose(y, np.r_[1, np.sin(t[1:]) / t[1:]], rtol=1e-6)
