"""Broadcasting binary ufuncs at full speed: a conv's per-channel bias, BatchNormalization's scale
and shift.

numpy's ufunc loop works through an 8192-element buffer. Where one operand repeats along the rows
of the other (a (C, 1, 1) bias against a map's H*W floats, or a (N,) bias row against (M, N)) and the
rows are shorter than that buffer, numpy fills the buffer across rows, copying the repeated operand
out element by element: a (256, 3136) float32 map plus a (256, 1) bias takes 135 us where a scalar
add takes 46, and (682, 1536) plus a 1536-float row 162 us where a same-shape add takes 83. With a
buffer no longer than a row numpy needs no buffer at all, and each row is one inner loop: 55 and
106 us (rows of 512-4096 floats: 1.3-2.8x faster). Rows under 512 floats lose more to one inner
loop a row than the copy costs (196-float rows 1.35x slower, 128-float rows 1.8x), and from 4096
on the default buffer holds at most two rows, so both keep numpy's default; so do small arrays,
where setting the buffer size (about 1 us a call) costs more than it saves. (A MatMul's bias row
gains too in isolation, 120 -> 79 us on BERT-bench's (512, 1536), but not run against run: the
product is still in cache when its bias is added, and BERT and gpt-bench read 0.997-0.998x.)
"""

from __future__ import annotations

import numpy as np

Array = np.ndarray

#: a row's length, in elements, from which the repeated operand is applied unbuffered
UNBUFFERED_ROW_FROM = 512
#: ... and up to which (numpy's default buffer then spans at least two rows)
UNBUFFERED_ROW_UPTO = 4096
#: results smaller than this keep numpy's default: setting the buffer size costs more than it saves
UNBUFFERED_SIZE_FROM = 1 << 16
_SMALLEST_BUFFER = 16  # numpy's floor on np.setbufsize


def row_length(shape: tuple[int, ...], operand: tuple[int, ...]) -> int:
    """The innermost run of ``shape``'s axes along which ``operand`` (broadcast against it) either
    varies on every axis or repeats on every axis, in elements; 0 where it never changes between
    the two (an operand of the full shape, or one value for all)."""
    padded = (1,) * (len(shape) - len(operand)) + tuple(operand)
    run, varies = 1, None
    for n, m in zip(reversed(shape), reversed(padded)):
        if n == 1:
            continue
        if varies is None:
            varies = m == n
        elif varies != (m == n):
            return run
        run *= n
    return 0


def broadcast(ufunc: np.ufunc, a: Array, b: Array, out: Array | None = None) -> Array:
    """``ufunc(a, b, out=out)``, bit for bit, with numpy's buffer shortened to a row where one
    operand repeats along rows of UNBUFFERED_ROW_FROM to UNBUFFERED_ROW_UPTO elements of a
    contiguous other operand and output. (A strided one, such as a crop of a wider grid, is 2-3x
    slower with the short buffer: (32, 56, 56) of a 58-wide grid plus a bias, 38 -> 80 us.)"""
    if max(a.size, b.size) < UNBUFFERED_SIZE_FROM:
        return ufunc(a, b, out=out)
    shape = np.broadcast_shapes(a.shape, b.shape)
    full, small = (a, b) if a.shape == shape else (b, a)
    if (not full.flags.c_contiguous or (out is not None and not out.flags.c_contiguous)
            or not UNBUFFERED_ROW_FROM <= row_length(shape, small.shape) <= UNBUFFERED_ROW_UPTO):
        return ufunc(a, b, out=out)  # a strided operand's rows are separate loops either way
    default = np.setbufsize(_SMALLEST_BUFFER)
    try:
        return ufunc(a, b, out=out)
    finally:
        np.setbufsize(default)


def channel(v: Array, ndim: int) -> Array:
    """A per-channel vector shaped to broadcast against (N, C, D1, ...)."""
    return v.reshape((-1,) + (1,) * (ndim - 2))


def apply_per_channel(ufunc: np.ufunc, x: Array, v: Array, out: Array | None = None) -> Array:
    """``ufunc(x, v per channel)`` into ``out`` (a new array when None; ``x`` itself is fine), ``v`` a
    (C,) vector cast to ``x``'s dtype first."""
    return broadcast(ufunc, x, channel(v.astype(x.dtype, copy=False), x.ndim), out=out)
