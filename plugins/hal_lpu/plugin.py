"""Hooks of the LPU target; registered through the ``hal.plugins`` entry point like any vendor's."""

from __future__ import annotations

from hal.hookspecs import hookimpl
from hal_lpu.compiler import LpuTarget

HAL_API_VERSION = "1.0"


@hookimpl
def hal_targets():
    return [LpuTarget()]
