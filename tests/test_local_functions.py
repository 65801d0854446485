"""Model-local functions: expanded at load (onnx's inliner), as onnxruntime expands them, on every
target; the expansion bounded before it runs; what cannot be expanded is a ModelError."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import hal
from hal.graph.inline import MAX_INLINED_NODES
from hal.graph.load import load
from tests.conftest import FIXTURES
from tests.robustness._robust_models import local_function_model

TARGETS = ["cpu", "gpu", "lpu", "wafer"]
F = TensorProto.FLOAT
OPSETS = [helper.make_opsetid("", 18), helper.make_opsetid("local", 1)]


def _ort(model: onnx.ModelProto | str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


def _bert_feeds() -> dict[str, np.ndarray]:
    ids = np.random.default_rng(3).integers(0, 512, size=(2, 16)).astype(np.int64)
    mask = np.ones((2, 16), np.int64)
    mask[1, 11:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("target", TARGETS)
def test_a_model_exported_with_modules_as_functions_matches_onnxruntime(target):
    # torch 2.13's TorchScript exporter with export_modules_as_functions={BertLayer, LayerNorm}: the
    # main graph calls BertLayer twice, and each BertLayer calls LayerNorm (tests/fixtures/README.md)
    path = FIXTURES / "bert_tiny_functions.onnx"
    proto = onnx.load(str(path))
    assert {f.name for f in proto.functions} == {"BertLayer", "LayerNorm"}
    assert "BertLayer" in {n.op_type for n in proto.graph.node}
    feeds = _bert_feeds()
    (ours,) = hal.InferenceSession(str(path), target=target).run(None, feeds)
    (theirs,) = _ort(str(path), feeds)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    # the same encoder exported without functions: the same program, so the same bits on cpu
    if target == "cpu":
        (plain,) = hal.InferenceSession(str(FIXTURES / "bert_tiny.onnx")).run(None, feeds)
        np.testing.assert_array_equal(ours, plain)


@pytest.mark.parametrize("target", TARGETS)
def test_nested_functions_with_attributes_and_calls_in_a_branch_match_the_references(target):
    model = local_function_model()
    given = model.SerializeToString()
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    for c in (True, False):
        feeds = {"x": x, "c": np.array(c)}
        ours = hal.InferenceSession(model, target=target).run(None, feeds)
        # (onnx's ReferenceEvaluator raises on a function attribute's default value)
        for a, b in zip(ours, _ort(model, feeds)):
            np.testing.assert_allclose(a, b, rtol=1e-6)
    assert model.SerializeToString() == given  # the defaults were set on a copy
    # x < 0 went through alpha 0.5 then the default 0.25: 2 * 0.5 * 2 * 0.25 = 0.5 of x
    np.testing.assert_allclose(ours[0][x < 0], 0.5 * x[x < 0], rtol=1e-6)


def test_graphs_loaded_without_inference_are_expanded_too():
    g = load(local_function_model(), infer_shapes=False)
    assert {n.op_type for n in g.nodes} == {"Constant", "Mul", "LeakyRelu", "If"}


def _doubling_chain(levels: int) -> onnx.ModelProto:
    """F0 calls F1 twice, F1 calls F2 twice, ...: 2**(levels-1) Relu nodes once expanded."""
    functions = []
    for i in range(levels):
        nodes = ([helper.make_node(f"F{i + 1}", ["a"], ["t"], domain="local"),
                  helper.make_node(f"F{i + 1}", ["t"], ["b"], domain="local")] if i < levels - 1
                 else [helper.make_node("Relu", ["a"], ["b"])])
        functions.append(helper.make_function("local", f"F{i}", ["a"], ["b"], nodes, OPSETS))
    g = helper.make_graph([helper.make_node("F0", ["x"], ["y"], domain="local")], "g",
                          [helper.make_tensor_value_info("x", F, [2])], [helper.make_tensor_value_info("y", F, [2])])
    return helper.make_model(g, opset_imports=OPSETS, functions=functions)


def test_an_expansion_past_the_bound_is_refused_before_the_inliner_runs():
    # 60 levels would expand to 2**59 nodes: onnx's inliner, in C++, would run until memory ran out
    # (had it run, this would not return)
    with pytest.raises(hal.ModelError, match=f"would make more than {MAX_INLINED_NODES:,} nodes"):
        hal.InferenceSession(_doubling_chain(60))
    # inside the bound, the same shape of model expands to every node it should
    assert len(load(_doubling_chain(12)).nodes) == 2 ** 11


def test_a_function_calling_itself_is_a_model_error_without_the_checker_too():
    f = helper.make_function("local", "F", ["a"], ["b"], [helper.make_node("F", ["a"], ["b"], domain="local")], OPSETS)
    g = helper.make_graph([helper.make_node("F", ["x"], ["y"], domain="local")], "g",
                          [helper.make_tensor_value_info("x", F, [2])], [helper.make_tensor_value_info("y", F, [2])])
    m = helper.make_model(g, opset_imports=OPSETS, functions=[f])
    with pytest.raises(hal.ModelError, match="Cycle detected"):
        load(m)  # onnx's checker
    with pytest.raises(hal.ModelError, match="local::F calls itself"):
        load(m, check=False)


def test_a_call_the_inliner_cannot_bind_is_a_model_error():
    f = helper.make_function("local", "F", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])], OPSETS[:1])
    g = helper.make_graph([helper.make_node("F", ["x"], ["y", "z"], domain="local", name="call")], "g",
                          [helper.make_tensor_value_info("x", F, [2])],
                          [helper.make_tensor_value_info("y", F, [2]), helper.make_tensor_value_info("z", F, [2])])
    m = helper.make_model(g, opset_imports=OPSETS, functions=[f])
    with pytest.raises(hal.ModelError, match="model-local functions cannot be expanded: .*formal parameters"):
        hal.InferenceSession(m)


@pytest.mark.parametrize("given", [None, 0.5])
def test_an_attribute_passed_on_from_an_outer_function_falls_back_to_the_inner_default(given):
    # G calls F with F's alpha taken from G's b (ref_attr_name); G has no default for b. A call of G
    # that leaves b out gives F its own default alpha (0.25), as onnxruntime does; the inliner, left
    # to itself, dropped alpha and LeakyRelu took its own 0.01
    alpha = onnx.AttributeProto(name="alpha", ref_attr_name="alpha", type=onnx.AttributeProto.FLOAT)
    leaky = helper.make_node("LeakyRelu", ["x"], ["y"])
    leaky.attribute.append(alpha)
    f = helper.make_function("local", "F", ["x"], ["y"], [leaky], OPSETS[:1],
                             attribute_protos=[helper.make_attribute("alpha", 0.25)])
    call = helper.make_node("F", ["x"], ["y"], domain="local")
    call.attribute.append(onnx.AttributeProto(name="alpha", ref_attr_name="b", type=onnx.AttributeProto.FLOAT))
    g = helper.make_function("local", "G", ["x"], ["y"], [call], OPSETS, attributes=["b"])
    top = helper.make_node("G", ["x"], ["y"], domain="local", **({} if given is None else {"b": given}))
    graph = helper.make_graph([top], "g", [helper.make_tensor_value_info("x", F, [3])],
                              [helper.make_tensor_value_info("y", F, [3])])
    m = helper.make_model(graph, opset_imports=OPSETS, functions=[f, g])
    x = np.array([-4, 0, 4], np.float32)
    (ours,) = hal.InferenceSession(m).run(None, {"x": x})
    (theirs,) = _ort(m, {"x": x})
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(ours, [-4 * (0.25 if given is None else given), 0, 4])


def _call_of(body: list[onnx.NodeProto], function_opsets: list, model_opsets: list,
             out: tuple[int, ...] = (2, 4)) -> onnx.ModelProto:
    f = helper.make_function("local", "F", ["x"], ["y"], body, function_opsets)
    g = helper.make_graph([helper.make_node("F", ["X"], ["Y"], domain="local", name="call")], "g",
                          [helper.make_tensor_value_info("X", F, [2, 4])], [helper.make_tensor_value_info("Y", F, out)])
    m = helper.make_model(g, opset_imports=model_opsets, functions=[f])
    m.ir_version = 10
    return m


_TANH_ADD = [helper.make_node("Tanh", ["x"], ["t"]), helper.make_node("Add", ["t", "x"], ["y"])]
_SCALER = [helper.make_node("Scaler", ["x"], ["y"], domain="ai.onnx.ml", scale=[2.0], offset=[1.0])]
_ML = "ai.onnx.ml"


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("function_opsets, model_opsets, body", [
    # jax2onnx's functions import their own domain at the ONNX version (23), the model at 1
    ([("", 18), ("local", 23)], [("", 18), ("local", 1)], _TANH_ADD),
    # onnxscript functions written against an older opset, whose ops have not changed since
    ([("", 17)], [("", 18), ("local", 1)], _TANH_ADD),
    ([(_ML, 1)], [("", 18), (_ML, 3), ("local", 1)], _SCALER),
    # the model does not import the ONNX domain its function's body uses
    ([("", 18)], [("local", 1)], _TANH_ADD),
], ids=["unused-own-domain", "older-onnx", "older-ml", "unimported"])
def test_a_function_importing_other_versions_than_the_model_is_expanded_as_onnxruntime_runs_it(
        target, function_opsets, model_opsets, body):
    # onnx's inliner left each of these calls in place, so that every target refused "no kernel for F"
    m = _call_of(body, [helper.make_opsetid(d, v) for d, v in function_opsets],
                 [helper.make_opsetid(d, v) for d, v in model_opsets])
    x = np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4)
    (ours,) = hal.InferenceSession(m, target=target).run(None, {"X": x})
    (theirs,) = _ort(m, {"X": x})
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_a_function_body_of_an_older_meaning_is_converted_or_refused():
    # ReduceSum took its axes as an attribute until opset 13, and an input since: onnx's checker
    # refuses the call, as onnxruntime does; unchecked, the body is converted to the model's opset
    reduce = [helper.make_node("ReduceSum", ["x"], ["y"], axes=[1], keepdims=0)]
    m = _call_of(reduce, [helper.make_opsetid("", 12)], OPSETS, out=(2,))
    with pytest.raises(hal.ModelError, match="not compatible with the version imported by model"):
        load(m)
    g = load(m, check=False)
    assert [n.op_type for n in g.nodes] == ["Constant", "ReduceSum"]
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    (y,) = hal.InferenceSession(g).run(None, {"X": x})
    np.testing.assert_array_equal(y, [6, 22])


def test_a_function_opset_no_conversion_reaches_is_a_model_error_that_names_it():
    # a function importing ai.onnx.ml 1 where the model imports 3, calling an op hal cannot show to be
    # unchanged in between: onnx's inliner has no converter for the domain and leaves the call
    m = _call_of(_SCALER, [helper.make_opsetid(_ML, 1)],
                 [helper.make_opsetid("", 18), helper.make_opsetid(_ML, 3), helper.make_opsetid("local", 1)])
    m.functions[0].node[0].op_type = "NoSuchOp"
    with pytest.raises(hal.ModelError, match=r"local::F imports ai.onnx.ml 1 \(the model: 3\)"):
        load(m, check=False)
