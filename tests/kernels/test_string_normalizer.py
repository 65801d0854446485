"""StringNormalizer changes case one character at a time under the node's locale, as onnxruntime's
``std::ctype<wchar_t>`` does: no string changes length ('ß' stays, where Python's ``str.upper`` makes
'SS'), a final 'Σ' lowers to 'σ' like any other, and under "C" only ASCII letters change."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import hal

WORDS = ["abc", "Cé", "straße", "İi", "ǅ", "ΣΑΣ", "ᾳ", "ﬀ", "ŉ", "ΐ", "Ǆǅǆ", "µ", "ſ", "K", "ı", "ẞ", "Ω", "ⅷ",
         "ⓐ", "𐐀𐐨", "ǰ", "ﬁ", "STRASSE", "Straße"]


def _model(action: str, locale: str, stopwords: list[str] | None = None, case_sensitive: int = 0):
    node = helper.make_node("StringNormalizer", ["s"], ["y"], case_change_action=action, locale=locale,
                            is_case_sensitive=case_sensitive, **({"stopwords": stopwords} if stopwords else {}))
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("s", TensorProto.STRING, [len(WORDS)])],
                          [helper.make_tensor_value_info("y", TensorProto.STRING, ["K"])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize("locale", ["C", "C.UTF-8", ""])
@pytest.mark.parametrize("action", ["UPPER", "LOWER"])
@pytest.mark.parametrize("stopwords", [None, ["straße", "σας"]])
def test_case_changes_and_stopwords_follow_onnxruntime(locale: str, action: str, stopwords: list[str] | None) -> None:
    m = _model(action, locale, stopwords)
    feeds = {"s": np.array(WORDS, dtype=object)}
    (theirs,) = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for target in hal.targets():  # (a target without strings runs the node on cpu)
        (ours,) = hal.InferenceSession(m, target=target.name, fallback="allow").run(None, feeds)
        assert list(ours) == list(theirs), target.name
    if locale == "C" and not stopwords:  # only ASCII letters changed
        assert all(a == b for w, o in zip(WORDS, ours) for a, b in zip(w, o) if not a.isascii())
    assert [len(w) for w in ours] == [len(w) for w in WORDS if not stopwords or w not in ("straße", "Straße")]
