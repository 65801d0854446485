"""InferenceSession: the unified API, shaped like onnxruntime's, with placement across targets.

The session loads and optimises the model once, asks the target what it takes, and compiles. With
``fallback="warn"`` or ``"allow"`` the nodes the target refuses run on the reference ``cpu``
target as separate partitions (the bytes crossing between them are counted); with ``"error"`` a
refusal is an UnsupportedOpError naming every refused node, the reason, and which targets take it.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from hal import heap, limits
from hal.api_args import (
    cache_dir_arg,
    check_fallback,
    check_run_options,
    make_options,
    resolve_target,
    zoo_params_of,
)
from hal.boundary import Partition, checked_executable, checked_feeds, feed_checks, output_checks, run_partition
from hal.cache import CompileCache, SessionEntry, SessionPart, open_cache, weights_elsewhere
from hal.errors import CompileError, HalError, InputError, ResourceError, UnsupportedOpError
from hal.graph.dims import checked_dims
from hal.graph.ir import PARTITION_KEY, Graph, TensorInfo
from hal.graph.load import ModelLike, load
from hal.graph.passes import optimize
from hal.kernels import jit
from hal.overrides import InitializerOverrides
from hal.perf.opcount import tensor_bytes
from hal.placement import (
    REFERENCE_TARGET,
    partitions_combined,
    refusal_hint,
    refusal_lines,
    supporting_targets,
    target_capability,
)
from hal.plugins import get_target, hook_error, is_own_target, registry
from hal.specs import (
    RUN_FIGURES,
    SCHEMA_MODELS,
    CompileOptions,
    CompileReport,
    NodePlacement,
    RunReport,
)
from hal.target import Executable, Target


class FallbackWarning(UserWarning):
    """Nodes ran on the reference target because the requested one refused them."""


@dataclass(frozen=True)
class NodeArg:
    """An input or output as onnxruntime describes it: name, shape (ints or dim names), type."""

    name: str
    shape: list[int | str | None] | None
    type: str
    dtype: np.dtype | None

    @classmethod
    def of(cls, t: TensorInfo) -> NodeArg:
        dt = t.dtype
        if t.kind != "tensor":
            typ = t.kind
        else:
            typ = f"tensor({_onnx_type_name(t.elem_type)})"
        return cls(t.name, list(t.shape) if t.shape is not None else None, typ, dt)


def _onnx_type_name(elem_type: int) -> str:
    import onnx

    name = onnx.TensorProto.DataType.Name(elem_type).lower() if elem_type else "undefined"
    return {"float": "float", "double": "double"}.get(name, name)


def _check_target_accepts(target: Target, options: CompileOptions) -> None:
    spec = target.spec
    if options.precision not in spec.precisions:
        # the target is named in ``what`` (hal.conformance reuses it under its own ``where``): not again as ``where``
        raise CompileError(f"target {spec.name!r} does not offer precision {options.precision!r}",
                           hint=f"it offers: {', '.join(spec.precisions)}")
    if spec.name == REFERENCE_TARGET and options.devices is not None and options.devices > 1:
        # the reference computes on the host and models no devices: a count would be silently ignored
        raise CompileError(f"the {REFERENCE_TARGET!r} reference target models no devices, so devices={options.devices} "
                           "would be ignored", where=f"target {spec.name!r}",
                           hint="leave devices out (or 1) on cpu; devices count the GPUs, LPU chips or wafers of "
                                "the gpu, lpu and wafer targets")
    unknown = sorted(set(options.target_options) - set(spec.options))
    if unknown:
        known = ", ".join(f"{k} ({v})" for k, v in spec.options.items()) or "none"
        hint = f"its options: {known}"
        if ort := [k for k in unknown if k in _ORT_ARGUMENTS]:
            hint = (f"{', '.join(ort)} {'is' if len(ort) == 1 else 'are'} onnxruntime's: hal picks the target with "
                    f"target=, e.g. target='gpu' (installed: {', '.join(sorted(registry().targets))}); {hint}")
        elif "target_options" in unknown:
            hint = ("target options are keyword arguments, e.g. InferenceSession(model, 'lpu', sram_bytes=...) "
                    f"(the hal CLI: -o KEY=VALUE), not a target_options dict; {hint}")
        raise CompileError(f"unknown option(s) {', '.join(unknown)}", where=f"target {spec.name!r}", hint=hint)


#: onnxruntime's InferenceSession arguments that hal's does not take (it compiles for one target, named)
_ORT_ARGUMENTS = ("providers", "provider_options", "sess_options")


class _WeightsElsewhere(Exception):
    """A stored session's partition must be compiled, but its weights are in its (now gone) program entry."""


def compile_graph(graph: Graph, target: Target, options: CompileOptions, cache: CompileCache | None = None,
                  key: str | None = None, judge: bool = True) -> Executable:
    """Compile on one target: from the compile cache when it holds the program (under ``key``, worked
    out when not given), else bounded by ``options.timeout_s``. A plugin's unexpected exception, hang
    or invalid executable is a PluginError. ``judge``: see ``CompileCache.load``."""
    name = target.spec.name
    if cache is not None and key is None:
        key = cache.key(graph, target, options)
    if cache is not None and key is not None:
        exe = cache.load(key, target, judge)
        if exe is not None:
            return checked_executable(exe, name)
    if weights_elsewhere(graph):  # a stored session's partition whose program entry is gone or bad
        raise _WeightsElsewhere(name)
    t0 = time.process_time()
    try:
        exe = limits.call_with_timeout(lambda: target.compile(graph, options), options.timeout_s,
                                       f"hal-compile-{name}")
    except HalError:
        raise
    except limits.Timeout as e:
        left = "it was abandoned (its worker thread may still be running in the background)"
        if is_own_target(name):  # hal's own compiles end: the bound was short
            raise ResourceError(f"the compile {e}; {left}", where=f"target {name!r}",
                                hint="raise timeout_s, or pass none") from None
        raise hook_error(name, f"compile on target {name!r} {e}; {left}",
                         hint="raise timeout_s, or report the hang to the plugin's authors") from None
    except ValidationError as e:  # one of hal's models built wrong (a report): its first error, in one line
        first = e.errors(include_url=False)[0]
        at = ".".join(map(str, first["loc"]))
        raise hook_error(name, f"compile on target {name!r} built an invalid {e.title} ({e.error_count()} "
                               f"error{'s' if e.error_count() != 1 else ''}; {at + ': ' if at else ''}"
                               f"{first['msg'].removeprefix('Value error, ')})",
                         hint=f"see specs/schemas/{e.title}.schema.json" if e.title in SCHEMA_MODELS else
                         None) from e
    except (Exception, SystemExit) as e:  # third-party code: name it, keep the process alive
        raise hook_error(name, f"compile on target {name!r} raised {type(e).__name__}: {e}") from e
    exe = checked_executable(exe, name)
    if cache is not None and key is not None:
        cache.store(key, target, exe, compile_s=time.process_time() - t0)
    return exe


class InferenceSession:
    """Compile a model for one target (with a fallback policy) and run it many times."""

    @heap.without_collector  # the compile's many long-lived objects: see hal.heap
    def __init__(self, model: ModelLike, target: str = REFERENCE_TARGET, precision: str = "exact",
                 fallback: str = "error", *, devices: int | None = None, max_memory: int | str | None = None,
                 timeout_s: float | None = None, zoo_params: Mapping[str, Any] | None = None,
                 dims: Mapping[str, int] | None = None, cache_dir: str | os.PathLike | bool | None = None,
                 **target_options: Any):
        check_fallback(fallback, "InferenceSession")
        dims = checked_dims(dims, "InferenceSession")
        t0 = time.perf_counter()
        self.options = make_options(precision, devices, max_memory, timeout_s, **target_options)
        tgt = resolve_target(target)
        self.target_name = target
        self.fallback = fallback
        _check_target_accepts(tgt, self.options)
        zoo_params = zoo_params_of(model, zoo_params)
        #: the compile cache this session used (``cache_dir`` or HAL_CACHE_DIR), with its stats
        self.compile_cache = cache = open_cache(cache_dir_arg(cache_dir))
        skey = hit = self._session_key = None
        self._parts_s = 0.0  # time spent getting the programs (compile, or load from the cache)
        if cache is not None:
            skey = self._session_key = cache.session_key(model, zoo_params, tgt, get_target(REFERENCE_TARGET),
                                                          self.options, fallback, dims)
            hit = cache.load_session(skey, tgt) if skey is not None else None
        if hit is not None:  # graph and placement from the cache: no loading, passes or capability
            graph, self._refused = hit.graph, hit.refused
            try:
                with limits.bounds(self.options.max_memory):
                    self._parts = self._compile_parts(graph, tgt, [(p.target, p.nodes) for p in hit.parts],
                                                      [p.key for p in hit.parts])
            except _WeightsElsewhere:  # a program holding weights is gone or bad: build from the model
                cache.drop_session_hit(skey)
                hit = None
            else:
                cache.judge_session(skey, tgt)
                if self._refused and self.fallback == "warn":
                    self._warn_fallback(tgt, stacklevel=3)
        if hit is None:
            self._parts_s = 0.0
            t_frontend = time.process_time()
            with limits.bounds(self.options.max_memory):
                graph = optimize(load(model, zoo_params=zoo_params, dims=dims))
                limits.check_graph(graph, self.options.max_memory)
                self._parts = self._place_and_compile(graph, tgt)
            # loading, checking, passes and placement alone (not the programs' compiles, loads, stores), in
            # CPU time like the compile cache's other judgements (other processes' load does not count)
            frontend_s = time.process_time() - t_frontend - self._parts_s
        #: the optimised graph; after a session-cache hit, a weight that a cached program holds is a
        #: ``hal.cache.WeightInProgram`` here (its shape and dtype; the array lives in the program)
        self.graph = graph
        self._overrides = InitializerOverrides(
            graph, model, zoo_params,
            lambda proto: InferenceSession(proto, target, precision, fallback, devices=devices, max_memory=max_memory,
                                           timeout_s=timeout_s, dims=dims, cache_dir=cache_dir, **target_options)
        ) if graph.overridable else None
        self._inputs = list(graph.inputs)
        self._feed_checks = feed_checks(self._inputs)
        self._outputs = list(graph.outputs)
        self._output_names = [o.name for o in self._outputs]
        #: the runs' memory bound, resolved once (``HAL_MAX_MEMORY`` and the machine's memory are read
        #: when the session is built, as its compile read them; 2.5 us a run otherwise)
        self._run_max_memory = limits.effective_max_memory(self.options.max_memory)
        #: the bounds of every run, where they are the same every run (no timeout: no deadline)
        self._run_bounds = limits.Bounds(self._run_max_memory) if self.options.timeout_s is None else None
        if cache is not None and skey is not None and hit is None:
            parts = [SessionPart(p.target, p.key, p.nodes) for p in self._parts if p.key]
            if len(parts) == len(self._parts):
                cache.store_session(skey, tgt, model, SessionEntry(graph, self._refused, parts), frontend_s)
        if not graph.shape_only:
            # the compiled loops' machine code (numba's start and its cache: a second or more, once per
            # process) is loaded now, not inside the first run, and counts as the library's, as importing
            # it would, not as this model's compile: `hal run` had said "host run 1.11 s" of a 1.6 ms run
            t_lib = time.perf_counter()
            jit.load()
            t0 += time.perf_counter() - t_lib
        self._report = self._merge_reports(graph, time.perf_counter() - t0)
        if self.compile_cache is not None:
            st = self.compile_cache.stats
            self._report.details = {**self._report.details, "compile_cache": {"hits": st.hits, "misses": st.misses}}
        self._lock = threading.Lock()
        #: the last run's (wall time, outputs, whether the report priced its sizes), made into
        #: ``last_run``'s report when someone reads it
        self._last: tuple[float, list[str], bool] | RunReport | None = None
        #: the single program whose report prices each run's own sizes (a target that specialises at run
        #: time says so: details["figures_follow_runs"]), read live; else None
        exe = self._parts[0].executable if len(self._parts) == 1 else None
        self._live = exe if exe is not None and exe.report.details.get("figures_follow_runs") is True else None
        #: with fallback, the target's programs when one of them prices each run's own sizes (an LPU
        #: partition after a NonZero): the report combines their latest figures when read
        own = [p.executable for p in self._parts if p.target == self.target_name] if len(self._parts) > 1 else []
        self._live_parts = own if any(e.report.details.get("figures_follow_runs") is True for e in own) else []
        #: the inputs' open dimensions, (input, axis), that the report priced at 1 (hal.perf.opcount.shape):
        #: a run feeding another size there gets no modelled latency (bind them: dims=)
        self._open_axes: list[tuple[str, int]] = []
        shown = []
        for t in graph.inputs if self._live is None and not self._live_parts else ():
            for a, d in enumerate(t.shape or () if t.kind == "tensor" else ()):
                if not isinstance(d, int):
                    self._open_axes.append((t.name, a))
                    shown.append(f"{t.name}[{a}]" + (f" ({d})" if d else ""))
        if shown:
            self._report.details = {**self._report.details, "open_dims_priced_as_1": shown}
        heap.release_free_memory()  # what loading and the passes freed (the proto's weights, ...)
        heap.keep_pages_for_runs()

    # -- placement -------------------------------------------------------------------------
    def _place_and_compile(self, graph: Graph, tgt: Target) -> list[Partition]:
        cap = target_capability(tgt, graph, self.options)
        refused = {r.node: r for r in cap.refused}  # (every node is taken or refused: target_capability)
        if refused and self.fallback != "error" and tgt.spec.name != REFERENCE_TARGET:
            # fallback places them on the cpu target: one it refuses too (a form of an op no kernel
            # computes, ``refuses`` in the registry) fails here, as it would on the cpu, not mid-run
            ref_cap = target_capability(get_target(REFERENCE_TARGET), graph, self.options)
            if stuck := [r for r in ref_cap.refused if r.node in refused]:
                raise UnsupportedOpError(
                    f"target {tgt.spec.name!r} refuses {len(stuck)} node(s) the {REFERENCE_TARGET!r} target, where "
                    "fallback places them, refuses too: " + "; ".join(f"{r.node} ({r.op_type}): {r.reason}"
                                                                      for r in stuck[:10]),
                    where=f"model {graph.name!r}", hint="register a kernel through the hal_kernels hook",
                    nodes=[(r.node, r.op_type, r.reason) for r in stuck])
        if refused and (self.fallback == "error" or tgt.spec.name == REFERENCE_TARGET):
            others = supporting_targets(graph, set(refused), tgt.spec.name)
            raise UnsupportedOpError(
                f"target {tgt.spec.name!r} refuses {len(refused)} node(s): " + refusal_lines(refused, others),
                where=f"model {graph.name!r}", hint=refusal_hint(tgt.spec.name, refused, others),
                nodes=[(r.node, r.op_type, r.reason) for r in refused.values()])
        self._refused = refused
        if refused and self.fallback == "warn":
            self._warn_fallback(tgt, stacklevel=4)
        runs: list[tuple[str, list[str]]] = []
        for n in graph.nodes:
            where = REFERENCE_TARGET if n.name in refused else tgt.spec.name
            if runs and runs[-1][0] == where:
                runs[-1][1].append(n.name)
            else:
                runs.append((where, [n.name]))
        # the capability (a NodeGroup a node) is not kept through the compile, whose peak stays resident
        del cap
        # a graph the passes emptied (outputs that are feeds or weights) is still one program, with a report
        return self._compile_parts(graph, tgt, runs or [(tgt.spec.name, [])])

    def _compile_parts(self, graph: Graph, tgt: Target, runs: list[tuple[str, list[str]]],
                       keys: Sequence[str | None] | None = None) -> list[Partition]:
        """Compile each run of nodes on its target (the whole graph when nothing was refused); ``keys``:
        the programs' cache keys when known (a stored session), else worked out."""
        t0 = time.process_time()
        try:
            return self._compile_parts_timed(graph, tgt, runs, keys)
        finally:
            self._parts_s += time.process_time() - t0

    def _compile_parts_timed(self, graph: Graph, tgt: Target, runs: list[tuple[str, list[str]]],
                             keys: Sequence[str | None] | None) -> list[Partition]:
        cache = self.compile_cache
        if cache is not None and self._session_key in cache.sessions_not_worth_it:
            cache = None  # building this session costs less than loading it: its programs are not loaded either
        ref_options = CompileOptions(max_memory=self.options.max_memory, timeout_s=self.options.timeout_s)
        parts = []
        for i, (where, names) in enumerate(runs):
            sub = graph if not self._refused else graph.subgraph(names, name=f"{graph.name}/part{i}")
            if sub is not graph:  # (a metadata dict of its own: the subgraph shares the model's)
                sub.metadata = {**graph.metadata, PARTITION_KEY: f"{i}/{len(runs)}"}
            target = tgt if where == tgt.spec.name else get_target(where)
            opts = ref_options if self._refused and where == REFERENCE_TARGET else self.options
            key = keys[i] if keys else cache.key(sub, target, opts) if cache is not None else None
            # a stored session's program is judged with the session entry (it stands in for the frontend too)
            exe = compile_graph(sub, target, opts, cache, key, judge=not keys)
            parts.append(Partition(where, exe, names, [t.name for t in sub.inputs], [t.name for t in sub.outputs],
                                    output_checks(sub.outputs), key))
        return parts

    def _warn_fallback(self, tgt: Target, stacklevel: int) -> None:
        refused = list(self._refused.values())
        warnings.warn(f"{len(refused)} node(s) fall back from {tgt.spec.name!r} to {REFERENCE_TARGET!r}: "
                      + ", ".join(f"{r.node} ({r.op_type})" for r in refused[:5]), FallbackWarning,
                      stacklevel=stacklevel)

    def _merge_reports(self, graph: Graph, compile_time: float) -> CompileReport:
        op_of = {n.name: n.op_type for n in graph.nodes}
        placement = []
        for i, p in enumerate(self._parts):
            for n in p.nodes:
                r = self._refused.get(n)
                placement.append(NodePlacement(node=n, op_type=op_of[n], target=p.target, partition=i,
                                               reason=r.reason if r else None))
        if len(self._parts) == 1:
            rep = self._parts[0].executable.report.model_copy()  # shallow: the kernels list is shared, read-only
            rep.placement = placement
            rep.compile_time_s = compile_time
            return rep
        own = [p.executable.report for p in self._parts if p.target == self.target_name]
        rep, shared = self._combined(own)
        rep.model = graph.name
        rep.node_count = len(graph.nodes)
        rep.placement = placement
        crossing = set()
        for a in self._parts:
            for b in self._parts:
                if a.target != b.target:
                    crossing |= set(a.outputs) & set(b.inputs)
        rep.transfers_bytes = int(sum(tensor_bytes(graph, n) for n in crossing))
        rep.details = {"partitions": len(self._parts), "fallback_nodes": len(self._refused),
                       "figures_exclude": f"partitions on {REFERENCE_TARGET}",
                       "memory": f"the sum of the {len(own)} {self.target_name} partitions' (all resident at once "
                                 "on the same devices)" if shared else
                                 f"the most one of the {len(own)} {self.target_name} partitions holds (each resident "
                                 "on devices of its own)",
                       "per_partition": [{"partition": i, **p.executable.report.details}
                                         for i, p in enumerate(self._parts) if p.target == self.target_name]}
        rep.compile_time_s = compile_time
        return rep

    def _combined(self, reports: list[CompileReport]) -> tuple[CompileReport, bool]:
        """``partitions_combined`` of the target's partitions' reports, with every partition's kernels (the
        cpu ones' too). Returns it and whether the partitions share the devices."""
        rep, shared = partitions_combined(reports, devices_fixed=self.options.devices is not None,
                                          where=f"session on target {self.target_name!r}")
        rep.kernels = [k for p in self._parts for k in p.executable.report.kernels]
        rep.kernel_count = len(rep.kernels)
        return rep, shared

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Not picklable (nor copy.copy/deepcopy-able), as onnxruntime's sessions are not: its compiled
        programs, lock and cache handles belong to this process. An InputError saying what to send instead."""
        raise InputError("an InferenceSession cannot be pickled or copied (as onnxruntime's cannot): its compiled "
                         "programs belong to this process", where="InferenceSession",
                         hint="pickle the model (its path or bytes) and the session's arguments, and build a session "
                              "in each process (or reuse one session: run() may be called from many threads)")

    # -- onnxruntime-shaped API ---------------------------------------------------------------
    @property
    def report(self) -> CompileReport:
        """The compile's report; where the target prices each run's sizes (``figures_follow_runs``), with
        the figures of the latest run."""
        if self._live is not None:
            live = self._live.report
            return self._report.model_copy(update={k: getattr(live, k) for k in RUN_FIGURES})
        if self._live_parts:
            try:
                live, _ = self._combined([e.report for e in self._live_parts])
            except HalError as e:  # the latest figures do not combine: the compile's stand, and say so
                why = f"the latest run's partitions do not combine ({e.what}); these are the compile's"
                return self._report.model_copy(update={"details": {**self._report.details, "live_figures": why}})
            return self._report.model_copy(update={k: getattr(live, k) for k in RUN_FIGURES})
        return self._report

    def get_inputs(self) -> list[NodeArg]:
        return [NodeArg.of(t) for t in self._inputs]

    def get_overridable_initializers(self) -> list[NodeArg]:
        """The initializers a feed may replace (listed as graph inputs too, IR 4 on; see hal.overrides)."""
        return [NodeArg.of(t) for t in self.graph.overridable]

    def get_outputs(self) -> list[NodeArg]:
        return [NodeArg.of(t) for t in self._outputs]

    def get_providers(self) -> list[str]:
        return sorted({p.target for p in self._parts})

    def _validate(self, feeds: Any) -> dict[str, Any]:
        """``feeds`` as a new dict, checked against the inputs (InputError saying what is wrong)."""
        names, exact = self._feed_checks
        # the common case in a few attribute reads: every input a tensor of static shape, fed as an
        # array of its dtype and shape; anything else gets the full check and its messages
        if feeds.__class__ is dict and len(feeds) == len(names) == len(exact):
            for name, dt, shape in exact:
                v = feeds.get(name)
                if v.__class__ is not np.ndarray or v.dtype != dt or v.shape != shape:
                    break
            else:
                return dict(feeds)
        return checked_feeds(self._inputs, feeds, names, self._run_max_memory)

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, Any], run_options: Any = None
            ) -> list[Any]:
        """Run once; returns the outputs named (all, in model order, when None or empty)."""
        if run_options is not None:  # accepted for onnxruntime compatibility, and ignored
            check_run_options(run_options)
        if self._overrides is not None and self._overrides.fed(feeds):  # another program: hal.overrides
            if output_names is not None:
                self._wanted(output_names)  # a wrong name is said before the other program is built
            session, feeds = self._overrides.session_for(feeds)
            out = session.run(output_names, feeds)
            self._last = session._last
            return out
        values = self._validate(feeds)
        wanted = self._output_names if output_names is None else self._wanted(output_names)
        t0 = time.perf_counter()
        fixed = self._run_bounds
        with limits.within(fixed) if fixed is not None else limits.bounds(self._run_max_memory, self.options.timeout_s):
            for p in self._parts:
                values.update(run_partition(p, {n: values[n] for n in p.inputs}))
        wall = time.perf_counter() - t0
        priced = not self._open_axes or all(np.shape(values[n])[a] == 1 for n, a in self._open_axes)
        self._last = (wall, wanted, priced)  # one tuple: atomic for concurrent runs
        return _not_of_feeds([values[n] for n in wanted], feeds)

    def _wanted(self, output_names: Any) -> list[str]:
        """The outputs a run names: a list (or tuple) of output names, duplicates allowed, as onnxruntime;
        an empty one names them all. An InputError for anything else."""
        all_out = self._output_names
        if output_names.__class__ is not list and (isinstance(output_names, (str, bytes))
                                                   or not isinstance(output_names, (Sequence, np.ndarray))):
            one = f"; for one output: [{output_names!r}]" if isinstance(output_names, str) else ""
            raise InputError(f"output_names must be a list of output names or None, not {type(output_names).__name__}",
                             where="run", hint=f"None runs every output{one}; outputs: {', '.join(all_out)}")
        wanted = list(output_names)
        if not wanted:
            return all_out
        if unknown := [n for n in wanted if not isinstance(n, str) or n not in all_out]:
            named = (n if isinstance(n, str) else repr(n) for n in unknown)
            raise InputError(f"unknown output name(s) {', '.join(named)}", where="run",
                             hint=f"outputs: {', '.join(all_out)}")
        return wanted

    @property
    def last_run(self) -> RunReport | None:
        """What the last run did (None before the first): built when read, not on every run, where
        even pydantic's ``model_construct`` was 4 of tiny-gpt's 18 us of session overhead a run."""
        last = self._last
        if last is None or isinstance(last, RunReport):
            return last
        wall, wanted, priced = last
        modelled = (self._live.report.latency_s if self._live is not None else self.report.latency_s
                    if self._live_parts else self._report.latency_s if priced else None)
        # (built from values of known types: pydantic's validation would cost more than the bookkeeping)
        report = RunReport.model_construct(target=self.target_name, wall_time_s=wall,
                                           modelled_latency_s=modelled, outputs=list(wanted))
        if self._last is last:  # a run in between keeps its own
            self._last = report
        return report

    def trace(self) -> list[dict[str, Any]]:
        """Timeline events of every partition's program."""
        events: list[dict[str, Any]] = []
        for p in self._parts:
            try:
                got = p.executable.trace()
                if not isinstance(got, list) or not all(isinstance(e, dict) for e in got):
                    raise TypeError(f"trace() returned {type(got).__name__}, not a list of event dicts")
            except HalError:
                raise
            except (Exception, SystemExit) as e:
                raise hook_error(p.target, f"trace on target {p.target!r} failed: {type(e).__name__}: {e}") from e
            events.extend(got)
        return events


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _not_of_feeds(outs: list[Any], feeds: Mapping[str, Any]) -> list[Any]:
    """The outputs, each an array of its own: one that is a feed or a view of one (an Identity, a Reshape
    of an input) is copied, as onnxruntime's are, or refilling the feed's buffer would change it. An
    output that owns its memory (no base: what a kernel made) can only be a feed itself, so only a
    view's root is looked for among the feeds' (the set of them is made only then)."""
    fed = feeds.values()
    roots = None
    for k, o in enumerate(outs):
        if o.__class__ is not np.ndarray:
            continue
        if o.base is None:
            if any(o is f for f in fed):
                outs[k] = o.copy()
            continue
        if roots is None:
            roots = {id(_root(f)) for f in fed if f.__class__ is np.ndarray}
        if id(_root(o)) in roots:
            outs[k] = o.copy()
    return outs


def compile(model: ModelLike, target: str = REFERENCE_TARGET, precision: str = "exact", *,
            devices: int | None = None, max_memory: int | str | None = None, timeout_s: float | None = None,
            zoo_params: Mapping[str, Any] | None = None, dims: Mapping[str, int] | None = None,
            cache_dir: str | os.PathLike | bool | None = None, **target_options: Any) -> Executable:
    """Compile the whole model for one target (no fallback) and return the target's executable.
    ``dims`` binds open input dimensions by name (``hal.graph.dims``), as in InferenceSession."""
    dims = checked_dims(dims, "compile")
    options = make_options(precision, devices, max_memory, timeout_s, **target_options)
    tgt = resolve_target(target)
    _check_target_accepts(tgt, options)
    zoo_params = zoo_params_of(model, zoo_params)
    cache_dir = cache_dir_arg(cache_dir)
    with limits.bounds(options.max_memory):
        graph = optimize(load(model, zoo_params=zoo_params, dims=dims))
        limits.check_graph(graph, options.max_memory)
    cap = target_capability(tgt, graph, options)
    if cap.refused:
        raise UnsupportedOpError(
            f"target {target!r} refuses {len(cap.refused)} node(s): "
            + "; ".join(f"{r.node} ({r.op_type}): {r.reason}" for r in cap.refused[:10]),
            where=f"model {graph.name!r}", hint="use InferenceSession(..., fallback='warn') to place them on cpu",
            nodes=[(r.node, r.op_type, r.reason) for r in cap.refused])
    with limits.bounds(options.max_memory):
        exe = compile_graph(graph, tgt, options, open_cache(cache_dir))
    del graph
    heap.release_free_memory()
    heap.keep_pages_for_runs()
    return exe
