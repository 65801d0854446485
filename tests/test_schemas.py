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
