"""What the compile cache saves: session creation with no cache vs with a warm cache, per model and target.

    python -m benchmarks.cache_bench                     # -> benchmarks/results/cache.json
    python -m benchmarks.cache_bench --reps 3 --models zoo:tiny-gpt --targets cpu,lpu

For each (model, target): the median over ``--reps`` of a whole ``InferenceSession(...)`` with the
cache off, and with a warm cache (``cache_dir`` holding the entry), interleaved so drift hits both;
plus the target's own compile time and the cache's load time (read, hash check, ``load(blob)``)
taken apart. After filling the cache, ``--settle`` cached sessions run untimed, so the cache's own
judgements (a doubtful hit re-timed, "not worth it" markers) are made before timing. A session hit
(a model given as a file, bytes or a zoo name) skips the frontend too:
loading, checking, shape inference, graph passes and placement; it reads the session's graph (its
weights described by shape and dtype where a program entry holds them: weights are stored and
hashed once) and each partition's program. Cold and warm sessions alternate which goes first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from benchmarks import pin_thread_env, target_names

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_MODELS = ("zoo:tiny-gpt", "zoo:tiny-cnn", "light:light_squeezenet", "light:light_resnet50", "zoo:llama-2-7b")


def _model_arg(name: str) -> str:
    if name.startswith("light:"):
        import onnx

        return str(Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"{name[6:]}.onnx")
    return name


def _outcome(s: Any) -> str:
    st = s.compile_cache.stats
    return ("session hit" if st.session_hits else "hit" if st.hits and not st.misses
            else "not worth it" if st.not_worth_it else "miss")


def measure(model: str, target: str, reps: int, settle: int = 7) -> dict[str, Any]:
    import hal
    from hal.cache import CompileCache
    from hal.graph.load import load
    from hal.graph.passes import optimize
    from hal.plugins import get_target
    from hal.specs import CompileOptions

    path = _model_arg(model)
    kw: dict[str, Any] = {"target": target, "fallback": "allow", "precision": "native" if target != "cpu" else "exact"}
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hal.InferenceSession(path, cache_dir=d, **kw)  # fill the cache (and warm imports)
        # the cache's own judgements (a doubtful hit re-timed, "not worth it" markers) settle first
        settling = [_outcome(hal.InferenceSession(path, cache_dir=d, **kw)) for _ in range(settle)]
        cold, warm = [], []
        outcomes = []
        for rep in range(reps):
            for cached in ((False, True) if rep % 2 == 0 else (True, False)):  # alternate: drift hits both
                t0 = time.perf_counter()
                s = hal.InferenceSession(path, cache_dir=d if cached else False, **kw)
                (warm if cached else cold).append(time.perf_counter() - t0)
                if cached:
                    outcomes.append(_outcome(s))
                del s
        parts = len(hal.InferenceSession(path, cache_dir=d, **kw)._parts)
        # the two steps a hit swaps, taken apart on the whole graph (one partition when nothing falls back)
        tgt = get_target(target)
        opts = CompileOptions(precision=kw["precision"])
        graph = optimize(load(path))
        compile_s, load_s = [], []
        cache = CompileCache(d)
        key = cache.key(graph, tgt, opts)
        exe = None
        for _ in range(reps):
            t0 = time.perf_counter()
            try:
                exe = tgt.compile(graph, opts)
            except hal.HalError:
                break
            compile_s.append(time.perf_counter() - t0)
        if exe is not None and compile_s:
            for _ in range(reps):  # stored afresh each time: the load below may leave a "not worth it" marker
                Path(cache.path(key)).unlink(missing_ok=True)
                cache.store(key, tgt, exe)
                t0 = time.perf_counter()
                assert cache.load(key, tgt) is not None
                load_s.append(time.perf_counter() - t0)
        entry = max((p.stat().st_size for p in Path(d).rglob("*.halc")), default=0)
    med_cold, med_warm = statistics.median(cold), statistics.median(warm)
    return {"model": model, "target": target, "precision": kw["precision"], "partitions": parts,
            "settling_sessions": settling,
            "warm_sessions": dict(sorted({o: outcomes.count(o) for o in outcomes}.items())),
            "session_no_cache_s": round(med_cold, 5), "session_warm_cache_s": round(med_warm, 5),
            "saving_s": round(med_cold - med_warm, 5), "saving_pct": round(100 * (1 - med_warm / med_cold), 1),
            "target_compile_s": round(statistics.median(compile_s), 5) if compile_s else None,
            "cache_load_s": round(statistics.median(load_s), 5) if load_s else None,
            "entry_bytes": entry}


def _line(r: dict[str, Any]) -> str:
    if "error" in r:
        return r["error"][:100]
    return (f"no cache {r['session_no_cache_s'] * 1e3:8.1f} ms  warm {r['session_warm_cache_s'] * 1e3:8.1f} ms  "
            f"saving {r['saving_pct']:5.1f}%  (compile {r['target_compile_s']} s, load {r['cache_load_s']} s) "
            f"{r['warm_sessions']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cache_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--targets", default=None, help="default: every installed target")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--settle", type=int, default=7, help="cached sessions run (untimed) before the timed ones")
    ap.add_argument("--out", default=str(RESULTS / "cache.json"))
    args = ap.parse_args(argv)
    pin_thread_env(1)
    import platform

    import hal
    from hal.files import atomic_write

    targets = target_names(args.targets)
    rows = []
    for m in args.models.split(","):
        for t in targets:
            try:
                rows.append(measure(m, t, args.reps, args.settle))
            except hal.HalError as e:
                rows.append({"model": m, "target": t, "error": str(e)[:300]})
            print(f"{m:24} {t:11} {_line(rows[-1])}", flush=True)
    doc = {"schema": "hal-cache-bench/1", "reps": args.reps, "settle": args.settle, "threads": 1,
           "python": platform.python_version(),
           "hal": hal.__version__, "note": "median wall time of a whole InferenceSession(...), cold "
           "(no cache) and warm runs alternating; a session hit skips the frontend (load, check, shape "
           "inference, passes, placement) and the target's compile, reading each weight once (from the "
           "program entry, or from the session entry where the program is compiled instead); a file's digest "
           "is remembered by its stat; a program hit skips the compile only; a session entry whose hits are "
           "slower than building it (CPU time; after one re-timed build, 3 slow hits in a row) is replaced by a "
           "'not worth it' marker, and such a session builds as without a cache", "results": rows}
    atomic_write(args.out, json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
