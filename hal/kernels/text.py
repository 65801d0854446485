"""String kernels: StringNormalizer, StringSplit, StringConcat, RegexFullMatch, TfIdfVectorizer.

String tensors are numpy object arrays of Python ``str`` (bytes are decoded as UTF-8). Per-string
work goes through ``numpy.frompyfunc`` so it broadcasts like any ufunc; TfIdfVectorizer maps tokens
to pool ids once and matches every n-gram of every row in one ``numpy.unique`` over id rows.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from hal import limits
from hal.errors import ResourceError
from hal.kernels.registry import kernel

Array = np.ndarray


def _text(s: object) -> str:
    return s.decode("utf-8") if isinstance(s, bytes) else str(s)


def _strings(x: Array) -> Array:
    """``x`` as an object array of ``str``."""
    x = np.asarray(x)
    if x.dtype == object and all(isinstance(s, str) for s in x.flat):
        return x
    return np.frompyfunc(_text, 1, 1)(x).astype(object).reshape(x.shape)


def _object(result: object, shape: tuple[int, ...]) -> Array:
    out = np.empty(shape, dtype=object)
    out[...] = result
    return out


class _CaseMap(dict):
    """``str.translate``'s table for StringNormalizer: each character to one character, as onnxruntime's
    ``std::ctype<wchar_t>`` maps them under the node's locale, where Python's ``str.upper``/``lower``
    use Unicode's full, context-dependent mappings ('ß' to 'SS', a final 'Σ' to 'ς'). Under the "C" (or
    "POSIX") locale only ASCII letters change. Filled as characters are met."""

    def __init__(self, upper: bool, ascii_only: bool):
        super().__init__()
        self.upper, self.ascii_only = upper, ascii_only

    def __missing__(self, code: int) -> str:
        c = chr(code)
        if self.ascii_only and code > 127:
            mapped = c
        elif self.upper:
            mapped = c.upper()
            if len(mapped) != 1:  # no one-character upper case ('ß', 'ŉ', ligatures), but Greek
                title = c.title()  # letters with a subscript iota have one: their title case
                mapped = title if len(title) == 1 else c
        else:
            mapped = c.lower()[0]  # only 'İ' lowers to two: 'i' and a combining dot
        self[code] = mapped
        return mapped


@functools.cache
def _case_map(upper: bool, locale: str) -> _CaseMap:
    return _CaseMap(upper, locale in ("C", "POSIX"))


def _change_case(words: Array, upper: bool, locale: str) -> Array:
    table = _case_map(upper, locale)
    return np.frompyfunc(lambda w: w.translate(table), 1, 1)(words)


@kernel("StringNormalizer", since=10)
def string_normalizer(x: Array, case_change_action: str = "NONE", is_case_sensitive: int = 0,
                      locale: str = "", stopwords: Sequence[str] | None = None) -> Array:
    """Drop stopword elements, then change case; only [C] and [1, C] inputs are allowed."""
    x = _strings(x)
    if x.ndim not in (1, 2) or (x.ndim == 2 and x.shape[0] != 1):
        raise ValueError(f"StringNormalizer takes a [C] or [1, C] tensor, got shape {x.shape}")
    words = x.reshape(-1)
    if stopwords:
        if is_case_sensitive:
            stops = set(stopwords)
            keep = [w not in stops for w in words]
        else:
            lower = _case_map(False, locale)
            stops = {s.translate(lower) for s in stopwords}
            keep = [w.translate(lower) not in stops for w in words]
        words = words[np.asarray(keep, dtype=bool)]
    if case_change_action in ("LOWER", "UPPER"):
        words = _change_case(words, case_change_action == "UPPER", locale)
    elif case_change_action != "NONE":
        raise ValueError(f"StringNormalizer: unknown case_change_action {case_change_action!r}")
    if words.size == 0:  # everything dropped: a single empty string
        words = np.array([""], dtype=object)
    words = np.asarray(words, dtype=object)
    return words.reshape(1, -1) if x.ndim == 2 else words


@kernel("StringSplit", since=20)
def string_split(x: Array, delimiter: str = "", maxsplit: int | None = None) -> tuple[Array, Array]:
    """Split every string; pad the ragged parts with "" into a trailing axis as long as the longest."""
    x = _strings(x)
    sep = delimiter or None  # empty or absent: split on runs of whitespace, ignoring the ends
    limit = -1 if maxsplit is None else int(maxsplit)
    # the tokens are Python strings (64 bytes each at least): counted against max_memory as they are
    # made, since a broadcast view of one long string splits it once per element
    budget, made, parts = limits.current().max_memory // 64, 0, []
    for s in x.flat:
        part = s.split(sep, limit)
        made += len(part)
        if made > budget:
            bound = limits.current().max_memory
            raise ResourceError(f"StringSplit made {made:,} tokens so far, at least {limits.format_bytes(64 * made)} "
                                f"as Python strings, more than max_memory {limits.format_bytes(bound)} ({bound:,} "
                                f"bytes); stopped before splitting the rest", where="StringSplit",
                                hint=f"pass max_memory=<bytes> (or set {limits.ENV_MAX_MEMORY}) if this is intended")
        parts.append(part)
    counts = np.array([len(p) for p in parts], dtype=np.int64).reshape(x.shape)
    width = int(counts.max(initial=0))
    limits.check_alloc("StringSplit output", (len(parts), width), object, where="StringSplit")
    y = np.full((len(parts), width), "", dtype=object)
    lengths = counts.reshape(-1)
    rows = np.repeat(np.arange(len(parts)), lengths)
    cols = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    y[rows, cols] = [p for ps in parts for p in ps]
    return y.reshape(*x.shape, width), counts


@kernel("StringConcat", since=20)
def string_concat(x: Array, y: Array) -> Array:
    x, y = _strings(x), _strings(y)
    return _object(np.frompyfunc(operator.add, 2, 1)(x, y), np.broadcast_shapes(x.shape, y.shape))


@functools.lru_cache(maxsize=64)
def _re2(pattern: str) -> Any:
    """``pattern`` compiled by RE2, the syntax ONNX names and onnxruntime's engine: it matches in time
    linear in the string, where Python's backtracking ``re`` had not returned after 30 s on ``(a+)+$``
    against 40 a's and a b (in C, holding the GIL: no timeout can stop it)."""
    import re2

    options = re2.Options()
    options.log_errors = False  # the error is raised, with its reason, instead of printed to stderr
    try:
        return re2.compile(pattern, options=options)
    except re2.error as e:
        reason = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise ValueError(f"RegexFullMatch: pattern {pattern!r} is not RE2 syntax: {reason}") from None


@kernel("RegexFullMatch", since=20)
def regex_full_match(x: Array, pattern: str = "") -> Array:
    """Whole-string match, in RE2 syntax as ONNX specifies (``_re2``)."""
    regex = _re2(pattern)
    x = _strings(x)
    hit = np.frompyfunc(lambda s: regex.fullmatch(s) is not None, 1, 1)(x)
    return np.asarray(hit, dtype=bool).reshape(x.shape)


# --- TfIdfVectorizer -------------------------------------------------------------------------------


def _pool_ngrams(pool: Array, ngram_counts: Sequence[int], min_n: int, max_n: int) -> dict[int, tuple[Array, Array]]:
    """For each n in [min_n, max_n]: (pool n-grams as rows of pool items, their ordinals: the index of each
    into ngram_indexes and weights, the n-grams numbered across the whole pool in order)."""
    bounds = [*ngram_counts, len(pool)]
    out: dict[int, tuple[Array, Array]] = {}
    ordinal = 0
    for i in range(len(ngram_counts)):
        n = i + 1
        items = pool[bounds[i]:bounds[i + 1]]
        count = len(items) // n
        if min_n <= n <= max_n and count:
            out[n] = (items[:count * n].reshape(count, n), np.arange(ordinal, ordinal + count))
        ordinal += count
    return out


@kernel("TfIdfVectorizer", since=9)
def tfidf_vectorizer(x: Array, max_gram_length: int = 1, max_skip_count: int = 0, min_gram_length: int = 1,
                     mode: str = "TF", ngram_counts: Sequence[int] = (), ngram_indexes: Sequence[int] = (),
                     pool_int64s: Sequence[int] | None = None, pool_strings: Sequence[str] | None = None,
                     weights: Sequence[float] | None = None) -> Array:
    """Count pool n-grams (items ``skip + 1`` apart, skip <= max_skip_count) in each row of ``x``."""
    strings = pool_strings is not None
    pool = np.asarray(list(pool_strings), dtype=object) if strings else np.asarray(pool_int64s, dtype=np.int64)
    size = int(max(ngram_indexes)) + 1 if len(ngram_indexes) else 0
    if x.ndim > 2 or (x.ndim == 2 and x.shape[0] < 1):
        raise ValueError(f"TfIdfVectorizer takes a [C] or [B, C] tensor, got shape {x.shape}")
    if len(ngram_indexes) and min(ngram_indexes) < 0:
        raise ValueError(f"TfIdfVectorizer: ngram_indexes must be output columns (>= 0), got {min(ngram_indexes)}")
    rows = x.reshape(1, -1) if x.ndim < 2 else x
    n_rows, width = rows.shape
    # the output has a column per index up to the largest: a huge index is a huge output
    limits.check_alloc("TfIdfVectorizer output", (n_rows, size), np.int64, where="TfIdfVectorizer")
    # an n-gram's items are skip + 1 apart: a skip that spans the row matches nothing, so the skips
    # tried stop there however large max_skip_count is
    max_skip_count = min(max_skip_count, max(width - 1, 0))
    rows = _strings(rows) if strings else rows.astype(np.int64)
    # every token as an id into the pool's vocabulary (-1: not in the pool)
    vocab = np.unique(pool)
    pos = np.clip(np.searchsorted(vocab, rows.reshape(-1)), 0, max(len(vocab) - 1, 0))
    ids = np.where(vocab[pos] == rows.reshape(-1), pos, -1).reshape(n_rows, width) if len(vocab) else \
        np.full((n_rows, width), -1)
    # every pool n-gram found, in the order onnxruntime's scan meets them: skip by skip, start by start,
    # shortest first (unigrams in the first pass only); the order decides IDF where n-grams share a column
    found_rows, found_ordinals, found_order = [], [], []
    for n, (grams, ordinals) in _pool_ngrams(pool, ngram_counts, min_gram_length, max_gram_length).items():
        gram_ids = np.searchsorted(vocab, grams.reshape(-1)).reshape(grams.shape)
        for skip in range(max_skip_count + 1 if n > 1 else 1):  # unigrams count once, whatever the skip
            span = (n - 1) * (skip + 1)
            if span >= width:
                continue
            starts = np.arange(width - span)
            cand = ids[:, starts[:, None] + (skip + 1) * np.arange(n)[None, :]]  # (rows, starts, n)
            row_of = np.broadcast_to(np.arange(n_rows)[:, None], cand.shape[:2]).reshape(-1)
            start_of = np.broadcast_to(starts, cand.shape[:2]).reshape(-1)
            cand = cand.reshape(-1, n)
            ok = (cand >= 0).all(axis=1)
            if not ok.any():
                continue
            _, inverse = np.unique(np.concatenate([gram_ids, cand[ok]]), axis=0, return_inverse=True)
            inverse = inverse.reshape(-1)
            ordinal_of = np.full(inverse.max() + 1, -1, dtype=np.int64)
            ordinal_of[inverse[:len(grams)]] = ordinals
            hit = ordinal_of[inverse[len(grams):]]
            found = hit >= 0
            found_rows.append(row_of[ok][found])
            found_ordinals.append(hit[found])
            found_order.append((skip * width + start_of[ok][found]) * (max_gram_length + 1) + n)
    rows_hit = np.concatenate(found_rows) if found_rows else np.zeros(0, np.int64)
    ordinals = np.concatenate(found_ordinals) if found_rows else np.zeros(0, np.int64)
    order = np.concatenate(found_order) if found_rows else np.zeros(0, np.int64)
    columns = np.asarray(ngram_indexes, dtype=np.int64)[ordinals]
    # weights[i] is the i-th pool n-gram's (the spec, onnxruntime), 1 where none is given; onnx's reference
    # reads weights[column], which only agrees when ngram_indexes is 0, 1, 2, ...
    weight = np.ones(len(ngram_indexes))
    if weights:
        weight[:len(weights)] = np.asarray(weights, dtype=np.float64)[:len(ngram_indexes)]
    y = np.zeros((n_rows, size), dtype=np.float64)
    if mode == "TF":
        np.add.at(y, (rows_hit, columns), 1.0)
    elif mode == "TFIDF":  # each find adds its n-gram's weight: n-grams sharing a column sum count x weight
        np.add.at(y, (rows_hit, columns), weight[ordinals])
    elif mode == "IDF":  # each find sets its n-gram's weight: where n-grams share a column the last found wins
        last = np.argsort(order, kind="stable")[::-1]
        cells, first = np.unique((rows_hit * size + columns)[last], return_index=True)
        y.reshape(-1)[cells] = weight[ordinals[last[first]]]
    else:
        raise ValueError(f"TfIdfVectorizer: unknown mode {mode!r}")
    y = np.asarray(y, dtype=np.float32)
    return y if x.ndim == 2 else y.reshape(size)
