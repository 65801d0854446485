"""The command line prints what a model, a plugin or a user names as it is. rich reads brackets as
markup: before, an output named ``y[image]`` printed as ``y``, and a model in a folder ``m[`` with a
file ``/x]...`` stopped every command with rich's MarkupError (an internal error, exit 70)."""

from __future__ import annotations

import json

import onnx
import pytest
from onnx import TensorProto, helper
from rich.console import Console

from hal.conformance.command import print_report
from hal.conformance.report import CaseResult, ConformanceReport


@pytest.fixture
def bracketed(tmp_path) -> str:
    """A model at ``<tmp>/m[/x] model.onnx`` (a folder ``m[``), whose node is ``[bold]relu`` and output ``y[image]``."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y[image]", TensorProto.FLOAT, [2, 3])
    m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y[image]"], name="[bold]relu")],
                                            "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    (tmp_path / "m[").mkdir()
    path = tmp_path / "m[" / "x] model.onnx"
    onnx.save(m, path)
    return str(path)


def _flat(text: str) -> str:
    """The text without the line breaks and padding a table puts in a long cell."""
    return "".join(text.split())


def test_run_prints_the_path_and_output_name_as_they_are(hal_cli, bracketed):
    rc, out, _ = hal_cli("run", bracketed)
    assert rc == 0, out
    assert "y[image]" in out
    assert "m[/x]model.onnxoncpu(exact)" in _flat(out)


def test_profile_prints_node_names_as_they_are(hal_cli, bracketed):
    rc, out, _ = hal_cli("profile", bracketed, "-t", "gpu")
    assert rc == 0, out
    assert "[bold]relu" in out


def test_compare_and_estimate_print_the_path_as_it_is(hal_cli, bracketed):
    rc, out, _ = hal_cli("compare", bracketed, "--targets", "cpu")
    assert rc == 0, out
    assert "m[/x]" in out
    rc, out, _ = hal_cli("estimate", bracketed, "-t", "gpu")
    assert rc == 0, out
    assert "m[/x]" in out


def test_estimate_prints_an_error_as_it_is(hal_cli, tmp_path):
    """A target that cannot cost a node: its error line names the node, brackets and all."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    node = helper.make_node("NoSuchOp", ["x"], ["y"], name="[/red]n", domain="com.example")
    m = helper.make_model(helper.make_graph([node], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(m, path)
    rc, out, err = hal_cli("estimate", str(path), "-t", "gpu")
    out += err
    assert "internal error" not in out
    assert "[/red]n" in _flat(out)
    assert rc != 0


def test_conformance_table_prints_op_names_as_they_are():
    case = CaseResult(name="test_x", op="[/x]Op", kind="node", outcome="passed")
    report = ConformanceReport.build([case], target="cpu", profile="p[image]")
    console = Console(record=True, width=200)
    print_report(report, console)
    text = console.export_text()
    assert "[/x]Op" in text
    assert "p[image]" in text


def test_a_log_gets_the_compare_table_whole(hal_cli):
    # In a pipe (a CI log) the console is 160 columns, or the table's own width where it is wider: hal
    # demo's 13 columns came to 165, so rich folded the "kernels/nodes" header and the longest
    # target's placement onto a second line
    rc, out, _ = hal_cli("compare", "zoo:tiny-gpt", "--targets", "cpu,gpu-mi300x")
    assert rc == 0
    assert "kernels/nodes" in out
    row = next(line for line in out.splitlines() if "gpu-mi300x" in line)
    assert "gpu-mi300x: 72" in row, out


def test_a_narrow_table_keeps_its_title_on_one_line(hal_cli):
    # rich wraps a title to its table's width: the sweep's 23-column table had a heading of three lines
    rc, out, _ = hal_cli("estimate", "zoo:llama-3.1-8b", "--target", "gpu", "--sweep", "batch=1,2")
    assert rc == 0
    assert "zoo:llama-3.1-8b: tokens_per_s_total vs batch (decode, precision native)" in out, out


def test_doctor_prints_the_environment_on_one_line(hal_cli):
    # (167 characters here: a 160-column console had folded it before the numba and Pillow notes)
    rc, out, _ = hal_cli("doctor", "--json", "-")
    env = json.loads(out)["environment"]
    rc, out, _ = hal_cli("doctor")
    assert rc == 0
    assert out.splitlines()[0] == " ".join(f"{k} {v}" for k, v in env.items() if v), out
