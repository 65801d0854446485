"""The GPU-machine half of ``calibration_gpu_numerics``: what a real GPU's TF32 does to the numbers.

The gpu target's ``native`` precision rounds every matrix operand to TF32 (10 stored mantissa bits)
and accumulates in fp32. How the hardware and its libraries get from an fp32 operand to TF32 is
not published: rounding to nearest with ties to even (what ``hal.numerics.round_tf32`` does), ties
away (PTX's ``cvt.rna.tf32.f32``), or dropping the 13 low bits (the tensor cores reading fp32 as it
lies). This step records what cuBLAS, cuDNN and onnxruntime's CUDA provider give, so that the host
half can tell which one they follow, bit for bit:

* ``conversion``: products with one nonzero term per output (A has a single nonzero per row), so
  each output is exactly the product of two converted operands: no accumulation order enters;
  cuBLAS through torch at TF32 and fp32, a 1x1 convolution through cuDNN the same way, and an ONNX
  MatMul through onnxruntime's CUDA provider with ``use_tf32`` on and off;
* ``accumulation``: dot products of up to 4096 terms whose operands are already TF32, so only the
  accumulation differs from the exact sum (which float64 holds exactly for these operands);
* ``models``: the benchmark models through onnxruntime's CUDA provider, TF32 on and off, their
  outputs sampled (every k-th element, at most 65,536 an output) for the host to set beside the gpu
  target's own runs at ``native`` and ``exact``.

Arrays go to ``gpu_numerics_probes.npz`` and ``gpu_numerics_models.npz`` beside the JSON. Like
``gpu_device.py`` this imports nothing from hal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.gpu_device import Run

#: (M, N, K) of the conversion probes: a Hopper-sized aligned GEMM, one with rows off 16 bytes
#: (cuBLAS's older align1 kernels), a small one, and a wide-K one
CONVERSION_SHAPES = ((512, 512, 64), (500, 503, 61), (256, 256, 32), (256, 512, 256))
#: the accumulation probes' lengths (64 x K times K x 64)
ACCUMULATION_KS = (256, 4096)
#: at most this many elements of each model output travel back
SAMPLE = 32768


def probe_operand(rng, shape) -> Any:
    """fp32 values whose 13 bits under TF32's mantissa are random, with 15% exact ties (only bit 12
    set) and 10% already TF32, so round-to-nearest-even, ties-away and truncation all differ somewhere."""
    import numpy as np

    x = rng.standard_normal(shape).astype(np.float32)
    u = x.view(np.uint32)
    pick = rng.random(shape)
    u[pick < 0.15] = (u[pick < 0.15] & np.uint32(0xFFFFE000)) | np.uint32(0x1000)
    keep = (pick >= 0.15) & (pick < 0.25)
    u[keep] &= np.uint32(0xFFFFE000)
    return x


def tf32_exact_operand(rng, shape, signed: bool) -> Any:
    """Values that TF32 holds exactly: 11-bit significands times 2**-2..2**0 (random signs if asked)."""
    import numpy as np

    v = (1 + rng.integers(0, 1024, shape) / 1024) * 2.0 ** rng.integers(-2, 1, shape)
    if signed:
        v *= rng.choice([-1.0, 1.0], shape)
    return v.astype(np.float32)


def one_term_rows(a: Any, k: int) -> Any:
    """An (len(a), k) matrix whose row i holds a[i] at column i % k and zeros elsewhere."""
    import numpy as np

    m = np.zeros((a.shape[0], k), dtype=np.float32)
    m[np.arange(a.shape[0]), np.arange(a.shape[0]) % k] = a
    return m


def _torch_mm(a, b, precision: str):
    import torch

    torch.set_float32_matmul_precision(precision)
    try:
        out = torch.from_numpy(a).cuda() @ torch.from_numpy(b).cuda()
        torch.cuda.synchronize()
        return out.cpu().numpy()
    finally:
        torch.set_float32_matmul_precision("highest")


def _torch_conv1x1(x, w, tf32: bool):
    import torch

    torch.backends.cudnn.allow_tf32 = tf32
    try:
        out = torch.nn.functional.conv2d(torch.from_numpy(x).cuda(), torch.from_numpy(w).cuda())
        torch.cuda.synchronize()
        return out.cpu().numpy()
    finally:
        torch.backends.cudnn.allow_tf32 = True


def _ort_matmul(ort, a, b, tf32: bool):
    import numpy as np
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["Y"])], "probe",
                          [helper.make_tensor_value_info("A", TensorProto.FLOAT, list(a.shape)),
                           helper.make_tensor_value_info("B", TensorProto.FLOAT, list(b.shape))],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [a.shape[0], b.shape[1]])])
    blob = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(blob, so, providers=[("CUDAExecutionProvider", {"use_tf32": "1" if tf32 else "0"})])
    return np.asarray(sess.run(None, {"A": a, "B": b})[0])


def kernels_of(fn) -> tuple[Any, list[str]]:
    """``fn()``'s value and the names of the CUDA kernels it ran (CUPTI through torch's profiler,
    which sees onnxruntime's kernels too); no names where the profiler fails."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    try:
        prof = profile(activities=[ProfilerActivity.CUDA])
        prof.__enter__()
    except Exception:  # no CUDA profiler (a dry run on a CPU build of torch)
        return fn(), []
    try:
        value = fn()
        torch.cuda.synchronize()
    finally:
        prof.__exit__(None, None, None)
    return value, sorted({e.name[:160] for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA})


def exact_fraction(out: Any, a: Any, b: Any) -> float:
    """The share of ``out`` (a one-term product, ``one_term_rows(a, k) @ b``) that is bit for bit
    the exact product of the fp32 operands: what fp32 arithmetic must give."""
    import numpy as np

    rows = np.arange(a.shape[0]) % b.shape[0]
    want = (a.astype(np.float64)[:, None] * b[rows].astype(np.float64)).astype(np.float32)
    return float(np.mean(np.asarray(out, dtype=np.float32).view(np.uint32) == want.view(np.uint32)))


def conversion(arrays: dict[str, Any], ort) -> dict[str, Any]:
    """The conversion probes: the TF32 outputs and their operands go into ``arrays`` for the host to
    classify; the fp32 controls are only checked here against the exact products."""
    import numpy as np

    rng = np.random.default_rng(20261204)
    done: dict[str, Any] = {}
    for m, n, k in CONVERSION_SHAPES:
        tag = f"{m}x{n}x{k}"
        a, b = probe_operand(rng, (m,)), probe_operand(rng, (k, n))
        arrays[f"conv/{tag}/a"], arrays[f"conv/{tag}/b"] = a, b
        full = one_term_rows(a, k)
        for label, fn in (("torch_tf32", lambda f=full, b=b: _torch_mm(f, b, "high")),
                          ("torch_fp32", lambda f=full, b=b: _torch_mm(f, b, "highest")),
                          ("ort_tf32", lambda f=full, b=b: _ort_matmul(ort, f, b, True)),
                          ("ort_fp32", lambda f=full, b=b: _ort_matmul(ort, f, b, False))):
            if label.startswith("ort") and ort is None:
                continue
            try:
                fn()  # onnxruntime's first run also picks its algorithms: the kernels are the second's
                y, names = kernels_of(fn)
                row = done.setdefault(tag, {})
                row[f"{label}_kernels"] = names
                if label.endswith("fp32"):
                    row[f"{label}_exact_share"] = exact_fraction(y, a, b)
                else:
                    arrays[f"conv/{tag}/{label}"] = y
            except Exception as e:
                done.setdefault("errors", []).append(f"{tag} {label}: {type(e).__name__}: {str(e)[:200]}")
    # a 1x1 convolution through cuDNN: at each pixel one input channel is nonzero
    cin, cout, hw = 64, 128, 32
    xs = probe_operand(rng, (hw * hw,))
    x = np.zeros((1, cin, hw, hw), dtype=np.float32)
    x[0, np.arange(hw * hw) % cin, np.arange(hw * hw) // hw, np.arange(hw * hw) % hw] = xs
    w = probe_operand(rng, (cout, cin, 1, 1))
    arrays["cudnn/x"], arrays["cudnn/w"] = x, w
    for label, tf32 in (("torch_tf32", True), ("torch_fp32", False)):
        try:
            y, names = kernels_of(lambda t=tf32: _torch_conv1x1(x, w, t))
            done.setdefault("cudnn", {})[f"{label}_kernels"] = names
            if tf32:
                arrays[f"cudnn/{label}"] = y
            else:  # (cout, pixels) against one-term rows: pixel p times w[:, p % cin]
                done.setdefault("cudnn", {})[f"{label}_exact_share"] = exact_fraction(
                    y.reshape(cout, -1).T, xs, w.reshape(cout, cin).T)
        except Exception as e:
            done.setdefault("errors", []).append(f"cudnn {label}: {type(e).__name__}: {str(e)[:200]}")
    return done


def accumulation(arrays: dict[str, Any]) -> dict[str, Any]:
    """The accumulation probes: operands TF32 holds, positive and of mixed signs."""
    import numpy as np

    rng = np.random.default_rng(20261205)
    done: dict[str, list[str]] = {}
    for k in ACCUMULATION_KS:
        for signed in (False, True):
            tag = f"k{k}_{'signed' if signed else 'positive'}"
            a, b = tf32_exact_operand(rng, (64, k), signed), tf32_exact_operand(rng, (k, 64), signed)
            arrays[f"acc/{tag}/a"], arrays[f"acc/{tag}/b"] = a, b
            arrays[f"acc/{tag}/torch_tf32"], names = kernels_of(lambda a=a, b=b: _torch_mm(a, b, "high"))
            arrays[f"acc/{tag}/torch_fp32"] = _torch_mm(a, b, "highest")
            done[tag] = names
    return {"tf32_kernels": done}


def sampled(x: Any) -> Any:
    """Every k-th element of ``x`` flattened, k the least that keeps it to ``SAMPLE`` elements."""
    import numpy as np

    flat = np.asarray(x).reshape(-1)
    return flat[:: max(1, -(-flat.size // SAMPLE))]


def models(run: Run, folder: Path, arrays: dict[str, Any], ort, restore) -> dict[str, Any]:
    """Each benchmark model through onnxruntime's CUDA provider with TF32 on and off (weights
    filled by ``restore``, as the timing step fills them), its outputs sampled into ``arrays``."""
    import numpy as np

    manifest = json.loads((folder / "manifest.json").read_text())
    done: dict[str, Any] = {}
    for entry in manifest["models"]:
        if run.left() < 30:
            run.data["errors"].append(f"numerics: out of time before {entry['name']}")
            break
        proto = restore(folder / entry["file"])
        feeds = dict(np.load(folder / entry["feeds"]))
        blob = proto.SerializeToString()
        so = ort.SessionOptions()
        so.log_severity_level = 3
        for config in ("tf32", "fp32"):
            try:
                sess = ort.InferenceSession(blob, so, providers=[
                    ("CUDAExecutionProvider", {"use_tf32": "1" if config == "tf32" else "0"})])
                for i, y in enumerate(sess.run(None, feeds)):
                    arrays[f"model/{entry['name']}/{config}/{i}"] = sampled(y)
                done.setdefault(entry["name"], []).append(config)
            except Exception as e:
                run.data["errors"].append(f"numerics {entry['name']} {config}: {type(e).__name__}: {str(e)[:200]}")
    return done


def numerics(run: Run, folder: Path, models_module) -> None:
    """The whole step: probes, then models while the budget lasts; arrays to two ``.npz`` files."""
    import numpy as np

    arrays: dict[str, Any] = {}
    ort = models_module._onnxruntime(run)
    out: dict[str, Any] = {}
    out["conversion"] = run.step("numerics: conversion probes", lambda: conversion(arrays, ort))
    out["accumulation"] = run.step("numerics: accumulation probes", lambda: accumulation(arrays))
    if ort is not None and (folder / "manifest.json").is_file():
        out["models"] = run.step("numerics: models",
                                 lambda: models(run, folder, arrays, ort, models_module._restore))
    # two files: each that comes back from the GPU machine holds at most 16 MiB
    np.savez_compressed(run.out.parent / "gpu_numerics_probes.npz",
                        **{k: v for k, v in arrays.items() if not k.startswith("model/")})
    np.savez_compressed(run.out.parent / "gpu_numerics_models.npz",
                        **{k: v for k, v in arrays.items() if k.startswith("model/")})
    run.data["numerics"] = out
    run.save()
