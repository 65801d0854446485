"""compare and NaN/inf: a NaN or inf the reference has not is a wrong output, not an error of 0; a
reference that is not finite is said so, as agreement there says little."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper

import hal
from hal import render
from hal.compare import CompareReport, TargetResult, diff

NAN, INF = np.nan, np.inf


@pytest.mark.parametrize(("got", "ref", "said"), [
    ([NAN, 1.0], [2.0, 1.0], "NaN at 1 of 2 values where the reference's is finite"),
    ([2.0, 1.0], [NAN, 1.0], "finite at 1 of 2 values where the reference's is NaN"),
    ([INF, 1.0], [2.0, 1.0], "+inf at 1 of 2 values where the reference's is finite"),
    ([-INF, 1.0], [INF, 1.0], "-inf at 1 of 2 values where the reference's is +inf"),
    ([NAN, NAN, 1.0], [INF, INF, 1.0], "NaN at 2 of 3 values where the reference's are +inf"),
    ([NAN, 5.0, 1.0], [0.0, NAN, 1.0], "NaN at 1 of 3 values where the reference's is finite, "
                                       "and finite at 1 of 3 values where the reference's is NaN"),
])
def test_a_nan_or_inf_the_reference_has_not_is_a_mismatch(got, ref, said):
    d = diff("y", np.array(got, np.float32), np.array(ref, np.float32), 1e-4)
    assert not d.within_tolerance and d.mismatch == said
    assert (d.max_abs, d.max_rel, d.cosine) == (np.inf, np.inf, 0.0)


def test_a_nan_against_nan_or_the_same_infinity_agrees_as_numpy_equal_nan():
    ref = np.array([NAN, INF, -INF, 1.0], np.float32)
    d = diff("y", ref.copy(), ref, 1e-4)
    assert d.within_tolerance and d.mismatch is None and (d.max_abs, d.max_rel, d.cosine) == (0.0, 0.0, 1.0)
    near = diff("y", np.array([NAN, INF, -INF, 1.00001], np.float32), ref, 1e-4)
    assert near.within_tolerance and 0 < near.max_abs < 1e-4


def test_a_nan_in_a_sequence_or_after_a_dtype_mismatch_is_named_too():
    ref = [np.array([1.0, 2.0], np.float32)]
    d = diff("s", [np.array([1.0, NAN], np.float32)], ref, 1e-4)
    assert not d.within_tolerance and d.mismatch == "NaN at 1 of 2 values where the reference's is finite"
    wide = diff("y", np.array([NAN, 2.0]), ref[0], 1e-4)
    assert wide.mismatch == ("dtype float64, the reference's float32; "
                             "NaN at 1 of 2 values where the reference's is finite")


def test_a_nan_output_reads_as_a_wrong_output_in_the_table_and_notes():
    d = diff("s", np.array(NAN, np.float32), np.array(1.0, np.float32), 1e-4)
    rep = CompareReport(model="m", precision="exact", tolerance=1e-4, inputs={}, results=[
        TargetResult(target="t", status="ok", precision="exact", outputs=[d])])
    cells = render.row(rep.results[0])
    assert cells[1:5] == ["wrong output", "inf", "inf", "0.000000"]
    assert render.notes(rep) == ["t: output 's' is NaN at 1 of 1 value where the reference's is finite"]


def _model(op: str, n: int) -> bytes:
    g = helper.make_graph([helper.make_node(op, ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def test_a_reference_output_that_is_not_finite_is_a_warning_of_the_report():
    # every target agrees with an all-NaN reference by giving NaN: it read "ok, error 0, cosine 1"
    rep = hal.compare(_model("Sqrt", 4), "cpu", inputs={"x": np.full(4, -1.0, np.float32)})
    assert rep.results[0].status == "ok" and rep.results[0].outputs[0].within_tolerance
    assert rep.warnings == ["reference output 'y' is 100% NaN: the comparison says little (a target agrees by "
                            "giving the same NaN/inf, whatever its numbers); check the inputs"]
    assert render.notes(rep)[0] == f"warning: {rep.warnings[0]}"
    assert f"- warning: {rep.warnings[0]}" in render.to_markdown(rep)
    part = hal.compare(_model("Log", 8), "cpu", inputs={"x": np.array([-1, 0, 0, 1, 2, 3, 4, 5], np.float32)})
    assert part.warnings == ["reference output 'y' is 12.5% NaN and 25% inf (3 of 8 values): those values agree "
                             "only as NaN/inf, not as numbers"]
    assert hal.compare(_model("Sqrt", 4), "cpu", inputs={"x": np.ones(4, np.float32)}).warnings == []


def _constant_mvn() -> bytes:
    """MeanVarianceNormalization of a one-value group: hal gives 0 (the function body's epsilon),
    onnxruntime NaN (0 / 0). (DynamicQuantizeLinear's all-NaN scale was the case here until hal
    followed onnx's reference there and gave NaN too.)"""
    g = helper.make_graph([helper.make_node("MeanVarianceNormalization", ["x"], ["y"])], "mvn",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1, 1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 1])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def test_hal_compare_shows_a_peer_giving_nan_where_the_reference_does_not(tmp_path):
    # the reviewer's case: the peer's row read "ok (beyond tolerance) | 0 | 0 | 1.000000"
    pytest.importorskip("onnxruntime")
    (tmp_path / "mvn.onnx").write_bytes(_constant_mvn())
    np.savez(tmp_path / "x.npz", x=np.full((1, 1, 1, 1), 3.0, np.float32))
    res = subprocess.run([sys.executable, "-m", "hal.cli", "compare", str(tmp_path / "mvn.onnx"), "--inputs",
                          str(tmp_path / "x.npz"), "--targets", "cpu", "--peer", "onnxruntime", "--json", "-"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stderr
    def strict(name: str) -> None:  # a bare Infinity or NaN is not JSON (RFC 8259): jq and JavaScript reject it
        raise AssertionError(f"--json wrote a bare {name}")

    doc = json.loads(res.stdout, parse_constant=strict)
    (s,) = doc["peers"][0]["outputs"]
    assert s["mismatch"] == "NaN at 1 of 1 value where the reference's is finite" and not s["within_tolerance"]
    assert s["max_abs"] == "Infinity" and s["cosine"] == 0.0
    from hal.compare import CompareReport

    assert CompareReport.model_validate(doc).peers[0].outputs[0].max_abs == float("inf")  # (read back as a float)
