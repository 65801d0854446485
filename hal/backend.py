"""onnx's backend interface over hal, so onnx's own ``BackendTest`` runs unchanged on any target.

    import onnx.backend.test
    import hal.backend

    backend_test = onnx.backend.test.BackendTest(hal.backend, __name__)
    globals().update(backend_test.include(r"test_relu").test_cases)

The target comes from the device string when it names an installed target (``"gpu"``,
``"hal:lpu"``); onnx's generic ``"CPU"`` device means ``$HAL_BACKEND_TARGET`` (default ``cpu``).
``"CUDA"`` is not a hal device, so BackendTest skips its CUDA variants. The fallback policy is
``error`` unless ``$HAL_BACKEND_FALLBACK`` or a ``fallback=`` keyword says otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, namedtupledict

ENV_TARGET = "HAL_BACKEND_TARGET"
ENV_FALLBACK = "HAL_BACKEND_FALLBACK"
_SESSION_KWARGS = ("precision", "fallback", "devices", "max_memory", "timeout_s")


def _installed() -> set[str]:
    from hal.plugins import registry

    return set(registry().targets)


def target_for(device: str = "CPU") -> str | None:
    """The hal target a device string means, or None when it means none."""
    d = (device or "CPU").strip()
    name = (d.split(":", 1)[1] if d.lower().startswith("hal:") else d).split(":")[0]
    if name == "CPU":  # onnx's generic device (BackendTest's default): the configured target
        return os.environ.get(ENV_TARGET) or "cpu"
    if name.upper() == "CUDA":
        return None
    return name if name in _installed() else None


def _value(v: Any) -> Any:
    if isinstance(v, onnx.TensorProto):
        return onnx.numpy_helper.to_array(v)
    if isinstance(v, np.generic):
        return np.asarray(v)
    return v


class HalBackendRep(BackendRep):
    """A prepared model: a hal InferenceSession; ``run`` takes inputs positionally or by name."""

    def __init__(self, session: Any, input_names: Sequence[str]):
        self.session = session
        self.input_names = list(input_names)
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        if isinstance(inputs, Mapping):
            feeds = {k: _value(v) for k, v in inputs.items()}
        else:
            if isinstance(inputs, np.ndarray) or not isinstance(inputs, (list, tuple)):
                inputs = [inputs]
            feeds = dict(zip(self.input_names, (_value(v) for v in inputs)))
        outputs = self.session.run(None, feeds)
        return namedtupledict("Outputs", self.output_names)(*outputs)


class HalBackend(Backend):
    """onnx.backend.base.Backend over hal's InferenceSession."""

    @classmethod
    def prepare(cls, model: onnx.ModelProto | str | bytes, device: str = "CPU", **kwargs: Any) -> HalBackendRep:
        from hal.errors import HalError
        from hal.session import InferenceSession

        target = target_for(device)
        if target is None:
            raise HalError(f"device {device!r} is not a hal target", where="hal.backend",
                           hint=f"use 'CPU' (${ENV_TARGET}, default cpu) or one of: {', '.join(sorted(_installed()))}")
        opts = {k: v for k, v in kwargs.items() if k in _SESSION_KWARGS}
        opts.setdefault("fallback", os.environ.get(ENV_FALLBACK) or "error")
        if not isinstance(model, onnx.ModelProto):
            from hal.graph.load import parse_model

            model = parse_model(model)[0]
        inits = {i.name for i in model.graph.initializer} | {s.values.name for s in model.graph.sparse_initializer}
        names = [i.name for i in model.graph.input if i.name not in inits]
        return HalBackendRep(InferenceSession(model, target=target, **opts), names)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU",
                 outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,
                 **kwargs: Any) -> tuple[Any, ...]:
        """Run one node: wrap it in a model typed from its inputs (and ``outputs_info`` when given)."""
        from hal.graph.attrcheck import check_before_inference

        values = [_value(v) for v in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
        in_vis = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                  for n, v in zip(node.input, values) if n]
        opset = kwargs.pop("opset_version", None)
        imports = [onnx.helper.make_opsetid(node.domain or "", opset)] if opset else None
        if outputs_info:
            out_vis = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dt)), shp)
                       for n, (dt, shp) in zip(node.output, outputs_info)]
        else:  # type the outputs by onnx's shape inference on the bare node
            bare = onnx.helper.make_model(onnx.helper.make_graph([node], "run_node", in_vis, []), opset_imports=imports)
            check_before_inference(bare, where=f"node {node.name or node.op_type!r}")
            inferred = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(bare).graph.value_info}
            out_vis = [inferred.get(n) or onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                       for n in node.output if n]
        model = onnx.helper.make_model(onnx.helper.make_graph([node], "run_node", in_vis, out_vis),
                                       opset_imports=imports)
        return cls.prepare(model, device, **kwargs).run([v for n, v in zip(node.input, values) if n])

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return target_for(device) is not None


prepare = HalBackend.prepare
run_model = HalBackend.run_model
run_node = HalBackend.run_node
supports_device = HalBackend.supports_device
is_compatible = HalBackend.is_compatible

__all__ = ["ENV_FALLBACK", "ENV_TARGET", "HalBackend", "HalBackendRep", "is_compatible", "prepare", "run_model",
           "run_node", "supports_device", "target_for"]
