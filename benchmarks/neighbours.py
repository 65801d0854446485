"""What one run costs right after another runner's run, against right after its own: why the benchmark
times samples of back-to-back runs (``--sample-s``) rather than single runs between the others'.

    python -m benchmarks.neighbours                      # tiny-gpt -> benchmarks/results/neighbours.json
    python -m benchmarks.neighbours --model light_shufflenet --reps 50

For each runner: the median time per run of ``--loops`` back-to-back runs (what a sample of the
benchmark reads), and of one run after each other runner's run and after a pass over
``--flush-mb`` of memory (the data a run touches is back in DRAM); the cases interleave, so drift
hits them alike. Then the two ways of pairing ReferenceEvaluator with hal cpu: one run each, hal's
right after the reference's (``--sample-s 0``), and a sample of back-to-back runs each.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.models import load_model
from benchmarks.run import time_per_run
from benchmarks.runners import ORT, REF, limit_threads, make_runner

RESULTS = Path(__file__).resolve().parent / "results"


def neighbours(model_name: str, reps: int, loops: int, flush_mb: float, sample_s: float) -> dict[str, Any]:
    model = load_model(model_name)
    runners = [make_runner(n, model, 1) for n in ("hal:cpu", ORT, REF)]
    for r in runners:
        for _ in range(3):
            r.run()
    flush = np.ones(int(flush_mb * (1 << 18)), dtype=np.float32)
    back_to_back = f"{loops} back-to-back"
    befores: dict[str, Any] = {back_to_back: None, **{o.name: o.run for o in runners}, f"{flush_mb:g} MB pass": None}
    times: dict[str, dict[str, list[float]]] = {r.name: {b: [] for b in befores if b != r.name} for r in runners}
    for _ in range(reps):
        for r in runners:
            for before, run in befores.items():
                if before == r.name:
                    continue
                if before == back_to_back:
                    times[r.name][before].append(time_per_run(r, loops))
                    continue
                if run is None:
                    flush += 1
                else:
                    run()
                times[r.name][before].append(time_per_run(r, 1))
    cpu, ref = runners[0], runners[2]
    counts = {r.name: max(1, round(sample_s / np.median(times[r.name][back_to_back]))) for r in (cpu, ref)}
    single, sampled = [], []
    for _ in range(max(3, reps // 5)):
        t_ref = time_per_run(ref, 1)
        single.append(t_ref / time_per_run(cpu, 1))
        t_ref = time_per_run(ref, counts[REF])
        sampled.append(t_ref / time_per_run(cpu, counts["hal:cpu"]))
    return {"model": model_name, "reps": reps, "loops": loops, "flush_mb": flush_mb,
            "median_s_after": {n: {b: float(np.median(v)) for b, v in c.items()} for n, c in times.items()},
            "ref/hal_cpu": {"one_run_each": float(np.median(single)), "samples": float(np.median(sampled)),
                            "sample_s": sample_s, "loops": counts}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.neighbours", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny-gpt")
    ap.add_argument("--reps", type=int, default=200, help="timed runs per (runner, run before it)")
    ap.add_argument("--loops", type=int, default=20, help="runs in the back-to-back case (default 20)")
    ap.add_argument("--flush-mb", type=float, default=32.0, help="the memory pass, MB (default 32: this L3's size)")
    ap.add_argument("--sample-s", type=float, default=0.1, help="the samples' length for the paired Ref/cpu")
    ap.add_argument("--out", type=Path, default=RESULTS / "neighbours.json")
    args = ap.parse_args(argv)
    limit_threads(1)
    doc = neighbours(args.model, args.reps, args.loops, args.flush_mb, args.sample_s)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{doc['model']}: median ms per run, back to back or by what ran before it")
    for name, after in doc["median_s_after"].items():
        print(f"  {name:<12} " + ", ".join(f"{b if b.endswith('back') else 'after ' + b} {t * 1e3:.3f}"
                                           for b, t in after.items()))
    r = doc["ref/hal_cpu"]
    print(f"Ref/cpu: {r['one_run_each']:.2f} one run each (hal's after the reference's), "
          f"{r['samples']:.2f} with samples of {r['sample_s']:g} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
