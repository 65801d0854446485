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
* GEMM throughput by input format at 8192^3 and at the benchmark transformers' GEMM shapes;
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
* with ``--steps compiled``, the benchmark transformers as the generator's PyTorch modules, eager
  and compiled by inductor with CUDA graphs, fp32 and bf16: time, kernels per run, GPU busy time.

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

GEMM_SHAPES = {  # (M, N, K) of the benchmark transformers' GEMMs: batch 4 x 128 tokens, hidden 384
    "qkv_proj_512x384x384": (512, 384, 384), "ffn_up_512x1536x384": (512, 1536, 384),
    "ffn_down_512x384x1536": (512, 384, 1536), "lm_head_512x50257x384": (512, 50257, 384),
}


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

    out: dict[str, Any] = {"square_8192": {}, "shapes": {}}
    n = 8192
    for fmt, dtype, tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True),
                             ("bf16", torch.bfloat16, False), ("fp16", torch.float16, False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        b = torch.randn(n, n, device="cuda", dtype=dtype)
        c = torch.empty(n, n, device="cuda", dtype=dtype)
        t = gpu_time(lambda a=a, b=b, c=c: torch.matmul(a, b, out=c), reps=10)
        out["square_8192"][fmt] = {"seconds": t, "flops_per_s": 2 * n ** 3 / t}
        if fmt in ("fp32", "tf32", "bf16"):
            for name, (m, nn, k) in GEMM_SHAPES.items():
                x = torch.randn(m, k, device="cuda", dtype=dtype)
                w = torch.randn(k, nn, device="cuda", dtype=dtype)
                y = torch.empty(m, nn, device="cuda", dtype=dtype)
                ts = gpu_time(lambda x=x, w=w, y=y: torch.matmul(x, w, out=y), reps=7, inner=20)
                out["shapes"].setdefault(name, {"m": m, "n": nn, "k": k})[fmt] = {
                    "seconds": ts, "flops_per_s": 2 * m * nn * k / ts}
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


def conv_sweep(convs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each distinct conv of the manifest through cuDNN (benchmark mode picks the fastest
    algorithm, as onnxruntime's exhaustive search does), fp32 and tf32, from CUDA graphs."""
    import torch
    import torch.nn.functional as F

    torch.backends.cudnn.benchmark = True
    rows = []
    for tf32 in (False, True):
        torch.backends.cudnn.allow_tf32 = tf32
        for cv in convs:
            x = torch.randn(*cv["x"], device="cuda")
            w = torch.randn(*cv["w"], device="cuda")
            pads = cv["pads"]
            if pads[:2] != pads[2:]:
                x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
                pads = [0, 0, 0, 0]

            def run(x=x, w=w, cv=cv, pads=pads):
                return F.conv2d(x, w, stride=cv["strides"], padding=pads[:2], groups=cv["group"])

            for _ in range(3):
                run()
            rows.append({**cv, "format": "tf32" if tf32 else "fp32", "seconds": _graph_time(run)})
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


def _restore(path: Path, seed: int = 0):
    """The model with every stripped float weight filled from a seeded normal (scale 0.02)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    rng = np.random.default_rng(seed)
    for i, t in enumerate(proto.graph.initializer):
        if t.data_location == onnx.TensorProto.DEFAULT and not t.raw_data and not t.float_data and t.dims \
                and t.data_type == onnx.TensorProto.FLOAT:
            arr = (rng.standard_normal(tuple(t.dims), dtype=np.float32) * 0.02).astype(np.float32)
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(arr, t.name))
    return proto


def _median_wall(fn: Callable[[], Any], budget_s: float, max_reps: int = 50, warmup: int = 5) -> tuple[float, int]:
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times: list[float] = []
    end = time.monotonic() + budget_s
    while len(times) < max_reps and (len(times) < 5 or time.monotonic() < end):
        s = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - s)
    return statistics.median(times), len(times)


def ort_model(ort, entry: dict[str, Any], folder: Path, scratch: Path) -> dict[str, Any]:
    """One model through onnxruntime's CUDA provider: fp32, TF32, fp32 as a CUDA graph."""
    import numpy as np

    proto = _restore(folder / entry["file"])
    feeds = dict(np.load(folder / entry["feeds"]))
    blob = proto.SerializeToString()
    cpu = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    want = cpu.run(None, feeds)
    res: dict[str, Any] = {"nodes_in_model": len(proto.graph.node)}

    def session(**cuda: str):
        so = ort.SessionOptions()
        so.log_severity_level = 3
        opt = scratch / f"{entry['name']}_opt.onnx"
        so.optimized_model_filepath = str(opt)
        s = ort.InferenceSession(blob, so, providers=[("CUDAExecutionProvider", cuda), "CPUExecutionProvider"])
        return s, opt

    for config, opts in (("fp32", {"use_tf32": "0"}), ("tf32", {"use_tf32": "1"}),
                         ("fp32_cuda_graph", {"use_tf32": "0", "enable_cuda_graph": "1"})):
        try:
            sess, opt = session(**opts)
            binding = sess.io_binding()
            for name, arr in feeds.items():
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr, "cuda", 0))
            if config.endswith("cuda_graph"):  # fixed output buffers, shaped as the CPU run's outputs
                for o, ref in zip(sess.get_outputs(), want):
                    buffer = ort.OrtValue.ortvalue_from_numpy(np.empty_like(ref), "cuda", 0)
                    binding.bind_ortvalue_output(o.name, buffer)
            else:
                for o in sess.get_outputs():
                    binding.bind_output(o.name, "cuda")
            sess.run_with_iobinding(binding)
            got = [v.numpy() for v in binding.get_outputs()]
            err = max(float(np.max(np.abs(g.astype(np.float64) - w)) / (float(np.max(np.abs(w))) or 1.0))
                      for g, w in zip(got, want))
            t, reps = _median_wall(lambda s=sess, b=binding: s.run_with_iobinding(b), budget_s=3.0)
            entry_res = {"median_s": t, "reps": reps, "max_err_vs_cpu_rel_to_max": err}
            if config == "fp32" and opt.is_file():
                import onnx

                o = onnx.load(str(opt), load_external_data=False)
                ops: dict[str, int] = {}
                for n in o.graph.node:
                    ops[n.op_type] = ops.get(n.op_type, 0) + 1
                entry_res["optimized_nodes"] = len(o.graph.node)
                entry_res["memcpy_nodes"] = ops.get("MemcpyToHost", 0) + ops.get("MemcpyFromHost", 0)
                entry_res["optimized_op_counts"] = ops
            res[config] = entry_res
        except Exception as e:
            res[config] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    return res


def torch_model(entry: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Fallback when onnxruntime's CUDA provider is missing: onnx2torch, eager PyTorch, fp32."""
    import numpy as np
    import torch
    from onnx2torch import convert

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = convert(_restore(folder / entry["file"])).cuda().eval()
    feeds = [torch.from_numpy(v).cuda() for v in np.load(folder / entry["feeds"]).values()]
    with torch.inference_mode():
        t, reps = _median_wall(lambda: model(*feeds), budget_s=3.0)
    return {"torch_eager_fp32": {"median_s": t, "reps": reps}}


def _onnxruntime(run: Run):
    """onnxruntime with its CUDA provider, or None (the reason goes to the errors)."""
    import torch  # loads CUDA's libraries before onnxruntime looks for them

    del torch
    try:
        import onnxruntime as ort

        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()
        run.data["onnxruntime"] = {"version": ort.__version__, "providers": ort.get_available_providers()}
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ort
        run.data["errors"].append("onnxruntime: no CUDAExecutionProvider")
    except Exception as e:
        run.data["errors"].append(f"onnxruntime: {type(e).__name__}: {e}")
    return None


def models(run: Run, folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    ort = _onnxruntime(run)
    scratch = Path("/tmp/gpu_device_scratch")
    scratch.mkdir(exist_ok=True)
    run.data.setdefault("models", {})
    for entry in manifest["models"]:
        if run.left() < 20:
            run.data["errors"].append(f"out of time before {entry['name']}")
            break
        if ort is not None:
            value = run.step(f"model {entry['name']}", lambda e=entry: ort_model(ort, e, folder, scratch))
        else:
            value = run.step(f"model {entry['name']} (torch)", lambda e=entry: torch_model(e, folder))
        if value is not None:
            run.data["models"][entry["name"]] = value
        run.save()


def kernel_profile(ort, entry: dict[str, Any], folder: Path, runs: int = 20) -> dict[str, Any]:
    """The CUDA kernels one fp32 run through onnxruntime's CUDA provider launches."""
    import numpy as np

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(_restore(folder / entry["file"]).SerializeToString(), so,
                                providers=[("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"])
    binding = sess.io_binding()
    for name, arr in dict(np.load(folder / entry["feeds"])).items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr, "cuda", 0))
    for o in sess.get_outputs():
        binding.bind_output(o.name, "cuda")
    return _traced_kernels(lambda: sess.run_with_iobinding(binding), runs, f"ort_{entry['name']}")


def profiles(run: Run, folder: Path, names: list[str]) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    ort = _onnxruntime(run)
    Path("/tmp/gpu_device_scratch").mkdir(exist_ok=True)
    run.data.setdefault("profiles", {})
    for entry in manifest["models"]:
        if ort is None or entry["name"] not in names:
            continue
        if run.left() < 20:
            run.data["errors"].append(f"out of time before profiling {entry['name']}")
            break
        value = run.step(f"profile {entry['name']}", lambda e=entry: kernel_profile(ort, e, folder))
        if value is not None:
            run.data["profiles"][entry["name"]] = value


def _traced_kernels(fn: Callable[[], Any], runs: int, label: str) -> dict[str, Any]:
    """The CUDA kernels ``runs`` calls of ``fn`` launch, from CUPTI through torch's profiler (it
    records every kernel of the process, onnxruntime's too): per kernel name, count and GPU time
    per run; the wall time per run."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        s = time.perf_counter()
        for _ in range(runs):
            fn()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - s) / runs
    scratch = Path("/tmp/gpu_device_scratch")
    scratch.mkdir(exist_ok=True)
    trace = scratch / f"{label}_trace.json"
    prof.export_chrome_trace(str(trace))
    kernels: dict[str, list[float]] = {}
    for ev in json.loads(trace.read_text()).get("traceEvents", []):
        if ev.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and "dur" in ev:
            k = kernels.setdefault(f"{ev['cat']}:{ev['name'][:160]}", [0, 0.0])
            k[0] += 1
            k[1] += float(ev["dur"]) * 1e-6
    rows = sorted(([name, n / runs, t / runs] for name, (n, t) in kernels.items()), key=lambda r: -r[2])
    return {"runs": runs, "wall_per_run_s": wall, "kernels_per_run": sum(r[1] for r in rows),
            "gpu_busy_per_run_s": sum(r[2] for r in rows), "by_kernel": rows}


def compiled_transformers(run: Run) -> dict[str, Any]:
    """The benchmark transformers as PyTorch modules (the generator's own classes and seeded
    weights), eager and through torch.compile's inductor with CUDA graphs (mode "reduce-overhead"):
    a runtime that fuses, as the gpu target's model assumes, beside onnxruntime's op-by-op one."""
    import importlib.util

    import torch

    path = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "generate_transformers.py"
    spec = importlib.util.spec_from_file_location("generate_transformers", path)
    gen = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = gen  # its dataclasses look their module up while the class is built
    spec.loader.exec_module(gen)
    torch.backends.cuda.matmul.allow_tf32 = False
    out: dict[str, Any] = {}
    for name, cls, shape, with_mask in (("bert-bench", gen.BertEncoder, gen.BERT_BENCH, True),
                                        ("gpt-bench", gen.GptDecoder, gen.GPT_BENCH, False)):
        inputs = [t.cuda() for t in gen._example_inputs(shape, seed=0, with_mask=with_mask)]
        for config, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            if run.left() < 60:
                run.data["errors"].append(f"out of time before compiling {name} {config}")
                return out
            model = gen._init(cls(shape), seed=0).to(device="cuda", dtype=dtype).eval()
            row: dict[str, Any] = {}
            try:
                with torch.inference_mode():
                    row["eager_s"], _ = _median_wall(lambda m=model, x=inputs: m(*x), budget_s=2.0)
                    row["eager"] = _traced_kernels(lambda m=model, x=inputs: m(*x), 10,
                                                   f"{name}_{config}_eager")
                    torch._dynamo.reset()
                    fast = torch.compile(model, mode="reduce-overhead")
                    t = time.monotonic()
                    for _ in range(3):
                        fast(*inputs)
                    torch.cuda.synchronize()
                    row["compile_s"] = time.monotonic() - t
                    row["compiled_graph_s"], _ = _median_wall(lambda f=fast, x=inputs: f(*x), budget_s=2.0)
                    row["compiled_graph"] = _traced_kernels(lambda f=fast, x=inputs: f(*x), 10,
                                                            f"{name}_{config}_compiled")
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            out.setdefault(name, {})[config] = row
            run.save()
    return out


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
    if "models" in steps:
        models(run, folder)
    if "profile" in steps:
        profiles(run, folder, profile_names)
    if "launch_raw" in steps:
        run.data["raw_launch"] = run.step("raw launches (nvcc)", raw_launches)
    if "alignment" in steps:
        run.data["alignment_sweep"] = run.step("alignment GEMMs", alignment_sweep)
    if "decode" in steps:
        run.data["decode_sweep"] = run.step("decode GEMMs", decode_sweep)
    if "prefill" in steps:  # the NIM point's prompts: 500 and 5000 tokens (rounded up to FP8's 16)
        run.data["prefill_sweep"] = run.step("prefill GEMMs", lambda: decode_sweep((512, 5008)))
    if "compiled" in steps:
        run.data["compiled"] = run.step("compiled transformers", lambda: compiled_transformers(run))
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
                   help="any of micro, sweep, decode, prefill, alignment, launch_raw, models, profile, compiled "
                        "(comma-separated)")
    m.add_argument("--profile", default="", help="models whose kernels to profile (comma-separated)")
    args = ap.parse_args(argv)
    return measure(args.folder, args.out, args.budget, set(args.steps.split(",")),
                   [n for n in args.profile.split(",") if n])


if __name__ == "__main__":
    sys.exit(main())
