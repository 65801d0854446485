"""Where a value's integer codes come from: a DequantizeLinear, directly or through ops that move its
values as they are (``CODE_VIEWS``). Constant folding records what it folds of them
(``Graph.dequantized``), and a plugin that runs Q/DQ GEMMs on integer units reads the same facts
of a DequantizeLinear left in the graph: one reading of the codes, their type and their scales'
axis for both. ``qdq_gemms`` says which GEMMs of an explicitly quantized model read only such codes:
the ones a target with an integer matrix unit runs as int8 kernels (the GPUs' tensor cores, the
LPU's MXM)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from hal.graph.fuse import GraphIndex
from hal.graph.ir import Dequantized, Graph, Node, ShapeOnly, Weight
from hal.numerics import matrix_operands

#: ops between a DequantizeLinear and its reader that move its values as they are
CODE_VIEWS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Transpose"})


def dequantize_of(node: Node, codes: np.dtype | None, rank: int | None, scales: int | None,
                  opset: int) -> Dequantized | None:
    """What ``node``'s output is when it is a DequantizeLinear of integer codes of dtype ``codes``
    and ``rank`` dimensions (None: unknown) with ``scales`` scale values (None: unknown), else None."""
    if node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
        return None
    if codes is None or codes.kind not in "iu" or scales is None:
        return None
    if scales == 1 or opset < 13:  # (before opset 13 the scale is one value)
        return Dequantized(codes, None)
    axis = int(node.attrs.get("axis", 1))
    if rank is None or not -rank <= axis < rank:
        return None
    return Dequantized(codes, axis % rank, int(node.attrs.get("block_size", 0) or 0))


def carried(node: Node, d: Dequantized, rank: int | None) -> Dequantized | None:
    """``d`` for the output of ``node`` (one of ``CODE_VIEWS``) that reads a value ``d`` describes, of
    ``rank`` dimensions (None: unknown): a scale for the whole tensor stays one, a per-slice scale
    stays on its axis through an Identity or a Transpose, which say where that axis goes, and is lost
    (None) through a reshape, which may merge it with others. Blocked scales are lost too."""
    if node.op_type not in CODE_VIEWS or node.domain not in ("", "ai.onnx"):
        return None
    if d.axis is None:
        return d
    if d.block_size or node.op_type not in ("Identity", "Transpose"):
        return None
    if node.op_type == "Identity":
        return d
    if rank is None:
        return None
    perm = [int(p) % rank for p in node.attrs.get("perm", range(rank - 1, -1, -1))]
    if sorted(perm) != list(range(rank)):
        return None
    return Dequantized(d.codes, perm.index(d.axis), 0)


def record_folded(node: Node, inits: Mapping[str, Weight], record: dict[str, Dequantized], opset: int) -> None:
    """Note in ``record`` (``Graph.dequantized``) what ``node``, folded into weights ``inits`` has
    now, made of integer codes: a DequantizeLinear of codes, or a view of such a weight."""
    out = node.outputs[0] if node.outputs else ""
    if not out or out not in inits:
        return
    if node.op_type == "DequantizeLinear":
        codes = inits.get(node.inputs[0]) if node.inputs else None
        scales = inits.get(node.inputs[1]) if len(node.inputs) > 1 else None
        if codes is None or scales is None or isinstance(codes, ShapeOnly):
            return
        d = dequantize_of(node, np.dtype(codes.dtype), len(codes.shape), int(np.size(scales)), opset)
    else:
        src = record.get(node.inputs[0]) if node.inputs else None
        d = None if src is None else carried(node, src, len(inits[node.inputs[0]].shape))
    if d is not None:
        record[out] = d


#: GEMMs an explicitly quantized model (onnxruntime's ``quantize_static`` in QDQ format, ModelOpt,
#: pytorch-quantization) wraps in DequantizeLinear inputs; TensorRT runs each as an int8 kernel, and
#: so does any target with an integer matrix unit
QDQ_GEMM_OPS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose"})
_INT8_CODES = frozenset({np.dtype(np.int8), np.dtype(np.uint8)})


def _numel(graph: Graph, name: str) -> int | None:
    if name in graph.initializers:
        return int(graph.initializers[name].size)
    shape = graph.static_shape(name)
    return None if shape is None else int(np.prod(shape, dtype=np.int64))


def _codes_of(graph: Graph, ix: GraphIndex, x: str) -> Dequantized | None:
    """What integer codes operand ``x`` holds the values of: a weight constant folding made of a
    DequantizeLinear (``graph.dequantized``), or a DequantizeLinear's output, through the views
    and transposes that carry codes as they are (``CODE_VIEWS``); None for anything else."""
    views: list[Node] = []  # from x back towards the codes
    d = graph.dequantized.get(x)
    while d is None and x not in graph.initializers and x in ix.producer:
        n = graph.nodes[ix.producer[x]]
        if n.op_type in CODE_VIEWS and n.domain in ("", "ai.onnx") and n.inputs and n.inputs[0]:
            views.append(n)
            x = n.inputs[0]
            d = graph.dequantized.get(x)
            continue
        if n.op_type == "DequantizeLinear":
            codes = graph.initializers.get(n.inputs[0])
            info = graph.values.get(n.inputs[0])
            dtype = np.dtype(codes.dtype) if codes is not None else info.dtype if info is not None else None
            shape = graph.static_shape(n.inputs[0])
            rank = len(shape) if shape is not None else (
                len(info.shape) if info is not None and info.shape is not None else None)
            d = dequantize_of(n, dtype, rank, _numel(graph, n.inputs[1]) if len(n.inputs) > 1 else None,
                              graph.opset(n.domain))
        break
    for n in reversed(views):
        if d is None:
            return None
        shape = graph.static_shape(n.inputs[0])
        d = carried(n, d, None if shape is None else len(shape))
    return d


def qdq_gemms(graph: Graph, ix: GraphIndex, nodes: range | list[int] | None = None) -> set[int]:
    """The GEMM nodes an explicitly quantized model runs as int8 kernels, as TensorRT fuses
    DequantizeLinear -> Conv/MatMul/Gemm -> QuantizeLinear: every operand the matrix unit reads
    (``hal.numerics.MATRIX_OPS``) is int8 or uint8 codes and a scale (``_codes_of``): one per tensor,
    or a weight's one per output channel. Int8 x int8 products accumulate exactly in int32 and are
    scaled in fp32 after, so the result is the float GEMM's up to fp32 rounding, whatever precision
    the rest runs at. A float weight beside them, trained or folded by another tool before hal read
    the model, has no DequantizeLinear for TensorRT to fuse: the GEMM stays a float one."""
    found = set()
    for i in range(len(graph.nodes)) if nodes is None else nodes:
        n = graph.nodes[i]
        if n.op_type not in QDQ_GEMM_OPS or n.domain not in ("", "ai.onnx") or len(n.inputs) < 2:
            continue
        acts, wpos, axis = matrix_operands(n.op_type, n.attrs)
        ok = True
        for pos in acts:
            x = n.inputs[pos] if pos < len(n.inputs) else ""
            d = _codes_of(graph, ix, x) if x else None
            shape = graph.static_shape(x) if d is not None and d.axis is not None else None
            ok = (d is not None and d.codes in _INT8_CODES and not d.block_size
                  and (d.axis is None or (pos in wpos and shape is not None
                                          and d.axis == axis % max(1, len(shape)))))
            if not ok:
                break
        if ok:
            found.add(i)
    return found
