"""`hal conformance TARGET`: the certification run CI makes on the reference target."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from hal.conformance.command import register
from hal.conformance.profiles import load_profile
from hal.conformance.report import ConformanceReport


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hal")
    register(parser.add_subparsers())
    return parser.parse_args(["conformance", *argv])


def test_the_command_parses_its_options() -> None:
    a = _args("gpu", "--profile", "full", "--json", "r.json", "-n", "2", "--write-manifest")
    assert (a.target, a.profile, a.json_path, a.workers, a.write_manifest) == ("gpu", "full", "r.json", "2", "")
    assert a.func.__name__ == "run"


def test_core_profile_on_cpu_passes_and_reports_per_op(tmp_path, capsys) -> None:
    """CI's certification run: the core profile on the reference target (xdist is exercised elsewhere)."""
    out = tmp_path / "core.json"
    args = _args("cpu", "--profile", "core", "--json", str(out))
    rc = args.func(args)
    printed = capsys.readouterr().out
    report = ConformanceReport.model_validate(json.loads(out.read_text()))
    failed = [f"{f.name}: {f.message}" for f in report.failures if f.outcome == "failed"]
    assert rc == 0 and not failed, failed[:20]
    core = load_profile("core")
    assert {o.op for o in report.ops} - {"light model", "api contract"} <= core.ops
    light = next(o for o in report.ops if o.op == "light model")
    assert light.passed == light.total == 9
    assert "Conv" in printed and "passed" in printed
    # in a log, the heading and the summary are one line each (a bare Console() folded both at 80 columns)
    assert "hal conformance — target cpu, profile core, precision exact" in printed
    assert re.search(r"^\d+/\d+ passed .* on \d+ worker\(s\)$", printed, re.M), printed[-400:]
    assert report.hal_version and report.onnx_version and report.totals.total == sum(o.total for o in report.ops)


def test_json_without_a_file_prints_the_report_instead_of_the_table(tmp_path, capsys) -> None:
    """As every other hal command's --json: it had required a file."""
    (tmp_path / "relu.toml").write_text('[profile]\nops = ["Relu"]\nlight_models = false\ncontract = false\n')
    args = _args("cpu", "--profile", str(tmp_path / "relu.toml"), "--json")
    assert args.func(args) == 0
    report = ConformanceReport.model_validate_json(capsys.readouterr().out)
    assert report.ok and {o.op for o in report.ops} == {"Relu"} and report.totals.passed == report.totals.total > 0


@pytest.mark.slow
def test_full_profile_on_cpu_passes_with_its_manifest(tmp_path) -> None:
    out = tmp_path / "full.json"
    args = _args("cpu", "--profile", "full", "--json", str(out), "-n", "2", "--failing-only")
    rc = args.func(args)
    report = ConformanceReport.model_validate(json.loads(out.read_text()))
    failed = [f"{f.name}: {f.message}" for f in report.failures if f.outcome == "failed"]
    assert rc == 0 and not failed, failed[:20]
    assert sum(c.kind == "node" for c in report.cases) >= 1884


def test_a_target_that_does_not_exist_is_exit_status_2(capsys) -> None:
    """An InputError naming the installed targets before pytest starts (tests/conformance/test_suite_review.py)."""
    from hal.errors import InputError

    args = _args("no-such-target")
    with pytest.raises(InputError, match="no target named 'no-such-target'"):
        args.func(args)


@pytest.mark.parametrize(("argv", "says"), [
    (["--profile", "{tmp}/p.toml"], "p.toml: invalid conformance profile: profile should be a table, got 3"),
    (["--manifest", "{tmp}/m.toml"], "m.toml: invalid expected-failure manifest: xfail should be an array, got 3"),
    (["--manifest", "{tmp}/nope.toml"], "nope.toml: no such expected-failure manifest"),
    (["-k", "and or ("], "-k 'and or (' is not a valid expression"),
    (["-n", "-3"], "-n '-3' is not a number of workers"),
    (["-n", "two"], "-n 'two' is not a number of workers"),
    (["--precision", "fp99"], "unknown precision 'fp99' — precisions: exact, native"),
])
def test_bad_options_are_an_input_error_before_the_suite_starts(tmp_path, monkeypatch, capsys, argv, says) -> None:
    """Each had been a pytest INTERNALERROR traceback, a usage error blamed on --hal-target, a silent run
    on an empty manifest, "0/0 passed" with exit 0, "on -3 worker(s)", or every case failing as "error"."""
    import warnings

    from hal.cli import main

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main sets it for the process
    monkeypatch.setattr(pytest, "main", lambda *a, **k: pytest.fail("the suite started"))
    (tmp_path / "p.toml").write_text("profile = 3\n")
    (tmp_path / "m.toml").write_text("xfail = 3\n")
    rc = main(["conformance", "cpu", *(a.format(tmp=tmp_path) for a in argv)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: InputError: ") and says in err, err


def test_a_run_that_selects_no_case_is_an_error_not_a_pass(capsys) -> None:
    """-k matching nothing had printed "0/0 passed" and exited 0."""
    from hal.errors import InputError

    args = _args("cpu", "-k", "nothingmatches")
    with pytest.raises(InputError, match="no case matched -k 'nothingmatches'"):
        args.func(args)
    assert "passed" not in capsys.readouterr().out


def test_pass_rate_is_of_the_cases_that_ran(capsys) -> None:
    """A skipped case (this host lacks a package it needs) did not run: it had counted in pass_rate's total, so
    2 passed, 1 failed and 1 skipped read 50%, and every case skipped read as failing."""
    from hal.conformance.command import print_report
    from hal.conformance.report import CaseResult
    from hal.render import console

    outcomes = {"test_a": "passed", "test_b": "xpassed", "test_c": "failed", "test_d": "skipped"}
    report = ConformanceReport.build([CaseResult(name=n, op="Op", kind="node", outcome=o)
                                      for n, o in outcomes.items()], target="cpu", profile="core")
    t = report.totals
    assert (t.total, t.ran, t.skipped, t.pass_rate) == (4, 3, 1, 2 / 3)
    totals = json.loads(report.model_dump_json())["totals"]
    assert totals["ran"] == 3 and totals["pass_rate_denominator"] == "ran"
    assert ConformanceReport.model_validate_json(report.model_dump_json()) == report
    print_report(report, console())
    printed = " ".join(capsys.readouterr().out.split())
    assert "2/3 passed (66.7%), 1 failed" in printed and "1 skipped" in printed
    assert "│ Op │ 4 │ 1 │ 1 │ 0 │ 1 │ 67 │" in printed, printed
    skipped = ConformanceReport.build([CaseResult(name="test_d", op="Op", kind="node", outcome="skipped")],
                                      target="cpu", profile="core").totals
    assert (skipped.ran, skipped.pass_rate) == (0, 0.0)
