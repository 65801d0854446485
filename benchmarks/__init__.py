"""hal's speed benchmark: hal targets vs onnxruntime vs onnx's ReferenceEvaluator, one process.

``python -m benchmarks --help``; see benchmarks/README.md. This module stays free of numpy so
that ``pin_thread_env`` can run before any BLAS library loads.
"""

from __future__ import annotations

import os

#: thread-count variables the BLAS / OpenMP runtimes read once, when they load
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def pin_thread_env(threads: int) -> None:
    """Set every thread-count variable to ``threads`` (effective only before numpy is imported)."""
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(threads)


def target_names(arg: str | None) -> list[str]:
    """A ``--targets a,b`` value as a list; every installed hal target when it is empty or None."""
    if arg:
        return [t for t in arg.split(",") if t]
    import hal

    return [s.name for s in hal.targets()]
