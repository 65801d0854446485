"""``python -m benchmarks.markdown [bench.json]``: the results of a benchmark run as the Markdown
tables benchmarks/README.md shows, so that every figure there is one the benchmark computed.

Prints the timing table (medians, hal cpu's IQR, ratios), the compile times, the peak-RSS table
(hal cpu and onnxruntime), the BLAS floor (runs with ``--profile``) and the goals met, all read from
the JSON that ``python -m benchmarks`` wrote.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT = Path(__file__).resolve().parent / "results" / "bench.json"


def _ms(res: dict[str, Any] | None) -> str:
    if not res or res.get("status") != "ok":
        return "—"
    v = res["median_s"] * 1e3
    return f"{v:,.1f}" if v >= 0.1 else f"{v:.2f}"


def fmt_ratio(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


def fmt_mib(v: float | None, fmt: str = ",.0f") -> str:
    """Bytes as MiB ("—" for None)."""
    return "—" if v is None else f"{v / (1 << 20):{fmt}}"


def probe_span(r: dict[str, Any]) -> str:
    """The run's own memory over planned in the least and the most of a row's probes ("1.42–1.48"),
    or its one probe's; "—" without a plan."""
    planned, own = r.get("planned_bytes"), r.get("probe_own_bytes")
    if not planned or not own:
        return "—"
    lo, hi = min(own) / planned, max(own) / planned
    return fmt_ratio(lo) if len(own) == 1 else f"{fmt_ratio(lo)}–{fmt_ratio(hi)}"


def timing_table(doc: dict[str, Any]) -> list[str]:
    targets = [r[4:] for r in doc["settings"]["runners"] if r.startswith("hal:") and r != "hal:cpu"]
    head = ["model", "hal cpu (IQR)", "ORT", "Reference", "cpu/ORT", "Ref/cpu", *(f"{t}/cpu" for t in targets)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mod in doc["models"]:
        res, r = mod["results"], mod["ratios"]
        cpu = res.get("hal:cpu")
        cells = [mod["name"],
                 f"{_ms(cpu)} ({cpu['iqr_s'] * 1e3:,.1f})" if cpu and cpu.get("status") == "ok" else "—",
                 _ms(res.get("onnxruntime")), _ms(res.get("reference")),
                 fmt_ratio(r.get("hal_cpu/ort")), fmt_ratio(r.get("ref/hal_cpu"), 1),
                 *(fmt_ratio(r.get(f"hal_{t}/hal_cpu")) for t in targets)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def compile_lines(doc: dict[str, Any]) -> list[str]:
    out = []
    for c in doc["compile"]:
        times = ", ".join(f"{t} {r['median_s']:.2f}" if r["status"] == "ok" else f"{t} error"
                          for t, r in c["targets"].items())
        out.append(f"Compile of `{c['graph']}` ({c['nodes']:,} nodes, {c['nodes_after_optimize']:,} after passes), "
                   f"median s: {times}.")
    return out


def memory_table(doc: dict[str, Any]) -> list[str]:
    """hal cpu's and onnxruntime's peak RSS against hal's plan: whole, and without the pages of shared
    objects (library code) first touched since imports; with what tracemalloc saw hal hold."""
    rows = [r for r in doc["memory"] if r.get("status") == "ok" and r["runner"] in ("hal:cpu", "onnxruntime")]
    if not rows:
        return []
    lines = ["| model | runner | planned MiB | run peak MiB | peak / planned | of it library pages MiB | "
             "run's own / planned (goal) | probes' own / planned | traced MiB |",
             "|---|---|---|---|---|---|---|---|---|"]

    def mb(v: float | None, fmt: str = ",.1f") -> str:
        return fmt_mib(v, fmt)

    for r in rows:
        lines.append(f"| {r['model']} | {r['runner']} | {mb(r.get('planned_bytes', 0))} | {mb(r['run_delta_bytes'])} | "
                     f"{fmt_ratio(r.get('ratio_to_planned'))} | {mb(r.get('library_growth_bytes'), ',.2f')} | "
                     f"{fmt_ratio(r.get('own_ratio_to_planned'))} | {probe_span(r)} | "
                     f"{mb(r.get('traced_run_peak_bytes'))} |")
    return lines


def floor_table(doc: dict[str, Any]) -> list[str]:
    """Each profiled model's matrix products against numpy's SGEMM rate (benchmarks/floor.py)."""
    rows = doc.get("floor") or []
    if not rows:
        return []
    blas = doc["blas"]
    lines = [f"BLAS floor: the model's matrix products (MatMul, Gemm, Conv) at numpy's SGEMM rate on "
             f"{blas['size']}³ here, {blas['flops_per_s'] / 1e9:.1f} GFLOP/s.", "",
             "| model | product GFLOP | floor ms | hal cpu / floor | ORT / floor | Ref / floor |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ms = r["floor_s"] * 1e3
        cells = [r["model"], f"{r['product_flops'] / 1e9:,.3f}", f"{ms:,.1f}" if ms >= 0.1 else f"{ms:.3f}",
                 *(fmt_ratio(r.get(k)) for k in ("hal_cpu/floor", "ort/floor", "ref/floor"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def goal_lines(doc: dict[str, Any]) -> list[str]:
    s = doc.get("summary") or {}
    if not s:
        return []
    missed: dict[tuple[str, str, Any], list[tuple[float, str]]] = {}  # (goal, model, limit) -> (value, target)
    bounds: dict[tuple[str, str, Any], float] = {}
    for c in s["checks"]:
        if not c["met"]:
            key = (c["goal"], c.get("model") or c.get("graph"), c["limit"])
            missed.setdefault(key, []).append((c["value"], c.get("target", "")))
            if c.get("bound_on_blas") is not None:
                bounds[key] = c["bound_on_blas"]
    out = [f"Goals met: {s['met']}/{s['total']}."]
    if missed:
        def one(v: list[tuple[float, str]]) -> str:
            if len(v) > 1:
                return f"{min(v)[0]:.2f}–{max(v)[0]:.2f} ({len(v)} targets)"
            return f"{v[0][0]:.3f}" + (f" ({v[0][1]})" if v[0][1] else "")

        def why(key: tuple[str, str, Any]) -> str:
            b = bounds.get(key)
            if b is None:
                return ""
            return f" (numpy's BLAS allows {'at most' if key[0] == 'ref/hal_cpu' else 'at least'} {b:.2f})"

        out.append("Missed: " + "; ".join(f"{goal} {model} {one(v)}, limit {limit}{why((goal, model, limit))}"
                                          for (goal, model, limit), v in missed.items()) + ".")
    return out


def render(doc: dict[str, Any]) -> str:
    parts = [timing_table(doc), compile_lines(doc), memory_table(doc), floor_table(doc), goal_lines(doc)]
    return "\n\n".join("\n".join(p) for p in parts if p) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.markdown", description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="?", type=Path, default=DEFAULT, help=f"a benchmark result (default {DEFAULT.name})")
    args = ap.parse_args(argv)
    try:
        doc = json.loads(args.json.read_text())
    except (OSError, ValueError) as e:
        print(f"error: cannot read {args.json}: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
