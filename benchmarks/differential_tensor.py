"""The differential sweep's families (placeholder text, to be rewritten):
Shape and data-movement ops (reshapes, transposes, expands, tiles, splits, concats, space/depth,
Trilu, OneHot, Range), selections such as NonZero and Unique, and the normalisations and losses
not drawn by ``differential_cases``."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.differential_draw import Case

FAMILIES: dict[str, Callable[[Case], list[str]]] = {}
