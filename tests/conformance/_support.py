"""Helpers of the conformance-suite tests: the wrong-add fixture plugin, and pytest runs in a bare folder."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

WRONG_TARGET = Path(__file__).resolve().parent.parent / "fixtures" / "wrong_target" / "plugin.py"
MODULE = "hal_fixture_wrong_target"


def load_wrong_target() -> ModuleType:
    """The wrong-add plugin module, imported under a stable name so its executables pickle."""
    if MODULE in sys.modules:
        return sys.modules[MODULE]
    spec = importlib.util.spec_from_file_location(MODULE, WRONG_TARGET)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = mod
    spec.loader.exec_module(mod)
    return mod


def run_pytest(folder: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m pytest ARGS`` in ``folder`` (a folder with no tests and no configuration), rooted
    there: a setup.py or ini file in a folder above it would otherwise become the rootdir and turn
    the report's node ids into paths relative to that folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(folder), *args],
                          cwd=folder, capture_output=True, text=True, env=env, timeout=timeout)
