"""What onnxruntime saves, run by hal: each benchmark model as exported and as onnxruntime's
optimisers save it (``SessionOptions.optimized_model_filepath`` at ORT_ENABLE_EXTENDED: FusedConv,
FusedGemm, FusedMatMul, SkipLayerNormalization, Gelu, Reshape-Gemm-Reshape projections; and, for
the transformers, ``onnxruntime.transformers.optimizer.optimize_model``: Attention,
SkipLayerNormalization, BiasGelu / FastGelu), timed on hal's cpu target against onnxruntime running
the same file, one thread each, interleaved, medians.

    python -m benchmarks.saved                      # -> benchmarks/results/saved.json
    python -m benchmarks.saved --models light_resnet50 --samples 3

For each (model, form): hal's median, onnxruntime's, their ratio, hal's time against its own on the
exported form (does a saved model run as fast as the one it came from), and hal's largest error
against onnxruntime relative to the output's largest value. Run with OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE unset, as the main benchmark.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import machine_info
from benchmarks.models import BenchModel, load_model
from benchmarks.runners import interleaved_medians, limit_threads

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_MODELS = ("light_resnet50", "light_inception_v2", "bert-bench", "gpt-bench")
#: the transformers optimizer's model type and the benchmark transformers' heads and width
TRANSFORMERS = {"bert-bench": "bert", "gpt-bench": "gpt2"}
HEADS, HIDDEN = 12, 384


def saved_forms(model: BenchModel, folder: Path) -> dict[str, str]:
    """The model's file as exported and as onnxruntime saves it, by form."""
    import onnxruntime as ort

    forms = {"exported": model.source}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(folder / f"{model.name}_extended.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(model.source, options, providers=["CPUExecutionProvider"])
    forms["ORT_ENABLE_EXTENDED"] = options.optimized_model_filepath
    if model.name in TRANSFORMERS:
        from onnxruntime.transformers.optimizer import optimize_model

        optimised = optimize_model(model.source, model_type=TRANSFORMERS[model.name], num_heads=HEADS,
                                   hidden_size=HIDDEN, opt_level=0)
        forms["transformers optimizer"] = str(folder / f"{model.name}_transformers.onnx")
        optimised.save_model_to_file(forms["transformers optimizer"])
    return forms


def _contrib_ops(path: str) -> list[str]:
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    return sorted({n.op_type for n in graph.node if n.domain not in ("", "ai.onnx")})


def _feeds(model: BenchModel, path: str, wanted: list[str]) -> dict[str, np.ndarray]:
    """The feeds a session of ``path`` asks for (``wanted``): the model's, and the exported model's
    defaults for the inputs a saved form still declares: onnxruntime saves an IR-3 light model's
    ``*_SHAPE`` inputs, whose defaults it dropped once nothing read them, and requires them fed
    (as hal does)."""
    from onnx import numpy_helper

    missing = [n for n in wanted if n not in model.feeds]
    defaults = {t.name: numpy_helper.to_array(t) for t in model.proto().graph.initializer if t.name in missing}
    return {n: model.feeds[n] if n in model.feeds else defaults[n] for n in wanted}


def bench_forms(model: BenchModel, forms: dict[str, str], sample_s: float, samples: int) -> list[dict[str, Any]]:
    import onnxruntime as ort

    import hal

    rows, hal_exported = [], None
    for form, path in forms.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sess = hal.InferenceSession(path, target="cpu", precision="exact", fallback="error")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        osess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feeds = _feeds(model, path, [i.name for i in sess.get_inputs()])
        ort_feeds = _feeds(model, path, [i.name for i in osess.get_inputs()])
        got, want = sess.run(None, feeds), osess.run(None, ort_feeds)
        err = max(float(np.max(np.abs(g.astype(np.float64) - w)) / max(float(np.max(np.abs(w))), 1e-30))
                  for g, w in zip(got, want, strict=True) if w.dtype.kind == "f")
        t_hal, t_ort = interleaved_medians([partial(sess.run, None, feeds), partial(osess.run, None, ort_feeds)],
                                           sample_s, samples)
        hal_exported = t_hal if form == "exported" else hal_exported
        rows.append({"model": model.name, "form": form, "contrib_ops": _contrib_ops(path),
                     "hal_cpu_ms": round(t_hal * 1e3, 3), "onnxruntime_ms": round(t_ort * 1e3, 3),
                     "hal_over_onnxruntime": round(t_hal / t_ort, 3),
                     "hal_over_hal_exported": round(t_hal / hal_exported, 3) if hal_exported else None,
                     "max_rel_err": err})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--sample-s", type=float, default=0.5)
    parser.add_argument("--out", default=str(RESULTS / "saved.json"))
    args = parser.parse_args(argv)
    threads = limit_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model = load_model(name)
            rows += bench_forms(model, saved_forms(model, Path(tmp)), args.sample_s, args.samples)
            for r in rows[-3:]:
                if r["model"] == name:
                    print(f"{name:<20}{r['form']:<24}hal {r['hal_cpu_ms']:9.2f} ms  ort {r['onnxruntime_ms']:9.2f} ms  "
                          f"hal/ort {r['hal_over_onnxruntime']:5.2f}  vs exported {r['hal_over_hal_exported']:5.2f}  "
                          f"err {r['max_rel_err']:.1e}", flush=True)
    doc = {"schema": 1, "machine": machine_info(), "threads": threads, "samples": args.samples,
           "sample_s": args.sample_s, "rows": rows}
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
