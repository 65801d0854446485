"""API contract tests every target must pass, whatever its numerics.

On the runnable zoo models (a ResNet-style CNN and a GPT-style decoder) a target must: fill a report
that validates against the JSON Schema in specs/schemas; compile the same model twice into the
same program; run twice with identical outputs; compile exactly what its ``capability`` says it
takes; reject bad feeds with ``hal.InputError``; and give identical outputs from an executable
serialised and loaded back. A model with an op no target knows checks that ``capability`` refuses
what ``compile`` cannot take.

The checks of what a run hands back and what compile leaves and reports are in
``hal.conformance.contract_program``; the models, feeds and failure every check shares in
``hal.conformance.contract_support``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from hal.conformance.contract_program import (
    check_compile_leaves_graph,
    check_feeds_unchanged,
    check_outputs_owned,
    check_report_matches_program,
    check_run_outputs,
    check_run_thread_safe,
    check_runs_own_program,
    check_shape_only_compiles,
    check_spec_hardware_sourced,
    check_trace_events,
)
from hal.conformance.contract_support import (
    CONTRACT_MODELS,
    ContractCase,
    _fail,
    _graph,
    _model,
    _same,
    feeds_for,
)

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
    from hal.target import foreign_dtype

    for n in graph.nodes:
        if n.name in taken and (why := foreign_dtype(n, graph, tgt.spec)):
            _fail(f"capability takes node {n.name!r} ({n.op_type}), but {why}: a target whose spec lists dtypes "
                  "MUST refuse every node of another type (hal.target.kernel_capability does, given the spec)")
    if refused:
        try:
            hal.compile(_model(model), target=target)
        except UnsupportedOpError:
            pass
        else:
            _fail(f"capability refuses {sorted(refused)[:5]}, yet compile accepted the whole model")
        part = graph.subgraph(sorted(taken), name=f"{graph.name}/taken")
        if part.nodes:
            _compile_taken(lambda: tgt.compile(part, CompileOptions()), "the nodes it takes")
    else:
        _compile_taken(lambda: hal.compile(_model(model), target=target), "every node")


def _compile_taken(compile_: Callable[[], Any], what: str) -> None:
    """``compile_()``; an UnsupportedOpError from it breaks 'compile accepts every node capability takes'."""
    from hal.errors import UnsupportedOpError

    try:
        compile_()
    except UnsupportedOpError as e:
        nodes = [n[0] if isinstance(n, (tuple, list)) else str(n) for n in (getattr(e, "nodes", None) or [])]
        _fail(f"capability takes {what}, yet compile refused {sorted(nodes)[:5] or 'them'} with UnsupportedOpError "
              f"({' '.join(str(e).split())[:300]}): compile MUST accept every node capability puts in a group")


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
    "run_returns_graph_outputs": check_run_outputs,
    "runs_own_program": check_runs_own_program,
    "run_leaves_feeds_unchanged": check_feeds_unchanged,
    "outputs_owned_by_caller": check_outputs_owned,
    "run_thread_safe": check_run_thread_safe,
    "compile_leaves_graph_unchanged": check_compile_leaves_graph,
    "report_matches_program": check_report_matches_program,
    "trace_events_valid": check_trace_events,
    "shape_only_weights_compile": check_shape_only_compiles,
}


#: the checks that run on a contract model whole even where the target refuses some of its nodes; every
#: other check runs on the part of the model the target takes (contract_support.taken_part)
WHOLE_MODEL_CHECKS = frozenset({"capability_matches_compile"})


def contract_cases() -> list[ContractCase]:
    """Every check on every contract model, plus the unknown-op refusal and the spec's sources."""
    cases = [ContractCase(f"test_contract_{check}_{model.replace('-', '_')}", fn, model,
                          whole=check in WHOLE_MODEL_CHECKS)
             for model in CONTRACT_MODELS for check, fn in CHECKS.items()]
    cases.append(ContractCase("test_contract_capability_refuses_unknown_op", check_refuses_unknown_op, "unknown-op"))
    cases.append(ContractCase("test_contract_spec_hardware_sourced", check_spec_hardware_sourced, ""))
    return cases
