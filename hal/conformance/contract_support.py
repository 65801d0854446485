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
    """One contract check on one model. ``whole``: the check runs on the whole model even where the target
    refuses some of its nodes (the check of capability against compile); every other check of a contract
    model runs on the part of it the target takes (``taken_part``)."""

    name: str
    check: Callable[[str, str], None]
    model_name: str
    op: str = CONTRACT_OP
    kind: str = "contract"
    ops: frozenset[str] = frozenset()
    whole: bool = False

    def run(self, target: str) -> str | None:
        """Run the check; raises CaseFailure("contract") when the target breaks it. Returns None, or, when the
        check ran on a part of the model, a note saying which (the report shows it)."""
        try:
            model, note = self.model_name, None
            if not self.whole and self.model_name in CONTRACT_MODELS:
                model, note = taken_part(target, self.model_name)
            self.check(target, model)
            return note
        except CaseFailure:
            raise
        except Exception as e:  # any exception breaks the contract; say which and where
            raise CaseFailure("contract", f"{type(e).__name__}: {' '.join(str(e).split())[:600]}") from None


def _fail(msg: str) -> None:
    raise CaseFailure("contract", msg)


#: the parts of contract models that targets take, by the name ``taken_part`` gives them
_PARTS: dict[str, onnx.ModelProto] = {}


def taken_part(target: str, name: str) -> tuple[str, str | None]:
    """The contract model ``name`` as the checks see it on ``target``: the whole model when the target's
    capability takes every node of it; else the part it takes (``Graph.subgraph``: what the nodes it refuses
    read becomes outputs, what they give becomes inputs, fed like any other), with a note naming what was
    left out. The contract then holds the target to every rule on its own program, as a session with
    fallback runs it, while the refusals themselves are the business of capability_matches_compile (which
    runs on the whole model) and of the node cases. A target that takes no node of it breaks the contract."""
    import hashlib

    from hal.plugins import get_target
    from hal.specs import CompileOptions

    graph = _graph(name)
    cap = get_target(target).capability(graph, CompileOptions())
    if not cap.refused:
        return name, None
    taken = cap.supported_nodes()
    kept = [n.name for n in graph.nodes if n.name in taken]
    refused = sorted({n.op_type for n in graph.nodes if n.name not in taken})
    if not kept:
        _fail(f"target {target!r} takes no node of zoo:{name} (it refuses {', '.join(refused)}): the API contract "
              f"checks a target's program on the contract models (specs/interface.md section 10), and it has none")
    digest = hashlib.blake2b("\0".join(kept).encode(), digest_size=6).hexdigest()
    part = f"{name}[{target}:{digest}]"
    if part not in _PARTS:
        _PARTS[part] = graph.subgraph(kept, name=f"{graph.name}_taken_by_{target}").to_onnx()
    return part, (f"checked on the part of zoo:{name} target {target!r} takes: {len(kept)} of {len(graph.nodes)} "
                  f"nodes (it refuses {', '.join(refused)})")


@cache
def _model(name: str) -> onnx.ModelProto:
    if name in _PARTS:
        return _PARTS[name]
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
