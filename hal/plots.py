"""Pictures people would rather look at than read: timelines, rooflines, placement maps, sweeps.

matplotlib is optional (``pip install hal-sdk[plot]``); without it, ``PlotUnavailable`` (a
HalError) says how to get it. Every picture is written atomically.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hal.errors import HalError
from hal.files import write_output


class PlotUnavailable(HalError):
    """Plotting needs matplotlib."""


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable("plotting needs matplotlib, which is not installed", where="hal plots",
                              hint='pip install "hal-sdk[plot]"') from None
    return plt


def _save(fig, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    _plt().close(fig)
    return write_output(path, buf.getvalue())


def _colors(keys: Sequence[str]) -> dict[str, Any]:
    plt = _plt()
    cmap = plt.get_cmap("tab20")
    return {k: cmap(i % 20) for i, k in enumerate(dict.fromkeys(keys))}


def _time_unit(max_us: float) -> tuple[float, str]:
    if max_us >= 2e6:
        return 1e-6, "s"
    if max_us >= 2e3:
        return 1e-3, "ms"
    return 1.0, "µs"


def gantt(ax, events: list[dict[str, Any]], title: str, lane_label: str) -> None:
    """Bars per lane (tid) over time, coloured by category (op type / layer)."""
    evs = [e for e in events if e.get("ph") == "X"]
    lanes = list(dict.fromkeys(f"{e.get('pid', '')}:{e['tid']}" if len({x.get('pid') for x in evs}) > 1
                               else str(e["tid"]) for e in evs))
    lane_of = {ln: i for i, ln in enumerate(lanes)}
    end = max((e["ts"] + e["dur"] for e in evs), default=1.0)
    scale, unit = _time_unit(end)
    # Colour by kind: the event's category, or the instruction word that starts its name.
    cats = [e.get("cat") if e.get("cat") not in (None, "", "node") else e["name"].split()[0] for e in evs]
    colors = _colors(cats)
    multi = len({x.get("pid") for x in evs}) > 1
    for e, c in zip(evs, cats):
        lane = f"{e.get('pid', '')}:{e['tid']}" if multi else str(e["tid"])
        ax.barh(lane_of[lane], max(e["dur"] * scale, end * scale * 1e-4), left=e["ts"] * scale, height=0.8,
                color=colors[c], edgecolor="none")
    ax.set_yticks(range(len(lanes)))
    ax.set_yticklabels(lanes, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel(lane_label)
    ax.set_title(title)
    top = sorted(colors, key=lambda k: -sum(e["dur"] for e, c in zip(evs, cats) if c == k))[:12]
    handles = [_plt().Rectangle((0, 0), 1, 1, color=colors[k]) for k in top]
    ax.legend(handles, top, fontsize=7, loc="upper right", title="busiest kinds", title_fontsize=7)


def roofline(ax, kernels: list[Any], peak_flops: float, bandwidth: float, title: str) -> None:
    """Achieved FLOP/s against arithmetic intensity, under the compute and memory roofs."""
    import numpy as np

    pts = [(k.flops / k.bytes, k.flops / k.time_s, k.bound or "other", k.name) for k in kernels
           if k.flops > 0 and k.bytes > 0 and k.time_s > 0]
    ridge = peak_flops / bandwidth
    xs = np.logspace(-2, 4, 200)
    ax.loglog(xs, np.minimum(peak_flops, xs * bandwidth) / 1e12, color="black", lw=1.5, label="roof")
    ax.axvline(ridge, color="grey", ls=":", lw=1)
    ax.text(ridge, peak_flops / 1e12 * 1.15, f"ridge {ridge:.0f} FLOP/B", fontsize=7, ha="center")
    colors = {"compute": "tab:red", "memory": "tab:blue", "latency": "tab:orange", "interconnect": "tab:purple",
              "other": "tab:grey"}
    for bound in colors:
        sel = [(x, y) for x, y, b, _ in pts if b == bound]
        if sel:
            ax.scatter([x for x, _ in sel], [y / 1e12 for _, y in sel], s=14, color=colors[bound],
                       label=f"{bound}-bound ({len(sel)})", alpha=0.8)
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, which="both", ls=":", lw=0.4)


_REGION = re.compile(r"^\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*$")


def placement_map(ax, kernels: list[Any], mesh: tuple[int, int] | None, routes: list[Any], title: str) -> None:
    """Regions of PEs coloured by stage, with the routes between them."""
    plt = _plt()
    rects = []
    for k in kernels:
        region = k.details.get("region") if isinstance(k.details, dict) else None
        if region is None and k.unit and _REGION.match(k.unit):
            region = [int(v) for v in _REGION.match(k.unit).groups()]
        if region is not None:
            rects.append((k.name, *[float(v) for v in region[:4]]))
    colors = _colors([r[0] for r in rects])
    for name, x, y, w, h in rects:
        ax.add_patch(plt.Rectangle((x, y), w, h, facecolor=colors[name], edgecolor="black", lw=0.3, alpha=0.85))
    for r in routes[:2000]:
        pts = [p for p in (r.get("src"), r.get("via"), r.get("dst")) if p is not None]
        if len(pts) >= 2:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color="black", lw=1.2, alpha=0.8)
            ax.plot(pts[-1][0], pts[-1][1], marker="o", ms=3, color="black")
    W = mesh[0] if mesh else max((x + w for _, x, _, w, _ in rects), default=1)
    H = mesh[1] if mesh else max((y + h for _, _, y, _, h in rects), default=1)
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_aspect("equal")
    ax.xaxis.set_major_locator(MaxNLocator(6, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(8, integer=True))
    ax.set_xlabel("PE column")
    ax.set_ylabel("PE row")
    ax.set_title(title)
    if len(rects) <= 24:
        handles = [plt.Rectangle((0, 0), 1, 1, color=colors[r[0]]) for r in rects]
        ax.legend(handles, [r[0] for r in rects], fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))


def _roof_key(report: Any, spec: Any) -> str | None:
    """The sheet key of the compute roof a GPU roofline draws: the highest peak among the precision's own
    format (native: the sheet's ``native_format``, TF32 tensor cores on a GPU) and the formats its kernels
    say they ran at (``details["format"]``). The precision alone does not say it: a float16 model runs its
    GEMMs on fp16 tensor cores at ``exact`` and ``native`` alike, and had been drawn under the fp32 or TF32
    roof with its prefill GEMMs above it (778 TFLOP/s under a 495 TFLOP/s roof, on an H100 sheet)."""
    own = {"exact": "fp32", "fp32": "fp32", "native": getattr(spec, "native_format", None) or "fp32"}.get(
        report.precision, report.precision)
    ran = {k.details.get("format") for k in report.kernels if k.flops > 0 and isinstance(k.details, dict)}
    keys = [key for key in dict.fromkeys(f"peak_flops_{f}" for f in (own, *sorted(f for f in ran if f)))
            if key in spec.hardware]
    if not keys:
        return "peak_flops_fp32" if "peak_flops_fp32" in spec.hardware else None
    return max(keys, key=spec.hw)


def profile_picture(kind: str, report: Any, events: list[dict[str, Any]], spec: Any, path: str | Path,
                    routes: list[Any] | None = None) -> Path:
    """The picture for a target kind: GPU timeline + roofline, LPU slice Gantt, wafer placement map."""
    plt = _plt()
    name = report.target
    if kind == "gpu":
        fig, (a, b) = plt.subplots(1, 2, figsize=(15, 5.5), gridspec_kw={"width_ratios": [3, 2]})
        gantt(a, events, f"{name}: kernel timeline ({report.kernel_count} kernels)", "stream")
        peak_key = _roof_key(report, spec)
        if peak_key and "hbm_bandwidth" in spec.hardware:
            roofline(b, report.kernels, spec.hw(peak_key), spec.hw("hbm_bandwidth"),
                     f"{name}: roofline ({peak_key.replace('peak_flops_', '')} peak, HBM)")
    elif kind == "wafer":
        fig, ax = plt.subplots(figsize=(9, 9))
        mesh = None
        if "fabric_width" in spec.hardware and "fabric_height" in spec.hardware:
            mesh = (int(spec.hw("fabric_width")), int(spec.hw("fabric_height")))
        used = report.details.get("mesh")
        if isinstance(used, str) and re.fullmatch(r"\d+x\d+", used):
            mesh = tuple(int(v) for v in used.split("x"))
        placement_map(ax, report.kernels, mesh, routes or [],
                      f"{name}: placement of {len(report.kernels)} stages on a {mesh[0]}×{mesh[1]} PE mesh"
                      if mesh else f"{name}: placement ({len(report.kernels)} stages)")
    else:
        fig, ax = plt.subplots(figsize=(14, 6))
        label = "functional slice" if kind == "lpu" else "unit"
        gantt(ax, events, f"{name}: schedule per {label}", label)
    return _save(fig, path)


def sweep_plot(xs: Sequence[float], series: dict[str, Sequence[float | None]], xlabel: str, ylabel: str,
               title: str, path: str | Path, devices: dict[str, Sequence[int | None]] | None = None) -> Path:
    """One line per target. ``devices`` (per target, per point) marks each point that took more than one
    device with their number: the fewest that fit grows along a sweep, and the figure is theirs together."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, ys in series.items():
        counts = list((devices or {}).get(name) or [None] * len(ys))
        pts = [(x, y, d) for x, y, d in zip(xs, ys, counts) if y is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
            for x, y, d in pts:
                if d is not None and d > 1:
                    ax.annotate(f"×{d}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, ls=":", lw=0.5)
    ax.legend()
    return _save(fig, path)
