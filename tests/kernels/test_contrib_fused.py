"""onnxruntime's fused float contrib ops (``hal.kernels.contrib_fused``, domain com.microsoft, and
the two it registers in the ONNX domain) against onnxruntime itself, graph optimisations off so it
runs each op as written: one node at a time over seeded inputs, then models onnxruntime's own
optimiser saved, on every target. onnx defines none of these ops; onnxruntime's CPU kernels are
their reference."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from tests.kernels._onnxruntime import run_as_written

RNG = np.random.default_rng(11)
MS = "com.microsoft"
F = TensorProto.FLOAT
TARGETS = [t.name for t in hal.targets()]


def _rand(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _model(nodes: list[onnx.NodeProto], feeds: dict[str, np.ndarray], outputs: list[str],
           consts: dict[str, np.ndarray] | None = None, opset: int = 17,
           shapes: list[tuple[int, ...] | None] | None = None) -> bytes:
    """A model of ``nodes``; its outputs typed float32, of ``shapes`` where given (onnxruntime runs
    it without them, onnx's checker wants them), else of the first feed's rank."""
    rank = len(next(iter(feeds.values())).shape)
    shapes = shapes or [None] * len(outputs)
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for n, v in feeds.items()],
        [helper.make_tensor_value_info(o, F, list(s) if s is not None else [f"{o}_{i}" for i in range(rank)])
         for o, s in zip(outputs, shapes)],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in (consts or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)])
    return model.SerializeToString()



def _hal(blob: bytes | str, feeds: dict[str, np.ndarray], target: str = "cpu") -> list[np.ndarray]:
    return hal.InferenceSession(blob, target=target, cache_dir=False).run(None, feeds)


def _close(got: list[np.ndarray], want: list[np.ndarray], rtol: float = 1e-5, atol: float = 1e-6) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, g.shape, w.dtype, w.shape)
        # atol relative to the output's magnitude: float32 rounding of sums, not of each term
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol * max(1.0, float(np.abs(w).max(initial=0))))


def _same(node: onnx.NodeProto, feeds: dict[str, np.ndarray], consts: dict[str, np.ndarray] | None = None,
          target: str = "cpu", opset: int = 17, **tol: float) -> list[np.ndarray]:
    outputs = [o for o in node.output if o]
    want = run_as_written(_model([node], feeds, outputs, consts, opset), feeds)
    got = _hal(_model([node], feeds, outputs, consts, opset, [w.shape for w in want]), feeds, target)
    _close(got, want, **tol)
    return got


def _refused(node: onnx.NodeProto, feeds: dict[str, np.ndarray], match: str, consts=None, opset: int = 17) -> None:
    blob = _model([node], feeds, [o for o in node.output if o], consts, opset)
    with pytest.raises(hal.RunError, match=match):
        _hal(blob, feeds)


# -- FusedConv, FusedGemm -----------------------------------------------------------------------------

CONV_ACTIVATIONS = [("Relu", []), ("Tanh", []), ("Sigmoid", []), ("LeakyRelu", [0.1]), ("Clip", [-0.5, 0.7]),
                    ("HardSigmoid", [0.3, 0.4]), (None, [])]


@pytest.mark.parametrize(("activation", "params"), CONV_ACTIVATIONS)
@pytest.mark.parametrize("with_z", [False, True])
def test_fused_conv_activations(activation: str | None, params: list[float], with_z: bool) -> None:
    attrs = {"pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}
    if activation:
        attrs["activation"] = activation
    if params:
        attrs["activation_params"] = params
    feeds = {"x": _rand(2, 4, 9, 9)}
    consts = {"w": _rand(6, 4, 3, 3, scale=0.3), "b": _rand(6)}
    if with_z:
        feeds["z"] = _rand(2, 6, 9, 9)
    node = helper.make_node("FusedConv", ["x", "w", "b"] + (["z"] if with_z else []), ["y"], domain=MS, **attrs)
    _same(node, feeds, consts)


@pytest.mark.parametrize(("shape", "w_shape", "attrs"), [
    ((1, 8, 12, 12), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1], "strides": [2, 2]}),  # depthwise
    ((1, 8, 10, 10), (16, 4, 1, 1), {"group": 2}),  # grouped 1x1
    ((2, 3, 16, 16), (32, 3, 3, 3), {"pads": [1, 1, 1, 1]}),  # enough channels for Winograd
    ((1, 4, 11, 11), (5, 4, 5, 5), {"strides": [2, 2], "dilations": [1, 1], "auto_pad": "SAME_UPPER"}),
    ((2, 3, 20), (4, 3, 3), {"pads": [1, 1]}),  # 1-D
])
def test_fused_conv_reuses_every_conv_path(shape, w_shape, attrs) -> None:
    node = helper.make_node("FusedConv", ["x", "w", "b"], ["y"], domain=MS, activation="Relu", **attrs)
    _same(node, {"x": _rand(*shape)}, {"w": _rand(*w_shape, scale=0.3), "b": _rand(w_shape[0])})


@pytest.mark.parametrize("target", TARGETS)
def test_fused_conv_on_every_target(target: str) -> None:
    node = helper.make_node("FusedConv", ["x", "w", "b", "z"], ["y"], domain=MS, activation="Relu",
                            pads=[1, 1, 1, 1])
    feeds = {"x": _rand(1, 4, 8, 8), "z": _rand(1, 6, 8, 8)}
    _same(node, feeds, {"w": _rand(6, 4, 3, 3, scale=0.3), "b": _rand(6)}, target=target)


@pytest.mark.parametrize(("activation", "attrs"), [
    ("Relu", {}), ("Tanh", {}), ("Sigmoid", {}), ("LeakyRelu", {"activation_alpha": 0.2}),
    ("HardSigmoid", {"activation_alpha": 0.3, "activation_beta": 0.6}), ("Elu", {"activation_alpha": 0.8}),
    ("Selu", {"activation_alpha": 1.5, "activation_gamma": 1.1}), ("Celu", {"activation_alpha": 0.7}),
    ("ThresholdedRelu", {"activation_alpha": 0.3}), ("Softplus", {}), ("Softsign", {}),
    ("ParametricSoftplus", {"activation_alpha": 1.3, "activation_beta": 0.7}),
    ("ScaledTanh", {"activation_alpha": 1.3, "activation_beta": 0.7}),
])
def test_fused_gemm_activations(activation: str, attrs: dict) -> None:
    node = helper.make_node("FusedGemm", ["a", "b", "c"], ["y"], domain=MS, activation=activation, transB=1,
                            alpha=0.9, beta=1.1, **attrs)
    _same(node, {"a": _rand(5, 16)}, {"b": _rand(7, 16, scale=0.3), "c": _rand(7)})


@pytest.mark.parametrize(("trans_a", "trans_b"), [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("target", ["cpu", "wafer"])
def test_fused_gemm_transposes(trans_a: int, trans_b: int, target: str) -> None:
    node = helper.make_node("FusedGemm", ["a", "b", "c"], ["y"], domain=MS, activation="Relu", transA=trans_a,
                            transB=trans_b)
    feeds = {"a": _rand(*((16, 5) if trans_a else (5, 16)))}
    _same(node, feeds, {"b": _rand(*((7, 16) if trans_b else (16, 7))), "c": _rand(1, 7)}, target=target)


def test_fused_activations_refuse_what_onnxruntime_refuses() -> None:
    x = {"x": _rand(1, 2, 5, 5)}
    w = {"w": _rand(3, 2, 3, 3)}
    _refused(helper.make_node("FusedConv", ["x", "w"], ["y"], domain=MS, activation="Elu"), x,
             "not one onnxruntime fuses", w)
    _refused(helper.make_node("FusedConv", ["x", "w"], ["y"], domain=MS, activation="Clip", activation_params=[0.0]),
             x, "takes 2 activation_params", w)
    _refused(helper.make_node("FusedConv", ["x", "w", "", "z"], ["y"], domain=MS, activation="Relu"),
             {**x, "z": _rand(1, 3, 2, 2)}, r"Z \(input 3\) must have", w)
    _refused(helper.make_node("FusedGemm", ["x", "w"], ["y"], domain=MS, activation="Gelu"),
             {"x": _rand(2, 3)}, "not an elementwise functor", {"w": _rand(3, 4)})
    _refused(helper.make_node("FusedGemm", ["x", "w"], ["y"], domain=MS, activation="HardSigmoid",
                              activation_alpha=0.2), {"x": _rand(2, 3)}, "needs the attribute.s. activation_beta",
             {"w": _rand(3, 4)})


# -- FusedMatMul ----------------------------------------------------------------------------------

def _stored(logical: tuple[int, ...], trans: int, trans_batch: int) -> tuple[int, ...]:
    """The stored shape of an operand whose op() is ``logical`` ([batch..., rows, cols])."""
    shape = list(logical)
    if trans:
        shape[-1], shape[-2] = shape[-2], shape[-1]
    if trans_batch:
        shape.insert(0, shape.pop(-2))  # op moves axis 0 to just before the last: undo it
    return tuple(shape)


MATMUL_CASES = [(rank, *flags) for rank in (2, 3, 4) for flags in itertools.product((0, 1), repeat=4)]


@pytest.mark.parametrize(("rank", "ta", "tb", "tba", "tbb"), MATMUL_CASES)
def test_fused_matmul_transposes(rank: int, ta: int, tb: int, tba: int, tbb: int) -> None:
    batch = (3, 2)[: rank - 2]
    m, k, n = 4, 5, 6
    node = helper.make_node("FusedMatMul", ["a", "b"], ["y"], domain=MS, alpha=0.35, transA=ta, transB=tb,
                            transBatchA=tba, transBatchB=tbb)
    if rank == 2 and (tba or tbb):  # onnxruntime needs rank 3 or more for the batch transposes
        feeds = {"a": _rand(m, k), "b": _rand(k, n)}
        _refused(node, feeds, "one rank, 3 or more")
        return
    feeds = {"a": _rand(*_stored((*batch, m, k), ta, tba)), "b": _rand(*_stored((*batch, k, n), tb, tbb))}
    (y,) = _same(node, feeds)
    assert y.shape == (*batch, m, n)


@pytest.mark.parametrize(("a_shape", "b_shape", "attrs"), [
    ((2, 3, 4, 5), (5, 6), {}), ((2, 3, 4, 5), (6, 5), {"transB": 1}),  # a 2-D weight under batches
    ((2, 1, 4, 5), (1, 3, 5, 6), {"transA": 0}),  # the batch axes broadcast
    ((2, 5, 4), (2, 5, 6), {"transA": 1, "alpha": 2.0}),
    ((5,), (5, 6), {}), ((3, 4, 5), (5,), {"alpha": 0.5}),  # vectors, as numpy's matmul takes them
])
def test_fused_matmul_broadcasts(a_shape, b_shape, attrs) -> None:
    node = helper.make_node("FusedMatMul", ["a", "b"], ["y"], domain=MS, **attrs)
    _same(node, {"a": _rand(*a_shape), "b": _rand(*b_shape)})


@pytest.mark.parametrize("target", TARGETS)
def test_fused_matmul_on_every_target(target: str) -> None:
    node = helper.make_node("FusedMatMul", ["a", "b"], ["y"], domain=MS, alpha=0.125, transB=1, transBatchA=1,
                            transBatchB=1)
    _same(node, {"a": _rand(8, 2, 16), "b": _rand(8, 2, 16)}, target=target)


def test_fused_matmul_refuses_mismatched_operands() -> None:
    node = helper.make_node("FusedMatMul", ["a", "b"], ["y"], domain=MS, transB=1)
    _refused(node, {"a": _rand(3, 4), "b": _rand(4, 5)}, "do not multiply")


# -- the Gelu family, BiasAdd ---------------------------------------------------------------------

@pytest.mark.parametrize(("op", "inputs", "attrs"), [
    ("Gelu", ["x"], {}), ("BiasGelu", ["x", "bias"], {}), ("FastGelu", ["x"], {}), ("FastGelu", ["x", "bias"], {}),
    ("QuickGelu", ["x"], {}), ("QuickGelu", ["x"], {"alpha": 1.0}), ("QuickGelu", ["x"], {"alpha": -0.6}),
])
@pytest.mark.parametrize("target", ["cpu", "lpu"])
def test_gelu_family(op: str, inputs: list[str], attrs: dict, target: str) -> None:
    x = _rand(2, 7, 16, scale=3.0)
    x.reshape(-1)[:6] = [0.0, -0.0, 30.0, -30.0, 1e-20, -9.0]
    feeds = {"x": x}
    consts = {"bias": _rand(16)} if "bias" in inputs else {}
    _same(helper.make_node(op, inputs, ["y"], domain=MS, **attrs), feeds, consts, target=target)


def test_bias_gelu_refuses_a_bias_of_the_wrong_width() -> None:
    _refused(helper.make_node("BiasGelu", ["x", "bias"], ["y"], domain=MS), {"x": _rand(2, 8)},
             "1-D with the input's last dimension", {"bias": _rand(4)})


def test_bias_add_as_onnxruntime_defines_it() -> None:
    """onnxruntime runs BiasAdd on CUDA only: the contract, (X + bias) + skip, is the reference."""
    feeds = {"x": _rand(2, 3, 8), "skip": _rand(2, 3, 8)}
    bias = _rand(8)
    node = helper.make_node("BiasAdd", ["x", "bias", "skip"], ["y"], domain=MS)
    blob = _model([node], feeds, ["y"], {"bias": bias})
    for target in TARGETS:
        (y,) = _hal(blob, feeds, target)
        np.testing.assert_array_equal(y, (feeds["x"] + bias) + feeds["skip"])
    _refused(node, {"x": _rand(2, 3, 8), "skip": _rand(3, 8)}, "skip of its shape", {"bias": bias})


# -- SkipLayerNormalization and the simplified forms ----------------------------------------------

@pytest.mark.parametrize("skip_shape", [(2, 5, 16), (1, 5, 16), (5, 16)])
@pytest.mark.parametrize(("beta", "bias"), [(True, True), (False, False), (True, False), (False, True)])
def test_skip_layer_normalization(skip_shape: tuple[int, ...], beta: bool, bias: bool) -> None:
    feeds = {"x": _rand(2, 5, 16, scale=2.0) + 1.0, "skip": _rand(*skip_shape)}
    consts = {"gamma": _rand(16), "beta": _rand(16), "bias": _rand(16)}
    inputs = ["x", "skip", "gamma", "beta" if beta else "", "bias" if bias else ""]
    while not inputs[-1]:
        inputs.pop()
    _same(helper.make_node("SkipLayerNormalization", inputs, ["y"], domain=MS, epsilon=1e-5), feeds, consts)
    mean, inv, total = _same(helper.make_node("SkipLayerNormalization", inputs, ["y", "mean", "inv", "sum"],
                                              domain=MS, epsilon=1e-5), feeds, consts)[1:]
    assert mean.shape == inv.shape == (2, 5, 1) and mean.dtype == inv.dtype == np.float32
    assert total.shape == (2, 5, 16)


@pytest.mark.parametrize("outputs", [["y", "", "", "sum"], ["y", "mean"], ["y", "", "inv"]])
@pytest.mark.parametrize("target", TARGETS)
def test_skip_layer_normalization_optional_outputs(outputs: list[str], target: str) -> None:
    """The transformers optimizer's SkipLayerNormalization keeps the sum for the next residual."""
    feeds = {"x": _rand(6, 32), "skip": _rand(6, 32)}
    consts = {"gamma": _rand(32), "beta": _rand(32), "bias": _rand(32)}
    node = helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"], outputs, domain=MS,
                            epsilon=1e-12)
    _same(node, feeds, consts, target=target)


@pytest.mark.parametrize("op", ["SkipLayerNormalization", "SkipSimplifiedLayerNormalization"])
def test_skip_normalizations_of_float16(op: str) -> None:
    """onnxruntime widens 16-bit floats, sums and normalises in float32, and rounds each output once."""
    feeds = {"x": _rand(2, 5, 64, scale=4.0).astype(np.float16), "skip": _rand(2, 5, 64).astype(np.float16)}
    consts = {"gamma": _rand(64).astype(np.float16), "bias": _rand(64).astype(np.float16)}
    node = helper.make_node(op, ["x", "skip", "gamma", "bias"] if "Simplified" in op else
                            ["x", "skip", "gamma", "", "bias"], ["y", "", "", "sum"], domain=MS, epsilon=1e-5)
    blob = _model([node], feeds, ["y", "sum"], consts, shapes=[(2, 5, 64)] * 2)
    model = onnx.load_from_string(blob)
    for o in model.graph.output:
        o.type.tensor_type.elem_type = TensorProto.FLOAT16
    blob = model.SerializeToString()
    want, got = run_as_written(blob, feeds), _hal(blob, feeds)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype == np.float16
        np.testing.assert_allclose(g.astype(np.float32), w.astype(np.float32), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("skip_shape", [(2, 5, 16), (5, 16)])
def test_skip_simplified_layer_normalization(bias: bool, skip_shape: tuple[int, ...]) -> None:
    feeds = {"x": _rand(2, 5, 16, scale=2.0), "skip": _rand(*skip_shape)}
    consts = {"gamma": _rand(16), "bias": _rand(16)}
    inputs = ["x", "skip", "gamma"] + (["bias"] if bias else [])
    node = helper.make_node("SkipSimplifiedLayerNormalization", inputs, ["y", "mean", "inv", "sum"], domain=MS,
                            epsilon=1e-6)
    _, mean, _, _ = _same(node, feeds, consts)
    assert not mean.any()  # no centring term: onnxruntime writes 0
    _same(helper.make_node("SkipSimplifiedLayerNormalization", inputs, ["y"], domain=MS, epsilon=1e-6), feeds, consts)


def test_skip_layer_normalization_refuses_shapes_onnxruntime_refuses() -> None:
    consts = {"gamma": _rand(16)}
    node = helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma"], ["y"], domain=MS)
    _refused(node, {"x": _rand(2, 5, 16), "skip": _rand(2, 1, 16)}, "skip must have the input's shape", consts)
    _refused(node, {"x": _rand(1, 2, 5, 16), "skip": _rand(1, 2, 5, 16)}, "2-D or 3-D", consts)
    _refused(node, {"x": _rand(2, 5, 16), "skip": _rand(2, 5, 16)}, "gamma must be 1-D of the hidden size 16",
             {"gamma": _rand(8)})


@pytest.mark.parametrize("opset", [13, 17, 23])
@pytest.mark.parametrize(("axis", "scale_shape"), [(-1, (16,)), (1, (5, 16))])
@pytest.mark.parametrize("outputs", [["y"], ["y", "inv"]])
def test_simplified_layer_normalization(opset: int, axis: int, scale_shape: tuple[int, ...], outputs: list[str]
                                        ) -> None:
    node = helper.make_node("SimplifiedLayerNormalization", ["x", "scale"], outputs, axis=axis, epsilon=1e-6)
    got = _same(node, {"x": _rand(2, 5, 16, scale=3.0)}, {"scale": _rand(*scale_shape)}, opset=opset)
    if len(outputs) == 2:
        assert got[1].shape == ((2, 5, 1) if axis == -1 else (2, 1, 1)) and got[1].dtype == np.float32


@pytest.mark.parametrize("opset", [13, 14])
@pytest.mark.parametrize("outputs", [["y"], ["y", "mean", "inv"]])
@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_layer_normalization_below_opset_17(opset: int, outputs: list[str], target: str) -> None:
    """onnxruntime's LayerNorm fusion writes the node into opset 13/14 models; hal runs it as onnx's."""
    node = helper.make_node("LayerNormalization", ["x", "scale", "bias"], outputs, axis=-1, epsilon=1e-5)
    _same(node, {"x": _rand(3, 4, 24, scale=2.0) + 0.5}, {"scale": _rand(24), "bias": _rand(24)}, opset=opset,
          target=target)


@pytest.mark.parametrize(("op", "opset"), [("SimplifiedLayerNormalization", 17), ("LayerNormalization", 14)])
@pytest.mark.parametrize(("x_type", "scale_type"), [(np.float16, np.float32), (np.float32, np.float16)])
@pytest.mark.parametrize("target", ["cpu", "lpu"])
def test_onnx_domain_layer_norms_of_onnxruntime_give_the_scales_type(op, opset, x_type, scale_type, target) -> None:
    # onnxruntime's schemas: X: T, scale: V -> Y: V (its fp16 converter and Olive write such mixes);
    # hal had returned X's type, and a float16 X with a float32 scale is rounded once, to float32
    inputs = ["x", "scale", "bias"] if op == "LayerNormalization" else ["x", "scale"]
    node = helper.make_node(op, inputs, ["y"], axis=-1, epsilon=1e-5)
    consts = {"scale": _rand(16).astype(scale_type), "bias": _rand(16).astype(scale_type)}
    feeds = {"x": _rand(2, 3, 16, scale=2.0).astype(x_type)}
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", helper.np_dtype_to_tensor_dtype(
        np.dtype(x_type)), [2, 3, 16])], [helper.make_tensor_value_info("y", helper.np_dtype_to_tensor_dtype(
            np.dtype(scale_type)), [2, 3, 16])], [numpy_helper.from_array(consts[i], i) for i in inputs[1:]])
    blob = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()
    (want,), (got,) = run_as_written(blob, feeds), _hal(blob, feeds, target)
    assert got.dtype == want.dtype == scale_type
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=1e-6 if scale_type == np.float32
                               else 1e-3, atol=1e-6)


# -- models onnxruntime's optimiser saved ---------------------------------------------------------

def _save_optimised(model: onnx.ModelProto, folder, level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED) -> str:
    onnx.save(model, folder / "source.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.optimized_model_filepath = str(folder / "optimised.onnx")
    ort.InferenceSession(str(folder / "source.onnx"), options, providers=["CPUExecutionProvider"])
    return str(folder / "optimised.onnx")


def _cnn() -> onnx.ModelProto:
    """Conv + BatchNorm + Relu, a residual Conv + Add + Relu, a depthwise Conv + Clip, Gemm + Relu."""
    c = 8
    inits = {"w1": _rand(c, 3, 3, 3, scale=0.3), "b1": _rand(c), "w2": _rand(c, c, 3, 3, scale=0.2),
             "w3": _rand(c, 1, 3, 3, scale=0.3), "fc": _rand(10, c, scale=0.3), "fc_b": _rand(10),
             "s": np.abs(_rand(c)) + 0.5, "bb": _rand(c), "m": _rand(c), "v": np.abs(_rand(c)) + 0.5,
             "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "s", "bb", "m", "v"], ["n1"]),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["res"]),
        helper.make_node("Relu", ["res"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], pads=[1, 1, 1, 1], group=c),
        helper.make_node("Clip", ["c3", "lo", "hi"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fc_b"], ["logits"], transB=1),
        helper.make_node("Relu", ["logits"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", F, [2, 3, 10, 10])],
                              [helper.make_tensor_value_info("y", F, [2, 10])],
                              [numpy_helper.from_array(v, n) for n, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _encoder_layer(opset: int = 14) -> onnx.ModelProto:
    """One BERT layer as torch exports it: scaled Q K^T, softmax, the residual LayerNorms, erf GELU."""
    s, h, heads = 6, 32, 4
    d = h // heads
    w = {n: _rand(h, h, scale=0.2) for n in ("wq", "wk", "wv", "wo")}
    w.update({"w1": _rand(h, 2 * h, scale=0.2), "b1": _rand(2 * h), "w2": _rand(2 * h, h, scale=0.2), "b2": _rand(h),
              "g0": _rand(h), "be0": _rand(h), "g1": _rand(h), "be1": _rand(h), "g2": _rand(h), "be2": _rand(h),
              "heads": np.array([1, s, heads, d], np.int64), "flat": np.array([1, s, h], np.int64),
              "scale": np.array(1 / np.sqrt(d), np.float32), "two": np.array(2.0, np.float32),
              "half": np.array(0.5, np.float32), "one": np.array(1.0, np.float32),
              "sqrt2": np.array(np.sqrt(2.0), np.float32), "eps": np.array(1e-5, np.float32),
              "ax": np.array([-1], np.int64)})
    n = helper.make_node
    nodes = []  # (layer_norm below: the embedding LayerNorm, then the layer reads its result as x)
    for p in ("q", "k", "v"):
        nodes += [n("MatMul", ["x", f"w{p}"], [f"{p}0"]), n("Reshape", [f"{p}0", "heads"], [f"{p}1"]),
                  n("Transpose", [f"{p}1"], [f"{p}h"], perm=[0, 2, 3, 1] if p == "k" else [0, 2, 1, 3])]
    nodes += [n("MatMul", ["qh", "kh"], ["qk"]), n("Mul", ["qk", "scale"], ["qks"]),
              n("Softmax", ["qks"], ["p"], axis=-1), n("MatMul", ["p", "vh"], ["ctx"]),
              n("Transpose", ["ctx"], ["ctxt"], perm=[0, 2, 1, 3]), n("Reshape", ["ctxt", "flat"], ["ctxf"]),
              n("MatMul", ["ctxf", "wo"], ["att"]), n("Add", ["att", "x"], ["res1"])]

    def layer_norm(x: str, g: str, b: str, out: str) -> list[onnx.NodeProto]:
        return [n("ReduceMean", [x], [f"{out}_m"], axes=[-1]), n("Sub", [x, f"{out}_m"], [f"{out}_d"]),
                n("Pow", [f"{out}_d", "two"], [f"{out}_sq"]), n("ReduceMean", [f"{out}_sq"], [f"{out}_v"], axes=[-1]),
                n("Add", [f"{out}_v", "eps"], [f"{out}_ve"]), n("Sqrt", [f"{out}_ve"], [f"{out}_s"]),
                n("Div", [f"{out}_d", f"{out}_s"], [f"{out}_n"]), n("Mul", [f"{out}_n", g], [f"{out}_g"]),
                n("Add", [f"{out}_g", b], [out])]

    nodes = layer_norm("x0", "g0", "be0", "x") + nodes
    nodes += layer_norm("res1", "g1", "be1", "ln1")
    nodes += [n("MatMul", ["ln1", "w1"], ["f1"]), n("Add", ["f1", "b1"], ["f1b"]),
              n("Div", ["f1b", "sqrt2"], ["gd"]), n("Erf", ["gd"], ["ge"]), n("Add", ["ge", "one"], ["gp"]),
              n("Mul", ["f1b", "gp"], ["gm"]), n("Mul", ["gm", "half"], ["gelu"]),
              n("MatMul", ["gelu", "w2"], ["f2"]), n("Add", ["f2", "b2"], ["f2b"]), n("Add", ["f2b", "ln1"], ["res2"])]
    nodes += layer_norm("res2", "g2", "be2", "y")
    if opset >= 18:  # ReduceMean's axes became an input
        for node in nodes:
            if node.op_type == "ReduceMean":
                del node.attribute[:]
                node.input.append("ax")
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x0", F, [1, s, h])],
                              [helper.make_tensor_value_info("y", F, [1, s, h])],
                              [numpy_helper.from_array(v, k) for k, v in w.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _ops(path: str) -> set[str]:
    return {n.op_type for n in onnx.load(path).graph.node}


def test_a_cnn_onnxruntime_optimised(tmp_path) -> None:
    path = _save_optimised(_cnn(), tmp_path)
    assert {"FusedConv", "FusedGemm"} <= _ops(path)
    feeds = {"x": _rand(2, 3, 10, 10)}
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
    for target in TARGETS:
        _close(_hal(path, feeds, target), want)


@pytest.mark.parametrize("opset", [13, 17])
def test_an_encoder_layer_onnxruntime_optimised(tmp_path, opset: int) -> None:
    """The embedding's LayerNorm stays a LayerNormalization; saved at opset 13 that is an ONNX-domain
    node onnx only defines from opset 17."""
    path = _save_optimised(_encoder_layer(opset), tmp_path)
    assert {"FusedMatMul", "SkipLayerNormalization", "Gelu", "LayerNormalization"} <= _ops(path)
    feeds = {"x0": _rand(1, 6, 32)}
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
    for target in TARGETS:
        _close(_hal(path, feeds, target), want, rtol=1e-4, atol=1e-5)


def test_a_fused_gemm_whose_activation_the_opset_lacks_stays_fused() -> None:
    """hal.graph.unfuse takes FusedGemm apart into Gemm and its activation only where the model's
    opset has that op: Celu comes at 12, so at 11 the node runs fused, as onnxruntime runs it."""
    rng = np.random.default_rng(3)
    feeds = {"a": rng.standard_normal((3, 4)).astype(np.float32)}
    consts = {"b": rng.standard_normal((4, 5)).astype(np.float32)}
    graph = {}
    for opset in (11, 12):
        node = helper.make_node("FusedGemm", ["a", "b"], ["y"], domain=MS, activation="Celu", activation_alpha=0.7)
        blob = _model([node], feeds, ["y"], consts, opset=opset, shapes=[(3, 5)])
        session = hal.InferenceSession(blob, target="cpu", cache_dir=False)
        graph[opset] = [n.op_type for n in session.graph.nodes]
        (got,) = session.run(None, feeds)
        (want,) = run_as_written(blob, feeds)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert graph == {11: ["FusedGemm"], 12: ["Gemm", "Celu"]}


def _ulps(got: np.ndarray, truth: np.ndarray) -> float:
    """The largest distance of float16 ``got`` from the float64 ``truth``, in float16 ulps there."""
    spacing = np.spacing(np.abs(truth.astype(np.float16)).astype(np.float16)).astype(np.float64)
    return float(np.max(np.abs(got.astype(np.float64) - truth) / spacing))


@pytest.mark.parametrize("op", ["BiasGelu", "FastGelu", "QuickGelu"])
def test_the_gelu_family_rounds_float16_once(op):
    # onnxruntime computes these in float32 between casts (1.2, 6.4 and 2.3 ulp from the float64
    # answer); hal had rounded the bias's sum, alpha x and the sigmoid to float16 on their own (11,
    # 7.7 and 5.7 ulp): now it computes them wide and rounds once
    import math

    rng = np.random.default_rng(0)
    a = (rng.standard_normal((8, 128)) * 3).astype(np.float16)
    b = (rng.standard_normal(128)).astype(np.float16)
    x = a.astype(np.float64) + (b.astype(np.float64) if op != "QuickGelu" else 0)
    erf = np.vectorize(math.erf)
    truth = {"BiasGelu": 0.5 * x * (1 + erf(x / math.sqrt(2))),
             "FastGelu": 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
             "QuickGelu": x / (1 + np.exp(-1.702 * x))}[op]
    ins = ["a", "b"] if op != "QuickGelu" else ["a"]
    feeds = {"a": a, "b": b} if op != "QuickGelu" else {"a": a}
    graph = helper.make_graph([helper.make_node(op, ins, ["y"], domain=MS)], "g",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT16, list(v.shape))
                               for n, v in feeds.items()],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    (got,) = hal.InferenceSession(model, target="cpu").run(None, feeds)
    assert got.dtype == np.float16 and _ulps(got, truth) <= 0.5001
    (want,) = run_as_written(model.SerializeToString(), feeds)
    assert _ulps(got, truth) <= _ulps(want, truth)  # as near as onnxruntime's, or nearer
