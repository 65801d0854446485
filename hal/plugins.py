"""Plugin discovery: entry points in, validated targets out, every failure isolated and recorded.

Plugins come from the ``hal.plugins`` entry-point group (the built-in targets too, as in
datasette's DEFAULT_PLUGINS) or from ``register()`` in-process. ``HAL_PLUGINS=a,b`` limits which
entry points load; ``HAL_TRACE_HOOKS=1`` prints every hook call on stderr (pluggy's hook tracer).
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy
from pydantic import ValidationError

from hal import hookspecs
from hal.errors import InputError, PluginError, a_or_an
from hal.kernels import KernelDef, registered_ops
from hal.kernels import register as register_kernel
from hal.kernels.registry import _norm_domain
from hal.specs import HAL_API_VERSION, TargetSpec
from hal.target import Target

ENTRY_POINT_GROUP = "hal.plugins"
#: the distribution whose plugins are hal's own (cpu, gpu, lpu, wafer): they load before any other
OWN_DISTRIBUTION = "hal-sdk"
#: hal's reference target: fallback places refused nodes there, compare measures every target against it
REFERENCE_TARGET = "cpu"


#: hal's own kernels, (domain, op type): hal's distribution registered them at import, before any plugin's
#: hal_kernels; the cpu reference runs them, so a third party may add kernels but not replace these
HAL_KERNELS: frozenset[tuple[str, str]] = frozenset(registered_ops())
#: the hooks a plugin may implement (hal.hookspecs)
HOOKS = ("hal_targets", "hal_kernels", "hal_graph_passes", "hal_conformance_cases")
#: what HAL_API_VERSION must look like: "MAJOR.MINOR"
_API_FORM = re.compile(r"\d+\.\d+")
_ABSENT = object()


def major_of(api: str) -> str:
    return api.split(".")[0]


KernelSnapshot = dict[tuple[str, str], tuple[KernelDef, ...]]


def _outside_hal(defn: KernelDef) -> bool:
    """Whether a kernel's function comes from outside hal's own package (a plugin's code)."""
    module = getattr(defn.fn, "__module__", None) or ""
    return not (module == "hal" or module.startswith("hal."))


def _kernel_snapshot() -> KernelSnapshot:
    """The kernel registry as it is now: (domain, op type) -> its registrations."""
    from hal.kernels.registry import _REGISTRY

    return {k: tuple(v) for k, v in _REGISTRY.items()}


@dataclass
class PluginRecord:
    """What discovery learnt about one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    api: str | None = None
    targets: list[str] = field(default_factory=list)
    #: the names of the graph passes it offers (``PluginRegistry.graph_passes``)
    passes: list[str] = field(default_factory=list)
    error: PluginError | None = None
    #: what a loaded plugin should look at (e.g. it provides nothing): ``hal doctor`` shows these
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def raised(e: BaseException) -> str:
    """An exception a plugin raised, in a message's words: its type and text; sys.exit(...) as such."""
    if isinstance(e, SystemExit):
        return f"SystemExit (sys.exit({e.code!r}))"
    return f"{type(e).__name__}: {e}"


def _returned(value: Any) -> str:
    """What a hook returned, in a message's words: its type, where it comes from, and a short repr."""
    kind = type(value)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    shown = repr(value)
    return a_or_an(name) + (f" ({shown})" if len(shown) <= 60 and not shown.startswith("<") else "")


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
        #: (domain, op type) -> the plugin whose hal_kernels registered it
        self.kernel_owners: dict[tuple[str, str], str] = {}

    @property
    def failures(self) -> list[PluginError]:
        return [r.error for r in self.records.values() if r.error is not None]

    def _fail(self, rec: PluginRecord, what: str, hint: str | None = None) -> None:
        rec.error = PluginError(what, plugin=rec.name, distribution=rec.distribution, hint=hint)
        if self.pm.has_plugin(rec.name):
            self.pm.unregister(name=rec.name)
        for t in rec.targets:
            self.targets.pop(t, None)
        for p in rec.passes:
            self.graph_passes.pop(p, None)
        rec.targets, rec.passes = [], []
        rec.warnings = []

    def implements(self, name: str, hook: str) -> bool:
        """Whether plugin ``name`` (registered) implements ``hook`` with ``@hal.hookimpl``."""
        plugin = self.pm.get_plugin(name)
        return plugin is not None and any(i.plugin is plugin for i in getattr(self.pm.hook, hook).get_hookimpls())

    def _results(self, name: str, hook: str) -> list[Any]:
        """What ``hook`` of plugin ``name`` alone returned: one result per hookimpl of its in pluggy's list, None
        dropped (pluggy's rule: None is no result); [] if it has none. Traced on pluggy's hook tracer as pluggy
        traces its own calls (``HAL_TRACE_HOOKS``); not through ``pm.subset_hook_caller``, which needs hashable
        plugin objects (a plugin instance need not be)."""
        plugin = self.pm.get_plugin(name)
        impls = [i for i in getattr(self.pm.hook, hook).get_hookimpls() if i.plugin is plugin]
        if not impls:
            return []
        trace = self.pm.trace.root.get("hook")
        trace.root.indent += 1
        try:
            trace(hook, {"plugin": name})
            results = [r for r in (i.function() for i in reversed(impls)) if r is not None]  # pluggy's order
            trace("finish", hook, "-->", results)
        finally:
            trace.root.indent -= 1
        return results

    def call(self, name: str, hook: str) -> list[Any]:
        """Call ``hook`` on plugin ``name`` only, traced as discovery's calls are, and return its items (e.g. the
        conformance suite's ``hal_conformance_cases``). What the hook raises passes through; a result that is not a list
        is a PluginError naming the plugin; a plugin that does not implement the hook, or returns None, gives []."""
        items: list[Any] = []
        for result in self._results(name, hook):
            if not isinstance(result, (list, tuple)):
                rec = self.records.get(name)
                raise PluginError(f"hook {hook} returned {_returned(result)}; a list is expected", plugin=name,
                                  distribution=rec.distribution if rec else None,
                                  hint=f"return a list from {hook}: [item, ...], or [] for none")
            items.extend(result)
        return items

    def _call(self, rec: PluginRecord, hook: str, returned_none: list[str]) -> list[Any] | None:
        """Call one hook on one plugin only; what it raises, or a result that is not a list, is its own failure
        (and None is returned). A hook it implements that returned None goes in ``returned_none``."""
        try:
            results = self._results(rec.name, hook)
        except (Exception, SystemExit) as e:  # a plugin's hook may raise anything (sys.exit too); it stops only itself
            self._fail(rec, f"hook {hook} raised {raised(e)}")
            return None
        if not results and self.implements(rec.name, hook):
            returned_none.append(hook)
        items: list[Any] = []
        for result in results:
            if not isinstance(result, (list, tuple)):
                self._fail(rec, f"hook {hook} returned {_returned(result)}; a list is expected",
                           hint=f"return a list from {hook}: [item, ...], or [] for none")
                return None
            items.extend(result)
        return items

    def _hooks_that_are_not_hals(self, rec: PluginRecord, plugin: Any) -> bool:
        """Fail a plugin that marks a function @hal.hookimpl under a name that is no hal hook (a typo that
        pluggy accepts until ``check_pending``), or that defines a hal hook without the marker (hal would
        never call it). True when it failed."""
        unknown = sorted({(hc.name, getattr(i.function, "__name__", hc.name))
                          for hc in self.pm.get_hookcallers(plugin) or [] if not hc.has_spec()
                          for i in hc.get_hookimpls() if i.plugin is plugin and not i.optionalhook})
        if unknown:
            names = ", ".join(hook if hook == fn else f"{hook} (function {fn})" for hook, fn in unknown)
            close = difflib.get_close_matches(unknown[0][0], HOOKS, n=1)
            self._fail(rec, f"marks {names} with @hal.hookimpl, but hal has no such hook; hal's hooks are "
                            f"{', '.join(HOOKS)}",
                       hint=(f"did you mean {close[0]}? " if close else "") + "rename it to one of hal's hooks")
            return True
        unmarked = [h for h in HOOKS if callable(getattr(plugin, h, None)) and not self.implements(rec.name, h)]
        if unmarked:
            self._fail(rec, f"defines {', '.join(unmarked)} without @hal.hookimpl, so hal would never call it",
                       hint="decorate each hook function with @hal.hookimpl (import hal)")
            return True
        return False

    def _kernels_kept(self, rec: PluginRecord, before: KernelSnapshot) -> None:
        """Fail a plugin whose code changed kernels registered before it loaded (hal's own, another plugin's)
        outside ``hal_kernels``: ``@hal.kernels.kernel`` or ``hal.kernels.register`` called while its module was
        imported or its hooks ran replace a kernel for every target, the cpu reference included, and no check
        of hal_kernels sees it. Those kernels are put back; a failed plugin's new kernels are taken out."""
        from hal.kernels.registry import _REGISTRY

        if rec.distribution == OWN_DISTRIBUTION:
            return
        changed = [k for k, defs in before.items() if self.kernel_owners.get(k) != rec.name
                   and any(d not in defs and _outside_hal(d) for d in _REGISTRY.get(k, ()))]
        for k in changed:  # the plugin's registrations out, what they replaced back (hal's own lazy ones stay)
            kept = [d for d in _REGISTRY.get(k, ()) if d in before[k] or not _outside_hal(d)]
            kept += [d for d in before[k] if d.since not in {x.since for x in kept}]
            _REGISTRY[k] = sorted(kept, key=lambda d: d.since)
        if changed:
            domain, op = changed[0]
            owner = self.kernel_owners.get(changed[0])
            whose = f"plugin {owner!r}'s" if owner is not None and owner in self.records else "hal's own"
            more = (f" (and {len(changed) - 1} more: {', '.join(o for _, o in changed[1:4])})"
                    if len(changed) > 1 else "")
            self._fail(rec, f"replaced {whose} kernel for {op} in domain {domain or 'ai.onnx'!r}{more} while its "
                            "module was imported or its hooks ran: a call of @hal.kernels.kernel or "
                            "hal.kernels.register in plugin code changes the kernel every target runs, the cpu "
                            "reference included; hal put the kernel back",
                       hint="return hal.kernels.KernelDef objects from the hal_kernels hook instead, for ops in a "
                            "domain of your own (e.g. 'com.acme'); never call hal.kernels.register in a plugin")
        if rec.error is not None:
            for k in [k for k in _REGISTRY if k not in before]:
                del _REGISTRY[k]
                self.kernel_owners.pop(k, None)

    def add(self, plugin: Any, name: str, distribution: str | None = None, version: str | None = None,
            before: KernelSnapshot | None = None) -> PluginRecord:
        """Register one plugin object (module or instance), validate it and collect its targets. ``before``: the
        kernel registry before its module was imported (else as it is now), to tell what its code changed."""
        rec = PluginRecord(name, distribution, version)
        self.records[name] = rec
        before = _kernel_snapshot() if before is None else before
        try:
            self._add(rec, plugin)
        except (Exception, SystemExit) as e:  # its objects are third-party code too (a property that raises)
            self._fail(rec, f"raised {raised(e)} while hal checked what it provides")
        self._kernels_kept(rec, before)
        return rec

    def _add(self, rec: PluginRecord, plugin: Any) -> None:
        name = rec.name
        api = getattr(plugin, "HAL_API_VERSION", _ABSENT)
        rec.api = api if isinstance(api, str) else None
        fix = f'set HAL_API_VERSION = "{HAL_API_VERSION}" (a string "MAJOR.MINOR") in the plugin module'
        if api is _ABSENT:
            self._fail(rec, "declares no HAL_API_VERSION", hint=fix)
            return
        if not isinstance(api, str) or not _API_FORM.fullmatch(api):
            self._fail(rec, f"declares HAL_API_VERSION = {api!r}"
                            + ("" if isinstance(api, str) else f" ({a_or_an(type(api).__name__)})")
                            + ', not a string of the form "MAJOR.MINOR"', hint=fix)
            return
        if major_of(api) != major_of(HAL_API_VERSION):
            self._fail(rec, f"was built for HAL API {api}, but this hal speaks HAL API {HAL_API_VERSION}",
                       hint=f"install a plugin release built for this HAL API major version "
                            f"({major_of(HAL_API_VERSION)}.x); its authors: port it to HAL API {HAL_API_VERSION} "
                            f'(specs/interface.md) and set HAL_API_VERSION = "{HAL_API_VERSION}"')
            return
        try:
            self.pm.register(plugin, name=name)
        except (Exception, SystemExit) as e:  # pluggy's ValueError, PluginValidationError, or the plugin's own
            self._fail(rec, f"cannot be registered: {e}")
            return
        if self._hooks_that_are_not_hals(rec, plugin):
            return

        returned_none: list[str] = []
        kernels = self._call(rec, "hal_kernels", returned_none)
        if kernels is None:
            return
        own = rec.distribution == OWN_DISTRIBUTION
        for k in kernels:
            if not isinstance(k, KernelDef):
                self._fail(rec, f"hal_kernels returned {type(k).__name__}, not hal.kernels.KernelDef")
                return
            key = (_norm_domain(k.domain), k.op_type)
            if key in HAL_KERNELS and not own:
                self._fail(rec, f"hal_kernels registers {k.op_type} in domain {k.domain or 'ai.onnx'!r} (since "
                                f"{k.since}), which hal's own kernels implement: it would change the cpu reference "
                                f"and every target that runs hal's kernel for it",
                           hint="register your kernel under a domain of your own (e.g. 'com.acme') and use that "
                                "domain in your models or graph passes")
                return
            owner = self.kernel_owners.get(key)
            if owner is not None and owner != name and owner in self.records:
                self._fail(rec, f"hal_kernels registers {k.op_type} in domain {k.domain!r}, which plugin {owner!r} "
                                f"already registered", hint="use a domain of your own (e.g. 'com.acme')")
                return
        passes = self._call(rec, "hal_graph_passes", returned_none)
        if passes is None:
            return
        targets = self._call(rec, "hal_targets", returned_none)
        if targets is None:
            return
        accepted: dict[str, Target] = {}
        for t in targets:
            spec = getattr(t, "spec", None)
            missing = [m for m in ("spec", "capability", "compile", "load")
                       if not (callable(getattr(t, m, None)) if m != "spec" else hasattr(t, m))]
            if missing:
                self._fail(rec, f"returned {a_or_an(type(t).__name__)} that is not a target: it lacks "
                                f"{', '.join(missing)}",
                           hint="implement the hal.target.Target protocol")
                return
            try:  # a TargetSpec object too: model_construct skips validation, the contract does not
                spec = TargetSpec.model_validate(spec.model_dump() if isinstance(spec, TargetSpec) else spec)
                t.spec = spec
            except (ValidationError, TypeError, AttributeError) as e:
                first = e.errors()[0] if isinstance(e, ValidationError) else {"msg": str(e)}
                where = ".".join(str(x) for x in first.get("loc", ()))
                self._fail(rec, f"returned a target with an invalid spec: {where + ': ' if where else ''}"
                                f"{first['msg']}", hint="see specs/schemas/TargetSpec.schema.json")
                return
            if spec.name in self.targets or spec.name in accepted:
                owner = next((r.name for r in self.records.values() if spec.name in r.targets), rec.name)
                self._fail(rec, f"target name {spec.name!r} is already provided by plugin {owner!r}",
                           hint="a target name is one plugin's; hal's own (cpu, gpu, lpu, wafer, ...) load first "
                                "and keep theirs: rename the target")
                return
            if major_of(spec.hal_api) != major_of(HAL_API_VERSION):
                self._fail(rec, f"target {spec.name!r} declares HAL API {spec.hal_api}; this hal speaks "
                                f"{HAL_API_VERSION}")
                return
            accepted[spec.name] = t
        named: dict[str, Any] = {}
        for p in passes:  # offered by name: a name is one pass's, as a target name is one target's
            pname = getattr(p, "__name__", None)
            if not callable(p) or not isinstance(pname, str):
                self._fail(rec, f"hal_graph_passes returned {type(p).__name__}, not a named function",
                           hint="return functions pass_(graph) -> graph; their __name__ is how targets ask for them")
                return
            if pname in self.graph_passes or pname in named:
                self._fail(rec, f"graph pass name {pname!r} is already offered"
                                + (" by another plugin" if pname in self.graph_passes else " twice by this plugin"),
                           hint="name the pass function after your plugin (e.g. acme_fuse_gelu)")
                return
            named[pname] = p
        for k in kernels:
            register_kernel(k)
            self.kernel_owners[(_norm_domain(k.domain), k.op_type)] = name
        self.graph_passes.update(named)
        rec.passes = list(named)
        self.targets.update(accepted)
        rec.targets = list(accepted)
        if not (accepted or kernels or named or self.implements(name, "hal_conformance_cases")):
            rec.warnings.append("provides no targets, kernels or graph passes: " + (
                f"{' and '.join(returned_none)} returned None (a list is expected)" if returned_none else
                "its hooks returned empty lists" if any(self.implements(name, h) for h in HOOKS) else
                "it implements no hal hook (hal_targets, ... marked @hal.hookimpl)"))

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
            before = _kernel_snapshot()
            try:
                module = ep.load()
            except (Exception, SystemExit) as e:  # importing third-party code may raise anything, sys.exit() too
                rec = PluginRecord(ep.name, dname, dver)
                self.records[ep.name] = rec
                module_name = ep.value.split(":")[0]
                self._fail(rec, f"failed to import {ep.value!r}: {raised(e)}",
                           hint=f"reinstall the plugin; `python -c 'import {module_name}'` shows the traceback")
                self._kernels_kept(rec, before)
                continue
            self.add(module, ep.name, dname, dver, before=before)


_lock = threading.RLock()
_registry: PluginRegistry | None = None
#: (the thread discovering plugins, the registry it builds) while it does: a plugin's hook that asks
#: for the registry (a target wrapping another through hal.get_target) gets the plugins loaded so far
#: (hal's own load first) instead of waiting on itself for ever
_discovering: tuple[int, PluginRegistry] | None = None


def registry(refresh: bool = False) -> PluginRegistry:
    """The process-wide registry, discovered on first use (thread-safe). Asked for by a plugin's
    code while discovery runs (an import, a hook), it is the registry as far as discovery has come."""
    global _registry, _discovering
    busy = _discovering
    if busy is not None and busy[0] == threading.get_ident():
        return busy[1]
    with _lock:
        if _registry is None or refresh:
            r = PluginRegistry()
            _discovering = (threading.get_ident(), r)
            try:
                r.load_entry_points()
            finally:
                _discovering = None
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
    for p in rec.passes:
        reg.graph_passes.pop(p, None)
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
        what = f"no target named {name!r}"
        if name == REFERENCE_TARGET:  # left out of HAL_PLUGINS
            what += " (hal's reference target, where fallback places refused nodes and that compare checks against)"
            wanted = os.environ.get("HAL_PLUGINS", "").strip(", ")
            hint = f"HAL_PLUGINS must include {name} (HAL_PLUGINS={name},{wanted or '...'}); {hint}"
        raise InputError(what, where="hal.plugins", hint=hint)
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


__all__ = [
    "ENTRY_POINT_GROUP",
    "REFERENCE_TARGET",
    "PluginRecord",
    "PluginRegistry",
    "get_target",
    "hook_error",
    "is_own_target",
    "named_targets",
    "plugin_of",
    "raised",
    "register",
    "registry",
    "targets",
    "unregister",
]
