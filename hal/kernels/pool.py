"""Pooling kernels, N-d, NCHW layout: Max/Average/Lp pooling, their global forms, MaxUnpool and
MaxRoiPool. A box window is separable, so pooling reduces one spatial axis at a time: each tap of
each axis is one strided, vectorised op (at stride 1, and on a strided last axis, one contiguous op
over the flattened array); a 2-D max or average pool with 8 or more output columns is one compiled
loop instead (``hal.kernels.jit``). MaxPool with Indices loops over the full taps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from hal.kernels import jit
from hal.kernels._sliding import _defaults, _padded, _padded_shape, _taps, _work_dtype, window
from hal.kernels.elementwise import quiet_mean, row_means
from hal.kernels.registry import kernel


def _pool_setup(x: np.ndarray, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode):
    """Kernel, strides, dilations, begin pads, end pads (with ceil-mode extension) and output shape."""
    in_sp = x.shape[2:]
    # without kernel_shape (which the spec requires) the window is the whole image; an empty one given
    # names no size for any spatial axis, which ``window`` refuses
    k, s, d, begin, end, out = window(in_sp, kernel_shape if kernel_shape is not None else in_sp, strides,
                                      dilations, pads, auto_pad, ceil_mode)
    return k, s, d, begin, end, _extended(in_sp, k, s, d, begin, end, out), out


@lru_cache(maxsize=1024)
def _extended(in_sp, k, s, d, begin, end, out) -> tuple[int, ...]:
    """The end pads extended so the last (ceil-mode) window is fully addressable."""
    reach = [begin[i] + in_sp[i] + end[i] for i in range(len(k))]
    need = [(out[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 for i in range(len(k))]
    return tuple(end[i] + max(need[i] - reach[i], 0) for i in range(len(k)))


#: an axis is reduced over the flattened array, s times the windows it keeps, up to this stride
FLAT_MAX_STRIDE = 3


def _reduce_windows(xp: np.ndarray, out: Sequence[int], k: Sequence[int], s: Sequence[int],
                    d: Sequence[int], op: np.ufunc, into: np.ndarray | None = None) -> np.ndarray:
    """Reduce every window of the padded input with ``op`` (np.maximum, np.add), one spatial axis at a
    time: a box window is separable, so this makes sum(k) - nd passes rather than prod(k) - 1.

    An axis of a contiguous array at stride up to FLAT_MAX_STRIDE is reduced over the flattened array:
    tap ``t`` of every window is the element ``t * dilation * (size of one step along the axis)``
    further on, so each tap is one long contiguous run rather than one short strided run per row;
    every position is computed and every s-th kept (Inception's 3x3 stride-1 pools: 25-48% faster;
    at stride 2, twice the work in long runs beats short runs: VGG's 2x2 pool at 224x224 1.40x, 3x3
    pools on 14x14-27x27 images 1.07-1.23x, ResNet's and SqueezeNet's larger ones 0.95-1.0x). Such a
    pass leaves the whole padded extent of its axis in place and the cut to the end, so the next axis
    can take the flattened path too. Windows that would run past the end of their row, image or
    channel are computed too and dropped at the end; the elements kept see the same operations in
    the same order. A larger stride reduces one strided run per kept position instead. The result
    is written into ``into`` when given (a block of the caller's output), else a new array."""
    y, ours = xp, False  # ours: y is (a view of) a buffer made here, not of the input
    nd = len(k)
    whole = (slice(None),) * nd
    keep = list(whole)  # what a flattened pass left of each axis for the end to cut: y stays contiguous
    for i in range(nd):
        lead = (slice(None),) * (2 + i)
        span = (out[i] - 1) * s[i] + 1 if out[i] > 0 else 0
        if k[i] > 1 and out[i] > 0 and y.flags.c_contiguous and y.size and s[i] <= FLAT_MAX_STRIDE:
            y, ours = _reduce_flat(y, i, k[i], d[i], op), True
            keep[i] = slice(0, span, s[i])
            continue
        if tuple(keep) != whole:
            y, keep = y[(slice(None), slice(None), *keep)], list(whole)
        if k[i] == 1:
            y = y[(*lead, slice(0, span, s[i]))]
        else:
            taps = [y[(*lead, slice(t * d[i], t * d[i] + span, s[i]))] for t in range(k[i])]
            acc = op(taps[0], taps[1])
            for v in taps[2:]:
                op(acc, v, out=acc)
            y, ours = acc, True
    y = y[(slice(None), slice(None), *keep)]
    if into is not None:
        np.copyto(into, y)
        return into
    return np.ascontiguousarray(y) if ours else y.copy()


#: pooling pads and reduces this many bytes of (padded) channels at a time, into one reused buffer:
#: no padded copy of the whole input is held, and each block's passes stay in L2
POOL_BLOCK = 512 << 10
POOL_BLOCK_FROM = 1 << 20


def _pool_windows(x: np.ndarray, begin: Sequence[int], end: Sequence[int], fill, out: Sequence[int],
                  k: Sequence[int], s: Sequence[int], d: Sequence[int], op: np.ufunc) -> np.ndarray:
    """``_reduce_windows`` of ``x`` padded by ``fill``, a block of channels (POOL_BLOCK bytes) at a time;
    2-D pools whose column borders allow it pad only the rows (``_rows_padded``)."""
    n, c = x.shape[:2]
    columns = _border_columns(x.shape, begin, end, out, k, s, d)
    rows_only = columns is not None
    pshape = (*_padded_shape(x.shape[:3], begin[:1], end[:1]), x.shape[3]) if rows_only else \
        _padded_shape(x.shape, begin, end)
    per = max(1, POOL_BLOCK // max(math.prod(pshape[2:]) * x.itemsize, 1))
    if per >= c or 0 in out or math.prod(pshape) * x.itemsize <= POOL_BLOCK_FROM:
        if rows_only:
            return _rows_padded(x, begin, end, fill, out, k, s, d, op, columns)
        return _reduce_windows(_padded(x, begin, end, fill), out, k, s, d, op)
    y = np.empty((n, c, *out), dtype=x.dtype)
    buf = np.empty((1, per, *pshape[2:]), dtype=x.dtype)
    for i in range(n):
        for c0 in range(0, c, per):
            c1 = min(c0 + per, c)
            if rows_only:
                _rows_padded(x[i:i + 1, c0:c1], begin, end, fill, out, k, s, d, op, columns, buf[:, :c1 - c0],
                             y[i:i + 1, c0:c1])
                continue
            xp = _padded(x[i:i + 1, c0:c1], begin, end, fill, out=buf[:, :c1 - c0])
            _reduce_windows(xp, out, k, s, d, op, y[i:i + 1, c0:c1])
    return y


#: at most this many output columns a 2-D pool computes apart, from their in-range taps (``_rows_padded``)
MAX_BORDER_COLUMNS = 8


@lru_cache(maxsize=1024)
def _border_columns_cached(w: int, begin: int, end: int, out: int, k: int, s: int, d: int
                           ) -> tuple[tuple[int, int], tuple[int, ...]] | None:
    lo = -(-begin // s)  # the first output column whose window starts in range
    hi = max(lo, min(out, (w - (k - 1) * d + begin - 1) // s + 1))  # past the last that also ends in range
    border = tuple(j for j in range(out) if not lo <= j < hi)
    return ((lo, hi), border) if len(border) <= MAX_BORDER_COLUMNS else None


def _border_columns(shape: Sequence[int], begin: Sequence[int], end: Sequence[int], out: Sequence[int],
                    k: Sequence[int], s: Sequence[int], d: Sequence[int]
                    ) -> tuple[tuple[int, int], tuple[int, ...]] | None:
    """For a 2-D pool that ``_rows_padded`` runs (padded columns, no cropping pads, a strided last axis
    and both strides up to FLAT_MAX_STRIDE, at most MAX_BORDER_COLUMNS output columns whose window
    reaches a padded column): the range of the other output columns and the border ones; else None.
    At stride 1, gathering the kept columns costs what the column-padded copy did."""
    if (len(shape) != 4 or 0 in shape or 0 in out or min(begin) < 0 or min(end) < 0 or not (begin[1] or end[1])
            or s[1] < 2 or max(s) > FLAT_MAX_STRIDE):
        return None
    return _border_columns_cached(shape[3], begin[1], end[1], out[1], k[1], s[1], d[1])


def _rows_padded(x: np.ndarray, begin: Sequence[int], end: Sequence[int], fill, out: Sequence[int],
                 k: Sequence[int], s: Sequence[int], d: Sequence[int], op: np.ufunc,
                 columns: tuple[tuple[int, int], tuple[int, ...]], buf: np.ndarray | None = None,
                 into: np.ndarray | None = None) -> np.ndarray:
    """A 2-D pool with only the rows padded: copying each channel's image into a row-padded buffer is
    one contiguous run, where a column-padded copy is one short run per row (a third of a 3x3
    stride-2 pool's time). Both axes are reduced over the flattened array as ``_reduce_windows``
    does; a window that would reach a padded column wraps into the neighbouring row there, so the
    few output columns whose windows do (``_border_columns``) are computed apart, from their
    in-range taps and ``fill`` in the same order: every result has the bits of the padded pass.
    Padded 3x3 stride-2 pools, interleaved with the padded pass: 1.02-1.07x at 56-112 px, 1.17-1.32x
    at 14-28 px (ShuffleNet's). ``columns``: what ``_border_columns`` gave for this pool (the caller
    asked it whether the pool runs here); ``buf``: a reused row-padded buffer; ``into``: where the
    result goes (a block of the caller's output), else a new array."""
    (lo, hi), border = columns
    n, c, h, w = x.shape
    top, bottom = begin[0], end[0]
    q = np.empty((n, c, top + h + bottom, w), dtype=x.dtype) if buf is None else buf
    if top:
        q[:, :, :top] = fill
    q[:, :, top:top + h] = x
    if bottom:
        q[:, :, top + h:] = fill
    a = _reduce_flat(q, 0, k[0], d[0], op) if k[0] > 1 else q
    b = _reduce_flat(a, 1, k[1], d[1], op) if k[1] > 1 else a
    rows = slice(0, (out[0] - 1) * s[0] + 1, s[0])
    y = np.empty((n, c, *out), dtype=x.dtype) if into is None else into
    if hi > lo:  # windows that start and end in range: column j's starts at j * stride - begin
        y[:, :, :, lo:hi] = b[:, :, rows, lo * s[1] - begin[1]:(hi - 1) * s[1] - begin[1] + 1:s[1]]
    pad = np.array(fill, dtype=x.dtype)
    for j in border:
        cols = [j * s[1] - begin[1] + t * d[1] for t in range(k[1])]
        taps = [a[:, :, rows, col] if 0 <= col < w else pad for col in cols]
        acc = taps[0] if len(taps) == 1 else op(taps[0], taps[1])
        for v in taps[2:]:
            acc = op(acc, v)
        y[:, :, :, j] = acc
    return y


def _reduce_flat(y: np.ndarray, i: int, k: int, d: int, op: np.ufunc) -> np.ndarray:
    """Spatial axis ``i`` of contiguous, non-empty ``y`` reduced at stride 1 over the flattened array,
    into a contiguous array of ``y``'s shape whose positions past the axis's last whole window are
    not results (the caller cuts them): the padded axis holds at least one whole window, so ``n``
    below is positive."""
    step = d * math.prod(y.shape[3 + i:])
    flat = y.reshape(-1)
    n = flat.size - (k - 1) * step
    buf = np.empty(flat.size, dtype=y.dtype)
    acc = buf[:n]
    op(flat[:n], flat[step:step + n], out=acc)
    for t in range(2, k):
        op(acc, flat[t * step:t * step + n], out=acc)
    buf[n:] = 0  # past the last window: never kept, but never left uninitialised either
    return buf.reshape(y.shape)


def _lowest(dtype: np.dtype):
    return np.iinfo(dtype).min if dtype.kind in "iu" else -np.inf


def _max_pool(x, auto_pad, ceil_mode, dilations, kernel_shape, pads, storage_order, strides, with_index):
    k, s, d, begin, _, ext, out = _pool_setup(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    if not with_index:
        if _jit_pool(x, out):
            return _pool2d(x, begin, out, k, s, d, None)
        return _pool_windows(x, begin, ext, _lowest(x.dtype), out, k, s, d, np.maximum)
    xp = _padded(x, begin, ext, _lowest(x.dtype))
    taps = _taps(xp, out, k, s, d)
    y = next(taps)[1].copy()
    nd = x.ndim - 2
    in_sp = x.shape[2:]
    n, c = x.shape[:2]
    # Flat-index strides of the spatial axes (row-major, or column-major for storage_order=1).
    stride = [math.prod(in_sp[:i]) if storage_order else math.prod(in_sp[i + 1:]) for i in range(nd)]
    # Track the winning tap as its offset in the flattened input: masked copies (copyto/where) are
    # several times slower than this branch-free int32 arithmetic.
    off = np.zeros(y.shape, dtype=np.int32)
    better = np.empty(y.shape, dtype=bool)
    step = np.empty(y.shape, dtype=np.int32)
    for flat, v in taps:
        kk = np.unravel_index(flat, k)
        tap_off = sum(int(kk[i]) * d[i] * stride[i] for i in range(nd))
        np.greater(v, y, out=better)  # strict: the first tap wins ties, as onnxruntime does
        np.maximum(y, v, out=y)
        np.subtract(tap_off, off, out=step)
        np.multiply(step, better, out=step)
        off += step
    index = (np.arange(n * c, dtype=np.int64) * math.prod(in_sp)).reshape(n, c, *([1] * nd))
    for i in range(nd):
        o = np.arange(out[i], dtype=np.int64).reshape(-1, *([1] * (nd - 1 - i)))
        index = index + (o * s[i] - begin[i]) * stride[i]
    return y, index + off


#: a 2-D pool runs as the compiled loop from this many output columns: the loop pays a few short
#: loops per output row, and on narrower rows the numpy passes over the whole input win (VGG's
#: 512-channel 2x2 max pool to 7x7: 0.78x compiled; 13-14 columns 1.0-1.5x, 28 and up 1.6-3.5x)
JIT_MIN_OUT_WIDTH = 8


def _jit_pool(x: np.ndarray, out: Sequence[int]) -> bool:
    """Whether a pool of ``x`` (in its working dtype) to ``out`` runs as the compiled loop."""
    return (x.ndim == 4 and x.dtype.char in "fd" and x.size > 0 and 0 not in out and out[1] >= JIT_MIN_OUT_WIDTH
            and jit.enabled())


@lru_cache(maxsize=8)
def _no_counts(dtype: np.dtype) -> np.ndarray:
    """A max pool's unused divisor, read-only as the cached counts are: numba compiles a read-only
    array's loop apart from a writable one's, and one machine code serves both pools."""
    ones = np.ones((1, 1), dtype=dtype)
    ones.flags.writeable = False
    return ones


def _pool2d(x: np.ndarray, begin: Sequence[int], out: Sequence[int], k: Sequence[int], s: Sequence[int],
            d: Sequence[int], counts: np.ndarray | None) -> np.ndarray:
    """A 2-D max pool (no ``counts``) or average pool (each window's sum over its count) as one
    compiled loop (``_loops.pool2d``): each output row reduces its window's input rows once, where the
    numpy passes reduce every row and column of the padded input and then gather the kept ones
    (SqueezeNet's and Inception's 3x3 stride-2 max pools at 56-112 px: 1.5-3.5x). The same values:
    a max is exact, NaN wins as in np.maximum, and a sum adds in the numpy passes' order."""
    loops = jit.loops()
    width = (out[1] - 1) * s[1] + (k[1] - 1) * d[1] + 1
    y = np.empty((*x.shape[:2], *out), dtype=x.dtype)
    divisor = _no_counts(x.dtype) if counts is None else counts
    return loops.pool2d(x, k[0], k[1], s[0], s[1], d[0], d[1], begin[0], begin[1], counts is None, divisor, y,
                        np.empty(width, dtype=x.dtype), np.empty(width, dtype=x.dtype))


@kernel("MaxPool", since=1)
def max_pool_1(x, auto_pad="NOTSET", kernel_shape=None, pads=None, strides=None):
    return _max_pool(x, auto_pad, 0, None, kernel_shape, pads, 0, strides, False)


@kernel("MaxPool", since=8, output_count=True)
def max_pool(x, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, pads=None,
             storage_order=0, strides=None, _n_outputs=2):
    return _max_pool(x, auto_pad, ceil_mode, dilations, kernel_shape, pads, storage_order, strides,
                     _n_outputs > 1)


@lru_cache(maxsize=256)
def _window_counts(x_sp, k, s, d, begin, end, out, include_pad: bool, dtype: np.dtype) -> np.ndarray:
    """How many taps of each output window land in the counted region (the divisor of AveragePool),
    in ``dtype``; read-only, as it is cached per geometry."""
    counts = np.ones((), dtype=np.int64)
    for i in range(len(k)):
        lo, hi = (0, begin[i] + x_sp[i] + end[i]) if include_pad else (begin[i], begin[i] + x_sp[i])
        pos = np.arange(out[i])[:, None] * s[i] + np.arange(k[i])[None, :] * d[i]
        c = ((pos >= lo) & (pos < hi)).sum(axis=1)
        counts = np.multiply.outer(counts, c)
    counts = counts.astype(dtype)
    counts.flags.writeable = False
    return counts


@kernel("AveragePool", since=1)
def average_pool(x, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None, kernel_shape=None,
                 pads=None, strides=None):
    k, s, d, begin, end, ext, out = _pool_setup(x, kernel_shape, strides, dilations, pads, auto_pad,
                                                ceil_mode)
    work = _work_dtype(x.dtype)
    if tuple(k) == x.shape[2:] and not any(begin) and not any(ext) and all(o == 1 for o in out):
        return _image_means(x, work)  # one window over each whole image (ResNet's, ShuffleNet's head)
    counts = _window_counts(x.shape[2:], k, s, d, begin, end, out, bool(count_include_pad), work)
    xw = x.astype(work, copy=False)
    if _jit_pool(xw, out):
        return _pool2d(xw, begin, out, k, s, d, counts).astype(x.dtype, copy=False)
    acc = _pool_windows(xw, begin, ext, 0, out, k, s, d, np.add)
    acc /= counts
    return acc.astype(x.dtype, copy=False)


def _image_means(x: np.ndarray, work: np.dtype) -> np.ndarray:
    """The mean of each channel's whole image, shaped (N, C, 1, ...): one BLAS row sum over the
    (N*C, pixels) rows (``row_means``), where np.mean over the spatial axes is a strided reduction
    (2048 channels of 7x7: 133 us through the separable window sums, 59 us by np.mean, 10-13 by this)."""
    if x.size == 0:
        return quiet_mean(x, axis=_spatial(x), keepdims=True, dtype=work).astype(x.dtype, copy=False)
    means = row_means(x.astype(work, copy=False).reshape(x.shape[0] * x.shape[1], -1))
    return means.reshape(x.shape[:2] + (1,) * (x.ndim - 2)).astype(x.dtype, copy=False)


@kernel("LpPool", since=1)
def lp_pool(x, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, p=2, pads=None,
            strides=None):
    k, s, d, begin, _, ext, out = _pool_setup(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    work = _work_dtype(x.dtype)
    v = x.astype(work, copy=False)
    term = v * v if p == 2 else np.abs(v) ** work.type(p)  # powers once per input, not once per tap
    acc = _reduce_windows(_padded(term, begin, ext, 0), out, k, s, d, np.add)
    return (np.sqrt(acc) if p == 2 else acc ** work.type(1.0 / p)).astype(x.dtype, copy=False)


def _spatial(x: np.ndarray) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


@kernel("GlobalAveragePool", since=1)
def global_average_pool(x):
    return _image_means(x, _work_dtype(x.dtype))


@kernel("GlobalMaxPool", since=1)
def global_max_pool(x):
    return np.max(x, axis=_spatial(x), keepdims=True)


@kernel("GlobalLpPool", since=1)
def global_lp_pool(x, p=2):
    work = _work_dtype(x.dtype)
    v = x.astype(work, copy=False)
    if p == 2:
        return np.sqrt(np.sum(v * v, axis=_spatial(x), keepdims=True)).astype(x.dtype, copy=False)
    total = np.sum(np.abs(v) ** work.type(p), axis=_spatial(x), keepdims=True)
    return (total ** work.type(1.0 / p)).astype(x.dtype, copy=False)


@kernel("MaxUnpool", since=9)
def max_unpool(x, i, output_shape=None, kernel_shape=None, pads=None, strides=None):
    nd = x.ndim - 2
    s, _, p = _defaults(nd, strides, None, pads)
    k = list(kernel_shape)
    inferred = [*x.shape[:2], *((x.shape[2 + j] - 1) * s[j] - p[j] - p[j + nd] + k[j] for j in range(nd))]
    # Indices address the inferred unpooled shape; a larger output_shape pads it at the end
    # (the ONNX reference and node tests' reading of the spec).
    flat = np.zeros(math.prod(inferred), dtype=x.dtype)
    flat[i.reshape(-1)] = x.reshape(-1)
    y = flat.reshape(inferred)
    if output_shape is None:
        return y
    target = [int(v) for v in np.asarray(output_shape).reshape(-1)]
    if target == inferred:
        return y
    res = np.zeros(target, dtype=x.dtype)
    region = tuple(slice(0, min(a, b)) for a, b in zip(inferred, target))
    res[region] = y[region]
    return res


def _round_half_away(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


@kernel("MaxRoiPool", since=1)
def max_roi_pool(x, rois, pooled_shape=None, spatial_scale=1.0):
    ph_n, pw_n = pooled_shape
    n_rois = rois.shape[0]
    c, h, w = x.shape[1:]
    y = np.zeros((n_rois, c, ph_n, pw_n), dtype=x.dtype)
    box = _round_half_away(rois[:, 1:5].astype(np.float64) * spatial_scale).astype(np.int64)
    for r in range(n_rois):
        x1, y1, x2, y2 = box[r]
        img = x[int(rois[r, 0])]
        rh, rw = max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1)
        hs = np.clip(np.floor(np.arange(ph_n) * rh / ph_n).astype(np.int64) + y1, 0, h)
        he = np.clip(np.ceil(np.arange(1, ph_n + 1) * rh / ph_n).astype(np.int64) + y1, 0, h)
        ws = np.clip(np.floor(np.arange(pw_n) * rw / pw_n).astype(np.int64) + x1, 0, w)
        we = np.clip(np.ceil(np.arange(1, pw_n + 1) * rw / pw_n).astype(np.int64) + x1, 0, w)
        # Separable max: rows of each bin first, then columns; empty bins stay 0.
        rows = np.full((c, ph_n, w), _lowest(x.dtype), dtype=x.dtype)
        for a in range(ph_n):
            if he[a] > hs[a]:
                rows[:, a] = img[:, hs[a]:he[a]].max(axis=1)
        for b in range(pw_n):
            if we[b] > ws[b]:
                y[r, :, :, b] = rows[:, :, ws[b]:we[b]].max(axis=2)
        y[r, :, he <= hs] = 0
    return y
