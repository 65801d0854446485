"""Shared fixtures: the light model zoo shipped inside onnx, and out-of-tree plugin installs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

FIXTURES = Path(__file__).parent / "fixtures"
LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_MODELS = sorted(p.stem for p in LIGHT_DIR.glob("light_*.onnx"))


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
