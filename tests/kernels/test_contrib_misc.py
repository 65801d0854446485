"""onnxruntime's contrib twins of ONNX ops and its small contrib ops (``hal.kernels.contrib_misc``,
domain com.microsoft) against onnxruntime itself, graph optimisations off: single-node models over
attributes, dtypes and shapes on the cpu target, once on every target, the forms onnxruntime
refuses refused when the session is built, and the shapes onnx's inference carries past them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.graph.load import load
from tests.kernels._onnxruntime import run_as_written

MS = "com.microsoft"
TARGETS = [t.name for t in hal.targets()]
RNG = np.random.default_rng(5)


def _f(*shape: int, dtype=np.float32, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(dtype)


def _model(op: str, inputs: dict, n_out: int = 1, *, consts: tuple[str, ...] = (), out_types=None, opset: int = 17,
           **attrs) -> tuple[bytes, dict]:
    """One ``op`` node: ``inputs`` in order (None: left out), those in ``consts`` initializers, the
    rest fed; outputs declared without shapes, of the first input's type or ``out_types``."""
    names = [n if v is not None else "" for n, v in inputs.items()]
    while names and not names[-1]:
        names.pop()
    feeds = {n: v for n, v in inputs.items() if v is not None and n not in consts}
    first = helper.np_dtype_to_tensor_dtype(next(iter(inputs.values())).dtype)
    outs = [f"y{i}" for i in range(n_out)]
    graph = helper.make_graph(
        [helper.make_node(op, names, outs, domain=MS, **attrs)], "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for n, v in feeds.items()],
        [helper.make_tensor_value_info(o, (out_types or [first] * n_out)[i], None) for i, o in enumerate(outs)],
        [numpy_helper.from_array(inputs[n], n) for n in consts])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)])
    return model.SerializeToString(), feeds


def _hal(blob: bytes, feeds: dict, target: str = "cpu") -> list[np.ndarray]:
    return hal.InferenceSession(blob, target=target, cache_dir=False).run(None, feeds)


def _as_ort(blob: bytes, feeds: dict, target: str = "cpu", rel: float = 0.0) -> float:
    """hal's outputs as onnxruntime's: dtype, shape and values (within ``rel`` of the largest, NaN
    where NaN); the largest error, relative."""
    worst = 0.0
    for got, want in zip(_hal(blob, feeds, target), run_as_written(blob, feeds, threads=1), strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.dtype, want.shape)
        if got.dtype.kind not in "fc":
            np.testing.assert_array_equal(got, want)
            continue
        g, w = got.astype(np.float64), want.astype(np.float64)
        finite = np.isfinite(w)
        scale = float(np.max(np.abs(w[finite]), initial=0.0)) or 1.0
        np.testing.assert_allclose(g, w, rtol=rel, atol=rel * scale, equal_nan=True)
        worst = max(worst, float(np.max(np.abs(g[finite] - w[finite]), initial=0.0)) / scale)
    return worst


def _refused(blob: bytes, feeds: dict, match: str) -> None:
    """onnxruntime refuses the node when its session is built; so does every target of hal."""
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own error types
        run_as_written(blob, feeds)
    for target in TARGETS:
        with pytest.raises(hal.UnsupportedOpError, match=match):
            hal.InferenceSession(blob, target=target, cache_dir=False)


def _fails_as_ort(blob: bytes, feeds: dict, match: str) -> None:
    """A bad input onnxruntime rejects when the node runs: hal's run fails too, naming the cause."""
    with pytest.raises(Exception):  # noqa: B017
        run_as_written(blob, feeds)
    with pytest.raises(hal.HalError, match=match):
        _hal(blob, feeds)


# -- TransposeMatMul ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(("a", "b", "trans_a", "trans_b", "alpha"), [
    ((3, 4), (4, 5), 0, 0, 1.0), ((4, 3), (4, 5), 1, 0, 2.0), ((3, 4), (5, 4), 0, 1, -0.5),
    ((2, 4, 3), (5, 4), 1, 1, 1.0), ((2, 3, 4), (1, 4, 6), 0, 0, 0.25), ((4,), (4, 2), 0, 0, 1.0)])
def test_transpose_matmul_is_fused_matmul(a, b, trans_a, trans_b, alpha, dtype) -> None:
    blob, feeds = _model("TransposeMatMul", {"a": _f(*a, dtype=dtype), "b": _f(*b, dtype=dtype)},
                         transA=trans_a, transB=trans_b, alpha=alpha)
    _as_ort(blob, feeds, rel=1e-5 if dtype == np.float32 else 1e-3)


# -- Range ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("start", "limit", "delta", "dtype"), [
    (0.1, 3.7, 0.3, np.float32), (5.0, -2.0, -0.7, np.float32), (0.1, 1e5, 0.1, np.float32), (1, 9, None, np.float32),
    (0.1, 10.0, 0.3, np.float64), (1, 10, 3, np.int32), (10, -7, -4, np.int64), (3, 3, 1, np.int32),
    (1, -8, -3, np.int16), (0, 5, None, np.int64), (4, 1, 1, np.float32)])
def test_range_accumulates_delta(start, limit, delta, dtype) -> None:
    """Each value is the last plus delta in the input's type (float32 drifts from start + i x delta
    over 1e6 steps, bit for bit as onnxruntime)."""
    inputs = {"s": np.array(start, dtype), "l": np.array(limit, dtype),
              "d": None if delta is None else np.array(delta, dtype)}
    _as_ort(*_model("Range", inputs))


def test_range_takes_one_element_tensors_and_refuses_delta_zero() -> None:
    _as_ort(*_model("Range", {"s": np.array([2.0], np.float32), "l": np.array(7.5, np.float32)}))
    _fails_as_ort(*_model("Range", {"s": np.array(1, np.int32), "l": np.array(5, np.int32),
                                    "d": np.array(0, np.int32)}), "zero")


# -- Pad, Trilu, ExpandDims, GatherND -------------------------------------------------------------

@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", [[1, 2, 0, 3], [[0, 1, 2, 0]], [-1, 1, 1, -2], [0, 0, 0, 0]])
@pytest.mark.parametrize("value", [None, 2.5])
def test_pad(mode: str, pads, value) -> None:
    inputs = {"x": _f(4, 5), "p": np.array(pads, np.int64), "v": None if value is None else np.array(value, np.float32)}
    _as_ort(*_model("Pad", inputs, mode=mode))


def test_pad_float16_and_3d() -> None:
    inputs = {"x": _f(2, 3, 4, dtype=np.float16), "p": np.array([1, 0, 2, 0, 1, 1], np.int64)}
    _as_ort(*_model("Pad", inputs, mode="reflect"))
    _as_ort(*_model("Pad", {**inputs, "v": np.array([-1.0], np.float16)}))


def test_pad_reflect_past_the_edge_fails_as_in_onnxruntime() -> None:
    _fails_as_ort(*_model("Pad", {"x": _f(3, 4), "p": np.array([0, 4, 0, 0], np.int64)}, mode="reflect"),
                  "reflect")
    _fails_as_ort(*_model("Pad", {"x": _f(3, 4), "p": np.array([0, 1], np.int64)}), "pads")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.float16])
@pytest.mark.parametrize(("upper", "k"), [(1, None), (0, None), (1, 2), (0, -1), (1, -5)])
def test_trilu(upper: int, k, dtype) -> None:
    inputs = {"x": (_f(2, 4, 5) * 10).astype(dtype), "k": None if k is None else np.array(k, np.int64)}
    _as_ort(*_model("Trilu", inputs, upper=upper))


@pytest.mark.parametrize("axis", [-3, -1, 0, 1, 2, [1]])
@pytest.mark.parametrize("dtype", [np.float32, np.int8, np.bool_])
def test_expand_dims(axis, dtype) -> None:
    _as_ort(*_model("ExpandDims", {"x": (_f(2, 3) > 0).astype(dtype), "a": np.array(axis, np.int32)}))


def test_expand_dims_past_the_rank_fails() -> None:
    _fails_as_ort(*_model("ExpandDims", {"x": _f(2, 3), "a": np.array(3, np.int32)}), "axis")


@pytest.mark.parametrize("index_type", [np.int32, np.int64])
@pytest.mark.parametrize(("indices", "dtype"), [
    ([[1, 2], [-1, 0]], np.float32), ([[2], [0], [-3]], np.int64), ([[[0, 1, 2]], [[2, 3, 4]]], np.float16),
    ([1, 3], np.uint8)])
def test_gather_nd(indices, dtype, index_type) -> None:
    data = (_f(3, 4, 5) * 10).astype(dtype)
    _as_ort(*_model("GatherND", {"x": data, "i": np.array(indices, index_type)}))


def test_gather_nd_out_of_range_fails() -> None:
    _fails_as_ort(*_model("GatherND", {"x": _f(3, 4), "i": np.array([[3, 0]], np.int64)}), "index")


# -- GridSample ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample(mode: str, padding: str, align: int) -> None:
    grid = RNG.uniform(-1.3, 1.3, (2, 4, 6, 2)).astype(np.float32)
    grid[0, 0, :3] = [[-1, -1], [1, 1], [0, 0.5]]  # the corners and a pixel centre exactly
    blob, feeds = _model("GridSample", {"x": _f(2, 3, 5, 7), "g": grid}, mode=mode, padding_mode=padding,
                         align_corners=align)
    _as_ort(blob, feeds, rel=2e-6)


def test_grid_sample_float16_is_computed_in_float32() -> None:
    grid = RNG.uniform(-1, 1, (1, 3, 3, 2)).astype(np.float16)
    _as_ort(*_model("GridSample", {"x": _f(1, 2, 4, 4, dtype=np.float16), "g": grid}), rel=1e-3)


# -- Unique, Inverse, CDist ---------------------------------------------------------------------

@pytest.mark.parametrize("x", [
    [2, 1, 1, 3, 4, 3], [5.5], [], [np.nan, 1, np.nan, -0.0, 0.0, 1], [3, 3, 3], list(range(10, 0, -1))])
def test_unique_in_order_of_first_appearance(x) -> None:
    blob, feeds = _model("Unique", {"x": np.array(x, np.float32)}, 3,
                         out_types=[TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT64])
    got = _hal(blob, feeds)
    _as_ort(blob, feeds)
    np.testing.assert_array_equal(np.signbit(got[0]), np.signbit(run_as_written(blob, feeds)[0]))


def test_unique_of_a_matrix_fails() -> None:
    _fails_as_ort(*_model("Unique", {"x": _f(2, 2)}, 3,
                          out_types=[TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT64]), "1-D")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 3), (4, 4), (2, 6, 6), (2, 1, 3, 3), (9, 9)])
def test_inverse(shape, dtype) -> None:
    """float16: onnxruntime inverts in float16 arithmetic (Eigen::half), each step rounded; hal in
    float64, rounded once: within 2% of onnxruntime, and within float16's rounding of the truth."""
    x = (_f(*shape, dtype=np.float64) + 3 * np.eye(shape[-1])).astype(dtype)
    rel = {np.float32: 1e-5, np.float64: 1e-12, np.float16: 2e-2}[dtype]
    blob, feeds = _model("Inverse", {"x": x})
    _as_ort(blob, feeds, rel=rel)
    if dtype == np.float16:
        truth = np.linalg.inv(x.astype(np.float64))
        np.testing.assert_allclose(_hal(blob, feeds)[0].astype(np.float64), truth, rtol=2 ** -10, atol=1e-4)


def test_inverse_of_a_singular_2x2_is_infinite() -> None:
    _as_ort(*_model("Inverse", {"x": np.ones((2, 2, 2), np.float32)}))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean"])
@pytest.mark.parametrize(("m", "n", "k"), [(3, 4, 5), (1, 1, 1), (6, 2, 33), (0, 3, 2)])
def test_cdist(m: int, n: int, k: int, metric: str, dtype) -> None:
    """Row 0 of A and B alike: their squared distance cancels to a rounding residue (abs keeps it
    from going negative) whose size depends on the product's summation order; its square root is
    about sqrt(eps) x the scale, so euclidean's tolerance is that."""
    a, b = _f(m, k, dtype=dtype), _f(n, k, dtype=dtype)
    if m and n:
        b[0] = a[0]
    eps = float(np.finfo(dtype).eps)
    rel = 8 * eps if metric == "sqeuclidean" else 4 * np.sqrt(eps)
    _as_ort(*_model("CDist", {"a": a, "b": b}, metric=metric), rel=rel)


# -- CropAndResize ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("crop", [(3, 4), (1, 5), (4, 1), (1, 1), (7, 6)])
def test_crop_and_resize(mode: str, crop) -> None:
    rois = np.array([[0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9], [-0.2, 0.3, 1.2, 0.8], [0.9, 0.8, 0.1, 0.05],
                     [0.5, 0.5, 0.5, 0.5], [1.1, -0.3, 1.5, -0.1]], np.float32)
    inputs = {"x": _f(2, 3, 5, 6), "r": rois, "b": np.array([0, 1, 1, 0, 1, 0], np.int32),
              "c": np.array(crop, np.int32)}
    _as_ort(*_model("CropAndResize", inputs, mode=mode, extrapolation_value=-3.5), rel=1e-6)


def test_crop_and_resize_float16() -> None:
    inputs = {"x": _f(1, 2, 4, 4, dtype=np.float16), "r": np.array([[0.1, 0.2, 0.8, 0.9]], np.float16),
              "b": np.array([0], np.int32), "c": np.array([3, 3], np.int32)}
    _as_ort(*_model("CropAndResize", inputs), rel=1e-3)


# -- ScaledSiLU ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(("alpha", "scale"), [(None, None), (1.702, None), (2.0, 0.5), (None, -3.0)])
def test_scaled_silu_rounds_each_step(alpha, scale, dtype) -> None:
    x = _f(4, 50, dtype=dtype, scale=6.0)
    attrs = {} if alpha is None else {"alpha": alpha}
    blob, feeds = _model("ScaledSiLU", {"x": x, "s": None if scale is None else np.array(scale, np.float32)}, **attrs)
    _as_ort(blob, feeds, rel=1e-6 if dtype == np.float32 else 1e-3)


def test_scaled_silu_scale_must_be_a_scalar() -> None:
    _fails_as_ort(*_model("ScaledSiLU", {"x": _f(2, 3), "s": np.array([0.5], np.float32)}), "scalar")


# -- refused forms, every target, shapes --------------------------------------------------------

@pytest.mark.parametrize(("op", "inputs", "attrs", "match"), [
    ("TransposeMatMul", {"a": _f(1, 3, 4), "b": _f(1, 3, 4)}, {"transA": 1, "transBatchA": 1}, "transBatchA"),
    ("Pad", {"x": _f(3, 4), "p": np.array([1, 1, 1, 1], np.int64)}, {"mode": "symmetric"}, "mode"),
    ("GridSample", {"x": _f(1, 1, 3, 3), "g": _f(1, 2, 2, 2)}, {"mode": "linear"}, "mode"),
    ("GridSample", {"x": _f(1, 1, 3, 3), "g": _f(1, 2, 2, 2)}, {"padding_mode": "mirror"}, "padding_mode"),
    ("CDist", {"a": _f(2, 3), "b": _f(4, 3)}, {"metric": "cityblock"}, "metric"),
    ("CropAndResize", {"x": _f(1, 1, 3, 3), "r": np.array([[0, 0, 1, 1]], np.float32), "b": np.array([0], np.int32),
                       "c": np.array([2, 2], np.int32)}, {"mode": "bicubic"}, "mode")])
def test_refused_when_the_session_is_built(op: str, inputs: dict, attrs: dict, match: str) -> None:
    _refused(*_model(op, inputs, **attrs), match)


def _every_op() -> list[tuple[bytes, dict, float]]:
    car = {"x": _f(1, 2, 4, 5), "r": np.array([[0.1, 0.2, 0.8, 0.9]], np.float32), "b": np.array([0], np.int32),
           "c": np.array([3, 2], np.int32)}
    return [(*_model("TransposeMatMul", {"a": _f(4, 3), "b": _f(4, 2)}, transA=1), 1e-5),
            (*_model("Range", {"s": np.array(0.5, np.float32), "l": np.array(4, np.float32)}), 0),
            (*_model("Pad", {"x": _f(2, 3), "p": np.array([1, 0, 0, 2], np.int64)}, consts=("p",), mode="edge"), 0),
            (*_model("Trilu", {"x": _f(3, 3)}, upper=0), 0),
            (*_model("ExpandDims", {"x": _f(2, 3), "a": np.array(-1, np.int32)}), 0),
            (*_model("GatherND", {"x": _f(3, 4), "i": np.array([[1], [2]], np.int64)}), 0),
            (*_model("GridSample", {"x": _f(1, 2, 3, 4), "g": _f(1, 2, 3, 2)}, mode="bicubic"), 2e-6),
            (*_model("Unique", {"x": np.array([3, 1, 3, 2], np.float32)}, 3, out_types=[1, 7, 7]), 0),
            (*_model("Inverse", {"x": _f(2, 3, 3) + 3 * np.eye(3, dtype=np.float32)}), 1e-5),
            (*_model("CDist", {"a": _f(3, 4), "b": _f(2, 4)}, metric="euclidean"), 1e-5),
            (*_model("CropAndResize", car), 1e-6),
            (*_model("ScaledSiLU", {"x": _f(2, 5)}, alpha=0.5), 1e-6)]


@pytest.mark.parametrize("target", TARGETS)
def test_each_op_on_every_target(target: str) -> None:
    """Each op on each target; Unique's output length is data-dependent, which a target that sizes
    every buffer before it runs (lpu) refuses as it refuses ONNX's Unique."""
    for blob, feeds, rel in _every_op():
        if onnx.load_from_string(blob).graph.node[0].op_type == "Unique":
            try:
                hal.InferenceSession(blob, target=target, cache_dir=False)
            except hal.UnsupportedOpError as e:
                assert "data-dependent" in str(e)
                continue
        _as_ort(blob, feeds, target=target, rel=rel)


def _chained(blob: bytes) -> bytes:
    """The node's first output fed to an Identity, the graph's outputs declared without shape or
    type: their shapes and types come from inference through the node's stand-in."""
    model = onnx.load_from_string(blob)
    node = model.graph.node[0]
    node.output[0] = "mid"
    model.graph.node.append(helper.make_node("Identity", ["mid"], ["y0"]))
    return model.SerializeToString()


@pytest.mark.parametrize("index", range(12))
def test_shape_inference_carries_past_the_node(index: int) -> None:
    """Where onnx can know the output's shape from its inputs' (and an initializer's values: Pad's
    pads), the stand-in gives it: what follows is sized when the model compiles."""
    blob, feeds, _ = _every_op()[index]
    model = onnx.load_from_string(blob)
    op = model.graph.node[0].op_type
    want = run_as_written(blob, feeds)[0]
    graph = load(_chained(blob))
    info = graph.values["y0"]
    if op in ("Range", "Unique", "ExpandDims", "CropAndResize"):  # sized by input values: the rank at most
        assert info.shape is None or len(info.shape) == want.ndim
    else:
        assert info.shape == want.shape, (op, info.shape, want.shape)
    assert info.dtype in (None, want.dtype)


@pytest.mark.parametrize(("op", "inputs"), [
    ("Range", {"s": np.array(0, np.int64), "l": np.array(1 << 40, np.int64)}),
    ("CropAndResize", {"x": _f(1, 1, 2, 2), "r": np.array([[0, 0, 1, 1]], np.float32), "b": np.array([0], np.int32),
                       "c": np.array([1 << 15, 1 << 15], np.int32)}),
    ("CDist", {"a": _f(1 << 14, 1), "b": _f(1 << 14, 1)})])
def test_a_huge_output_is_refused_before_it_allocates(op: str, inputs: dict) -> None:
    """A few bytes of input asking for gigabytes (``hal.op_sizes.contrib``): a ResourceError naming the op."""
    blob, feeds = _model(op, inputs)
    with pytest.raises(hal.ResourceError, match=op):
        hal.InferenceSession(blob, target="cpu", cache_dir=False, max_memory=1 << 28).run(None, feeds)


@pytest.mark.parametrize(("op", "inputs", "attrs", "flops"), [
    ("TransposeMatMul", {"a": _f(6, 3), "b": _f(5, 6)}, {"transA": 1, "transB": 1}, 2 * 3 * 5 * 6),
    ("CDist", {"a": _f(4, 7), "b": _f(9, 7)}, {}, 2 * 4 * 9 * 7)])
def test_the_cost_models_count_the_product(op: str, inputs: dict, attrs: dict, flops: int) -> None:
    from hal.perf.opcount import node_flops

    blob, _ = _model(op, inputs, **attrs)
    (node,) = (graph := load(blob)).nodes
    assert node_flops(node, graph) == flops
    for target in ("gpu", "lpu", "wafer"):
        (estimate,) = hal.estimate(blob, target, precision="exact").estimates
        assert estimate.status == "ok", estimate.error


# -- MatMulBnb4 ----------------------------------------------------------------------------------

def _bnb4(k: int, n: int, quant_type: int, block_size: int, a_shape=(3,), dtype=np.float32) -> tuple[bytes, dict]:
    """A MatMul of a (k, n) weight, quantized by onnxruntime's own MatMulBnb4Quantizer."""
    from onnxruntime.quantization.matmul_bnb4_quantizer import MatMulBnb4Quantizer

    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["y0"])], "g",
        [helper.make_tensor_value_info("a", elem, [*a_shape, k])], [helper.make_tensor_value_info("y0", elem, None)],
        [numpy_helper.from_array(_f(k, n, dtype=dtype), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    quantizer = MatMulBnb4Quantizer(model, quant_type, block_size)
    quantizer.process()
    assert quantizer.model.model.graph.node[0].op_type == "MatMulBnb4"
    return quantizer.model.model.SerializeToString(), {"a": _f(*a_shape, k, dtype=dtype)}


@pytest.mark.parametrize("quant_type", [0, 1])
@pytest.mark.parametrize("block_size", [16, 32, 64, 128, 256])
@pytest.mark.parametrize(("k", "n"), [(32, 8), (7, 5), (64, 33)])
def test_matmul_bnb4_fp4_and_nf4(k: int, n: int, quant_type: int, block_size: int) -> None:
    """The weight unpacked row-major from (N, K), high nibble first, times its block's absmax; an odd
    N x K leaves the last byte's low nibble unused."""
    _as_ort(*_bnb4(k, n, quant_type, block_size), rel=1e-5)


@pytest.mark.parametrize("a_shape", [(), (1,), (2, 3), (2, 1, 4)])
def test_matmul_bnb4_batched(a_shape) -> None:
    _as_ort(*_bnb4(16, 6, 1, 64, a_shape), rel=1e-5)


def test_matmul_bnb4_float16_through_float32() -> None:
    _as_ort(*_bnb4(32, 16, 1, 64, (2, 3), dtype=np.float16), rel=1e-3)


def test_matmul_bnb4_weight_is_bit_exact() -> None:
    """A one-hot A picks each weight column out: the unpacked values, bit for bit."""
    blob, _ = _bnb4(24, 10, 0, 16, (24,))
    feeds = {"a": np.eye(24, dtype=np.float32)}
    np.testing.assert_array_equal(_hal(blob, feeds)[0], run_as_written(blob, feeds)[0])


@pytest.mark.parametrize(("change", "match"), [({"quant_type": 2}, "quant_type"), ({"block_size": 8}, "block_size"),
                                               ({"transB": 0}, "transB")])
def test_matmul_bnb4_refused_forms(change: dict, match: str) -> None:
    """quant_type 2 fails when onnxruntime builds the session, block_size 8 when it runs, transB=0 its
    CPU kernel misreads: every target refuses them when it compiles."""
    blob, feeds = _bnb4(32, 8, 1, 16)
    model = onnx.load_from_string(blob)
    node = model.graph.node[0]
    kept = [a for a in node.attribute if a.name not in change]
    del node.attribute[:]
    node.attribute.extend([*kept, *(helper.make_attribute(k, v) for k, v in change.items())])
    if match != "transB":
        with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own error types
            run_as_written(model.SerializeToString(), feeds)
    for target in TARGETS:
        with pytest.raises(hal.UnsupportedOpError, match=match):
            hal.InferenceSession(model.SerializeToString(), target=target, cache_dir=False)


def test_matmul_bnb4_on_every_target_and_its_cost() -> None:
    from hal.perf.opcount import node_flops

    blob, feeds = _bnb4(32, 12, 1, 32, (2, 5))
    for target in TARGETS:
        _as_ort(blob, feeds, target=target, rel=1e-5)
    (node,) = (graph := load(blob)).nodes
    assert node_flops(node, graph) == 2 * 10 * 12 * 32
    assert load(_chained(blob)).values["y0"].shape == (2, 5, 12)
