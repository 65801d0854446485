"""pytest plugin of the hal conformance suite, registered through the ``pytest11`` entry point.

Dormant unless ``--hal-target NAME`` is given; then the session runs the suite instead of
collecting test files, so ``pytest --hal-target cpu`` works from any folder:

    pytest --hal-target gpu --hal-profile full -n 4 --hal-json gpu.json

Each case is one item (``hal[TARGET]::node::test_abs``); ``-k`` also matches the op type
(``-k Conv``). Cases listed in the target's expected-failure manifest (hal's
specs/conformance/xfail-TARGET.toml for hal's own targets, ./xfail-TARGET.toml for a plugin's, or
``--hal-manifest``) are xfail with the manifest's reason when they fail with the entry's cause (failed,
saying so, with another); a case that fails for want of a package on this host is skipped.
``--hal-write-manifest PATH`` writes the manifest of this run's failures, less those that are not the
target's to expect (the API contract's, a plugin's failed case hook: ``profiles.waivable``). Works with
pytest-xdist: a case whose worker process dies (a segfault in a target's native code) fails, and is counted;
a run that stops before every collected case ran (xdist's bound on worker crashes) exits 2, and its report
says so (``ConformanceReport.stopped``). Without ``-n`` the cases run in pytest's own process, where a crash
ends the run (``hal conformance`` runs them in a worker, or a child process it watches: ``command.run_mode``).
A case that takes over ``--hal-timeout`` seconds (default 600) fails as a hang (``suite.run_case``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # hal is imported only once the suite is active: dormant runs pay nothing
    from hal.conformance.profiles import Profile
    from hal.conformance.report import CaseResult, ConformanceReport
    from hal.conformance.suite import Case

KINDS = ("node", "light", "model", "plugin", "contract")

#: where ``hal conformance``'s child process logs each case it starts and ends ("start NODEID", "end NODEID"),
#: so that the command can name the case a process that died was running (``command.check_child``)
PROGRESS_ENV = "HAL_CONFORMANCE_PROGRESS"


def unfinished_case(progress: Path) -> str | None:
    """The node id of the case the progress log (``PROGRESS_ENV``) says was started and never ended, if any."""
    try:
        lines = progress.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    last = lines[-1] if lines else ""
    return last[len("start "):] if last.startswith("start ") else None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hal", "hal conformance suite (dormant unless --hal-target is given)")
    group.addoption("--hal-target", default=None, metavar="NAME",
                    help="run the hal conformance suite on this target instead of collecting test files")
    group.addoption("--hal-profile", default="core", metavar="core|full|PATH",
                    help="certification profile: core (CNN + transformer ops), full (every node case), "
                         "or a profile .toml (default: core)")
    group.addoption("--hal-precision", default="exact", metavar="PRECISION",
                    help="compile precision; tolerances widen per the profile (default: exact)")
    group.addoption("--hal-manifest", default=None, metavar="PATH|none",
                    help="expected-failure manifest (default: hal's specs/conformance/xfail-TARGET.toml for hal's "
                         "own targets, ./xfail-TARGET.toml for a plugin's)")
    group.addoption("--hal-write-manifest", default=None, metavar="PATH",
                    help="after the run, write this run's failures as the expected-failure manifest")
    group.addoption("--hal-json", default=None, metavar="PATH", help="write a ConformanceReport (JSON) here")
    group.addoption("--hal-timeout", default=None, metavar="SECONDS|none",
                    help="seconds one case may take before it fails as a hang (default: 600; none: no bound)")


def pytest_configure(config: pytest.Config) -> None:
    target = config.getoption("hal_target", None)
    if not target:
        return
    from hal.errors import HalError
    from hal.plugins import get_target

    try:
        get_target(target)
    except HalError as e:
        raise pytest.UsageError(f"--hal-target: {e}") from None
    config.pluginmanager.register(SuiteState(config, target), "hal-conformance-suite")


def _option(config: pytest.Config, name: str, load: Any) -> Any:
    """``load`` of option ``--NAME``'s value; a HalError is a usage error naming the option."""
    from hal.errors import HalError

    try:
        return load(config.getoption(name.replace("-", "_")))
    except HalError as e:
        raise pytest.UsageError(f"--{name}: {e}") from None


def _timeout(value: str | None) -> float | None:
    from hal.conformance.suite import CASE_TIMEOUT_S, parse_timeout

    return CASE_TIMEOUT_S if value is None else parse_timeout(value)


class SuiteState:
    """The active suite: options, the manifest, and the results seen (on the controller with xdist)."""

    def __init__(self, config: pytest.Config, target: str):
        from hal.conformance.profiles import check_target_precision, load_profile, target_manifest

        self.config = config
        self.target = target
        self.profile: Profile = _option(config, "hal-profile", load_profile)
        self.precision: str = _option(config, "hal-precision", lambda p: check_target_precision(target, p))
        self.manifest_file, self.manifest = _option(config, "hal-manifest", lambda m: target_manifest(target, m))
        self.timeout_s: float | None = _option(config, "hal-timeout", _timeout)
        self.results: dict[str, CaseResult] = {}
        self._ops: dict[str, str] | None = None  # case name -> op, for a case whose worker crashed (``_crashed``)
        self.collected: set[str] | None = None  # node ids the xdist workers collected (``stopped``)
        self.reported: set[str] = set()
        self.stopped: str | None = None
        self.t0 = time.perf_counter()

    # -- collection: the suite replaces file collection ------------------------------------------------
    def pytest_collection(self, session: pytest.Session) -> bool | None:
        if self.config.pluginmanager.has_plugin("dsession"):
            return None  # xdist's controller collects nothing; its workers collect the suite
        from _pytest.runner import collect_one_node

        hook = self.config.hook
        session.items = []
        suite = Suite.from_parent(session, name=f"hal[{self.target}]", nodeid=f"hal[{self.target}]", state=self)
        rep = collect_one_node(suite)
        session.ihook.pytest_collectreport(report=rep)
        if rep.passed:
            for node in rep.result:
                session.items.extend(session.genitems(node))
        hook.pytest_collection_modifyitems(session=session, config=self.config, items=session.items)
        hook.pytest_collection_finish(session=session)
        session.testscollected = len(session.items)
        return True

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        src = str(self.manifest_file) if self.manifest else "none"
        return [f"hal conformance: target {self.target}, profile {self.profile.name}, precision {self.precision}, "
                f"manifest {src} ({len(self.manifest)} expected failures)"]

    # -- results -----------------------------------------------------------------------------------------
    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self._progress("start", nodeid)

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        self._progress("end", nodeid)

    def _progress(self, event: str, nodeid: str) -> None:
        """Log a case's start or end where ``hal conformance`` asked (``PROGRESS_ENV``), before it runs: a
        process that dies in the case leaves its name behind."""
        import os

        path = os.environ.get(PROGRESS_ENV)
        if path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(f"{event} {nodeid}\n")

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        if self.collected is None:  # (every worker collects the same cases)
            self.collected = set(ids)

    def _stopped(self, exitstatus: int) -> str | None:
        """Why the run ended before every collected case ran, on an xdist controller whose workers kept crashing
        (pytest-xdist stops replacing them after 4 crashes a worker): the cases not run had been left out of the
        report, and a target that crashed on five cases certified as failing those alone. None: all ran."""
        if self.collected is None or exitstatus == pytest.ExitCode.INTERRUPTED:
            return None
        not_run = sorted(self.collected - self.reported)
        if not not_run:
            return None
        why = getattr(self.config.pluginmanager.getplugin("dsession"), "_summary_report", None)
        return (f"{len(not_run)} selected case(s) did not run ({not_run[0].rpartition('::')[2]}"
                f"{' and others' if len(not_run) > 1 else ''}): the run stopped{f' ({why})' if why else ''}")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.reported.add(report.nodeid)
        props = dict(report.user_properties)
        if "hal_case" not in props:
            crashed = self._crashed(report)
            if crashed is not None:
                self.results[crashed.name] = crashed
            return
        if not (report.when == "call" or (report.when == "setup" and not report.passed)):
            return
        xfail = hasattr(report, "wasxfail")
        if report.passed:
            outcome = "xpassed" if xfail else "passed"
        elif report.failed:
            outcome = "failed"
        else:
            outcome = "xfailed" if xfail else "skipped"
        message = props.get("hal_message")
        if outcome == "failed" and message is None:
            message = report.longreprtext.strip().splitlines()[-1][:600] if report.longreprtext else None
        from hal.conformance.report import CaseResult

        self.results[props["hal_case"]] = CaseResult(
            name=props["hal_case"], op=props["hal_op"], kind=props["hal_kind"], outcome=outcome,
            cause=props.get("hal_cause") or ("error" if outcome == "failed" else None),
            message=message, duration_s=report.duration)

    def _crashed(self, report: pytest.TestReport) -> CaseResult | None:
        """The failed case of a report that carries none of the case's properties: the one pytest-xdist makes
        when the worker process running a case died (a segfault or an ``os._exit`` in a plugin's native
        code). Left out, the case would be missing from the report, and a target that crashes on it
        certified; it fails, cause "error", saying so. None for any other report."""
        prefix = f"hal[{self.target}]::"
        if not report.failed or not report.nodeid.startswith(prefix):
            return None
        kind, _, name = report.nodeid[len(prefix):].partition("::")
        if not name:
            return None
        if self._ops is None:  # the controller collects no case: the ops of the profile's, once
            from hal.conformance.suite import select_cases

            self._ops = {c.name: c.op for c in select_cases(self.profile)}
        from hal.conformance.report import CaseResult

        detail = " ".join((report.longreprtext or "").split())[:300] or "the process running it died"
        return CaseResult(name=name, op=self._ops.get(name, kind), kind=kind, outcome="failed", cause="error",
                          message=f"the process running this case crashed ({detail}): a segfault or an exit in "
                                  f"the target's code (run the case alone: hal conformance {self.target} -k "
                                  f"'{name}' -v)", duration_s=report.duration)

    def report(self) -> ConformanceReport:
        from hal.conformance.report import ConformanceReport

        workers = int(getattr(self.config.option, "numprocesses", 0) or 0) or 1
        rep = ConformanceReport.build(self.results.values(), target=self.target, profile=self.profile.name,
                                      precision=self.precision, workers=workers,
                                      duration_s=time.perf_counter() - self.t0, stopped=self.stopped)
        rep.stale_manifest_entries = self.stale(self.manifest)
        return rep

    def stale(self, manifest: Any) -> list[str]:
        """The entries of ``manifest`` that name no case of the suite (its full profile, plugins' cases)."""
        from hal.conformance.suite import select_cases

        if not manifest:
            return []
        try:
            known = {c.name for c in select_cases("full")}
        except Exception:  # advice only: a suite that could not be collected says so elsewhere
            return []
        return sorted(name for name in manifest if name not in known)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if hasattr(self.config, "workerinput") or exitstatus == pytest.ExitCode.USAGE_ERROR:
            return  # an xdist worker (the controller writes the files), or the suite did not run
        self.stopped = self._stopped(exitstatus)
        if self.stopped:  # a run that stopped is not a verdict: exit status 2, as for one interrupted
            session.exitstatus = pytest.ExitCode.INTERRUPTED
        json_path = self.config.getoption("hal_json")
        if json_path:
            from hal.files import write_output

            write_output(json_path, self.report().model_dump_json(indent=2) + "\n")
        out = self.config.getoption("hal_write_manifest")
        if out:
            from hal.conformance.profiles import ManifestEntry, manifest_reason, write_manifest

            entries = [ManifestEntry(r.name, r.op, r.cause or "error", manifest_reason(r.cause, r.message))
                       for r in self.results.values() if r.outcome in ("failed", "xfailed")]
            regenerated = self._regenerated(out)
            stale = set(self.stale(regenerated))
            keep = [e for name, e in regenerated.items() if name not in self.results and name not in stale]
            # (the profile as given: a profile file's name is its stem, which --profile would not find)
            write_manifest(out, self.target, entries, profile=self.config.getoption("hal_profile"), keep=keep)

    def _regenerated(self, out: str) -> dict[str, Any]:
        """The entries of the manifest a run regenerates at ``out``: that file's own where it exists, else the
        manifest the run read. (The run's manifest alone had lost the file's entries of the cases a partial run
        left out whenever it was another file, or none: ``-k Conv --hal-manifest none`` kept only Conv's.)"""
        from hal.conformance.profiles import load_manifest
        from hal.errors import HalError

        if self.manifest_file is not None and Path(out).resolve() == Path(self.manifest_file).resolve():
            return self.manifest
        try:
            return load_manifest(out, self.target) if Path(out).is_file() else self.manifest
        except HalError:  # not a manifest of this target: the run's is what there is to keep
            return self.manifest

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.stopped:
            terminalreporter.write_line(f"hal conformance: {self.stopped}")
        if not self.results:
            return
        rep = self.report()
        t = rep.totals
        tr = terminalreporter
        tr.section(f"hal conformance: {self.target} ({self.profile.name})")
        for row in [o for o in rep.ops if o.failed][:40]:
            tr.write_line(f"  {row.op:32s} {row.passed + row.xpassed:4d}/{row.cases_ran():<4d} passed, "
                          f"{row.failed} failed")
        skipped = f", {t.skipped} skipped (this host lacks a package they need)" if t.skipped else ""
        tr.write_line(f"{t.passed + t.xpassed}/{t.ran} passed ({100 * t.pass_rate:.1f}%), {t.failed} failed, "
                      f"{t.xfailed} expected failures, {t.xpassed} unexpectedly passing{skipped}")
        if self.config.getoption("hal_write_manifest") and (kept := rep.not_written()):
            tr.write_line(f"not written to the manifest: {kept}")
        if self.config.getoption("keyword"):  # a plugin's failed case hook, left out by -k: said anyway
            from hal.conformance.cases import unselected_broken_hooks

            for c in unselected_broken_hooks({r.name for r in rep.cases}):
                tr.write_line(f"note: {c.name} was not selected by -k: {c.message}")


# --- collectors and items --------------------------------------------------------------------------------


class Suite(pytest.Collector):
    """The whole suite for one target: one group per kind of case."""

    def __init__(self, *, state: SuiteState, **kwargs: Any):
        super().__init__(**kwargs)
        self.state = state

    def collect(self) -> Iterator[pytest.Collector]:
        from hal.conformance.suite import select_cases

        by_kind: dict[str, list[Case]] = {k: [] for k in KINDS}
        for case in select_cases(self.state.profile):
            by_kind[case.kind].append(case)
        for kind in KINDS:
            if by_kind[kind]:
                yield CaseGroup.from_parent(self, name=kind, cases=by_kind[kind], state=self.state)


class CaseGroup(pytest.Collector):
    def __init__(self, *, cases: list[Case], state: SuiteState, **kwargs: Any):
        super().__init__(**kwargs)
        self.cases = cases
        self.state = state

    def collect(self) -> Iterator[pytest.Item]:
        from hal.conformance.check import CaseFailure

        for case in self.cases:
            item = CaseItem.from_parent(self, name=case.name, case=case, state=self.state)
            entry = self.state.manifest.get(case.name)
            if entry is not None:
                item.add_marker(pytest.mark.xfail(reason=entry.reason, strict=False, raises=CaseFailure))
            yield item


class UnexpectedFailure(AssertionError):
    """A case the manifest lists failed with another cause than the entry's: reported as a failure (the
    xfail mark takes only CaseFailure)."""

    def __init__(self, cause: str, message: str):
        self.cause = cause
        self.message = message
        super().__init__(f"[{cause}] {message}")


class CaseItem(pytest.Item):
    """One case on the target under test."""

    def __init__(self, *, case: Case, state: SuiteState, **kwargs: Any):
        super().__init__(**kwargs)
        self.case = case
        self.state = state
        self.extra_keyword_matches.add(case.op)
        self.user_properties += [("hal_case", case.name), ("hal_op", case.op), ("hal_kind", case.kind)]

    def runtest(self) -> None:
        from hal.conformance.check import CaseFailure
        from hal.conformance.profiles import cause_mismatch
        from hal.conformance.suite import run_case

        s = self.state
        try:
            note = run_case(self.case, s.target, s.profile, s.precision, s.timeout_s)
        except CaseFailure as e:
            self.user_properties += [("hal_cause", e.cause), ("hal_message", e.message)]
            if e.cause == "environment":  # this host's lack, not the target's failure
                pytest.skip(f"[environment] {e.message}")
            mismatch = cause_mismatch(s.manifest.get(self.case.name), e.cause, e.message)
            if mismatch is not None:  # not the failure the manifest expects: not a CaseFailure, so not xfail
                self.user_properties += [("hal_message", mismatch)]
                raise UnexpectedFailure(e.cause, mismatch) from None
            raise
        if note:
            self.user_properties += [("hal_message", note)]

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        from hal.conformance.check import CaseFailure

        if isinstance(excinfo.value, (CaseFailure, UnexpectedFailure)):
            return f"{self.case.op}: [{excinfo.value.cause}] {excinfo.value.message}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"hal[{self.state.target}]::{self.case.kind}::{self.case.name}"
