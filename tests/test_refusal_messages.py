"""What an UnsupportedOpError says: refused nodes of one op and reason as one entry, and a hint
that works — fallback only where the cpu target takes the nodes."""

from __future__ import annotations

import pytest
from onnx import TensorProto, helper

import hal


def _model(op: str, domain: str, count: int):
    nodes, prev = [], "x"
    for i in range(count):
        nodes.append(helper.make_node(op, [prev], [f"v{i}"], name=f"n{i}", domain=domain))
        prev = f"v{i}"
    nodes.append(helper.make_node("Relu", [prev], ["y"], name="relu"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets)


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_nodes_no_target_runs_get_a_kernel_hint_not_a_fallback_one(target):
    with pytest.raises(hal.UnsupportedOpError) as ei:
        hal.InferenceSession(_model("Blur", "com.acme", 4), target=target, fallback="error")
    e = ei.value
    assert "4 nodes n0, n1, n2, … (Blur)" in str(e) and str(e).count("no installed target") == 1
    assert "hal_kernels" in e.hint and "fallback" not in e.hint
    assert [n for n, _, _ in e.nodes] == ["n0", "n1", "n2", "n3"]


def test_nodes_the_cpu_runs_get_the_fallback_hint_in_both_spellings():
    from hal import plugins
    from tests.test_session import _Plugin, _two_op_model  # the fixture target that refuses Softmax

    plugins.register(_Plugin(), "no-softmax-plugin")
    try:
        with pytest.raises(hal.UnsupportedOpError) as ei:
            hal.InferenceSession(_two_op_model(), target="no-softmax")
    finally:
        plugins.unregister("no-softmax-plugin")
    assert "fallback='warn'" in ei.value.hint and "--fallback warn" in ei.value.hint
