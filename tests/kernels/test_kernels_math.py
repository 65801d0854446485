"""onnx's node test cases for the math kernels: elementwise, activation, reduction, normalisation,
linear algebra, logic, comparison and cast.

Every case whose graph uses only ops of these families (plus Constant, which the ``*_expanded``
function bodies use for their literals) runs node by node through the registry
(tests/kernels/_walk.py) and is compared with onnx's own tolerance check.
"""

from __future__ import annotations

import numpy as np
import pytest
from _walk import cases_within, check_case

ELEMENTWISE_OPS = {
    "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Neg", "Abs", "Sign", "Reciprocal", "Sqrt", "Exp", "Log",
    "Ceil", "Floor", "Round", "Erf", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh",
    "Acosh", "Atanh", "Max", "Min", "Sum", "Mean", "Clip", "BitShift", "BitwiseAnd", "BitwiseOr",
    "BitwiseXor", "BitwiseNot", "IsNaN", "IsInf", "Det",
}
ACTIVATION_OPS = {
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Sigmoid", "HardSigmoid", "HardSwish",
    "Tanh", "Softplus", "Softsign", "ThresholdedRelu", "Mish", "Shrink", "Swish", "SwiGLU", "Softmax",
    "LogSoftmax", "Hardmax",
}
REDUCE_OPS = {
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin",
}
NORMALIZATION_OPS = {
    "LayerNormalization", "BatchNormalization", "InstanceNormalization", "GroupNormalization", "LRN",
    "MeanVarianceNormalization", "LpNormalization", "RMSNormalization",
}
LINALG_OPS = {"MatMul", "Gemm", "MatMulInteger", "QLinearMatMul", "Einsum"}
LOGIC_OPS = {
    "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor", "Not", "Where",
    "Cast", "CastLike", "BitCast",
}
MATH_OPS = ELEMENTWISE_OPS | ACTIVATION_OPS | REDUCE_OPS | NORMALIZATION_OPS | LINALG_OPS | LOGIC_OPS

CASES = cases_within(MATH_OPS | {"Constant"})


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case_matches_onnx_expected_output(case) -> None:
    with np.errstate(all="ignore"):  # the cases feed NaN, inf and out-of-domain values on purpose
        check_case(case)


def test_every_math_family_has_cases() -> None:
    covered = set().union(*({n.op_type for n in c.model.graph.node} for c in CASES))
    missing = MATH_OPS - covered
    assert not missing, f"no onnx node case exercises {sorted(missing)}"
