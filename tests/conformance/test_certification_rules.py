"""What a certification run holds a target to, beyond each case's own check: a plugin's failing case hook
is its own failure, the API contract is never waived (and holds a target that refuses some nodes of the
contract models on the part it takes), manifests are the target's own and expect a cause, a precision the
target does not offer stops the run up front, a host's missing package is not the target's failure, and
`hal conformance` says what to install when pytest or pytest-xdist is missing."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper

import hal
import hal.plugins
from hal.conformance.cases import node_cases, plugin_cases
from hal.conformance.contract import contract_cases
from hal.conformance.profiles import (
    ManifestEntry,
    load_manifest,
    target_manifest,
    write_manifest,
)
from hal.conformance.report import ConformanceReport
from hal.conformance.suite import run_suite, select_cases
from hal.errors import InputError, UnsupportedOpError
from hal.specs import Capability, NodeGroup, Refusal


@pytest.fixture(autouse=True)
def _formatwarning_put_back(monkeypatch) -> None:
    import warnings

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # hal.cli.main sets it for the process


def _neg_case(name: str) -> Any:
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Neg", ["x"], ["y"])], "neg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])]), opset_imports=[helper.make_opsetid("", 17)])
    x = np.arange(3, dtype=np.float32)
    return types.SimpleNamespace(name=name, model=model, data_sets=[([x], [-x])], rtol=1e-3, atol=1e-7)


def _case_plugin(hook: Any) -> Any:
    class Plugin:
        HAL_API_VERSION = "1.0"

        @hal.hookimpl
        def hal_conformance_cases(self):
            return hook()

    return Plugin()


@pytest.fixture
def case_plugins() -> Iterator[Any]:
    """Register in-process plugins that only contribute conformance cases; unregistered after the test."""
    names: list[str] = []

    def add(name: str, hook: Any) -> None:
        rec = hal.plugins.register(_case_plugin(hook), name, distribution="acme-cases")
        assert rec.ok, rec.error
        names.append(name)

    yield add
    for n in names:
        hal.plugins.unregister(n)


# --- C: a plugin's case hook that fails -----------------------------------------------------------------


def _boom():
    raise RuntimeError("case generator broken")


def test_a_raising_case_hook_fails_a_case_of_its_plugin_and_every_other_case_still_runs(case_plugins) -> None:
    """It had escaped select_cases, so no case was collected on any target, cpu included, and `hal
    conformance cpu -k relu` blamed the user: "no case matched -k 'relu'"."""
    from hal.conformance.cases import BrokenPluginCase

    case_plugins("raising-cases", _boom)
    case_plugins("exiting-cases", lambda: sys.exit(3))
    case_plugins("good-cases", lambda: [_neg_case("test_vendor_neg"), object()])
    cases = {c.name: c for c in select_cases("core")}  # collecting does not raise
    assert "test_relu" in cases and "test_vendor_neg" in cases
    broken = {c.name: c for c in plugin_cases() if isinstance(c, BrokenPluginCase)}
    assert set(broken) == {"hal_conformance_cases[raising-cases]", "hal_conformance_cases[exiting-cases]",
                           "hal_conformance_cases[good-cases][1]"}
    results = {r.name: r for r in run_suite("cpu", "core", cases=[cases["test_relu"], cases["test_vendor_neg"],
                                                                   *broken.values()])}
    assert results["test_relu"].outcome == results["test_vendor_neg"].outcome == "passed"
    raised = results["hal_conformance_cases[raising-cases]"]
    assert (raised.outcome, raised.cause, raised.op) == ("failed", "plugin", "plugin cases")
    assert raised.message.startswith("plugin 'raising-cases' (distribution 'acme-cases'): hook hal_conformance_cases "
                                     "raised RuntimeError: case generator broken — report it to the plugin's authors")
    assert "SystemExit (sys.exit(3))" in results["hal_conformance_cases[exiting-cases]"].message
    assert "not a conformance case" in results["hal_conformance_cases[good-cases][1]"].message


def test_keyboard_interrupt_in_a_case_hook_stops_the_run(case_plugins) -> None:
    def interrupted():
        raise KeyboardInterrupt

    case_plugins("interrupted-cases", interrupted)
    with pytest.raises(KeyboardInterrupt):
        plugin_cases()


def test_hal_conformance_runs_with_a_raising_case_hook_and_names_the_plugin(case_plugins, tmp_path, capsys) -> None:
    from hal.cli import main

    case_plugins("raising-cases", _boom)
    out = tmp_path / "r.json"
    assert main(["conformance", "cpu", "-k", "test_relu", "--json", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())  # (rich folds long lines)
    assert "note: hal_conformance_cases[raising-cases] was not selected by -k: plugin 'raising-cases'" in printed
    assert main(["conformance", "cpu", "-k", "test_relu or hal_conformance_cases", "--json", str(out)]) == 1
    report = ConformanceReport.model_validate_json(out.read_text())
    assert {r.name for r in report.cases if r.outcome == "failed"} == {"hal_conformance_cases[raising-cases]"}
    assert "RuntimeError: case generator broken" in " ".join(capsys.readouterr().out.split())


def test_a_suite_that_stops_while_collecting_says_so_not_that_k_matched_nothing(monkeypatch, capsys) -> None:
    import hal.conformance.suite
    from hal.cli import main

    def broken(profile):
        raise RuntimeError("collection broke")

    monkeypatch.setattr(hal.conformance.suite, "select_cases", broken)
    assert main(["conformance", "cpu", "-k", "test_relu", "-n", "0"]) == 2  # (-n 0: where the patch holds)
    out = capsys.readouterr()
    assert "the suite did not run to the end (pytest exit 2" in out.out and "no case matched" not in out.out + out.err


# --- E: the API contract ------------------------------------------------------------------------------------


class NoErf:
    """lpu, less an Erf unit: refuses every Erf node (tiny-gpt's GELUs); ``noisy`` also breaks run determinism."""

    def __init__(self, name: str, noisy: bool = False, takes_nothing: bool = False):
        self.noisy, self.takes_nothing = noisy, takes_nothing
        self.spec = hal.plugins.get_target("lpu").spec.model_copy(update={"name": name}, deep=True)

    @property
    def base(self) -> Any:
        return hal.plugins.get_target("lpu")

    def _refuses(self, node: Any) -> bool:
        return self.takes_nothing or node.op_type == "Erf"

    def capability(self, graph, options) -> Capability:
        cap = self.base.capability(graph, options)
        no = {n.name for n in graph.nodes if self._refuses(n)}
        return Capability(target=self.spec.name,
                          groups=[NodeGroup(nodes=g.nodes) for g in cap.groups if not set(g.nodes) & no],
                          refused=[*cap.refused, *(Refusal(node=n.name, op_type=n.op_type, reason="no erf unit")
                                                   for n in graph.nodes if n.name in no)])

    def _renamed(self, exe: Any) -> Any:
        exe.report.target = self.spec.name
        if self.noisy:
            run, rng = exe.run, np.random.default_rng()
            exe.run = lambda feeds: {k: v + rng.standard_normal(v.shape).astype(v.dtype) for k, v in run(feeds).items()}
        return exe

    def compile(self, graph, options) -> Any:
        if no := [n for n in graph.nodes if self._refuses(n)]:
            raise UnsupportedOpError("no erf unit", where=f"target {self.spec.name!r}",
                                     nodes=[(n.name, n.op_type, "no erf unit") for n in no])
        return self._renamed(self.base.compile(graph, options))

    def load(self, blob: bytes) -> Any:
        return self._renamed(self.base.load(blob))


@pytest.fixture(scope="module")
def no_erf() -> Iterator[None]:
    class Plugin:
        HAL_API_VERSION = "1.0"

        def __init__(self):
            self.targets = [NoErf("no-erf"), NoErf("no-erf-noisy", noisy=True),
                            NoErf("takes-nothing", takes_nothing=True)]

        @hal.hookimpl
        def hal_targets(self):
            return self.targets

    rec = hal.plugins.register(Plugin(), "no-erf-vendor", distribution="acme-no-erf")
    assert rec.ok, rec.error
    yield
    hal.plugins.unregister("no-erf-vendor")


GPT_CHECKS = ("capability_matches_compile", "run_deterministic", "report_matches_program", "runs_own_program",
              "serialize_roundtrip", "bad_feeds_raise_input_error")


def _gpt_cases(*checks: str) -> list[Any]:
    names = {f"test_contract_{c}_tiny_gpt" for c in checks}
    return [c for c in contract_cases() if c.name in names]


def test_a_target_refusing_some_nodes_is_held_to_the_contract_on_the_part_it_takes(no_erf) -> None:
    """Every contract case on tiny-gpt had failed with UnsupportedOpError for a target without Erf, leaving it
    only the manifest to pass with: the contract waived."""
    results = run_suite("no-erf", "core", cases=_gpt_cases(*GPT_CHECKS))
    assert [r.outcome for r in results] == ["passed"] * len(GPT_CHECKS), [r.message for r in results]
    notes = {r.name: r.message for r in results}
    assert notes.pop("test_contract_capability_matches_compile_tiny_gpt") is None  # the whole model
    assert set(notes.values()) == {"checked on the part of zoo:tiny-gpt target 'no-erf' takes: 70 of 72 nodes "
                                   "(it refuses Erf)"}


def test_on_that_part_a_breach_is_still_caught(no_erf) -> None:
    (r,) = run_suite("no-erf-noisy", "core", cases=_gpt_cases("run_deterministic"))
    assert (r.outcome, r.cause) == ("failed", "contract") and "two runs on the same feeds" in r.message


def test_a_target_that_takes_no_node_of_a_contract_model_breaks_the_contract(no_erf) -> None:
    (r,) = run_suite("takes-nothing", "core", cases=_gpt_cases("run_deterministic"))
    assert (r.outcome, r.cause) == ("failed", "contract") and "takes no node of zoo:tiny-gpt" in r.message


def _manifest(tmp_path, body: str, target: str = "acme-npu") -> Any:
    p = tmp_path / "xfail.toml"
    p.write_text(f'target = "{target}"\n' + body)
    return p


@pytest.mark.parametrize("entry", [
    '[[xfail]]\ncase = "test_contract_run_deterministic_tiny_gpt"\nop = "api contract"\ncause = "refused"\n'
    'reason = "no erf"\n',
    '[[xfail]]\ncase = "test_relu"\ncause = "contract"\nreason = "r"\n',
])
def test_a_manifest_cannot_waive_the_contract(tmp_path, entry: str) -> None:
    """--write-manifest had written the contract failures as entries, and the next run passed with them xfailed."""
    p = _manifest(tmp_path, entry)
    with pytest.raises(InputError, match="API contract case.*the contract cannot be waived") as e:
        load_manifest(p, "acme-npu")
    assert e.value.where == str(p) and "specs/interface.md section 10" in e.value.hint


def test_a_written_manifest_leaves_out_the_contract_the_host_and_plugin_hooks(tmp_path) -> None:
    p = tmp_path / "xfail.toml"
    write_manifest(p, "acme-npu", [ManifestEntry("test_contract_run_deterministic_tiny_gpt", "api contract",
                                                 "contract", "contract: UnsupportedOpError"),
                                   ManifestEntry("test_image_decoder_decode_png_rgb", "ImageDecoder", "environment",
                                                 "environment: Pillow"),
                                   ManifestEntry("hal_conformance_cases[acme]", "plugin cases", "plugin",
                                                 "plugin: hook hal_conformance_cases raised RuntimeError"),
                                   ManifestEntry("test_erf", "Erf", "refused", "refused: no erf unit")],
                   profile="core")
    assert set(load_manifest(p, "acme-npu")) == {"test_erf"}


def test_the_report_says_a_run_left_contract_failures_out_of_its_manifest() -> None:
    from hal.conformance.report import CaseResult

    report = ConformanceReport.build([CaseResult(name="test_contract_x", op="api contract", kind="contract",
                                                 outcome="failed", cause="contract", message="m")],
                                     target="cpu", profile="core")
    assert report.not_written().startswith("1 API contract failure(s): the contract cannot be waived")


# --- F: pytest and pytest-xdist are not hal-sdk's dependencies ------------------------------------------------


def test_without_pytest_hal_conformance_says_what_to_install(monkeypatch, capsys) -> None:
    """It had been `internal error: ModuleNotFoundError: No module named 'pytest'`."""
    from hal.cli import main

    monkeypatch.setitem(sys.modules, "pytest", None)  # as if it were not installed
    assert main(["conformance", "cpu", "-k", "test_relu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: InputError: hal conformance: hal conformance runs the suite through pytest, which "
                          "is not installed — pip install 'hal-sdk[conformance]'"), err


def test_without_pytest_xdist_n_says_what_to_install(monkeypatch, capsys) -> None:
    """It had been `pytest.main(): error: unrecognized arguments: -n`."""
    import pytest as real_pytest

    from hal.cli import main
    from hal.conformance.command import check_runner

    monkeypatch.setattr(real_pytest, "main", lambda *a, **k: real_pytest.fail("the suite started"))
    monkeypatch.setitem(sys.modules, "xdist", None)
    monkeypatch.setitem(sys.modules, "xdist.plugin", None)
    assert main(["conformance", "cpu", "-n", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: InputError: command line: -n 4 runs the suite in worker processes through "
                          "pytest-xdist, which is not installed — pip install 'hal-sdk[conformance]'"), err
    for workers in (None, "0", "1"):  # one process needs no xdist
        check_runner(workers)
    with pytest.raises(InputError, match="pytest-xdist"):
        check_runner("auto")


# --- K: a precision the target does not offer -------------------------------------------------------------------


def test_a_precision_the_target_does_not_offer_stops_the_run_before_any_case(monkeypatch) -> None:
    """Every case had run, each failing as "error" (0/52 passed, 24 error)."""
    from hal.conformance.profiles import check_target_precision

    with pytest.raises(InputError, match=r"^--precision: target 'cpu' does not offer precision 'bf16' — it offers: "
                                         r"exact$"):
        check_target_precision("cpu", "bf16", where="--precision")
    with pytest.raises(InputError, match="does not offer precision 'fp16'"):
        run_suite("cpu", "core", precision="fp16", cases=[])
    assert check_target_precision("gpu", "bf16") == "bf16"
    assert check_target_precision("no-such-target", "bf16") == "bf16"  # the target's own check says more


def test_pytest_refuses_a_precision_the_target_does_not_offer(tmp_path) -> None:
    from _support import run_pytest

    r = run_pytest(tmp_path, "--hal-target", "cpu", "--hal-precision", "bf16", "-k", "test_relu")
    assert r.returncode == 4, r.stdout[-2000:] + r.stderr
    assert "ERROR: --hal-precision: target 'cpu' does not offer precision 'bf16' — it offers: exact" in r.stderr


# --- L: manifests ---------------------------------------------------------------------------------------------------


def _bernoulli_seed() -> list[Any]:
    return [c for c in node_cases() if c.name == "test_bernoulli_seed"]  # cpu's draws are not onnx's: wrong numbers


@pytest.mark.parametrize(("cause", "outcome"), [("wrong numbers", "xfailed"), ("", "xfailed"), ("refused", "failed")])
def test_a_manifest_entry_expects_its_cause(cause: str, outcome: str) -> None:
    """A case listed as "refused" that failed with wrong numbers had counted as an expected failure."""
    manifest = {"test_bernoulli_seed": ManifestEntry("test_bernoulli_seed", "Bernoulli", cause, "draws differ")}
    (r,) = run_suite("cpu", "full", cases=_bernoulli_seed(), manifest=manifest)
    assert (r.outcome, r.cause) == (outcome, "wrong numbers")
    if outcome == "failed":
        assert r.message.startswith("the manifest expects this case to fail with cause 'refused' (draws differ); it "
                                    "failed with cause 'wrong numbers': data set 0: ")


def test_a_manifest_for_another_target_is_refused(tmp_path, capsys, monkeypatch) -> None:
    """A manifest with target = "acme-npu" had been used for kite-npu without a word."""
    from hal.cli import main

    p = _manifest(tmp_path, '[[xfail]]\ncase = "test_relu"\ncause = "refused"\nreason = "r"\n')
    with pytest.raises(InputError, match="this expected-failure manifest is for target 'acme-npu', not 'cpu'"):
        target_manifest("cpu", str(p))
    assert set(target_manifest("acme-npu", str(p))[1]) == {"test_relu"}
    monkeypatch.setattr(pytest, "main", lambda *a, **k: pytest.fail("the suite started"))
    assert main(["conformance", "cpu", "--manifest", str(p)]) == 2
    assert "error: InputError: " in capsys.readouterr().err


def test_a_case_that_needs_a_package_the_host_lacks_is_skipped_and_never_written(monkeypatch, tmp_path) -> None:
    """--profile full --write-manifest had written ImageDecoder's "Pillow, which is not installed" into the
    vendor's manifest, as the target's own expected failure."""
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    cases = [c for c in node_cases() if c.name == "test_image_decoder_decode_png_rgb"]
    manifest = {"test_image_decoder_decode_png_rgb": ManifestEntry("test_image_decoder_decode_png_rgb", "ImageDecoder",
                                                                   "error", "pillow")}
    for m in ({}, manifest):
        (r,) = run_suite("cpu", "full", cases=cases, manifest=m)
        assert (r.outcome, r.cause) == ("skipped", "environment"), r
        assert "this host lacks the Python package 'PIL' hal needs here" in r.message
    report = ConformanceReport.build([r], target="cpu", profile="full")
    assert report.ok and report.totals.skipped == 1
    p = _manifest(tmp_path, '[[xfail]]\ncase = "test_image_decoder_decode_png_rgb"\ncause = "environment"\n'
                            'reason = "r"\n', target="cpu")
    with pytest.raises(InputError, match="for want of a package on the host"):
        load_manifest(p, "cpu")


def test_a_module_missing_from_a_plugins_own_code_is_its_failure_not_the_hosts() -> None:
    from hal.conformance.check import missing_dependency

    vendor = types.ModuleType("acme_vendor_runtime")
    exec("def run():\n    import acme_npu_driver_that_is_not_installed\n", vendor.__dict__)
    try:
        vendor.run()
    except ModuleNotFoundError as e:
        assert missing_dependency(e) is None
        try:
            raise hal.PluginError("run raised", plugin="acme") from e
        except hal.PluginError as outer:
            assert missing_dependency(outer) is None
    else:
        pytest.fail("the import did not fail")

