"""Release review of 5e5ec00..: what the range got wrong, each with the test that shows it."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import hal
from hal.compare import CompareReport, OutputDiff, TargetResult
from hal.placement import partitions_combined
from hal.render import to_html, to_markdown
from hal.specs import CompileReport, MemoryLevel


def _matmul_model(tmp_path) -> str:
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [16, 8], rng.standard_normal((16, 8)).astype(np.float32).ravel())
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])], [w])
    path = tmp_path / "mm.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
                     .SerializeToString())
    return str(path)


def test_compare_title_states_the_tolerance_the_one_target_was_judged_by(tmp_path, hal_cli):
    # gpu at native is judged by tf32's 5e-3 (its native_format), but the title said native's own 0.03
    rc, out, _ = hal_cli("compare", _matmul_model(tmp_path), "--targets", "gpu", "--precision", "native")
    assert rc == 0
    assert "≤ 0.005)" in out and "≤ 0.03" not in out


def _report(*rows: tuple[str, float]) -> CompareReport:
    ok = OutputDiff(name="y", shape=[1], max_abs=0.0, max_rel=0.0, cosine=1.0, within_tolerance=True)
    return CompareReport(model="m", precision="native", tolerance=3e-2, inputs={},
                         results=[TargetResult(target="cpu", status="ok", precision="exact", outputs=[ok]),
                                  *(TargetResult(target=t, status="ok", precision="native", tolerance=tol,
                                                 outputs=[ok]) for t, tol in rows)])


def test_markdown_and_html_state_the_rows_tolerance_not_natives_own():
    from hal.compare import tolerance_text

    rep = _report(("gpu", 5e-3))
    assert tolerance_text(rep) == "0.005"
    assert "tolerance 0.005 (max rel)" in to_markdown(rep)
    assert "tolerance 0.005 (max relative error)" in to_html(rep)
    # targets judged by different formats: each named with its own
    assert tolerance_text(_report(("gpu", 5e-3), ("lpu", 1e-2))) == "gpu 0.005; lpu 0.01"
    # no target row carries one (all refused): the precision's
    assert tolerance_text(_report()) == "0.03"


def test_a_level_off_the_devices_that_overflows_is_not_said_to_be_on_each_device():
    # the wafer's MemoryX is one store for all wafers (per_device False): the error had said "on each
    # device ... but a device has"
    def part(n: int) -> CompileReport:
        return CompileReport(target="wafer", memory=[MemoryLevel(level="external (MemoryX)", bytes=n,
                                                                 capacity=10_000, per_device=False)])

    with pytest.raises(hal.ResourceError) as e:
        partitions_combined([part(6_000), part(6_000)])
    assert "of external (MemoryX) in all" in e.value.what and "the target has" in e.value.what
    assert "each device" not in e.value.what
