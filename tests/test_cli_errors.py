"""The command line on bad input: one `error:` line naming what, where and what to do, exit 2; a run
that did nothing, or found a difference, never exits 0. Each case is one a probe of every command
and flag found answered with a traceback, an internal error, a misleading message or a silent 0."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from hal.errors import HalError


def _dynamic_model(path) -> str:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])
    m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, path)
    return str(path)


@pytest.mark.parametrize(("argv", "says"), [
    (["estimate", "zoo:llama-2-7b", "-t", "gpu", "--sweep", "batch=a,b"],
     "--sweep batch: 'a', 'b' are not integers >= 1"),
    (["estimate", "zoo:llama-2-7b", "-t", "gpu", "--sweep", "batch=1.5"], "'1.5' is not an integer >= 1"),
    (["estimate", "zoo:llama-2-7b", "-t", "gpu", "--sweep", "batch=0,2"], "'0' is not an integer >= 1"),
    (["estimate", "zoo:llama-2-7b", "-t", "gpu", "--sweep", "batch="], "--sweep batch= has no values"),
    (["estimate", "zoo:llama-2-7b", "-t", "nope"], "no target named 'nope'"),
    (["estimate", "zoo:llama-2-7b", "-t", "gpu,nope"], "no target named 'nope'"),
    (["estimate", "zoo:llama-2-7b", "-t", ","], "no targets given"),
    (["estimate", "zoo:llama-2-7b", "-t", "gpu", "--plot", "x.png"], "--plot draws a sweep: it needs --sweep"),
    (["estimate", "zoo:llama-2-7b", "-t", "gpu", "--sweep", "batch=1", "--plot", "x.svg"],
     "the picture is a PNG, and the name does not end in .png"),
    (["compare", "zoo:tiny-cnn", "--targets", "gpu,nope"], "no target named 'nope'"),
    (["compare", "zoo:tiny-cnn", "--targets", ""], "no targets given"),
    (["compare", "zoo:tiny-cnn", "--precision", "fp99"], "invalid option precision"),
    (["demo", "--precision", "fp99"], "invalid option precision"),
    (["profile", "zoo:tiny-cnn", "-t", "gpu", "--plot", "p.txt"], "name it p.png"),
    (["run", "zoo:tiny-cnn", "-o", "timeout_s=1"], "it is set by --timeout"),
    (["run", "zoo:tiny-cnn", "--timeout", "0"], "timeout_s: seconds each compile and run may take, more than 0"),
    (["run", "zoo:tiny-cnn", "--devices", "0"], "devices: GPUs, chips or wafers, at least 1"),
])
def test_a_bad_value_is_one_error_line_before_anything_runs(hal_cli, argv, says, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = hal_cli(*argv)
    assert (rc, err.count("\n")) == (2, 1), err
    assert err.startswith("error: ") and says in err, err
    assert not list(tmp_path.iterdir())  # nothing written


def test_input_files_that_are_not_what_the_flag_reads_say_so(hal_cli, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 16), np.int64))
    rc, _, err = hal_cli("run", "zoo:tiny-gpt", "--inputs", str(tmp_path / "x.npy"))
    assert rc == 2 and "holds one array (.npy), not named arrays (.npz)" in err and "--input NAME=FILE.npy" in err
    (tmp_path / "text.npz").write_text("not numpy")
    rc, _, err = hal_cli("run", "zoo:tiny-gpt", "--input", f"input_ids={tmp_path / 'text.npz'}")
    assert rc == 2 and "not a .npy or .npz file of plain arrays" in err and "allow_pickle" not in err
    np.savez(tmp_path / "empty.npz")  # had run on random inputs, as if no file were given
    rc, _, err = hal_cli("run", "zoo:tiny-gpt", "--inputs", str(tmp_path / "empty.npz"))
    assert rc == 2 and "holds no arrays" in err


def test_a_string_input_says_how_to_feed_it_and_runs_from_a_str_array(hal_cli, tmp_path):
    # random inputs cannot invent text, and an object array is a pickle hal does not load: both errors
    # said "feed it yourself" without saying how a command line can (a numpy str array, stored plain)
    m = helper.make_model(helper.make_graph(
        [helper.make_node("StringNormalizer", ["x"], ["y"], case_change_action="UPPER")], "g",
        [helper.make_tensor_value_info("x", TensorProto.STRING, [3])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, [3])]), opset_imports=[helper.make_opsetid("", 17)])
    path = str(tmp_path / "text.onnx")
    onnx.save(m, path)
    rc, _, err = hal_cli("run", path)
    assert rc == 2 and "input 'x' is a string tensor" in err and "np.savez(FILE, x=np.array(['text', ...]))" in err
    np.savez(tmp_path / "objects.npz", x=np.array(["a", "b", "c"], dtype=object))
    rc, _, err = hal_cli("run", path, "--inputs", str(tmp_path / "objects.npz"))
    assert rc == 2 and "save strings as a str array, np.array(['text', ...]), not an object array" in err
    np.savez(tmp_path / "text.npz", x=np.array(["a", "b", "c"]))
    rc, out, _ = hal_cli("run", path, "--inputs", str(tmp_path / "text.npz"))
    assert rc == 0 and "A, B, C" in out, out


def test_a_dimension_the_model_does_not_name_is_an_error(hal_cli, tmp_path):
    model = _dynamic_model(tmp_path / "dyn.onnx")
    rc, _, err = hal_cli("run", model, "--dim", "n=2", "--json")
    assert rc == 0, err
    rc, _, err = hal_cli("run", model, "--dim", "zz=3")
    assert rc == 2 and "no input has a dimension named 'zz'" in err and "open dimensions: n (x[0])" in err


def test_an_output_that_cannot_be_written_names_the_users_path(hal_cli, tmp_path):
    (tmp_path / "afile").write_text("")
    rc, _, err = hal_cli("targets", "--json", str(tmp_path / "afile" / "x.json"))
    assert rc == 2 and str(tmp_path / "afile" / "x.json") in err and ".tmp" not in err
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]


@pytest.mark.parametrize(("argv", "says"), [
    (["compare", "zoo:tiny-cnn", "--targets", "cpu", "--markdown", "r.md", "--html", "folder"],
     "--html folder: folder is a folder"),
    (["compare", "zoo:tiny-cnn", "--targets", "cpu", "--markdown", "r.md", "--html", "afile/r.html"],
     "afile is a file, so nothing can be written under it"),
    (["compare", "zoo:tiny-cnn", "--targets", "cpu", "--markdown", "r.md", "--json", "r.md"],
     "--markdown and --json both name r.md"),
    (["run", "zoo:tiny-cnn", "--save", "out.npz", "--json", "afile/deeper/x.json"], "afile is a file"),
    (["profile", "zoo:tiny-cnn", "-t", "gpu", "--trace", "folder"], "--trace folder: folder is a folder"),
])
def test_every_output_is_checked_before_the_command_runs_or_writes(hal_cli, argv, says, tmp_path, monkeypatch):
    """A wrong destination found after the work had left the outputs before it written (--markdown,
    then --html failing) and the work wasted."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("")
    rc, out, err = hal_cli(*argv)
    assert (rc, err.count("\n")) == (2, 1), err
    assert err.startswith("error: InputError: ") and says in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder"]  # nothing written
    assert not out


def test_a_sweep_prints_why_a_point_has_no_figure_and_fails_when_none_has(hal_cli):
    rc, out, _ = hal_cli("estimate", "zoo:llama-2-7b", "-t", "gpu", "--devices", "1", "--sweep", "batch=1,4096")
    assert rc == 0 and "gpu at batch=4096: the model needs more HBM" in out  # had shown only "—"
    rc, out, _ = hal_cli("estimate", "zoo:llama-2-7b", "-t", "gpu", "--devices", "1", "--sweep", "batch=4096")
    assert rc == 2 and "gpu at batch=4096:" in out
    rc, _, err = hal_cli("estimate", "zoo:llama-2-7b", "--sweep", "context=1,99999999")
    assert rc == 2 and err.count("\n") == 1 and "exceed the model's 4096" in err  # once, not once per target


def test_compare_exits_1_when_a_target_disagrees_and_0_when_all_agree(hal_cli, monkeypatch):
    import sys

    compare = sys.modules["hal.compare"]  # (hal.compare is also the function)
    assert hal_cli("compare", "zoo:tiny-cnn", "--targets", "cpu,gpu")[0] == 0
    real = compare.diff
    monkeypatch.setattr(compare, "diff", lambda name, got, ref, tol: real(name, got * 2, ref, tol))
    rc, out, _ = hal_cli("compare", "zoo:tiny-cnn", "--targets", "cpu,gpu", "--json")
    assert rc == 1 and not json.loads(out)["results"][1]["outputs"][0]["within_tolerance"]


def test_warnings_print_as_one_line_without_hals_source(tmp_path):
    m = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Unique", ["r"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, tmp_path / "u.onnx")
    res = subprocess.run([sys.executable, "-m", "hal.cli", "run", str(tmp_path / "u.onnx"), "-t", "lpu",
                          "--fallback", "warn"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "warning: FallbackWarning: 1 node(s) fall back from 'lpu' to 'cpu': Unique_1 (Unique)\n"


def test_debug_works_after_the_command_too(hal_cli, tmp_path):
    """``--debug`` was a top-level option only: ``hal run m.onnx --debug`` was a usage error."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    rc, _, err = hal_cli("run", str(bad))
    assert rc == 2 and err.startswith("error: ")
    for argv in (("--debug", "run", str(bad)), ("run", str(bad), "--debug")):
        with pytest.raises(HalError):
            hal_cli(*argv)
