"""Memory guards the feeds' shapes settle (hal.engine.guards): skipped only on a run whose feed tensors
have the shapes and dtypes of a run that passed them under a bound no larger, never where a shape
depends on a value that can change, and never on the word of a model's declared shapes."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal import limits
from hal.engine import Program, reference_program
from hal.engine.guards import shape_settled_steps
from hal.errors import ResourceError
from hal.graph.load import load

F = TensorProto.FLOAT


def _expand_matmul(shape_is_feed: bool, declared: list[int] | None = None):
    """x -> Expand(x, shape) -> MatMul with itself transposed: the Expand's and the MatMul's sizes
    depend on ``shape`` (an initializer, or a feed whose values can change from run to run)."""
    inits = [] if shape_is_feed else [numpy_helper.from_array(np.array([4, 8], np.int64), "shape")]
    inputs = [helper.make_tensor_value_info("x", F, [1, 8])]
    if shape_is_feed:
        inputs.append(helper.make_tensor_value_info("shape", TensorProto.INT64, [2]))
    nodes = [helper.make_node("Expand", ["x", "shape"], ["e"], name="expand"),
             helper.make_node("Transpose", ["e"], ["t"], name="t", perm=[1, 0]),
             helper.make_node("MatMul", ["t", "e"], ["y"], name="mm")]
    value_info = [helper.make_tensor_value_info("e", F, declared)] if declared else []
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", F, ["m", "m"])], inits,
                              value_info=value_info)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _count_checks(monkeypatch) -> list[str]:
    seen: list[str] = []
    real = limits.check_step

    def counting(op_type, label, *args, **kwargs):
        seen.append(label)
        return real(op_type, label, *args, **kwargs)

    monkeypatch.setattr(limits, "check_step", counting)
    return seen


def test_constant_shapes_settle_every_guard_and_feed_values_settle_none():
    const = load(_expand_matmul(shape_is_feed=False))
    steps = reference_program(const).steps
    assert {steps[i].op_type for i in shape_settled_steps(const, steps, ["x"], list(const.initializers))} == {
        "Expand", "Transpose", "MatMul"}
    fed = load(_expand_matmul(shape_is_feed=True))
    steps = reference_program(fed).steps
    # the Expand's result has a shape its feed's values choose: nothing from it on is settled
    assert shape_settled_steps(fed, steps, ["x", "shape"], []) == set()


def test_a_run_with_the_same_feed_shapes_skips_the_settled_guards(monkeypatch):
    prog = reference_program(load(_expand_matmul(shape_is_feed=False)))
    checks = _count_checks(monkeypatch)  # Expand's guard calls check_step on every run it is not settled
    x = np.ones((1, 8), np.float32)
    first = prog.run_list({"x": x})
    assert checks == ["expand"]
    again = prog.run_list({"x": x * 2})  # new values, same shape and dtype
    assert checks == ["expand"]
    np.testing.assert_array_equal(again[0], first[0] * 4)
    prog.run_list({"x": x.astype(np.float64)})  # another dtype: checked again
    assert checks == ["expand", "expand"]


def test_a_smaller_bound_checks_again_and_refuses():
    prog = reference_program(load(_expand_matmul(shape_is_feed=False)))
    x = np.ones((1, 8), np.float32)
    prog.run_list({"x": x})
    prog.run_list({"x": x})  # settled
    with limits.bounds(max_memory=64), pytest.raises(ResourceError, match="max_memory"):
        prog.run_list({"x": x})  # the 8x8 product is 256 bytes


def test_value_dependent_shapes_are_checked_on_every_run():
    s = hal.InferenceSession(_expand_matmul(shape_is_feed=True), target="cpu", max_memory=1 << 20)
    x = np.ones((1, 8), np.float32)
    for _ in range(2):
        s.run(None, {"x": x, "shape": np.array([4, 8], np.int64)})
    with pytest.raises(ResourceError, match="max_memory"):  # the same feed shapes, a 4 GiB Expand
        s.run(None, {"x": x, "shape": np.array([1 << 27, 8], np.int64)})


def test_declared_shapes_do_not_settle_a_value_dependent_one():
    # the model declares the Expand's result as [4, 8]: the analysis does not take its word
    model = _expand_matmul(shape_is_feed=True, declared=[4, 8])
    s = hal.InferenceSession(model, target="cpu", max_memory=1 << 20)
    x = np.ones((1, 8), np.float32)
    s.run(None, {"x": x, "shape": np.array([4, 8], np.int64)})
    s.run(None, {"x": x, "shape": np.array([4, 8], np.int64)})
    with pytest.raises(ResourceError, match="max_memory"):
        s.run(None, {"x": x, "shape": np.array([1 << 27, 8], np.int64)})


def test_a_stored_program_settles_afresh(monkeypatch):
    prog = reference_program(load(_expand_matmul(shape_is_feed=False)))
    x = np.ones((1, 8), np.float32)
    prog.run_list({"x": x})
    copy = pickle.loads(pickle.dumps(prog))
    assert isinstance(copy, Program)
    checks = _count_checks(monkeypatch)
    copy.run_list({"x": x})
    copy.run_list({"x": x})
    assert checks == ["expand"]
