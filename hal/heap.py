"""The process heap between runs: hand back what loading freed, keep what runs reuse.

numpy kernels allocate their outputs with ``malloc``. A run frees and allocates the same large
buffers every time, and glibc's defaults work against that twice: its mmap threshold starts at
128 KiB (each bigger buffer is a fresh ``mmap``, faulted in page by page) and, once it has grown,
freeing a buffer at the top of the heap past the trim threshold hands the pages back to the OS, so
the next run faults them in again — 1,786 page faults a run on the light zoo's SqueezeNet, about a
sixth of its time. onnxruntime keeps its buffers in an arena; hal asks glibc to do the same:
buffers up to 32 MiB (glibc's own ceiling for its dynamic threshold) come from the heap, and
64 MiB of free space stays at its top between runs. Everything else freed is still handed back
after a session is built (``release_free_memory``).

These are process-wide settings (``mallopt``), made once, by the first session; set
``HAL_HEAP_TUNING=0`` to leave the allocator as it is. Elsewhere than glibc both are no-ops.

Building a session also pauses Python's cyclic garbage collector (``collector_paused``): a compile
makes hundreds of thousands of objects that live on (graph IR, steps, reports), and every
generational collection during it walks them again — 30% of a 10k-node graph's compile time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any, TypeVar

ENV_HEAP_TUNING = "HAL_HEAP_TUNING"
#: mallopt parameters (glibc's malloc.h)
M_TOP_PAD, M_MMAP_THRESHOLD = -2, -3
#: buffers this size and smaller come from the heap (glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
MMAP_THRESHOLD = 32 << 20
#: free space kept at the heap's top between runs (glibc's default is 128 KiB)
TOP_PAD = 64 << 20

_tuned = False
_lock = threading.Lock()


@cache
def _libc() -> Any | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError):  # not glibc: nothing to hand back or keep this way
        return None
    return libc


def release_free_memory() -> None:
    """Hand the heap's free pages back to the OS (glibc's ``malloc_trim``; elsewhere a no-op).

    Loading a model frees the protobuf's copy of every weight, but glibc keeps the freed pages
    mapped (its mmap threshold has grown past the weights' size by then): the process would stay
    about one model larger than what it holds. A session calls this once it is built.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def keep_pages_for_runs() -> bool:
    """Make glibc reuse a run's pages on the next run instead of faulting them in again (see the
    module's text). Once per process; returns whether the settings are in force."""
    global _tuned
    with _lock:
        if _tuned or os.environ.get(ENV_HEAP_TUNING, "1").strip() == "0":
            return _tuned
        libc = _libc()
        if libc is None:
            return False
        # mallopt of either parameter turns glibc's dynamic threshold off, so both are set.
        _tuned = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TOP_PAD, TOP_PAD))
        return _tuned


_paused = 0  # callers inside collector_paused, across threads
_resume = False  # whether the collector was on when the first of them came in
_paused_lock = threading.Lock()
F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (nested and concurrent blocks count; it
    comes back on when the last one ends, if it was on when the first began). Cyclic garbage made
    meanwhile is collected by the next collection after."""
    global _paused, _resume
    with _paused_lock:
        if _paused == 0:
            _resume = gc.isenabled()
            gc.disable()
        _paused += 1
    try:
        yield
    finally:
        with _paused_lock:
            _paused -= 1
            if _paused == 0 and _resume:
                gc.enable()


def without_collector(fn: F) -> F:
    """``fn`` run inside ``collector_paused``."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with collector_paused():
            return fn(*args, **kwargs)

    return run  # type: ignore[return-value]
