"""Shared fixtures: the light model zoo shipped inside onnx, and out-of-tree plugin installs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
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
