"""An attention's core as one step: the scores' MatMul, the Softmax region that scales and masks
them (``hal.kernels.fused.Region`` with its score chain), and the MatMul of the probabilities by V
(``attention_core`` in ``hal.graph.fuse``). The same kernels in the same order on the same arrays,
so the same bits as the three steps, in one pass of the step loop; an exported attention's head
splits (the Reshape and Transpose views of Q, K and V) fold into this one step.

On tiny-gpt's 4 heads of 16x16 the arithmetic is a few microseconds and the three kernels' checks
about as much again; the shapes, the scale and the mask are the same run after run, so a step that
took the compiled score chain keeps what it decided and calls the same numpy and compiled routines
directly while the operands' shapes and the side inputs stay.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from hal.kernels import blas, jit, linalg
from hal.kernels.fused import _F32, Array, Key, Region, _Fused


class AttentionCore(_Fused):
    """MatMul(a, b), ``region`` over that product (its input 0) and the region's other inputs,
    then MatMul(the region's result, c) (the step's inputs: a, b, the region's others, c)."""

    _derived = ("_direct", "_kept")

    def __init__(self, scores: Key, region: Region, mix: Key):
        self.keys = [scores, mix]
        self.region = region
        self._bind()

    def _bind(self) -> None:
        super()._bind()
        #: both products the registry's MatMul (no number format wraps them), the region a score chain
        self._direct = (all(fn is linalg.matmul for fn in self.fns) and self.region._chain is not None
                        and self.region.softmax_attrs.get("axis", -1) == -1)
        #: (a's, b's and c's shapes, the side inputs, the score chain's loop arguments, and where the
        #: products may go through numpy's sgemm directly (the two loops' machine code, the operands'
        #: strides, the scores' shape, the result's) or None) of the last call that took the chain
        #: with read-only side inputs and products of views (``_keep``)
        self._kept: tuple[Any, ...] | None = None

    def __call__(self, a: Array, b: Array, *rest: Any) -> Any:
        kept = self._kept
        if kept is not None:
            c = rest[-1]
            if (a.__class__ is np.ndarray and b.__class__ is np.ndarray and c.__class__ is np.ndarray
                    and a.dtype is _F32 and b.dtype is _F32 and c.dtype is _F32 and a.shape == kept[0]
                    and b.shape == kept[1] and c.shape == kept[2] and all(map(operator.is_, rest[:-1], kept[3]))):
                # what the kernels below did for these shapes and side inputs: the MatMul kernel's
                # products as np.matmul's, the score chain's loop, numpy's exp and the softmax's last pass;
                # with numpy's sgemm called from the loops where the operands' layouts are those kept
                # (``hal.kernels.blas``): the scores and the chain in one call, the last pass and the
                # product by c in another
                direct = kept[5]
                if direct is not None and (a.strides, b.strides, c.strides) == direct[2]:
                    s = np.empty(direct[3], dtype=_F32)
                    p = np.empty(direct[3], dtype=_F32)
                    if direct[0](a, b, s, p, *kept[4]):
                        s = None
                        np.exp(p, out=p)
                        out = np.empty(direct[4], dtype=_F32)
                        direct[1](p, c, out)
                        return out
                s = np.matmul(a, b)
                n = s.shape[-1]
                p = np.empty(s.shape, dtype=_F32)
                loops = jit.loops()
                loops.softmax_prologue(s.reshape(-1, n), p.reshape(-1, n), *kept[4])
                np.exp(p, out=p)
                loops.softmax_scale(p.reshape(-1, n))
                return np.matmul(p, c)
        product, mix = self.fns
        sides = rest[:-1]
        s = product(a, b)
        p = self.region(s, *sides)
        if self._direct:
            self._keep(a, b, rest[-1], s, sides)
        s = None  # (the scores go before the last product, as the three steps free them)
        return mix(p, rest[-1])

    def _keep(self, a: Any, b: Any, c: Any, s: Any, sides: tuple[Any, ...]) -> None:
        """Keep this call's decisions where the next call with these shapes and side inputs may
        repeat it directly: products that the MatMul kernel takes as the arrays they are
        (``linalg.matmul_as_is``), and a score chain that ran its loop over the scores ``s`` with
        these read-only side inputs (its kept arguments)."""
        fixed = self.region._chain._fixed  # type: ignore[union-attr]
        if (fixed is None or not linalg.matmul_as_is(a, b) or not linalg.matmul_as_is(s, c) or fixed[0] != s.shape
                or not all(x.__class__ is np.ndarray and not x.flags.writeable for x in sides)
                or not all(map(operator.is_, (sides[i - 1] for i in self.region._chain._reads), fixed[1]))):
            return
        gemm = blas.loops()
        direct = None
        if gemm is not None and gemm.batch_ok(a, b) and gemm.batch_ok(s, c):
            # the loops' machine code for these types (the strides, and so the layouts, are checked a call)
            p, out = np.empty_like(s), np.empty((*s.shape[:-1], c.shape[-1]), dtype=_F32)
            direct = (jit.entry(gemm.scores_softmax_head, a, b, s, p, *fixed[2]),
                      jit.entry(gemm.softmax_tail_mix, p, c, out), (a.strides, b.strides, c.strides), s.shape,
                      out.shape)
        self._kept = (a.shape, b.shape, c.shape, sides, fixed[2], direct)  # one tuple: atomic for concurrent runs


__all__ = ["AttentionCore"]
