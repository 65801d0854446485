"""The differential sweep's families (placeholder text, to be rewritten):
Elementwise arithmetic beyond the fused chains: unary math over awkward values (inf, NaN, -0, huge and
tiny magnitudes), binary ops across integer and float dtypes, casts."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.differential_draw import Case

FAMILIES: dict[str, Callable[[Case], list[str]]] = {}
