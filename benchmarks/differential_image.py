"""The differential sweep's families (placeholder text, to be rewritten):
Image and detection ops: ConvTranspose, GridSample, AffineGrid, RoiAlign, MaxRoiPool, LRN,
MaxUnpool, Col2Im, NonMaxSuppression."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.differential_draw import Case

FAMILIES: dict[str, Callable[[Case], list[str]]] = {}
