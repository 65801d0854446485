"""Small user-facing rough edges, each found by a reviewer: the message now says what, where and what to
do (onnxruntime arguments, a target named twice, "a int", no targets, cpu left out of HAL_PLUGINS, a closed
stdout, an unwritable --html, devices on cpu, pickling a session, a plugin's empty or inconsistent answers)."""

from __future__ import annotations

import copy
import math
import pickle
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import hal
from hal import plugins
from hal.errors import CompileError, InputError, PluginError
from tests.conftest import run_python

F = TensorProto.FLOAT


def _add_model():
    return helper.make_model(helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"], name="add"), helper.make_node("Relu", ["y"], ["z"], name="relu")],
        "rough", [helper.make_tensor_value_info("x", F, [2, 4])], [helper.make_tensor_value_info("z", F, [2, 4])]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("rough") / "add.onnx"
    onnx.save(_add_model(), path)
    return str(path)


# -- 1: onnxruntime's arguments, and a target_options dict ------------------------------------------------

@pytest.mark.parametrize("arg, value", [("providers", ["CUDAExecutionProvider"]),
                                        ("provider_options", [{}]), ("sess_options", object())])
def test_onnxruntime_arguments_say_hal_picks_the_target_by_name(arg, value):
    with pytest.raises(CompileError, match=f"unknown option\\(s\\) {arg}") as e:
        hal.InferenceSession(_add_model(), cache_dir=False, **{arg: value})
    assert "onnxruntime's" in e.value.hint and "target='gpu'" in e.value.hint and "installed: cpu" in e.value.hint


def test_a_target_options_dict_says_target_options_are_keyword_arguments():
    with pytest.raises(CompileError, match=r"unknown option\(s\) target_options") as e:
        hal.InferenceSession(_add_model(), "lpu", cache_dir=False, target_options={"nope": 1})
    assert "keyword arguments" in e.value.hint and "sram_bytes=" in e.value.hint and "-o KEY=VALUE" in e.value.hint
    assert "its options: " in e.value.hint  # the target's own list is still given


# -- 2: the target said once; a/an -------------------------------------------------------------------------

def test_a_precision_the_target_lacks_names_the_target_once():
    with pytest.raises(CompileError) as e:
        hal.InferenceSession(_add_model(), "lpu", "bf16", cache_dir=False)
    assert str(e.value).count("'lpu'") == 1 and "does not offer precision 'bf16'" in str(e.value)
    with pytest.raises(CompileError) as e:
        hal.InferenceSession(_add_model(), "lpu", cache_dir=False, nope=1)
    assert str(e.value).count("'lpu'") == 1


def test_an_estimate_row_names_its_target_once(model_file, hal_cli):
    row = hal.estimate(model_file, "lpu", precision="bf16").estimates[0]
    assert row.status == "error" and "'lpu'" in row.error and row.error.count("lpu") == 1
    _, out, _ = hal_cli("estimate", model_file, "-t", "lpu", "--precision", "bf16")
    assert "lpu: target 'lpu' does not offer precision 'bf16'" in out and "target 'lpu': target" not in out


@pytest.mark.parametrize("word, said", [("int", "an int"), ("int8 array", "an int8 array"), ("float", "a float"),
                                        ("uint8 array", "a uint8 array"), ("ndarray", "an ndarray"),
                                        ("object", "an object"), ("NoneType", "a NoneType"), ("list", "a list")])
def test_the_article_follows_the_sound(word, said):
    from hal.errors import a_or_an

    assert a_or_an(word) == said


def test_a_feed_of_an_int_says_an_int():
    sess = hal.InferenceSession(_add_model(), cache_dir=False)
    with pytest.raises(InputError, match="feed 'x' is an int, not a numpy array"):
        sess.run(None, {"x": 3})


# -- 3: no targets -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("targets", [[], (), "", " , "])
def test_compare_with_no_targets_says_none_were_given(targets):
    with pytest.raises(InputError, match="no targets given") as e:
        hal.compare(_add_model(), targets)
    assert "'all'" in e.value.hint and "'gpu,lpu'" in e.value.hint and "['gpu']" in e.value.hint


# -- 4: cpu left out of HAL_PLUGINS ------------------------------------------------------------------------

def test_the_missing_reference_target_says_hal_plugins_must_include_cpu(model_file):
    code = ("import hal, warnings\n"
            "warnings.simplefilter('ignore')\n"
            f"try:\n    hal.InferenceSession({model_file!r}, 'lpu', fallback='warn', cache_dir=False, nope=None)\n"
            "except hal.HalError as e:\n    print('A', e)\n"
            f"try:\n    hal.compare({model_file!r}, 'lpu')\n"
            "except hal.HalError as e:\n    print('B', e)\n"
            "try:\n    hal.InferenceSession(b'x', 'nope')\n"
            "except hal.HalError as e:\n    print('C', e)\n")
    r = run_python(code, env={"HAL_PLUGINS": "lpu"})
    lines = {ln[0]: ln[2:] for ln in r.stdout.splitlines() if ln[:2] in ("A ", "B ", "C ")}
    assert "B" in lines, r.stdout + r.stderr
    assert "no target named 'cpu'" in lines["B"] and "reference target" in lines["B"]
    assert "HAL_PLUGINS must include cpu (HAL_PLUGINS=cpu,lpu)" in lines["B"]
    assert "no target named 'nope'" in lines["C"] and "HAL_PLUGINS" not in lines["C"]  # only for cpu


# -- 5: a closed stdout ------------------------------------------------------------------------------------

def test_a_closed_stdout_ends_the_command_quietly(model_file):
    p = subprocess.Popen([sys.executable, "-m", "hal.cli", "run", model_file, "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader (`| head`) is gone before anything is written
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert err == "" and p.returncode == 1


# -- 6: an output path nothing can be written at, found before the run ---------------------------------------

def test_an_html_path_in_an_unwritable_folder_is_refused_before_the_run(model_file, hal_cli, monkeypatch):
    compare_module = sys.modules["hal.compare"]  # (hal.compare is the function)

    def no_run(*a, **k):
        raise AssertionError("compare ran")

    monkeypatch.setattr(compare_module, "compare", no_run)
    rc, _, err = hal_cli("compare", model_file, "--targets", "gpu", "--html", "/proc/x.html")
    assert rc == 2 and "InputError: --html /proc/x.html: cannot write in /proc" in err, err


# -- 7: devices on the cpu reference -------------------------------------------------------------------------

def test_devices_on_the_cpu_reference_are_refused(model_file, hal_cli):
    with pytest.raises(CompileError, match="models no devices, so devices=2 would be ignored"):
        hal.InferenceSession(_add_model(), "cpu", devices=2, cache_dir=False)
    hal.InferenceSession(_add_model(), "cpu", devices=1, cache_dir=False)  # one is what it models
    rc, _, err = hal_cli("run", model_file, "-t", "cpu", "--devices", "2")
    assert rc == 2 and "models no devices" in err


# -- 8: pickling a session -----------------------------------------------------------------------------------

@pytest.mark.parametrize("how", [pickle.dumps, copy.deepcopy, copy.copy])
def test_a_session_is_not_picklable_and_says_what_to_send_instead(how):
    sess = hal.InferenceSession(_add_model(), cache_dir=False)
    with pytest.raises(InputError, match="cannot be pickled") as e:
        how(sess)
    assert "model" in e.value.hint and "each process" in e.value.hint


# -- 9, 10: a plugin's empty or inconsistent answers ---------------------------------------------------------

class _Exe:
    def __init__(self, out):
        self.out = out

    def run(self, feeds):
        return self.out


@pytest.mark.parametrize("out, says", [({}, "returned no outputs (an empty dict), without z; expected outputs z"),
                                       ({"y": np.ones(2, np.float32)}, "returned outputs y, without z"),
                                       ([], "returned a list, not a dict")])
def test_a_run_without_its_outputs_names_the_missing_ones(out, says):
    from hal.boundary import Partition, run_partition

    p = Partition("kite", _Exe(out), ["relu"], ["x"], ["z"], ())
    with pytest.raises(PluginError, match="plugin 'kite'") as e:
        run_partition(p, {"x": np.ones(2, np.float32)})
    assert says in str(e.value)


class _Wrapping:
    """The cpu target under another name, its capability or report changed by ``cap`` / ``report``."""

    def __init__(self, cap=None, report=None):
        self._cpu = plugins.get_target("cpu")
        self.spec = self._cpu.spec.model_copy(update={"name": "kite"})
        self._cap, self._report = cap, report

    def capability(self, graph, options):
        cap = self._cpu.capability(graph, options)
        return self._cap(cap) if self._cap else cap.model_copy(update={"target": "kite"})

    def compile(self, graph, options):
        exe = self._cpu.compile(graph, options)
        exe.report = exe.report.model_copy(update={"target": "kite"})
        if self._report:
            self._report(exe.report)
        return exe

    def load(self, blob):
        return self._cpu.load(blob)


def _graph():
    from hal.graph.load import load
    from hal.graph.passes import optimize

    return optimize(load(_add_model()))


def test_a_capability_missing_a_field_names_it():
    from hal.session import target_capability
    from hal.specs import CompileOptions

    t = _Wrapping(cap=lambda c: {"target": "kite", "groups": [{"label": "all"}]})
    with pytest.raises(PluginError, match=r"invalid answer \(dict\): groups\.0\.nodes: Field required"):
        target_capability(t, _graph(), CompileOptions())


@pytest.mark.parametrize("groups, says", [([["add"], ["add", "relu"]], "'add' twice (groups 0 and 1)"),
                                          ([["add", "relu", "relu"]], "'relu' twice (group 0)")])
def test_a_capability_listing_a_node_twice_is_a_plugin_error(groups, says):
    from hal.session import target_capability
    from hal.specs import Capability, CompileOptions, NodeGroup

    t = _Wrapping(cap=lambda c: Capability(target="kite", groups=[NodeGroup(nodes=g) for g in groups]))
    with pytest.raises(PluginError, match="plugin 'kite'") as e:
        target_capability(t, _graph(), CompileOptions())
    assert says in str(e.value)
    target_capability(_Wrapping(), _graph(), CompileOptions())  # each node once: taken


def _nan_latency(r):
    r.latency_s = math.nan


def _inf_energy(r):
    r.energy_j = math.inf


@pytest.mark.parametrize("spoil, why", [(_nan_latency, "latency_s: nan, not a finite number"),
                                        (_inf_energy, "energy_j: inf, not a finite number")])
def test_a_report_with_a_non_finite_latency_or_energy_is_a_plugin_error(spoil, why):
    from hal.session import compile_graph
    from hal.specs import CompileOptions

    with pytest.raises(PluginError, match="plugin 'kite'.*invalid compile report") as e:
        compile_graph(_graph(), _Wrapping(report=spoil), CompileOptions())
    assert why in str(e.value)
    compile_graph(_graph(), _Wrapping(), CompileOptions())  # finite figures: taken
