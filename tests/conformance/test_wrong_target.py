"""A deliberately wrong target (every Add off by 1e-2) is caught, in exactly the cases that use Add."""

from __future__ import annotations

from hal.conformance.profiles import load_profile
from hal.conformance.report import ConformanceReport
from hal.conformance.suite import run_suite, select_cases


def test_the_suite_fails_exactly_the_cases_that_use_add(wrong_add: str) -> None:
    core = load_profile("core")
    cases = [c for c in select_cases(core) if c.kind == "node"]
    results = run_suite(wrong_add, core, cases=cases)
    by_name = {c.name: c for c in cases}
    wrong = [r for r in results if r.outcome == "failed" and r.cause == "wrong numbers"]
    # every case of the Add op is caught ...
    add_cases = {c.name for c in cases if c.op == "Add"}
    assert add_cases and add_cases <= {r.name for r in wrong}
    # ... and nothing that does not run an Add is
    assert all("Add" in by_name[r.name].ops for r in wrong), [r.name for r in wrong if "Add" not in by_name[r.name].ops]
    # the per-op table shows wrong numbers only for Add and ops whose expanded cases contain an Add
    report = ConformanceReport.build(results, target=wrong_add, profile="core")
    failing_ops = {r.op for r in wrong}
    assert "Add" in failing_ops
    assert failing_ops <= {c.op for c in cases if "Add" in c.ops}
    assert report.totals.failed >= len(add_cases)


def test_the_same_cases_pass_on_the_reference(wrong_add: str) -> None:
    core = load_profile("core")
    cases = [c for c in select_cases(core) if c.kind == "node" and c.op == "Add"]
    assert {r.outcome for r in run_suite("cpu", core, cases=cases)} == {"passed"}
    assert {r.outcome for r in run_suite(wrong_add, core, cases=cases)} == {"failed"}


def test_the_contract_still_holds_for_the_wrong_target(wrong_add: str) -> None:
    """Wrong numbers are not a contract breach: the contract checks pass, so the failure table is only numeric."""
    results = run_suite(wrong_add, "core", cases=[c for c in select_cases("core") if c.kind == "contract"])
    assert {r.outcome for r in results} == {"passed"}, [r.message for r in results if r.outcome != "passed"]
