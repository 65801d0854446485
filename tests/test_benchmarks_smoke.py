"""The benchmark's smoke mode runs end to end and writes JSON of the documented shape (no timings checked)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _args(**kw: float) -> argparse.Namespace:
    """The timing options of ``python -m benchmarks``, one run a sample unless ``sample_s`` is given."""
    return argparse.Namespace(**{"threads": 1, "reps": 10, "min_s": 1.0, "sample_s": 0.0, "budget_s": 20.0,
                                 "ref_budget_s": 30.0, "ref_max_s": 60.0, **kw})


def test_benchmark_smoke_mode_writes_json_of_the_documented_shape(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--targets", "cpu", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())

    assert doc["schema"] == "hal-bench/1"
    assert doc["settings"]["smoke"] is True and doc["settings"]["threads"] == 1
    assert {"cpu", "cores", "ram_bytes", "versions"} <= set(doc["machine"])
    assert {"numpy", "onnx", "onnxruntime", "hal"} <= set(doc["machine"]["versions"])

    (model,) = doc["models"]
    assert model["name"] == "tiny-gpt" and model["kind"] == "transformer"
    assert set(model["results"]) == {"hal:cpu", "onnxruntime", "reference"}
    for name, res in model["results"].items():
        assert res["status"] == "ok", (name, res)
        assert res["reps"] == 1
        assert {"median_s", "iqr_s", "q1_s", "q3_s", "min_s", "warmup_s", "setup_s"} <= set(res)
    assert {"hal_cpu/ort", "ref/hal_cpu"} <= set(model["ratios"])
    assert model["results"]["hal:cpu"]["max_abs_err_vs_ort"] < 1e-3

    (comp,) = doc["compile"]
    assert comp["nodes"] > 0 and comp["targets"]["cpu"]["status"] == "ok"
    assert {"load_s", "optimize_s"} <= set(comp["frontend"])

    (mem,) = doc["memory"]
    assert mem["status"] == "ok", mem
    assert {"baseline_rss", "after_setup_rss", "run_peak_rss", "planned_bytes", "ratio_to_planned"} <= set(mem)
    assert 0 < mem["traced_run_peak_bytes"] < mem["run_peak_rss"]
    assert len(mem["probe_own_bytes"]) == 1  # --smoke probes once
    if mem["library_growth_bytes"] is not None:  # Linux: the peak split into library pages and the run's own
        assert mem["library_growth_bytes"] >= 0
        assert mem["run_delta_own_bytes"] == mem["run_delta_bytes"] - mem["library_growth_bytes"]
        assert mem["own_ratio_to_planned"] <= mem["ratio_to_planned"]
        rss = next(c for c in doc["summary"]["checks"] if c["goal"] == "rss/planned")
        assert rss["value"] == mem["own_ratio_to_planned"]

    assert {"checks", "met", "total"} <= set(doc["summary"])
    assert "median ms per run" in proc.stdout and "ratios" in proc.stdout

    # the README's tables come from the same JSON: its figures, not typed-in ones
    md = subprocess.run([sys.executable, "-m", "benchmarks.markdown", str(out)], cwd=ROOT, capture_output=True,
                        text=True, timeout=60)
    assert md.returncode == 0, md.stderr
    row = next(line for line in md.stdout.splitlines() if line.startswith("| tiny-gpt |"))
    assert f"{model['results']['onnxruntime']['median_s'] * 1e3:,.1f}" in row or \
        f"{model['results']['onnxruntime']['median_s'] * 1e3:.2f}" in row
    assert f"{model['ratios']['hal_cpu/ort']:.2f}" in row
    assert f"Goals met: {doc['summary']['met']}/{doc['summary']['total']}." in md.stdout


def test_compile_graph_generator_reaches_ten_thousand_nodes() -> None:
    from benchmarks.models import build_compile_graph

    model = build_compile_graph()
    assert 9_000 <= len(model.graph.node) <= 12_000


def test_fast_runners_get_more_repetitions_up_to_the_cap(monkeypatch) -> None:
    # --min-s: a runner whose warm-up x reps is shorter gets more reps (at most MAX_REPS); slower
    # ones keep --reps; the warm-up is timed with perf_counter, which the test drives
    import itertools
    from types import SimpleNamespace

    from benchmarks import run

    class Fake:
        setup_s, info = 0.0, {}

        def run(self) -> list:
            return []

    monkeypatch.setattr(run, "make_runner", lambda name, model, threads: Fake())
    args = _args(min_s=1.0)
    for warm, want in ((0.05, 20), (0.2, 10), (1e-4, run.MAX_REPS)):
        monkeypatch.setattr(run, "time", SimpleNamespace(perf_counter=itertools.count(0.0, warm).__next__))
        results: dict = {}
        run._set_up("hal:cpu", None, args, results, {})
        assert results["hal:cpu"]["want"] == want, warm
    args.min_s = 0.0
    monkeypatch.setattr(run, "time", SimpleNamespace(perf_counter=itertools.count(0.0, 1e-4).__next__))
    run._set_up("hal:cpu", None, args, results, {})
    assert results["hal:cpu"]["want"] == 10


def test_runners_are_timed_in_the_same_rounds_and_beside_the_reference(monkeypatch) -> None:
    # a faster runner would get more reps from --min-s; they would run alone after the shared rounds,
    # so every fast runner gets the slowest one's count
    from types import SimpleNamespace

    from benchmarks import run

    clock = [0.0]

    class Fake:
        setup_s, info = 0.0, {}

        def __init__(self, name: str, seconds: float) -> None:
            self.name, self.seconds = name, seconds

        def run(self) -> list:
            clock[0] += self.seconds
            return []

    per_run = {"hal:cpu": 0.02, "onnxruntime": 0.005}
    monkeypatch.setattr(run, "make_runner", lambda name, model, threads: Fake(name, per_run[name]))
    monkeypatch.setattr(run, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    args = _args(min_s=1.0)
    model = SimpleNamespace(name="m", kind="cnn", source="m.onnx", description="", feeds={})
    out = run.bench_model(model, ["hal:cpu", "onnxruntime"], args)
    assert out["results"]["hal:cpu"]["reps"] == out["results"]["onnxruntime"]["reps"] == 50

    # ReferenceEvaluator's ratios divide by hal cpu's and onnxruntime's runs between its own, which
    # here are slower than in the rounds (a busier minute)
    per_run["reference"] = 0.5
    monkeypatch.setattr(run, "make_runner", lambda name, model, threads: Fake(name, per_run[name]))
    real = run._time_with_reference

    def busier(ref, partners, results) -> None:
        for p in partners:
            p.seconds *= 2
        real(ref, partners, results)

    monkeypatch.setattr(run, "_time_with_reference", busier)
    out = run.bench_model(model, ["hal:cpu", "onnxruntime", "reference"], args)
    res, ratios = out["results"], out["ratios"]
    assert res["hal:cpu"]["with_reference"]["reps"] == res["reference"]["reps"] == 10
    assert res["hal:cpu"]["median_s"] == pytest.approx(0.02)
    assert res["hal:cpu"]["with_reference"]["median_s"] == pytest.approx(0.04)
    assert ratios["ref/hal_cpu"] == pytest.approx(0.5 / 0.04) and ratios["ref/ort"] == pytest.approx(0.5 / 0.01)
    assert ratios["hal_cpu/ort"] == pytest.approx(0.02 / 0.005)


def test_ratios_pair_the_runs_of_one_round(monkeypatch) -> None:
    # a burst that slows hal cpu in rounds 3-7 and onnxruntime (timed beside it) in rounds 4-7 moves
    # the medians apart (0.04 / 0.01 s); the runs of each round, taken in the same minute, still
    # read 2x in every round but round 3
    from types import SimpleNamespace

    from benchmarks import run

    clock = [0.0]

    class Fake:
        setup_s, info = 0.0, {}

        def __init__(self, name: str, seconds: float, burst: range) -> None:
            self.name, self.seconds, self.burst, self.calls = name, seconds, burst, -1  # call -1: the warm-up

        def run(self) -> list:
            clock[0] += self.seconds * (3 if self.calls in self.burst else 1)
            self.calls += 1
            return []

    fakes = {"hal:cpu": Fake("hal:cpu", 0.02, range(3, 8)), "onnxruntime": Fake("onnxruntime", 0.01, range(4, 8))}
    monkeypatch.setattr(run, "make_runner", lambda name, model, threads: fakes[name])
    monkeypatch.setattr(run, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    args = _args(min_s=0.0)
    model = SimpleNamespace(name="m", kind="cnn", source="m.onnx", description="", feeds={})
    out = run.bench_model(model, ["hal:cpu", "onnxruntime"], args)
    res = out["results"]
    assert res["hal:cpu"]["median_s"] / res["onnxruntime"]["median_s"] == pytest.approx(4.0)
    assert out["ratios"]["hal_cpu/ort"] == pytest.approx(2.0)


def test_a_sample_is_enough_back_to_back_runs_that_another_runners_caches_fade(monkeypatch) -> None:
    # each fake run costs its runner's hot time, plus a cold cost when another runner ran last (the
    # caches it left); ReferenceEvaluator's runs have none (they allocate afresh each time). One run a
    # sample (--sample-s 0) charges hal and onnxruntime the cold cost on every run; samples of 0.1 s
    # charge it once per sample
    from types import SimpleNamespace

    from benchmarks import run

    clock, last = [0.0], [None]
    hot = {"hal:cpu": 3e-4, "onnxruntime": 1e-4, "reference": 1.8e-3}
    cold = {"hal:cpu": 1.2e-4, "onnxruntime": 5e-5, "reference": 0.0}

    class Fake:
        setup_s, info = 0.0, {}

        def __init__(self, name: str) -> None:
            self.name = name

        def run(self) -> list:
            clock[0] += hot[self.name] + (cold[self.name] if last[0] != self.name else 0.0)
            last[0] = self.name
            return []

    monkeypatch.setattr(run, "make_runner", lambda name, model, threads: Fake(name))
    monkeypatch.setattr(run, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    model = SimpleNamespace(name="m", kind="transformer", source="m.onnx", description="", feeds={})
    names = ["hal:cpu", "onnxruntime", "reference"]
    args = _args(sample_s=0.1)
    out = run.bench_model(model, names, args)
    res, ratios = out["results"], out["ratios"]
    assert 0.1 / 3e-4 <= res["hal:cpu"]["loops"] <= 0.1 / 3e-4 + 1  # calibrated on its hot runs
    assert res["reference"]["loops"] == 56 and res["hal:cpu"]["reps"] == res["reference"]["reps"] == 10
    assert res["hal:cpu"]["median_s"] == pytest.approx(3e-4, rel=2e-3)
    assert ratios["ref/hal_cpu"] == pytest.approx(6.0, rel=2e-3)
    assert ratios["hal_cpu/ort"] == pytest.approx(3.0, rel=2e-3)

    args.sample_s, last[0] = 0.0, None
    out = run.bench_model(model, names, args)
    assert out["results"]["hal:cpu"]["loops"] == 1
    assert out["results"]["hal:cpu"]["with_reference"]["median_s"] == pytest.approx(4.2e-4)
    assert out["ratios"]["ref/hal_cpu"] == pytest.approx(1.8e-3 / 4.2e-4)


@pytest.mark.usefixtures("pools_put_back")
def test_neighbours_probe_times_each_runner_back_to_back_and_after_the_others(tmp_path: Path) -> None:
    from benchmarks import neighbours

    assert neighbours.main(["--reps", "2", "--loops", "2", "--flush-mb", "1", "--sample-s", "0.001",
                            "--out", str(tmp_path / "n.json")]) == 0
    doc = json.loads((tmp_path / "n.json").read_text())
    after = doc["median_s_after"]
    assert set(after) == {"hal:cpu", "onnxruntime", "reference"}
    assert set(after["hal:cpu"]) == {"2 back-to-back", "onnxruntime", "reference", "1 MB pass"}
    assert all(t > 0 for cases in after.values() for t in cases.values())
    assert doc["ref/hal_cpu"]["one_run_each"] > 0 and doc["ref/hal_cpu"]["loops"]["hal:cpu"] >= 1


def test_library_pages_are_the_shared_objects_not_the_heap() -> None:
    import numpy as np

    from benchmarks.memory import _library_rss

    before = _library_rss()
    if before is None:
        pytest.skip("no /proc/self/smaps")
    assert before > 1 << 20  # numpy's own extension modules and OpenBLAS are mapped and touched
    heap = np.ones(8 << 20)  # 64 MiB of anonymous pages, written
    assert heap.sum() == 8 << 20
    assert abs(_library_rss() - before) < 1 << 20


def test_rss_figure_is_the_median_probe_with_every_probe_beside_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import memory

    readings = iter([900, 700, 800, 650, 1000, 600, 700])
    calls: list[str] = []

    def probe(model: str, runner: str, args: argparse.Namespace) -> dict[str, object]:
        calls.append(runner)
        own = next(readings)
        return {"status": "ok", "model": model, "runner": runner, "run_delta_bytes": own + 100,
                "run_delta_own_bytes": own, "after_setup_rss": own, "baseline_rss": 0}

    monkeypatch.setattr(memory, "_probe", probe)
    plan = {"weights_bytes": 300, "peak_activation_bytes": 100}
    r = memory.bench_rss("m", "hal:cpu", argparse.Namespace(rss_probes=3), plan)
    assert r["probe_own_bytes"] == [900, 700, 800] and r["run_delta_own_bytes"] == 800
    assert r["own_ratio_to_planned"] == 2.0 and r["ratio_to_planned"] == 900 / 400
    r = memory.bench_rss("m", "hal:cpu", argparse.Namespace(rss_probes=4), plan)  # an even count: the upper middle
    assert r["run_delta_own_bytes"] == 700 and sorted(r["probe_own_bytes"]) == [600, 650, 700, 1000]
    assert len(calls) == 7

    def failing(model: str, runner: str, args: argparse.Namespace) -> dict[str, object]:
        return {"status": "error", "model": model, "runner": runner, "error": "timed out"}

    monkeypatch.setattr(memory, "_probe", failing)
    assert memory.bench_rss("m", "hal:cpu", argparse.Namespace(rss_probes=3), plan)["status"] == "error"


def test_ab_swaps_in_a_function_from_a_revision_without_registering_its_kernels() -> None:
    # benchmarks.ab: linalg as committed at HEAD, run against the live module on one tiny-gpt session
    from benchmarks import ab
    from hal.kernels import linalg, lookup

    kernel, helper = lookup("MatMul", "", 17).fn, linalg._matmul
    live, name, old = ab.old_function("HEAD", "hal.kernels.linalg:_matmul")
    assert (live, name) == (linalg, "_matmul") and old is not helper
    assert old.__code__.co_code == helper.__code__.co_code  # the committed text, loaded a second time
    assert lookup("MatMul", "", 17).fn is kernel  # the old module's @kernel registered nothing
    r = ab.ab("tiny-gpt", [(live, name, old)], "cpu", reps=2)
    assert r["bit_identical"] and r["old_s"] > 0 and r["new_s"] > 0
    assert linalg._matmul is helper  # swapped back


def test_ab_swaps_in_a_method_on_its_live_class() -> None:
    from benchmarks import ab
    from hal.kernels import fused

    method = fused.MatMulBias.__call__
    live, name, old = ab.old_function("HEAD", "hal.kernels.fused:MatMulBias.__call__")
    assert (live, name) == (fused.MatMulBias, "__call__") and old is not method
    assert old.__code__.co_code == method.__code__.co_code
    r = ab.ab("tiny-gpt", [(live, name, old)], "cpu", reps=2)  # tiny-gpt's MatMul+Add steps call it
    assert r["bit_identical"]
    assert fused.MatMulBias.__call__ is method  # swapped back
    with pytest.raises(SystemExit, match="no function"):
        ab.old_function("HEAD", "hal.kernels.fused:MatMulBias.no_such_method")


def test_scaling_probe_builds_each_shape_at_its_node_count_and_writes_json(tmp_path: Path) -> None:
    import hal
    from benchmarks.scaling import SHAPES

    for name, build in SHAPES.items():  # each shape has the nodes it says, and loads and runs
        m = build(40)
        assert abs(len(m.graph.node) - 40) <= 2, name
        hal.InferenceSession(m, cache_dir=False).run(None, {"x": np.ones((4, 4), np.float32)})
    out = tmp_path / "scaling.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.scaling", "--nodes", "30", "--reps", "1",
                           "--targets", "cpu", "--shapes", "wide_sum,view_chain", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["schema"] == "hal-scaling/1" and {"cpu", "cores"} <= set(doc["machine"])
    assert [(r["shape"], r["target"], r["nodes"]) for r in doc["results"]] == [("wide_sum", "cpu", [30, 120]),
                                                                            ("view_chain", "cpu", [30, 120])]
    for r in doc["results"]:
        assert r["ratio"] == pytest.approx(r["median_s"][1] / r["median_s"][0], rel=0.05)
        assert r["exponent"] == pytest.approx(np.log(r["ratio"]) / np.log(4), abs=0.02)
        assert r["linear"] == (r["exponent"] <= doc["linear_limit"])


@pytest.mark.usefixtures("pools_put_back")
def test_precisions_benchmark_runs_and_its_casts_give_the_same_bits(tmp_path: Path) -> None:
    from benchmarks import precisions

    out = tmp_path / "precisions.json"
    assert precisions.main(["--models", "tiny-gpt", "--targets", "lpu,gpu", "--precisions", "native,int8",
                            "--samples", "1", "--sample-s", "0", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["schema"] == "hal-precisions/1"
    assert [(r["target"], r["precision"]) for r in doc["rows"]] == [("lpu", "native"), ("lpu", "int8"),
                                                                     ("gpu", "native"), ("gpu", "int8")]
    for r in doc["rows"]:
        assert r["equals_casts"] is True and r["max_abs_diff_vs_exact"] > 0
        assert r["precision_s"] > 0 and r["precision/exact"] == r["precision_s"] / r["exact_s"]
    from hal import numerics

    assert numerics._LOOP_FORMATS == {"tf32": 0, "bf16": 1, "fp16": 2, "fp8": 3, "int8": 4}  # put back after


def test_the_saved_models_benchmark_runs_what_onnxruntime_saves(tmp_path: Path) -> None:
    """``python -m benchmarks.saved`` on one light model: its exported form, the one onnxruntime saves
    at ORT_ENABLE_EXTENDED (FusedConv) and the one its quantizer saves (QDQ), each run by hal and
    onnxruntime, as onnxruntime runs them.
    (Not light_squeezenet: its random weights make every score 9.5e9, where the order of a conv's sums
    moves its softmax from 1/1000 each to 1/32.)"""
    out = tmp_path / "saved.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.saved", "--models", "light_shufflenet", "--samples", "1",
                           "--sample-s", "0.01", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["form"] for r in rows] == ["exported", "ORT_ENABLE_EXTENDED", "quantize_static QDQ"]
    assert rows[0]["contrib_ops"] == [] and "FusedConv" in rows[1]["contrib_ops"] and rows[2]["contrib_ops"] == []
    assert all(r["hal_cpu_ms"] > 0 and r["onnxruntime_ms"] > 0 for r in rows)
    # (onnxruntime runs the QDQ form's GEMMs as integer kernels, hal as the operators read)
    assert rows[0]["max_rel_err"] < 1e-5 and rows[1]["max_rel_err"] < 1e-5 and rows[2]["max_rel_err"] < 0.05
    # onnx's reference runs the exported form, not onnxruntime's contrib ops
    assert rows[0]["reference_max_rel_err"] < 1e-5 and rows[1]["reference_max_rel_err"] is None


@pytest.mark.parametrize("argv, says", [
    (["--compile-graphs", "0"], "--compile-graphs: unknown '0'; known: decoder-24l"),
    (["--models", "tiny-gpt,resnet"], "--models: unknown 'resnet'; known: light_bvlc_alexnet"),
    (["--targets", "cpu,tpu"], "--targets: unknown 'tpu'; known: cpu"),
    (["--baselines", "ort"], "--baselines: unknown 'ort'; known: onnxruntime, reference (or 'none')"),
    (["--rss", "hal,gpx"], "--rss: unknown 'gpx'; known: hal, cpu"),
])
def test_benchmark_refuses_an_unknown_name_before_loading_anything(argv, says, capsys) -> None:
    from benchmarks.run import parse_args

    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2 and says in capsys.readouterr().err


def test_benchmark_takes_the_names_and_words_it_lists() -> None:
    from benchmarks.run import _select_models, parse_args

    args = parse_args(["--models", "light,tiny-gpt", "--targets", "all", "--baselines", "none",
                       "--compile-graphs", "none", "--rss", "hal,onnxruntime"])
    assert _select_models(args.models)[-1] == "tiny-gpt" and len(_select_models(args.models)) == 10
