"""onnx's node test cases for the tensor-manipulation, indexing, convolution and pooling kernels.

Every case whose graph uses only ops of these families runs node by node through the registry
(tests/kernels/_walk.py) and is compared with onnx's own tolerance check; and an inference
Dropout builds its mask only for a node that has the mask output.
"""

from __future__ import annotations

import numpy as np
import pytest
from _walk import cases_within, check_case

TENSOR_OPS = {
    "Reshape", "Transpose", "Concat", "Split", "Slice", "Squeeze", "Unsqueeze", "Flatten", "Shape",
    "Size", "Identity", "Expand", "Tile", "Pad", "Range", "CumSum", "ConstantOfShape", "Constant",
    "Trilu", "DepthToSpace", "SpaceToDepth", "EyeLike", "Dropout", "CenterCropPad", "Upsample",
}
INDEXING_OPS = {
    "Gather", "GatherElements", "GatherND", "Scatter", "ScatterElements", "ScatterND", "Compress",
    "NonZero", "OneHot", "TopK", "Unique", "ReverseSequence",
}
NN_OPS = {
    "Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "Col2Im", "MaxPool", "AveragePool",
    "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool", "MaxUnpool", "MaxRoiPool",
}

# Split with neither a 'split' input nor num_outputs divides by the node's output count, which the
# kernel calling convention does not carry yet.

def _params() -> list:
    params = []
    for case in cases_within(TENSOR_OPS | INDEXING_OPS | NN_OPS):
        params.append(pytest.param(case, id=case.name))
    return params


@pytest.mark.parametrize("case", _params())
def test_node_case_matches_onnx_expected_output(case) -> None:
    with np.errstate(all="ignore"):
        check_case(case)


@pytest.mark.parametrize("opset", [6, 7, 10, 13])
def test_inference_dropout_builds_its_mask_only_when_asked(opset) -> None:
    from hal.kernels import lookup

    kdef = lookup("Dropout", "", opset)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert kdef.fn(x, **kdef.static_attrs({}, ["y"])) is x  # no mask allocated for a node without one
    y, mask = kdef.fn(x, **kdef.static_attrs({}, ["y", "mask"]))
    assert y is x and mask.shape == x.shape and bool(mask.all())
    assert mask.dtype == (np.bool_ if opset >= 10 else np.float32)
