"""The BLAS floor: the least time any engine that multiplies through numpy's BLAS could take on a model.

A model's matrix products (MatMul, Gemm, Conv: ``hal.perf.opcount.PRODUCT_OPS``) are counted from
the shapes its steps actually get in a profiled run (``step_product_flops``). Divided by the rate of
numpy's own SGEMM on large square products here (the fastest of a few sizes, with the benchmark's
thread count: ``blas_rate``), they give the floor: the run time of an engine that spent nothing
outside its GEMMs and ran every one at that rate. Small or skinny products run slower than square
ones, so such an engine stays above the floor in practice.

It bounds the goals from this machine's BLAS, not from hal: ReferenceEvaluator's time over the floor
is the most Ref/cpu any numpy-BLAS engine could read; the floor over onnxruntime's time the least
cpu/ORT. A goal past its bound cannot be met without fewer multiply-adds (Winograd, FFT) or another
GEMM; one within it is a question of the time outside the GEMMs (``hal cpu / floor``). The count is
the direct products' (a Conv's im2col GEMM), also where hal's kernel takes fewer: its Winograd
layers (``hal.kernels.winograd``) do 4/9 of their count, so on VGG-19 hal cpu can read below its floor.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from hal.perf.opcount import PRODUCT_OPS, product_flops

#: square SGEMMs timed for the rate: the floor divides by the fastest one's median (the BLAS's
#: peak here; which size reaches it varies from run to run by a few percent)
RATE_SIZES = (512, 1024, 1536)


#: what ``product_op`` calls an attention core step (``hal.kernels.fused_attention``): two products
ATTENTION_CORE = "MatMul+Softmax+MatMul"
#: what it calls a projection joined to the residual Add and LayerNormalization after it
#: (``hal.kernels.fused_norm.ProjectionNorm``): one product, whose result is the first of two
PROJECTION_NORM = "MatMul+LayerNormalization"


def product_op(op_type: str, guard_op: str | None) -> str | None:
    """The product op a step computes: its own op type, or the product a fused step starts with
    (``MatMul+Add`` runs MatMul and guards as it; an attention core, ``ATTENTION_CORE``; a
    projection and the norm after it, ``PROJECTION_NORM``); None for any other step."""
    if op_type in PRODUCT_OPS:
        return op_type
    if guard_op == "MatMul" and op_type.endswith("+Softmax+MatMul"):
        return ATTENTION_CORE
    if guard_op == "MatMul" and op_type.endswith("MatMul+Add+Add+LayerNormalization"):
        return PROJECTION_NORM
    return guard_op if guard_op in PRODUCT_OPS else None


def step_product_flops(op: str, args: Sequence[Any], attrs: dict[str, Any], result: Any) -> float:
    """FLOPs of one call of a product step, from the arrays it was given and those it returned: a
    step of several products of one operand (``MatMulGroup``'s Q, K and V) returns one result
    each; an attention core (a, b, ..., c) multiplies a by b, then the probabilities by c; a
    projection norm (a, W, ...) multiplies a by W once for its two results."""
    shapes = [tuple(getattr(a, "shape", ())) for a in args]
    outs = result if isinstance(result, tuple) else (result,)
    if op == ATTENTION_CORE:
        k, n, d = shapes[0][-1], shapes[1][-1], shapes[-1][-1]
        rows = int(outs[0].size) // d  # the batch's rows of queries
        return 2.0 * rows * n * k + 2.0 * rows * n * d
    if op == PROJECTION_NORM:  # a @ W, then the join and the norm: the product's size is the join's
        return product_flops("MatMul", shapes[:2], int(getattr(outs[0], "size", 0)), attrs)
    return sum(product_flops(op, shapes, int(getattr(out, "size", 0)), attrs) for out in outs)


def _square_rate(size: int, groups: int, per_group: int) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    c = np.empty((size, size), dtype=np.float32)
    np.matmul(a, b, out=c)
    times = []
    for _ in range(groups):
        t0 = time.perf_counter()
        for _ in range(per_group):
            np.matmul(a, b, out=c)
        times.append((time.perf_counter() - t0) / per_group)
    return 2.0 * size**3 / float(np.median(times))


def blas_rate(sizes: Sequence[int] = RATE_SIZES, groups: int = 5, per_group: int = 2) -> dict[str, Any]:
    """numpy's float32 matmul rate (FLOP/s) on square products of each size, median of ``groups``
    timed groups each (threads as the caller limited them), and the fastest of them."""
    rates = {str(n): _square_rate(n, groups, per_group) for n in sizes}
    best = max(rates, key=lambda n: rates[n])
    return {"dtype": "float32", "by_size": rates, "size": int(best), "flops_per_s": rates[best],
            "groups": groups, "per_group": per_group}


def floor_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Per profiled model: its product FLOPs, the floor, and each runner's median over it."""
    rate = (doc.get("blas") or {}).get("flops_per_s")
    if not rate:
        return []
    by_name = {m["name"]: m for m in doc["models"]}
    rows = []
    for prof in doc.get("profile", []):
        flops = prof.get("product_flops")
        mod = by_name.get(prof.get("model"))
        if not flops or mod is None:
            continue
        floor = flops / rate
        row: dict[str, Any] = {"model": mod["name"], "product_flops": flops, "floor_s": floor}
        for key, runner in (("hal_cpu/floor", "hal:cpu"), ("ort/floor", "onnxruntime"), ("ref/floor", "reference")):
            res = mod["results"].get(runner)
            if res and res.get("status") == "ok":
                row[key] = res["median_s"] / floor
        rows.append(row)
    return rows


def bound(row: dict[str, Any] | None, goal: str) -> float | None:
    """The best value a goal's ratio can take on this BLAS: Ref/cpu at most ref/floor; cpu/ORT at
    least floor/ORT."""
    if row is None:
        return None
    if goal == "ref/hal_cpu":
        return row.get("ref/floor")
    if goal == "hal_cpu/ort":
        v = row.get("ort/floor")
        return 1.0 / v if v else None
    return None
