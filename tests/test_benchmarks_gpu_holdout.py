"""The held-out check of the gpu-h200 sheet: the draw, the kernel attribution on the GPU machine,
and the report over the committed H200 measurements (benchmarks/results/device_h200/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import calibration_gpu_holdout as hold
from benchmarks import gpu_device_holdout

MEASURED = Path(hold.__file__).resolve().parent / "results" / "device_h200"


@pytest.fixture(scope="module")
def first_sample() -> dict:
    """The report over the first held-out sample's committed H200 measurements."""
    return hold.report(json.loads((MEASURED / "gpu_holdout.json").read_text()))


def test_the_draw_is_fixed_bounded_and_holds_out_resnet50(tmp_path):
    first = hold.prepare(tmp_path / "a")
    assert first["gemms"] == hold.draw_gemms() and first["seed"] == hold.SEED
    plain = [g for g in first["gemms"] if g["batch"] == 1]
    assert len(plain) == 40 and len(first["gemms"]) == 52
    assert all(2.0 * g["batch"] * g["m"] * g["n"] * g["k"] <= hold.MAX_FLOPS or g["m"] == 1 for g in first["gemms"])
    odd = [g for g in plain if g["n"] % 8 or g["k"] % 8]
    assert len(odd) == 10  # one in four has a row off 16 bytes
    assert {c["model"] for c in first["convs"]} == set(hold.CNNS) and len(first["convs"]) == 204
    fresh = hold.prepare(tmp_path / "c", seed=7)
    assert fresh["gemms"] != first["gemms"] and {c["x"][0] for c in fresh["convs"]} == {8}
    assert all(a["seq"] % 64 == 0 and a["head_dim"] in (64, 80, 96, 128) for a in fresh["attention"])


def test_kernels_belong_to_the_range_their_launch_fell_in():
    events = [
        {"cat": "user_annotation", "name": "holdout_call_0", "ts": 0, "dur": 10},
        {"cat": "user_annotation", "name": "holdout_call_1", "ts": 20, "dur": 10},
        {"cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 5, "args": {"correlation": 7}},
        {"cat": "cuda_driver", "name": "cuLaunchKernel", "ts": 25, "args": {"correlation": 9}},
        {"cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 15, "args": {"correlation": 11}},
        # the GPU runs them later than their launch: only the correlation ties them to a range
        {"cat": "kernel", "name": "a", "ts": 40, "dur": 3, "args": {"correlation": 7}},
        {"cat": "kernel", "name": "b", "ts": 45, "dur": 2, "args": {"correlation": 9}},
        {"cat": "kernel", "name": "b", "ts": 48, "dur": 2, "args": {"correlation": 9}},
        {"cat": "kernel", "name": "stray", "ts": 50, "dur": 2, "args": {"correlation": 11}},
    ]
    assert gpu_device_holdout.attribute(events, 2) == [[["a", 1, 3e-6]], [["b", 2, 4e-6]]]


def test_what_cudnn_ran_is_named_from_its_longest_kernel():
    ffma = "sm80_xmma_fprop_implicit_gemm_f32f32_f32f32_f32_nchwkcrs_nchw_tilesize32x32x8_stage3_warpsize1x2x1_g1_ffma"
    hopper = "sm90_xmma_fprop_implicit_gemm_f32f32_tf32f32_f32_nhwckrsc_nhwc_tilesize64x64x32_warpgroupsize1x1x1"
    gemm = "void cutlass::Kernel2<cutlass_80_tensorop_s1688gemm_64x64_32x6_nn_align4>"
    assert hold.conv_family([[ffma, 1, 1e-5]]) == "implicit GEMM 32x32, CUDA cores, sm80"
    assert hold.conv_family([[hopper, 1, 1e-5], [ffma, 1, 1e-6]]) == "implicit GEMM 64x64, tensor cores, sm90"
    assert hold.conv_family([[gemm, 1, 1e-5]]) == "GEMM 64x64, tensor cores, sm80"
    assert hold.conv_family([]) == "unknown"


def test_report_on_the_committed_measurements(first_sample):
    res = first_sample
    att = res["attention"]["by_format"]
    for fmt in ("bf16", "fp16"):
        assert att[fmt]["none"]["points"] == att[fmt]["causal"]["points"] == 12
        assert 0.8 < att[fmt]["none"]["median_measured_over_predicted"] < 1.25
    causal = [p for p in res["attention"]["points"] if p["causal"]]
    assert all(0.5 <= p["live_tiles"] < 0.65 for p in causal)
    for fmt in ("bf16", "tf32"):
        assert 0.8 < res["gemms"]["by_format"][fmt]["all"]["median_measured_over_predicted"] < 1.25
    convs = res["convs"]
    assert len(convs["points"]) == 2 * 204 and all(p["kernels"] for p in convs["points"])
    assert set(convs["by_model"]) == set(hold.CNNS)
    md = hold.markdown(res)
    assert "| bf16, causal | 12 |" in md and "| light_densenet121 |" in md


def test_committed_reports_are_the_reports_of_the_committed_measurements(first_sample):
    committed = [(first_sample, hold.RESULTS)]
    for n in (2, 3, 4):
        again = hold.report(json.loads((MEASURED / f"gpu_holdout{n}.json").read_text()))
        committed.append((again, hold.RESULTS.with_name(f"calibration_gpu_holdout_{n}.json")))
    for again, result in committed:
        assert json.loads(json.dumps(again)) == json.loads(result.read_text()), result.name


def test_the_same_sample_twice_is_compared_kernel_for_kernel():
    first, again = (json.loads((MEASURED / f"gpu_holdout2{s}.json").read_text()) for s in ("", "b"))
    rep = hold.repeat(first, again)
    assert {step: r["kernels"] for step, r in rep.items()} == {
        "holdout_gemms": 156, "holdout_attention": 64, "holdout_convs": 64}
    assert all(0.9 < r["median"] < 1.1 for r in rep.values())
    # the second run named its kernels: every attention call ran cuDNN's Hopper flash kernel
    assert all("sm90_flash_fprop" in p["kernels"][0][0] for p in again["holdout_attention"])
