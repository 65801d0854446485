"""Bounds on what one model may make hal do: bytes per tensor, seconds per compile and per run.

``max_memory`` (``CompileOptions.max_memory``, else ``HAL_MAX_MEMORY``, else half the RAM this
process may use) is the most bytes any one tensor may need. It is checked

- at compile, from the statically inferred shapes (``check_graph``): a declared dimension whose
  product would need more is a ResourceError naming the tensor, its shape and the size;
- at load, for tensors the loader itself would expand (sparse initializers);
- at run, for each feed (``InferenceSession`` refuses one that spans more as an array: a broadcast
  view of one element may, and every kernel reading it writes a result that large);
- at run, *before the kernel allocates*, for ops whose output or working size depends on input
  values, attributes or dynamic shapes in a way no single input bounds (Expand, Tile,
  ConstantOfShape, Range, Resize, Pad, OneHot, broadcasting, Conv's im2col and pooling pads, DFT
  and STFT lengths, attention's scores, a recurrence's hidden size, ...): ``check_step`` computes
  the size from the arguments with Python integers (no overflow), by the per-op rules in
  ``hal.op_sizes``; it also bounds loops inside one kernel call (pooling taps, LRN's window) that
  ``timeout_s`` could not interrupt.

``timeout_s`` bounds a compile (``call_with_timeout``: the plugin's compile runs in a worker
thread that is given up, left running as a daemon, after the timeout) and a run (the engine
checks the deadline between steps, so a run stops at the first step boundary past it).

The bounds in force travel in a context variable (``bounds()``), so every thread and every
nested program (If/Loop/Scan bodies) sees the ones its session set, and sessions share nothing.
"""

from __future__ import annotations

import contextvars
import math
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import numpy as np

from hal.errors import ResourceError
from hal.op_sizes import GUARDED_OPS, LOOP_COUNT, MAX_KERNEL_ITERATIONS, OUTPUT_SIZE

T = TypeVar("T")

#: the share of this process's memory one tensor may take when nothing else is said
DEFAULT_FRACTION = 0.5
#: used when the machine's memory cannot be read
FALLBACK_MAX_MEMORY = 4 << 30
ENV_MAX_MEMORY = "HAL_MAX_MEMORY"

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_bytes(text: str | int) -> int:
    """``"512MiB"``, ``"4GB"``, ``"1e9"`` or an int -> bytes (ValueError when it is not a size)."""
    if isinstance(text, int) and not isinstance(text, bool):
        n = text
    else:
        m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([A-Za-z]*)\s*", str(text))
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"{text!r} is not a size (e.g. 512MiB, 4GB, 1000000)")
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n < 1:
        raise ValueError(f"a size must be at least 1 byte, got {text!r}")
    return n


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} EiB"  # pragma: no cover


def _cgroup_limit() -> int | None:
    """A container's memory limit (cgroup v2, then v1), if one is set below the machine's RAM."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, "rb") as f:  # bytes: a text read would import the ascii codec (18 KB) for it
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


@cache
def usable_memory() -> int | None:
    """Bytes this process may use: physical RAM, or a smaller container limit; None if unknown."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        ram = None
    limit = _cgroup_limit()
    known = [x for x in (ram, limit) if x and x > 0]
    return min(known) if known else None


def default_max_memory() -> int:
    """``HAL_MAX_MEMORY`` if set (e.g. ``8GiB``), else half of ``usable_memory()``."""
    env = os.environ.get(ENV_MAX_MEMORY)
    if env:
        try:
            return parse_bytes(env)
        except ValueError:
            pass  # a malformed variable must not make every session fail; the default still holds
    mem = usable_memory()
    return int(mem * DEFAULT_FRACTION) if mem else FALLBACK_MAX_MEMORY


def effective_max_memory(max_memory: int | None) -> int:
    return int(max_memory) if max_memory is not None else default_max_memory()


# -- the bounds in force ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Bounds:
    """The limits of the current load, compile or run."""

    max_memory: int
    timeout_s: float | None = None
    deadline: float | None = None  # time.monotonic() after which a run stops


_current: contextvars.ContextVar[Bounds | None] = contextvars.ContextVar("hal_bounds", default=None)


#: (``HAL_MAX_MEMORY``'s value, the default bounds made from it): an executable run outside a session
#: reads them on every run (building them each time was 2.7 us of a one-node program's 9)
_defaults: tuple[str | None, Bounds] | None = None


def current() -> Bounds:
    """The bounds a session set on this thread, else the defaults."""
    global _defaults
    b = _current.get()
    if b is not None:
        return b
    env = os.environ.get(ENV_MAX_MEMORY)
    made = _defaults
    if made is None or made[0] != env:
        made = (env, Bounds(default_max_memory()))
        _defaults = made  # one tuple: atomic for concurrent runs
    return made[1]


class within:
    """Set bounds made beforehand for what runs inside: ``with limits.within(b)``. A session without
    a timeout runs under the same bounds every run and makes them once (a frozen dataclass's
    construction was 0.4 us a run)."""

    __slots__ = ("_token", "bounds")

    def __init__(self, b: Bounds):
        self.bounds = b

    def __enter__(self) -> Bounds:
        self._token = _current.set(self.bounds)
        return self.bounds

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)


class bounds(within):
    """Set the bounds for what runs inside (a deadline starts now when ``timeout_s`` is given):
    ``with limits.bounds(max_memory, timeout_s) as b``. A class rather than a generator context
    manager: a session enters it on every run, and the generator's machinery was 4 of tiny-gpt's
    18 us of session overhead a run, against 1 for this."""

    __slots__ = ()

    def __init__(self, max_memory: int | None = None, timeout_s: float | None = None):
        self.bounds = Bounds(effective_max_memory(max_memory), timeout_s,
                             time.monotonic() + timeout_s if timeout_s is not None else None)


def check_deadline(where: str) -> None:
    """ResourceError when the current run has passed its ``timeout_s``."""
    b = _current.get()
    if b is not None and b.deadline is not None and time.monotonic() > b.deadline:
        raise ResourceError(f"the run took longer than timeout_s={b.timeout_s:g} s and was stopped",
                            where=where, hint="raise timeout_s, or check the model for a runaway Loop")


# -- sizes ---------------------------------------------------------------------------------------

#: numpy refuses to make an array whose non-zero dimensions times its item size reach this, even
#: when another dimension is 0 (``ValueError: array is too big``)
NUMPY_MAX_BYTES = 1 << 63


def nbytes_of(shape: Sequence[int], itemsize: int) -> int:
    """Bytes of a tensor, with Python integers (a product of huge dims never wraps around)."""
    return math.prod(int(d) for d in shape) * int(itemsize)


def _too_big(what: str, shape: Sequence[int], dtype: Any, nbytes: int, bound: int, where: str) -> ResourceError:
    dt = np.dtype(dtype).name if dtype is not None else "?"
    return ResourceError(
        f"{what} {dt}{list(shape)} would need {format_bytes(nbytes)} ({nbytes:,} bytes), more than max_memory "
        f"{format_bytes(bound)} ({bound:,} bytes); refused before allocating", where=where,
        hint=f"pass max_memory=<bytes> (or set {ENV_MAX_MEMORY}) if this is intended, or fix the shape")


def check_alloc(what: str, shape: Sequence[int], dtype: Any, where: str, max_memory: int | None = None) -> None:
    """ResourceError if a tensor of ``shape`` and ``dtype`` would exceed the bound in force."""
    bound = max_memory if max_memory is not None else current().max_memory
    try:
        itemsize = np.dtype(dtype).itemsize if dtype is not None else 1
    except TypeError:
        itemsize = 1
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        return  # an invalid shape is the kernel's or the checker's error, not a size
    n = nbytes_of(dims, itemsize)
    if n > bound:
        raise _too_big(what, dims, dtype, n, bound, where)
    if n == 0 and nbytes_of([d for d in dims if d], itemsize) >= NUMPY_MAX_BYTES:
        dt = np.dtype(dtype).name if dtype is not None else "?"
        raise ResourceError(f"{what} {dt}{dims} is empty, but numpy holds no shape whose non-zero dimensions "
                            f"span 2**63 bytes or more, empty or not", where=where, hint="fix the shape")


def check_graph(graph: Any, max_memory: int | None = None) -> None:
    """Refuse, before anything is allocated, a graph whose statically known tensors exceed the bound.

    Looks at every graph input and node output whose inferred shape is fully static. Shape-only
    graphs are skipped: they are compiled and estimated, never run, so nothing is allocated.
    """
    if graph.shape_only:
        return
    bound = effective_max_memory(max_memory)
    produced = [(o, f"node {n.name!r} ({n.op_type})") for n in graph.nodes for o in n.outputs if o]
    for name, where in [(t.name, "model input") for t in graph.inputs] + produced:
        info = graph.values.get(name)
        if info is None or info.shape is None or info.dtype is None:
            continue
        shape = info.shape
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            continue
        n = nbytes_of(shape, info.dtype.itemsize)
        if n > bound:
            raise _too_big(f"tensor {name!r}", shape, info.dtype, n, bound, where)


# -- run-time output sizes (the per-op rules live in hal.op_sizes) ----------------------------------

def check_step(op_type: str, label: str, args: Sequence[Any], attrs: dict[str, Any],
               max_memory: int | None = None) -> None:
    """Before a kernel of ``op_type`` allocates: ResourceError if its output would exceed the bound.

    An argument the size rule cannot read (wrong type, missing input) is left to the kernel, whose
    failure the engine reports as a RunError naming the node.
    """
    loop = LOOP_COUNT.get(op_type)
    if loop is not None:
        try:
            count = loop(args, attrs)
        except Exception:  # malformed attributes: the kernel raises the real error
            count = None
        if count is not None and count > MAX_KERNEL_ITERATIONS:
            raise ResourceError(f"{op_type} would loop {count:,} times inside one kernel call (its window), more "
                                f"than {MAX_KERNEL_ITERATIONS:,}; refused before running", where=f"node {label!r}",
                                hint="check the node's kernel_shape / size attribute")
    rule = OUTPUT_SIZE.get(op_type)
    if rule is None:
        return
    try:
        got = rule(args, attrs)
    except Exception:  # malformed arguments: the kernel raises the real error
        return
    if got is None:
        return
    shape, itemsize = got
    bound = max_memory if max_memory is not None else current().max_memory
    if any(d < 0 for d in shape):
        return
    n = nbytes_of(shape, itemsize)
    if n > bound:
        raise ResourceError(
            f"{op_type} would need a tensor of shape {list(shape)}: {format_bytes(n)} ({n:,} bytes), "
            f"more than max_memory {format_bytes(bound)} ({bound:,} bytes); refused before allocating",
            where=f"node {label!r}",
            hint=f"pass max_memory=<bytes> (or set {ENV_MAX_MEMORY}) if this is intended, or check the "
                 "values feeding its shape")


# -- time --------------------------------------------------------------------------------------

class Timeout(Exception):
    """``call_with_timeout`` gave up; the caller turns it into the right HalError."""


def call_with_timeout(fn: Callable[[], T], timeout_s: float | None, name: str = "hal-compile") -> T:
    """``fn()``, given up after ``timeout_s`` (then ``Timeout``); inline when ``timeout_s`` is None.

    The call runs in a daemon worker thread with this thread's context (so it sees the same
    bounds). Python cannot stop a thread: after a timeout the worker is left running in the
    background until ``fn`` returns, and its result is dropped.
    """
    if timeout_s is None:
        return fn()
    box: dict[str, Any] = {}
    done = threading.Event()
    ctx = contextvars.copy_context()

    def work() -> None:
        try:
            box["value"] = ctx.run(fn)
        except BaseException as e:  # handed back to the caller's thread as is
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=work, name=name, daemon=True).start()
    if not done.wait(timeout_s):
        raise Timeout(f"did not finish within timeout_s={timeout_s:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


__all__ = ["DEFAULT_FRACTION", "ENV_MAX_MEMORY", "GUARDED_OPS", "LOOP_COUNT", "MAX_KERNEL_ITERATIONS", "OUTPUT_SIZE",
           "Bounds", "Timeout", "bounds",
           "call_with_timeout", "check_alloc", "check_deadline", "check_graph", "check_step", "current",
           "default_max_memory", "effective_max_memory", "format_bytes", "parse_bytes", "usable_memory", "within"]
