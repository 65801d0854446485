"""Size rules of the signal ops: DFT, STFT and the window and mel-matrix generators."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hal.op_sizes._read import first, optional_int


def _complex_item(x: Any) -> int:
    return 16 if getattr(x, "dtype", None) == np.float64 else 8


def _window(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int]:
    return [max(int(first(args[0])), 0)], 8


def _mel(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int]:
    bins, dft = int(first(args[0])), int(first(args[1]))
    return [max(dft // 2 + 1, 0), max(bins, 0)], 8


def _dft(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """DFT's complex transform: the signal with its transform axis ``dft_length`` long (an input's
    value), or twice the axis for an inverse one-sided one. The axis is an attribute (opset 17) or an
    input (20); without either, the larger of the two defaults (1 and -2) bounds it."""
    x = args[0]
    if x.ndim < 2:
        return None
    length = optional_int(args, 1)
    if "axis" in attrs:
        axes = [int(attrs["axis"])]
    else:
        given = optional_int(args, 2)
        axes = [given] if given is not None else [1, -2]
    dims = list(x.shape[:-1])
    best: list[int] = dims
    for a in axes:
        if not -x.ndim <= a < x.ndim - 1:
            continue
        a %= x.ndim
        shape = list(dims)
        shape[a] = max(length or 0, 2 * dims[a])
        best = max(best, shape, key=math.prod)
    return best, _complex_item(x)


def _stft(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """STFT's frames, (batch, frames, max(frame_length, window)) complex, or the all-ones window it
    makes when none is given (``frame_length`` floats): both sized by input values."""
    signal, step = args[0], int(first(args[1]))
    if signal.ndim != 3 or step < 1:
        return None
    window = args[2] if len(args) > 2 else None
    n_fft = optional_int(args, 3)
    span = window.shape[0] if window is not None and np.ndim(window) else (n_fft or signal.shape[1])
    n_fft = n_fft or span
    frames = (signal.shape[1] - span) // step + 1 if signal.shape[1] >= span else 0
    shapes = [([signal.shape[0], frames, max(n_fft, span)], _complex_item(signal)), ([span], 8)]
    return max(shapes, key=lambda t: math.prod(t[0]) * t[1])


RULES: dict[str, Callable[[Sequence[Any], dict[str, Any]], tuple[list[int], int] | None]] = {
    "HannWindow": _window, "HammingWindow": _window, "BlackmanWindow": _window, "MelWeightMatrix": _mel,
    "DFT": _dft, "STFT": _stft,
}
