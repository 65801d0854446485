"""API contract tests every target must pass, whatever its numerics.

On the runnable zoo models (a ResNet-style CNN and a GPT-style decoder) a target must: fill a report
that validates against the JSON Schema in specs/schemas; compile the same model twice into the
same program; run twice with identical outputs; compile exactly what its ``capability`` says it
takes; reject bad feeds with ``hal.InputError``; and give identical outputs from an executable
serialised and loaded back. A model with an op no target knows checks that ``capability`` refuses
what ``compile`` cannot take.
"""

from __future__ import annotations

import json
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


# --- the checks -----------------------------------------------------------------------------------------


def _schemas() -> dict[str, dict]:
    from importlib import resources

    from hal.specs import json_schemas

    out = json_schemas()
    folder = resources.files("hal_specs").joinpath("schemas")
    for name in out:
        f = folder.joinpath(f"{name}.schema.json")
        if f.is_file():
            out[name] = json.loads(f.read_text(encoding="utf-8"))
    return out


def _validate(doc: Any, schema_name: str) -> None:
    try:
        import jsonschema
    except ImportError:  # without jsonschema, pydantic's own validation of the same models
        from hal.specs import SCHEMA_MODELS

        SCHEMA_MODELS[schema_name].model_validate_json(json.dumps(doc))
        return
    schema = _schemas()[schema_name]
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        _fail(f"{schema_name} does not validate against specs/schemas/{schema_name}.schema.json at "
              f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}")


def check_report_schema(target: str, model: str) -> None:
    import hal
    from hal.plugins import get_target
    from hal.specs import CompileOptions

    tgt = get_target(target)
    _validate(tgt.spec.model_dump(mode="json"), "TargetSpec")
    _validate(tgt.capability(_graph(model), CompileOptions()).model_dump(mode="json"), "Capability")
    exe = hal.compile(_model(model), target=target)
    _validate(exe.report.model_dump(mode="json"), "CompileReport")
    sess = hal.InferenceSession(_model(model), target=target)
    sess.run(None, feeds_for(sess.graph))
    _validate(sess.report.model_dump(mode="json"), "CompileReport")
    _validate(sess.last_run.model_dump(mode="json"), "RunReport")


def _program_structure(exe: Any) -> Any:
    program = getattr(exe, "program", None)
    steps = getattr(program, "steps", None)
    if steps is not None:
        return [(getattr(s, "op_type", ""), list(getattr(s, "ins", [])), list(getattr(s, "outs", []))) for s in steps]
    return None


def check_compile_deterministic(target: str, model: str) -> None:
    import hal

    a, b = hal.compile(_model(model), target=target), hal.compile(_model(model), target=target)
    ra = a.report.model_dump(mode="json", exclude={"compile_time_s"})
    rb = b.report.model_dump(mode="json", exclude={"compile_time_s"})
    if json.dumps(ra, sort_keys=True) != json.dumps(rb, sort_keys=True):
        diff = sorted(k for k in ra if ra[k] != rb.get(k))
        _fail(f"two compiles of the same model give different reports (fields: {', '.join(diff)})")
    if json.dumps(a.trace(), sort_keys=True, default=str) != json.dumps(b.trace(), sort_keys=True, default=str):
        _fail("two compiles of the same model give different program timelines (trace())")
    if _program_structure(a) != _program_structure(b):
        _fail("two compiles of the same model give programs with different steps")


def check_run_deterministic(target: str, model: str) -> None:
    import hal

    sess = hal.InferenceSession(_model(model), target=target)
    feeds = feeds_for(sess.graph)
    names = [o.name for o in sess.get_outputs()]
    first = dict(zip(names, sess.run(None, feeds)))
    second = dict(zip(names, sess.run(None, feeds)))
    _same(first, second, "two runs on the same feeds")


def check_capability_matches_compile(target: str, model: str) -> None:
    import hal
    from hal.errors import UnsupportedOpError
    from hal.plugins import get_target
    from hal.specs import CompileOptions

    tgt = get_target(target)
    graph = _graph(model)
    cap = tgt.capability(graph, CompileOptions())
    taken, refused = cap.supported_nodes(), {r.node for r in cap.refused}
    names = {n.name for n in graph.nodes}
    if taken & refused:
        _fail(f"capability both takes and refuses {sorted(taken & refused)[:5]}")
    if names - taken - refused:
        _fail(f"capability neither takes nor refuses {sorted(names - taken - refused)[:5]}")
    if taken - names:
        _fail(f"capability names nodes the graph lacks: {sorted(taken - names)[:5]}")
    if refused:
        try:
            hal.compile(_model(model), target=target)
        except UnsupportedOpError:
            pass
        else:
            _fail(f"capability refuses {sorted(refused)[:5]}, yet compile accepted the whole model")
        part = graph.subgraph(sorted(taken), name=f"{graph.name}/taken")
        if part.nodes:
            tgt.compile(part, CompileOptions())
    else:
        hal.compile(_model(model), target=target)


def check_refuses_unknown_op(target: str, model: str) -> None:
    import hal
    from hal.errors import UnsupportedOpError
    from hal.plugins import get_target
    from hal.specs import CompileOptions

    graph = _graph(model)
    cap = get_target(target).capability(graph, CompileOptions())
    unknown = [n.name for n in graph.nodes if n.op_type == "NoSuchOp"]
    if not set(unknown) <= {r.node for r in cap.refused}:
        _fail("capability does not refuse a node of an unknown op (custom domain, no kernel anywhere)")
    try:
        hal.compile(_model(model), target=target)
    except UnsupportedOpError:
        return
    _fail("compile accepted a model with an unknown op instead of raising UnsupportedOpError")


def check_bad_feeds(target: str, model: str) -> None:
    import hal
    from hal.errors import InputError

    sess = hal.InferenceSession(_model(model), target=target)
    good = feeds_for(sess.graph)
    name, value = next(iter(good.items()))
    other = np.float64 if value.dtype != np.float64 else np.float32
    bad: dict[str, Any] = {
        "a missing feed": {k: v for k, v in good.items() if k != name},
        "an extra feed": {**good, "no_such_input": value},
        "a wrong dtype": {**good, name: value.astype(other)},
        "a wrong rank": {**good, name: value.reshape(1, *value.shape)},
        "a wrong shape": {**good, name: np.concatenate([value, value], axis=-1)},
        "a list instead of an array": {**good, name: value.tolist()},
        "feeds that are not a dict": [value],
    }
    for what, feeds in bad.items():
        try:
            sess.run(None, feeds)
        except InputError:
            continue
        except Exception as e:
            _fail(f"{what} raised {type(e).__name__}, not hal.InputError: {str(e)[:200]}")
        _fail(f"{what} was accepted; it must raise hal.InputError")


def check_serialize_roundtrip(target: str, model: str) -> None:
    import hal
    from hal.plugins import get_target

    exe = hal.compile(_model(model), target=target)
    blob = exe.serialize()
    if not isinstance(blob, (bytes, bytearray)):
        _fail(f"serialize() returned {type(blob).__name__}, not bytes")
    loaded = get_target(target).load(bytes(blob))
    feeds = feeds_for(_graph(model))
    _same(exe.run(feeds), loaded.run(feeds), "an executable and its serialised copy")
    a = exe.report.model_dump(mode="json", exclude={"compile_time_s"})
    b = loaded.report.model_dump(mode="json", exclude={"compile_time_s"})
    if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
        _fail("the loaded executable reports differently from the one serialised")


CHECKS: dict[str, Callable[[str, str], None]] = {
    "report_schema": check_report_schema,
    "compile_deterministic": check_compile_deterministic,
    "run_deterministic": check_run_deterministic,
    "capability_matches_compile": check_capability_matches_compile,
    "bad_feeds_raise_input_error": check_bad_feeds,
    "serialize_roundtrip": check_serialize_roundtrip,
}


def contract_cases() -> list[ContractCase]:
    """Every check on every contract model, plus the unknown-op refusal."""
    cases = [ContractCase(f"test_contract_{check}_{model.replace('-', '_')}", fn, model)
             for model in CONTRACT_MODELS for check, fn in CHECKS.items()]
    cases.append(ContractCase("test_contract_capability_refuses_unknown_op", check_refuses_unknown_op, "unknown-op"))
    return cases
