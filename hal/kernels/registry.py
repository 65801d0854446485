"""One registry of numpy kernels, keyed by (domain, op type) and the opset version they appear in.

A kernel is data in, data out, with no hidden state (as in onnx/reference/ops/op_*.py):

    @kernel("Relu", since=6)
    def relu(x):
        return np.maximum(x, x.dtype.type(0))

Calling convention, shared by every target's executor:

* positional arguments are the node's inputs in order; an omitted optional input ("" in the
  node) arrives as ``None``; trailing optional inputs the node leaves out are not passed, so give
  them defaults;
* keyword arguments are the node's attributes, under their ONNX names, converted to Python
  (int, float, str, lists of those, numpy arrays for tensors, ``hal.engine.Subgraph`` for graphs);
  attributes the node does not set are not passed, so defaults must be ONNX's defaults;
* return one ``numpy.ndarray`` for a single output, a ``tuple`` for several outputs (in order),
  a ``list`` of arrays for a sequence value, ``None`` for an absent optional;
* outputs carry exactly the dtype ONNX specifies; 0-d results are 0-d arrays, not numpy scalars;
* a kernel registered with ``context=True`` also receives ``_ctx`` (a ``KernelContext``) with the
  model's opset and, for control flow, the enclosing scope;
* a kernel registered with ``output_count=True`` also receives ``_n_outputs``: how many outputs the
  node asks for (trailing omitted ones not counted) — Split divides by it, MaxPool skips Indices;
* a kernel registered with ``refuses=fn`` does not compute every form of its op: ``fn(attrs, inputs,
  outputs)`` (the node's attributes and input / output names, "" for omitted ones) says why it cannot
  take a node, or None; every target refuses such a node when it compiles, so ``fallback`` sees it,
  rather than failing at run time. A ``fn`` with a keyword parameter ``types`` also gets each named
  input's and output's element type as the graph declares or infers it (a numpy dtype, None where
  unknown), for forms that only the types tell apart.

Lookup picks the newest registration whose ``since`` is <= the model's opset for that domain.
"""

from __future__ import annotations

import bisect
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

KernelFn = Callable[..., Any]


@dataclass(frozen=True)
class KernelDef:
    op_type: str
    domain: str
    since: int
    fn: KernelFn
    context: bool = False
    output_count: bool = False
    #: why the kernel cannot take a node of these (attributes, inputs, outputs[, types]), or None (see above)
    refuses: Callable[..., str | None] | None = None

    @cached_property
    def required_inputs(self) -> int:
        """How many inputs a call must pass: the kernel's leading positional parameters without a
        default, for the ops onnx has no schema to count them by (onnxruntime's, a plugin's), whose
        kernels take their attributes as keyword-only or defaulted parameters."""
        try:
            params = inspect.signature(self.fn).parameters.values()
        except (TypeError, ValueError):  # a builtin without a signature: nothing to count
            return 0
        count = 0
        for p in params:
            if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) or p.default is not p.empty:
                break
            count += 1
        return count

    @cached_property
    def _refuses_by_type(self) -> bool:
        try:
            return "types" in inspect.signature(self.refuses).parameters
        except (TypeError, ValueError):
            return False

    def refusal(self, attrs: dict[str, Any], inputs: list[str], outputs: list[str],
                dtype_of: Callable[[str], Any]) -> str | None:
        """Why this kernel cannot take the node (``refuses``), or None; ``dtype_of(name)``: a value's
        element type, read only for a ``refuses`` that takes ``types``."""
        if self.refuses is None:
            return None
        if self._refuses_by_type:
            types = {n: dtype_of(n) for n in (*inputs, *outputs) if n}
            return self.refuses(attrs, inputs, outputs, types=types)
        return self.refuses(attrs, inputs, outputs)

    def static_attrs(self, attrs: dict[str, Any], outputs: list[str]) -> dict[str, Any]:
        """The keyword arguments a call gets besides the inputs (attributes + declared extras)."""
        if not self.output_count:
            return attrs
        n = len(outputs)
        while n and not outputs[n - 1]:
            n -= 1
        return {**attrs, "_n_outputs": n}


@dataclass
class KernelContext:
    """What a context kernel may see beyond its inputs: the opset, the enclosing scope and its node."""

    opset: int
    scope: dict[str, Any] = field(default_factory=dict)
    #: the node being run, for errors the kernel raises itself
    node: str = "?"


_REGISTRY: dict[tuple[str, str], list[KernelDef]] = {}


def _norm_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def _make_importable(defn: KernelDef) -> None:
    """Give a generated kernel (a closure from a family's factory) a module-level name, so programs
    that hold it pickle by reference like any other function (Executable.serialize)."""
    import re
    import sys

    fn = defn.fn
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    if module is None or getattr(module, getattr(fn, "__qualname__", ""), None) is fn:
        return
    dom = re.sub(r"\W", "_", defn.domain)
    name = f"_kernel_{dom}_{defn.op_type}_{defn.since}" if dom else f"_kernel_{defn.op_type}_{defn.since}"
    try:
        fn.__qualname__ = name
        setattr(module, name, fn)
    except (AttributeError, TypeError):  # builtins and other exotic callables pickle on their own terms
        pass


def register(defn: KernelDef) -> None:
    """Add a kernel; a later registration for the same (domain, op, since) replaces the earlier."""
    _make_importable(defn)
    key = (_norm_domain(defn.domain), defn.op_type)
    defs = _REGISTRY.setdefault(key, [])
    defs[:] = [d for d in defs if d.since != defn.since]
    bisect.insort(defs, defn, key=lambda d: d.since)


def kernel(op_type: str, *, since: int = 1, domain: str = "", context: bool = False, output_count: bool = False,
           refuses: Callable[..., str | None] | None = None) -> Callable[[KernelFn], KernelFn]:
    """Decorator registering ``fn`` as the kernel of ``op_type`` from opset ``since`` on."""

    def deco(fn: KernelFn) -> KernelFn:
        register(KernelDef(op_type, domain, since, fn, context, output_count, refuses))
        return fn

    return deco


def lookup(op_type: str, domain: str = "", opset: int | None = None) -> KernelDef | None:
    """The kernel for ``op_type`` at ``opset`` (newest when None), or None if there is none."""
    defs = _REGISTRY.get((_norm_domain(domain), op_type))
    if not defs:
        return None
    if opset is None:
        return defs[-1]
    best = None
    for d in defs:
        if d.since <= opset:
            best = d
    return best


def registered_ops() -> list[tuple[str, str]]:
    """Every (domain, op type) with at least one kernel, sorted."""
    return sorted(_REGISTRY)
