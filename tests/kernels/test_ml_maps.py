"""ZipMap, DictVectorizer and CastMap against onnxruntime, and map feeds checked against their
declared key and value types."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import hal
from hal.feeds import MapValue

F, I64, S = TensorProto.FLOAT, TensorProto.INT64, TensorProto.STRING
OPSETS = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)]


def _map_type(key: int, value: int = F):
    return helper.make_map_type_proto(key, helper.make_tensor_type_proto(value, []))


def _model(op: str, x_type, y_type, **attrs):
    node = helper.make_node(op, ["X"], ["Y"], name="n", domain="ai.onnx.ml", **attrs)
    g = helper.make_graph([node], "g", [helper.make_value_info("X", x_type)], [helper.make_value_info("Y", y_type)])
    return helper.make_model(g, opset_imports=OPSETS)


def _both(model, x):
    ours = hal.InferenceSession(model).run(None, {"X": x})[0]
    theirs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    return ours, theirs


def _tensor(elem: int, shape):
    return helper.make_tensor_type_proto(elem, shape)


@pytest.mark.parametrize(("labels", "key"), [(dict(classlabels_strings=["b", "a", "c"]), S),
                                             (dict(classlabels_int64s=[7, -1, 3]), I64)])
@pytest.mark.parametrize("shape", [(4, 3), (0, 3)])
def test_zip_map_gives_one_map_a_row_as_onnxruntime_does(labels, key, shape):
    model = _model("ZipMap", _tensor(F, [None, 3]), helper.make_sequence_type_proto(_map_type(key)), **labels)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ours, theirs = _both(model, x)
    assert ours == theirs  # the same Python floats under the same keys
    assert all(isinstance(m, MapValue) and m.value_dtype == np.float32 for m in ours)


def test_zip_map_of_one_row_and_the_wrong_width():
    def session(shape):
        return hal.InferenceSession(_model("ZipMap", _tensor(F, shape), helper.make_sequence_type_proto(_map_type(I64)),
                                           classlabels_int64s=[1, 2]))
    assert session([None]).run(None, {"X": np.array([0.25, 0.75], np.float32)})[0] == [{1: 0.25, 2: 0.75}]
    with pytest.raises(hal.RunError, match=r"node 'n'.*X of shape \[2, 3\] does not have one column per class label"):
        session([None, None]).run(None, {"X": np.ones((2, 3), np.float32)})


@pytest.mark.parametrize(("key", "vocab", "x"), [
    (S, dict(string_vocabulary=["a", "b", "c", "a"]), {"a": 1.5, "c": -2.0, "zz": 9.0}),
    (I64, dict(int64_vocabulary=[5, 2, 9]), {5: 1.5, 2: 3.0, 4: 7.0}),
])
def test_dict_vectorizer_orders_values_by_the_vocabulary_as_onnxruntime_does(key, vocab, x):
    model = _model("DictVectorizer", _map_type(key), _tensor(F, [None, None]), **vocab)
    ours, theirs = _both(model, x)
    assert ours.dtype == theirs.dtype == np.float32 and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize(("value", "want"), [(F, np.zeros((1, 2), np.float32)), (S, np.array([["", ""]], object)),
                                             (TensorProto.DOUBLE, np.zeros((1, 2)))])
def test_an_empty_map_vectorizes_to_the_declared_value_type(value, want):
    # (onnxruntime's Python binding cannot feed an empty map; the declared type fixes the output's)
    model = _model("DictVectorizer", _map_type(S, value), _tensor(value, [None, None]), string_vocabulary=["a", "b"])
    got = hal.InferenceSession(model).run(None, {"X": {}})[0]
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


CAST_OUT = {"TO_FLOAT": F, "TO_INT64": I64, "TO_STRING": S}


@pytest.mark.parametrize("cast_to", sorted(CAST_OUT))
@pytest.mark.parametrize(("form", "max_map"), [("DENSE", 1), ("SPARSE", 6)])
@pytest.mark.parametrize("x", [{3: 2.5, 1: -1.75, 0: 7.0}, {4: 2.7, 2: -2.7, 9: 1e30}, {1: float("nan"), 5: 1e-3}])
def test_cast_map_matches_onnxruntime(cast_to, form, max_map, x):
    model = _model("CastMap", _map_type(I64), _tensor(CAST_OUT[cast_to], [None, None]), cast_to=cast_to,
                   map_form=form, max_map=max_map)
    ours, theirs = _both(model, x)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    if form == "SPARSE" and cast_to == "TO_STRING":
        # onnxruntime pads with the text "0.f" (a C++ literal); a zero cast as every value is, is "0.000000"
        filled = np.isin(np.arange(max_map), list(x))
        assert (ours[0, ~filled] == "0.000000").all()
        ours, theirs = ours[:, filled], theirs[:, filled]
    np.testing.assert_array_equal(ours, theirs)


def test_cast_map_reads_string_values_as_numbers():
    model = _model("CastMap", _map_type(I64, S), _tensor(F, [None, None]), cast_to="TO_FLOAT")
    got = hal.InferenceSession(model).run(None, {"X": {2: "1.5", 1: "-3"}})[0]
    np.testing.assert_array_equal(got, np.array([[-3.0, 1.5]], np.float32))


@pytest.mark.parametrize(("attrs", "x", "match"), [
    (dict(map_form="SPARSE", max_map=3), {-1: 1.0}, r"none may be negative \(got -1\)"),
    (dict(cast_to="TO_DOUBLE"), {1: 1.0}, r"cast_to='TO_DOUBLE'; one of TO_FLOAT, TO_INT64, TO_STRING"),
    (dict(map_form="BANDED"), {1: 1.0}, r"map_form='BANDED'; DENSE or SPARSE"),
])
def test_bad_cast_map_attributes_and_keys_are_run_errors(attrs, x, match):
    model = _model("CastMap", _map_type(I64), _tensor(F, [None, None]), **attrs)
    with pytest.raises(hal.RunError, match=rf"node 'n'.*{match}"):
        hal.InferenceSession(model).run(None, {"X": x})


@pytest.mark.parametrize(("feed", "match"), [
    ([1.0, 2.0], r"feed 'X' is a list, not a map"),
    (np.int64(3), r"feed 'X' is an int64, not a map"),
    ({"a": 1.0}, r"feed 'X' has key 'a' \(str\)"),
    ({True: 1.0}, r"feed 'X' has key True \(bool\)"),
    ({1: "x"}, r"feed 'X' maps 1 to 'x', not a float32 scalar"),
    ({1: [1.0, 2.0]}, r"feed 'X' maps 1 to \[1.0, 2.0\], not a float32 scalar"),
])
def test_a_map_feed_of_the_wrong_types_is_an_input_error(feed, match):
    model = _model("CastMap", _map_type(I64), _tensor(F, [None, None]))
    with pytest.raises(hal.InputError, match=rf"{match}.*pass a dict of int64 keys and float32 values"):
        hal.InferenceSession(model).run(None, {"X": feed})


def test_a_map_feed_is_not_changed_in_place():
    model = _model("CastMap", _map_type(I64), _tensor(F, [None, None]))
    feed = {"X": {np.int64(2): 1, 1: 2.5}}
    got = hal.InferenceSession(model).run(None, feed)[0]
    np.testing.assert_array_equal(got, np.array([[2.5, 1.0]], np.float32))
    assert type(feed["X"]) is dict and feed["X"] == {2: 1, 1: 2.5}


def test_a_sparse_cast_map_wider_than_max_memory_is_refused_before_allocating():
    model = _model("CastMap", _map_type(I64), _tensor(F, [None, None]), map_form="SPARSE", max_map=2**40)
    with pytest.raises(hal.ResourceError, match=r"node 'n'.*CastMap would need a tensor of shape \[1, 1099511627776\]"):
        hal.InferenceSession(model, max_memory=1 << 30).run(None, {"X": {1: 1.0}})
