"""Shapes for the ops onnxruntime defines and onnx's shape inference does not know: its contrib ops
(domain ``com.microsoft``: the quantized ones of ``hal.kernels.contrib_quant``, the fusions its graph
optimiser saves, its transformer and GenAI ops) and the two it registers in the ONNX domain
(SimplifiedLayerNormalization, and LayerNormalization before opset 17, which onnx defines from 17).
Each is inferred as standard ops that give its outputs the same shapes and types, so inference
carries on past it instead of stopping there.

``shadowed(proto)`` is a copy of the model for inference only, each such node replaced by its
stand-ins: a QLinearAdd reads as an Add of its two operands, FusedConv as the Conv it wraps, a
Gelu or a mixture of experts (MoE, QMoE) as Identity, a product whose weight is packed
(MatMulNBits) as a MatMul with a declared operand of the unpacked shape (GatherBlockQuantized's
table as a Gather's), Attention's present state as its K projection split into heads and
concatenated onto the past. The inferred value_info then belongs to the real model, whose node
names and outputs are the same. The helper values and declared operands a shadow adds carry a
prefix and are dropped (``restored``). An output whose shape depends on a run (GroupQueryAttention's
present state, sized by a fed total length) gets no stand-in and stays unknown, as onnx leaves a
NonZero's. The transformer and LLM ops' stand-ins live in ``hal.graph.contrib_llm``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import onnx
from onnx import TensorProto, helper

DOMAIN = "com.microsoft"
#: the prefix of the values a shadow adds (the integer products' operands and results)
PREFIX = "__hal_shadow_"
_POOL_ATTRS = ("auto_pad", "ceil_mode", "kernel_shape", "pads", "strides")
_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
Dim = int | str | None


@dataclass
class _Known:
    """What the last inference knew, and the declared operands a node's stand-ins add."""

    opset: int
    types: dict[str, int]
    dims: dict[str, list[Dim]]
    declared: list[onnx.ValueInfoProto] = field(default_factory=list)

    def rank(self, name: str) -> int | None:
        d = self.dims.get(name)
        return None if d is None else len(d)

    def static(self, name: str) -> list[int] | None:
        """``name``'s dimensions when every one is a number."""
        d = self.dims.get(name)
        return list(d) if d is not None and all(isinstance(x, int) for x in d) else None

    def declare(self, name: str, elem_type: int, dims: list[Dim]) -> str:
        """An operand of known shape and no producer (a packed weight's unpacked form)."""
        name = PREFIX + name
        self.declared.append(helper.make_tensor_value_info(name, elem_type, dims))
        return name


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _ins(node: onnx.NodeProto, count: int) -> list[str]:
    """The node's first ``count`` input names, '' for those absent."""
    return [*node.input, *[""] * count][:count]


def _kept(a: dict, names: tuple[str, ...]) -> dict:
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in a.items() if k in names}


def _ints(name: str, values: list[int]) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [len(values)],
                                                                              values))


def _axes_op(op: str, x: str, out: str, axes: list[int], opset: int, since: int, **attrs) -> list[onnx.NodeProto]:
    """``op`` over ``axes``: as an attribute before opset ``since``, as a constant input from it."""
    if opset < since:
        return [helper.make_node(op, [x], [out], axes=axes, **attrs)]
    name = PREFIX + out + "_axes"
    return [_ints(name, axes), helper.make_node(op, [x, name], [out], **attrs)]


def _reduce_max(x: str, out: str, rank: int | None, opset: int) -> list[onnx.NodeProto] | None:
    """A global pool's stand-in: the maximum over the spatial axes, kept (8-bit types allowed)."""
    if rank is None or rank < 3:
        return None
    return _axes_op("ReduceMax", x, out, list(range(2, rank)), opset, 18, keepdims=1)


def _row_stats(x: str, outs: list[str], first_axis: int, known: _Known) -> list[onnx.NodeProto]:
    """A normalisation's statistics: ``x`` with the normalised axes (from ``first_axis`` on) kept as 1.
    A ReduceMean of a float; ``outs`` may hold '' for absent outputs."""
    rank = known.rank(x)
    if first_axis < 0:
        if rank is None and first_axis != -1:
            return []
        first_axis += rank if rank is not None else 1
    axes = [-1] if rank is None else list(range(first_axis, rank))
    nodes = []
    for out in (o for o in outs if o):
        nodes += _axes_op("ReduceMean", x, out, axes, known.opset, 18, keepdims=1)
    return nodes


def _same_as(x: str, outs: list[str]) -> list[onnx.NodeProto]:
    return [helper.make_node("Identity", [x], [o]) for o in outs if o]


def _product(a: str, k: Dim, n: int, out: str, elem_type: int, known: _Known) -> list[onnx.NodeProto]:
    """``a`` (..., k) times a declared (k, n) operand: a product's shape whose weight is packed."""
    b = known.declare(out + "_b", elem_type, [k, n])
    return [helper.make_node("MatMul", [a, b], [out])]


def _heads(x: str, out: str, heads: int, size: int) -> list[onnx.NodeProto]:
    """(B, S, heads x size) split into (B, heads, S, size)."""
    shape, split = PREFIX + out + "_shape", PREFIX + out + "_split"
    return [_ints(shape, [0, 0, heads, size]), helper.make_node("Reshape", [x, shape], [split]),
            helper.make_node("Transpose", [split], [out], perm=[0, 2, 1, 3])]


# -- the stand-ins, one function an op ---------------------------------------------------------------

StandIn = Callable[[onnx.NodeProto, dict, _Known], "list[onnx.NodeProto] | None"]
_STAND_INS: dict[tuple[str, str], StandIn] = {}


def _stands_in(*ops: str, domain: str = DOMAIN) -> Callable[[StandIn], StandIn]:
    def deco(fn: StandIn) -> StandIn:
        for op in ops:
            _STAND_INS[(domain, op)] = fn
        return fn
    return deco


@_stands_in("QLinearAdd", "QLinearMul")
def _qlinear_binary(node, a, known):
    x, _, _, y = _ins(node, 4)
    return [helper.make_node("Add", [x, y], [node.output[0]])] if x and y else None


@_stands_in("QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "Gelu", "FastGelu", "QuickGelu", "BiasGelu",
            "BiasAdd", "RotaryEmbedding", "MoE", "QMoE", "MRotaryEmbedding", "GatedRMSNorm", "GatedAdd")
def _unary(node, a, known):
    """Ops whose output is their first input's shape and type."""
    return _same_as(node.input[0], node.output[:1]) if node.input and node.input[0] else None


@_stands_in("QLinearConcat")
def _qlinear_concat(node, a, known):
    ins = list(node.input)
    return [helper.make_node("Concat", ins[2::3], [node.output[0]], axis=a.get("axis", 0))] if len(ins) >= 5 else None


@_stands_in("QLinearGlobalAveragePool")
def _qlinear_global_pool(node, a, known):
    if not node.input or a.get("channels_last", 0):
        return None
    return _reduce_max(node.input[0], node.output[0], known.rank(node.input[0]), known.opset)


@_stands_in("QLinearAveragePool")
def _qlinear_pool(node, a, known):
    if not node.input or a.get("channels_last", 0) or "kernel_shape" not in a:
        return None
    return [helper.make_node("MaxPool", [node.input[0]], [node.output[0]], **_kept(a, _POOL_ATTRS))]


@_stands_in("MatMulIntegerToFloat", "DynamicQuantizeMatMul")
def _integer_to_float(node, a, known):
    ins, out = list(node.input), node.output[0]
    if len(ins) < 2:
        return None
    a_in, nodes = ins[0], []
    if node.op_type == "DynamicQuantizeMatMul":  # A is float: its codes' shape is its shape
        nodes.append(helper.make_node("Cast", [a_in], [PREFIX + out + "_a"], to=TensorProto.UINT8))
        a_in = PREFIX + out + "_a"
    return [*nodes, helper.make_node("MatMulInteger", [a_in, ins[1]], [PREFIX + out + "_ab"]),
            helper.make_node("Cast", [PREFIX + out + "_ab"], [out], to=TensorProto.FLOAT)]


@_stands_in("QGemm")
def _qgemm(node, a, known):
    ins, out = list(node.input), node.output[0]
    if len(ins) < 6:
        return None
    a_in, b_in = ins[0], ins[3]
    nodes = []
    if a.get("transA", 0):
        nodes.append(helper.make_node("Transpose", [a_in], [PREFIX + out + "_a"]))
        a_in = PREFIX + out + "_a"
    if a.get("transB", 0):
        nodes.append(helper.make_node("Transpose", [b_in], [PREFIX + out + "_b"]))
        b_in = PREFIX + out + "_b"
    # quantized when y_scale is given (to y_zero_point's type, else A's, as the kernel), else float
    quantized = len(ins) > 7 and bool(ins[7])
    zero = ins[8] if len(ins) > 8 and ins[8] else ins[0]
    to = known.types.get(zero, TensorProto.UINT8) if quantized else TensorProto.FLOAT
    return [*nodes, helper.make_node("MatMulInteger", [a_in, b_in], [PREFIX + out + "_ab"]),
            helper.make_node("Cast", [PREFIX + out + "_ab"], [out], to=to)]


@_stands_in("FusedConv")
def _fused_conv(node, a, known):
    ins = [i for i in node.input[:3]]
    return [helper.make_node("Conv", ins, [node.output[0]], **_kept(a, _CONV_ATTRS))] if len(ins) >= 2 else None


@_stands_in("FusedGemm")
def _fused_gemm(node, a, known):
    if len(node.input) < 2:
        return None
    return [helper.make_node("Gemm", list(node.input[:3]), [node.output[0]], **_kept(a, ("transA", "transB")))]


def _batch_transposed(x: str, rank: int | None, trans: bool, trans_batch: bool, out: str
                      ) -> tuple[str, list[onnx.NodeProto]] | None:
    """FusedMatMul's operand as it multiplies it: transBatch moves the first axis to before the
    matrix's last (its rows), trans swaps the last two."""
    if not trans and not trans_batch:
        return x, []
    if rank is None:
        return None
    perm = list(range(rank))
    if trans_batch and rank > 2:
        perm = [*range(1, rank - 1), 0, rank - 1]
    if trans:
        perm[-2], perm[-1] = perm[-1], perm[-2]
    return out, [helper.make_node("Transpose", [x], [out], perm=perm)]


@_stands_in("FusedMatMul", "TransposeMatMul")
def _fused_matmul(node, a, known):
    if len(node.input) < 2:
        return None
    out = node.output[0]
    left = _batch_transposed(node.input[0], known.rank(node.input[0]), bool(a.get("transA", 0)),
                             bool(a.get("transBatchA", 0)), PREFIX + out + "_a")
    right = _batch_transposed(node.input[1], known.rank(node.input[1]), bool(a.get("transB", 0)),
                              bool(a.get("transBatchB", 0)), PREFIX + out + "_b")
    if left is None or right is None:
        return None
    return [*left[1], *right[1], helper.make_node("MatMul", [left[0], right[0]], [out])]


# contrib twins of ONNX ops and small contrib ops (hal.kernels.contrib_misc)

_stands_in("Trilu", "Inverse", "ScaledSiLU", "GroupNorm")(_unary)


@_stands_in("SkipGroupNorm")
def _skip_group_norm(node, a, known):
    """Y and the sum S: the input's shape."""
    return _same_as(node.input[0], [o for o in node.output[:2] if o]) if node.input and node.input[0] else None


@_stands_in("BiasSplitGelu")
def _bias_split_gelu(node, a, known):
    """The left half of X's last axis (as a Split in two)."""
    if not node.input or not node.input[0]:
        return None
    return [helper.make_node("Split", [node.input[0]], [node.output[0], PREFIX + node.output[0] + "_right"],
                             axis=-1, num_outputs=2) if known.opset >= 18 else
            helper.make_node("Split", [node.input[0]], [node.output[0], PREFIX + node.output[0] + "_right"], axis=-1)]


@_stands_in("NhwcConv")
def _nhwc_conv(node, a, known):
    """The Conv it is, between channels-last transposes of X, W and the output."""
    rank = known.rank(node.input[0]) if node.input else None
    if rank is None or len(node.input) < 2:
        return None
    first = [0, rank - 1, *range(1, rank - 1)]
    x, w = PREFIX + node.output[0] + "_x", PREFIX + node.output[0] + "_w"
    y = PREFIX + node.output[0] + "_nchw"
    return [helper.make_node("Transpose", [node.input[0]], [x], perm=first),
            helper.make_node("Transpose", [node.input[1]], [w], perm=first),
            helper.make_node("Conv", [x, w, *node.input[2:3]], [y], **_kept(a, _CONV_ATTRS)),
            helper.make_node("Transpose", [y], [node.output[0]], perm=[0, *range(2, rank), 1])]


@_stands_in("GemmFastGelu")
def _gemm_fast_gelu(node, a, known):
    """X @ W."""
    return [helper.make_node("MatMul", node.input[:2], [node.output[0]])] if len(node.input) > 1 else None


@_stands_in("Range")
def _range(node, a, known):
    """ONNX's Range, delta 1 of start's type where the node leaves it out."""
    start, limit, delta = _ins(node, 3)
    if not start or not limit or known.opset < 11 or start not in known.types:
        return None
    nodes = []
    if not delta:
        delta = PREFIX + node.output[0] + "_delta"
        one = helper.make_tensor(delta, known.types[start], [], [1])
        nodes.append(helper.make_node("Constant", [], [delta], value=one))
    return [*nodes, helper.make_node("Range", [start, limit, delta], [node.output[0]])]


@_stands_in("Pad")
def _contrib_pad(node, a, known):
    """ONNX's Pad (opset 11), pads flattened from [1, 2 x rank]; the mode does not change the shape."""
    data, pads, value = _ins(node, 3)
    if not data or not pads or known.opset < 11:
        return None
    nodes = []
    if known.rank(pads) != 1:
        flat = PREFIX + node.output[0] + "_pads"
        nodes = [_ints(flat + "_shape", [-1]), helper.make_node("Reshape", [pads, flat + "_shape"], [flat])]
        pads = flat
    return [*nodes, helper.make_node("Pad", [data, pads, value] if value else [data, pads], [node.output[0]])]


@_stands_in("GatherND")
def _contrib_gather_nd(node, a, known):
    """ONNX's GatherND (no batch axes), int32 indices cast to the int64 it takes."""
    data, indices = _ins(node, 2)
    if not data or not indices or known.opset < 11:
        return None
    nodes = []
    if known.types.get(indices) == TensorProto.INT32:
        cast = PREFIX + node.output[0] + "_indices"
        nodes, indices = [helper.make_node("Cast", [indices], [cast], to=TensorProto.INT64)], cast
    return [*nodes, helper.make_node("GatherND", [data, indices], [node.output[0]])]


@_stands_in("GridSample")
def _contrib_grid_sample(node, a, known):
    """ONNX's GridSample (opset 16): (N, C, H_out, W_out)."""
    x, grid = _ins(node, 2)
    return [helper.make_node("GridSample", [x, grid], [node.output[0]])] if x and grid and known.opset >= 16 else None


@_stands_in("Unique")
def _contrib_unique(node, a, known):
    """ONNX's Unique of the flattened input: y, inverse indices and counts (its outputs 0, 2, 3)."""
    if not node.input or not node.input[0] or known.opset < 11:
        return None
    outs = [*node.output, "", ""][:3]
    return [helper.make_node("Unique", [node.input[0]], [outs[0], "", outs[1], outs[2]])]


@_stands_in("CDist")
def _cdist(node, a, known):
    """A (M, K) against B (N, K): (M, N), as A @ B^T."""
    x, y = _ins(node, 2)
    if not x or not y:
        return None
    bt = PREFIX + node.output[0] + "_bt"
    return [helper.make_node("Transpose", [y], [bt], perm=[1, 0]),
            helper.make_node("MatMul", [x, bt], [node.output[0]])]


@_stands_in("SkipLayerNormalization", "SkipSimplifiedLayerNormalization")
def _skip_norm(node, a, known):
    """output and the input+skip(+bias) sum: the input's shape; mean and inv_std_var: a row's."""
    x = node.input[0] if node.input else ""
    if not x:
        return None
    outs = [*node.output, "", "", ""][:4]
    return [*_same_as(x, [outs[0], outs[3]]), *_row_stats(x, outs[1:3], -1, known)]


def _layer_norm(node, a, known):
    """Y: X's shape, in the scale's type (onnxruntime's schema: X: T, scale: V -> Y: V); the
    statistics (Mean, InvStdDev; SimplifiedLayerNormalization's inv_std_var) keep the normalised
    axes, from ``axis`` on, as 1."""
    x = node.input[0] if node.input else ""
    if not x:
        return None
    scale_type = known.types.get(node.input[1]) if len(node.input) > 1 else None
    y = node.output[:1]
    first = ([helper.make_node("Cast", [x], y, to=scale_type)] if scale_type and y and y[0] else _same_as(x, y))
    return [*first, *_row_stats(x, list(node.output[1:]), int(a.get("axis", -1)), known)]


_stands_in("SimplifiedLayerNormalization", "LayerNormalization", domain="")(_layer_norm)


@_stands_in("EmbedLayerNormalization", "QEmbedLayerNormalization")
def _embed_layer_norm(node, a, known):
    """output and embedding_sum: word_embedding's rows gathered by input_ids (B, S, hidden), in the
    table's type (QEmbedLayerNormalization's codes: in their scale's, input 8); mask_index: one
    int32 a batch row."""
    ids, _, words = _ins(node, 3)
    if not ids or not words:
        return None
    outs = [*node.output, "", ""][:3]
    gathered = PREFIX + outs[0] + "_rows"
    nodes = [helper.make_node("Gather", [words, ids], [gathered])]
    if node.op_type == "QEmbedLayerNormalization":
        scale = _ins(node, 9)[8]
        if scale not in known.types:
            return None
        nodes.append(helper.make_node("Cast", [gathered], [gathered + "_f"], to=known.types[scale]))
        gathered += "_f"
    nodes += _same_as(gathered, [outs[0], outs[2]])
    if outs[1]:
        cast = PREFIX + outs[1] + "_ids"
        nodes += [helper.make_node("Cast", [ids], [cast], to=TensorProto.INT32),
                  *_axes_op("ReduceMax", cast, outs[1], [1], known.opset, 18, keepdims=0)]
    return nodes


@_stands_in("DynamicQuantizeLSTM")
def _dynamic_quantize_lstm(node, a, known):
    """Y (steps, directions, batch, hidden), Y_h and Y_c (directions, batch, hidden): an LSTM over X
    with W (directions, input, 4 hidden) and R (directions, hidden, 4 hidden), stored transposed as
    codes, declared in the LSTM's own layout and X's float type."""
    x, w, r = _ins(node, 3)
    wd, rd = (known.static(v) if v else None for v in (w, r))
    if not x or wd is None or rd is None or len(wd) != 3 or len(rd) != 3:
        return None
    elem = known.types.get(x, TensorProto.FLOAT)
    out = node.output[0] or next((o for o in node.output if o), "lstm")
    w_f = known.declare(out + "_w", elem, [wd[0], wd[2], wd[1]])
    r_f = known.declare(out + "_r", elem, [rd[0], rd[2], rd[1]])
    attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in a.items() if k == "direction"}
    return [helper.make_node("LSTM", [x, w_f, r_f], list(node.output), hidden_size=rd[1], **attrs)]


@_stands_in("QuantizeLinear", "DequantizeLinear")
def _quantize(node, a, known):
    """x's shape, in the zero point's type (uint8 without one) or, dequantised, the scale's."""
    x, scale, zero = _ins(node, 3)
    if not x:
        return None
    if node.op_type == "DequantizeLinear":
        to = known.types.get(scale) if scale else None
    else:
        to = known.types.get(zero, TensorProto.UINT8) if zero else TensorProto.UINT8
    return [helper.make_node("Cast", [x], [node.output[0]], to=to)] if to else None


@_stands_in("QLinearWhere")
def _qlinear_where(node, a, known):
    """condition, X and Y broadcast, in Z's zero point's type (X's codes')."""
    cond, x, _, _, y = _ins(node, 5)
    return [helper.make_node("Where", [cond, x, y], [node.output[0]])] if cond and x and y else None


@_stands_in("MatMulInteger16")
def _matmul_integer16(node, a, known):
    """numpy's matmul of the int16 operands, in int32."""
    if len(node.input) < 2:
        return None
    out = node.output[0]
    cast = [helper.make_node("Cast", [x], [PREFIX + out + f"_{i}"], to=TensorProto.INT32)
            for i, x in enumerate(node.input[:2])]
    return [*cast, helper.make_node("MatMul", [PREFIX + out + "_0", PREFIX + out + "_1"], [out])]


# -- checking and shadowing a model -----------------------------------------------------------------


#: ONNX ops that onnx deprecated at the opsets given but onnxruntime still runs there, by their
#: function body: GroupNormalization-18 (a scale and bias per group; -21 takes them per channel),
#: which onnx's checker refuses at opsets 18-20
_DEPRECATED_BUT_RUN = {"GroupNormalization": range(18, 21)}


def _onnxruntime_onnx_ops(proto: onnx.ModelProto, opset: int) -> list[onnx.NodeProto]:
    """The main graph's nodes in the ONNX domain that only onnxruntime defines there, or that it
    runs where onnx deprecated them (``_DEPRECATED_BUT_RUN``)."""
    return [n for n in proto.graph.node if n.domain in ("", "ai.onnx")
            and (_stand_in_for(n, opset) is not None or opset in _DEPRECATED_BUT_RUN.get(n.op_type, ()))]


@contextmanager
def onnx_checkable(proto: onnx.ModelProto) -> Iterator[None]:
    """``proto`` readable by ``onnx.checker`` for the block: the ops onnxruntime registers in the ONNX
    domain (SimplifiedLayerNormalization; LayerNormalization before opset 17), which the checker
    refuses there as ops no schema defines, and the deprecated ones it runs, moved to onnxruntime's
    domain and back after."""
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    moved = [(n, n.domain) for n in _onnxruntime_onnx_ops(proto, opset)]
    imported = any(o.domain == DOMAIN for o in proto.opset_import)
    try:
        for n, _ in moved:
            n.domain = DOMAIN
        if moved and not imported:
            proto.opset_import.append(helper.make_opsetid(DOMAIN, 1))
        yield
    finally:
        for n, domain in moved:
            n.domain = domain
        if moved and not imported:
            del proto.opset_import[-1]


# -- shadowing a model -------------------------------------------------------------------------------


def _stand_in_for(node: onnx.NodeProto, opset: int) -> StandIn | None:
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    if domain == "" and node.op_type == "LayerNormalization" and opset >= 17:
        return None  # onnx's own from 17
    return _STAND_INS.get((domain, node.op_type))


def _known(proto: onnx.ModelProto, opset: int) -> _Known:
    graph = proto.graph
    known = _Known(opset, {t.name: t.data_type for t in graph.initializer},
                   {t.name: list(t.dims) for t in graph.initializer})
    for v in [*graph.input, *graph.value_info, *graph.output]:
        tt = v.type.tensor_type
        known.types[v.name] = tt.elem_type
        if tt.HasField("shape"):
            known.dims[v.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                  for d in tt.shape.dim]
    return known


def shadowed(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, int] | None:
    """A copy of ``proto`` (inferred already: its value_info gives the types and shapes the stand-ins
    need) whose nodes onnx does not know are their standard stand-ins, and how many stood in; None
    when none can. A stand-in that needs its input's rank or size waits for an inference that knows it."""
    graph = proto.graph
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    fns = [_stand_in_for(n, opset) for n in graph.node]
    if not any(fns):
        return None
    known = _known(proto, opset)
    nodes, count = [], 0
    for n, fn in zip(graph.node, fns, strict=True):
        stand_in = fn(n, _attrs(n), known) if fn is not None else None
        if stand_in is None:
            nodes.append(n)
        else:
            nodes.extend(stand_in)
            count += 1
    if not count:
        return None
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    copy.graph.input.extend(known.declared)
    return copy, count


def infer(inferred: onnx.ModelProto, run: Callable[[onnx.ModelProto], onnx.ModelProto]) -> onnx.ModelProto:
    """``inferred`` inferred again (``run``) through its contrib nodes' stand-ins, as long as each
    pass lets more of them stand in (a rank a global pool needs comes from the pass before)."""
    done = 0
    while (shadow := shadowed(inferred)) is not None and shadow[1] > done:
        inferred, done = restored(run(shadow[0]), inferred), shadow[1]
    return inferred


def restored(inferred: onnx.ModelProto, proto: onnx.ModelProto) -> onnx.ModelProto:
    """``inferred`` (a shadow's inference) with ``proto``'s own nodes and inputs back, the helper values
    and declared operands gone."""
    del inferred.graph.node[:]
    inferred.graph.node.extend(proto.graph.node)
    del inferred.graph.input[:]
    inferred.graph.input.extend(proto.graph.input)
    kept = [v for v in inferred.graph.value_info if not v.name.startswith(PREFIX)]
    del inferred.graph.value_info[:]
    inferred.graph.value_info.extend(kept)
    return inferred


# the transformer and LLM ops' stand-ins, registered when their module loads
from hal.graph import contrib_llm  # noqa: E402, F401
