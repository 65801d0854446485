"""Corners of the ai.onnx.ml map and category kernels found by the differential sweep's map families
(``benchmarks.differential_mlmaps``), against onnxruntime's outputs: every target runs them."""

from __future__ import annotations

import math

import pytest
from onnx import TensorProto, helper

import hal
from tests.conftest import targets_taking
from tests.kernels._onnxruntime import run_as_written


@pytest.mark.parametrize("target", targets_taking("string"))
def test_cast_map_writes_a_negative_nan_as_onnxruntime_does(target):
    # onnxruntime prints each value with std::to_string, which writes a NaN whose sign bit is set as
    # "-nan"; hal printed it with Python's "{:f}", which drops a NaN's sign, and gave "nan"
    node = helper.make_node("CastMap", ["x"], ["y"], domain="ai.onnx.ml", cast_to="TO_STRING")
    x_type = helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
    g = helper.make_graph([node], "g", [helper.make_value_info("x", x_type)],
                          [helper.make_tensor_value_info("y", TensorProto.STRING, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)])
    m.ir_version = 8
    blob = m.SerializeToString()
    feeds = {"x": {0: -math.nan, 1: math.nan, 2: -math.inf, 3: -0.0, 4: 0.5}}
    (want,) = run_as_written(blob, feeds, threads=1)
    (got,) = hal.InferenceSession(blob, target=target).run(None, feeds)
    assert want.tolist() == [["-nan", "nan", "-inf", "-0.000000", "0.500000"]]
    assert got.tolist() == want.tolist()
