"""ConformanceReport: what one suite run on one target found — the table a vendor publishes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Literal

from pydantic import Field

# the wire models' base: extra fields forbidden, one shared field-name set for instances given every
# field (a suite run holds a CaseResult per case)
from hal.specs import HalModel

Outcome = Literal["passed", "failed", "xfailed", "xpassed", "skipped"]


class CaseResult(HalModel):
    """One case: its outcome and, when it did not pass, the kind of failure and the message."""

    name: str
    op: str
    kind: str = Field(description="node | light | model | contract | plugin")
    outcome: Outcome
    cause: str | None = Field(default=None,
                              description="no kernel | refused | wrong numbers | error | checker | contract | "
                                          "environment (this host lacks a package the case needs: skipped) | "
                                          "plugin (a plugin's case hook failed)")
    message: str | None = Field(default=None, description="why it did not pass; for a passed case, what it "
                                                        "checked where its name does not say it all (a contract check "
                                                        "on the part of its model the target takes)")
    duration_s: float = 0.0


class _Counts(HalModel):
    total: int = 0
    passed: int = 0
    failed: int = 0
    xfailed: int = 0
    xpassed: int = 0
    skipped: int = 0

    def count(self, outcome: Outcome) -> None:
        self.total += 1
        setattr(self, outcome, getattr(self, outcome) + 1)

    def cases_ran(self) -> int:
        """The cases that ran: total less skipped (a skipped case did not run: no pass, no failure)."""
        return self.total - self.skipped

    def passing_share(self) -> float:
        """Passed (xpassed included) over the cases that ran; 0.0 when none ran."""
        ran = self.cases_ran()
        return (self.passed + self.xpassed) / ran if ran else 0.0


class OpResult(_Counts):
    """The cases of one op (light models, shipped models and contract checks each form one row)."""

    op: str

    @property
    def ok(self) -> bool:
        return self.failed == 0


class Totals(_Counts):
    ran: int = Field(default=0, description="the cases that ran: total less skipped (a case is skipped when this "
                                            "host lacks a package it needs, cause environment: it did not run)")
    pass_rate: float = Field(default=0.0, description="passed (xpassed included) / ran: skipped cases are not in "
                                                      "the denominator (0.0 when no case ran)")
    pass_rate_denominator: Literal["ran"] = Field(default="ran", description="the count pass_rate divides by: ran "
                                                                             "(total less skipped)")


class ConformanceReport(HalModel):
    """Totals, a pass table per op, and every case that did not pass, with its message."""

    target: str
    profile: str
    precision: str = "exact"
    hal_version: str
    hal_api: str
    onnx_version: str
    target_version: str | None = None
    workers: int = 1
    duration_s: float = 0.0
    totals: Totals
    ops: list[OpResult]
    stopped: str | None = Field(default=None, description="why the run stopped before every selected case ran "
                                                          "(the cases it lists are the ones that ran); None: all ran")
    stale_manifest_entries: list[str] = Field(default_factory=list, description=(
        "cases the manifest lists that the suite has none of (renamed or dropped by onnx, or a plugin's): "
        "they waive nothing; regenerating the manifest drops them"))
    failures: list[CaseResult] = Field(default_factory=list, description="failed and xfailed cases")
    cases: list[CaseResult] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.totals.failed == 0 and self.stopped is None

    def not_written(self) -> str:
        """What of this run's failures a manifest written from it leaves out, in words ("" when nothing):
        the API contract's, which is never an expected failure, and plugins' failed case hooks."""
        contract = sum(r.outcome == "failed" and (r.kind == "contract" or r.cause == "contract") for r in self.cases)
        hooks = sum(r.outcome == "failed" and r.cause == "plugin" for r in self.cases)
        said = [f"{contract} API contract failure(s): the contract cannot be waived, fix the target "
                "(specs/interface.md section 10)"] if contract else []
        said += [f"{hooks} failed plugin case hook(s): the plugin's to fix"] if hooks else []
        return "; ".join(said)

    @classmethod
    def build(cls, results: Iterable[CaseResult], *, target: str, profile: str, precision: str = "exact",
              workers: int = 1, duration_s: float = 0.0, stopped: str | None = None) -> ConformanceReport:
        import onnx

        import hal
        from hal.specs import HAL_API_VERSION

        results = sorted(results, key=lambda r: r.name)
        per_op: dict[str, OpResult] = defaultdict(lambda: OpResult(op=""))
        totals = Totals()
        for r in results:
            per_op[r.op].op = r.op
            per_op[r.op].count(r.outcome)
            totals.count(r.outcome)
        totals.ran, totals.pass_rate = totals.cases_ran(), totals.passing_share()
        version = None
        try:
            from hal.plugins import get_target

            version = get_target(target).spec.version
        except Exception:  # the report is still worth writing when the target is gone
            version = None
        return cls(target=target, profile=profile, precision=precision, hal_version=hal.__version__,
                   hal_api=HAL_API_VERSION, onnx_version=onnx.__version__, target_version=version,
                   workers=workers, duration_s=duration_s, stopped=stopped, totals=totals,
                   ops=sorted(per_op.values(), key=lambda o: o.op.lower()),
                   failures=[r for r in results if r.outcome in ("failed", "xfailed")], cases=results)
