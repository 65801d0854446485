"""The gpu target: kernels, fusion, waves, HBM plan, tensor parallelism, numerics and calibration."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import hal
from hal.graph.load import load
from hal.graph.passes import optimize
from hal.plugins import get_target
from hal.specs import CompileOptions
from tests.conftest import (
    FIXTURES,
    LIGHT_DIR,
    LIGHT_MODELS,
    in_threads,
    light_model_on,
    session_feeds,
)

TRANSFORMERS = ["zoo:tiny-gpt", str(FIXTURES / "bert_tiny.onnx"), str(FIXTURES / "gpt_tiny.onnx")]
DECODE = {"phase": "decode", "batch": 1, "context": 1500}


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b)) / np.max(np.abs(b)))


def _estimate(model: str, target: str = "gpu", zoo=DECODE, **options):
    graph = optimize(load(f"zoo:{model}", zoo_params=dict(zoo)))
    extra = {k: v for k, v in options.items() if k not in ("precision", "devices")}
    opts = CompileOptions(precision=options.get("precision", "exact"), devices=options.get("devices"),
                          target_options=extra)
    return get_target(target).compile(graph, opts).report


@pytest.fixture(scope="module")
def llama70b_decode():
    return optimize(load("zoo:llama-3.3-70b", zoo_params=dict(DECODE)))


def _compile(graph, target="gpu", **options):
    extra = {k: v for k, v in options.items() if k not in ("precision", "devices")}
    opts = CompileOptions(precision=options.get("precision", "exact"), devices=options.get("devices"),
                          target_options=extra)
    return get_target(target).compile(graph, opts).report


def test_every_gpu_is_listed_from_its_sheet():
    names = {t.name: t for t in hal.targets()}
    assert {"gpu", "gpu-h200", "gpu-mi300x"} <= set(names)
    assert names["gpu"].hardware["sm_count"].value == 132
    assert names["gpu-mi300x"].hardware["sm_count"].value == 304
    # the H200 is the H100's die with faster, larger memory
    h100, h200 = names["gpu"].hardware, names["gpu-h200"].hardware
    assert h200["sm_count"].value == 132 and h200["peak_flops_bf16"].value == h100["peak_flops_bf16"].value
    assert h200["hbm_bandwidth"].value > h100["hbm_bandwidth"].value
    assert h200["hbm_bytes"].value > 1.7 * h100["hbm_bytes"].value
    assert type(get_target("gpu")) is type(get_target("gpu-mi300x")) is type(get_target("gpu-h200"))
    for spec in (names["gpu"], names["gpu-h200"], names["gpu-mi300x"]):
        assert {"cuda_graphs", "tile"} <= set(spec.options)
        assert all(n.source for n in spec.hardware.values())


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_models_match_the_reference_outputs(name):
    sess = light_model_on(name, "gpu")
    assert sess.report.kernel_count < sess.report.node_count


@pytest.mark.parametrize("model", TRANSFORMERS)
def test_transformers_match_cpu_exactly_and_natively_within_tolerance(model):
    ref = hal.InferenceSession(model, target="cpu")
    feeds = session_feeds(ref)
    want = ref.run(None, feeds)[0]
    exact = hal.InferenceSession(model, target="gpu").run(None, feeds)[0]
    np.testing.assert_allclose(exact, want, rtol=1e-3, atol=1e-5)
    assert _rel_err(hal.InferenceSession(model, target="gpu", precision="native").run(None, feeds)[0], want) < 5e-3
    bf16 = hal.InferenceSession(model, target="gpu", precision="bf16").run(None, feeds)[0]
    assert 1e-5 < _rel_err(bf16, want) < 3e-2  # bf16 changes the numbers, within bf16's reach
    fp8 = hal.InferenceSession(model, target="gpu", precision="fp8").run(None, feeds)[0]
    assert _rel_err(fp8, want) < 0.15


@pytest.mark.parametrize("model", TRANSFORMERS)
def test_fusion_and_attention_recognition_on_a_transformer(model):
    rep = hal.InferenceSession(model, target="gpu").report
    assert rep.kernel_count * 3 < rep.node_count
    attn = [k for k in rep.kernels if k.details["kind"] == "attention"]
    assert len(attn) == 2 == rep.details["fused_attention_kernels"]  # one per layer
    for k in attn:
        assert {"MatMul", "Softmax"} <= set(k.op_types)
        assert k.details["score_bytes_kept_on_chip"] > 0
        # two GEMMs in one pipeline: it fills and drains like a GEMM kernel of its format
        assert k.details["latency_s"] == _gemm_latency(k.details["format"])
    fused_gemms = [k for k in rep.kernels if k.details["kind"] == "gemm" and len(k.nodes) > 1]
    assert any("Add" in k.op_types for k in fused_gemms)  # bias / residual epilogues


@pytest.mark.parametrize("model", TRANSFORMERS)
def test_fused_attention_lets_the_feeds_shapes_settle_every_memory_guard(model):
    # the fused attention step says its result's shape follows from its inputs' (hal.engine.guards),
    # so the projections and MLP after it skip their guards on a run with the feed shapes of one before
    program = hal.InferenceSession(model, target="gpu")._parts[0].executable.program
    guarded = {i for i, entry in enumerate(program._plan) if entry[5] is not None}
    assert guarded and program._settled == guarded
    assert any(s.op_type.endswith("FusedAttention") and s.shapes_follow_inputs for s in program.steps)


def test_llama_decode_has_one_fused_attention_per_layer_and_few_kernels():
    rep = _estimate("llama-3.1-8b", precision="fp8", devices=1)
    assert rep.details["fused_attention_kernels"] == 32
    assert rep.kernel_count * 5 < rep.node_count
    assert rep.tokens_per_s == pytest.approx(1 / rep.latency_s)
    assert rep.shape_only


def test_fused_attention_runs_over_key_blocks_with_the_same_numbers():
    ref = hal.InferenceSession("zoo:tiny-gpt", target="cpu")
    feeds = session_feeds(ref)
    sess = hal.InferenceSession("zoo:tiny-gpt", target="gpu", tile="64x4x64")  # 4-key blocks of 16 keys
    np.testing.assert_allclose(sess.run(None, feeds)[0], ref.run(None, feeds)[0], rtol=1e-4, atol=1e-5)
    assert all(k.details["tile"].endswith("x4") for k in sess.report.kernels if k.details["kind"] == "attention")


def test_online_softmax_kernel_matches_dense_attention_with_masks():
    from hal_gpu.attention import ScoreOp, flash_attention

    rng = np.random.default_rng(1)
    q, kt, v = (rng.standard_normal(s).astype(np.float32) for s in ((2, 3, 5, 8), (2, 3, 8, 11), (2, 3, 11, 8)))
    mask = np.where(np.tril(np.ones((5, 11), bool), k=6), 0.0, -np.inf).astype(np.float32)
    ops = (ScoreOp(np.multiply, (-1, 0)), ScoreOp(np.add, (-1, 1)))
    scale = np.float32(1 / math.sqrt(8))
    out = flash_attention(q, kt, v, scale, mask, score_ops=ops, keys=11, key_block=3)
    s = q @ kt * scale + mask
    p = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(out, (p / p.sum(-1, keepdims=True)) @ v, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_online_softmax_rows_masked_in_early_blocks_or_in_full(dtype):
    # a row whose first key blocks are all masked carries max -inf until its first open key: its
    # output is the dense softmax's; a row masked in full is NaN, as the dense softmax (and onnx) give
    from hal_gpu.attention import ScoreOp, flash_attention

    rng = np.random.default_rng(7)
    q, kt, v = (rng.standard_normal(s).astype(dtype) for s in ((1, 2, 5, 4), (1, 2, 4, 11), (1, 2, 11, 4)))
    mask = np.where(np.tril(np.ones((5, 11), bool), k=6), 0.0, -np.inf).astype(dtype)
    mask[0] = -np.inf       # masked in full
    mask[1, :7] = -np.inf   # the first two blocks of 3 keys masked, and one key of the third
    s = q @ kt + mask
    with np.errstate(invalid="ignore"):  # 0 / 0 for the row masked in full (the engine ignores it too)
        out = flash_attention(q, kt, v, mask, score_ops=(ScoreOp(np.add, (-1, 0)),), keys=11, key_block=3)
        p = np.exp(s - s.max(-1, keepdims=True))
        want = (p / p.sum(-1, keepdims=True)) @ v
    assert out.dtype == dtype and np.isnan(out[:, :, 0]).all() and not np.isnan(out[:, :, 1:]).any()
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("mask_dtype", [np.float32, np.float64])
def test_online_softmax_computes_arithmetic_score_ops_in_its_own_buffer(mask_dtype):
    # the registry's Mul/Add kernels run into the block's score buffer: the same bits as a new array
    # each, and the side inputs untouched; a mask of another dtype takes the kernel itself
    from hal_gpu.attention import ScoreOp, flash_attention

    from hal.kernels import elementwise

    rng = np.random.default_rng(2)
    q, kt, v = (rng.standard_normal(s).astype(np.float32) for s in ((2, 3, 5, 8), (2, 3, 8, 11), (2, 3, 11, 8)))
    mask = np.where(np.tril(np.ones((5, 11), bool), k=6), 0.0, -np.inf).astype(mask_dtype)
    scale = np.array(1 / math.sqrt(8), np.float32)  # a 0-d initializer, as a session hands it over
    before = mask.copy()
    fast = flash_attention(q, kt, v, scale, mask, keys=11, key_block=3,
                           score_ops=(ScoreOp(elementwise.mul, (-1, 0)), ScoreOp(elementwise.add, (-1, 1))))
    plain = flash_attention(q, kt, v, scale, mask, keys=11, key_block=3,
                            score_ops=(ScoreOp(np.multiply, (-1, 0)), ScoreOp(np.add, (-1, 1))))
    np.testing.assert_array_equal(fast, plain)
    np.testing.assert_array_equal(mask, before)
    assert fast.dtype == plain.dtype


@pytest.mark.parametrize("width", [1, 2, 3, 7, 16, 31, 32, 33, 64])
def test_row_max_down_the_columns_is_numpys_row_maximum(width):
    from hal_gpu.attention import _row_max

    rng = np.random.default_rng(width)
    s = rng.standard_normal((2, 3, 9, width)).astype(np.float32)
    s[0, 0, 0] = np.nan            # a NaN row stays NaN
    s[0, 0, 1, width // 2] = np.nan  # a NaN among numbers is skipped, as fmax does
    s[0, 0, 2] = -np.inf           # a fully masked row
    s[0, 0, 3, -1] = np.inf
    got = _row_max(s)
    assert got.shape == (2, 3, 9, 1)
    np.testing.assert_array_equal(got, np.fmax.reduce(s, axis=-1, keepdims=True))
    view = s.transpose(1, 0, 2, 3)  # scores a score op left as a strided view
    np.testing.assert_array_equal(_row_max(view), np.fmax.reduce(view, axis=-1, keepdims=True))


def _gemm_model(m: int, n: int, k: int) -> onnx.ModelProto:
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="gemm")], "gemm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [m, k]),
                           helper.make_tensor_value_info("w", TensorProto.FLOAT16, [k, n])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [m, n])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, {"hal.shape_only_weights": "w"})
    return model


def test_wave_quantisation_of_a_known_gemm():
    # 4096^3 with 128x256 tiles: 32 x 16 = 512 CTAs over 132 SMs = 4 waves, 512 / 528 busy
    k = hal.compile(_gemm_model(4096, 4096, 4096), target="gpu", tile="128x256x64").report.kernels[0]
    assert (k.details["tile"], k.details["grid"], k.details["waves"]) == ("128x256x64", 512, 4)
    assert k.details["wave_efficiency"] == pytest.approx(512 / 528, abs=1e-4)
    assert k.flops == 2 * 4096**3 and k.bound == "compute"
    # on 304 MI300X compute units 512 CTAs would be 2 waves at 512 / 608; split-K buys back the tail
    k = hal.compile(_gemm_model(4096, 4096, 4096), target="gpu-mi300x", tile="128x256x64").report.kernels[0]
    grid, waves = k.details["grid"], k.details["waves"]
    assert grid == 512 * k.details["split"] and waves == math.ceil(grid / 304)
    assert k.details["wave_efficiency"] == pytest.approx(grid / (waves * 304), abs=1e-4)
    assert k.details["wave_efficiency"] > 512 / 608
    # left to choose, the compiler finds a launch at least as efficient as the forced one
    auto = hal.compile(_gemm_model(4096, 4096, 4096), target="gpu").report.kernels[0]
    assert auto.time_s <= hal.compile(_gemm_model(4096, 4096, 4096), target="gpu",
                                      tile="128x256x64").report.kernels[0].time_s


def _gemm_latency(fmt: str) -> float:
    """The gpu sheet's GEMM latency for inputs of ``fmt``: 4-byte ones fill a longer pipeline."""
    hw = get_target("gpu").spec.hardware
    return hw["gemm_latency_s_32bit" if fmt in ("fp32", "tf32") else "gemm_latency_s"].value


def test_a_gemm_pays_its_pipeline_latency_beyond_the_roofline():
    small, big = (hal.compile(_gemm_model(n, n, n), target="gpu", cuda_graphs=True).report.kernels[0]
                  for n in (256, 8192))
    for k in (small, big):
        roofline = max(k.details["compute_s"], k.details["memory_s"])
        assert k.details["latency_s"] == _gemm_latency(k.details["format"])
        assert k.time_s == pytest.approx(roofline + k.details["latency_s"] + k.details["overhead_s"])
    # a small GEMM is its latency; a large one its arithmetic
    assert small.bound == "latency" and big.bound == "compute"
    assert big.details["latency_s"] < 0.01 * big.time_s


def test_a_tensor_core_gemm_with_rows_off_16_bytes_runs_at_the_fallback_rates():
    def kernel(n: int, precision: str):
        return hal.compile(_gemm_model(512, n, 4096), target="gpu-h200", precision=precision,
                           cuda_graphs=True).report.kernels[0]

    hw = get_target("gpu-h200").spec.hardware
    aligned, odd = kernel(50264, "fp16"), kernel(50257, "fp16")  # GPT-2's vocabulary: 50257 x 2 bytes
    assert not aligned.details["misaligned_rows"] and odd.details["misaligned_rows"]
    assert odd.flops / odd.details["compute_s"] <= hw["misaligned_gemm_flops"].value * (1 + 1e-9)
    assert odd.time_s > 3 * aligned.time_s
    # the CUDA cores' SGEMM (an fp32 model, exact) has no aligned path to lose
    fp32 = _gemm_model(512, 50257, 4096)
    for vi in (*fp32.graph.input, *fp32.graph.output):
        vi.type.tensor_type.elem_type = TensorProto.FLOAT
    assert not hal.compile(fp32, target="gpu-h200", precision="exact").report.kernels[0].details["misaligned_rows"]


def test_h200_runs_memory_bound_decode_faster_than_h100_by_its_bandwidth(llama70b_decode):
    h100 = _compile(llama70b_decode, precision="fp8", devices=2, cuda_graphs=True)
    h200 = _compile(llama70b_decode, "gpu-h200", precision="fp8", devices=2, cuda_graphs=True)
    memory = {r.target: sum(k.details.get("memory_s", 0.0) for k in r.kernels) for r in (h100, h200)}
    # 4.8 TB/s x 0.89 against 3.35 TB/s x 0.87: every kernel's HBM time falls by that ratio
    assert memory["gpu"] / memory["gpu-h200"] == pytest.approx(4.8 * 0.89 / (3.35 * 0.87), rel=1e-6)
    assert h200.latency_s < h100.latency_s


def test_hbm_plan_reuses_buffers_by_liveness():
    rep = hal.InferenceSession(str(LIGHT_DIR / "light_resnet50.onnx"), target="gpu").report
    d = rep.details
    assert d["peak_activation_bytes_per_device"] < d["activation_bytes_total"] / 4
    assert rep.peak_memory_bytes == d["weights_bytes_per_device"] + d["peak_activation_bytes_per_device"]
    hbm = next(m for m in rep.memory if m.level == "HBM")
    assert hbm.bytes == rep.peak_memory_bytes and hbm.capacity == 85176483840


def test_model_larger_than_hbm_is_a_resource_error_unless_devices_allow():
    with pytest.raises(hal.ResourceError) as err:
        _estimate("llama-3.1-70b", precision="native", devices=1)
    msg = str(err.value)
    assert "141" in msg and "85.2 GB" in msg  # what it needs, what one GPU has
    rep = _estimate("llama-3.1-70b", precision="native")  # devices chosen: the smallest that fits
    assert rep.devices == 2 and rep.peak_memory_bytes <= 85176483840
    assert rep.details["allreduce_count"] == 2 * 80


def test_cuda_graphs_lower_latency(llama70b_decode):
    eager = _compile(llama70b_decode, precision="fp8", devices=2)
    graphs = _compile(llama70b_decode, precision="fp8", devices=2, cuda_graphs=True)
    assert graphs.latency_s < eager.latency_s
    assert graphs.details["launch_overhead_s"] < eager.details["launch_overhead_s"]


def test_mi300x_sheet_gives_different_numbers_with_the_same_code(llama70b_decode):
    h100 = _compile(llama70b_decode, precision="fp8", devices=2)
    mi300x = _compile(llama70b_decode, "gpu-mi300x", precision="fp8", devices=2)
    assert mi300x.target == "gpu-mi300x" and mi300x.latency_s != pytest.approx(h100.latency_s, rel=0.02)
    assert next(m for m in mi300x.memory if m.level == "HBM").capacity == 206158430208


def test_calibration_point_within_15_percent(llama70b_decode):
    rep = _compile(llama70b_decode, precision="fp8", devices=2)
    published = get_target("gpu").spec.calibration["nim_llama33_70b_fp8_tp2_itl"]["value"]
    assert rep.latency_s == pytest.approx(published, rel=0.15)
    assert rep.devices == 2 and rep.details["allreduce_count"] == 160
    assert rep.energy_j > 0 and rep.tokens_per_s == pytest.approx(1 / rep.latency_s)


def test_serialize_then_load_gives_identical_outputs():
    exe = hal.compile("zoo:tiny-gpt", target="gpu", precision="bf16")
    again = get_target("gpu").load(exe.serialize())
    ids = {"input_ids": np.arange(16, dtype=np.int64)[None] % 256}
    np.testing.assert_array_equal(exe.run(ids)["logits"], again.run(ids)["logits"])
    assert again.report == exe.report
    with pytest.raises(hal.CompileError):
        get_target("gpu-mi300x").load(exe.serialize())


def test_runs_from_several_threads_agree():
    exe = hal.compile("zoo:tiny-gpt", target="gpu", precision="native")
    feeds = [{"input_ids": (np.arange(16, dtype=np.int64)[None] * (i + 1)) % 256} for i in range(4)]
    want = [exe.run(f)["logits"] for f in feeds]
    got = in_threads(lambda i: exe.run(feeds[i])["logits"], 4)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_trace_is_the_kernel_timeline():
    exe = hal.compile("zoo:tiny-gpt", target="gpu")
    events = exe.trace()
    assert len(events) == exe.report.kernel_count
    assert all(e["ph"] == "X" and e["dur"] > 0 for e in events)
    ts = [e["ts"] for e in events]
    assert ts == sorted(ts)
    assert (ts[-1] + events[-1]["dur"]) * 1e-6 == pytest.approx(exe.report.latency_s)


def test_shape_only_models_compile_but_do_not_run():
    exe = hal.compile(_gemm_model(64, 64, 64), target="gpu")
    assert exe.report.shape_only and exe.report.latency_s > 0
    with pytest.raises(hal.RunError):
        exe.run({"x": np.zeros((64, 64), np.float16)})


def test_bad_target_options_are_compile_errors():
    with pytest.raises(hal.CompileError):
        hal.compile("zoo:tiny-gpt", target="gpu", tile="big")
    with pytest.raises(hal.CompileError):
        hal.compile("zoo:tiny-gpt", target="gpu", cuda_graphs="yes")
    with pytest.raises(hal.CompileError):
        hal.compile("zoo:tiny-gpt", target="gpu", warp_size=64)


def _zero_size_model(case: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A small model whose tensors have a 0-length dimension (valid ONNX), with its feeds."""
    f32 = TensorProto.FLOAT
    rng = np.random.default_rng(3)
    if case == "attention":  # Q·Kᵀ, scale, softmax, P·V over 0 query rows: the fused attention path
        shapes = {"q": [1, 2, 0, 8], "k": [1, 2, 5, 8], "v": [1, 2, 5, 8]}
        nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
                 helper.make_node("MatMul", ["q", "kt"], ["s"]),
                 helper.make_node("Mul", ["s", "scale"], ["ss"]),
                 helper.make_node("Softmax", ["ss"], ["p"], axis=-1),
                 helper.make_node("MatMul", ["p", "v"], ["y"])]
        inits = [helper.make_tensor("scale", f32, [], [8 ** -0.5])]
    elif case in ("conv", "conv_transpose"):  # a batch of 0 images through an implicit GEMM
        shapes = {"x": [0, 3, 6, 6]}
        w_shape = [4, 3, 3, 3] if case == "conv" else [3, 4, 3, 3]
        op = "Conv" if case == "conv" else "ConvTranspose"
        nodes = [helper.make_node(op, ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
        inits = [onnx.numpy_helper.from_array(rng.standard_normal(w_shape).astype(np.float32), "w")]
    else:  # MatMul / Gemm with a zero M, N, K or batch, then bias, a row kernel and a reduction
        a, b = {"m0": ([0, 4], [4, 3]), "k0": ([2, 0], [0, 3]), "n0": ([2, 4], [4, 0]),
                "batch0": ([0, 2, 4], [4, 3]), "gemm_m0": ([0, 4], [4, 3])}[case]
        shapes = {"a": a, "b": b}
        op = "Gemm" if case == "gemm_m0" else "MatMul"
        nodes = [helper.make_node(op, ["a", "b"], ["t"]), helper.make_node("Add", ["t", "bias"], ["u"]),
                 helper.make_node("Softmax", ["u"], ["p"], axis=-1),
                 # onnxruntime refuses to normalise a row of 0 elements; Tanh keeps n0 elementwise
                 helper.make_node("Tanh", ["u"], ["y"]) if case == "n0" else
                 helper.make_node("LayerNormalization", ["u", "gamma"], ["y"], axis=-1),
                 helper.make_node("ReduceSum", ["p"], ["r"], keepdims=1)]
        inits = [onnx.numpy_helper.from_array(np.full(b[-1], 0.5, np.float32), "bias"),
                 onnx.numpy_helper.from_array(np.ones(b[-1], np.float32), "gamma")]
    outputs = ["y", "r"] if "r" in {o for n in nodes for o in n.output} else ["y"]
    inputs = [helper.make_tensor_value_info(n, f32, s) for n, s in shapes.items()]
    graph = helper.make_graph(nodes, f"zero_{case}", inputs,
                              [helper.make_tensor_value_info(o, f32, None) for o in outputs], inits)
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    return model, {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}


@pytest.mark.parametrize("case", ["m0", "k0", "n0", "batch0", "gemm_m0", "conv", "conv_transpose", "attention"])
@pytest.mark.parametrize("target", ["gpu", "gpu-mi300x"])
def test_zero_size_tensors_compile_cost_and_run_like_onnxruntime(case, target):
    import onnxruntime as ort

    model, feeds = _zero_size_model(case)
    blob = model.SerializeToString()
    sess = hal.InferenceSession(blob, target=target)
    want = ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, feeds)
    for got, ref in zip(sess.run(None, feeds), want):
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    rep = sess.report
    assert math.isfinite(rep.latency_s) and rep.latency_s > 0 and math.isfinite(rep.energy_j)
    for k in rep.kernels:
        d = k.details
        assert math.isfinite(k.time_s) and k.time_s >= d["overhead_s"]
        if d.get("grid") == 0:  # an empty grid does no work: only the launch is paid
            assert d["waves"] == 0 and d["compute_s"] == 0 and d["memory_s"] == 0
    if case == "attention":
        assert rep.details["fused_attention_kernels"] == 1
    if case != "k0":  # k = 0 still writes an output of zeros; every other case computes nothing
        gemms = [k for k in rep.kernels if k.details["kind"] in ("gemm", "attention")]
        assert gemms and all(k.details["grid"] == 0 for k in gemms)


def test_capability_hands_its_kernel_plan_to_the_compile_of_the_same_graph(monkeypatch):
    import hal_gpu.compiler as gpu_compiler

    calls = []
    real = gpu_compiler.plan_kernels
    monkeypatch.setattr(gpu_compiler, "plan_kernels", lambda g: calls.append(g) or real(g))
    hal.InferenceSession("zoo:tiny-gpt", target="gpu", cache_dir=False)
    assert len(calls) == 1  # capability planned; compile took that plan
    first = hal.InferenceSession("zoo:tiny-gpt", target="gpu", cache_dir=False)
    second = hal.InferenceSession("zoo:tiny-gpt", target="gpu", cache_dir=False)
    assert len(calls) == 3  # one plan per graph: no session compiles with another graph's kernels
    feeds = {"input_ids": np.arange(16, dtype=np.int64).reshape(1, 16) % 50}
    np.testing.assert_array_equal(first.run(None, feeds)[0], second.run(None, feeds)[0])
