"""The GPU-machine half of ``calibration_gpu_numerics``: what a real GPU's matrix units do to the numbers.

The gpu target's ``native`` precision rounds every matrix operand to TF32 (10 stored mantissa bits)
and accumulates in fp32. How the hardware and its libraries get from an fp32 operand to TF32 is
not published: rounding to nearest with ties to even (what ``hal.numerics.round_tf32`` does), ties
away (PTX's ``cvt.rna.tf32.f32``), or dropping the 13 low bits (the tensor cores reading fp32 as it
lies). This step records what cuBLAS, cuDNN and onnxruntime's CUDA provider give, so that the host
half can tell which one they follow, bit for bit:

* ``conversion``: products with one nonzero term per output (A has a single nonzero per row), so
  each output is exactly the product of two converted operands: no accumulation order enters;
  cuBLAS through torch at TF32 and fp32, a 1x1 convolution through cuDNN the same way, and an ONNX
  MatMul through onnxruntime's CUDA provider with ``use_tf32`` on and off; small, large and batched
  (attention-shaped) products, each with the kernels it ran;
* ``accumulation``: dot products of up to 4096 terms whose operands are already TF32, so only the
  accumulation differs from the exact sum (which float64 holds exactly for these operands);
* ``accumulation_sweep``: such products over lengths 64..16384 for TF32, bf16 (fp32 result) and
  fp8 e4m3 operands, fp8 both with the tensor cores' fast accumulation and cuBLASLt's promoted one;
* ``fp8_holdout``: fp8 GEMMs held out from the fit of the accumulation rule: normal activations (and
  their ReLU) and weights, scaled per tensor as Transformer Engine scales them, K 768-4096;
* ``wide_sums``: TF32, bf16 and fp16 sums in GEMMs wide enough (2048 x K x 2048) that cuBLAS runs
  one kernel over the whole K axis;
* ``fp8_mlp``: a transformer's MLP block (768 -> 3072 -> 768, ReLU) through fp8 GEMMs as the gpu
  target's fp8 precision computes it, for the host to set beside the target's own output;
* ``models``: the benchmark transformers through onnxruntime's CUDA provider, TF32 on and off, their
  outputs sampled (every k-th element, at most 32,768 an output) for the host to set beside the gpu
  target's own runs at ``native`` and ``exact``, with the kernels each TF32 run launched.

Arrays go to ``gpu_numerics_probes.npz`` and ``gpu_numerics_models.npz`` beside the JSON. Like
``gpu_device.py`` this imports nothing from hal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.gpu_device import Run

#: (M, N, K) of the conversion probes: an aligned GEMM, one with rows off 16 bytes (cuBLAS ran it
#: on the CUDA cores), a small one, and a wide-K one
CONVERSION_SHAPES = ((512, 512, 64), (500, 503, 61), (256, 256, 32), (256, 512, 256))
#: the accumulation probes' lengths (64 x K times K x 64)
ACCUMULATION_KS = (256, 4096)
#: the lengths of the accumulation sweep (128 x K times K x 128) over TF32, bf16 and fp8 operands
SWEEP_KS = (64, 256, 1024, 4096, 16384)
#: at most this many elements of each model output travel back
SAMPLE = 32768
#: large products whose outputs are classified on the GPU machine (too big to travel): cuBLAS's
#: Hopper kernels run on shapes like these, the small probes' on Ampere-era ones
LARGE_SHAPES = ((4096, 4096, 256), (2048, 8192, 1024))
#: attention-like batched products (batch, M, N, K): Q K^T and P V of BERT-base's heads
BATCHED_SHAPES = ((48, 128, 128, 64), (48, 128, 64, 128))


def to_tf32(x: Any, mode: str) -> Any:
    """fp32 ``x`` brought to TF32 by ``mode``: ``nearest_even``, ``ties_away`` (PTX's cvt.rna) or
    ``truncate`` (the 13 low bits dropped); ``fp32`` leaves it. For finite normal values."""
    import numpy as np

    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    if mode == "nearest_even":
        u = u + 0xFFF + ((u >> 13) & 1)
    elif mode == "ties_away":
        u = u + 0x1000
    elif mode == "fp32":
        return np.asarray(x, dtype=np.float32)
    return (u & 0xFFFFE000).astype(np.uint32).view(np.float32)


#: the ways an fp32 operand may reach the tensor cores (``to_tf32``'s modes)
MODES = ("nearest_even", "ties_away", "truncate", "fp32")


def mode_shares(out: Any, a: Any, b: Any) -> dict[str, float]:
    """For a one-term product ``one_term_rows(a, k) @ b`` (batched: a leading axis on all three),
    the share of ``out`` that is bit for bit the product of the operands brought to TF32 by each mode."""
    import numpy as np

    rows = np.arange(a.shape[-1]) % b.shape[-2]
    shares = {}
    for mode in MODES:
        ta, tb = to_tf32(a, mode).astype(np.float64), to_tf32(b, mode)[..., rows, :].astype(np.float64)
        want = (ta[..., None] * tb).astype(np.float32)
        shares[mode] = float(np.mean(np.asarray(out, dtype=np.float32).view(np.uint32) == want.view(np.uint32)))
    return shares


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
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    # IR 8: onnxruntime 1.31 refuses the newer IR that onnx 1.23 writes by default
    blob = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(blob, so, providers=[("CUDAExecutionProvider", {"use_tf32": "1" if tf32 else "0"})])
    return np.asarray(sess.run(None, {"A": a, "B": b})[0])


def kernels_of(fn) -> tuple[Any, dict[str, int]]:
    """``fn()``'s value and the CUDA kernels it ran, by name with their counts (CUPTI through torch's
    profiler, which sees onnxruntime's kernels too; copies and memsets left out); none where the
    profiler fails."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    try:
        prof = profile(activities=[ProfilerActivity.CUDA])
        prof.__enter__()
    except Exception:  # no CUDA profiler (a dry run on a CPU build of torch)
        return fn(), {}
    try:
        value = fn()
        torch.cuda.synchronize()
    finally:
        prof.__exit__(None, None, None)
    names: dict[str, int] = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA and not e.name.startswith(("Memcpy", "Memset")):
            names[e.name[:160]] = names.get(e.name[:160], 0) + 1
    return value, names


def _record(done: dict[str, Any], tag: str, label: str, fn, a: Any, b: Any) -> Any:
    """Run one probe twice (onnxruntime's first run also picks its algorithms) and record the second
    run's kernels and mode shares under ``done[tag]``; its output, or None on failure (in errors)."""
    try:
        fn()
        y, names = kernels_of(fn)
        done.setdefault(tag, {}).update({f"{label}_kernels": names, f"{label}_shares": mode_shares(y, a, b)})
        return y
    except Exception as e:
        done.setdefault("errors", []).append(f"{tag} {label}: {type(e).__name__}: {str(e)[:200]}")
        return None


def _products(full: Any, b: Any, ort, labels: tuple[str, ...]):
    """The probe calls of one product by label: torch (cuBLAS) and onnxruntime's MatMul, TF32 and fp32."""
    calls = {"torch_tf32": lambda: _torch_mm(full, b, "high"), "torch_fp32": lambda: _torch_mm(full, b, "highest"),
             "ort_tf32": lambda: _ort_matmul(ort, full, b, True), "ort_fp32": lambda: _ort_matmul(ort, full, b, False)}
    return [(label, calls[label]) for label in labels if ort is not None or not label.startswith("ort")]


def conversion(arrays: dict[str, Any], ort) -> dict[str, Any]:
    """The conversion probes, each output classified by ``mode_shares``; the small probes' TF32
    outputs and operands also go into ``arrays``, for the host to check against hal's own rounding."""
    import numpy as np

    rng = np.random.default_rng(20261204)
    done: dict[str, Any] = {}
    every = ("torch_tf32", "torch_fp32", "ort_tf32", "ort_fp32")
    for m, n, k in CONVERSION_SHAPES:
        tag = f"{m}x{n}x{k}"
        a, b = probe_operand(rng, (m,)), probe_operand(rng, (k, n))
        arrays[f"conv/{tag}/a"], arrays[f"conv/{tag}/b"] = a, b
        for label, fn in _products(one_term_rows(a, k), b, ort, every):
            y = _record(done, tag, label, fn, a, b)
            if y is not None and label.endswith("tf32"):
                arrays[f"conv/{tag}/{label}"] = y
    for m, n, k in LARGE_SHAPES:  # classified only here: the outputs are too big to travel
        a, b = probe_operand(rng, (m,)), probe_operand(rng, (k, n))
        for label, fn in _products(one_term_rows(a, k), b, ort, ("torch_tf32", "torch_fp32", "ort_tf32")):
            _record(done, f"{m}x{n}x{k}", label, fn, a, b)
    for bt, m, n, k in BATCHED_SHAPES:
        a, b = probe_operand(rng, (bt, m)), probe_operand(rng, (bt, k, n))
        full = np.stack([one_term_rows(r, k) for r in a])
        for label, fn in _products(full, b, ort, ("torch_tf32", "torch_fp32", "ort_tf32")):
            _record(done, f"batched_{bt}x{m}x{n}x{k}", label, fn, a, b)
    # a 1x1 convolution through cuDNN: at each pixel one input channel is nonzero; as (pixels, cout)
    # it is one_term_rows(xs, cin) @ w.T
    cin, cout, hw = 64, 128, 32
    xs = probe_operand(rng, (hw * hw,))
    x = np.zeros((1, cin, hw, hw), dtype=np.float32)
    x[0, np.arange(hw * hw) % cin, np.arange(hw * hw) // hw, np.arange(hw * hw) % hw] = xs
    w = probe_operand(rng, (cout, cin, 1, 1))
    arrays["cudnn/x"], arrays["cudnn/w"] = x, w
    for label, tf32 in (("torch_tf32", True), ("torch_fp32", False)):
        y = _record(done, "cudnn", label, lambda t=tf32: _torch_conv1x1(x, w, t).reshape(cout, -1).T,
                    xs, w.reshape(cout, cin).T)
        if y is not None and tf32:
            arrays[f"cudnn/{label}"] = y
    return done


def accumulation(arrays: dict[str, Any]) -> dict[str, Any]:
    """The accumulation probes: operands TF32 holds, positive and of mixed signs."""
    import numpy as np

    rng = np.random.default_rng(20261205)
    done: dict[str, dict[str, int]] = {}
    for k in ACCUMULATION_KS:
        for signed in (False, True):
            tag = f"k{k}_{'signed' if signed else 'positive'}"
            a, b = sweep_operand(rng, (64, k), "tf32", signed), sweep_operand(rng, (k, 64), "tf32", signed)
            arrays[f"acc/{tag}/a"], arrays[f"acc/{tag}/b"] = a, b
            arrays[f"acc/{tag}/torch_tf32"], names = kernels_of(lambda a=a, b=b: _torch_mm(a, b, "high"))
            arrays[f"acc/{tag}/torch_fp32"] = _torch_mm(a, b, "highest")
            done[tag] = names
    return {"tf32_kernels": done}


def sweep_operand(rng, shape, fmt: str, signed: bool) -> Any:
    """fp32 values the format holds exactly (so the products are exact and only the accumulation
    differs from the exact sum): TF32's 11-bit or bf16's 8-bit significands times 2**-2..2**0, or
    fp8 e4m3's normal values (2**-6..448), positive or of random signs."""
    import numpy as np

    if fmt == "fp8":
        e = rng.integers(-6, 9, shape)
        v = (1 + rng.integers(0, 8, shape) / 8) * 2.0 ** e
        v = np.minimum(v, 448.0)
    else:
        bits = 10 if fmt == "tf32" else 7
        v = (1 + rng.integers(0, 2 ** bits, shape) / 2 ** bits) * 2.0 ** rng.integers(-2, 1, shape)
    if signed:
        v *= rng.choice([-1.0, 1.0], shape)
    return v.astype(np.float32)


def _scaled_mm(a, b, fast: bool):
    """fp8 e4m3 A @ B through cuBLASLt (torch._scaled_mm, scales 1, fp32 out); ``fast``: the tensor
    cores' own accumulation throughout (Transformer Engine's forward GEMMs), else cuBLASLt's
    periodic promotion to fp32 on the CUDA cores."""
    import torch

    one = torch.ones((), device="cuda", dtype=torch.float32)
    a8 = torch.from_numpy(a).cuda().to(torch.float8_e4m3fn)
    b8 = torch.from_numpy(b).cuda().to(torch.float8_e4m3fn).t().contiguous().t()  # column-major B
    out = torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.float32, use_fast_accum=fast)
    torch.cuda.synchronize()
    return out.cpu().numpy()


def _half_mm(a, b, dtype: str):
    """A @ B in a 16-bit type (torch's name for it) with an fp32 result (torch.mm's out_dtype), so
    the accumulation is not rounded away."""
    import torch

    dt = getattr(torch, dtype)
    out = torch.mm(torch.from_numpy(a).cuda().to(dt), torch.from_numpy(b).cuda().to(dt), out_dtype=torch.float32)
    torch.cuda.synchronize()
    return out.cpu().numpy()


def accumulation_sweep(arrays: dict[str, Any]) -> dict[str, Any]:
    """Dot products of exactly held operands by format and length: TF32 (cuBLAS), bf16 with an fp32
    result, fp8 with the fast and the promoted accumulation; outputs into ``arrays`` (the operands
    are drawn again on the host from the seed)."""
    import numpy as np

    rng = np.random.default_rng(20261206)
    done: dict[str, Any] = {}
    for fmt, runs in (("tf32", {"tf32": lambda a, b: _torch_mm(a, b, "high")}),
                      ("bf16", {"bf16": lambda a, b: _half_mm(a, b, "bfloat16")}),
                      ("fp8", {"fp8_fast": lambda a, b: _scaled_mm(a, b, True),
                               "fp8_promoted": lambda a, b: _scaled_mm(a, b, False)})):
        for k in SWEEP_KS:
            for signed in (False, True):
                a, b = sweep_operand(rng, (128, k), fmt, signed), sweep_operand(rng, (k, 128), fmt, signed)
                for label, fn in runs.items():
                    tag = f"{label}_k{k}_{'signed' if signed else 'positive'}"
                    try:
                        y, names = kernels_of(lambda fn=fn, a=a, b=b: fn(a, b))
                        arrays[f"sweep/{tag}"] = y
                        done[tag] = names
                    except Exception as e:
                        done.setdefault("errors", []).append(f"{tag}: {type(e).__name__}: {str(e)[:200]}")
    return done


#: the held-out fp8 GEMMs' K (BERT-base's hidden and FFN widths, a 7B model's hidden), drawn after
#: the accumulation model was fitted to the sweep
HOLDOUT_KS = (768, 3072, 4096)


def holdout_operands(k: int, act: str, rng) -> tuple[Any, Any]:
    """Activations (standard normal, or their ReLU) and weights (normal, 0.02) of one held-out GEMM."""
    import numpy as np

    x = rng.standard_normal((128, k)).astype(np.float32)
    if act == "relu":
        x = np.maximum(x, np.float32(0))
    return x, (rng.standard_normal((k, 128)) * 0.02).astype(np.float32)


def fp8_scaled(x: Any) -> tuple[Any, Any]:
    """``x`` as Transformer Engine's per-tensor fp8 recipe holds it: the scale that maps its largest
    magnitude onto e4m3's 448, and x / scale cast to e4m3 (as float32 values)."""
    import ml_dtypes
    import numpy as np

    scale = np.float32(np.abs(x).max() / np.float32(448))
    return (x / scale).astype(ml_dtypes.float8_e4m3fn).astype(np.float32), scale


def fp8_holdout(arrays: dict[str, Any]) -> dict[str, Any]:
    """GEMMs of scaled, realistically distributed operands through torch._scaled_mm (per-tensor
    scales, fp32 out), with fast and promoted accumulation; outputs into ``arrays`` (the operands are
    drawn and quantised again on the host; a digest of the codes checks they are the same)."""
    import hashlib

    import numpy as np
    import torch

    rng = np.random.default_rng(20261207)
    done: dict[str, Any] = {}
    for k in HOLDOUT_KS:
        for act in ("normal", "relu"):
            x, w = holdout_operands(k, act, rng)
            (qx, sx), (qw, sw) = fp8_scaled(x), fp8_scaled(w)
            tag = f"k{k}_{act}"
            done[tag] = {"codes_sha256": hashlib.sha256(qx.tobytes() + qw.tobytes()).hexdigest(),
                         "scales": [float(sx), float(sw)]}
            a8 = torch.from_numpy(qx).cuda().to(torch.float8_e4m3fn)
            b8 = torch.from_numpy(qw).cuda().to(torch.float8_e4m3fn).t().contiguous().t()
            for label, fast in (("fast", True), ("promoted", False)):
                try:
                    y, names = kernels_of(lambda a8=a8, b8=b8, sx=sx, sw=sw, fast=fast: torch._scaled_mm(
                        a8, b8, scale_a=torch.tensor(sx, device="cuda"), scale_b=torch.tensor(sw, device="cuda"),
                        out_dtype=torch.float32, use_fast_accum=fast).cpu().numpy())
                    arrays[f"holdout/{tag}/{label}"] = y
                    done[tag][f"{label}_kernels"] = names
                except Exception as e:
                    done.setdefault("errors", []).append(f"{tag} {label}: {type(e).__name__}: {str(e)[:200]}")
    return done


#: GEMMs wide enough that cuBLAS runs one Hopper kernel over the whole K axis (no split K): their
#: first ``WIDE_ROWS`` rows travel back, the operands are drawn again on the host
WIDE_SHAPE, WIDE_KS, WIDE_ROWS = (2048, 2048), (1024, 4096), 32


def wide_sums(arrays: dict[str, Any]) -> dict[str, Any]:
    """Dot products of exactly held TF32, bf16 and fp16 operands (positive) in GEMMs of 2048 x K x
    2048, fp32 results: the tensor cores' own sums where no split of K hides them."""
    import numpy as np

    rng = np.random.default_rng(20261208)
    done: dict[str, Any] = {}
    for fmt in ("tf32", "bf16", "fp16"):
        for k in WIDE_KS:
            a = sweep_operand(rng, (WIDE_SHAPE[0], k), "bf16" if fmt == "fp16" else fmt, False)
            b = sweep_operand(rng, (k, WIDE_SHAPE[1]), "bf16" if fmt == "fp16" else fmt, False)
            tag = f"{fmt}_k{k}"
            try:
                fn = (lambda a=a, b=b: _torch_mm(a, b, "high")) if fmt == "tf32" else (
                    lambda a=a, b=b, dt={"bf16": "bfloat16", "fp16": "float16"}[fmt]: _half_mm(a, b, dt))
                y, names = kernels_of(fn)
                arrays[f"wide/{tag}"] = y[:WIDE_ROWS]
                done[tag] = names
            except Exception as e:
                done.setdefault("errors", []).append(f"{tag}: {type(e).__name__}: {str(e)[:200]}")
    return done


def mlp_operands() -> tuple[Any, Any, Any]:
    """A transformer's MLP block, drawn: 64 tokens of width 768, weights of 0.02 to 3072 and back."""
    import numpy as np

    rng = np.random.default_rng(20261209)
    return (rng.standard_normal((64, 768)).astype(np.float32),
            (rng.standard_normal((768, 3072)) * 0.02).astype(np.float32),
            (rng.standard_normal((3072, 768)) * 0.02).astype(np.float32))


def fp8_mlp(arrays: dict[str, Any]) -> dict[str, Any]:
    """relu(relu(x W1) W2) as the gpu target's fp8 precision computes it, on the GPU: activations
    quantised per tensor and weights per output column (amax / 448, float32), each GEMM through
    torch._scaled_mm with fast accumulation, results stored in bf16. Two epilogues: the scales
    applied by cuBLASLt (rowwise scales, bf16 out), and the raw fp32 sums scaled as the target scales
    them (acc x (scale_a x scale_b) in float32, then bf16)."""
    import torch

    def per_tensor(a):
        s = a.abs().max() / 448
        return (a / s).clamp(-448, 448).to(torch.float8_e4m3fn), s

    def per_column(w):
        s = w.abs().amax(dim=0, keepdim=True) / 448
        return (w / s).clamp(-448, 448).to(torch.float8_e4m3fn), s

    x, w1, w2 = (torch.from_numpy(t).cuda() for t in mlp_operands())
    (q1, s1), (q2, s2) = per_column(w1), per_column(w2)
    q1, q2 = q1.t().contiguous().t(), q2.t().contiguous().t()  # column-major B
    one = torch.ones((), device="cuda", dtype=torch.float32)
    done: dict[str, Any] = {}
    for label in ("cublaslt_epilogue", "fp32_sums"):
        try:
            h = x
            for q, s in ((q1, s1), (q2, s2)):
                qa, sa = per_tensor(h.float())
                if label == "cublaslt_epilogue":
                    y = torch._scaled_mm(qa, q, scale_a=sa.expand(qa.shape[0], 1).contiguous(),
                                         scale_b=s.contiguous(), out_dtype=torch.bfloat16, use_fast_accum=True)
                else:
                    acc = torch._scaled_mm(qa, q, scale_a=one, scale_b=one, out_dtype=torch.float32,
                                           use_fast_accum=True)
                    y = (acc * (sa * s)).to(torch.bfloat16)
                h = torch.relu(y)
            torch.cuda.synchronize()
            arrays[f"mlp/{label}"] = h.float().cpu().numpy()
            done[label] = list(h.shape)
        except Exception as e:
            done.setdefault("errors", []).append(f"{label}: {type(e).__name__}: {str(e)[:300]}")
    return done


def sampled(x: Any) -> Any:
    """Every k-th element of ``x`` flattened, k the least that keeps it to ``SAMPLE`` elements."""
    import numpy as np

    flat = np.asarray(x).reshape(-1)
    return flat[:: max(1, -(-flat.size // SAMPLE))]


def models(run: Run, folder: Path, arrays: dict[str, Any], ort, restore) -> dict[str, Any]:
    """Each benchmark model through onnxruntime's CUDA provider with TF32 on and off, its outputs
    sampled into ``arrays`` and the TF32 run's kernels recorded; weights filled by ``restore``
    (``gpu_device_models._restore``, seeded, 0.02 as BERT and GPT-2 initialise them). The transformers
    only: the light zoo's CNNs build every weight in the graph as one constant (0.02), so all their
    logits come out equal and the output says nothing of the arithmetic."""
    import numpy as np

    manifest = json.loads((folder / "manifest.json").read_text())
    done: dict[str, Any] = {}
    for entry in (e for e in manifest["models"] if e["kind"] == "transformer"):
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
                sess.run(None, feeds)
                ys, names = kernels_of(lambda s=sess, f=feeds: s.run(None, f))
                for i, y in enumerate(ys):
                    arrays[f"model/{entry['name']}/{config}/{i}"] = sampled(y)
                again = sess.run(None, feeds)
                done.setdefault(entry["name"], {})[config] = {
                    "kernels": names, "rerun_bit_identical": all(
                        np.array_equal(np.asarray(x).view(np.uint8), np.asarray(y).view(np.uint8))
                        for x, y in zip(ys, again))}
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
    out["accumulation_sweep"] = run.step("numerics: accumulation sweep", lambda: accumulation_sweep(arrays))
    out["fp8_holdout"] = run.step("numerics: fp8 held out", lambda: fp8_holdout(arrays))
    out["wide_sums"] = run.step("numerics: wide GEMMs' sums", lambda: wide_sums(arrays))
    out["fp8_mlp"] = run.step("numerics: an fp8 MLP block", lambda: fp8_mlp(arrays))
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
