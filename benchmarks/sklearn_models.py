"""scikit-learn models converted by skl2onnx, run by hal and onnxruntime: do the ai.onnx.ml kernels
give sklearn's answers, and how fast are they.

    pip install scikit-learn skl2onnx          # (the bench extra has them)
    python -m benchmarks.sklearn_models        # -> benchmarks/results/sklearn.json

Each model is fitted on a seeded synthetic dataset, converted at ai.onnx opset 17 / ai.onnx.ml 3
(probabilities as a tensor, no ZipMap, but for one pipeline that keeps it), and run on ``--rows``
held-out rows by hal cpu and onnxruntime's CPU provider, one thread each. Recorded per model: the ops,
the share of hal's labels equal to sklearn's ``predict`` and to onnxruntime's, the largest difference
of every score output from onnxruntime's, and the median time per run of each over samples of
back-to-back runs, the two taken in alternating rounds, with hal/ORT.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import machine_info
from benchmarks.runners import interleaved_medians, limit_threads

RESULTS = Path(__file__).resolve().parent / "results"


def _models() -> list[tuple[str, Any, str, bool]]:
    """(name, estimator, dataset, zipmap): every ai.onnx.ml op family hal runs, as sklearn users meet it."""
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MaxAbsScaler, Normalizer, StandardScaler
    from sklearn.svm import SVC, SVR
    from sklearn.tree import DecisionTreeClassifier

    return [
        ("random-forest-binary", RandomForestClassifier(20, max_depth=6, random_state=0), "binary", False),
        ("random-forest-3-class", RandomForestClassifier(20, max_depth=6, random_state=0), "multiclass", False),
        ("decision-tree-string-labels", DecisionTreeClassifier(max_depth=6, random_state=0), "strings", False),
        ("gradient-boosting-binary", GradientBoostingClassifier(n_estimators=20, random_state=0), "binary", False),
        ("gradient-boosting-3-class", GradientBoostingClassifier(n_estimators=20, random_state=0), "multiclass",
         False),
        ("random-forest-regressor", RandomForestRegressor(20, max_depth=6, random_state=0), "regression", False),
        ("gradient-boosting-regressor", GradientBoostingRegressor(n_estimators=20, random_state=0), "regression",
         False),
        ("logistic-regression-binary", LogisticRegression(), "binary", False),
        ("logistic-regression-3-class", LogisticRegression(), "multiclass", False),
        ("linear-regression", LinearRegression(), "regression", False),
        ("svc-rbf", SVC(random_state=0), "binary", False),
        ("svc-rbf-probabilities-3-class", SVC(probability=True, random_state=0), "multiclass", False),
        ("svr-rbf", SVR(), "regression", False),
        ("impute-scale-normalize-logistic", make_pipeline(SimpleImputer(), StandardScaler(), Normalizer(),
                                                          LogisticRegression()), "binary-nan", False),
        ("maxabs-random-forest-zipmap", make_pipeline(MaxAbsScaler(), RandomForestClassifier(10, max_depth=5,
                                                                                             random_state=0)),
         "multiclass", True),
    ]


def _data(kind: str, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train X, train y, held-out X) of a seeded synthetic dataset, float32 X."""
    from sklearn.datasets import make_classification, make_regression

    n = 400 + rows
    if kind == "regression":
        x, y = make_regression(n, 8, noise=0.5, random_state=0)
    else:
        x, y = make_classification(n, 8, n_informative=5, n_classes=3 if kind == "multiclass" else 2,
                                   random_state=0)
        if kind == "strings":
            y = np.array(["no", "yes"], dtype=object)[y]
        if kind == "binary-nan":
            x[np.random.default_rng(0).random(x.shape) < 0.1] = np.nan
    x = x.astype(np.float32)
    return x[:400], y[:400], x[400:]


def _max_diff(got: Any, want: Any) -> float | None:
    if isinstance(got, list):  # ZipMap: one map a row
        got = np.array([[m[k] for k in sorted(m)] for m in got])
        want = np.array([[m[k] for k in sorted(m)] for m in want])
    if not (isinstance(got, np.ndarray) and got.dtype.kind == "f"):
        return None
    return float(np.max(np.abs(got.astype(np.float64) - want))) if got.size else 0.0


def run_model(name: str, est: Any, kind: str, zipmap: bool, rows: int, sample_s: float, samples: int
              ) -> dict[str, Any]:
    import onnxruntime as ort
    from skl2onnx import to_onnx

    import hal

    x_train, y_train, x = _data(kind, rows)
    est.fit(x_train, y_train)
    classifier = kind != "regression"
    options = {id(est.steps[-1][1] if hasattr(est, "steps") else est): {"zipmap": zipmap}} if classifier else None
    onx = to_onnx(est, x_train[:1], options=options, target_opset={"": 17, "ai.onnx.ml": 3})
    feeds = {onx.graph.input[0].name: x}
    ours = hal.InferenceSession(onx, target="cpu")
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    theirs = ort.InferenceSession(onx.SerializeToString(), so, providers=["CPUExecutionProvider"])
    got, want = ours.run(None, feeds), theirs.run(None, feeds)
    row: dict[str, Any] = {"model": name, "ops": sorted({n.op_type for n in onx.graph.node}), "rows": rows}
    if classifier:
        labels = np.asarray(got[0]).reshape(-1)
        row["labels_equal_sklearn"] = float(np.mean(labels == est.predict(x)))
        row["labels_equal_onnxruntime"] = float(np.mean(labels == np.asarray(want[0]).reshape(-1)))
    else:
        row["max_abs_diff_sklearn"] = float(np.max(np.abs(got[0].reshape(-1) - est.predict(x))))
    diffs = {o.name: _max_diff(g, w) for o, g, w in zip(onx.graph.output, got, want)}
    row["max_abs_diff_onnxruntime"] = {name: d for name, d in diffs.items() if d is not None}
    row["hal_s"], row["onnxruntime_s"] = interleaved_medians(
        [lambda: ours.run(None, feeds), lambda: theirs.run(None, feeds)], sample_s, samples)
    row["hal/ort"] = row["hal_s"] / row["onnxruntime_s"]
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sklearn_models", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1000, help="held-out rows per run (default 1000)")
    ap.add_argument("--sample-s", type=float, default=0.1, help="one sample's length (default 0.1 s)")
    ap.add_argument("--samples", type=int, default=21, help="timed samples per runner (default 21)")
    ap.add_argument("--out", type=Path, default=RESULTS / "sklearn.json")
    args = ap.parse_args(argv)
    try:
        import skl2onnx
        import sklearn
    except ImportError as e:
        print(f"needs scikit-learn and skl2onnx: pip install scikit-learn skl2onnx ({e})", file=sys.stderr)
        return 2
    limit_threads(1)
    warnings.simplefilter("ignore")
    rows = []
    for name, est, kind, zipmap in _models():
        rows.append(run_model(name, est, kind, zipmap, args.rows, args.sample_s, args.samples))
        r = rows[-1]
        agree = (f"labels = sklearn {r['labels_equal_sklearn']:.3f}, = ORT {r['labels_equal_onnxruntime']:.3f}"
                 if "labels_equal_sklearn" in r else f"|hal - sklearn| <= {r['max_abs_diff_sklearn']:.2g}")
        worst = max(r["max_abs_diff_onnxruntime"].values(), default=0.0)
        print(f"{name:<34} {agree}; scores |hal - ORT| <= {worst:.2g}; hal/ORT {r['hal/ort']:.2f} "
              f"({r['hal_s'] * 1e3:.2f} / {r['onnxruntime_s'] * 1e3:.2f} ms)")
    doc = {"schema": "hal-sklearn/1", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(),
           "versions": {"scikit-learn": sklearn.__version__, "skl2onnx": skl2onnx.__version__},
           "settings": {"rows": args.rows, "sample_s": args.sample_s, "samples": args.samples, "threads": 1},
           "models": rows,
           "median_hal/ort": float(np.median([r["hal/ort"] for r in rows]))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"median hal/ORT {doc['median_hal/ort']:.2f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
