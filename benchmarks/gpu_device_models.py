"""The GPU-machine half's model steps: the benchmark models through onnxruntime's CUDA provider
(timed, checked against its CPU provider, and their kernels traced), and the benchmark
transformers compiled by PyTorch's inductor. ``gpu_device.py`` runs them; like it, this file
imports nothing from hal (the GPU machine has torch and onnx, not hal's dependencies).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.gpu_device import Run


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


def _cuda_session(ort, blob: bytes, feeds: dict[str, Any], cuda: dict[str, str], outputs: list | None = None,
                  optimized: Path | None = None):
    """A session on onnxruntime's CUDA provider with its feeds bound on the GPU; its outputs bound to
    the GPU too, into fixed buffers shaped like ``outputs`` when given (a CUDA graph needs them)."""
    import numpy as np

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
    sess = ort.InferenceSession(blob, so, providers=[("CUDAExecutionProvider", cuda), "CPUExecutionProvider"])
    binding = sess.io_binding()
    for name, arr in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr, "cuda", 0))
    for i, o in enumerate(sess.get_outputs()):
        if outputs is None:
            binding.bind_output(o.name, "cuda")
        else:
            binding.bind_ortvalue_output(o.name, ort.OrtValue.ortvalue_from_numpy(np.empty_like(outputs[i]), "cuda", 0))
    return sess, binding


def ort_model(ort, entry: dict[str, Any], folder: Path, scratch: Path) -> dict[str, Any]:
    """One model through onnxruntime's CUDA provider: fp32, TF32, fp32 as a CUDA graph."""
    import numpy as np

    proto = _restore(folder / entry["file"])
    feeds = dict(np.load(folder / entry["feeds"]))
    blob = proto.SerializeToString()
    cpu = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    want = cpu.run(None, feeds)
    res: dict[str, Any] = {"nodes_in_model": len(proto.graph.node)}
    opt = scratch / f"{entry['name']}_opt.onnx"
    for config, opts in (("fp32", {"use_tf32": "0"}), ("tf32", {"use_tf32": "1"}),
                         ("fp32_cuda_graph", {"use_tf32": "0", "enable_cuda_graph": "1"})):
        try:
            # a CUDA graph needs fixed output buffers, shaped as the CPU run's outputs
            sess, binding = _cuda_session(ort, blob, feeds, opts, want if config.endswith("cuda_graph") else None, opt)
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
        if ort is None:
            break  # the reason is in the errors already
        value = run.step(f"model {entry['name']}", lambda e=entry: ort_model(ort, e, folder, scratch))
        if value is not None:
            run.data["models"][entry["name"]] = value
        run.save()


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


def kernel_profile(ort, entry: dict[str, Any], folder: Path, runs: int = 20) -> dict[str, Any]:
    """The CUDA kernels one fp32 run through onnxruntime's CUDA provider launches."""
    import numpy as np

    sess, binding = _cuda_session(ort, _restore(folder / entry["file"]).SerializeToString(),
                                  dict(np.load(folder / entry["feeds"])), {"use_tf32": "0"})
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
