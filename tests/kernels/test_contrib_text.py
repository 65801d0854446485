"""onnxruntime's text contrib ops (``hal.kernels.contrib_text``, domain com.microsoft): Tokenizer and
MurmurHash3 against onnxruntime itself, node by node over many attribute settings and inputs, then
chained on every target, then (where scikit-learn and skl2onnx are installed) in the models skl2onnx
writes for CountVectorizer, TfidfVectorizer and FeatureHasher. onnx defines neither op; onnxruntime's
CPU kernels are their reference."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import hal

MS = "com.microsoft"
S = TensorProto.STRING
TARGETS = [t.name for t in hal.targets()]

TEXTS = ["Hello World", "I love  computer science !", "", "  ", "a.b|c*d", "naïve café  日本語 テキスト 😀x",
         "x\ny\tz", "ab abc abcd", "^start end$", "no-token-here", "(x)[y]{z}", "a\\b"]


def _model(op: str, attrs: dict, in_type: int = S, out_type: int = S, in_shape: list | None = None) -> bytes:
    node = helper.make_node(op, ["x"], ["y"], domain=MS, **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", in_type, in_shape)],
                              [helper.make_tensor_value_info("y", out_type, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    return model.SerializeToString()


def _theirs(blob: bytes, x: np.ndarray) -> np.ndarray | Exception:
    try:
        return ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    except Exception as e:  # onnxruntime refuses with its own exception types
        return e


def _ours(blob: bytes, x: np.ndarray, target: str = "cpu") -> np.ndarray | Exception:
    try:
        return hal.InferenceSession(blob, target=target, cache_dir=False).run(None, {"x": x})[0]
    except hal.RunError as e:
        return e


def _same(blob: bytes, x: np.ndarray, target: str = "cpu") -> np.ndarray | None:
    """hal's output is onnxruntime's (shape, dtype, values), or both refuse; hal's output or None."""
    want, got = _theirs(blob, x), _ours(blob, x, target)
    if isinstance(want, Exception) or isinstance(got, Exception):
        assert isinstance(want, Exception) and isinstance(got, Exception), (want, got)
        return None
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.dtype, want.shape)
    assert got.tolist() == want.tolist()
    return got


def _inputs() -> list[np.ndarray]:
    c = np.array(TEXTS, dtype=object)
    return [c, c.reshape(3, 4), c[:1].reshape(1, 1)]


def _tokenizer(**attrs) -> bytes:
    return _model("Tokenizer", {"mark": 0, "pad_value": "#", "mincharnum": 1, **attrs})


# ---- Tokenizer: separators ------------------------------------------------------------------------

SEPARATORS = [[" "], [" ", "\\."], ["[.|*]"], ["\\s+"], [" +"], ["  ", " "], [" ", " "], ["b"], ["a", "b", "c"],
              ["\\|", "\\*", "\\."], [".", "|"], ["(", ")"], ["^a"], ["c$"], ["^", "$"], ["\\bab"], ["é|日", "テ"],
              ["(?i)A"], ["ab|abc"], ["x*"], ["", " "], [" ", ""], [""]]


@pytest.mark.parametrize("separators", SEPARATORS, ids=[repr(s) for s in SEPARATORS])
def test_separators_follow_onnxruntime(separators: list[str]) -> None:
    """Each pattern splits the pieces the one before left (regex specials, anchors on the pieces, a
    pattern matching "" that drops what it stands on, [""] alone splitting into characters)."""
    for mark, mincharnum, pad in itertools.product([0, 1], [1, 2, 3], ["#", ""]):
        blob = _tokenizer(separators=separators, mark=mark, mincharnum=mincharnum, pad_value=pad)
        for x in _inputs():
            _same(blob, x)


# ---- Tokenizer: tokenexp --------------------------------------------------------------------------

EXPRESSIONS = ["[a-zA-Z0-9_]+", "\\b\\w\\w+\\b", "\\w+", "[a-z]+", ".", "(?s).", "x*", "[^ ]+", "a|ab|abc", "\\S",
               "^\\w+", "\\w+$", "[日本語]+", "\\p{Han}|\\p{Katakana}+", "(?i)[A-C]+", "(?u)\\b\\w\\w+\\b", "("]


@pytest.mark.parametrize("tokenexp", EXPRESSIONS)
def test_token_expressions_follow_onnxruntime(tokenexp: str) -> None:
    """The matches are the tokens, leftmost-longest; a match too short is stepped into one character
    at a time; "." is character tokenization (newlines included); a pattern RE2 refuses (sklearn's
    "(?u)" flag, an open group) is refused by both."""
    for mark, mincharnum, pad in itertools.product([0, 1], [1, 2, 3], ["#", ""]):
        blob = _tokenizer(tokenexp=tokenexp, mark=mark, mincharnum=mincharnum, pad_value=pad)
        for x in _inputs():
            _same(blob, x)


def test_tokenexp_details() -> None:
    x = np.array(["ab abc abcd", "a\nb", "xaby"], dtype=object)
    # a match shorter than mincharnum: the next search starts one character into it
    y = _same(_tokenizer(tokenexp="[a-z]+", mincharnum=3), x)
    assert y.tolist() == [["abc", "abcd"], ["#", "#"], ["xaby", "#"]]
    # leftmost-longest, not RE2's default leftmost-first
    assert _same(_tokenizer(tokenexp="a|ab|abc"), x)[0].tolist() == ["ab", "abc", "abc"]
    # "." is character tokenization, which takes the newline RE2's "." would not
    assert _same(_tokenizer(tokenexp="."), x)[1].tolist()[:3] == ["a", "\n", "b"]
    # separators win when both are set
    assert _same(_tokenizer(tokenexp="[a-z]+", separators=[" "]), x)[0].tolist()[:3] == ["ab", "abc", "abcd"]


# ---- Tokenizer: shapes, marks, padding ------------------------------------------------------------


def test_marks_go_round_the_tokens_and_padding_after() -> None:
    x = np.array([["ab c", "d"], ["", "é ü"]], dtype=object)
    y = _same(_tokenizer(separators=[" "], mark=1, pad_value="<pad>"), x)
    assert y.tolist() == [[["\x02", "ab", "c", "\x03"], ["\x02", "d", "\x03", "<pad>"]],
                          [["\x02", "\x03", "<pad>", "<pad>"], ["\x02", "é", "ü", "\x03"]]]


@pytest.mark.parametrize("attrs", [{"separators": [" "]}, {"separators": [""]}, {"tokenexp": "[a-z]+"},
                                   {"tokenexp": "."}], ids=["separators", "chars", "tokenexp", "dot"])
def test_no_token_anywhere_is_an_empty_last_axis(attrs: dict) -> None:
    """No marks then: [C] gives [C, 0], [N, C] gives [N, C, 0]; empty inputs keep their shape."""
    for mark in (0, 1):
        blob = _tokenizer(mark=mark, **attrs)
        for x, shape in [(np.array(["", ""], dtype=object), (2, 0)),
                         (np.array([["", ""], ["", ""]], dtype=object), (2, 2, 0)),
                         (np.zeros((0,), dtype=object), (0,)), (np.zeros((2, 0), dtype=object), (2, 0)),
                         (np.zeros((0, 3), dtype=object), (0, 0))]:
            assert _same(blob, x).shape == shape
        if "separators" in attrs and attrs["separators"] == [" "]:
            assert _same(blob, np.array(["   ", " "], dtype=object)).shape == (2, 0)
        if "tokenexp" in attrs and attrs["tokenexp"] != ".":
            assert _same(blob, np.array(["123", "!?"], dtype=object)).shape == (2, 0)


@pytest.mark.parametrize("case", [
    {"separators": [" "], "mincharnum": 0},  # mincharnum must be positive
    {"separators": [""], "mincharnum": 2},  # too big for character tokenization
    {"tokenexp": ".", "mincharnum": 2},
    {"tokenexp": ""},  # empty tokenexp
    {},  # neither separators nor tokenexp
    {"separators": ["("]},  # not RE2
    {"tokenexp": "[a-"},
], ids=["mincharnum0", "chars-mincharnum2", "dot-mincharnum2", "empty-tokenexp", "neither", "bad-separator",
        "bad-tokenexp"])
def test_bad_attributes_are_refused(case: dict) -> None:
    blob = _tokenizer(**case)
    x = np.array(["a b"], dtype=object)
    assert isinstance(_theirs(blob, x), Exception)
    with pytest.raises(hal.RunError, match="Tokenizer"):
        hal.InferenceSession(blob, cache_dir=False).run(None, {"x": x})


def test_bad_ranks_are_refused() -> None:
    blob = _tokenizer(separators=[" "])
    for x in (np.array([[["a b"]]], dtype=object), np.array("a b", dtype=object)):
        assert isinstance(_theirs(blob, x), Exception)
        with pytest.raises(hal.RunError, match=r"\[C\] or \[N, C\]"):
            hal.InferenceSession(blob, cache_dir=False).run(None, {"x": x})


# ---- MurmurHash3 ----------------------------------------------------------------------------------

WORDS = ["", "a", "ab", "abc", "abcd", "abcde", "héllo wörld", "日本", "😀", "a\x00b", "x" * 1001,
         "The quick brown fox"]
SEEDS = [0, 1, 42, -1, 2**31, 2**32 + 7]


def _hash(x: np.ndarray, positive: int | None, seed: int | None) -> np.ndarray | None:
    attrs = {k: v for k, v in (("positive", positive), ("seed", seed)) if v is not None}
    in_type = S if x.dtype == object else helper.np_dtype_to_tensor_dtype(x.dtype)
    out_type = TensorProto.UINT32 if positive in (None, 1) else TensorProto.INT32
    return _same(_model("MurmurHash3", attrs, in_type, out_type), x)


@pytest.mark.parametrize("positive", [None, 0, 1, 2])
def test_murmurhash3_strings_follow_onnxruntime(positive: int | None) -> None:
    words = np.array(WORDS, dtype=object)
    for seed in [None, *SEEDS]:
        got = _hash(words, positive, seed)
        assert got.dtype == (np.uint32 if positive in (None, 1) else np.int32)
        _hash(words.reshape(3, 4), positive, seed)
    # MurmurHash3_x86_32's published values (scikit-learn's murmurhash3_32 agrees)
    assert _hash(np.array(["", "a", "abcd"], dtype=object), 1, 0).tolist() == [0, 1009084850, 1139631978]


def test_murmurhash3_strings_of_many_lengths() -> None:
    """The block loop runs over all strings at once, the longest first: lengths 0..70 in a shuffle."""
    rng = np.random.default_rng(3)
    alphabet = list("abcxyz é日😀\x00")
    words = ["".join(rng.choice(alphabet, size=int(n))) for n in rng.permutation(np.arange(71))]
    for seed in (0, 123456789):
        _hash(np.array(words, dtype=object).reshape(71, 1), 0, seed)


@pytest.mark.parametrize("dtype", [np.int32, np.uint32, np.float32, np.int64, np.uint64, np.float64])
def test_murmurhash3_numbers_hash_their_bytes(dtype: type) -> None:
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else np.finfo(dtype)
    x = np.array([0, 1, 2, 7, info.max, info.min, 12345], dtype=dtype)
    if np.dtype(dtype).kind == "f":
        x = np.concatenate([x, np.array([-0.0, -2.5, np.nan, np.inf, 1e-30], dtype=dtype)])
    for positive, seed in itertools.product([None, 0], [None, *SEEDS]):
        _hash(x, positive, seed)
    _hash(x[:6].reshape(2, 3), 1, 5)
    _hash(np.asarray(x[1]), 1, 5)  # 0-d
    _hash(np.zeros((2, 0, 3), dtype=dtype), 0, 5)


def test_murmurhash3_refuses_other_types() -> None:
    blob = _model("MurmurHash3", {}, TensorProto.INT16, TensorProto.UINT32)
    x = np.array([1, 2], dtype=np.int16)
    assert isinstance(_theirs(blob, x), Exception)
    with pytest.raises(hal.RunError, match="MurmurHash3"):
        hal.InferenceSession(blob, cache_dir=False).run(None, {"x": x})


# ---- on every target ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_tokenize_then_hash_on_every_target(target: str) -> None:
    """One session, runs whose token counts differ (none at all in one): the token axis is the data's."""
    tok = helper.make_node("Tokenizer", ["x"], ["t"], domain=MS, separators=[" "], mark=1, mincharnum=1, pad_value="#")
    hsh = helper.make_node("MurmurHash3", ["t"], ["y"], domain=MS, positive=0, seed=7)
    graph = helper.make_graph([tok, hsh], "g", [helper.make_tensor_value_info("x", S, ["N", "C"])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, None),
                               helper.make_tensor_value_info("t", S, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    theirs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ours = hal.InferenceSession(model, target=target, cache_dir=False, fallback="allow")  # (no strings: on cpu)
    for x in [np.array([["a b", "c"], ["d e f", ""]], dtype=object), np.array([["", " "]], dtype=object),
              np.array([["xyz w", "é"], ["", "1 2 3 4 5"], ["日本 語", "x"]], dtype=object)]:
        for got, want in zip(ours.run(None, {"x": x}), theirs.run(None, {"x": x}), strict=True):
            assert got.dtype == want.dtype and got.shape == want.shape and got.tolist() == want.tolist()


# ---- skl2onnx's models ----------------------------------------------------------------------------

CORPUS = ["The quick brown fox", "jumps over the lazy dog", "naïve café, the end!", "dog dog fox", ""]


def _skl2onnx_model(estimator, n_columns: int) -> onnx.ModelProto:
    skl2onnx = pytest.importorskip("skl2onnx")
    from skl2onnx.common.data_types import StringTensorType

    # the "C" locale for the StringNormalizer skl2onnx puts ahead of the Tokenizer: onnxruntime's
    # default, en_US.UTF-8, fails where that locale is not installed
    options = {id(estimator): {"locale": "C"}} if hasattr(estimator, "vocabulary_") else None
    return skl2onnx.to_onnx(estimator, initial_types=[("x", StringTensorType([None, n_columns]))],
                            target_opset={"": 17, "ai.onnx.ml": 3}, options=options)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("make", ["count", "tfidf-bigrams", "count-chars", "count-pattern"])
def test_skl2onnx_vectorizers(make: str) -> None:
    pytest.importorskip("sklearn")
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    estimator = {"count": lambda: CountVectorizer(), "tfidf-bigrams": lambda: TfidfVectorizer(ngram_range=(1, 2)),
                 "count-chars": lambda: CountVectorizer(analyzer="char", ngram_range=(1, 2)),
                 "count-pattern": lambda: CountVectorizer(token_pattern=r"[a-zé]+")}[make]().fit(CORPUS)
    model = _skl2onnx_model(estimator, 1)
    assert any(n.op_type == "Tokenizer" and n.domain == MS for n in model.graph.node)
    x = np.array(CORPUS, dtype=object).reshape(-1, 1)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = hal.InferenceSession(model, cache_dir=False).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    if make in ("count-chars", "count-pattern"):  # skl2onnx's own pattern for sklearn's default differs a little
        np.testing.assert_allclose(got, estimator.transform(CORPUS).toarray(), rtol=1e-6)


def test_skl2onnx_feature_hasher() -> None:
    pytest.importorskip("sklearn")
    from sklearn.feature_extraction import FeatureHasher

    rows = [["a", "bb", "日本"], ["x", "y", "z"], ["", "a", "a"]]
    estimator = FeatureHasher(n_features=16, input_type="string").fit(rows)
    model = _skl2onnx_model(estimator, 3)
    assert any(n.op_type == "MurmurHash3" and n.domain == MS for n in model.graph.node)
    x = np.array(rows, dtype=object)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = hal.InferenceSession(model, cache_dir=False).run(None, {"x": x})
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    np.testing.assert_array_equal(got[0], estimator.transform(rows).toarray())
