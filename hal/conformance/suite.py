"""The suite as a library: select a profile's cases, run them on a target, collect CaseResults.

The pytest plugin and ``hal conformance`` run the same cases through pytest (for xdist and for
vendors' CI); ``run_suite`` runs them in this process, which tests and notebooks use.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from hal.conformance.cases import light_cases, node_cases, plugin_cases, shipped_cases
from hal.conformance.check import CaseFailure, check_case
from hal.conformance.contract import contract_cases
from hal.conformance.profiles import ManifestEntry, Profile, cause_mismatch, check_target_precision, load_profile
from hal.conformance.report import CaseResult

Case = Any  # ConformanceCase | ContractCase | BrokenPluginCase: all have name, op, kind, ops


def select_cases(profile: Profile | str) -> list[Case]:
    """The cases of a profile, in a stable order: node cases, light models, shipped models, plugin
    cases, contract."""
    prof = load_profile(profile) if isinstance(profile, str) else profile
    cases: list[Case] = [c for c in node_cases() if prof.includes(c)]
    if prof.light_models:
        cases += light_cases()
    if prof.shipped_models:
        cases += shipped_cases()
    cases += plugin_cases()
    if prof.contract:
        cases += contract_cases()
    return cases


def run_case(case: Case, target: str, profile: Profile, precision: str = "exact") -> str | None:
    """Run one case; raises CaseFailure when it does not pass. Returns a note on what the case checked, when
    it says more than its name (a contract check run on the part of its model the target takes), else None."""
    if hasattr(case, "run"):  # a contract check, or a plugin's hook that gave no case (cases.BrokenPluginCase)
        return case.run(target)
    check_case(case, target, precision, profile.tolerance(precision))
    return None


def run_suite(target: str, profile: Profile | str = "core", *, precision: str = "exact",
              cases: Iterable[Case] | None = None,
              manifest: dict[str, ManifestEntry] | None = None) -> list[CaseResult]:
    """Run the profile's cases (or ``cases``) in this process. A case the manifest lists counts as xfail
    when it fails with the entry's cause, and as failed, saying so, with another; a case that fails for
    want of a package on this host is skipped (cause "environment"). A precision the target does not
    offer is an InputError before any case runs."""
    prof = load_profile(profile) if isinstance(profile, str) else profile
    check_target_precision(target, precision, where="precision")
    manifest = manifest or {}
    results = []
    for case in select_cases(prof) if cases is None else cases:
        t0 = time.perf_counter()
        entry = manifest.get(case.name)
        try:
            note = run_case(case, target, prof, precision)
        except CaseFailure as e:
            message, outcome = e.message, "xfailed" if entry is not None else "failed"
            if e.cause == "environment":
                outcome = "skipped"
            elif (mismatch := cause_mismatch(entry, e.cause, e.message)) is not None:
                message, outcome = mismatch, "failed"
            results.append(CaseResult(name=case.name, op=case.op, kind=case.kind, outcome=outcome, cause=e.cause,
                                      message=message, duration_s=time.perf_counter() - t0))
            continue
        results.append(CaseResult(name=case.name, op=case.op, kind=case.kind,
                                  outcome="xpassed" if entry is not None else "passed", message=note,
                                  duration_s=time.perf_counter() - t0))
    return results
