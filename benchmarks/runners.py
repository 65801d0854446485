"""The benchmark's runners: hal targets, onnxruntime and onnx's ReferenceEvaluator behind one
zero-argument ``run``, with the thread pools pinned the same for all of them."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks import pin_thread_env
from benchmarks.models import BenchModel

ORT = "onnxruntime"
REF = "reference"


def limit_threads(threads: int) -> dict[str, Any]:
    """Pin BLAS/OpenMP pools to ``threads`` now (threadpoolctl) and report what the libraries say."""
    pin_thread_env(threads)
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return {"threadpoolctl": None, "note": "threadpoolctl not installed: only the environment pins threads"}
    threadpool_limits(limits=threads)
    pools = [{k: p.get(k) for k in ("user_api", "internal_api", "prefix", "version", "num_threads",
                                     "architecture", "threading_layer")} for p in threadpool_info()]
    return {"threadpoolctl": "ok", "pools": pools,
            "all_pinned": all(p["num_threads"] == threads for p in pools)}


@dataclass
class Runner:
    """One way of running a model: a name, a zero-argument run, and what setting it up cost."""

    name: str
    run: Callable[[], list[np.ndarray]]
    setup_s: float
    info: dict[str, Any] = field(default_factory=dict)


def make_runner(name: str, model: BenchModel, threads: int) -> Runner:
    feeds = model.feeds
    t0 = time.perf_counter()
    if name.startswith("hal:"):
        import hal

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sess = hal.InferenceSession(model.source, target=name[4:], precision="exact", fallback="allow")
        d = sess.report.details
        info = {"fallback_nodes": d.get("fallback_nodes", 0), "partitions": d.get("partitions", 1),
                "nodes": sess.report.node_count, "weights_bytes": d.get("weights_bytes"),
                "peak_activation_bytes": d.get("peak_activation_bytes")}
        return Runner(name, lambda: sess.run(None, feeds), time.perf_counter() - t0, info)
    if name == ORT:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3  # the light zoo's unused initializers make it warn on every load
        src: Any = model.source if not model.source.startswith("zoo:") else model.proto().SerializeToString()
        osess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
        return Runner(name, lambda: osess.run(None, feeds), time.perf_counter() - t0)
    if name == REF:
        from onnx.reference import ReferenceEvaluator

        ref = ReferenceEvaluator(model.proto())
        return Runner(name, lambda: ref.run(None, feeds), time.perf_counter() - t0)
    raise ValueError(f"unknown runner {name!r}")


def interleaved_medians(fns: list[Callable[[], Any]], sample_s: float, samples: int) -> list[float]:
    """Median seconds per call of each of ``fns`` over samples of back-to-back calls lasting ``sample_s``,
    taken in alternating rounds, so a slow minute of the machine falls on all of them alike."""
    loops = []
    for fn in fns:
        fn()
        t0 = time.perf_counter()
        fn()
        loops.append(max(1, int(sample_s / max(time.perf_counter() - t0, 1e-6))))
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(samples):
        for fn, n, out in zip(fns, loops, times):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            out.append((time.perf_counter() - t0) / n)
    return [float(np.median(ts)) for ts in times]
