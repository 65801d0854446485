"""The suite as a library: select a profile's cases, run them on a target, collect CaseResults.

The pytest plugin and ``hal conformance`` run the same cases through pytest (for xdist and for
vendors' CI); ``run_suite`` runs them in this process, which tests and notebooks use.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

from hal import limits
from hal.conformance.cases import light_cases, node_cases, plugin_cases, shipped_cases
from hal.conformance.check import CaseFailure, check_case
from hal.conformance.contract import contract_cases
from hal.conformance.profiles import (
    ManifestEntry,
    Profile,
    Tolerance,
    cause_mismatch,
    check_target_precision,
    load_profile,
)
from hal.conformance.report import CaseResult
from hal.errors import InputError

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


#: the seconds one case may take by default (``--timeout`` of ``hal conformance``, ``--hal-timeout`` of pytest):
#: the slowest case of hal's own targets, a light model, takes about 40 s on two cores
CASE_TIMEOUT_S = 600.0


def parse_timeout(value: str | float | None, where: str | None = None) -> float | None:
    """A case timeout option: seconds (a positive number), or 'none' (or 0) for no bound; else an InputError."""
    if value is None or str(value).strip().lower() in ("none", "0", "0.0"):
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise InputError(f"timeout {value!r} is not a number of seconds", where=where,
                         hint=f"give the seconds one case may take (default {CASE_TIMEOUT_S:g}), or 'none' for no "
                              "bound")
    return seconds


def floor(profile: Profile, target: str, precision: str) -> Tolerance:
    """The profile's tolerance floor for a run at ``precision``: at native, that of the format the target's
    spec says its matrix units take then (``native_format``), where the profile gives one, else native's."""
    from hal.plugins import get_target

    if precision == "native":
        fmt = get_target(target).spec.native_format
        if fmt and fmt in profile.tolerances:
            return profile.tolerance(fmt)
    return profile.tolerance(precision)


def run_case(case: Case, target: str, profile: Profile, precision: str = "exact",
             timeout_s: float | None = CASE_TIMEOUT_S) -> str | None:
    """Run one case; raises CaseFailure when it does not pass. Returns a note on what the case checked, when
    it says more than its name (a contract check run on the part of its model the target takes), else None.

    The case runs in a worker thread given up after ``timeout_s`` (None: inline, unbounded): a target whose
    compile or run hangs fails that case (cause "error") instead of stopping the certification with no verdict.
    Python cannot stop a thread, so the abandoned one runs on in the background until it returns."""
    def run() -> str | None:
        if hasattr(case, "run"):  # a contract check, or a plugin's hook that gave no case (cases.BrokenPluginCase)
            return case.run(target)
        check_case(case, target, precision, floor(profile, target, precision))
        return None

    try:
        return limits.call_with_timeout(run, timeout_s, f"hal-conformance-{case.name}")
    except limits.Timeout:
        raise CaseFailure("error", f"the case did not finish within {timeout_s:g} s, the suite's bound on one case: "
                                   "the target's compile or run hangs, or is that slow; the case was abandoned (its "
                                   "thread may still run in the background). For a case that is only slow, give "
                                   "more seconds: hal conformance --timeout S, pytest --hal-timeout S") from None


def run_suite(target: str, profile: Profile | str = "core", *, precision: str = "exact",
              cases: Iterable[Case] | None = None,
              manifest: dict[str, ManifestEntry] | None = None,
              timeout_s: float | None = CASE_TIMEOUT_S) -> list[CaseResult]:
    """Run the profile's cases (or ``cases``) in this process. A case the manifest lists counts as xfail
    when it fails with the entry's cause, and as failed, saying so, with another; a case that fails for
    want of a package on this host is skipped (cause "environment"); one that takes over ``timeout_s`` fails
    (``run_case``). A precision the target does not offer is an InputError before any case runs."""
    prof = load_profile(profile) if isinstance(profile, str) else profile
    check_target_precision(target, precision, where="precision")
    manifest = manifest or {}
    results = []
    for case in select_cases(prof) if cases is None else cases:
        t0 = time.perf_counter()
        entry = manifest.get(case.name)
        try:
            note = run_case(case, target, prof, precision, timeout_s)
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
