"""Certification profiles and expected-failure manifests."""

from __future__ import annotations

import re

import pytest

from hal.conformance.cases import node_cases
from hal.conformance.check import Tolerance
from hal.conformance.profiles import (
    ManifestEntry,
    check_precision,
    load_manifest,
    load_profile,
    manifest_path,
    manifest_reason,
    specs_dir,
    target_manifest,
    write_manifest,
)
from hal.conformance.suite import select_cases
from hal.errors import HalError, InputError
from hal.specs import Precision


def test_core_lists_cnn_and_transformer_ops_that_all_have_node_cases() -> None:
    core = load_profile("core")
    assert core.ops is not None
    ops_with_cases = {c.op for c in node_cases()}
    assert core.ops <= ops_with_cases, sorted(core.ops - ops_with_cases)
    assert {"Conv", "BatchNormalization", "MaxPool", "Gemm", "MatMul", "Softmax", "LayerNormalization",
            "Attention", "Gelu", "Gather", "Reshape", "Transpose"} <= core.ops


def test_full_selects_every_node_case_and_core_a_subset_of_it() -> None:
    full, core = select_cases("full"), select_cases("core")
    assert sum(c.kind == "node" for c in full) == len(node_cases())
    assert {c.name for c in core} < {c.name for c in full}
    for cases in (full, core):
        assert sum(c.kind == "light" for c in cases) == 9
        assert any(c.kind == "contract" for c in cases)


def test_both_profiles_give_a_tolerance_for_every_precision() -> None:
    precisions = set(Precision.__args__)
    for name in ("core", "full"):
        prof = load_profile(name)
        assert set(prof.tolerances) == precisions
        assert prof.tolerance("exact") == Tolerance(0.0, 0.0)  # exact: each case's own rtol/atol
        assert prof.tolerance("fp8").rtol > prof.tolerance("bf16").rtol > prof.tolerance("fp16").rtol


def test_tolerance_floors_only_widen_a_case_tolerance() -> None:
    assert Tolerance(1e-2, 1e-3).widen(1e-3, 1e-7) == (1e-2, 1e-3)
    assert Tolerance().widen(1e-3, 1e-7) == (1e-3, 1e-7)


def test_an_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(HalError, match="core, full"):
        load_profile("nope")


def test_a_profile_file_can_be_given_by_path(tmp_path) -> None:
    p = tmp_path / "mine.toml"
    p.write_text('[profile]\nname = "mine"\nops = ["Relu"]\nlight_models = false\ncontract = false\n')
    cases = select_cases(str(p))
    assert cases and {c.op for c in cases} == {"Relu"}


@pytest.mark.parametrize(("toml", "says"), [
    ("profile = 3\n", "profile should be a table, got 3"),
    ('[tolerances.fp16]\nrtol = "abc"\n', "tolerances.fp16.rtol should be a valid number, got 'abc'"),
    ("[tolerances]\nfp16 = 3\n", "tolerances.fp16 should be a table, got 3"),
    ("[tolerances.fp16]\natol = -1\n", "tolerances.fp16.atol should be greater than or equal to 0"),
    ("[tolerances.fp99]\nrtol = 0.1\n", "tolerances.fp99 should be 'exact', 'native'"),
    ('[profile]\nlight_models = "yes"\n', "profile.light_models should be a valid boolean"),
    ('[profile]\nops = "Conv"\n', 'profile.ops must be "*" or a list of op types'),
    ("[profile]\nopz = []\n", "profile.opz is not a known key"),
    ("[profile\n", "not valid TOML"),
])
def test_a_malformed_profile_file_is_an_input_error_naming_the_file_and_the_key(tmp_path, toml, says) -> None:
    """A profile of the wrong structure or types had crashed the loader (AttributeError, ValueError)."""
    p = tmp_path / "bad.toml"
    p.write_text(toml)
    with pytest.raises(InputError, match=re.escape(says)) as e:
        load_profile(p)
    assert e.value.where == str(p)


@pytest.mark.parametrize(("toml", "says"), [
    ("xfail = 3\n", "xfail should be an array, got 3"),
    ("xfail = [1]\n", "xfail[0] should be a table, got 1"),
    ('[[xfail]]\ncase = "a"\nreason = "r"\n[[xfail]]\ncase = 3\nreason = "r"\n',
     "xfail[1].case should be a valid string"),
    ('[[xfail]]\ncase = "a"\nreason = "r"\nwhy = "?"\n', "xfail[0].why is not a known key"),
])
def test_a_malformed_manifest_is_an_input_error_naming_the_file_the_entry_and_the_key(tmp_path, toml, says) -> None:
    """A manifest of the wrong structure had crashed the loader (TypeError)."""
    p = tmp_path / "xfail-x.toml"
    p.write_text(toml)
    with pytest.raises(InputError, match=re.escape(says)) as e:
        load_manifest(p)
    assert e.value.where == str(p)


def test_a_manifest_given_explicitly_must_exist_while_the_default_one_may_be_absent(tmp_path) -> None:
    """--manifest with a path that did not exist, or a folder, had run as with an empty manifest."""
    with pytest.raises(InputError, match="no such expected-failure manifest"):
        target_manifest("cpu", str(tmp_path / "nope.toml"))
    with pytest.raises(InputError, match="Is a directory|cannot read"):
        target_manifest("cpu", str(tmp_path))
    assert target_manifest("cpu", "none") == (None, {})
    assert target_manifest("no-such-target", None) == (manifest_path("no-such-target"), {})
    assert target_manifest("cpu", None) == (manifest_path("cpu"), load_manifest(manifest_path("cpu")))


def test_an_unknown_precision_names_the_known_ones() -> None:
    assert check_precision("fp16") == "fp16"
    with pytest.raises(InputError, match="unknown precision 'fp99'.*exact, native, fp32"):
        check_precision("fp99")


def test_every_shipped_manifest_entry_names_a_case_and_gives_a_reason() -> None:
    names = {c.name for c in select_cases("full")}
    manifests = sorted(specs_dir().glob("xfail-*.toml"))
    assert manifest_path("cpu") in manifests
    for path in manifests:
        entries = load_manifest(path)
        for e in entries.values():
            assert e.reason and e.op and e.cause, e
            assert e.case in names, f"{path.name}: {e.case} is not a case of the suite"


def test_every_shipped_manifest_is_as_write_manifest_writes_it(tmp_path) -> None:
    # their headers had kept a cause ("contract") that a manifest may no longer hold
    for path in sorted(specs_dir().glob("xfail-*.toml")):
        target = path.stem.removeprefix("xfail-")
        rewritten = write_manifest(tmp_path / path.name, target, load_manifest(path, target).values(), profile="full")
        assert rewritten.read_text() == path.read_text(), f"{path.name}: hal conformance {target} --profile full " \
                                                          "--write-manifest"


def test_every_installed_built_in_target_ships_its_manifest() -> None:
    # without one, certifying a built-in target reports its known limits as failures
    import hal

    for spec in hal.targets():
        assert manifest_path(spec.name).is_file(), f"hal conformance {spec.name} --profile full --write-manifest"


def test_a_vendor_targets_manifest_defaults_to_the_current_folder_not_hals_data(tmp_path, monkeypatch) -> None:
    """--write-manifest without a path had written a vendor target's manifest into hal's installed data."""
    import types

    import hal
    from hal import plugins

    class _Vendor:  # only its spec is read
        spec = hal.specs.TargetSpec(name="vendor-manifest", vendor="V", kind="other")

        def capability(self, graph, options): ...

        def compile(self, graph, options): ...

        def load(self, blob): ...

    ns = types.SimpleNamespace(HAL_API_VERSION="1.0", hal_targets=hal.hookimpl(lambda: [_Vendor()]))
    plugins.register(ns, "vendor-manifest-plugin", distribution="acme-hal")
    try:
        monkeypatch.chdir(tmp_path)
        assert manifest_path("vendor-manifest") == tmp_path / "xfail-vendor-manifest.toml"
        assert manifest_path("cpu") == specs_dir() / "xfail-cpu.toml"
    finally:
        plugins.unregister("vendor-manifest-plugin")


def test_manifest_round_trips_and_keeps_entries_of_cases_not_run(tmp_path) -> None:
    p = tmp_path / "xfail-x.toml"
    old = ManifestEntry("test_old", "Old", "no kernel", 'reason with "quotes" and \\ and ü')
    new = ManifestEntry("test_new", "New", "wrong numbers", "off by 1e-2")
    write_manifest(p, "x", [new], profile="core", keep=[old])
    back = load_manifest(p)
    assert back == {"test_old": old, "test_new": new}
    assert "hal conformance x --profile core --write-manifest" in p.read_text()
    assert load_manifest(tmp_path / "missing.toml") == {}


def test_a_manifest_entry_without_a_reason_is_refused(tmp_path) -> None:
    p = tmp_path / "xfail-x.toml"
    p.write_text('[[xfail]]\ncase = "test_abs"\n')
    with pytest.raises(HalError, match="reason"):
        load_manifest(p)


def test_manifest_reasons_keep_the_gist_of_the_failure() -> None:
    msg = ("model 'test_x': target 'cpu' refuses 1 node(s): X_0 (Resize): no kernel for Resize at opset 19; "
           "runs on: no installed target — register a kernel")
    assert manifest_reason("no kernel", msg) == "no kernel: no kernel for Resize at opset 19"
    assert manifest_reason("error", "data set 0: node 'a': boom — hint") == "error: node 'a': boom"


def test_cases_a_plugin_contributes_join_every_profile_and_run_like_node_cases() -> None:
    from types import SimpleNamespace

    import numpy as np
    from onnx import TensorProto, helper

    import hal
    import hal.plugins
    from hal.conformance.suite import run_suite

    model = helper.make_model(helper.make_graph(
        [helper.make_node("Neg", ["x"], ["y"])], "neg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])]), opset_imports=[helper.make_opsetid("", 17)])
    x = np.arange(3, dtype=np.float32)
    case = SimpleNamespace(name="test_vendor_neg", model=model, data_sets=[([x], [-x])], rtol=1e-3, atol=1e-7)

    class VendorCases:
        HAL_API_VERSION = "1.0"

        @hal.hookimpl
        def hal_conformance_cases(self):
            return [case]

    hal.plugins.register(VendorCases(), "vendor-cases")
    try:
        for profile in ("core", "full"):
            mine = [c for c in select_cases(profile) if c.kind == "plugin"]
            assert [(c.name, c.op) for c in mine] == [("test_vendor_neg", "Neg")]
        assert [r.outcome for r in run_suite("cpu", "core", cases=mine)] == ["passed"]
    finally:
        hal.plugins.unregister("vendor-cases")


def test_a_native_run_is_held_to_the_floor_of_the_format_its_target_computes_in():
    """gpu's native is TF32: its native certification had been held to bf16's floor (rtol 1.6e-2), 3x
    looser than the same arithmetic certified as tf32. The floor at native is now the native_format's."""
    from hal.conformance.suite import floor

    core = load_profile("core")
    assert floor(core, "gpu", "native") == core.tolerance("tf32")
    assert floor(core, "lpu", "native") == core.tolerance("fp16")
    assert floor(core, "wafer", "native") == core.tolerance("bf16")
    assert floor(core, "cpu", "exact") == core.tolerance("exact")
    assert core.tolerance("tf32").rtol < core.tolerance("native").rtol
