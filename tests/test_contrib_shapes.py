"""Shapes of the ops onnxruntime defines and onnx's shape inference does not know
(``hal.graph.contrib``): each single-node model is inferred by hal with only its inputs' shapes
given, and every output's shape and type must be what onnxruntime's run of the same model makes.
Without the stand-ins onnx leaves them all unknown. Then loading what onnxruntime saves: IR-3 models
with weights it declared as initializers only, the ONNX-domain ops it registers, and a clear
refusal of its CPU-specific layout."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hal.graph import contrib
from hal.graph.load import load

MS = "com.microsoft"
RNG = np.random.default_rng(11)


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _case(op: str, inputs: dict[str, np.ndarray | None], n_out: int, *, domain: str = MS, opset: int = 17,
          consts: tuple[str, ...] = (), out_types: dict[int, int] | None = None, **attrs
          ) -> tuple[bytes, dict[str, np.ndarray], list[str]]:
    """One ``op`` node over ``inputs`` (None: left out; names in ``consts``: initializers, the rest
    fed), each output passed through an Identity to a graph output of type float or as ``out_types``
    says, declared with no shape (the node's outputs are not declared: inference types them)."""
    names = [n if v is not None else "" for n, v in inputs.items()]
    while names and not names[-1]:
        names.pop()
    outs = [f"o{i}" for i in range(n_out)]
    nodes = [helper.make_node(op, names, outs, domain=domain, **attrs)]
    nodes += [helper.make_node("Identity", [o], [f"y{i}"]) for i, o in enumerate(outs)]
    feeds = {n: v for n, v in inputs.items() if v is not None and n not in consts}
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                     for n, v in feeds.items()],
        [helper.make_tensor_value_info(f"y{i}", (out_types or {}).get(i, TensorProto.FLOAT), None)
         for i in range(n_out)],
        [numpy_helper.from_array(inputs[n], n) for n in consts if inputs[n] is not None])
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(MS, 1)] if domain == MS else [])
    return helper.make_model(graph, opset_imports=imports).SerializeToString(), feeds, outs


def _run(blob: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"]).run(None, feeds)


def _inferred(blob: bytes, want: list[np.ndarray]):
    """hal's graph of ``blob``, its graph outputs given onnxruntime's ranks (onnx.checker wants a
    shape on each) and no sizes."""
    model = onnx.load_from_string(blob)
    for out, w in zip(model.graph.output, want, strict=True):
        out.type.tensor_type.shape.dim.extend(onnx.TensorShapeProto.Dimension(dim_param=f"{out.name}_{i}")
                                              for i in range(w.ndim))
    return load(model.SerializeToString())


def _agrees(blob: bytes, feeds: dict[str, np.ndarray], outs: list[str]) -> None:
    want = _run(blob, feeds)
    graph = _inferred(blob, want)
    for name, w in zip(outs, want, strict=True):
        info = graph.values.get(name)
        assert info is not None and info.static_shape == w.shape, (name, info and info.shape, w.shape)
        assert np.dtype(info.dtype) == w.dtype, (name, info.dtype, w.dtype)
    model = onnx.load_from_string(blob)
    assert not any(v.startswith(contrib.PREFIX) for v in graph.values)
    assert [i.name for i in graph.inputs] == [i.name for i in model.graph.input]


def _batch_moved(shape: tuple[int, ...], trans: int, trans_batch: int) -> tuple[int, ...]:
    """The stored shape whose FusedMatMul reading (see ``contrib._batch_transposed``) is ``shape``."""
    s = list(shape)
    if trans:
        s[-2], s[-1] = s[-1], s[-2]
    if trans_batch and len(s) > 2:
        s = [s[-2], *s[:-2], s[-1]]
    return tuple(s)


# onnxruntime moves the batch axes of operands of rank 3 or more only
@pytest.mark.parametrize("rank,flags", [(r, f) for r in (2, 3, 4) for f in itertools.product([0, 1], repeat=4)
                                        if r > 2 or not any(f[2:])])
def test_fused_matmul(rank: int, flags: tuple[int, ...]) -> None:
    ta, tb, tba, tbb = flags
    batch = (2, 3)[:rank - 2]
    a = _f32(*_batch_moved((*batch, 4, 5), ta, tba))
    b = _f32(*_batch_moved((*batch, 5, 6), tb, tbb))
    _agrees(*_case("FusedMatMul", {"a": a, "b": b}, 1, alpha=0.5, transA=ta, transB=tb, transBatchA=tba,
                   transBatchB=tbb))


def test_fused_conv_and_gemm() -> None:
    x, w = _f32(1, 4, 9, 9), _f32(6, 2, 3, 3)
    _agrees(*_case("FusedConv", {"x": x, "w": w, "b": _f32(6)}, 1, consts=("w", "b"), group=2, strides=[2, 2],
                   pads=[1, 0, 1, 0], activation="Relu"))
    _agrees(*_case("FusedGemm", {"a": _f32(5, 3), "b": _f32(4, 5), "c": _f32(4)}, 1, transA=1, transB=1,
                   activation="LeakyRelu", activation_alpha=0.1))


@pytest.mark.parametrize("op,extra", [("Gelu", {}), ("FastGelu", {"bias": _f32(8)}), ("BiasGelu", {"bias": _f32(8)}),
                                      ("QuickGelu", {})])
def test_elementwise(op: str, extra: dict) -> None:
    _agrees(*_case(op, {"x": _f32(2, 3, 8), **extra}, 1))


@pytest.mark.parametrize("op,outs", [("SkipLayerNormalization", 4), ("SkipSimplifiedLayerNormalization", 4)])
def test_skip_normalisations(op: str, outs: int) -> None:
    inputs = {"x": _f32(2, 3, 8), "skip": _f32(2, 3, 8), "gamma": _f32(8)}
    if op == "SkipLayerNormalization":
        inputs["beta"] = _f32(8)
    inputs["bias"] = _f32(8)
    if op == "SkipSimplifiedLayerNormalization":  # no beta: bias is the fourth input
        inputs = {"x": inputs["x"], "skip": inputs["skip"], "gamma": inputs["gamma"], "bias": inputs["bias"]}
    _agrees(*_case(op, inputs, outs, epsilon=1e-5))


@pytest.mark.parametrize("axis", [-1, 1])
def test_onnx_domain_norms_onnxruntime_registers(axis: int) -> None:
    """SimplifiedLayerNormalization, and LayerNormalization at opset 14 (onnx defines it from 17):
    onnxruntime registers both in the ONNX domain; Y and the statistics get shapes."""
    x, scale = _f32(2, 3, 8), _f32(*((8,) if axis == -1 else (3, 8)))
    _agrees(*_case("SimplifiedLayerNormalization", {"x": x, "scale": scale}, 2, domain="", axis=axis))
    _agrees(*_case("LayerNormalization", {"x": x, "scale": scale, "bias": scale}, 3, domain="", opset=14,
                   axis=axis))


def test_embed_layer_norm() -> None:
    ids = RNG.integers(0, 30, (2, 5)).astype(np.int32)
    inputs = {"ids": ids, "segments": RNG.integers(0, 2, (2, 5)).astype(np.int32), "words": _f32(30, 16),
              "positions": _f32(10, 16), "segment_table": _f32(2, 16), "gamma": _f32(16), "beta": _f32(16),
              "mask": np.ones((2, 5), np.int32)}
    tables = ("words", "positions", "segment_table", "gamma", "beta")
    _agrees(*_case("EmbedLayerNormalization", inputs, 3, consts=tables, out_types={1: TensorProto.INT32},
                   epsilon=1e-12))


# a past needs K and V of one size
@pytest.mark.parametrize("past,sizes", [(False, None), (True, None), (False, [16, 16, 8])])
def test_attention(past: bool, sizes: list[int] | None) -> None:
    width = sum(sizes) if sizes else 48
    inputs = {"x": _f32(2, 5, 16), "w": _f32(16, width), "bias": _f32(width), "mask": None,
              "past": _f32(2, 2, 4, 3, 4) if past else None}
    attrs = {"qkv_hidden_sizes": sizes} if sizes else {}
    outs = 2 if not sizes else 1  # onnxruntime keeps a present only where K and V are one size
    _agrees(*_case("Attention", inputs, outs, consts=("w", "bias"), num_heads=4, unidirectional=int(past), **attrs))


@pytest.mark.parametrize("past", [False, True])
def test_multi_head_attention(past: bool) -> None:
    inputs = {"q": _f32(2, 5, 16), "k": _f32(2, 7, 16), "v": _f32(2, 7, 8), "bias": None, "kpm": None, "ab": None,
              "pk": _f32(2, 4, 3, 4) if past else None, "pv": _f32(2, 4, 3, 4) if past else None}
    if past:  # a past wants V's head size to be K's
        inputs["v"] = _f32(2, 7, 16)
    _agrees(*_case("MultiHeadAttention", inputs, 3, num_heads=4))


def test_multi_head_attention_cross_cache() -> None:
    """key and value already (B, heads, L, head size), as a decoder's cross-attention cache."""
    inputs = {"q": _f32(2, 5, 16), "k": _f32(2, 4, 7, 4), "v": _f32(2, 4, 7, 4)}
    _agrees(*_case("MultiHeadAttention", inputs, 1, num_heads=4))


@pytest.mark.parametrize("packed", [False, True])
def test_group_query_attention_output(packed: bool) -> None:
    q = _f32(1, 5, 64 if packed else 32)
    inputs = {"q": q, "k": None if packed else _f32(1, 5, 16), "v": None if packed else _f32(1, 5, 16),
              "pk": None, "pv": None, "seqlens_k": np.array([4], np.int32),
              "total": np.array(5, np.int32)}
    blob, feeds, outs = _case("GroupQueryAttention", inputs, 3, num_heads=4, kv_num_heads=2)
    want = _run(blob, feeds)
    graph = _inferred(blob, want)
    assert graph.values[outs[0]].static_shape == want[0].shape


@pytest.mark.parametrize("k,block", [(32, 16), (40, 16)])
def test_matmul_nbits(k: int, block: int) -> None:
    n, blocks = 8, -(-k // block)
    inputs = {"a": _f32(2, 3, k), "b": RNG.integers(0, 256, (n, blocks, block // 2)).astype(np.uint8),
              "scales": np.abs(_f32(n * blocks)) + 0.01}
    _agrees(*_case("MatMulNBits", inputs, 1, consts=("b", "scales"), K=k, N=n, bits=4, block_size=block))


def test_an_ir3_model_with_weights_only_onnxruntime_declared_loads() -> None:
    """Before IR 4 every initializer is also an input; onnxruntime saves the weights its optimiser
    makes (a BatchNormalization folded into a Conv) as initializers alone and runs the model. So
    does hal, reading them as weights, and the caller's proto is left as it was."""
    w = numpy_helper.from_array(_f32(3, 3), "folded")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "folded"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)], ir_version=3)
    with pytest.raises(onnx.checker.ValidationError, match="not in graph input"):
        onnx.checker.check_model(model)
    before = model.SerializeToString()
    loaded = load(model)
    assert [i.name for i in loaded.inputs] == ["x"] and "folded" in loaded.initializers
    assert model.SerializeToString() == before


def test_checking_leaves_the_onnx_domain_ops_onnxruntime_registers_where_they_were() -> None:
    blob, _, _ = _case("SimplifiedLayerNormalization", {"x": _f32(2, 8), "scale": _f32(8)}, 1, domain="")
    model = onnx.load_from_string(blob)
    model.graph.output[0].type.tensor_type.shape.dim.add().dim_value = 2
    model.graph.output[0].type.tensor_type.shape.dim.add().dim_value = 8
    before = model.SerializeToString()
    graph = load(model)
    assert model.SerializeToString() == before
    assert (graph.nodes[0].op_type, graph.nodes[0].domain) == ("SimplifiedLayerNormalization", "")


@pytest.mark.parametrize("packed", [False, True])
def test_gather_block_quantized(packed: bool) -> None:
    """Rows of a 4-bit table (packed two codes a byte, or int4) gathered and dequantised to the scales' type."""
    if packed:
        data = RNG.integers(0, 256, (10, 16)).astype(np.uint8)  # 32 codes a row
    else:
        data = RNG.integers(-8, 8, (10, 32)).astype(np.int8)
    inputs = {"data": data, "indices": RNG.integers(0, 10, (2, 3)).astype(np.int64),
              "scales": np.abs(_f32(10, 2)) + 0.01}
    blob, feeds, outs = _case("GatherBlockQuantized", inputs, 1, consts=("data", "scales"), block_size=16,
                              gather_axis=0, quantize_axis=1)
    if not packed:  # int4 data: the initializer is stored as int4 codes
        model = onnx.load_from_string(blob)
        t = next(t for t in model.graph.initializer if t.name == "data")
        t.CopyFrom(helper.make_tensor("data", TensorProto.INT4, data.shape, data.reshape(-1).tolist()))
        blob = model.SerializeToString()
    _agrees(blob, feeds, outs)


def test_a_model_saved_with_onnxruntimes_cpu_layout_is_refused_with_what_to_do(tmp_path) -> None:
    """ORT_ENABLE_ALL rewrites convolutions into com.microsoft.nchwc ops blocked for the saving CPU's
    vector width; hal names the domain and the level to save at instead."""
    import os

    import onnx.backend.test

    import hal
    from hal.errors import UnsupportedOpError

    source = os.path.join(os.path.dirname(onnx.backend.test.__file__), "data", "light", "light_squeezenet.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "all.onnx")
    ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    if not any(n.domain == "com.microsoft.nchwc" for n in onnx.load(options.optimized_model_filepath).graph.node):
        pytest.skip("onnxruntime wrote no NCHWc ops on this CPU")
    with pytest.raises(UnsupportedOpError, match=r"Conv \(domain com\.microsoft\.nchwc\).*ORT_ENABLE_EXTENDED"):
        hal.InferenceSession(options.optimized_model_filepath, target="cpu", cache_dir=False)


@pytest.mark.parametrize("past", [False, True])
def test_quantized_attention(past: bool) -> None:
    """QAttention: uint8 codes in, the float bias's type out."""
    inputs = {"x": RNG.integers(0, 256, (2, 5, 16)).astype(np.uint8),
              "w": RNG.integers(-128, 128, (16, 48)).astype(np.int8), "bias": _f32(48),
              "xs": np.float32(0.02), "ws": np.float32(0.01), "mask": None, "xz": np.uint8(128), "wz": np.int8(0),
              "past": _f32(2, 2, 4, 3, 4) if past else None}
    _agrees(*_case("QAttention", inputs, 2, consts=("w", "bias", "xs", "ws", "xz", "wz"), num_heads=4,
                   unidirectional=int(past)))


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_dynamic_quantize_lstm(direction: str) -> None:
    """W (directions, input, 4 hidden) and R (directions, hidden, 4 hidden) stored transposed as codes."""
    dirs, hidden = (2 if direction == "bidirectional" else 1), 6
    inputs = {"x": _f32(7, 3, 5), "w": RNG.integers(-128, 128, (dirs, 5, 4 * hidden)).astype(np.int8),
              "r": RNG.integers(-128, 128, (dirs, hidden, 4 * hidden)).astype(np.int8), "b": None, "lens": None,
              "h0": None, "c0": None, "p": None, "w_scale": np.full(dirs, 0.01, np.float32),
              "w_zero": np.zeros(dirs, np.int8), "r_scale": np.full(dirs, 0.01, np.float32),
              "r_zero": np.zeros(dirs, np.int8)}
    _agrees(*_case("DynamicQuantizeLSTM", inputs, 3, consts=tuple(k for k in inputs if k != "x"),
                   hidden_size=hidden, direction=direction))


@pytest.mark.parametrize("zero", [None, np.int16(3), np.uint16(7)])
def test_onnxruntime_quantize_and_dequantize(zero) -> None:
    """com.microsoft QuantizeLinear: the zero point's type, uint8 without one; DequantizeLinear: the scale's."""
    inputs = {"x": _f32(2, 3, 4), "scale": np.float32(0.05), "zero": zero}
    code = TensorProto.UINT8 if zero is None else helper.np_dtype_to_tensor_dtype(np.asarray(zero).dtype)
    blob, feeds, outs = _case("QuantizeLinear", inputs, 1, consts=("scale", "zero"), out_types={0: code})
    _agrees(blob, feeds, outs)
    codes = RNG.integers(0, 100, (2, 3, 4)).astype(np.uint8 if zero is None else np.asarray(zero).dtype)
    _agrees(*_case("DequantizeLinear", {"x": codes, "scale": np.float32(0.05), "zero": zero}, 1,
                   consts=("scale", "zero")))


def test_quantized_embedding_where_and_int16_product() -> None:
    """QEmbedLayerNormalization (uint8 tables, float out), QLinearWhere and MatMulInteger16."""
    codes = {n: RNG.integers(0, 256, s).astype(np.uint8) for n, s in
             (("words", (30, 16)), ("positions", (10, 16)), ("segment_table", (2, 16)), ("gamma", (16,)),
              ("beta", (16,)))}
    inputs = {"ids": RNG.integers(0, 30, (2, 5)).astype(np.int32),
              "segments": RNG.integers(0, 2, (2, 5)).astype(np.int32), **codes, "mask": np.ones((2, 5), np.int32)}
    inputs.update({f"{n}_s": np.float32(0.01) for n in codes})
    inputs.update({f"{n}_z": np.uint8(128) for n in codes})
    tables = tuple(n for n in inputs if n not in ("ids", "segments", "mask"))
    _agrees(*_case("QEmbedLayerNormalization", inputs, 2, consts=tables, out_types={1: TensorProto.INT32},
                   epsilon=1e-12))
    where = {"c": RNG.integers(0, 2, (2, 1, 4)).astype(bool), "x": RNG.integers(0, 256, (3, 4)).astype(np.uint8),
             "xs": np.float32(0.1), "xz": np.uint8(128), "y": RNG.integers(0, 256, (2, 3, 1)).astype(np.uint8),
             "ys": np.float32(0.2), "yz": np.uint8(120), "zs": np.float32(0.15), "zz": np.uint8(125)}
    _agrees(*_case("QLinearWhere", where, 1, consts=("xs", "xz", "ys", "yz", "zs", "zz"),
                   out_types={0: TensorProto.UINT8}))
    product = {"a": RNG.integers(-9, 9, (2, 3, 4)).astype(np.int16), "b": RNG.integers(-9, 9, (4, 5)).astype(np.int16)}
    _agrees(*_case("MatMulInteger16", product, 1, out_types={0: TensorProto.INT32}))
