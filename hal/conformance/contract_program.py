"""API contract checks of a target's program (``hal.conformance.contract`` runs them with the others).

What a run hands back and leaves behind: exactly the graph's outputs as plain arrays of their dtypes
and shapes, computed by the target's own program, not by hal's reference interpreter relabelled
(whether the numbers are right is the node cases' and light models' question); the caller's feeds
unchanged; arrays the caller owns (a later run does not overwrite them); the same outputs when runs
overlap in several threads. What compile leaves and reports: the graph it was given unchanged; a
report naming the target, the model and the precision, one kernel per unit of the program over the
graph's nodes, numbers finite and non-negative and a latency no shorter than any kernel; trace events
in Chrome's form, in microseconds; a program from shape-only weights that compiles and raises
``hal.RunError`` when run. And every hardware number of the spec has a real source.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import onnx

from hal.conformance.contract_support import _fail, _graph, _model, feeds_for

# --- what a run hands back and leaves behind ----------------------------------------------------------

def _compile(target: str, model: Any) -> Any:
    """``hal.compile`` of a contract model, never from a compile cache (the checks watch the compile)."""
    import hal

    return hal.compile(_model(model) if isinstance(model, str) else model, target=target, cache_dir=False)


def _outputs_as_graph_says(out: Any, graph: Any, what: str) -> None:
    """``out`` is a dict of exactly the graph's outputs, each tensor a plain ndarray of its dtype and static shape."""
    if not isinstance(out, Mapping):
        _fail(f"{what} returned a {type(out).__name__}, not a dict of output name -> array")
    names = [o.name for o in graph.outputs]
    if missing := [n for n in names if n not in out]:
        _fail(f"{what} returned no output {', '.join(map(repr, missing))} (it returned {sorted(map(str, out))}): "
              "run MUST return every output of the graph it compiled")
    if extra := sorted(str(k) for k in out if k not in names):
        _fail(f"{what} returned {', '.join(map(repr, extra[:5]))}, which the graph has no output named (outputs: "
              f"{', '.join(names)}): run returns the graph's outputs only; an extra name can overwrite another "
              "partition's value in a session")
    for o in graph.outputs:
        v, info = out[o.name], graph.values.get(o.name, o)
        if info.kind != "tensor" or info.dtype is None:
            continue
        if v.__class__ is not np.ndarray:
            _fail(f"{what} returned output {o.name!r} as a {type(v).__module__}.{type(v).__qualname__}, not a "
                  "numpy.ndarray")
        if v.dtype != info.dtype:
            _fail(f"{what} returned output {o.name!r} as a {v.dtype} array; the graph makes it {info.dtype}")
        if info.static_shape is not None and v.shape != tuple(info.static_shape):
            _fail(f"{what} returned output {o.name!r} of shape {list(v.shape)}; the graph makes it "
                  f"{list(info.static_shape)}")


def check_run_outputs(target: str, model: str) -> None:
    graph = _graph(model)
    _outputs_as_graph_says(_compile(target, model).run(feeds_for(graph)), graph, f"run() of target {target!r}")


class _Watch:
    """Runs of reference programs (``hal.engine.reference_program``) while a target's run is watched."""

    lock = threading.Lock()
    active = False
    ran: ClassVar[list[dict[str, Any]]] = []


def _watched_program_class() -> type:
    """A subclass of hal.engine.Program that records its runs: ``reference_program`` builds one of these
    while ``check_runs_own_program`` patches ``hal.engine.fusion.Program``."""
    cls = globals().get("_ReferenceProgram")
    if cls is not None:
        return cls
    from hal.engine.program import Program

    class _ReferenceProgram(Program):
        def run_list_ignoring_errors(self, feeds: Any, *args: Any, **kwargs: Any) -> list[Any]:
            out = super().run_list_ignoring_errors(feeds, *args, **kwargs)
            if _Watch.active:
                _Watch.ran.append(dict(zip(self.output_names, out)))
            return out

    _ReferenceProgram.__module__, _ReferenceProgram.__qualname__ = __name__, "_ReferenceProgram"
    globals()["_ReferenceProgram"] = _ReferenceProgram  # picklable by name, as a target may store it
    return _ReferenceProgram


def check_runs_own_program(target: str, model: str) -> None:
    """Outputs the reference interpreter computed, relabelled: hal.engine.reference_program (what the
    reference target runs, and hal.compile(..., 'cpu') builds) must not run while the target runs."""
    import hal.engine.fusion as fusion
    from hal.session import REFERENCE_TARGET

    if target == REFERENCE_TARGET:  # the reference runs the reference program: that is what it is
        return
    watched = _watched_program_class()
    feeds = feeds_for(_graph(model))
    with _Watch.lock:
        original, fusion.Program = fusion.Program, watched
        try:
            exe = _compile(target, model)
            _Watch.ran, _Watch.active = [], True
            try:
                out = exe.run(feeds)
            finally:
                _Watch.active = False
        finally:
            fusion.Program = original
        ran, _Watch.ran = _Watch.ran, []
    if ran:
        same = [k for r in ran for k, v in r.items()
                if isinstance(out, Mapping) and k in out and np.array_equal(np.asarray(out[k]), v, equal_nan=True)]
        _fail(f"run() of target {target!r} executed hal.engine.reference_program's program, the reference "
              f"interpreter that target {REFERENCE_TARGET!r} runs ({len(ran)} time(s))"
              + (f", and returned its output(s) {sorted(set(same))} as its own" if same else "")
              + ": a target MUST execute through its own program and MUST NOT relabel the reference "
                "interpreter's output (specs/interface.md section 5)")


def check_feeds_unchanged(target: str, model: str) -> None:
    graph = _graph(model)
    feeds = feeds_for(graph)
    kept = {k: v.copy() for k, v in feeds.items()}
    _compile(target, model).run(feeds)
    if changed := [k for k in kept if not np.array_equal(feeds[k], kept[k], equal_nan=True)]:
        _fail(f"run() of target {target!r} changed its feed(s) {changed} in place: the feeds are the caller's "
              "(and, in a session, what later partitions read); copy before converting them")


def check_outputs_owned(target: str, model: str) -> None:
    graph = _graph(model)
    exe = _compile(target, model)
    first = exe.run(feeds_for(graph, seed=0))
    kept = {k: np.array(v, copy=True) for k, v in first.items()}
    second = exe.run(feeds_for(graph, seed=1))
    for k, v in kept.items():
        if not np.array_equal(np.asarray(first[k]), v, equal_nan=True):
            _fail(f"output {k!r} of a run of target {target!r} changed when run() was called again: it is a buffer "
                  "the executable reuses; return arrays the caller owns (copy them out)")
    again = {k: np.array(v, copy=True) for k, v in second.items()}
    for v in second.values():  # a caller may write into what it got back ...
        if isinstance(v, np.ndarray) and v.flags.writeable and v.dtype.kind == "f":
            v.fill(np.nan)
    third = exe.run(feeds_for(graph, seed=1))  # ... without changing the next run's results
    for k, v in again.items():
        if not np.array_equal(np.asarray(third[k]), v, equal_nan=True):
            _fail(f"writing into output {k!r} of one run of target {target!r} changed what the next run returned: "
                  "the output is the executable's own state; return arrays the caller owns")


#: threads and runs each of the thread-safety check (4 x 4 runs of a contract model: about 20 ms), and the
#: interpreter's thread switch interval meanwhile
THREADS, RUNS_PER_THREAD = 4, 4
SWITCH_INTERVAL_S = 1e-6


def check_run_thread_safe(target: str, model: str) -> None:
    graph = _graph(model)
    exe = _compile(target, model)
    feeds = [feeds_for(graph, seed=s) for s in range(THREADS)]
    alone = [{k: np.array(v, copy=True) for k, v in exe.run(f).items()} for f in feeds]
    start = threading.Barrier(THREADS)
    problems: list[str] = []

    def work(i: int) -> None:
        try:
            start.wait(10)
            for _ in range(RUNS_PER_THREAD):
                got = exe.run(feeds[i])
                for k, v in alone[i].items():
                    if not np.array_equal(np.asarray(got[k]), v, equal_nan=True):
                        problems.append(f"thread {i}'s output {k!r} differs from the same feeds run alone")
                        return
        except Exception as e:  # any exception of one thread is the failure
            problems.append(f"thread {i} raised {type(e).__name__}: {' '.join(str(e).split())[:200]}")

    threads = [threading.Thread(target=work, args=(i,), name=f"hal-contract-{i}") for i in range(THREADS)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)  # threads take turns every few bytecodes, not every 5 ms: runs overlap
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        sys.setswitchinterval(interval)
    if problems:
        _fail(f"run() of target {target!r} is not safe from several threads at once ({THREADS} threads, each its "
              f"own feeds): {problems[0]}: keep per-run state local to the run")


# --- what compile leaves and reports ---------------------------------------------------------------------


def _digest(v: Any) -> Any:
    """A comparable fingerprint of an attribute or weight value (arrays and protos by their bytes)."""
    if isinstance(v, np.ndarray):
        data = np.ascontiguousarray(v).tobytes()
        return ("array", v.dtype.str, v.shape, hashlib.blake2b(data, digest_size=16).digest())
    if hasattr(v, "SerializeToString"):
        return ("proto", hashlib.blake2b(v.SerializeToString(deterministic=True), digest_size=16).digest())
    if isinstance(v, (list, tuple)):
        return tuple(_digest(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((str(k), _digest(x)) for k, x in v.items()))
    return repr(v)


def _graph_state(graph: Any) -> dict[str, Any]:
    """What a target could change of a graph, part by part: its nodes, weights, values, inputs, outputs."""
    state: dict[str, Any] = {"the node list": tuple(n.name for n in graph.nodes),
                             "the inputs": tuple(i.name for i in graph.inputs),
                             "the outputs": tuple(o.name for o in graph.outputs),
                             "the opsets": _digest(dict(graph.opsets)),
                             "the initializer names": tuple(sorted(graph.initializers))}
    for n in graph.nodes:
        state[f"node {n.name!r}"] = (n.op_type, n.domain, tuple(n.inputs), tuple(n.outputs), _digest(dict(n.attrs)))
    for k, w in graph.initializers.items():
        state[f"initializer {k!r}"] = _digest(w)
    for k, t in graph.values.items():
        state[f"value info {k!r}"] = (t.kind, str(t.dtype), _digest(t.shape))
    return state


def check_compile_leaves_graph(target: str, model: str) -> None:
    from hal.plugins import get_target
    from hal.specs import CompileOptions

    tgt = get_target(target)
    graph = _graph(model)
    before = _graph_state(graph)
    for call, what in ((lambda: tgt.capability(graph, CompileOptions()), "capability"),
                       (lambda: tgt.compile(graph, CompileOptions()), "compile")):
        call()
        after = _graph_state(graph)
        if changed := [k for k in {**before, **after} if before.get(k) != after.get(k)]:
            _fail(f"{what} of target {target!r} changed the graph it was given ({', '.join(changed[:4])}"
                  f"{f' and {len(changed) - 4} more' if len(changed) > 4 else ''}): the session reads the same graph "
                  "afterwards (placement, fallback partitions); transform a copy")


_REPORT_NUMBERS = ("latency_s", "throughput_per_s", "tokens_per_s", "ttft_s", "energy_j", "compile_time_s",
                   "peak_memory_bytes", "transfers_bytes")
_KERNEL_NUMBERS = ("flops", "bytes", "time_s", "start_s")


def _bad_number(v: Any) -> bool:
    return v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0)


def check_report_matches_program(target: str, model: str) -> None:
    graph = _graph(model)
    rep = _compile(target, model).report
    where = f"the compile report of target {target!r}"
    if rep.target != target:
        _fail(f"{where} names target {rep.target!r}: a report names the target that built the program")
    if rep.precision != "exact":
        _fail(f"{where} says precision {rep.precision!r} for a compile asking for 'exact'")
    if rep.model_hash and rep.model_hash != graph.model_hash:
        _fail(f"{where} has model_hash {rep.model_hash[:16]!r}, not the compiled model's {graph.model_hash[:16]!r}")
    if rep.node_count and rep.node_count != len(graph.nodes):
        _fail(f"{where} counts {rep.node_count} nodes; the graph it compiled has {len(graph.nodes)}")
    bad = [f"{k}={getattr(rep, k)!r}" for k in _REPORT_NUMBERS if _bad_number(getattr(rep, k))]
    bad += [f"memory[{i}].{k}={getattr(m, k)!r}" for i, m in enumerate(rep.memory) for k in ("bytes", "capacity")
            if _bad_number(getattr(m, k))]
    bad += [f"kernels[{i}].{k}={getattr(kr, k)!r}" for i, kr in enumerate(rep.kernels) for k in _KERNEL_NUMBERS
            if _bad_number(getattr(kr, k))]
    if _bad_number(rep.devices) or rep.devices < 1:
        bad.append(f"devices={rep.devices!r}")
    if bad:
        _fail(f"{where} has numbers that are not finite and non-negative: {', '.join(bad[:5])}")
    if graph.nodes and not rep.kernels:
        _fail(f"{where} lists no kernels for a program of {len(graph.nodes)} nodes: one KernelReport per unit of the "
              "program, its numbers computed from it")
    if rep.kernel_count != len(rep.kernels):
        _fail(f"{where} says kernel_count={rep.kernel_count} but lists {len(rep.kernels)} kernels")
    names = {n.name for n in graph.nodes}
    if ghosts := sorted({n for k in rep.kernels for n in k.nodes} - names):
        _fail(f"{where} has kernels for nodes the graph lacks: {ghosts[:5]}")
    if rep.latency_s is not None:
        ends = [((k.start_s or 0.0) + k.time_s, k.name) for k in rep.kernels]
        end, name = max(ends, default=(0.0, ""))
        if end > rep.latency_s * (1 + 1e-6) + 1e-15:
            _fail(f"{where} gives latency_s={rep.latency_s:g}, shorter than its kernel {name!r}, which ends at {end:g} "
                  "s: the latency must be computed from the program it reports")


def check_trace_events(target: str, model: str) -> None:
    graph = _graph(model)
    exe = _compile(target, model)
    exe.run(feeds_for(graph))
    events = exe.trace()
    what = f"trace() of target {target!r}"
    if not isinstance(events, list):
        _fail(f"{what} returned a {type(events).__name__}, not a list of Chrome trace events")
    spans = []
    for i, e in enumerate(events):
        if not isinstance(e, dict):
            _fail(f"{what}: event {i} is a {type(e).__name__}, not a dict")
        if missing := [k for k in ("ph", "name", "pid", "tid") if k not in e]:
            _fail(f"{what}: event {i} ({e.get('name')!r}) lacks {', '.join(missing)}")
        if not isinstance(e["ph"], str) or not e["ph"] or not isinstance(e["name"], str):
            _fail(f"{what}: event {i} has ph={e['ph']!r}, name={e['name']!r}: both are strings")
        need = ("ts", "dur") if e["ph"] == "X" else ("ts",) if e["ph"] != "M" else ()
        for k in need:
            if k not in e:
                _fail(f"{what}: event {i} ({e['name']!r}, ph {e['ph']!r}) lacks {k!r} (microseconds)")
            v = e[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                _fail(f"{what}: event {i} ({e['name']!r}) has {k}={v!r}, a {type(v).__name__}: a Python number of "
                      "microseconds (a trace file is JSON)")
            if not math.isfinite(v) or (k == "dur" and v < 0):
                _fail(f"{what}: event {i} ({e['name']!r}) has {k}={v!r}: a finite number of microseconds"
                      + (", not negative" if k == "dur" else ""))
        if e["ph"] == "X":
            spans.append((float(e["ts"]), float(e["ts"]) + float(e["dur"])))
        try:
            json.dumps(e, allow_nan=False)
        except (TypeError, ValueError) as err:
            _fail(f"{what}: event {i} ({e['name']!r}) is not JSON, as a Chrome trace file is: {err}")
    latency = exe.report.latency_s
    if spans and latency:
        span = max(b for _, b in spans) - min(a for a, _ in spans)
        if span * 1e3 < latency * 1e6:
            _fail(f"{what} spans {span:g} us, where the report's latency is {latency * 1e6:g} us: ts and dur are "
                  "microseconds (seconds x 1e6)")


def _shape_only_model(model: str) -> onnx.ModelProto:
    """The contract model with its weight matrices and kernels (floating-point initializers of rank 2 and
    more) declared by shape only, as a model whose weights are not at hand is; small constants (scales,
    mask fills) keep their values."""
    from hal.graph.ir import weights_by_shape

    return weights_by_shape(_model(model), lambda t: t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
                            and len(t.dims) >= 2)


def check_shape_only_compiles(target: str, model: str) -> None:
    from hal.errors import HalError, RunError, UnsupportedOpError
    from hal.graph.load import load
    from hal.graph.passes import optimize
    from hal.plugins import get_target
    from hal.specs import CompileOptions

    so = _shape_only_model(model)
    graph = optimize(load(so))
    if get_target(target).capability(graph, CompileOptions()).refused:
        return  # a node it cannot take without values: compile may refuse it (capability_matches_compile holds that)
    try:
        exe = _compile(target, so)
    except UnsupportedOpError:
        return
    except HalError as e:
        _fail(f"compile of target {target!r} with shape-only weights (hal.graph.ir.ShapeOnly, no data) failed: "
              f"{' '.join(str(e).split())[:300]}: compile MUST work without weight data (specs/interface.md section 4)")
    try:
        exe.run(feeds_for(graph))
    except RunError:
        return
    except Exception as e:
        _fail(f"run() of a shape-only program of target {target!r} raised {type(e).__name__}, not hal.RunError")
    _fail(f"run() of a shape-only program of target {target!r} returned outputs: with no weight data it MUST raise "
          "hal.RunError")


#: sources that say there is none
PLACEHOLDER_SOURCES = frozenset({"todo", "tbd", "tba", "n/a", "na", "none", "null", "nil", "unknown", "source",
                                 "?", "??", "???", "xxx", "fixme", "-", "--", "...", "placeholder", "guess"})


def check_spec_hardware_sourced(target: str, model: str) -> None:
    from hal.plugins import get_target

    spec = get_target(target).spec
    for key, hw in spec.hardware.items():
        if isinstance(hw.value, bool) or not isinstance(hw.value, (int, float)) or not math.isfinite(hw.value):
            _fail(f"hardware number {key!r} of target {target!r} has value {hw.value!r}: a finite number")
        src = (hw.source or "").strip()
        if src.lower().strip(" .:!") in PLACEHOLDER_SOURCES or len(src) < 3:
            _fail(f"hardware number {key!r} of target {target!r} has source {src!r}: every number says where it comes "
                  "from (a datasheet, a derivation, or kind='assumption' with what it assumes)")
