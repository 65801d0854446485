"""The differential sweep (benchmarks/differential.py): random small models of every family
(benchmarks/differential_cases.py gathers them), each run by onnxruntime and by every hal target. A
bounded sweep of each family is a test against onnxruntime's numbers; the plumbing (verdicts, saved
findings, exit code) is checked with a peer made to disagree."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import hal
from benchmarks import differential
from benchmarks.differential_cases import FAMILIES, build

TARGETS = [t.name for t in hal.targets()]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_bounded_sweep_finds_nothing_on_any_target(family) -> None:
    # 30 draws of the family (its dtypes and most attribute paths), on every installed target; the
    # committed results/differential.json is the long run of the same sweep
    if family == "ml_sklearn":  # (scikit-learn and skl2onnx come with the bench extra, not the dev one)
        pytest.importorskip("skl2onnx")
    result = differential.sweep(30, 0, [family], TARGETS, None)
    assert result["findings"] == []
    verdicts = result["verdicts"]
    assert sum(verdicts.values()) >= 15 * len(TARGETS), verdicts  # (invalid draws are few)
    # most of what ran agrees; a target refuses what its spec's dtypes leave out (strings off cpu), the
    # cpu reference target nothing
    ran = sum(verdicts.values()) - verdicts.get("refused", 0)
    assert verdicts.get("agree", 0) > 0.5 * ran, verdicts
    assert not result["by_family"][family]["cpu"].get("refused"), result["by_family"][family]


def _disagreeing(monkeypatch: pytest.MonkeyPatch, peer_too: bool, reference_too: bool) -> None:
    """onnxruntime's (and onnx's reference's) outputs moved by 1 where asked."""
    def moved(run):
        def wrapper(*args):
            outs = run(*args)
            return None if outs is None else [np.asarray(o) + np.asarray(1, np.asarray(o).dtype) for o in outs]
        return wrapper

    if peer_too:
        monkeypatch.setattr(differential, "_onnxruntime", moved(differential._onnxruntime))
    if reference_too:
        monkeypatch.setattr(differential, "_reference", moved(differential._reference))


def test_hal_agreeing_with_the_reference_where_onnxruntime_parts_follows_onnx(monkeypatch) -> None:
    _disagreeing(monkeypatch, peer_too=True, reference_too=False)
    case = build(0, "reduce")
    assert case is not None
    verdict, detail = differential.judge(case, ["cpu"])["cpu"]
    assert verdict == "follows_onnx" and "off at" in detail


def test_a_finding_saves_its_model_and_feeds_and_fails_the_command(monkeypatch, tmp_path: Path, capsys) -> None:
    _disagreeing(monkeypatch, peer_too=True, reference_too=True)
    out, found = tmp_path / "d.json", tmp_path / "found"
    code = differential.main(["--cases", "2", "--families", "reduce,einsum", "--targets", "cpu", "--out", str(out),
                              "--findings", str(found)])
    assert code == 1
    doc = json.loads(out.read_text())
    assert doc["schema"] == "hal-differential/1" and doc["verdicts"] == {"finding": 2}
    assert {f["family"] for f in doc["findings"]} == {"reduce", "einsum"}
    assert sorted(p.name for p in found.iterdir()) == ["einsum-0.npz", "einsum-0.onnx", "reduce-0.npz", "reduce-0.onnx"]
    assert "finding: reduce seed 0 on cpu" in capsys.readouterr().out


def test_an_unknown_family_is_refused_by_name(capsys) -> None:
    with pytest.raises(SystemExit):
        differential.main(["--families", "reduce,nope"])
    assert "unknown families ['nope']" in capsys.readouterr().err


@pytest.mark.parametrize(("want", "got", "says"), [
    ([np.zeros(3, np.float32)], [np.zeros(4, np.float32)], "float32[4] where float32[3]"),
    ([np.array([1.0, np.nan])], [np.array([np.nan, 1.0])], "NaN or inf at other places"),
    ([np.array([1, 2], np.int64)], [np.array([1, 3], np.int64)], "1 of 2 values differ"),
    ([np.array(["a", "b"])], [np.array(["a", "b"], object)], None),
    ([np.array(["a", "b"])], [np.array(["a", "c"], object)], "1 of 2 values differ"),
    ([np.array([1.0, 2.0], np.float32)], [np.array([1.0, 2.001], np.float32)], "off at 1"),
    ([np.array([1.0, 2.0], np.float16)], [np.array([1.0, 2.001], np.float16)], None),
    ([[{1: 0.5, 2: 0.25}]], [[{2: 0.25, 1: 0.5}]], None),  # (ZipMap's sequence of maps)
    ([[{1: 0.5}]], [[{2: 0.5}]], "map 0 has keys"),
    ([[{1: 0.5}]], [[{1: 0.5}, {1: 2.0}]], "2 maps where 1"),
    ([[{"a": 1.0}, {"a": 2.0}]], [[{"a": 1.0}, {"a": 2.001}]], "off at 1"),
    ([[{1: 0.5}]], [[]], "0 maps where 1"),
])
def test_mismatch_says_what_differs_within_the_dtypes_tolerance(want, got, says) -> None:
    why = differential.mismatch(want, got)
    assert (why is None) if says is None else (says in why)


def test_the_peer_computes_qmoe_as_defined_on_every_host(monkeypatch) -> None:
    # msmoe draw 16 (4-bit experts scaled per row): on an AVX-512 host onnxruntime's default packs
    # the dequantised weights again into MLAS's blocked Q4 format (1.07e-3 off); the peer runs with
    # that switch off, and puts the caller's environment back
    case = build(16, "msmoe")
    assert case is not None
    monkeypatch.setenv("ORT_USE_MLAS_Q4_GEMM_MOE", "1")
    peer = differential._onnxruntime(case.proto.SerializeToString(), case.feeds)
    assert os.environ["ORT_USE_MLAS_Q4_GEMM_MOE"] == "1"
    monkeypatch.delenv("ORT_USE_MLAS_Q4_GEMM_MOE")
    differential._onnxruntime(case.proto.SerializeToString(), case.feeds)
    assert "ORT_USE_MLAS_Q4_GEMM_MOE" not in os.environ
    got = hal.InferenceSession(case.proto.SerializeToString(), target="cpu", cache_dir=False).run(None, case.feeds)
    np.testing.assert_allclose(got[0], peer[0], rtol=1e-6, atol=1e-7)
