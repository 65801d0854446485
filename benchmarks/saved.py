"""What onnxruntime saves, run by hal: each benchmark model as exported and as onnxruntime's
optimisers save it (``SessionOptions.optimized_model_filepath`` at ORT_ENABLE_EXTENDED: FusedConv,
FusedGemm, FusedMatMul, SkipLayerNormalization, Gelu, Reshape-Gemm-Reshape projections; and, for
the transformers, ``onnxruntime.transformers.optimizer.optimize_model``: Attention,
SkipLayerNormalization, BiasGelu / FastGelu) and as its quantizer saves it
(``onnxruntime.quantization.quantize_static`` in QDQ format: int8 activations, int8 weights per
output channel, calibrated on the model's own feed), timed on hal's cpu target against onnxruntime
running the same file, one thread each, interleaved, medians. hal's outputs are compared with
onnxruntime's and, where onnx's ReferenceEvaluator runs the form (standard ops only), with its. A
QDQ model requantises every result: a float sum that lands on the other side of a rounding tie, in
any runtime's order, moves a code by one, and six layers of requantisation spread that, so the QDQ
forms' errors measure how chaotic the quantized model is, not a runtime's arithmetic.

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
import logging
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
    forms["quantize_static QDQ"] = quantized(model, folder)
    return forms


def quantized(model: BenchModel, folder: Path) -> str:
    """The model as ``quantize_static`` saves it in QDQ format, calibrated on its own feed."""
    from onnxruntime import quantization

    class Calibration(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([dict(model.feeds)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    path = folder / f"{model.name}_qdq.onnx"
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # (its advice to pre-process the model first, once a model)
    try:
        quantization.quantize_static(model.source, path, Calibration(), quant_format=quantization.QuantFormat.QDQ,
                                     per_channel=True, activation_type=quantization.QuantType.QInt8,
                                     weight_type=quantization.QuantType.QInt8)
    finally:
        logger.setLevel(level)
    return str(path)


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


def _rel_err(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """The largest error of ``got``'s float outputs against ``want``'s, relative to that output's largest value."""
    return max((float(np.max(np.abs(g.astype(np.float64) - w)) / max(float(np.max(np.abs(w))), 1e-30))
                for g, w in zip(got, want, strict=True) if w.dtype.kind == "f"), default=0.0)


def reference_err(path: str, feeds: dict[str, np.ndarray], got: list[np.ndarray]) -> float | None:
    """hal's outputs ``got`` against onnx's ReferenceEvaluator's on the same file; None where the
    reference has no kernels for it (onnxruntime's contrib ops; Q/DQ before opset 19 in a model onnx's
    version converter cannot bring to 21, such as the IR-3 light models' quantized forms)."""
    import onnx
    from onnx import version_converter
    from onnx.reference import ReferenceEvaluator

    proto = onnx.load(path)
    if any(n.domain not in ("", "ai.onnx") for n in proto.graph.node):
        return None
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 19 and any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node):
        try:  # (onnx 1.23's reference implements them from opset 19 on)
            proto = version_converter.convert_version(proto, 21)
        except version_converter.ConvertError:
            return None
    return _rel_err(got, ReferenceEvaluator(proto).run(None, feeds))


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
        err, ref_err = _rel_err(got, want), reference_err(path, feeds, got)
        t_hal, t_ort = interleaved_medians([partial(sess.run, None, feeds), partial(osess.run, None, ort_feeds)],
                                           sample_s, samples)
        hal_exported = t_hal if form == "exported" else hal_exported
        rows.append({"model": model.name, "form": form, "contrib_ops": _contrib_ops(path),
                     "hal_cpu_ms": round(t_hal * 1e3, 3), "onnxruntime_ms": round(t_ort * 1e3, 3),
                     "hal_over_onnxruntime": round(t_hal / t_ort, 3),
                     "hal_over_hal_exported": round(t_hal / hal_exported, 3) if hal_exported else None,
                     "max_rel_err": err, "reference_max_rel_err": ref_err})
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
            for r in rows:
                if r["model"] == name:
                    print(f"{name:<20}{r['form']:<24}hal {r['hal_cpu_ms']:9.2f} ms  ort {r['onnxruntime_ms']:9.2f} ms  "
                          f"hal/ort {r['hal_over_onnxruntime']:5.2f}  vs exported {r['hal_over_hal_exported']:5.2f}  "
                          f"err {r['max_rel_err']:.1e}  vs onnx's reference {_err(r['reference_max_rel_err'])}",
                          flush=True)
    doc = {"schema": 1, "machine": machine_info(), "threads": threads, "samples": args.samples,
           "sample_s": args.sample_s, "rows": rows}
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"-> {args.out}\n")
    print("\n".join(markdown_table(doc)))
    return 0


def markdown_table(doc: dict[str, Any]) -> list[str]:
    """The rows of a ``saved.json`` as the table in ``benchmarks/README.md``."""
    lines = ["| model | form | hal cpu ms | onnxruntime ms | hal / ort | hal / hal on the exported form "
             "| max rel err vs ort | vs onnx's reference |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in doc["rows"]:
        lines.append(f"| {r['model']} | {r['form']} | {r['hal_cpu_ms']:.1f} | {r['onnxruntime_ms']:.1f} | "
                     f"{r['hal_over_onnxruntime']:.2f} | {r['hal_over_hal_exported']:.2f} | {r['max_rel_err']:.1e} | "
                     f"{_err(r['reference_max_rel_err'])} |")
    return lines


def _err(v: float | None) -> str:
    return "—" if v is None else f"{v:.1e}"


if __name__ == "__main__":
    sys.exit(main())
