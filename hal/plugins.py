"""Plugin discovery: entry points in, validated targets out, every failure isolated and recorded.

Plugins come from the ``hal.plugins`` entry-point group (the built-in targets too, as in
datasette's DEFAULT_PLUGINS) or from ``register()`` in-process. ``HAL_PLUGINS=a,b`` limits which
entry points load; ``HAL_TRACE_HOOKS=1`` prints every hook call (pluggy's tracing).
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy
from pydantic import ValidationError

from hal import hookspecs
from hal.errors import InputError, PluginError
from hal.kernels import KernelDef
from hal.kernels import register as register_kernel
from hal.specs import HAL_API_VERSION, TargetSpec
from hal.target import Target

ENTRY_POINT_GROUP = "hal.plugins"
#: the distribution whose plugins are hal's own (cpu, gpu, lpu, wafer): they load before any other
OWN_DISTRIBUTION = "hal-sdk"


@dataclass
class PluginRecord:
    """What discovery learnt about one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    api: str | None = None
    targets: list[str] = field(default_factory=list)
    error: PluginError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class PluginRegistry:
    """The loaded plugins, their targets and their failures."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        if os.environ.get("HAL_TRACE_HOOKS"):
            self.pm.trace.root.setwriter(lambda msg: print(msg, end="", file=sys.stderr))
            self.pm.enable_tracing()
        self.records: dict[str, PluginRecord] = {}
        self.targets: dict[str, Target] = {}
        self.graph_passes: dict[str, Any] = {}

    @property
    def failures(self) -> list[PluginError]:
        return [r.error for r in self.records.values() if r.error is not None]

    def _fail(self, rec: PluginRecord, what: str, hint: str | None = None) -> None:
        rec.error = PluginError(what, plugin=rec.name, distribution=rec.distribution, hint=hint)
        if self.pm.has_plugin(rec.name):
            self.pm.unregister(name=rec.name)
        for t in rec.targets:
            self.targets.pop(t, None)
        rec.targets = []

    def _call(self, rec: PluginRecord, hook: str) -> list[Any] | None:
        """Call one hook on one plugin only; its exception is its own failure."""
        plugin = self.pm.get_plugin(rec.name)
        impl = getattr(plugin, hook, None)
        if impl is None:
            return []
        try:
            result = impl()
        except Exception as e:  # a plugin's hook may raise anything; it must not stop discovery
            self._fail(rec, f"hook {hook} raised {type(e).__name__}: {e}")
            return None
        return list(result or [])

    def add(self, plugin: Any, name: str, distribution: str | None = None, version: str | None = None) -> PluginRecord:
        """Register one plugin object (module or instance), validate it and collect its targets."""
        rec = PluginRecord(name, distribution, version)
        self.records[name] = rec
        api = getattr(plugin, "HAL_API_VERSION", None)
        rec.api = api
        if not isinstance(api, str):
            self._fail(rec, "declares no HAL_API_VERSION",
                       hint=f'set HAL_API_VERSION = "{HAL_API_VERSION}" in the plugin module')
            return rec
        major = api.split(".")[0]
        if major != HAL_API_VERSION.split(".")[0]:
            self._fail(rec, f"was built for HAL API {api}, but this hal speaks HAL API {HAL_API_VERSION}",
                       hint="install a plugin release built for this HAL API major version")
            return rec
        try:
            self.pm.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as e:
            self._fail(rec, f"cannot be registered: {e}")
            return rec

        kernels = self._call(rec, "hal_kernels")
        if kernels is None:
            return rec
        for k in kernels:
            if not isinstance(k, KernelDef):
                self._fail(rec, f"hal_kernels returned {type(k).__name__}, not hal.kernels.KernelDef")
                return rec
        passes = self._call(rec, "hal_graph_passes")
        if passes is None:
            return rec
        targets = self._call(rec, "hal_targets")
        if targets is None:
            return rec
        accepted: dict[str, Target] = {}
        for t in targets:
            spec = getattr(t, "spec", None)
            missing = [m for m in ("spec", "capability", "compile", "load")
                       if not (callable(getattr(t, m, None)) if m != "spec" else hasattr(t, m))]
            if missing:
                self._fail(rec, f"returned a {type(t).__name__} that is not a target: it lacks {', '.join(missing)}",
                           hint="implement the hal.target.Target protocol")
                return rec
            try:  # a TargetSpec object too: model_construct skips validation, the contract does not
                spec = TargetSpec.model_validate(spec.model_dump() if isinstance(spec, TargetSpec) else spec)
                t.spec = spec
            except (ValidationError, TypeError, AttributeError) as e:
                first = e.errors()[0] if isinstance(e, ValidationError) else {"msg": str(e)}
                where = ".".join(str(x) for x in first.get("loc", ()))
                self._fail(rec, f"returned a target with an invalid spec: {where + ': ' if where else ''}"
                                f"{first['msg']}", hint="see specs/schemas/TargetSpec.schema.json")
                return rec
            if spec.name in self.targets or spec.name in accepted:
                owner = next((r.name for r in self.records.values() if spec.name in r.targets), rec.name)
                self._fail(rec, f"target name {spec.name!r} is already provided by plugin {owner!r}",
                           hint="a target name is one plugin's; hal's own (cpu, gpu, lpu, wafer, ...) load first "
                                "and keep theirs: rename the target")
                return rec
            if spec.hal_api.split(".")[0] != HAL_API_VERSION.split(".")[0]:
                self._fail(rec, f"target {spec.name!r} declares HAL API {spec.hal_api}; this hal speaks "
                                f"{HAL_API_VERSION}")
                return rec
            accepted[spec.name] = t
        named: dict[str, Any] = {}
        for p in passes:  # offered by name: a name is one pass's, as a target name is one target's
            pname = getattr(p, "__name__", None)
            if not callable(p) or not isinstance(pname, str):
                self._fail(rec, f"hal_graph_passes returned {type(p).__name__}, not a named function",
                           hint="return functions pass_(graph) -> graph; their __name__ is how targets ask for them")
                return rec
            if pname in self.graph_passes or pname in named:
                self._fail(rec, f"graph pass name {pname!r} is already offered"
                                + (" by another plugin" if pname in self.graph_passes else " twice by this plugin"),
                           hint="name the pass function after your plugin (e.g. acme_fuse_gelu)")
                return rec
            named[pname] = p
        for k in kernels:
            register_kernel(k)
        self.graph_passes.update(named)
        self.targets.update(accepted)
        rec.targets = list(accepted)
        return rec

    def load_entry_points(self) -> None:
        wanted = os.environ.get("HAL_PLUGINS")
        allow = {w.strip() for w in wanted.split(",") if w.strip()} if wanted else None
        # hal's own plugins first, so that no other distribution can take their names (the cpu
        # reference above all, against which compare measures every target); then by name
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
        for ep in sorted(eps, key=lambda e: (getattr(getattr(e, "dist", None), "name", None) != OWN_DISTRIBUTION,
                                             e.name)):
            if allow is not None and ep.name not in allow:
                continue
            if ep.name in self.records:
                continue  # the same plugin installed twice (e.g. editable + wheel): first wins
            dist = getattr(ep, "dist", None)
            dname = dist.name if dist is not None else None
            dver = dist.version if dist is not None else None
            try:
                module = ep.load()
            except Exception as e:  # importing third-party code may raise anything
                rec = PluginRecord(ep.name, dname, dver)
                self.records[ep.name] = rec
                module_name = ep.value.split(":")[0]
                self._fail(rec, f"failed to import {ep.value!r}: {type(e).__name__}: {e}",
                           hint=f"reinstall the plugin; `python -c 'import {module_name}'` shows the traceback")
                continue
            self.add(module, ep.name, dname, dver)


_lock = threading.Lock()
_registry: PluginRegistry | None = None


def registry(refresh: bool = False) -> PluginRegistry:
    """The process-wide registry, discovered on first use (thread-safe)."""
    global _registry
    with _lock:
        if _registry is None or refresh:
            r = PluginRegistry()
            r.load_entry_points()
            _registry = r
        return _registry


def register(plugin: Any, name: str, distribution: str | None = None) -> PluginRecord:
    """Register an in-process plugin (tests, notebooks) beside the discovered ones."""
    reg = registry()
    with _lock:
        if name in reg.records:
            unregister(name, _locked=True)
        return reg.add(plugin, name, distribution)


def unregister(name: str, _locked: bool = False) -> None:
    reg = registry() if not _locked else _registry
    assert reg is not None
    rec = reg.records.pop(name, None)
    if rec is None:
        return
    for t in rec.targets:
        reg.targets.pop(t, None)
    if reg.pm.has_plugin(name):
        reg.pm.unregister(name=name)


def get_target(name: str) -> Target:
    """The target called ``name``; an InputError listing the installed ones when there is none."""
    reg = registry()
    t = reg.targets.get(name)
    if t is None:
        broken = [f.plugin for f in reg.failures]
        hint = f"installed targets: {', '.join(sorted(reg.targets)) or 'none'}"
        if broken:
            hint += f"; plugins that failed to load: {', '.join(broken)} (see `hal doctor`)"
        raise InputError(f"no target named {name!r}", where="hal.plugins", hint=hint)
    return t


def named_targets(text: str, where: str) -> list[str]:
    """The installed targets a user named (``a,b``), in order, once each: an unknown name, or none,
    is an error before anything is compiled (it lists the installed ones)."""
    names = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not names:
        raise InputError(f"no target named in {text!r}", where=where,
                         hint=f"'all', or some of: {', '.join(sorted(registry().targets))}")
    for name in names:
        get_target(name)
    return names


def targets() -> list[TargetSpec]:
    """The specs of every installed target, sorted by name."""
    reg = registry()
    return [reg.targets[n].spec for n in sorted(reg.targets)]


def plugin_of(target: str) -> PluginRecord | None:
    """The record of the plugin that provides ``target`` (None for a target not from discovery)."""
    return next((r for r in registry().records.values() if target in r.targets), None)


def is_own_target(target: str) -> bool:
    """Whether ``target`` comes from hal's own distribution (cpu, gpu, lpu, wafer): what goes wrong in it
    is hal's to say (a model's fault, a bound set too short), not a third party's misbehaviour."""
    rec = plugin_of(target)
    return rec is not None and rec.distribution == OWN_DISTRIBUTION


def hook_error(target: str, what: str, hint: str | None = None) -> PluginError:
    """A PluginError for a target's misbehaviour after discovery, naming its plugin and distribution."""
    rec = plugin_of(target)
    return PluginError(what, plugin=rec.name if rec else target, distribution=rec.distribution if rec else None,
                       hint=hint or "report it to the plugin's authors; other targets still work")


__all__ = ["ENTRY_POINT_GROUP", "PluginRecord", "PluginRegistry", "get_target", "hook_error", "is_own_target",
           "named_targets", "plugin_of", "register", "registry", "targets", "unregister"]
