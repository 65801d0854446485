"""The wafer target: stages on rectangles of PEs, routes, pipeline time, modes, numerics and calibration."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
from hal_wafer.compiler import WaferTarget
from hal_wafer.placement import Placement, Region
from hal_wafer.routing import connects, route_all

import hal
from hal.errors import CompileError, ResourceError, RunError
from hal.graph.load import load
from hal.graph.passes import optimize
from hal.plugins import get_target
from hal.specs import CompileOptions
from tests.conftest import FIXTURES, LIGHT_MODELS, in_threads, light_model_on
from tests.conftest import light_case as _light_case

#: light models quick enough to also run natively on every test run (the others are bigger GEMM / concat nets)
NATIVE_LIGHT = ["light_inception_v1", "light_resnet50", "light_shufflenet", "light_squeezenet"]
TRANSFORMERS = ["zoo:tiny-gpt", str(FIXTURES / "bert_tiny.onnx"), str(FIXTURES / "gpt_tiny.onnx")]
#: the core profile's floors for precision="native" (specs/conformance/core.toml, [tolerances.native])
NATIVE_RTOL, NATIVE_ATOL = 1.6e-2, 1e-2
DECODE = {"phase": "decode", "batch": 1, "context": 1024}
#: a 4 x 4-PE wafer: tiny-gpt's stages need 17 PEs, its largest stage's weights stream into 16
SMALL_WAFER = {"fabric_width": 4, "fabric_height": 4}
#: a 2 x 2-PE wafer: one layer of tiny-gpt needs 6 PEs and cannot even be streamed through 4
TINY_WAFER = {"fabric_width": 2, "fabric_height": 2}


def _feeds(session: hal.InferenceSession) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        if i.dtype == np.int64:
            feeds[i.name] = np.ones(shape, np.int64) if "mask" in i.name else rng.integers(0, 250, shape)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(i.dtype)
    return feeds


def _graph(model: str, **zoo):
    return optimize(load(model, zoo_params=zoo or None))


def _close(out, exp, rtol: float, atol: float) -> None:
    np.testing.assert_allclose(np.asarray(out, np.float64), np.asarray(exp, np.float64), rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def llama8b():
    return hal.compile("zoo:llama-3.1-8b", target="wafer", precision="fp16", zoo_params=DECODE)


@pytest.fixture(scope="module")
def llama70b_4():
    return hal.compile("zoo:llama-3.1-70b", target="wafer", precision="fp16", zoo_params=DECODE, wafers=4)


def test_wafer_is_a_registered_target_with_a_sourced_sheet():
    spec = get_target("wafer").spec
    assert spec.kind == "wafer" and "wafer" in {s.name for s in hal.targets()}
    for key, number in spec.hardware.items():
        assert number.source, key
        assert number.kind in ("published", "derived", "assumption")


# -- numerics: the reference's numbers through the spatial program -------------------------------------

@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_matches_reference_exactly(name):
    light_model_on(name, "wafer")


@pytest.mark.parametrize("name", NATIVE_LIGHT)
def test_light_model_native_within_core_tolerance(name):
    path, feeds, expected = _light_case(name)
    out = hal.InferenceSession(str(path), target="wafer", precision="native").run(None, feeds)[0]
    _close(out, expected, NATIVE_RTOL, NATIVE_ATOL)


@pytest.mark.parametrize("model", TRANSFORMERS)
def test_transformer_exact_is_bit_identical_to_cpu(model):
    ref = hal.InferenceSession(model)
    feeds = _feeds(ref)
    wafer = hal.InferenceSession(model, target="wafer")
    for o, e in zip(wafer.run(None, feeds), ref.run(None, feeds)):
        np.testing.assert_array_equal(o, e)
    assert wafer.report.details["stage_count"] >= 3  # embed, layers (, head): one stage per layer


@pytest.mark.parametrize("model", TRANSFORMERS)
def test_transformer_native_within_tolerance(model):
    ref = hal.InferenceSession(model)
    feeds = _feeds(ref)
    native = hal.InferenceSession(model, target="wafer", precision="native").run(None, feeds)
    # tiny-gpt's 256-way logits go through bf16 FMAC operands in every layer: allow three bf16 floors
    scale = 3.0 if model.startswith("zoo:") else 1.0
    for o, e in zip(native, ref.run(None, feeds)):
        _close(o, e, NATIVE_RTOL * scale, NATIVE_ATOL * scale)
        assert not np.array_equal(o, e)  # the native formats really were applied


def test_serialize_then_load_gives_identical_outputs_and_report():
    model = str(FIXTURES / "bert_tiny.onnx")
    feeds = _feeds(hal.InferenceSession(model))
    target = get_target("wafer")
    exe = hal.compile(model, target="wafer", precision="native")
    again = target.load(exe.serialize())
    for name in exe.run(feeds):
        np.testing.assert_array_equal(again.run(feeds)[name], exe.run(feeds)[name])
    assert again.report == exe.report and again.trace() == exe.trace()
    assert again.placement.regions == exe.placement.regions


def test_runs_from_several_threads_at_once_agree():
    model = str(FIXTURES / "gpt_tiny.onnx")
    feeds = _feeds(hal.InferenceSession(model))
    exe = hal.compile(model, target="wafer")
    want = exe.run(feeds)["logits"]
    got = in_threads(lambda _: exe.run(feeds)["logits"], 4)
    assert all(np.array_equal(g, want) for g in got)


def test_shape_only_model_compiles_but_does_not_run(llama8b):
    with pytest.raises(RunError, match="shape only"):
        llama8b.run({})


# -- placement and routing --------------------------------------------------------------------------------

def _check_regions(exe) -> None:
    placement = exe.placement
    width, height = placement.mesh
    regions = list(placement.regions.values())
    for r in regions:
        assert 0 <= r.x and r.x + r.w <= width and 0 <= r.y and r.y + r.h <= height
        assert 0 <= r.wafer < placement.wafers
    for i, a in enumerate(regions):
        for b in regions[i + 1:]:
            assert not a.overlaps(b), (a, b)


def test_every_region_holds_its_weights_and_state(llama8b, llama70b_4):
    for exe in (llama8b, llama70b_4, hal.compile("zoo:tiny-gpt", target="wafer")):
        for k in exe.report.kernels:
            assert k.details["weights_bytes"] <= k.details["sram_bytes"] <= k.details["sram_capacity_bytes"], k.name
            assert k.details["pes"] == exe.placement.regions[k.name].pes


def test_regions_lie_on_the_wafer_and_do_not_overlap(llama8b, llama70b_4):
    _check_regions(llama8b)
    _check_regions(llama70b_4)
    assert llama70b_4.placement.wafers == 4
    assert {r.wafer for r in llama70b_4.placement.regions.values()} == {0, 1, 2, 3}


def test_consecutive_stages_are_neighbours(llama8b):
    regions = [llama8b.placement.regions[s] for s in llama8b.placement.order]
    for a, b in itertools.pairwise(regions):
        touch_x = a.x + a.w == b.x or b.x + b.w == a.x
        touch_y = a.y + a.h == b.y or b.y + b.h == a.y
        share_x = a.x < b.x + b.w and b.x < a.x + a.w
        share_y = a.y < b.y + b.h and b.y < a.y + a.h
        assert (touch_y and share_x) or (touch_x and share_y), (a, b)


def test_routes_connect_producer_to_consumer(llama8b, llama70b_4):
    for exe in (llama8b, llama70b_4):
        stages = {k.name: set(k.nodes) for k in exe.report.kernels}
        assert exe.placement.routes
        for r in exe.placement.routes:
            assert connects(r, exe.placement.regions[r.src], exe.placement.regions[r.dst]), r
            assert exe.placement.order.index(r.src) < exe.placement.order.index(r.dst)
            assert stages[r.src] and stages[r.dst]
        cross = [r for r in exe.placement.routes if r.cross_wafer]
        assert bool(cross) == (exe.placement.wafers > 1)


def test_oversubscribed_links_are_detected():
    regions = {"a": Region(0, 0, 0, 1, 2), "b": Region(0, 3, 0, 1, 2)}
    placement = Placement("pipelined", 1, (4, 2), regions, ["a", "b"])
    p = WaferTarget().params
    edges = [(f"t{i}", "a", "b", 4096) for i in range(30)]
    _, light = route_all(placement, edges[:1], p, stage_interval_s=1.0)
    assert light.oversubscribed_count == 0 and light.color_oversubscribed_count == 0
    routes, heavy = route_all(placement, edges, p, stage_interval_s=1e-9)
    assert heavy.oversubscribed_count > 0 and heavy.oversubscribed[0]["utilisation"] > 1
    assert heavy.color_oversubscribed_count > 0  # 30 tensors over links a router can give 24 colours
    assert all(r.hops == 3 for r in routes)


def test_placement_of_405b_over_many_wafers_is_fast():
    exe = hal.compile("zoo:llama-3.1-405b", target="wafer", precision="fp16", zoo_params=DECODE, wafers="auto")
    assert exe.report.compile_time_s < 10
    assert exe.report.devices > 10 and exe.report.details["mode"] == "pipelined"
    _check_regions(exe)


# -- modes ------------------------------------------------------------------------------------------------

def test_model_over_one_allowed_wafer_streams_its_weights_and_still_matches_the_reference():
    graph = _graph("zoo:tiny-gpt")
    ref = hal.InferenceSession("zoo:tiny-gpt")
    feeds = _feeds(ref)
    exe = WaferTarget(SMALL_WAFER).compile(graph, CompileOptions(devices=1))
    assert exe.report.details["mode"] == "weight_streaming" and exe.report.devices == 1
    levels = {m.level: m for m in exe.report.memory}
    assert levels["SRAM"].bytes <= levels["SRAM"].capacity
    assert levels["external (MemoryX)"].bytes == exe.report.details["weights_bytes"]
    # the peak is what the wafer holds (the schema's per-device figure): the streamed weights are not on it
    assert exe.report.peak_memory_bytes == levels["SRAM"].bytes
    for name, want in zip([o.name for o in ref.get_outputs()], ref.run(None, feeds)):
        np.testing.assert_array_equal(exe.run(feeds)[name], want)


def test_model_over_the_wafer_spreads_over_the_fewest_wafers_that_hold_it_by_default():
    graph = _graph("zoo:tiny-gpt")
    ref = hal.InferenceSession("zoo:tiny-gpt")
    feeds = _feeds(ref)
    exe = WaferTarget(SMALL_WAFER).compile(graph, CompileOptions())
    assert exe.report.details["mode"] == "pipelined" and exe.report.devices >= 2
    assert exe.report.details["cross_wafer_routes"] > 0
    # one wafer's SRAM, as a GPU's peak is one GPU's HBM (it had been every wafer's together)
    per_wafer = exe.report.details["sram_bytes_per_wafer"]
    assert exe.report.peak_memory_bytes == max(per_wafer) < sum(per_wafer)
    assert exe.report.peak_memory_bytes <= exe.report.details["sram_capacity_per_wafer"]
    _check_regions(exe)
    for name, want in zip([o.name for o in ref.get_outputs()], ref.run(None, feeds)):
        np.testing.assert_array_equal(exe.run(feeds)[name], want)


def test_model_that_fits_nowhere_is_a_resource_error_with_the_numbers():
    graph = _graph("zoo:tiny-gpt")
    with pytest.raises(ResourceError, match=r"no allowed mode.*PEs.*weight streaming.*GiB"):
        WaferTarget(TINY_WAFER).compile(graph, CompileOptions())
    with pytest.raises(ResourceError, match=r"layer-pipelined on 1 wafer"):
        WaferTarget(SMALL_WAFER).compile(graph, CompileOptions(devices=1, target_options={"weight_streaming": "off"}))


def test_options_are_checked():
    with pytest.raises(CompileError, match="fusion"):
        hal.compile("zoo:tiny-gpt", target="wafer", fusion="everything")
    with pytest.raises(CompileError, match="disagree"):
        hal.compile("zoo:tiny-gpt", target="wafer", devices=2, wafers=3)
    with pytest.raises(CompileError, match="unknown option"):
        hal.compile("zoo:tiny-gpt", target="wafer", tiles=4)
    # more wafers than a cluster joins: a route per pair had made 10**20 compile for ever
    with pytest.raises(hal.ResourceError, match="a cluster joins at most 2,048 systems"):
        hal.compile("zoo:tiny-gpt", target="wafer", devices=10**20)


# -- report, trace and calibration ------------------------------------------------------------------------

def test_report_describes_the_pipeline(llama8b):
    r = llama8b.report
    d = r.details
    assert d["mode"] == "pipelined" and r.devices == 1
    assert r.tokens_per_s == pytest.approx(1 / r.latency_s)
    assert r.throughput_per_s == pytest.approx(1 / d["pipeline_interval_s"])
    assert d["bottleneck_stage"] == max(r.kernels, key=lambda k: k.time_s).name
    assert 0 < d["pes_used"] <= d["pes_total"]
    assert d["fabric_hops"] > 0 and d["link_utilisation"]["max"] <= 1 and d["oversubscribed_links"] == 0
    assert r.energy_j == pytest.approx(get_target("wafer").spec.hw("system_power_w") * r.latency_s)
    assert r.memory[0].level == "SRAM" and r.memory[0].bytes <= r.memory[0].capacity
    assert all(k.unit.count(",") == 3 and k.start_s is not None for k in r.kernels)
    # stages start after their producers: the pipeline fills in order
    starts = [k.start_s for k in r.kernels]
    assert starts == sorted(starts) and r.latency_s >= sum(k.time_s for k in r.kernels)


def test_prefill_reports_time_to_first_token():
    r = hal.compile("zoo:llama-3.1-8b", target="wafer", precision="fp16",
                    zoo_params={"phase": "prefill", "prompt": 128, "logits": "last"}).report
    assert r.ttft_s == pytest.approx(r.latency_s) and r.tokens_per_s == pytest.approx(128 / r.latency_s)


def test_trace_has_an_event_per_stage_and_per_route(llama8b):
    events = llama8b.trace()
    stages = [e for e in events if e["cat"] == "stage"]
    assert [e["name"] for e in stages] == [k.name for k in llama8b.report.kernels]
    assert len([e for e in events if e["cat"] == "route"]) == len(llama8b.placement.routes)
    assert all(e["ph"] == "X" and e["dur"] >= 0 for e in events)
    pickle.dumps(events)


def test_calibration_llama_3_1_8b_decode_within_15_percent(llama8b):
    published = get_target("wafer").spec.calibration["cerebras_inference_llama31_8b_aug2024"]["value"]
    assert llama8b.report.tokens_per_s == pytest.approx(published, rel=0.15)


def test_same_parameters_hold_for_70b_over_four_wafers(llama70b_4):
    published = get_target("wafer").spec.calibration["cerebras_inference_llama31_70b_aug2024"]["value"]
    assert llama70b_4.report.tokens_per_s == pytest.approx(published, rel=0.15)
    streamed = hal.compile("zoo:llama-3.1-70b", target="wafer", precision="fp16", devices=1, zoo_params=DECODE).report
    assert streamed.details["mode"] == "weight_streaming"
    assert streamed.tokens_per_s < llama70b_4.report.tokens_per_s / 100  # 141 GB over the system I/O per token


def _cross_stage_weight_model():
    """Layer 0 transposes a weight and layer 1 multiplies by it: a weight-only value crossing a stage cut."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    nodes = [helper.make_node("Transpose", ["w"], ["wt"], name="layers.0/transpose", perm=[1, 0]),
             helper.make_node("Relu", ["x"], ["h"], name="layers.0/relu"),
             helper.make_node("MatMul", ["h", "wt"], ["y"], name="layers.1/matmul"),
             helper.make_node("Neg", ["wt"], ["wneg"], name="layers.1/neg")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
                           helper.make_tensor_value_info("wneg", TensorProto.FLOAT, [4, 3])],
                          [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_weight_only_values_crossing_a_stage_cut_are_computed_once_and_outputs_stay_private():
    import onnxruntime as ort

    m = _cross_stage_weight_model()
    # compiled without optimize(), which would fold the transpose away before the stage cut
    exe = get_target("wafer").compile(load(m), CompileOptions(precision="exact"))
    assert [len(nodes) for _, nodes in exe._recipe[1]] == [2, 2]  # the transpose and its readers part ways
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    first = exe.run({"x": x})
    first["wneg"][:] = 0  # the caller owns what it gets back
    second = exe.run({"x": x})
    for got in (first["y"], second["y"]):
        np.testing.assert_allclose(got, want[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(second["wneg"], want[1])
    # after the first run neither stage runs the weight-only steps: the transpose, nor the Neg it feeds
    kept = [e[-1].op_type for e in exe.program._prepared[1]]
    assert sorted(kept) == ["MatMul", "Relu"]


def test_a_weight_a_matrix_op_reads_in_one_stage_and_a_gather_in_another_keeps_both_values():
    """A tied embedding: the embed stage gathers rows of W, the head stage multiplies by W. At native
    precision the head's matrix op reads a rounded copy of its own (``W#mxm``) and the gather the
    weight as it is, as when each stage ran as a program of its own."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 16)).astype(np.float32) * np.float32(1 + 2 ** -12)  # bits below bf16's
    nodes = [helper.make_node("Gather", ["W", "ids"], ["emb"], name="embed/gather"),
             helper.make_node("Relu", ["emb"], ["r"], name="layers.0/relu"),
             helper.make_node("Abs", ["r"], ["h"], name="layers.1/abs"),
             helper.make_node("Gemm", ["h", "W"], ["logits"], name="head/gemm", transB=1)]
    g = helper.make_graph(nodes, "tied", [helper.make_tensor_value_info("ids", TensorProto.INT64, [3])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [3, 8]),
                           helper.make_tensor_value_info("emb", TensorProto.FLOAT, [3, 16])],
                          [numpy_helper.from_array(w, "W")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    exe = get_target("wafer").compile(load(m), CompileOptions(precision="native"))
    assert [name for name, _ in exe._recipe[1]] == ["embed", "layer0", "layer1", "head"]
    ids = np.array([1, 5, 7], dtype=np.int64)
    out = exe.run({"ids": ids})
    np.testing.assert_array_equal(out["emb"], w[ids])  # the gather: W as it is
    assert "W#mxm" in exe.program.graph.initializers
    assert not np.array_equal(exe.program.graph.initializers["W#mxm"], w)  # the head's: rounded
