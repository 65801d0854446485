"""ai.onnx.ml feature transforms from sklearn preprocessing pipelines: Scaler, Normalizer, Imputer,
OneHotEncoder, CategoryMapper and FeatureVectorizer, each matching onnxruntime's CPU kernels.

Per-feature attributes (Scaler, Imputer) apply as onnxruntime applies them: the flat data is cut into
rows of ``shape[1]`` values (``shape[0]`` for 1-D input) and the attribute broadcasts along each row.
Normalizer accumulates its row sums in float32 front to back (``cumsum``), as onnxruntime's loop does.
Category lookups (OneHotEncoder, CategoryMapper) binary-search the sorted keys; a repeated key keeps
its last position. Bad attributes raise ValueError naming the attribute; the engine names the node.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hal.errors import a_or_an
from hal.kernels.ml import ML, as_int64, string_array
from hal.kernels.registry import kernel

Array = np.ndarray
NORMS = ("MAX", "L1", "L2")


def _rows(x: Array, op: str) -> Array:
    """``x`` as onnxruntime's feature rows: width ``shape[1]`` (``shape[0]`` when 1-D)."""
    if x.ndim == 0:
        raise ValueError(f"{op}: the input must have at least 1 dimension, got a scalar")
    width = x.shape[1] if x.ndim > 1 else x.shape[0]
    return x.reshape(x.size // width if width else 0, width)


def _per_feature(values: Sequence[float] | Sequence[int], name: str, width: int, op: str, dtype: type) -> Array:
    """An attribute of 1 value or one per feature, as a row that broadcasts over the feature rows."""
    if len(values) not in (1, width):
        raise ValueError(f"{op}: {name} has {len(values)} values; it needs 1 or one per feature ({width})")
    return np.asarray(values, dtype=dtype)


@kernel("Scaler", since=1, domain=ML)
def scaler(x: Array, offset: Sequence[float] = (), scale: Sequence[float] = ()) -> Array:
    if not scale:
        raise ValueError("Scaler: scale is empty; it needs 1 value or one per feature")
    if len(offset) != len(scale):
        raise ValueError(f"Scaler: offset has {len(offset)} values but scale has {len(scale)}; "
                         "they must have the same length")
    rows = _rows(x, "Scaler")
    # onnxruntime subtracts in double for double input and in float otherwise (ints are cast to float first)
    work = np.float64 if x.dtype == np.float64 else np.float32
    off = _per_feature(offset, "offset", rows.shape[1], "Scaler", np.float32).astype(work)
    sc = _per_feature(scale, "scale", rows.shape[1], "Scaler", np.float32).astype(work)
    with np.errstate(all="ignore"):
        # one new array, the multiply in place (three copies of 1,000 rows of 8 were half of its 20 us)
        y = np.subtract(rows if rows.dtype == work else rows.astype(work), off)
        np.multiply(y, sc, out=y)
        return y.astype(np.float32, copy=False).reshape(x.shape)


def _row_sums(values: Array) -> Array:
    """Float32 sums of each row, added front to back (numpy's ``sum`` adds pairwise, so rounds otherwise):
    up to 16 columns one at a time (``cumsum`` along a short last axis took 20 us for 1,000 rows of 3 and
    30 for rows of 8, the columns 3 and 5), more through ``cumsum``."""
    if values.shape[1] == 0:
        return np.zeros(values.shape[0], dtype=np.float32)
    if values.shape[1] > 16:
        return np.cumsum(values, axis=1, dtype=np.float32)[:, -1]
    total = values[:, 0].astype(np.float32)
    for j in range(1, values.shape[1]):
        np.add(total, values[:, j], out=total, dtype=np.float32)
    return total


@kernel("Normalizer", since=1, domain=ML)
def normalizer(x: Array, norm: str = "MAX") -> Array:
    if norm not in NORMS:
        raise ValueError(f"Normalizer: norm is {norm!r}; it must be one of {', '.join(NORMS)}")
    if x.ndim not in (1, 2):
        raise ValueError(f"Normalizer: the input must have rank 1 or 2, got rank {x.ndim}")
    rows = x.reshape(1, -1) if x.ndim == 1 else x
    xf = rows.astype(np.float32)
    with np.errstate(all="ignore"):
        if norm == "MAX":
            # fmax skips NaN and the float32 lowest start value makes an all -inf row divide by it, as onnxruntime's
            peak = np.fmax.reduce(xf, axis=1, initial=np.finfo(np.float32).min)
            return (xf / np.where(peak != 0, peak, 1)[:, None]).reshape(x.shape)
        if norm == "L1":
            total = _row_sums(np.abs(rows).astype(np.float32))
            return (xf / np.where(total != 0, total, 1)[:, None]).reshape(x.shape)
        squares = (rows * rows).astype(np.float32, copy=False)  # squared in the input's type (int overflow wraps)
        total = _row_sums(squares)
        root = np.sqrt(squares / np.where(total != 0, total, 1)[:, None])
        out = np.where(total[:, None] != 0, np.where(rows < 0, -root, root), xf)
    return out.astype(np.float32, copy=False).reshape(x.shape)


@kernel("Imputer", since=1, domain=ML)
def imputer(x: Array, imputed_value_floats: Sequence[float] = (), imputed_value_int64s: Sequence[int] = (),
            replaced_value_float: float = 0.0, replaced_value_int64: int = 0) -> Array:
    if bool(imputed_value_floats) == bool(imputed_value_int64s):
        which = "both" if imputed_value_floats else "neither"
        raise ValueError(f"Imputer: set exactly one of imputed_value_floats and imputed_value_int64s, got {which}")
    rows = _rows(x, "Imputer")
    if x.dtype.kind == "f":
        if not imputed_value_floats:
            raise ValueError(f"Imputer: {a_or_an(str(x.dtype))} input needs imputed_value_floats; "
                             "only imputed_value_int64s is set")
        values = _per_feature(imputed_value_floats, "imputed_value_floats", rows.shape[1], "Imputer", np.float32)
        replaced = x.dtype.type(np.float32(replaced_value_float))
        missing = np.isnan(rows) if np.isnan(replaced) else rows == replaced
    elif x.dtype.kind in "iu":
        if not imputed_value_int64s:
            raise ValueError(f"Imputer: {a_or_an(str(x.dtype))} input needs imputed_value_int64s; "
                             "only imputed_value_floats is set")
        values = _per_feature(imputed_value_int64s, "imputed_value_int64s", rows.shape[1], "Imputer", np.int64)
        info = np.iinfo(x.dtype)
        if values.size and (values.min() < info.min or values.max() > info.max):
            raise ValueError(f"Imputer: imputed_value_int64s has values that do not fit the {x.dtype} input")
        missing = rows == replaced_value_int64
    else:
        raise ValueError(f"Imputer: the input must be float, double, int64 or int32, got {x.dtype}")
    fill = np.broadcast_to(values.astype(x.dtype), rows.shape)
    return np.where(missing, fill, rows).reshape(x.shape)


def _find(keys: Array, flat: Array) -> Array:
    """The position of each of ``flat`` in ``keys`` (a repeated key: its last), -1 where it is absent."""
    found = np.full(flat.shape, -1, dtype=np.intp)
    if not keys.size or not flat.size or (keys.dtype == object) != (flat.dtype == object):
        return found
    unique, first_from_back = np.unique(keys[::-1], return_index=True)
    last = keys.size - 1 - first_from_back
    pos = np.clip(np.searchsorted(unique, flat), 0, unique.size - 1)
    hit = unique[pos] == flat
    found[hit] = last[pos[hit]]
    return found


@kernel("OneHotEncoder", since=1, domain=ML)
def one_hot_encoder(x: Array, cats_int64s: Sequence[int] = (), cats_strings: Sequence[str] = (),
                    zeros: int = 1) -> Array:
    if bool(cats_int64s) == bool(cats_strings):
        which = "both" if cats_int64s else "neither"
        raise ValueError(f"OneHotEncoder: set exactly one of cats_int64s and cats_strings, got {which}")
    keys = np.asarray(cats_int64s, dtype=np.int64) if cats_int64s else string_array(list(cats_strings))
    flat = x.reshape(-1)
    if x.dtype == object:
        flat = string_array(list(flat))
    elif x.dtype.kind in "iuf":
        flat = as_int64(flat)
    else:
        raise ValueError(f"OneHotEncoder: the input must be strings or numbers, got {x.dtype}")
    index = _find(keys, flat)
    missing = index < 0
    if not zeros and missing.any():
        first = int(np.argmax(missing))
        value = x.reshape(-1)[first:first + 1].tolist()[0]  # a Python value, for a readable message
        attr = "cats_int64s" if cats_int64s else "cats_strings"
        raise ValueError(f"OneHotEncoder: {value!r} is not in {attr} and zeros=0 forbids unknown categories")
    out = np.zeros((flat.size, keys.size), dtype=np.float32)
    known = np.flatnonzero(~missing)
    out[known, index[known]] = 1
    return out.reshape((*x.shape, keys.size))


@kernel("CategoryMapper", since=1, domain=ML)
def category_mapper(x: Array, cats_int64s: Sequence[int] | None = None, cats_strings: Sequence[str] | None = None,
                    default_int64: int = -1, default_string: str = "_Unused") -> Array:
    if cats_int64s is None or cats_strings is None:
        raise ValueError("CategoryMapper: cats_int64s and cats_strings are both required")
    if len(cats_int64s) != len(cats_strings):
        raise ValueError(f"CategoryMapper: cats_int64s has {len(cats_int64s)} values but cats_strings has "
                         f"{len(cats_strings)}; they must have the same length")
    ints, strings = np.asarray(cats_int64s, dtype=np.int64), string_array(list(cats_strings))
    flat = x.reshape(-1)
    if x.dtype == object:
        keys, values, default, flat = strings, ints, default_int64, string_array(list(flat))
    elif x.dtype == np.int64:
        keys, values, default = ints, strings, default_string
    else:
        raise ValueError(f"CategoryMapper: the input must be strings or int64, got {x.dtype}")
    index = _find(keys, flat)
    out = np.empty(flat.shape, dtype=values.dtype)
    out[...] = default
    hit = index >= 0
    out[hit] = values[index[hit]]
    return out.reshape(x.shape)


@kernel("FeatureVectorizer", since=1, domain=ML)
def feature_vectorizer(*xs: Array, inputdimensions: Sequence[int] = ()) -> Array:
    if not inputdimensions:
        raise ValueError("FeatureVectorizer: inputdimensions is required, one width per input")
    if len(inputdimensions) != len(xs):
        raise ValueError(f"FeatureVectorizer: inputdimensions has {len(inputdimensions)} values for {len(xs)} inputs")
    if min(inputdimensions) < 0:
        raise ValueError(f"FeatureVectorizer: inputdimensions {list(inputdimensions)} has a negative width")
    batches = []
    for i, x in enumerate(xs):
        if x.ndim == 0:
            raise ValueError(f"FeatureVectorizer: input {i} must have at least 1 dimension, got a scalar")
        if x.dtype.kind not in "iuf":
            raise ValueError(f"FeatureVectorizer: input {i} must be numeric, got {x.dtype}")
        batches.append(1 if x.ndim == 1 else x.shape[0])
    if len(set(batches)) > 1:
        raise ValueError(f"FeatureVectorizer: all inputs must have the same batch size, got {batches}")
    n = batches[0]
    out = np.zeros((n, sum(inputdimensions)), dtype=np.float32)
    start = 0
    for x, dim in zip(xs, inputdimensions):
        rows = x.reshape(n, x.size // n if n else 0) if x.ndim > 1 else x.reshape(1, -1)
        width = min(rows.shape[1], dim)  # a wider input is cut, a narrower one leaves zeros
        out[:, start:start + width] = rows[:, :width]
        start += dim
    return out
