"""What discovery refuses, in-process: each breach of the plugin contract is one PluginError naming
the plugin, saying what is wrong and what to do, and the plugin leaves nothing behind (no target,
no kernel, no graph pass, no hooks) while the plugins around it load as usual."""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import pytest

import hal
from hal.kernels import KernelDef, lookup
from hal.kernels.registry import _REGISTRY
from hal.plugins import PluginRegistry
from hal.specs import HAL_API_VERSION, TargetSpec

DOMAIN = "com.example.contract"


@pytest.fixture(autouse=True)
def _kernels_restored():
    """Kernels join the process-wide registry: what a test's plugin registered goes with the test."""
    yield
    for key in [k for k in _REGISTRY if k[0] == DOMAIN]:
        del _REGISTRY[key]


def _double(x: np.ndarray) -> np.ndarray:
    return x * 2


def _identity_pass(graph: Any) -> Any:
    return graph


class _Target:
    def __init__(self, name: str, hal_api: str = HAL_API_VERSION, *, without: str | None = None):
        self.spec = TargetSpec(name=name, vendor="Example", kind="other", hal_api=hal_api)
        if without:
            setattr(self, without, None)

    def capability(self, graph, options): ...

    def compile(self, graph, options): ...

    def load(self, blob): ...


def _unvalidated() -> _Target:
    """A target whose spec object was built with model_construct: no validation, a name and a kind
    the schema refuses (hal's checks had skipped any TargetSpec instance)."""
    t = _Target("contract-unvalidated")
    t.spec = TargetSpec.model_construct(**{**dict(t.spec), "name": "Not A Name!", "kind": "tpu"})
    return t


def _plugin(*, api: str | None = HAL_API_VERSION, targets=(), kernels=(), passes=()) -> types.SimpleNamespace:
    """A plugin module's namespace: its API version and its three discovery hooks."""
    ns = types.SimpleNamespace()
    if api is not None:
        ns.HAL_API_VERSION = api
    ns.hal_targets = hal.hookimpl(lambda: list(targets))
    ns.hal_kernels = hal.hookimpl(lambda: list(kernels))
    ns.hal_graph_passes = hal.hookimpl(lambda: list(passes))
    return ns


def _kernel(op: str) -> KernelDef:
    return KernelDef(op, DOMAIN, 1, _double)


def _left_nothing(reg: PluginRegistry, name: str, kernel_ops: tuple[str, ...] = ()) -> None:
    rec = reg.records[name]
    assert not rec.ok and rec.targets == []
    assert not reg.pm.has_plugin(name)
    assert all(lookup(op, DOMAIN) is None for op in kernel_ops)
    assert reg.graph_passes == {}


def test_a_plugin_that_keeps_the_contract_offers_its_targets_kernels_and_passes() -> None:
    reg = PluginRegistry()
    rec = reg.add(_plugin(targets=[_Target("contract-ok")], kernels=[_kernel("ContractOk")],
                          passes=[_identity_pass]), "good", "good-dist", "1.2")
    assert rec.ok and rec.targets == ["contract-ok"] and rec.api == HAL_API_VERSION
    assert set(reg.targets) == {"contract-ok"} and reg.pm.has_plugin("good")
    assert lookup("ContractOk", DOMAIN).fn is _double
    assert reg.graph_passes == {"_identity_pass": _identity_pass}


@pytest.mark.parametrize("breach, plugin, message, hint", [
    ("no API version", dict(api=None), "declares no HAL_API_VERSION", f'HAL_API_VERSION = "{HAL_API_VERSION}"'),
    ("another API major", dict(api="2.3"), "built for HAL API 2.3, but this hal speaks HAL API 1.0",
     "built for this HAL API major"),
    ("a kernel that is not a KernelDef", dict(kernels=[_kernel("ContractBreach"), "not a kernel"]),
     "hal_kernels returned str, not hal.kernels.KernelDef", None),
    ("a target without load", dict(targets=[_Target("contract-noload", without="load")]),
     "returned a _Target that is not a target: it lacks load", "hal.target.Target protocol"),
    ("a spec object that skips validation", dict(targets=[_unvalidated()]),
     "returned a target with an invalid spec: name:", "TargetSpec.schema.json"),
    ("a target of another API major", dict(targets=[_Target("contract-old", hal_api="0.9")]),
     "target 'contract-old' declares HAL API 0.9", None),
    ("a pass that is not a function", dict(passes=[_identity_pass, "fold"]),
     "hal_graph_passes returned str, not a named function", "__name__"),
    ("one pass name twice", dict(passes=[_identity_pass, _identity_pass]),
     "graph pass name '_identity_pass' is already offered twice by this plugin", "name the pass function"),
])
def test_each_breach_is_one_plugin_error_and_the_plugin_leaves_nothing(breach, plugin, message, hint) -> None:
    reg = PluginRegistry()
    fields = {"targets": [_Target("contract-breach")], "kernels": [_kernel("ContractBreach")],
              "passes": [_identity_pass], **plugin}
    rec = reg.add(_plugin(**fields), "bad", "bad-dist")
    err = rec.error
    assert isinstance(err, hal.PluginError) and err.plugin == "bad" and err.distribution == "bad-dist"
    assert message in str(err) and "plugin 'bad'" in str(err) and "bad-dist" in str(err)
    if hint:
        assert hint in str(err)
    _left_nothing(reg, "bad", ("ContractBreach",))
    assert reg.targets == {}


def test_a_target_name_already_offered_is_refused_and_the_first_keeps_it() -> None:
    reg = PluginRegistry()
    first = _Target("contract-twice")
    assert reg.add(_plugin(targets=[first]), "first").ok
    rec = reg.add(_plugin(targets=[_Target("contract-twice"), _Target("contract-other")],
                          kernels=[_kernel("ContractTwice")]), "second")
    assert "target name 'contract-twice' is already provided by plugin 'first'" in str(rec.error)
    _left_nothing(reg, "second", ("ContractTwice",))
    assert reg.targets == {"contract-twice": first}  # nor its other, valid target


def test_a_graph_pass_name_already_offered_is_refused_and_the_first_keeps_it() -> None:
    """Passes are offered by name: a second plugin's pass of the same name had silently replaced the first's."""
    reg = PluginRegistry()
    assert reg.add(_plugin(passes=[_identity_pass]), "first").ok
    theirs = lambda graph: graph  # noqa: E731 (another plugin's pass, of the same name)
    theirs.__name__ = "_identity_pass"
    rec = reg.add(_plugin(targets=[_Target("contract-pass")], passes=[theirs]), "second")
    assert "graph pass name '_identity_pass' is already offered by another plugin" in str(rec.error)
    assert reg.graph_passes["_identity_pass"] is _identity_pass and "contract-pass" not in reg.targets


def test_a_hook_that_does_not_match_its_spec_cannot_be_registered() -> None:
    reg = PluginRegistry()
    plugin = _plugin(targets=[_Target("contract-hook")])
    plugin.hal_targets = hal.hookimpl(lambda device: [])  # the spec's hook takes no argument
    rec = reg.add(plugin, "wrong-hook")
    assert "cannot be registered" in str(rec.error) and "device" in str(rec.error)
    _left_nothing(reg, "wrong-hook")


def test_a_hook_that_raises_fails_its_plugin_only() -> None:
    reg = PluginRegistry()
    assert reg.add(_plugin(targets=[_Target("contract-before")]), "before").ok
    plugin = _plugin(targets=[_Target("contract-raises")])

    def broken() -> list[Any]:
        raise ConnectionError("license server unreachable")

    plugin.hal_graph_passes = hal.hookimpl(broken)
    rec = reg.add(plugin, "raises")
    assert "hook hal_graph_passes raised ConnectionError: license server unreachable" in str(rec.error)
    _left_nothing(reg, "raises")
    assert reg.add(_plugin(targets=[_Target("contract-after")]), "after").ok
    assert set(reg.targets) == {"contract-before", "contract-after"}
    assert [f.plugin for f in reg.failures] == ["raises"]
