"""Host kernels that run several nodes as one step, bit-identical to running them one by one.

Each calls the very kernels the nodes would run (looked up by registry key, so a stored program
pickles keys, not closures) and only changes where results are written: a result goes into a
buffer this step made and no one else holds, instead of a new allocation (fewer page-faulted
activations, one step instead of several). Running a region block by block over cache-sized slices
was measured slower (erf's own temporaries and the per-block calls cost more than the cache saved).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from hal import limits
from hal.kernels import activation, elementwise
from hal.kernels.registry import lookup

Array = np.ndarray
#: a registered kernel by registry key: (domain, op type, since)
Key = tuple[str, str, int]

_UFUNCS = {id(elementwise.add): np.add, id(elementwise.sub): np.subtract, id(elementwise.mul): np.multiply,
           id(elementwise.div): np.divide}


def _resolve(key: Key) -> Any:
    kdef = lookup(key[1], key[0], key[2])
    if kdef is None or kdef.since != key[2]:
        from hal.errors import RunError

        raise RunError(f"no kernel {key[1]} (since opset {key[2]}) to rebuild a fused step",
                       where="program load", hint="recompile: the stored program came from another hal")
    return kdef.fn


def _grows(args: Sequence[Any]) -> bool:
    """Whether an elementwise result would be larger than its largest operand (a broadcast grows it):
    only then can it need memory beyond what the run already holds."""
    if any(a.__class__ is not np.ndarray for a in args):
        return True
    try:
        shape = np.broadcast_shapes(*[a.shape for a in args])
    except ValueError:
        return True  # the kernel raises the real error
    return math.prod(shape) > max(a.size for a in args)


def _fits(o: tuple[int, ...], t: tuple[int, ...]) -> bool:
    """Whether broadcasting shape ``o`` against ``t`` gives ``t``."""
    if len(o) > len(t):
        return False
    for d, e in zip(o[::-1], t[::-1]):
        if d != e and d != 1:
            return False
    return True


class _Fused:
    """Kernels by key; pickles the keys and resolves them again on load."""

    keys: list[Key]

    def _bind(self) -> None:
        self.fns = [_resolve(k) for k in self.keys]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("fns", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._bind()


class MatMulBias(_Fused):
    """MatMul, then the bias Add into the product's buffer (the step's inputs: a, b, bias)."""

    def __init__(self, matmul: Key, add: Key, bias_first: bool):
        self.keys = [matmul, add]
        self.bias_first = bias_first
        self._bind()

    def __call__(self, a: Array, b: Array, bias: Array) -> Array:
        mm, add = self.fns
        y = mm(a, b)
        if (add is elementwise.add and y.__class__ is np.ndarray and y.dtype == bias.dtype and y.flags.writeable
                and y.ndim >= 1 and bias.ndim == 1 and bias.shape in ((1,), y.shape[-1:])):
            return np.add(bias, y, out=y) if self.bias_first else np.add(y, bias, out=y)
        return add(bias, y) if self.bias_first else add(y, bias)


class Region(_Fused):
    """Elementwise nodes as one step, optionally followed by the Softmax reading their result.

    ``refs[j]`` names member j's inputs: ``i >= 0`` the step's input i, ``~k`` member k's result.
    """

    def __init__(self, keys: Sequence[Key], refs: Sequence[tuple[int, ...]], attrs: Sequence[dict[str, Any]],
                 ops: Sequence[str], labels: Sequence[str], softmax: Key | None = None,
                 softmax_attrs: dict[str, Any] | None = None):
        self.keys = list(keys) + ([softmax] if softmax is not None else [])
        self.refs = [tuple(r) for r in refs]
        self.attrs = [dict(a) for a in attrs]
        self.ops = list(ops)
        self.labels = list(labels)
        self.has_softmax = softmax is not None
        self.softmax_attrs = dict(softmax_attrs or {})
        self._bind()

    def _bind(self) -> None:
        super()._bind()
        n = len(self.refs)
        self._memo: list[tuple[Any, bool] | None] = [None] * n
        self._plan = [(fn, refs, attrs, _UFUNCS.get(id(fn)) if len(refs) == 2 else None, op, label)
                      for fn, refs, attrs, op, label in zip(self.fns[:n], self.refs, self.attrs, self.ops, self.labels)]

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_plan", None)
        state.pop("_memo", None)
        return state

    def __call__(self, *xs: Any) -> Any:
        y = self._whole(xs)
        if not self.has_softmax:
            return y
        return self._softmax(y)

    def _whole(self, xs: Sequence[Any]) -> Any:
        """Member by member; a binary ufunc kernel writes into a member result it reads (read once)."""
        vals: list[Any] = []
        ndarray = np.ndarray
        memo = self._memo
        for j, (fn, refs, attrs, u, op, label) in enumerate(self._plan):
            args = [xs[r] if r >= 0 else vals[~r] for r in refs]
            res = None
            if u is not None:
                a, b = args
                if a.__class__ is ndarray and b.__class__ is ndarray and a.dtype == b.dtype and a.dtype.kind == "f":
                    for r, t, o in ((refs[0], a, b), (refs[1], b, a)):
                        if r < 0 and t.flags.writeable and (o.shape == t.shape or _fits(o.shape, t.shape)):
                            res = u(a, b, out=t)
                            break
            if res is None:
                if op in limits.GUARDED_OPS:  # the engine's memory guard, where the result outgrows its operands
                    sig = tuple([getattr(x, "shape", None) for x in args])
                    seen = memo[j]
                    if seen is None or seen[0] != sig:
                        seen = (sig, _grows(args))
                        memo[j] = seen  # one tuple: atomic for concurrent runs
                    if seen[1]:
                        limits.check_step(op, label, args, attrs, limits.current().max_memory)
                res = fn(*args, **attrs)
            for r in refs:  # a member result is read once: drop it (the slot frees it in the plain program)
                if r < 0:
                    vals[~r] = None
            vals.append(res)
        return vals[-1]

    def _softmax(self, x: Any) -> Any:
        """The Softmax kernel, or its row computation (``activation._softmax_rows``) in x's own buffer."""
        fn = self.fns[-1]
        axis = self.softmax_attrs.get("axis", -1)
        if (fn is activation.softmax and x.__class__ is np.ndarray and x.dtype.char in "fd"
                and x.ndim and x.size and axis in (-1, x.ndim - 1) and x.flags.writeable and x.flags.c_contiguous):
            w = x.reshape(-1, x.shape[-1])
            np.subtract(w, np.fmax.reduce(w, axis=1, keepdims=True), out=w)
            np.exp(w, out=w)
            w /= (w @ np.ones(w.shape[1], dtype=w.dtype))[:, None]
            return x
        return fn(x, **self.softmax_attrs)


__all__ = ["MatMulBias", "Region"]
