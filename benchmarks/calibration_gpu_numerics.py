"""What TF32 does to the numbers on a real H200, beside what the gpu target's ``native`` does.

The gpu target at ``native`` rounds every matrix operand to TF32 to nearest, ties to even
(``hal.numerics.round_tf32``), and accumulates in fp32. ``gpu_device.py measure ... --steps numerics``
(``gpu_device_numerics.py``) recorded on an H200 what cuBLAS, cuDNN and onnxruntime's CUDA provider
do; this half sets it beside hal::

    # here: the stripped models and onnxruntime-gpu packed (as for calibration_gpu_device)
    .venv/bin/python -m benchmarks.calibration_gpu_device prepare .devnum --ort-wheel onnxruntime_gpu-*.whl
    # there:
    python3 benchmarks/gpu_device.py measure .devnum $OUT/gpu_numerics.json --steps numerics
    # here again (``keep`` trims the arrays to what is committed; ``--models`` needs .devnum):
    .venv/bin/python -m benchmarks.calibration_gpu_numerics keep OUT_DIR benchmarks/results/device_h200
    .venv/bin/python -m benchmarks.calibration_gpu_numerics report --models .devnum
    .venv/bin/python -m benchmarks.calibration_gpu_numerics markdown

The report has three parts:

* ``conversion``: each one-term probe's output classified by how its operands reached TF32
  (``gpu_device_numerics.mode_shares``), with the kind of kernel that ran it; for the probes whose
  arrays are committed, the share of the GPU's output bits that hal's own arithmetic gives: the gpu
  target at ``native`` on the same product as an ONNX MatMul (and the 1x1 convolution as a Conv);
* ``accumulation``: each dot-product probe's error against the exact sum, in units in the last place
  of the correctly rounded result, for the GPU's TF32 and fp32 kernels and for the gpu target at
  ``native`` (its fp32 accumulation is this host's SGEMM); ``accumulation_sweep``: the same over
  lengths 64..16384 for TF32, bf16 and fp8 operands, fp8's beside the gpu target's model of
  Hopper's fp8 accumulation (``hal_gpu.accumulation``, the sheets' ``fp8_accumulation_*``);
  ``fp8_mlp``: an MLP block through fp8 GEMMs on the GPU beside the gpu target's fp8 run of it;
  ``fp8_holdout``: fp8 GEMMs drawn after that model was fitted, of normal activations (and their
  ReLU) and weights scaled per tensor, beside the gpu target's fp8 product of the same operands;
* ``models`` (only with ``--models``): the benchmark transformers' outputs, onnxruntime's CUDA provider
  with TF32 on and off beside the gpu target at ``native`` and ``exact``, and how far a nudge of one
  unit in the last place to half the token embedding moves the target's own output: the spread any
  two TF32 computations of these models show once one fp32 rounding differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from benchmarks import gpu_device_numerics as dev

RESULTS = Path(__file__).parent / "results" / "calibration_gpu_numerics.json"
MEASURED = Path(__file__).parent / "results" / "device_h200"
TARGET = "gpu-h200"
#: the arrays that are committed (the rest of the probes are classified by their shares alone); the
#: accumulation probes' operands are drawn again here from their seed (``accumulation_operands``,
#: ``sweep_operands``), and of the sweep's outputs the first ``SWEEP_ROWS`` rows are kept
KEPT = ("conv/256x256x32/", "cudnn/", "acc/", "sweep/", "holdout/", "wide/", "mlp/")
SWEEP_ROWS = 32
#: of the wide GEMMs' first rows, the first ``WIDE_COLUMNS`` columns are kept
WIDE_COLUMNS = 256
#: blocks between promotions of the gpu target's model of each swept fp8 run: the sheet's fast
#: accumulation (never), and every 4 blocks (cuBLASLt without fast accumulation)
SWEEP_PROMOTIONS = {"fp8_fast": 0, "fp8_promoted": 4}
#: the rule's numbers for the formats the targets do not apply it to: (places, products per block =
#: the wgmma's K); fp8's are the sheet's (``fp8_rule``)
WGMMA_RULES = {"tf32": (25, 8), "bf16": (25, 16), "fp16": (25, 16)}


def fp8_rule(promote: int | None = None):
    """The gpu-h200 sheet's fp8 accumulation (``hal_gpu.accumulation.Accumulation``), promoted every
    ``promote`` blocks where given: what the report sets beside the GPU is what the target runs."""
    from dataclasses import replace

    from hal_gpu.hardware import Gpu

    from hal.specs import builtin_sheet, load_spec_sheet

    rule = Gpu.from_spec(load_spec_sheet(builtin_sheet(f"{TARGET}.toml"))).fp8_accumulation
    return rule if promote is None else replace(rule, promote=promote)


def unit_of(kernel: str) -> str:
    """Which units a CUDA kernel computes its products on, from its name: ``tensor cores`` (CUTLASS's
    ``tensorop``, cuBLAS's ``tf32`` and wgmma kernels), ``CUDA cores`` (FFMA, SIMT SGEMM, cuDNN's
    implicit SGEMM), or ``other`` (reductions, transposes, elementwise kernels)."""
    if any(s in kernel for s in ("tensorop", "tf32", "wgmma", "tensor16x8")):
        return "tensor cores"
    if any(s in kernel for s in ("ffma", "simt_sgemm", "implicit_convolve_sgemm")):
        return "CUDA cores"
    return "other"


def _units(kernels: dict[str, int]) -> dict[str, int]:
    units: dict[str, int] = {}
    for name, count in kernels.items():
        if (u := unit_of(name)) != "other":
            units[u] = units.get(u, 0) + count
    return units


def _hal_session(proto: onnx.ModelProto, precision: str = "native"):
    from hal import InferenceSession

    return InferenceSession(proto.SerializeToString(), target=TARGET, precision=precision, cache_dir=False)


def _matmul_model(a_shape: tuple[int, ...], b: np.ndarray | None, b_shape: tuple[int, ...]) -> onnx.ModelProto:
    """Y = A @ B, B a graph input (``b`` None) or a weight (the target rounds a weight once, at compile)."""
    inputs = [helper.make_tensor_value_info("A", TensorProto.FLOAT, list(a_shape))]
    inits = []
    if b is None:
        inputs.append(helper.make_tensor_value_info("B", TensorProto.FLOAT, list(b_shape)))
    else:
        inits.append(numpy_helper.from_array(b, "B"))
    g = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["Y"])], "probe", inputs,
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _bit_share(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean(np.ascontiguousarray(got, np.float32).view(np.uint32)
                         == np.ascontiguousarray(want, np.float32).view(np.uint32)))


def hal_conversion_checks(arrays: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """For each committed one-term probe: the share of each GPU TF32 output's bits that the gpu
    target at ``native`` gives on the same operands (and ``round_tf32``'s products alone)."""
    from hal.numerics import round_tf32

    rows = []
    for key in sorted(k for k in arrays if k.startswith("conv/") and k.endswith("_tf32")):
        tag, label = key.split("/")[1], key.split("/")[2]
        a, b, got = arrays[f"conv/{tag}/a"], arrays[f"conv/{tag}/b"], arrays[key]
        full = dev.one_term_rows(a, b.shape[0])
        rows_of = np.arange(a.shape[0]) % b.shape[0]
        products = (round_tf32(a).astype(np.float64)[:, None] * round_tf32(b)[rows_of].astype(np.float64))
        as_input = _hal_session(_matmul_model(full.shape, None, b.shape)).run(None, {"A": full, "B": b})[0]
        as_weight = _hal_session(_matmul_model(full.shape, b, b.shape)).run(None, {"A": full})[0]
        rows.append({"probe": tag, "run": label, "outputs": int(got.size),
                     "round_tf32_products": _bit_share(got, products.astype(np.float32)),
                     "gpu_target_b_as_input": _bit_share(got, as_input),
                     "gpu_target_b_as_weight": _bit_share(got, as_weight)})
    if "cudnn/torch_tf32" in arrays:
        x, w, got = arrays["cudnn/x"], arrays["cudnn/w"], arrays["cudnn/torch_tf32"]
        g = helper.make_graph([helper.make_node("Conv", ["X", "W"], ["Y"])], "probe",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "W")])
        y = _hal_session(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])).run(None, {"X": x})[0]
        rows.append({"probe": "cudnn", "run": "torch_tf32", "outputs": int(got.size),
                     "gpu_target_b_as_weight": _bit_share(got, y.reshape(w.shape[0], -1).T)})
    return rows


def conversion_report(measured: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    probes = []
    for tag, row in measured["numerics"]["conversion"].items():
        if tag == "errors":
            continue
        for label in [k[: -len("_shares")] for k in row if k.endswith("_shares")]:
            shares = row[f"{label}_shares"]
            whole = [m for m, s in shares.items() if s == 1.0]
            probes.append({"probe": tag, "run": label, "units": _units(row.get(f"{label}_kernels", {})),
                           "mode": whole[0] if len(whole) == 1 else None, "shares": shares,
                           "kernels": sorted(row.get(f"{label}_kernels", {}))})
    return {"probes": probes, "errors": measured["numerics"]["conversion"].get("errors", []),
            "hal": hal_conversion_checks(arrays)}


def accumulation_operands() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The accumulation probes' operands, drawn again as the GPU machine drew them."""
    rng = np.random.default_rng(20261205)
    out = {}
    for k in dev.ACCUMULATION_KS:
        for signed in (False, True):
            tag = f"k{k}_{'signed' if signed else 'positive'}"
            out[tag] = tuple(dev.sweep_operand(rng, shape, "tf32", signed) for shape in ((64, k), (k, 64)))
    return out


def ulp_errors(got: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    """``got``'s errors against the exact sums (float64, exact for these operands) in units in the
    last place of the correctly rounded float32 result: the share correctly rounded, the mean (its
    sign shows a bias), the mean and largest magnitude."""
    nearest = exact.astype(np.float32)
    e = (got.astype(np.float64) - exact) / np.spacing(np.abs(nearest)).astype(np.float64)
    return {"correctly_rounded": float(np.mean(got == nearest)), "mean_ulp": float(e.mean()),
            "mean_abs_ulp": float(np.abs(e).mean()), "max_abs_ulp": float(np.abs(e).max())}


def accumulation_report(arrays: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    rows = []
    for tag, (a, b) in accumulation_operands().items():
        if f"acc/{tag}/torch_tf32" not in arrays:
            continue
        exact = a.astype(np.float64) @ b.astype(np.float64)
        target = _hal_session(_matmul_model(a.shape, b, b.shape)).run(None, {"A": a})[0]
        rows.append({"probe": tag, "k": int(a.shape[1]),
                     "gpu_tf32": ulp_errors(arrays[f"acc/{tag}/torch_tf32"], exact),
                     "gpu_fp32": ulp_errors(arrays[f"acc/{tag}/torch_fp32"], exact),
                     "gpu_target_native": ulp_errors(target, exact)})
    return rows


def sweep_operands() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The accumulation sweep's operands by (format, K, sign) tag, drawn again as the GPU machine drew them."""
    rng = np.random.default_rng(20261206)
    out = {}
    for fmt in ("tf32", "bf16", "fp8"):
        for k in dev.SWEEP_KS:
            for signed in (False, True):
                out[f"{fmt}_k{k}_{'signed' if signed else 'positive'}"] = (
                    dev.sweep_operand(rng, (128, k), fmt, signed), dev.sweep_operand(rng, (k, 128), fmt, signed))
    return out


def sweep_report(measured: dict[str, Any], arrays: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Each swept run beside the exact sums: the GPU's error, host fp32 (numpy's SGEMM: what the gpu
    target did before its sheets had ``fp8_accumulation_bits``), and for fp8 the gpu target's model
    (``hal_gpu.accumulation``) with the share of the GPU's bits it gives."""
    kernels = measured["numerics"].get("accumulation_sweep", {})
    rows = []
    for tag, (a, b) in sweep_operands().items():
        fmt, rest = tag.split("_", 1)
        for label in ("fp8_fast", "fp8_promoted") if fmt == "fp8" else (fmt,):
            key = f"sweep/{label}_{rest}"
            if key not in arrays:
                continue
            got = arrays[key]
            a_rows = a[: got.shape[0]]
            exact = a_rows.astype(np.float64) @ b.astype(np.float64)
            row = {"run": label, "k": int(a.shape[1]), "signed": rest.endswith("signed"), "dot_products": int(got.size),
                   "kernels": sorted(kernels.get(f"{label}_{rest}", {})),
                   "max_rel": float(np.max(np.abs(got - exact)) / np.max(np.abs(exact))),
                   "gpu": ulp_errors(got, exact), "host_fp32": ulp_errors(a_rows @ b, exact)}
            if label in SWEEP_PROMOTIONS:
                model = fp8_rule(SWEEP_PROMOTIONS[label]).matmul(a_rows, b)
                row["gpu_target"] = {**ulp_errors(model, exact), "bits_as_gpu": _bit_share(got, model)}
            rows.append(row)
    return rows


#: the neighbours of the sheet's fp8 rule (places, block), set beside the GPU's fast-accumulation
#: outputs after the sheet's own
NEIGHBOURS = ((13, 16), (13, 64), (12, 32), (14, 32))


def alternatives_report(arrays: dict[str, np.ndarray], tag: str = "fp8_k1024_positive") -> list[dict[str, Any]]:
    """The share of the GPU's fast-accumulation outputs (one swept probe) that the rule gives with
    other bits and block sizes: what pins the sheet's 13 and 32."""
    from hal_gpu.accumulation import Accumulation

    a, b = sweep_operands()[tag]
    got = arrays[f"sweep/fp8_fast_{tag.split('_', 1)[1]}"]
    sheet = fp8_rule()
    return [{"bits": bits, "block": block, "probe": tag,
             "bits_as_gpu": _bit_share(got, Accumulation(bits, block, 0).matmul(a[: got.shape[0]], b))}
            for bits, block in ((sheet.bits, sheet.block), *NEIGHBOURS)]


def bf16_rule_report(measured: dict[str, Any], arrays: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The share of the GPU's bf16 sums (fp32 results) that the rule with bf16's numbers (``WGMMA_RULES``)
    gives: the gpu target does not take it (it moves a sum by a few millionths at most, under bf16's
    rounding of the operands), but it says what the tensor cores do."""
    from hal_gpu.accumulation import Accumulation

    kernels = measured["numerics"].get("accumulation_sweep", {})
    rows = []
    for tag, (a, b) in sweep_operands().items():
        if tag.startswith("bf16") and f"sweep/{tag}" in arrays:
            got = arrays[f"sweep/{tag}"]
            rule = Accumulation(*WGMMA_RULES["bf16"], 0).matmul(a[: got.shape[0]], b)
            rows.append({"probe": tag, "split_k": any("splitK" in k for k in kernels.get(tag, {})),
                         "bits_as_gpu": _bit_share(got, rule)})
    return rows


def wide_report(measured: dict[str, Any], arrays: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The wide GEMMs' sums (one Hopper kernel over the whole K axis): the share of the GPU's bits the
    rule gives with each format's numbers (``WGMMA_RULES``), and the share fp32's sum gives."""
    from hal_gpu.accumulation import Accumulation

    kernels = measured["numerics"].get("wide_sums", {})
    rng = np.random.default_rng(20261208)
    rows = []
    for fmt in ("tf32", "bf16", "fp16"):
        for k in dev.WIDE_KS:
            like = "bf16" if fmt == "fp16" else fmt
            a = dev.sweep_operand(rng, (dev.WIDE_SHAPE[0], k), like, False)
            b = dev.sweep_operand(rng, (k, dev.WIDE_SHAPE[1]), like, False)
            got = arrays.get(f"wide/{fmt}_k{k}")
            if got is None:
                continue
            a, b = a[: got.shape[0]], np.ascontiguousarray(b[:, : got.shape[1]])
            rule = Accumulation(*WGMMA_RULES[fmt], 0).matmul(a, b)
            rows.append({"format": fmt, "k": k, "dot_products": int(got.size),
                         "kernels": sorted(n for n in kernels.get(f"{fmt}_k{k}", {}) if "elementwise" not in n),
                         "rule": list(WGMMA_RULES[fmt]), "rule_bits_as_gpu": _bit_share(got, rule),
                         "fp32_sum_bits_as_gpu": _bit_share(got, a @ b)})
    return rows


def mlp_report(arrays: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The fp8 MLP block run on the GPU beside the gpu target's fp8 run of the same ONNX graph
    (MatMul, Relu, MatMul, Relu; the last Relu keeps the second GEMM from being the logits, which
    the fp8 policy keeps in 16 bits): the share of outputs with the same bits, the largest gap."""
    from onnx import helper as oh

    x, w1, w2 = dev.mlp_operands()
    g = oh.make_graph([oh.make_node("MatMul", ["x", "w1"], ["h"]), oh.make_node("Relu", ["h"], ["r"]),
                       oh.make_node("MatMul", ["r", "w2"], ["o"]), oh.make_node("Relu", ["o"], ["y"])], "mlp",
                      [oh.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                      [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                      [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    target = _hal_session(oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)]), "fp8").run(None, {"x": x})[0]
    rows = []
    for label in ("cublaslt_epilogue", "fp32_sums"):
        got = arrays.get(f"mlp/{label}")
        if got is not None:
            ours = target[: got.shape[0]]
            rows.append({"epilogue": label, "outputs": int(got.size), "bits_as_gpu": _bit_share(got, ours),
                         "outputs_apart": int(np.count_nonzero(got.view(np.uint32) != ours.view(np.uint32))),
                         "max_abs_gap": float(np.max(np.abs(got - ours))), "max_abs": float(np.max(np.abs(got)))})
    return rows


def _relative(got: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    """Errors over the largest exact magnitude: mean (its sign a bias), root mean square, largest."""
    r = (got.astype(np.float64) - exact) / np.max(np.abs(exact))
    return {"mean": float(r.mean()), "rms": float(np.sqrt(np.mean(r * r))), "max": float(np.abs(r).max())}


def holdout_report(measured: dict[str, Any], arrays: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The held-out fp8 GEMMs: the GPU's errors against the exact sum of the rounded operands, beside
    the gpu target's fp8 product of them (``Accumulation.fp8_product``, the path its fp8 MatMuls take)
    and fp32's sum of them, with the share of the GPU's bits the target gives; and, for scale, how far
    rounding the operands to fp8 moved the exact product of the unrounded ones."""
    import hashlib

    from hal.kernels.linalg import matmul

    drawn = measured["numerics"].get("fp8_holdout", {})
    rng = np.random.default_rng(20261207)
    rows = []
    for k in dev.HOLDOUT_KS:
        for act in ("normal", "relu"):
            x, w = dev.holdout_operands(k, act, rng)
            (qx, sx), (qw, sw) = dev.fp8_scaled(x), dev.fp8_scaled(w)
            tag = f"k{k}_{act}"
            if hashlib.sha256(qx.tobytes() + qw.tobytes()).hexdigest() != drawn.get(tag, {}).get("codes_sha256"):
                raise ValueError(f"held-out GEMM {tag}: the codes drawn here are not the GPU machine's")
            for label, promote in (("fast", 0), ("promoted", 4)):
                if f"holdout/{tag}/{label}" not in arrays:
                    continue
                got = arrays[f"holdout/{tag}/{label}"]
                rows_kept = got.shape[0]  # (the whole A is rounded: its scale is the whole tensor's)
                target = fp8_rule(promote).fp8_product(matmul, "fp8", None, qx * sx, qw * sw)[:rows_kept]
                a, b = qx[:rows_kept], qw
                exact = (a.astype(np.float64) @ b.astype(np.float64)) * np.float64(sx) * np.float64(sw)
                unrounded = x[:rows_kept].astype(np.float64) @ w.astype(np.float64)
                rows.append({"gemm": tag, "k": k, "activations": act, "accumulation": label,
                             "fp8_operands": _relative(exact, unrounded),
                             "gpu": _relative(got, exact), "gpu_target": _relative(target, exact),
                             "gpu_target_bits_as_gpu": _bit_share(got, target),
                             "fp32_sum": _relative((a * sx) @ (b * sw), exact)})
    return rows


def _distances(got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """``hal.compare``'s measure (max |a-b| / max |ref|) and the root-mean-square one."""
    d = got.astype(np.float64) - ref.astype(np.float64)
    scale = float(np.max(np.abs(ref))) or 1.0
    return {"max_rel": float(np.max(np.abs(d))) / scale,
            "rms_rel": float(np.sqrt(np.mean(d * d)) / (np.sqrt(np.mean(ref.astype(np.float64) ** 2)) or 1.0))}


def nudged(proto: onnx.ModelProto, seed: int = 1) -> onnx.ModelProto:
    """``proto`` with half the entries of each table a Gather reads (the embeddings) moved up by one
    unit in the last place: a perturbation of fp32's own size."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    tables = {n.input[0] for n in out.graph.node if n.op_type == "Gather"}
    rng = np.random.default_rng(seed)
    for t in out.graph.initializer:
        if t.name in tables and t.data_type == TensorProto.FLOAT:
            a = numpy_helper.to_array(t)
            a = np.where(rng.random(a.shape) < 0.5, np.nextafter(a, np.float32(np.inf)), a).astype(np.float32)
            t.CopyFrom(numpy_helper.from_array(a, t.name))
    return out


def models_report(measured: dict[str, Any], outputs: dict[str, np.ndarray], folder: Path) -> dict[str, Any]:
    from benchmarks.gpu_device_models import _restore

    manifest = {e["name"]: e for e in json.loads((folder / "manifest.json").read_text())["models"]}
    res = {}
    for name, runs in measured["numerics"].get("models", {}).items():
        proto = _restore(folder / manifest[name]["file"])
        feeds = dict(np.load(folder / manifest[name]["feeds"]))
        tf32, fp32 = outputs[f"model/{name}/tf32/0"], outputs[f"model/{name}/fp32/0"]
        native = dev.sampled(_hal_session(proto).run(None, feeds)[0])
        exact = dev.sampled(_hal_session(proto, "exact").run(None, feeds)[0])
        moved = dev.sampled(_hal_session(nudged(proto)).run(None, feeds)[0])
        res[name] = {"sampled_outputs": int(tf32.size), "gpu_tf32_vs_gpu_fp32": _distances(tf32, fp32),
                     "target_native_vs_gpu_tf32": _distances(native, tf32),
                     "target_exact_vs_gpu_fp32": _distances(exact, fp32),
                     "target_native_vs_gpu_fp32": _distances(native, fp32),
                     "target_native_nudged_vs_target_native": _distances(moved, native),
                     "gpu_tf32_units": _units(runs["tf32"]["kernels"]),
                     "gpu_reruns_bit_identical": all(r["rerun_bit_identical"] for r in runs.values())}
    return res


def load_arrays(folder: Path) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for name in ("gpu_numerics_probes.npz", "gpu_numerics_models.npz"):
        if (folder / name).is_file():
            with np.load(folder / name) as z:
                arrays.update({k: z[k] for k in z.files})
    return arrays


def keep(source: Path, dest: Path) -> None:
    """Copy what the GPU machine wrote into ``dest``, the probes' arrays trimmed to ``KEPT`` (outputs
    only for the accumulation probes, whose operands are drawn again here)."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "gpu_numerics.json").write_text((source / "gpu_numerics.json").read_text())
    with np.load(source / "gpu_numerics_probes.npz") as z:
        kept = {k: z[k][:SWEEP_ROWS, :WIDE_COLUMNS] if k.startswith("wide/")
                else z[k][:SWEEP_ROWS] if k.startswith(("sweep/", "holdout/")) else z[k] for k in z.files
                if k.startswith(KEPT) and not (k.startswith("acc/") and k.endswith(("/a", "/b")))}
    np.savez_compressed(dest / "gpu_numerics_probes.npz", **kept)
    with np.load(source / "gpu_numerics_models.npz") as z:
        np.savez_compressed(dest / "gpu_numerics_models.npz", **{k: z[k] for k in z.files})


def report(measured_dir: Path, folder: Path | None) -> dict[str, Any]:
    measured = json.loads((measured_dir / "gpu_numerics.json").read_text())
    arrays = load_arrays(measured_dir)
    res = {"generated_by": "benchmarks/calibration_gpu_numerics.py", "target": TARGET,
           "device": measured.get("device"), "onnxruntime": measured.get("onnxruntime"),
           "conversion": conversion_report(measured, arrays), "accumulation": accumulation_report(arrays),
           "accumulation_sweep": sweep_report(measured, arrays), "fp8_holdout": holdout_report(measured, arrays),
           "fp8_rule_alternatives": alternatives_report(arrays), "bf16_rule": bf16_rule_report(measured, arrays),
           "wide_sums": wide_report(measured, arrays), "fp8_mlp": mlp_report(arrays)}
    if folder is not None:
        res["models"] = models_report(measured, arrays, folder)
    return res


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _short(kernels: list[str]) -> str:
    """The product kernel's name without its template wrapper and arguments."""
    names = [k for k in kernels if unit_of(k) != "other"] or kernels or ["—"]
    name = names[0].removeprefix("void ").removeprefix("cutlass::Kernel2<")
    return name.split("(")[0].split(">")[0].split("<")[0][:60]


def _two(d: dict[str, float]) -> str:
    return f"{d['max_rel']:.2e} / {d['rms_rel']:.2e}"


def _head(*cells: str) -> list[str]:
    """A markdown table's header and rule, after a blank line."""
    return ["", "| " + " | ".join(cells) + " |", "|" + "---|" * len(cells)]


def markdown(res: dict[str, Any]) -> str:
    probes = res["conversion"]["probes"]
    controls = [p for p in probes if p["run"].endswith("fp32")]
    out = [f"TF32 runs below; their {len(controls)} fp32 controls gave the exact products on "
           f"{sum(p['shares']['fp32'] == 1.0 for p in controls)}.",
           *_head("one-term probe", "TF32 run", "product kernel", "on", "nearest even", "ties away", "truncated",
                  "fp32")]
    for p in (p for p in probes if p["run"].endswith("tf32")):
        units = ", ".join(sorted(p["units"])) or "—"
        s = p["shares"]
        out.append(f"| {p['probe']} | {p['run']} | `{_short(p['kernels'])}` | {units} | " + " | ".join(
            _pct(s[m]) for m in ("nearest_even", "ties_away", "truncate", "fp32")) + " |")
    out += _head("GPU's TF32 output", "outputs", "round_tf32's products", "gpu target, B an input",
                 "gpu target, B a weight")
    for r in res["conversion"]["hal"]:
        out.append(f"| {r['probe']} {r['run']} | {r['outputs']:,} | "
                   + " | ".join(_pct(r[k]) if k in r else "—" for k in
                                ("round_tf32_products", "gpu_target_b_as_input", "gpu_target_b_as_weight")) + " |")
    out += _head("dot products (64 x K x 64)", "K", "GPU TF32: correctly rounded, mean (max) ulp", "GPU fp32",
                 "gpu target at native")
    for r in res["accumulation"]:
        cells = [f"{_pct(r[k]['correctly_rounded'])}, {r[k]['mean_ulp']:+.2f} ({r[k]['max_abs_ulp']:.0f})"
                 for k in ("gpu_tf32", "gpu_fp32", "gpu_target_native")]
        out.append(f"| {r['probe'].split('_', 1)[1]} | {r['k']} | " + " | ".join(cells) + " |")
    # positive sums only: a signed sum's errors in its own last place are ruled by the near-zero ones
    out += _head("swept positive dot products (32 x 128 of them)", "K", "GPU: mean (max) error, ulp", "max rel",
                 "host fp32", "gpu target's model", "its bits as the GPU's")
    for r in (r for r in res.get("accumulation_sweep", []) if not r["signed"]):
        model = r.get("gpu_target")
        out.append(f"| {r['run']} | {r['k']} | "
                   f"{r['gpu']['mean_ulp']:+,.0f} ({r['gpu']['max_abs_ulp']:,.0f}) | {r['max_rel']:.1e} | "
                   f"{r['host_fp32']['mean_ulp']:+.1f} ({r['host_fp32']['max_abs_ulp']:,.0f}) | "
                   + (f"{model['mean_ulp']:+,.0f} ({model['max_abs_ulp']:,.0f}) | {_pct(model['bits_as_gpu'])} |"
                      if model else "— | — |"))
    out += _head("held-out fp8 GEMM (32 x K x 128)", "accumulation", "GPU: mean, rms (max) error", "gpu target",
                 "its bits as the GPU's", "fp32 sum", "(fp8 operands: rms)")
    for r in res.get("fp8_holdout", []):
        cell = {k: f"{r[k]['mean']:+.1e}, {r[k]['rms']:.1e} ({r[k]['max']:.1e})"
                for k in ("gpu", "gpu_target", "fp32_sum")}
        out.append(f"| K {r['k']}, {r['activations']} | {r['accumulation']} | {cell['gpu']} | {cell['gpu_target']} | "
                   f"{_pct(r['gpu_target_bits_as_gpu'])} | {cell['fp32_sum']} | {r['fp8_operands']['rms']:.1e} |")
    alt = res.get("fp8_rule_alternatives", [])
    if alt:
        out += ["", f"Other rules on {alt[0]['probe']} (fast): " + ", ".join(
            f"{r['bits']} bits, blocks of {r['block']}: {_pct(r['bits_as_gpu'])}" for r in alt) + "."]
    if res.get("bf16_rule"):
        places, block = WGMMA_RULES["bf16"]
        out += ["", f"The rule with {places} places and blocks of {block} on the bf16 sums: " + ", ".join(
            f"{r['probe'].split('_', 1)[1]} {_pct(r['bits_as_gpu'])}{' (split K)' if r['split_k'] else ''}"
            for r in res["bf16_rule"]) + "."]
    if res.get("wide_sums"):
        out += _head("wide GEMM's sums (2048 x K x 2048)", "K", "kernel", "the rule: places, block",
                     "its bits as the GPU's", "fp32 sum's")
        for r in res["wide_sums"]:
            out.append(f"| {r['format']} | {r['k']} | `{_short(r['kernels'])}` | {r['rule'][0]}, {r['rule'][1]} | "
                       f"{_pct(r['rule_bits_as_gpu'])} | {_pct(r['fp32_sum_bits_as_gpu'])} |")
    if res.get("fp8_mlp"):
        out += _head("fp8 MLP block (768 -> 3072 -> 768), GPU's epilogue", "outputs", "not the gpu target's bits",
                     "largest gap (of the largest output)")
        for r in res["fp8_mlp"]:
            out.append(f"| {r['epilogue']} | {r['outputs']:,} | {r['outputs_apart']} | "
                       f"{r['max_abs_gap']:.3g} ({r['max_abs']:.3g}) |")
    if "models" in res:
        out += _head("model (max_rel / rms_rel)", "GPU: TF32 vs fp32", "gpu target native vs GPU TF32",
                     "native vs native, embeddings nudged 1 ulp", "gpu target exact vs GPU fp32",
                     "GPU TF32 GEMM kernels")
        for name, m in res["models"].items():
            units = ", ".join(f"{n} on {u}" for u, n in sorted(m["gpu_tf32_units"].items()))
            out.append(f"| {name} | {_two(m['gpu_tf32_vs_gpu_fp32'])} | {_two(m['target_native_vs_gpu_tf32'])} | "
                       f"{_two(m['target_native_nudged_vs_target_native'])} | {_two(m['target_exact_vs_gpu_fp32'])} | "
                       f"{units} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keep", help="copy the GPU machine's files here, the arrays trimmed")
    k.add_argument("source", type=Path)
    k.add_argument("dest", type=Path, nargs="?", default=MEASURED)
    r = sub.add_parser("report", help="set the measurements beside the gpu target")
    r.add_argument("--measured", type=Path, default=MEASURED)
    r.add_argument("--models", type=Path, help="the folder calibration_gpu_device prepare wrote (stripped models)")
    r.add_argument("--out", type=Path, default=RESULTS)
    md = sub.add_parser("markdown", help="the README's tables from a report")
    md.add_argument("results", type=Path, nargs="?", default=RESULTS)
    args = ap.parse_args(argv)
    if args.cmd == "keep":
        keep(args.source, args.dest)
    elif args.cmd == "report":
        res = report(args.measured, args.models)
        args.out.write_text(json.dumps(res, indent=1) + "\n")
        print(markdown(res))
    else:
        print(markdown(json.loads(args.results.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
