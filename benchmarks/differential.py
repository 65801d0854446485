"""Random small models through hal and onnxruntime side by side: where do their numbers part?

    python -m benchmarks.differential                           # -> benchmarks/results/differential.json
    python -m benchmarks.differential --cases 60 --families reduce,resize --targets cpu --out /tmp/d.json

onnx's node tests pin each op at a few shapes and attributes; this draws them. Each case is one
family's model, built with ``onnx.helper`` from a seeded generator (attributes, shapes, broadcasts,
dtypes, awkward values), run by onnxruntime (graph optimisations off, one thread) and by each hal
target. ``benchmarks.differential_cases`` gathers the families: network layers there, and by area in
the other ``differential_*`` modules (elementwise math and casts, tensor movement, image and
detection, signal and control flow, ai.onnx.ml, com.microsoft, whole networks, low-bit types and
text, old opsets' forms). The verdicts:

- ``agree``: hal's outputs are within the dtype's tolerance of onnxruntime's;
- ``follows_onnx``: they are not, but they are within it of onnx's ``ReferenceEvaluator``: where the
  two peers part, hal follows onnx (README);
- ``finding``: onnxruntime ran and hal agrees with neither, or hal failed where onnxruntime ran (a
  target refusing a node, ``UnsupportedOpError``, is a verdict of its own: ``refused``);
- ``unpeered``: onnxruntime has no kernel for it (float64 Erf and pools) or refuses the model; the
  reference alone is compared, and counted (``reference_agrees`` / ``reference_differs``), not
  judged: its float64 paths round through float32 in places (Erf, Gelu, HardSigmoid, LRN).

A finding's model and feeds are saved (``--findings``) and the command exits 1. It is a place to look,
not yet a verdict on hal: at a nearest pixel's exact boundary both peers can round the source
coordinate the other way (Resize's half_pixel_symmetric 5 -> 3 and 7 -> 9 by sizes, where hal picks
the pixels exact arithmetic does, onnxruntime misses one column and the reference one row). Configurations
where onnxruntime and onnx's reference disagree with each other as well as with hal are left out
of the generators, each with its reason where it is drawn.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from benchmarks.differential_cases import FAMILIES, Case, build

RESULTS = Path(__file__).resolve().parent / "results"
#: (rtol, atol as a fraction of the largest output magnitude) per dtype
TOLERANCE = {np.dtype(np.float32): (1e-4, 1e-5), np.dtype(np.float64): (1e-9, 1e-11),
             np.dtype(np.float16): (1e-2, 2e-3)}


# -- running and judging ------------------------------------------------------------------------

def mismatch(want: list[Any] | None, got: list[Any]) -> str | None:
    """Why ``got`` is not ``want`` within the dtype's tolerance (None when it is)."""
    if want is None:
        return "no outputs"
    for i, (w, g) in enumerate(zip(want, got)):
        why = _maps_differ(w, g) if _maps(w) is not None or _maps(g) is not None else _differs(w, g)
        if why is not None:
            return f"output {i}: {why}"
    return None


def _differs(w: Any, g: Any) -> str | None:
    """Why tensor ``g`` is not ``w`` within the dtype's tolerance (None when it is)."""
    w, g = np.asarray(w), np.asarray(g)
    if w.dtype.kind in "OU" and g.dtype.kind in "OU":  # strings: onnx's reference hands back str arrays
        w, g = w.astype(object), g.astype(object)
    if w.shape != g.shape or w.dtype != g.dtype:
        return f"{g.dtype}{list(g.shape)} where {w.dtype}{list(w.shape)}"
    if w.dtype.kind not in "fc":
        if not np.array_equal(w, g):
            return f"{int((w != g).sum())} of {w.size} values differ"
        return None
    with np.errstate(invalid="ignore"):  # (a signalling NaN, as BitCast makes of random bits, warns)
        w64, g64 = w.astype(np.float64), g.astype(np.float64)
    if (np.isnan(w64) != np.isnan(g64)).any() or (np.isinf(w64) & (w64 != g64)).any():
        return "NaN or inf at other places"
    finite = np.isfinite(w64)
    if not finite.any():
        return None
    rtol, atol = TOLERANCE[w.dtype]
    with np.errstate(invalid="ignore"):  # (inf - inf where both are the same inf: masked)
        err = np.abs(np.where(finite, w64 - g64, 0))
    limit = atol * max(1.0, float(np.abs(w64[finite]).max())) + rtol * np.abs(np.where(finite, w64, 0))
    if (err > limit).any():
        j = int(np.argmax(err - limit))
        return f"{err.flat[j]:.3g} off at {j} ({g64.flat[j]:.8g} where {w64.flat[j]:.8g})"
    return None


def _maps(v: Any) -> list[Mapping[Any, Any]] | None:
    """An output that is a map, or a non-empty sequence of maps (ZipMap's), as a list of maps; else None."""
    if isinstance(v, Mapping):
        return [v]
    if isinstance(v, (list, tuple)) and v and all(isinstance(m, Mapping) for m in v):
        return list(v)
    return None


def _maps_differ(w: Any, g: Any) -> str | None:
    """Why maps ``g`` are not ``w``: their number, keys, or values (the maps' values in a row, in ``w``'s
    key order; Python floats, as both hand back ZipMap's float32 scores, judged as float32)."""
    wm, gm = _maps(w), _maps(g)
    if wm is None or gm is None or len(wm) != len(gm):
        def count(v: Any, ms: list[Mapping[Any, Any]] | None) -> str:
            return str(len(ms)) if ms is not None else "0" if isinstance(v, (list, tuple)) and not v else "no"
        return f"{count(g, gm)} maps where {count(w, wm)}"
    for j, (a, b) in enumerate(zip(wm, gm)):
        if set(a) != set(b):
            return f"map {j} has keys {sorted(map(repr, b))} where {sorted(map(repr, a))}"

    def values(ms: list[Mapping[Any, Any]]) -> np.ndarray:
        flat = [m[k] for m, a in zip(ms, wm) for k in a]
        return np.array(flat, dtype=np.float32 if all(isinstance(v, float) for v in flat) else None)

    return _differs(values(wm), values(gm))


#: onnxruntime's switches for the peer, read as it builds a session's kernels. On a host with AVX-512
#: its QMoE multiplies a 4-bit projection scaled per row and without zero points through MLAS's
#: blocked Q4 GEMM when the other projection has zero points (its default turns the path off only
#: where neither has), and packing for it quantises the dequantised weights a second time into
#: MLAS's own symmetric 4-bit blocks (32 values, scale the block's signed maximum / -8): a row whose
#: codes miss the lowest one comes back off its grid (msmoe draw 16: 1.07e-3 of an output of 0.027,
#: matched to 2e-9 by that repacking). With this switch off it dequantises and multiplies in float32,
#: as the op is defined and hal computes: the peer is then the same on every host (``peer_env``).
PEER_ENV = {"ORT_USE_MLAS_Q4_GEMM_MOE": "0"}


def _onnxruntime(blob: bytes, feeds: dict[str, np.ndarray]) -> list[Any] | None:
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # (its RoiAlign warns of an old max-mode fix on every session)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 4
    saved = {k: os.environ.get(k) for k in PEER_ENV}
    os.environ.update(PEER_ENV)
    try:
        return ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"]).run(None, feeds)
    except Exception:  # no kernel, or a model it refuses: unpeered
        return None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _reference(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[Any] | None:
    from onnx.reference import ReferenceEvaluator

    try:
        with np.errstate(all="ignore"):
            return ReferenceEvaluator(proto).run(None, feeds)
    except Exception:
        return None


def judge(case: Case, targets: list[str]) -> dict[str, tuple[str, str]]:
    """Each target's (verdict, detail) for ``case``."""
    import hal

    proto = case.proto
    blob = proto.SerializeToString()
    peer = _onnxruntime(blob, case.feeds)
    reference: list[Any] | None = None
    looked = False
    out: dict[str, tuple[str, str]] = {}
    for target in targets:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = hal.InferenceSession(blob, target=target).run(None, case.feeds)
        except hal.UnsupportedOpError as e:
            out[target] = ("refused", str(e)[:200])
            continue
        except Exception as e:  # a HalError where onnxruntime ran is a finding too
            out[target] = ("finding" if peer is not None else "unpeered", f"{type(e).__name__}: {str(e)[:300]}")
            continue
        why = mismatch(peer, got) if peer is not None else "onnxruntime did not run it"
        if why is None:
            out[target] = ("agree", "")
            continue
        if not looked:
            reference, looked = _reference(proto, case.feeds), True
        if peer is None:
            differs = mismatch(reference, got)
            out[target] = ("unpeered", "reference_differs: " + differs if differs else "reference_agrees")
        elif reference is not None and mismatch(reference, got) is None:
            out[target] = ("follows_onnx", why)
        else:
            out[target] = ("finding", why)
    return out


def sweep(cases: int, seed: int, families: list[str], targets: list[str], findings: Path | None) -> dict[str, Any]:
    """``cases`` cases, families in turn, each on every target."""
    t0 = time.perf_counter()
    counts: dict[str, dict[str, Counter[str]]] = {f: {t: Counter() for t in targets} for f in families}
    unpeered: Counter[str] = Counter()
    found: list[dict[str, Any]] = []
    invalid = 0
    for i in range(cases):
        family = families[i % len(families)]
        case = build(seed + i // len(families), family)
        if case is None:
            invalid += 1
            continue
        for target, (verdict, detail) in judge(case, targets).items():
            counts[family][target][verdict] += 1
            if verdict == "unpeered":
                unpeered[detail.split(":")[0]] += 1
            if verdict == "finding":
                found.append({"family": family, "seed": seed + i // len(families), "target": target,
                              "dtype": str(case.dtype), "detail": detail})
                if findings is not None:
                    findings.mkdir(parents=True, exist_ok=True)
                    stem = findings / f"{family}-{seed + i // len(families)}"
                    onnx.save(case.proto, f"{stem}.onnx")
                    np.savez(f"{stem}.npz", **case.feeds)
    verdicts = Counter()
    for per_target in counts.values():
        for c in per_target.values():
            verdicts.update(c)
    return {"cases": cases, "invalid_draws": invalid, "verdicts": dict(verdicts),
            "unpeered": dict(unpeered), "by_family": {f: {t: dict(c) for t, c in v.items()} for f, v in counts.items()},
            "findings": found, "wall_s": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.differential", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=None,
                    help="models to draw, the families in turn (default 300 a family)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--families", default="all", help=f"comma-separated, of: {', '.join(FAMILIES)}")
    ap.add_argument("--targets", default=None, help="hal targets (default: every installed one)")
    ap.add_argument("--out", default=str(RESULTS / "differential.json"))
    ap.add_argument("--findings", default=None, help="folder for each finding's model and feeds")
    args = ap.parse_args(argv)
    families = list(FAMILIES) if args.families == "all" else [f for f in args.families.split(",") if f]
    if unknown := [f for f in families if f not in FAMILIES]:
        ap.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    if "ml_sklearn" in families and importlib.util.find_spec("skl2onnx") is None:
        ap.error("the ml_sklearn family fits scikit-learn models and converts them with skl2onnx: install the "
                 "bench extra (pip install -e '.[bench]') or name the families to draw with --families")
    from benchmarks import target_names
    from benchmarks.machine import machine_info
    from hal.files import atomic_write

    targets = target_names(args.targets)
    if args.cases is None:
        args.cases = 300 * len(families)
    result = sweep(args.cases, args.seed, families, targets, Path(args.findings) if args.findings else None)
    doc = {"schema": "hal-differential/1", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "command": ["python", "-m", "benchmarks.differential", *(argv if argv is not None else sys.argv[1:])],
           "settings": {"cases": args.cases, "seed": args.seed, "families": families, "targets": targets,
                        "tolerance": {str(k): v for k, v in TOLERANCE.items()}, "peer_env": PEER_ENV},
           "machine": machine_info(), **result}
    atomic_write(args.out, json.dumps(doc, indent=1) + "\n")
    v = result["verdicts"]
    print(f"{args.cases} cases x {len(targets)} targets in {result['wall_s']} s: "
          + ", ".join(f"{k} {n}" for k, n in sorted(v.items())) + f" -> {args.out}")
    for f in result["findings"][:20]:
        print(f"  finding: {f['family']} seed {f['seed']} on {f['target']} ({f['dtype']}): {f['detail']}")
    return 1 if result["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
