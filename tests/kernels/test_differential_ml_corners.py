"""Corners of the ai.onnx.ml kernels found by the differential sweep's ml families
(``benchmarks.differential_ml``), against onnxruntime's outputs: every target runs them."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import hal
from tests.kernels._onnxruntime import run_as_written

TARGETS = [t.name for t in hal.targets()]


def _model(node, x: np.ndarray, outputs: list[int]) -> bytes:
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info(o, t, None) for o, t in zip(node.output, outputs)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)])
    m.ir_version = 8
    return m.SerializeToString()


@pytest.mark.parametrize("target", TARGETS)
def test_linear_classifier_breaks_a_float32_tie_as_onnxruntime(target):
    # both classes score -3.6 in decimals; in float32 (onnxruntime's GEMM, and onnx's reference) the two
    # sums round to the same value and the first class wins. hal summed the float32 weights in float64,
    # where the second comes out 4e-8 ahead, and answered its label
    node = helper.make_node("LinearClassifier", ["x"], ["y", "z"], domain="ai.onnx.ml",
                            coefficients=[0.4, -1.2, -0.3, 0.1, -1.3, -1.5, 0.0, 0.5], intercepts=[0.1, -0.7],
                            classlabels_ints=[3, 7])
    x = np.array([[-2, 3, -3, -2]] * 2 + [[1, 0, 0, 0]], np.float32)
    blob = _model(node, x, [TensorProto.INT64, TensorProto.FLOAT])
    want = run_as_written(blob, {"x": x}, threads=1)
    got = hal.InferenceSession(blob, target=target).run(None, {"x": x})
    assert want[0].tolist() == [3, 3, 3]
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)


@pytest.mark.parametrize("target", TARGETS)
def test_linear_regressor_probit_sees_onnxruntime_s_float32_score(target):
    # the score lands a hair past 0.5, where PROBIT's float32 formula magnifies its last bit: hal's
    # float64 sum was a float32 step from onnxruntime's float32 GEMM, -0.00840 where onnxruntime gives -0.00834
    node = helper.make_node("LinearRegressor", ["x"], ["y"], domain="ai.onnx.ml", coefficients=[-0.88, -0.77, -1.65],
                            intercepts=[1.7703394889831543], post_transform="PROBIT")
    x = np.array([[0.46789226, -0.40823585, 0.7128958]], np.float32)
    blob = _model(node, x, [TensorProto.FLOAT])
    (want,) = run_as_written(blob, {"x": x}, threads=1)
    (got,) = hal.InferenceSession(blob, target=target).run(None, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-4)


@pytest.mark.parametrize("target", TARGETS)
def test_softmax_zero_of_an_infinite_score_is_nan_across_the_row(target):
    # an infinite feature makes the scores [inf, -inf, -inf]: onnxruntime's SOFTMAX_ZERO (and onnx's
    # reference) shift by the row's maximum, e^(inf - inf) is NaN, so the row's sum and every entry are
    # NaN. hal shifted an infinite peak by 0 instead and gave [NaN, 0, 0]
    node = helper.make_node("LinearClassifier", ["x"], ["y", "z"], domain="ai.onnx.ml", coefficients=[1.0, -1.0, -2.0],
                            intercepts=[0.0, 0.5, 0.0], classlabels_ints=[4, 5, 6], post_transform="SOFTMAX_ZERO")
    x = np.array([[np.inf], [1.0], [-np.inf]], np.float32)
    blob = _model(node, x, [TensorProto.INT64, TensorProto.FLOAT])
    want = run_as_written(blob, {"x": x}, threads=1)
    got = hal.InferenceSession(blob, target=target).run(None, {"x": x})
    assert np.isnan(want[1][0]).all() and np.isnan(want[1][2]).all()
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)



@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("op", ["LinearClassifier", "LinearRegressor"])
def test_softmax_zero_of_a_row_of_zeros_divides_by_zero_as_onnxruntime(op, target):
    # onnxruntime's SOFTMAX_ZERO counts |score| <= 1e-7 as zero, scales it by e^-max and divides by the
    # others' exponentials: a row of zeros is NaN, a lone 1e-8 beside them inf (its tree ensembles and
    # linear models alike; onnx's reference gives 0.5). hal's linear models gave the row 0
    outputs = ["y", "z"] if op == "LinearClassifier" else ["z"]
    attrs = {"classlabels_ints": [1, 2, 3]} if op == "LinearClassifier" else {"targets": 3}
    node = helper.make_node(op, ["x"], outputs, domain="ai.onnx.ml", coefficients=[1.0, 0, 0, 0, -1, 2],
                            intercepts=[0.0, 0, 0], post_transform="SOFTMAX_ZERO", **attrs)
    x = np.array([[0, 0], [1e-8, 0], [1, 0], [-3, 0.5]], np.float32)
    blob = _model(node, x, [TensorProto.INT64, TensorProto.FLOAT][-len(outputs):])
    want = run_as_written(blob, {"x": x}, threads=1)[-1]
    got = hal.InferenceSession(blob, target=target).run(None, {"x": x})[-1]
    assert np.isnan(want[0]).all() and want[1, 0] == np.inf
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("target", TARGETS)
def test_tree_ensemble_5_softmax_zero_is_onnxruntime_s_too(target):
    # onnx's reference gives TreeEnsemble-5 no post transform; onnxruntime's SOFTMAX_ZERO there is the one of
    # its older ml ops, so a row of zero scores is NaN and a lone 1e-8 beside zeros is inf. hal's gave that
    # row 0 and [1, 0, 0]. Tree A scores target 0 (0 or 1e-8 by x[0]), tree B target 2 (0 or 2 by x[1]),
    # tree C target 1 (0 or NaN by x[2]): onnxruntime's maximum passes over a NaN, which then stays out of
    # the sum as a zero does ([0, NaN, 2] is [0, NaN, 1]); hal's maximum was NaN and so the whole row
    from onnx import numpy_helper

    attrs = dict(tree_roots=[0, 1, 2], nodes_featureids=[0, 1, 2],
                 nodes_modes=numpy_helper.from_array(np.zeros(3, np.uint8)),
                 nodes_splits=numpy_helper.from_array(np.full(3, 0.5, np.float32)),
                 nodes_truenodeids=[0, 2, 4], nodes_trueleafs=[1, 1, 1], nodes_falsenodeids=[1, 3, 5],
                 nodes_falseleafs=[1, 1, 1], leaf_targetids=[0, 0, 2, 2, 1, 1],
                 leaf_weights=numpy_helper.from_array(np.array([0, 1e-8, 0, 2, 0, np.nan], np.float32)),
                 n_targets=3, post_transform=3, aggregate_function=1)
    node = helper.make_node("TreeEnsemble", ["x"], ["y"], domain="ai.onnx.ml", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 3])])
    blob = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)],
                             ir_version=10).SerializeToString()
    x = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 1, 1]], np.float32)
    (want,) = run_as_written(blob, {"x": x}, threads=1)
    (got,) = hal.InferenceSession(blob, target=target).run(None, {"x": x})
    assert np.isnan(want[0]).all() and want[1, 0] == np.inf and np.isfinite(want[2:4]).all()
    assert want[4, 0] == 0 and np.isnan(want[4, 1]) and want[4, 2] == 1
    np.testing.assert_allclose(got, want, rtol=1e-6)
