"""Hooks of the gpu plugin: three GPUs from three spec sheets, one compiler.

Registered through the ``hal.plugins`` entry point like any vendor's plugin. ``gpu`` is an H100
SXM5-class GPU, ``gpu-h200`` an H200 SXM-class one (the H100's die with HBM3e) and ``gpu-mi300x``
an AMD MI300X-class one; they differ only in their sheets.
"""

from __future__ import annotations

from hal.hookspecs import hookimpl
from hal.specs import builtin_sheet
from hal_gpu.compiler import GpuTarget

HAL_API_VERSION = "1.0"

#: spec sheets in specs/targets/, one target each
SHEETS = ("gpu-h100.toml", "gpu-h200.toml", "gpu-mi300x.toml")


@hookimpl
def hal_targets():
    return [GpuTarget(builtin_sheet(name)) for name in SHEETS]
