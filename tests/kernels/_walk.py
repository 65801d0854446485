"""Run an onnx node test case through hal's kernel registry by walking its nodes in order.

Shared by the kernel-family test files: no sessions, no targets, just registry lookups, so a
failure points at one kernel.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.test.case.node import collect_testcases
from onnx.backend.test.runner import Runner

from hal.conformance.cases import to_value
from hal.graph.attrs import node_attributes
from hal.kernels import KernelContext, lookup

_CASES: list[Any] | None = None


def node_cases() -> list[Any]:
    """Every onnx node test case (collected once per process)."""
    global _CASES
    if _CASES is None:
        with np.errstate(all="ignore"):
            _CASES = list(collect_testcases())
    return _CASES


def case_ops(case: Any) -> set[str]:
    """The op types a case's graph uses (top level only)."""
    return {n.op_type for n in case.model.graph.node}


def cases_within(ops: Iterable[str]) -> list[Any]:
    """The cases whose op types all fall into ``ops``, sorted by name."""
    allowed = set(ops)
    return sorted((c for c in node_cases() if case_ops(c) <= allowed), key=lambda c: c.name)


def _opsets(model: onnx.ModelProto) -> dict[str, int]:
    return {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}


def run_graph(model: onnx.ModelProto, feeds: list[Any]) -> list[Any]:
    """The graph's outputs for positional ``feeds``, computed node by node through the registry."""
    from hal.engine import Subgraph  # control-flow bodies run through the engine, as on every target

    g = model.graph
    opsets = _opsets(model)
    values: dict[str, Any] = {"": None}
    values.update({i.name: numpy_helper.to_array(i) for i in g.initializer})
    values.update(zip([i.name for i in g.input if i.name not in values], feeds))
    for node in g.node:
        domain = "" if node.domain == "ai.onnx" else node.domain
        opset = opsets.get(domain)
        kdef = lookup(node.op_type, domain, opset)
        if kdef is None:
            raise NotImplementedError(f"no kernel for {domain or 'ai.onnx'}::{node.op_type} at opset {opset}")
        args = [values[name] for name in node.input]
        kwargs = kdef.static_attrs(node_attributes(node, graph_factory=lambda body: Subgraph(body, opsets)),
                                   list(node.output))
        if kdef.context:
            kwargs["_ctx"] = KernelContext(opset=opset or 0, scope=values)
        result = kdef.fn(*args, **kwargs)
        outs = result if isinstance(result, tuple) else (result,)
        for name, value in zip(node.output, outs):
            if name:
                values[name] = value
    return [values[o.name] for o in g.output]


def check_case(case: Any) -> None:
    """Run every data set of ``case`` and compare with onnx's own tolerance check."""
    for inputs, outputs in case.data_sets:
        got = run_graph(case.model, [to_value(v) for v in inputs])
        want = [to_value(v) for v in outputs]
        Runner.assert_similar_outputs(want, got, case.rtol, case.atol)
