"""onnxruntime's LLM contrib ops (``hal.kernels.contrib_genai``; domain com.microsoft) against onnxruntime
itself, graph optimisations off: MatMulNBits (also as onnxruntime's own quantizer writes it),
GatherBlockQuantized and RotaryEmbedding, over their attributes on the cpu target and once on every
target (GroupQueryAttention: ``test_contrib_gqa``). onnx defines none of these ops; onnxruntime's
CPU kernels are their reference. Integer dequantisation matches bit for bit; products and softmaxes
to float32 rounding."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from tests.kernels._genai_models import MS, TARGETS, _close, _hal, _model
from tests.kernels._onnxruntime import run_as_written

RNG = np.random.default_rng(11)


def _attr(model: onnx.ModelProto, name: str) -> onnx.AttributeProto:
    return next(a for a in model.graph.node[0].attribute if a.name == name)


# -- MatMulNBits -------------------------------------------------------------------------------------

def _nbits(bits: int, block: int, k: int, n: int, zero: str | None, level: int, *, g_idx: bool = False,
           bias: bool = False, dtype: type = np.float32, lead: tuple[int, ...] = (2, 3)) -> tuple[bytes, dict]:
    blocks = -(-k // block)
    inits = {"B": RNG.integers(0, 256, (n, blocks, block * bits // 8)).astype(np.uint8),
             "s": RNG.uniform(0.01, 0.1, (n, blocks)).astype(dtype)}
    names = ["a", "B", "s", "", "", ""]
    if zero == "packed":
        inits["z"] = RNG.integers(0, 256, (n, -(-blocks * bits // 8))).astype(np.uint8)
    elif zero == "float":
        inits["z"] = RNG.uniform(0, 2 ** bits - 1, (n, blocks)).astype(dtype)
    if zero:
        names[3] = "z"
    if g_idx:
        inits["g"] = RNG.permutation(np.arange(k) // block).astype(np.int32)
        names[4] = "g"
    if bias:
        inits["bias"] = RNG.standard_normal(n).astype(dtype)
        names[5] = "bias"
    while not names[-1]:
        names.pop()
    node = helper.make_node("MatMulNBits", names, ["y"], domain=MS, K=k, N=n, bits=bits, block_size=block,
                            accuracy_level=level)
    feeds = {"a": RNG.standard_normal((*lead, k)).astype(dtype)}
    return _model([node], feeds, [numpy_helper.from_array(v, n_) for n_, v in inits.items()],
                  [("y", dtype, [*lead, n])]), feeds


# onnxruntime's CPU kernel refuses 8-bit weights with float zero points (tested below)
@pytest.mark.parametrize("level", [0, 4])
@pytest.mark.parametrize(("bits", "block", "k", "zero"),
                         [(b, bl, k, z) for b, bl, k in [(4, 32, 64), (4, 16, 72), (4, 128, 200), (2, 32, 80),
                                                         (8, 16, 40), (8, 64, 64)]
                          for z in (None, "packed", "float") if not (b == 8 and z == "float")])
def test_matmul_nbits(bits: int, block: int, k: int, zero: str | None, level: int) -> None:
    """Each bit width, a K the blocks divide and ones they pad, zero points absent (2^(bits-1)),
    packed or float; accuracy_level 4 quantises A to int8 per block as onnxruntime's CPU kernel does."""
    _close(*_nbits(bits, block, k, 12, zero, level))


@pytest.mark.parametrize(("zero", "bias", "dtype", "level"), [
    (None, True, np.float32, 0), ("packed", True, np.float32, 4), ("packed", True, np.float16, 0),
    ("packed", False, np.float16, 4), ("float", True, np.float16, 0)])
def test_matmul_nbits_bias_and_float16(zero: str, bias: bool, dtype: type, level: int) -> None:
    _close(*_nbits(4, 32, 72, 10, zero, level, bias=bias, dtype=dtype, lead=(5,)), rel=1e-3 if dtype == np.float16
           else 2e-6)


@pytest.mark.parametrize("zero", [None, "float"])
def test_matmul_nbits_g_idx_picks_each_rows_block(zero: str | None) -> None:
    _close(*_nbits(4, 32, 96, 8, zero, 0, g_idx=True, bias=True))


def test_matmul_nbits_g_idx_keeps_packed_zero_points() -> None:
    """With g_idx onnxruntime 1.32's CPU kernel drops packed uint8 zero points (it reads 8 for every
    block); hal keeps them, as the op's contract says: checked against the dequantised product."""
    blob, feeds = _nbits(4, 32, 64, 8, "packed", 0, g_idx=True)
    graph = onnx.load_from_string(blob).graph
    w = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    codes = np.stack([w["B"] & 15, w["B"] >> 4], -1).reshape(8, 64).astype(np.int32)
    zeros = np.stack([w["z"] & 15, w["z"] >> 4], -1).reshape(8, -1)[:, :2].astype(np.int32)
    g = w["g"]
    dense = (codes - zeros[:, g]).astype(np.float32) * w["s"][:, g]
    (got,) = _hal(blob, feeds)
    np.testing.assert_allclose(got, feeds["a"] @ dense.T, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module", params=[(4, 32, False, None), (4, 16, True, 4), (8, 32, False, 4)])
def nbits_quantized(request, tmp_path_factory) -> tuple[bytes, dict[str, np.ndarray]]:
    """A two-layer MLP whose MatMuls onnxruntime's own MatMulNBitsQuantizer turns into MatMulNBits."""
    quantizer = pytest.importorskip("onnxruntime.quantization.matmul_nbits_quantizer")
    bits, block, symmetric, level = request.param
    rng = np.random.default_rng(7)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 80])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 24])],
                              [numpy_helper.from_array(rng.standard_normal((80, 48)).astype(np.float32), "w1"),
                               numpy_helper.from_array(rng.standard_normal((48, 24)).astype(np.float32), "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    q = quantizer.MatMulNBitsQuantizer(model, bits=bits, block_size=block, is_symmetric=symmetric,
                                       accuracy_level=level)
    q.process()
    path = tmp_path_factory.mktemp("nbits") / "q.onnx"
    q.model.save_model_to_file(str(path))
    return path.read_bytes(), {"x": rng.standard_normal((2, 4, 80)).astype(np.float32)}


def test_the_quantizer_writes_matmul_nbits(nbits_quantized) -> None:
    blob, feeds = nbits_quantized
    assert [n.op_type for n in onnx.load_from_string(blob).graph.node] == ["MatMulNBits", "Relu", "MatMulNBits"]
    _close(blob, feeds)


@pytest.mark.parametrize("target", TARGETS)
def test_a_quantized_mlp_on_every_target(nbits_quantized, target: str) -> None:
    _close(*nbits_quantized, target=target)


def test_matmul_nbits_onnxruntime_fused_from_dequantize_linear_runs_on_every_target(tmp_path) -> None:
    # the quantizer's QDQ form (int4 DequantizeLinear, MatMul), saved by onnxruntime's optimiser: it
    # fuses the pair into a MatMulNBits with weight_prepacked=0, which every target had failed on (a
    # kernel without the attribute)
    quantizer = pytest.importorskip("onnxruntime.quantization.matmul_nbits_quantizer")
    from onnxruntime.quantization.quant_utils import QuantFormat

    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(3)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 72])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 24])],
                              [numpy_helper.from_array(rng.standard_normal((72, 24)).astype(np.float32), "w")])
    q = quantizer.MatMulNBitsQuantizer(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]),
                                       bits=4, block_size=32, is_symmetric=False, quant_format=QuantFormat.QDQ)
    q.process()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "saved.onnx")
    ort.InferenceSession(q.model.model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    saved = (tmp_path / "saved.onnx").read_bytes()
    (node,) = [n for n in onnx.load_from_string(saved).graph.node if n.op_type == "MatMulNBits"]
    assert helper.get_attribute_value(next(a for a in node.attribute if a.name == "weight_prepacked")) == 0
    feeds = {"x": rng.standard_normal((2, 4, 72)).astype(np.float32)}
    for target in TARGETS:
        _close(saved, feeds, target=target)


def test_matmul_nbits_refuses_weights_prepacked_for_a_provider_when_compiled() -> None:
    blob, _ = _nbits(4, 32, 64, 4, None, 0)
    model = onnx.load_from_string(blob)
    model.graph.node[0].attribute.append(helper.make_attribute("weight_prepacked", 1))
    with pytest.raises(hal.UnsupportedOpError, match="weight_prepacked=1 holds B in an execution provider's own"):
        hal.InferenceSession(model.SerializeToString(), cache_dir=False)


def test_every_onnxruntime_op_hal_runs_takes_every_attribute_its_schema_defines() -> None:
    # the attribute check that would have caught weight_prepacked: a kernel is called with each of a
    # node's attributes by name, so one it does not name fails every model that writes it
    import inspect

    from hal.kernels import registry

    capi = pytest.importorskip("onnxruntime.capi.onnxruntime_pybind11_state")
    hal.InferenceSession("zoo:tiny-cnn")  # every kernel module imported
    schemas = {s.name: s for s in sorted(capi.get_all_operator_schema(), key=lambda s: s.since_version)
               if s.domain == MS}
    missing, checked = [], 0
    for op in registry.registered_ops():
        kd = registry.lookup(op[1], op[0], 10**6) if op[0] == MS and op[1] in schemas else None
        if kd is None:
            continue
        params = inspect.signature(kd.fn).parameters
        checked += 1
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            missing += [f"{op[1]}.{a}" for a in schemas[op[1]].attributes if a not in params]
    assert checked > 60 and not missing, missing


def test_matmul_nbits_refuses_what_onnxruntime_refuses() -> None:
    blob, feeds = _nbits(8, 16, 32, 4, "float", 0)
    with pytest.raises(hal.RunError, match="uint8 zero points"):
        _hal(blob, feeds)
    blob, feeds = _nbits(4, 32, 64, 4, None, 0)
    model = onnx.load_from_string(blob)
    _attr(model, "K").i = 60  # no longer A's last dimension
    with pytest.raises(hal.RunError, match="K=60"):
        _hal(model.SerializeToString(), feeds)


# -- GatherBlockQuantized ----------------------------------------------------------------------------

def _int4(name: str, codes: np.ndarray, signed: bool) -> onnx.TensorProto:
    flat = codes.astype(np.int32).reshape(-1)
    flat = np.append(flat, 0) if flat.size % 2 else flat
    packed = ((flat[0::2] & 15) | ((flat[1::2] & 15) << 4)).astype(np.uint8)
    return helper.make_tensor(name, TensorProto.INT4 if signed else TensorProto.UINT4, codes.shape,
                              packed.tobytes(), raw=True)


def _gather(kind: str, shape: tuple[int, ...], gather_axis: int, quantize_axis: int, block: int, zero: bool,
            bits: int = 4, indices: np.ndarray | None = None, scale_type: type = np.float32) -> tuple[bytes, dict]:
    rank = len(shape)
    logical = list(shape)
    if kind == "uint8":
        logical[-1] *= 8 // bits
        inits = [numpy_helper.from_array(RNG.integers(0, 256, shape).astype(np.uint8), "d")]
    else:
        lo, hi = (-8, 8) if kind == "int4" else (0, 16)
        inits = [_int4("d", RNG.integers(lo, hi, shape), kind == "int4")]
    qa, ga = quantize_axis % rank, gather_axis % rank
    scale_shape = list(logical)
    scale_shape[qa] = -(-logical[qa] // block)
    inits.append(numpy_helper.from_array(RNG.uniform(0.01, 0.1, scale_shape).astype(scale_type), "s"))
    names = ["d", "i", "s"]
    if zero:
        if kind == "uint8":
            zshape = [*scale_shape[:-1], -(-scale_shape[-1] // (8 // bits))]
            inits.append(numpy_helper.from_array(RNG.integers(0, 256, zshape).astype(np.uint8), "z"))
        else:
            inits.append(_int4("z", RNG.integers(lo, hi, scale_shape), kind == "int4"))
        names.append("z")
    if indices is None:
        indices = RNG.integers(-logical[ga], logical[ga], (2, 3)).astype(np.int64)
    node = helper.make_node("GatherBlockQuantized", names, ["y"], domain=MS, gather_axis=gather_axis,
                            quantize_axis=quantize_axis, block_size=block, bits=bits)
    out = logical[:ga] + list(indices.shape) + logical[ga + 1:]
    feeds = {"i": indices}
    return _model([node], feeds, inits, [("y", scale_type, out)]), feeds


def _exact(blob: bytes, feeds: dict[str, np.ndarray], target: str = "cpu") -> None:
    (want,), (got,) = run_as_written(blob, feeds), _hal(blob, feeds, target)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("zero", [False, True])
@pytest.mark.parametrize(("bits", "shape", "block"), [(2, (10, 12), 16), (4, (10, 20), 32), (8, (10, 40), 16),
                                                      (4, (3, 5, 24), 16)])
def test_gather_block_quantized_packed_uint8(bits: int, shape: tuple, block: int, zero: bool) -> None:
    """uint8 data packs 8 / bits codes per byte along the last axis (blocks padded at its end)."""
    _exact(*_gather("uint8", shape, 0, -1, block, zero, bits))


@pytest.mark.parametrize("zero", [False, True])
@pytest.mark.parametrize("kind", ["int4", "uint4"])
@pytest.mark.parametrize(("shape", "gather_axis", "quantize_axis"), [((10, 48), 0, 1), ((10, 48), 1, 0),
                                                                     ((6, 40, 3), 0, 1), ((6, 40, 3), 1, 2),
                                                                     ((40, 6), 0, 0)])
def test_gather_block_quantized_int4(kind: str, shape: tuple, gather_axis: int, quantize_axis: int,
                                     zero: bool) -> None:
    """int4 / uint4 data along any axes; no zero points means 0 (uint8 data: 2^(bits-1))."""
    _exact(*_gather(kind, shape, gather_axis, quantize_axis, 16, zero))


def test_gather_block_quantized_float16_and_out_of_range_rows() -> None:
    """An index outside the table reads zeros, as onnxruntime's kernel writes them."""
    _exact(*_gather("uint8", (10, 24), 0, 1, 16, True, indices=np.array([0, 12, -11, -3], np.int32),
                    scale_type=np.float16))


def test_gather_block_quantized_refuses_a_misshapen_scale() -> None:
    blob, feeds = _gather("uint8", (10, 24), 0, 1, 16, False)
    model = onnx.load_from_string(blob)
    _attr(model, "block_size").i = 32  # now 2 blocks a row, where the scales hold 3
    with pytest.raises(hal.RunError, match="scales must have shape"):
        _hal(model.SerializeToString(), feeds)


# -- RotaryEmbedding ---------------------------------------------------------------------------------

def _rotary(shape: tuple[int, ...], positions: np.ndarray, num_heads: int, rotary_dim: int, interleaved: int,
            dtype: type = np.float32) -> tuple[bytes, dict]:
    head = shape[3] if len(shape) == 4 else shape[2] // (num_heads or 4)
    half = (rotary_dim or head) // 2
    caches = [numpy_helper.from_array(RNG.uniform(-1, 1, (32, half)).astype(dtype), n) for n in ("c", "s")]
    attrs = {"interleaved": interleaved, **({"num_heads": num_heads} if num_heads else {}),
             **({"rotary_embedding_dim": rotary_dim} if rotary_dim else {})}
    node = helper.make_node("RotaryEmbedding", ["x", "p", "c", "s"], ["y"], domain=MS, **attrs)
    feeds = {"x": RNG.standard_normal(shape).astype(dtype), "p": positions}
    return _model([node], feeds, caches, [("y", dtype, list(shape))]), feeds


@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize(("shape", "positions", "num_heads", "rotary_dim"), [
    ((2, 5, 32), "offset", 4, 0), ((2, 5, 32), "ids", 4, 0), ((2, 5, 32), "offset", 0, 0),
    ((2, 5, 32), "ids", 4, 4), ((2, 4, 5, 8), "offset", 0, 0), ((2, 4, 5, 8), "ids", 4, 4)])
def test_rotary_embedding(shape: tuple, positions: str, num_heads: int, rotary_dim: int, interleaved: int) -> None:
    """(B, S, hidden) or (B, N, S, H); one position offset or ids per token; a partial rotary
    dimension passes the rest through. onnxruntime fuses a multiply-add: within an ulp."""
    pos = np.array([3], np.int64) if positions == "offset" else RNG.integers(0, 32, shape[:1] + shape[-2:-1])
    _close(*_rotary(shape, pos, num_heads, rotary_dim, interleaved), rel=5e-7)


def test_rotary_embedding_float16() -> None:
    _close(*_rotary((2, 5, 32), np.array([1], np.int64), 4, 0, 0, np.float16), rel=1e-3)


def test_rotary_embedding_refuses_a_position_past_the_caches() -> None:
    blob, feeds = _rotary((2, 5, 32), np.array([30], np.int64), 4, 0, 0)
    with pytest.raises(hal.RunError, match=r"position ids must lie in \[0, 32\)"):
        _hal(blob, feeds)


# -- every target --------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
def test_each_op_on_every_target(target: str) -> None:
    _close(*_nbits(4, 32, 72, 12, "packed", 4, bias=True), target=target)
    _exact(*_gather("uint8", (10, 20), 0, 1, 32, True), target=target)
    _close(*_rotary((2, 5, 32), np.array([3], np.int64), 4, 0, 1), target=target, rel=5e-7)
