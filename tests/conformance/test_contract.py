"""The API contract: the cpu target keeps it, and a target breaking any clause is caught by that clause."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest
from hal_cpu.compiler import CpuTarget

import hal
import hal.plugins
from hal.conformance.check import CaseFailure
from hal.conformance.contract import ContractCase, contract_cases
from hal.conformance.profiles import load_manifest, manifest_path
from hal.specs import Capability, NodeGroup


def _params():
    xfail = load_manifest(manifest_path("cpu"))
    return [pytest.param(c, id=c.name, marks=[pytest.mark.xfail(reason=xfail[c.name].reason, strict=False)]
                         if c.name in xfail else []) for c in contract_cases()]


@pytest.mark.parametrize("case", _params())
def test_cpu_keeps_the_contract(case: ContractCase) -> None:
    case.run("cpu")


class _Broken(CpuTarget):
    def __init__(self, name: str):
        super().__init__()
        self.spec = self.spec.model_copy(update={"name": name})


class NoisyRun(_Broken):
    """Runs are not reproducible."""

    def compile(self, graph, options):
        exe = super().compile(graph, options)
        run, rng = exe.run, np.random.default_rng()

        def noisy(feeds):
            return {k: v + rng.standard_normal(v.shape).astype(v.dtype) if v.dtype.kind == "f" else v
                    for k, v in run(feeds).items()}

        exe.run = noisy
        return exe


class GreedyCapability(_Broken):
    """Claims every node, even those it has no kernel for."""

    def capability(self, graph, options):
        return Capability(target=self.spec.name, groups=[NodeGroup(nodes=[n.name for n in graph.nodes])])


class BadReport(_Broken):
    """Fills the report with a value the schema refuses."""

    def compile(self, graph, options):
        exe = super().compile(graph, options)
        exe.report.kernel_count = "many"
        return exe


class DriftingCompile(_Broken):
    """Each compile reports something different."""

    counter = itertools.count()

    def compile(self, graph, options):
        exe = super().compile(graph, options)
        exe.report.details["build"] = next(self.counter)
        return exe


class LossyLoad(_Broken):
    """An executable loaded back computes something else."""

    def load(self, blob):
        exe = super().load(blob)
        run = exe.program.run
        exe.program.run = lambda feeds: {k: v * 2 for k, v in run(feeds).items()}
        return exe


class BrokenPlugin:
    HAL_API_VERSION = "1.0"

    @hal.hookimpl
    def hal_targets(self):
        return [NoisyRun("noisy-run"), GreedyCapability("greedy-capability"), BadReport("bad-report"),
                DriftingCompile("drifting-compile"), LossyLoad("lossy-load")]


@pytest.fixture(scope="module")
def broken() -> Iterator[None]:
    rec = hal.plugins.register(BrokenPlugin(), "broken-targets")
    assert rec.ok, rec.error
    yield
    hal.plugins.unregister("broken-targets")


@pytest.mark.parametrize(("target", "check"), [
    ("noisy-run", "run_deterministic_tiny_cnn"),
    ("greedy-capability", "capability_refuses_unknown_op"),
    ("bad-report", "report_schema_tiny_cnn"),
    ("drifting-compile", "compile_deterministic_tiny_cnn"),
    ("lossy-load", "serialize_roundtrip_tiny_cnn"),
])
def test_a_target_breaking_a_clause_fails_that_check(broken, target: str, check: str) -> None:
    case = next(c for c in contract_cases() if c.name == f"test_contract_{check}")
    with pytest.raises(CaseFailure) as e:
        case.run(target)
    assert e.value.cause == "contract"
    # ... and only that clause: those targets still run reproducibly
    if target in ("drifting-compile", "lossy-load"):
        next(c for c in contract_cases() if c.name == "test_contract_run_deterministic_tiny_cnn").run(target)
