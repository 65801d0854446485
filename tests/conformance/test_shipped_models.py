"""The small models onnx ships with their data sets (pytorch-converted, pytorch-operator, simple), as
cases of the full profile: every target matches their expected outputs, but for the failures its
manifest lists — Gradient (``ai.onnx.preview.training``), which no target runs, on the LPU the
sequences whose element counts it cannot lay out before the run, and on the LPU and the wafer the
float64 models their specs' dtypes leave out. (Before opset 7, PRelu's slope of
one value per channel applied along axis 1: three ``PReLU_*_multiparam`` models showed it.)"""

from __future__ import annotations

import pytest

from hal.conformance.cases import shipped_cases
from hal.conformance.check import CaseFailure, check_case
from hal.conformance.profiles import load_manifest, manifest_path
from hal.conformance.suite import select_cases

CASES = shipped_cases()
TARGETS = ["cpu", "gpu", "lpu", "wafer"]


def test_the_full_profile_runs_the_140_shipped_models_and_core_none() -> None:
    assert len(CASES) == 140 and len({c.name for c in CASES}) == 140
    assert all(c.kind == "model" and (c.rtol, c.atol) == (1e-3, 1e-7) for c in CASES)
    assert sum(c.kind == "model" for c in select_cases("full")) == 140
    assert not any(c.kind == "model" for c in select_cases("core"))
    assert {c.name.split("/")[0] for c in CASES} == {"pytorch-converted", "pytorch-operator", "simple"}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_shipped_model_gives_its_expected_outputs_or_its_listed_failure(case, target: str) -> None:
    expected = load_manifest(manifest_path(target)).get(case.name)
    if expected is None:
        check_case(case, target)
        return
    with pytest.raises(CaseFailure) as failure:
        check_case(case, target)
    assert failure.value.cause == expected.cause
