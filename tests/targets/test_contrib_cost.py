"""The cost models read onnxruntime's ops as the standard ops whose work they do
(``hal.perf.opcount.costed``, ``attention_dims``): a model onnxruntime saved with its fusions costs
what it costs saved without them, on every emulated target. Before, a FusedConv counted one FLOP
an output element and ran on a GPU's CUDA cores; an Attention, MultiHeadAttention or
GroupQueryAttention node was an elementwise op."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnx.backend.test
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.graph.load import load
from hal.perf.opcount import node_flops

TARGETS = ["gpu", "lpu", "wafer"]
LIGHT = os.path.join(os.path.dirname(onnx.backend.test.__file__), "data", "light")
MS = "com.microsoft"


def _flops(model: onnx.ModelProto | str) -> float:
    graph = load(model if isinstance(model, str) else model.SerializeToString())
    return sum(node_flops(n, graph) for n in graph.nodes)


def _latency(model: onnx.ModelProto | str, target: str) -> float:
    (e,) = hal.estimate(model if isinstance(model, str) else model.SerializeToString(), target,
                        precision="exact").estimates
    assert e.status == "ok", e.error
    return e.latency_s


@pytest.fixture(scope="module", params=["light_resnet50", "light_bvlc_alexnet"])
def saved(request, tmp_path_factory) -> tuple[str, str]:
    """A light model as onnxruntime saves it at ORT_ENABLE_BASIC (constants folded: the light models
    make their weights with ConstantOfShape; batch norms folded into the convolutions) and at
    ORT_ENABLE_EXTENDED (the same, its activations fused: FusedConv, FusedGemm)."""
    folder = tmp_path_factory.mktemp("saved")
    paths = []
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        options.optimized_model_filepath = str(folder / f"{request.param}_{int(level)}.onnx")
        ort.InferenceSession(os.path.join(LIGHT, f"{request.param}.onnx"), options, providers=["CPUExecutionProvider"])
        paths.append(options.optimized_model_filepath)
    basic, extended = (onnx.load(p, load_external_data=False).graph.node for p in paths)
    assert not any(n.domain == MS for n in basic) and any(n.domain == MS for n in extended)
    return paths[0], paths[1]


def test_fusions_count_the_flops_of_the_ops_they_fuse(saved) -> None:
    basic, extended = saved
    # the activations fused into the products were a FLOP an element
    assert 0.99 < _flops(extended) / _flops(basic) <= 1.0


@pytest.mark.parametrize("target", TARGETS)
def test_fusions_take_the_time_of_the_ops_they_fuse(saved, target: str) -> None:
    basic, extended = saved
    ratio = _latency(extended, target) / _latency(basic, target)
    assert 0.8 < ratio <= 1.0, ratio  # no slower; faster by the activations' passes at most


def _attention_pair(op: str, b: int = 2, s: int = 64, heads: int = 8, kv_heads: int = 8, head: int = 32
                    ) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """onnxruntime's attention op over 3-D query, key and value, and opset 23's Attention over the
    same (causal for GroupQueryAttention, which always is)."""
    q = helper.make_tensor_value_info("q", TensorProto.FLOAT, [b, s, heads * head])
    k = helper.make_tensor_value_info("k", TensorProto.FLOAT, [b, s, kv_heads * head])
    v = helper.make_tensor_value_info("v", TensorProto.FLOAT, [b, s, kv_heads * head])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [b, s, heads * head])
    if op == "GroupQueryAttention":
        extra = [helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [b]),
                 helper.make_tensor_value_info("total", TensorProto.INT32, [])]
        node = helper.make_node(op, ["q", "k", "v", "", "", "seqlens_k", "total"], ["y", "pk", "pv"], domain=MS,
                                num_heads=heads, kv_num_heads=kv_heads)
        outs = [y, helper.make_tensor_value_info("pk", TensorProto.FLOAT, [b, kv_heads, s, head]),
                helper.make_tensor_value_info("pv", TensorProto.FLOAT, [b, kv_heads, s, head])]
    else:
        extra, outs = [], [y]
        node = helper.make_node(op, ["q", "k", "v"], ["y"], domain=MS, num_heads=heads)
    theirs = helper.make_model(helper.make_graph([node], "a", [q, k, v, *extra], outs),
                               opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    onnx23 = helper.make_node("Attention", ["q", "k", "v"], ["y"], q_num_heads=heads, kv_num_heads=kv_heads,
                              is_causal=int(op == "GroupQueryAttention"))
    ours = helper.make_model(helper.make_graph([onnx23], "a", [q, k, v], [y]),
                             opset_imports=[helper.make_opsetid("", 23)])
    return theirs, ours


@pytest.mark.parametrize("op,kv_heads", [("MultiHeadAttention", 8), ("GroupQueryAttention", 2)])
def test_onnxruntime_attention_costs_as_onnx_attention(op: str, kv_heads: int) -> None:
    theirs, ours = _attention_pair(op, kv_heads=kv_heads)
    assert _flops(theirs) == _flops(ours) > 2 * 2 * 8 * 64 * 64 * 32 * 2
    for target in TARGETS:
        assert _latency(theirs, target) == pytest.approx(_latency(ours, target), rel=0.02), target


def test_packed_attention_adds_its_projection() -> None:
    """onnxruntime's Attention: the Q, K, V projection of (B, S, hidden) by (hidden, 3 hidden), then
    the attention of MultiHeadAttention over its results."""
    b, s, hidden, heads = 2, 64, 256, 8
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((hidden, 3 * hidden)).astype(np.float32), "w")
    node = helper.make_node("Attention", ["x", "w"], ["y"], domain=MS, num_heads=heads)
    model = helper.make_model(helper.make_graph(
        [node], "a", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [b, s, hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [b, s, hidden])], [w]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    mha, _ = _attention_pair("MultiHeadAttention", b, s, heads, heads, hidden // heads)
    assert _flops(model) == pytest.approx(_flops(mha) + 2.0 * b * s * hidden * 3 * hidden)
    for target in TARGETS:
        assert _latency(model, target) > _latency(mha, target)


@pytest.mark.parametrize("trans", [(0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0), (1, 1, 1, 1), (1, 0, 1, 0)])
def test_fused_matmul_counts_its_transposed_product(trans: tuple[int, ...]) -> None:
    """alpha x op(A) @ op(B), A read (3, 32, 48) x B (3, 48, 16) however it is stored."""
    ta, tb, tba, tbb = trans

    def stored(shape: list[int], t: int, tbatch: int) -> list[int]:
        s = list(shape)
        if t:
            s[-2], s[-1] = s[-1], s[-2]
        return [s[-2], *s[:-2], s[-1]] if tbatch else s

    node = helper.make_node("FusedMatMul", ["a", "b"], ["y"], domain=MS, alpha=0.5, transA=ta, transB=tb,
                            transBatchA=tba, transBatchB=tbb)
    model = helper.make_model(helper.make_graph(
        [node], "m", [helper.make_tensor_value_info("a", TensorProto.FLOAT, stored([3, 32, 48], ta, tba)),
                      helper.make_tensor_value_info("b", TensorProto.FLOAT, stored([3, 48, 16], tb, tbb))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 32, 16])]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    assert _flops(model) == 2.0 * 3 * 32 * 48 * 16


def _decode_product(packed: bool, k: int = 4096, n: int = 4096) -> onnx.ModelProto:
    """One token's (1, K) @ (K, N): float32 weights, or MatMulNBits's 4-bit blocks of 32."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])
    if packed:
        b = numpy_helper.from_array(np.zeros((n, k // 32, 16), np.uint8), "b")
        s = numpy_helper.from_array(np.ones(n * k // 32, np.float32), "s")
        node = helper.make_node("MatMulNBits", ["x", "b", "s"], ["y"], domain=MS, K=k, N=n, bits=4, block_size=32)
        inits = [b, s]
    else:
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        inits = [numpy_helper.from_array(np.zeros((k, n), np.float32), "w")]
    return helper.make_model(helper.make_graph([node], "d", [x], [y], inits),
                             opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])


def test_a_4bit_product_does_the_products_flops_and_reads_its_packed_bytes() -> None:
    packed, full = _decode_product(True), _decode_product(False)
    assert _flops(packed) == _flops(full) == 2.0 * 4096 * 4096
    # one token's product reads its weights once: 4.5 bits a weight (codes and a float32 scale per
    # 32) where float32 reads 32
    (kernel,) = hal.compile(packed.SerializeToString(), target="gpu", precision="exact").report.kernels
    (dense,) = hal.compile(full.SerializeToString(), target="gpu", precision="exact").report.kernels
    assert kernel.bytes < 0.17 * dense.bytes
    for target in ("gpu", "lpu"):  # memory-bound there; the wafer holds either in its PEs' SRAM
        assert _latency(packed, target) < _latency(full, target), target
    assert _latency(packed, "wafer") <= _latency(full, "wafer")


def _saved_attention(folder, level: ort.GraphOptimizationLevel) -> str:
    """softmax(Q·Kᵀ x 0.125)·V over (2, 4, 64, 32) heads, as onnxruntime saves it at ``level``:
    at ORT_ENABLE_EXTENDED the transpose and the scale go into one FusedMatMul."""
    dims = [2, 4, 64, 32]
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]),
             helper.make_node("Mul", ["s", "scale"], ["scaled"]),
             helper.make_node("Softmax", ["scaled"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["y"])]
    graph = helper.make_graph(nodes, "attention", [helper.make_tensor_value_info(x, TensorProto.FLOAT, dims)
                                                   for x in "qkv"],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
                              [numpy_helper.from_array(np.array(0.125, np.float32), "scale")])
    source = folder / "attention.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), source)
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.optimized_model_filepath = str(folder / f"attention_{int(level)}.onnx")
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return options.optimized_model_filepath


def test_a_saved_fused_attention_is_attention_again_on_the_gpu(tmp_path) -> None:
    """hal.graph.unfuse takes the FusedMatMul apart: the GPU recognises the attention it computes and
    costs it as the unfused model's fused attention kernel, and the cpu's bits do not move."""
    import hal.graph.passes as passes

    basic = _saved_attention(tmp_path, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    extended = _saved_attention(tmp_path, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    assert "FusedMatMul" in {n.op_type for n in onnx.load(extended).graph.node}
    kinds = {k.details.get("kind") for k in hal.compile(extended, target="gpu", precision="exact").report.kernels}
    assert "attention" in kinds
    assert _latency(extended, "gpu") == pytest.approx(_latency(basic, "gpu"), rel=1e-6)
    rng = np.random.default_rng(0)
    feeds = {x: rng.standard_normal((2, 4, 64, 32)).astype(np.float32) for x in "qkv"}
    (unfused,) = hal.InferenceSession(extended, target="cpu", cache_dir=False).run(None, feeds)
    keep = passes.unfuse_onnxruntime
    try:
        passes.unfuse_onnxruntime = lambda graph: graph
        (fused,) = hal.InferenceSession(extended, target="cpu", cache_dir=False).run(None, feeds)
    finally:
        passes.unfuse_onnxruntime = keep
    np.testing.assert_array_equal(unfused, fused)


def _lstm_pair(steps: int, batch: int, size: int = 64, hidden: int = 64) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """One LSTM as onnx writes it (float W, R) and as quantize_dynamic does (DynamicQuantizeLSTM:
    int8 codes stored transposed, a scale and zero point a direction)."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [steps, batch, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [steps, 1, batch, hidden])
    w = rng.standard_normal((1, 4 * hidden, size)).astype(np.float32)
    r = rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32)
    lstm = helper.make_model(helper.make_graph(
        [helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=hidden)], "lstm", [x], [y],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(r, "r")]),
        opset_imports=[helper.make_opsetid("", 14)])
    codes = {"wq": np.zeros((1, size, 4 * hidden), np.int8), "rq": np.zeros((1, hidden, 4 * hidden), np.int8),
             "ws": np.ones(1, np.float32), "wz": np.zeros(1, np.int8), "rs": np.ones(1, np.float32),
             "rz": np.zeros(1, np.int8)}
    node = helper.make_node("DynamicQuantizeLSTM", ["x", "wq", "rq", "", "", "", "", "", "ws", "wz", "rs", "rz"], ["y"],
                            domain=MS, hidden_size=hidden)
    quantized = helper.make_model(helper.make_graph(
        [node], "qlstm", [x], [y], [numpy_helper.from_array(v, k) for k, v in codes.items()]),
        opset_imports=[helper.make_opsetid("", 14), helper.make_opsetid(MS, 1)])
    return lstm, quantized


def test_a_quantized_lstm_is_costed_as_its_recurrence() -> None:
    """Its products are the LSTM's, and each of its steps waits for the last one's state: 64 steps of
    one row take longer than one step of 64 rows, as the LSTM's do (``test_sequence_op_cost``)."""
    lstm, quantized = _lstm_pair(10, 3)
    assert _flops(quantized) == _flops(lstm)
    for target in TARGETS:
        long, wide = _latency(_lstm_pair(64, 1)[1], target), _latency(_lstm_pair(1, 64)[1], target)
        assert long > 5 * wide, target


def test_quantized_attention_costs_as_attention() -> None:
    b, s, hidden, heads = 2, 64, 256, 8
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [b, s, hidden])
    xq = helper.make_tensor_value_info("xq", TensorProto.UINT8, [b, s, hidden])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [b, s, hidden])
    w = rng.standard_normal((hidden, 3 * hidden)).astype(np.float32)
    float_model = helper.make_model(helper.make_graph(
        [helper.make_node("Attention", ["x", "w"], ["y"], domain=MS, num_heads=heads)], "a", [x], [y],
        [numpy_helper.from_array(w, "w")]), opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    consts = {"wq": np.zeros((hidden, 3 * hidden), np.int8), "bias": np.zeros(3 * hidden, np.float32),
              "xs": np.float32(0.1), "ws": np.float32(0.1)}
    node = helper.make_node("QAttention", ["xq", "wq", "bias", "xs", "ws"], ["y"], domain=MS, num_heads=heads)
    quantized = helper.make_model(helper.make_graph(
        [node], "qa", [xq], [y], [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    assert _flops(quantized) == _flops(float_model)
    (kernel,) = hal.compile(quantized.SerializeToString(), target="gpu", precision="exact").report.kernels
    assert kernel.unit == "tensor cores" and kernel.details["keys"] == s and kernel.details["head_dim"] == 32
    for target in TARGETS:  # the same work on integer operands, the projection's weights a quarter the bytes
        assert _latency(quantized, target) <= _latency(float_model, target)


def test_a_saved_projection_through_gemm_is_a_matmul_again(tmp_path) -> None:
    """onnxruntime's MatMulAddFusion saves a 3-D MatMul and its bias Add as Reshape, Gemm, Reshape;
    hal.graph.unfuse puts them back, so the saved model computes the original's bits and the gpu
    stacks its sibling projections as it does the original's (bert-bench saved at
    ORT_ENABLE_EXTENDED: 536 us estimated before, 419.7 after, against 419.8 unsaved)."""
    rng = np.random.default_rng(0)
    names = ["q", "k", "v"]
    nodes = [helper.make_node("MatMul", ["x", f"w{n}"], [f"p{n}"]) for n in names]
    nodes += [helper.make_node("Add", [f"p{n}", f"b{n}"], [n]) for n in names]
    nodes += [helper.make_node("Add", ["q", "k"], ["qk"]), helper.make_node("Add", ["qk", "v"], ["y"])]
    inits = [numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), f"w{n}") for n in names]
    inits += [numpy_helper.from_array(rng.standard_normal(64).astype(np.float32), f"b{n}") for n in names]
    graph = helper.make_graph(nodes, "qkv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 32, 64])], inits)
    source = tmp_path / "qkv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), source)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "saved.onnx")
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    saved = options.optimized_model_filepath
    assert [n.op_type for n in onnx.load(saved).graph.node].count("Gemm") == 3
    assert not any(n.op_type == "Gemm" for n in hal.InferenceSession(saved, cache_dir=False).graph.nodes)
    # the LPU's schedule and the wafer's stages follow the node order, which onnxruntime's save changes
    for target, rel in (("gpu", 1e-6), ("wafer", 0.15), ("lpu", 0.15)):
        assert _latency(saved, target) == pytest.approx(_latency(str(source), target), rel=rel), target
    feeds = {"x": rng.standard_normal((4, 32, 64)).astype(np.float32)}
    (got,) = hal.InferenceSession(saved, target="cpu", cache_dir=False).run(None, feeds)
    (want,) = hal.InferenceSession(str(source), target="cpu", cache_dir=False).run(None, feeds)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(("rule", "per"), [("linear", 4), ("gated", 5), ("delta", 6), ("gated_delta", 7)])
def test_linear_attention_and_causal_convolution_are_costed_by_their_state(rule: str, per: int) -> None:
    """LinearAttention reads and writes its (key head x value head) state every token and head (hal
    had counted it as one FLOP an output element); CausalConvWithState multiplies a window a channel."""
    ms = [("q", [2, 5, 32]), ("k", [2, 5, 32]), ("v", [2, 5, 64]), ("g", [2, 5, 4]), ("b", [2, 5, 4])]
    names = ["q", "k", "v", "", "g" if "gated" in rule else "", "b" if "delta" in rule else ""]
    while not names[-1]:
        names.pop()
    att = helper.make_node("LinearAttention", names, ["o"], domain=MS, q_num_heads=4, kv_num_heads=4,
                           update_rule=rule)
    conv = helper.make_node("CausalConvWithState", ["x", "w"], ["c"], domain=MS)
    graph = helper.make_graph([att, conv], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in ms]
                              + [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6, 10])],
                              [helper.make_tensor_value_info("o", TensorProto.FLOAT, [2, 5, 64]),
                               helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 6, 10])],
                              [numpy_helper.from_array(np.ones((6, 1, 3), np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)])
    # 2 batches x 5 tokens x 4 heads x (8 x 16) state; 2 x 6 x 10 outputs x a window of 3
    assert _flops(model) == per * 2 * 5 * 4 * 8 * 16 + 2 * (2 * 6 * 10) * 3
    for target in TARGETS:
        assert _latency(model, target) > 0
