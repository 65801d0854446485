"""numpy's own single-precision GEMM, for compiled loops that multiply without a numpy call.

On tiny-gpt's 16-row products np.matmul spends more time deciding and allocating than BLAS spends
multiplying (16x64 by 64x64: 1.31 us a call, of which OpenBLAS's sgemm takes 0.51), and a fused
step makes one such call per product plus one per elementwise pass after it. A compiled loop
(``hal.kernels._gemm_loops``) that calls the very ``cblas_sgemm`` numpy calls, with the arguments
numpy's matmul loop passes it, gets the same bits in one call for the product and what follows.

``available`` says whether that is so here: numba's loops are on (``jit.enabled``), numpy is built
against a 64-bit-integer CBLAS whose ``sgemm`` this module can name (the scipy-openblas64 in
numpy's wheels for Linux and Windows: ``scipy_cblas_sgemm64_``), and that function, called as the
loops call it, gives np.matmul's bits on a few products of each layout the loops pass (a check run
once a process). Elsewhere (Accelerate, MKL, a 32-bit-integer build, a mismatch) the fused steps
call np.matmul, as before.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from hal.kernels import jit

#: the symbol the compiled loops call; bound to numpy's function by ``available``
SYMBOL = "hal_cblas_sgemm64"
#: numpy's CBLAS sgemm with 64-bit integers, by the names its builds give it
_CANDIDATES = ("scipy_cblas_sgemm64_", "cblas_sgemm64_")
#: CBLAS's enumerations (cblas.h)
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112

#: None until first asked; then whether the loops may call numpy's sgemm
_AVAILABLE: bool | None = None
#: why not, when not (for ``status``)
_WHY = ""


def _numpy_sgemm() -> tuple[str, int] | None:
    """(the name, the address) of the sgemm numpy's matmul calls, where this module knows its name."""
    try:
        lib = ctypes.CDLL(np._core._multiarray_umath.__file__)
    except (OSError, AttributeError):
        return None
    for name in _CANDIDATES:
        try:
            fn = getattr(lib, name)
        except AttributeError:
            continue
        return name, ctypes.cast(fn, ctypes.c_void_p).value or 0
    return None


def available() -> bool:
    """Whether ``hal.kernels._gemm_loops`` may run: see the module's docstring. The first call binds
    the symbol and checks the bits (a few milliseconds, once the loops are compiled or cached)."""
    global _AVAILABLE, _WHY
    if _AVAILABLE is None:
        _AVAILABLE, _WHY = _bind()
    return _AVAILABLE


def status() -> str:
    """One line for ``hal doctor``: whether the fused products call numpy's sgemm directly."""
    return "direct (numpy's sgemm from compiled loops)" if available() else f"through np.matmul ({_WHY})"


def _bind() -> tuple[bool, str]:
    if not jit.enabled():
        return False, "compiled loops off"
    found = _numpy_sgemm()
    if found is None or not found[1]:
        return False, "numpy's BLAS has no 64-bit-integer cblas_sgemm this module knows"
    import llvmlite.binding as llvm

    llvm.add_symbol(SYMBOL, found[1])
    try:
        ok = _same_bits()
    except Exception as e:  # a loop that does not compile or load here: the numpy path stays
        return False, f"{found[0]} failed its check: {type(e).__name__}: {e}"
    return (True, "") if ok else (False, f"{found[0]} differs from np.matmul here")


def _same_bits() -> bool:
    """Whether the loops' products equal np.matmul's, bit for bit, on products of each layout they
    take: row-major operands, and each of a batch's operands transposed (a head split's views)."""
    from hal.kernels import _gemm_loops as g

    rng = np.random.default_rng(7)
    for m, k, n in ((2, 2, 2), (5, 7, 3), (16, 64, 48), (33, 130, 17)):
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        out = np.empty((m, n), dtype=np.float32)
        g.gemm_rows(a, b, out)
        if not np.array_equal(out, np.matmul(a, b)):
            return False
        x = rng.standard_normal((1, 3, k, m)).astype(np.float32).transpose(0, 1, 3, 2)  # (1, 3, m, k), transposed
        y = rng.standard_normal((1, 3, n, k)).astype(np.float32).transpose(0, 1, 3, 2)
        got = np.empty((1, 3, m, n), dtype=np.float32)
        if not g.batched(x, y, got) or not np.array_equal(got, np.matmul(x, y)):
            return False
    return True


def reset() -> None:
    """Forget the check's answer (tests that switch the loops off and on)."""
    global _AVAILABLE, _WHY
    _AVAILABLE, _WHY = None, ""


def loops() -> Any:
    """``hal.kernels._gemm_loops`` where ``available()``, else None."""
    if not available():
        return None
    from hal.kernels import _gemm_loops

    return _gemm_loops


__all__ = ["NO_TRANS", "ROW_MAJOR", "SYMBOL", "TRANS", "available", "loops", "reset", "status"]
