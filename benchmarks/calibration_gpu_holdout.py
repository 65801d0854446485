"""The gpu-h200 sheet against kernels it was not fitted to: draw them, then compare.

    python -m benchmarks.calibration_gpu_holdout prepare DIR
    (on the GPU machine)  python3 benchmarks/gpu_device.py measure DIR OUT.json --steps holdout
    python -m benchmarks.calibration_gpu_holdout report OUT.json [--out results.json]
    python -m benchmarks.calibration_gpu_holdout markdown [results.json]

The sheet's GEMM latency and misaligned-row rates were fitted to one grid of GEMMs and to
ResNet-50's convs (``calibration_gpu_device``). ``prepare`` draws a fresh sample from a fixed
seed — GEMMs at log-uniform shapes (one in four with a row off 16 bytes), batched GEMMs, fused
attention from 128 to 8192 tokens, and every distinct conv of the eight light CNNs other than
ResNet-50 — and ``report`` sets the sheet's prediction beside each measured kernel.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import onnx
from onnx import helper

from benchmarks.calibration_gpu_device import (
    _PRECISION,
    _one_node,
    _stats,
    _target,
    conv_sweep_report,
    conv_totals,
    predict,
)

RESULTS = Path(__file__).resolve().parent / "results" / "calibration_gpu_holdout.json"
SEED = 20261130
#: the CNNs whose convs are held out (ResNet-50's were the fit)
CNNS = ("light_bvlc_alexnet", "light_densenet121", "light_inception_v1", "light_inception_v2",
        "light_shufflenet", "light_squeezenet", "light_vgg19", "light_zfnet512")
#: (batch, heads, sequence, head dim) of the attention sample: BERT-base to long-context shapes
ATTENTION = ((1, 12, 128, 64), (4, 12, 128, 64), (8, 16, 256, 64), (16, 12, 512, 64), (4, 16, 512, 64),
             (2, 32, 1024, 128), (1, 40, 1024, 128), (4, 8, 2048, 64), (1, 32, 2048, 128), (1, 32, 4096, 128),
             (2, 16, 8192, 64), (1, 8, 8192, 128))
#: the largest GEMM drawn, in FLOPs (bigger draws lose rows): keeps fp32 under ~5 ms a kernel
MAX_FLOPS = 2e11


# -- the draw -----------------------------------------------------------------------------------------


def draw_gemms(seed: int = SEED, plain: int = 40, batched: int = 12) -> list[dict[str, Any]]:
    """GEMM shapes from ``seed``: M log-uniform in 1..8192 and N, K in 64..16384, rounded to
    multiples of 8 (every fourth with N or K one more: a row off 16 bytes in every format), then
    batched ones (batch 2..128, each dimension 32..1024)."""
    rng = np.random.default_rng(seed)

    def logu(lo: float, hi: float) -> int:
        return round(math.exp(rng.uniform(math.log(lo), math.log(hi))))

    def up8(v: int) -> int:
        return -(-v // 8) * 8

    out = []
    for i in range(plain + batched):
        if i < plain:
            batch, m, n, k = 1, logu(1, 8192), up8(logu(64, 16384)), up8(logu(64, 16384))
            if i % 4 == 3:
                n, k = (n + 1, k) if i % 8 == 3 else (n, k + 1)
        else:
            batch, m, n, k = logu(2, 128), up8(logu(32, 1024)), up8(logu(32, 1024)), up8(logu(32, 1024))
        while 2.0 * batch * m * n * k > MAX_FLOPS and m > 1:
            m = max(1, m // 2)
        out.append({"batch": batch, "m": m, "n": n, "k": k})
    return out


def draw_attention(seed: int, count: int = 16, head_dims: tuple[int, ...] = (64, 80, 96, 128)) -> list[dict[str, Any]]:
    """Attention shapes from ``seed``: sequence log-uniform in 128..8192 (a multiple of 64), a head
    dim from ``head_dims``, and as many batch x heads as keep the kernel between ~10 µs and ~2 ms."""
    rng = np.random.default_rng(seed + 1)
    out = []
    for _ in range(count):
        seq = round(math.exp(rng.uniform(math.log(128), math.log(8192))) / 64) * 64
        head_dim = int(rng.choice(list(head_dims)))
        rows = int(math.exp(rng.uniform(math.log(2e8), math.log(4e11))) // (4 * seq * seq * head_dim)) or 1
        heads = int(rng.choice([8, 12, 16, 32]))
        out.append({"batch": max(1, rows // heads), "heads": heads, "seq": seq, "head_dim": head_dim})
    return out


def prepare(folder: Path, seed: int | None = None, head_dims: tuple[int, ...] = (64, 80, 96, 128)
            ) -> dict[str, Any]:
    """Write ``folder/holdout.json``. Without ``seed``, the first held-out sample: GEMMs from
    ``SEED``, the ``ATTENTION`` shapes and every distinct conv of ``CNNS``. With one, a fresh
    sample to test what the first one changed: GEMMs and attention drawn from ``seed``, and the
    convs of ResNet-50 and VGG-19 at batch 8, where cuDNN picks larger tiles than at batch 1."""
    from benchmarks.gpu_device_pack import conv_shapes

    folder.mkdir(parents=True, exist_ok=True)
    if seed is None:
        drawn = {"seed": SEED, "gemms": draw_gemms(),
                 "attention": [dict(zip(("batch", "heads", "seq", "head_dim"), a)) for a in ATTENTION],
                 "convs": [c for name in CNNS for c in conv_shapes(name)]}
    else:
        convs = [c for name in ("light_resnet50", "light_vgg19") for c in conv_shapes(name)]
        drawn = {"seed": seed, "gemms": draw_gemms(seed), "attention": draw_attention(seed, head_dims=head_dims),
                 "convs": [{**c, "x": [8, *c["x"][1:]]} for c in convs]}
    (folder / "holdout.json").write_text(json.dumps(drawn, indent=1))
    return drawn


# -- the report ---------------------------------------------------------------------------------------


def _stats_by(points: list[dict[str, Any]], group: Any, order: tuple[str, ...] | None = None
              ) -> dict[str, dict[str, Any]]:
    """{format: {group: measured over predicted}} of ``points``, ``group(point)`` naming each
    point's group; the groups in ``order``, or sorted."""
    out: dict[str, dict[str, Any]] = {}
    for fmt in sorted({p["format"] for p in points}):
        sel = [p for p in points if p["format"] == fmt]
        for g in order or sorted({group(p) for p in sel}):
            part = [p for p in sel if group(p) == g]
            if part:
                out.setdefault(fmt, {})[g] = _stats([p["seconds"] for p in part], [p["predicted_s"] for p in part])
    return out


def _gemm_kernel(target, r: dict[str, Any]):
    lead = [r["batch"]] if r["batch"] > 1 else []
    dtype = onnx.TensorProto.BFLOAT16 if r["format"] == "bf16" else onnx.TensorProto.FLOAT
    model = _one_node("MatMul", [*lead, r["m"], r["k"]], [*lead, r["k"], r["n"]], [*lead, r["m"], r["n"]], dtype)
    return predict(target, model, _PRECISION[r["format"]], True).kernels[0]


def gemm_report(target, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each held-out GEMM against its predicted kernel (a CUDA-graph node, as measured), by format
    and kind: plain with aligned rows, plain with a row off 16 bytes, batched."""
    points = []
    for r in rows:
        k = _gemm_kernel(target, r)
        kind = "batched" if r["batch"] > 1 else "misaligned" if k.details["misaligned_rows"] else "aligned"
        if r["format"] == "fp32" and kind == "misaligned":
            kind = "aligned"  # the CUDA cores' SGEMM: the model charges no alignment (fp32 rows any length)
        points.append({**r, "kind": kind, "predicted_s": k.time_s, "bound": k.bound,
                       "measured_over_predicted": round(r["seconds"] / k.time_s, 3)})
    everything = _stats_by(points, lambda p: "all")
    kinds = _stats_by(points, lambda p: p["kind"], ("aligned", "misaligned", "batched"))
    return {"points": points, "by_format": {fmt: {**everything[fmt], **kinds[fmt]} for fmt in everything}}


def attention_model(b: int, h: int, s: int, d: int, dtype: int, causal: bool = False) -> onnx.ModelProto:
    """softmax(Q·Kᵀ·d^-½)·V as an exporter writes it, Kᵀ given: the pattern the gpu target fuses;
    ``causal`` masks the scores above the diagonal as GPT-2's export does (a constant lower
    triangle, the lowest float where it is false)."""
    nodes = [helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Mul", ["s", "scale"], ["ss"])]
    inits = [helper.make_tensor("scale", dtype, [], [d ** -0.5])]
    if causal:
        nodes.append(helper.make_node("Where", ["tril", "ss", "lowest"], ["sm"]))
        inits += [onnx.numpy_helper.from_array(np.tril(np.ones((1, 1, s, s), dtype=bool)), "tril"),
                  helper.make_tensor("lowest", dtype, [], [-65504.0])]
    nodes += [helper.make_node("Softmax", [nodes[-1].output[0]], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", "v"], ["y"])]
    g = helper.make_graph(nodes, "attention",
                          [helper.make_tensor_value_info("q", dtype, [b, h, s, d]),
                           helper.make_tensor_value_info("kt", dtype, [b, h, d, s]),
                           helper.make_tensor_value_info("v", dtype, [b, h, s, d])],
                          [helper.make_tensor_value_info("y", dtype, [b, h, s, d])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def attention_report(target, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each held-out ``scaled_dot_product_attention`` against the fused attention kernel predicted."""
    points = []
    for r in rows:
        dtype = onnx.TensorProto.BFLOAT16 if r["format"] == "bf16" else onnx.TensorProto.FLOAT16
        model = attention_model(r["batch"], r["heads"], r["seq"], r["head_dim"], dtype, r.get("causal", False))
        k = next(k for k in predict(target, model, "exact", True).kernels if k.details.get("kind") == "attention")
        flops = 4.0 * r["batch"] * r["heads"] * r["seq"] ** 2 * r["head_dim"]
        points.append({**r, "predicted_s": k.time_s, "measured_over_predicted": round(r["seconds"] / k.time_s, 3),
                       "measured_flops_per_s": flops / r["seconds"], "live_tiles": k.details.get("live_tiles")})
    masks = _stats_by(points, lambda p: "causal" if p.get("causal") else "none", ("none", "causal"))
    return {"points": points, "by_format": masks}


def conv_family(kernels: list[list[Any]]) -> str:
    """What cuDNN ran for one conv, from its longest kernel's name: the algorithm, the unit it ran
    on, and whether it is a Hopper (sm90) kernel or an older architecture's."""
    if not kernels:
        return "unknown"
    name = kernels[0][0]
    low = name.lower()
    algo = ("FFT" if "fft" in low else "Winograd" if "winograd" in low
            else "depthwise" if "depthwise" in low else "direct" if "direct" in low
            else "implicit GEMM" if "implicit" in low or "fprop" in low
            else "GEMM" if "gemm" in low or "gemv" in low else "other")
    tensor = re.search(r"tensorop|tensor\d+x\d+x\d+|warpgroup|tf32f32_f32|hmma|gmma", low)
    arch = "sm90" if "sm90" in low else "sm80" if "sm80" in low or "cutlass_80" in low else "older"
    tile = re.search(r"tilesize(\d+x\d+)|gemm_(\d+x\d+)_", low)
    size = f" {tile.group(1) or tile.group(2)}" if tile else ""
    return f"{algo}{size}, {'tensor cores' if tensor else 'CUDA cores'}, {arch}"


def _conv_shape(p: dict[str, Any]) -> str:
    kh, kw = p["w"][2:]
    return "depthwise" if p["group"] > 1 and p["group"] == p["x"][1] else \
        "grouped" if p["group"] > 1 else f"{kh}x{kw}" if (kh, kw) in ((1, 1), (3, 3)) else "other"


def conv_report(target, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each held-out conv against its predicted implicit GEMM; per model and format the sum (each
    conv as often as the model runs it), and the ratios by filter shape and by what cuDNN ran."""
    points = conv_sweep_report(target, rows)["points"]
    for p in points:
        p["shape"], p["family"] = _conv_shape(p), conv_family(p.get("kernels", []))
    totals = {model: conv_totals([p for p in points if p["model"] == model])
              for model in dict.fromkeys(p["model"] for p in points)}
    return {"points": points, "by_model": totals, "by_shape": _stats_by(points, lambda p: p["shape"]),
            "by_family": _stats_by(points, lambda p: p["family"])}


def report(measured: dict[str, Any]) -> dict[str, Any]:
    target = _target()
    out: dict[str, Any] = {"generated_by": "benchmarks/calibration_gpu_holdout.py",
                           "seed": (measured.get("holdout_drawn") or {}).get("seed"),
                           "device": measured.get("device"), "errors": measured.get("errors", [])}
    if measured.get("holdout_gemms"):
        out["gemms"] = gemm_report(target, measured["holdout_gemms"])
    if measured.get("holdout_attention"):
        out["attention"] = attention_report(target, measured["holdout_attention"])
    if measured.get("holdout_convs"):
        out["convs"] = conv_report(target, measured["holdout_convs"])
    return out


def repeat(first: dict[str, Any], again: dict[str, Any]) -> dict[str, Any]:
    """The same sample measured twice (two machines, two leases): per step, the second time over
    the first, kernel by kernel (median, min, max)."""
    out = {}
    for step in ("holdout_gemms", "holdout_attention", "holdout_convs"):
        pairs = list(zip(first.get(step) or [], again.get(step) or []))
        ratios = np.array([b["seconds"] / a["seconds"] for a, b in pairs])
        if ratios.size:
            out[step] = {"kernels": int(ratios.size), "median": round(float(np.median(ratios)), 3),
                         "min": round(float(ratios.min()), 3), "max": round(float(ratios.max()), 3)}
    return out


def _row(label: str, st: dict[str, Any]) -> str:
    return (f"| {label} | {st['points']} | {st['median_measured_over_predicted']} ({st['geomean']}) | "
            f"{round(100 * st['within_25pct'])}% | {st['min']}–{st['max']} |")


def markdown(res: dict[str, Any]) -> str:
    """The held-out report as benchmarks/README.md shows it."""
    head = "| {} | kernels | measured / predicted, median (geomean) | within ±25% | min–max |\n|---|---|---|---|---|"
    lines: list[str] = []
    gemms = (res.get("gemms") or {}).get("by_format", {})
    if gemms:
        lines += [head.format("held-out GEMMs")]
        for fmt, groups in gemms.items():
            lines += [_row(f"{fmt}, {kind}", st) for kind, st in groups.items() if kind != "all"]
    att = (res.get("attention") or {}).get("by_format", {})
    if att:
        lines += ["", head.format("held-out attention (SDPA)")]
        for fmt, groups in att.items():
            lines += [_row(f"{fmt}, {'no mask' if mask == 'none' else mask}", st) for mask, st in groups.items()]
    convs = res.get("convs") or {}
    if convs:
        lines += ["", "| held-out convs, each model's sum | fp32: measured / predicted ms | TF32 |", "|---|---|---|"]
        for model, per in convs["by_model"].items():
            cells = [f"{per[f]['measured_s'] * 1e3:.3f} / {per[f]['predicted_s'] * 1e3:.3f} "
                     f"(x{per[f]['measured_over_predicted']})" if f in per else "—" for f in ("fp32", "tf32")]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines += ["", head.format("held-out convs, by what cuDNN ran")]
        for fmt, fams in convs["by_family"].items():
            ranked = sorted(fams.items(), key=lambda kv: -kv[1]["points"])
            lines += [_row(f"{fmt}: {fam}", st) for fam, st in ranked if st["points"] >= 5]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="draw the held-out kernels into DIR/holdout.json")
    p.add_argument("folder", type=Path)
    p.add_argument("--seed", type=int, default=None,
                   help="draw a fresh sample from this seed (default: the first held-out sample)")
    p.add_argument("--head-dims", default="64,80,96,128", help="a fresh sample's attention head dims")
    r = sub.add_parser("report", help="set the sheet's predictions beside the measurements")
    r.add_argument("measured", type=Path)
    r.add_argument("--out", type=Path, default=RESULTS)
    rp = sub.add_parser("repeat", help="the same sample measured twice: the second time over the first")
    rp.add_argument("first", type=Path)
    rp.add_argument("again", type=Path)
    md = sub.add_parser("markdown", help="print the report's tables as benchmarks/README.md shows them")
    md.add_argument("results", type=Path, nargs="?", default=RESULTS)
    args = ap.parse_args(argv)
    if args.cmd == "repeat":
        print(json.dumps(repeat(json.loads(args.first.read_text()), json.loads(args.again.read_text())), indent=1))
        return 0
    if args.cmd == "markdown":
        print(markdown(json.loads(args.results.read_text())))
        return 0
    if args.cmd == "prepare":
        drawn = prepare(args.folder, args.seed, tuple(int(d) for d in args.head_dims.split(",")))
        print(f"{args.folder / 'holdout.json'}: {len(drawn['gemms'])} GEMMs, {len(drawn['attention'])} attention "
              f"shapes, {len(drawn['convs'])} convs (seed {drawn['seed']})")
        return 0
    res = report(json.loads(args.measured.read_text()))
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
