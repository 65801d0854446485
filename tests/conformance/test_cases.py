"""The suite's cases: onnx's node cases, the light models, contract checks, and the comparison."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest

from hal.conformance.cases import LIGHT_MODELS, light_cases, node_cases, to_value
from hal.conformance.check import CaseFailure, assert_similar, check_case
from hal.conformance.contract import contract_cases


def test_node_cases_are_every_onnx_node_case_with_an_op_each() -> None:
    cases = node_cases()
    assert len({c.name for c in cases}) == len(cases)
    if onnx.__version__ == "1.23.2":
        assert len(cases) == 1884
    assert all(c.op and c.kind == "node" for c in cases)


def test_expanded_cases_count_for_the_op_of_their_single_node_twin() -> None:
    by_name = {c.name: c for c in node_cases()}
    assert by_name["test_layer_normalization_2d_axis0_expanded"].op == "LayerNormalization"
    assert by_name["test_sequence_map_add_2_sequences_expanded"].op == "SequenceMap"
    assert "Loop" in by_name["test_range_float_type_positive_delta_expanded"].ops
    assert by_name["test_if"].ops >= {"If", "Constant"}  # subgraph ops are listed too


def test_light_models_come_with_dummy_inputs_and_expected_outputs() -> None:
    cases = light_cases()
    assert [c.name for c in cases] == [f"test_light_{n}" for n in LIGHT_MODELS]
    c = cases[0]
    (inputs, outputs), = c.data_sets
    assert inputs[0].dtype == np.float32 and inputs[0].shape == (1, 3, 224, 224)
    assert inputs[0].flat[1] == pytest.approx(1 / inputs[0].size)  # onnx's random=False dummy data
    assert outputs[0].shape == (1, 1000)
    assert (c.rtol, c.atol) == (1e-3, 1e-5)


def test_contract_cases_cover_every_check_on_both_zoo_models() -> None:
    names = {c.name for c in contract_cases()}
    for check in ("report_schema", "compile_deterministic", "run_deterministic", "capability_matches_compile",
                  "bad_feeds_raise_input_error", "serialize_roundtrip"):
        assert {f"test_contract_{check}_tiny_cnn", f"test_contract_{check}_tiny_gpt"} <= names
    assert "test_contract_capability_refuses_unknown_op" in names


def test_data_set_entries_become_runtime_values() -> None:
    t = onnx.numpy_helper.from_array(np.arange(3, dtype=np.int32))
    assert to_value(t).dtype == np.int32
    seq = onnx.numpy_helper.from_list([np.ones(2, np.float32)])
    assert isinstance(to_value(seq), list)
    assert to_value(onnx.numpy_helper.from_optional(None)) is None
    assert to_value(np.float32(2)).shape == ()


class TestComparison:
    def test_equal_outputs_pass_and_small_differences_within_tolerance_pass(self) -> None:
        a = np.array([1.0, 2.0], np.float32)
        assert_similar([a], [a + 1e-4], rtol=1e-3, atol=1e-7)

    def test_wrong_value_dtype_or_shape_fails(self) -> None:
        a = np.array([1.0, 2.0], np.float32)
        for bad in (a + 1e-2, a.astype(np.float64), a.reshape(1, 2)):
            with pytest.raises(AssertionError):
                assert_similar([a], [bad], rtol=1e-3, atol=1e-7)

    def test_sequences_compare_item_by_item_including_0d_items(self) -> None:
        seq = [np.array(0.0, np.float32), np.arange(3, dtype=np.float32)]
        assert_similar([seq], [[x.copy() for x in seq]], 1e-3, 1e-7)
        with pytest.raises(AssertionError, match="item 1"):
            assert_similar([seq], [[seq[0], seq[1] + 1]], 1e-3, 1e-7)
        with pytest.raises(AssertionError, match="2 item"):
            assert_similar([seq], [seq[:1]], 1e-3, 1e-7)

    def test_empty_optional_must_be_matched_by_none(self) -> None:
        assert_similar([None], [None], 1e-3, 1e-7)
        with pytest.raises(AssertionError):
            assert_similar([None], [np.zeros(1)], 1e-3, 1e-7)
        with pytest.raises(AssertionError):
            assert_similar([np.zeros(1)], [None], 1e-3, 1e-7)

    def test_bfloat16_gets_two_ulps_as_in_onnx_runner(self) -> None:
        a = np.array([1.0, 2.0], dtype=ml_dtypes.bfloat16)
        b = (a.astype(np.float32) * (1 + 2**-7)).astype(ml_dtypes.bfloat16)
        assert_similar([a], [b], 1e-3, 1e-7)

    def test_strings_compare_exactly(self) -> None:
        a = np.array(["a", "b"], dtype=object)
        assert_similar([a], [a.copy()], 1e-3, 1e-7)
        with pytest.raises(AssertionError):
            assert_similar([a], [np.array(["a", "c"], dtype=object)], 1e-3, 1e-7)


def _case(name: str):
    return next(c for c in node_cases() if c.name == name)


def test_a_case_the_checker_rejects_fails_with_cause_checker() -> None:
    from hal.conformance.cases import ConformanceCase

    good = _case("test_abs")
    model = onnx.ModelProto()
    model.CopyFrom(good.model)
    model.graph.node[0].op_type = "NoSuchOpAnywhere"
    bad = ConformanceCase("test_broken", "Abs", "node", 1e-3, 1e-7, lambda: model, lambda: good.data_sets)
    with pytest.raises(CaseFailure) as e:
        check_case(bad, "cpu")
    assert e.value.cause == "checker"
    assert "NoSuchOpAnywhere" in e.value.message


def test_a_passing_case_passes_and_a_missing_kernel_is_cause_no_kernel(monkeypatch) -> None:
    check_case(_case("test_abs"), "cpu")
    from hal.kernels import registry

    monkeypatch.setitem(registry._REGISTRY, ("", "Abs"), [])
    with pytest.raises(CaseFailure) as e:
        check_case(_case("test_abs"), "cpu")
    assert e.value.cause == "no kernel"


def test_a_node_the_target_turns_down_is_cause_refused_and_one_hal_cannot_run_no_kernel(monkeypatch) -> None:
    """The LPU refuses NonZero (its output's length is data's, where its schedule is static), which
    hal's kernels run: "refused", not "no kernel" (which its manifest had said of 62 such cases).
    An op hal has no kernel for stays "no kernel" on every target."""
    with pytest.raises(CaseFailure) as e:
        check_case(_case("test_nonzero_example"), "lpu")
    assert e.value.cause == "refused" and "data-dependent output shape" in e.value.message
    check_case(_case("test_nonzero_example"), "cpu")
    from hal.kernels import registry

    monkeypatch.setitem(registry._REGISTRY, ("", "Abs"), [])
    for target in ("cpu", "lpu", "gpu", "wafer"):
        with pytest.raises(CaseFailure) as e:
            check_case(_case("test_abs"), target)
        assert e.value.cause == "no kernel", target


def _softmax(s: np.ndarray) -> np.ndarray:
    z = np.exp(s.astype(np.float64) - s.max())
    return (z / z.sum()).astype(np.float32)


def test_scores_a_float32_step_apart_are_compared_where_their_softmax_cannot_be() -> None:
    # light_squeezenet's case: 1000 scores of 9.5e9 (a float32 step is 1024), shipped softmax 1/1000 each
    from hal.conformance.check import assert_scored

    shipped = np.full((1, 1000), 1e-3, dtype=np.float32)
    tied = np.full((1, 1000), 9.5e9, dtype=np.float32)
    assert_scored([shipped], [_softmax(tied)], tied, 1e-3, 1e-5)
    stepped = tied.copy()
    stepped[0, :4] = np.nextafter(np.float32(9.5e9), np.float32(np.inf))  # 4 scores one step up
    out = _softmax(stepped)
    assert out[0, 0] > 0.2  # onnx's comparison alone would fail it
    with pytest.raises(AssertionError):
        assert_similar([shipped], [out], 1e-3, 1e-5)
    assert_scored([shipped], [out], stepped, 1e-3, 1e-5)
    far = stepped.copy()
    far[0, 7] += 1e8  # scores a hundred thousand steps apart are wrong scores, whatever their softmax
    with pytest.raises(AssertionError, match="the scores the final Softmax reads"):
        assert_scored([shipped], [_softmax(far)], far, 1e-3, 1e-5)
    with pytest.raises(AssertionError, match="the softmax of its scores"):
        assert_scored([shipped], [shipped], stepped, 1e-3, 1e-5)  # an output that is not their softmax
    small = np.full((1, 1000), 3.0, dtype=np.float32)
    small[0, 0] = 4.0  # where a step is small, the shipped output is the comparison, as onnx's runner makes it
    with pytest.raises(AssertionError):
        assert_scored([shipped], [_softmax(small)], small, 1e-3, 1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_light_squeezenet_passes_on_cpu_on_one_blas_thread_and_on_two(threads: int) -> None:
    # its scores tie on two OpenBLAS threads here and sit a float32 step apart on one
    from threadpoolctl import threadpool_limits

    (case,) = [c for c in light_cases() if c.name == "test_light_squeezenet"]
    assert case.scores and case.model.graph.output[-1].name == case.model.graph.node[-1].input[0]
    with threadpool_limits(limits=threads, user_api="blas"):
        check_case(case, "cpu")
