"""LayerNormalization steps that remember what their operands decided: an Add and the
LayerNormalization reading its sum as one step (``add_layer_norm`` in ``hal.graph.fuse``: a
transformer's residual join and the next block's LayerNormalization, which onnxruntime's optimiser
fuses as SkipLayerNormalization), the output projection before such a join with it
(``projection_norm``), and a LayerNormalization alone. All are bit-identical to the registered
kernels.

On tiny-gpt's 16x64 rows the compiled loop is a microsecond and the kernel's checks of its
operands (their layout, the scale and bias as vectors) about as much again; the operands' shapes
and the weights are the same run after run, so a step works that out once for the last call's and
only checks the activations' dtype and layout after.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hal.kernels import blas, elementwise, jit, normalization
from hal.kernels.fused import _F32, Array, Key, MatMulBias, _Fused


class _Norm(_Fused):
    """A step ending in the registry's LayerNormalization with attributes ``attrs`` (keys[-1])."""

    attrs: dict[str, Any]
    _derived = ("_compiled", "_epsilon", "_kept")

    def _bind(self) -> None:
        super()._bind()
        attrs = self.attrs
        self._compiled = (self.fns[-1] is normalization.layer_normalization and attrs.get("_n_outputs", 1) == 1
                          and all(fn is elementwise.add for fn in self.fns[:-1]))
        self._epsilon = float(attrs.get("epsilon", normalization.DEFAULT_EPSILON))
        #: (the activations' shapes, scale, bias, ``normalization``'s plan for them) of the last call the
        #: loop took: a call with those shapes and weights checks only the activations' dtype and layout
        self._kept: tuple[Any, ...] | None = None


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
                if kept[4] is not None:  # the loop's machine code for these types: no dispatch a call
                    out = np.empty(x.shape, dtype=_F32)
                    kept[4](x, *kept[3], bias is not None, self._epsilon, out)
                    return out
                plan = kept[3]
            else:
                plan = normalization.layer_norm_plan(x, scale, bias, self.attrs.get("axis", -1))
                if plan is not None:
                    loop = None
                    if x.ndim == 3:  # (as layer_norm_into calls it)
                        loop = jit.entry(jit.loops().layer_norm_3d, x, *plan, bias is not None, self._epsilon,
                                         np.empty(x.shape, dtype=_F32))
                    self._kept = (x.shape, scale, bias, plan, loop)  # one tuple: atomic for concurrent runs
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
                if kept[4] is not None:  # the loop's machine code for these types: no dispatch a call
                    shape, s, t = kept[3]
                    total, out = np.empty(shape, dtype=_F32), np.empty(shape, dtype=_F32)
                    kept[4](a, b, s, t, bias is not None, self._epsilon, total, out)
                    return total, out
                plan = kept[3]
            else:
                plan = normalization.add_layer_norm_plan(a, b, scale, bias, self.attrs.get("axis", -1))
                if plan is not None:
                    loop = None
                    if 1 < a.ndim < 4 and 1 < b.ndim < 4:  # (as add_layer_norm_into calls it)
                        shape, s, t = plan
                        loop = jit.entry(jit.loops().add_layer_norm_rows, a, b, s, t, bias is not None,
                                         self._epsilon, np.empty(shape, dtype=_F32), np.empty(shape, dtype=_F32))
                    self._kept = ((a.shape, b.shape), scale, bias, plan, loop)  # one tuple: atomic
            if plan is not None:
                return normalization.add_layer_norm_into(a, b, *plan, bias is not None, self._epsilon)
        total = self.fns[0](a, b)
        y = self.fns[1](total, scale, bias, **self.attrs)
        return total, y[0] if y.__class__ is tuple else y


class ProjectionNorm(_Fused):
    """A MatMul, its bias Add, the residual Add that alone reads their sum and the LayerNormalization
    of the join (the step's inputs: the MatMul's a and W, the bias, the residual's other operand,
    the norm's scale and bias; its attributes ``attrs``), returning (the join, the normalised):
    ``MatMulBias`` and then ``AddLayerNorm``, as one step of the loop.

    A call whose two parts each kept a direct path (``MatMulBias``'s through numpy's sgemm,
    ``AddLayerNorm``'s plan) keeps them together, and the next call with those shapes and weights
    runs the product, the bias, the join and the norm as one compiled call
    (``_gemm_loops.gemm_bias_add_layer_norm``): the same operations, so the same bits (tiny-gpt's
    output projections: two steps and four loop calls a block down to one and one)."""

    _derived = ("_pair", "_join", "_kept")

    def __init__(self, keys: list[Key], bias_first: bool, product_first: bool, attrs: dict[str, Any]):
        self.keys = list(keys)
        self.bias_first = bias_first
        self.product_first = product_first
        self.attrs = dict(attrs)
        self._bind()

    def _bind(self) -> None:
        super()._bind()
        self._pair = MatMulBias(self.keys[0], self.keys[1], self.bias_first)
        self._join = AddLayerNorm(self.keys[2], self.keys[3], self.attrs)
        #: (a's, x's shapes, W, bias, scale, norm bias, the product's shape, the join's, the loop's
        #: machine code, the norm's plan's vectors, whether it has a bias and epsilon) of the last call
        #: ``_keep`` found repeatable
        self._kept: tuple[Any, ...] | None = None

    def __call__(self, a: Any, w: Any, bias: Any, x: Any, scale: Any, norm_bias: Any = None) -> tuple[Array, Any]:
        kept = self._kept
        if (kept is not None and w is kept[2] and bias is kept[3] and scale is kept[4] and norm_bias is kept[5]
                and a.__class__ is np.ndarray and x.__class__ is np.ndarray and a.dtype is _F32 and x.dtype is _F32
                and a.shape == kept[0] and x.shape == kept[1] and a.flags.c_contiguous and x.flags.c_contiguous):
            h = np.empty(kept[6], dtype=_F32)
            total = np.empty(kept[7], dtype=_F32)
            out = np.empty(kept[7], dtype=_F32)
            kept[8](a, w, bias, self.bias_first, x, self.product_first, *kept[9], h, total, out)
            return total, out
        h = self._pair(a, w, bias)
        got = self._join(h, x, scale, norm_bias) if self.product_first else self._join(x, h, scale, norm_bias)
        self._keep(a, w, bias, x, h, scale, norm_bias)
        return got

    def _keep(self, a: Any, w: Any, bias: Any, x: Any, h: Any, scale: Any, norm_bias: Any) -> None:
        """Keep this call's operands where both parts kept a direct path for them (the product's
        through numpy's sgemm for this a, the join's plan for the product's and x's shapes)."""
        pair, join = self._pair._kept, self._join._kept
        gemm = blas.loops()
        if (gemm is None or pair is None or pair[3] is None or join is None or pair[0] != a.shape
                or join[1] is not scale or join[2] is not norm_bias or x.__class__ is not np.ndarray
                or x.ndim not in (2, 3) or a.ndim not in (2, 3) or not x.flags.c_contiguous
                or join[0] != ((h.shape, x.shape) if self.product_first else (x.shape, h.shape))):
            return
        shape, s, t = join[3]
        rest = (s, t, norm_bias is not None, self._join._epsilon)
        # the loop's machine code for these types (checked before each kept call): no dispatch a call
        loop = jit.entry(gemm.gemm_bias_add_layer_norm, a, w, bias, self.bias_first, x, self.product_first, *rest,
                         h, np.empty(shape, dtype=_F32), np.empty(shape, dtype=_F32))
        # one tuple: atomic for concurrent runs
        self._kept = (a.shape, x.shape, w, bias, scale, norm_bias, h.shape, shape, loop, rest)


__all__ = ["AddLayerNorm", "LayerNorm", "ProjectionNorm"]
