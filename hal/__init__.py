"""hal: one ONNX model, every accelerator.

    import hal
    sess = hal.InferenceSession("model.onnx", target="gpu", precision="native")
    outputs = sess.run(None, {"x": x})
    sess.report          # latency, memory, devices, energy, kernels, placement
"""

from __future__ import annotations

from hal.compare import compare
from hal.errors import (
    CompileError,
    HalError,
    InputError,
    ModelError,
    PluginError,
    ResourceError,
    RunError,
    UnsupportedOpError,
)
from hal.estimate import estimate
from hal.hookspecs import hookimpl
from hal.plugins import targets
from hal.session import FallbackWarning, InferenceSession, compile
from hal.specs import HAL_API_VERSION

__version__ = "0.1.0"

__all__ = [
    "HAL_API_VERSION",
    "CompileError",
    "FallbackWarning",
    "HalError",
    "InferenceSession",
    "InputError",
    "ModelError",
    "PluginError",
    "ResourceError",
    "RunError",
    "UnsupportedOpError",
    "compare",
    "compile",
    "estimate",
    "hookimpl",
    "targets",
]
