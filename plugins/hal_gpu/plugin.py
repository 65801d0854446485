"""Hooks of the gpu plugin: two GPUs from two spec sheets, one compiler.

Registered through the ``hal.plugins`` entry point like any vendor's plugin. ``gpu`` is an H100
SXM5-class GPU, ``gpu-mi300x`` an AMD MI300X-class one; they differ only in their sheets.
"""

from __future__ import annotations

from hal.hookspecs import hookimpl
from hal.specs import builtin_sheet
from hal_gpu.compiler import GpuTarget

HAL_API_VERSION = "1.0"

#: spec sheets in specs/targets/, one target each
SHEETS = ("gpu-h100.toml", "gpu-mi300x.toml")


@hookimpl
def hal_targets():
    return [GpuTarget(builtin_sheet(name)) for name in SHEETS]
