"""The differential sweep's families (placeholder text, to be rewritten):
The ai.onnx.ml domain: tree ensembles, linear models, SVMs, scalers, encoders, imputers, as
converters (skl2onnx) write them."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.differential_draw import Case

FAMILIES: dict[str, Callable[[Case], list[str]]] = {}
