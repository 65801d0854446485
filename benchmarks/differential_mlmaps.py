"""The differential sweep's families of the ai.onnx.ml ops over categories and maps: CategoryMapper
(strings to int64s and back), CastMap and DictVectorizer (a fed map to a tensor) and ZipMap (scores to
a sequence of maps, alone or after a LinearClassifier as a converted classifier writes it).

A map input is fed as a dict (``Case.feed_map``); ZipMap's sequence of maps is judged map by map (the
same keys, the values within float32's tolerance). onnx's reference has none of these ops but
DictVectorizer, so onnxruntime is the peer that counts. Left out, as neither peer can judge them:

- maps of other than float values: onnxruntime's Python binding makes every fed dict a map of floats
  (map(string, float) or map(int64, float)) and refuses the model's other map types, so DictVectorizer
  over string->int64/double and int64->string/double maps, and CastMap over int64->string maps, cannot
  be run by it; onnx's reference gives DictVectorizer's (n,) where both give (1, n), and fills a
  missing string with "0" where hal (and onnxruntime's kernel) leave "". hal's own tests
  (tests/kernels/test_ml_maps.py) check those types;
- empty maps: onnxruntime's binding cannot feed an empty dict;
- CastMap SPARSE TO_STRING with columns no key fills: onnxruntime writes them as the text "0.f", hal
  as "0.000000" (a zero cast as every value is; test_ml_maps.py); drawn with every column filled;
- a numpy str array fed to CategoryMapper with a NUL inside a word: onnxruntime's binding cuts the
  strings at it (an object array's it keeps whole, and those are drawn);
- ZipMap of an X neither 1-D nor 2-D, or of another width than its labels, and CastMap SPARSE with a
  negative key: both refuse them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import TensorProto, helper

from benchmarks.differential_draw import Case, dims, ri
from benchmarks.differential_ml import ML, TRANSFORMS, _decimal_tie, _grid, _ml, _x

INT64, FLOAT, STRING = TensorProto.INT64, TensorProto.FLOAT, TensorProto.STRING
#: words for categories, vocabularies and labels: empty, case and spaces, a precomposed and a combining
#: é (two words), other scripts, a NUL inside, CategoryMapper's default, a number's text
WORDS = ("a", "b", "A", "ab", "", " a", "a ", "é", "e\u0301", "ß", "日本", "🙂", "b\x00c", "_Unused", "-1", "0")
#: int64 keys: small, negative, past int32 and near int64's ends
KEYS = (*range(-4, 10), 2**31, -2**40, 2**62, -2**63, 2**63 - 1)


def _pick(r: np.random.Generator, pool: tuple[Any, ...], n: int, repeats: bool = False) -> list[Any]:
    """``n`` of ``pool`` (as Python values), different ones unless ``repeats``."""
    idx = r.choice(len(pool), n, replace=repeats or n > len(pool))
    return [pool[i] for i in idx]


def _floats(r: np.random.Generator, n: int, plain: bool = False) -> list[float]:
    """``n`` float32 values as Python floats: on a coarse grid, fractions, and (unless ``plain``) ±0, NaN
    of either sign, infinities, the tiny (decimal ties at the sixth place) and the huge (int64's ends)."""
    special = [0.0, -0.0, math.nan, -math.nan, math.inf, -math.inf, 1e-7, 5e-7, -2.5e-6, -2.5, 2.5, 1e30, -3.4e38,
               9.3e18, 2.0**62, 2.0**63, -2.0**63]
    out = []
    for _ in range(n):
        u = r.random() if not plain else r.uniform(0.25, 1)
        v = r.choice(special) if u < 0.25 else (round(r.uniform(-5, 5) * 2) / 2 if u < 0.6 else r.uniform(-100, 100))
        out.append(float(np.float32(v)))
    return out


def _map(c: Case, key: int, keys: list[Any], plain: bool = False) -> str:
    """A fed map of ``keys`` (int64 or string) to float values (``_floats``): Python values, or numpy
    scalars (np.int64 / np.str_ keys, np.float32 / np.float64 values) as a user's arrays give them."""
    r = c.rng
    values: list[Any] = _floats(r, len(keys), plain)
    if r.random() < 0.3:
        keys = [np.str_(k) if key == STRING else np.int64(k) for k in keys]
        values = [(np.float32 if r.random() < 0.5 else np.float64)(v) for v in values]
    return c.feed_map(key, FLOAT, dict(zip(keys, values)))


def _ml_opset(c: Case) -> None:
    """The model's ai.onnx.ml opset, 1 to 5 (these ops are unchanged since 1; converters write 1 or 3)."""
    c.domains[ML] = ri(c.rng, 1, 6)


def _category(c: Case) -> list[str]:
    """CategoryMapper both ways: 1 to 6 pairs of words (``WORDS``) and int64s (``KEYS``), a repeated key
    sometimes (its last pair wins), defaults left or set (empty, unicode, a category's own value), input
    of rank 0 to 3 (empty dims too) hitting a category or missing."""
    r = c.rng
    n = ri(r, 1, 7)
    repeats = r.random() < 0.3
    strings, ints = _pick(r, WORDS, n, repeats), _pick(r, KEYS, n, repeats)
    _ml_opset(c)
    attrs: dict[str, Any] = {"cats_strings": strings, "cats_int64s": ints}
    shape = dims(r, ri(r, 0, 4), 0 if r.random() < 0.1 else 1, 5)
    if r.random() < 0.5:  # strings to int64s
        if r.random() < 0.5:
            attrs["default_int64"] = int(r.choice([0, 7, -2**40, ints[0]]))
        pool = np.array(strings + _pick(r, WORDS, 3), dtype=object)
        c.dtype = np.dtype(object)
        x = c.feed(shape, value=np.array(r.choice(pool, shape), dtype=object).reshape(shape))
        # fed as numpy's str array sometimes, as users often hold text; not with a NUL inside a word:
        # onnxruntime's binding cuts such an array's strings at it (an object array's it keeps whole)
        if r.random() < 0.3 and not any("\x00" in w for w in c.feeds[x].ravel()):
            c.feeds[x] = c.feeds[x].astype(str)
        return _ml(c, "CategoryMapper", [x], [INT64], **attrs)
    if r.random() < 0.5:
        attrs["default_string"] = str(r.choice(["", "?", "é", strings[0]]))
    pool = np.array(ints + _pick(r, KEYS, 3), dtype=np.int64)
    c.dtype = np.dtype(np.int64)
    x = c.feed(shape, value=r.choice(pool, shape).astype(np.int64))
    return _ml(c, "CategoryMapper", [x], [STRING], **attrs)


#: CastMap's cast_to -> its output's element type
CASTS = {"TO_FLOAT": FLOAT, "TO_INT64": INT64, "TO_STRING": STRING}


def _castmap(c: Case) -> list[str]:
    """CastMap of an int64->float map (``_map``) to TO_FLOAT, TO_INT64 (fractions truncated; NaN,
    infinities and values past int64 its minimum) or TO_STRING (six decimals, "-nan"); DENSE in key
    order (negative keys, past int32; a max_map it ignores) or SPARSE into max_map columns (1 to 8, or
    40; keys at or past it dropped, columns no key fills 0); the defaults (TO_FLOAT, DENSE, max_map 1)
    left out of the node sometimes."""
    r = c.rng
    cast_to = str(r.choice(list(CASTS)))
    c.dtype = np.dtype(np.float32)
    _ml_opset(c)
    attrs: dict[str, Any] = {"cast_to": cast_to} if cast_to != "TO_FLOAT" or r.random() < 0.5 else {}
    if r.random() < 0.5:
        keys = _pick(r, KEYS, ri(r, 1, 8) if r.random() < 0.8 else len(KEYS))
        if r.random() < 0.5:
            attrs["map_form"] = "DENSE"
        if r.random() < 0.3:
            attrs["max_map"] = ri(r, 1, 5)
    else:
        width = ri(r, 1, 9) if r.random() < 0.8 else int(r.choice([1, 40]))
        attrs["map_form"] = "SPARSE"
        if width > 1 or r.random() < 0.5:
            attrs["max_map"] = width
        keys = [k for k in range(width + 3) if r.random() < 0.6] or [0]
        if cast_to == "TO_STRING":  # onnxruntime writes a column no key fills as the text "0.f" (a C++
            keys = sorted(set(keys) | set(range(width)))  # float literal taken for a string); every one filled
    return _ml(c, "CastMap", [_map(c, INT64, keys)], [CASTS[cast_to]], **attrs)


def _vectorized(c: Case, words: int | None, plain: bool = False) -> tuple[str, np.ndarray]:
    """A fed map (``_map``) through DictVectorizer of ``words`` words (None: all of the pool): its output
    and the (1, vocabulary) row it makes."""
    r = c.rng
    strings = r.random() < 0.5
    pool = WORDS if strings else KEYS
    vocab = _pick(r, pool, len(pool) if words is None else words, repeats=r.random() < 0.2)
    keys = sorted({k for k in vocab if r.random() < 0.7} | set(_pick(r, pool, ri(r, 0, 3))), key=repr) or vocab[:1]
    fed = _map(c, STRING if strings else INT64, keys, plain)
    c.dtype = np.dtype(np.float32)
    (x,) = _ml(c, "DictVectorizer", [fed], [FLOAT], **{"string_vocabulary" if strings else "int64_vocabulary": vocab})
    return x, np.array([[c.feeds[fed].get(w, 0) for w in vocab]], np.float32)


def _dictvec(c: Case) -> list[str]:
    """DictVectorizer of a string->float map by a string_vocabulary, or of an int64->float map by an
    int64_vocabulary: 1 to 7 words or all of the pool (a repeated one sometimes: each of its places
    filled), map keys in the vocabulary or not (dropped), words the map lacks (0), values of ``_map``."""
    r = c.rng
    _ml_opset(c)
    return [_vectorized(c, ri(r, 1, 8) if r.random() < 0.85 else None)[0]]


def _labels(r: np.random.Generator, n: int, repeats: bool) -> tuple[str, list[Any], int]:
    """ZipMap's label attribute, ``n`` labels (strings or int64s, a repeat sometimes if ``repeats``) and
    their key type."""
    repeats = repeats and r.random() < 0.1
    if r.random() < 0.5:
        return "classlabels_strings", _pick(r, WORDS, n, repeats), STRING
    return "classlabels_int64s", _pick(r, KEYS, n, repeats), INT64


def _zipmap(c: Case) -> list[str]:
    """ZipMap with classlabels_strings or classlabels_int64s (``_labels``): alone over float32 scores of
    0 to 6 rows, or one 1-D row, of 1 to 6 labels (``_floats``); or after a LinearClassifier of the same
    labels (2 to 5 weight rows, or one row for two labels) over a table or a DictVectorizer's map, every
    post transform, its label output beside the maps, as skl2onnx writes a classifier."""
    r = c.rng
    _ml_opset(c)
    if r.random() < 0.5:
        n = ri(r, 1, 7)
        attr, labels, key = _labels(r, n, repeats=True)
        c.dtype = np.dtype(np.float32)
        shape = [n] if r.random() < 0.2 else [ri(r, 0, 7), n]
        scores = c.feed(shape, value=np.array(_floats(r, int(np.prod(shape))), np.float32).reshape(shape))
        outs: list[str] = []
    else:
        width = ri(r, 1, 6)
        if r.random() < 0.3:  # a map in, one row, as skl2onnx writes a DictVectorizer's pipeline
            x, values = _vectorized(c, width, plain=True)
        else:
            x = _x(c, ri(r, 1, 7), width, _grid(r))
            values = c.feeds[x]
        n = ri(r, 1, 6)
        attr, labels, key = _labels(r, max(n, 2), repeats=False)  # (a classifier's labels differ)
        coefficients = r.standard_normal((n, width)).round(1)
        intercepts = r.uniform(-1, 1, n).round(1)
        post = str(r.choice(TRANSFORMS))
        if n == 1 and post == "PROBIT":  # (onnxruntime writes one row's PROBIT scores down the first column:
            post = "NONE"  # see differential_ml's ml_linear)
        if _decimal_tie(values, coefficients, intercepts, post == "PROBIT"):  # (the label is anyone's: as
            intercepts = intercepts + np.linspace(0.03, 0.07, n)  # ml_linear, moved off the tie)
        label_attr = "classlabels_strings" if key == STRING else "classlabels_ints"
        outs = _ml(c, "LinearClassifier", [x], [key, FLOAT], coefficients=coefficients.ravel().tolist(),
                   intercepts=intercepts.tolist(), multi_class=ri(r, 0, 2), post_transform=post,
                   **{label_attr: labels})
        scores = outs.pop()
    (maps,) = _ml(c, "ZipMap", [scores], [FLOAT], **{attr: labels})
    c.declared[maps] = helper.make_sequence_type_proto(helper.make_map_type_proto(
        key, helper.make_tensor_type_proto(FLOAT, [])))
    return [*outs, maps]


FAMILIES: dict[str, Callable[[Case], list[str]]] = {"ml_category": _category, "ml_castmap": _castmap,
                                                    "ml_dictvec": _dictvec, "ml_zipmap": _zipmap}
