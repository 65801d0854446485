"""What a real H200's TF32 and fp8 did to the numbers (``benchmarks.calibration_gpu_numerics``):
the probes' arithmetic, and the committed report recomputed from the committed measurements."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import calibration_gpu_numerics as cal
from benchmarks import gpu_device_numerics as dev
from hal.numerics import round_tf32

MEASURED = cal.MEASURED


def test_nearest_even_is_hals_round_tf32_and_the_modes_differ_on_ties():
    rng = np.random.default_rng(0)
    x = dev.probe_operand(rng, (4096,))
    np.testing.assert_array_equal(dev.to_tf32(x, "nearest_even").view(np.uint32), round_tf32(x).view(np.uint32))
    u = x.view(np.uint32)
    ties = (u & 0x1FFF) == 0x1000
    assert ties.mean() > 0.1
    # a tie rounds away from zero under ties_away, to the even neighbour under nearest_even, down when truncated
    assert (np.abs(dev.to_tf32(x[ties], "ties_away")) > np.abs(x[ties])).all()
    assert (np.abs(dev.to_tf32(x[ties], "truncate")) < np.abs(x[ties])).all()
    assert (dev.to_tf32(x[ties], "nearest_even").view(np.uint32) & 0x2000 == 0).all()


@pytest.mark.parametrize("mode", dev.MODES)
def test_a_one_term_product_names_the_mode_that_made_it(mode):
    rng = np.random.default_rng(1)
    a, b = dev.probe_operand(rng, (96,)), dev.probe_operand(rng, (32, 40))
    out = dev.to_tf32(dev.one_term_rows(a, 32), mode) @ dev.to_tf32(b, mode)  # one term each: exact
    shares = dev.mode_shares(out, a, b)
    assert shares[mode] == 1.0
    assert all(s < 0.9 for m, s in shares.items() if m != mode)


def test_kernel_names_say_which_units_ran_them():
    assert cal.unit_of("void cutlass::Kernel2<cutlass_80_tensorop_s1688gemm_64x64_16x6_nn_align4>") == "tensor cores"
    assert cal.unit_of("sm90_xmma_gemm_f32f32_tf32f32_f32_nn_n_tilesize128x128x32") == "tensor cores"
    assert cal.unit_of("sm80_xmma_gemm_f32f32_f32f32_f32_nn_n_tilesize32x32x8_stage3_ffma_aligna4") == "CUDA cores"
    assert cal.unit_of("void implicit_convolve_sgemm<float, float, 1024, 5, 5, 3, 3, 3, 1>") == "CUDA cores"
    assert cal.unit_of("void cublasLt::splitKreduce_kernel<32, 16, int, float>") == "other"


def test_the_seeded_operands_are_drawn_again_as_the_gpu_machine_drew_them():
    with np.load(MEASURED / "gpu_numerics_probes.npz") as z:
        a, b = z["conv/256x256x32/a"], z["conv/256x256x32/b"]
    rng = np.random.default_rng(20261204)
    for m, n, k in dev.CONVERSION_SHAPES:  # the draw order of the GPU machine
        x, y = dev.probe_operand(rng, (m,)), dev.probe_operand(rng, (k, n))
        if (m, n, k) == (256, 256, 32):
            np.testing.assert_array_equal(x, a)
            np.testing.assert_array_equal(y, b)


@pytest.fixture(scope="module")
def recomputed():
    """The report recomputed from the committed measurements (all but ``models``, which needs the
    stripped benchmark models ``calibration_gpu_device prepare`` writes)."""
    pytest.importorskip("hal_gpu")
    return cal.report(MEASURED, None)


#: figures of this host's BLAS, whose summation order is its build's and processor's own
_HOST_BLAS = ("host_fp32", "gpu_target_native", "fp32_sum", "fp8_operands")


def _without_host_blas(rows):
    return [{k: v for k, v in r.items() if k not in _HOST_BLAS} for r in rows]


def test_committed_report_is_the_report_of_the_committed_measurements(recomputed):
    committed = json.loads(cal.RESULTS.read_text())
    assert committed["conversion"] == json.loads(json.dumps(recomputed["conversion"]))
    for part in ("accumulation", "accumulation_sweep", "fp8_holdout"):
        assert _without_host_blas(committed[part]) == _without_host_blas(json.loads(json.dumps(recomputed[part])))
        for r in recomputed[part]:  # fp32 sums: a few units in the last place on average, either way
            for k in ("host_fp32", "gpu_target_native"):
                if k in r and not r.get("signed", r.get("probe", "").endswith("signed")):
                    assert abs(r[k]["mean_ulp"]) < 2, (part, r)
    for r in recomputed["fp8_holdout"]:
        assert r["fp32_sum"]["rms"] < 1e-6 and 5e-3 < r["fp8_operands"]["rms"] < 2e-2
    assert set(committed["models"]) == {"tiny-gpt", "bert-bench", "gpt-bench"}
    text = cal.markdown(committed)
    assert "| gpt-bench |" in text and "| fp8_fast | 4096 |" in text


def test_tensor_cores_round_tf32_to_nearest_even_as_the_gpu_target_does(recomputed):
    probes = recomputed["conversion"]["probes"]
    tf32_on_tensor_cores = [p for p in probes if p["run"].endswith("tf32") and "tensor cores" in p["units"]]
    assert len(tf32_on_tensor_cores) >= 15
    assert all(p["mode"] == "nearest_even" for p in tf32_on_tensor_cores)
    # where cuBLAS picked a CUDA-core kernel with TF32 allowed, the products are fp32's
    assert any(p["mode"] == "fp32" and p["run"].endswith("tf32") for p in probes)
    checks = recomputed["conversion"]["hal"]
    assert checks and all(r[k] == 1.0 for r in checks for k in r if k.startswith(("gpu_target", "round_tf32")))


def test_the_fp8_rule_gives_the_h200s_bits_where_the_fp32_sum_does_not(recomputed):
    sweep = [r for r in recomputed["accumulation_sweep"] if r["run"].startswith("fp8")]
    for r in sweep:
        if r["k"] <= 4096 or r["run"] == "fp8_promoted":  # (fast at 16384: cuBLASLt split K over CTAs)
            assert r["gpu_target"]["bits_as_gpu"] > 0.99, r
        assert abs(r["host_fp32"]["mean_ulp"]) < 0.001 * abs(r["gpu"]["mean_ulp"]) or r["signed"]
    fast = {r["k"]: r for r in sweep if r["run"] == "fp8_fast" and not r["signed"]}
    assert fast[4096]["max_rel"] > 0.01  # DeepSeek-V3's "nearly 2%" at K = 4096
    rules = {(r["bits"], r["block"]): r["bits_as_gpu"] for r in recomputed["fp8_rule_alternatives"]}
    assert rules.pop((13, 32)) == 1.0 and max(rules.values()) < 0.5
    # bf16's sums: the same rule with 25 places and blocks of 16, where one kernel ran the whole K axis
    assert all(r["bits_as_gpu"] == 1.0 for r in recomputed["bf16_rule"] if not r["split_k"])
    assert sum(not r["split_k"] for r in recomputed["bf16_rule"]) >= 6


def test_held_out_fp8_gemms_are_the_gpu_targets_own(recomputed):
    """GEMMs drawn before the rule was final, of realistic operands scaled per tensor: the gpu target's
    fp8 product (re-quantised codes, the sheet's rule) gives the GPU's bits, fast and promoted; fp32's
    sum is over a hundred times too exact."""
    rows = recomputed["fp8_holdout"]
    assert len(rows) == 12
    for r in rows:
        assert r["gpu_target_bits_as_gpu"] == 1.0, r
        assert r["gpu_target"] == r["gpu"]
        assert r["fp32_sum"]["rms"] < 0.01 * r["gpu"]["rms"]


def test_one_rule_gives_every_formats_sums_where_one_kernel_ran_the_whole_k_axis(recomputed):
    rows = recomputed["wide_sums"]
    assert {r["format"] for r in rows} == {"tf32", "bf16", "fp16"} and len(rows) == 6
    for r in rows:
        assert r["rule_bits_as_gpu"] == 1.0 and r["fp32_sum_bits_as_gpu"] < 0.01, r
        assert any("sm90" in k for k in r["kernels"]) and not any("splitK" in k for k in r["kernels"])


def test_an_fp8_mlp_block_on_the_gpu_is_the_gpu_targets_own(recomputed):
    for r in recomputed["fp8_mlp"]:
        assert r["outputs"] == 64 * 768 and r["outputs_apart"] <= 8, r
        assert r["max_abs_gap"] <= 2 ** -8 * r["max_abs"]  # one bf16 unit of the largest output at most
