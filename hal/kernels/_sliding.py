"""Sliding-window geometry shared by the conv and pooling kernels: pads (explicit, SAME, VALID,
ceil mode), output sizes, padded copies, strided window views and the flattened padded image."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import NamedTuple

import ml_dtypes
import numpy as np
from numpy.lib.stride_tricks import as_strided


def _defaults(nd: int, strides, dilations, pads) -> tuple[list[int], list[int], list[int]]:
    s = list(strides) if strides else [1] * nd
    d = list(dilations) if dilations else [1] * nd
    p = list(pads) if pads else [0] * (2 * nd)
    return s, d, p


def _same_pads(total: int, auto_pad: str) -> tuple[int, int]:
    """Split a total padding between begin and end the way SAME_UPPER / SAME_LOWER ask."""
    small = total // 2
    return (small, total - small) if auto_pad == "SAME_UPPER" else (total - small, small)


def _geometry(in_sp: Sequence[int], k: Sequence[int], s: Sequence[int], d: Sequence[int],
              pads: Sequence[int], auto_pad: str, ceil_mode: int = 0
              ) -> tuple[list[int], list[int], list[int]]:
    """(pads_begin, pads_end, output spatial shape) of a sliding-window op."""
    nd = len(in_sp)
    begin, end, out = [], [], []
    for i in range(nd):
        dk = (k[i] - 1) * d[i] + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-in_sp[i] // s[i])
            b, e = _same_pads(max((o - 1) * s[i] + dk - in_sp[i], 0), auto_pad)
        else:  # explicit pads, or VALID's none: ceil_mode counts a last window that starts inside the input
            # there too, as onnx's shape inference and onnxruntime do (the spec's VALID formula reads ceil
            # (in - k + 1) / s, which is never more than floor: 7 by 2 at stride 2 is 4 windows, not 3)
            b, e = (0, 0) if auto_pad == "VALID" else (pads[i], pads[i + nd])
            span = in_sp[i] + b + e - dk
            if ceil_mode:
                o = -(-span // s[i]) + 1
                if (o - 1) * s[i] >= in_sp[i] + b:  # the last window must start inside input or left pad
                    o -= 1
            else:
                o = span // s[i] + 1
        begin.append(b)
        end.append(e)
        out.append(max(o, 0))
    return begin, end, out


class Window(NamedTuple):
    """A sliding-window op's geometry, per spatial axis: kernel, strides, dilations, begin and end
    pads, output size."""

    k: tuple[int, ...]
    s: tuple[int, ...]
    d: tuple[int, ...]
    begin: tuple[int, ...]
    end: tuple[int, ...]
    out: tuple[int, ...]


def _key(v) -> tuple[int, ...] | None:
    return tuple(v) if v is not None and len(v) else None


def window(in_sp: tuple[int, ...], k: Sequence[int], strides, dilations, pads, auto_pad: str,
           ceil_mode: int = 0) -> Window:
    """``_defaults`` and ``_geometry`` of a call, computed once per input shape and attributes: a
    model runs the same few geometries every time, so a run does no per-call window arithmetic."""
    return _window(tuple(in_sp), tuple(k), _key(strides), _key(dilations), _key(pads), auto_pad, int(ceil_mode))


@lru_cache(maxsize=4096)
def _window(in_sp, k, strides, dilations, pads, auto_pad, ceil_mode) -> Window:
    if not in_sp or len(k) != len(in_sp):  # numpy would slide a window of another rank, or none at all
        raise ValueError(f"a {len(k)}-d window over an input with {len(in_sp)} spatial axes: the input must be "
                         f"N x C x D1 x ... (rank >= 3) and kernel_shape name one size per spatial axis")
    s, d, p = _defaults(len(k), strides, dilations, pads)
    begin, end, out = _geometry(in_sp, k, s, d, p, auto_pad, ceil_mode)
    return Window(k, tuple(s), tuple(d), tuple(begin), tuple(end), tuple(out))


def _padded(x: np.ndarray, begin: Sequence[int], end: Sequence[int], fill, out: np.ndarray | None = None
            ) -> np.ndarray:
    """``x`` with its spatial axes padded by ``fill`` (a negative pad crops that side), written into
    ``out`` when given (a buffer of the padded shape, reused across calls)."""
    if not any(begin) and not any(end):
        return x
    nd = x.ndim - 2
    if out is None:
        out = np.empty(_padded_shape(x.shape, begin, end), dtype=x.dtype)
    src = x[(..., *(slice(max(-begin[i], 0), x.shape[2 + i] + min(end[i], 0)) for i in range(nd)))]
    lead = (slice(None),) * 2
    for i in range(nd):  # only the border is filled: the interior is written once, by the copy
        lo, hi = max(begin[i], 0), max(begin[i], 0) + src.shape[2 + i]
        if lo:
            out[(*lead, *(slice(None),) * i, slice(0, lo))] = fill
        if hi < out.shape[2 + i]:
            out[(*lead, *(slice(None),) * i, slice(hi, None))] = fill
    out[(..., *(slice(max(begin[i], 0), max(begin[i], 0) + src.shape[2 + i]) for i in range(nd)))] = src
    return out


def _padded_shape(shape: Sequence[int], begin: Sequence[int], end: Sequence[int]) -> tuple[int, ...]:
    nd = len(shape) - 2
    return (shape[0], shape[1], *(max(shape[2 + i] + begin[i] + max(end[i], 0), 0) for i in range(nd)))


def _windows(xp: np.ndarray, out: Sequence[int], k: Sequence[int], s: Sequence[int], d: Sequence[int]
             ) -> np.ndarray:
    """Read-only view (N, C, *out, *k) of every window of the padded input ``xp``."""
    st = xp.strides
    nd = len(k)
    return as_strided(xp, shape=(*xp.shape[:2], *out, *k),
                      strides=(st[0], st[1], *(st[2 + i] * s[i] for i in range(nd)),
                               *(st[2 + i] * d[i] for i in range(nd))),
                      writeable=False)


def _taps(xp: np.ndarray, out: Sequence[int], k: Sequence[int], s: Sequence[int], d: Sequence[int]
          ) -> Iterator[tuple[int, np.ndarray]]:
    """(flat tap index, strided view (N, C, *out)) for each kernel tap in row-major order."""
    for flat, kk in enumerate(np.ndindex(*k)):
        yield flat, xp[(slice(None), slice(None),
                        *(slice(kk[i] * d[i], kk[i] * d[i] + max((out[i] - 1) * s[i] + 1, 0), s[i])
                          for i in range(len(k))))]


_WIDENED = {np.dtype(np.float16): np.dtype(np.float32), np.dtype(ml_dtypes.bfloat16): np.dtype(np.float32)}


def _work_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype sums run in: float32 for 16-bit floats (as hardware accumulates), else the input's."""
    return _WIDENED.get(dtype, dtype)


def _flat_padded(x: np.ndarray, begin: Sequence[int], end: Sequence[int], width: int, reach: int) -> np.ndarray:
    """``x`` padded to ``width`` columns and enough rows that ``reach`` flat elements of each
    channel's image exist, as a contiguous (N, C, rows * width) array."""
    h, wd = x.shape[2:]
    height = max(h + begin[0] + max(end[0], 0), -(-reach // width))
    xp = np.ascontiguousarray(_padded(x, begin, [height - h - begin[0], width - wd - begin[1]], 0))
    return xp.reshape(*x.shape[:2], height * width)


# -- im2col columns as contiguous runs ---------------------------------------------------------------
#
# A stride-1 2-D conv whose output is as wide as its input (its column pads make up the kernel's
# reach: "same" width) reads, for tap (i, j), input row r + i*dh and column q + j*dw - pad_left at
# output pixel (r, q). Over the image flattened at its own width, that is one contiguous run of
# out_rows * width elements starting at i*dh*width + j*dw - pad_left: im2col copies one run per
# channel and tap where the window view copies one short run per channel, tap and output row (14
# floats on a 14x14 image, each a separate inner loop of numpy's copy). The runs wrap at the row
# ends: the few columns whose tap falls in the pad read the neighbouring row's first or last elements
# and are zeroed after the copy, so the columns are the window view's, element for element.


def flat_columns_apply(shape: Sequence[int], k: Sequence[int], s: Sequence[int], begin: Sequence[int],
                       end: Sequence[int], out: Sequence[int]) -> bool:
    """Whether ``flat_rows`` and ``flat_columns`` build this conv's columns: 2-D, stride 1, no pad that
    crops, and an output as wide as the (N, C, H, W) input ``shape``."""
    return (len(k) == 2 and tuple(s) == (1, 1) and min(begin) >= 0 and min(end) >= 0 and 0 not in out
            and 0 not in shape and out[1] == shape[3])


def flat_rows(x: np.ndarray, begin: Sequence[int], end: Sequence[int], buf: np.ndarray | None = None) -> np.ndarray:
    """``x`` (N, C, H, W) with ``begin[0]`` zero rows above and ``end[0]`` below each image, flattened,
    between ``begin[1]`` zeros before and ``end[1]`` after (the reach of the first and last runs), in
    ``buf`` (a reused flat buffer at least that long) when given."""
    n, c, h, w = x.shape
    top, left = begin
    rows = top + h + end[0]
    body = n * c * rows * w
    total = left + body + end[1]
    flat = np.empty(total, dtype=x.dtype) if buf is None else buf[:total]
    flat[:left] = 0
    flat[left + body:] = 0
    image = flat[left:left + body].reshape(n, c, rows, w)
    if top:
        image[:, :, :top] = 0
    if end[0]:
        image[:, :, top + h:] = 0
    image[:, :, top:top + h] = x
    return flat


def flat_columns(flat: np.ndarray, first: int, channels: int, rows: int, width: int, k: Sequence[int],
                 d: Sequence[int], left: int, out_rows: tuple[int, int], cols: np.ndarray) -> np.ndarray:
    """The im2col columns (channels, kh, kw, pixels) of output rows ``out_rows`` = [r0, r1), copied into
    ``cols`` (that shape, contiguous) from ``flat_rows``'s array: ``first`` is the index of the first
    channel's image in the flattened images, each ``rows`` x ``width`` after padding; ``left`` the
    left pad. Returns ``cols``."""
    r0, r1 = out_rows
    kh, kw = k
    it = flat.itemsize
    start = (first * rows + r0) * width  # tap (0, 0) of output row r0: its image's start, less the left pad
    view = as_strided(flat[start:], shape=(channels, kh, kw, (r1 - r0) * width),
                      strides=(rows * width * it, d[0] * width * it, d[1] * it, it), writeable=False)
    cols[...] = view
    grid = cols.reshape(channels, kh, kw, r1 - r0, width)
    for j in range(kw):
        shift = j * d[1] - left  # output column q reads input column q + shift
        if shift < 0:
            grid[:, :, j, :, :min(-shift, width)] = 0
        elif shift > 0:
            grid[:, :, j, :, max(width - shift, 0):] = 0
    return cols
