"""The registry's contract: lookup by opset, kernels that programs can pickle, and the forms of an op
a kernel refuses."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from onnx import TensorProto, helper

import hal
from hal.kernels import lookup, registered_ops
from hal.kernels.registry import _REGISTRY


def test_lookup_picks_the_newest_registration_not_after_the_opset():
    assert lookup("Softmax", "", 12).since == 1
    assert lookup("Softmax", "", 13).since == 13
    assert lookup("Softmax", "", 99).since == 13
    assert lookup("NoSuchOp", "", 17) is None


def test_every_kernel_is_picklable_by_reference():
    # Executables serialize with pickle: a kernel that is a closure or lambda would break the cache.
    unpicklable = []
    for defs in _REGISTRY.values():
        for d in defs:
            try:
                assert pickle.loads(pickle.dumps(d.fn)) is d.fn
            except Exception:  # any failure to round-trip is the finding
                unpicklable.append(f"{d.domain or 'ai.onnx'}::{d.op_type}@{d.since}")
    assert not unpicklable, unpicklable
    assert len(registered_ops()) > 200


def test_every_op_onnx_defines_has_a_kernel_but_gradient():
    # what the README promises: every domain, deprecated ops included (skl2onnx still writes them)
    import onnx.defs

    defined = {(s.domain, s.name) for s in onnx.defs.get_all_schemas_with_history()}
    have = {(domain, op) for domain, op in registered_ops()}
    assert defined - have == {("ai.onnx.preview.training", "Gradient")}


def test_a_kernel_that_refuses_a_form_of_its_op_is_refused_by_every_target_when_compiled(monkeypatch):
    # the registry's ``refuses``: read off the node's attributes, inputs and outputs, so the refusal
    # comes when the session is built (the kernel raising at run time came too late for fallback), and
    # a target falling back to the cpu, which refuses the form too, says so then
    from hal.kernels.registry import kernel

    key = ("test.refuses", "Twice")
    monkeypatch.setitem(_REGISTRY, key, [])
    kernel("Twice", domain="test.refuses", refuses=lambda attrs, ins, outs:
           "only factor 2" if attrs.get("factor", 2) != 2 else None)(lambda x, factor=2: x * factor)

    def model(**attrs):
        g = helper.make_graph([helper.make_node("Twice", ["x"], ["y"], domain="test.refuses", **attrs)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("test.refuses", 1)])

    x = np.array([1.0, 2.0], np.float32)
    for target in hal.targets():
        np.testing.assert_array_equal(hal.InferenceSession(model(), target=target.name).run(None, {"x": x})[0], 2 * x)
        with pytest.raises(hal.UnsupportedOpError, match="no kernel for this form: only factor 2"):
            hal.InferenceSession(model(factor=3), target=target.name, fallback="allow")
