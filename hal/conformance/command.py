"""``hal conformance TARGET``: run the suite through pytest, print a pass table per op.

    hal conformance cpu --profile full --json r.json -n 2
    hal conformance gpu --write-manifest            # regenerate specs/conformance/xfail-gpu.toml
    hal conformance acme-npu --write-manifest       # a plugin's target: ./xfail-acme-npu.toml

The run is isolated from the current folder's pytest configuration and conftest files, so it works
from anywhere. Each case is bounded by ``--timeout`` (a hang fails that case). The cases never run in this
process unless asked (``run_mode``): the cases run in pytest-xdist worker processes (``-n N``; one
without ``-n``), where a case that kills its process fails alone and the run goes on; without pytest-xdist,
pytest runs in a child process, and a child that dies (a segfault, an ``os._exit`` in a target's code) is
exit status 2 naming the case it was running (``SuiteDied``), never a pass. ``-n 0`` runs the suite in this
process (as do runs where a plugin is registered in this process only, which no other process would find):
there a crash ends the run, with whatever exit status the crash gave and no report. It needs pytest, and
pytest-xdist for ``-n`` above 1: neither is a dependency of hal-sdk, and without them the command says what
to install (``check_runner``). Exit status: 0 when nothing failed (expected failures allowed), 1 when a case
failed, 2 when the suite could not run, stopped on an error collecting or running it, died, or ran no case
(an unknown target, a bad option, profile or manifest is one ``error: InputError: ...`` line, checked before
pytest starts).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hal.conformance.report import ConformanceReport
from hal.errors import HalError, InputError
from hal.files import atomic_write, write_output


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``conformance`` sub-command to the ``hal`` CLI's sub-parsers."""
    p = subparsers.add_parser(
        "conformance", help="certify a target: onnx node tests, light and shipped models, API contract",
        description="Run the hal conformance suite on TARGET and print a pass table per op.")
    p.add_argument("target", help="target name (see `hal targets`)")
    p.add_argument("--profile", default="core", help="core (CNN + transformer ops), full (every node case) "
                                                     "or a profile .toml (default: core)")
    p.add_argument("--precision", default="exact", help="compile precision (default: exact)")
    p.add_argument("--json", dest="json_path", nargs="?", const="-", default=None, metavar="FILE",
                   help="write the ConformanceReport to FILE, or with no FILE print it (JSON) instead of the table")
    p.add_argument("-n", "--workers", default=None, metavar="N",
                   help="run in N worker processes through pytest-xdist (a number or 'auto'; default: one, or "
                        "without pytest-xdist one child process; 0: in this process, where a crash ends the run "
                        "with no report)")
    p.add_argument("-k", dest="keyword", metavar="EXPR", help="only cases matching this pytest -k expression "
                                                               "(case names and op types)")
    p.add_argument("--manifest", metavar="PATH|none",
                   help="expected-failure manifest (default: hal's specs/conformance/xfail-TARGET.toml for "
                        "hal's own targets, ./xfail-TARGET.toml for a plugin's)")
    p.add_argument("--write-manifest", nargs="?", const="", default=None, metavar="PATH",
                   help="write this run's failures as the target's manifest (default path: as --manifest's)")
    p.add_argument("--timeout", default=None, metavar="S|none",
                   help="seconds one case may take before it fails as a hang (default: 600; none: no bound)")
    p.add_argument("--failing-only", action="store_true", help="print only the ops with failures")
    p.add_argument("-v", "--verbose", action="store_true", help="show pytest's own output")
    p.set_defaults(func=run)
    return p


#: the worker crashes after which pytest-xdist stops replacing workers, and the run stops (exit status 2, the
#: cases not run named: pytest_plugin's ``SuiteState.stopped``); xdist's own default, 4 a worker, stopped the
#: default one-worker run of a target that crashes on five cases, before it had a verdict
MAX_WORKER_RESTARTS = 100

#: what to install for the suite: pytest runs it, pytest-xdist its -n workers (hal-sdk's conformance extra)
INSTALL_HINT = "pip install 'hal-sdk[conformance]' (pytest and pytest-xdist)"


def _importable(module: str) -> bool:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def parallel(workers: Any) -> bool:
    """Whether ``-n`` asks for worker processes (pytest-xdist): a number above 1, or 'auto'."""
    return workers is not None and str(workers) not in ("0", "1")


class SuiteDied(HalError):
    """The process running the suite died before pytest finished its session (a segfault, or an ``os._exit``
    in a target's code): the cases after the one it was running never ran, and no report was written."""


def check_runner(workers: Any) -> None:
    """pytest (which runs the suite) and, for ``-n``, pytest-xdist are installed: neither is a runtime
    dependency of hal-sdk, so without them an InputError saying what to install."""
    if not _importable("pytest"):
        raise InputError("hal conformance runs the suite through pytest, which is not installed",
                         where="hal conformance", hint=INSTALL_HINT)
    if parallel(workers) and not _importable("xdist.plugin"):
        raise InputError(f"-n {workers} runs the suite in worker processes through pytest-xdist, which is not "
                         "installed", where="command line", hint=f"{INSTALL_HINT}; or leave out -n to run in one")


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad options before pytest starts (an InputError, exit status 2): pytest (or, for -n,
    pytest-xdist) not installed, a target that is not installed, a bad -n, -k, --timeout or --precision (one
    the target does not offer among them),
    an unreadable or invalid profile or manifest, a --manifest path that does not exist, a manifest of
    another target or one that waives the API contract."""
    from hal.conformance.profiles import check_target_precision, load_profile, target_manifest
    from hal.conformance.suite import parse_timeout
    from hal.plugins import get_target

    workers = str(args.workers or "1")
    if workers != "auto" and not workers.isdigit():
        raise InputError(f"-n {args.workers!r} is not a number of workers", where="command line",
                         hint="give a number (0: in this process), or 'auto' for one per CPU")
    check_runner(args.workers)
    if args.keyword:
        from _pytest.mark.expression import Expression  # pytest's own -k grammar

        try:
            Expression.compile(args.keyword)
        except Exception as e:  # SyntaxError in recent pytest, ParseError in older
            detail = f"at column {e.offset}: {e.msg}" if isinstance(e, SyntaxError) else str(e)
            raise InputError(f"-k {args.keyword!r} is not a valid expression: {detail}", where="command line",
                             hint="combine names with and, or, not and parentheses: -k 'Conv and not 3d'") from None
    get_target(args.target)  # an unknown target: the installed ones named, before pytest starts
    check_target_precision(args.target, args.precision, where="--precision")
    parse_timeout(getattr(args, "timeout", None), where="--timeout")
    load_profile(args.profile)
    target_manifest(args.target, args.manifest)


def local_plugins() -> list[str]:
    """The plugins registered in this process (``hal.plugins.register``: tests, notebooks) that another process
    would not load: no installed entry point has their name."""
    from importlib import metadata

    from hal.plugins import ENTRY_POINT_GROUP, registry

    installed = {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(name for name in registry().records if name not in installed)


def run_mode(workers: Any) -> tuple[str, str | None]:
    """Where the cases run, for ``-n``: ``("workers", N)`` in N pytest-xdist worker processes (``-n N``; one
    without ``-n``), ``("child", None)`` in one child process running pytest (without ``-n``, or ``-n 1``,
    where pytest-xdist is not installed), or ``("here", None)`` in this process (``-n 0``; and without ``-n``
    where a plugin is registered in this process only, since a worker would not have it). Only "here" lets a
    case that crashes its process end the run with no verdict. A plugin registered in this process only with
    ``-n`` above 0 is an InputError: its target or cases would be missing from the workers."""
    workers = None if workers is None else str(workers)
    if workers == "0":
        return "here", None
    local = local_plugins()
    if local and workers is None:
        return "here", None
    if local:
        raise InputError(f"-n {workers} runs the suite in other processes, which would not have the plugin(s) "
                         f"registered in this process only: {', '.join(map(repr, local))}", where="command line",
                         hint="install the plugin (an entry point in group 'hal.plugins'), or run with -n 0 (in "
                              "this process, where a case that crashes it ends the run)")
    if parallel(workers) or _importable("xdist.plugin"):
        return "workers", workers or "1"
    return "child", None


def pytest_args(args: argparse.Namespace, json_out: Path, folder: Path, workers: str | None = None) -> list[str]:
    """The pytest command line for these options, isolated in ``folder``, with ``workers`` pytest-xdist
    workers (None: none, pytest runs the cases in its own process)."""
    ini = folder / "pytest.ini"
    atomic_write(ini, "[pytest]\n")
    argv = ["-c", str(ini), "--rootdir", str(folder), "--noconftest", "-p", "no:cacheprovider",
            "--hal-target", args.target, "--hal-profile", args.profile, "--hal-precision", args.precision,
            "--hal-json", str(json_out)]
    argv += ["-q", "--tb=short"] if args.verbose else ["-q", "--tb=no", "-p", "no:warnings"]
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        argv += ["-p", "hal.conformance.pytest_plugin"] + (["-p", "xdist.plugin"] if workers else [])
    if workers:
        argv += ["-n", workers, "--max-worker-restart", str(MAX_WORKER_RESTARTS)]
    if args.keyword:
        argv += ["-k", args.keyword]
    if getattr(args, "timeout", None) is not None:
        argv += ["--hal-timeout", str(args.timeout)]
    if args.manifest:
        argv += ["--hal-manifest", args.manifest]
    if args.write_manifest is not None:
        from hal.conformance.profiles import manifest_path

        argv += ["--hal-write-manifest", args.write_manifest or str(manifest_path(args.target))]
    return argv


def run(args: argparse.Namespace) -> int:
    """Run the suite as ``args`` asks; print the table; return the exit status."""
    check_args(args)
    mode, workers = run_mode(args.workers)
    import pytest

    from hal.render import console as make_console
    from hal.render import literal

    console = make_console()
    if mode == "here":  # said where it cannot be missed: a certification must not be run so
        why = ("-n 0" if args.workers is not None else
               f"plugin(s) {', '.join(map(repr, local_plugins()))} are registered in this process only")
        print(f"note: the cases run in this process ({why}): a case that crashes it ends the run with no report "
              "and any exit status, 0 included; certify without -n 0, with the plugin installed", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="hal-conformance-") as tmp:
        folder = Path(tmp)
        json_out = folder / "report.json"
        argv = pytest_args(args, json_out, folder, workers)
        if args.verbose:
            rc, output = run_pytest(argv, mode, folder, capture=False)
        else:
            with console.status(literal(f"hal conformance: {args.target} ({args.profile})…")):
                rc, output = run_pytest(argv, mode, folder, capture=True)
        tail = "\n".join(output.strip().splitlines()[-15:])
        if mode == "child":
            check_child(rc, json_out, folder, args.target, tail, console)
        # a collection error (2) or an internal one (3) stops pytest before or while it runs the cases: what
        # ran is not the profile, and an empty report must not read as "no case matched -k"
        stopped = rc in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR)
        if not json_out.is_file() or stopped:
            console.print(f"[red]hal conformance: the suite did not run{' to the end' if json_out.is_file() else ''} "
                          f"(pytest exit {rc}{': an error collecting or running it' if stopped else ''})[/red]")
            if tail:
                console.print(tail, markup=False, highlight=False)
            return 2
        report = ConformanceReport.model_validate_json(json_out.read_text(encoding="utf-8"))
    if not report.totals.total:
        raise InputError(f"no case matched -k {args.keyword!r}" if args.keyword else "the profile selects no case",
                         where=f"profile {args.profile!r}",
                         hint="-k matches case names (test_abs) and op types (Conv)" if args.keyword
                         else "list ops, or enable light_models, shipped_models or contract")
    notes = []
    if args.keyword:  # a plugin whose case hook failed fails a case of its own, which -k may have left out
        from hal.conformance.cases import unselected_broken_hooks

        notes = [f"note: {c.name} was not selected by -k: {c.message}"
                 for c in unselected_broken_hooks({r.name for r in report.cases})]
    if args.json_path == "-":
        print(report.model_dump_json(indent=2))
        for note in notes:
            print(note, file=sys.stderr)
        return 0 if report.ok else 1
    print_report(report, console, failing_only=args.failing_only)
    for note in notes:
        console.print(f"[red]{literal(note)}[/red]")
    if args.json_path:
        out = write_output(args.json_path, report.model_dump_json(indent=2) + "\n")
        console.print(f"report: {out}", markup=False)
    if args.write_manifest is not None:
        from hal.conformance.profiles import manifest_path

        console.print(f"manifest: {args.write_manifest or manifest_path(args.target)}", markup=False)
        if kept := report.not_written():
            console.print(f"[red]not written to the manifest: {literal(kept)}[/red]")
    return 0 if report.ok else 1


def run_pytest(argv: list[str], mode: str, folder: Path, *, capture: bool) -> tuple[int, str]:
    """pytest's exit status for ``argv`` and, with ``capture``, its output. In this process, or (``mode``
    "child") in a child process ``python -m pytest`` that logs each case it starts and ends (``check_child``)."""
    import pytest

    from hal.conformance.pytest_plugin import PROGRESS_ENV

    if mode != "child":
        if not capture:
            return int(pytest.main(argv)), ""
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink):
            rc = int(pytest.main(argv))
        return rc, sink.getvalue()
    env = {**os.environ, PROGRESS_ENV: str(folder / "progress.log")}
    log = folder / "pytest.log"
    with open(log, "wb") if capture else contextlib.nullcontext() as out:
        rc = subprocess.run([sys.executable, "-m", "pytest", *argv], env=env, stdout=out,
                            stderr=subprocess.STDOUT if capture else None).returncode
    return rc, log.read_text(encoding="utf-8", errors="replace") if capture else ""


def check_child(rc: int, json_out: Path, folder: Path, target: str, tail: str, console: Any) -> None:
    """A SuiteDied when the child process running pytest died before its session finished: killed by a signal,
    an exit status that is not pytest's, a case it started and never ended (but for pytest's internal error,
    3), or a status of 0, 1 or 5 (pytest writes the report before it exits with those) and no report. Its last
    lines of output are printed first."""
    from hal.conformance.pytest_plugin import unfinished_case

    running = unfinished_case(folder / "progress.log")
    if not (rc < 0 or rc > 5 or (running and rc != 3) or (rc in (0, 1, 5) and not json_out.is_file())):
        return
    if tail:
        console.print(tail, markup=False, highlight=False)
    if rc < 0:
        try:
            how = f"was killed by signal {signal.Signals(-rc).name}"
        except ValueError:
            how = f"was killed by signal {-rc}"
    else:
        how = f"exited with status {rc}"
    name = running.rpartition("::")[2] if running else None
    raise SuiteDied(f"the process running the suite {how} " + (f"while running case {running}" if running else
                    "before the suite finished") + ": the cases after it did not run, and no report was written",
                    where=f"hal conformance {target}",
                    hint=(f"a segfault or an exit in the target's code: run the case alone (hal conformance {target} "
                          f"-k '{name}' -v); " if name else "") + "with pytest-xdist installed, a case that kills "
                         f"its process fails alone and the run goes on: {INSTALL_HINT}")


def print_report(report: ConformanceReport, console: Any, *, failing_only: bool = False) -> None:
    """The pass table per op, then totals and the failures grouped by cause."""
    from rich.table import Table

    from hal.render import literal

    # (the heading as a line of its own: a title is wrapped to the table's width, 58 columns here)
    console.print(f"[bold]hal conformance[/] — target {literal(report.target)}, profile {literal(report.profile)}, "
                  f"precision {literal(report.precision)}")
    table = Table()
    for col, just in (("op", "left"), ("cases", "right"), ("passed", "right"), ("failed", "right"),
                      ("xfail", "right"), ("xpass", "right"), ("pass %", "right")):
        table.add_column(col, justify=just)
    for row in report.ops:
        if failing_only and not row.failed:
            continue
        rate = 100.0 * row.passing_share()  # as the totals' pass_rate: of the cases that ran
        style = "red" if row.failed else ("yellow" if row.xfailed else None)
        table.add_row(literal(row.op), str(row.total), str(row.passed), str(row.failed), str(row.xfailed),
                      str(row.xpassed), f"{rate:.0f}", style=style)
    console.print(table)
    t = report.totals
    causes: dict[str, int] = {}
    for f in report.failures:
        if f.outcome == "failed":
            causes[f.cause or "error"] = causes.get(f.cause or "error", 0) + 1
    by_cause = ", ".join(f"{n} {c}" for c, n in sorted(causes.items(), key=lambda kv: -kv[1]))
    skipped = f", {t.skipped} skipped (this host lacks a package they need)" if t.skipped else ""
    console.print(f"[bold]{t.passed + t.xpassed}/{t.ran} passed ({100 * t.pass_rate:.1f}%)[/bold], "
                  f"{t.failed} failed{f' ({by_cause})' if by_cause else ''}, {t.xfailed} expected failures, "
                  f"{t.xpassed} unexpectedly passing{skipped} — {report.duration_s:.1f} s on "
                  f"{report.workers} worker(s)")
    for note in dict.fromkeys(c.message for c in report.cases if c.kind == "contract" and c.message
                              and c.outcome in ("passed", "xpassed")):
        console.print(f"  API contract {literal(note or '')}")
    for c in report.cases:  # a plugin's case hook that failed: the table alone would not say whose or why
        if c.cause == "plugin" and c.outcome == "failed":
            console.print(f"[red]  {literal(c.name)}: {literal(c.message or '')}[/red]")
    if stale := report.stale_manifest_entries:
        console.print(f"[yellow]  manifest: {len(stale)} entr{'y names' if len(stale) == 1 else 'ies name'} no case "
                      f"of this suite ({literal(', '.join(stale[:3]))}{', …' if len(stale) > 3 else ''}): they "
                      "waive nothing; --write-manifest drops them[/yellow]")
    skipped_cases = [c for c in report.cases if c.outcome == "skipped"]
    if skipped_cases:
        first = skipped_cases[0]
        console.print(f"  skipped: {literal(first.name)}{' and others' if len(skipped_cases) > 1 else ''}: "
                      f"{literal(first.message or '')}")
