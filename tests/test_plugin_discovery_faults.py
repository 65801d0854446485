"""Discovery faults a third-party plugin author meets: each is that plugin's recorded failure (or, for a
plugin that loads but provides nothing, a warning in ``hal doctor``), never the end of every hal
command, and never a silent change to hal itself. The plugins are installed as real distributions with
entry points (``write_dist``) and discovered in a fresh process, as ``pip install`` would have them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import hal
from hal.errors import InputError
from hal.kernels import KernelDef, lookup
from hal.kernels.registry import _REGISTRY
from hal.plugins import OWN_DISTRIBUTION, PluginRegistry
from hal.specs import TargetSpec, load_spec_sheet
from tests.conftest import run_python, write_dist

DIST = "hal-faulty"

# a target whose spec is valid: the faults below are elsewhere
TARGET = '''
from hal.specs import TargetSpec

class T:
    def __init__(self, name):
        self.spec = TargetSpec(name=name, vendor="Faulty", kind="other")
    def capability(self, graph, options): ...
    def compile(self, graph, options): ...
    def load(self, blob): ...
'''


def _install(site: Path, modules: dict[str, str], entry_points: dict[str, str] | None = None) -> None:
    """Write ``modules`` (module name -> source) into ``site`` and install them as distribution DIST, one
    entry point each (named after the module, ``_`` as ``-``) unless ``entry_points`` says otherwise."""
    site.mkdir(parents=True, exist_ok=True)
    for mod, src in modules.items():
        (site / f"{mod}.py").write_text(textwrap.dedent(src))
    write_dist(site, DIST, entry_points or {m.replace("_", "-"): m for m in modules if m != "faulty_common"})


def _discover(site: Path, report: str, env: dict[str, str] | None = None, setup: str = "") -> dict[str, Any]:
    """Discover plugins in a fresh process and return the JSON of ``report`` (an expression over ``hal``
    and the registry ``r``, after ``setup``)."""
    code = f"import hal, json\nfrom hal.plugins import registry\nr = registry()\n{setup}\nprint(json.dumps({report}))"
    res = run_python(code, site=site, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


RECORDS = ("{n: {'ok': x.ok, 'error': str(x.error) if x.error else None, 'warnings': x.warnings, "
           "'targets': x.targets, 'plugin': x.error.plugin if x.error else None} for n, x in r.records.items()}")


def _doctor(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", COLUMNS="250")
    return subprocess.run([sys.executable, "-m", "hal.cli", "doctor", *args], capture_output=True, text=True,
                          env=env, timeout=120)


# -- A: SystemExit, at import or in a hook, is the plugin's failure -------------------------------------

EXITS = {
    "faulty_common": TARGET,
    "exit_at_import": '''
        import sys
        sys.exit("NPU driver not found; aborting")
    ''',
    "exit_in_hook": '''
        import hal
        HAL_API_VERSION = "1.0"

        @hal.hookimpl
        def hal_targets():
            raise SystemExit("driver not loaded")
    ''',
    "fine": '''
        import hal
        from faulty_common import T
        HAL_API_VERSION = "1.0"

        @hal.hookimpl
        def hal_targets():
            return [T("fine-npu")]
    ''',
}


def test_sys_exit_in_a_plugin_is_its_failure_and_hal_targets_still_works(tmp_path: Path) -> None:
    _install(tmp_path, EXITS)
    out = _discover(tmp_path, "{'targets': [s.name for s in hal.targets()], 'records': " + RECORDS + "}")
    assert {"cpu", "fine-npu"} <= set(out["targets"])
    at_import, in_hook = out["records"]["exit-at-import"], out["records"]["exit-in-hook"]
    assert not at_import["ok"] and at_import["plugin"] == "exit-at-import"
    assert "plugin 'exit-at-import'" in at_import["error"] and DIST in at_import["error"]
    assert "failed to import 'exit_at_import'" in at_import["error"]
    assert "SystemExit" in at_import["error"] and "NPU driver not found" in at_import["error"]
    assert not in_hook["ok"] and "plugin 'exit-in-hook'" in in_hook["error"] and DIST in in_hook["error"]
    assert "hook hal_targets raised SystemExit" in in_hook["error"] and "driver not loaded" in in_hook["error"]


def test_hal_doctor_survives_a_plugin_that_calls_sys_exit(tmp_path: Path) -> None:
    _install(tmp_path, EXITS)
    res = _doctor(tmp_path, "--json")
    assert res.returncode == 1, res.stderr  # a failed plugin is a finding (a CI step reading doctor fails)
    plugins = {p["plugin"]: p for p in json.loads(res.stdout)["plugins"]}
    assert not plugins["exit-at-import"]["ok"] and not plugins["exit-in-hook"]["ok"]
    assert plugins["fine"]["ok"] and plugins["cpu"]["ok"]


def test_keyboard_interrupt_in_a_hook_is_not_swallowed() -> None:
    def interrupted() -> list[Any]:
        raise KeyboardInterrupt

    plugin = types.SimpleNamespace(HAL_API_VERSION="1.0", hal_targets=hal.hookimpl(interrupted))
    with pytest.raises(KeyboardInterrupt):
        PluginRegistry().add(plugin, "interrupted")


def test_sys_exit_from_a_returned_object_is_its_plugins_failure() -> None:
    class Exiting:
        @property
        def spec(self) -> Any:
            sys.exit("no device")

    plugin = types.SimpleNamespace(HAL_API_VERSION="1.0", hal_targets=hal.hookimpl(lambda: [Exiting()]))
    rec = PluginRegistry().add(plugin, "exiting", "exiting-dist")
    assert not rec.ok and rec.error.plugin == "exiting"
    assert "raised SystemExit (sys.exit('no device')) while hal checked what it provides" in str(rec.error)


# -- B: a hook's result that is not a list ----------------------------------------------------------------

def test_a_hook_that_returns_one_target_instead_of_a_list_fails_only_its_plugin(tmp_path: Path) -> None:
    _install(tmp_path, {"faulty_common": TARGET, "not_a_list": '''
        import hal
        from faulty_common import T
        HAL_API_VERSION = "1.0"

        @hal.hookimpl
        def hal_targets():
            return T("single-npu")
    ''', "fine": EXITS["fine"]})
    out = _discover(tmp_path, "{'targets': [s.name for s in hal.targets()], 'records': " + RECORDS + "}")
    rec = out["records"]["not-a-list"]
    assert not rec["ok"] and "plugin 'not-a-list'" in rec["error"] and DIST in rec["error"]
    assert "hook hal_targets returned a faulty_common.T; a list is expected" in rec["error"]
    assert {"cpu", "fine-npu"} <= set(out["targets"]) and "single-npu" not in out["targets"]


def _target(name: str) -> Any:
    class T:
        spec = TargetSpec(name=name, vendor="Faulty", kind="other")

        def capability(self, graph, options): ...

        def compile(self, graph, options): ...

        def load(self, blob): ...

    return T()


def _gen_that_raises():
    yield _target("gen-npu")
    raise RuntimeError("device enumeration failed")


@pytest.mark.parametrize("hook, result, said", [
    ("hal_targets", lambda: _target("single-npu"), "_target.<locals>.T; a list is expected"),
    ("hal_targets", lambda: "acme-npu", "str ('acme-npu'); a list is expected"),
    ("hal_targets", lambda: {"name": "acme-npu"}, "dict ({'name': 'acme-npu'}); a list is expected"),
    ("hal_targets", lambda: 3, "int (3); a list is expected"),
    ("hal_targets", _gen_that_raises, "generator; a list is expected"),
    ("hal_kernels", lambda: KernelDef("Faulty", "com.example.faulty", 1, abs),
     "hal.kernels.registry.KernelDef; a list is expected"),
    ("hal_graph_passes", lambda: {"fold": abs}, "dict ({'fold': <built-in function abs>}); a list is expected"),
])
def test_each_result_that_is_not_a_list_is_one_plugin_error(hook: str, result: Any, said: str) -> None:
    reg = PluginRegistry()
    plugin = types.SimpleNamespace(HAL_API_VERSION="1.0")
    setattr(plugin, hook, hal.hookimpl(result))
    rec = reg.add(plugin, "odd", "odd-dist")
    assert isinstance(rec.error, hal.PluginError) and rec.error.plugin == "odd"
    msg = str(rec.error)
    assert f"hook {hook} returned {'an int' if said.startswith('int ') else 'a '}" in msg and said in msg, msg
    assert "return a list" in msg and reg.targets == {} and not reg.pm.has_plugin("odd")
    assert lookup("Faulty", "com.example.faulty") is None


# -- G: HAL_TRACE_HOOKS traces the hook calls ------------------------------------------------------------

def test_hal_trace_hooks_traces_each_hook_call_and_a_failure_stays_its_plugins(tmp_path: Path) -> None:
    _install(tmp_path, {"raises": '''
        import hal
        HAL_API_VERSION = "1.0"

        @hal.hookimpl
        def hal_targets():
            raise ValueError("license server unreachable")
    '''})
    code = ("import hal; from hal.plugins import registry; r = registry(); "
            "print(sorted(r.targets), str(r.records['raises'].error))")
    res = run_python(code, site=tmp_path, env={"HAL_TRACE_HOOKS": "1", "HAL_PLUGINS": "cpu,raises"})
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    assert sum("hal_targets [hook]" in line and "finish" not in line for line in lines) == 2, res.stderr
    assert any("finish hal_targets -->" in line and "CpuTarget" in line for line in lines), res.stderr
    assert "['cpu']" in res.stdout and "license server unreachable" in res.stdout
    quiet = run_python(code, site=tmp_path, env={"HAL_PLUGINS": "cpu,raises"})
    assert quiet.returncode == 0 and "[hook]" not in quiet.stderr


# -- I: a spec sheet's errors name the file and each bad key ---------------------------------------------

BAD_FIELDS = '''\
[target]
name = "bad-fields"
vendor = "Faulty"
kind = "npu"
precisions = ["exact", "int4"]
dtypes = ["float32", "fp16"]
sram = 5

[hardware.peak_flops]
value = "1 TFLOP"
unit = "flops_per_s"
source = "x"
'''


def test_a_spec_sheet_that_is_not_toml_is_an_input_error_naming_the_file_and_line(tmp_path: Path) -> None:
    sheet = tmp_path / "npu.toml"
    sheet.write_text('[target]\nname = "npu"\nvendor = Faulty\n')
    with pytest.raises(InputError) as e:
        load_spec_sheet(sheet)
    msg = str(e.value)
    assert str(sheet) in msg and "not valid TOML" in msg and "line 3" in msg and "quotes" in e.value.hint


def test_a_spec_sheet_with_bad_fields_lists_each_key_on_a_short_line(tmp_path: Path) -> None:
    sheet = tmp_path / "npu.toml"
    sheet.write_text(BAD_FIELDS)
    with pytest.raises(InputError) as e:
        load_spec_sheet(sheet)
    msg = str(e.value)
    assert str(sheet) in msg and "does not validate (6 errors)" in msg
    lines = [line.strip() for line in e.value.what.splitlines()[1:]]
    assert [line.split(":")[0] for line in lines] == [
        "target.kind", "target.precisions[1]", "target.dtypes", "hardware.peak_flops.value",
        "hardware.peak_flops.source", "target.sram"]
    assert "got 'npu'" in lines[0] and "'fp16'" in lines[2] and "got '1 TFLOP'" in lines[3]
    assert lines[5] == "target.sram: unknown key"
    assert all(len(line) < 130 for line in lines), lines
    assert "pydantic" not in msg and "http" not in msg
    assert "TargetSpec.schema.json" in e.value.hint and "dtype_names" in e.value.hint


def test_a_spec_sheet_that_cannot_be_read_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"spec sheet '.*missing.toml': cannot read it: No such file"):
        load_spec_sheet(tmp_path / "missing.toml")
    (tmp_path / "table.toml").write_text('target = "npu"\n')
    with pytest.raises(InputError, match=r"\[target\] must be a table, not str"):
        load_spec_sheet(tmp_path / "table.toml")


def test_doctor_shows_a_plugins_bad_spec_sheet_by_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "bad_fields.toml").write_text(BAD_FIELDS)
    _install(tmp_path, {"bad_sheet": '''
        from pathlib import Path
        import hal
        from hal.specs import load_spec_sheet
        HAL_API_VERSION = "1.0"

        class T:
            def __init__(self):
                self.spec = load_spec_sheet(Path(__file__).with_name("bad_fields.toml"))

        @hal.hookimpl
        def hal_targets():
            return [T()]
    '''})
    res = _doctor(tmp_path, "--json")
    assert res.returncode == 1, res.stderr
    err = {p["plugin"]: p for p in json.loads(res.stdout)["plugins"]}["bad-sheet"]["error"]
    assert "plugin 'bad-sheet'" in err and "InputError" in err and "bad_fields.toml" in err
    assert "\n  hardware.peak_flops.value: " in err and "errors.pydantic.dev" not in err
    assert len(err.splitlines()) == 7


# -- J: a misspelled hook, a hook without its marker, a plugin that provides nothing -----------------------

QUIET = {
    "faulty_common": TARGET,
    "typo": '''
        import hal
        from faulty_common import T
        HAL_API_VERSION = "1.0"

        @hal.hookimpl
        def hal_target():
            return [T("typo-npu")]
    ''',
    "unmarked": '''
        from faulty_common import T
        HAL_API_VERSION = "1.0"

        def hal_targets():
            return [T("unmarked-npu")]
    ''',
    "returns_none": '''
        import hal
        HAL_API_VERSION = "1.0"

        @hal.hookimpl
        def hal_targets():
            pass  # forgot the return
    ''',
    "hookless": '''
        HAL_API_VERSION = "1.0"
    ''',
}


def test_a_misspelled_or_unmarked_hook_fails_its_plugin_and_one_that_provides_nothing_is_flagged(
        tmp_path: Path) -> None:
    _install(tmp_path, QUIET)
    out = _discover(tmp_path, "{'records': " + RECORDS + ", 'targets': sorted(r.targets), "
                    "'pending': (r.pm.check_pending(), 'none')[1]}")
    recs = out["records"]
    typo = recs["typo"]
    assert not typo["ok"] and "plugin 'typo'" in typo["error"] and DIST in typo["error"]
    assert "marks hal_target with @hal.hookimpl, but hal has no such hook" in typo["error"]
    assert "hal_targets, hal_kernels, hal_graph_passes, hal_conformance_cases" in typo["error"]
    assert "did you mean hal_targets?" in typo["error"]
    assert not recs["unmarked"]["ok"] and "defines hal_targets without @hal.hookimpl" in recs["unmarked"]["error"]
    assert recs["returns-none"]["ok"] and recs["returns-none"]["warnings"] == [
        "provides no targets, kernels or graph passes: hal_targets returned None (a list is expected)"]
    assert recs["hookless"]["ok"] and "implements no hal hook" in recs["hookless"]["warnings"][0]
    assert recs["cpu"]["ok"] and recs["cpu"]["warnings"] == []
    assert "typo-npu" not in out["targets"] and "unmarked-npu" not in out["targets"]
    assert out["pending"] == "none"  # pluggy's own check finds no unknown hook left registered


def test_doctor_marks_a_plugin_that_provides_nothing(tmp_path: Path) -> None:
    _install(tmp_path, {"returns_none": QUIET["returns_none"]})
    res = _doctor(tmp_path)
    assert res.returncode == 0, res.stderr  # a warning is not a failure
    row = next(line for line in res.stdout.splitlines() if "returns-none" in line)
    assert "ok, but provides no targets, kernels or graph passes" in row and "[green]" not in row
    assert "(1 with a warning), 0 failed" in res.stdout
    doc = json.loads(_doctor(tmp_path, "--json").stdout)
    rec = {p["plugin"]: p for p in doc["plugins"]}["returns-none"]
    assert rec["ok"] and rec["warnings"] and "hal_targets returned None" in rec["warnings"][0]


# -- H: a third party cannot replace hal's own kernels ---------------------------------------------------

def test_a_plugin_kernel_for_a_builtin_onnx_op_is_refused_and_the_reference_keeps_hals(tmp_path: Path) -> None:
    _install(tmp_path, {"faulty_common": TARGET, "relu_override": '''
        import numpy as np
        import hal
        from hal.kernels import KernelDef
        from faulty_common import T
        HAL_API_VERSION = "1.0"

        def wrong_relu(x):
            return np.abs(x)

        @hal.hookimpl
        def hal_kernels():
            return [KernelDef("Swish", "com.faulty", 1, wrong_relu), KernelDef("Relu", "", 14, wrong_relu)]

        @hal.hookimpl
        def hal_targets():
            return [T("relu-npu")]
    '''})
    out = _discover(tmp_path, "{'records': " + RECORDS + ", 'relu': hal.kernels.lookup('Relu', '', 14).fn.__module__,"
                    " 'swish': hal.kernels.lookup('Swish', 'com.faulty') is not None, 'targets': sorted(r.targets),"
                    " 'y': relu_on_cpu()}", setup=RELU_ON_CPU)
    rec = out["records"]["relu-override"]
    assert not rec["ok"] and "plugin 'relu-override'" in rec["error"] and DIST in rec["error"]
    assert "hal_kernels registers Relu in domain 'ai.onnx' (since 14), which hal's own kernels implement" \
        in rec["error"]
    assert "register your kernel under a domain of your own" in rec["error"]
    assert out["relu"].startswith("hal.kernels") and out["y"] == [0.0, 2.0]
    assert not out["swish"] and "relu-npu" not in out["targets"]  # the plugin left nothing behind


RELU_ON_CPU = """
import numpy as np
from onnx import TensorProto, helper

def relu_on_cpu():
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    return hal.InferenceSession(model, target="cpu").run(None, {"x": np.array([-1.0, 2.0], np.float32)})[0].tolist()
"""


@pytest.fixture
def relu_restored():
    saved = list(_REGISTRY[("", "Relu")])
    yield
    _REGISTRY[("", "Relu")] = saved
    for key in [k for k in _REGISTRY if k[0] == "com.example.faulty"]:
        del _REGISTRY[key]


def _kernels_plugin(*kernels: KernelDef) -> types.SimpleNamespace:
    return types.SimpleNamespace(HAL_API_VERSION="1.0", hal_kernels=hal.hookimpl(lambda: list(kernels)))


def _neg(x: np.ndarray) -> np.ndarray:
    return -x


@pytest.mark.usefixtures("relu_restored")
@pytest.mark.parametrize("domain, since", [("", 14), ("ai.onnx", 99), ("", 1)])
def test_any_opset_of_a_builtin_op_is_refused_in_process(domain: str, since: int) -> None:
    hals = lookup("Relu", "", 14)
    rec = PluginRegistry().add(_kernels_plugin(KernelDef("Relu", domain, since, _neg)), "over", "over-dist")
    assert not rec.ok and "which hal's own kernels implement" in str(rec.error)
    assert lookup("Relu", "", 14) is hals and lookup("Relu", "", 99) is hals


@pytest.mark.usefixtures("relu_restored")
def test_hals_own_distribution_may_register_kernels_for_builtin_ops() -> None:
    mine = KernelDef("Relu", "", 99, _neg)
    rec = PluginRegistry().add(_kernels_plugin(mine), "own", OWN_DISTRIBUTION)
    assert rec.ok and lookup("Relu", "", 99) is mine


@pytest.mark.usefixtures("relu_restored")
def test_a_custom_op_another_plugin_registered_is_refused_and_the_first_keeps_it() -> None:
    reg = PluginRegistry()
    first = KernelDef("Fused", "com.example.faulty", 1, _neg)
    assert reg.add(_kernels_plugin(first), "first").ok
    rec = reg.add(_kernels_plugin(KernelDef("Fused", "com.example.faulty", 2, abs)), "second", "second-dist")
    assert "hal_kernels registers Fused in domain 'com.example.faulty', which plugin 'first' already registered" \
        in str(rec.error)
    assert lookup("Fused", "com.example.faulty", 5) is first


# -- a target that wraps another: looking one up while discovery runs -----------------------------------

WRAPPER = {
    "wrapping_npu": '''
        import hal
        from hal.plugins import get_target
        from hal.specs import TargetSpec

        class Wrapper:
            """A vendor target built on hal's gpu, looked up in hal_targets (discovery is running)."""
            def __init__(self):
                self.inner = get_target("gpu")
                self.spec = TargetSpec.model_validate({**self.inner.spec.model_dump(), "name": "gpu-wrapped"})
            def capability(self, graph, options):
                return self.inner.capability(graph, options).model_copy(update={"target": self.spec.name})
            def compile(self, graph, options):
                return self.inner.compile(graph, options)
            def load(self, blob):
                return self.inner.load(blob)

        HAL_API_VERSION = "1.0"

        @hal.hookimpl
        def hal_targets():
            return [Wrapper()]
    ''',
}


def test_a_hook_that_looks_up_a_loaded_target_gets_it_instead_of_hanging(tmp_path):
    # the lookup used to wait for ever on discovery's own lock; hal's own plugins load first
    _install(tmp_path / "site", WRAPPER)
    got = _discover(tmp_path / "site", "{'targets': r.records['wrapping-npu'].targets, "
                                        "'error': str(r.records['wrapping-npu'].error or '')}")
    assert got == {"targets": ["gpu-wrapped"], "error": ""}


def test_an_in_process_plugin_may_look_targets_up_in_its_hook():
    # plugins.register holds the registry's lock while it calls the hooks: re-entrant, it must not wait
    class Plugin:
        HAL_API_VERSION = "1.0"

        @hal.hookimpl
        def hal_targets(self):
            cpu = hal.plugins.get_target("cpu")
            t = types.SimpleNamespace(spec=TargetSpec.model_validate({**cpu.spec.model_dump(), "name": "cpu-again"}),
                                      capability=cpu.capability, compile=cpu.compile, load=cpu.load)
            return [t]

    hal.plugins.register(Plugin(), "cpu-again-plugin")
    try:
        assert "cpu-again" in hal.plugins.registry().targets
    finally:
        hal.plugins.unregister("cpu-again-plugin")
