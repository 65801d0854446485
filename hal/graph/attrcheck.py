"""Attributes checked before onnx's shape inference reads them: values that make its C++ crash or hang
the process rather than raise, and values kernels and cost models would divide by or index with."""

from __future__ import annotations

import re
from typing import Any

import onnx

from hal.errors import ModelError
from hal.graph.ir import attribute_graphs
from hal.graph.typecheck import label

#: no tensor has this many dimensions; onnx's inference overflows on axis values near INT64_MAX (a crash)
AXIS_LIMIT = 1 << 20


def check_before_inference(proto: onnx.ModelProto, where: str) -> None:
    """Refuse, as a ModelError, the attributes that make onnx's C++ shape inference crash or hang the
    process rather than raise, in every graph, subgraph and model-local function: axis values no tensor
    could have, a Split whose ``num_outputs`` is not its output count (onnx indexes past its split
    vector when it is fewer; more would have the kernel make that many parts), an Einsum equation
    outside the einsum grammar (``_check_einsum``), a negative GatherND batch_dims (a segmentation
    fault); and a conv's group below 1, strides, dilations or kernel_shape below 1, or a Transpose
    perm that is no permutation, which kernels and plugins' cost models divide by or index with, and
    an If branch with more or fewer outputs than the If (the engine read the missing one)."""
    stack: list[Any] = [proto.graph, *proto.functions]
    while stack:
        g = stack.pop()
        for n in g.node:
            default = n.domain in ("", "ai.onnx")
            for a in n.attribute:
                if a.name in ("axis", "axes") and any(abs(v) >= AXIS_LIMIT for v in [a.i, *a.ints]):
                    raise ModelError(f"{label(n)} has {a.name} out of any tensor's "
                                     f"range: {a.i if a.type == onnx.AttributeProto.INT else list(a.ints)}",
                                     where=where)
                if default:
                    _check_attribute(n, a, where)
                stack.extend(attribute_graphs(a))


def _check_attribute(n: onnx.NodeProto, a: onnx.AttributeProto, where: str) -> None:
    """``check_before_inference``'s rules for one attribute of a default-domain node."""
    if a.name == "num_outputs" and n.op_type == "Split" and len(n.output) != a.i:
        raise ModelError(f"{label(n)} has {len(n.output)} outputs but num_outputs={a.i}", where=where,
                         hint="a Split with num_outputs has exactly that many outputs; fix either")
    if a.name in ("strides", "dilations", "kernel_shape") and any(v < 1 for v in a.ints):
        raise ModelError(f"{label(n)} has {a.name}={list(a.ints)}", where=where,
                         hint=f"every {a.name} value is 1 or more")
    if a.name == "perm" and n.op_type == "Transpose" and sorted(a.ints) != list(range(len(a.ints))):
        raise ModelError(f"{label(n)} has perm={list(a.ints)}, not a permutation of 0..{len(a.ints) - 1}",
                         where=where,
                         hint="perm lists every axis of the input once, each from 0 to rank - 1")
    if a.name == "batch_dims" and n.op_type == "GatherND" and a.i < 0:
        raise ModelError(f"{label(n)} has batch_dims={a.i}", where=where,
                         hint="batch_dims counts leading batch dimensions: 0 or more")
    if a.name == "group" and n.op_type in _GROUPED_OPS and a.i < 1:
        raise ModelError(f"{label(n)} has group={a.i}", where=where,
                         hint="group counts the channel groups: 1 or more, dividing the channels")
    if a.name in ("then_branch", "else_branch") and n.op_type == "If" and len(a.g.output) != len(n.output):
        raise ModelError(f"{label(n)} has {len(n.output)} output(s) but its {a.name} {len(a.g.output)}", where=where,
                         hint="each branch of an If returns one value for each of the If's outputs")
    if a.name == "equation" and n.op_type == "Einsum":
        _check_einsum(label(n), a.s.decode("utf-8", "replace"), where)


#: ops whose ``group`` attribute divides the channels (a group below 1 divided by zero in cost models)
_GROUPED_OPS = frozenset({"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "DeformConv"})
#: an Einsum equation: terms of letters, each with at most one "..." (spaces removed), separated by
#: commas, and at most one "->" before the output term
_EINSUM_TERM = r"[A-Za-z]*(?:\.\.\.[A-Za-z]*)?"
_EINSUM_EQUATION = re.compile(rf"{_EINSUM_TERM}(?:,{_EINSUM_TERM})*(?:->{_EINSUM_TERM})?")


def _check_einsum(node: str, equation: str, where: str) -> None:
    """An equation outside that grammar can send onnx's Einsum inference into a loop that never
    returns, and no timeout can interrupt it: a '.' outside one '...' ("i..j", "i...j..."), a lone
    '-' or '>' ("ij-,>ji"), any other character. numpy's einsum refuses all of them too."""
    if _EINSUM_EQUATION.fullmatch(equation.replace(" ", "")) is None:
        raise ModelError(f"{node} has equation {equation!r}, which is not an einsum equation", where=where,
                         hint="write terms of letters, each with at most one '...', separated by ',', and at "
                              "most one '->' before the output term (e.g. 'bij,bjk->bik')")
