"""What every API contract check shares: the contract models, deterministic feeds, the check's
failure, and the case that runs one check on one model."""


from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import onnx
from onnx import helper

from hal.conformance.check import CaseFailure

CONTRACT_MODELS = ("tiny-cnn", "tiny-gpt")
CONTRACT_OP = "api contract"


@dataclass
class ContractCase:
    """One contract check on one model."""

    name: str
    check: Callable[[str, str], None]
    model_name: str
    op: str = CONTRACT_OP
    kind: str = "contract"
    ops: frozenset[str] = frozenset()

    def run(self, target: str) -> None:
        try:
            self.check(target, self.model_name)
        except CaseFailure:
            raise
        except Exception as e:  # any exception breaks the contract; say which and where
            raise CaseFailure("contract", f"{type(e).__name__}: {' '.join(str(e).split())[:600]}") from None


def _fail(msg: str) -> None:
    raise CaseFailure("contract", msg)


@cache
def _model(name: str) -> onnx.ModelProto:
    if name == "unknown-op":
        node = helper.make_node("NoSuchOp", ["x"], ["y"], domain="hal.conformance.unknown")
        g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), node], "unknown_op",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])])
        g.node[1].input[0] = "r"
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("hal.conformance.unknown", 1)])
    from hal import zoo

    return zoo.build(name)


def feeds_for(graph: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic feeds for a graph's inputs: normal floats, small non-negative integers."""
    rng = np.random.default_rng(seed)
    out = {}
    for t in graph.inputs:
        shape = [d if isinstance(d, int) else 1 for d in (t.shape or ())]
        dt = t.dtype
        if dt is None:
            raise CaseFailure("contract", f"input {t.name!r} has no tensor type")
        if np.issubdtype(dt, np.integer):
            out[t.name] = rng.integers(0, 16, size=shape).astype(dt)
        elif dt == np.bool_:
            out[t.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            out[t.name] = rng.standard_normal(shape).astype(dt)
    return out


def _graph(name: str) -> Any:
    from hal.graph.load import load
    from hal.graph.passes import optimize

    return optimize(load(_model(name)))


def _same(a: dict[str, Any], b: dict[str, Any], what: str) -> None:
    if set(a) != set(b):
        _fail(f"{what}: output names differ ({sorted(a)} vs {sorted(b)})")
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        if x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
            _fail(f"{what}: output {k!r} differs ({x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)})")
