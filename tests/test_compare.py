"""hal compare / bisect / profile / estimate sweep: the model team's side-by-side view."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from dataclasses import replace
from functools import partial

import jsonschema
import numpy as np
import pytest

import hal
from hal import plugins
from hal.engine import Program, steps_for_nodes
from hal.specs import CompileReport, TargetSpec
from hal.target import kernel_capability

CORRUPT_OP = "Softmax"


def _add_bias(fn, *args, **attrs):
    return fn(*args, **attrs) + np.float32(1e-2)


class _CorruptExecutable:
    def __init__(self, program, report):
        self.program, self.report = program, report

    def run(self, feeds):
        return self.program.run(feeds)

    def trace(self):
        return []

    def serialize(self):
        return pickle.dumps(self)


class _CorruptsFirstSoftmax:
    """A fixture target whose program is the reference one except the first Softmax, off by 1e-2."""

    spec = TargetSpec(name="corrupt-one", vendor="test", kind="other")

    def capability(self, graph, options):
        return kernel_capability(graph, self.spec.name)

    def compile(self, graph, options):
        steps = steps_for_nodes(graph, graph.nodes)
        idx = next(i for i, s in enumerate(steps) if s.op_type == CORRUPT_OP)
        steps[idx] = replace(steps[idx], fn=partial(_add_bias, steps[idx].fn))
        return _CorruptExecutable(Program(graph, steps),
                                  CompileReport(target=self.spec.name, node_count=len(graph.nodes),
                                                kernel_count=len(steps)))

    def load(self, blob):
        return pickle.loads(blob)


class _Plugin:
    HAL_API_VERSION = "1.0"

    @hal.hookimpl
    def hal_targets(self):
        return [_CorruptsFirstSoftmax()]


@pytest.fixture
def corrupt_target():
    plugins.register(_Plugin(), "corrupt-plugin")
    yield "corrupt-one"
    plugins.unregister("corrupt-plugin")


def test_bisect_names_exactly_the_corrupted_node(corrupt_target):
    rep = hal.compare("zoo:tiny-gpt", corrupt_target, bisect=True)
    bad = next(r for r in rep.results if r.target == corrupt_target)
    assert not all(o.within_tolerance for o in bad.outputs)
    (b,) = rep.bisect
    graph = hal.InferenceSession("zoo:tiny-gpt").graph
    first_softmax = next(n.name for n in graph.nodes if n.op_type == CORRUPT_OP)
    assert b.found and b.node == first_softmax and b.op_type == CORRUPT_OP
    assert b.inputs_max_rel <= b.tolerance < b.max_rel
    assert b.path[0].node == first_softmax and b.path[-1].tensor == "logits"


def test_compare_reference_agrees_with_itself_and_report_validates():
    from hal.compare import CompareReport

    rep = hal.compare("zoo:tiny-cnn", "cpu")
    (r,) = rep.results
    assert r.status == "ok" and all(o.max_abs == 0 and o.within_tolerance for o in r.outputs)
    jsonschema.validate(rep.model_dump(mode="json"), CompareReport.model_json_schema())


def test_an_output_of_another_dtype_or_shape_is_a_wrong_output_however_close_its_numbers():
    from hal import render
    from hal.compare import CompareReport, TargetResult, diff

    ref = np.arange(6, dtype=np.float32).reshape(2, 3)
    wide = diff("y", ref.astype(np.float64), ref, 1e-4)  # equal numbers: diff once cast both and read "ok"
    assert (wide.max_abs, wide.within_tolerance) == (0.0, False)
    assert wide.mismatch == "dtype float64, the reference's float32"
    turned = diff("y", ref.reshape(3, 2), ref, 1e-4)
    assert not turned.within_tolerance and turned.mismatch == "shape [3, 2], the reference's [2, 3]"
    short = diff("s", [ref], [ref, ref], 1e-4)
    assert not short.within_tolerance and short.mismatch == "a sequence of 1, the reference's a sequence of 2"
    inner = diff("s", [ref.astype(np.float16)], [ref], 1e-4)
    assert inner.mismatch == "a float16 tensor [2, 3], the reference's a float32 tensor [2, 3]"
    assert diff("y", ref.copy(), ref, 1e-4).mismatch is None
    rep = CompareReport(model="m", precision="exact", tolerance=1e-4, inputs={}, results=[
        TargetResult(target="t", status="ok", precision="exact", outputs=[wide])])
    assert render.row(rep.results[0])[1] == "wrong output"
    assert render.notes(rep) == ["t: output 'y' is dtype float64, the reference's float32"]


def _resize_align_corners(scale: float) -> bytes:
    """Relu, a bilinear Resize with align_corners of the 1x1x5x6 image by ``scale``, then its square."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Resize", ["r", "", "s"], ["z"], name="resize", mode="linear",
                              coordinate_transformation_mode="align_corners"),
             helper.make_node("Mul", ["z", "z"], ["y"], name="square")]
    g = helper.make_graph(nodes, "resize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 5, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "s")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_a_peer_runs_beside_the_targets_and_shows_where_the_reference_parts_from_it():
    from hal.compare import CompareReport

    pytest.importorskip("onnxruntime")
    rep = hal.compare("zoo:tiny-gpt", "cpu", peers=["onnxruntime"])
    (peer,) = rep.peers
    assert peer.target == "onnxruntime" and peer.status == "ok" and peer.host_run_time_s > 0
    assert all(o.within_tolerance and 0 < o.max_rel < 1e-4 for o in peer.outputs)
    jsonschema.validate(rep.model_dump(mode="json"), CompareReport.model_json_schema())
    # where onnx's spec and onnxruntime part (align_corners over a fractional length, 5 x 0.5 = 2.5:
    # onnx divides by 2.5 - 1, onnxruntime by 2 - 1), the peer's row says so and --bisect names the
    # node; a whole one agrees
    rep = hal.compare(_resize_align_corners(0.5), "cpu", peers=["onnxruntime"], bisect=True)
    (fractional,) = rep.peers
    assert not fractional.outputs[0].within_tolerance and fractional.outputs[0].max_rel > 0.1
    (b,) = rep.bisect
    assert (b.target, b.found, b.node, b.op_type, b.inputs_max_rel) == ("onnxruntime", True, "resize", "Resize", 0.0)
    assert [p.node for p in b.path] == ["resize", "square"]
    rep = hal.compare(_resize_align_corners(2.0), "cpu", peers=["onnxruntime"], bisect=True)
    assert rep.peers[0].outputs[0].within_tolerance and not rep.bisect


def test_a_peer_that_is_not_installed_or_not_known_says_so(monkeypatch):
    with pytest.raises(hal.HalError, match="no peer named 'tvm'") as e:
        hal.compare("zoo:tiny-cnn", "cpu", peers=["tvm"])
    assert "onnxruntime" in e.value.hint
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # an import of it now fails
    rep = hal.compare("zoo:tiny-cnn", "cpu", peers=["onnxruntime"])
    assert rep.results[0].status == "ok"
    (peer,) = rep.peers
    assert peer.status == "error" and "onnxruntime is not installed" in peer.reason and not peer.outputs


def test_a_peer_that_crashes_or_refuses_the_model_is_a_row_not_the_end_of_the_compare(monkeypatch):
    from onnx import TensorProto, helper

    from hal import peers

    pytest.importorskip("onnxruntime")
    # a model hal runs and onnxruntime refuses: its CPU provider has no bfloat16 Relu
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [2])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    (refused,) = hal.compare(model.SerializeToString(), "cpu", peers=["onnxruntime"]).peers
    assert refused.status == "error" and refused.reason.startswith("onnxruntime 1.") and "Relu" in refused.reason
    # the peer runs in a process of its own: one killed by a signal is said so, and hal goes on
    monkeypatch.setattr(peers.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, -11, "", ""))
    (crashed,) = hal.compare("zoo:tiny-cnn", "cpu", peers=["onnxruntime"]).peers
    assert crashed.status == "error" and crashed.reason == "onnxruntime crashed on this model (SIGSEGV)"


def _hal(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hal.cli", *args], capture_output=True, text=True, timeout=300)


def test_compare_writes_json_markdown_and_html(tmp_path):
    res = _hal("compare", "zoo:tiny-gpt", "--targets", "all", "--json", str(tmp_path / "c.json"),
               "--markdown", str(tmp_path / "c.md"), "--html", str(tmp_path / "c.html"), "--peer", "onnxruntime")
    assert res.returncode == 0, res.stderr
    doc = json.loads((tmp_path / "c.json").read_text())
    assert {r["target"] for r in doc["results"]} >= {"cpu"}
    assert [p["target"] for p in doc["peers"]] == ["onnxruntime"]
    md = (tmp_path / "c.md").read_text()
    assert md.count("\n| ") >= 3 and "max rel err" in md and "| onnxruntime | ok |" in md
    page = (tmp_path / "c.html").read_text()
    assert "<table id='results'>" in page and page.count("<tr>") == 1 + len(doc["results"]) + 1


def test_demo_is_compare_on_tiny_gpt_with_every_target():
    """The README's first command: it had broken when compare took a new flag the demo did not set."""
    res = _hal("demo", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["model"] == "zoo:tiny-gpt" and {r["target"] for r in doc["results"]} >= {"cpu", "gpu", "lpu", "wafer"}
    assert all(r["status"] == "ok" for r in doc["results"])


def test_profile_writes_a_valid_chrome_trace(tmp_path):
    res = _hal("profile", "zoo:tiny-cnn", "--target", "cpu", "--trace", str(tmp_path / "t.json"), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["traceEvents"] and all({"ph", "name", "ts", "dur", "pid", "tid"} <= set(e) for e in doc["traceEvents"])


def test_estimate_sweep_reports_a_series_per_target():
    res = _hal("estimate", "zoo:llama-2-7b", "--target", "cpu", "--precision", "exact", "--sweep",
               "context=128,256", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["values"] == [128, 256] and set(doc["series"]) == {"cpu"}
    assert len(doc["estimates"]) == 2


CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
                 if __import__("os").path.exists(p)), None)
HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (.ci/run installs it)")
def test_html_report_renders_in_a_headless_browser(tmp_path):
    res = _hal("compare", "zoo:tiny-cnn", "--targets", "all", "--html", str(tmp_path / "r.html"))
    assert res.returncode == 0, res.stderr
    pictures = sorted(p.name for p in tmp_path.glob("r.*.png"))
    assert pictures, "every accelerator target that ran gets a picture"
    common = [CHROMIUM, *HEADLESS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", (tmp_path / "r.html").as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<table id=\"results\">" in dom.stdout and dom.stdout.count("data:image/png;base64,") == len(pictures)
    shot = tmp_path / "shot.png"
    subprocess.run([*common, "--window-size=1400,1800", f"--screenshot={shot}", (tmp_path / "r.html").as_uri()],
                   capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_estimate_all_targets_on_a_70b_model_never_allocates_its_weights():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child forked from a big pytest
    # worker would report the worker's peak.
    code = ("import json, hal;"
            "r = hal.estimate('zoo:llama-3.1-70b', 'all', phase='decode', context=1024);"
            "hwm = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) * 1024;"
            "print(json.dumps({'rss': hwm,"
            " 'rows': [[e.target, e.status, e.tokens_per_s, e.devices, e.memory_bytes] for e in r.estimates]}))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert doc["rss"] < 1 << 30  # 141 GB of fp16 weights, never materialised
    rows = {t: (status, tps, devices, mem) for t, status, tps, devices, mem in doc["rows"]}
    assert {"gpu", "lpu", "wafer"} <= set(rows)
    for status, tps, devices, mem in rows.values():
        assert status == "ok" and tps > 0 and devices >= 1 and mem > 0


def _ml_pipeline() -> bytes:
    """Scaler -> LinearClassifier with string labels -> ZipMap: a string tensor and a sequence of maps."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(3)
    labels = ["cat", "dog", "eel"]
    nodes = [helper.make_node("Scaler", ["x"], ["xs"], domain="ai.onnx.ml", offset=[0.5] * 4, scale=[2.0] * 4),
             helper.make_node("LinearClassifier", ["xs"], ["label", "scores"], domain="ai.onnx.ml",
                              coefficients=rng.standard_normal(12).tolist(), intercepts=[0.1, -0.2, 0.3],
                              classlabels_strings=labels, post_transform="SOFTMAX"),
             helper.make_node("ZipMap", ["scores"], ["probs"], domain="ai.onnx.ml", classlabels_strings=labels)]
    maps = helper.make_sequence_type_proto(helper.make_map_type_proto(
        TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    g = helper.make_graph(nodes, "pipeline", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("label", TensorProto.STRING, ["N"]),
                           helper.make_value_info("probs", maps)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                               helper.make_opsetid("ai.onnx.ml", 1)]).SerializeToString()


def test_compare_checks_string_tensors_and_sequences_of_maps_on_every_target():
    rep = hal.compare(_ml_pipeline(), "all", fallback="allow", dims={"N": 5})
    assert {r.target for r in rep.results} == {t.name for t in hal.targets()}
    for r in rep.results:
        assert r.status in ("ok", "fell back"), (r.target, r.reason)
        assert [(o.name, o.shape, o.within_tolerance) for o in r.outputs] == [("label", [5], True),
                                                                              ("probs", [5], True)]


@pytest.mark.parametrize(("got", "ref"), [
    (np.array(["a", "b"], dtype=object), np.array(["a", "c"], dtype=object)),  # a string differs
    ([{"a": 0.5}], [{"b": 0.5}]),  # a map's keys differ
    ([{"a": 0.5}], [{"a": 0.7}]),  # a map's value is out of tolerance
    ([np.ones(2)], [np.ones(2), np.ones(2)]),  # a sequence's length differs
    (None, np.ones(1)),  # an optional is empty on one side
])
def test_compare_diff_finds_what_differs_in_strings_maps_and_sequences(got, ref):
    from hal.compare import diff

    assert not diff("y", got, ref, 1e-4).within_tolerance
    assert diff("y", ref, ref, 1e-4).within_tolerance


def test_hal_run_shows_string_labels_and_maps_as_values(tmp_path):
    (tmp_path / "pipeline.onnx").write_bytes(_ml_pipeline())
    res = _hal("run", str(tmp_path / "pipeline.onnx"), "--dim", "N=2", "--json")
    assert res.returncode == 0, res.stderr
    label, probs = json.loads(res.stdout)["outputs"]
    assert label["dtype"] == "object" and set(label["first"]) <= {"cat", "dog", "eel"} and len(label["first"]) == 2
    assert probs["dtype"] == "sequence[2]" and [sorted(m) for m in probs["first"]] == [["cat", "dog", "eel"]] * 2
    assert all(abs(sum(m.values()) - 1) < 1e-6 for m in probs["first"])  # softmax scores, one map a row
