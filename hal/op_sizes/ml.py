"""Size rules of the ai.onnx.ml ops whose outputs an attribute or a second input sizes: a count in
the model (classes, targets, a sparse map's width) times the rows of the run's data."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hal.op_sizes._read import itemsize


def _samples(x: Any) -> int:
    """The rows of an ai.onnx.ml model's X: (samples, features), a 1-D X one sample. A sample may have
    no features, so X of no bytes may still have 2**40 rows, each with outputs."""
    return int(x.shape[0]) if np.ndim(x) > 1 else 1


def _labels(attrs: dict[str, Any], *names: str) -> int:
    return max((len(attrs.get(n) or ()) for n in names), default=0)


def _array_feature_extractor(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """ArrayFeatureExtractor's output: every row of x at each index, a product of two inputs' sizes."""
    x, index = args[0], np.asarray(args[1])
    return [*x.shape[:-1], index.size] if x.ndim > 1 else [1, index.size], itemsize(x, 8)


def _tree_ensemble(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """TreeEnsemble's scores, (samples, n_targets) float64: n_targets is an attribute."""
    return [_samples(args[0]), int(attrs.get("n_targets", 1))], 8


def _cast_map(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """CastMap's SPARSE output, (1, max_map): max_map is an attribute, a few bytes for any width;
    DENSE is the map's own size."""
    if attrs.get("map_form", "DENSE") != "SPARSE":
        return None
    return [1, max(int(attrs.get("max_map", 1)), 0)], 8


def _one_hot_encoder(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """OneHotEncoder's output, (*X's shape, categories) float32: a product of the input's size and
    a list in the model."""
    cats = attrs.get("cats_int64s") or attrs.get("cats_strings") or ()
    return [*np.shape(args[0]), len(cats)], 4


def _feature_vectorizer(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """FeatureVectorizer's output, (rows, sum of inputdimensions) float32: narrow inputs are padded
    with zeros, so the widths, attributes, are not bounded by the inputs."""
    dims = [int(d) for d in attrs.get("inputdimensions") or ()]
    if not args or not dims or min(dims) < 0:
        return None  # the kernel's error
    x = args[0]
    return [x.shape[0] if np.ndim(x) > 1 else 1, sum(dims)], 4


def _linear_classifier(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """LinearClassifier's float64 scores, (samples, classes): the classes are the intercepts, a list
    in the model."""
    return [_samples(args[0]), max(len(attrs.get("intercepts") or ()), 2)], 8


def _linear_regressor(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """LinearRegressor's float64 scores, (samples, targets): targets is an attribute, and X with no
    features needs no coefficients for any number of them."""
    return [_samples(args[0]), max(int(attrs.get("targets", 1)), 1)], 8


#: bytes SVMClassifier holds per (sample, class, class) when it couples pairwise probabilities: the
#: float32 matrices r and q, their transpose and a product, at once
SVM_COUPLING_BYTES = 16


def _svm_classifier(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """SVMClassifier's largest buffer: its float64 pair scores, (samples, class pairs), or with prob_a
    the coupling's (samples, classes, classes); the classes are a list in the model."""
    n, c = _samples(args[0]), _labels(attrs, "classlabels_ints", "classlabels_strings")
    pairs = ([n, max(c * (c - 1) // 2, c)], 8)
    if not attrs.get("prob_a"):
        return pairs
    return max(pairs, ([n, c, c], SVM_COUPLING_BYTES), key=lambda r: math.prod(r[0]) * r[1])


def _per_sample(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """SVMRegressor's (samples, 1) float64 scores."""
    return [_samples(args[0]), 1], 8


#: bytes a ZipMap entry takes as Python objects: its share of the row's dict, the float, the key
ZIPMAP_ENTRY_BYTES = 100


def _zip_map(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """ZipMap's maps, one a row with an entry a label: Python objects, ~25x the float32 scores."""
    return [_samples(args[0]), max(_labels(attrs, "classlabels_int64s", "classlabels_strings"), 1)], ZIPMAP_ENTRY_BYTES


def _legacy_trees(outputs: Callable[[dict[str, Any]], int]) -> Callable[[Sequence[Any], dict[str, Any]],
                                                                       tuple[list[int], int] | None]:
    """TreeEnsembleClassifier and TreeEnsembleRegressor: the larger of their float64 scores, (samples,
    outputs), and their leaf table, (nodes, outputs) weights and flags; the outputs are classes, a list in
    the model, or n_targets, one attribute for any count."""
    def rule(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
        width = max(outputs(attrs), 1)
        return max(([_samples(args[0]), width], 8), ([len(attrs.get("nodes_nodeids") or ()), width], 9),
                   key=lambda r: math.prod(r[0]) * r[1])
    return rule


RULES: dict[str, Callable[[Sequence[Any], dict[str, Any]], tuple[list[int], int] | None]] = {
    "ArrayFeatureExtractor": _array_feature_extractor, "TreeEnsemble": _tree_ensemble, "CastMap": _cast_map,
    "OneHotEncoder": _one_hot_encoder, "FeatureVectorizer": _feature_vectorizer, "ZipMap": _zip_map,
    "LinearClassifier": _linear_classifier, "LinearRegressor": _linear_regressor,
    "SVMClassifier": _svm_classifier, "SVMRegressor": _per_sample,
    "TreeEnsembleClassifier": _legacy_trees(lambda a: _labels(a, "classlabels_int64s", "classlabels_strings")),
    "TreeEnsembleRegressor": _legacy_trees(lambda a: int(a.get("n_targets") or 1)),
}
