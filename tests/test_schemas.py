"""specs/schemas/ is the JSON Schema of the wire models; the committed copies must not drift."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from hal.specs import SCHEMA_MODELS, json_schemas

SCHEMAS = Path(__file__).resolve().parent.parent / "specs" / "schemas"


def test_committed_schemas_match_the_models():
    for name, schema in json_schemas().items():
        committed = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
        assert committed == schema, f"{name} drifted: run `python -m hal.specs` and commit specs/schemas/"
    assert {p.name.split(".")[0] for p in SCHEMAS.glob("*.schema.json")} == set(SCHEMA_MODELS)


def test_reports_of_every_installed_target_validate_against_the_schema():
    import hal

    schema = json.loads((SCHEMAS / "CompileReport.schema.json").read_text())
    for spec in hal.targets():
        if spec.name.startswith("example"):
            continue
        exe = hal.compile("zoo:tiny-cnn", target=spec.name)
        jsonschema.validate(exe.report.model_dump(mode="json"), schema)
        jsonschema.validate(spec.model_dump(mode="json"), json.loads((SCHEMAS / "TargetSpec.schema.json").read_text()))


def test_models_given_every_field_share_one_field_set_and_still_track_what_was_set():
    import pickle

    from hal.specs import KernelReport, NodePlacement

    full = [NodePlacement(node=f"n{i}", op_type="Add", target="cpu", partition=0, reason=None) for i in range(3)]
    assert len({id(p.model_fields_set) for p in full}) == 1
    assert full[0].model_fields_set == set(NodePlacement.model_fields)
    partial = NodePlacement(node="p", op_type="Add", target="cpu", partition=0)
    assert partial.model_fields_set == {"node", "op_type", "target", "partition"}
    assert "reason" not in partial.model_dump(exclude_unset=True)
    # assignment, copies with updates and pickling never leak a name into another instance's set
    partial.reason = "fell back"
    assert partial.model_fields_set == set(NodePlacement.model_fields)
    assert partial.model_fields_set is not full[0].model_fields_set
    k = KernelReport(name="k")
    k2 = k.model_copy(update={"unit": "SM"})
    k.flops = 1.0
    assert k.model_fields_set == {"name", "flops"} and k2.model_fields_set == {"name", "unit"}
    assert KernelReport(name="j").model_fields_set == {"name"}
    back = pickle.loads(pickle.dumps(full))
    assert back == full and back[0].model_fields_set == set(NodePlacement.model_fields)
    full[1].node = "renamed"
    assert full[0].model_fields_set == set(NodePlacement.model_fields) and full[0].node == "n0"
