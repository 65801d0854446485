"""The pytest plugin: dormant by default; with --hal-target it runs the suite from any folder."""

from __future__ import annotations

import json

from _support import run_pytest

from hal.conformance.profiles import load_manifest
from hal.conformance.report import ConformanceReport


def test_without_hal_target_the_plugin_leaves_ordinary_runs_alone(tmp_path) -> None:
    (tmp_path / "test_mine.py").write_text("def test_mine():\n    assert True\n")
    r = run_pytest(tmp_path, "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout and "hal[" not in r.stdout
    assert "--hal-target" in run_pytest(tmp_path, "--help").stdout


def test_hal_target_runs_the_suite_in_a_folder_without_tests(tmp_path) -> None:
    r = run_pytest(tmp_path, "--hal-target", "cpu", "--hal-profile", "full", "-v", "-k",
                   "test_abs or test_relu or Softsign")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert "hal[cpu]::node::test_abs PASSED" in r.stdout
    assert "hal[cpu]::node::test_softsign_example PASSED" in r.stdout  # -k matches the op type too
    assert "hal conformance: target cpu, profile full" in r.stdout  # report header


def test_manifest_entries_are_xfail_with_their_reason_and_a_run_regenerates_the_manifest(tmp_path) -> None:
    # cpu's Bernoulli draws are not onnx's reference's: test_bernoulli_seed and its _expanded twin fail with
    # wrong numbers on demand. An entry with another cause does not make its case xfail: it fails, saying so.
    manifest = tmp_path / "xfail.toml"
    manifest.write_text('target = "cpu"\n'
                        '[[xfail]]\ncase = "test_bernoulli_seed"\ncause = "wrong numbers"\nreason = "other draws"\n'
                        '[[xfail]]\ncase = "test_bernoulli_seed_expanded"\ncause = "refused"\nreason = "old"\n')
    out, report = tmp_path / "new.toml", tmp_path / "r.json"
    r = run_pytest(tmp_path, "--hal-target", "cpu", "--hal-profile", "full", "--hal-manifest", str(manifest),
                   "--hal-write-manifest", str(out), "--hal-json", str(report), "-k", "test_bernoulli_seed or test_abs",
                   "-rxf")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr
    assert "XFAIL hal[cpu]::node::test_bernoulli_seed - other draws" in r.stdout
    assert "FAILED hal[cpu]::node::test_bernoulli_seed_expanded" in r.stdout
    failed = {c.name: c for c in ConformanceReport.model_validate_json(report.read_text()).cases}
    assert failed["test_bernoulli_seed_expanded"].outcome == "failed"
    assert failed["test_bernoulli_seed_expanded"].message.startswith(
        "the manifest expects this case to fail with cause 'refused' (old); it failed with cause 'wrong numbers'")
    assert failed["test_abs"].outcome == "passed"
    written = load_manifest(out, "cpu")
    assert set(written) == {"test_bernoulli_seed", "test_bernoulli_seed_expanded"}
    assert {e.cause for e in written.values()} == {"wrong numbers"} and written["test_bernoulli_seed"].op == "Bernoulli"


def test_the_suite_runs_under_xdist_and_writes_a_conformance_report(tmp_path) -> None:
    out = tmp_path / "r.json"
    r = run_pytest(tmp_path, "--hal-target", "cpu", "--hal-profile", "full", "-n", "2", "--hal-json", str(out),
                   "-k", "test_abs or test_if or test_loop11 or test_light_squeezenet or contract_run_deterministic")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    report = ConformanceReport.model_validate(json.loads(out.read_text()))
    assert report.target == "cpu" and report.profile == "full" and report.workers == 2
    assert report.totals.failed == 0 and report.totals.passed == report.totals.total >= 6
    assert {"Abs", "If", "Loop", "light model", "api contract"} <= {o.op for o in report.ops}


def test_an_unknown_target_is_a_usage_error_naming_the_installed_ones(tmp_path) -> None:
    r = run_pytest(tmp_path, "--hal-target", "no-such-target")
    assert r.returncode == 4
    assert "no target named 'no-such-target'" in r.stderr and "cpu" in r.stderr


def test_a_bad_profile_or_manifest_is_a_usage_error_naming_its_own_option(tmp_path) -> None:
    """Both had been blamed on --hal-target (and a malformed file had been an INTERNALERROR traceback)."""
    (tmp_path / "p.toml").write_text("[tolerances.fp16]\nrtol = 'abc'\n")
    (tmp_path / "m.toml").write_text("xfail = [1]\n")
    for option, file, says in (("--hal-profile", "p.toml", "tolerances.fp16.rtol should be a valid number"),
                               ("--hal-manifest", "m.toml", "xfail[0] should be a table"),
                               ("--hal-manifest", "nope.toml", "no such expected-failure manifest")):
        r = run_pytest(tmp_path, "--hal-target", "cpu", option, str(tmp_path / file))
        assert r.returncode == 4 and f"ERROR: {option}: {tmp_path / file}: " in r.stderr and says in r.stderr, r.stderr
        assert "INTERNALERROR" not in r.stdout + r.stderr


def test_a_run_stopped_by_a_usage_error_writes_no_report(tmp_path) -> None:
    """A bad -k expression had left a report of 0 cases, which `hal conformance` printed as a pass."""
    r = run_pytest(tmp_path, "--hal-target", "cpu", "-k", "and or (", "--hal-json", str(tmp_path / "r.json"))
    assert r.returncode == 4 and "Wrong expression passed to '-k'" in r.stderr, r.stdout[-2000:] + r.stderr
    assert not (tmp_path / "r.json").exists()
