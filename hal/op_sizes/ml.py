"""Size rules of the ai.onnx.ml ops whose outputs an attribute or a second input sizes: a count in
the model (classes, targets, a sparse map's width) times the rows of the run's data."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hal.op_sizes._read import itemsize


def _array_feature_extractor(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """ArrayFeatureExtractor's output: every row of x at each index, a product of two inputs' sizes."""
    x, index = args[0], np.asarray(args[1])
    return [*x.shape[:-1], index.size] if x.ndim > 1 else [1, index.size], itemsize(x, 8)


def _tree_ensemble(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """TreeEnsemble's scores, (samples, n_targets) float64: n_targets is an attribute."""
    x = args[0]
    return [x.shape[0] if x.ndim > 1 else 1, int(attrs.get("n_targets", 1))], 8


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


RULES: dict[str, Callable[[Sequence[Any], dict[str, Any]], tuple[list[int], int] | None]] = {
    "ArrayFeatureExtractor": _array_feature_extractor, "TreeEnsemble": _tree_ensemble, "CastMap": _cast_map,
    "OneHotEncoder": _one_hot_encoder, "FeatureVectorizer": _feature_vectorizer,
}
