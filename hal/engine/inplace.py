"""Elementwise steps that write into an operand's buffer: which reference kernels qualify, and the
wrapper that decides, call by call, whether the operand is the run's alone to overwrite."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np

#: ufuncs the reference kernels of single-ufunc unary ops are made of, that keep a float dtype
_UNARY_UFUNCS = frozenset({np.negative, np.abs, np.sqrt, np.exp, np.log, np.tanh, np.ceil, np.floor, np.reciprocal,
                           np.sin, np.cos})


@cache
def inplace_kernels() -> dict[int, tuple[Any, int]]:
    """Reference kernels that are one ufunc call, as id(kernel) -> (ufunc, arity): the engine may run
    them into the buffer of an operand nothing else holds (see ``in_place``). Only kernels seen to
    be exactly that qualify (by module and name, or a unary wrapper's captured ufunc), so a kernel
    someone rewrites stops qualifying instead of being bypassed."""
    from hal.kernels.activation import relu_into
    from hal.kernels.registry import _REGISTRY

    def relu_in_place(x: np.ndarray, zero: int, out: np.ndarray) -> np.ndarray:
        return relu_into(x, out)  # Relu's max(x, 0) with the ufunc's call shape

    out: dict[int, tuple[Any, int]] = {}  # by id: a step's fn need not be hashable (registered ones live on)
    binary = {"add": np.add, "sub": np.subtract, "mul": np.multiply}
    # the variadic ops with two inputs are one ufunc call too (ResNet's residual Sum, ShuffleNet's)
    variadic = {("sum_", "Sum"): np.add, ("max_", "Max"): np.maximum, ("min_", "Min"): np.minimum}
    for (domain, _), defs in _REGISTRY.items():
        if domain:
            continue
        for d in defs:
            fn, mod, name = d.fn, getattr(d.fn, "__module__", ""), getattr(d.fn, "__name__", "")
            if mod == "hal.kernels.elementwise" and name in binary and d.op_type.lower() == name:
                out[id(fn)] = (binary[name], 2)
            elif mod == "hal.kernels.elementwise" and (name, d.op_type) in variadic:
                out[id(fn)] = (variadic[name, d.op_type], 2)
            elif mod == "hal.kernels.activation" and name == "relu" and d.op_type == "Relu":
                out[id(fn)] = (relu_in_place, 0)  # max(x, 0)
            elif mod == "hal.kernels.activation" and name == "tanh" and d.op_type == "Tanh":
                out[id(fn)] = (np.tanh, 1)
            elif mod == "hal.kernels.elementwise" and name == d.op_type.lower() and fn.__closure__:
                cells = [c.cell_contents for c in fn.__closure__]
                if len(cells) == 1 and any(cells[0] is u for u in _UNARY_UFUNCS):
                    out[id(fn)] = (cells[0], 1)
    return out


def in_place_form(fn: Any) -> tuple[Any, int] | None:
    """(the ufunc-like call, arity) with which the engine may run step function ``fn`` into an
    operand's buffer: a reference kernel's (``inplace_kernels``), or what a fused kernel offers as
    its ``in_place_form`` (``hal.kernels.fused_relu.AddRelu``); None for any other."""
    known = inplace_kernels().get(id(fn))
    return known if known is not None else getattr(fn, "in_place_form", None)


def _owner_refs(a: np.ndarray) -> int:
    return sys.getrefcount(a.base)


@cache
def _lone_owner_refcount() -> int:
    """What ``_owner_refs`` reports for a view whose owner only the view holds (measured, so it
    follows the interpreter)."""
    return _owner_refs(np.zeros(4).reshape(2, 2))


def in_place(kernel: Callable[..., Any], ufunc: Any, arity: int, positions: tuple[int, ...], unshared: int
             ) -> Callable[..., Any]:
    """``kernel`` that writes into operand ``positions[k]`` when the run holds it nowhere else (this is
    its last reader, no view or second slot refers to it, it owns its writable memory or is a view of
    all of a buffer nothing else holds, and it has the result's dtype and shape); otherwise the kernel
    itself. Saves an allocation per elementwise step (page faults on large activations) and the peak
    memory of one activation. ``unshared`` is what ``sys.getrefcount`` reports inside the kernel for
    an argument only the run's slot holds (the program measures it through its own step loop)."""
    from hal.kernels.elementwise import broadcasts_onto

    rc = sys.getrefcount
    ndarray = np.ndarray
    lone_owner = _lone_owner_refcount()

    def owned(a: Any) -> bool:
        if a.__class__ is not ndarray or not a.flags.writeable:
            return False
        if a.base is None:
            return True
        # A kernel's reshape of its own result (Conv's GEMM output, for one): a view of all of its
        # owner's memory, in order, whose owner nothing but this view holds, is as good as owned.
        if _owner_refs(a) != lone_owner:  # (counted before a name here holds the owner too)
            return False
        b = a.base
        return (b.__class__ is ndarray and b.base is None and a.nbytes == b.nbytes
                and a.flags.c_contiguous and b.flags.c_contiguous)

    if arity == 2:
        def binary(a: Any, b: Any) -> Any:
            for p in positions:
                t, o = (a, b) if p == 0 else (b, a)
                # unshared + 1: the name t
                if (rc(t) == unshared + 1 and owned(t) and a.__class__ is b.__class__ and a.dtype == b.dtype
                        and (a.shape == b.shape or broadcasts_onto(o.shape, t.shape))):
                    return ufunc(a, b, out=t)
            return kernel(a, b)
        return binary

    def unary(x: Any) -> Any:
        if rc(x) == unshared and owned(x) and (arity == 0 or x.dtype.kind == "f"):
            return ufunc(x, 0, out=x) if arity == 0 else ufunc(x, out=x)
        return kernel(x)
    return unary
