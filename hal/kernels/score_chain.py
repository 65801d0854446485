"""An attention's scale and mask before its softmax as one compiled pass a row.

The scores of an exported attention reach the softmax through a short chain: a Div or Mul by the
scale, then an Add of an additive mask (BERT) or a Where picking -inf by a causal condition (GPT).
As numpy calls that is a pass over the scores per member; ``hal.kernels._loops.softmax_prologue``
runs the chain a row at a time, in L1, and subtracts the row's maximum in the same call: the same
float32 operations in the same order, so the bits of the numpy calls and ``softmax_shift`` after
them. ``hal.kernels.fused.Region`` runs a Softmax region's members this way, the GPU target's fused
attention its score ops (one key block).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hal.kernels import elementwise, jit, logic
from hal.kernels.elementwise import broadcasts_onto

Array = np.ndarray
_F32 = np.dtype(np.float32)

#: ``hal.kernels._loops.softmax_prologue``'s operation codes by (what a chain member does, whether
#: its other input is a mask array rather than a scalar)
CHAIN_CODES = {("add", False): 0, ("sub", False): 1, ("rsub", False): 2, ("mul", False): 3, ("div", False): 4,
               ("rdiv", False): 5, ("add", True): 6, ("sub", True): 7, ("rsub", True): 8, ("mul", True): 9,
               ("div", True): 10, ("rdiv", True): 11, ("keep", False): 12, ("pick", False): 13}
#: the mask and condition arguments of the loop when a chain has none
_NO_MASK = np.zeros((1, 1), dtype=np.float32)
_NO_COND = np.zeros((1, 1), dtype=np.bool_)
_NO_MASK.flags.writeable = _NO_COND.flags.writeable = False


def member(fn: Callable[..., Any], args: Sequence[int], running: int) -> tuple[str, int, int] | None:
    """One chain member: registry kernel ``fn`` on inputs ``args``, one of them ``running`` (the
    scores so far), the others indices of the chain's side inputs. (what it does, its other input,
    a Where's condition or -1), or None when it is not an Add/Sub/Mul/Div or a Where of that form."""
    if list(args).count(running) != 1 or len(args) not in (2, 3):
        return None
    others = [a for a in args if a != running]
    u = elementwise.arithmetic_ufunc(fn) if len(args) == 2 else None
    if u is not None:
        first = args[0] == running
        what = {np.add: "add", np.multiply: "mul"}.get(u) or (
            ("sub" if first else "rsub") if u is np.subtract else ("div" if first else "rdiv"))
        return what, others[0], -1
    if fn is logic.where and len(args) == 3 and args[0] != running:
        return ("keep", args[2], args[0]) if args[1] == running else ("pick", args[1], args[0])
    return None


class ScoreChain:
    """A chain's members, each (what it does, its other input, a Where's condition or -1): the
    inputs are indices into the side inputs a caller passes to ``shift`` (a Region's step inputs,
    the GPU attention's side inputs). Add and Mul take their operands in either order: IEEE 754's
    sum and product are commutative, so the loop's v + c is c + v bit for bit."""

    def __init__(self, members: Sequence[tuple[str, int, int]]):
        self.members = tuple(members)
        #: (the scores' shape and the side inputs' shapes and dtypes, their layout) of the last call
        self._memo: tuple[Any, Any] | None = None
        #: the side inputs the members read, by index, in order
        self._reads = tuple(i for _, other, c in self.members for i in ((other, c) if c >= 0 else (other,)))
        #: (the scores' shape, the side inputs read, the loop's arguments) of the last call whose side
        #: inputs were all read-only (weights, and what only weights made: the same values every run)
        self._fixed: tuple[Any, tuple[Any, ...], tuple[Any, ...]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"members": self.members, "_memo": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["members"])

    def shift(self, x: Any, sides: Sequence[Any]) -> Array | None:
        """x through the chain into a new array, each row of its last axis less its maximum (NaN
        skipped, as ``softmax_shift``); None where the loop does not apply: x float32 of C order,
        scalars float32, at most one mask or condition array with whole rows (broadcast over the
        scores' other axes), the result of x's shape."""
        if (x.__class__ is not np.ndarray or x.dtype != _F32 or not x.ndim or not x.size or not x.flags.c_contiguous
                or not jit.enabled()):
            return None
        n = x.shape[-1]
        kept = self.kept_args(x.shape, sides)
        if kept is not None:
            out = np.empty(x.shape, dtype=_F32)
            jit.loops().softmax_prologue(x.reshape(-1, n), out.reshape(-1, n), *kept)
            return out
        pairs = [(sides[other], sides[c] if c >= 0 else None) for _, other, c in self.members]
        sig = (x.shape, tuple([(getattr(v, "shape", None), getattr(v, "dtype", None)) for p in pairs for v in p]))
        memo = self._memo
        if memo is None or memo[0] != sig:
            memo = (sig, self._layout(x.shape, pairs))
            self._memo = memo  # one tuple: atomic for concurrent runs
        layout = memo[1]
        if layout is None:
            return None
        codes, masked, row_of = layout
        consts = np.empty(len(codes), dtype=_F32)
        mask, cond = _NO_MASK, _NO_COND
        for k, ((v, c), is_mask) in enumerate(zip(pairs, masked)):
            if c is not None:
                cond = c.reshape(-1, n)
            if is_mask:
                mask = v.reshape(-1, n)
            else:
                consts[k] = v.reshape(-1)[0]
        read = tuple([sides[i] for i in self._reads])
        if all(v.__class__ is np.ndarray and not v.flags.writeable for v in read):
            # the same side inputs next time are the same values: their scalars and views are kept (a
            # writable one, a caller's feed, may change in place between runs)
            consts.flags.writeable = False
            self._fixed = (x.shape, read, (codes, consts, mask, cond, row_of))  # one tuple: atomic
        out = np.empty(x.shape, dtype=_F32)
        jit.loops().softmax_prologue(x.reshape(-1, n), out.reshape(-1, n), codes, consts, mask, cond, row_of)
        return out

    def kept_args(self, shape: tuple[int, ...], sides: Sequence[Any]) -> tuple[Any, ...] | None:
        """``softmax_prologue``'s arguments after x, as the last call with read-only side inputs
        worked them out, where scores of ``shape`` with these ``sides`` may take them; else None."""
        fixed = self._fixed
        if fixed is not None and fixed[0] == shape and all(map(operator.is_, map(sides.__getitem__, self._reads),
                                                                fixed[1])):
            return fixed[2]
        return None

    def _layout(self, shape: tuple[int, ...], pairs: list[tuple[Any, Any]]
                ) -> tuple[Array, tuple[bool, ...], Array] | None:
        """(the loop's operation codes, which members read a mask array, each score row's row of
        that array) for scores of ``shape`` and these side inputs, or None where they do not fit."""
        n = shape[-1]
        codes, masked, arrays = [], [], []
        for (what, _, _), (v, cond) in zip(self.members, pairs):
            if v.__class__ is not np.ndarray or v.dtype != _F32 or v.ndim > len(shape):
                return None
            is_mask = v.size != 1
            if cond is not None:
                if is_mask or cond.__class__ is not np.ndarray or cond.dtype != np.bool_:
                    return None
                arrays.append(cond)
            elif is_mask:
                arrays.append(v)
            codes.append(CHAIN_CODES[(what, is_mask)])
            masked.append(is_mask)
        if len(arrays) > 1:
            return None
        row_of = np.zeros(math.prod(shape[:-1]), dtype=np.int64)
        if arrays:
            a = arrays[0]
            if (not a.ndim or a.ndim > len(shape) or a.shape[-1] != n or not broadcasts_onto(a.shape, shape)
                    or not a.flags.c_contiguous):
                return None
            lead = (1,) * (len(shape) - a.ndim) + a.shape[:-1]
            row_of = np.ascontiguousarray(np.broadcast_to(np.arange(math.prod(lead), dtype=np.int64).reshape(lead),
                                                          shape[:-1]).reshape(-1))
        row_of.flags.writeable = False
        codes_a = np.array(codes, dtype=np.int64)
        codes_a.flags.writeable = False
        return codes_a, tuple(masked), row_of


__all__ = ["CHAIN_CODES", "ScoreChain", "member"]
