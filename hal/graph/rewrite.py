"""Graph rewrites that change the order work is done in, not what is computed, where the new order
touches less data: an average pool moved past the pointwise conv it commutes with, a pool over a
channel Concat applied to each part, a pointwise conv over a channel Concat split over the parts.
Part of the standard pipeline (``hal.graph.passes.optimize``); like the other passes, each is linear
in the graph's size and keeps the graph's outputs, its topological order and, where a docstring
says so, its bits (the others move results by rounding).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import onnx
from onnx import helper

from hal.graph.ir import Graph, Node, ShapeOnly, TensorInfo, Weight, body_reads, rename_reads

#: the element types a rewrite that moves rounding may touch (not 16-bit floats, whose coarser
#: rounding the new order could move visibly)
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class Rewrite:
    """What a rewriting pass reads of the graph as it stood when the pass began: each value's
    producer and readers, the values it must leave alone (graph outputs, what subgraphs read), and
    names no value or node has."""

    def __init__(self, graph: Graph):
        self.consumers = graph.consumers()
        self.producers = graph.producers()
        self.pinned = {o.name for o in graph.outputs}
        for n in graph.nodes:
            self.pinned |= body_reads(n)
        self.taken = set(graph.initializers) | set(graph.values)
        for n in graph.nodes:
            self.taken.update(n.inputs, n.outputs, (n.name,))

    def sole_reader(self, name: str) -> Node | None:
        """The one node that reads ``name``, once, when no graph output or subgraph reads it."""
        readers = self.consumers.get(name, [])
        if name in self.pinned or len(readers) != 1 or readers[0].inputs.count(name) != 1:
            return None
        return readers[0]

    @staticmethod
    def splice(graph: Graph, replaced: dict[int, list[Node]]) -> None:
        """Each node whose id ``replaced`` holds gives way, in place, to the nodes it lists (none: the
        node goes)."""
        if replaced:
            graph.nodes = [m for n in graph.nodes for m in replaced.get(id(n), [n])]

    def weight(self, graph: Graph, base: str, value: np.ndarray) -> str:
        """A new read-only weight holding ``value``, under the first name free from ``base``, declared
        in ``graph.values`` too."""
        name = self.fresh(base)
        value.flags.writeable = False
        graph.initializers[name] = value
        graph.values[name] = TensorInfo(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
        return name

    def body_nodes(self, graph: Graph, body: onnx.GraphProto, names: dict[str, str], label: str,
                   suffix: str = "") -> list[Node]:
        """``body``'s nodes as nodes of ``graph`` (an If's branch taken, a SequenceMap's turn): each
        value a node makes under a free name from its own plus ``suffix`` (added to ``names``, with
        its declared type in ``graph.values``), every read renamed by ``names`` (nested bodies' too),
        each node named ``label``/its name."""
        for p in body.node:
            for o in p.output:
                if o:
                    names[o] = self.fresh(f"{o}{suffix}")
        made = {o for p in body.node for o in p.output if o}
        for vi in body.value_info:
            if vi.name in made:
                graph.values[names[vi.name]] = replace(TensorInfo.from_value_info(vi), name=names[vi.name])
        nodes = []
        for p in body.node:
            m = Node.from_proto(p, self.fresh(f"{label}/{p.name or p.op_type}{suffix}"))
            rename_reads(m, names)
            m.outputs = [names.get(o, o) for o in m.outputs]
            nodes.append(m)
        return nodes

    def fresh(self, base: str) -> str:
        """``base``, or ``base_1``, ``base_2``, ...: the first that no value or node has (now taken)."""
        name, i = base, 0
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name


# --- average pools and pointwise convs ----------------------------------------------------------

#: what pooling one input element costs against one multiply-add of a conv's GEMM, in the order
#: rule below (hal's separable 3x3 average pool: 474 us for 150K elements, about 3 ns each, where
#: OpenBLAS makes 50-80 G multiply-adds a second)
POOL_ELEMENT_MACS = 200


def _average_pool_window(n: Node, graph: Graph) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(input shape, output shape) of an AveragePool whose every window's weights sum to one (it
    divides by the count of the window's input elements, or has no padding): a map that commutes
    with a pointwise conv, bias included. Else None."""
    if n.op_type != "AveragePool" or n.domain or len(n.inputs) != 1 or len(n.outputs) != 1:
        return None
    padded = any(n.attrs.get("pads", ())) or n.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID")
    if padded and n.attrs.get("count_include_pad", 0):
        return None
    x, y = graph.values.get(n.inputs[0]), graph.values.get(n.outputs[0])
    if x is None or y is None or x.static_shape is None or y.static_shape is None or len(x.static_shape) < 3:
        return None
    if x.dtype not in FLOAT_DTYPES or len(y.static_shape) != len(x.static_shape):
        return None
    return x.static_shape, y.static_shape


def _pointwise_conv(n: Node, graph: Graph) -> tuple[int, int, int] | None:
    """(output channels, input channels, group) of a Conv that mixes channels pixel by pixel: 1x1
    filters (a weight), stride 1, no padding. Else None."""
    if n.op_type != "Conv" or n.domain or len(n.inputs) < 2 or len(n.outputs) != 1:
        return None
    w = graph.initializers.get(n.inputs[1])
    if w is None or len(w.shape) < 3 or any(v != 1 for v in w.shape[2:]):
        return None
    a = n.attrs
    if any(a.get("pads", ())) or any(v != 1 for v in a.get("strides", ())) or a.get("auto_pad", "NOTSET") != "NOTSET":
        return None
    g = int(a.get("group", 1))
    return int(w.shape[0]), int(w.shape[1]) * g, g


def reorder_average_pools(graph: Graph) -> Graph:
    """Swap an average pool and the pointwise conv next to it where that costs less.

    A 1x1 conv at stride 1 mixes channels pixel by pixel, and an average pool applies one linear
    map to every channel, so the two commute; the bias too when each pool window's weights sum to
    one (it divides by its window's input elements, or there is no padding). So ``Conv(AvgPool(x))``
    is ``AvgPool(Conv(x))``, up to rounding, and the cheaper order is taken: Inception v2's 3x3
    stride-1 pools before its 576 -> 128 pointwise convs then pool 128 channels rather than 576,
    and the GEMM stays the same size. The cost weighs the conv's multiply-adds against the pooled
    input elements (``POOL_ELEMENT_MACS``). A pair is only rewritten when the first's result has the
    second for its one reader and no graph output or subgraph reads it.
    """
    rw = Rewrite(graph)
    pairs: dict[int, list[Node]] = {}  # id of a pair's node -> what stands in its place
    for first in graph.nodes:
        out = first.outputs[0] if len(first.outputs) == 1 and first.inputs else ""
        second = rw.sole_reader(out) if out else None
        if second is None or second.inputs[0] != out:
            continue
        pool, conv = (first, second) if first.op_type == "AveragePool" else (second, first)
        window, pointwise = _average_pool_window(pool, graph), _pointwise_conv(conv, graph)
        if window is None or pointwise is None or id(first) in pairs or id(second) in pairs:
            continue
        (n, _, *before), (_, _, *after) = window
        m, c, g = pointwise
        macs = m * (c // g)
        pixels_in, pixels_out = math.prod(before), math.prod(after)
        pool_first = macs * pixels_out + POOL_ELEMENT_MACS * c * pixels_in  # pool c channels, conv the pooled map
        conv_first = macs * pixels_in + POOL_ELEMENT_MACS * m * pixels_in   # conv the whole map, pool m channels
        now, swapped = (pool_first, conv_first) if pool is first else (conv_first, pool_first)
        if swapped >= now:
            continue
        x, y = first.inputs[0], second.outputs[0]
        mid = rw.fresh(f"{y}_{'unpooled' if pool is first else 'pooled'}")
        shape = (n, m, *before) if pool is first else (n, c, *after)
        graph.values[mid] = TensorInfo(mid, graph.values[x].elem_type, shape)
        graph.values.pop(out, None)
        second.inputs, second.outputs = [x, *second.inputs[1:]], [mid]  # the second node runs first
        first.inputs, first.outputs = [mid, *first.inputs[1:]], [y]
        # the pair runs where its second node stood: every input of both is computed by then
        pairs[id(second)], pairs[id(first)] = [second, first], []
    rw.splice(graph, pairs)
    return graph


# --- pools over a channel concat ----------------------------------------------------------------

def _channel_concat_widths(concat: Node, graph: Graph) -> list[int] | None:
    """The channel counts of a default-domain Concat along the channel axis whose result and parts
    all have static shapes (of rank 3 and up), else None."""
    x = graph.values.get(concat.outputs[0]) if concat.op_type == "Concat" and not concat.domain else None
    if x is None or x.static_shape is None or len(x.static_shape) < 3 \
            or int(concat.attrs.get("axis", 0)) not in (1, 1 - len(x.static_shape)):
        return None
    parts = [graph.values.get(i) for i in concat.inputs]
    if any(p is None or p.static_shape is None for p in parts):
        return None
    return [p.static_shape[1] for p in parts]  # type: ignore[union-attr, index]


#: pools that treat every channel alike (a MaxPool with one output: Indices would count positions
#: in the concatenated tensor)
_CHANNEL_POOLS = frozenset({"MaxPool", "AveragePool"})


def pool_concat_parts(graph: Graph) -> Graph:
    """Pool each part of a channel Concat and concatenate the pooled parts, when the pool is the
    Concat's one reader and shrinks its input.

    A pool treats every channel alike, so ``Pool(Concat(a, b))`` is ``Concat(Pool(a), Pool(b))``, bit
    for bit. The Concat then copies the pooled sizes (a quarter, at stride 2), and a Relu that only
    its part's pool reads runs on the pooled map (``relu_pool`` in ``hal.graph.fuse``): SqueezeNet's
    fire modules before its two max pools, Inception v1's before its stride-2 ones.
    """
    rw = Rewrite(graph)
    split: dict[int, list[Node]] = {}  # id of a pool -> the nodes that replace it
    for pool in graph.nodes:
        if pool.op_type not in _CHANNEL_POOLS or pool.domain or len(pool.inputs) != 1 or len(pool.outputs) != 1:
            continue
        concat = rw.producers.get(pool.inputs[0])
        if concat is None or rw.sole_reader(concat.outputs[0]) is not pool:
            continue
        widths = _channel_concat_widths(concat, graph)
        x, y = graph.values.get(pool.inputs[0]), graph.values.get(pool.outputs[0])
        if (widths is None or x is None or x.static_shape is None or y is None or y.static_shape is None
                or 2 * math.prod(y.static_shape) > math.prod(x.static_shape)):
            continue
        nodes: list[Node] = []
        pooled: list[str] = []
        for k, (name, width) in enumerate(zip(concat.inputs, widths)):
            out = rw.fresh(f"{pool.outputs[0]}_part{k}")
            shape = (y.static_shape[0], width, *y.static_shape[2:])
            graph.values[out] = TensorInfo(out, y.elem_type, shape)
            nodes.append(Node(rw.fresh(f"{pool.name}_part{k}"), pool.op_type, "", [name], [out], dict(pool.attrs)))
            pooled.append(out)
        nodes.append(Node(concat.name, "Concat", "", pooled, list(pool.outputs), dict(concat.attrs)))
        graph.values.pop(concat.outputs[0], None)
        split[id(pool)], split[id(concat)] = nodes, []
    rw.splice(graph, split)
    return graph


# --- a pointwise conv over a channel concat --------------------------------------------------------

#: a pointwise conv is split over its Concat's parts from this many output pixels an image: below
#: it, the extra GEMM calls cost what the copy saved (SqueezeNet's 13x13 fire modules ran level)
SPLIT_MIN_PIXELS = 512


def split_concat_convs(graph: Graph) -> Graph:
    """Multiply each part of a channel Concat by its own columns of the pointwise conv that alone
    reads it, and add the products, when that moves less data than the Concat's copy.

    ``Conv(Concat(a, b), [Wa Wb], B)`` is ``Conv(a, Wa, B) + Conv(b, Wb)``: the GEMM's sum over
    input channels, split in two (up to rounding). The Concat copied every part's C x pixels; the
    split adds (parts - 1) passes over the conv's M x pixels, so it is taken where a pass over the
    output costs at most half the copy, 2 (parts - 1) M <= C (SqueezeNet's squeeze convs read
    128 -> 16 and 256 -> 32 channels: its 55x55 one 286 -> 150 us in isolation), from
    ``SPLIT_MIN_PIXELS`` pixels. The sum is a chain of Adds (a Relu after it fuses into the region).
    """
    rw = Rewrite(graph)
    replaced: dict[int, list[Node]] = {}  # id of a conv -> the nodes that replace it
    for concat in graph.nodes:
        if concat.op_type != "Concat" or concat.domain or len(concat.inputs) < 2 or len(concat.outputs) != 1:
            continue
        conv = rw.sole_reader(concat.outputs[0])
        if conv is None or conv.inputs[0] != concat.outputs[0]:
            continue
        pointwise, widths = _pointwise_conv(conv, graph), _channel_concat_widths(concat, graph)
        x = graph.values.get(concat.outputs[0])
        if pointwise is None or pointwise[2] != 1 or widths is None or x is None or x.dtype not in FLOAT_DTYPES:
            continue
        assert x.static_shape is not None
        m, c, _ = pointwise
        w = graph.initializers[conv.inputs[1]]
        if sum(widths) != c or math.prod(x.static_shape[2:]) < SPLIT_MIN_PIXELS or 2 * (len(widths) - 1) * m > c:
            continue
        nodes: list[Node] = []
        total, start = "", 0
        shape = (x.static_shape[0], m, *x.static_shape[2:])
        for k, (name, width) in enumerate(zip(concat.inputs, widths)):
            weight = rw.fresh(f"{conv.inputs[1]}_part{k}")
            graph.initializers[weight] = _channel_slice(w, start, start + width)
            graph.values[weight] = TensorInfo(weight, x.elem_type, (m, width, *w.shape[2:]))
            codes = graph.dequantized.get(conv.inputs[1])
            if codes is not None and codes.axis in (None, 0):  # (its scales: one, or per output channel)
                graph.dequantized[weight] = codes
            start += width
            y = rw.fresh(f"{conv.outputs[0]}_part{k}")
            graph.values[y] = TensorInfo(y, x.elem_type, shape)
            bias = conv.inputs[2:3] if k == 0 else []
            nodes.append(Node(rw.fresh(f"{conv.name}_part{k}"), "Conv", "", [name, weight, *bias], [y],
                              dict(conv.attrs)))
            if total:
                last = k == len(widths) - 1
                out = conv.outputs[0] if last else rw.fresh(f"{conv.outputs[0]}_sum{k}")
                if not last:
                    graph.values[out] = TensorInfo(out, x.elem_type, shape)
                nodes.append(Node(rw.fresh(f"{conv.name}_sum{k}"), "Add", "", [total, y], [out]))
                total = out
            else:
                total = y
        graph.values.pop(concat.outputs[0], None)
        replaced[id(conv)], replaced[id(concat)] = nodes, []
    rw.splice(graph, replaced)
    return graph


def _channel_slice(w: Weight, start: int, stop: int) -> Weight:
    """Input channels ``start:stop`` of conv weights (M, C, ...), as their own weight (a shape-only
    weight gives a shape-only slice, so a model compiles to the same graph without its data)."""
    if isinstance(w, ShapeOnly):
        return ShapeOnly((w.shape[0], stop - start, *w.shape[2:]), np.dtype(w.dtype))
    part = np.ascontiguousarray(w[:, start:stop])
    part.flags.writeable = False
    return part


__all__ = ["FLOAT_DTYPES", "POOL_ELEMENT_MACS", "SPLIT_MIN_PIXELS", "Rewrite", "pool_concat_parts",
           "reorder_average_pools", "split_concat_convs"]
