"""What a hardware vendor meets writing an out-of-tree plugin from specs/plugin-guide.md: each mistake a
vendor makes is refused with a message naming the plugin, what is wrong and what to do, and none of them
changes hal itself (the cpu reference's kernels above all). Plugins are installed as distributions with
entry points (``write_dist``) and discovered in a fresh process, as ``pip install`` would have them."""

from __future__ import annotations

import json
import textwrap
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

import hal
from hal import plugins
from hal.errors import InputError, PluginError
from hal.specs import CompileReport, HardwareNumber, MemoryLevel, TargetSpec, load_spec_sheet
from tests.conftest import run_python, write_dist

DIST = "acme-review"

TARGET = '''
from hal.plugins import get_target
from hal.specs import TargetSpec

class T:  # the cpu target under another name: the faults below are elsewhere
    def __init__(self, name):
        self.spec = TargetSpec(name=name, vendor="Acme", kind="other")
    def capability(self, graph, options):
        return get_target("cpu").capability(graph, options).model_copy(update={"target": self.spec.name})
    def compile(self, graph, options):
        return get_target("cpu").compile(graph, options)
    def load(self, blob):
        return get_target("cpu").load(blob)
'''


def _discover(tmp_path: Path, source: str, report: str, setup: str = "") -> Any:
    """Install module ``acme_review`` (``source``) as distribution DIST, discover it in a fresh process with
    only cpu beside it, and return the JSON of ``report`` (over ``hal``, the registry ``r`` and ``rec``)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "acme_review.py").write_text(textwrap.dedent(source))
    write_dist(site, DIST, {"acme-review": "acme_review"})
    code = (f"import hal, json\nfrom hal.plugins import registry\nr = registry()\nrec = r.records['acme-review']\n"
            f"{setup}\nprint(json.dumps({report}))")
    res = run_python(code, site=site, env={"HAL_PLUGINS": "cpu,acme-review"})
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


ERROR = "{'ok': rec.ok, 'error': str(rec.error) if rec.error else None, 'api': rec.api, 'targets': rec.targets}"


# -- HAL_API_VERSION written wrong: said so, not "declares none" nor "built for HAL API v1" ------------------

@pytest.mark.parametrize("value, shown", [("1.0", "1.0 (a float)"), ('"v1"', "'v1'"), ('"1"', "'1'"),
                                          ('"1.0.0"', "'1.0.0'")])
def test_an_api_version_not_a_major_minor_string_says_so(tmp_path: Path, value: str, shown: str):
    rec = _discover(tmp_path, f"import hal\nHAL_API_VERSION = {value}\n" + TARGET
                    + "\n@hal.hookimpl\ndef hal_targets():\n    return [T('acme-review')]\n", ERROR)
    assert not rec["ok"] and rec["targets"] == []
    err = rec["error"]
    assert f"plugin 'acme-review' (distribution '{DIST}')" in err
    assert f'declares HAL_API_VERSION = {shown}, not a string of the form "MAJOR.MINOR"' in err
    assert f'set HAL_API_VERSION = "{hal.HAL_API_VERSION}"' in err
    assert rec["api"] == (None if value == "1.0" else json.loads(value))


def test_another_major_tells_the_plugins_authors_what_to_do(tmp_path: Path):
    rec = _discover(tmp_path, 'import hal\nHAL_API_VERSION = "2.0"\n', ERROR)
    assert "built for HAL API 2.0, but this hal speaks HAL API 1.0" in rec["error"]
    assert "its authors: port it to HAL API 1.0" in rec["error"]


# -- a kernel replaced behind hal_kernels' back ------------------------------------------------------------

RELU_CHECK = ("{'ok': rec.ok, 'error': str(rec.error) if rec.error else None, "
              "'relu': __import__('hal.kernels', fromlist=['lookup']).lookup('Relu', '', 17).fn.__module__, "
              "'y': hal.InferenceSession(m, target='cpu').run(None, {'x': np.array([[-1.0, 2.0]], np.float32)})[0]"
              ".tolist(), 'custom': __import__('hal.kernels', fromlist=['lookup']).lookup('Mine', 'com.acme') "
              "is not None}")
RELU_MODEL = '''
import numpy as np
from onnx import TensorProto, helper
g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "r",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
'''


@pytest.mark.parametrize("where", ["import", "hook"])
def test_a_plugin_replacing_hals_kernel_outside_hal_kernels_fails_and_the_reference_is_kept(tmp_path: Path,
                                                                                          where: str):
    """``@hal.kernels.kernel("Relu")`` in a plugin module replaced the cpu reference's Relu for every target,
    silently (hal doctor said ok; compare agreed with itself): now the plugin fails and the kernel is put back."""
    replace = textwrap.dedent('''
        from hal.kernels import kernel
        @kernel("Relu", since=14)
        def my_relu(x):
            return np.maximum(x, 0) + 1
        @kernel("Mine", domain="com.acme")
        def mine(x):
            return x
    ''')
    body = textwrap.indent(replace, "    ") if where == "hook" else replace
    source = ("import hal\nimport numpy as np\nHAL_API_VERSION = '1.0'\n" + TARGET
              + ("" if where == "hook" else body)
              + "\n@hal.hookimpl\ndef hal_targets():\n" + (body if where == "hook" else "")
              + "    return [T('acme-review')]\n")
    rec = _discover(tmp_path, source, RELU_CHECK, setup=RELU_MODEL)
    assert not rec["ok"]
    assert "replaced hal's own kernel for Relu in domain 'ai.onnx'" in rec["error"]
    assert f"plugin 'acme-review' (distribution '{DIST}')" in rec["error"]
    assert "from the hal_kernels hook instead" in rec["error"]
    assert rec["relu"].startswith("hal.") and rec["y"] == [[0.0, 2.0]]
    assert not rec["custom"]  # a failed plugin offers nothing, its new kernels included


def test_a_plugins_own_custom_kernels_through_the_hook_still_load(tmp_path: Path):
    source = ("import hal\nimport numpy as np\nfrom hal.kernels import KernelDef\nHAL_API_VERSION = '1.0'\n"
              "def mine(x):\n    return x\n"
              "@hal.hookimpl\ndef hal_kernels():\n    return [KernelDef('Mine', 'com.acme', 1, mine)]\n")
    rec = _discover(tmp_path, source, RELU_CHECK, setup=RELU_MODEL)
    assert rec["ok"], rec["error"]
    assert rec["custom"] and rec["y"] == [[0.0, 2.0]]


# -- unregister takes the plugin's graph passes with it ------------------------------------------------------

def test_a_plugin_registered_again_after_unregister_offers_its_passes_again():
    def review_fuse_nothing(graph):
        return graph

    plugin = types.SimpleNamespace(HAL_API_VERSION="1.0", hal_graph_passes=hal.hookimpl(lambda: [review_fuse_nothing]))
    try:
        assert plugins.register(plugin, "acme-review-passes").ok
        plugins.unregister("acme-review-passes")
        assert "review_fuse_nothing" not in plugins.registry().graph_passes
        rec = plugins.register(plugin, "acme-review-passes")
        assert rec.ok, rec.error
        assert plugins.registry().graph_passes["review_fuse_nothing"] is review_fuse_nothing
    finally:
        plugins.unregister("acme-review-passes")


# -- reports: a negative figure is the plugin's error at the session, as NaN is --------------------------------

def test_a_report_with_a_negative_figure_does_not_validate():
    with pytest.raises(ValidationError, match="latency_s is -1.0: a modelled figure is never negative"):
        CompileReport(target="acme", latency_s=-1.0)
    with pytest.raises(ValidationError, match="bytes is -5"):
        MemoryLevel(level="SRAM", bytes=-5)
    assert CompileReport(target="acme", latency_s=0.0, energy_j=None).latency_s == 0.0


class _NegativeTarget:
    def __init__(self) -> None:
        self.spec = TargetSpec(name="acme-review-negative", vendor="Acme", kind="other")

    def capability(self, graph, options):
        return plugins.get_target("cpu").capability(graph, options).model_copy(update={"target": self.spec.name})

    def compile(self, graph, options):
        exe = plugins.get_target("cpu").compile(graph, options)
        exe.report.latency_s = -2e-6  # a sign error in the cost model, set after the report was built
        return exe

    def load(self, blob):
        return plugins.get_target("cpu").load(blob)


def test_a_session_refuses_a_negative_latency_naming_the_plugin():
    plugin = types.SimpleNamespace(HAL_API_VERSION="1.0", hal_targets=hal.hookimpl(lambda: [_NegativeTarget()]))
    try:
        assert plugins.register(plugin, "acme-review-negative", distribution=DIST).ok
        with pytest.raises(PluginError) as e:
            hal.InferenceSession("zoo:tiny-cnn", target="acme-review-negative")
        msg = str(e.value)
        assert f"plugin 'acme-review-negative' (distribution '{DIST}')" in msg
        assert "invalid compile report (latency_s: " in msg and "never negative" in msg
    finally:
        plugins.unregister("acme-review-negative")


# -- the spec sheet: a misspelt key or number says what was meant -------------------------------------------

SHEET = '''
[target]
name = "acme-review"
vendor = "Acme"
kind = "other"
{target_extra}
[hardware]
peak_flops = {{value = 1e12, unit = "flops_per_s", kind = "derived", {source}}}
'''


@pytest.mark.parametrize("target_extra, source, said", [
    ("", 'sourse = "datasheet table 1"', "hardware.peak_flops.sourse: unknown key (did you mean 'source'?)"),
    ('precision = ["exact"]', 'source = "datasheet table 1"',
     "target.precision: unknown key (did you mean 'precisions'?)"),
])
def test_a_misspelt_sheet_key_suggests_the_key_meant(tmp_path: Path, target_extra: str, source: str, said: str):
    sheet = tmp_path / "acme-review.toml"
    sheet.write_text(SHEET.format(target_extra=target_extra, source=source))
    with pytest.raises(InputError) as e:
        load_spec_sheet(sheet)
    assert said in str(e.value) and str(sheet) in str(e.value)


def test_a_misspelt_hardware_number_names_the_one_meant_and_those_there():
    spec = TargetSpec(name="acme-review", vendor="Acme", kind="other", hardware={
        "peak_flops": HardwareNumber(value=1e12, unit="flops_per_s", source="datasheet table 1"),
        "sram_bytes": HardwareNumber(value=2**26, unit="bytes", source="datasheet table 2")})
    with pytest.raises(KeyError) as e:
        spec.hw("peak_flop")
    assert "no hardware number 'peak_flop' (did you mean 'peak_flops'?); it has peak_flops, sram_bytes" in str(e.value)
    assert spec.hw("sram_bytes") == 2**26 and np.isfinite(spec.hw("peak_flops"))


def test_hal_doctor_lists_the_kernels_and_passes_a_plugin_provides(hal_cli):
    # a plugin of custom kernels and graph passes (no target) had shown "—" under targets: nothing said
    # what it provides
    import json

    from hal.kernels import KernelDef

    def review_pass(graph):
        return graph

    plugin = types.SimpleNamespace(
        HAL_API_VERSION="1.0", hal_graph_passes=hal.hookimpl(lambda: [review_pass]),
        hal_kernels=hal.hookimpl(lambda: [KernelDef("Twice", "com.review", 1, lambda x: x * 2)]))
    try:
        assert plugins.register(plugin, "acme-review-provides").ok
        rc, out, _ = hal_cli("doctor", "--json")
        assert rc == 0
        (mine,) = [p for p in json.loads(out)["plugins"] if p["plugin"] == "acme-review-provides"]
        assert mine["kernels"] == ["com.review::Twice"] and mine["graph_passes"] == ["review_pass"]
        rc, out, _ = hal_cli("doctor")
        assert rc == 0 and "kernels com.review::Twice; passes review_pass" in " ".join(out.split())
    finally:
        plugins.unregister("acme-review-provides")


def test_a_compile_that_builds_an_invalid_report_says_so_in_one_line():
    # pydantic's own text had reached the user: several lines, "[type=value_error, input_value=-1.0, ...]"
    # and a URL to pydantic's docs
    class _Neg:
        spec = TargetSpec(name="acme-neg", vendor="acme", kind="other")

        def capability(self, graph, options):
            return plugins.get_target("cpu").capability(graph, options)

        def compile(self, graph, options):
            CompileReport(target="acme-neg", latency_s=-1.0)

        def load(self, blob):
            raise NotImplementedError

    plugin = types.SimpleNamespace(HAL_API_VERSION="1.0", hal_targets=hal.hookimpl(lambda: [_Neg()]))
    assert plugins.register(plugin, "acme-review-neg").ok
    try:
        with pytest.raises(hal.PluginError) as e:
            hal.InferenceSession("zoo:tiny-cnn", target="acme-neg")
        text = str(e.value)
        said = "compile on target 'acme-neg' built an invalid CompileReport (1 error; latency_s: latency_s is -1.0"
        assert said in text and "\n" not in e.value.what and "pydantic.dev" not in text
        assert e.value.hint == "see specs/schemas/CompileReport.schema.json"
    finally:
        plugins.unregister("acme-review-neg")
