"""The ai.onnx.ml feature transforms (hal/kernels/ml_features.py) against onnxruntime, the reference.

Each test builds a one-node model (or a small pipeline) with onnx.helper, runs it through
``hal.InferenceSession`` on the cpu target and through onnxruntime's CPU provider, and compares:
exactly for integers and strings, with rtol 1e-6 for floats. Where onnxruntime has no kernel for a
dtype ONNX allows (Imputer on double/int32, OneHotEncoder on int32, FeatureVectorizer on mixed
dtypes, which its type check refuses) the reference runs on an exactly converted input instead. Bad
attributes must surface as ``hal.RunError`` naming the attribute.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import ModelProto, TensorProto, helper

import hal

NAN, INF = float("nan"), float("inf")
ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
        np.dtype(np.int64): TensorProto.INT64, np.dtype(np.int32): TensorProto.INT32,
        np.dtype(object): TensorProto.STRING}
NUMERIC = [np.float32, np.float64, np.int64, np.int32]


def _model(op: str, inputs: list[np.ndarray], out_dtype: type = np.float32, out_rank: int | None = None,
           **attrs: Any) -> ModelProto:
    """A model of one ai.onnx.ml node reading inputs x0, x1, ... shaped like ``inputs`` (symbolic dims)."""
    names = [f"x{i}" for i in range(len(inputs))]
    rank = inputs[0].ndim if out_rank is None else out_rank
    graph = helper.make_graph(
        [helper.make_node(op, names, ["y"], domain="ai.onnx.ml", **attrs)], op,
        [helper.make_tensor_value_info(n, ELEM[a.dtype], [f"{n}_{d}" for d in range(a.ndim)])
         for n, a in zip(names, inputs)],
        [helper.make_tensor_value_info("y", ELEM[np.dtype(out_dtype)], [f"y_{d}" for d in range(rank)])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)])


def _feeds(inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {f"x{i}": a for i, a in enumerate(inputs)}


def _hal(model: ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return hal.InferenceSession(model, target="cpu").run(None, feeds)


def _ort(model: ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    if got.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, equal_nan=True)
    else:
        np.testing.assert_array_equal(got, want)


def _check(op: str, inputs: list[np.ndarray], out_dtype: type = np.float32, out_rank: int | None = None,
           **attrs: Any) -> np.ndarray:
    """Run ``op`` on ``inputs`` through hal and onnxruntime and assert they agree; hal's output."""
    model = _model(op, inputs, out_dtype, out_rank, **attrs)
    (got,), (want,) = _hal(model, _feeds(inputs)), _ort(model, _feeds(inputs))
    _same(got, want)
    return got


def _run_error(op: str, inputs: list[np.ndarray], out_dtype: type = np.float32, out_rank: int | None = None,
               **attrs: Any) -> str:
    """The message of the RunError hal raises for this node."""
    with pytest.raises(hal.RunError) as info:
        _hal(_model(op, inputs, out_dtype, out_rank, **attrs), _feeds(inputs))
    return str(info.value)


def _ort_refuses(op: str, inputs: list[np.ndarray], out_dtype: type = np.float32, out_rank: int | None = None,
                 **attrs: Any) -> None:
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's error classes differ between load and run
        _ort(_model(op, inputs, out_dtype, out_rank, **attrs), _feeds(inputs))


def _table(dtype: type) -> np.ndarray:
    """A small (4, 3) feature table of ``dtype`` with negatives and zeros."""
    return np.array([[1, -2, 3], [0, 0, 0], [-7, 5, 250], [4, 4, -4]]).astype(dtype)


# --- Scaler ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", NUMERIC)
def test_scaler_offset_and_scale_per_feature_for_each_input_type(dtype: type) -> None:
    _check("Scaler", [_table(dtype)], offset=[0.5, -1.25, 3.0], scale=[2.0, 0.1, -3.5])


@pytest.mark.parametrize("shape", [(4, 3), (5,)])
def test_scaler_single_offset_and_scale_apply_to_every_feature(shape: tuple[int, ...]) -> None:
    _check("Scaler", [np.linspace(-3, 7, int(np.prod(shape))).reshape(shape)], offset=[0.3], scale=[1.7])


def test_scaler_on_1d_input_treats_each_element_as_a_feature() -> None:
    _check("Scaler", [np.array([1.0, 2.0, 3.0], np.float32)], offset=[1.0, 2.0, 3.0], scale=[2.0, 3.0, 4.0])


def test_scaler_on_3d_input_indexes_features_by_flat_position_like_onnxruntime() -> None:
    _check("Scaler", [np.arange(24, dtype=np.float64).reshape(2, 3, 4)], offset=[1.0, 2.0, 3.0],
           scale=[1.0, 10.0, 100.0])


def test_scaler_keeps_nan_and_inf_and_rounds_large_int64_through_float32() -> None:
    _check("Scaler", [np.array([[NAN, INF, -INF]], np.float32)], offset=[1.0, 2.0, 3.0], scale=[2.0, 0.0, -1.0])
    _check("Scaler", [np.array([[2**40 + 1, -(2**53) - 1]], np.int64)], offset=[0.5], scale=[3.0])


def test_scaler_empty_batch_gives_empty_float32() -> None:
    got = _check("Scaler", [np.zeros((0, 3), np.int64)], offset=[1.0, 2.0, 3.0], scale=[2.0, 3.0, 4.0])
    assert got.shape == (0, 3)


def test_scaler_rejects_attribute_lengths_that_do_not_fit() -> None:
    x = _table(np.float32)
    assert "offset has 2 values; it needs 1 or one per feature (3)" in _run_error(
        "Scaler", [x], offset=[1.0, 2.0], scale=[2.0, 3.0])
    assert "offset has 1 values but scale has 3" in _run_error("Scaler", [x], offset=[1.0], scale=[1.0, 2.0, 3.0])
    assert "scale is empty" in _run_error("Scaler", [x], offset=[1.0])
    _ort_refuses("Scaler", [x], offset=[1.0, 2.0], scale=[2.0, 3.0])
    _ort_refuses("Scaler", [x], offset=[1.0])


# --- Normalizer --------------------------------------------------------------------------------------


def _rows_to_normalize(dtype: type) -> np.ndarray:
    rows = [[1, -2, 3], [0, 0, 0], [-1, -2, -4], [5, 0, -5]]
    if np.dtype(dtype).kind == "f":
        rows += [[NAN, 1, 2], [-INF, -INF, 1], [INF, 1, 2], [-INF, -INF, -INF], [-0.0, 0.0, 0.0]]
    return np.array(rows).astype(dtype)


@pytest.mark.parametrize("dtype", NUMERIC)
@pytest.mark.parametrize("norm", ["MAX", "L1", "L2"])
def test_normalizer_matches_onnxruntime_including_zero_nan_and_inf_rows(norm: str, dtype: type) -> None:
    _check("Normalizer", [_rows_to_normalize(dtype)], norm=norm)


@pytest.mark.parametrize("norm", ["MAX", "L1", "L2"])
def test_normalizer_on_1d_input_normalizes_it_as_one_row(norm: str) -> None:
    _check("Normalizer", [np.array([3, -4, 12], np.int64)], norm=norm)


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_normalizer_sums_long_rows_in_float32_like_onnxruntime(norm: str) -> None:
    # numpy's pairwise sum rounds differently on rows this long, so the match must be bit-exact
    x = np.random.default_rng(0).normal(size=(3, 5000)).astype(np.float32)
    model = _model("Normalizer", [x], norm=norm)
    np.testing.assert_array_equal(_hal(model, {"x0": x})[0], _ort(model, {"x0": x})[0])


def test_normalizer_squares_in_the_input_type_so_int32_overflow_and_tiny_doubles_match() -> None:
    _check("Normalizer", [np.array([[50000, 3], [7, 1]], np.int32)], norm="L2")
    _check("Normalizer", [np.array([[1e-30, 1e-30], [1e-30, 1.0]], np.float64)], norm="L2")


def test_normalizer_defaults_to_max() -> None:
    _check("Normalizer", [_rows_to_normalize(np.float32)])


def test_normalizer_empty_batch_and_empty_rows() -> None:
    assert _check("Normalizer", [np.zeros((0, 3), np.float32)], norm="L2").shape == (0, 3)
    assert _check("Normalizer", [np.zeros((2, 0), np.float32)], norm="MAX").shape == (2, 0)


def test_normalizer_rejects_unknown_norm_and_rank_3_input() -> None:
    x = _rows_to_normalize(np.float32)
    assert "norm is 'l2'; it must be one of MAX, L1, L2" in _run_error("Normalizer", [x], norm="l2")
    _ort_refuses("Normalizer", [x], norm="l2")
    cube = np.ones((2, 3, 4), np.float32)
    assert "rank 1 or 2, got rank 3" in _run_error("Normalizer", [cube], norm="L1")
    _ort_refuses("Normalizer", [cube], norm="L1")


# --- Imputer -----------------------------------------------------------------------------------------


def _with_nans() -> np.ndarray:
    return np.array([[1, NAN, 3], [0, 5, NAN], [NAN, NAN, NAN], [0, 0, 3]], np.float32)


@pytest.mark.parametrize("values", [[7.0, 8.0, 9.0], [7.0]])
def test_imputer_replaces_nan_per_feature_or_with_one_value(values: list[float]) -> None:
    _check("Imputer", [_with_nans()], imputed_value_floats=values, replaced_value_float=NAN)


def test_imputer_replaces_a_chosen_float_and_defaults_to_replacing_zero() -> None:
    _check("Imputer", [_with_nans()], imputed_value_floats=[7.0, 8.0, 9.0], replaced_value_float=3.0)
    _check("Imputer", [_with_nans()], imputed_value_floats=[-1.5])


@pytest.mark.parametrize("values", [[7, 8, 9], [7]])
def test_imputer_replaces_int64_values(values: list[int]) -> None:
    x = np.array([[1, -1, 3], [0, 5, -1], [-1, -1, -1]], np.int64)
    _check("Imputer", [x], np.int64, imputed_value_int64s=values, replaced_value_int64=-1)
    _check("Imputer", [x], np.int64, imputed_value_int64s=values)


def test_imputer_on_1d_3d_and_empty_input() -> None:
    _check("Imputer", [np.array([NAN, 1, NAN], np.float32)], imputed_value_floats=[7.0, 8.0, 9.0],
           replaced_value_float=NAN)
    _check("Imputer", [np.full((2, 3, 2), NAN, np.float32)], imputed_value_floats=[7.0, 8.0, 9.0],
           replaced_value_float=NAN)
    _check("Imputer", [np.zeros((0, 3), np.float32)], imputed_value_floats=[7.0, 8.0, 9.0], replaced_value_float=NAN)


def test_imputer_on_double_and_int32_keeps_their_type() -> None:
    # onnxruntime has no double/int32 Imputer: the reference runs on the exactly converted float32/int64 input
    x = _with_nans()
    model = _model("Imputer", [x.astype(np.float64)], np.float64, imputed_value_floats=[7.5, 8.0, 9.0],
                   replaced_value_float=NAN)
    (got,) = _hal(model, {"x0": x.astype(np.float64)})
    (want,) = _ort(_model("Imputer", [x], imputed_value_floats=[7.5, 8.0, 9.0], replaced_value_float=NAN), {"x0": x})
    _same(got, want.astype(np.float64))
    ints = np.array([[1, -1, 3], [-1, 5, -1]], np.int64)
    model = _model("Imputer", [ints.astype(np.int32)], np.int32, imputed_value_int64s=[7, 8, 9],
                   replaced_value_int64=-1)
    (got,) = _hal(model, {"x0": ints.astype(np.int32)})
    (want,) = _ort(_model("Imputer", [ints], np.int64, imputed_value_int64s=[7, 8, 9], replaced_value_int64=-1),
                   {"x0": ints})
    _same(got, want.astype(np.int32))


def test_imputer_rejects_bad_attributes() -> None:
    x = _with_nans()
    assert "imputed_value_floats has 2 values; it needs 1 or one per feature (3)" in _run_error(
        "Imputer", [x], imputed_value_floats=[1.0, 2.0], replaced_value_float=NAN)
    assert "exactly one of imputed_value_floats and imputed_value_int64s, got both" in _run_error(
        "Imputer", [x], imputed_value_floats=[1.0], imputed_value_int64s=[1])
    assert "got neither" in _run_error("Imputer", [x])
    assert "float32 input needs imputed_value_floats" in _run_error("Imputer", [x], imputed_value_int64s=[1])
    _ort_refuses("Imputer", [x], imputed_value_floats=[1.0], imputed_value_int64s=[1])
    _ort_refuses("Imputer", [x], imputed_value_int64s=[1])


# --- OneHotEncoder -----------------------------------------------------------------------------------


def test_one_hot_encoder_strings_with_unknown_category_give_zeros() -> None:
    x = np.array([["a", "b"], ["zz", "c"], ["", "é"]], dtype=object)
    got = _check("OneHotEncoder", [x], out_rank=3, cats_strings=["a", "b", "c", "é"])
    assert got.shape == (3, 2, 4)


@pytest.mark.parametrize("dtype", [np.int64, np.float32, np.float64])
def test_one_hot_encoder_numbers_truncate_to_int64_categories(dtype: type) -> None:
    x = np.array([[1.7, -0.5, 3.0], [-1.2, 9.0, 5.0]]).astype(dtype)
    _check("OneHotEncoder", [x], out_rank=3, cats_int64s=[1, 3, 0, -1, 5])


def test_one_hot_encoder_nan_inf_and_huge_floats_map_to_int64_min_like_onnxruntime() -> None:
    x = np.array([NAN, INF, -INF, 1e30, 2.0], np.float32)
    _check("OneHotEncoder", [x], cats_int64s=[2, -(2**63)])
    _check("OneHotEncoder", [x], cats_int64s=[2])


def test_one_hot_encoder_int32_input_matches_int64() -> None:
    x = np.array([[1, 5], [3, 9]], np.int64)
    model = _model("OneHotEncoder", [x.astype(np.int32)], out_rank=3, cats_int64s=[1, 3, 5])
    (got,) = _hal(model, {"x0": x.astype(np.int32)})
    (want,) = _ort(_model("OneHotEncoder", [x], out_rank=3, cats_int64s=[1, 3, 5]), {"x0": x})
    _same(got, want)


def test_one_hot_encoder_repeated_category_keeps_its_last_position() -> None:
    _check("OneHotEncoder", [np.array([1, 3, 5, 7], np.int64)], cats_int64s=[1, 3, 5, 1])
    _check("OneHotEncoder", [np.array(["a", "b"], dtype=object)], cats_strings=["a", "b", "a"])


def test_one_hot_encoder_shapes_scalar_3d_and_empty_input() -> None:
    assert _check("OneHotEncoder", [np.array(1, np.int64)], out_rank=1, cats_int64s=[0, 1]).shape == (2,)
    assert _check("OneHotEncoder", [np.zeros((2, 3, 2), np.int64)], out_rank=4, cats_int64s=[0]).shape == (2, 3, 2, 1)
    assert _check("OneHotEncoder", [np.zeros((0, 3), np.int64)], out_rank=3, cats_int64s=[0, 1]).shape == (0, 3, 2)


def test_one_hot_encoder_categories_of_the_other_type_never_match() -> None:
    _check("OneHotEncoder", [np.array(["1", "3"], dtype=object)], cats_int64s=[1, 3])
    _check("OneHotEncoder", [np.array([1, 3], np.int64)], cats_strings=["1", "3"])


def test_one_hot_encoder_zeros_0_accepts_known_and_names_an_unknown_category() -> None:
    _check("OneHotEncoder", [np.array(["b", "a"], dtype=object)], cats_strings=["a", "b"], zeros=0)
    x = np.array([["a", "b"], ["zz", "c"]], dtype=object)
    message = _run_error("OneHotEncoder", [x], out_rank=3, cats_strings=["a", "b", "c"], zeros=0)
    assert "'zz' is not in cats_strings and zeros=0" in message
    _ort_refuses("OneHotEncoder", [x], out_rank=3, cats_strings=["a", "b", "c"], zeros=0)
    assert "2.5 is not in cats_int64s" in _run_error("OneHotEncoder", [np.array([1.0, 2.5], np.float32)],
                                                       cats_int64s=[1], zeros=0)


def test_one_hot_encoder_rejects_both_or_no_category_lists() -> None:
    x = np.array([1, 2], np.int64)
    assert "exactly one of cats_int64s and cats_strings, got both" in _run_error(
        "OneHotEncoder", [x], cats_int64s=[1], cats_strings=["1"])
    assert "got neither" in _run_error("OneHotEncoder", [x])


# --- CategoryMapper ----------------------------------------------------------------------------------

CATS = {"cats_strings": ["a", "b", "c", "é", ""], "cats_int64s": [1, 3, 5, 7, 9]}


def test_category_mapper_maps_strings_to_int64_with_default() -> None:
    x = np.array([["a", "b"], ["zz", "c"], ["é", ""]], dtype=object)
    _check("CategoryMapper", [x], np.int64, **CATS)
    _check("CategoryMapper", [x], np.int64, default_int64=42, **CATS)


def test_category_mapper_maps_int64_to_strings_with_default() -> None:
    x = np.array([[1, 5], [3, 4], [9, -1]], np.int64)
    _check("CategoryMapper", [x], object, **CATS)
    _check("CategoryMapper", [x], object, default_string="?", **CATS)


def test_category_mapper_repeated_keys_keep_their_last_pair() -> None:
    _check("CategoryMapper", [np.array([1, 3, 9], np.int64)], object, cats_strings=["a", "b", "c", "d"],
           cats_int64s=[1, 3, 1, 9])
    _check("CategoryMapper", [np.array(["a", "b"], dtype=object)], np.int64, cats_strings=["a", "b", "a"],
           cats_int64s=[1, 3, 5])


def test_category_mapper_scalar_and_empty_input() -> None:
    _check("CategoryMapper", [np.array("c", dtype=object)], np.int64, **CATS)
    assert _check("CategoryMapper", [np.zeros((0, 2), np.int64)], object, **CATS).shape == (0, 2)


def test_category_mapper_rejects_mismatched_or_missing_category_lists() -> None:
    x = np.array(["a"], dtype=object)
    assert "cats_int64s has 3 values but cats_strings has 2" in _run_error(
        "CategoryMapper", [x], np.int64, cats_strings=["a", "b"], cats_int64s=[1, 3, 5])
    assert "cats_int64s and cats_strings are both required" in _run_error(
        "CategoryMapper", [x], np.int64, cats_strings=["a"])
    _ort_refuses("CategoryMapper", [x], np.int64, cats_strings=["a", "b"], cats_int64s=[1, 3, 5])


# --- FeatureVectorizer -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", NUMERIC)
def test_feature_vectorizer_concatenates_inputs_of_each_type(dtype: type) -> None:
    parts = [_table(dtype), np.arange(8).reshape(4, 2).astype(dtype), np.full((4, 1), 9).astype(dtype)]
    assert _check("FeatureVectorizer", parts, inputdimensions=[3, 2, 1]).shape == (4, 6)


def test_feature_vectorizer_truncates_wide_and_zero_pads_narrow_inputs() -> None:
    parts = [_table(np.float32), np.arange(8, dtype=np.float32).reshape(4, 2), np.ones((4, 1), np.float32)]
    assert _check("FeatureVectorizer", parts, inputdimensions=[2, 3, 2]).shape == (4, 7)
    assert _check("FeatureVectorizer", [np.zeros((2, 0), np.float32), np.ones((2, 2), np.float32)],
                  inputdimensions=[2, 2]).shape == (2, 4)


def test_feature_vectorizer_flattens_3d_and_reads_1d_as_one_row() -> None:
    cube, flat = np.arange(12, dtype=np.float32).reshape(2, 3, 2), np.ones((2, 2), np.float32)
    _check("FeatureVectorizer", [cube, flat], inputdimensions=[6, 2])
    _check("FeatureVectorizer", [cube, flat], inputdimensions=[4, 2])
    one_row = [np.array([1, 2, 3], np.int32), np.array([4, 5], np.int32)]
    assert _check("FeatureVectorizer", one_row, inputdimensions=[3, 2]).shape == (1, 5)


def test_feature_vectorizer_mixed_input_types_become_float32() -> None:
    # onnxruntime's type check wants one input type: its reference gets every input cast to float32 first
    parts = [np.array([[1.5, 2.0], [3.0, 4.0]], np.float64), np.array([[2**40 + 1], [-3]], np.int64),
             np.array([[7], [8]], np.int32)]
    (got,) = _hal(_model("FeatureVectorizer", parts, inputdimensions=[2, 1, 1]), _feeds(parts))
    cast = [p.astype(np.float32) for p in parts]
    (want,) = _ort(_model("FeatureVectorizer", cast, inputdimensions=[2, 1, 1]), _feeds(cast))
    _same(got, want)


def test_feature_vectorizer_empty_batch_gives_zero_rows() -> None:
    # onnxruntime aborts the process on an empty batch: compare with its answer for one row, sliced
    rows = [np.ones((1, 3), np.float32), np.ones((1, 2), np.float32)]
    (want,) = _ort(_model("FeatureVectorizer", rows, inputdimensions=[3, 4]), _feeds(rows))
    empty = [r[:0] for r in rows]
    (got,) = _hal(_model("FeatureVectorizer", empty, inputdimensions=[3, 4]), _feeds(empty))
    _same(got, want[:0])


def test_feature_vectorizer_rejects_bad_dimensions_and_batches() -> None:
    a, b = _table(np.float32), np.ones((4, 2), np.float32)
    assert "inputdimensions has 3 values for 2 inputs" in _run_error("FeatureVectorizer", [a, b],
                                                                     inputdimensions=[3, 2, 1])
    assert "inputdimensions is required" in _run_error("FeatureVectorizer", [a, b])
    assert "negative width" in _run_error("FeatureVectorizer", [a, b], inputdimensions=[-1, 2])
    assert "same batch size, got [4, 3]" in _run_error("FeatureVectorizer", [a, b[:3]], inputdimensions=[3, 2])
    assert "at least 1 dimension" in _run_error("FeatureVectorizer", [np.array(5, np.float32)], inputdimensions=[1])
    _ort_refuses("FeatureVectorizer", [a, b], inputdimensions=[3, 2, 1])
    _ort_refuses("FeatureVectorizer", [a, b[:3]], inputdimensions=[3, 2])


# --- a preprocessing pipeline ------------------------------------------------------------------------


def test_imputer_scaler_normalizer_and_one_hot_vectorized_like_an_sklearn_pipeline() -> None:
    rng = np.random.default_rng(1)
    numbers = rng.normal(size=(64, 4)).astype(np.float32)
    numbers[rng.random(numbers.shape) < 0.2] = NAN
    colours = rng.choice(np.array(["red", "green", "blue", "teal"], dtype=object), size=(64, 1))
    ml = "ai.onnx.ml"
    nodes = [
        helper.make_node("Imputer", ["num"], ["imputed"], domain=ml, imputed_value_floats=[0.1, -0.2, 0.3, 0.0],
                         replaced_value_float=NAN),
        helper.make_node("Scaler", ["imputed"], ["scaled"], domain=ml, offset=[0.05, -0.1, 0.2, 0.0],
                         scale=[1.1, 0.9, 2.0, 0.5]),
        helper.make_node("Normalizer", ["scaled"], ["normed"], domain=ml, norm="L2"),
        helper.make_node("OneHotEncoder", ["colour"], ["onehot"], domain=ml, cats_strings=["red", "green", "blue"]),
        helper.make_node("FeatureVectorizer", ["normed", "onehot"], ["features"], domain=ml, inputdimensions=[4, 3]),
    ]
    graph = helper.make_graph(nodes, "pipeline", [
        helper.make_tensor_value_info("num", TensorProto.FLOAT, ["N", 4]),
        helper.make_tensor_value_info("colour", TensorProto.STRING, ["N", 1]),
    ], [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 7])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ml, 1)])
    feeds = {"num": numbers, "colour": colours}
    (got,), (want,) = _hal(model, feeds), _ort(model, feeds)
    _same(got, want)
    assert got.shape == (64, 7)
