"""numpy kernels for ONNX ops: one module per op family, all behind one registry.

Importing this package imports every family module in it, so adding a family is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil

from hal.kernels.registry import KernelContext, KernelDef, kernel, lookup, register, registered_ops

for _mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _mod.name.startswith("_") and _mod.name != "registry":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["KernelContext", "KernelDef", "kernel", "lookup", "register", "registered_ops"]
