"""The GPU-machine half of the held-out check: kernels the cost model was not fitted to.

The gpu-h200 sheet's GEMM latency and misaligned-row rates were fitted to ``--steps sweep`` and
``alignment`` (a grid of GEMMs, ResNet-50's convs). This step times what ``calibration_gpu_holdout
prepare`` drew here instead, and writes it beside the shapes, so the report can say how well the
model predicts kernels it has never seen:

* GEMMs at seeded log-uniform shapes (one in four with a row off 16 bytes), and batched GEMMs,
  fp32 / tf32 / bf16, each replayed from a CUDA graph;
* fused attention (``scaled_dot_product_attention``, bf16 and fp16, without a mask and causal) at
  sequence lengths 128 to 8192, from CUDA graphs;
* every distinct conv of the eight light CNNs other than ResNet-50 through cuDNN (benchmark mode),
  fp32 and tf32, from CUDA graphs, with the names of the kernels cuDNN ran (CUPTI).

Like ``gpu_device.py`` it imports nothing from hal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.gpu_device import Run

#: torch dtype and TF32 switch of each measured format
FORMATS = {"fp32": ("float32", False), "tf32": ("float32", True), "bf16": ("bfloat16", False),
           "fp16": ("float16", False)}


def _helpers():
    """``gpu_device``'s timers, from the package here or as a sibling file on the GPU machine."""
    try:
        from benchmarks import gpu_device
    except ImportError:
        import gpu_device
    return gpu_device


def gemms(shapes: list[dict[str, Any]], formats: tuple[str, ...] = ("fp32", "tf32", "bf16")) -> list[dict[str, Any]]:
    """Each [batch] x [m, k] @ [k, n] GEMM of ``shapes`` in each format, from CUDA graphs."""
    import torch

    rows = []
    for fmt in formats:
        dtype, tf32 = FORMATS[fmt]
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for s in shapes:
            lead = (s["batch"],) if s["batch"] > 1 else ()
            a = torch.randn(*lead, s["m"], s["k"], device="cuda", dtype=getattr(torch, dtype))
            b = torch.randn(*lead, s["k"], s["n"], device="cuda", dtype=getattr(torch, dtype))
            c = torch.empty(*lead, s["m"], s["n"], device="cuda", dtype=getattr(torch, dtype))
            t = _helpers()._graph_time(lambda a=a, b=b, c=c: torch.matmul(a, b, out=c))
            rows.append({**s, "format": fmt, "seconds": t})
            del a, b, c
    torch.backends.cuda.matmul.allow_tf32 = False
    return rows


def attention(shapes: list[dict[str, Any]], formats: tuple[str, ...] = ("bf16", "fp16")) -> list[dict[str, Any]]:
    """``scaled_dot_product_attention`` at each [batch, heads, seq, head_dim], without a mask and
    causal, from CUDA graphs, and the kernels one eager call launches (which backend PyTorch chose)."""
    import torch
    import torch.nn.functional as F

    rows, calls = [], []
    for fmt in formats:
        dtype = getattr(torch, FORMATS[fmt][0])
        for s in shapes:
            q, k, v = (torch.randn(s["batch"], s["heads"], s["seq"], s["head_dim"], device="cuda", dtype=dtype)
                       for _ in range(3))
            for causal in (False, True):
                def call(q=q, k=k, v=v, c=causal):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=c)

                rows.append({**s, "format": fmt, "causal": causal, "seconds": _helpers()._graph_time(call)})
                calls.append(call)
    for row, ks in zip(rows, kernels_of(calls, "attention")):
        row["kernels"] = ks
    return rows


def convs(shapes: list[dict[str, Any]], run: Run) -> list[dict[str, Any]]:
    """Each conv through cuDNN (benchmark mode), fp32 and tf32, from CUDA graphs, and the kernels
    one eager call launches."""
    import torch

    torch.backends.cudnn.benchmark = True
    rows: list[dict[str, Any]] = []
    for fmt in ("fp32", "tf32"):
        torch.backends.cudnn.allow_tf32 = FORMATS[fmt][1]
        calls = []
        for cv in shapes:
            if run.left() < 20:
                break
            call = _helpers().conv_call(cv)
            rows.append({**cv, "format": fmt, "seconds": _helpers()._graph_time(call)})
            calls.append(call)
        names = kernels_of(calls, fmt)
        for row, ks in zip(rows[len(rows) - len(calls):], names):
            row["kernels"] = ks
    torch.backends.cudnn.allow_tf32 = False
    if len(rows) < 2 * len(shapes):
        run.data["errors"].append(f"convs: out of time after {len(rows)} of {2 * len(shapes)}")
    return rows


def kernels_of(calls: list, label: str) -> list[list[list[Any]]]:
    """The kernels each of ``calls`` launches (name, count, GPU seconds), from one CUPTI trace
    through torch's profiler: each call runs in a named range, and a kernel belongs to the range
    its launch on the host falls in (matched by the launch's correlation id)."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i, call in enumerate(calls):
            with record_function(f"holdout_call_{i}"):
                call()
            torch.cuda.synchronize()
    trace = Path("/tmp/gpu_device_scratch") / f"holdout_{label}.json"
    trace.parent.mkdir(exist_ok=True)
    prof.export_chrome_trace(str(trace))
    return attribute(json.loads(trace.read_text()).get("traceEvents", []), len(calls))


def attribute(events: list[dict[str, Any]], count: int) -> list[list[list[Any]]]:
    """Per named range ``holdout_call_<i>`` of a Chrome trace, the kernels launched inside it."""
    ranges = sorted((ev["ts"], ev["ts"] + ev.get("dur", 0), int(ev["name"].rsplit("_", 1)[1])) for ev in events
                    if ev.get("cat") == "user_annotation" and str(ev.get("name", "")).startswith("holdout_call_"))
    launch_ts = {ev["args"]["correlation"]: ev["ts"] for ev in events
                 if ev.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in ev.get("args", {})}
    out: list[dict[str, list[Any]]] = [{} for _ in range(count)]
    for ev in events:
        if ev.get("cat") != "kernel" or "dur" not in ev:
            continue
        ts = launch_ts.get(ev.get("args", {}).get("correlation"))
        owner = next((i for lo, hi, i in ranges if ts is not None and lo <= ts <= hi), None)
        if owner is not None:
            k = out[owner].setdefault(ev["name"][:120], [ev["name"][:120], 0, 0.0])
            k[1] += 1
            k[2] += float(ev["dur"]) * 1e-6
    return [sorted(d.values(), key=lambda r: -r[2]) for d in out]


def holdout(run: Run, folder: Path) -> None:
    """The three steps over ``folder/holdout.json``; each result lands in ``run.data`` as it comes."""
    import torch

    drawn = json.loads((folder / "holdout.json").read_text())
    run.data["holdout_drawn"] = {"seed": drawn["seed"], "cudnn": torch.backends.cudnn.version()}
    run.data["holdout_gemms"] = run.step("held-out GEMMs", lambda: gemms(drawn["gemms"]))
    run.data["holdout_attention"] = run.step("held-out attention", lambda: attention(drawn["attention"]))
    run.data["holdout_convs"] = run.step("held-out convs", lambda: convs(drawn["convs"], run))
