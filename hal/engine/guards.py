"""The memory guards of a program's steps, and which of them the shapes of a run's feeds settle.

Before a step of a guarded op (``hal.limits.GUARDED_OPS``) the engine checks what the kernel would
allocate against ``max_memory``. Where the step's inputs have shapes that follow from the feeds'
shapes alone, a run whose feeds have the shapes (and dtypes) of an earlier run that passed every
guard under the same or a smaller bound would pass them again: the program may skip those checks.
On ShuffleNet that is 68 guards a run (about 3% of it); on a 2-layer GPT, 23.

A value's shape follows from the feeds' shapes (``shape_settled_steps``) when it is a feed tensor, a
weight, or the result of a known ONNX op whose result shapes depend on its inputs' shapes and
attributes (``SHAPE_FROM_SHAPES``), or on its first input's shape and the values of the others
where those are constant (``SHAPE_FROM_CONSTANTS``: Reshape's target shape, Slice's bounds, ...).
A value is constant when it is a weight or computed from constants by a deterministic op of those
two families (or Constant, ConstantOfShape, Range), or it is the ``Shape`` / ``Size`` of a settled
value. Nothing here reads declared
shapes (``value_info``), which a model may get wrong on purpose: the analysis trusts op semantics
only, and anything it does not know (control flow, other domains, a target's own steps unless
they say ``Step.shapes_follow_inputs``) settles nothing downstream.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from hal import limits
from hal.graph.ir import Graph
from hal.graph.passes import NONDETERMINISTIC
from hal.op_sizes import REDUCING_OPS

#: guarded ops whose output size follows from their inputs' shapes and dtypes and their attributes
#: alone: the guard's verdict for one input signature holds for every run with that signature, so a
#: step remembers the last signature's size (the others re-check on every run)
SHAPE_SIZED_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Mod", "And", "Or", "Xor", "Equal", "Greater", "Less", "GreaterOrEqual",
    "LessOrEqual", "Where", "Max", "Min", "Sum", "Mean", "PRelu", "BitShift", "BitwiseAnd", "BitwiseOr",
    "BitwiseXor", "Gather", "MatMul", "MatMulInteger", "Gemm", "Einsum", "ConvTranspose", "Constant",
    "Conv", "ConvInteger", "QLinearConv", "MaxRoiPool", "DeformConv", "Attention", "FlexAttention",
    "GridSample", "RNN", "GRU", "LSTM", "Multinomial", "StringConcat", "QLinearMatMul", "GatherND", "NonZero",
    "Concat", "LinearAttention", "ArrayFeatureExtractor", "TreeEnsemble",
    # ai.onnx.ml: rows from the input's shape, widths from attributes
    "TreeEnsembleClassifier", "TreeEnsembleRegressor", "LinearClassifier", "LinearRegressor", "SVMClassifier",
    "SVMRegressor", "OneHotEncoder", "FeatureVectorizer", "ZipMap", "CastMap",
}) | frozenset(REDUCING_OPS)  # their bound reads the input's shape, never the axes


def output_nbytes(op_type: str, args: Sequence[Any], attrs: dict[str, Any]) -> int:
    """What ``limits.check_step`` would compare with max_memory (0 where it would not check)."""
    try:
        got = limits.OUTPUT_SIZE[op_type](args, attrs)
    except Exception:  # malformed arguments: check_step leaves them to the kernel too
        return 0
    if got is None or any(d < 0 for d in got[0]):
        return 0
    return limits.nbytes_of(got[0], got[1])


#: ops whose result shapes follow from their inputs' shapes and dtypes and their attributes alone
#: (other inputs' values change the result's values, never its shape)
SHAPE_FROM_SHAPES = frozenset({
    # elementwise, unary and broadcasting
    "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Ceil", "Cos", "Cosh", "Erf", "Exp", "Floor",
    "Log", "Neg", "Not", "Reciprocal", "Round", "Sign", "Sin", "Sinh", "Sqrt", "Tan", "Tanh", "Relu",
    "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Softplus", "Softsign", "Mish",
    "Gelu", "ThresholdedRelu", "PRelu", "IsNaN", "IsInf", "Cast", "CastLike", "Identity", "Dropout",
    "BitwiseNot", "Shrink", "Clip", "Add", "Sub", "Mul", "Div", "Pow", "Mod", "And", "Or", "Xor", "Equal",
    "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Where", "Max", "Min", "Sum", "Mean", "BitShift",
    "BitwiseAnd", "BitwiseOr", "BitwiseXor", "QuantizeLinear", "DequantizeLinear",
    # linear algebra and convolution
    "MatMul", "MatMulInteger", "Gemm", "Einsum", "Conv", "ConvInteger", "QLinearConv", "QLinearMatMul",
    "ConvTranspose",
    # normalisation, softmax, pooling
    "BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization",
    "RMSNormalization", "LpNormalization", "LRN", "MeanVarianceNormalization", "Softmax", "LogSoftmax",
    "Hardmax", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
    # layout and indexing
    "Transpose", "Flatten", "Concat", "DepthToSpace", "SpaceToDepth", "Shape", "Size", "Gather",
    "GatherElements", "GatherND", "ScatterElements", "ScatterND", "ArgMax", "ArgMin", "CumSum", "Trilu",
})

#: ops whose result shapes follow from their first input's shape and the values of the others
SHAPE_FROM_CONSTANTS = frozenset({
    "Reshape", "Expand", "Tile", "Slice", "Squeeze", "Unsqueeze", "Pad", "Resize", "Upsample", "Split",
    "TopK", "OneHot", "CenterCropPad", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
})

#: ops whose result is constant when their input's shape is settled, whatever its values
_SHAPE_VALUED = frozenset({"Shape", "Size"})
_KNOWN = SHAPE_FROM_SHAPES | SHAPE_FROM_CONSTANTS | {"Constant", "ConstantOfShape", "Range"}


def shape_settled_steps(graph: Graph, steps: Sequence[Any], feeds: Iterable[str], constants: Iterable[str]
                        ) -> set[int]:
    """Indices of the steps whose results' shapes, and whatever their guard computes (the result,
    Conv's im2col matrix, a pool's taps), follow from the shapes of ``feeds``. ``constants``: values
    the same on every run (the weights, less any a feed may override, and the caller's constant
    inputs). ``steps`` are the program's ``Step``s in run order: a step counts as its op only when
    every node it runs is that graph node in the ONNX domain (a fused step: every member known)."""
    domain = {n.name: n.domain for n in graph.nodes}
    const = set(constants) | {""}
    settled = set(feeds) | const
    out: set[int] = set()
    for idx, s in enumerate(steps):
        ins = s.ins
        if not all(n in settled for n in ins):
            continue
        if s.shapes_follow_inputs:
            settled.update(o for o in s.outs if o)
            out.add(idx)
            continue
        members = s.nodes or (s.label,)
        ops = s.op_type.split("+")
        if (s.context_opset is not None or len(ops) != len(members)
                or any(domain.get(m, None) not in ("", "ai.onnx") for m in members)
                or not all(op in _KNOWN for op in ops)):
            continue  # not an op this analysis knows: its results settle nothing
        first = ops[0]
        deterministic = not any(op in NONDETERMINISTIC for op in ops)
        if deterministic and (all(n in const for n in ins) or (len(ops) == 1 and first in _SHAPE_VALUED)):
            const.update(o for o in s.outs if o)
        elif not (all(op in SHAPE_FROM_SHAPES for op in ops)
                  or (len(ops) == 1 and first in SHAPE_FROM_CONSTANTS and all(n in const for n in ins[1:]))):
            continue
        settled.update(o for o in s.outs if o)
        out.add(idx)
    return out


__all__ = ["SHAPE_FROM_CONSTANTS", "SHAPE_FROM_SHAPES", "SHAPE_SIZED_OPS", "output_nbytes", "shape_settled_steps"]
