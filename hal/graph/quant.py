"""Where a value's integer codes come from: a DequantizeLinear, directly or through ops that move its
values as they are (``CODE_VIEWS``). Constant folding records what it folds of them
(``Graph.dequantized``), and a plugin that runs Q/DQ GEMMs on integer units reads the same facts
of a DequantizeLinear left in the graph: one reading of the codes, their type and their scales'
axis for both."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from hal.graph.ir import Dequantized, Node, ShapeOnly, Weight

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
