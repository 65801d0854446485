"""Lowering: which functional slice each ONNX op runs on, what it streams, and how it can be split.

Matrix products go to the MXM (weights installed in 320x320 blocks, activations streamed through);
elementwise, activation, normalisation and reduction ops to the VXM; data movement (transposes,
concatenation, slicing, gathers) to the SXM; pure relabelings (Reshape, Squeeze, ...) cost nothing
beyond a MEM alias. Sizes are bytes in the formats the precision policy stores them in.

An explicitly quantized model's GEMMs (``hal.graph.quant.qdq_gemms``) run on the MXM in int8 at
every precision but exact, as the model's own codes and scales say: its DequantizeLinear operands
are no VXM work (the MXM streams their codes) and the dequantise with both scales follows the product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hal.graph.fuse import GraphIndex
from hal.graph.ir import Graph, Node
from hal.graph.quant import qdq_gemms
from hal.numerics import ITEMSIZE, Policy, is_float, matrix_operands
from hal.perf.opcount import (
    ATTENTION_OPS,
    VIEW_OPS,
    attention_dims,
    costed,
    node_flops,
    recurrent_dims,
    reduced_length,
    shape,
)
from hal_lpu.cost import Machine

#: ops on the matrix slices, with the positions of the operands installed in the planes: the
#: weights, a recurrent op's W and R, Attention's K and V (the activations the queries and the
#: probabilities stream past)
MXM_OPS: dict[str, tuple[int, ...]] = {
    "MatMul": (1,), "Gemm": (1,), "Conv": (1,), "ConvTranspose": (1,), "Einsum": (1,), "MatMulInteger": (1,),
    "ConvInteger": (1,), "QLinearMatMul": (3,), "QLinearConv": (3,), "QGemm": (3,), "MatMulIntegerToFloat": (1,),
    "DynamicQuantizeMatMul": (1,),
    "RNN": (1, 2), "GRU": (1, 2), "LSTM": (1, 2), "Attention": (1, 2), "MultiHeadAttention": (1, 2),
    "GroupQueryAttention": (1, 2), "QAttention": (1,)}
#: the MXM ops whose products are int8 by definition, at every precision: integer operands, or (onnxruntime's
#: DynamicQuantizeMatMul, QAttention) a float activation the VXM quantizes first
INTEGER_PRODUCTS = frozenset({"MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv", "QGemm",
                              "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QAttention"})
#: onnxruntime's Attention and QAttention install their packed Q, K, V weights (K and V they make)
_PACKED_ATTENTION = frozenset({("com.microsoft", "Attention"), ("com.microsoft", "QAttention")})


def installed_operands(node: Node) -> tuple[str, ...]:
    """The names of the operands an MXM op installs (none for other ops, nor for an Einsum of one
    operand, which has no second). onnxruntime's ops read as ``costed``."""
    node = costed(node)
    positions = (1,) if (node.domain, node.op_type) in _PACKED_ATTENTION else MXM_OPS.get(node.op_type, ())
    return tuple(node.inputs[p] for p in positions if len(node.inputs) > p and node.inputs[p])


#: ops on the switch slices: they move or permute data without arithmetic
SXM_OPS = frozenset({"Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements", "GatherND", "Pad",
                     "Tile", "Expand", "DepthToSpace", "SpaceToDepth", "ReverseSequence", "ScatterND",
                     "ScatterElements", "Scatter", "Resize", "Upsample", "Trilu", "CenterCropPad"})


@dataclass(frozen=True)
class ShardRule:
    """How a node splits over chips along its weight's output columns (tensor-parallel shards)."""

    weight: int        # input position of the split weight
    axis: int          # its axis holding the output columns
    out_axis: int      # output axis the shards are concatenated along
    bias: int | None   # input position of a bias split the same way, if any
    bias_axis: int
    columns: int       # columns to share out


@dataclass
class Lowered:
    """One node as LPU work: its slice, mnemonic, bytes moved and matrix shape."""

    unit: str            # MXM | VXM | SXM | MEM
    op: str              # the instruction mnemonic on that slice
    act_bytes: int       # activation bytes read from MEM
    weight_bytes: int    # SRAM-resident weight bytes it reads
    out_bytes: int
    flops: float
    mxm: tuple[int, int, int, int] | None = None  # (batch, m, k, n)
    install_bytes: int = 0
    fmt: str = "fp16"    # MXM arithmetic: int8 or fp16
    shard: ShardRule | None = None
    convert_elems: int = 0  # activation elements the VXM converts to the MXM's format first
    out_elems: int = 0      # output elements (int8: dequantised on the VXM)
    #: passes through the MXM that each wait for the VXM's result of the one before: a recurrent op's
    #: time steps (the gates of one feed the next one's product), Attention's two products (the
    #: softmax between them)
    steps: int = 1
    #: a product run before ``mxm``, on the weights installed: onnxruntime's Attention's Q, K and V
    #: projection (batch, m, k, n)
    projection: tuple[int, int, int, int] | None = None

    def issue(self, m: Machine, frac: float = 1.0) -> int:
        """Occupancy of the compute instruction for a ``frac`` share of the output columns."""
        if self.unit == "MEM":
            return 0
        if self.unit == "MXM":
            batch, rows, k, n = self.mxm or (1, 1, 1, 1)
            cycles = m.mxm_cycles(batch, rows, k, max(1, math.ceil(n * frac)), self.install_bytes * frac, self.fmt)
            if self.projection is not None:
                pb, pm, pk, pn = self.projection
                cycles += m.mxm_cycles(pb, pm, pk, max(1, math.ceil(pn * frac)), 0, self.fmt)
            return cycles
        if self.unit == "SXM":
            return max(m.stream_cycles(self.out_bytes * frac), 1)
        return m.vxm_cycles(self.flops * frac, (self.act_bytes + self.out_bytes) * frac)

    def latency(self, m: Machine) -> int:
        if self.unit == "MXM":
            return self.steps * m.mxm_latency + (self.steps - 1) * m.vxm_latency
        return {"VXM": m.vxm_latency, "SXM": m.sxm_latency}.get(self.unit, 0)

    def repeat(self, m: Machine, frac: float = 1.0) -> int:
        """The instruction's repeat count: 320x320 blocks on the MXM, 320-byte vectors elsewhere."""
        if self.unit == "MXM" and self.mxm is not None:
            batch, _, k, n = self.mxm
            blocks = m.mxm_blocks(batch, k, max(1, math.ceil(n * frac)))
            if self.projection is not None:
                pb, _, pk, pn = self.projection
                blocks += m.mxm_blocks(pb, pk, max(1, math.ceil(pn * frac)))
            return blocks
        return m.vector_count(self.out_bytes * frac)


@dataclass(frozen=True)
class Int8Products:
    """An explicitly quantized model's products the MXM runs on int8 codes (node names), and the
    values held as those codes: the folded weights and DequantizeLinear outputs only they read."""

    nodes: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()


#: a model with no explicit quantization (or any model at exact)
NO_INT8 = Int8Products()


def int8_products(graph: Graph, policy: Policy) -> Int8Products:
    """What of ``graph`` the MXM runs in int8 as the model's Q/DQ nodes say (none at exact)."""
    if policy.exact:
        return NO_INT8
    ix = GraphIndex(graph)
    found = qdq_gemms(graph, ix)
    if not found:
        return NO_INT8
    operands: set[tuple[int, str]] = set()
    for i in found:
        n = graph.nodes[i]
        operands.update((i, n.inputs[p]) for p in matrix_operands(n.op_type, n.attrs)[0] if p < len(n.inputs))
    codes = set()
    for _, x in operands:
        readers = ix.consumers.get(x, [])
        dq = ix.producer.get(x)
        held = x in graph.initializers or (dq is not None and graph.nodes[dq].op_type == "DequantizeLinear")
        if held and x not in ix.graph_outputs and all((r, x) in operands for r in readers):
            codes.add(x)
    return Int8Products(frozenset(graph.nodes[i].name for i in found), frozenset(codes))


class Sizes:
    """Bytes of graph values in the formats a precision policy stores them in (int8 codes: 1 byte)."""

    def __init__(self, graph: Graph, policy: Policy, constants: dict[str, tuple[tuple[int, ...], np.dtype]],
                 int8: Int8Products = NO_INT8):
        self.graph, self.policy, self.constants, self.int8 = graph, policy, constants, int8
        self._info: dict[str, tuple[np.dtype | None, tuple[int, ...]]] = {}
        self._bytes: dict[tuple[str, str | None], int] = {}

    def _dtype_shape(self, name: str) -> tuple[np.dtype | None, tuple[int, ...]]:
        got = self._info.get(name)
        if got is None:
            got = self._info[name] = self._lookup(name)
        return got

    def _lookup(self, name: str) -> tuple[np.dtype | None, tuple[int, ...]]:
        w = self.graph.initializers.get(name)
        if w is not None:
            return np.dtype(w.dtype), tuple(w.shape)
        c = self.constants.get(name)
        if c is not None:
            return np.dtype(c[1]), tuple(c[0])
        info = self.graph.values.get(name)
        dt = info.dtype if info is not None else None
        return dt, shape(self.graph, name)

    def nbytes(self, name: str, fmt: str | None = None) -> int:
        """Bytes of ``name``; floats take ``fmt`` (default: the policy's storage) when narrower."""
        if not name:
            return 0
        key = (name, fmt)
        got = self._bytes.get(key)
        if got is None:
            dt, shp = self._dtype_shape(name)
            if dt is None:
                dt = np.dtype(np.float32)
            item = dt.itemsize
            if name in self.int8.codes:
                item = 1
            elif is_float(dt) and not self.policy.exact:
                item = min(item, ITEMSIZE[fmt or self.policy.storage])
            got = self._bytes[key] = math.prod(shp) * item
        return got

    def numel(self, name: str) -> int:
        return math.prod(self._dtype_shape(name)[1])

    def is_float(self, name: str) -> bool:
        dt = self._dtype_shape(name)[0]
        return dt is None or is_float(dt)

    def itemsize(self, name: str) -> int:
        dt = self._dtype_shape(name)[0]
        return dt.itemsize if dt is not None else 4

    def is_weight(self, name: str) -> bool:
        return bool(name) and (name in self.graph.initializers or name in self.constants)


def _mxm_dims(node: Node, graph: Graph) -> tuple[int, int, int, int] | None:
    op, out = node.op_type, shape(graph, node.outputs[0])
    if op in ("RNN", "GRU", "LSTM"):  # [x_t, h_t] by [W; R]^T: a step's two products as one
        r = recurrent_dims(node, graph)
        return None if r is None else (r.directions * r.steps, r.batch, r.input + r.hidden, r.gates * r.hidden)
    if (node.domain, op) in ATTENTION_OPS:  # Q·K^T and P·V per head: two (queries x head) by (head x
        a = attention_dims(node, graph)  # keys) passes, the wider head of the two (both fit one 320-row block)
        return None if a is None else (2 * a.batch * a.heads, a.queries, max(a.head, a.value), a.keys)
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"):
        a = shape(graph, node.inputs[0])
        rows = out[-2] if len(out) >= 2 and len(a) >= 2 else 1
        n = out[-1] if out and len(shape(graph, node.inputs[MXM_OPS[op][0]])) >= 2 else 1
        batch = int(np.prod(out[:-2])) if len(out) > 2 else 1
        return batch, rows, reduced_length(a, node.attrs), n
    if op in ("Gemm", "QGemm"):
        a = shape(graph, node.inputs[0])
        k = (a[0] if node.attrs.get("transA", 0) else a[-1]) if a else 1
        return 1, (out[0] if out else 1), k, (out[-1] if out else 1)
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        w = shape(graph, node.inputs[MXM_OPS[op][0]])
        g = int(node.attrs.get("group", 1))
        if len(w) < 2 or len(out) < 2:
            return None
        return g, out[0] * int(np.prod(out[2:])), int(np.prod(w[1:])), w[0] // g
    if op == "ConvTranspose":
        x, w = shape(graph, node.inputs[0]), shape(graph, node.inputs[1])
        g = int(node.attrs.get("group", 1))
        if len(w) < 2 or len(x) < 2:
            return None
        return g, x[0] * int(np.prod(x[2:])), x[1] // g, w[1] * int(np.prod(w[2:]))
    return None


def _projection_dims(node: Node, graph: Graph) -> tuple[int, int, int, int] | None:
    """onnxruntime's Attention's Q, K and V projection: (B x S, hidden) by its packed (hidden, Q + K + V)."""
    x, w = shape(graph, node.inputs[0]), shape(graph, node.inputs[1]) if len(node.inputs) > 1 else ()
    if len(x) != 3 or len(w) != 2:
        return None
    return 1, x[0] * x[1], w[0], w[1]


def _shard_rule(node: Node, graph: Graph, sizes: Sizes) -> ShardRule | None:
    op, ins = node.op_type, node.inputs

    def w2d(pos: int) -> tuple[int, ...] | None:
        if len(ins) > pos and sizes.is_weight(ins[pos]):
            s = sizes._dtype_shape(ins[pos])[1]
            return s if len(s) == 2 else None
        return None

    if op == "MatMul" and (s := w2d(1)) is not None:
        return ShardRule(1, 1, -1, None, 0, s[1])
    if op == "Gemm" and (s := w2d(1)) is not None:
        axis = 0 if node.attrs.get("transB", 0) else 1
        n = s[axis]
        bias = None
        if len(ins) > 2 and ins[2] and sizes.is_weight(ins[2]):
            bs = sizes._dtype_shape(ins[2])[1]
            if not bs or bs[-1] != n or n == 1:
                return None  # a broadcast bias that cannot follow the split
            bias = 2
            return ShardRule(1, axis, -1, bias, len(bs) - 1, n)
        return ShardRule(1, axis, -1, None, 0, n)
    if op == "Conv" and int(node.attrs.get("group", 1)) == 1 and len(ins) > 1 and sizes.is_weight(ins[1]):
        w = sizes._dtype_shape(ins[1])[1]
        bias = 2 if len(ins) > 2 and ins[2] and sizes.is_weight(ins[2]) else None
        if len(ins) > 2 and ins[2] and bias is None:
            return None
        return ShardRule(1, 0, 1, bias, 0, w[0])
    if op == "Gather" and int(node.attrs.get("axis", 0)) == 0 and (s := w2d(0)) is not None:
        return ShardRule(0, 1, -1, None, 0, s[1])
    return None


def lower(node: Node, graph: Graph, sizes: Sizes) -> Lowered:
    """The LPU work of one node (onnxruntime's ops as ``costed``; a shard splits the node itself)."""
    policy = sizes.policy
    shard = _shard_rule(node, graph, sizes)
    quantized = node.name in sizes.int8.nodes
    if node.op_type == "DequantizeLinear" and node.outputs and node.outputs[0] in sizes.int8.codes:
        return Lowered("MEM", "alias", 0, 0, 0, 0.0)  # the int8 products it feeds stream its codes
    node = costed(node)
    op = node.op_type
    flops = node_flops(node, graph)
    out_bytes = sum(sizes.nbytes(o) for o in node.outputs if o)
    weights = [i for i in node.inputs if sizes.is_weight(i)]
    weight_bytes = 0
    installed = installed_operands(node)
    for i in dict.fromkeys(weights):
        fmt = policy.matmul_weights if i and i in installed else None
        weight_bytes += sizes.nbytes(i, fmt)
    if op in MXM_OPS:
        integer = op in INTEGER_PRODUCTS and node.attrs.get("_costed_from") != "MatMulInteger16"  # (16-bit)
        int8 = quantized or integer or (policy.matmul_inputs == "int8" and not policy.exact)
        fmt = "int8" if int8 else "fp16"
        act_fmt = "int8" if quantized else policy.matmul_inputs
        acts = [i for i in node.inputs if i and not sizes.is_weight(i)]
        act_bytes = sum(sizes.nbytes(i, act_fmt) for i in acts if i not in installed)
        install = sum(sizes.nbytes(i, policy.matmul_weights if sizes.is_weight(i) else act_fmt) for i in installed)
        # (a quantized product's operands are its model's codes already: nothing to convert)
        convert = 0 if quantized else sum(sizes.numel(i) for i in acts
                                          if sizes.is_float(i) and (fmt == "int8" or sizes.itemsize(i) != 2))
        dims = _mxm_dims(node, graph)
        if dims is None:  # Einsum and friends: an equivalent [1, K] x [K, N] from the FLOP count
            dims = (1, 1, 1, max(1, int(flops // 2)))
        r = recurrent_dims(node, graph) if op in ("RNN", "GRU", "LSTM") else None
        steps = 2 if (node.domain, op) in ATTENTION_OPS else max(1, r.steps) if r is not None else 1
        projection = _projection_dims(node, graph) if (node.domain, op) in _PACKED_ATTENTION else None
        return Lowered("MXM", "matmul", act_bytes, weight_bytes, out_bytes, flops, dims, install, fmt, shard, convert,
                       sum(sizes.numel(o) for o in node.outputs if o), steps + (projection is not None), projection)
    act_bytes = sum(sizes.nbytes(i) for i in node.inputs if i and not sizes.is_weight(i))
    if op in VIEW_OPS:
        return Lowered("MEM", "alias", 0, weight_bytes, 0, 0.0)
    if op in SXM_OPS:
        mnemonic = {"Transpose": "transpose", "Concat": "concat", "Gather": "gather"}.get(op, "permute")
        return Lowered("SXM", mnemonic, act_bytes, weight_bytes, out_bytes, flops, shard=shard)
    return Lowered("VXM", "vector", act_bytes, weight_bytes, out_bytes, flops)
