"""Discovery: entry points only, the reference target included; broken plugins are isolated."""

from __future__ import annotations

import json
import subprocess
import sys

import hal
from hal.plugins import registry
from tests.conftest import run_python, write_dist


def test_cpu_target_is_discovered_through_its_entry_point():
    reg = registry()
    assert "cpu" in reg.targets
    rec = reg.records["cpu"]
    assert rec.ok and rec.distribution == "hal-sdk" and rec.targets == ["cpu"]
    assert [s.name for s in hal.targets()].count("cpu") == 1


def _discovered(plugin_site, dist: str, entry_points: dict[str, str], report: str) -> dict:
    """Install ``dist`` with its entry points, discover plugins in a fresh process, and return the JSON of
    ``report`` (an expression over ``hal`` and the registry ``r``)."""
    write_dist(plugin_site, dist, entry_points)
    res = run_python(f"import hal, json; from hal.plugins import registry; r = registry(); print(json.dumps({report}))",
                     site=plugin_site)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_out_of_tree_plugin_is_found_with_no_change_to_the_core(plugin_site):
    out = _discovered(plugin_site, "hal-example-plugin", {"example": "hal_example_plugin"},
                      "{'targets': [s.name for s in hal.targets()], 'dist': r.records['example'].distribution}")
    assert "example-npu" in out["targets"] and "cpu" in out["targets"]
    assert out["dist"] == "hal-example-plugin"


def test_broken_plugins_are_recorded_and_the_others_still_load(plugin_site):
    out = _discovered(plugin_site, "hal-broken-bundle", {
        "broken_import": "hal_broken_import", "broken_api": "hal_broken_api",
        "broken_spec": "hal_broken_spec", "broken_hook": "hal_broken_hook", "example": "hal_example_plugin"},
        "{'targets': sorted(r.targets), 'errors': {x.plugin: str(x) for x in r.failures}}")
    errors = out["errors"]
    assert {"broken_import", "broken_api", "broken_spec", "broken_hook"} <= set(errors)
    for name, msg in errors.items():
        if name.startswith("broken"):
            assert f"plugin {name!r}" in msg and "hal-broken-bundle" in msg
    assert "libfoo.so" in errors["broken_import"]
    assert "HAL API 2.0" in errors["broken_api"] and "1.0" in errors["broken_api"]
    assert "invalid spec" in errors["broken_spec"]
    assert "license server unreachable" in errors["broken_hook"]
    assert "cpu" in out["targets"] and "example-npu" in out["targets"]
    assert "bad-spec" not in out["targets"]


def test_no_plugin_can_take_the_name_of_hals_own_targets(plugin_site):
    # an entry point 'aaa' sorts before 'cpu': discovery went by name, and the impostor became the
    # reference every compare measured the other targets against
    out = _discovered(plugin_site, "hal-impostor", {"aaa": "hal_steal_cpu"},
                      "{'cpu': r.targets['cpu'].spec.vendor, 'dist': r.records['cpu'].distribution,"
                      " 'error': str(r.records['aaa'].error)}")
    assert out["dist"] == "hal-sdk" and out["cpu"] != "Impostor"
    assert "target name 'cpu' is already provided by plugin 'cpu'" in out["error"] and "hal-impostor" in out["error"]


def test_hal_plugins_env_limits_which_plugins_load(plugin_site):
    write_dist(plugin_site, "hal-example-plugin", {"example": "hal_example_plugin"})
    res = run_python("import hal; print(','.join(s.name for s in hal.targets()))", site=plugin_site,
                     env={"HAL_PLUGINS": "cpu"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "cpu"


def test_doctor_reports_a_broken_plugin_and_exits_1(plugin_site):
    """The broken plugin is listed beside the working ones, and the exit status says one failed (1, as pip
    check's conflicts: a CI step that runs hal doctor stops there; a usage or run error is 2)."""
    import os

    write_dist(plugin_site, "hal-broken-bundle", {"broken_hook": "hal_broken_hook"})
    env = dict(os.environ, PYTHONPATH=f"{plugin_site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    res = subprocess.run([sys.executable, "-m", "hal.cli", "doctor", "--json"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 1, res.stderr
    doc = json.loads(res.stdout)
    bad = {p["plugin"]: p for p in doc["plugins"]}["broken_hook"]
    assert not bad["ok"] and "license server unreachable" in bad["error"]
    assert {p["plugin"]: p for p in doc["plugins"]}["cpu"]["ok"]
    # what the environment offers: the compiled loops, and ImageDecoder's codecs (the dev extra has Pillow)
    assert doc["environment"]["compiled_loops"].startswith(("on", "off"))
    assert doc["environment"]["fused_products"].startswith(("direct", "through np.matmul ("))
    assert doc["environment"]["image_decoder"].startswith("on (Pillow ")


def test_targets_json_lists_cpu():
    res = subprocess.run([sys.executable, "-m", "hal.cli", "targets", "--json"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    specs = json.loads(res.stdout)
    cpu = next(s for s in specs if s["name"] == "cpu")
    assert cpu["kind"] == "cpu" and cpu["hal_api"] == "1.0"
