"""What a target's native precision costs on the host: each emulated target's run at
``precision="native"`` against the same target at ``"exact"``, and against native with the
compiled rounding switched off (the casts it replaced: numpy's float16, ml_dtypes' bfloat16,
``round_tf32``'s numpy passes), all in one process.

    python -m benchmarks.native                    # -> benchmarks/results/native.json
    python -m benchmarks.native --models tiny-gpt --targets lpu --samples 5

Native precision rounds every matrix operand to the target's format (the GPU's tf32, the LPU's fp16
with a power-of-two scale per tensor, the wafer's bf16; all three keep results in fp32, and the LPU
and wafer fuse the host steps between matrix ops as at exact). The three runs of a (model, target) are timed in alternating rounds over samples of
back-to-back runs, so drift falls on all three; the casts' run is the native session with
``hal.numerics``' compiled formats emptied for its calls. Recorded per row: the medians, native /
exact, casts / exact, casts / native, whether native's outputs equal the casts' bit for bit, and
how far native's outputs are from exact's (the accuracy cost the run shows a model team).
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


def measure(model_name: str, target: str, sample_s: float, samples: int) -> dict[str, Any]:
    import hal

    model = load_model(model_name, DEFAULT_CACHE)
    feeds = model.feeds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exact = hal.InferenceSession(model.source, target=target, precision="exact", fallback="allow")
        native = hal.InferenceSession(model.source, target=target, precision="native", fallback="allow")
    run_exact, run_native = (lambda: exact.run(None, feeds)), (lambda: native.run(None, feeds))
    run_casts = _with_casts(run_native)
    out_exact, out_native, out_casts = run_exact(), run_native(), run_casts()
    t_exact, t_native, t_casts = interleaved_medians([run_exact, run_native, run_casts], sample_s, samples)
    return {"model": model_name, "target": target, "exact_s": t_exact, "native_s": t_native, "casts_s": t_casts,
            "native/exact": t_native / t_exact, "casts/exact": t_casts / t_exact, "casts/native": t_casts / t_native,
            "native_equals_casts": _same_bits(out_native, out_casts),
            "native_max_abs_diff_vs_exact": _max_diff(out_native, out_exact)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.native", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--targets", default=None, help="default: every installed target but cpu (which has no native)")
    ap.add_argument("--sample-s", type=float, default=0.2, help="one sample's length (default 0.2 s)")
    ap.add_argument("--samples", type=int, default=9, help="timed samples per run kind (default 9)")
    ap.add_argument("--out", type=Path, default=RESULTS / "native.json")
    args = ap.parse_args(argv)
    limit_threads(1)
    import hal

    targets = args.targets.split(",") if args.targets else [s.name for s in hal.targets() if s.name != "cpu"]
    rows = []
    for m in args.models.split(","):
        for t in targets:
            try:
                r = measure(m, t, args.sample_s, args.samples)
            except Exception as e:  # a model that cannot be had here (bert-bench without torch): say so, go on
                rows.append({"model": m, "target": t, "error": f"{type(e).__name__}: {e}"[:300]})
                print(f"{m:<18} {t:<11} error: {rows[-1]['error']}", flush=True)
                continue
            rows.append(r)
            print(f"{m:<18} {t:<11} exact {r['exact_s'] * 1e3:9.3f} ms  native {r['native_s'] * 1e3:9.3f} ms "
                  f"({r['native/exact']:.2f}x)  with the casts {r['casts_s'] * 1e3:9.3f} ms "
                  f"({r['casts/exact']:.2f}x)  same bits: {r['native_equals_casts']}", flush=True)
    ok = [r for r in rows if "error" not in r]
    doc = {"schema": "hal-native/1", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(),
           "settings": {"sample_s": args.sample_s, "samples": args.samples, "threads": 1}, "rows": rows,
           "median_native/exact": float(np.median([r["native/exact"] for r in ok])) if ok else None,
           "median_casts/exact": float(np.median([r["casts/exact"] for r in ok])) if ok else None,
           "all_native_equal_casts": all(r["native_equals_casts"] for r in ok)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"median native/exact {doc['median_native/exact']:.2f}, with the casts {doc['median_casts/exact']:.2f}; "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
