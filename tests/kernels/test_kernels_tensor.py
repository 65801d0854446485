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


def _split_model():
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Split", ["x", "split"], ["a", "b", "c"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6]),
                           helper.make_tensor_value_info("split", TensorProto.INT64, [None])],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "abc"])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def test_an_empty_split_input_is_an_absent_one_and_bad_parts_are_a_run_error() -> None:
    """An empty 'split' had made one output and left the node's two others None (onnxruntime splits
    evenly); parts that do not add up to the axis, or of another count, had been cut by numpy silently."""
    import hal

    s = hal.InferenceSession(_split_model())
    x = np.arange(6, dtype=np.float32)
    assert [o.tolist() for o in s.run(None, {"x": x, "split": np.zeros(0, np.int64)})] == [[0, 1], [2, 3], [4, 5]]
    assert [o.tolist() for o in s.run(None, {"x": x, "split": np.array([1, 0, 5])})] == [[0], [], [1, 2, 3, 4, 5]]
    for bad in ([1, 2], [1, 2, 4], [3, 4, -1]):
        with pytest.raises(hal.RunError, match="must be 3 non-negative lengths adding up to the axis's 6"):
            s.run(None, {"x": x, "split": np.array(bad, np.int64)})
