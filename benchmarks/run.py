"""Time hal's targets against onnxruntime and onnx's ReferenceEvaluator, in one process run.

    python -m benchmarks                       # everything, 1 thread, JSON to benchmarks/results/bench.json
    python -m benchmarks --models light_resnet50,bert-bench --targets cpu --reps 20
    python -m benchmarks --smoke               # one model, one repetition (CI keeps it working)

Every runner gets the same feeds and the same thread count. A timed sample is ``loops`` back-to-back
runs lasting at least ``--sample-s`` (pyperf's raw value: 100 ms by default), and its figure is the
time per run. Samples are interleaved in rounds (one sample of each runner, the starting runner
rotating; every runner gets as many rounds as the slowest one), so drift on a shared machine hits
them alike. ReferenceEvaluator is timed after them, each of its samples followed by one of hal cpu
and one of onnxruntime, and its ratios divide by those. The first run of each is a warm-up and is
not counted. Peak RSS is measured in a fresh child process per (model, runner), so no other
model's memory is in the figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.floor import blas_rate, bound, floor_rows, product_op, step_product_flops
from benchmarks.machine import machine_info
from benchmarks.markdown import fmt_mib, fmt_ratio
from benchmarks.memory import PROBES, bench_rss, memory_lines
from benchmarks.models import COMPILE_GRAPHS, DEFAULT_CACHE, BenchModel, load_model, model_names
from benchmarks.runners import ORT, REF, Runner, limit_threads, make_runner

RESULTS = Path(__file__).resolve().parent / "results"
#: the most timed repetitions ``--min-s`` gives a fast runner
MAX_REPS = 200
#: the most back-to-back runs one sample takes (``--sample-s``)
MAX_LOOPS = 1 << 16
SCHEMA = "hal-bench/1"
#: the groups --models takes beside model names
MODEL_GROUPS = ("light", "transformers", "all")
#: issue 8's goals, checked in the summary
GOALS = {"hal_cpu/ort": {"transformer": 1.3, "cnn": 2.0}, "ref/hal_cpu": {"transformer": 5.0, "cnn": 10.0},
         "target/hal_cpu": 1.15, "compile_s": 3.0, "rss/planned": 1.5}


# -- timing --------------------------------------------------------------------------------------------


def _stats(times: Sequence[float]) -> dict[str, Any]:
    q1, med, q3 = (float(x) for x in np.percentile(times, [25, 50, 75]))
    return {"median_s": med, "iqr_s": q3 - q1, "q1_s": q1, "q3_s": q3, "min_s": float(min(times)),
            "reps": len(times), "times_s": [float(t) for t in times]}


def _max_err(out: Sequence[Any], ref: Sequence[Any]) -> float | None:
    try:
        errs = [float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
                for a, b in zip(out, ref) if np.asarray(a).size]
    except (TypeError, ValueError):
        return None
    return max(errs) if errs else 0.0


def _set_up(name: str, model: BenchModel, args: argparse.Namespace, results: dict[str, dict[str, Any]],
            outputs: dict[str, list[Any]]) -> Runner | None:
    """Build one runner and warm it once; its result entry says how many timed reps it gets."""
    try:
        r = make_runner(name, model, args.threads)
        t0 = time.perf_counter()
        outputs[name] = r.run()
        warm = time.perf_counter() - t0
        # fast runners are calibrated on a second run: a first run's one-off costs (arenas, lazy loads)
        # made tiny-gpt's 0.3 ms runs calibrate as 0.1 s ones, single-run samples (1.0 ms, IQR 0.5)
        again = warm if name == REF else time_per_run(r, 1)
    except Exception as e:  # one runner's failure is a result, not the end of the benchmark
        results[name] = {"status": "error", "error": f"{type(e).__name__}: {str(e)[:400]}"}
        return None
    loops, per_run = _calibrate(r, again, args.sample_s)
    sample = loops * per_run
    want = args.reps
    if sample * want < args.min_s:  # a fast model: more samples over a longer window, for every runner alike
        want = min(MAX_REPS, max(want, math.ceil(args.min_s / max(sample, 1e-9))))
    note = None
    cap = args.budget_s if name != REF else args.ref_budget_s
    if sample * want > cap:
        want = max(1, int(cap / max(sample, 1e-9)))
        note = f"capped to {want} sample(s) of {sample:.2f} s (budget {cap:.0f} s)"
    if name == REF and warm > args.ref_max_s:
        want = 0
        note = f"warm-up took {warm:.1f} s > --ref-max-s {args.ref_max_s:.0f}: the warm-up is the only sample"
    results[name] = {"status": "ok", "setup_s": r.setup_s, "warmup_s": warm, "loops": loops,
                     "times": [warm] if want == 0 else [], "want": want, "note": note, **r.info}
    return r


def _calibrate(r: Runner, warm: float, sample_s: float) -> tuple[int, float]:
    """How many back-to-back runs make one sample of at least ``sample_s``, and the time per run that
    says so. A warm-up that long already needs one (no run is faster cold than hot); otherwise the
    count doubles from one until the runs take that long, as pyperf calibrates its loops."""
    if warm >= sample_s:
        return 1, warm
    loops = 1
    while True:
        spent = time_per_run(r, loops) * loops
        if spent >= sample_s or loops >= MAX_LOOPS:
            return min(MAX_LOOPS, max(1, math.ceil(sample_s * loops / max(spent, 1e-9)))), spent / loops
        loops *= 2


def time_per_run(r: Runner, loops: int) -> float:
    """Seconds per run over ``loops`` back-to-back runs: the runs after the first meet the caches the
    runner itself left, not the other runners' (on tiny-gpt a run right after ReferenceEvaluator's
    took 1.4x one after its own)."""
    t0 = time.perf_counter()
    for _ in range(loops):
        r.run()
    return (time.perf_counter() - t0) / loops


def _time_rounds(runners: Sequence[Runner], results: dict[str, dict[str, Any]]) -> None:
    """One sample of each runner per round; round k starts at runner k (no runner always
    follows the same one, so no runner always meets the caches and heap another one left)."""
    for rep in range(max((results[r.name]["want"] for r in runners), default=0)):
        k = rep % len(runners)
        for r in [*runners[k:], *runners[:k]]:
            res = results[r.name]
            if rep < res["want"]:
                res["times"].append(time_per_run(r, res["loops"]))


def _time_with_reference(ref: Runner, partners: Sequence[Runner], results: dict[str, dict[str, Any]]) -> None:
    """ReferenceEvaluator's samples, each followed by one sample of each partner (hal cpu,
    onnxruntime), whose times are kept apart as the partner's ``with_reference``: the Ref/cpu and
    Ref/ORT ratios divide by runs of the same minutes, not by the rounds' (one ResNet-50 run read hal
    cpu 129.9 ms in the rounds and 108.3 ms in its profile minutes later)."""
    res = results[REF]
    paired: dict[str, list[float]] = {p.name: [] for p in partners}

    def partner_samples() -> None:
        for p in partners:
            paired[p.name].append(time_per_run(p, results[p.name]["loops"]))

    if res["want"] == 0:  # the warm-up is the reference's only sample: pair it
        partner_samples()
    for _ in range(res["want"]):
        res["times"].append(time_per_run(ref, res["loops"]))
        partner_samples()
    for name, times in paired.items():
        results[name]["with_reference"] = _stats(times)


def bench_model(model: BenchModel, runner_names: Sequence[str], args: argparse.Namespace) -> dict[str, Any]:
    """Set the fast runners up, warm each once and time them in rotating rounds; then the
    ReferenceEvaluator, each of its runs followed by one of hal cpu and of onnxruntime (its long runs
    would otherwise sit between the others' in the rounds)."""
    results: dict[str, dict[str, Any]] = {}
    outputs: dict[str, list[Any]] = {}
    runners = [r for n in runner_names if n != REF and (r := _set_up(n, model, args, results, outputs))]
    # every fast runner gets the slowest one's count: a faster runner's extra reps would run alone after
    # the shared rounds, in other minutes of a shared machine than the runs its ratio is taken against
    shared = min((results[r.name]["want"] for r in runners), default=0)
    for r in runners:
        results[r.name]["want"] = shared
    _time_rounds(runners, results)
    if REF in runner_names:
        gc.collect()
        ref = _set_up(REF, model, args, results, outputs)
        if ref is not None:
            _time_with_reference(ref, [r for r in runners if r.name in ("hal:cpu", ORT)], results)
            runners.append(ref)
    for r in runners:
        res = results[r.name]
        res.update(_stats(res.pop("times")))
        res.pop("want")
        if ORT in outputs and r.name != ORT:
            res["max_abs_err_vs_ort"] = _max_err(outputs[r.name], outputs[ORT])
    del runners, outputs
    gc.collect()
    return {"name": model.name, "kind": model.kind, "source": model.source, "description": model.description,
            "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in model.feeds.items()},
            "results": {n: results[n] for n in runner_names if n in results}, "ratios": ratios(results)}


def _timing(results: dict[str, dict[str, Any]], name: str, with_reference: bool = False) -> dict[str, Any] | None:
    """A runner's timing stats; ``with_reference``: of its runs between ReferenceEvaluator's, where it has them."""
    r = results.get(name)
    if not r or r.get("status") != "ok":
        return None
    return r["with_reference"] if with_reference and "with_reference" in r else r


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    """``a`` over ``b``: the median of their runs' ratios taken pairwise (run k of ``a`` over run k of
    ``b``, timed in the same round: the same minute of a shared machine), or the ratio of their
    medians when the runs do not pair up."""
    if not a or not b or not b["median_s"]:
        return None
    ta, tb = a.get("times_s"), b.get("times_s")
    if ta and tb and len(ta) == len(tb) and all(tb):
        return float(np.median(np.asarray(ta) / np.asarray(tb)))
    return a["median_s"] / b["median_s"]


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """hal_cpu/ort, ref/hal_cpu and ref/ort (against the runs paired with the reference's), and for every
    other target hal_T/hal_cpu and hal_T/ort; each the median of its pairwise ratios (``_ratio``)."""
    cpu, ort, ref = _timing(results, "hal:cpu"), _timing(results, ORT), _timing(results, REF)
    pairs = {"hal_cpu/ort": (cpu, ort),
             # paired with the reference's runs: each of its runs is followed by one of hal cpu's and ORT's
             "ref/hal_cpu": (ref, _timing(results, "hal:cpu", True)), "ref/ort": (ref, _timing(results, ORT, True))}
    for name in results:
        t = _timing(results, name)
        if name.startswith("hal:") and name != "hal:cpu":
            pairs[f"hal_{name[4:]}/hal_cpu"] = (t, cpu)
            pairs[f"hal_{name[4:]}/ort"] = (t, ort)
    return {k: v for k, (a, b) in pairs.items() if (v := _ratio(a, b)) is not None}


# -- compile time --------------------------------------------------------------------------------------


def bench_compile(graph_name: str, targets: Sequence[str], reps: int) -> dict[str, Any]:
    """End-to-end InferenceSession construction (parse, check, shape inference, passes, placement,
    target compile) from the serialized model, per target; median of ``reps``."""
    import hal
    from hal.graph.load import load
    from hal.graph.passes import optimize

    proto = COMPILE_GRAPHS[graph_name]()
    blob = proto.SerializeToString()
    t0 = time.perf_counter()
    g = load(blob)
    t1 = time.perf_counter()
    nodes_before = len(g.nodes)
    optimize(g)
    t2 = time.perf_counter()
    out: dict[str, Any] = {"graph": graph_name, "nodes": len(proto.graph.node), "nodes_loaded": nodes_before,
                           "nodes_after_optimize": len(g.nodes), "model_bytes": len(blob),
                           "frontend": {"load_s": t1 - t0, "optimize_s": t2 - t1}, "targets": {}}
    del g
    for t in targets:
        times = []
        try:
            for _ in range(reps):
                gc.collect()
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sess = hal.InferenceSession(blob, target=t, precision="exact", fallback="allow")
                times.append(time.perf_counter() - t0)
                kernels = sess.report.kernel_count
                del sess
            out["targets"][t] = {"status": "ok", "kernels": kernels, **_stats(times)}
        except Exception as e:
            out["targets"][t] = {"status": "error", "error": f"{type(e).__name__}: {str(e)[:400]}"}
    return out


# -- where hal's time goes -----------------------------------------------------------------------------


def profile_model(model: BenchModel, reps: int) -> dict[str, Any]:
    """hal cpu's program (its fused steps) with every kernel timed: seconds per run by op type, and
    what the engine loop itself costs (the run's time minus the kernels' time; timing a kernel
    turns its in-place reuse off, which that difference also carries), and the FLOPs of the matrix
    products its steps computed (``benchmarks.floor``)."""
    import dataclasses

    from hal.engine import Program, fused_steps
    from hal.graph.load import load
    from hal.graph.passes import optimize

    graph = optimize(load(model.source))
    spent: dict[str, list[float]] = {}  # op -> [seconds, calls]
    products = [0.0]  # the FLOPs of the warm-up run's matrix products (not counted in the timed runs)
    counting = [True]

    def timed(fn: Callable[..., Any], op: str, product: str | None) -> Callable[..., Any]:
        acc = spent.setdefault(op, [0.0, 0])

        def call(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                res = fn(*a, **k)
            finally:
                acc[0] += time.perf_counter() - t0
                acc[1] += 1
            if product is not None and counting[0]:
                products[0] += step_product_flops(product, a, k, res)
            return res

        return call

    # the steps hal cpu runs (fused); a fused step counts under its op types joined by "+"
    base = fused_steps(graph, graph.nodes)
    steps = [dataclasses.replace(s, fn=timed(s.fn, s.op_type, product_op(s.op_type, s.guard_op))) for s in base]
    prog = Program(graph, steps)
    plain = Program(graph, base)
    prog.run_list(model.feeds)
    counting[0] = False
    plain.run_list(model.feeds)
    for acc in spent.values():
        acc[0], acc[1] = 0.0, 0
    walls, plain_walls = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        plain.run_list(model.feeds)
        plain_walls.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        prog.run_list(model.feeds)
        walls.append(time.perf_counter() - t0)
    wall = sum(walls) / reps
    kern = sum(a[0] for a in spent.values()) / reps
    ops = sorted(({"op": op, "s_per_run": a[0] / reps, "share": a[0] / reps / wall, "calls_per_run": a[1] // reps}
                  for op, a in spent.items()), key=lambda r: -r["s_per_run"])
    return {"model": model.name, "steps": len(steps), "run_s": float(np.median(plain_walls)),
            "profiled_run_s": wall, "kernels_s": kern, "engine_overhead_s": max(wall - kern, 0.0),
            "product_flops": products[0], "ops": ops}


# -- report --------------------------------------------------------------------------------------------


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x * 1e3:,.1f}"


def print_report(doc: dict[str, Any], out: Any = sys.stdout) -> None:
    runners = doc["settings"]["runners"]
    p = lambda *a: print(*a, file=out)  # noqa: E731
    m = doc["machine"]
    p(f"\nmachine: {m['cpu']}, {m['cores']} cores, {fmt_mib(m['ram_bytes'])} MiB RAM; "
      f"threads={doc['settings']['threads']}; {', '.join(f'{k} {v}' for k, v in m['versions'].items())}")
    p(f"\nmedian ms per run (IQR) over samples of back-to-back runs >= {doc['settings'].get('sample_s', 0):g} s, "
      "warm-up excluded")
    head = f"{'model':<22}" + "".join(f"{r:>20}" for r in runners)
    p(head)
    notes = []
    for mod in doc["models"]:
        cells = []
        for r in runners:
            res = mod["results"].get(r)
            if res is None:
                cells.append(f"{'':>20}")
            elif res["status"] != "ok":
                cells.append(f"{'error':>20}")
                notes.append(f"{mod['name']} / {r}: {res['error']}")
            else:
                cells.append(f"{_ms(res['median_s']) + ' (' + _ms(res['iqr_s']) + ')':>20}")
                if res.get("note"):
                    notes.append(f"{mod['name']} / {r}: {res['note']}")
                if res.get("fallback_nodes"):
                    notes.append(f"{mod['name']} / {r}: {res['fallback_nodes']} node(s) fell back to cpu")
        p(f"{mod['name']:<22}" + "".join(cells))
    keys = sorted({k for mod in doc["models"] for k in mod["ratios"]},
                  key=lambda k: (k != "hal_cpu/ort", k != "ref/hal_cpu", k))
    w = max([12, *(len(k) + 2 for k in keys)])
    p("\nratios (time / time)")
    p(f"{'model':<22}" + "".join(f"{k:>{w}}" for k in keys))
    for mod in doc["models"]:
        p(f"{mod['name']:<22}" + "".join(f"{mod['ratios'].get(k, float('nan')):>{w}.2f}" for k in keys))
    if doc["compile"]:
        p("\ncompile (InferenceSession construction from bytes, median s)")
        for c in doc["compile"]:
            fe = c["frontend"]
            p(f"{c['graph']}: {c['nodes']} nodes ({c['nodes_after_optimize']} after passes); load {fe['load_s']:.2f} s,"
              f" passes {fe['optimize_s']:.2f} s")
            for t, r in c["targets"].items():
                p(f"  {t:<10} " + (f"{r['median_s']:.2f} s (IQR {r['iqr_s']:.2f}, {r['reps']} reps)"
                                   if r["status"] == "ok" else f"error: {r['error']}"))
    if doc["memory"]:
        p("\n" + "\n".join(memory_lines(doc["memory"])))
    for prof in doc.get("profile", []):
        if "ops" not in prof:
            continue
        top = ", ".join(f"{o['op']} {o['share']:.0%}" for o in prof["ops"][:6])
        p(f"\nprofile {prof['model']}: {prof['steps']} steps, {_ms(prof['run_s'])} ms/run; engine loop "
          f"{prof['engine_overhead_s'] / prof['profiled_run_s']:.1%}; {top}")
    if doc.get("floor"):
        p(f"\nBLAS floor (benchmarks/floor.py): the model's matrix products at numpy's SGEMM rate on "
          f"{doc['blas']['size']}^3, {doc['blas']['flops_per_s'] / 1e9:.1f} GFLOP/s")
        p(f"{'model':<22}{'GFLOP':>9}{'floor ms':>10}{'cpu/floor':>11}{'ORT/floor':>11}{'Ref/floor':>11}")
        for r in doc["floor"]:
            p(f"{r['model']:<22}{r['product_flops'] / 1e9:>9.3f}{_ms(r['floor_s']):>10}"
              + "".join(f"{fmt_ratio(r.get(k)):>11}" for k in ("hal_cpu/floor", "ort/floor", "ref/floor")))
    if notes:
        p("\nnotes:")
        for n in notes:
            p(f"  {n}")


def summarize(doc: dict[str, Any]) -> dict[str, Any]:
    """Each goal of issue 8 against the figures: value, limit, met; for the timing goals against the
    other runners, with a profile, the best value numpy's BLAS allows (``benchmarks.floor.bound``)."""
    checks = []
    floors = {r["model"]: r for r in doc.get("floor", [])}
    for mod in doc["models"]:
        for key in ("hal_cpu/ort", "ref/hal_cpu"):
            v = mod["ratios"].get(key)
            if v is not None:
                lim = GOALS[key][mod["kind"]]
                met = v <= lim if key == "hal_cpu/ort" else v >= lim
                check = {"goal": key, "model": mod["name"], "value": v, "limit": lim, "met": met}
                best = bound(floors.get(mod["name"]), key)
                if best is not None:
                    check["bound_on_blas"] = best
                    check["reachable_on_blas"] = best <= lim if key == "hal_cpu/ort" else best >= lim
                checks.append(check)
        for key, v in mod["ratios"].items():
            if key.endswith("/hal_cpu") and key.startswith("hal_"):
                checks.append({"goal": "target/hal_cpu", "model": mod["name"], "target": key.split("/")[0][4:],
                               "value": v, "limit": GOALS["target/hal_cpu"], "met": v <= GOALS["target/hal_cpu"]})
    for c in doc["compile"]:
        for t, r in c["targets"].items():
            if r["status"] == "ok":
                checks.append({"goal": "compile_s", "graph": c["graph"], "target": t, "value": r["median_s"],
                               "limit": GOALS["compile_s"], "met": r["median_s"] < GOALS["compile_s"]})
    for r in doc["memory"]:
        # the run's own memory where the probe could tell library pages apart (benchmarks/memory.py)
        v = r.get("own_ratio_to_planned", r.get("ratio_to_planned"))
        if v is not None and r["runner"].startswith("hal:"):
            checks.append({"goal": "rss/planned", "model": r["model"], "target": r["runner"][4:], "value": v,
                           "limit": GOALS["rss/planned"], "met": v <= GOALS["rss/planned"]})
    return {"checks": checks, "met": sum(c["met"] for c in checks), "total": len(checks)}


# -- command line --------------------------------------------------------------------------------------


def _csv(s: str | None) -> list[str] | None:
    return None if s in (None, "", "all") else [x.strip() for x in s.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help="comma list of models, or 'light' / 'transformers' / 'all' (default all)")
    ap.add_argument("--targets", help="comma list of hal targets (default: every installed target)")
    ap.add_argument("--baselines", default=f"{ORT},{REF}", help=f"comma list from {ORT},{REF} (or 'none')")
    ap.add_argument("--reps", type=int, default=10, help="timed samples per runner (default 10)")
    ap.add_argument("--min-s", type=float, default=1.0,
                    help=f"per model and runner: more samples (up to {MAX_REPS}) when a sample x reps is shorter "
                         "than this (default 1)")
    ap.add_argument("--sample-s", type=float, default=0.1,
                    help="one timed sample is as many back-to-back runs as last this long, and reads their time "
                         "per run (pyperf's --min-time; default 0.1; 0: one run a sample)")
    ap.add_argument("--threads", type=int, default=1, help="threads for every runner (default 1)")
    ap.add_argument("--budget-s", type=float, default=20.0,
                    help="per model and runner: fewer samples when a sample x reps would exceed this (default 20)")
    ap.add_argument("--ref-budget-s", type=float, default=60.0,
                    help="the same budget for ReferenceEvaluator (default 60: a 5-10 s run still gets 6-12 pairs)")
    ap.add_argument("--ref-max-s", type=float, default=60.0,
                    help="ReferenceEvaluator runs slower than this are timed by their warm-up only (default 60)")
    ap.add_argument("--compile-graphs", default="decoder-24l",
                    help=f"generated graphs to compile, from {','.join(COMPILE_GRAPHS)} (or 'none')")
    ap.add_argument("--compile-reps", type=int, default=3)
    ap.add_argument("--rss", default="hal,onnxruntime",
                    help="runners to measure peak RSS for: 'hal' (every target), target names, onnxruntime, "
                         "reference, or 'none'")
    ap.add_argument("--rss-probes", type=int, default=PROBES,
                    help=f"fresh processes per RSS figure, the median one's kept (default {PROBES}; --smoke: 1)")
    ap.add_argument("--rss-timeout-s", type=float, default=600.0)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="folder for the exported transformers")
    ap.add_argument("--out", type=Path, help="JSON output (default benchmarks/results/bench.json, "
                                             "bench-smoke.json with --smoke)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny-gpt only, one repetition, the 2-layer compile graph, RSS for cpu only")
    ap.add_argument("--profile", action="store_true",
                    help="also time every kernel of hal cpu's program and list the op types by share")
    args = ap.parse_args(argv)
    _check_names(ap, args)
    return args


def _check_names(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every name a list option gives is one the benchmark knows, before anything is loaded or timed:
    a wrong one is a usage error (exit status 2) that lists the names it takes."""
    import hal

    installed = [t.name for t in hal.targets()]
    # option: (its value, the names it takes, the word for "none of them" or "every one" it also takes)
    options = {"--models": (args.models, [*model_names(), *MODEL_GROUPS], None),
               "--targets": (args.targets, installed, "all"),
               "--baselines": (args.baselines, [ORT, REF], "none"),
               "--compile-graphs": (args.compile_graphs, list(COMPILE_GRAPHS), "none"),
               "--rss": (args.rss, ["hal", *installed, ORT, REF], "none")}
    for option, (spec, known, word) in options.items():
        unknown = [] if spec == word else [n for n in _csv(spec) or [] if n not in known]
        if unknown:
            ap.error(f"{option}: unknown {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
                     + (f" (or '{word}')" if word else ""))


def _select_models(spec: str | None) -> list[str]:
    """The models --models names (checked by ``_check_names``), groups expanded, in the order given."""
    names = model_names()
    groups = {"light": [n for n in names if n.startswith("light_")],
              "transformers": [n for n in names if not n.startswith("light_")], "all": names}
    out: list[str] = []
    for s in _csv(spec) or ["all"]:
        out += [n for n in groups.get(s, [s]) if n not in out]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_start = os.getloadavg()
    threads_check = limit_threads(args.threads)
    import hal
    from hal.kernels import jit

    # the compiled loops load once, as onnxruntime is imported: before any model's warm-up
    t0 = time.perf_counter()
    jit.load()
    jit_info = {"status": jit.status(), "load_s": time.perf_counter() - t0}

    targets = _csv(args.targets) or [t.name for t in hal.targets()]
    if "cpu" in targets:  # cpu first: the other targets' ratios are against it
        targets = ["cpu", *[t for t in targets if t != "cpu"]]
    baselines = [] if args.baselines == "none" else [b for b in (_csv(args.baselines) or [ORT, REF])]
    if args.smoke:
        models, args.reps, compile_graphs, rss_runners = ["tiny-gpt"], 1, ["decoder-2l"], ["hal:cpu"]
        args.compile_reps, args.min_s, args.sample_s, args.rss_probes = 1, 0.0, 0.0, 1
    else:
        models = _select_models(args.models)
        compile_graphs = [] if args.compile_graphs == "none" else _csv(args.compile_graphs) or list(COMPILE_GRAPHS)
        rss_runners = []
        for r in ([] if args.rss == "none" else _csv(args.rss) or ["hal", ORT]):
            rss_runners += [f"hal:{t}" for t in targets] if r == "hal" else [r if r in (ORT, REF) else f"hal:{r}"]
    runners = [f"hal:{t}" for t in targets] + baselines
    doc: dict[str, Any] = {
        "schema": SCHEMA, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, "-m", "benchmarks", *(argv if argv is not None else sys.argv[1:])],
        "settings": {"threads": args.threads, "reps": args.reps, "min_s": args.min_s, "max_reps": MAX_REPS,
                     "sample_s": args.sample_s,
                     "warmup": "2 runs (ReferenceEvaluator: 1)", "budget_s": args.budget_s,
                     "ref_budget_s": args.ref_budget_s, "ref_max_s": args.ref_max_s, "smoke": args.smoke,
                     "targets": targets, "runners": runners, "models": models, "compile_graphs": compile_graphs,
                     "ort_options": {"intra_op_num_threads": args.threads, "inter_op_num_threads": 1,
                                     "execution_mode": "sequential", "graph_optimization_level": "default (all)"},
                     "hal_options": {"precision": "exact", "fallback": "allow"}, "jit": jit_info},
        "machine": machine_info(), "threads": threads_check, "models": [], "compile": [], "memory": [],
        "profile": [],
    }
    if args.profile:  # the BLAS rate the floor divides by, under the runners' thread limit
        doc["blas"] = blas_rate()
    plans: dict[str, dict[str, Any]] = {}
    for name in models:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            model = load_model(name, args.cache)
        except Exception as e:
            doc["models"].append({"name": name, "kind": "transformer" if not name.startswith("light_") else "cnn",
                                  "status": "error", "error": f"{type(e).__name__}: {e}", "results": {},
                                  "ratios": {}})
            continue
        entry = bench_model(model, runners, args)
        doc["models"].append(entry)
        if args.profile:
            try:
                doc["profile"].append(profile_model(model, max(1, min(args.reps, 5))))
            except Exception as e:
                doc["profile"].append({"model": name, "error": f"{type(e).__name__}: {e}"})
        cpu = entry["results"].get("hal:cpu", {})
        plans[name] = {"weights_bytes": cpu.get("weights_bytes"),
                       "peak_activation_bytes": cpu.get("peak_activation_bytes")}
    for g in compile_graphs:
        print(f"[bench] compile {g} ...", file=sys.stderr, flush=True)
        doc["compile"].append(bench_compile(g, targets, args.compile_reps))
    for name in models if not args.smoke else models[:1]:
        for r in rss_runners:
            if any(m["name"] == name and m.get("status") != "error" for m in doc["models"]):
                print(f"[bench] rss {name} {r} ...", file=sys.stderr, flush=True)
                doc["memory"].append(bench_rss(name, r, args, plans.get(name)))
    doc["machine"]["loadavg"] = {"start": load_start, "end": os.getloadavg(),
                                 "note": "1/5/15-minute load averages; above the core count, other work shared the CPU"}
    doc["floor"] = floor_rows(doc)
    doc["summary"] = summarize(doc)
    doc["elapsed_s"] = time.perf_counter() - started
    out = args.out or RESULTS / ("bench-smoke.json" if args.smoke else "bench.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print_report(doc)
    s = doc["summary"]
    print(f"\ngoals met: {s['met']}/{s['total']}; wrote {out} in {doc['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
