"""What a certification engineer meets running the suite on a vendor's plugin: a target that crashes its
process or hangs on one case fails that case (it had been certified, or had never finished), and bad input
(an unknown target, a misspelt cause or op, a case listed twice, a bad --timeout) is one InputError before
the suite starts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _support import run_pytest

import hal.plugins
from hal.conformance.cases import node_cases
from hal.conformance.profiles import load_manifest, load_profile
from hal.conformance.report import ConformanceReport
from hal.conformance.suite import parse_timeout, run_suite
from hal.errors import InputError
from tests.conftest import write_dist

#: a plugin of targets built on hal's reference program: ``crashes-on-relu`` ends its process in Relu, as a
#: segfault in a vendor's native code does, ``quits-on-relu`` ends it with exit status 0 and ``segfaults-on-relu``
#: by SIGSEGV; ``hangs-on-relu`` waits in Relu until the module's event is set
FAULTY_PLUGIN = '''
import os
import pickle
import signal
import threading

import hal
from hal.engine import Program, steps_for_nodes
from hal.specs import CompileReport, KernelReport, TargetSpec
from hal.target import kernel_capability

HAL_API_VERSION = "1.0"
RELEASE = threading.Event()


class Fault:
    def __init__(self, fn, mode):
        self.fn, self.mode = fn, mode

    def __call__(self, *args, **kwargs):
        if self.mode == "crashes":
            os._exit(1)
        if self.mode == "quits":
            os._exit(0)
        if self.mode == "segfaults":
            os.kill(os.getpid(), signal.SIGSEGV)
        RELEASE.wait(60)
        return self.fn(*args, **kwargs)


class Exe:
    def __init__(self, program, report):
        self.program, self.report = program, report

    def run(self, feeds):
        return self.program.run(feeds)

    def trace(self):
        return []

    def serialize(self):
        return pickle.dumps(self)


class FaultyTarget:
    def __init__(self, mode):
        self.mode = mode
        self.spec = TargetSpec(name=f"{mode}-on-relu", vendor="hal tests", kind="other")

    def capability(self, graph, options):
        return kernel_capability(graph, self.spec)

    def compile(self, graph, options):
        steps = steps_for_nodes(graph, graph.nodes)
        for s in steps:
            if s.op_type == "Relu":
                s.fn = Fault(s.fn, self.mode)
        kernels = [KernelReport(name=s.label, nodes=[s.label], op_types=[s.op_type]) for s in steps]
        report = CompileReport(target=self.spec.name, model=graph.name, model_hash=graph.model_hash,
                               node_count=len(graph.nodes), kernel_count=len(steps), kernels=kernels)
        return Exe(Program(graph, steps), report)

    def load(self, blob):
        return pickle.loads(blob)


@hal.hookimpl
def hal_targets():
    return [FaultyTarget(mode) for mode in ("crashes", "hangs", "quits", "segfaults")]
'''


@pytest.fixture
def faulty_site(tmp_path: Path, monkeypatch) -> Path:
    """The faulty plugin installed (a dist-info with its entry point) where child processes find it."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "hal_faulty_relu.py").write_text(FAULTY_PLUGIN)
    write_dist(site, "hal-faulty-relu", {"faulty-relu": "hal_faulty_relu"})
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    return site


@pytest.fixture
def hangs_on_relu(faulty_site: Path, monkeypatch) -> Iterator[str]:
    """``hangs-on-relu`` registered in this process; its hung runs are released after the test."""
    import importlib

    monkeypatch.syspath_prepend(str(faulty_site))
    module: Any = importlib.import_module("hal_faulty_relu")
    rec = hal.plugins.register(module, "faulty-relu")
    assert rec.ok, rec.error
    yield "hangs-on-relu"
    module.RELEASE.set()
    hal.plugins.unregister("faulty-relu")


def _relu_and_abs() -> list[Any]:
    return [c for c in node_cases() if c.name in ("test_relu", "test_abs")]


def test_a_case_that_crashes_its_worker_process_fails_and_is_counted(faulty_site: Path, tmp_path: Path) -> None:
    """pytest-xdist reports a worker that died with a report carrying none of the case's properties: the suite
    had dropped it, so a target that crashed on test_relu was certified, "1/1 passed", exit status 0."""
    folder = tmp_path / "run"
    folder.mkdir()
    profile = folder / "relu and abs.toml"
    profile.write_text('[profile]\nops = ["Relu", "Abs"]\nlight_models = false\ncontract = false\n')
    out, manifest = folder / "r.json", folder / "xfail.toml"
    r = run_pytest(folder, "--hal-target", "crashes-on-relu", "--hal-profile", str(profile), "-n", "2",
                   "-k", "test_relu or test_abs", "--hal-json", str(out), "--hal-write-manifest", str(manifest))
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr
    report = ConformanceReport.model_validate_json(out.read_text())
    cases = {c.name: c for c in report.cases}
    assert {"test_relu", "test_abs"} <= set(cases) and report.totals.failed == 1 and not report.ok
    relu = cases["test_relu"]
    assert (relu.outcome, relu.cause, relu.op, relu.kind) == ("failed", "error", "Relu", "node")
    assert relu.message.startswith("the process running this case crashed (")
    assert "crashed while running 'hal[crashes-on-relu]::node::test_relu'" in relu.message
    assert cases["test_abs"].outcome == "passed"
    assert [o.op for o in report.ops if o.failed] == ["Relu"]
    # the manifest it wrote says how to regenerate it with the profile as given (a file's stem is no profile)
    assert f"--profile '{profile}' --write-manifest" in manifest.read_text()


def _hal(*argv: str, without_xdist: bool = False) -> subprocess.CompletedProcess:
    """``hal ARGV...`` in a process of its own; with ``without_xdist``, as on a host without pytest-xdist (it
    cannot be imported, and pytest loads no plugin of its entry point)."""
    block = "import sys; sys.modules['xdist'] = sys.modules['xdist.plugin'] = None; " if without_xdist else ""
    code = f"{block}import sys; from hal.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, **({"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"} if without_xdist else {})}
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, timeout=300)


def test_without_n_a_case_that_exits_with_status_0_fails_and_the_run_goes_on(faulty_site: Path, tmp_path: Path) -> None:
    """Without -n pytest had run in hal's own process: a kernel's os._exit(0) ended `hal conformance` with exit
    status 0 and no report, and a CI that read the status certified the target. The cases now run in one
    pytest-xdist worker, so the case fails, as under -n 2, and the others run."""
    out = tmp_path / "r.json"
    r = _hal("conformance", "quits-on-relu", "-k", "test_relu or test_abs", "--json", str(out))
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr
    report = ConformanceReport.model_validate_json(out.read_text())
    cases = {c.name: c for c in report.cases}
    assert (cases["test_relu"].outcome, cases["test_relu"].cause) == ("failed", "error")
    assert cases["test_relu"].message.startswith("the process running this case crashed (")
    assert cases["test_abs"].outcome == "passed" and report.workers == 1 and not report.ok


@pytest.mark.parametrize(("target", "how"), [("quits-on-relu", "exited with status 0"),
                                             ("segfaults-on-relu", "was killed by signal SIGSEGV")])
def test_without_xdist_a_suite_process_that_dies_is_exit_status_2_naming_the_case(
        faulty_site: Path, tmp_path: Path, target: str, how: str) -> None:
    """Without pytest-xdist the suite runs in a child process: one that dies in a case (exit status 0 included)
    is exit status 2 and one error line naming the case, never a pass, and no report is written."""
    out = tmp_path / "r.json"
    r = _hal("conformance", target, "-k", "test_relu or test_abs", "--json", str(out), without_xdist=True)
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: SuiteDied: hal conformance {target}: the process running the suite {how} while "
                           f"running case hal[{target}]::node::test_relu: the cases after it did not run, and no "
                           "report was written — a segfault or an exit in the target's code: run the case alone "
                           f"(hal conformance {target} -k 'test_relu' -v)"), r.stderr
    assert not out.exists() and "passed" not in r.stdout
    ok = _hal("conformance", "cpu", "-k", "test_relu or test_abs", "--json", str(out), without_xdist=True)
    assert ok.returncode == 0 and ConformanceReport.model_validate_json(out.read_text()).totals.passed == 3, ok.stderr


def test_where_the_cases_run(wrong_add: str, monkeypatch, capsys) -> None:
    """In pytest-xdist workers (one without -n), else in a child process; in this process only with -n 0, or
    without -n where a plugin is registered in this process only (a worker would not find it), saying so."""
    from hal.cli import main
    from hal.conformance.command import run_mode

    assert run_mode(None) == ("here", None) and run_mode("0") == ("here", None)
    rc = main(["conformance", wrong_add, "-n", "1", "-k", "test_abs"])
    assert rc == 2 and "would not have the plugin(s) registered in this process only: 'wrong-add'" in (
        capsys.readouterr().err)
    assert main(["conformance", wrong_add, "-k", "test_abs and not expanded"]) == 0
    assert capsys.readouterr().err.startswith("note: the cases run in this process (plugin(s) 'wrong-add' are "
                                              "registered in this process only): a case that crashes it ends the "
                                              "run with no report and any exit status, 0 included")
    hal.plugins.unregister(wrong_add)
    assert run_mode(None) == run_mode("1") == ("workers", "1") and run_mode("auto") == ("workers", "auto")
    monkeypatch.setitem(sys.modules, "xdist.plugin", None)
    assert run_mode(None) == run_mode("1") == ("child", None) and run_mode("0") == ("here", None)


def test_a_run_whose_workers_keep_crashing_stops_with_exit_status_2_and_says_so(faulty_site: Path,
                                                                              tmp_path: Path) -> None:
    """pytest-xdist stops replacing crashed workers after 4 crashes a worker: the cases after that never ran, and
    were left out of the report, which read "1020/1025 passed, 5 failed" with exit status 1 for a run of 1,144."""
    out = tmp_path / "r.json"
    r = run_pytest(tmp_path, "--hal-target", "crashes-on-relu", "-n", "1", "--hal-json", str(out))
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr
    report = ConformanceReport.model_validate_json(out.read_text())
    assert report.stopped is not None and not report.ok, report.stopped
    assert re.match(r"\d+ selected case\(s\) did not run \(.+\): the run stopped \(maximum crashed workers reached: "
                    r"4\)$", report.stopped), report.stopped
    assert f"hal conformance: {report.stopped}" in r.stdout


def test_a_case_that_hangs_fails_as_a_hang_and_the_run_goes_on(hangs_on_relu: str) -> None:
    """A target whose run never returned had held the suite forever: no verdict, no report, no case named."""
    results = {r.name: r for r in run_suite(hangs_on_relu, "core", cases=_relu_and_abs(), timeout_s=10)}
    relu = results["test_relu"]
    assert (relu.outcome, relu.cause) == ("failed", "error")
    assert relu.message.startswith("the case did not finish within 10 s, the suite's bound on one case: the target's "
                                   "compile or run hangs")
    assert "--timeout S" in relu.message and 10 <= relu.duration_s < 40
    assert results["test_abs"].outcome == "passed", results["test_abs"].message


def test_pytest_bounds_each_case_with_hal_timeout(faulty_site: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    r = run_pytest(tmp_path, "--hal-target", "hangs-on-relu", "--hal-timeout", "10", "-k", "test_relu or test_abs",
                   "--hal-profile", "full", "--hal-json", str(out), timeout=120)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr
    cases = {c.name: c for c in ConformanceReport.model_validate_json(out.read_text()).cases}
    assert cases["test_relu"].outcome == "failed" and "did not finish within 10 s" in cases["test_relu"].message
    assert cases["test_abs"].outcome == "passed"
    bad = run_pytest(tmp_path, "--hal-target", "cpu", "--hal-timeout", "soon")
    assert bad.returncode == 4 and "ERROR: --hal-timeout: timeout 'soon' is not a number of seconds" in bad.stderr


def test_timeout_values() -> None:
    assert parse_timeout("90") == 90.0 and parse_timeout(2.5) == 2.5
    assert parse_timeout("none") is parse_timeout("0") is parse_timeout(None) is None
    for bad in ("-1", "nan", "inf", "soon", ""):
        with pytest.raises(InputError, match="is not a number of seconds"):
            parse_timeout(bad)


@pytest.fixture
def cli(monkeypatch, capsys) -> Any:
    """``hal ARGV...`` in this process, refusing to start the suite: (exit status, stderr)."""
    import warnings

    from hal.cli import main

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main sets it for the process
    monkeypatch.setattr(pytest, "main", lambda *a, **k: pytest.fail("the suite started"))

    def run(*argv: str) -> tuple[int, str]:
        rc = main(list(argv))
        return rc, capsys.readouterr().err
    return run


def test_an_unknown_target_is_an_input_error_before_the_suite_starts(cli) -> None:
    """It had started pytest, which printed its own usage error after "hal conformance: the suite did not run
    (pytest exit 4)"."""
    rc, err = cli("conformance", "no-such-target")
    assert rc == 2 and err.startswith("error: InputError: hal.plugins: no target named 'no-such-target' — installed "
                                      "targets: cpu,"), err


def test_a_bad_timeout_is_an_input_error_before_the_suite_starts(cli) -> None:
    rc, err = cli("conformance", "cpu", "--timeout", "-5")
    assert rc == 2 and err.startswith("error: InputError: --timeout: timeout '-5' is not a number of seconds"), err


def _manifest(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "xfail-cpu.toml"
    p.write_text('target = "cpu"\n' + body)
    return p


def test_a_manifest_with_a_misspelt_cause_is_refused_naming_the_causes(tmp_path: Path, cli) -> None:
    """cause = "wrong-numbers" had been read as a cause no failure has: the case it waived failed, at the end of
    the run, with "the manifest expects ... 'wrong-numbers'"."""
    p = _manifest(tmp_path, '[[xfail]]\ncase = "test_bernoulli_seed"\ncause = "wrong-numbers"\nreason = "draws"\n')
    with pytest.raises(InputError, match=r"xfail\[0\]\.cause must be one of 'no kernel', 'refused', 'wrong numbers', "
                                         r"'error', 'checker' \(or left out: any cause\), got 'wrong-numbers'"):
        load_manifest(p, "cpu")
    rc, err = cli("conformance", "cpu", "--manifest", str(p))
    assert rc == 2 and err.startswith(f"error: InputError: {p}: invalid expected-failure manifest: "), err


def test_a_manifest_that_lists_a_case_twice_is_refused(tmp_path: Path) -> None:
    """The last entry had silently won, its cause the one expected."""
    p = _manifest(tmp_path, '[[xfail]]\ncase = "test_relu"\ncause = "refused"\nreason = "a"\n'
                            '[[xfail]]\ncase = "test_abs"\nreason = "b"\n'
                            '[[xfail]]\ncase = "test_relu"\ncause = "wrong numbers"\nreason = "c"\n')
    with pytest.raises(InputError, match=r"lists case 'test_relu' twice \(xfail\[0\] and xfail\[2\]\) — keep one"):
        load_manifest(p, "cpu")


def test_a_profile_with_a_misspelt_op_is_refused(tmp_path: Path, cli) -> None:
    """ops = ["Relu", "Conv2D"] had certified Relu alone: an op no case has selects nothing, without a word."""
    p = tmp_path / "mine.toml"
    p.write_text('[profile]\nops = ["Relu", "Conv2D", "softmax"]\n')
    with pytest.raises(InputError, match=r"the profile lists 2 op\(s\) that onnx does not define: 'Conv2D' \(did you "
                                         r"mean 'Conv'\?\); 'softmax' \(did you mean 'Softmax'\?\)"):
        load_profile(p)
    rc, err = cli("conformance", "cpu", "--profile", str(p))
    assert rc == 2 and err.startswith(f"error: InputError: {p}: ops: the profile lists 2 op(s)"), err
    for shipped in ("core", "full"):
        load_profile(shipped)
    p.write_text('[profile]\nops = ["Relu", "Gradient", "LinearRegressor"]\n')  # every domain's ops are known
    assert load_profile(p).ops == {"Relu", "Gradient", "LinearRegressor"}


def test_a_case_run_under_a_timeout_gives_the_verdicts_it_gives_inline() -> None:
    """Under a timeout the case runs in a worker thread: the same verdicts, the same failures."""
    cases = [c for c in node_cases() if c.name in ("test_relu", "test_bernoulli_seed")]
    for timeout in (None, 60):
        got = {r.name: (r.outcome, r.cause) for r in run_suite("cpu", "full", cases=cases, timeout_s=timeout)}
        assert got == {"test_relu": ("passed", None), "test_bernoulli_seed": ("failed", "wrong numbers")}, timeout


def test_a_partial_run_regenerating_a_manifest_keeps_that_files_other_entries(tmp_path: Path) -> None:
    """With --hal-manifest none (or another file) a -k run had rewritten the manifest with only the cases it ran,
    dropping every other entry the file held."""
    dest = tmp_path / "xfail-cpu.toml"
    dest.write_text('target = "cpu"\n[[xfail]]\ncase = "simple/test_gradient_of_add"\nop = "Gradient"\n'
                    'cause = "no kernel"\nreason = "no kernel for Gradient"\n')
    r = run_pytest(tmp_path, "--hal-target", "cpu", "--hal-profile", "full", "--hal-manifest", "none",
                   "--hal-write-manifest", str(dest), "-k", "test_bernoulli_seed or test_abs")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr
    written = load_manifest(dest, "cpu")
    assert set(written) == {"simple/test_gradient_of_add", "test_bernoulli_seed", "test_bernoulli_seed_expanded"}
    assert written["simple/test_gradient_of_add"].reason == "no kernel for Gradient"


def test_manifest_entries_that_name_no_case_are_reported_and_dropped_when_regenerated(tmp_path: Path) -> None:
    """An entry for a case onnx renamed or dropped waived nothing and stayed in the file for ever, unsaid."""
    dest = tmp_path / "xfail-cpu.toml"
    dest.write_text('target = "cpu"\n[[xfail]]\ncase = "simple/test_gradient_of_add"\nop = "Gradient"\n'
                    'cause = "no kernel"\nreason = "no kernel for Gradient"\n[[xfail]]\n'
                    'case = "test_relu_renamed_long_ago"\nop = "Relu"\ncause = "wrong numbers"\nreason = "x"\n')
    out = tmp_path / "r.json"
    r = run_pytest(tmp_path, "--hal-target", "cpu", "--hal-profile", "full", "--hal-manifest", str(dest),
                   "--hal-json", str(out), "-k", "test_abs")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert json.loads(out.read_text())["stale_manifest_entries"] == ["test_relu_renamed_long_ago"]
    r = run_pytest(tmp_path, "--hal-target", "cpu", "--hal-profile", "full", "--hal-manifest", str(dest),
                   "--hal-write-manifest", str(dest), "-k", "test_abs")
    assert set(load_manifest(dest, "cpu")) == {"simple/test_gradient_of_add"}
