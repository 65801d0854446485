"""Corners of standard ops that onnx's node cases leave out, against onnxruntime's outputs (each found
by running random small graphs through hal and onnxruntime side by side): every target runs them."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from tests.conftest import targets_taking
from tests.kernels._onnxruntime import run_as_written as _onnxruntime

TARGETS = [t.name for t in hal.targets()]


def _model(node, inputs: dict[str, np.ndarray], opset: int, inits: dict[str, np.ndarray] | None = None) -> bytes:
    types = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
             np.dtype(np.int64): TensorProto.INT64}
    g = helper.make_graph([node], "g",
                          [helper.make_tensor_value_info(k, types[v.dtype], v.shape) for k, v in inputs.items()],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in node.output],
                          [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("axes_input", [True, False], ids=["empty-axes", "no-axes"])
def test_a_reduction_told_to_reduce_nothing_still_maps_each_element(op, axes_input, target):
    # noop_with_empty_axes reduces no axis, but onnxruntime (and onnx's reference) still pass each
    # element through the reduction's arithmetic: |x| for L1, sqrt(x^2) for L2 (inf past float32's
    # square), x^2, log x. hal gave the input back unchanged.
    x = np.array([[-0.5, 2.0, 3.0, 1e20], [-1e-30, 0.1, np.inf, -np.inf]], np.float32)
    if op == "ReduceLogSumExp":
        x[1, 3] = -5.0  # onnx's reference and onnxruntime part at -inf there (NaN / -inf)
    inits = {"axes": np.zeros(0, np.int64)} if axes_input else None
    node = helper.make_node(op, ["x", "axes"] if axes_input else ["x"], ["y"], keepdims=0, noop_with_empty_axes=1)
    blob = _model(node, {"x": x}, 18, inits)
    with np.errstate(all="ignore"):
        (want,) = _onnxruntime(blob, {"x": x})
    (got,) = hal.InferenceSession(blob, target=target).run(None, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got.shape == x.shape


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("axis", "index_shape"), [(0, (3, 2)), (1, (1, 5)), (-1, (2, 2)), (0, (1, 1))])
def test_gather_elements_reads_the_leading_part_off_its_axis(axis, index_shape, target):
    # indices shorter than the data off the axis: onnxruntime (and torch.gather) read the leading part;
    # hal's take_along_axis failed to broadcast them
    rng = np.random.default_rng(len(index_shape) + axis)
    data = rng.standard_normal((4, 3)).astype(np.float32)
    idx = rng.integers(-data.shape[axis], data.shape[axis], index_shape).astype(np.int64)
    blob = _model(helper.make_node("GatherElements", ["data", "idx"], ["y"], axis=axis), {"data": data, "idx": idx}, 13)
    (want,) = _onnxruntime(blob, {"data": data, "idx": idx})
    (got,) = hal.InferenceSession(blob, target=target).run(None, {"data": data, "idx": idx})
    np.testing.assert_array_equal(got, want)


def test_gather_elements_indices_longer_than_the_data_off_its_axis_is_a_run_error_naming_the_dimension():
    data = np.zeros((2, 3), np.float32)
    idx = np.zeros((2, 4), np.int64)
    blob = _model(helper.make_node("GatherElements", ["data", "idx"], ["y"], axis=0), {"data": data, "idx": idx}, 13)
    with pytest.raises(Exception, match="within bounds of 'data' shape"):  # onnxruntime refuses it too
        _onnxruntime(blob, {"data": data, "idx": idx})
    with pytest.raises(hal.RunError, match=r"exceeds data shape \[2, 3\] in dimension 1"):
        hal.InferenceSession(blob).run(None, {"data": data, "idx": idx})


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_compress_ignores_a_condition_past_the_end_of_its_axis(axis, target):
    # onnxruntime reads a condition longer than the axis (or the flattened input) up to its length;
    # np.compress raised where the excess held a True
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    n = data.size if axis is None else data.shape[axis]
    cond = np.array([True, False] * n + [True, True], bool)[: n + 3]
    node = helper.make_node("Compress", ["data", "cond"], ["y"], **({} if axis is None else {"axis": axis}))
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, data.shape),
                                        helper.make_tensor_value_info("cond", TensorProto.BOOL, cond.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    blob = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)]).SerializeToString()
    (want,) = _onnxruntime(blob, {"data": data, "cond": cond})
    # (the lpu refuses a data-dependent shape: its part falls back to cpu)
    (got,) = hal.InferenceSession(blob, target=target, fallback="allow").run(None, {"data": data, "cond": cond})
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("target", targets_taking("float64"))
@pytest.mark.parametrize("scale", [None, 0.9510406, 0.125])
def test_a_float64_attention_takes_its_scale_attributes_root_in_float32(scale, target):
    # the spec's function body (and onnxruntime, and onnx's reference) takes Sqrt of the float32 scale
    # attribute in float32: hal's float64 root moved a float64 model's outputs by 1e-8 of themselves
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((1, 2, 5, 4)) for _ in range(3))
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=1,
                            **({} if scale is None else {"scale": scale}))
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.DOUBLE, q.shape) for n in "qkv"],
                          [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)])
    blob = helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)]).SerializeToString()
    feeds = {"q": q, "k": k, "v": v}
    from onnx.reference import ReferenceEvaluator

    (want,) = ReferenceEvaluator(blob).run(None, feeds)
    if scale is not None:  # (onnxruntime takes the default's root in float32 too, which the spec does not)
        np.testing.assert_allclose(_onnxruntime(blob, feeds)[0], want, rtol=1e-13)
    (got,) = hal.InferenceSession(blob, target=target).run(None, feeds)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("training", "dtype"), [(1, np.float32), (1, np.float16), (0, np.float16)])
def test_batch_norm_of_values_near_their_mean_keeps_its_digits(training, dtype, target):
    # folded into x a + b, a channel whose values sit near the mean cancels two large terms. Training on
    # a batch of one, where every value is its own mean and the output is the bias: 0.07 off it in
    # float16, 1e-4 of itself in float32 (onnxruntime's float32 too: its 3e-5 is why the output is checked
    # against the spec's formula in float64 and only the running statistics against onnxruntime). At
    # inference a 16-bit input now goes through float32 once, as onnxruntime computes it (float32 folds,
    # as onnxruntime's inference does, and keeps the fold's digits).
    rng = np.random.default_rng(training)
    c = 8
    mean = rng.uniform(-3, 3, c)
    x = (mean[None, :, None] + rng.uniform(-1e-2, 1e-2, (1, c, 1))).astype(dtype)
    weights = {"scale": rng.uniform(0.5, 2, c), "bias": rng.uniform(-1, 1, c), "mean": mean,
               "var": rng.uniform(1e-4, 1e-3, c)}
    weights = {k: v.astype(dtype) for k, v in weights.items()}
    outs = ["y", "running_mean", "running_var"] if training else ["y"]
    node = helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], outs, epsilon=1e-5,
                            **({"training_mode": 1} if training else {}))
    kind = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", kind, x.shape)],
                          [helper.make_tensor_value_info(o, kind, None) for o in outs],
                          [numpy_helper.from_array(v, k) for k, v in weights.items()])
    blob = helper.make_model(g, opset_imports=[helper.make_opsetid("", 15)]).SerializeToString()
    want = _onnxruntime(blob, {"x": x})
    got = hal.InferenceSession(blob, target=target).run(None, {"x": x})
    w64 = {k: v.astype(np.float64)[None, :, None] for k, v in weights.items()}
    stats = (x.astype(np.float64), 0.0) if training else (w64["mean"], w64["var"])
    exact = (x - stats[0]) / np.sqrt(stats[1] + 1e-5) * w64["scale"] + w64["bias"]
    tol = {"rtol": 1e-3, "atol": 1e-3} if dtype == np.float16 else {"rtol": 1e-6, "atol": 1e-7}
    np.testing.assert_allclose(got[0].astype(np.float64), exact, **tol)
    for w, h in zip(want[1:], got[1:]):
        np.testing.assert_allclose(h.astype(np.float64), w.astype(np.float64), **tol)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool", "LpPool"])
def test_a_valid_pool_in_ceil_mode_counts_a_last_window_that_starts_inside_the_input(op, target):
    # 7 by 2 at stride 2 is 4 windows in ceil mode, as onnx's shape inference and onnxruntime count
    # them; hal read VALID as ceil_mode 0 (the spec's VALID formula, ceil((in - k + 1) / s), is floor's)
    shapes = [(n, k, s) for n in (5, 7, 8) for k in (1, 2, 3) for s in (2, 3)]
    for n, k, s in shapes:
        x = np.arange(n, dtype=np.float32).reshape(1, 1, n) + 1
        node = helper.make_node(op, ["x"], ["y"], kernel_shape=[k], strides=[s], auto_pad="VALID", ceil_mode=1)
        blob = _model(node, {"x": x}, 19)
        (want,) = _onnxruntime(blob, {"x": x})
        (got,) = hal.InferenceSession(blob, target=target).run(None, {"x": x})
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=f"{n} by {k} at stride {s}")


def test_negative_pads_that_take_more_than_an_axis_holds_are_a_run_error_naming_it():
    # onnxruntime fails (a tensor shape below zero); hal made an empty axis of it without a word
    x = np.zeros((7, 6, 1), np.float32)
    blob = _model(helper.make_node("Pad", ["x", "pads"], ["y"]), {"x": x}, 19,
                  {"pads": np.array([0, 0, -1, 0, 0, -1], np.int64)})
    with pytest.raises(Exception, match="must be >= 0"):
        _onnxruntime(blob, {"x": x})
    with pytest.raises(hal.RunError, match="take more than axis 2's 1 elements"):
        hal.InferenceSession(blob).run(None, {"x": x})
    # cropping an axis to nothing is still allowed
    crop = _model(helper.make_node("Pad", ["x", "pads"], ["y"]), {"x": x}, 19,
                  {"pads": np.array([0, 0, -1, 0, 0, 0], np.int64)})
    assert hal.InferenceSession(crop).run(None, {"x": x})[0].shape == (7, 6, 0)
