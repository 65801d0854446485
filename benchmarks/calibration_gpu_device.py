"""The gpu target against a real H200: prepare what travels, then compare what came back.

    python -m benchmarks.calibration_gpu_device prepare DIR [--ort-wheel WHEEL]
    (on the GPU machine)  python benchmarks/gpu_device.py measure DIR OUT.json
    python -m benchmarks.calibration_gpu_device report OUT.json [...] [--out results.json]
    python -m benchmarks.calibration_gpu_device markdown [results.json]

``prepare`` writes what travels (``gpu_device_pack.py``: the models with their weights stripped
to shapes, their feeds, a manifest, and onnxruntime-gpu packed into the 64 MiB a call carries).
``report`` compiles the same models for the ``gpu-h200`` sheet and sets its predictions beside the
measurements; ``markdown`` prints the report as benchmarks/README.md shows it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import onnx

RESULTS = Path(__file__).resolve().parent / "results" / "calibration_gpu_device.json"
SHEET = "gpu-h200.toml"


# -- the report ---------------------------------------------------------------------------------------


def _target():
    from hal_gpu.compiler import GpuTarget

    from hal.specs import builtin_sheet

    return GpuTarget(builtin_sheet(SHEET))


def predict(target, proto: onnx.ModelProto, precision: str, cuda_graphs: bool):
    """The target's compile report for ``proto``."""
    from hal.graph.load import load
    from hal.graph.passes import optimize
    from hal.specs import CompileOptions

    graph = optimize(load(proto))
    opts = CompileOptions(precision=precision, target_options={"cuda_graphs": cuda_graphs})
    return target.compile(graph, opts).report


def _one_node(op: str, x: list[int], w: list[int], y: list[int | str], dtype: int, tail: str | None = None,
              **attrs: Any) -> onnx.ModelProto:
    """A one-node model whose weight ``w`` is shape-only (the cost model needs no values); with
    ``tail``, that one-input op reads the node's result (a GEMM whose result is the graph's output
    would be taken for a logits projection, which the fp8 policy keeps in 16-bit)."""
    from onnx import helper

    nodes = [helper.make_node(op, ["x", "w"], ["h" if tail else "y"], **attrs)]
    if tail:
        nodes.append(helper.make_node(tail, ["h"], ["y"]))
    g = helper.make_graph(nodes, op.lower(),
                          [helper.make_tensor_value_info("x", dtype, x), helper.make_tensor_value_info("w", dtype, w)],
                          [helper.make_tensor_value_info("y", dtype, y)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, {"hal.shape_only_weights": "w"})
    return model


def _span_s(kernel) -> float:
    """A predicted kernel's span on the GPU's timeline, to set beside a CUPTI kernel duration: its
    time in a CUDA graph, the node's time included (in a graph replay a tiny kernel takes about the
    node's 1.1 µs, and a GEMM about its measured duration: the node does not add to the kernel)."""
    assert not kernel.details.get("overhead_s") or kernel.details["overhead_s"] < 2e-6, "compile with cuda_graphs"
    return kernel.time_s


def _stats(measured: list[float], predicted: list[float]) -> dict[str, Any]:
    r = np.asarray(measured) / np.asarray(predicted)
    return {"points": int(r.size), "median_measured_over_predicted": round(float(np.median(r)), 3),
            "geomean": round(float(np.exp(np.mean(np.log(r)))), 3),
            "within_25pct": round(float(np.mean(np.abs(np.log(r)) <= np.log(1.25))), 3),
            "min": round(float(r.min()), 3), "max": round(float(r.max()), 3)}


#: the sheet's precision for each measured format
_PRECISION = {"fp32": "exact", "tf32": "tf32", "bf16": "exact"}


def gemm_sweep_report(target, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each measured GEMM against the predicted kernel, with and without the GEMM latency term.
    The measurement is a CUDA-graph replay, so the prediction is the kernel's graph-node time."""
    points = []
    for r in rows:
        dtype = onnx.TensorProto.BFLOAT16 if r["format"] == "bf16" else onnx.TensorProto.FLOAT
        model = _one_node("MatMul", [r["m"], r["k"]], [r["k"], r["n"]], [r["m"], r["n"]], dtype)
        k = predict(target, model, _PRECISION[r["format"]], True).kernels[0]
        points.append({**r, "predicted_s": k.time_s, "predicted_roofline_only_s": k.time_s - k.details["latency_s"],
                       "bound": k.bound})
    out: dict[str, Any] = {"points": points, "by_format": {}}
    for fmt in sorted({p["format"] for p in points}):
        grid = [p for p in points if p["format"] == fmt and p["n"] not in (50257, 50260)]
        meas = [p["seconds"] for p in grid]
        out["by_format"][fmt] = {
            "with_gemm_latency": _stats(meas, [p["predicted_s"] for p in grid]),
            "roofline_only": _stats(meas, [p["predicted_roofline_only_s"] for p in grid]),
            "large_over_20_gflop": _stats([p["seconds"] for p in grid if 2 * p["m"] * p["n"] * p["k"] > 2e10],
                                          [p["predicted_s"] for p in grid if 2 * p["m"] * p["n"] * p["k"] > 2e10])}
        pair = {p["n"]: p["seconds"] for p in points if p["format"] == fmt and p["n"] in (50257, 50260)}
        if len(pair) == 2:
            out["by_format"][fmt]["row_length_50257_over_50260"] = round(pair[50257] / pair[50260], 3)
    return out


def decode_sweep_report(target, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Llama-3.3-70B's GEMMs (one of two tensor-parallel GPUs; decode's or a prefill's rows) against
    the predicted kernel."""
    points = []
    for r in rows:
        model = _one_node("MatMul", [r["m"], r["k"]], [r["k"], r["n"]], [r["m"], r["n"]], onnx.TensorProto.BFLOAT16,
                          tail="Relu")
        k = predict(target, model, "exact" if r["format"] == "bf16" else r["format"], True).kernels[0]
        weight_bytes = r["n"] * r["k"] * (2 if r["format"] == "bf16" else 1)
        points.append({**r, "predicted_s": k.time_s, "bound": k.bound,
                       "measured_over_predicted": round(r["seconds"] / k.time_s, 3),
                       "weight_bytes_per_s": weight_bytes / r["seconds"]})
    by_format = {fmt: _stats([p["seconds"] for p in points if p["format"] == fmt],
                             [p["predicted_s"] for p in points if p["format"] == fmt])
                 for fmt in sorted({p["format"] for p in points})}
    return {"points": points, "by_format": by_format}


def _aligned(length: int, itemsize: int) -> int:
    """The smallest row length from ``length`` up that is a multiple of 16 bytes."""
    per = 16 // itemsize
    return -(-length // per) * per


def alignment_sweep_report(target, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Every GEMM of the alignment sweep against its prediction; those the model takes for
    misaligned (a row not a multiple of 16 bytes) also against the prediction for the same GEMM
    with its rows padded to 16 bytes, which is what the model said before it knew alignment."""
    points = []
    for r in rows:
        dtype = onnx.TensorProto.BFLOAT16 if r["format"] == "bf16" else onnx.TensorProto.FLOAT
        itemsize = 2 if r["format"] == "bf16" else 4

        def kernel(kk: int, nn: int, r=r, dtype=dtype):
            model = _one_node("MatMul", [r["m"], kk], [kk, nn], [r["m"], nn], dtype)
            return predict(target, model, _PRECISION[r["format"]], True).kernels[0]

        pred = kernel(r["k"], r["n"])
        point = {**r, "predicted_s": pred.time_s, "misaligned_rows": pred.details["misaligned_rows"]}
        if point["misaligned_rows"]:
            point["predicted_as_aligned_s"] = kernel(_aligned(r["k"], itemsize), _aligned(r["n"], itemsize)).time_s
        points.append(point)
    by_format = {}
    for fmt in sorted({p["format"] for p in points}):
        odd = [p for p in points if p["format"] == fmt and p["misaligned_rows"]]
        even = [p for p in points if p["format"] == fmt and not p["misaligned_rows"]]
        by_format[fmt] = {
            "misaligned": _stats([p["seconds"] for p in odd], [p["predicted_s"] for p in odd]),
            "misaligned_as_if_aligned": _stats([p["seconds"] for p in odd], [p["predicted_as_aligned_s"] for p in odd]),
            "aligned": _stats([p["seconds"] for p in even], [p["predicted_s"] for p in even])}
    return {"points": points, "by_format": by_format}


def conv_sweep_report(target, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each measured cuDNN conv against the predicted implicit-GEMM kernel, and ResNet-50's sum."""
    points = []
    for r in rows:
        n, _, h, w = r["x"]
        kh, kw = r["w"][2:]
        oh = (h + r["pads"][0] + r["pads"][2] - kh) // r["strides"][0] + 1
        ow = (w + r["pads"][1] + r["pads"][3] - kw) // r["strides"][1] + 1
        model = _one_node("Conv", r["x"], r["w"], [n, r["w"][0], oh, ow], onnx.TensorProto.FLOAT,
                          strides=r["strides"], pads=r["pads"], group=r["group"])
        k = predict(target, model, _PRECISION[r["format"]], True).kernels[0]
        points.append({**r, "predicted_s": k.time_s, "measured_over_predicted": round(r["seconds"] / k.time_s, 3),
                       "measured_flops_per_s": k.flops / r["seconds"]})
    return {"points": points, "resnet50_total": conv_totals(points)}


def conv_totals(points: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per format, the measured and the predicted time of ``points``' convs, each as often as its
    model runs it, and how many that is."""
    totals: dict[str, dict[str, Any]] = {}
    for p in points:
        t = totals.setdefault(p["format"], {"measured_s": 0.0, "predicted_s": 0.0, "convs": 0})
        t["measured_s"] += p["seconds"] * p["count"]
        t["predicted_s"] += p["predicted_s"] * p["count"]
        t["convs"] += p["count"]
    for t in totals.values():
        t["measured_over_predicted"] = round(t["measured_s"] / t["predicted_s"], 3)
    return totals


def model_report(target, name: str, m: dict[str, Any], prof: dict[str, Any] | None) -> dict[str, Any]:
    from benchmarks.models import load_model

    bm = load_model(name)
    proto = bm.proto()
    row: dict[str, Any] = {"kind": bm.kind}
    for config, precision, graphs in (("fp32", "exact", False), ("tf32", "tf32", False),
                                      ("fp32_cuda_graph", "exact", True)):
        r = predict(target, proto, precision, graphs)
        got = m.get(config) or {}
        row[config] = {"predicted_s": r.latency_s, "kernels": r.kernel_count,
                       "predicted_launch_overhead_s": r.details["launch_overhead_s"],
                       "measured_s": got.get("median_s"),
                       "measured_over_predicted": _ratio(got.get("median_s"), r.latency_s),
                       "ort_nodes": got.get("optimized_nodes"),
                       "max_err_vs_cpu": got.get("max_err_vs_cpu_rel_to_max"),
                       **({"error": got["error"]} if "error" in got else {})}
        if config == "fp32_cuda_graph" and prof:  # the profile is of fp32 runs; spans come from the graph build
            busy = sum(_span_s(k) for k in r.kernels)
            row["gpu_busy"] = {
                "measured_kernels_per_run": prof["kernels_per_run"], "predicted_kernels": r.kernel_count,
                "measured_s": prof["gpu_busy_per_run_s"], "predicted_s": busy,
                "measured_over_predicted": _ratio(prof["gpu_busy_per_run_s"], busy),
                "top_kernels": [{"name": n, "per_run": c, "seconds": s} for n, c, s in prof["by_kernel"][:6]]}
    return row


#: a measured kernel's class, by its name (cuBLAS/cuBLASLt/CUTLASS GEMMs, cuDNN/flash attention)
_GEMM_NAMES = re.compile(r"gemm|nvjet|cutlass|xmma|splitKreduce", re.I)
_ATTENTION_NAMES = re.compile(r"flash|fmha|sdpa_sm|attention_fwd", re.I)


def kernel_class(name: str) -> str:
    """``gemm``, ``attention`` or ``other`` for a kernel name from a CUPTI trace."""
    if name.startswith("kernel:triton_"):
        return "other"  # inductor's fused pointwise and reduction kernels, whatever ops they name
    if _ATTENTION_NAMES.search(name):
        return "attention"
    return "gemm" if _GEMM_NAMES.search(name) else "other"


def by_class(measured_rows: list[list[Any]], predicted_kernels) -> dict[str, Any]:
    """Kernels and GPU time per class, measured (CUPTI durations per run) against predicted spans."""
    out: dict[str, Any] = {}
    for name, count, seconds in measured_rows:
        c = out.setdefault(kernel_class(name), {"measured_kernels": 0.0, "measured_s": 0.0,
                                                "predicted_kernels": 0, "predicted_s": 0.0})
        c["measured_kernels"] += count
        c["measured_s"] += seconds
    for k in predicted_kernels:
        kind = k.details["kind"] if k.details["kind"] in ("gemm", "attention") else "other"
        c = out.setdefault(kind, {"measured_kernels": 0.0, "measured_s": 0.0, "predicted_kernels": 0,
                                  "predicted_s": 0.0})
        c["predicted_kernels"] += 1
        c["predicted_s"] += _span_s(k)
    for c in out.values():
        c["measured_per_kernel_s"] = c["measured_s"] / c["measured_kernels"] if c["measured_kernels"] else None
        c["predicted_per_kernel_s"] = c["predicted_s"] / c["predicted_kernels"] if c["predicted_kernels"] else None
    return out


def compiled_report(target, compiled: dict[str, Any]) -> dict[str, Any]:
    """The transformers as inductor compiled them (CUDA graphs) against the model's CUDA-graph
    prediction at the same precision: wall time per run, kernels, GPU busy time."""
    from benchmarks.models import load_model

    out: dict[str, Any] = {}
    for name, configs in compiled.items():
        proto = load_model(name).proto()
        for config, m in configs.items():
            r = predict(target, proto, "exact" if config == "fp32" else config, True)
            busy = sum(_span_s(k) for k in r.kernels)
            got = m.get("compiled_graph") or {}
            out.setdefault(name, {})[config] = {
                "predicted_s": r.latency_s, "predicted_busy_s": busy, "predicted_kernels": r.kernel_count,
                "eager_s": m.get("eager_s"), "eager_kernels_per_run": (m.get("eager") or {}).get("kernels_per_run"),
                "compiled_s": m.get("compiled_graph_s"), "compiled_kernels_per_run": got.get("kernels_per_run"),
                "compiled_busy_s": got.get("gpu_busy_per_run_s"),
                "compiled_over_predicted": _ratio(m.get("compiled_graph_s"), r.latency_s),
                "compiled_busy_over_predicted": _ratio(got.get("gpu_busy_per_run_s"), busy),
                "by_class": by_class(got.get("by_kernel", []), r.kernels),
                **({"error": m["error"]} if "error" in m else {})}
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def report(measured: dict[str, Any]) -> dict[str, Any]:
    from hal_gpu.hardware import Gpu

    target = _target()
    gpu = Gpu.from_spec(target.spec)
    out: dict[str, Any] = {"generated_by": "benchmarks/calibration_gpu_device.py", "sheet": SHEET,
                           "device": measured.get("device"), "onnxruntime": measured.get("onnxruntime"),
                           "errors": measured.get("errors", []), "factors": {}}
    st = measured.get("streaming") or {}
    if st:
        out["factors"]["hbm_efficiency"] = {
            "sheet": gpu.hbm_efficiency, "measured": {k: round(st[k]["bytes_per_s"] / gpu.hbm_bandwidth, 3)
                                                     for k in ("copy", "read", "write", "triad")},
            "peak_bytes_per_s": gpu.hbm_bandwidth}
        out["copy_sweep"] = st.get("copy_sweep")
    gm = (measured.get("gemm") or {}).get("square_8192", {})
    if gm:
        out["factors"]["gemm_efficiency"] = {
            "sheet": {"16-bit": gpu.gemm_efficiency, "fp8": gpu.gemm_efficiency_fp8},
            "measured_8192": {fmt: round(v["flops_per_s"] / gpu.peak[fmt], 3) for fmt, v in gm.items()
                              if "flops_per_s" in v},
            "note": "fp32 is the CUDA cores' SGEMM (the sheet's peak_flops_fp32), the others the tensor cores"}
    at = measured.get("attention") or {}
    if at:
        head_dim = next(iter(at.values()))["shape"][-1]
        out["factors"]["attention_efficiency"] = {
            "sheet": round(gpu.attention_efficiency(head_dim), 3), "head_dim": head_dim,
            "measured": {fmt: round(v["flops_per_s"] / gpu.peak[fmt], 3) for fmt, v in at.items()},
            "note": "PyTorch's scaled_dot_product_attention; the sheet's is FlashAttention-3's at this head dim"}
    ln = measured.get("launch") or {}
    if ln:
        out["factors"]["launch"] = {
            "sheet": {"launch_overhead_s": gpu.launch_overhead_s, "graph_node_overhead_s": gpu.graph_node_overhead_s,
                      "graph_launch_overhead_s": gpu.graph_launch_overhead_s},
            "measured": {k: v for k, v in ln.items() if k != "note"}, "note": ln.get("note"),
            "cuda_runtime_alone": measured.get("raw_launch")}
    if measured.get("gemm_sweep"):
        out["gemm_sweep"] = gemm_sweep_report(target, measured["gemm_sweep"])
        out["factors"]["gemm_latency_s"] = {"sheet": gpu.gemm_latency_s}
    if measured.get("alignment_sweep"):
        out["alignment_sweep"] = alignment_sweep_report(target, measured["alignment_sweep"])
    for phase in ("decode", "prefill"):
        if measured.get(f"{phase}_sweep"):
            out[f"{phase}_sweep"] = decode_sweep_report(target, measured[f"{phase}_sweep"])
    if measured.get("conv_sweep"):
        out["conv_sweep"] = conv_sweep_report(target, measured["conv_sweep"])
    if measured.get("compiled"):
        out["compiled"] = compiled_report(target, measured["compiled"])
    profiles = measured.get("profiles") or {}
    out["models"] = {name: model_report(target, name, m, profiles.get(name))
                     for name, m in (measured.get("models") or {}).items()}
    return out


def _print(res: dict[str, Any]) -> None:
    d = res.get("device") or {}
    print(f"device: {d.get('name')}  sheet: {res['sheet']}")
    for k, v in res["factors"].items():
        print(f"  {k}: {json.dumps(v)[:300]}")
    for fmt, v in (res.get("gemm_sweep") or {}).get("by_format", {}).items():
        w, r = v["with_gemm_latency"], v["roofline_only"]
        print(f"  GEMM sweep {fmt}: measured/predicted median {w['median_measured_over_predicted']} "
              f"(roofline alone {r['median_measured_over_predicted']}), within 25%: {w['within_25pct']} "
              f"({r['within_25pct']}), {w['points']} shapes")
    for fmt, v in (res.get("alignment_sweep") or {}).get("by_format", {}).items():
        now, before = v["misaligned"], v["misaligned_as_if_aligned"]
        print(f"  misaligned GEMMs {fmt}: measured/predicted median {now['median_measured_over_predicted']}"
              f" (as if aligned {before['median_measured_over_predicted']})")
    for phase in ("decode", "prefill"):
        for fmt, st in (res.get(f"{phase}_sweep") or {}).get("by_format", {}).items():
            print(f"  {phase} GEMMs {fmt}: measured/predicted median {st['median_measured_over_predicted']} "
                  f"({st['min']}-{st['max']}), {st['points']} GEMMs")
    for fmt, t in (res.get("conv_sweep") or {}).get("resnet50_total", {}).items():
        print(f"  ResNet-50 convs {fmt}: measured {t['measured_s'] * 1e3:.3f} ms, predicted "
              f"{t['predicted_s'] * 1e3:.3f} ms (x{t['measured_over_predicted']})")
    print(f"{'model':20s} {'config':16s} {'predicted ms':>12s} {'measured ms':>12s} {'meas/pred':>9s} "
          f"{'kernels':>7s} {'ort nodes':>9s}")
    for name, row in res["models"].items():
        for config in ("fp32", "tf32", "fp32_cuda_graph"):
            c = row[config]
            meas = f"{c['measured_s'] * 1e3:12.3f}" if c.get("measured_s") else f"{'-':>12s}"
            print(f"{name:20s} {config:16s} {c['predicted_s'] * 1e3:12.3f} {meas} "
                  f"{c['measured_over_predicted'] or '-':>9} {c['kernels']:7d} {c['ort_nodes'] or '-':>9}")
        if "gpu_busy" in row:
            b = row["gpu_busy"]
            print(f"{'':20s} {'GPU busy, fp32':16s} {b['predicted_s'] * 1e3:12.3f} {b['measured_s'] * 1e3:12.3f} "
                  f"{b['measured_over_predicted']:>9} {b['predicted_kernels']:7d} {b['measured_kernels_per_run']:9.0f}")


def _ms(s: float | None) -> str:
    return "—" if s is None else f"{s * 1e3:.3f}"


def markdown(res: dict[str, Any]) -> str:
    """The report's tables as benchmarks/README.md shows them."""
    f = res["factors"]
    lines = ["| factor | sheet | measured |", "|---|---|---|"]
    hbm = f.get("hbm_efficiency")
    if hbm:
        measured = ", ".join(f"{k} {v}" for k, v in hbm["measured"].items())
        lines.append(f"| `hbm_efficiency` | {hbm['sheet']} | {measured} |")
    ge = f.get("gemm_efficiency")
    if ge:
        lines.append(f"| `gemm_efficiency` (8192³) | {ge['sheet']['16-bit']} (fp8 {ge['sheet']['fp8']}) | "
                     + ", ".join(f"{k} {v}" for k, v in ge["measured_8192"].items()) + " |")
    at = f.get("attention_efficiency")
    if at:
        lines.append(f"| `attention_efficiency_hd{at['head_dim']}` | {at['sheet']} | "
                     + ", ".join(f"{k} {v}" for k, v in at["measured"].items()) + " (PyTorch SDPA) |")
    la = f.get("launch")
    if la:
        s, m = la["sheet"], la["measured"]
        lines.append(f"| `graph_node_overhead_s` | {s['graph_node_overhead_s'] * 1e6:.2f} µs | "
                     f"{m['graph_node_s'] * 1e6:.2f} µs |")
        lines.append(f"| `graph_launch_overhead_s` | {s['graph_launch_overhead_s'] * 1e6:.1f} µs | "
                     f"{m['graph_launch_host_s'] * 1e6:.1f} µs (host) |")
        raw = la.get("cuda_runtime_alone") or {}
        eager = (f"{raw['eager_back_to_back_s'] * 1e6:.1f} µs back to back with the CUDA runtime alone; "
                 if raw else "")
        lines.append(f"| `launch_overhead_s` | {s['launch_overhead_s'] * 1e6:.1f} µs | {eager}"
                     f"{m['eager_torch_launch_s'] * 1e6:.1f} µs through PyTorch |")
        if raw:
            lines.append(f"| (an empty kernel in a graph of 20,000) | | {raw['graph_node_s'] * 1e6:.2f} µs a node |")
    sweep = (res.get("gemm_sweep") or {}).get("by_format", {})
    if sweep:
        lines += ["", "| GEMM sweep | shapes | measured / predicted, median (geomean) | within ±25% | "
                  "roofline alone: median (within ±25%) | > 20 GFLOP: median | N 50257 / 50260 |",
                  "|---|---|---|---|---|---|---|"]
        for fmt, v in sweep.items():
            w, r, big = v["with_gemm_latency"], v["roofline_only"], v["large_over_20_gflop"]
            lines.append(f"| {fmt} | {w['points']} | {w['median_measured_over_predicted']} ({w['geomean']}) | "
                         f"{w['within_25pct']:.0%} | {r['median_measured_over_predicted']} ({r['within_25pct']:.0%}) | "
                         f"{big['median_measured_over_predicted']} | {v.get('row_length_50257_over_50260', '—')} |")
    align = res.get("alignment_sweep")
    if align:
        lines += ["", "| alignment sweep | GEMMs with a row off 16 bytes: measured / predicted, median (within ±25%) "
                  "| the same as if aligned | aligned GEMMs |", "|---|---|---|---|"]
        for fmt, v in align["by_format"].items():
            cells = [f"{st['median_measured_over_predicted']} ({st['within_25pct']:.0%}, {st['points']} GEMMs)"
                     for st in (v["misaligned"], v["misaligned_as_if_aligned"], v["aligned"])]
            lines.append(f"| {fmt} | " + " | ".join(cells) + " |")
    phases = [(p, res[f"{p}_sweep"]) for p in ("decode", "prefill") if res.get(f"{p}_sweep")]
    if phases:
        lines += ["", "| Llama-3.3-70B GEMMs (TP2 shard) | GEMMs | measured / predicted, median (min–max) | "
                  "weights streamed, TB/s | TFLOP/s |", "|---|---|---|---|---|"]
        for phase, sweep in phases:
            rows = sorted({p["m"] for p in sweep["points"]})
            for fmt, st in sweep["by_format"].items():
                sel = [p for p in sweep["points"] if p["format"] == fmt]
                rates = [p["weight_bytes_per_s"] / 1e12 for p in sel]
                flops = [2 * p["m"] * p["n"] * p["k"] / p["seconds"] / 1e12 for p in sel]
                lines.append(f"| {phase}, {rows[0]}–{rows[-1]} rows, {fmt} | {st['points']} | "
                             f"{st['median_measured_over_predicted']} ({st['min']}–{st['max']}) | "
                             f"{min(rates):.2f}–{max(rates):.2f} | {min(flops):.0f}–{max(flops):.0f} |")
    convs = (res.get("conv_sweep") or {}).get("resnet50_total", {})
    if convs:
        lines += ["", "| ResNet-50's 53 convs, batch 1 (cuDNN) | measured ms | predicted ms | measured / predicted |",
                  "|---|---|---|---|"]
        for fmt, t in convs.items():
            lines.append(f"| {fmt} | {_ms(t['measured_s'])} | {_ms(t['predicted_s'])} | "
                         f"{t['measured_over_predicted']} |")
    comp = res.get("compiled") or {}
    if comp:
        lines += ["", "| inductor + CUDA graphs | wall: measured / predicted ms | GPU busy: measured / predicted ms | "
                  "kernels: inductor (eager) / model |", "|---|---|---|---|"]
        for name, configs in comp.items():
            for config, c in configs.items():
                lines.append(f"| {name} {config} | {_ms(c['compiled_s'])} / {_ms(c['predicted_s'])} "
                             f"(x{c['compiled_over_predicted']}) | {_ms(c['compiled_busy_s'])} / "
                             f"{_ms(c['predicted_busy_s'])} (x{c['compiled_busy_over_predicted']}) | "
                             f"{c['compiled_kernels_per_run']:.0f} ({c['eager_kernels_per_run']:.0f}) / "
                             f"{c['predicted_kernels']} |")
    if comp:
        lines += ["", "| inductor kernels by class | GEMM: kernels, µs each (measured / predicted) | attention | "
                  "other (norms, pointwise, copies) |", "|---|---|---|---|"]
        for name, configs in comp.items():
            for config, c in configs.items():
                cells = []
                for cls in ("gemm", "attention", "other"):
                    v = c["by_class"].get(cls)
                    if not v:
                        cells.append("—")
                        continue
                    each = [f"{x * 1e6:.2f}" if x is not None else "—"
                            for x in (v["measured_per_kernel_s"], v["predicted_per_kernel_s"])]
                    cells.append(f"{v['measured_kernels']:.0f} / {v['predicted_kernels']}, {each[0]} / {each[1]}")
                lines.append(f"| {name} {config} | " + " | ".join(cells) + " |")
    lines += ["", "| model | fp32: measured / predicted ms | TF32 | fp32, CUDA graph | measured / predicted "
              "(fp32, TF32, graph) | kernels: ORT nodes / model | GPU busy, fp32: measured / predicted ms "
              "(kernels) |", "|---|---|---|---|---|---|---|"]
    for name, row in res["models"].items():
        a, b, c = row["fp32"], row["tf32"], row["fp32_cuda_graph"]
        busy = row.get("gpu_busy")
        busy_s = (f"{_ms(busy['measured_s'])} / {_ms(busy['predicted_s'])} "
                  f"({busy['measured_kernels_per_run']:.0f} / {busy['predicted_kernels']})" if busy else "—")
        lines.append(f"| {name} | {_ms(a['measured_s'])} / {_ms(a['predicted_s'])} | {_ms(b['measured_s'])} / "
                     f"{_ms(b['predicted_s'])} | {_ms(c['measured_s'])} / {_ms(c['predicted_s'])} | "
                     f"{a['measured_over_predicted']}, {b['measured_over_predicted']}, "
                     f"{c['measured_over_predicted']} | "
                     f"{a['ort_nodes']} / {a['kernels']} | {busy_s} |")
    return "\n".join(lines)


def merged(paths: list[Path]) -> dict[str, Any]:
    """The measurements of several ``gpu_device.py`` files as one: a later file's steps replace an
    earlier one's, and their errors add up."""
    measured: dict[str, Any] = {}
    for path in paths:
        part = json.loads(path.read_text())
        errors = measured.get("errors", []) + part.pop("errors", [])
        measured.update({k: v for k, v in part.items() if v is not None})
        measured["errors"] = errors
    return measured


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="write the stripped models (and packed onnxruntime) to carry")
    p.add_argument("folder", type=Path)
    p.add_argument("--ort-wheel", type=Path, help="an onnxruntime-gpu wheel (cp312, manylinux x86_64) to pack")
    r = sub.add_parser("report", help="compare measurements with the gpu-h200 sheet's predictions")
    r.add_argument("measured", type=Path, nargs="+", help="files gpu_device.py wrote; later ones add their steps")
    r.add_argument("--out", type=Path, default=RESULTS)
    md = sub.add_parser("markdown", help="print a report's tables as benchmarks/README.md shows them")
    md.add_argument("results", type=Path, nargs="?", default=RESULTS)
    args = ap.parse_args(argv)
    if args.cmd == "markdown":
        print(markdown(json.loads(args.results.read_text())))
        return 0
    if args.cmd == "prepare":
        from benchmarks.gpu_device_pack import pack_onnxruntime, prepare_models

        manifest = prepare_models(args.folder)
        print(f"{len(manifest['models'])} models written to {args.folder}")
        if args.ort_wheel:
            print(json.dumps(pack_onnxruntime(args.ort_wheel, args.folder / "onnxruntime.tar.xz")))
        return 0
    res = report(merged(args.measured))
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    _print(res)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
