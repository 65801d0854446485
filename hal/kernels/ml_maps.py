"""ai.onnx.ml kernels over maps: ZipMap (scores to one dict a row), DictVectorizer and CastMap (a
dict to a tensor).

A map arrives as a ``hal.feeds.MapValue``: a dict that keeps its declared key and value dtypes, so
an empty one still has an output dtype. ZipMap makes ``MapValue``s whose values are Python floats,
as onnxruntime returns them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hal.feeds import MapValue
from hal.kernels.ml import ML, as_int64
from hal.kernels.registry import kernel

Array = np.ndarray


def _labels(strings: Sequence[str] | None, ints: Sequence[int] | None, op: str) -> tuple[list[Any], np.dtype]:
    """The one label list a node sets (strings or int64s) and its key dtype."""
    if bool(strings) == bool(ints):
        raise ValueError(f"{op}: set exactly one of the string and int64 label lists "
                         f"(got {len(strings or ())} strings and {len(ints or ())} int64s)")
    return (list(strings), np.dtype(object)) if strings else ([int(v) for v in ints or ()], np.dtype(np.int64))


@kernel("ZipMap", since=1, domain=ML)
def zip_map(x: Array, classlabels_strings: Sequence[str] | None = None,
            classlabels_int64s: Sequence[int] | None = None) -> list[MapValue]:
    """One {label: score} map per row of X, (rows, labels) or one row of (labels,)."""
    labels, key_dtype = _labels(classlabels_strings, classlabels_int64s, "ZipMap")
    rows = x.reshape(1, -1) if x.ndim == 1 else x
    if rows.ndim != 2 or rows.shape[1] != len(labels):
        raise ValueError(f"ZipMap: X of shape {list(x.shape)} does not have one column per class label "
                         f"({len(labels)}); X must be (rows, {len(labels)})")
    values = rows.astype(np.float64).tolist()  # Python floats: the float32 scores' exact values
    value_dtype = np.dtype(np.float32)
    return [MapValue(zip(labels, row), key_dtype, value_dtype) for row in values]


def _value_dtype(x: Mapping[Any, Any]) -> np.dtype:
    if isinstance(x, MapValue):
        return x.value_dtype
    return np.asarray(list(x.values())).dtype if x else np.dtype(np.float32)


@kernel("DictVectorizer", since=1, domain=ML)
def dict_vectorizer(x: Mapping[Any, Any], string_vocabulary: Sequence[str] | None = None,
                    int64_vocabulary: Sequence[int] | None = None) -> Array:
    """(1, vocabulary) of the map's values in vocabulary order; a word the map lacks is 0 (or "")."""
    vocab, _ = _labels(string_vocabulary, int64_vocabulary, "DictVectorizer")
    dtype = _value_dtype(x)
    out = np.full((1, len(vocab)), "" if dtype.kind == "O" else 0, dtype=dtype)
    for j, word in enumerate(vocab):
        if word in x:
            out[0, j] = x[word]
    return out


#: CastMap's cast_to -> output dtype
CASTS = {"TO_FLOAT": np.dtype(np.float32), "TO_INT64": np.dtype(np.int64), "TO_STRING": np.dtype(object)}


def _text(v: float) -> str:
    """A float as std::to_string prints it: six decimals, and a NaN with its sign ("-nan"; Python drops it)."""
    return ("-nan" if math.copysign(1.0, v) < 0 else "nan") if math.isnan(v) else f"{v:f}"


def _cast(values: Array, to: np.dtype) -> Array:
    """Values (float32 or strings) cast as onnxruntime casts them: floats to int64 truncate (NaN and
    overflow give INT64_MIN, as x86's conversion does), floats to strings print with six decimals."""
    if to.kind == "O":
        return np.array([_text(v) if values.dtype.kind == "f" else str(v) for v in values.tolist()], dtype=object)
    if values.dtype.kind == "O":
        values = np.array([float(v) for v in values.tolist()], dtype=np.float64)
    if to.kind == "i":
        return as_int64(values)
    return values.astype(to)


@kernel("CastMap", since=1, domain=ML)
def cast_map(x: Mapping[int, Any], cast_to: str = "TO_FLOAT", map_form: str = "DENSE", max_map: int = 1) -> Array:
    """(1, n) of the map's values in key order (DENSE), or (1, max_map) with value k at column k and
    zeros elsewhere (SPARSE; keys past max_map are dropped, negative keys are an error)."""
    if cast_to not in CASTS:
        raise ValueError(f"CastMap: cast_to={cast_to!r}; one of {', '.join(CASTS)}")
    to = CASTS[cast_to]
    keys = sorted(x)
    values = np.array([x[k] for k in keys], dtype=_value_dtype(x))
    cast = _cast(values, to)
    if map_form == "DENSE":
        return cast.reshape(1, -1)
    if map_form != "SPARSE":
        raise ValueError(f"CastMap: map_form={map_form!r}; DENSE or SPARSE")
    if keys and keys[0] < 0:
        raise ValueError(f"CastMap: a SPARSE map's keys index the output, so none may be negative (got {keys[0]})")
    if max_map < 1:
        raise ValueError(f"CastMap: max_map={max_map}; a SPARSE map needs at least one column")
    zero = _cast(np.zeros(1, np.float32), to)[0]  # "0.000000" as a string: a zero cast like any value
    out = np.full((1, max_map), zero, dtype=to)
    inside = np.array([k < max_map for k in keys], dtype=bool)
    out[0, np.asarray(keys, dtype=np.int64)[inside]] = cast[inside]
    return out


__all__ = ["CASTS", "cast_map", "dict_vectorizer", "zip_map"]
