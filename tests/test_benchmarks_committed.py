"""The calibration reports committed under benchmarks/results/ are what the code computes today.

A report is the spec sheets' predictions set beside published or measured figures; a change to a
cost model or a sheet that is not followed by regenerating the report leaves numbers in the READMEs
that no code computes (it happened once: calibration_gpu_device.json predated a change to the
masked-attention schedule). Each report is computed again here and compared with the committed
file, all but the seconds its own run took. The held-out H200 reports have their own check in
test_benchmarks_gpu_holdout.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from benchmarks import calibration_gpu, calibration_gpu_device, calibration_lpu, calibration_wafer
from benchmarks.models import BENCH_FILES

#: what a report says about its own run, not about the hardware: wall-clock seconds
_RUN_TIMES = {"compile_s", "elapsed_s", "wall_s"}


def _without_run_times(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _without_run_times(v) for k, v in doc.items() if k not in _RUN_TIMES}
    if isinstance(doc, list):
        return [_without_run_times(v) for v in doc]
    return doc


def _as_committed(res: dict[str, Any]) -> Any:
    return _without_run_times(json.loads(json.dumps(res)))


@pytest.mark.parametrize("module", [calibration_gpu, calibration_lpu, calibration_wafer],
                         ids=["gpu", "lpu", "wafer"])
def test_committed_calibration_is_the_code_s_own_output(module):
    committed = _without_run_times(json.loads(module.RESULTS.read_text()))
    assert _as_committed(module.run()) == committed, (
        f"{module.RESULTS.name} is stale: regenerate it with python -m {module.__name__}")


def _without_bench_models(doc: dict[str, Any]) -> dict[str, Any]:
    """The report without the two exported transformers: they need torch to export (benchmarks/.models),
    which CI does not install."""
    doc = dict(doc)
    for key in ("models", "compiled", "profiles"):
        if isinstance(doc.get(key), dict):
            doc[key] = {k: v for k, v in doc[key].items() if k not in BENCH_FILES}
            if not doc[key]:  # as the report leaves out a step with nothing measured
                del doc[key]
    return doc


def test_committed_h200_report_is_the_report_of_the_committed_measurements():
    measured = calibration_gpu_device.merged(sorted(calibration_gpu_device.RESULTS.parent.glob("device_h200/*.json")))
    assert set(BENCH_FILES) <= set(measured["models"])  # what is left out below was measured
    again = calibration_gpu_device.report(_without_bench_models(measured))
    committed = json.loads(calibration_gpu_device.RESULTS.read_text())
    assert _as_committed(again) == _without_run_times(_without_bench_models(committed)), (
        "calibration_gpu_device.json is stale: regenerate it with python -m benchmarks.calibration_gpu_device "
        "report benchmarks/results/device_h200/*.json")


def test_the_readme_s_scikit_learn_figures_are_the_committed_run_s():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "benchmarks"
    doc = json.loads((root / "results" / "sklearn.json").read_text())
    text = " ".join((root / "README.md").read_text().split())
    models = doc["models"]
    assert f"{doc['median_hal/ort']:.2f} over all {len(models)}" in text
    assert all(r.get("labels_equal_sklearn", 1.0) == r.get("labels_equal_onnxruntime", 1.0) == 1.0 for r in models)
    assert f"every label hal gave equals scikit-learn's `predict` and onnxruntime's, on all {len(models)}" in text
    classifiers = [r for r in models if "labels_equal_sklearn" in r]
    probabilities = max(v for r in classifiers for v in r["max_abs_diff_onnxruntime"].values())
    assert f"class probabilities are within {probabilities:.2g} of onnxruntime's" in text
    for kind, ops in (("tree ensembles", ("TreeEnsembleClassifier", "TreeEnsembleRegressor")),
                      ("SVMs", ("SVMClassifier", "SVMRegressor"))):
        ratios = sorted(r["hal/ort"] for r in models if set(ops) & set(r["ops"]) and "ZipMap" not in r["ops"]
                        and r["model"] != "decision-tree-string-labels")
        assert f"{ratios[0]:.2f}-{ratios[-1]:.2f} on the {kind}" in text


def test_the_readme_s_number_format_figures_are_the_committed_run_s():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "benchmarks"
    doc = json.loads((root / "results" / "precisions.json").read_text())
    text = " ".join((root / "README.md").read_text().split())
    rows = [r for r in doc["rows"] if "error" not in r]
    assert rows and doc["all_equal_casts"] and all(r["equals_casts"] for r in rows)
    assert f"bit for bit in all {len(rows)} rows" in text

    def span(key, keep):
        v = sorted(r[key] for r in rows if keep(r))
        return f"{v[0]:.2f}-{v[-1]:.2f}"

    def big(r):
        return r["model"] != "tiny-gpt"

    native = lambda r: r["precision"] == "native"  # noqa: E731
    fp8 = lambda r: r["precision"] == "fp8"  # noqa: E731
    assert f"native/exact is {span('precision/exact', lambda r: big(r) and native(r))}, where the casts made it " \
           f"{span('casts/exact', lambda r: big(r) and native(r))}" in text
    rest = lambda r: big(r) and not native(r) and not fp8(r)  # noqa: E731
    assert f"the other precisions but fp8 {span('precision/exact', rest)}, where the casts " \
           f"made them {span('casts/exact', rest)}" in text
    worst = max((r for r in rows if rest(r)), key=lambda r: r["casts/exact"])
    owner = {"gpu": "the GPU's", "lpu": "the LPU's", "wafer": "the wafer's"}[worst["target"]]
    assert f"(the worst row, {owner} {worst['precision']} on {worst['model']}: {worst['precision/exact']:.2f} " \
           f"against {worst['casts/exact']:.2f})" in text
    by = {(r["model"], r["target"], r["precision"]): r for r in rows}
    cnn = [by[m, "gpu", "fp8"]["precision/exact"] for m in ("light_squeezenet", "light_resnet50")]
    bert8, tiny8 = by["bert-bench", "gpu", "fp8"], by["tiny-gpt", "gpu", "fp8"]
    assert f"{cnn[0]:.2f} and {cnn[1]:.2f} on the two CNNs" in text
    assert f"{bert8['precision/exact']:.1f} on bert-bench ({bert8['precision_s']:.2f} s a run) and " \
           f"{tiny8['precision/exact']:.1f} on tiny-gpt" in text
    tiny = [r for r in rows if not big(r)]
    assert f"native costs {span('precision/exact', lambda r: not big(r) and native(r))} and the rest but fp8 up to " \
           f"{max(r['precision/exact'] for r in tiny if not fp8(r)):.2f}" in text
    assert f"({by['tiny-gpt', 'gpu', 'native']['exact_s'] * 1e3:.3f} ms a run)" in text
    bert = {(r["target"], r["precision"]): r["max_abs_diff_vs_exact"] for r in rows if r["model"] == "bert-bench"}
    assert f"{bert['gpu', 'native']:.4f} at the GPU's native tf32, {bert['lpu', 'native']:.4f} at the LPU's" in text
    assert f"{bert['wafer', 'native']:.3f} at the wafer's bf16 operands" in text
    assert f"{bert['gpu', 'bf16']:.3f}-{bert['wafer', 'bf16']:.3f} with bf16 storage" in text
    assert f"{bert['gpu', 'int8']:.2f}-{bert['lpu', 'int8']:.2f} at int8 and {bert['gpu', 'fp8']:.2f} at fp8" in text


def test_the_readme_s_differential_figures_are_the_committed_run_s():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "benchmarks"
    doc = json.loads((root / "results" / "differential.json").read_text())
    text = " ".join((root / "README.md").read_text().split())
    v = doc["verdicts"]
    assert not doc["findings"] and "finding" not in v
    assert (f"The committed run ({doc['settings']['cases']:,} cases, {len(doc['settings']['targets'])} targets"
            .replace(" 6 targets", " six targets")) in text
    assert f"{v['agree']:,} runs agree with onnxruntime, {v['follows_onnx']:,} follow onnx" in text
    assert f"{v['unpeered']:,} unpeered, {v.get('refused', 0):,} refused, no finding" in text
    assert f"small models of {len(doc['settings']['families'])} families" in text
