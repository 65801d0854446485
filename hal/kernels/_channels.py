"""A per-channel vector applied over (N, C, D1, ...) maps: a conv's bias, BatchNormalization's
scale and shift.

numpy's ufunc loop works through an 8192-element buffer. Where one operand holds one value along
each row (a (C, 1, 1) bias against a map's H*W floats) and the rows are shorter than that buffer,
numpy fills it across rows and copies the repeated operand out element by element: a (256, 3136)
float32 map plus a (256, 1) bias takes 135 us where a scalar add takes 46. With a buffer no longer
than a row, numpy needs no buffer at all, and each row is one inner loop against a scalar: 55 us
(784-float rows 2x faster, 3025-float rows 2.1x). Rows under 512 floats lose more to one call a row
than the copy costs (196-float rows 1.35x slower), and from 4096 on the default buffer holds at
most two rows, so both keep numpy's default; so do small maps, where setting the buffer size (about
1 us a call) costs more than it saves.
"""

from __future__ import annotations

import math

import numpy as np

Array = np.ndarray

#: a row's length, in elements, from which its channel's value is applied unbuffered
UNBUFFERED_ROW_FROM = 512
#: ... and up to which (numpy's default buffer then spans at least two rows)
UNBUFFERED_ROW_UPTO = 4096
#: maps smaller than this keep numpy's default: setting the buffer size costs more than it saves
UNBUFFERED_SIZE_FROM = 1 << 16
_SMALLEST_BUFFER = 16  # numpy's floor on np.setbufsize


def channel(v: Array, ndim: int) -> Array:
    """A per-channel vector shaped to broadcast against (N, C, D1, ...)."""
    return v.reshape((-1,) + (1,) * (ndim - 2))


def apply_per_channel(ufunc: np.ufunc, x: Array, v: Array, out: Array | None = None) -> Array:
    """``ufunc(x, v per channel)`` into ``out`` (a new array when None; ``x`` itself is fine).

    ``v`` is a (C,) vector (cast to ``x``'s dtype); the result is what numpy's broadcast gives, bit
    for bit: only the buffer numpy iterates with changes.
    """
    operand = channel(v.astype(x.dtype, copy=False), x.ndim)
    row = math.prod(x.shape[2:])
    if not (UNBUFFERED_ROW_FROM <= row <= UNBUFFERED_ROW_UPTO and x.size >= UNBUFFERED_SIZE_FROM):
        return ufunc(x, operand, out=out)
    default = np.setbufsize(_SMALLEST_BUFFER)
    try:
        return ufunc(x, operand, out=out)
    finally:
        np.setbufsize(default)
