"""LinearClassifier, LinearRegressor, SVMClassifier and SVMRegressor (ai.onnx.ml) against onnxruntime.

Each test builds a one-node model with seeded random weights, runs it through hal's cpu target and
through onnxruntime, and compares labels exactly and scores to rtol 1e-5 / atol 1e-6. PROBIT included:
hal computes it as onnxruntime and onnx's reference evaluator do (Winitzki's erfinv, unrefined).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

import hal

ML = "ai.onnx.ml"
CLASSIFIERS = ("LinearClassifier", "SVMClassifier")
TRANSFORMS = ("NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO")
KERNELS = ("LINEAR", "POLY", "RBF", "SIGMOID")


def _model(op: str, attrs: dict[str, Any], *, x_type: int = TensorProto.FLOAT, x_rank: int = 2) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("X", x_type, [None] * x_rank)
    if op in CLASSIFIERS:
        label_type = TensorProto.STRING if attrs.get("classlabels_strings") else TensorProto.INT64
        outputs = [helper.make_tensor_value_info("Y", label_type, [None]),
                   helper.make_tensor_value_info("Z", TensorProto.FLOAT, [None, None])]
    else:
        outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, None])]
    node = helper.make_node(op, ["X"], [o.name for o in outputs], domain=ML, name="n", **attrs)
    graph = helper.make_graph([node], "g", [x], outputs)
    return helper.make_model(graph, ir_version=8,
                             opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, 1)])


def _ort(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"X": x})


def _hal(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return hal.InferenceSession(model, target="cpu").run(None, {"X": x})


def _assert_same(expected: list[np.ndarray], got: list[np.ndarray]) -> None:
    assert len(got) == len(expected)
    for want, have in zip(expected, got):
        have = np.asarray(have)
        assert have.shape == want.shape
        if want.dtype.kind in "OUS":
            assert have.dtype == object and have.tolist() == want.tolist()
        else:
            assert have.dtype == want.dtype
            np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6)


def _check(op: str, attrs: dict[str, Any], x: np.ndarray, **model_kw: Any) -> list[np.ndarray]:
    model = _model(op, attrs, **model_kw)
    got = _hal(model, x)
    _assert_same(_ort(model, x), got)
    return got


def _labels(kind: str, n: int) -> dict[str, list]:
    return {"classlabels_strings": [f"class{i}" for i in range(n)]} if kind == "strings" else \
        {"classlabels_ints": [int(v) for v in np.arange(n) * 7 - 3]}


def _linear(rng: np.random.Generator, classes: int, features: int, **extra: Any) -> dict[str, Any]:
    return {"coefficients": rng.normal(size=classes * features).tolist(),
            "intercepts": rng.normal(size=classes).tolist(), **extra}


def _svc(rng: np.random.Generator, classes: int, features: int, kernel: str = "RBF", proba: bool = False,
         **extra: Any) -> dict[str, Any]:
    per_class = rng.integers(1, 4, size=classes)
    vectors, pairs = int(per_class.sum()), classes * (classes - 1) // 2
    attrs = {"kernel_type": kernel, "kernel_params": [0.3, 0.5, 3.0 if kernel == "POLY" else 0.0],
             "support_vectors": rng.normal(size=vectors * features).tolist(),
             "vectors_per_class": per_class.tolist(), "coefficients": rng.normal(size=(classes - 1) * vectors).tolist(),
             "rho": rng.normal(size=pairs).tolist(), **extra}
    if proba:
        attrs |= {"prob_a": (-rng.uniform(0.5, 3.0, pairs)).tolist(), "prob_b": rng.normal(0, 0.3, pairs).tolist()}
    return attrs


def _x(rng: np.random.Generator, rows: int, features: int) -> np.ndarray:
    return rng.normal(size=(rows, features)).astype(np.float32)


# --- LinearClassifier --------------------------------------------------------------------------------


@pytest.mark.parametrize("post_transform", TRANSFORMS)
@pytest.mark.parametrize("labels", ["ints", "strings"])
def test_linear_classifier_multiclass_picks_the_best_score_and_transforms_all(post_transform, labels):
    rng = np.random.default_rng(1)
    attrs = _linear(rng, 4, 5, post_transform=post_transform, **_labels(labels, 4))
    _check("LinearClassifier", attrs, _x(rng, 40, 5))


@pytest.mark.parametrize("post_transform", TRANSFORMS)
@pytest.mark.parametrize("labels", ["ints", "strings"])
def test_linear_classifier_single_row_with_two_labels_makes_two_score_columns(post_transform, labels):
    rng = np.random.default_rng(2)
    attrs = _linear(rng, 1, 3, post_transform=post_transform, **_labels(labels, 2)) | {"intercepts": [0.1]}
    label, scores = _check("LinearClassifier", attrs, _x(rng, 40, 3))
    assert scores.shape == (40, 2) and len(set(label.tolist())) == 2


@pytest.mark.parametrize("post_transform", [*TRANSFORMS, "PROBIT"])
def test_linear_classifier_single_row_without_labels_keeps_one_column_labelled_by_sign(post_transform):
    rng = np.random.default_rng(3)
    x = (_x(rng, 40, 3) * 0.2).astype(np.float32)  # scores inside (0, 1) give PROBIT finite values
    attrs = _linear(rng, 1, 3)
    model = _model("LinearClassifier", {**attrs, "post_transform": post_transform})
    label, scores = _hal(model, x)
    raw = _ort(_model("LinearClassifier", attrs), x)[1]
    np.testing.assert_array_equal(label, (raw[:, 0] > 0).astype(np.int64))
    _assert_same(_ort(model, x), [label, scores])


def test_nan_scores_pick_labels_as_onnxruntime_does():
    # inf * 0 makes one class's score NaN: a leading NaN keeps the first class, a later one never wins
    attrs = {"coefficients": [math.inf, 0.0, 1.0, 1.0, 0.0, math.inf], "intercepts": [0.0, 0.0, -5.0],
             "classlabels_ints": [10, 20, 30]}
    x = np.array([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]], np.float32)
    label, _ = _check("LinearClassifier", attrs, x)
    assert label.tolist() == [10, 10, 20, 10]


# --- LinearRegressor ---------------------------------------------------------------------------------


@pytest.mark.parametrize("post_transform", TRANSFORMS)
@pytest.mark.parametrize("targets", [1, 3])
def test_linear_regressor_transforms_several_targets_but_not_a_lone_one(post_transform, targets):
    rng = np.random.default_rng(4)
    attrs = _linear(rng, targets, 6, post_transform=post_transform, targets=targets)
    _check("LinearRegressor", attrs, _x(rng, 30, 6))


def test_linear_regressor_without_intercepts_is_the_plain_product():
    rng = np.random.default_rng(5)
    _check("LinearRegressor", {"coefficients": rng.normal(size=8).tolist(), "targets": 2}, _x(rng, 10, 4))


# --- SVMClassifier -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("classes", [2, 4])
@pytest.mark.parametrize("proba", [False, True], ids=["votes", "platt"])
def test_svm_classifier_votes_one_vs_one_and_couples_probabilities(kernel, classes, proba):
    rng = np.random.default_rng(6)
    _check("SVMClassifier", _svc(rng, classes, 4, kernel, proba, **_labels("ints", classes)), _x(rng, 50, 4))


@pytest.mark.parametrize("post_transform", TRANSFORMS[1:])
@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("proba", [False, True], ids=["votes", "platt"])
def test_svm_classifier_post_transforms_pair_scores_or_probabilities(post_transform, classes, proba):
    rng = np.random.default_rng(7)
    attrs = _svc(rng, classes, 3, "RBF", proba, post_transform=post_transform, **_labels("strings", classes))
    _check("SVMClassifier", attrs, _x(rng, 50, 3))


@pytest.mark.parametrize("classes", [1, 2, 3])
@pytest.mark.parametrize("positive", [False, True], ids=["mixed", "positive"])
@pytest.mark.parametrize("post_transform", ["NONE", "LOGISTIC"])
def test_svm_classifier_without_support_vectors_is_one_linear_model_per_class(classes, positive, post_transform):
    rng = np.random.default_rng(8)
    weights = rng.normal(size=classes * 3)
    attrs = {"coefficients": (np.abs(weights) * 0.3 if positive else weights).tolist(), "rho": [0.1],
             "kernel_params": [0.1, 0.0, 0.0], "post_transform": post_transform, **_labels("ints", classes)}
    _check("SVMClassifier", attrs, _x(rng, 60, 3))


def test_svm_classifier_takes_string_labels_when_both_kinds_are_given():
    rng = np.random.default_rng(9)
    attrs = _svc(rng, 3, 3, **_labels("ints", 3), **_labels("strings", 3))
    label, _ = _check("SVMClassifier", attrs, _x(rng, 20, 3))
    assert label.dtype == object


def test_svm_classifier_rbf_kernel_of_an_infinite_feature_is_zero():
    rng = np.random.default_rng(10)
    x = np.array([[np.inf, 0.5, 1.0], [1.0, -np.inf, 0.0], [np.nan, 0.0, 0.0], [0.1, 0.2, 0.3]], np.float32)
    _check("SVMClassifier", _svc(rng, 3, 3, **_labels("ints", 3)), x)
    _check("SVMRegressor", _svr(rng, 4, 3, "RBF"), x)


# --- SVMRegressor ------------------------------------------------------------------------------------


def _svr(rng: np.random.Generator, vectors: int, features: int, kernel: str, **extra: Any) -> dict[str, Any]:
    attrs = {"kernel_type": kernel, "kernel_params": [0.3, 0.5, 2.0], "n_supports": vectors, "rho": [0.2],
             "coefficients": rng.normal(size=vectors or features).tolist(), **extra}
    if vectors:
        attrs["support_vectors"] = rng.normal(size=vectors * features).tolist()
    return attrs


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("vectors", [0, 6], ids=["linear-mode", "svr"])
@pytest.mark.parametrize("one_class", [0, 1])
def test_svm_regressor_sums_weighted_kernels_and_one_class_gives_signs(kernel, vectors, one_class):
    rng = np.random.default_rng(11)
    (y,) = _check("SVMRegressor", _svr(rng, vectors, 4, kernel, one_class=one_class), _x(rng, 40, 4))
    if one_class:
        assert set(np.unique(y).tolist()) <= {-1.0, 1.0}


@pytest.mark.parametrize("post_transform", ["LOGISTIC", "SOFTMAX", "PROBIT"])
def test_svm_regressor_leaves_post_transform_unapplied_like_onnxruntime(post_transform):
    rng = np.random.default_rng(12)
    _check("SVMRegressor", _svr(rng, 5, 3, "RBF", post_transform=post_transform), _x(rng, 20, 3))


# --- PROBIT ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["LinearClassifier", "LinearRegressor", "SVMClassifier"])
def test_probit_is_onnxruntime_s_approximate_inverse_normal_of_the_scores(op):
    rng = np.random.default_rng(13)
    if op == "SVMClassifier":
        attrs = _svc(rng, 3, 3, "RBF", proba=True, **_labels("ints", 3))
    else:
        attrs = _linear(rng, 3, 3, **({"targets": 3} if op == "LinearRegressor" else _labels("ints", 3)))
        attrs["coefficients"] = (np.asarray(attrs["coefficients"]) * 0.1).tolist()
        attrs["intercepts"] = [0.3, 0.5, 0.7]
    x = _x(rng, 30, 3)
    model = _model(op, {**attrs, "post_transform": "PROBIT"})
    got, want = _hal(model, x), _ort(model, x)
    if op == "SVMClassifier":  # coupled probabilities 1e-7 apart, through a float32 formula that cancels near 0.5
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-5)
    else:
        _assert_same(want, got)
    # not the exact inverse normal: Winitzki's erfinv, as both references compute it
    raw = _ort(_model(op, attrs), x)[-1].astype(np.float64)
    exact = np.vectorize(lambda p: NormalDist().inv_cdf(p) if 0 < p < 1 else math.nan)(raw)
    inside = np.isfinite(exact)
    assert np.abs(got[-1][inside] - exact[inside]).max() > 1e-4


# --- inputs ------------------------------------------------------------------------------------------


def _one_of_each(rng: np.random.Generator) -> list[tuple[str, dict[str, Any]]]:
    return [("LinearClassifier", _linear(rng, 3, 4, **_labels("ints", 3))),
            ("SVMClassifier", _svc(rng, 3, 4, "POLY", proba=True, **_labels("strings", 3))),
            ("LinearRegressor", _linear(rng, 2, 4, targets=2)),
            ("SVMRegressor", _svr(rng, 5, 4, "SIGMOID"))]


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.int32])
def test_other_input_types_are_cast_to_float32_first(dtype):
    rng = np.random.default_rng(14)
    x = (rng.normal(size=(12, 4)) * 3).astype(dtype)
    x_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    for op, attrs in _one_of_each(rng):
        got = _hal(_model(op, attrs, x_type=x_type), x)
        if op in CLASSIFIERS:
            _assert_same(_ort(_model(op, attrs, x_type=x_type), x), got)
        else:  # onnxruntime's regressors take float32 only
            _assert_same(_ort(_model(op, attrs), x.astype(np.float32)), got)


def test_empty_batch_gives_empty_outputs_of_the_right_width():
    rng = np.random.default_rng(15)
    for op, attrs in _one_of_each(rng):
        _check(op, attrs, np.zeros((0, 4), np.float32))


def test_one_dimensional_input_is_one_sample():
    rng = np.random.default_rng(16)
    for op, attrs in _one_of_each(rng):
        got = _check(op, attrs, _x(rng, 1, 4)[0], x_rank=1)
        assert got[-1].shape[0] == 1


# --- bad attributes ----------------------------------------------------------------------------------


_BAD = {
    "coefficients-vs-features": ("LinearClassifier", {"coefficients": [1.0] * 6, "intercepts": [0.0, 0.0],
                                                      "classlabels_ints": [0, 1]}, "coefficients has 6 values"),
    "no-intercepts": ("LinearClassifier", {"coefficients": [1.0] * 4, "classlabels_ints": [0, 1]}, "intercepts"),
    "too-few-labels": ("LinearClassifier", {"coefficients": [1.0] * 8, "intercepts": [0.0, 0.0],
                                            "classlabels_ints": [5]}, "class labels"),
    "unknown-transform": ("LinearRegressor", {"coefficients": [1.0] * 4, "post_transform": "SQUASH"},
                          "post_transform 'SQUASH'"),
    "intercepts-vs-targets": ("LinearRegressor", {"coefficients": [1.0] * 4, "intercepts": [1.0, 2.0]}, "intercepts"),
    "unknown-kernel": ("SVMClassifier", {"kernel_type": "CUBIC", "coefficients": [1.0] * 8, "rho": [0.0],
                                         "classlabels_ints": [0, 1]}, "kernel_type 'CUBIC'"),
    "support-vectors-vs-features": ("SVMClassifier", {"support_vectors": [1.0] * 9, "vectors_per_class": [1, 2],
                                                      "coefficients": [1.0] * 3, "rho": [0.0],
                                                      "classlabels_ints": [0, 1]}, "support_vectors has 9 values"),
    "rho-vs-pairs": ("SVMClassifier", {"support_vectors": [1.0] * 12, "vectors_per_class": [1, 1, 1],
                                       "coefficients": [1.0] * 6, "rho": [0.0],
                                       "classlabels_ints": [0, 1, 2]}, "rho has 1 values"),
    "short-kernel-params": ("SVMRegressor", {"kernel_params": [0.1], "coefficients": [1.0] * 4, "rho": [0.0]},
                            "kernel_params"),
    "coefficients-vs-supports": ("SVMRegressor", {"n_supports": 2, "support_vectors": [1.0] * 8,
                                                  "coefficients": [1.0] * 3, "rho": [0.0]}, "coefficients has 3"),
}


@pytest.mark.parametrize("case", list(_BAD))
def test_bad_attributes_are_a_run_error_naming_the_attribute(case):
    op, attrs, message = _BAD[case]
    with pytest.raises(hal.RunError, match=message) as err:
        _hal(_model(op, attrs), np.ones((2, 4), np.float32))
    assert op in str(err.value)

