"""The cases of the suite: onnx's node tests, the light model zoo, the small models onnx ships with
their data, and cases plugins contribute.

Every case has the shape of onnx's ``TestCase`` (name, model, data sets, rtol, atol) plus the op it
certifies, so results group per op. Node cases come from
``onnx.backend.test.case.node.collect_testcases()``; an ``_expanded`` case (the op's function body)
counts for the op of its single-node twin. Light and shipped models are loaded only when a case runs.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from hal.files import atomic_write

#: the light models onnx ships, in onnx/backend/test/data/light/
LIGHT_MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
                "squeezenet", "vgg19", "zfnet512")
LIGHT_RTOL = 1e-3
LIGHT_ATOL = 1e-5

_EXPANDED = re.compile(r"_expanded(_ver\d+)?$")


@dataclass
class ConformanceCase:
    """One model with its data sets, compared the way onnx's runner compares them."""

    name: str
    op: str
    kind: str  # node | light | model | plugin
    rtol: float
    atol: float
    load_model: Callable[[], onnx.ModelProto] = field(repr=False)
    load_data: Callable[[], list[tuple[list[Any], list[Any]]]] = field(repr=False)
    ops: frozenset[str] = frozenset()  # every op type the case's graph uses, subgraphs included
    scores: bool = False  # the model's last output is what its final Softmax reads (``check.assert_scored``)

    @property
    def model(self) -> onnx.ModelProto:
        return self.load_model()

    @property
    def data_sets(self) -> list[tuple[list[Any], list[Any]]]:
        return self.load_data()


def to_value(v: Any) -> Any:
    """A data-set entry as a runtime value: an array, a list of arrays (sequence) or None (optional).

    TensorProto / SequenceProto / OptionalProto are converted as onnx's runner loads them; a numpy
    scalar (``np.float32(2)`` in a few node cases) becomes the 0-d array it stands for.
    """
    if isinstance(v, onnx.TensorProto):
        return numpy_helper.to_array(v)
    if isinstance(v, onnx.SequenceProto):
        return numpy_helper.to_list(v)
    if isinstance(v, onnx.OptionalProto):
        return numpy_helper.to_optional(v)
    if isinstance(v, np.generic):
        return np.asarray(v)
    if isinstance(v, list):
        return [to_value(x) for x in v]
    return v


def graph_ops(g: onnx.GraphProto) -> set[str]:
    """Op types used in a graph and in its subgraphs."""
    ops: set[str] = set()
    for n in g.node:
        ops.add(n.op_type)
        for a in n.attribute:
            if a.HasField("g"):
                ops |= graph_ops(a.g)
            for sg in a.graphs:
                ops |= graph_ops(sg)
    return ops


def _cache_file() -> Path | None:
    """Where collected node cases are cached (``$HAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/hal`` or
    ``~/.cache/hal``); None when ``HAL_CONFORMANCE_CACHE=0``. The key holds every version that
    shapes the pickled cases."""
    if os.environ.get("HAL_CONFORMANCE_CACHE", "1") == "0":
        return None
    import ml_dtypes

    root = os.environ.get("HAL_CACHE_DIR")
    folder = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hal"
    key = (f"onnx-{onnx.__version__}_numpy-{np.__version__}_ml_dtypes-{ml_dtypes.__version__}"
           f"_py{sys.version_info[0]}{sys.version_info[1]}")
    return folder / "conformance" / f"node-cases_{key}.pickle"


@cache
def _onnx_node_cases() -> tuple[Any, ...]:
    """onnx's node cases. Generating them runs every case's numpy reference (seconds, and some
    draw unseeded random inputs), so the first collection is cached: every later process, xdist
    workers included, then runs on the very same data."""
    path = _cache_file()
    if path is not None and path.is_file():
        try:
            cases = pickle.loads(path.read_bytes())
            if isinstance(cases, tuple) and cases:
                return cases
        except Exception:  # a stale or truncated cache is regenerated, never fatal
            pass
    from onnx.backend.test.case.node import collect_testcases

    with np.errstate(all="ignore"):
        cases = tuple(collect_testcases())
    if path is not None:
        try:
            atomic_write(path, pickle.dumps(cases, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:  # a read-only home only costs the next process the collection time
            pass
    return cases


def node_cases() -> list[ConformanceCase]:
    """Every onnx node test case (1,884 with onnx 1.23.2), sorted by name."""
    raw = _onnx_node_cases()
    single = {c.name: c.model.graph.node[0].op_type for c in raw if len(c.model.graph.node) == 1}
    out = []
    for c in raw:
        op = single.get(c.name) or single.get(_EXPANDED.sub("", c.name)) or c.model.graph.node[0].op_type
        out.append(ConformanceCase(c.name, op, "node", float(c.rtol), float(c.atol),
                                   _const(c.model), _const(c.data_sets), frozenset(graph_ops(c.model.graph))))
    return sorted(out, key=lambda c: c.name)


def _const(v: Any) -> Callable[[], Any]:
    return lambda: v


def light_dir() -> Path:
    return Path(onnx.__file__).resolve().parent / "backend" / "test" / "data" / "light"


def _light_model(name: str) -> onnx.ModelProto:
    return onnx.load(str(light_dir() / f"light_{name}.onnx"))


def _light_data(name: str) -> list[tuple[list[Any], list[Any]]]:
    from onnx.backend.test.runner import Runner

    model = _light_model(name)
    inits = {i.name for i in model.graph.initializer}
    inputs = [Runner.generate_dummy_data(vi, seed=0, name=name, random=False)
              for vi in model.graph.input if vi.name not in inits]
    outputs = []
    for i in range(len(model.graph.output)):
        t = onnx.TensorProto()
        t.ParseFromString((light_dir() / f"light_{name}_output_{i}.pb").read_bytes())
        outputs.append(numpy_helper.to_array(t))
    return [(inputs, outputs)]


def light_model_with_scores(name: str) -> onnx.ModelProto:
    """The light model with, where it ends in a Softmax, the scores that Softmax reads as one more
    output: its shipped output alone cannot tell a wrong target from a right one whose sums ran in
    another order (``check.assert_scored``)."""
    model = _light_model(name)
    last = model.graph.node[-1]
    if last.op_type == "Softmax":
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(last.input[0]))
    return model


def light_cases() -> list[ConformanceCase]:
    """The 9 light models: inputs from onnx's dummy-data generator, expected outputs beside them."""
    out = []
    for name in LIGHT_MODELS:
        out.append(ConformanceCase(f"test_light_{name}", "light model", "light", LIGHT_RTOL, LIGHT_ATOL,
                                   _cached(lambda n=name: light_model_with_scores(n)),
                                   _cached(lambda n=name: _light_data(n)), scores=True))
    return out


#: the folders of onnx/backend/test/data/ that hold small models with their data sets: PyTorch's nn
#: modules and operators exported at opsets 6 and later, and models of sequences, strings and control flow
SHIPPED_KINDS = ("pytorch-converted", "pytorch-operator", "simple")


def _read_tensor(path: Path) -> np.ndarray:
    t = onnx.TensorProto()
    t.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(t)


def _shipped_data(folder: Path) -> list[tuple[list[Any], list[Any]]]:
    return [([_read_tensor(p) for p in sorted(d.glob("input_*.pb"))],
             [_read_tensor(p) for p in sorted(d.glob("output_*.pb"))])
            for d in sorted(folder.glob("test_data_set_*"))]


def shipped_cases() -> list[ConformanceCase]:
    """The small models onnx ships with their inputs and expected outputs (``SHIPPED_KINDS``), named
    ``<folder>/<model>``, compared as onnx's runner compares them (rtol 1e-3, atol 1e-7)."""
    data = light_dir().parent
    out = []
    for kind in SHIPPED_KINDS:
        for folder in sorted((data / kind).iterdir() if (data / kind).is_dir() else ()):
            if (folder / "model.onnx").is_file():
                out.append(ConformanceCase(f"{kind}/{folder.name}", "shipped model", "model", 1e-3, 1e-7,
                                           _cached(lambda f=folder: onnx.load(str(f / "model.onnx"))),
                                           _cached(lambda f=folder: _shipped_data(f))))
    return out


def _cached(fn: Callable[[], Any]) -> Callable[[], Any]:
    box: list[Any] = []

    def get() -> Any:
        if not box:
            box.append(fn())
        return box[0]

    return get


@dataclass
class BrokenPluginCase:
    """What a plugin's ``hal_conformance_cases`` could not give: its hook raised, or returned something
    that is not a case. It runs as a case of that plugin that fails with cause "plugin" and says why, so
    the plugin's cases are not silently missing from a certification while every other case still runs.
    It is the plugin's failure, not the target's: a manifest never holds it."""

    name: str
    message: str
    op: str = "plugin cases"
    kind: str = "plugin"
    ops: frozenset[str] = frozenset()

    def run(self, target: str) -> None:
        from hal.conformance.check import CaseFailure

        raise CaseFailure("plugin", self.message)


def _plugin_error(rec: Any, what: str, hint: str | None = None) -> str:
    from hal.errors import PluginError

    return str(PluginError(what, plugin=rec.name, distribution=rec.distribution,
                           hint=hint or "report it to the plugin's authors; every other case still runs "
                                        "(HAL_PLUGINS=NAMES loads only the plugins named)"))


def _plugin_case(c: Any) -> ConformanceCase:
    model = c.model
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"its model is a {type(model).__name__}, not an onnx.ModelProto")
    ops = graph_ops(model.graph)
    op = getattr(c, "op", None) or (model.graph.node[0].op_type if len(model.graph.node) == 1 else "model")
    return ConformanceCase(str(c.name), str(op), "plugin", float(getattr(c, "rtol", 1e-3)),
                           float(getattr(c, "atol", 1e-7)), _const(model), _const(list(c.data_sets)), frozenset(ops))


def plugin_cases() -> list[ConformanceCase | BrokenPluginCase]:
    """Cases contributed through the ``hal_conformance_cases`` hook of every loaded plugin.

    A plugin's hook is third-party code: when it raises (SystemExit included; KeyboardInterrupt is the
    user's and stops the run), returns something other than a list, or gives a case that is not the shape
    onnx's node cases have, that plugin contributes a ``BrokenPluginCase`` naming it, which fails; every
    other case, the plugin's good ones included, still runs."""
    from hal.errors import PluginError
    from hal.plugins import raised, registry

    reg = registry()
    out: list[ConformanceCase | BrokenPluginCase] = []
    for rec in list(reg.records.values()):
        if not rec.ok:
            continue
        broken = f"hal_conformance_cases[{rec.name}]"
        try:
            given = reg.call(rec.name, "hal_conformance_cases")  # traced; a non-list is a PluginError
        except PluginError as e:  # the registry's own word on what the hook returned
            out.append(BrokenPluginCase(broken, str(e)))
            continue
        except (Exception, SystemExit) as e:  # third-party code: name it, keep the suite running
            out.append(BrokenPluginCase(broken, _plugin_error(rec, f"hook hal_conformance_cases raised {raised(e)}")))
            continue
        for i, c in enumerate(given):
            try:
                out.append(_plugin_case(c))
            except (Exception, SystemExit) as e:
                try:
                    name = getattr(c, "name", None)
                except (Exception, SystemExit):  # a property that raises
                    name = None
                out.append(BrokenPluginCase(
                    name if isinstance(name, str) and name else f"{broken}[{i}]",
                    _plugin_error(rec, f"hook hal_conformance_cases gave, as case {i}, a {type(c).__name__} that is "
                                       f"not a conformance case ({raised(e)})",
                                  hint="a case has name, model (an onnx.ModelProto), data_sets ([(inputs, expected "
                                       "outputs)]), rtol and atol, as onnx's node test cases (hal/hookspecs.py)")))
    return out


def unselected_broken_hooks(selected: set[str]) -> list[BrokenPluginCase]:
    """The ``BrokenPluginCase`` of each plugin whose case hook failed, where a -k expression left it out of
    the run (``selected``: the names of the cases that ran): the run says so anyway, as a note."""
    return [c for c in plugin_cases() if isinstance(c, BrokenPluginCase) and c.name not in selected]
