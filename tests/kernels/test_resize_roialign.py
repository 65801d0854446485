"""Resize and RoiAlign beyond onnx's node cases, against onnxruntime: ``tf_half_pixel_for_nn``
(Resize-11's, which onnxruntime runs at every opset and tf2onnx writes for every half-pixel nearest
resize, Keras' ``Resizing(interpolation="nearest")`` among them), Resize-10's nearest pixel, and a
RoiAlign roi that holds no sample; and Resize's nearest pixels against the spec's coordinate formulas
in exact rational arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("scales", [(1.75, 0.5), (2.0, 3.0), (0.75, 1.5)])
@pytest.mark.parametrize("nearest_mode", ["floor", "round_prefer_ceil", "round_prefer_floor", "ceil"])
def test_tf_half_pixel_for_nn_matches_onnxruntime_on_every_target(opset, scales, nearest_mode):
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 6)).astype(np.float32)
    out = [2, 3, int(4 * scales[0]), int(6 * scales[1])]
    node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="nearest", nearest_mode=nearest_mode,
                            coordinate_transformation_mode="tf_half_pixel_for_nn")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)],
                          [numpy_helper.from_array(np.array([1, 1, *scales], np.float32), "scales"),
                           numpy_helper.from_array(np.zeros(0, np.float32), "roi")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    so = ort.SessionOptions()
    so.log_severity_level = 3  # its warning that the mode is Resize-11's
    (want,) = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    # each output picks input pixels, none in between: the source index is what is tested
    for target in hal.targets():
        (got,) = hal.InferenceSession(m, target=target.name).run(None, {"x": x})
        np.testing.assert_array_equal(got, want, err_msg=target.name)


@pytest.mark.parametrize(("shape", "scales"), [((1, 1, 2, 4), (1, 1, 0.6, 0.6)), ((1, 1, 6, 8), (1, 1, 0.5, 0.75)),
                                               ((1, 2, 3, 5), (1, 1, 2.0, 0.6)), ((1, 1, 3, 4), (1, 1, 1.5, 2.5))])
def test_resize_10_nearest_rounds_down_upsampling_and_up_downsampling(shape, scales):
    # onnx 1.5's opset-10 test_resize_downsample_nearest gives [1, 3] from [1, 2, 3, 4] at 0.6, as
    # onnxruntime does; hal rounded down on every axis ([1, 2]), the version converter's Resize-10 sweep found
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 1
    out = [int(d * f) for d, f in zip(shape, scales)]
    g = helper.make_graph([helper.make_node("Resize", ["x", "scales"], ["y"], mode="nearest")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)],
                          [numpy_helper.from_array(np.array(scales, np.float32), "scales")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 10)])
    (want,) = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    if shape == (1, 1, 2, 4):
        np.testing.assert_array_equal(want, [[[[1, 3]]]])
    for target in hal.targets():
        (got,) = hal.InferenceSession(m, target=target.name).run(None, {"x": x})
        np.testing.assert_array_equal(got, want, err_msg=target.name)


def _exact_source(mode: str, y: int, n_in: int, n_out: int, scale: Fraction) -> Fraction:
    """The input coordinate of output ``y``, the Resize-19 spec's formula in rationals."""
    half = Fraction(1, 2)
    if mode == "half_pixel":
        return (y + half) / scale - half
    if mode == "half_pixel_symmetric":
        return Fraction(n_in, 2) * (1 - n_out / (scale * n_in)) + (y + half) / scale - half
    if mode == "align_corners":  # over the fractional output length (see hal/kernels/image.py)
        return Fraction(0) if scale * n_in == 1 else y * Fraction(n_in - 1) / (scale * n_in - 1)
    return y / scale  # asymmetric


_ROUND = {"floor": math.floor, "ceil": math.ceil, "round_prefer_ceil": lambda x: math.floor(x + Fraction(1, 2)),
          "round_prefer_floor": lambda x: math.ceil(x - Fraction(1, 2))}


@pytest.mark.parametrize("mode", ["half_pixel", "half_pixel_symmetric", "align_corners", "asymmetric"])
def test_nearest_resize_picks_the_pixels_of_the_spec_in_exact_arithmetic(mode):
    # half_pixel_symmetric worked out as the spec writes it rounded 7 -> 3 at 0.5 to source 1 + 2^-52 for
    # the first output, which exactly is 1 (ceil took pixel 2): 28 of its 960 resizes here had a pixel over
    picks = []
    for n_in in range(1, 17):
        x = np.arange(n_in, dtype=np.float32).reshape(1, 1, 1, n_in)
        for factor in (0.2, 0.25, 1 / 3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 1.2, 1.25, 1.5, 1.7, 2.0, 2.5, 3.0):
            scale = Fraction(np.float32(factor).item())
            n_out = math.floor(scale * n_in)
            if not n_out:
                continue
            for nearest_mode, rounding in _ROUND.items():
                want = [min(max(rounding(_exact_source(mode, y, n_in, n_out, scale)), 0), n_in - 1)
                        for y in range(n_out)]
                node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest",
                                        coordinate_transformation_mode=mode, nearest_mode=nearest_mode)
                g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                      [numpy_helper.from_array(np.array([1, 1, 1, factor], np.float32), "scales")])
                m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
                (got,) = hal.InferenceSession(m).run(None, {"x": x})
                picks.append(((n_in, factor, nearest_mode), got.ravel().astype(int).tolist(), want))
    wrong = [p for p in picks if p[1] != p[2]]
    assert len(picks) > 900 and not wrong, f"{len(wrong)} of {len(picks)} differ, first {wrong[:3]}"


def test_tf_crop_and_resize_takes_the_roi_in_its_own_dtype_as_onnxs_reference():
    # the roi's start times the pixels and its length in float32, as onnx's reference works them out
    # (onnxruntime too, where it agrees with the reference at all: its crop extrapolates elsewhere):
    # 0.6 of 5 pixels is 3 in float32, 3 + 4.5e-8 in float64, and ceil took the pixel after (15 of these
    # 160 resizes differed); a one-pixel output sits half the length past the start, 1.5 there in float32,
    # where round_prefer_floor took pixel 2 of 1.5 + 6e-8 (found by benchmarks.differential, seed 50380)
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(0)
    differ = []
    for i in range(241):
        n_in = int(rng.integers(2, 9))
        factor = float(rng.choice([0.5, 0.75, 1.25, 1.5, 2.0, 2.5, 3.0]))
        start, end = sorted(np.round(rng.uniform(0, 1, 2), 1))
        nearest_mode = str(rng.choice(list(_ROUND)))
        if i == 240:  # the one the sweep found
            n_in, start, end, nearest_mode = 6, 0.0, 0.6, "round_prefer_floor"
        x = np.arange(n_in, dtype=np.float32).reshape(1, 1, 1, n_in)
        one = i % 3 == 2 or i == 240  # a third to one pixel, by sizes
        node = helper.make_node("Resize", ["x", "roi", "", "sizes"] if one else ["x", "roi", "scales"], ["y"],
                                mode="nearest", nearest_mode=nearest_mode,
                                coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=-1.0)
        sizes = numpy_helper.from_array(np.array([1, 1, 1, 1], np.int64), "sizes")
        scales = numpy_helper.from_array(np.array([1, 1, 1, factor], np.float32), "scales")
        g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [sizes if one else scales,
                               numpy_helper.from_array(np.array([0, 0, 0, start, 1, 1, 1, end], np.float32), "roi")])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
        (want,) = ReferenceEvaluator(m).run(None, {"x": x})
        (got,) = hal.InferenceSession(m).run(None, {"x": x})
        if got.shape != want.shape or (got != want).any():
            differ.append((n_in, "to 1" if one else factor, start, end, nearest_mode))
    assert not differ, f"{len(differ)} differ from onnx's reference, first {differ[:3]}"


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("roi", [[1, 1, 1, 3], [1, 1, 3, 1], [2, 2, 1, 1]])
def test_roi_align_of_a_roi_without_width_or_height_is_zero_as_in_onnxruntime(mode, roi):
    # the adaptive grid, ceil(roi size / output size), holds no sample: max mode raised a RunError
    # (a reduction over nothing), where onnxruntime and onnx's reference give 0
    node = helper.make_node("RoiAlign", ["x", "rois", "bi"], ["y"], mode=mode, output_height=2, output_width=2,
                            coordinate_transformation_mode="half_pixel", sampling_ratio=0)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4]),
                                        helper.make_tensor_value_info("rois", TensorProto.FLOAT, [1, 4]),
                                        helper.make_tensor_value_info("bi", TensorProto.INT64, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 16)])
    feeds = {"x": np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4), "rois": np.array([roi], np.float32),
             "bi": np.array([0], np.int64)}
    (want,) = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for target in hal.targets():
        (got,) = hal.InferenceSession(m, target=target.name).run(None, feeds)
        np.testing.assert_array_equal(got, want, err_msg=target.name)
