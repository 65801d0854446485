"""Corners of the low-bit and text ops found by the differential sweep's families
(benchmarks/differential_lowbits.py), against onnxruntime's outputs: every target runs them."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import hal
from tests.kernels._onnxruntime import run_as_written as _onnxruntime

TARGETS = [t.name for t in hal.targets()]


def _tfidf(mode: str, columns: list[int], skips: int = 0) -> bytes:
    node = helper.make_node("TfIdfVectorizer", ["x"], ["y"], mode=mode, min_gram_length=1, max_gram_length=2,
                            max_skip_count=skips, ngram_counts=[0, 3], ngram_indexes=columns,
                            pool_int64s=[5, 6, 7, 5, 6], weights=[10.0, 20.0, 30.0, 0.5])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.INT64, [2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 9)]).SerializeToString()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("mode", ["IDF", "TFIDF"])
@pytest.mark.parametrize("columns", [[2, 0, 3, 1], [5, 0, 1, 3]], ids=["permuted", "with-gaps"])
def test_tfidf_weights_follow_the_ngram_not_the_output_column(mode, columns, target):
    # weights[i] is the weight of the pool's i-th n-gram (the spec; onnxruntime), which lands in column
    # ngram_indexes[i]. hal scaled column j by weights[j] as onnx's reference does: 3x off where the
    # columns are permuted, and an error where a column index passes the number of weights.
    blob = _tfidf(mode, columns)
    x = np.array([[5, 6, 5, 9], [7, 7, 5, 6]], np.int64)
    want = _onnxruntime(blob, {"x": x})
    got = hal.InferenceSession(blob, target=target).run(None, {"x": x})
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("mode", ["IDF", "TFIDF"])
def test_tfidf_ngrams_sharing_a_column_weigh_as_onnxruntime_s_scan(mode, target):
    # "5", "6" and the bigram "5 6" share column 0. onnxruntime's scan adds each find's weight (TFIDF:
    # 10 + 10 + 20 + 0.5 in both rows) or sets it (IDF: the last found wins, and a skip pass comes after
    # the contiguous one, so in [5, 9, 6, 5] it is the skipped "5 _ 6", 0.5). hal scaled the column's
    # total count by the last n-gram's weight (0.5 x 4 = 2), and gave IDF that weight in both rows
    blob = _tfidf(mode, [0, 0, 1, 0], skips=1)
    x = np.array([[5, 6, 5, 9], [5, 9, 6, 5]], np.int64)
    want = _onnxruntime(blob, {"x": x})
    got = hal.InferenceSession(blob, target=target).run(None, {"x": x})
    assert want[0][:, 0].tolist() == ([10.0, 0.5] if mode == "IDF" else [40.5, 40.5])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
