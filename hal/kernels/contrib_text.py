"""onnxruntime's two text contrib ops (domain ``com.microsoft``), the ones skl2onnx writes for text
features: Tokenizer (every CountVectorizer / TfidfVectorizer model, ahead of its TfIdfVectorizer)
and MurmurHash3 (every FeatureHasher model). onnx defines neither; their contract is onnxruntime's
(``docs/ContribOperators.md``) and what its CPU kernels (``contrib_ops/cpu/tokenizer.cc``,
``murmur_hash3.cc``) do where the text leaves it open, which these kernels follow:

* Tokenizer takes a [C] or [N, C] string tensor and gives the input's shape plus one axis of
  tokens, as long as the most tokens any string has (+2 with ``mark``: a "\\x02" before a string's
  tokens and a "\\x03" after them), padded after that with ``pad_value``. No token anywhere: that
  axis is 0 long and there are no marks; an empty input ([0], [N, 0], [0, C]) gives [0], [N, 0],
  [0, 0]. A token is kept when it has ``mincharnum`` characters (code points) or more;
  ``mincharnum`` must be positive.
* ``separators`` (RE2 patterns, leftmost-longest) split each string with the first pattern, then
  every piece with the second, and so on (``^``/``$`` anchor on the piece being split). An empty
  match drops the character it stands on (and, at the end of the piece, ends it), so a separator
  that can match "" leaves nothing; ``[""]`` alone (or ``tokenexp`` ".") is character
  tokenization instead: every character a token, ``mincharnum`` at most 1 ("." that way also
  takes newlines, which RE2's "." does not).
* ``tokenexp`` (RE2, leftmost-longest; ignored when ``separators`` is set): its matches are the
  tokens, each search starting where the last kept token ended; a match shorter than
  ``mincharnum`` is skipped by moving on one character from where it started, so a later match
  may start inside it.
* MurmurHash3 is MurmurHash3_x86_32 (``seed`` taken modulo 2**32) of each element: a string's
  UTF-8 bytes, a number's raw bytes as stored (int32 / uint32 / float 4 of them, int64 / uint64 /
  double 8, little-endian), giving uint32 when ``positive`` is 1 (the default), int32 otherwise.

String tensors are numpy object arrays of ``str``, as in ``hal.kernels.text``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from hal import limits
from hal.kernels.registry import kernel
from hal.kernels.text import _strings

Array = np.ndarray
DOMAIN = "com.microsoft"
START, END = "\x02", "\x03"


# ---- Tokenizer ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _re2_longest(pattern: str, what: str) -> Any:
    """``pattern`` compiled by RE2 with leftmost-longest matching, as onnxruntime compiles Tokenizer's
    patterns (``set_longest_match(true)``)."""
    import re2

    options = re2.Options()
    options.longest_match = True
    options.log_errors = False
    try:
        return re2.compile(pattern, options=options)
    except re2.error as e:
        reason = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise ValueError(f"Tokenizer: {what} {pattern!r} is not RE2 syntax: {reason}") from None


def _utf8(s: str, op: str = "Tokenizer") -> bytes:
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{op}: input string {s!r} is not valid UTF-8 ({e.reason})") from None


def _decoded(piece: bytes) -> str:
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:  # a pattern that splits a character (\C)
        raise ValueError(f"Tokenizer: a match cuts a UTF-8 character: {piece!r}") from None


def _char_len(text: bytes, at: int) -> int:
    """Bytes of the UTF-8 character starting at ``text[at]``."""
    b = text[at]
    return 1 if b < 0x80 else 2 if b < 0xE0 else 3 if b < 0xF0 else 4


def _split(text: bytes, sep: Any, mincharnum: int) -> list[bytes]:
    """``text`` split at every match of ``sep``, pieces shorter than ``mincharnum`` characters dropped."""
    out: list[bytes] = []
    start, end = 0, len(text)
    while True:
        m = sep.search(text, start)
        if m is None:
            tail = text[start:]
            if tail and len(_decoded(tail)) >= mincharnum:
                out.append(tail)
            return out
        lo, hi = m.span()
        piece = text[start:lo]
        if piece and len(_decoded(piece)) >= mincharnum:
            out.append(piece)
        if hi > lo:
            start = hi
        elif lo < end:  # an empty match: onnxruntime steps over the character it stands on, dropping it
            start = lo + _char_len(text, lo)
        else:  # an empty match at the end: onnxruntime's next start is past the end, and nothing follows
            return out


def _by_separators(s: str, seps: list[Any], mincharnum: int) -> list[str]:
    pieces = [_utf8(s)]
    for sep in seps:
        pieces = [p for text in pieces for p in _split(text, sep, mincharnum)]
    return [_decoded(p) for p in pieces]


def _by_expression(s: str, regex: Any, mincharnum: int) -> list[str]:
    text = _utf8(s)
    out: list[str] = []
    start, end = 0, len(text)
    while True:
        m = regex.search(text, start)
        if m is None:
            return out
        lo, hi = m.span()
        token = _decoded(text[lo:hi])
        if len(token) >= mincharnum:  # mincharnum >= 1: a kept token is never empty
            out.append(token)
            start = hi
        elif lo < end:  # too short (or empty): try again one character on from where it began
            start = lo + _char_len(text, lo)
        else:
            return out


def _by_characters(s: str) -> list[str]:
    _utf8(s)  # onnxruntime refuses invalid UTF-8 here too
    return list(s)


@kernel("Tokenizer", since=1, domain=DOMAIN)
def tokenizer(x: Array, mark: int | None = None, pad_value: str | None = None, mincharnum: int | None = None,
              separators: Sequence[str] | None = None, tokenexp: str | None = None) -> Array:
    """Split each string of a [C] or [N, C] tensor into tokens along a new last axis (module docstring)."""
    for name, value in (("mark", mark), ("pad_value", pad_value), ("mincharnum", mincharnum)):
        if value is None:
            raise ValueError(f"Tokenizer: attribute {name} is required and not set")
    if mincharnum <= 0:
        raise ValueError(f"Tokenizer: attribute mincharnum must be positive, got {mincharnum}")
    if separators is not None:
        separators = list(separators)
        if not separators:
            raise ValueError("Tokenizer: separators must not be empty")
        by_char = separators == [""]
    elif tokenexp is None:
        raise ValueError("Tokenizer: one of the attributes separators and tokenexp is required, and neither is set")
    elif not tokenexp:
        raise ValueError("Tokenizer: tokenexp must not be empty")
    else:
        by_char = tokenexp == "."
    if by_char and mincharnum >= 2:
        raise ValueError(f"Tokenizer: mincharnum {mincharnum} is too big for character tokenization (at most 1)")

    x = np.asarray(x)
    if x.ndim not in (1, 2):
        raise ValueError(f"Tokenizer takes a [C] or [N, C] tensor, got shape {x.shape}")
    if x.size == 0:
        return np.empty((x.shape[0], 0) if x.ndim == 2 else (0,), dtype=object)
    x = _strings(x)
    if by_char:
        split = _by_characters
    elif separators is not None:
        seps = [_re2_longest(p, "separator") for p in separators]
        split = functools.partial(_by_separators, seps=seps, mincharnum=mincharnum)
    else:
        split = functools.partial(_by_expression, regex=_re2_longest(tokenexp, "tokenexp"), mincharnum=mincharnum)
    rows = [split(s) for s in x.flat]
    width = max(len(r) for r in rows)
    if width == 0:  # nothing left anywhere: no marks either
        return np.empty((*x.shape, 0), dtype=object)
    marks = 2 if mark else 0
    limits.check_alloc("Tokenizer output", (len(rows), width + marks), object, where="Tokenizer")
    y = np.full((len(rows), width + marks), pad_value, dtype=object)
    for i, row in enumerate(rows):
        if marks:
            y[i, 0], y[i, len(row) + 1] = START, END
        y[i, marks // 2:marks // 2 + len(row)] = row
    return y.reshape(*x.shape, width + marks)


# ---- MurmurHash3 ----------------------------------------------------------------------------------

_U32 = np.uint32
_C1, _C2 = _U32(0xCC9E2D51), _U32(0x1B873593)


def _rotl(x: Array, r: int) -> Array:
    return (x << _U32(r)) | (x >> _U32(32 - r))


def _mix_k(k: Array) -> Array:
    return _rotl(k * _C1, 15) * _C2


def _mix_h(h: Array, k: Array) -> Array:
    return _rotl(h ^ _mix_k(k), 13) * _U32(5) + _U32(0xE6546B64)


def _finish(h: Array, lengths: Array) -> Array:
    h = h ^ lengths.astype(_U32)
    h ^= h >> _U32(16)
    h *= _U32(0x85EBCA6B)
    h ^= h >> _U32(13)
    h *= _U32(0xC2B2AE35)
    h ^= h >> _U32(16)
    return h


def _hash_words(words: Array, seed: int) -> Array:
    """MurmurHash3_x86_32 of rows of little-endian 32-bit words (every key the same length: no tail)."""
    h = np.full(words.shape[0], seed, dtype=_U32)
    for j in range(words.shape[1]):
        h = _mix_h(h, words[:, j])
    return _finish(h, np.full(words.shape[0], 4 * words.shape[1]))


def _hash_bytes(keys: list[bytes], seed: int) -> Array:
    """MurmurHash3_x86_32 of byte strings of any lengths: each key's whole 4-byte blocks fed in step
    with the other keys' (the keys with the most blocks first, so the ones still going are a prefix),
    then the tails."""
    n = len(keys)
    lengths = np.fromiter((len(k) for k in keys), dtype=np.int64, count=n)
    order = np.argsort(-(lengths // 4), kind="stable")
    blocks = lengths[order] // 4
    whole = b"".join(keys[i][:4 * b] for i, b in zip(order.tolist(), blocks.tolist(), strict=True))
    flat = np.frombuffer(whole, dtype="<u4").astype(_U32)
    starts = np.concatenate([[0], np.cumsum(blocks)[:-1]]).astype(np.int64)
    still = np.searchsorted(-blocks, -np.arange(1, int(blocks.max(initial=0)) + 1), side="right")
    h = np.full(n, seed, dtype=_U32)
    for j, count in enumerate(still.tolist()):  # keys [0, count) have a block j
        h[:count] = _mix_h(h[:count], flat[starts[:count] + j])
    tails = np.zeros(n, dtype=_U32)
    for i, key in enumerate(keys[k] for k in order.tolist()):
        rest = len(key) % 4
        if rest:
            tails[i] = int.from_bytes(key[len(key) - rest:], "little")
    has_tail = (lengths[order] % 4) > 0
    h[has_tail] ^= _mix_k(tails[has_tail])
    out = np.empty(n, dtype=_U32)
    out[order] = _finish(h, lengths[order])
    return out


_NUMBERS = {np.dtype(t) for t in (np.int32, np.uint32, np.float32, np.int64, np.uint64, np.float64)}


@kernel("MurmurHash3", since=1, domain=DOMAIN)
def murmur_hash3(x: Array, positive: int = 1, seed: int = 0) -> Array:
    """MurmurHash3_x86_32 of each element's bytes (module docstring): uint32 when ``positive`` is 1,
    else the same bits as int32."""
    seed = int(seed) & 0xFFFFFFFF
    x = np.asarray(x)
    if x.dtype.kind in "OSU":
        h = _hash_bytes([_utf8(s, "MurmurHash3") for s in _strings(x).flat], seed)
    elif x.dtype in _NUMBERS:
        raw = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("<"))
        h = _hash_words(raw.reshape(-1).view("<u4").reshape(x.size, x.dtype.itemsize // 4).astype(_U32), seed)
    else:
        raise ValueError(f"MurmurHash3 takes string, int32, uint32, int64, uint64, float or double, got {x.dtype}")
    h = h.reshape(x.shape)
    return h if positive == 1 else h.view(np.int32)
