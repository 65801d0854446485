"""The gpu target's predictions against published measurements, from first principles.

    python -m benchmarks.calibration_gpu        # or: python benchmarks/calibration_gpu.py
    python -m benchmarks.calibration_gpu --out results.json

The calibration point is NVIDIA's NIM benchmark of Llama-3.3-70B-Instruct on 2x H100 SXM, FP8,
tensor parallel 2, one user (inter-token latency). The prediction uses only the spec sheet's
published numbers and efficiency factors; nothing is fitted to the point. The same parameters
give the prefill (time to first token), a smaller model on one GPU, and the MI300X sheet on the
same points. Published figures are read from the sheets' ``[calibration]`` tables.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._calibration import calibration_main
from hal.graph.load import load
from hal.graph.passes import optimize
from hal.plugins import get_target
from hal.specs import CompileOptions, CompileReport

RESULTS = Path(__file__).resolve().parent / "results" / "calibration_gpu.json"
MODEL = "llama-3.3-70b"
#: NIM's workload: 500 input tokens, 2,000 output tokens; mid-generation the cache holds ~1,500
DECODE = {"phase": "decode", "batch": 1, "context": 1500}
PREFILL = {"phase": "prefill", "batch": 1, "prompt": 500, "logits": "last"}
#: the same table's second workload: 5,000 input / 500 output tokens
DECODE_LONG = {"phase": "decode", "batch": 1, "context": 5250}
PREFILL_LONG = {"phase": "prefill", "batch": 1, "prompt": 5000, "logits": "last"}
SMALL = "llama-3.1-8b"
TOLERANCE = 0.15


def estimate(model: str, target: str, zoo: dict[str, Any], **options: Any) -> CompileReport:
    """Compile the shape-only zoo model for ``target`` and return its report."""
    graph = optimize(load(f"zoo:{model}", zoo_params=zoo))
    target_options = {k: v for k, v in options.items() if k not in ("precision", "devices")}
    opts = CompileOptions(precision=options.get("precision", "exact"), devices=options.get("devices"),
                          target_options=target_options)
    return get_target(target).compile(graph, opts).report


def _summary(r: CompileReport) -> dict[str, Any]:
    d = r.details
    return {
        "latency_ms": round(r.latency_s * 1e3, 3), "devices": r.devices, "kernels": r.kernel_count,
        "nodes": r.node_count, "tokens_per_s": round(r.tokens_per_s, 2) if r.tokens_per_s else None,
        "energy_j": round(r.energy_j, 3) if r.energy_j else None,
        "peak_hbm_gb_per_device": round(r.peak_memory_bytes / 1e9, 2),
        "weights_gb_per_device": round(d["weights_bytes_per_device"] / 1e9, 2),
        "hbm_traffic_gb_per_device": round(d["hbm_bytes_per_device"] / 1e9, 3),
        "launch_overhead_ms": round(d["launch_overhead_s"] * 1e3, 3),
        "allreduce_ms": round(d["allreduce_s"] * 1e3, 3), "allreduces": d["allreduce_count"],
        "fused_attention_kernels": d["fused_attention_kernels"],
        "time_by_bound_ms": {k: round(v * 1e3, 3) for k, v in d["time_by_bound_s"].items()},
    }


def _vs(predicted_s: float, published_s: float) -> dict[str, Any]:
    err = (predicted_s - published_s) / published_s
    return {"predicted_ms": round(predicted_s * 1e3, 3), "published_ms": round(published_s * 1e3, 3),
            "error_pct": round(100 * err, 1), "within_15pct": abs(err) <= TOLERANCE}


def run() -> dict[str, Any]:
    t0 = time.perf_counter()
    h100 = get_target("gpu").spec
    cal = h100.calibration
    itl, ttft = cal["nim_llama33_70b_fp8_tp2_itl"], cal["nim_llama33_70b_fp8_tp2_ttft"]
    small_ref = cal.get("nim_llama31_8b_itl")
    out: dict[str, Any] = {"generated_by": "benchmarks/calibration_gpu.py", "targets": {}}
    for target in ("gpu", "gpu-mi300x"):
        spec = get_target(target).spec
        decode = estimate(MODEL, target, DECODE, precision="fp8", devices=2)
        graphs = estimate(MODEL, target, DECODE, precision="fp8", devices=2, cuda_graphs=True)
        prefill = estimate(MODEL, target, PREFILL, precision="fp8", devices=2)
        small = estimate(SMALL, target, DECODE, precision="fp8", devices=1)
        small16 = estimate(SMALL, target, DECODE, precision="bf16", devices=1)
        entry: dict[str, Any] = {
            "gpu": spec.vendor,
            "decode_fp8_tp2": _summary(decode),
            "decode_fp8_tp2_cuda_graphs": _summary(graphs),
            "prefill_fp8_tp2_500_tokens": {**_summary(prefill), "ttft_ms": round(prefill.ttft_s * 1e3, 3)},
            "small_model_decode_fp8_1gpu": {"model": SMALL, **_summary(small)},
            "small_model_decode_bf16_1gpu": {"model": SMALL, **_summary(small16)},
        }
        if target == "gpu":
            entry["calibration"] = {
                "what": f"{MODEL} decode, batch 1, context {DECODE['context']}, fp8, tensor parallel 2",
                **_vs(decode.latency_s, itl["value"]), "source": itl["source"], "url": itl.get("url"),
                "setup": itl.get("setup")}
            entry["prefill_vs_published_ttft"] = {
                **_vs(prefill.latency_s, ttft["value"]), "source": ttft["source"],
                "note": "TTFT as a client measures it also holds request handling, scheduling and "
                        "sampling of the first token; the model is the prefill's GPU time only."}
            long_itl = cal.get("nim_llama33_70b_fp8_tp2_5000in_itl")
            long_ttft = cal.get("nim_llama33_70b_fp8_tp2_5000in_ttft")
            if long_itl and long_ttft:
                dl = estimate(MODEL, target, DECODE_LONG, precision="fp8", devices=2)
                pl = estimate(MODEL, target, PREFILL_LONG, precision="fp8", devices=2)
                entry["long_prompt_vs_published"] = {
                    "what": "5000 input / 500 output tokens: decode at context 5250, prefill of 5000 tokens",
                    "decode": _vs(dl.latency_s, long_itl["value"]), "prefill": _vs(pl.latency_s, long_ttft["value"]),
                    "source": long_itl["source"]}
            if small_ref:
                entry["small_model_vs_published"] = {**_vs(small.latency_s, small_ref["value"]),
                                                     "source": small_ref["source"], "note": small_ref.get("note")}
        out["targets"][target] = entry
    h, m = out["targets"]["gpu"], out["targets"]["gpu-mi300x"]
    out["mi300x_vs_h100"] = {
        key: round(m[key]["latency_ms"] / h[key]["latency_ms"], 3)
        for key in ("decode_fp8_tp2", "prefill_fp8_tp2_500_tokens", "small_model_decode_fp8_1gpu")}
    out["wall_s"] = round(time.perf_counter() - t0, 2)
    return out


def _print(res: dict[str, Any]) -> None:
    h = res["targets"]["gpu"]
    c = h["calibration"]
    print(f"calibration  {c['what']}")
    print(f"  predicted {c['predicted_ms']:.2f} ms   published {c['published_ms']:.2f} ms   "
          f"error {c['error_pct']:+.1f}%   {'within' if c['within_15pct'] else 'OUTSIDE'} ±15%")
    for target, e in res["targets"].items():
        d, g, p = e["decode_fp8_tp2"], e["decode_fp8_tp2_cuda_graphs"], e["prefill_fp8_tp2_500_tokens"]
        s, s16 = e["small_model_decode_fp8_1gpu"], e["small_model_decode_bf16_1gpu"]
        print(f"{target:11s} {e['gpu']}")
        print(f"  {MODEL} decode fp8 TP2   {d['latency_ms']:8.2f} ms  ({d['kernels']} kernels, launch "
              f"{d['launch_overhead_ms']:.2f} ms, all-reduce {d['allreduce_ms']:.2f} ms); cuda graphs "
              f"{g['latency_ms']:.2f} ms")
        print(f"  {MODEL} prefill 500 tok  {p['ttft_ms']:8.2f} ms")
        print(f"  {SMALL} decode 1 GPU      {s['latency_ms']:8.2f} ms fp8, {s16['latency_ms']:.2f} ms bf16")
    pv = h["prefill_vs_published_ttft"]
    print(f"prefill vs published TTFT: {pv['predicted_ms']:.2f} vs {pv['published_ms']:.2f} ms "
          f"({pv['error_pct']:+.1f}%)")
    if "long_prompt_vs_published" in h:
        lp = h["long_prompt_vs_published"]
        print(f"5000-token prompt: decode {lp['decode']['predicted_ms']:.2f} vs {lp['decode']['published_ms']:.2f} ms "
              f"({lp['decode']['error_pct']:+.1f}%), prefill {lp['prefill']['predicted_ms']:.1f} vs "
              f"{lp['prefill']['published_ms']:.1f} ms ({lp['prefill']['error_pct']:+.1f}%)")
    if "small_model_vs_published" in h:
        sv = h["small_model_vs_published"]
        print(f"{SMALL} vs published ITL (cross-check): {sv['predicted_ms']:.2f} vs {sv['published_ms']:.2f} ms "
              f"({sv['error_pct']:+.1f}%)")
    print("MI300X / H100 latency:", res["mi300x_vs_h100"])


def main(argv: list[str] | None = None) -> int:
    return calibration_main(__doc__, RESULTS, run, _print,
                            lambda res: res["targets"]["gpu"]["calibration"]["within_15pct"], argv)


if __name__ == "__main__":
    sys.exit(main())
