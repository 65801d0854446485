"""Routing: every tensor edge between stages on a dimension-ordered (X, then Y) route over the mesh.

A route leaves the producer's rectangle at the point nearest the consumer, runs along its row to
the consumer's column, then along that column into the consumer. It uses as many parallel lanes
(adjacent rows / columns) as the two rectangles share along their facing sides, so neighbours in
the strip layout exchange a tensor across their whole common edge in one hop. An edge between
wafers runs to the producer wafer's east edge, over the system link, and in from the consumer
wafer's west edge. Per-link load (bytes per run) and the number of routes (colours) sharing each
link are summed over all routes; a link whose load takes longer than the slowest stage, or that
carries more routes than a router has colours, is over-subscribed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hal_wafer.cost import WaferParams
from hal_wafer.placement import Placement, Region


@dataclass(frozen=True)
class Route:
    """One tensor edge from a producer stage to a consumer stage."""

    tensor: str
    src: str                      # producer stage
    dst: str                      # consumer stage
    nbytes: int
    start: tuple[int, int, int]   # (wafer, x, y): where it leaves the producer's rectangle
    corner: tuple[int, int, int]  # (wafer, x, y): where it turns from X to Y (on the consumer's wafer)
    end: tuple[int, int, int]     # (wafer, x, y): where it enters the consumer's rectangle
    hops: int                     # mesh hops (both wafers)
    lanes: int
    cross_wafer: bool


@dataclass
class RouteStats:
    total_hops: int
    links_used: int
    max_link_bytes: float
    max_link_routes: int
    link_utilisation_max: float
    link_utilisation_mean: float
    oversubscribed: list[dict]    # the worst links, with their loads
    oversubscribed_count: int
    color_oversubscribed_count: int


def _facing(a0: int, a1: int, b0: int, b1: int) -> tuple[int, int, int]:
    """Coordinates along one axis where a route leaves [a0, a1) and enters [b0, b1), and their overlap."""
    lo, hi = max(a0, b0), min(a1, b1)
    if lo < hi:
        mid = (lo + hi - 1) // 2
        return mid, mid, hi - lo
    if b0 >= a1:
        return a1 - 1, b0, 0
    return a0, b1 - 1, 0


def route_edge(tensor: str, src: str, dst: str, nbytes: int, a: Region, b: Region, mesh: tuple[int, int]
               ) -> Route:
    """The dimension-ordered route of one edge from rectangle ``a`` to rectangle ``b``."""
    wavelets = max(1, math.ceil(nbytes / 4))
    if a.wafer == b.wafer:
        sx, dx, ox = _facing(a.x, a.x + a.w, b.x, b.x + b.w)
        sy, dy, oy = _facing(a.y, a.y + a.h, b.y, b.y + b.h)
        lanes = max(ox, oy) or min(a.w, a.h, b.w, b.h)
        hops = abs(dx - sx) + abs(dy - sy)
        return Route(tensor, src, dst, nbytes, (a.wafer, sx, sy), (a.wafer, dx, sy), (b.wafer, dx, dy),
                     hops, max(1, min(lanes, wavelets)), False)
    # across wafers: east edge of the producer's wafer, system link, west edge of the consumer's
    sy = a.y + a.h // 2
    dy = b.y + b.h // 2
    out_hops = mesh[0] - 1 - (a.x + a.w - 1)
    in_hops = b.x
    lanes = max(1, min(a.h, b.h, wavelets))
    return Route(tensor, src, dst, nbytes, (a.wafer, a.x + a.w - 1, sy), (b.wafer, 0, dy), (b.wafer, b.x, dy),
                 out_hops + in_hops, lanes, True)


class _LinkLoad:
    """Bytes and routes per directed link of one wafer (east/west along rows, south/north along columns)."""

    def __init__(self, w: int, h: int, multicast: bool = False):
        self.bytes = {d: np.zeros((h, w), np.float32) for d in "ewsn"}
        self.count = {d: np.zeros((h, w), np.int32) for d in "ewsn"}
        self.multicast = multicast
        self.touched: dict[str, list[int]] = {}  # direction -> [y0, y1, x0, x1] bounding what was written

    def row(self, y0: int, lanes: int, x0: int, x1: int, load: float) -> None:
        if x0 != x1:
            d, lo, hi = ("e", x0, x1) if x1 > x0 else ("w", x1, x0)
            self._put(d, (slice(y0, y0 + lanes), slice(lo, hi)), load)

    def col(self, x0: int, lanes: int, y0: int, y1: int, load: float) -> None:
        if y0 != y1:
            d, lo, hi = ("s", y0, y1) if y1 > y0 else ("n", y1, y0)
            self._put(d, (slice(lo, hi), slice(x0, x0 + lanes)), load)

    def _put(self, d: str, where: tuple[slice, slice], load: float) -> None:
        ys, xs = where
        box = self.touched.setdefault(d, [ys.start, ys.stop, xs.start, xs.stop])
        box[:] = [min(box[0], ys.start), max(box[1], ys.stop), min(box[2], xs.start), max(box[3], xs.stop)]
        if self.multicast:  # one tensor to several consumers: its tree carries it once per link
            b = self.bytes[d][where]
            np.maximum(b, load, out=b)
            self.count[d][where] = 1
        else:
            self.bytes[d][where] += load
            self.count[d][where] += 1

    def merge_into(self, total: _LinkLoad) -> None:
        """Add what was written here to ``total`` and clear it (a scratch tree is reused per tensor)."""
        for d, (y0, y1, x0, x1) in self.touched.items():
            box = (slice(y0, y1), slice(x0, x1))
            total.bytes[d][box] += self.bytes[d][box]
            total.count[d][box] += self.count[d][box]
            self.bytes[d][box] = 0
            self.count[d][box] = 0
        self.touched.clear()


def _lay(links: _LinkLoad, r: Route, wafer: int, mesh: tuple[int, int]) -> None:
    """Add the part of route ``r`` on ``wafer`` to ``links``: its bytes per lane on every link it crosses."""
    per_lane = r.nbytes / r.lanes
    if r.start[0] == wafer:
        _, sx, sy = r.start
        x1 = r.corner[1] if not r.cross_wafer else mesh[0] - 1
        y0 = min(max(sy - r.lanes // 2, 0), mesh[1] - r.lanes) if r.lanes <= mesh[1] else 0
        links.row(y0, min(r.lanes, mesh[1]), sx, x1, per_lane)
    if r.end[0] == wafer:
        _, cx, cy = r.corner
        _, ex, ey = r.end
        if r.cross_wafer:
            y0 = min(max(ey - r.lanes // 2, 0), mesh[1] - min(r.lanes, mesh[1]))
            links.row(y0, min(r.lanes, mesh[1]), 0, ex, per_lane)
        else:
            x0 = min(max(cx - r.lanes // 2, 0), mesh[0] - min(r.lanes, mesh[0]))
            links.col(x0, min(r.lanes, mesh[0]), cy, ey, per_lane)


def route_all(placement: Placement, edges: Sequence[tuple[str, str, str, int]], p: WaferParams,
              stage_interval_s: float) -> tuple[list[Route], RouteStats]:
    """Route every (tensor, producer stage, consumer stage, bytes) edge; sum link loads and colours.

    ``stage_interval_s`` is the slowest stage's time: a link whose bytes per run take longer than
    that is over-subscribed (it, not the stages, would set the pipeline's rate).
    """
    mesh = placement.mesh
    routes = [route_edge(t, s, d, n, placement.regions[s], placement.regions[d], mesh) for t, s, d, n in edges]
    worst: list[dict] = []
    used = over = over_colors = 0
    max_bytes, max_routes, util_sum = 0.0, 0, 0.0
    capacity = p.link_bw * stage_interval_s if stage_interval_s > 0 else math.inf
    for wafer in range(placement.wafers):
        mine = [r for r in routes if r.start[0] == wafer or r.end[0] == wafer]
        if not mine:
            continue
        links = _LinkLoad(*mesh)
        by_tensor: dict[str, list[Route]] = {}
        for r in mine:
            by_tensor.setdefault(r.tensor, []).append(r)
        tree = _LinkLoad(*mesh, multicast=True)
        for group in by_tensor.values():
            if len(group) == 1:
                _lay(links, group[0], wafer, mesh)
                continue
            for r in group:
                _lay(tree, r, wafer, mesh)
            tree.merge_into(links)
        for d in "ewsn":
            b = links.bytes[d]
            c = links.count[d]
            nz = b > 0
            n = int(nz.sum())
            if not n:
                continue
            used += n
            max_bytes = max(max_bytes, float(b.max()))
            max_routes = max(max_routes, int(c.max()))
            util_sum += float(b[nz].sum()) / capacity if capacity != math.inf else 0.0
            hot = b > capacity
            over += int(hot.sum())
            over_colors += int((c > p.colors).sum())
            if hot.any():
                ys, xs = np.nonzero(hot)
                top = np.argsort(-b[ys, xs])[:5]
                worst += [{"wafer": wafer, "x": int(xs[i]), "y": int(ys[i]), "direction": d,
                           "bytes": float(b[ys[i], xs[i]]), "routes": int(c[ys[i], xs[i]]),
                           "utilisation": float(b[ys[i], xs[i]]) / capacity} for i in top]
    worst.sort(key=lambda e: -e["bytes"])
    stats = RouteStats(
        total_hops=sum(r.hops for r in routes), links_used=used, max_link_bytes=max_bytes,
        max_link_routes=max_routes,
        link_utilisation_max=(max_bytes / capacity) if capacity not in (0, math.inf) else 0.0,
        link_utilisation_mean=(util_sum / used) if used else 0.0,
        oversubscribed=worst[:10], oversubscribed_count=over, color_oversubscribed_count=over_colors)
    return routes, stats


def connects(route: Route, a: Region, b: Region) -> bool:
    """Whether ``route`` starts in rectangle ``a`` and ends in rectangle ``b`` (the X-then-Y path
    between them is implied by its start, corner and end)."""
    sw, sx, sy = route.start
    ew, ex, ey = route.end
    ok_ends = sw == a.wafer and a.contains(sx, sy) and ew == b.wafer and b.contains(ex, ey)
    if route.cross_wafer:
        return ok_ends and route.corner[0] == b.wafer
    cw, cx, cy = route.corner
    dimension_ordered = cy == sy and cx == ex and cw == sw == ew
    return ok_ends and dimension_ordered and route.hops == abs(cx - sx) + abs(ey - cy)
