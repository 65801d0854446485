"""Run against run: a kernel function as it was at a git revision against the working tree's, in one
process, on one session.

    python -m benchmarks.ab --rev b4d70e8 --swap hal.kernels.nn:_conv --models light_shufflenet

Each ``--swap module:function`` is loaded a second time from ``git show REV:path`` (with kernel
registration switched off, so nothing is registered twice) and swapped into the live module before
every other run, so the old and the new function take turns on the same session, the same feeds,
the same heap and the same minute of a shared machine. A change that only wins in an isolated loop
(hot caches, one shape over and over) shows here for what it is in the model. The functions must be
called through their module's global name (a kernel's helper, not the registered kernel itself), or
be a method looked up on its class (``hal.kernels.fused:MatMulBias.__call__``; not one calling
``super()`` without arguments, whose class cell is the old class).
Prints the medians, old/new, and whether the outputs are bit-identical.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _owner(root: Any, dotted: str) -> tuple[Any, str]:
    """(object holding the last name of ``dotted``, that name), from ``root``: a module's function,
    or a class's method for ``Class.method``."""
    *path, name = dotted.split(".")
    owner = root
    for part in path:
        owner = getattr(owner, part, None)
    return owner, name


def old_function(rev: str, spec: str) -> tuple[Any, str, Any]:
    """(live module or class, function name, the function as it was at ``rev``); ``spec`` is
    ``module:function`` or ``module:Class.method``."""
    mod_name, _, fn_path = spec.partition(":")
    if not mod_name or not fn_path:
        raise SystemExit(f"--swap takes module:function or module:Class.method (hal.kernels.nn:_conv), not {spec!r}")
    live_mod = importlib.import_module(mod_name)
    live, fn_name = _owner(live_mod, fn_path)
    if not callable(getattr(live, fn_name, None)):
        raise SystemExit(f"{mod_name} has no function {fn_path!r}")
    path = Path(live_mod.__file__).resolve().relative_to(ROOT).as_posix()
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"git show {rev}:{path} failed: {proc.stderr.strip()}")
    source = proc.stdout
    from hal.kernels import registry

    real = registry.kernel
    registry.kernel = lambda *a, **k: (lambda fn: fn)  # the old module's kernels stay unregistered
    try:
        old = types.ModuleType(f"{mod_name}@{rev}")
        old.__file__ = str(ROOT / path)
        exec(compile(source, f"{path}@{rev}", "exec"), old.__dict__)
    finally:
        registry.kernel = real
    old_owner, _ = _owner(old, fn_path)
    fn = getattr(old_owner, fn_name, None)
    if not callable(fn):
        raise SystemExit(f"{path} at {rev} has no function {fn_path!r}")
    # the live class gets the old class's function (its globals are the old module's, as for a function)
    return live, fn_name, fn


def ab(model_name: str, swaps: list[tuple[Any, str, Any]], target: str, reps: int) -> dict[str, Any]:
    import hal
    from benchmarks.models import load_model

    model = load_model(model_name)
    sess = hal.InferenceSession(model.source, target, precision="exact", fallback="allow")
    new = [(mod, name, getattr(mod, name)) for mod, name, _ in swaps]
    times: dict[str, list[float]] = {"old": [], "new": []}
    outs: dict[str, list[Any]] = {}
    try:
        for rep in range(reps + 1):  # the first round warms both up and is not counted
            for which, fns in (("old", swaps), ("new", new)):
                for mod, name, fn in fns:
                    setattr(mod, name, fn)
                t0 = time.perf_counter()
                out = sess.run(None, model.feeds)
                if rep:
                    times[which].append(time.perf_counter() - t0)
                else:
                    outs[which] = out
    finally:
        for mod, name, fn in new:
            setattr(mod, name, fn)
    old_s, new_s = float(np.median(times["old"])), float(np.median(times["new"]))
    same = all(np.array_equal(a, b, equal_nan=True) for a, b in zip(outs["old"], outs["new"]))
    return {"model": model_name, "old_s": old_s, "new_s": new_s, "old_over_new": old_s / new_s, "bit_identical": same}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__.splitlines()[0])
    ap.add_argument("--rev", required=True, help="git revision of the old functions")
    ap.add_argument("--swap", required=True, help="comma list of module:function or module:Class.method")
    ap.add_argument("--models", required=True, help="comma list of benchmark models")
    ap.add_argument("--target", default="cpu")
    ap.add_argument("--reps", type=int, default=30, help="timed runs of each (default 30)")
    args = ap.parse_args(argv)
    from benchmarks.runners import limit_threads

    limit_threads(1)
    swaps = [old_function(args.rev, s) for s in args.swap.split(",") if s]
    for name in args.models.split(","):
        r = ab(name, swaps, args.target, args.reps)
        print(f"{r['model']}: {args.rev} {r['old_s'] * 1e3:.2f} ms, now {r['new_s'] * 1e3:.2f} ms, "
              f"old/new {r['old_over_new']:.3f}, outputs {'bit-identical' if r['bit_identical'] else 'differ'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
