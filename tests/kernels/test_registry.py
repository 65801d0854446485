"""The registry's contract: lookup by opset, and kernels that programs can pickle."""

from __future__ import annotations

import pickle

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
