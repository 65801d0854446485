"""The differential sweep's families (placeholder text, to be rewritten):
onnxruntime's com.microsoft operators that hal implements (fused attention, normalisations, GELUs,
quantised products, rotary embeddings): onnxruntime is their only peer, onnx's reference has none."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.differential_draw import Case

FAMILIES: dict[str, Callable[[Case], list[str]]] = {}
