"""hal.backend: onnx's own BackendTest runs unchanged against a hal target."""

from __future__ import annotations

import unittest

import numpy as np
import onnx
import onnx.backend.test
import pytest
from onnx import TensorProto, helper

import hal.backend

OPS = r"^test_(relu|add|matmul_2d|conv_with_strides_padding|softmax_axis_0|if|loop11|sequence_insert_at_back|" \
      r"optional_has_element_empty_optional_input)_cpu$"


def test_onnx_backend_test_runs_unchanged_on_hal(monkeypatch) -> None:
    monkeypatch.setenv(hal.backend.ENV_TARGET, "cpu")
    backend_test = onnx.backend.test.BackendTest(hal.backend, __name__)
    backend_test.include(OPS)
    result = unittest.TextTestRunner(verbosity=0, stream=open("/dev/null", "w")).run(backend_test.test_suite)
    ran = result.testsRun - len(result.skipped)
    assert ran == 9, f"{ran} ran"
    assert not result.failures and not result.errors, (result.failures + result.errors)[:3]


def test_devices_map_to_targets(monkeypatch) -> None:
    monkeypatch.delenv(hal.backend.ENV_TARGET, raising=False)
    assert hal.backend.target_for("CPU") == "cpu"
    assert hal.backend.supports_device("CPU") and hal.backend.supports_device("hal:cpu")
    assert not hal.backend.supports_device("CUDA") and not hal.backend.supports_device("no-such-target")
    monkeypatch.setenv(hal.backend.ENV_TARGET, "wafer")
    assert hal.backend.target_for("CPU") == "wafer"


def test_prepare_run_model_and_run_node() -> None:
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])]))
    a, b = np.ones(2, np.float32), np.arange(2, dtype=np.float32)
    rep = hal.backend.prepare(model)
    np.testing.assert_array_equal(rep.run([a, b])[0], [1, 2])
    np.testing.assert_array_equal(rep.run({"a": a, "b": b})["c"], [1, 2])
    np.testing.assert_array_equal(hal.backend.run_model(model, [a, b])[0], [1, 2])
    out = hal.backend.run_node(helper.make_node("Relu", ["x"], ["y"]), [np.array([-1, 2], np.float32)])
    np.testing.assert_array_equal(out[0], [0, 2])


def test_an_unknown_device_is_refused() -> None:
    with pytest.raises(hal.HalError, match="not a hal target"):
        hal.backend.prepare(onnx.ModelProto(), "CUDA")
