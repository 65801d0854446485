"""The transformers optimizer's fusions onnxruntime computes on CUDA alone
(``hal.kernels.contrib_gpu_fusions``): each against onnxruntime running the standard ops it fuses
(its CPU provider has no kernel for the fused op, and refuses a model holding one), on every
target."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from tests.kernels._onnxruntime import run_as_written

MS = "com.microsoft"
F = TensorProto.FLOAT
TARGETS = [t.name for t in hal.targets()]


def _model(nodes: list[onnx.NodeProto], inputs: dict[str, np.ndarray], outputs: list[str],
           inits: dict[str, np.ndarray] | None = None, opset: int = 21) -> bytes:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                     for n, v in inputs.items()],
        [helper.make_tensor_value_info(o, F, None) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)])
    return model.SerializeToString()


def _hal(blob: bytes, feeds: dict, target: str = "cpu") -> list[np.ndarray]:
    return hal.InferenceSession(blob, target=target, fallback="error", cache_dir=False).run(None, feeds)


def _t5_buckets(length: int, buckets: int, max_distance: int, bidirectional: bool, table: np.ndarray) -> bytes:
    """T5's relative_position_bucket as Hugging Face exports it (Range, Sub, Abs or Neg / Min, Log,
    Div, Mul, Cast, Min, Where, Gather, Transpose, Unsqueeze): what the optimizer fuses."""
    half = buckets // 2 if bidirectional else buckets
    exact = half // 2
    c = {"zero": np.int64(0), "one": np.int64(1), "len": np.int64(length), "half": np.int64(half),
         "exact": np.int64(exact), "exact_f": np.float32(exact), "last": np.int64(half - 1),
         "log_max": np.float32(math.log(max_distance / exact)), "span": np.float32(half - exact),
         "table": table, "ax0": np.array([0], np.int64), "ax1": np.array([1], np.int64)}
    n = helper.make_node
    nodes = [n("Range", ["zero", "len", "one"], ["pos"]), n("Unsqueeze", ["pos", "ax0"], ["keys"]),
             n("Unsqueeze", ["pos", "ax1"], ["queries"]), n("Sub", ["keys", "queries"], ["rel"])]
    if bidirectional:
        nodes += [n("Greater", ["rel", "zero"], ["ahead"]), n("Cast", ["ahead"], ["ahead_i"], to=TensorProto.INT64),
                  n("Mul", ["ahead_i", "half"], ["base"]), n("Abs", ["rel"], ["dist"])]
    else:
        nodes += [n("Min", ["rel", "zero"], ["behind"]), n("Neg", ["behind"], ["dist"]),
                  n("Mul", ["dist", "zero"], ["base"])]
    nodes += [n("Less", ["dist", "exact"], ["small"]), n("Cast", ["dist"], ["dist_f"], to=F),
              n("Div", ["dist_f", "exact_f"], ["ratio"]), n("Log", ["ratio"], ["logr"]),
              n("Div", ["logr", "log_max"], ["frac"]), n("Mul", ["frac", "span"], ["steps"]),
              n("Cast", ["steps"], ["steps_i"], to=TensorProto.INT64), n("Add", ["steps_i", "exact"], ["large0"]),
              n("Min", ["large0", "last"], ["large"]), n("Where", ["small", "dist", "large"], ["within"]),
              n("Add", ["base", "within"], ["bucket"]), n("Gather", ["table", "bucket"], ["picked"]),
              n("Transpose", ["picked"], ["heads"], perm=[2, 0, 1]), n("Unsqueeze", ["heads", "ax0"], ["y"])]
    graph = helper.make_graph(nodes, "t5", [], [helper.make_tensor_value_info("y", F, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in c.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("bidirectional", [1, 0], ids=["encoder", "decoder"])
@pytest.mark.parametrize("length", [1, 7, 40, 300])
def test_relative_position_bias_is_t5s_bucketed_bias(bidirectional, length):
    """The optimizer's RelativePositionBias against the subgraph it replaces, run by onnxruntime; its
    table the embedding's transpose under the embedding's dims. The decoder's (unidirectional) keys
    after the query are masked in T5 and bucketed differently by the CUDA kernel (|r|) and Hugging
    Face (0): compared at and before the query."""
    buckets, heads, max_distance = 32, 3, 128
    table = np.random.default_rng(0).standard_normal((buckets, heads)).astype(np.float32)
    (want,) = run_as_written(_t5_buckets(length, buckets, max_distance, bool(bidirectional), table), {})
    fused = np.ascontiguousarray(table.T).reshape(buckets, heads)  # the optimizer's "column-major" table
    blob = _model([helper.make_node("RelativePositionBias", ["table", "q", "k"], ["y"], domain=MS,
                                    max_distance=max_distance, is_bidirectional=bidirectional)], {}, ["y"],
                  {"table": fused, "q": np.array(length, np.int64), "k": np.array(length, np.int64)})
    for target in TARGETS:
        (got,) = _hal(blob, {}, target)
        assert got.shape == (1, heads, length, length)
        seen = np.ones((length, length), bool) if bidirectional else np.tril(np.ones((length, length), bool))
        np.testing.assert_array_equal(got[..., seen], want[..., seen])


def _nhwc_group_norm(x: np.ndarray, groups: int, silu: bool, skip: np.ndarray | None = None,
                     bias: np.ndarray | None = None) -> tuple[bytes, dict]:
    """onnx's GroupNormalization (opset 21) between NHWC / NCHW transposes, SiLU as x sigmoid(x),
    skip and bias added first."""
    n = helper.make_node
    c = x.shape[-1]
    rng = np.random.default_rng(1)
    gamma, beta = (rng.standard_normal(c).astype(np.float32) for _ in range(2))
    nodes, src = [], "x"
    feeds = {"x": x}
    if skip is not None:
        feeds["skip"] = skip
        nodes.append(n("Add", ["x", "skip"], ["s0"]))
        src = "s0"
        if bias is not None:
            nodes.append(n("Add", ["s0", "bias"], ["s"]))
            src = "s"
    nodes += [n("Transpose", [src], ["nchw"], perm=[0, 3, 1, 2]),
              n("GroupNormalization", ["nchw", "gamma", "beta"], ["gn"], num_groups=groups, epsilon=1e-5),
              n("Transpose", ["gn"], ["gn_nhwc"], perm=[0, 2, 3, 1])]
    out = "gn_nhwc"
    if silu:
        nodes += [n("Sigmoid", ["gn_nhwc"], ["sig"]), n("Mul", ["gn_nhwc", "sig"], ["act"])]
        out = "act"
    nodes.append(n("Identity", [out], ["y"]))
    inits = {"gamma": gamma, "beta": beta, **({"bias": bias} if bias is not None else {})}
    return _model(nodes, feeds, ["y"] + ([src] if skip is not None else []), inits), {"gamma": gamma, "beta": beta}


@pytest.mark.parametrize("silu", [0, 1])
@pytest.mark.parametrize("groups", [1, 4, 8])
def test_group_norm_is_onnxs_group_normalization_in_nhwc(groups, silu):
    x = (np.random.default_rng(2).standard_normal((2, 5, 6, 16)) * 3 + 1).astype(np.float32)
    ref, w = _nhwc_group_norm(x, groups, bool(silu))
    (want,) = run_as_written(ref, {"x": x})
    fused = _model([helper.make_node("GroupNorm", ["x", "gamma", "beta"], ["y"], domain=MS, groups=groups,
                                     activation=silu, epsilon=1e-5)], {"x": x}, ["y"], w)
    nchw = _model([helper.make_node("GroupNorm", ["x", "gamma", "beta"], ["y"], domain=MS, groups=groups,
                                    activation=silu, epsilon=1e-5, channels_last=0)],
                  {"x": x.transpose(0, 3, 1, 2).copy()}, ["y"], w)
    for target in TARGETS:
        np.testing.assert_allclose(_hal(fused, {"x": x}, target)[0], want, rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(_hal(nchw, {"x": x.transpose(0, 3, 1, 2).copy()}, target)[0],
                                   want.transpose(0, 3, 1, 2), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("skip_shape", ["nhwc", "n11c", "nc"])
def test_skip_group_norm_adds_skip_and_bias_first_and_gives_the_sum(skip_shape):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 4, 8)).astype(np.float32)
    shapes = {"nhwc": (2, 4, 4, 8), "n11c": (2, 1, 1, 8), "nc": (2, 8)}
    skip = rng.standard_normal(shapes[skip_shape]).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    ref_skip = skip.reshape(2, 1, 1, 8) if skip_shape == "nc" else skip
    ref, w = _nhwc_group_norm(x, 2, True, ref_skip, bias)
    want = run_as_written(ref, {"x": x, "skip": ref_skip})
    fused = _model([helper.make_node("SkipGroupNorm", ["x", "gamma", "beta", "skip", "bias"], ["y", "s"], domain=MS,
                                     groups=2, activation=1, epsilon=1e-5)], {"x": x, "skip": skip}, ["y", "s"],
                   {**w, "bias": bias})
    for target in TARGETS:
        got = _hal(fused, {"x": x, "skip": skip}, target)
        for g, wv in zip(got, want):
            np.testing.assert_allclose(g, wv, rtol=2e-5, atol=2e-5)


def test_bias_split_gelu_and_gemm_fast_gelu_are_the_ops_they_fuse():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 6, 10)).astype(np.float32)
    bias = rng.standard_normal(10).astype(np.float32)
    n = helper.make_node
    ref = _model([n("Add", ["x", "bias"], ["s"]), n("Split", ["s"], ["left", "right"], axis=-1, num_outputs=2),
                  n("Gelu", ["right"], ["g"]), n("Mul", ["left", "g"], ["y"])], {"x": x}, ["y"], {"bias": bias})
    fused = _model([n("BiasSplitGelu", ["x", "bias"], ["y"], domain=MS)], {"x": x}, ["y"], {"bias": bias})
    a = rng.standard_normal((3, 5, 8)).astype(np.float32)
    w, b = rng.standard_normal((8, 6)).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    ref2 = _model([n("MatMul", ["a", "w"], ["p"]), n("FastGelu", ["p", "b"], ["y"], domain=MS)], {"a": a}, ["y"],
                  {"w": w, "b": b})
    fused2 = _model([n("GemmFastGelu", ["a", "w", "b"], ["y"], domain=MS)], {"a": a}, ["y"], {"w": w, "b": b})
    (want,), (want2,) = run_as_written(ref, {"x": x}), run_as_written(ref2, {"a": a})
    for target in TARGETS:
        np.testing.assert_allclose(_hal(fused, {"x": x}, target)[0], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(_hal(fused2, {"a": a}, target)[0], want2, rtol=1e-5, atol=1e-6)


def test_onnxruntimes_cpu_refuses_them_and_skip_group_norm_takes_nhwc_only():
    x = np.zeros((1, 2, 2, 4), np.float32)
    w = {"gamma": np.ones(4, np.float32), "beta": np.zeros(4, np.float32)}
    blob = _model([helper.make_node("GroupNorm", ["x", "gamma", "beta"], ["y"], domain=MS, groups=2, activation=0)],
                  {"x": x}, ["y"], w)
    with pytest.raises(Exception, match="NOT_IMPLEMENTED|implementation"):
        run_as_written(blob, {"x": x})
    nchw = _model([helper.make_node("SkipGroupNorm", ["x", "gamma", "beta", "x"], ["y"], domain=MS, groups=2,
                                    activation=0, channels_last=0)], {"x": x}, ["y"], w)
    with pytest.raises(hal.UnsupportedOpError, match="NHWC input only"):
        hal.InferenceSession(nchw, target="cpu", cache_dir=False)


@pytest.mark.parametrize(("group", "strides", "pads"), [(1, [1, 1], [1, 1, 1, 1]), (2, [2, 2], [0, 1, 0, 1]),
                                                        (4, [1, 1], [0, 0, 0, 0])])
def test_nhwc_conv_is_the_conv_in_channels_last_layout(group, strides, pads):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 7, 6, 8)).astype(np.float32)  # NHWC
    w = rng.standard_normal((12, 3, 3, 8 // group)).astype(np.float32)  # M, kH, kW, C / group
    b = rng.standard_normal(12).astype(np.float32)
    attrs = {"group": group, "strides": strides, "pads": pads, "kernel_shape": [3, 3]}
    ref = _model([helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)], {"x": x.transpose(0, 3, 1, 2).copy()},
                 ["y"], {"w": w.transpose(0, 3, 1, 2).copy(), "b": b})
    (want,) = run_as_written(ref, {"x": x.transpose(0, 3, 1, 2).copy()})
    fused = _model([helper.make_node("NhwcConv", ["x", "w", "b"], ["y"], domain=MS, **attrs)], {"x": x}, ["y"],
                   {"w": w, "b": b})
    for target in TARGETS:
        np.testing.assert_allclose(_hal(fused, {"x": x}, target)[0], want.transpose(0, 2, 3, 1), rtol=1e-5,
                                   atol=1e-5)


def test_gated_relative_position_bias_is_its_schemas_formula():
    """The schema's PyTorch (WavLM's gate), run by onnxruntime as standard ops: q + bias in heads,
    its projection's D columns summed in two halves, two sigmoid gates scaling rel_pos."""
    rng = np.random.default_rng(6)
    batch, seq, heads, head, d = 2, 5, 3, 4, 8
    q = rng.standard_normal((batch, seq, heads * head)).astype(np.float32)
    rel = rng.standard_normal((1, heads, seq, seq)).astype(np.float32)
    inits = {"qb": rng.standard_normal(heads * head).astype(np.float32),
             "w": rng.standard_normal((head, d)).astype(np.float32), "b": rng.standard_normal(d).astype(np.float32),
             "eco": rng.standard_normal((1, heads, 1, 1)).astype(np.float32)}
    n = helper.make_node
    consts = {"heads_shape": np.array([0, 0, heads, head], np.int64),
              "halves": np.array([batch, heads, seq, 2, d // 2], np.int64), "last": np.array([-1], np.int64),
              "one": np.float32(1), "two": np.float32(2)}
    ref = _model([n("Add", ["q", "qb"], ["qq"]), n("Reshape", ["qq", "heads_shape"], ["q4"]),
                  n("Transpose", ["q4"], ["qt"], perm=[0, 2, 1, 3]), n("MatMul", ["qt", "w"], ["proj"]),
                  n("Add", ["proj", "b"], ["lin"]), n("Reshape", ["lin", "halves"], ["lin5"]),
                  n("ReduceSum", ["lin5", "last"], ["summed"], keepdims=0), n("Sigmoid", ["summed"], ["gates"]),
                  n("Split", ["gates"], ["gu", "gr"], axis=-1, num_outputs=2), n("Mul", ["gr", "eco"], ["gre"]),
                  n("Sub", ["gre", "one"], ["grm"]), n("Mul", ["gu", "grm"], ["gum"]),
                  n("Add", ["gum", "two"], ["gu1"]),
                  n("Mul", ["gu1", "rel"], ["y"])], {"q": q, "rel": rel}, ["y"], {**inits, **consts})
    (want,) = run_as_written(ref, {"q": q, "rel": rel})
    fused = _model([n("GatedRelativePositionBias", ["q", "qb", "rel", "w", "b", "eco"], ["y"], domain=MS,
                      num_heads=heads)], {"q": q, "rel": rel}, ["y"], inits)
    for target in TARGETS:
        np.testing.assert_allclose(_hal(fused, {"q": q, "rel": rel}, target)[0], want, rtol=1e-5, atol=1e-6)
