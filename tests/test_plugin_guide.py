"""specs/plugin-guide.md stays true: its example plugin is installed from the guide's own blocks and
certified against cpu, its snippets run, and every hal command, flag, path, environment variable and
API name it mentions exists.

Blocks are marked in the guide by an HTML comment on the line before the fence:
``<!-- file: PATH -->`` (a file of the example distribution; several blocks with one PATH are one
file, in order) or ``<!-- run -->`` (a snippet, run in order in one namespace once the example
target is registered). Every python and toml block carries one of the two.
"""

from __future__ import annotations

import builtins
import dataclasses
import importlib
import inspect
import json
import re
import shlex
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import hal
from hal import plugins
from tests.conftest import in_threads, run_python, write_dist

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "specs" / "plugin-guide.md"
MARKER = re.compile(r"^<!--\s*(file:\s*(?P<path>\S+)|(?P<run>run))\s*-->\s*$")


@dataclass
class Block:
    lang: str
    code: str
    line: int  # of the opening fence, 1-based
    file: str | None  # the "file:" marker's path
    run: bool  # a "run" marker


def guide_blocks() -> list[Block]:
    lines = GUIDE.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        mark = MARKER.match(lines[start - 1]) if start else None
        blocks.append(Block(lang, "\n".join(lines[start + 1:end]) + "\n", start + 1,
                            mark.group("path") if mark and mark.group("path") else None,
                            bool(mark and mark.group("run"))))
        i = end + 1
    return blocks


def prose() -> str:
    """The guide without its fenced blocks."""
    return re.sub(r"^```.*?^```\s*$", "", GUIDE.read_text(encoding="utf-8"), flags=re.S | re.M)


def inline_code() -> list[str]:
    return re.findall(r"`([^`\n]+)`", prose())


def example_files() -> dict[str, str]:
    files: dict[str, list[str]] = {}
    for b in guide_blocks():
        if b.file:
            files.setdefault(b.file, []).append(b.code)
    return {path: "\n\n".join(parts) for path, parts in files.items()}


def pyproject() -> dict[str, Any]:
    return tomllib.loads(example_files()["pyproject.toml"])


def entry_points() -> dict[str, str]:
    return pyproject()["project"]["entry-points"]["hal.plugins"]


# --- the example distribution, installed as pip would -----------------------------------------------------


@pytest.fixture(scope="module")
def acme_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("acme-site")
    for path, text in example_files().items():
        if path == "pyproject.toml":
            continue
        f = site / path
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text, encoding="utf-8")
        if f.suffix == ".py" and not (f.parent / "__init__.py").exists():
            (f.parent / "__init__.py").write_text("")
    project = pyproject()["project"]
    write_dist(site, project["name"], entry_points(), version=project["version"])
    return site


@pytest.fixture(scope="module")
def acme(acme_site: Path) -> Any:
    """The guide's plugin module, imported from the installed site and registered in-process."""
    (name, module_name), = entry_points().items()
    sys.path.insert(0, str(acme_site))
    names = []
    try:
        module = importlib.import_module(module_name)
        rec = plugins.register(module, name, distribution=pyproject()["project"]["name"])
        names.append(name)
        assert rec.ok, rec.error
        assert rec.targets == ["acme-npu"]
        yield module
    finally:
        for n in names:
            plugins.unregister(n)
        sys.path.remove(str(acme_site))
        package = module_name.split(".")[0]
        for m in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[m]


# --- the blocks -------------------------------------------------------------------------------------------


def test_every_python_and_toml_block_is_marked():
    blocks = guide_blocks()
    unmarked = [b.line for b in blocks if b.lang in ("python", "toml") and not (b.file or b.run)]
    assert not unmarked, f"unmarked blocks at lines {unmarked}: precede each with <!-- file: PATH --> or <!-- run -->"
    assert sum(b.run for b in blocks) >= 3
    assert {"pyproject.toml", "acme_npu/plugin.py", "acme_npu/acme-npu.toml"} <= set(example_files())


def test_pyproject_points_the_entry_point_at_the_plugin_module():
    project = pyproject()["project"]
    eps = entry_points()
    assert list(eps) == ["acme-npu"]
    module = eps["acme-npu"]
    assert f"{module.replace('.', '/')}.py" in example_files()
    package = module.split(".")[0]
    sheets = [p.split("/", 1)[1] for p in example_files() if p.startswith(f"{package}/") and p.endswith(".toml")]
    assert sheets and set(sheets) <= set(pyproject()["tool"]["setuptools"]["package-data"][package])
    assert project["name"] == "acme-hal"


def test_the_sheet_is_a_valid_spec_with_a_source_for_every_number(acme_site: Path):
    from hal.specs import load_spec_sheet

    spec = load_spec_sheet(acme_site / "acme_npu" / "acme-npu.toml")
    assert spec.name == "acme-npu" and spec.options
    for key, number in spec.hardware.items():
        assert number.unit and number.source and number.kind in ("published", "derived", "assumption"), key
    used = set(re.findall(r"hw\(\"(\w+)\"\)", example_files()["acme_npu/plugin.py"]))
    assert used and used <= set(spec.hardware), f"the plugin reads numbers the sheet lacks: {used - set(spec.hardware)}"


def test_installed_plugin_is_discovered_through_its_entry_point(acme_site: Path):
    res = run_python("from hal.cli import main; main(['doctor', '--json'])", site=acme_site)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    rec = next(p for p in doc["plugins"] if p["plugin"] == "acme-npu")
    assert rec["ok"], rec["error"]
    assert rec["distribution"] == "acme-hal" and rec["version"] == "0.3.0"
    assert rec["targets"] == ["acme-npu"] and rec["hal_api"] == hal.HAL_API_VERSION


def test_the_guides_snippets_run(acme: Any):
    namespace: dict[str, Any] = {"__name__": "plugin_guide_snippets"}
    for b in guide_blocks():
        if b.run:
            try:
                exec(compile(b.code, f"{GUIDE.name}:{b.line}", "exec"), namespace)
            except Exception as e:
                raise AssertionError(f"the snippet at {GUIDE.name}:{b.line} failed: {type(e).__name__}: {e}") from e


# --- the example target does real work of its own and matches cpu ---------------------------------------


def _feeds(sess: hal.InferenceSession) -> dict[str, np.ndarray]:
    from hal.conformance.contract import feeds_for

    return feeds_for(sess.graph, seed=3)


@pytest.mark.parametrize("model", ["zoo:tiny-cnn", "zoo:tiny-gpt"])
def test_example_target_runs_its_own_program_and_matches_cpu(acme: Any, model: str, monkeypatch):
    from hal.engine import Program

    cpu = hal.InferenceSession(model, target="cpu")
    feeds = _feeds(cpu)
    want = cpu.run(None, feeds)

    def no_reference(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the example target ran hal's reference interpreter")

    monkeypatch.setattr(Program, "run_list_ignoring_errors", no_reference)
    npu = hal.InferenceSession(model, target="acme-npu")
    got = npu.run(None, feeds)
    assert npu.get_providers() == ["acme-npu"]
    for a, b in zip(got, want):
        assert type(a) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)

    # the report: one kernel per node, latency = the sum of rooflines from the sheet's numbers
    rep, spec, graph = npu.report, plugins.get_target("acme-npu").spec, npu.graph
    assert rep.kernel_count == len(rep.kernels) == len(graph.nodes)
    assert rep.latency_s == pytest.approx(sum(k.time_s for k in rep.kernels))
    from hal.perf.opcount import node_cost

    node = {n.name: n for n in graph.nodes}
    for k in rep.kernels:
        c = node_cost(node[k.name], graph)
        want_t = max(c.flops / spec.hw("peak_flops"), c.bytes / spec.hw("sram_bandwidth")) + spec.hw("dispatch_s")
        assert k.time_s == pytest.approx(want_t)
    assert rep.energy_j == pytest.approx(spec.hw("power_w") * rep.latency_s)
    assert 0 < rep.peak_memory_bytes <= spec.hw("sram_bytes")
    assert [e["name"] for e in npu.trace()] == [k.name for k in rep.kernels]


def test_example_target_is_safe_to_run_from_several_threads(acme: Any):
    exe = hal.compile("zoo:tiny-gpt", target="acme-npu")
    rng = np.random.default_rng(0)
    feeds = [{"input_ids": rng.integers(0, 256, (1, 16)).astype(np.int64)} for _ in range(6)]
    alone = [exe.run(f)["logits"] for f in feeds]
    together = in_threads(lambda i: exe.run(feeds[i])["logits"], len(feeds))
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)


def _if_model(with_fp64: bool) -> onnx.ModelProto:
    def vi(name: str, t: int, shape: list[int]) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, t, shape)

    f32 = TensorProto.FLOAT
    then_g = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [], [vi("t", f32, [2, 3])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [vi("e", f32, [2, 3])])
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)]
    outputs = [vi("y", f32, [2, 3])]
    if with_fp64:
        nodes += [helper.make_node("Cast", ["y"], ["y64"], to=TensorProto.DOUBLE),
                  helper.make_node("Sqrt", ["y64"], ["z64"]),
                  helper.make_node("Cast", ["z64"], ["z"], to=f32)]
        outputs.append(vi("z", f32, [2, 3]))
    g = helper.make_graph(nodes, "guide_if", [vi("c", TensorProto.BOOL, []), vi("x", f32, [2, 3])], outputs)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_control_flow_runs_and_survives_serialize(acme: Any):
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    exe = hal.compile(_if_model(False), target="acme-npu")
    again = plugins.get_target("acme-npu").load(exe.serialize())
    for cond in (True, False):
        want = np.maximum(x, 0) if cond else -x
        for e in (exe, again):
            np.testing.assert_array_equal(e.run({"c": np.array(cond), "x": x})["y"], want)


def test_refused_nodes_raise_or_fall_back_to_cpu(acme: Any):
    model = _if_model(True)
    with pytest.raises(hal.UnsupportedOpError) as err:
        hal.InferenceSession(model, target="acme-npu")
    assert {op for _, op, _ in err.value.nodes} == {"Cast", "Sqrt"}
    assert all("float64" in why for _, _, why in err.value.nodes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hal.FallbackWarning)
        sess = hal.InferenceSession(model, target="acme-npu", fallback="allow")
    feeds = {"c": np.array(True), "x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    for a, b in zip(sess.run(None, feeds), hal.InferenceSession(model).run(None, feeds)):
        np.testing.assert_array_equal(a, b)
    assert {p.target for p in sess.report.placement} == {"acme-npu", "cpu"}


def test_errors_the_example_raises(acme: Any):
    from hal.graph.ir import ShapeOnly
    from hal.graph.load import load
    from hal.graph.passes import optimize
    from hal.specs import CompileOptions

    with pytest.raises(hal.ResourceError, match="bytes of SRAM"):
        hal.compile("zoo:tiny-cnn", target="acme-npu", sram_bytes=1000)
    with pytest.raises(hal.CompileError, match="sram_bytes must be"):
        hal.compile("zoo:tiny-cnn", target="acme-npu", sram_bytes="lots")
    with pytest.raises(hal.CompileError, match="unknown option"):
        hal.compile("zoo:tiny-cnn", target="acme-npu", tiles=4)
    graph = optimize(load("zoo:tiny-cnn"))
    graph.initializers = {k: ShapeOnly(w.shape, w.dtype) for k, w in graph.initializers.items()}
    exe = plugins.get_target("acme-npu").compile(graph, CompileOptions())
    assert exe.report.shape_only and exe.report.latency_s > 0
    with pytest.raises(hal.RunError, match="shape only"):
        exe.run({"image": np.zeros((1, 3, 32, 32), np.float32)})


def test_compile_cache_round_trip(acme: Any, tmp_path: Path):
    first = hal.InferenceSession("zoo:tiny-cnn", target="acme-npu", cache_dir=tmp_path)
    second = hal.InferenceSession("zoo:tiny-cnn", target="acme-npu", cache_dir=tmp_path)
    assert first.compile_cache.stats.stored >= 1 and second.compile_cache.stats.hits >= 1
    feeds = _feeds(first)
    np.testing.assert_array_equal(first.run(None, feeds)[0], second.run(None, feeds)[0])


# --- what the guide names exists --------------------------------------------------------------------------


def _command_lines() -> list[str]:
    lines = []
    for b in guide_blocks():
        if b.lang in ("console", "sh", "shell", "bash"):
            lines += [ln.strip() for ln in b.code.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return lines


def _pytest_plugin_options() -> set[str]:
    from hal.conformance import pytest_plugin

    names: set[str] = set()

    class Recorder:
        def getgroup(self, *args: Any, **kwargs: Any) -> Recorder:
            return self

        def addoption(self, *opts: str, **kwargs: Any) -> None:
            names.update(opts)

    pytest_plugin.pytest_addoption(Recorder())  # type: ignore[arg-type]
    return names


def _hal_cli_options() -> set[str]:
    import argparse

    from hal.cli import build_parser

    names: set[str] = set()
    stack = [build_parser()]
    while stack:
        p = stack.pop()
        for a in p._actions:
            names.update(a.option_strings)
            if isinstance(a, argparse._SubParsersAction):
                stack.extend(a.choices.values())
    return names


def _strip_env(words: list[str]) -> list[str]:
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        words = words[1:]
    return words


def test_every_command_line_parses():
    from hal.cli import build_parser

    lines = _command_lines()
    assert any(ln.startswith("hal conformance") for ln in lines) and any(ln.startswith("pytest") for ln in lines)
    pytest_opts = _pytest_plugin_options() | {"-n", "-k", "-q", "-v"}
    for ln in lines:
        words = _strip_env(shlex.split(ln))
        if words[0] == "hal":
            try:
                build_parser().parse_args(words[1:])
            except SystemExit as e:
                raise AssertionError(f"the guide's command does not parse: {ln}") from e
        elif words[0] == "pytest":
            flags = {w.split("=")[0] for w in words if w.startswith("-")}
            assert flags <= pytest_opts, f"{ln}: unknown flags {flags - pytest_opts}"
        else:
            raise AssertionError(f"a command line the test does not know how to check: {ln}")
    subcommands = {w[1] for w in (_strip_env(c.split()) for c in inline_code()) if len(w) > 1 and w[0] == "hal"}
    from hal.cli import build_parser as bp

    known = next(a for a in bp()._actions if a.dest == "command").choices
    assert subcommands and subcommands <= set(known), subcommands - set(known)


def test_every_flag_named_in_the_text_exists():
    known = _hal_cli_options() | _pytest_plugin_options()
    flags = {c.split()[0] for c in inline_code() if c.startswith("--")}
    assert flags and flags <= known, flags - known


PATH_LIKE = re.compile(r"^[\w.*<>-]+(/[\w.*<>-]*)+$|^[\w.*<>-]+\.(py|toml|md|json)$")


def test_every_path_the_guide_names_exists():
    vendor = set(example_files())
    checked = 0
    for token in inline_code():
        if not PATH_LIKE.match(token) or token.startswith("hal."):
            continue
        if "acme" in token:  # the example distribution's own files
            assert token in vendor, f"{token} is not one of the example's files {sorted(vendor)}"
            continue
        pattern = token.replace("<target>", "*")
        found = list(ROOT.glob(pattern)) if "*" in pattern else [ROOT / pattern] if (ROOT / pattern).exists() else []
        assert found, f"the guide names {token}, which is not in the repository"
        checked += 1
    assert checked >= 10


def test_every_environment_variable_exists():
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "hal").rglob("*.py"))
    names = set(re.findall(r"\bHAL_[A-Z_]+\b", GUIDE.read_text(encoding="utf-8")))
    assert {"HAL_PLUGINS", "HAL_TRACE_HOOKS", "HAL_API_VERSION", "HAL_CACHE_DIR"} <= names
    for n in names:
        assert re.search(rf"\b{n}\b", source), f"{n} is not read anywhere in hal"


def _resolve(dotted: str) -> Any:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def _has_member(cls: type, name: str) -> bool:
    if hasattr(cls, name) or name in getattr(cls, "model_fields", {}):
        return True
    if dataclasses.is_dataclass(cls) and name in {f.name for f in dataclasses.fields(cls)}:
        return True
    return bool(re.search(rf"self\.{name}\b\s*=", inspect.getsource(cls)))


def test_every_api_name_the_guide_mentions_exists(acme: Any):
    from hal.engine import Program, Step
    from hal.graph.ir import SHAPE_ONLY_KEY, Graph, Node, ShapeOnly, TensorInfo
    from hal.kernels import KernelContext, KernelDef
    from hal.specs import Capability, CompileOptions, CompileReport, HardwareNumber, KernelReport, TargetSpec

    classes: dict[str, type] = {c.__name__: c for c in (
        Graph, Node, TensorInfo, ShapeOnly, KernelDef, KernelContext, Program, Step, TargetSpec, CompileReport,
        KernelReport, Capability, CompileOptions, HardwareNumber, hal.UnsupportedOpError, hal.PluginError,
        hal.InferenceSession, acme.AcmeTarget, acme.AcmeExecutable)}
    classes |= {"graph": Graph, "node": Node, "options": CompileOptions, "spec": TargetSpec}
    checked = 0
    for code in inline_code():
        token = re.split(r"[(\s]", code, maxsplit=1)[0]
        if token == SHAPE_ONLY_KEY:
            continue
        if re.match(r"^(hal|np|numpy|onnx)(\.\w+)+$", token):
            _resolve(token.replace("np.", "numpy.", 1) if token.startswith("np.") else token)
            checked += 1
        elif re.match(r"^\w+\.\w+$", token) and token.split(".")[0] in classes:
            cls_name, member = token.split(".")
            assert _has_member(classes[cls_name], member), f"{token}: {cls_name} has no {member}"
            checked += 1
    assert checked >= 30


def _sentence(anchor: str) -> str:
    """The sentence (or bullet) of the guide's prose that holds ``anchor``."""
    text = prose()
    at = text.index(anchor)
    bounds = [m.end() for m in re.finditer(r"\.\s|\n- |\n\n", text)]
    return text[max([b for b in bounds if b <= at], default=0):min([b for b in bounds if b > at], default=None)]


def _identifiers(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"`([a-z_][a-z0-9_]*)(?:\(\))?`", text)}


def test_every_field_and_class_named_in_the_text_exists():
    from hal.conformance.profiles import ManifestEntry
    from hal.graph.ir import Node, TensorInfo
    from hal.specs import HardwareNumber, TargetSpec

    def members(*classes: type) -> set[str]:
        return {n for c in classes for n in dir(c)} | {
            f.name for c in classes if dataclasses.is_dataclass(c) for f in dataclasses.fields(c)} | {
            n for c in classes for n in getattr(c, "model_fields", {})}

    for anchor, classes in {"`hal.specs.TargetSpec` holds": (TargetSpec, HardwareNumber),
                            "`hal.graph.ir.Node`s in topological order": (Node,),
                            "`hal.graph.ir.TensorInfo` per value": (TensorInfo,),
                            "per case with `case`": (ManifestEntry,)}.items():
        named = _identifiers(_sentence(anchor))
        assert len(named) >= 4 and named <= members(*classes), (anchor, named - members(*classes))
    assert {"nodes", "plugin", "distribution"} <= _identifiers(prose())
    assert hal.UnsupportedOpError("x").nodes == [] and hal.PluginError("x", plugin="p").distribution is None

    homes = [importlib.import_module(m) for m in ("hal", "hal.errors", "hal.specs", "hal.engine", "hal.graph.ir",
                                                  "hal.kernels")]
    words = {re.split(r"[(\s.]", c, maxsplit=1)[0] for c in inline_code()}
    classes = {w for w in words if re.fullmatch(r"[A-Z][A-Za-z]+", w) and not hasattr(builtins, w)}
    classes -= {"AcmeTarget", "AcmeExecutable"}  # the example's own
    assert len(classes) >= 5
    for name in classes:
        assert any(hasattr(m, name) for m in homes), f"{name} is not a hal class"
