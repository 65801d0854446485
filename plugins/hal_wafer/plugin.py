"""Hooks of the wafer-scale target; registered through the ``hal.plugins`` entry point like any vendor's."""

from __future__ import annotations

from hal.hookspecs import hookimpl
from hal_wafer.compiler import WaferTarget

HAL_API_VERSION = "1.0"


@hookimpl
def hal_targets():
    return [WaferTarget()]
