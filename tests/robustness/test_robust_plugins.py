"""Plugin isolation: a plugin that raises in any hook, answers something invalid, or hangs in compile
produces a PluginError naming the plugin and its distribution; the session, the CLI and the other
targets go on. The faulty plugins are in-process fixtures registered with hal.plugins.register."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
from _robust_models import TARGETS, mlp_model, relu_model, session

import hal
from hal import plugins
from hal.specs import CompileReport, TargetSpec

DIST = "hal-faulty-plugins"
RELEASE = threading.Event()  # lets the hanging compile finish when the test is over


class FaultyExecutable:
    def __init__(self, inner: Any, fault: str):
        self._inner, self._fault = inner, fault

    @property
    def report(self) -> Any:
        if self._fault == "report-raises":
            raise RuntimeError("report generator crashed")
        if self._fault == "report-not-a-report":
            return {"latency_s": 1.0}
        rep = self._inner.report.model_copy(deep=True)
        if self._fault == "report-bad-field":
            rep.latency_s = "fast"  # set after construction, so pydantic never saw it
        return rep

    def run(self, feeds: Any) -> Any:
        if self._fault == "run-raises":
            raise KeyError("scratchpad")
        if self._fault == "run-exits":
            raise SystemExit(7)
        out = self._inner.run(feeds)
        if self._fault == "run-returns-list":
            return list(out.values())
        if self._fault == "run-drops-output":
            return {}
        if self._fault == "run-wrong-dtype":  # float64 where the graph says float32: compare cast both and read "ok"
            return {k: v.astype(np.float64) for k, v in out.items()}
        if self._fault == "run-returns-list-values":
            return {k: v.tolist() for k, v in out.items()}
        return out

    def trace(self) -> Any:
        if self._fault == "trace-raises":
            raise OSError("profiler unavailable")
        if self._fault == "trace-not-events":
            return "events"
        return self._inner.trace()

    def serialize(self) -> bytes:
        if self._fault == "serialize-raises":
            raise TypeError("cannot pickle device handle")
        return self._inner.serialize()


class FaultyTarget:
    """Delegates to cpu, except for the one hook its ``fault`` breaks."""

    def __init__(self, name: str, fault: str):
        self.spec = TargetSpec(name=name, vendor="Faulty Inc.", kind="other", version="0.0.1")
        self.fault = fault

    def capability(self, graph: Any, options: Any) -> Any:
        if self.fault == "capability-raises":
            raise RuntimeError("license server unreachable")
        if self.fault == "capability-invalid":
            return {"groups": "all of them"}
        cap = plugins.get_target("cpu").capability(graph, options)
        return cap.model_copy(update={"target": self.spec.name})

    def compile(self, graph: Any, options: Any) -> Any:
        if self.fault == "compile-raises":
            raise ZeroDivisionError("tile size 0")
        if self.fault == "compile-exits":
            raise SystemExit(3)
        if self.fault == "compile-hangs":
            RELEASE.wait(60)
        if self.fault == "compile-returns-none":
            return None
        return FaultyExecutable(plugins.get_target("cpu").compile(graph, options), self.fault)

    def load(self, blob: bytes) -> Any:
        return FaultyExecutable(plugins.get_target("cpu").load(blob), self.fault)


class FaultyPlugin:
    HAL_API_VERSION = "1.0"

    def __init__(self, name: str, fault: str):
        self._name, self._fault = name, fault

    @hal.hookimpl
    def hal_targets(self) -> list[Any]:
        if self._fault == "targets-raises":
            raise RuntimeError("vendor runtime missing")
        if self._fault == "spec-invalid":
            t = FaultyTarget(self._name, "none")
            t.spec = {"name": self._name, "vendor": "X", "kind": "quantum"}
            return [t]
        return [FaultyTarget(self._name, self._fault)]


@pytest.fixture
def faulty():
    """faulty(fault) registers a plugin breaking that hook; returns its target (and plugin) name."""
    names = []

    def make(fault: str) -> str:
        name = f"faulty-{fault}".lower()
        plugins.register(FaultyPlugin(name, fault), name, distribution=DIST)
        names.append(name)
        return name

    yield make
    RELEASE.set()
    for n in names:
        plugins.unregister(n)
    RELEASE.clear()


def _others_still_work() -> None:
    for t in TARGETS:
        (y,) = session(mlp_model(), t).run(None, {"x": np.ones((2, 4), np.float32)})
        assert y.shape == (2, 3)


def _assert_names_plugin(err: hal.PluginError, name: str, *words: str) -> None:
    assert err.plugin == name and err.distribution == DIST
    msg = str(err)
    assert f"plugin {name!r}" in msg and DIST in msg
    for w in words:
        assert w in msg, (w, msg)


COMPILE_FAULTS = {
    "capability-raises": "license server unreachable",
    "capability-invalid": "capability",
    "compile-raises": "ZeroDivisionError: tile size 0",
    "compile-exits": "SystemExit",
    "compile-returns-none": "without run, trace, serialize",
    "report-raises": "report generator crashed",
    "report-not-a-report": "not a CompileReport",
    "report-bad-field": "latency_s",
}


@pytest.mark.parametrize("fault", sorted(COMPILE_FAULTS))
def test_fault_while_compiling_is_a_plugin_error_and_the_others_go_on(faulty, fault):
    name = faulty(fault)
    with pytest.raises(hal.PluginError) as ei:
        session(relu_model(), name)
    _assert_names_plugin(ei.value, name, COMPILE_FAULTS[fault])
    with pytest.raises(hal.PluginError):
        hal.compile(relu_model(), name)
    _others_still_work()


RUN_FAULTS = {"run-raises": "KeyError", "run-exits": "SystemExit", "run-returns-list": "expected outputs",
              "run-drops-output": "expected outputs",
              "run-wrong-dtype": "returned output 'y' as a float64 array; the graph makes it a float32 array",
              "run-returns-list-values": "returned output 'y' as a builtins.list, not a numpy array"}


@pytest.mark.parametrize("fault", sorted(RUN_FAULTS))
def test_fault_while_running_is_a_plugin_error_and_the_session_goes_on(faulty, fault):
    name = faulty(fault)
    s = session(relu_model(), name)
    for _ in range(2):  # the same session answers the same way again: nothing is left half-done
        with pytest.raises(hal.PluginError) as ei:
            s.run(None, {"x": np.ones((2, 3), np.float32)})
        _assert_names_plugin(ei.value, name, RUN_FAULTS[fault])
    _others_still_work()


@pytest.mark.parametrize("fault", ["trace-raises", "trace-not-events"])
def test_fault_in_trace_is_a_plugin_error(faulty, fault):
    name = faulty(fault)
    s = session(relu_model(), name)
    with pytest.raises(hal.PluginError) as ei:
        s.trace()
    _assert_names_plugin(ei.value, name, "trace")
    (y,) = s.run(None, {"x": np.ones((2, 3), np.float32)})
    assert y.shape == (2, 3)


def test_fault_in_serialize_warns_and_the_session_runs_uncached(faulty, tmp_path):
    from hal.cache import CacheWarning

    name = faulty("serialize-raises")
    with pytest.warns(CacheWarning, match=rf"plugin '{name}'.*{DIST}.*cannot pickle device handle"):
        s = hal.InferenceSession(relu_model(), name, cache_dir=tmp_path)
    assert s.run(None, {"x": np.ones((2, 3), np.float32)})[0].shape == (2, 3)
    assert not list(tmp_path.rglob("*.halc"))


def test_compile_that_hangs_is_given_up_after_timeout(faulty):
    name = faulty("compile-hangs")
    t0 = time.monotonic()
    with pytest.raises(hal.PluginError) as ei:
        session(relu_model(), name, timeout_s=0.3)
    assert time.monotonic() - t0 < 5
    _assert_names_plugin(ei.value, name, "timeout_s=0.3", "abandoned")
    _others_still_work()
    hung = [t for t in threading.enumerate() if t.name == f"hal-compile-{name}"]
    assert hung and all(t.daemon for t in hung)  # left running in the background, never blocking exit


@pytest.mark.parametrize("target", ["gpu", "lpu", "wafer"])
def test_a_compile_of_hals_own_past_timeout_s_is_the_bound_not_the_plugin(target, monkeypatch):
    """hal's own targets' compiles end: one past timeout_s met a bound set too short, a ResourceError
    (as a run past it is), not a PluginError blaming hal-sdk as a hung plugin."""
    tgt = plugins.get_target(target)
    real = tgt.compile

    def slow(graph, options):
        time.sleep(0.5)
        return real(graph, options)

    monkeypatch.setattr(tgt, "compile", slow)
    with pytest.raises(hal.ResourceError, match=r"the compile did not finish within timeout_s=0.05 s") as ei:
        session(relu_model(), target, timeout_s=0.05, cache_dir=False)
    assert not isinstance(ei.value, hal.PluginError) and f"target {target!r}" in str(ei.value)
    assert "raise timeout_s" in str(ei.value)


def test_timeout_does_not_cut_a_compile_that_finishes():
    for t in TARGETS:
        (y,) = session(mlp_model(), t, timeout_s=60).run(None, {"x": np.ones((2, 4), np.float32)})
        assert y.shape == (2, 3)


@pytest.mark.parametrize("fault", ["targets-raises", "spec-invalid"])
def test_fault_at_discovery_is_recorded_and_other_targets_load(faulty, fault):
    name = faulty(fault)
    rec = plugins.registry().records[name]
    assert not rec.ok and rec.error.plugin == name and rec.error.distribution == DIST
    assert name not in {s.name for s in hal.targets()}
    with pytest.raises(hal.HalError, match=rf"no target named '{name}'.*failed to load: .*{name}"):
        session(relu_model(), name)
    _others_still_work()


def test_faulty_target_gets_an_error_row_in_compare_and_the_others_a_result(faulty):
    name = faulty("run-raises")
    rep = hal.compare(relu_model(), f"cpu,{name}")
    rows = {r.target: r for r in rep.results}
    assert rows["cpu"].status == "ok"
    assert rows[name].status == "error" and DIST in rows[name].reason


def test_cli_reports_a_faulty_plugin_in_one_line_and_goes_on(faulty, tmp_path, capsys):
    import onnx

    from hal.cli import main

    name = faulty("compile-raises")
    path = tmp_path / "m.onnx"
    onnx.save(mlp_model(), str(path))
    assert main(["run", str(path), "--target", name]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: PluginError:") and f"plugin {name!r}" in err and DIST in err
    assert "Traceback" not in err
    assert main(["run", str(path), "--target", "cpu", "--json"]) == 0
    assert main(["compare", str(path), "--targets", f"cpu,{name}", "--json"]) == 1  # the table, and a failing status
    assert '"status": "error"' in capsys.readouterr().out


def test_unsupported_op_search_survives_a_faulty_capability(faulty):
    faulty("capability-raises")
    m = relu_model()
    m.graph.node[0].op_type = "FrobnicateX"
    m.graph.node[0].domain = "com.example"
    m.opset_import.append(__import__("onnx").helper.make_opsetid("com.example", 1))
    with pytest.raises(hal.UnsupportedOpError, match="runs on: no installed target"):
        session(m, "cpu")


def test_compile_report_of_good_targets_validates():
    for t in TARGETS:
        rep = session(mlp_model(), t).report
        CompileReport.model_validate(rep.model_dump())
