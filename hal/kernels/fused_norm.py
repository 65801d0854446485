"""LayerNormalization steps that remember what their operands decided: an Add and the
LayerNormalization reading its sum as one step (``add_layer_norm`` in ``hal.graph.fuse``: a
transformer's residual join and the next block's LayerNormalization, which onnxruntime's optimiser
fuses as SkipLayerNormalization), and a LayerNormalization alone. Both are bit-identical to the
registered kernels.

On tiny-gpt's 16x64 rows the compiled loop is a microsecond and the kernel's checks of its
operands (their layout, the scale and bias as vectors) about as much again; the operands' shapes
and the weights are the same run after run, so a step works that out once for the last call's and
only checks the activations' dtype and layout after.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hal.kernels import elementwise, normalization
from hal.kernels.fused import _F32, Array, Key, _Fused


class _Norm(_Fused):
    """A step ending in the registry's LayerNormalization with attributes ``attrs`` (keys[-1])."""

    attrs: dict[str, Any]

    def _bind(self) -> None:
        super()._bind()
        attrs = self.attrs
        self._compiled = (self.fns[-1] is normalization.layer_normalization and attrs.get("_n_outputs", 1) == 1
                          and all(fn is elementwise.add for fn in self.fns[:-1]))
        self._epsilon = float(attrs.get("epsilon", normalization.DEFAULT_EPSILON))
        #: (the activations' shapes, scale, bias, ``normalization``'s plan for them) of the last call the
        #: loop took: a call with those shapes and weights checks only the activations' dtype and layout
        self._kept: tuple[Any, ...] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for k in ("_compiled", "_epsilon", "_kept"):
            state.pop(k, None)
        return state


class LayerNorm(_Norm):
    """A LayerNormalization alone (the step's inputs: x, scale, bias; its attributes ``attrs``):
    ``normalization.layer_norm_into`` with the plan kept (16x64 rows: 2.9 -> 2.2 us a call, against the kernel),
    else the kernel."""

    def __init__(self, norm: Key, attrs: dict[str, Any]):
        self.keys = [norm]
        self.attrs = dict(attrs)
        self._bind()

    def __call__(self, x: Any, scale: Any, bias: Any = None) -> Any:
        if self._compiled and x.__class__ is np.ndarray:
            kept = self._kept
            if (kept is not None and kept[1] is scale and kept[2] is bias and x.shape == kept[0] and x.dtype is _F32
                    and x.flags.c_contiguous):
                plan = kept[3]
            else:
                plan = normalization.layer_norm_plan(x, scale, bias, self.attrs.get("axis", -1))
                if plan is not None:
                    self._kept = (x.shape, scale, bias, plan)  # one tuple: atomic for concurrent runs
            if plan is not None:
                return normalization.layer_norm_into(x, *plan, bias is not None, self._epsilon)
        return self.fns[0](x, scale, bias, **self.attrs)


class AddLayerNorm(_Norm):
    """An Add and a LayerNormalization of its sum (the step's inputs: the Add's two, then the
    LayerNormalization's scale and bias; its attributes ``attrs``), returning (sum, normalised).

    For float32 operands of one shape (up to leading 1s), normalised along the last axis by one
    scale and bias per column, one compiled loop (``normalization.add_layer_norm_into``) where the
    kernels make two calls. Elsewhere (other dtypes, a broadcast, Mean and InvStdDev asked for,
    kernels other than the registry's) the Add's kernel and then the LayerNormalization's."""

    def __init__(self, add: Key, norm: Key, attrs: dict[str, Any]):
        self.keys = [add, norm]
        self.attrs = dict(attrs)
        self._bind()

    def __call__(self, a: Any, b: Any, scale: Any, bias: Any = None) -> tuple[Array, Any]:
        if self._compiled and a.__class__ is np.ndarray and b.__class__ is np.ndarray:
            kept = self._kept
            if (kept is not None and kept[1] is scale and kept[2] is bias and kept[0] == (a.shape, b.shape)
                    and a.dtype is _F32 and b.dtype is _F32 and a.flags.c_contiguous and b.flags.c_contiguous):
                plan = kept[3]
            else:
                plan = normalization.add_layer_norm_plan(a, b, scale, bias, self.attrs.get("axis", -1))
                if plan is not None:
                    self._kept = ((a.shape, b.shape), scale, bias, plan)  # one tuple: atomic for concurrent runs
            if plan is not None:
                return normalization.add_layer_norm_into(a, b, *plan, bias is not None, self._epsilon)
        total = self.fns[0](a, b)
        y = self.fns[1](total, scale, bias, **self.attrs)
        return total, y[0] if y.__class__ is tuple else y


__all__ = ["AddLayerNorm", "LayerNorm"]
