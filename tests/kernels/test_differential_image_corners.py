"""Corners of the image ops found by the differential sweep's image families
(``benchmarks.differential_image``), against onnxruntime's outputs: every target runs them."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from tests.conftest import targets_taking
from tests.kernels._onnxruntime import run_as_written as _onnxruntime

TARGETS = [t.name for t in hal.targets()]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("align_corners", [0, 1])
@pytest.mark.parametrize(("mode", "padding_mode"), [("linear", "zeros"), ("cubic", "border"),
                                                    ("cubic", "reflection"), ("nearest", "reflection")])
def test_grid_sample_float16_places_each_sample_at_its_exact_position(mode, padding_mode, align_corners, target):
    # A float16 grid was denormalised to pixel coordinates in float16, (g + 1) / 2 * (size - 1)
    # rounding a position by up to a hundredth of a pixel: cubic samples moved by a few percent of
    # the data's range and nearest ones picked the neighbouring pixel. onnxruntime works in float32,
    # so its float16 outputs are the exact ones rounded once.
    rng = np.random.default_rng(9)
    x = rng.uniform(-2, 2, (1, 2, 13, 15)).astype(np.float16)
    grid = rng.uniform(-1.2, 1.2, (1, 8, 8, 2)).astype(np.float16)
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], mode=mode, padding_mode=padding_mode,
                            align_corners=align_corners)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, x.shape),
                                        helper.make_tensor_value_info("grid", TensorProto.FLOAT16, grid.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)])
    blob = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)]).SerializeToString()
    feeds = {"x": x, "grid": grid}
    (want,) = _onnxruntime(blob, feeds)
    (got,) = hal.InferenceSession(blob, target=target).run(None, feeds)
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-2, atol=4e-3)


@pytest.mark.parametrize(("dtype", "target"), [(d, t) for d in (np.float32, np.float64)
                                               for t in targets_taking(np.dtype(d).name)])
def test_roi_align_max_of_an_inside_out_roi_is_zero(dtype, target):
    # A roi given as (x1, y1, x0, y0), under half_pixel with an adaptive sampling grid, has a
    # negative grid both ways (ceil of a negative size per bin): their product is positive, so hal
    # took max over an empty sample set and failed. onnxruntime (and onnx's reference) sample
    # nothing there and give 0; the rois beside it are read as usual.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 8, 8)).astype(dtype)
    rois = np.array([[3.7, 10.9, 0.1, 6.4], [0.5, 1.0, 6.0, 5.5]], dtype)
    node = helper.make_node("RoiAlign", ["x", "rois", "batch"], ["y"], mode="max", output_height=2, output_width=1,
                            sampling_ratio=0, coordinate_transformation_mode="half_pixel")
    kind = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inits = [numpy_helper.from_array(rois, "rois"), numpy_helper.from_array(np.zeros(2, np.int64), "batch")]
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", kind, x.shape)],
                          [helper.make_tensor_value_info("y", kind, None)], inits)
    blob = helper.make_model(g, opset_imports=[helper.make_opsetid("", 16)]).SerializeToString()
    (want,) = _onnxruntime(blob, {"x": x})
    (got,) = hal.InferenceSession(blob, target=target).run(None, {"x": x})
    assert not want[0].any()
    np.testing.assert_allclose(got, want, rtol=1e-6)
