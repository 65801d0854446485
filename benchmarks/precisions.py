"""What a target's number formats cost on the host: each emulated target's run at a precision other
than exact (``native`` by default; ``--precisions all`` for every one it offers) against the same
target at ``"exact"``, and against that precision with the compiled rounding switched off (the casts
it replaced: numpy's float16, ml_dtypes' bfloat16 and float8, ``round_tf32``'s numpy passes, numpy's
int8 quantisation), all in one process.

    python -m benchmarks.precisions                     # -> benchmarks/results/precisions.json
    python -m benchmarks.precisions --models tiny-gpt --targets lpu --precisions all --samples 5

Native precision rounds every matrix operand to the target's format (the GPU's tf32, the LPU's fp16
with a power-of-two scale per tensor, the wafer's bf16; all three keep results in fp32 and fuse the
host steps between matrix ops as at exact); fp16 and bf16 also store results in
the format, fp8 and int8 quantise weights with a scale per output channel and activations with one
per tensor. The three runs of a row are timed in
alternating rounds over samples of back-to-back runs, so drift falls on all three; the casts' run is
the same session with ``hal.numerics``' compiled formats emptied for its calls. Recorded per row: the
medians, precision / exact, casts / exact, casts / precision, whether the precision's outputs equal
the casts' bit for bit, and how far they are from exact's (the accuracy cost a model team sees).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import machine_info
from benchmarks.models import DEFAULT_CACHE, load_model
from benchmarks.runners import interleaved_medians, limit_threads

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_MODELS = ("tiny-gpt", "light_squeezenet", "light_resnet50", "bert-bench")


def _with_casts(run: Callable[[], Any]) -> Callable[[], Any]:
    """``run`` with the compiled rounding off for its duration: every format takes its cast again."""
    from hal import numerics

    def casts() -> Any:
        formats, numerics._LOOP_FORMATS = numerics._LOOP_FORMATS, {}
        try:
            return run()
        finally:
            numerics._LOOP_FORMATS = formats

    return casts


def _same_bits(a: list[Any], b: list[Any]) -> bool:
    return all(np.array_equal(x, y, equal_nan=True) and x.dtype == y.dtype for x, y in zip(a, b))


def _max_diff(a: list[Any], b: list[Any]) -> float:
    worst = 0.0
    for x, y in zip(a, b):
        if x.dtype.kind == "f" and x.size:
            d = np.abs(x.astype(np.float64) - y.astype(np.float64))
            worst = max(worst, float(np.nanmax(d)) if not np.isnan(d).all() else 0.0)
    return worst


def measure(model_name: str, target: str, precision: str, sample_s: float, samples: int) -> dict[str, Any]:
    import hal

    model = load_model(model_name, DEFAULT_CACHE)
    feeds = model.feeds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exact = hal.InferenceSession(model.source, target=target, precision="exact", fallback="allow")
        other = hal.InferenceSession(model.source, target=target, precision=precision, fallback="allow")
    run_exact, run_other = (lambda: exact.run(None, feeds)), (lambda: other.run(None, feeds))
    run_casts = _with_casts(run_other)
    out_exact, out_other, out_casts = run_exact(), run_other(), run_casts()
    t_exact, t_other, t_casts = interleaved_medians([run_exact, run_other, run_casts], sample_s, samples)
    return {"model": model_name, "target": target, "precision": precision, "exact_s": t_exact,
            "precision_s": t_other, "casts_s": t_casts, "precision/exact": t_other / t_exact,
            "casts/exact": t_casts / t_exact, "casts/precision": t_casts / t_other,
            "equals_casts": _same_bits(out_other, out_casts), "max_abs_diff_vs_exact": _max_diff(out_other, out_exact)}


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    return float(np.median([r[key] for r in rows])) if rows else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.precisions", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--targets", default=None, help="default: every installed target but cpu (exact only)")
    ap.add_argument("--precisions", default="native",
                    help="comma-separated, or 'all': every precision but exact that each target offers")
    ap.add_argument("--sample-s", type=float, default=0.2, help="one sample's length (default 0.2 s)")
    ap.add_argument("--samples", type=int, default=9, help="timed samples per run kind (default 9)")
    ap.add_argument("--out", type=Path, default=RESULTS / "precisions.json")
    args = ap.parse_args(argv)
    limit_threads(1)
    import hal

    specs = {s.name: s for s in hal.targets()}
    targets = args.targets.split(",") if args.targets else [n for n in specs if n != "cpu"]
    rows = []
    for m in args.models.split(","):
        for t in targets:
            offered = [p for p in specs[t].precisions if p != "exact"] if t in specs else ["native"]
            for p in offered if args.precisions == "all" else args.precisions.split(","):
                try:
                    r = measure(m, t, p, args.sample_s, args.samples)
                except Exception as e:  # a model that cannot be had here (bert-bench without torch): say so, go on
                    rows.append({"model": m, "target": t, "precision": p, "error": f"{type(e).__name__}: {e}"[:300]})
                    print(f"{m:<18} {t:<11} {p:<7} error: {rows[-1]['error']}", flush=True)
                    continue
                rows.append(r)
                print(f"{m:<18} {t:<11} {p:<7} exact {r['exact_s'] * 1e3:9.3f} ms  {p} {r['precision_s'] * 1e3:9.3f} "
                      f"ms ({r['precision/exact']:.2f}x)  with the casts {r['casts_s'] * 1e3:9.3f} ms "
                      f"({r['casts/exact']:.2f}x)  same bits: {r['equals_casts']}", flush=True)
    ok = [r for r in rows if "error" not in r]
    native = [r for r in ok if r["precision"] == "native"]
    doc = {"schema": "hal-precisions/1", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(),
           "settings": {"sample_s": args.sample_s, "samples": args.samples, "threads": 1,
                        "precisions": args.precisions}, "rows": rows,
           "median_native/exact": _median(native, "precision/exact"),
           "median_native_casts/exact": _median(native, "casts/exact"),
           "all_equal_casts": all(r["equals_casts"] for r in ok)}
    from hal.files import atomic_write

    atomic_write(args.out, json.dumps(doc, indent=1) + "\n")
    failed = len(rows) - len(ok)
    print(f"{len(ok)} rows, all the same bits as the casts: {doc['all_equal_casts']}"
          + (f"; {failed} row(s) could not be measured (errors above)" if failed else "") + f"; wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
