"""Helpers of the compile-cache tests: a counting target (the cpu target under another name) and
the entry files of a cache folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import hal
from hal import plugins
from hal.cache import read_entry
from hal.specs import TargetSpec

X = {"x": np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)}


class CountingTarget:
    """The cpu target under another name, counting compiles and loads (version set per test)."""

    def __init__(self, name: str, version: str):
        self.spec = TargetSpec(name=name, vendor="Counting", kind="other", version=version)
        self.compiles = self.loads = 0

    def capability(self, graph: Any, options: Any) -> Any:
        return plugins.get_target("cpu").capability(graph, options).model_copy(update={"target": self.spec.name})

    def compile(self, graph: Any, options: Any) -> Any:
        self.compiles += 1
        return plugins.get_target("cpu").compile(graph, options)

    def load(self, blob: bytes) -> Any:
        self.loads += 1
        return plugins.get_target("cpu").load(blob)


class CountingPlugin:
    HAL_API_VERSION = "1.0"

    def __init__(self, target: CountingTarget):
        self.target = target

    @hal.hookimpl
    def hal_targets(self) -> list[Any]:
        return [self.target]


def entries(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.halc"))


def session_entries(folder: Path) -> list[Path]:
    return [p for p in entries(folder) if (read_entry(p)[0] or {}).get("kind") == "session"]
