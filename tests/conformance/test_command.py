"""`hal conformance TARGET`: the certification run CI makes on the reference target."""

from __future__ import annotations

import argparse
import json

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
    assert report.hal_version and report.onnx_version and report.totals.total == sum(o.total for o in report.ops)


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
    args = _args("no-such-target")
    assert args.func(args) == 2
    assert "did not run" in capsys.readouterr().out
