"""Shared fixtures: the light model zoo shipped inside onnx, and out-of-tree plugin installs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

T = TypeVar("T")

FIXTURES = Path(__file__).parent / "fixtures"
LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_MODELS = sorted(p.stem for p in LIGHT_DIR.glob("light_*.onnx"))


def _thread_env() -> dict[str, str | None]:
    from benchmarks import THREAD_ENV_VARS

    return {k: os.environ.get(k) for k in THREAD_ENV_VARS}


def _put_thread_env(saved: dict[str, str | None]) -> None:
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _thread_counts_left_alone():
    """Fail a test that leaves a BLAS/OpenMP thread-count variable changed: the benchmarks' entry
    points pin every pool to one thread for their process (``benchmarks.runners.limit_threads``), and
    a test that calls one in-process without the ``pools_put_back`` fixture would leave the rest of
    its worker on one BLAS thread, where results that hang on a GEMM's order of sums change."""
    before = _thread_env()
    yield
    after = _thread_env()
    if after != before:
        _put_thread_env(before)
        pytest.fail(f"the test changed thread-count variables {before} -> {after}; use the pools_put_back fixture")


@pytest.fixture
def pools_put_back():
    """Thread-count variables and the BLAS/OpenMP pools' sizes as they were, after a test that runs a
    benchmark's entry point in-process (which pins them to one thread for good). A pool loaded during
    the test (scipy's OpenBLAS, which the benchmark's imports bring in) gets the size a pool of its
    kind had here: it loaded under the same variables, so it started at that size."""
    from threadpoolctl import ThreadpoolController

    saved = _thread_env()
    libs = ThreadpoolController().lib_controllers
    sizes = {lib.filepath: lib.num_threads for lib in libs}
    kinds = {lib.internal_api: lib.num_threads for lib in reversed(libs)}  # the first of each kind
    yield
    _put_thread_env(saved)
    for lib in ThreadpoolController().lib_controllers:
        size = sizes.get(lib.filepath, kinds.get(lib.internal_api))
        if size is not None:
            lib.set_num_threads(size)


@pytest.fixture
def numpy_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernels' numpy paths, not the compiled loops (``hal.kernels.jit``): for tests that look
    inside those paths."""
    from hal.kernels import jit

    monkeypatch.setattr(jit, "_ENABLED", False)


def in_threads(fn: Callable[[int], T], n: int) -> list[T]:
    """``fn(0) … fn(n - 1)``, each in its own thread, started together; their results in order. An
    exception in any thread is raised here (the first, by index), after every thread has ended."""
    results: list[Any] = [None] * n
    errors: list[BaseException | None] = [None] * n

    def work(i: int) -> None:
        try:
            results[i] = fn(i)
        except BaseException as e:  # re-raised below, in the test's thread
            errors[i] = e

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in errors:
        if e is not None:
            raise e
    return results


def session_feeds(session: Any) -> dict[str, np.ndarray]:
    """Seeded feeds for a session's inputs: token ids below 200, an attention mask with the last
    sequence half padded, normal floats otherwise."""
    rng = np.random.default_rng(0)
    feeds = {}
    for i in session.get_inputs():
        if i.name == "attention_mask":
            m = np.ones(i.shape, i.dtype)
            m[-1, i.shape[1] // 2:] = 0  # padding in the last sequence
            feeds[i.name] = m
        elif i.dtype.kind == "i":
            feeds[i.name] = rng.integers(0, 200, size=i.shape).astype(i.dtype)
        else:
            feeds[i.name] = rng.standard_normal(i.shape).astype(i.dtype)
    return feeds


def light_case(name: str) -> tuple[Path, dict[str, np.ndarray], np.ndarray]:
    """Model path, inputs as onnx's runner makes them, and the expected output shipped beside it."""
    from onnx.backend.test.runner import Runner

    path = LIGHT_DIR / f"{name}.onnx"
    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    feeds = {vi.name: Runner.generate_dummy_data(vi, seed=0, random=False) for vi in m.graph.input
             if vi.name not in inits}
    expected = numpy_helper.to_array(onnx.load_tensor(str(LIGHT_DIR / f"{name}_output_0.pb")))
    return path, feeds, expected


def light_case_with_scores(name: str) -> tuple[bytes, dict[str, np.ndarray], np.ndarray]:
    """``light_case`` with the model as the conformance suite runs it (``light_model_with_scores``:
    where it ends in a Softmax, the scores that Softmax reads are a second output), as bytes."""
    from hal.conformance.cases import light_model_with_scores

    _, feeds, expected = light_case(name)
    return light_model_with_scores(name.removeprefix("light_")).SerializeToString(), feeds, expected


def assert_light_output(out: np.ndarray, scores: np.ndarray | None, expected: np.ndarray, rtol: float = 1e-3,
                        atol: float = 1e-5) -> None:
    """A light model's output as the conformance suite checks it (``hal.conformance.check.assert_scored``):
    the shipped output, or where one float32 step of the scores would move their softmax past
    ``rtol`` (light_squeezenet's 9.5e9 scores), the scores' gaps and the softmax of those scores."""
    from hal.conformance.check import assert_scored

    if scores is None:
        np.testing.assert_allclose(out, expected, rtol=rtol, atol=atol)
    else:
        assert_scored([expected], [out], scores, rtol, atol)


def fused_and_plain(model: onnx.ModelProto, feeds: dict[str, np.ndarray]
                    ) -> tuple[list[Any], Any, list[Any], list[Any]]:
    """The model's fused steps (``hal.engine.fused_steps``), their program, and the outputs of that
    program and of the plain one (a reference kernel per node) on copies of ``feeds``: what a test
    of a fusion compares bit for bit."""
    from hal.engine import Program, fused_steps, steps_for_nodes
    from hal.graph.load import load

    graph = load(model)
    steps = fused_steps(graph, graph.nodes)
    fused, plain = Program(graph, steps), Program(graph, steps_for_nodes(graph, graph.nodes))
    return steps, fused, fused.run_list(dict(feeds)), plain.run_list(dict(feeds))


def targets_taking(*dtypes: str) -> list[str]:
    """The installed targets whose spec takes every one of ``dtypes`` (numpy's names: a spec without
    ``dtypes`` takes every type), for a test of a type's kernel path on each target that runs it."""
    import hal

    return [t.name for t in hal.targets() if not t.dtypes or set(dtypes) <= set(t.dtypes)]


def light_model_on(name: str, target: str) -> Any:
    """Run light model ``name`` on ``target`` at exact precision: its scores are the cpu target's bit
    for bit and its output the shipped one (``assert_light_output``). The session, for more checks."""
    import hal

    model, feeds, expected = light_case_with_scores(name)
    sess = hal.InferenceSession(model, target=target)
    out, *scores = sess.run(None, feeds)
    if scores:
        assert np.array_equal(scores[0], hal.InferenceSession(model, target="cpu").run(None, feeds)[1])
    assert_light_output(out, scores[0] if scores else None, expected)
    return sess


def write_dist(site: Path, dist: str, entry_points: dict[str, str], version: str = "0.1.0") -> None:
    """Make ``site`` look like a pip install of ``dist``: a dist-info with its entry points."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = ["[hal.plugins]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def run_python(code: str, site: Path | None = None, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    if site is not None:
        e["PYTHONPATH"] = os.pathsep.join([str(site), e.get("PYTHONPATH", "")])
    e.update(env or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=120)


@pytest.fixture
def plugin_site(tmp_path: Path) -> Path:
    """A folder holding the fixture plugins' code (not yet installed: add dist-infos as needed)."""
    import shutil

    site = tmp_path / "site"
    shutil.copytree(FIXTURES / "plugins", site, ignore=shutil.ignore_patterns("README.md", "__pycache__"))
    return site


@pytest.fixture
def hal_cli(capsys, monkeypatch) -> Callable[..., tuple[int, str, str]]:
    """``hal ARGV...`` in this process: (exit status, stdout, stderr)."""
    from hal.cli import main

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main sets it for the process

    def run(*argv: str) -> tuple[int, str, str]:
        rc = main(list(argv))
        out = capsys.readouterr()
        return rc, out.out, out.err
    return run
