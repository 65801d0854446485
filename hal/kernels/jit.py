"""Compiled loops for the few kernels numpy can only run as many passes over memory.

A numpy kernel is one C loop per call, so a kernel whose every output reads a small window of its
input (a depthwise conv's nine taps, a max pool's window) makes one pass over memory per tap, or
copies the windows out first; and a kernel made of many elementwise steps (erf's polynomial, a
softmax, a LayerNormalization) makes one call per step. Each call costs at least a microsecond of
overhead and a read of the whole operand. numba compiles a plain Python loop nest to machine code
that reads each window, or each row, once. It is a runtime dependency on purpose: a well-kept
compiler (LLVM through llvmlite) whose loops vectorise, where hand-written C would need a build
step and a compiler on every user's machine.

The loops themselves live in ``hal.kernels._loops``, which a kernel reaches through ``loops()``
only where ``enabled`` (importing numba costs a quarter of a second and 50 MB). numba compiles the
window loops on their first call for each set of argument types and the row loops, whose
signatures are declared, when the module is imported (about a second each), and caches the
machine code on disk next to the module, so a later process loads it in milliseconds. ``enabled``
says whether the kernels take them: not when numba cannot be imported (the numpy kernels then run,
same results up to rounding) or when the environment sets ``HAL_JIT=0``. The compiled loops
release the GIL and allocate nothing the caller does not pass in, so concurrent runs of one
program stay safe.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

#: whether kernels take the compiled loops: None until first asked (then numba's import decides)
_ENABLED: bool | None = None


def _switched_off() -> bool:
    return os.environ.get("HAL_JIT", "").strip().lower() in ("0", "off", "false", "no")


def enabled() -> bool:
    """Whether the compiled loops run: numba importable and ``HAL_JIT`` not set to 0/off/false/no."""
    global _ENABLED
    if _ENABLED is None:
        if _switched_off():
            _ENABLED = False
        else:
            try:
                import numba  # noqa: F401
            except Exception:  # not installed, or broken on this platform: the numpy kernels run
                _ENABLED = False
            else:
                _ENABLED = True
    return _ENABLED


def status() -> str:
    """One line for ``hal doctor``: which loops the kernels run."""
    if not enabled():
        return "off (HAL_JIT=0)" if _switched_off() else "off (numba not importable)"
    import numba
    return f"on (numba {numba.__version__})"


def njit(fn: Callable[..., Any] | None = None, *, signature: Any = None, **options: Any) -> Any:
    """numba.njit with the loops' options (nopython, GIL released, no bounds checks, numpy's float
    errors, cached on disk) as a decorator; ``hal.kernels._loops`` applies it when it is imported,
    which only a caller that found ``enabled()`` does. With a ``signature`` the loop is compiled (or
    loaded from the cache) right then, for those types only: an argument of any other type raises
    TypeError instead of compiling a second machine code inside a run."""
    import numba

    options = {"nogil": True, "boundscheck": False, "error_model": "numpy", **options}
    if fn is None:
        return lambda f: njit(f, signature=signature, **options)
    args = () if signature is None else (signature,)
    try:
        return numba.njit(*args, cache=True, **options)(fn)
    except RuntimeError:  # no writable cache next to the module nor in the user's cache directory
        return numba.njit(*args, **options)(fn)


_LOOPS: Any = None


def loops() -> Any:
    """The module of compiled loops (``hal.kernels._loops``), imported on the first call: for a
    kernel that found ``enabled()``. A global read, where an import statement in a kernel cost
    about a microsecond a call (tiny-gpt calls the row loops 14 times a run)."""
    global _LOOPS
    if _LOOPS is None:
        from hal.kernels import _loops

        _LOOPS = _loops
    return _LOOPS


def load() -> None:
    """Import numba, start its compiler and load the loops' float32 machine code (from the on-disk
    cache once it is there, else compiled): a fixed cost per process, about 100 MB of resident
    memory whatever the model, paid here rather than inside the first run that takes a loop.
    ``benchmarks.memory`` calls it before its baseline, as it imports onnxruntime there: code and
    the compiler's own memory belong to the libraries, as numpy's and OpenBLAS's kernels do."""
    if not enabled():
        return
    loops().warm()


__all__ = ["enabled", "load", "loops", "njit", "status"]
