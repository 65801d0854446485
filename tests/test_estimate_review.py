"""hal estimate / sweep / profile read as a model team planning a purchase reads them: each case is a
figure that was missing, silently unchanged by an input that should move it, physically impossible on its
picture, or not the same thing from one target to the next."""

from __future__ import annotations

import json

import onnx
import pytest
from onnx import TensorProto, helper

import hal
from hal.errors import InputError


def _open_batch_model(path) -> str:
    """A small CNN-like model whose batch is open (``batch``), as exporters write one."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 256])
    w = onnx.numpy_helper.from_array(__import__("numpy").ones((64, 256), "float32"), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
                          "g", [x], [y], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


# -- sizes a phase does not read ------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "says"), [
    (dict(phase="decode", prompt=128), "prompt does not shape a decode, which reads context"),
    (dict(prompt=128), "prompt does not shape a decode"),
    (dict(phase="prefill", context=4096), "context does not shape a prefill, which reads prompt"),
])
def test_a_size_the_phase_does_not_read_is_refused_not_dropped(kwargs, says):
    # had been taken and ignored: a sweep over context in a prefill printed one TTFT per point
    with pytest.raises(InputError, match=says) as info:
        hal.estimate("zoo:llama-2-7b", "gpu", **kwargs)
    assert info.value.hint and "--phase" in info.value.hint


def test_a_sweep_over_a_size_the_phase_does_not_read_is_an_error(hal_cli):
    rc, out, err = hal_cli("estimate", "zoo:llama-2-7b", "-t", "gpu", "--phase", "prefill",
                           "--sweep", "context=128,1024")
    assert rc == 2 and "context does not shape a prefill" in err and not out


def test_a_sweep_and_the_flag_it_sweeps_cannot_both_be_given(hal_cli):
    # --batch 4 had been replaced by the sweep's values without a word
    rc, out, err = hal_cli("estimate", "zoo:llama-2-7b", "-t", "gpu", "--batch", "4", "--sweep", "batch=1,2")
    assert rc == 2 and "--batch 4 and --sweep batch=... both set batch" in err and not out


# -- time to first token ---------------------------------------------------------------------------

def test_prefill_prices_the_logits_of_the_last_position_only():
    """TTFT needs one position's logits: all of them ([1, 2048, 128256] fp16, 525 MB) had no LPU chip
    hold them (lpu refused) and added their product to every target's TTFT."""
    from hal.session import compile

    (gpu,) = hal.estimate("zoo:llama-3.1-8b", "gpu", phase="prefill", prompt=2048).estimates
    zp = {"phase": "prefill", "batch": 1, "context": 1024, "prompt": 2048}
    last = compile("zoo:llama-3.1-8b", target="gpu", precision="native", zoo_params={**zp, "logits": "last"}).report
    every = compile("zoo:llama-3.1-8b", target="gpu", precision="native", zoo_params=zp).report
    assert gpu.ttft_s == pytest.approx(last.ttft_s) and gpu.ttft_s < every.ttft_s
    (lpu,) = hal.estimate("zoo:llama-3.1-8b", "lpu", phase="prefill", prompt=2048).estimates
    assert lpu.status == "ok", lpu.error
    assert lpu.ttft_s > 0 and lpu.tokens_per_s == pytest.approx(2048 / lpu.ttft_s)


# -- the table shows the figures the model has -------------------------------------------------------

def _header(out: str) -> str:
    return next(line for line in out.splitlines() if "target" in line and "status" in line)


def test_a_model_that_is_no_llm_shows_its_throughput(hal_cli):
    # a CNN's row had been "tokens/s per user —, TTFT —" and no throughput at all
    rc, out, _ = hal_cli("estimate", "zoo:tiny-cnn", "-t", "gpu")
    assert rc == 0
    head = _header(out)
    assert "throughput" in head and "tokens/s" not in head and "TTFT" not in head
    (est,) = hal.estimate("zoo:tiny-cnn", "gpu").estimates
    from hal.render import fmt_num

    assert fmt_num(est.throughput_per_s, "/s") in out


def test_a_decode_at_a_batch_shows_the_total_and_no_ttft(hal_cli):
    rc, out, _ = hal_cli("estimate", "zoo:llama-2-7b", "-t", "gpu", "--batch", "8")
    head = _header(out)
    assert rc == 0 and "tokens/s per user" in head and "tokens/s total" in head and "TTFT" not in head
    (est,) = hal.estimate("zoo:llama-2-7b", "gpu", batch=8).estimates
    assert est.tokens_per_s_total == pytest.approx(8 * est.tokens_per_s)
    from hal.render import fmt_num

    assert fmt_num(est.tokens_per_s_total) in out
    rc, out, _ = hal_cli("estimate", "zoo:llama-2-7b", "-t", "gpu", "--phase", "prefill", "--prompt", "64")
    assert rc == 0 and "TTFT" in _header(out)


# -- open dimensions -------------------------------------------------------------------------------

def test_an_estimate_says_which_open_dimensions_it_priced_as_1(tmp_path, hal_cli):
    # the report's list had been dropped with the rest of its non-scalar details
    path = _open_batch_model(tmp_path / "m.onnx")
    for est in hal.estimate(path, "gpu,lpu").estimates:
        assert est.status == "ok"
        assert est.details["open_dims_priced_as_1"] == ["x[0] (batch)"]
    rc, out, _ = hal_cli("estimate", path, "-t", "gpu")
    assert rc == 0 and "priced as 1" in out and "x[0] (batch)" in out
    (bound,) = hal.estimate(path, "gpu", dims={"batch": 8}).estimates
    assert "open_dims_priced_as_1" not in bound.details


def test_the_lpu_prices_an_open_dimension_as_1_like_every_target(tmp_path):
    # the LPU schedules per run's shapes: compile-only, it had given an "ok" row with no figure and 0 B
    path = _open_batch_model(tmp_path / "m.onnx")
    (open_,) = hal.estimate(path, "lpu").estimates
    (one,) = hal.estimate(path, "lpu", dims={"batch": 1}).estimates
    assert open_.latency_s is not None and open_.latency_s == pytest.approx(one.latency_s)
    assert open_.memory_bytes == one.memory_bytes > 0


def test_a_program_whose_shapes_a_run_decides_has_no_ok_row(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3])
    s = helper.make_tensor_value_info("s", TensorProto.INT64, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None])
    g = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Relu", ["r"], ["y"])],
                          "g", [x, s], [y])
    path = tmp_path / "r.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    (est,) = hal.estimate(str(path), "lpu").estimates
    assert est.status == "error" and "no figure before a run" in est.error and "hal run" in est.error


# -- sweeps ------------------------------------------------------------------------------------------

def test_a_sweep_says_how_many_devices_each_point_took(hal_cli):
    # the fewest devices that fit grows along a sweep: a figure on 108 LPU chips had sat beside one GPU's
    rc, out, _ = hal_cli("estimate", "zoo:llama-3.1-8b", "-t", "gpu,lpu", "--sweep", "batch=1,2", "--json", "-")
    doc = json.loads(out)
    assert rc == 0 and doc["devices"]["gpu"] == [1, 1] and all(d > 1 for d in doc["devices"]["lpu"])
    per_point = [next(e["devices"] for e in ests if e["target"] == "lpu") for ests in doc["estimates"]]
    assert doc["devices"]["lpu"] == per_point
    rc, out, _ = hal_cli("estimate", "zoo:llama-3.1-8b", "-t", "gpu,lpu", "--sweep", "batch=1,2")
    assert rc == 0 and f"({per_point[0]} dev)" in out and "needs N devices" in out


def test_a_sweep_of_batch_binds_the_open_batch_of_a_model_that_is_no_llm(tmp_path, hal_cli):
    # had been an error pointing at --dim, which binds one size, not a sweep
    path = _open_batch_model(tmp_path / "m.onnx")
    rc, out, err = hal_cli("estimate", path, "-t", "gpu", "--sweep", "batch=1,8", "--json", "-")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["metric"] == "samples_per_s"
    for x, ests, value in zip((1, 8), doc["estimates"], doc["series"]["gpu"]):
        (e,) = ests
        assert value == pytest.approx(x * e["throughput_per_s"])
    (eight,) = hal.estimate(path, "gpu", dims={"batch": 8}).estimates
    assert doc["estimates"][1][0]["latency_s"] == pytest.approx(eight.latency_s)
    rc, _, err = hal_cli("estimate", path, "-t", "gpu", "--dim", "batch=2", "--sweep", "batch=1,8")
    assert rc == 2 and "both set batch" in err


def test_a_prefill_sweep_prints_ttft_as_a_time(hal_cli):
    rc, out, _ = hal_cli("estimate", "zoo:llama-2-7b", "-t", "gpu", "--phase", "prefill", "--sweep", "prompt=16,32")
    assert rc == 0 and " ms " in out  # had been bare seconds ("0.01232")


def test_the_sweep_plot_marks_the_points_on_several_devices(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from hal import plots

    notes = []
    real = plots._save

    def keep(fig, path):
        notes.extend(t.get_text() for ax in fig.axes for t in ax.texts)
        return real(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    plots.sweep_plot([1, 2, 4], {"a": [1.0, 2.0, None], "b": [3.0, 4.0, 5.0]}, "batch", "y", "t",
                     tmp_path / "s.png", devices={"a": [1, 2, None], "b": [8, 8, 16]})
    assert sorted(notes) == sorted(["×2", "×8", "×8", "×16"])


# -- pictures and tables that set targets side by side ----------------------------------------------

def test_the_gpu_roofline_is_drawn_at_the_format_its_kernels_ran_at(monkeypatch, tmp_path):
    """A float16 model runs its GEMMs on fp16 tensor cores whatever the precision says: its prefill had
    been drawn under the TF32 roof (native) with its GEMMs at 778 TFLOP/s above that 495 TFLOP/s roof."""
    pytest.importorskip("matplotlib")
    from hal import plots
    from hal.plugins import get_target
    from hal.session import compile

    spec = get_target("gpu").spec
    report = compile("zoo:llama-2-7b", target="gpu", precision="native",
                     zoo_params={"phase": "prefill", "batch": 1, "prompt": 1024, "logits": "last"}).report
    drawn = []
    monkeypatch.setattr(plots, "roofline", lambda ax, kernels, peak, bw, title: drawn.append((peak, bw, title)))
    plots.profile_picture("gpu", report, [], spec, tmp_path / "p.png")
    ((peak, bw, title),) = drawn
    assert peak == spec.hw("peak_flops_fp16") and "fp16 peak" in title
    worked = [k for k in report.kernels if k.flops > 0 and k.bytes > 0 and k.time_s > 0]
    assert max(k.flops / k.time_s for k in worked) > spec.hw("peak_flops_tf32")  # the old roof
    for k in worked:  # every point under the roof at its intensity
        assert k.flops / k.time_s <= min(peak, k.flops / k.bytes * bw) * (1 + 1e-6), k.name


def test_the_compare_table_shows_each_targets_memory_per_device():
    """The compare table's memory column is per device: the wafer's peak_memory_bytes had been every
    wafer's together beside one GPU's; a plugin's report whose peak is not per device still shows its
    largest per-device level."""
    from hal.compare import TargetResult
    from hal.render import COLUMNS, fmt_bytes, row
    from hal.specs import MemoryLevel

    wafers = TargetResult(target="wafer", status="ok", precision="native", peak_memory_bytes=17_000_000_000,
                          devices=2, memory=[MemoryLevel(level="SRAM", bytes=9_000_000_000, per_device=True)])
    cells = dict(zip(COLUMNS, row(wafers)))
    assert cells["memory/device"] == fmt_bytes(9_000_000_000)
    bare = TargetResult(target="x", status="ok", precision="exact", peak_memory_bytes=1024, devices=1)
    assert dict(zip(COLUMNS, row(bare)))["memory/device"] == fmt_bytes(1024)


def test_profile_binds_open_dimensions(tmp_path, hal_cli):
    path = _open_batch_model(tmp_path / "m.onnx")
    rc, out, _ = hal_cli("profile", path, "-t", "gpu", "--json", "-")
    one = json.loads(out)
    rc8, out, _ = hal_cli("profile", path, "-t", "gpu", "--dim", "batch=512", "--json", "-")
    big = json.loads(out)
    assert rc == rc8 == 0 and big["ran"]  # (its latency need not grow: the small GEMM is launch-bound)
    assert sum(k["flops"] for k in big["report"]["kernels"]) == pytest.approx(
        512 * sum(k["flops"] for k in one["report"]["kernels"]))


def test_estimate_json_has_one_shape_however_many_targets(hal_cli):
    """It had printed one estimate's object for one target and a list of them for several: a script
    reading ``.latency_s`` broke when a second target was added. It is now what hal.estimate returns."""
    docs = []
    for targets in ("gpu", "gpu,lpu"):
        rc, out, _ = hal_cli("estimate", "zoo:tiny-gpt", "-t", targets, "--json", "-")
        assert rc == 0
        docs.append(json.loads(out))
    for doc, n in zip(docs, (1, 2)):
        assert doc["model"] == "zoo:tiny-gpt" and len(doc["estimates"]) == n
        assert doc["estimates"][0]["target"] == "gpu" and doc["estimates"][0]["latency_s"] > 0


def test_a_model_that_does_not_fit_says_so_rather_than_refused():
    """70B on one GPU or one LPU chip read "refused", as a node the target cannot run does: the row now says
    "does not fit", and the reason gives the numbers."""
    ests = {e.target: e for e in hal.estimate("zoo:llama-3.1-70b", "gpu,lpu", devices=1).estimates}
    assert ests["gpu"].status == ests["lpu"].status == "does not fit"
    assert "more HBM" in ests["gpu"].error and "663 chips" in ests["lpu"].error
