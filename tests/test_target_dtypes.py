"""``TargetSpec.dtypes``: the element types a target's hardware has. ``kernel_capability`` given the spec
refuses a node of another type with the value and the types in its reason; a spec without dtypes takes
every type; an unknown name is refused when the spec is built, listing the names hal knows."""

from __future__ import annotations

import warnings

import numpy as np
import pydantic
import pytest
from onnx import TensorProto, helper

import hal
import hal.plugins
from hal.cli import main
from hal.graph.load import load
from hal.specs import TargetSpec, dtype_names
from hal.target import kernel_capability


def _graph():
    f32, f64 = TensorProto.FLOAT, TensorProto.DOUBLE
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Cast", ["r"], ["r64"], name="up", to=f64),
             helper.make_node("Sqrt", ["r64"], ["s64"], name="sqrt"),
             helper.make_node("Cast", ["s64"], ["y"], name="down", to=f32)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f32, [2])],
                          [helper.make_tensor_value_info("y", f32, [2])])
    return load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_a_spec_with_dtypes_refuses_the_nodes_of_other_types():
    spec = TargetSpec(name="npu", vendor="v", kind="other", dtypes=["float32", "float16"])
    cap = kernel_capability(_graph(), spec)
    assert cap.supported_nodes() == {"relu"}
    reasons = {r.node: r.reason for r in cap.refused}
    assert set(reasons) == {"up", "sqrt", "down"}
    assert reasons["sqrt"] == "float64 value 'r64': target 'npu' computes in float32, float16 only (its spec's dtypes)"


@pytest.mark.parametrize("target", ["npu", TargetSpec(name="npu", vendor="v", kind="other")])
def test_a_name_or_a_spec_without_dtypes_takes_every_type(target):
    assert kernel_capability(_graph(), target).supported_nodes() == {"relu", "up", "sqrt", "down"}


def test_an_unknown_dtype_name_is_refused_with_the_known_ones():
    with pytest.raises(pydantic.ValidationError, match="unknown dtype.*'fp64'.*float64, uint32"):
        TargetSpec(name="npu", vendor="v", kind="other", dtypes=["float32", "fp64"])
    assert {"float32", "bfloat16", "float8_e4m3fn", "int4", "string", "bool"} <= set(dtype_names())


def test_a_body_computing_another_type_refuses_its_node():
    vi = helper.make_tensor_value_info
    f32 = TensorProto.FLOAT
    then_g = helper.make_graph([helper.make_node("Cast", ["x"], ["t64"], to=TensorProto.DOUBLE),
                                helper.make_node("Sqrt", ["t64"], ["s"]),
                                helper.make_node("Cast", ["s"], ["t"], to=f32)], "then", [], [vi("t", f32, [2])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [vi("e", f32, [2])])
    g = helper.make_graph([helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then_g, else_branch=else_g)],
                          "g", [vi("c", TensorProto.BOOL, []), vi("x", f32, [2])], [vi("y", f32, [2])])
    graph = load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    spec = TargetSpec(name="npu", vendor="v", kind="other", dtypes=["float32", "bool"])
    (refusal,) = kernel_capability(graph, spec).refused
    assert refusal.node == "branch"
    assert refusal.reason.startswith("float64 value 't64' in its then_branch: target 'npu' computes in float32, bool")
    with_f64 = spec.model_copy(update={"dtypes": ["float32", "bool", "float64"]})
    assert kernel_capability(graph, with_f64).supported_nodes() == {"branch"}


class _Npu:
    spec = TargetSpec(name="dtype-npu", vendor="v", kind="other", dtypes=["float32", "float16"])

    def capability(self, graph, options):
        return kernel_capability(graph, self.spec)

    def compile(self, graph, options):
        raise NotImplementedError

    def load(self, blob):
        raise NotImplementedError


class _NpuPlugin:
    HAL_API_VERSION = "1.0"

    @hal.hookimpl
    def hal_targets(self):
        return [_Npu()]


def test_hal_targets_shows_each_target_s_dtypes(capsys, monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main sets it for the process
    rec = hal.plugins.register(_NpuPlugin(), "dtype-npu")
    try:
        assert rec.ok, rec.error
        assert main(["targets"]) == 0
    finally:
        hal.plugins.unregister("dtype-npu")
    lines = capsys.readouterr().out.splitlines()
    assert "float32, float16" in next(line for line in lines if "dtype-npu" in line)
    assert " all " in next(line for line in lines if " cpu " in line)
    assert " all but string " in next(line for line in lines if " gpu " in line)
    assert "float32, float16, bfloat16" in next(line for line in lines if " lpu " in line)


def _one_node(op: str, elem: int, out_elem: int | None = None, **attrs):
    vi = helper.make_tensor_value_info
    g = helper.make_graph([helper.make_node(op, ["x"], ["y"], name="n", **attrs)], "g", [vi("x", elem, [3])],
                          [vi("y", out_elem or elem, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize("target", ["lpu", "wafer"])
def test_the_lpu_and_the_wafer_refuse_float64_which_they_have_no_datapath_for(target):
    """A float64 model had run on both, in float64, as if the hardware had an fp64 unit; with fallback it
    runs on cpu and says so, and a float32 twin still runs on the target."""
    model = _one_node("Sqrt", TensorProto.DOUBLE)
    with pytest.raises(hal.UnsupportedOpError, match=f"float64 value 'x': target '{target}' computes in float32, "
                                                     "float16, bfloat16, .* only") as e:
        hal.InferenceSession(model, target=target)
    assert "runs on: cpu, gpu" in str(e.value) and "fallback" in e.value.hint
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hal.FallbackWarning)
        s = hal.InferenceSession(model, target=target, fallback="warn")
    assert [p.target for p in s.report.placement] == ["cpu"]
    x = np.array([1.0, 4.0, 9.0])
    np.testing.assert_array_equal(s.run(None, {"x": x})[0], np.sqrt(x))
    s32 = hal.InferenceSession(_one_node("Sqrt", TensorProto.FLOAT), target=target)
    assert [p.target for p in s32.report.placement] == [target]


@pytest.mark.parametrize("target", ["gpu", "gpu-h200", "gpu-mi300x", "lpu", "wafer"])
def test_no_accelerator_computes_strings(target):
    model = _one_node("StringNormalizer", TensorProto.STRING, case_change_action="UPPER")
    with pytest.raises(hal.UnsupportedOpError, match=f"string value 'x': target '{target}'"):
        hal.InferenceSession(model, target=target)
    s = hal.InferenceSession(model, target=target, fallback="allow")
    assert s.run(None, {"x": np.array(["a", "b", "c"], dtype=object)})[0].tolist() == ["A", "B", "C"]
    assert hal.InferenceSession(model, target="cpu").report.placement[0].target == "cpu"
