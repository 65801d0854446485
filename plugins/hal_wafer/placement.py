"""Placement: each stage on a rectangle of PEs, laid out so that producers sit next to consumers.

A wafer is cut into vertical bands; stages fill the bands in pipeline order, top to bottom in one
band and bottom to top in the next (a boustrophedon strip), so stage *i* and stage *i + 1* always
share an edge. A stage's rectangle is as wide as its band and as tall as its share needs: its
share of the wafer's PEs follows its share of the work, never below the PEs its weights and
resident state need (its bytes must fit the rectangle's SRAM). The band count is chosen to keep
rectangles near square (short wavefronts) by the cost model's own estimate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from hal_wafer.cost import WaferParams, stage_cost_proxy


@dataclass(frozen=True)
class Region:
    """A rectangle of PEs on one wafer: columns x..x+w-1, rows y..y+h-1."""

    wafer: int
    x: int
    y: int
    w: int
    h: int

    @property
    def pes(self) -> int:
        return self.w * self.h

    @property
    def unit(self) -> str:
        return f"{self.x},{self.y},{self.w},{self.h}"

    def overlaps(self, other: Region) -> bool:
        return (self.wafer == other.wafer and self.x < other.x + other.w and other.x < self.x + self.w
                and self.y < other.y + other.h and other.y < self.y + self.h)

    def contains(self, x: int, y: int) -> bool:
        return self.x <= x < self.x + self.w and self.y <= y < self.y + self.h


@dataclass(frozen=True)
class StageNeed:
    """What the placer knows of a stage: the PEs its bytes need, its work and its wavefronts."""

    name: str
    min_pes: int
    work_pe_s: float   # seconds of work if it ran on one PE
    waves: int


@dataclass
class Placement:
    """The spatial program: where each stage runs, how tensors travel, in which mode."""

    mode: str                       # "pipelined" | "weight_streaming"
    wafers: int
    mesh: tuple[int, int]           # (columns, rows) of one wafer
    regions: dict[str, Region]      # stage name -> its rectangle
    order: list[str]                # stages in pipeline order
    routes: list = field(default_factory=list)   # hal_wafer.routing.Route

    def region(self, stage: str) -> Region:
        return self.regions[stage]

    @property
    def pes_used(self) -> int:
        if self.mode == "weight_streaming":
            return self.mesh[0] * self.mesh[1]
        return sum(r.pes for r in self.regions.values())


def _band_widths(mesh_w: int, bands: int) -> list[int]:
    base, extra = divmod(mesh_w, bands)
    return [base + (1 if b < extra else 0) for b in range(bands)]


def _layout(needs: Sequence[StageNeed], shares: Sequence[float], widths: list[int], mesh_h: int,
            scale: float) -> list[tuple[int, int]] | None:
    """(band, rows) per stage filling bands in order, or None when they do not fit."""
    out = []
    band, used = 0, 0
    for need, share in zip(needs, shares):
        while True:
            if band >= len(widths):
                return None
            bw = widths[band]
            rows = max(math.ceil(need.min_pes / bw), math.ceil(share * scale / bw), 1)
            if rows > mesh_h:
                return None
            if used + rows <= mesh_h:
                out.append((band, rows))
                used += rows
                break
            band, used = band + 1, 0
    return out


def _shares(needs: Sequence[StageNeed], total: int) -> list[float]:
    """PEs per stage by share of work, with memory floors (water-filling over the rest)."""
    fixed: dict[int, float] = {}
    while True:
        free = total - sum(fixed.values())
        work = sum(n.work_pe_s for i, n in enumerate(needs) if i not in fixed)
        changed = False
        for i, n in enumerate(needs):
            if i in fixed:
                continue
            share = free * (n.work_pe_s / work) if work > 0 else free / max(1, len(needs) - len(fixed))
            if share < n.min_pes:
                fixed[i] = float(n.min_pes)
                changed = True
        if not changed:
            break
    free = total - sum(fixed.values())
    work = sum(n.work_pe_s for i, n in enumerate(needs) if i not in fixed)
    rest = len(needs) - len(fixed)
    return [fixed[i] if i in fixed else (free * n.work_pe_s / work if work > 0 else free / max(1, rest))
            for i, n in enumerate(needs)]


def place_wafer(needs: Sequence[StageNeed], wafer: int, p: WaferParams) -> dict[str, Region] | None:
    """Rectangles for ``needs`` (in pipeline order) on one wafer, or None when they do not fit."""
    if not needs:
        return {}
    total = p.wafer_pes
    if sum(n.min_pes for n in needs) > total:
        return None
    shares = _shares(needs, total)
    k = len(needs)
    ideal = math.sqrt(k * p.mesh_w / p.mesh_h)
    best: tuple[float, list[tuple[int, int]], list[int]] | None = None
    for bands in range(1, min(k, p.mesh_w, max(2, int(2 * ideal) + 2)) + 1):
        widths = _band_widths(p.mesh_w, bands)
        if _layout(needs, shares, widths, p.mesh_h, 0.0) is None:
            continue
        lo, hi = 0.0, 1.0
        if _layout(needs, shares, widths, p.mesh_h, 1.0) is not None:
            lo = 1.0
        else:
            for _ in range(24):  # the largest scale of the work shares that still packs
                mid = (lo + hi) / 2
                if _layout(needs, shares, widths, p.mesh_h, mid) is not None:
                    lo = mid
                else:
                    hi = mid
        lay = _layout(needs, shares, widths, p.mesh_h, lo)
        assert lay is not None
        score = sum(stage_cost_proxy(n.work_pe_s, n.waves, widths[b], rows, p) for n, (b, rows) in zip(needs, lay))
        if best is None or score < best[0]:
            best = (score, lay, widths)
    if best is None:
        return None
    _, lay, widths = best
    xs = [sum(widths[:b]) for b in range(len(widths))]
    regions: dict[str, Region] = {}
    used = [0] * len(widths)
    for n, (b, rows) in zip(needs, lay):
        y = used[b] if b % 2 == 0 else p.mesh_h - used[b] - rows  # serpentine: odd bands fill upwards
        regions[n.name] = Region(wafer, xs[b], y, widths[b], rows)
        used[b] += rows
    return regions


def split_over_wafers(needs: Sequence[StageNeed], wafers: int, p: WaferParams) -> list[list[StageNeed]] | None:
    """Contiguous groups of stages, one per wafer, balanced by work within each wafer's SRAM."""
    cap = p.wafer_pes
    if any(n.min_pes > cap for n in needs):
        return None
    total = sum(n.work_pe_s for n in needs) or 1.0
    for fill in (1.0, 0.9, 0.8, 0.7):
        groups: list[list[StageNeed]] = [[]]
        acc_mem, acc_work = 0, 0.0
        for i, n in enumerate(needs):
            target = total * len(groups) / wafers
            left = len(needs) - i
            over_mem = acc_mem + n.min_pes > cap * fill
            over_work = groups[-1] and acc_work + n.work_pe_s / 2 > target and len(groups) < wafers
            if groups[-1] and (over_mem or (over_work and left >= wafers - len(groups))):
                groups.append([])
                acc_mem = 0
            groups[-1].append(n)
            acc_mem += n.min_pes
            acc_work += n.work_pe_s
        if len(groups) <= wafers:
            return groups
    return None


def min_wafers(needs: Sequence[StageNeed], p: WaferParams) -> int:
    """A lower bound on the wafers a pipelined placement needs (by PEs)."""
    return max(1, math.ceil(sum(n.min_pes for n in needs) / p.wafer_pes))
