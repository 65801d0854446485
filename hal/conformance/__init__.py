"""Conformance: onnx's node tests, the light model zoo and API contract tests, on any target.

    from hal.conformance import run_suite, ConformanceReport
    results = run_suite("gpu", "core")
    report = ConformanceReport.build(results, target="gpu", profile="core")

From the shell: ``hal conformance TARGET`` or ``pytest --hal-target TARGET`` (the pytest plugin).
Names load lazily, so the dormant pytest plugin costs nothing to import.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "CaseFailure": "hal.conformance.check",
    "check_case": "hal.conformance.check",
    "assert_similar": "hal.conformance.check",
    "ConformanceCase": "hal.conformance.cases",
    "node_cases": "hal.conformance.cases",
    "light_cases": "hal.conformance.cases",
    "shipped_cases": "hal.conformance.cases",
    "contract_cases": "hal.conformance.contract",
    "Profile": "hal.conformance.profiles",
    "load_profile": "hal.conformance.profiles",
    "load_manifest": "hal.conformance.profiles",
    "write_manifest": "hal.conformance.profiles",
    "CaseResult": "hal.conformance.report",
    "ConformanceReport": "hal.conformance.report",
    "run_suite": "hal.conformance.suite",
    "select_cases": "hal.conformance.suite",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hal.conformance' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = sorted(_EXPORTS)
