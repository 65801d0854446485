"""A product's epilogue: a MatMul, its bias Add and the elementwise region that alone reads the sum
(``matmul_epilogue`` in ``hal.graph.fuse``), as one step. An exported GELU there (``gelu_form``) runs
as BLAS's product and compiled row loops around numpy's tanh, bit-identical to the nodes one by one.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from hal.kernels import blas, elementwise, jit, linalg
from hal.kernels.fused import _F32, Array, Key, MatMulBias, Region, _Fused


class MatMulEpilogue(_Fused):
    """A MatMul, its bias Add and the elementwise region that alone reads the sum (the step's
    inputs: a, b, bias, then the region's other inputs; the region reads the sum as its input 0), as
    a transformer MLP's first projection and its GELU (``matmul_epilogue`` in ``hal.graph.fuse``).

    Where the region is an exported GELU (``gelu_form``) and everything is float32, the product is
    BLAS's and the rest two compiled row loops around numpy's tanh, over blocks of rows that stay in
    cache: the bias Add in place with the tanh's argument beside it, then the tail in place
    (``_loops.bias_erf_gelu_arg`` or ``bias_tanh_gelu_arg``, ``gelu_tail``). The same float32
    operations in the same order as the Add's and the region's numpy calls, so the same bits, in
    three calls where they made seven to eleven passes over the product (tiny-gpt's 16x64 by 64x256
    and GELU 19.9 -> 11.4 us, BERT-bench's 512x384 by 384x1536 7.3 -> 6.6 ms, in isolation).
    Elsewhere ``MatMulBias`` and then the region, one step still."""

    _derived = ("_pair", "_form", "_kept", "_kept_call")

    def __init__(self, matmul: Key, add: Key, bias_first: bool, region: Region):
        self.keys = [matmul, add]
        self.bias_first = bias_first
        self.region = region
        self._bind()

    def _bind(self) -> None:
        super()._bind()
        self._pair = MatMulBias(self.keys[0], self.keys[1], self.bias_first)
        plain = self.fns[0] is linalg.matmul and self.fns[1] is elementwise.add
        self._form = gelu_form(self.region) if plain else None
        #: (the scalar arrays of the last call, their values) while those are read-only
        self._kept: tuple[list[Any], list[float]] | None = None
        #: (a's shape, the weight, the bias, the region's other inputs, the GELU's scalars, the direct
        #: head's and tail's machine code or None (``_head``), the result's shape) of the last call that
        #: took the GELU's loops with read-only weights and an activation multiplied as it is
        self._kept_call: tuple[Any, ...] | None = None

    def __call__(self, a: Array, b: Array, bias: Array, *rest: Any) -> Any:
        kept = self._kept_call
        if (kept is not None and b is kept[1] and bias is kept[2] and a.__class__ is np.ndarray and a.dtype is _F32
                and a.shape == kept[0] and all(map(operator.is_, rest, kept[3]))):
            # what the checks below found for this shape, these weights and scalars: the MatMul
            # kernel's one product of a as it is (``linalg.matmul_as_is``), then the loops; numpy's
            # sgemm and the head's loop in one compiled call where a lies row-major (``hal.kernels.blas``)
            if kept[5] is not None and a.flags.c_contiguous:
                return self._direct_gelu(kept[5], a, b, bias, kept[4], kept[6])
            return self._gelu(self._form[0] == "erf", np.matmul(a, b), bias, kept[4])  # type: ignore[index]
        form = self._form
        if (form is not None and a.__class__ is np.ndarray and b.__class__ is np.ndarray
                and bias.__class__ is np.ndarray and a.dtype is _F32 and b.dtype is _F32 and bias.dtype is _F32
                and b.ndim == 2 and bias.shape == b.shape[1:] and jit.enabled()):
            k = self._scalars([rest[i - 1] for i in form[1]], a.ndim)
            if k is not None:
                y = self.fns[0](a, b)  # the MatMul kernel's own array: C-contiguous, of the step alone
                if (y.__class__ is np.ndarray and y.dtype is _F32 and y.size and y.flags.c_contiguous
                        and y.flags.writeable):
                    # (the region reads nothing but its scalars, read-only and kept by ``_scalars``)
                    if (self._kept is not None and self._kept[1] is k and len(rest) == len(form[1])
                            and not b.flags.writeable and not bias.flags.writeable and linalg.matmul_as_is(a, b)):
                        # one tuple: atomic for concurrent runs
                        self._kept_call = (a.shape, b, bias, rest, k, self._head(form[0] == "erf", a, b, bias, k),
                                           (*a.shape[:-1], b.shape[1]))
                    return self._gelu(form[0] == "erf", y, bias, k)
                return self.region(self._pair.add_bias(y, bias), *rest)
        return self.region(self._pair(a, b, bias), *rest)

    def _scalars(self, xs: list[Any], ndim: int) -> list[float] | None:
        """The values of the GELU's scalars ``xs`` when each is a float32 array of one element that
        does not broadcast a result of ``ndim`` dimensions (or 1) to more, else None. Read again only
        when the arrays change or one is writable (a caller's feed may change in place)."""
        kept = self._kept
        if kept is not None and all(map(operator.is_, xs, kept[0])):
            return kept[1]
        top = max(ndim, 1)
        for x in xs:
            if x.__class__ is not np.ndarray or x.dtype is not _F32 or x.size != 1 or x.ndim > top:
                return None
        values = [x.item() for x in xs]
        if not any(x.flags.writeable for x in xs):
            self._kept = (xs, values)  # one tuple: atomic for concurrent runs
        return values

    def _head(self, erf: bool, a: Array, b: Array, bias: Array, k: list[float]) -> tuple[Any, Any] | None:
        """``_gemm_loops``' product and GELU head, and the tail's loop, for this call's operands where
        they may take them (a row-major activation of at most 3 axes and rows that fit one block:
        ``_gelu``'s one pass), as their machine code for these types (``jit.entry``), else None."""
        gemm = blas.loops()
        if (gemm is None or a.ndim > 3 or not bias.flags.c_contiguous or not gemm.rows_ok(a, b)
                or a.size // a.shape[-1] * b.shape[1] > Region.BLOCK):
            return None
        y = np.empty((*a.shape[:-1], b.shape[1]), dtype=np.float32)
        p = np.empty((y.size // b.shape[1], b.shape[1]), dtype=np.float32)
        head = (jit.entry(gemm.gemm_erf_gelu_head, a, b, bias, k[0], _ERF_COEF, _ERF_TOP, y, p) if erf
                else jit.entry(gemm.gemm_tanh_gelu_head, a, b, bias, k[0], k[1], y, p))
        return head, jit.entry(jit.loops().gelu_tail, p, p, k[-2], k[-1])

    def _direct_gelu(self, loops: tuple[Any, Any], a: Array, b: Array, bias: Array, k: list[float],
                     shape: tuple[int, ...]) -> Array:
        """``_gelu`` of a @ b with the product and the head's loop as one call (``loops``, ``_head``'s)."""
        y = np.empty(shape, dtype=np.float32)
        n = shape[-1]
        p = np.empty((y.size // n, n), dtype=np.float32)
        head, tail = loops
        if self._form[0] == "erf":  # type: ignore[index]
            head(a, b, bias, k[0], _ERF_COEF, _ERF_TOP, y, p)
        else:
            head(a, b, bias, k[0], k[1], y, p)
        np.tanh(p, out=p)
        tail(y.reshape(-1, n), p, k[-2], k[-1])
        return y

    def _gelu(self, erf: bool, y: Array, bias: Array, k: list[float]) -> Array:
        """The bias Add and the GELU over ``y``'s rows, in place, ``Region.BLOCK`` floats at a time."""
        loops = jit.loops()
        n = y.shape[-1]
        rows = y if y.ndim == 2 else y.reshape(-1, n)
        count = rows.shape[0]
        step = max(1, Region.BLOCK // n)
        scratch = np.empty((min(step, count), n), dtype=np.float32)
        for start in range(0, count, step):
            t, p = (rows, scratch) if step >= count else (rows[start:start + step], scratch[:min(step, count - start)])
            if erf:
                loops.bias_erf_gelu_arg(t, bias, k[0], _ERF_COEF, _ERF_TOP, p)
            else:
                loops.bias_tanh_gelu_arg(t, bias, k[0], k[1], p)
            np.tanh(p, out=p)
            loops.gelu_tail(t, p, k[-2], k[-1])
        return y


_ERF_COEF, _ERF_TOP = elementwise.ERF_F32_COEF, elementwise.ERF_F32_TOP_S


#: the GELUs as exported (torch's erf one and its tanh approximation), over the region's inputs:
#: "x" its input 0 (the product's sum), an int k the k-th scalar (any input but 0), (op, operands)
#: a member; Add and Mul match either operand order (float32 sums and products commute exactly)
_GELU_FORMS: dict[str, Any] = {
    "erf": ("Mul", ("Mul", "x", ("Add", ("Erf", ("Div", "x", 0)), 1)), 2),
    "tanh": ("Mul", 3, ("Mul", "x", ("Add", 2, ("Tanh", ("Mul", 1, ("Add", "x",
                                                                    ("Mul", 0, ("Mul", "x", ("Mul", "x", "x"))))))))),
}


def gelu_form(region: Region) -> tuple[str, tuple[int, ...]] | None:
    """(the GELU form, the region inputs its scalars are in order) where ``region`` computes one
    of ``_GELU_FORMS`` from its input 0 in exactly those members and operations, else None."""
    if region.has_softmax or region._block_plan is None:
        return None
    ops = [key[1] for key in region.keys]

    def match(pattern: Any, ref: int, bound: dict[int, int]) -> dict[int, int] | None:
        if pattern == "x":
            return bound if ref == 0 else None
        if isinstance(pattern, int):
            if ref <= 0 or bound.get(pattern, ref) != ref:
                return None
            return {**bound, pattern: ref}
        if ref >= 0:
            return None
        j = ~ref
        op, *args = pattern
        refs = region.refs[j]
        if ops[j] != op or len(refs) != len(args):
            return None
        orders = [refs, refs[::-1]] if op in ("Add", "Mul") else [refs]
        for order in orders:
            got: dict[int, int] | None = bound
            for p, r in zip(args, order):
                got = match(p, r, got) if got is not None else None
            if got is not None:
                return got
        return None

    def size(pattern: Any) -> int:
        return 0 if not isinstance(pattern, tuple) else 1 + sum(size(p) for p in pattern[1:])

    for name, pattern in _GELU_FORMS.items():
        if size(pattern) == len(ops):
            got = match(pattern, ~(len(ops) - 1), {})
            if got is not None:
                return name, tuple(got[k] for k in range(len(got)))
    return None


__all__ = ["MatMulEpilogue", "gelu_form"]
