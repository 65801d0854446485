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

import contextlib
import os
from collections.abc import Callable, Iterator
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
    errors, cached on disk through ``_shared_cache``) as a decorator; ``hal.kernels._loops`` applies
    it when it is imported, which only a caller that found ``enabled()`` does. With a ``signature``
    (or a list of them) the loop is compiled (or loaded from the cache) right then, for those types
    only: an argument of any other type raises TypeError instead of compiling a machine code inside
    a run."""
    import numba
    from numba.core import typeinfer

    options = {"nogil": True, "boundscheck": False, "error_model": "numpy", **options}
    if fn is None:
        return lambda f: njit(f, signature=signature, **options)
    loop = numba.njit(**options)(fn)
    try:  # what numba's cache=True does (Dispatcher.enable_caching), with the cache below
        loop._cache = _shared_cache()(fn)
    except RuntimeError:  # no writable cache next to the module nor in the user's cache directory
        pass
    if signature is not None:  # what numba.njit(signature) does (a list: each of them)
        with typeinfer.register_dispatcher(loop):
            for sig in signature if isinstance(signature, list) else [signature]:
                loop.compile(sig)
        loop.disable_compile()
    return loop


def entry(loop: Any, *args: Any) -> Any:
    """``loop``'s machine code for arguments of these types, called without the dispatcher (which
    types each argument on every call: 0.03-0.05 us an argument, 0.44 us of a 13-argument call's
    3.98), else ``loop`` itself. The overload is the one the dispatcher would take: the only one of
    the loop's declared signatures each argument converts to. For a caller that keeps the entry with
    the arguments' types and checks them before each call (a fused step's kept call: the same dtype,
    layout and shape, the same weights), since the machine code trusts them."""
    try:
        types = tuple(loop.typeof_pyval(a) for a in args)
        ctx = loop.typingctx
        found = [cres for sig, cres in loop.overloads.items()
                 if len(sig) == len(types) and all(ctx.can_convert(t, s) is not None for t, s in zip(types, sig))]
    except Exception:  # another numba, another dispatcher: call it as it is
        return loop
    return found[0].entry_point if len(found) == 1 else loop


_SHARED_CACHE: Any = None


def _shared_cache() -> Any:
    """numba's on-disk cache of compiled loops (``FunctionCache``), made safe for processes that
    share it. numba picks a new entry's file name from the index it read, then writes the index and
    the file: two processes compiling two signatures of one loop at once (pytest-xdist's workers on
    a fresh checkout, a pool of servers) can both pick ``.3.nbc``, and the index then names one
    signature's machine code for the other's arguments (numba issue #10128). A later process that
    loads it fails the call with numba's "can't unbox array" TypeError, inside a model's run. Here
    loading and saving hold an exclusive lock on a file in the cache folder (``fcntl.flock``, where
    the platform has it), so an index is always read, extended and written by one process at a
    time; and an entry whose machine code is for other argument types than the ones asked (written
    before this lock, or by another numba user of the folder) is not loaded: it is compiled afresh
    and saved over."""
    global _SHARED_CACHE
    if _SHARED_CACHE is None:
        from numba.core import sigutils
        from numba.core.caching import FunctionCache

        class SharedCache(FunctionCache):
            def load_overload(self, sig: Any, target_context: Any) -> Any:
                with self._locked():
                    compiled = super().load_overload(sig, target_context)
                if compiled is None or tuple(compiled.signature.args) != tuple(sigutils.normalize_signature(sig)[0]):
                    return None
                return compiled

            def save_overload(self, sig: Any, data: Any) -> None:
                with self._locked():
                    super().save_overload(sig, data)

            @contextlib.contextmanager
            def _locked(self) -> Iterator[None]:
                try:
                    import fcntl
                except ImportError:  # Windows: no lock; the signature check above still holds
                    yield
                    return
                try:
                    os.makedirs(self._cache_path, exist_ok=True)
                    fd = os.open(os.path.join(self._cache_path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
                except OSError:  # a read-only folder: nothing is saved there, and loads read whole files
                    yield
                    return
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    yield
                finally:
                    os.close(fd)  # closing releases the lock

        _SHARED_CACHE = SharedCache
    return _SHARED_CACHE


#: the file in numba's cache folder whose lock a process holds while it reads or writes the cache
LOCK_FILE = "hal-jit.lock"


_LOOPS: Any = None
#: whether ``load`` has run in this process
_LOADED = False


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
    the compiler's own memory belong to the libraries, as numpy's and OpenBLAS's kernels do. Once a
    process: every runnable ``InferenceSession`` calls it."""
    global _LOADED
    if _LOADED or not enabled():
        return
    loops().warm()
    from hal.kernels import blas

    blas.available()  # the loops that call numpy's sgemm, and their check, before any run
    _LOADED = True


__all__ = ["enabled", "entry", "load", "loops", "njit", "status"]
