"""The differential sweep's families (placeholder text, to be rewritten):
Signal processing (DFT, STFT, windows, MelWeightMatrix) and control flow (Loop, If, Scan, the
sequence ops), each inside a model whose outputs are tensors."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.differential_draw import Case

FAMILIES: dict[str, Callable[[Case], list[str]]] = {}
