"""The machine a benchmark ran on, as its JSON records it: CPU, cores, RAM, platform, library
versions, numpy's BLAS build, the git commit (and how many files differed from it), and the
thread and OpenBLAS variables in force."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import THREAD_ENV_VARS


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _ram_bytes() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    import hal

    return {"python": platform.python_version(), "numpy": np.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "hal": hal.__version__}


def _blas_config() -> Any:
    with contextlib.suppress(Exception):
        cfg = np.show_config(mode="dicts")
        return cfg.get("Build Dependencies", cfg)
    return None


def _git_state() -> dict[str, Any] | None:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return {"commit": head.stdout.strip(), "changed_files": len(dirty.stdout.splitlines())}


def machine_info() -> dict[str, Any]:
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "ram_bytes": _ram_bytes(),
            "platform": platform.platform(), "versions": _versions(), "git": _git_state(),
            "numpy_build": _blas_config(),
            "env": {k: os.environ.get(k) for k in (*THREAD_ENV_VARS, "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}}
