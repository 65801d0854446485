"""An Add and the LayerNormalization reading its sum as one step (``add_layer_norm`` in
``hal.graph.fuse``): a transformer's residual join and the next block's LayerNormalization, which
onnxruntime's optimiser fuses as SkipLayerNormalization. Both results come out (the sum is the
next residual's input), bit-identical to the two kernels in turn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hal.kernels import elementwise, normalization
from hal.kernels.fused import _F32, Array, Key, _Fused


class AddLayerNorm(_Fused):
    """An Add and a LayerNormalization of its sum (the step's inputs: the Add's two, then the
    LayerNormalization's scale and bias; its attributes ``attrs``), returning (sum, normalised).

    For float32 operands of one shape (up to leading 1s), normalised along the last axis by one
    scale and bias per column, one compiled loop (``normalization.add_layer_norm_into``) where the
    kernels make two calls. What the operands' shapes and the scale and bias decide is worked out
    once for the last call's (``add_layer_norm_plan``). Elsewhere (other dtypes, a broadcast, Mean
    and InvStdDev asked for, kernels other than the registry's) the Add's kernel and then the
    LayerNormalization's."""

    def __init__(self, add: Key, norm: Key, attrs: dict[str, Any]):
        self.keys = [add, norm]
        self.attrs = dict(attrs)
        self._bind()

    def _bind(self) -> None:
        super()._bind()
        attrs = self.attrs
        self._one_loop = (self.fns[0] is elementwise.add and self.fns[1] is normalization.layer_normalization
                          and attrs.get("_n_outputs", 1) == 1)
        self._epsilon = float(attrs.get("epsilon", normalization.DEFAULT_EPSILON))
        #: (a's shape, b's shape, scale, bias, the plan for them) of the last call the loop took
        self._kept: tuple[Any, ...] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for k in ("_one_loop", "_epsilon", "_kept"):
            state.pop(k, None)
        return state

    def __call__(self, a: Any, b: Any, scale: Any, bias: Any = None) -> tuple[Array, Any]:
        if self._one_loop and a.__class__ is np.ndarray and b.__class__ is np.ndarray:
            kept = self._kept
            if (kept is not None and kept[2] is scale and kept[3] is bias and a.shape == kept[0]
                    and b.shape == kept[1] and a.dtype is _F32 and b.dtype is _F32 and a.flags.c_contiguous
                    and b.flags.c_contiguous):
                plan = kept[4]
            else:
                plan = normalization.add_layer_norm_plan(a, b, scale, bias, self.attrs.get("axis", -1))
                if plan is not None:
                    self._kept = (a.shape, b.shape, scale, bias, plan)  # one tuple: atomic for concurrent runs
            if plan is not None:
                return normalization.add_layer_norm_into(a, b, *plan, bias is not None, self._epsilon)
        total = self.fns[0](a, b)
        y = self.fns[1](total, scale, bias, **self.attrs)
        return total, y[0] if y.__class__ is tuple else y


__all__ = ["AddLayerNorm"]
