"""Fuzz hal's loader, sessions and CLI for a given time; count inputs, crashes, hangs and unhandled exceptions.

    python -m benchmarks.fuzz --seconds 900                     # -> benchmarks/results/fuzz.json
    python -m benchmarks.fuzz --seconds 30 --engine random --out /tmp/fuzz.json

Inputs (``benchmarks.fuzz_inputs``) are mutations of a corpus (hand-made models with every bomb
and control-flow shape, the zoo's tiny-cnn, and onnx's node test models): structure-aware
mutations of the ModelProto (attributes, shapes, element types, wiring, op types, opsets,
initializers and external-data locations, metadata) and byte-level ones (bit flips, truncation,
splices). Three fuzz targets:

- ``loader``: bytes -> ``hal.graph.load.load`` + the standard passes;
- ``session``: a mutated model -> ``hal.InferenceSession`` on a random installed target, run on
  seeded random feeds (sometimes poisoned with NaN / Inf), report and trace read back;
- ``cli``: a mutated model file -> ``hal run`` in-process, with random extra arguments.

The expected answers are a result or a ``HalError`` (for the CLI: exit 0 or 2). Anything else is
a finding: an *unhandled exception* (another exception type; CLI exit 3), a *crash* (the worker
process dies), a *hang* (one input runs past ``--hang-seconds``; hal's own bounds are
``timeout_s`` for compile and run), or a *memory escape* (a MemoryError that a size guard should
have prevented). The worker runs in a child process under a supervisor that restarts it after a
crash or hang, and saves the input that caused each finding (``--findings``).

The engine is hypothesis (``st.data()`` draws drive the mutators; the same mutators run in the
bounded suite tests/robustness/test_robust_fuzz.py) or ``random`` (seeded ``random.Random``).
One worker process, one BLAS thread.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import platform
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import pin_thread_env, target_names
from benchmarks.fuzz_inputs import HypothesisDraw, RandomDraw, corpus, make_input, mutate_bytes, pick

RESULTS = Path(__file__).resolve().parent / "results"
FUZZ_TARGETS = ("loader", "session", "cli")
#: share of inputs per fuzz target (the loader is cheap, sessions and the CLI compile and run)
WEIGHTS = {"loader": 0.6, "session": 0.3, "cli": 0.1}
MAX_MEMORY = 256 << 20  # bytes one tensor may need inside the fuzzer
TIMEOUT_S = 2.0  # hal's timeout_s for each compile and run
ADDRESS_SPACE = 12 << 30  # the worker's RLIMIT_AS: an allocation that escapes the guards fails, not the machine

# -- fuzz targets: every choice is drawn first (a plan), then the input runs ------------------------
# Drawing nothing after hal starts keeps the draws independent of what hal does (timeouts, errors),
# which hypothesis needs to replay and tell examples apart.

def plan_loader(d: Any, ctx: dict[str, Any]) -> dict[str, Any]:
    return {}


def run_loader(data: bytes, plan: dict[str, Any], ctx: dict[str, Any]) -> str:
    from hal.graph.load import load
    from hal.graph.passes import optimize

    optimize(load(data))
    return "ok"


def plan_session(d: Any, ctx: dict[str, Any]) -> dict[str, Any]:
    from hal.plugins import get_target

    target = pick(d, ctx["targets"])
    precision = pick(d, ("exact", "exact", "native"))
    return {"target": target, "fallback": pick(d, ("allow", "error", "warn")),
            "precision": precision if precision in get_target(target).spec.precisions else "exact",
            "seed": d.int(0, 9), "dim": d.int(0, 3),
            "poison": pick(d, (None, None, "nan", "inf", "-inf")), "where": d.int(0, 999), "trace": d.chance(0.2)}


def run_session(data: bytes, plan: dict[str, Any], ctx: dict[str, Any]) -> str:
    import warnings

    import hal
    from hal.feeds import random_feeds

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = hal.InferenceSession(data, target=plan["target"], fallback=plan["fallback"], precision=plan["precision"],
                                 max_memory=MAX_MEMORY, timeout_s=TIMEOUT_S)
    s.report.model_dump_json()
    feeds = random_feeds(s.graph, seed=plan["seed"], dims={"*": plan["dim"]})
    if plan["poison"]:
        for v in feeds.values():
            if v.dtype.kind == "f" and v.size:
                v.reshape(-1)[plan["where"] * v.size // 1000] = float(plan["poison"])
    s.run(None, feeds)
    if plan["trace"]:
        s.trace()
    return "ok"


def plan_cli(d: Any, ctx: dict[str, Any]) -> dict[str, Any]:
    extra = d.int(0, 6)
    plan: dict[str, Any] = {"target": pick(d, ctx["targets"]), "extra": extra}
    if extra == 2:
        plan["dim"] = pick(d, ("n=2", "n=abc", "n=-1", "=3", "n", f"n={2**40}", "batch=0"))
    elif extra == 3:
        plan["option"] = pick(d, ("tile=8", "x", "=", "warp_speed=true", "chips=0", "devices=[1]"))
    elif extra == 4:
        import numpy as np

        buf = io.BytesIO()
        np.save(buf, np.ones((2, 3), np.float32))
        plan["npy"] = mutate_bytes(buf.getvalue(), d) if d.chance(0.7) else buf.getvalue()
    elif extra == 6:
        plan["precision"] = pick(d, ("native", "fp8", "bf16", "quantum", ""))
    return plan


def run_cli(data: bytes, plan: dict[str, Any], ctx: dict[str, Any]) -> str:
    from hal.cli import main

    work: Path = ctx["workdir"]
    path = work / "m.onnx"
    path.write_bytes(data)
    args = ["run", str(path), "--target", plan["target"], "--fallback", "allow", "--timeout", str(TIMEOUT_S),
            "--max-memory", str(MAX_MEMORY)]
    extra = plan["extra"]
    if extra == 1:
        args += ["--json", str(work / "out.json")]
    elif extra == 2:
        args += ["--dim", plan["dim"]]
    elif extra == 3:
        args += ["--option", plan["option"]]
    elif extra == 4:
        (work / "x.npy").write_bytes(plan["npy"])
        args += ["--input", f"x={work / 'x.npy'}"]
    elif extra == 5:
        args += ["--save", str(work / "out.npz"), "--json", "-"]
    elif extra == 6:
        args += ["--precision", plan["precision"]]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(args)
    if code == 0:
        return "ok"
    if code == 2:  # one line naming the HalError class
        line = err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else ""
        return "hal:" + (line.split(":")[1].strip() if line.startswith("error:") and line.count(":") > 1 else "exit 2")
    raise CliInternalError(f"exit {code}: {err.getvalue().strip()[-300:]}")


class CliInternalError(Exception):
    """``hal run`` exited with a code other than 0 (ok) or 2 (a HalError): an unhandled exception inside."""


PLANNERS: dict[str, Callable[[Any, dict[str, Any]], dict[str, Any]]] = {
    "loader": plan_loader, "session": plan_session, "cli": plan_cli}
RUNNERS: dict[str, Callable[[bytes, dict[str, Any], dict[str, Any]], str]] = {
    "loader": run_loader, "session": run_session, "cli": run_cli}


# -- the worker -------------------------------------------------------------------------------

def _classify(exc: BaseException | None) -> tuple[str, str]:
    """(outcome, detail): ok, hal:<class>, memory (a MemoryError behind a HalError), or unhandled."""
    from hal.errors import HalError

    if exc is None:
        return "ok", ""
    if isinstance(exc, HalError):
        cause = exc.__cause__
        while cause is not None:
            if isinstance(cause, MemoryError):
                return "memory", f"{type(exc).__name__}: {exc}"[:300]
            cause = cause.__cause__
        # a PluginError is isolation working; its message names a built-in plugin's own bug
        return f"hal:{type(exc).__name__}", str(exc)[:300] if type(exc).__name__ == "PluginError" else ""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
    return "unhandled", f"{type(exc).__name__} at {where}: {str(exc)[:200]}"


def fuzz_one(d: Any, state: dict[str, Any]) -> None:
    """Make one input, publish it (for crash and hang repros), run it, count the outcome."""
    kinds = state["kinds"]
    r = d.int(0, 999)
    acc, kind = 0, kinds[-1]
    for k in kinds:
        acc += int(WEIGHTS[k] / sum(WEIGHTS[x] for x in kinds) * 1000)
        if r < acc:
            kind = k
            break
    data = make_input(state["seeds"], d)
    plan = PLANNERS[kind](d, state)
    shared = state["shared"]
    state["current"].seek(0)
    state["current"].write(json.dumps({"kind": kind}).encode() + b"\n" + data)
    state["current"].truncate()
    state["current"].flush()
    shared[1] = time.monotonic_ns() // 1_000_000
    result = "ok"
    try:
        result = RUNNERS[kind](data, plan, state)
        exc = None
    except (Exception, SystemExit) as e:  # the thing being measured: anything but a HalError is a finding
        exc = e
    shared[1] = 0
    outcome, detail = _classify(exc)
    if exc is None:
        outcome = result
    counts = state["counts"]
    counts[(kind, outcome)] += 1
    shared[0] += 1
    plugin_fault = outcome == "hal:PluginError"
    if outcome in ("unhandled", "memory") or plugin_fault:
        sig = f"{kind}|{detail.split(':')[0]}|{detail[:120]}"
        if sig not in state["seen"] and (not plugin_fault or len(state["seen"]) < 50):
            state["seen"].add(sig)
            digest = hashlib.sha256(data).hexdigest()[:12]
            repro = state["findings"] / f"{'plugin' if plugin_fault else outcome}-{kind}-{digest}.onnx"
            repro.parent.mkdir(parents=True, exist_ok=True)
            repro.write_bytes(data)
            plan_doc = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in plan.items()}
            repro.with_suffix(".plan.json").write_text(json.dumps({"target": kind, "plan": plan_doc}) + "\n")
            tb = "".join(traceback.format_exception(exc)) if exc is not None else ""
            state["found"].append({"kind": "plugin" if plugin_fault else outcome, "target": kind, "detail": detail,
                                   "repro": os.path.relpath(repro),
                                   "traceback": tb[-3000:]})


def worker(seed: int, engine: str, kinds: Sequence[str], targets: Sequence[str], seeds_path: str,
           current_path: str, findings: str, report_path: str, shared: Any, stop_at: float) -> None:
    import pickle
    import resource
    import tempfile
    import warnings

    warnings.simplefilter("ignore")
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    import hal  # noqa: F401  (import before counting time: plugin discovery)

    with open(seeds_path, "rb") as f:
        seeds = pickle.load(f)
    state: dict[str, Any] = {"seeds": seeds, "kinds": list(kinds), "targets": list(targets), "shared": shared,
                             "counts": Counter(), "seen": set(), "found": [], "findings": Path(findings),
                             "current": open(current_path, "wb"),
                             # inside the supervisor's folder, which it removes whatever way this worker ends
                             "workdir": Path(tempfile.mkdtemp(prefix="worker-", dir=Path(current_path).parent))}
    last_flush = 0.0

    def flush(final: bool = False) -> None:
        nonlocal last_flush
        if final or time.monotonic() - last_flush > 1.0:
            doc = {"counts": {f"{k}|{o}": n for (k, o), n in state["counts"].items()}, "found": state["found"]}
            tmp = report_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(doc, f)
            os.replace(tmp, report_path)
            last_flush = time.monotonic()

    if engine == "random":
        rng = random.Random(seed)
        while time.time() < stop_at:
            fuzz_one(RandomDraw(random.Random(rng.getrandbits(64))), state)
            flush()
    else:
        from hypothesis import HealthCheck, Phase, given, settings
        from hypothesis import seed as hseed
        from hypothesis import strategies as st

        batch = 0
        while time.time() < stop_at:
            batch += 1

            # The clock is read between batches only: an example that drew nothing would look flaky.
            @hseed(seed * 1_000_003 + batch)
            @settings(max_examples=50, phases=[Phase.generate], deadline=None, database=None,
                      suppress_health_check=list(HealthCheck), derandomize=False)
            @given(st.data())
            def one(data: Any) -> None:
                fuzz_one(HypothesisDraw(data), state)
                flush()

            try:
                one()
            except Exception as e:  # hypothesis itself gave up on a batch: the harness's problem, not hal's
                state["counts"][("harness", "error")] += 1
                state["found"].append({"kind": "harness", "target": "-", "detail": f"{type(e).__name__}: {e}"[:300]})
    flush(final=True)


# -- the supervisor ---------------------------------------------------------------------------

def _machine() -> dict[str, Any]:
    from importlib import metadata

    versions = {}
    for pkg in ("hal-sdk", "numpy", "onnx", "hypothesis", "protobuf"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[pkg] = metadata.version(pkg)
    return {"python": platform.python_version(), "platform": platform.platform(), "cores": os.cpu_count(),
            "versions": versions}


def supervise(args: argparse.Namespace) -> dict[str, Any]:
    """Run the workers in a scratch folder removed at the end (a killed worker cannot clean its own:
    282 such folders had piled up in /tmp over the earlier runs)."""
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="halfuzz-"))
    try:
        return _supervise(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _supervise(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import multiprocessing as mp
    import pickle
    import signal

    targets = target_names(args.hal_targets)
    kinds = [k for k in args.targets.split(",") if k]
    unknown = sorted(set(kinds) - set(FUZZ_TARGETS))
    if unknown:
        raise SystemExit(f"unknown fuzz target(s) {unknown}; choose from {FUZZ_TARGETS}")
    seeds = corpus(args.node_cases)
    seeds_path = work / "seeds.pkl"
    seeds_path.write_bytes(pickle.dumps(seeds))
    findings = Path(args.findings)
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    t0 = time.time()
    stop_at = t0 + args.seconds
    totals: Counter[str] = Counter()
    found: list[dict[str, Any]] = []
    crashes = hangs = restarts = 0
    seed = args.seed
    while time.time() < stop_at - 1:
        shared = ctx.Array("q", 2, lock=False)  # [inputs run, start of the current input in ms (0: idle)]
        current = work / f"current-{seed}.bin"
        report = work / f"report-{seed}.json"
        p = ctx.Process(target=worker, args=(seed, args.engine, kinds, targets, str(seeds_path), str(current),
                                             str(findings), str(report), shared, stop_at), daemon=True)
        p.start()
        hung = False
        while p.is_alive():
            p.join(0.25)
            started = shared[1]
            if started and time.monotonic_ns() // 1_000_000 - started > args.hang_seconds * 1000:
                hung = True
                os.kill(p.pid, signal.SIGKILL)
                p.join()
        died = hung or p.exitcode != 0
        if report.exists():
            doc = json.loads(report.read_text())
            totals.update(doc["counts"])
            found += doc["found"]
        if died:
            # the input in flight when the worker died (or hung) is lost to its counts: count it here
            raw = current.read_bytes() if current.exists() else b""
            head, _, data = raw.partition(b"\n")
            kind = json.loads(head or b"{}").get("kind", "?")
            totals[f"{kind}|{'hang' if hung else 'crash'}"] += 1
            digest = hashlib.sha256(data).hexdigest()[:12]
            repro = findings / f"{'hang' if hung else 'crash'}-{kind}-{digest}.onnx"
            repro.parent.mkdir(parents=True, exist_ok=True)
            repro.write_bytes(data)
            found.append({"kind": "hang" if hung else "crash", "target": kind, "repro": os.path.relpath(repro),
                          "detail": f"exit code {p.exitcode}" if not hung else f"> {args.hang_seconds} s"})
            hangs += hung
            crashes += not hung
            restarts += 1
        seed += 1
    wall = time.time() - t0
    by_target: dict[str, dict[str, Any]] = {}
    outcomes: Counter[str] = Counter()
    harness_errors = totals.pop("harness|error", 0)
    for key, n in totals.items():
        kind, outcome = key.split("|", 1)
        t = by_target.setdefault(kind, {"inputs": 0, "ok": 0, "hal_errors": {}, "unhandled": 0, "memory_escapes": 0,
                                         "crashes": 0, "hangs": 0})
        t["inputs"] += n
        outcomes[outcome] += n
        if outcome == "ok":
            t["ok"] += n
        elif outcome.startswith("hal:"):
            t["hal_errors"][outcome[4:]] = t["hal_errors"].get(outcome[4:], 0) + n
        elif outcome == "memory":
            t["memory_escapes"] += n
        elif outcome in ("crash", "hang"):
            t[outcome + "es" if outcome == "crash" else "hangs"] += n
        else:
            t["unhandled"] += n
    inputs = sum(t["inputs"] for t in by_target.values())
    return {
        "schema": "hal-fuzz/1",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": {"seconds": args.seconds, "engine": args.engine, "seed": args.seed, "fuzz_targets": kinds,
                     "hal_targets": targets, "max_memory": MAX_MEMORY, "timeout_s": TIMEOUT_S,
                     "hang_seconds": args.hang_seconds, "address_space_limit": ADDRESS_SPACE, "workers": 1,
                     "corpus_models": len(seeds)},
        "machine": _machine(),
        "wall_s": round(wall, 1),
        "inputs": inputs,
        "inputs_per_s": round(inputs / wall, 1) if wall else None,
        "crashes": crashes,
        "hangs": hangs,
        "unhandled_exceptions": sum(t["unhandled"] for t in by_target.values()),
        "memory_escapes": sum(t["memory_escapes"] for t in by_target.values()),
        "worker_restarts": restarts,
        "harness_errors": harness_errors,
        "by_target": by_target,
        "findings": [f for f in found if f["kind"] != "plugin"],
        "plugin_faults": [f for f in found if f["kind"] == "plugin"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz (wall clock)")
    ap.add_argument("--engine", choices=("hypothesis", "random"), default="hypothesis")
    ap.add_argument("--targets", default=",".join(FUZZ_TARGETS), help="fuzz targets: loader,session,cli")
    ap.add_argument("--hal-targets", default=None, help="hal targets sessions and the CLI use (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hang-seconds", type=float, default=60.0, help="one input running longer is a hang")
    ap.add_argument("--node-cases", type=int, default=2000,
                    help="onnx node test models in the corpus (default: every one under 32 KB, about 1,880; a "
                         "400-case sample missed six hangs and two memory escapes that the whole set found)")
    ap.add_argument("--out", default=str(RESULTS / "fuzz.json"))
    ap.add_argument("--findings", default=str(RESULTS / "fuzz_findings"), help="where repro inputs go")
    args = ap.parse_args(argv)
    pin_thread_env(1)
    doc = supervise(args)
    from hal.files import atomic_write

    atomic_write(args.out, json.dumps(doc, indent=1) + "\n")
    print(f"{doc['inputs']} inputs in {doc['wall_s']} s ({doc['inputs_per_s']}/s): {doc['crashes']} crashes, "
          f"{doc['hangs']} hangs, {doc['unhandled_exceptions']} unhandled exceptions, "
          f"{doc['memory_escapes']} memory escapes -> {args.out}")
    bad = doc["crashes"] + doc["hangs"] + doc["unhandled_exceptions"] + doc["memory_escapes"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
