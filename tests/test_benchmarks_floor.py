"""The BLAS floor (benchmarks/floor.py): product FLOPs from a run's arrays agree with the static count
from shape inference, and the bounds it puts on the goals point the right way (no timings checked)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import floor, markdown, run
from hal.perf.opcount import PRODUCT_OPS, node_flops


def test_product_flops_of_batched_grouped_and_transposed_products() -> None:
    f32 = np.float32
    # MatMul broadcasting a (2, 3) stack of 4x5 over one 5x6: 2*3*4*6 outputs, each 5 multiply-adds
    a, b = np.ones((2, 3, 4, 5), f32), np.ones((5, 6), f32)
    assert floor.step_product_flops("MatMul", [a, b], {}, a @ b) == 2 * (2 * 3 * 4 * 6) * 5
    # Gemm with transA: A is (K, M) = (5, 4)
    a, b = np.ones((5, 4), f32), np.ones((5, 6), f32)
    assert floor.step_product_flops("Gemm", [a, b], {"transA": 1}, np.ones((4, 6), f32)) == 2 * 24 * 5
    # Conv, 8 channels in 4 groups: each of the 16 x 8 x 8 outputs reads 2 channels x 3 x 3 taps
    x, w = np.ones((1, 8, 10, 10), f32), np.ones((16, 2, 3, 3), f32)
    assert floor.step_product_flops("Conv", [x, w], {"group": 4}, np.ones((1, 16, 8, 8), f32)) == 2 * 1024 * 18
    # a fused MatMul+Add step counts as its MatMul; an elementwise region is no product
    assert floor.product_op("MatMul+Add", "MatMul") == "MatMul"
    assert floor.product_op("Div+Erf+Add+Mul+Mul", "") is None
    assert floor.product_op("Conv", None) == "Conv"
    # an attention core: scores (2, 4, 16, 8) @ (2, 4, 8, 16), then probabilities by V (.., 16, 32)
    q, kt, v = np.ones((2, 4, 16, 8), f32), np.ones((2, 4, 8, 16), f32), np.ones((2, 4, 16, 32), f32)
    op = floor.product_op("Reshape+Transpose+MatMul+Div+Where+Softmax+MatMul", "MatMul")
    assert op == floor.ATTENTION_CORE
    assert floor.step_product_flops(op, [q, kt, f32(4), v], {}, np.ones((2, 4, 16, 32), f32)) == (
        2 * (2 * 4 * 16 * 16) * 8 + 2 * (2 * 4 * 16 * 32) * 16)


@pytest.mark.parametrize("name, least", [("light_shufflenet", 1e8), ("tiny-gpt", 3e6)])
def test_a_profiled_run_counts_the_products_shape_inference_counts(name: str, least: float) -> None:
    # ShuffleNet: grouped 1x1 convs, depthwise 3x3 convs, a strided stem and a Gemm; tiny-gpt: Q, K
    # and V as one step of three products, and each attention's two products in one step. The
    # run's arrays and the optimized graph's inferred shapes are two independent routes to the count
    from hal.graph.load import load
    from hal.graph.passes import optimize

    model = run.load_model(name)
    prof = run.profile_model(model, reps=1)
    graph = optimize(load(model.source))
    static = sum(node_flops(n, graph) for n in graph.nodes if n.op_type in PRODUCT_OPS)
    assert static > least
    assert prof["product_flops"] == pytest.approx(static, rel=1e-12)


def test_blas_rate_reports_the_fastest_size() -> None:
    r = floor.blas_rate(sizes=(16, 48), groups=3, per_group=1)
    assert set(r["by_size"]) == {"16", "48"}
    assert r["flops_per_s"] == max(r["by_size"].values()) > 0
    assert r["by_size"][str(r["size"])] == r["flops_per_s"]


def _doc() -> dict:
    def res(ms: float) -> dict:
        return {"status": "ok", "median_s": ms / 1e3}

    models = [
        # GEMM-bound: the reference runs the same products, so no engine on this BLAS reaches 5x
        {"name": "lm", "kind": "transformer", "results": {"hal:cpu": res(100), "onnxruntime": res(80),
                                                          "reference": res(110)},
         "ratios": {"hal_cpu/ort": 1.25, "ref/hal_cpu": 1.1}},
        # overhead-bound: the floor is far below every runner
        {"name": "cnn", "kind": "cnn", "results": {"hal:cpu": res(50), "onnxruntime": res(20),
                                                   "reference": res(400)},
         "ratios": {"hal_cpu/ort": 2.5, "ref/hal_cpu": 8.0}},
    ]
    return {"models": models, "blas": {"size": 1024, "flops_per_s": 1e11},
            "profile": [{"model": "lm", "product_flops": 9e9}, {"model": "cnn", "product_flops": 1e9}],
            "compile": [], "memory": []}


def test_floor_bounds_each_goal_from_the_blas_rate() -> None:
    doc = _doc()
    doc["floor"] = floor.floor_rows(doc)
    lm, cnn = doc["floor"]
    assert lm["floor_s"] == pytest.approx(0.09) and cnn["floor_s"] == pytest.approx(0.01)
    assert lm["ref/floor"] == pytest.approx(110 / 90) and lm["hal_cpu/floor"] == pytest.approx(100 / 90)
    assert cnn["ort/floor"] == pytest.approx(2.0)

    checks = {(c["model"], c["goal"]): c for c in run.summarize(doc)["checks"]}
    ref_lm = checks[("lm", "ref/hal_cpu")]
    assert not ref_lm["met"] and ref_lm["bound_on_blas"] == pytest.approx(110 / 90)
    assert ref_lm["reachable_on_blas"] is False
    # cpu/ORT can go no lower than floor / ORT; the CNN's floor is half onnxruntime's time: reachable
    ort_cnn = checks[("cnn", "hal_cpu/ort")]
    assert ort_cnn["bound_on_blas"] == pytest.approx(0.5) and ort_cnn["reachable_on_blas"] is True
    assert checks[("cnn", "ref/hal_cpu")]["reachable_on_blas"] is True  # 400 / 10 = 40 >= 10

    doc["summary"] = run.summarize(doc)
    text = "\n".join(markdown.floor_table(doc) + markdown.goal_lines(doc))
    assert "| lm | 9.000 | 90.0 | 1.11 | 0.89 | 1.22 |" in text
    assert "ref/hal_cpu lm 1.100, limit 5.0 (numpy's BLAS allows at most 1.22)" in text
    assert "hal_cpu/ort cnn 2.500, limit 2.0 (numpy's BLAS allows at least 0.50)" in text


def test_without_a_profile_there_is_no_floor() -> None:
    doc = _doc()
    del doc["blas"]
    assert floor.floor_rows(doc) == []
    doc["floor"] = []
    assert all("bound_on_blas" not in c for c in run.summarize(doc)["checks"])
    assert markdown.floor_table(doc) == []
