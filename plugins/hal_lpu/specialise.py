"""Schedules specialised per value signature: how a statically scheduled toolchain takes a shape or a
trip count that only the run's inputs fix.

A Loop whose trip count is computed from the graph's inputs (Range, expanded, is one), a Reshape or
Pad whose shape is an input, a tensor input with a symbolic dimension: none of them has a size at
compile time, so no static schedule exists for the graph as given. It exists for every concrete
value of those inputs, though, and the inputs are small scalars the host holds before it starts the
chips. So at run time the host reads them (the *value signature*: the deciding inputs' values and
the shape-open inputs' shapes), substitutes them as constants, compiles the graph's static schedule
for that signature and caches it; a later run with the same signature reuses the schedule without
compiling. The report counts the compiles, the cache hits and the signatures held, and carries the
latest schedule's cycles and latency. Data-dependent ops proper (NonZero, Unique, ...) stay refused:
their sizes depend on whole tensors computed on the chips, which the host cannot know beforehand.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from hal.engine import reference_program
from hal.errors import InputError, UnsupportedOpError
from hal.graph.ir import Graph, TensorInfo
from hal.graph.loops import with_trip_counts
from hal.specs import RUN_FIGURES, CompileOptions, CompileReport
from hal_lpu.shapes import resolve_shapes

if TYPE_CHECKING:
    from hal_lpu.compiler import LpuTarget
    from hal_lpu.executor import LpuExecutable

#: schedules kept per executable (least recently used dropped first)
MAX_SPECIALISATIONS = 64


class SpecialisingExecutable:
    """Compiles (once per value signature) and runs the static program of a graph whose shapes or trip
    counts are fixed by values the host reads before the run."""

    def __init__(self, target: LpuTarget, graph: Graph, options: CompileOptions, keys: list[str],
                 by_shape: list[str], version: str, open_values: set[str]):
        self._target = target
        self._graph = graph
        self._options = options
        #: small inputs whose values decide a shape or a trip count
        self.keys = keys
        #: tensor inputs whose shape is open until the run
        self.by_shape = by_shape
        #: values whose declared shapes hold for one signature at most: re-derived per specialisation
        self._open = frozenset(open_values)
        self._cache: OrderedDict[tuple[Any, ...], LpuExecutable] = OrderedDict()
        self._lock = threading.Lock()
        self._stats: dict[str, Any] = {
            "value_keys": list(keys), "shape_keys": list(by_shape), "compiles": 0, "cache_hits": 0,
            "signatures_cached": 0, "compile_time_s": 0.0, "last_cycles": None, "last_latency_s": None,
        }
        self.report = CompileReport(
            target=target.spec.name, plugin_version=version, model=graph.name,
            model_hash=graph.model_hash, precision=options.precision, shape_only=graph.shape_only,
            node_count=len(graph.nodes), devices=1,
            details={"specialisation": self._stats, "figures_follow_runs": True,
                     "note": "the schedule is compiled per value signature at run time (latency, throughput, "
                             "energy and memory are those of the latest signature run; see details.specialisation)"})

    # -- the latest schedule, for inspection ----------------------------------------------------
    def _latest(self) -> LpuExecutable | None:
        with self._lock:
            return next(reversed(self._cache.values()), None) if self._cache else None

    @property
    def program(self) -> list[Any]:
        last = self._latest()
        return last.program if last is not None else []

    @property
    def cycles(self) -> int:
        last = self._latest()
        return last.cycles if last is not None else 0

    # -- run --------------------------------------------------------------------------------------
    def signature(self, feeds: Mapping[str, Any]) -> tuple[Any, ...]:
        """The deciding inputs' dtypes, shapes and values, and the shape-open inputs' shapes."""
        sig: list[Any] = []
        for k in self.keys:
            if k not in feeds:
                raise InputError(f"input {k!r} is missing; its value decides the schedule", where="run feeds",
                                 hint=f"feed {k!r}")
            a = np.asarray(feeds[k])
            sig.append((k, a.dtype.str, a.shape, a.tobytes()))
        for k in self.by_shape:
            a = feeds.get(k)
            sig.append((k, tuple(getattr(a, "shape", ()))))
        return tuple(sig)

    def specialised(self, feeds: Mapping[str, Any]) -> LpuExecutable:
        """The static program for these feeds' signature: from the cache, else compiled now and cached."""
        sig = self.signature(feeds)
        with self._lock:  # one compile per signature, even when threads race on a new one
            exe = self._cache.get(sig)
            if exe is not None:
                self._cache.move_to_end(sig)
                self._stats["cache_hits"] += 1
            else:
                t0 = time.perf_counter()
                exe = self._compile(feeds)
                self._cache[sig] = exe
                if len(self._cache) > MAX_SPECIALISATIONS:
                    self._cache.popitem(last=False)
                self._stats["compiles"] += 1
                self._stats["compile_time_s"] = round(self._stats["compile_time_s"] + time.perf_counter() - t0, 6)
                self._stats["signatures_cached"] = len(self._cache)
            self._note(exe)
            return exe

    def _note(self, exe: LpuExecutable) -> None:
        self._stats["last_cycles"] = exe.cycles
        self._stats["last_latency_s"] = exe.report.latency_s
        for key in RUN_FIGURES:
            setattr(self.report, key, getattr(exe.report, key))  # the report's figures are this signature's

    def _compile(self, feeds: Mapping[str, Any]) -> LpuExecutable:
        g = self._graph
        keys = set(self.keys)
        inits = dict(g.initializers)
        for k in self.keys:
            inits[k] = np.array(feeds[k], copy=True)
        values = {k: (replace(v, shape=None) if k in self._open and v.kind == "tensor" else v)
                  for k, v in g.values.items()}
        inputs = []
        for t in g.inputs:
            if t.name in keys:
                values.pop(t.name, None)
                values[t.name] = TensorInfo(t.name, t.elem_type, tuple(np.shape(feeds[t.name])))
                continue
            if t.name in self.by_shape:
                t = TensorInfo(t.name, t.elem_type, tuple(int(d) for d in np.shape(feeds[t.name])), t.kind,
                               t.type_proto)
                values[t.name] = t
            inputs.append(t)
        graph = replace(g, inputs=inputs, initializers=inits, values=values)
        # (these values asking for more than max_memory: a ResourceError); what it fixes of the open
        # values, by running their nodes or else from their declared shapes, the compile takes as given
        resolved = resolve_shapes(graph, strict=True, hints=self._declared_shapes(feeds))
        values.update((k, resolved.values[k]) for k in self._open
                      if k in resolved.values and resolved.values[k].static_shape is not None)
        # a while loop whose condition reads only values the host now knows runs that many times
        graph = with_trip_counts(graph, resolved.arrays)
        cap = self._target.capability(graph, self._options)
        if cap.refused:
            self._raise_host_error(feeds)
            r = cap.refused[0]
            raise UnsupportedOpError(
                f"even with its inputs' values fixed ({self._describe(feeds)}), {len(cap.refused)} node(s) have no "
                f"static schedule: {r.node} ({r.op_type}): {r.reason}", where="target 'lpu'",
                hint="the LPU took these nodes at compile time expecting the inputs to fix their shapes, and a "
                     "session cannot move nodes at run time, whatever its fallback: run the model on another "
                     "target (target='cpu'), and report it to the lpu plugin")
        exe = self._target.compile_static(graph, self._options)
        exe.report.details = {**exe.report.details, "specialised_for": self._describe(feeds)}
        return exe

    def _declared_shapes(self, feeds: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        """The open values' declared shapes with their dimension names bound by the fed shapes of the
        shape-open inputs (a name two feeds bind to two sizes binds nothing); those whose every
        dimension is then known."""
        bound: dict[str, int | None] = {}
        for name in self.by_shape:
            declared = self._graph.values.get(name)
            for d, got in zip(declared.shape or () if declared is not None else (), np.shape(feeds[name])):
                if isinstance(d, str):
                    bound[d] = int(got) if bound.get(d, int(got)) == int(got) else None
        out = {}
        for name in self._open:
            info = self._graph.values.get(name)
            if info is None or info.shape is None:
                continue
            dims = [d if isinstance(d, int) else bound.get(d) if isinstance(d, str) else None for d in info.shape]
            if all(isinstance(d, int) for d in dims):
                out[name] = tuple(dims)
        return out

    def _raise_host_error(self, feeds: Mapping[str, Any]) -> None:
        """Run the graph's plain host program on these feeds, so that the RunError it meets, if any,
        is what the session sees: a shape left open because the feeds do not fit the graph (an Add
        of [1, 12] and [7]) is the run's error, named at its node as every other target names it,
        not a schedule the LPU lacks."""
        reference_program(self._graph).run(feeds)

    def _describe(self, feeds: Mapping[str, Any]) -> str:
        parts = [f"{k}={np.asarray(feeds[k]).tolist()!r}" for k in self.keys]
        parts += [f"{k}.shape={tuple(np.shape(feeds[k]))}" for k in self.by_shape]
        text = ", ".join(parts)
        return text if len(text) <= 200 else text[:199] + "…"

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Specialise (or reuse the cached schedule), then run its numeric instructions."""
        exe = self.specialised(feeds)
        keys = set(self.keys)
        return exe.run({k: v for k, v in feeds.items() if k not in keys})

    def trace(self) -> list[dict[str, Any]]:
        """The events of the latest specialised schedule (none before the first run)."""
        last = self._latest()
        return last.trace() if last is not None else []

    def serialize(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
