"""Placement: what a target's capability takes (checked at the plugin boundary), what a refusal
says, and the report of a session whose target runs several partitions, with cpu ones between them."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError

from hal.errors import HalError, ResourceError
from hal.graph.ir import Graph
from hal.limits import format_bytes
from hal.plugins import REFERENCE_TARGET, hook_error, registry
from hal.specs import Capability, CompileOptions, CompileReport, MemoryLevel, Refusal
from hal.target import Target


def supporting_targets(graph: Graph, op_nodes: set[str], exclude: str) -> dict[str, list[str]]:
    """For each refused node, the other installed targets whose capability takes it."""
    out: dict[str, list[str]] = {n: [] for n in op_nodes}
    for name, t in sorted(registry().targets.items()):
        if name == exclude:
            continue
        try:
            cap = t.capability(graph, CompileOptions())
        except Exception:  # another plugin's failure must not hide this error
            continue
        ok = cap.supported_nodes()
        for n in op_nodes:
            if n in ok:
                out[n].append(name)
    return out


def target_capability(target: Target, graph: Graph, options: CompileOptions) -> Capability:
    """``target.capability``; a plugin that raises or answers something invalid is a PluginError."""
    name = target.spec.name
    try:
        cap = target.capability(graph, options)
    except HalError:
        raise
    except (Exception, SystemExit) as e:  # third-party code: name it, keep the process alive
        raise hook_error(name, f"capability on target {name!r} raised {type(e).__name__}: {e}") from e
    if not isinstance(cap, Capability):
        try:
            cap = Capability.model_validate(cap)
        except ValidationError as e:
            first = e.errors()[0]
            at = ".".join(map(str, first["loc"]))
            raise hook_error(name, f"capability on target {name!r} returned an invalid answer "
                                   f"({type(cap).__name__}): {at + ': ' if at else ''}{first['msg']}",
                             hint="return a hal.specs.Capability") from None
    seen: dict[str, int] = {}  # node -> its group
    listed = 0
    for i, g in enumerate(cap.groups):
        for n in g.nodes:
            listed += 1
            if (first := seen.setdefault(n, i)) != i or len(seen) < listed:
                groups = f"groups {first} and {i}" if first != i else f"group {i}"
                raise hook_error(name, f"capability on target {name!r} lists node {n!r} twice ({groups}): a node "
                                       "runs in one group", hint="list each node in one hal.specs.NodeGroup")
    names = [n.name for n in graph.nodes]
    known, refused = set(names), {r.node for r in cap.refused}
    listed = dict.fromkeys([*seen, *(r.node for r in cap.refused)])  # (in the order the plugin gave them)
    breaches = [("names nodes the graph lacks", [n for n in listed if n not in known]),
                ("both takes and refuses", [n for n in seen if n in refused]),
                ("neither takes nor refuses", [n for n in names if n not in seen and n not in refused])]
    for what, nodes in breaches:
        if nodes:
            shown = ", ".join(map(repr, nodes[:5])) + (f" and {len(nodes) - 5} more" if len(nodes) > 5 else "")
            raise hook_error(name, f"capability on target {name!r} {what}: {shown}",
                             hint="list every node of the graph it is given, by name, once: in a "
                                  "hal.specs.NodeGroup or as a hal.specs.Refusal (specs/interface.md §4)")
    return cap


def refusal_lines(refused: dict[str, Refusal], others: dict[str, list[str]], most: int = 10) -> str:
    """The refused nodes, those of one op type, reason and set of other targets as one entry (an
    optimiser's layout ops often number dozens with one reason), the first ``most`` entries."""
    groups: dict[tuple[str, str, tuple[str, ...]], list[str]] = {}
    for r in refused.values():
        groups.setdefault((r.op_type, r.reason, tuple(others[r.node])), []).append(r.node)
    lines = []
    for (op, reason, elsewhere), nodes in groups.items():
        named = nodes[0] if len(nodes) == 1 else (f"{len(nodes)} nodes {', '.join(nodes[:3])}"
                                                  + (", …" if len(nodes) > 3 else ""))
        lines.append(f"{named} ({op}): {reason}; runs on: {', '.join(elsewhere) or 'no installed target'}")
    return "; ".join(lines[:most]) + (f"; … and {len(lines) - most} more" if len(lines) > most else "")


def refusal_hint(target: str, refused: dict[str, Refusal], others: dict[str, list[str]]) -> str:
    """What to do about refused nodes: fallback where the reference target takes every one of
    them, a kernel (or another target) where some run nowhere installed."""
    nowhere = [n for n in refused if not others[n]]
    kernel = "register a kernel through the hal_kernels hook, or install a plugin that runs it"
    if target == REFERENCE_TARGET or len(nowhere) == len(refused):
        return kernel
    if nowhere:
        return (f"{len(nowhere)} of them run on no installed target ({nowhere[0]} first): {kernel}; fallback "
                f"places the others on {REFERENCE_TARGET}")
    if any(REFERENCE_TARGET not in others[n] for n in refused):
        return f"pick a target that runs them (see 'runs on'); fallback places nodes on {REFERENCE_TARGET} only"
    return (f"pass fallback='warn' or 'allow' (the hal CLI: --fallback warn) to run them on the "
            f"{REFERENCE_TARGET} target")


def partitions_combined(reports: list[CompileReport], *, devices_fixed: bool = False,
                        where: str = "session") -> tuple[CompileReport, bool]:
    """The figures of a target's partitions run one after another, each run: times (latency, time to
    first token) and energy add, rates (runs and tokens per second) add as their inverses do, and
    every partition's program is resident at once. They share the devices (devices is the most any
    partition uses; memory by level and the peak add up, a bound) where that fits every level's
    capacity. Where it does not and the device count is the target's to pick (``devices_fixed``
    false), each partition gets devices of its own: devices add, a per-device level and the peak are
    the most one partition holds. A level off the devices (a wafer's streamed weights) adds up either
    way. What fits neither way is a ResourceError. A figure one partition does not give is not given
    for the whole. The first report gives the rest. Returns it and whether the devices are shared."""
    def total(xs: list[float | None]) -> float | None:
        return None if any(x is None for x in xs) else float(sum(xs))  # type: ignore[arg-type]

    def rate(xs: list[float | None]) -> float | None:
        if any(x is None or x <= 0 for x in xs):
            return None
        return 1.0 / sum(1.0 / x for x in xs)  # type: ignore[operator]

    def levels(per_device: Callable[[list[int]], int]) -> list[MemoryLevel]:
        by_level: dict[str, list[MemoryLevel]] = {}
        for r in reports:
            for m in r.memory:
                by_level.setdefault(m.level, []).append(m)
        return [ms[0].model_copy(update={"bytes": (per_device if ms[0].per_device else sum)([m.bytes for m in ms])})
                for ms in by_level.values()]

    def over(memory: list[MemoryLevel]) -> list[MemoryLevel]:
        return [m for m in memory if m.capacity is not None and m.bytes > m.capacity]

    rep = reports[0].model_copy()
    rep.latency_s = total([r.latency_s for r in reports])
    rep.ttft_s = total([r.ttft_s for r in reports])
    rep.energy_j = total([r.energy_j for r in reports])
    rep.throughput_per_s = rate([r.throughput_per_s for r in reports])
    rep.tokens_per_s = rate([r.tokens_per_s for r in reports])
    shared = levels(sum)
    rep.memory, rep.devices = shared, max(r.devices for r in reports)
    rep.peak_memory_bytes = sum(r.peak_memory_bytes for r in reports)
    if not (full := over(shared)):
        return rep, True
    own = levels(max)
    if devices_fixed or over(own):
        m = full[0]
        each = ", ".join(format_bytes(b) for b in (next((x.bytes for x in r.memory if x.level == m.level), 0)
                                                    for r in reports))
        hint = ("leave devices unset so that each partition gets devices of its own" if devices_fixed and not
                over(own) else "choose a narrower precision") + (
                ", or register kernels for the refused nodes (through the hal_kernels hook) so the model runs "
                "as one partition")
        on, has = ("on each device", "a device has") if m.per_device else ("in all", "the target has")  # (MemoryX)
        raise ResourceError(f"the {len(reports)} partitions of target {rep.target!r} hold {format_bytes(m.bytes)} "
                            f"of {m.level} {on} when resident together ({each}), but {has} "
                            f"{format_bytes(m.capacity or 0)}", where=where, hint=hint)
    rep.memory, rep.devices = own, sum(r.devices for r in reports)
    rep.peak_memory_bytes = max(r.peak_memory_bytes for r in reports)
    return rep, False


__all__ = ["REFERENCE_TARGET", "partitions_combined", "refusal_hint", "refusal_lines", "supporting_targets",
           "target_capability"]
