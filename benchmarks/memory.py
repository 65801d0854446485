"""Peak memory of one run, measured in a fresh child process per (model, runner) so that no other
model's memory is in the figure: ``bench_rss`` starts ``python -m benchmarks.memory MODEL RUNNER``,
which prints ``rss_probe``'s JSON, three times, and keeps the median probe (``PROBES``).

The peak is the whole resident set over a baseline taken after the imports, so the libraries'
pages that importing touched are not in it; the pages of the same libraries that setup and the
warm-up touch for the first time (onnx's parser, numpy's ufunc loops, OpenBLAS's kernels) are. The
probe reads those from /proc/self/smaps (resident pages of mapped shared objects) and the JSON gives
the run's own memory without them (``run_delta_own_bytes``) beside the whole peak; the goal is
checked on the run's own memory. Only shared objects are subtracted: a runner that mapped its
weights from the model file would still have them counted."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import re
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from benchmarks import THREAD_ENV_VARS
from benchmarks.markdown import fmt_mib, fmt_ratio, probe_span
from benchmarks.models import DEFAULT_CACHE, load_model
from benchmarks.runners import limit_threads, make_runner


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


#: a mapped shared object: libfoo.so, libfoo.so.6, _multiarray_umath.cpython-311-x86_64-linux-gnu.so
_SHARED_OBJECT = re.compile(r"\.so(\.[0-9]+)*$")


def _library_rss() -> int | None:
    """Resident bytes of mapped shared objects (the code and data of numpy, OpenBLAS, onnxruntime,
    libc, ...) from /proc/self/smaps; None off Linux."""
    total, counted = 0, False
    try:
        with open("/proc/self/smaps") as f:
            for line in f:
                head = line.split(maxsplit=5)
                if head and "-" in head[0] and not head[0].endswith(":"):  # a mapping's header line
                    counted = len(head) == 6 and bool(_SHARED_OBJECT.search(head[5].rstrip()))
                elif counted and head and head[0] == "Rss:":
                    total += int(head[1]) * 1024
    except OSError:
        return None
    return total


def _hwm() -> int | None:
    """The peak-RSS mark (/proc/self/status ``VmHWM``) in bytes; None off Linux."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: reset the peak-RSS mark
        return True
    except OSError:
        return False


class _Sampler(threading.Thread):
    """Fallback when the peak mark cannot be reset: sample RSS every half millisecond."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self._stop_evt = threading.Event()

    def run(self) -> None:
        while not self._stop_evt.is_set():
            self.peak = max(self.peak, _rss_now())
            time.sleep(0.0005)

    def stop(self) -> int:
        self._stop_evt.set()
        self.join()
        return self.peak


def rss_probe(model_name: str, runner: str, threads: int, cache: Path) -> dict[str, Any]:
    """In a fresh process: RSS after imports, after setup, and the peak during one run after a warm-up."""
    import onnx.reference  # noqa: F401  (every probe imports the same libraries, so baselines compare)
    import onnxruntime  # noqa: F401

    import hal

    # hal imports its targets' plugins when a session first asks for one: their modules (~3 MB) are
    # library code, loaded before the baseline as onnxruntime's and onnx's are, not a run's memory
    hal.targets()
    # numba and its compiler (~100 MB, whatever the model) likewise: loaded as a library, before the
    # baseline; the loops a model's kernels compile or load from the cache are still its run's
    from hal.kernels import jit

    jit.load()
    limit_threads(threads)
    model = load_model(model_name, cache)
    gc.collect()
    # the heap's free pages go back before the baseline: numba's load frees megabytes that glibc
    # keeps mapped, and a hal session trims them when it is built, which read tiny-gpt's run at
    # 0.4 MB below its baseline (a negative share of its plan)
    from hal import heap

    heap.release_free_memory()
    base, base_lib = _rss_now(), _library_rss()
    r = make_runner(runner, model, threads)
    gc.collect()
    after_setup = _rss_now()
    r.run()
    gc.collect()
    exact = _reset_hwm()
    sampler = _Sampler()
    sampler.start()
    r.run()
    sampled = sampler.stop()
    peak = max(_hwm() or 0, sampled) if exact else sampled
    # a library's pages stay mapped once touched, so their growth since the baseline, read after the
    # run, splits the peak into library pages and the run's own memory
    end_lib = _library_rss()
    lib_growth = None if base_lib is None or end_lib is None else max(end_lib - base_lib, 0)
    # a third run under tracemalloc: the most bytes Python and numpy held at once (arrays and kernel
    # temporaries), so the RSS above can be told apart from allocator retention and library buffers
    traced = None
    if runner.startswith("hal:"):  # onnxruntime's and the evaluator's C++ buffers are not traced
        tracemalloc.start()
        start = tracemalloc.get_traced_memory()[0]
        r.run()
        traced = tracemalloc.get_traced_memory()[1] - start
        tracemalloc.stop()
    return {"model": model_name, "runner": runner, "baseline_rss": base, "after_setup_rss": after_setup,
            "run_peak_rss": peak, "traced_run_peak_bytes": traced, "library_growth_bytes": lib_growth,
            "method": "VmHWM reset via clear_refs" if exact else "0.5 ms sampling", **r.info}


#: fresh processes per (model, runner): a single one's reading moves by tens of KB from one process to
#: the next (the same model, code and runs: tiny-gpt's LPU session 1.42-1.58 of its plan in repeated probes),
#: so the figure is the median probe's, with every probe's own bytes beside it
PROBES = 3


def _probe(model_name: str, runner: str, args: argparse.Namespace) -> dict[str, Any]:
    """One child process's ``rss_probe`` JSON with the deltas worked out, or an error entry."""
    env = dict(os.environ)
    env.update({k: str(args.threads) for k in THREAD_ENV_VARS})
    cmd = [sys.executable, "-m", "benchmarks.memory", model_name, runner,
           "--threads", str(args.threads), "--cache", str(args.cache)]
    root = Path(__file__).resolve().parent.parent
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=args.rss_timeout_s)
    except subprocess.TimeoutExpired:
        return {"model": model_name, "runner": runner, "status": "error", "error": "timed out"}
    if proc.returncode != 0:
        return {"model": model_name, "runner": runner, "status": "error",
                "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:400]}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["status"] = "ok"
    res["run_delta_bytes"] = res["run_peak_rss"] - res["baseline_rss"]
    if res.get("library_growth_bytes") is not None:
        res["run_delta_own_bytes"] = res["run_delta_bytes"] - res["library_growth_bytes"]
    return res


def _own(res: dict[str, Any]) -> int:
    """What the goal is checked on: the run's own memory where the probe could tell library pages apart."""
    return res.get("run_delta_own_bytes", res["run_delta_bytes"])


def bench_rss(model_name: str, runner: str, args: argparse.Namespace, plan: dict[str, Any] | None
              ) -> dict[str, Any]:
    """``args.rss_probes`` probes (``--rss-probes``, default ``PROBES``); the entry is the median one's (by the run's
    own memory; of an even count the upper middle), with ``probe_own_bytes`` listing every probe's.
    The first probe that fails is the entry instead."""
    probes = []
    for _ in range(max(1, args.rss_probes)):
        res = _probe(model_name, runner, args)
        if res["status"] != "ok":
            return res
        probes.append(res)
    res = sorted(probes, key=_own)[len(probes) // 2]
    res["probe_own_bytes"] = [_own(p) for p in probes]
    planned = None
    if plan and plan.get("weights_bytes") is not None and plan.get("peak_activation_bytes") is not None:
        planned = plan["weights_bytes"] + plan["peak_activation_bytes"]
        res["planned_weights_bytes"] = plan["weights_bytes"]
        res["planned_peak_activation_bytes"] = plan["peak_activation_bytes"]
        res["planned_bytes"] = planned
        res["ratio_to_planned"] = res["run_delta_bytes"] / planned if planned else None
        if planned and "run_delta_own_bytes" in res:
            res["own_ratio_to_planned"] = res["run_delta_own_bytes"] / planned
    return res


def memory_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The printed report's table of ``bench_rss`` entries, in MiB."""
    mb = fmt_mib
    lines = ["peak RSS during one run (MiB): delta over the process after imports vs planned weights + live "
             "activations;",
             "traced: the most a third run held at once in Python and numpy allocations (tracemalloc);",
             "lib: pages of shared objects (library code) first touched since imports, inside the run peak;",
             "own: the run peak without them over planned (the goal's figure); each row is the median of its",
             "probes (fresh processes), whose own / planned spans the last column",
             f"{'model':<22}{'runner':>14}{'setup':>9}{'run peak':>10}{'planned':>9}{'ratio':>7}{'traced':>8}"
             f"{'lib':>7}{'own':>6}  probes"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"{r['model']:<22}{r['runner']:>14}  error: {r['error']}")
            continue
        lines.append(f"{r['model']:<22}{r['runner']:>14}{mb(r['after_setup_rss'] - r['baseline_rss']):>9}"
                     f"{mb(r['run_delta_bytes']):>10}{mb(r.get('planned_bytes')):>9}"
                     f"{fmt_ratio(r.get('ratio_to_planned')):>7}{mb(r.get('traced_run_peak_bytes')):>8}"
                     f"{mb(r.get('library_growth_bytes')):>7}{fmt_ratio(r.get('own_ratio_to_planned')):>6}"
                     f"  {probe_span(r)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("runner")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = ap.parse_args(argv)
    print(json.dumps(rss_probe(args.model, args.runner, args.threads, args.cache)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
