"""Models from before the ops took their shapes, axes and pads as inputs (opsets 1-10, as old
exporters and model zoos wrote them), and Constant's every attribute, run to onnx's
ReferenceEvaluator's results: the old form itself where the evaluator keeps that version, else the
same computation in today's form (in numpy where the evaluator has neither: Pad cropping, sparse
constants). onnx's node tests are at recent opsets, so these versions' kernels had no other check."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import hal

RNG = np.random.default_rng(7)
X234 = RNG.standard_normal((2, 3, 4)).astype(np.float32)
X1213 = RNG.standard_normal((1, 2, 1, 3)).astype(np.float32)
IMAGE = RNG.standard_normal((1, 2, 3, 4)).astype(np.float32)


def _model(opset: int, op: str, inputs: dict[str, np.ndarray], n_outputs: int = 1,
           initializers: dict[str, np.ndarray] | None = None, **attrs) -> onnx.ModelProto:
    """One node of ``op`` at ``opset`` over float inputs (feeds) and constant ones (initializers)."""
    consts = initializers or {}
    names = list(inputs) + list(consts)
    outs = [f"y{i}" for i in range(n_outputs)]
    graph = helper.make_graph(
        [helper.make_node(op, names, outs, **attrs)], f"{op.lower()}_{opset}",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for n, v in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
        [numpy_helper.from_array(v, n) for n, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


def _hal(model: onnx.ModelProto, feeds: dict[str, np.ndarray], like: list[np.ndarray]) -> list[np.ndarray]:
    """hal's run of ``model``, its outputs declared with the types and shapes of ``like`` (onnx's
    checker wants them; the reference evaluator does not)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    outs = [o.name for o in model.graph.output]
    del model.graph.output[:]
    model.graph.output.extend(helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                              for o, v in zip(outs, like))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hal.InferenceSession(model.SerializeToString(), target="cpu").run(None, feeds)


def _reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ReferenceEvaluator(model).run(None, feeds)


def _asymmetric_linear_resize(scales: list[float]) -> onnx.ModelProto:
    """Resize-13 as Upsample computes linear mode: asymmetric coordinates (out / scale), no antialias."""
    graph = helper.make_graph(
        [helper.make_node("Resize", ["x", "", "s"], ["y0"], mode="linear",
                          coordinate_transformation_mode="asymmetric")], "resize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, IMAGE.shape)],
        [helper.make_tensor_value_info("y0", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(scales, np.float32), "s")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


#: (case, the old model, its feeds, what the reference runs: the same model (None), today's form of it,
#: or, where the evaluator lacks the case, the same computation in numpy)
CASES = [
    ("Reshape-1 shape attribute, 0 copies a dim", _model(1, "Reshape", {"x": X234}, shape=[0, -1]), {"x": X234},
     _model(14, "Reshape", {"x": X234}, initializers={"s": np.array([0, -1], np.int64)})),
    ("Squeeze-1 axes attribute", _model(1, "Squeeze", {"x": X1213}, axes=[0, 2]), {"x": X1213}, None),
    ("Squeeze-1 without axes", _model(1, "Squeeze", {"x": X1213}), {"x": X1213}, None),
    ("Unsqueeze-1 axes attribute", _model(1, "Unsqueeze", {"x": X234}, axes=[0, 3]), {"x": X234}, None),
    ("Concat-1 default axis 1", _model(1, "Concat", {"a": X234, "b": X234}), {"a": X234, "b": X234},
     _model(13, "Concat", {"a": X234, "b": X234}, axis=1)),
    ("Concat-4 axis attribute", _model(4, "Concat", {"a": X234, "b": X234[:, :1]}, axis=1),
     {"a": X234, "b": X234[:, :1]}, None),
    # opset 1 typed Split's split input, and Tile's tiles and axis, as the data (floats)
    ("Split-1 split as an input", _model(1, "Split", {"x": X234}, 2, initializers={"s": np.array([1, 3], np.float32)},
                                         axis=2), {"x": X234},
     _model(13, "Split", {"x": X234}, 2, initializers={"s": np.array([1, 3], np.int64)}, axis=2)),
    ("Split-2 split attribute", _model(2, "Split", {"x": X234}, 2, axis=1, split=[2, 1]), {"x": X234}, None),
    ("Split-2 equal parts", _model(2, "Split", {"x": X234}, 2, axis=2), {"x": X234}, None),
    ("Slice-1 attributes, negative and clamped ends", _model(1, "Slice", {"x": X234}, starts=[1, -3], ends=[100, -1],
                                                             axes=[1, 2]), {"x": X234}, None),
    ("Tile-1 tiles and axis inputs", _model(1, "Tile", {"x": X234}, initializers={
        "t": np.array([3], np.float32), "a": np.array([1], np.float32)}), {"x": X234},
     _model(6, "Tile", {"x": X234}, initializers={"r": np.array([1, 3, 1], np.int64)})),
    ("Pad-1 paddings attribute", _model(1, "Pad", {"x": X234}, paddings=[0, 1, 2, 1, 0, 3], value=1.5),
     {"x": X234}, _model(11, "Pad", {"x": X234}, initializers={
         "p": np.array([0, 1, 2, 1, 0, 3], np.int64), "v": np.array(1.5, np.float32)})),
    ("Pad-2 reflect", _model(2, "Pad", {"x": X234}, pads=[0, 1, 2, 0, 2, 1], mode="reflect"), {"x": X234}, None),
    ("Pad-2 edge", _model(2, "Pad", {"x": X234}, pads=[1, 0, 1, 1, 0, 2], mode="edge"), {"x": X234}, None),
    # (the evaluator's Pad cannot crop: the same crop and pad in numpy)
    ("Pad-2 negative pads crop", _model(2, "Pad", {"x": X234}, pads=[0, -1, 1, 0, 0, -2]), {"x": X234},
     lambda f: [np.pad(f["x"][:, 1:, :-2], ((0, 0), (0, 0), (1, 0)))]),
    ("Upsample-1 height and width scales", _model(1, "Upsample", {"x": IMAGE}, height_scale=2.0, width_scale=3.0),
     {"x": IMAGE}, _model(9, "Upsample", {"x": IMAGE}, initializers={"s": np.array([1, 1, 2, 3], np.float32)})),
    ("Upsample-7 nearest", _model(7, "Upsample", {"x": IMAGE}, scales=[1.0, 1.0, 2.0, 3.0]), {"x": IMAGE},
     _model(9, "Upsample", {"x": IMAGE}, initializers={"s": np.array([1, 1, 2, 3], np.float32)})),
    # (the evaluator's Upsample has no linear mode: its Resize, with Upsample's coordinates)
    ("Upsample-7 linear", _model(7, "Upsample", {"x": IMAGE}, scales=[1.0, 1.0, 2.0, 3.0], mode="linear"),
     {"x": IMAGE}, _asymmetric_linear_resize([1.0, 1.0, 2.0, 3.0])),
    ("Upsample-9 scales input", _model(9, "Upsample", {"x": IMAGE}, initializers={
        "s": np.array([1, 1, 3, 2], np.float32)}), {"x": IMAGE}, None),
    ("Dropout-1 is_test", _model(1, "Dropout", {"x": X234}, is_test=1), {"x": X234}, lambda f: [f["x"]]),
    ("Dropout-7 in inference", _model(7, "Dropout", {"x": X234}, ratio=0.3), {"x": X234}, None),
    ("Flatten-1 default axis", _model(1, "Flatten", {"x": X234}), {"x": X234}, None),
]


@pytest.mark.parametrize("case, model, feeds, reference", CASES, ids=[c[0] for c in CASES])
def test_an_old_opset_node_matches_onnx_reference(case, model, feeds, reference) -> None:
    want = reference(feeds) if callable(reference) else _reference(reference or model, feeds)
    got = _hal(model, feeds, want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, case
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7, err_msg=case)


def _constant(elem: int, **attr) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Constant", [], ["y"], **attr)], "constant", [],
                              [helper.make_tensor_value_info("y", elem, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


SPARSE_2D = helper.make_sparse_tensor(numpy_helper.from_array(np.array([1.5, -2.0, 4.0], np.float32), "v"),
                                      numpy_helper.from_array(np.array([[0, 1], [1, 3], [2, 0]], np.int64), "i"),
                                      [3, 4])
SPARSE_FLAT = helper.make_sparse_tensor(numpy_helper.from_array(np.array([7, 9], np.int64), "v"),
                                        numpy_helper.from_array(np.array([2, 5], np.int64), "i"), [2, 3])
#: the evaluator returns a sparse Constant as its sparse tensor: the dense tensors they stand for
DENSE_2D = np.array([[0, 1.5, 0, 0], [0, 0, 0, -2.0], [4.0, 0, 0, 0]], np.float32)
DENSE_FLAT = np.array([[0, 0, 7], [0, 0, 9]], np.int64)
F, I, S = TensorProto.FLOAT, TensorProto.INT64, TensorProto.STRING


@pytest.mark.parametrize("elem, attr, dense", [
    (F, {"value_float": 2.5}, None), (F, {"value_floats": [1.0, -0.5, 3.25]}, None), (I, {"value_int": -7}, None),
    (I, {"value_ints": [3, 1, 4]}, None), (S, {"value_string": "héllo"}, None),
    (S, {"value_strings": ["a", "bc", ""]}, None), (F, {"sparse_value": SPARSE_2D}, DENSE_2D),
    (I, {"sparse_value": SPARSE_FLAT}, DENSE_FLAT),
], ids=["value_float", "value_floats", "value_int", "value_ints", "value_string", "value_strings",
        "sparse_value coordinates", "sparse_value linear indices"])
def test_every_constant_attribute_gives_onnx_references_tensor(elem, attr, dense) -> None:
    model = _constant(elem, **attr)
    (want,) = [dense] if dense is not None else _reference(model, {})
    (got,) = _hal(model, {}, [want])
    assert got.shape == want.shape
    if elem == S:  # strings as object arrays, as onnxruntime returns them (the evaluator gives unicode)
        assert got.dtype == object and got.tolist() == want.tolist()
    else:
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("opset", [7, 9])
def test_upsample_refuses_a_scale_below_one_as_its_spec_and_onnxruntime_do(opset) -> None:
    # "It takes value greater than or equal to 1": hal shrank the image, onnxruntime refuses the model
    scales = np.array([1, 1, 0.5, 2], np.float32)
    model = (_model(7, "Upsample", {"x": IMAGE}, scales=scales.tolist()) if opset == 7 else
             _model(9, "Upsample", {"x": IMAGE}, initializers={"s": scales}))
    with pytest.raises(hal.RunError, match=r"Upsample scales must each be >= 1"):
        hal.InferenceSession(model).run(None, {"x": IMAGE})


@pytest.mark.parametrize("opset", [18, 19, 20])
def test_group_normalization_18_loads_where_onnx_deprecated_it_as_onnxruntime_runs_it(opset) -> None:
    # onnx's checker refuses GroupNormalization at opsets 18-20 (deprecated for -21's per-channel
    # scale); onnxruntime runs its function body, a scale and bias per group, and so must every target
    from tests.kernels._onnxruntime import run_as_written

    x = RNG.standard_normal((2, 6, 3, 3)).astype(np.float32)
    consts = {"s": np.array([0.5, 1.0, 2.0], np.float32), "b": np.array([-1.0, 0.0, 1.0], np.float32)}
    model = _model(opset, "GroupNormalization", {"x": x}, initializers=consts, num_groups=3).SerializeToString()
    (want,) = run_as_written(model, {"x": x})
    for target in [t.name for t in hal.targets()]:
        (got,) = hal.InferenceSession(model, target=target).run(None, {"x": x})
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=target)
