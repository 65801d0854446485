"""Measure a real NVIDIA GPU for the gpu target's cost model: the half that runs on the GPU machine.

    python benchmarks/gpu_device.py measure DIR OUT.json [--steps micro,models,...] [--budget SECONDS]

Standalone on purpose: the GPU machine has torch and onnx but not hal, so this file imports
nothing from the project. ``DIR`` is what ``python -m benchmarks.calibration_gpu_device prepare``
wrote here: the benchmark's ONNX models with their large float weights stripped (the GPU machine
fills them with seeded random numbers of the same shape; timing does not depend on the values),
their feeds, and a manifest. It measures, with CUDA events or wall clocks around synchronised
runs, medians throughout:

* streaming bandwidth (copy, read, write, triad) on buffers 35x the L2, and a copy at sizes from
  4 KiB to 1 GiB, launched eagerly and from a CUDA graph (the latency floor and the fill curve);
* the cost of a kernel launch: eager, as a CUDA graph node, and one graph launch;
* GEMM throughput by input format at 8192^3;
* fused attention (``scaled_dot_product_attention``) throughput;
* every benchmark model through onnxruntime's CUDA execution provider, fp32 with TF32 off and
  on, and captured as a CUDA graph, each output checked against onnxruntime's CPU provider;
* with ``--steps sweep``, GEMM kernel time over a grid of shapes (M 1..8192, N and K 384..4096)
  and each distinct conv of ResNet-50 through cuDNN, fp32 and TF32, replayed from CUDA graphs;
* with ``--steps decode`` / ``prefill``, the GEMMs of Llama-3.3-70B on one of two tensor-parallel
  GPUs (the NIM calibration point's) at 1, 16 and 64 rows / 512 and 5008, bf16 and fp8;
* with ``--steps alignment``, GEMMs whose rows are and are not a multiple of 16 bytes;
* with ``--steps launch_raw``, ``cuda/launch.cu`` built with nvcc: launches with the CUDA runtime alone;
* with ``--steps profile``, the CUDA kernels each named model's fp32 run launches (CUPTI through
  torch's profiler): how many, and the GPU time of each;
* with ``--steps holdout``, what ``calibration_gpu_holdout prepare`` drew (``gpu_device_holdout.py``):
  GEMMs, attention and convs the cost model was not fitted to;
* with ``--steps numerics``, what TF32 does to the numbers (``gpu_device_numerics.py``): products
  whose outputs are one converted product each, dot products of TF32 operands, and the models'
  outputs through onnxruntime's CUDA provider with TF32 on and off, for ``calibration_gpu_numerics``;
* with ``--steps compiled``, the benchmark transformers as the generator's PyTorch modules, eager
  and compiled by inductor with CUDA graphs, fp32 and bf16: time, kernels per run, GPU busy time.

The model steps (models, profile, compiled) live in ``gpu_device_models.py`` beside this file.
Everything is written to ``OUT.json`` after each step, so a run cut short still reports.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Run:
    """The results so far, rewritten to disk after every step, and the time left."""

    def __init__(self, out: Path, budget_s: float):
        self.out, self.t0, self.budget_s = out, time.monotonic(), budget_s
        self.data: dict[str, Any] = {"generated_by": "benchmarks/gpu_device.py", "errors": []}

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.t0)

    def save(self) -> None:
        self.data["wall_s"] = round(time.monotonic() - self.t0, 1)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.out)

    def step(self, name: str, fn: Callable[[], Any]) -> Any:
        t = time.monotonic()
        try:
            value = fn()
        except Exception as e:  # a failed step is reported, the run goes on
            self.data["errors"].append(f"{name}: {type(e).__name__}: {str(e)[:400]}")
            value = None
        print(f"[{time.monotonic() - self.t0:6.1f}s] {name} ({time.monotonic() - t:.1f}s)", flush=True)
        self.save()
        return value


def gpu_time(fn: Callable[[], Any], reps: int = 10, inner: int = 1, warmup: int = 3) -> float:
    """Median seconds of one call of ``fn``, by CUDA events around ``inner`` back-to-back calls."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(inner):
            fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3 / inner)
    return statistics.median(times)


def graph_of(fn: Callable[[], Any], count: int):
    """A CUDA graph holding ``count`` calls of ``fn``."""
    import torch

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()  # warm up outside the capture
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(count):
            fn()
    torch.cuda.synchronize()
    return g


def device_facts() -> dict[str, Any]:
    import torch

    p = torch.cuda.get_device_properties(0)
    facts = {"name": p.name, "total_memory_bytes": p.total_memory, "sm_count": p.multi_processor_count,
             "l2_bytes": getattr(p, "L2_cache_size", None), "capability": f"{p.major}.{p.minor}",
             "torch": torch.__version__, "cuda": torch.version.cuda}
    q = "clocks.max.sm,clocks.max.mem,power.limit,driver_version,clocks.sm"
    smi = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True, text=True)
    facts["nvidia_smi"] = dict(zip(q.split(","), (v.strip() for v in smi.stdout.split(","))))
    return facts


def streaming() -> dict[str, Any]:
    import torch

    n = 1 << 29  # 2 GiB of fp32 per buffer
    x = torch.ones(n, device="cuda")
    y = torch.empty_like(x)
    z = torch.empty_like(x)
    nb = n * 4
    out = {"buffer_bytes": nb}
    for name, fn, traffic in (("copy", lambda: y.copy_(x), 2 * nb), ("read", lambda: torch.sum(x), nb),
                              ("write", lambda: y.fill_(2.0), nb),
                              ("triad", lambda: torch.add(x, y, alpha=2.0, out=z), 3 * nb)):
        t = gpu_time(fn, reps=10)
        out[name] = {"seconds": t, "bytes": traffic, "bytes_per_s": traffic / t}
    sweep = []
    for k in range(12, 31, 2):  # 4 KiB .. 1 GiB copied
        m = (1 << k) // 4
        a, b = x[:m], y[:m]
        inner = 50 if k < 26 else 5
        eager = gpu_time(lambda a=a, b=b: b.copy_(a), reps=7, inner=inner)
        g = graph_of(lambda a=a, b=b: b.copy_(a), inner)
        in_graph = gpu_time(g.replay, reps=7) / inner
        sweep.append({"bytes_copied": 1 << k, "eager_stream_s": eager, "graph_node_s": in_graph})
        del g
    out["copy_sweep"] = sweep
    return out


def launches() -> dict[str, Any]:
    import torch

    t = torch.zeros(1, device="cuda")
    count = 2000

    def host_loop() -> float:  # host seconds to enqueue ``count`` tiny kernels (the GPU keeps up)
        torch.cuda.synchronize()
        s = time.perf_counter()
        for _ in range(count):
            t.add_(1.0)
        torch.cuda.synchronize()
        return (time.perf_counter() - s) / count

    eager_host = statistics.median(host_loop() for _ in range(5))
    g = graph_of(lambda: t.add_(1.0), 1000)
    node = gpu_time(g.replay, reps=10) / 1000
    one = graph_of(lambda: t.add_(1.0), 1)

    def replay_host() -> float:
        torch.cuda.synchronize()
        s = time.perf_counter()
        for _ in range(200):
            one.replay()
        torch.cuda.synchronize()
        return (time.perf_counter() - s) / 200

    return {"eager_torch_launch_s": eager_host, "graph_node_s": node,
            "graph_launch_host_s": statistics.median(replay_host() for _ in range(5)),
            "note": "eager: host time per torch.add_ on one element, PyTorch's dispatcher included; graph node: "
                    "GPU time per kernel of a 1000-kernel graph; graph launch: host time per replay of a "
                    "one-kernel graph, synchronised every 200"}


def raw_launches() -> dict[str, Any]:
    """``benchmarks/cuda/launch.cu``, built with nvcc and run: kernel launches with the CUDA runtime
    alone, eagerly and from a graph of 20,000 empty kernels (no framework's overhead in them)."""
    import tempfile

    src = Path(__file__).resolve().parent / "cuda" / "launch.cu"
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "launch"
        subprocess.run(["nvcc", "-O2", "-o", str(exe), str(src)], check=True, capture_output=True, text=True)
        runs = [json.loads(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout)
                for _ in range(5)]
    return {key: statistics.median(r[key] for r in runs) for key in runs[0] if isinstance(runs[0][key], float)}


def gemms() -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {"square_8192": {}}
    n = 8192
    for fmt, dtype, tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True),
                             ("bf16", torch.bfloat16, False), ("fp16", torch.float16, False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        b = torch.randn(n, n, device="cuda", dtype=dtype)
        c = torch.empty(n, n, device="cuda", dtype=dtype)
        t = gpu_time(lambda a=a, b=b, c=c: torch.matmul(a, b, out=c), reps=10)
        out["square_8192"][fmt] = {"seconds": t, "flops_per_s": 2 * n ** 3 / t}
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        a8 = torch.randn(n, n, device="cuda").to(torch.float8_e4m3fn)
        b8 = torch.randn(n, n, device="cuda").to(torch.float8_e4m3fn).t()  # column-major, as cuBLASLt wants
        one = torch.tensor(1.0, device="cuda")
        t = gpu_time(lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16), reps=10)
        out["square_8192"]["fp8"] = {"seconds": t, "flops_per_s": 2 * n ** 3 / t}
    except Exception as e:
        out["square_8192"]["fp8"] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    return out


def _graph_time(fn: Callable[[], Any], count: int = 10) -> float:
    """GPU seconds per call of ``fn`` replayed from a CUDA graph of ``count`` calls (no host launch)."""
    g = graph_of(fn, count)
    t = gpu_time(g.replay, reps=5, warmup=2) / count
    del g
    return t


def gemm_sweep() -> list[dict[str, Any]]:
    """GEMM kernel time over a grid of shapes, fp32 / tf32 / bf16, from CUDA graphs."""
    import torch

    rows = []
    for fmt, dtype, tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True),
                             ("bf16", torch.bfloat16, False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for m in (1, 16, 64, 256, 512, 2048, 8192):
            for n in (384, 1536, 4096):
                for k in (384, 1536, 4096):
                    a = torch.randn(m, k, device="cuda", dtype=dtype)
                    b = torch.randn(k, n, device="cuda", dtype=dtype)
                    c = torch.empty(m, n, device="cuda", dtype=dtype)
                    t = _graph_time(lambda a=a, b=b, c=c: torch.matmul(a, b, out=c))
                    rows.append({"format": fmt, "m": m, "n": n, "k": k, "seconds": t})
        for n in (50257, 50260):  # a row length that is not a multiple of 4 against one that is
            a = torch.randn(512, 384, device="cuda", dtype=dtype)
            b = torch.randn(384, n, device="cuda", dtype=dtype)
            c = torch.empty(512, n, device="cuda", dtype=dtype)
            t = _graph_time(lambda a=a, b=b, c=c: torch.matmul(a, b, out=c))
            rows.append({"format": fmt, "m": 512, "n": n, "k": 384, "seconds": t})
    torch.backends.cuda.matmul.allow_tf32 = False
    return rows


#: (N, K) of Llama-3.3-70B's GEMMs on one of two tensor-parallel GPUs: fused QKV, attention output,
#: fused gate+up, down projection (hidden 8192, 64 query and 8 KV heads of 128, FFN 28672)
DECODE_GEMMS = {"qkv": (5120, 8192), "o_proj": (8192, 4096), "gate_up": (28672, 8192), "down": (8192, 14336)}


def decode_sweep(tokens: tuple[int, ...] = (1, 16, 64)) -> list[dict[str, Any]]:
    """The GEMMs of the NIM calibration point (Llama-3.3-70B, TP2) at ``tokens`` rows, bf16 and fp8
    (torch._scaled_mm, per-tensor scales, bf16 out), from CUDA graphs. At decode's few rows a GEMM
    streams its weights once and the sheets' bandwidth and latency decide; at a prefill's hundreds
    or thousands, the tensor cores' rate does."""
    import torch

    rows = []
    one = torch.tensor(1.0, device="cuda")
    for name, (n, k) in DECODE_GEMMS.items():
        w16 = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
        w8 = torch.randn(n, k, device="cuda").to(torch.float8_e4m3fn).t()  # column-major, as cuBLASLt wants
        for m in tokens:
            a16 = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            c16 = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            t = _graph_time(lambda a=a16, w=w16, c=c16: torch.matmul(a, w, out=c))
            rows.append({"gemm": name, "format": "bf16", "m": m, "n": n, "k": k, "seconds": t})
            if m % 16 == 0:  # cuBLASLt's FP8 GEMMs take dimensions in multiples of 16
                a8 = torch.randn(m, k, device="cuda").to(torch.float8_e4m3fn)
                t = _graph_time(lambda a=a8, w=w8: torch._scaled_mm(a, w, scale_a=one, scale_b=one,
                                                                     out_dtype=torch.bfloat16))
                rows.append({"gemm": name, "format": "fp8", "m": m, "n": n, "k": k, "seconds": t})
        del w16, w8
    return rows


def alignment_sweep() -> list[dict[str, Any]]:
    """GEMMs whose row lengths are, and are not, a multiple of 16 bytes (N = 4096 / 4097, 50260 /
    50257 -- GPT-2's vocabulary -- and K = 4096 / 4097), TF32 and bf16, from CUDA graphs: cuBLAS
    runs the tensor cores only on aligned rows at full speed."""
    import torch

    rows = []
    for fmt, dtype, tf32 in (("tf32", torch.float32, True), ("bf16", torch.bfloat16, False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for m in (16, 128, 512, 2048):
            for k, n in ((384, 4096), (384, 4097), (384, 50260), (384, 50257), (4096, 4096), (4096, 4097),
                         (4097, 4096)):
                a = torch.randn(m, k, device="cuda", dtype=dtype)
                b = torch.randn(k, n, device="cuda", dtype=dtype)
                c = torch.empty(m, n, device="cuda", dtype=dtype)
                t = _graph_time(lambda a=a, b=b, c=c: torch.matmul(a, b, out=c))
                rows.append({"format": fmt, "m": m, "n": n, "k": k, "seconds": t})
    torch.backends.cuda.matmul.allow_tf32 = False
    return rows


def conv_call(cv: dict[str, Any]) -> Callable[[], Any]:
    """One conv of a manifest (input and weight shapes, strides, pads, group) as a call on the GPU,
    on seeded-normal tensors; pads that differ at the two ends are applied to the input first."""
    import torch
    import torch.nn.functional as F

    x = torch.randn(*cv["x"], device="cuda")
    w = torch.randn(*cv["w"], device="cuda")
    pads = cv["pads"]
    if pads[:2] != pads[2:]:
        x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
        pads = [0, 0, 0, 0]

    def call():
        return F.conv2d(x, w, stride=cv["strides"], padding=pads[:2], groups=cv["group"])

    for _ in range(3):  # cuDNN's algorithm search (benchmark mode), outside any capture
        call()
    return call


def conv_sweep(convs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each distinct conv of the manifest through cuDNN (benchmark mode picks the fastest
    algorithm, as onnxruntime's exhaustive search does), fp32 and tf32, from CUDA graphs."""
    import torch

    torch.backends.cudnn.benchmark = True
    rows = []
    for tf32 in (False, True):
        torch.backends.cudnn.allow_tf32 = tf32
        for cv in convs:
            rows.append({**cv, "format": "tf32" if tf32 else "fp32", "seconds": _graph_time(conv_call(cv))})
    torch.backends.cudnn.allow_tf32 = False
    return rows


def attention() -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    out = {}
    b, h, s, d = 4, 16, 4096, 128
    for fmt, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=dtype) for _ in range(3))
        t = gpu_time(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v), reps=10)
        flops = 4 * b * h * s * s * d
        out[fmt] = {"shape": [b, h, s, d], "seconds": t, "flops": flops, "flops_per_s": flops / t}
    return out


def _sibling(name: str):
    """A sibling module (``gpu_device_models``, ``gpu_device_holdout``), imported from the package
    here, or as a file beside this one on the GPU machine (where ``python3 benchmarks/gpu_device.py``
    puts benchmarks/ on the path and hal is absent)."""
    import importlib

    try:
        return importlib.import_module(f"benchmarks.{name}")
    except ImportError:
        return importlib.import_module(name)


def measure(folder: Path, out: Path, budget_s: float, steps: set[str], profile_names: list[str]) -> int:
    run = Run(out, budget_s)
    run.data["device"] = run.step("device", device_facts)
    if "micro" in steps:
        run.data["streaming"] = run.step("streaming", streaming)
        run.data["launch"] = run.step("launch", launches)
        run.data["gemm"] = run.step("gemm", gemms)
        run.data["attention"] = run.step("attention", attention)
    if "sweep" in steps:
        run.data["gemm_sweep"] = run.step("gemm sweep", gemm_sweep)
        convs = json.loads((folder / "manifest.json").read_text()).get("convs", [])
        run.data["conv_sweep"] = run.step("conv sweep", lambda: conv_sweep(convs))
    models = _sibling("gpu_device_models")
    if "models" in steps:
        models.models(run, folder)
    if "profile" in steps:
        models.profiles(run, folder, profile_names)
    if "launch_raw" in steps:
        run.data["raw_launch"] = run.step("raw launches (nvcc)", raw_launches)
    if "alignment" in steps:
        run.data["alignment_sweep"] = run.step("alignment GEMMs", alignment_sweep)
    if "decode" in steps:
        run.data["decode_sweep"] = run.step("decode GEMMs", decode_sweep)
    if "prefill" in steps:  # the NIM point's prompts: 500 and 5000 tokens (rounded up to FP8's 16)
        run.data["prefill_sweep"] = run.step("prefill GEMMs", lambda: decode_sweep((512, 5008)))
    if "holdout" in steps:
        _sibling("gpu_device_holdout").holdout(run, folder)
    if "numerics" in steps:
        _sibling("gpu_device_numerics").numerics(run, folder, models)
    if "compiled" in steps:
        run.data["compiled"] = run.step("compiled transformers", lambda: models.compiled_transformers(run))
    run.data["device_after"] = run.step("device after", device_facts)
    run.save()
    print(json.dumps(run.data["errors"], indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="run on the GPU machine")
    m.add_argument("folder", type=Path)
    m.add_argument("out", type=Path)
    m.add_argument("--budget", type=float, default=400.0, help="seconds; steps past it are skipped")
    m.add_argument("--steps", default="micro,models",
                   help="any of micro, sweep, decode, prefill, alignment, launch_raw, models, profile, holdout, "
                        "numerics, compiled (comma-separated)")
    m.add_argument("--profile", default="", help="models whose kernels to profile (comma-separated)")
    args = ap.parse_args(argv)
    return measure(args.folder, args.out, args.budget, set(args.steps.split(",")),
                   [n for n in args.profile.split(",") if n])


if __name__ == "__main__":
    sys.exit(main())
