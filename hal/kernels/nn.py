"""Convolution kernels, N-d (1D/2D/3D and beyond), NCHW layout.

A stride-1 3x3 conv of enough channels runs as Winograd F(2x2, 3x3) (``hal.kernels.winograd``);
the others lower to im2col: a strided window view of the padded input, copied once into an
(N, group, C/group * kernel, out_pixels) column matrix and multiplied by the weights in one batched
BLAS matmul whose result is already NCHW. A stride-1 2-D conv as wide as its input copies its
columns as runs of whole output rows from the row-padded image (``_sliding.flat_columns``). A 1x1
conv at stride 1 uses the input itself as the matrix; a big column matrix is built and multiplied a
band of output rows at a time, a grouped conv's a block of groups at a time; a stride-1 conv with
few output channels runs one GEMM per tap over the flattened padded image; a depthwise 3x3 conv
at dilation 1 is one compiled loop (``hal.kernels.jit``), any other depthwise 2-D conv copies its
columns from each channel's flattened image between zero margins (no padded copy, no crop), a
block of channels at a time. An im2col conv whose weights are small beside its output adds
its bias inside the GEMM (a row of ones under the columns) rather than in a pass over the output.
ConvTranspose and Col2Im run the same pair backwards (GEMM, then fold).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from hal.kernels import jit, winograd
from hal.kernels._broadcast import apply_per_channel
from hal.kernels._sliding import (
    _defaults,
    _flat_padded,
    _padded,
    _padded_shape,
    _same_pads,
    _windows,
    _work_dtype,
    flat_columns,
    flat_columns_apply,
    flat_rows,
    window,
)
from hal.kernels.quantize import saturate_int
from hal.kernels.registry import kernel

# --- Conv ------------------------------------------------------------------------------------------


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, auto_pad: str, dilations, group: int,
          pads, strides) -> np.ndarray:
    if x.ndim < 3 or w.ndim != x.ndim or group < 1 or x.shape[1] != w.shape[1] * group or w.shape[0] % group:
        raise ValueError(
            f"X of shape {list(x.shape)} and W of shape {list(w.shape)} with group={group} do not fit: X must be "
            f"(N, C, spatial...) and W (M, C/group, kernel...) of the same rank, with C = W's channels "
            f"({w.shape[1] if w.ndim > 1 else '?'}) x group and M a multiple of group")
    out_dtype, work = x.dtype, _work_dtype(x.dtype)
    k, s, d, begin, end, out = window(x.shape[2:], w.shape[2:], strides, dilations, pads, auto_pad)
    if work != out_dtype:  # 16-bit floats: float32 GEMM, one rounding at the end
        x = x.astype(work)
    if winograd.applies(x, w, k, s, d, begin, end, out, group):  # (w as given: its transform is kept)
        return winograd.conv(x, w, b, begin, end, out).astype(out_dtype, copy=False)
    if work != out_dtype:
        w = w.astype(work)
    nd = x.ndim - 2
    n, c = x.shape[:2]
    m = w.shape[0]
    g = group
    cg, mg = c // g, m // g
    if cg == 1 and g > 1 and nd == 2 and 0 not in out:
        y = _depthwise(x, w, b, k, s, d, begin, out)
    elif g == 1 and nd == 2 and s == (1, 1) and m <= SHIFTED_MAX_OUT_CHANNELS and math.prod(k) > 1 and 0 not in out:
        y = _shifted(x, w, b, k, d, begin, end, out)
    elif math.prod(k) > 1 and 0 not in out and (g > 1 or _banded(c * math.prod(k), math.prod(out) * x.itemsize)):
        if g == 1:
            ones = _bias_row(b, n, c * math.prod(k), math.prod(out), m, 0)
            y = _blocked(x, w, k, s, d, begin, end, out, b if ones else None)
        else:
            y, ones = _grouped(x, w, k, s, d, begin, end, out, g), False
        if b is not None and not ones:
            apply_per_channel(np.add, y, b, out=y)
    else:
        ones = _bias_row(b, n, cg * math.prod(k), math.prod(out), m, 0 if _copies(x, k, s, begin, end) else c)
        wr = _with_bias(w, b, g) if ones else w.reshape(g, mg, cg * math.prod(k))
        y = np.matmul(wr, _columns(x, k, s, d, begin, end, out, g, ones))
        y = y.reshape(n, m, *out)  # (n, g, mg, pixels) is already NCHW: no transpose, no copy
        if b is not None and not ones:
            apply_per_channel(np.add, y, b, out=y)
    return y.astype(out_dtype, copy=False)


#: an im2col conv adds its bias inside the GEMM, as a row of ones under each group's columns and the
#: bias as one more weight column, when a group's K + 1 weight columns are at most this many times
#: its output pixels: copying the weights with the bias beside them, on each call, then costs less
#: than the pass over the output it saves (SqueezeNet's 3 -> 64 stem at 111x111: GEMM and bias pass
#: 674 + 180 -> 688 us; ResNet's 64 -> 256 1x1 at 56x56: 1167 + 205 -> 1170 us). From about
#: K = 2 x pixels (ResNet's 7x7 layers, SqueezeNet's 512 -> 1000 head) the copy costs more. OpenBLAS
#: adds the last row's product after the others within one K block (384-511 rows here), so up to
#: there the result has the bits of the bias pass, and beyond it differs by rounding
BIAS_ROW_MAX_K_PER_PIXEL = 1
#: ... and a 1x1 conv whose input is its column matrix as it stands (no copy to put the row in) only
#: with at least this many output channels per input channel: its input's copy then costs less than
#: the pass over its output (SqueezeNet's 16 -> 64 expansions at 55x55: 236 -> 207 us)
BIAS_ROW_COPY_MIN_RATIO = 2


def _bias_row(b: np.ndarray | None, n: int, kk: int, pixels: int, m: int, uncopied: int) -> bool:
    """Whether a conv of ``kk`` weight columns a group, ``m`` filters and ``pixels`` output pixels an
    image adds its bias in the GEMM (``BIAS_ROW_MAX_K_PER_PIXEL``); ``uncopied``: the input channels
    of a 1x1 conv whose input is its column matrix (they would be copied to add the row), else 0."""
    return (b is not None and b.shape == (m,) and kk + 1 <= BIAS_ROW_MAX_K_PER_PIXEL * n * pixels
            and m >= BIAS_ROW_COPY_MIN_RATIO * uncopied)


def _copies(x: np.ndarray, k: Sequence[int], s: Sequence[int], begin: Sequence[int], end: Sequence[int]) -> bool:
    """Whether ``_columns`` copies the input (else the input is the column matrix as it stands)."""
    return not (x.flags.c_contiguous and math.prod(k) == 1 and math.prod(s) == 1 and not any(begin)
                and not any(end))


def _with_bias(w: np.ndarray, b: np.ndarray, g: int = 1) -> np.ndarray:
    """(M, C/g, *k) weights as (g, M/g, C/g * taps + 1), each filter's bias its last column: the
    weights of column matrices with a row of ones under each group's columns."""
    m = w.shape[0]
    wa = np.empty((g, m // g, w.size // m + 1), dtype=w.dtype)
    wa[:, :, :-1] = w.reshape(g, m // g, -1)
    wa[:, :, -1] = b.reshape(g, m // g)
    return wa


def _columns(x: np.ndarray, k: Sequence[int], s: Sequence[int], d: Sequence[int], begin: Sequence[int],
             end: Sequence[int], out: Sequence[int], g: int, ones: bool = False) -> np.ndarray:
    """The im2col matrix (n, g, C/g * taps, pixels), so that weights (g, M/g, C/g * taps) @ it is NCHW;
    with ``ones``, (n, g, C/g * taps + 1, pixels), each group's last row ones (``_with_bias``).

    A 1x1 kernel needs no copy at all at stride 1 (the input is the matrix) and one strided slice
    otherwise; a larger kernel copies its window view once.
    """
    n, c = x.shape[:2]
    nd = len(k)
    pn = math.prod(out)
    cg = c // g
    kk = cg * math.prod(k)
    if not _copies(x, k, s, begin, end) and not ones:
        return x.reshape(n, g, cg, pn)  # a plain 1x1 conv: the input is the matrix as it stands
    cols = np.empty((n, g, kk + ones, pn), dtype=x.dtype)
    if ones:
        cols[:, :, kk] = 1
    body = cols[:, :, :kk]  # the columns themselves (all of cols, without the rows of ones)
    if not _copies(x, k, s, begin, end):
        np.copyto(body, x.reshape(n, g, cg, pn))
    elif math.prod(k) > 1 and flat_columns_apply(x.shape, k, s, begin, end, out):
        rows, width = x.shape[2] + begin[0] + end[0], x.shape[3]
        src = flat_rows(x, begin, end)
        for i in range(n):  # a group's block of cols is contiguous: one call each
            for j in range(g):
                flat_columns(src, i * c + j * cg, cg, rows, width, k, d, begin[1], (0, out[0]),
                             body[i, j].reshape(cg, *k, pn))
    else:
        xp = _padded(x, begin, end, 0)
        if all(v == 1 for v in k):
            sub = xp[(slice(None), slice(None), *(slice(0, (out[i] - 1) * s[i] + 1, s[i]) for i in range(nd)))]
            shape = (g, cg, *out)
        else:
            win = _windows(xp, out, k, s, d)                                # (n, c, *out, *k)
            sub = win.transpose(0, 1, *range(2 + nd, 2 + 2 * nd), *range(2, 2 + nd))  # (n, c, *k, *out)
            shape = (g, cg, *k, *out)
        for i in range(n):  # splitting an image's axes: a view of cols, whatever the rows of ones
            np.copyto(body[i].reshape(shape), sub[i].reshape(shape))
    return cols


#: an im2col matrix bigger than this is built and multiplied a band of output rows at a time, each
#: band's columns about COLUMN_BLOCK bytes, so the GEMM reads them from L2 rather than memory (the
#: light zoo's 7x7 stems: 25% faster; VGG's 224x224 layers no longer allocate 115 MB of columns).
COLUMN_BLOCK_FROM = 4 << 20
#: ... and from this size when a column is at most THIN_COLUMNS_K long (an RGB image's 3x3 stem):
#: ShuffleNet's and SqueezeNet's stems (1.35 MB of columns of 27, and as much again of OpenBLAS's
#: packed copy) left holes in the heap that the next, larger activations could not reuse; banded,
#: their runs touch 0.6 MB less (5.9 -> 5.3 and 5.2 -> 4.6 MB over a 3.0 and 2.7 MB peak of live
#: arrays), with the same bits, for 1-4% more time in those two layers (SqueezeNet's 1.59 -> 1.66
#: ms). Longer columns lose more to the narrower GEMMs: SqueezeNet's 16 -> 64 3x3 layers at 55x55
#: (columns of 144, 1.7 MB) took 1.12 ms in bands against 0.96 whole.
THIN_COLUMN_BLOCK_FROM = 1 << 20
THIN_COLUMNS_K = 32
COLUMN_BLOCK = 512 << 10
#: ... but never fewer output pixels per band than this (a narrower GEMM loses more than L2 saves)
COLUMN_BLOCK_MIN_PIXELS = 256
#: ... nor fewer than this many per output channel: every band's GEMM packs the whole weight matrix
#: again, and bands narrower than twice its height ran VGG's 256- and 512-channel 3x3 layers 3-7%
#: slower (VGG-19 1.02-1.03x run against run, the other CNNs 1.00-1.01x); such a band's columns are
#: at most twice the layer's weights
COLUMN_BLOCK_PIXELS_PER_FILTER = 2


def _banded(column: int, row_bytes: int) -> bool:
    """Whether an ungrouped im2col conv whose columns are ``column`` long builds them in bands of
    output rows (its column matrix is ``column`` x ``row_bytes`` bytes)."""
    size = column * row_bytes
    return size > COLUMN_BLOCK_FROM or (column <= THIN_COLUMNS_K and size > THIN_COLUMN_BLOCK_FROM)


def _blocked(x: np.ndarray, w: np.ndarray, k: Sequence[int], s: Sequence[int], d: Sequence[int],
             begin: Sequence[int], end: Sequence[int], out: Sequence[int], bias: np.ndarray | None = None
             ) -> np.ndarray:
    """One group: ``_in_blocks`` a band of output rows (the first spatial axis) at a time; ``bias``,
    when given, is added in each band's GEMM (``_with_bias``)."""
    row = math.prod(out[1:])
    least = max(COLUMN_BLOCK_MIN_PIXELS, COLUMN_BLOCK_PIXELS_PER_FILTER * w.shape[0])
    rows = max(COLUMN_BLOCK // (x.shape[1] * math.prod(k) * row * x.itemsize), -(-least // row), 1)
    return _in_blocks(x, w, k, s, d, begin, end, out, 1, 1, min(rows, out[0]), bias)


def _grouped(x: np.ndarray, w: np.ndarray, k: Sequence[int], s: Sequence[int], d: Sequence[int],
             begin: Sequence[int], end: Sequence[int], out: Sequence[int], g: int) -> np.ndarray:
    """A grouped conv: ``_in_blocks`` a block of groups at a time (10-18% faster on grouped 3x3 layers
    than building every group's columns first)."""
    per = max(1, COLUMN_BLOCK // (x.shape[1] // g * math.prod(k) * math.prod(out) * x.itemsize))
    return _in_blocks(x, w, k, s, d, begin, end, out, g, min(per, g), out[0])


def _in_blocks(x: np.ndarray, w: np.ndarray, k: Sequence[int], s: Sequence[int], d: Sequence[int],
               begin: Sequence[int], end: Sequence[int], out: Sequence[int], g: int, per: int, rows: int,
               bias: np.ndarray | None = None) -> np.ndarray:
    """``_columns`` and the GEMM ``per`` groups and ``rows`` output rows at a time, into one reused
    column buffer (about COLUMN_BLOCK bytes, so the GEMM reads it from L2 rather than memory); each
    block's product is written straight into its slice of the output. Blocks of groups also pad
    their own channels into one reused buffer, so no padded copy of the whole input is ever held
    (ShuffleNet's stride-2 depthwise layers: 1.5 MB less at its peak step). ``bias`` (one group only)
    is added in the GEMM: each band's columns get a row of ones (``_with_bias``)."""
    n, c = x.shape[:2]
    m, nd = w.shape[0], len(k)
    cg, mg = c // g, m // g
    taps, row = math.prod(k), math.prod(out[1:])
    pad_blocks = per < g and (any(begin) or any(end))
    flat = flat_columns_apply(x.shape, k, s, begin, end, out)  # columns as runs of whole output rows
    if flat:
        height, width = x.shape[2] + begin[0] + end[0], x.shape[3]
        if pad_blocks:
            flat_buf = np.empty(begin[1] + per * cg * height * width + end[1], dtype=x.dtype)
        else:
            src = flat_rows(x, begin, end)
    elif pad_blocks:
        pad_buf = np.empty(_padded_shape((1, per * cg, *x.shape[2:]), begin, end), dtype=x.dtype)
    else:
        win = _windows(_padded(x, begin, end, 0), out, k, s, d)          # (n, c, *out, *k)
    perm = (0, *range(1 + nd, 1 + 2 * nd), *range(1, 1 + nd))            # (c, *k, *out) per image
    ones = bias is not None
    wr = _with_bias(w, bias) if ones else w.reshape(g, mg, cg * taps)
    y = np.empty((n, g, mg, out[0] * row), dtype=x.dtype)
    buf = np.empty((per * cg * taps + ones) * rows * row, dtype=x.dtype)
    for i in range(n):
        for g0 in range(0, g, per):
            g1 = min(g0 + per, g)
            channels = (g1 - g0) * cg
            if flat:
                if pad_blocks:
                    src, first = flat_rows(x[i:i + 1, g0 * cg:g1 * cg], begin, end, flat_buf), 0
                else:
                    first = i * c + g0 * cg
            elif pad_blocks:
                xp = _padded(x[i:i + 1, g0 * cg:g1 * cg], begin, end, 0, out=pad_buf[:, :channels])
                blk = _windows(xp, out, k, s, d)[0]
            else:
                blk = win[i, g0 * cg:g1 * cg]
            for r0 in range(0, out[0], rows):
                r1 = min(r0 + rows, out[0])
                size = channels * taps * (r1 - r0) * row
                cols = buf[:size]
                if ones:
                    buf[size:size + (r1 - r0) * row] = 1
                if flat:
                    flat_columns(src, first, channels, height, width, k, d, begin[1], (r0, r1),
                                 cols.reshape(channels, *k, (r1 - r0) * row))
                else:
                    cols.reshape(channels, *k, r1 - r0, *out[1:])[...] = blk[:, r0:r1].transpose(perm)
                np.matmul(wr[g0:g1], buf[:size + ones * (r1 - r0) * row].reshape(g1 - g0, cg * taps + ones, -1),
                          out=y[i, g0:g1, :, r0 * row:r1 * row])
    return y.reshape(n, m, *out)


#: a stride-1 2-D conv with at most this many output channels skips im2col (``_shifted``): its
#: column matrix would be 9x the input for a 3x3 kernel while the product is small; measured on
#: DenseNet's 128 -> 32 3x3 convs (30-45% faster), break-even near 64, slower from 128 on
SHIFTED_MAX_OUT_CHANNELS = 48


def _shifted(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, k: Sequence[int], d: Sequence[int],
             begin: Sequence[int], end: Sequence[int], out: Sequence[int]) -> np.ndarray:
    """A stride-1 2-D conv as one GEMM per kernel tap over the flattened padded image, summed.

    Output (r, c) on a grid as wide as the padded image reads flat element ``r * width + c`` plus
    the tap's offset ``i * d_h * width + j * d_w``: each tap's operand is a strided view of the
    image (no im2col copy), and the grid's columns past the output width are dropped at the end.
    """
    n = x.shape[0]
    m = w.shape[0]
    (oh, ow) = out
    width = x.shape[3] + begin[1] + max(end[1], 0)
    span = oh * width
    flat = _flat_padded(x, begin, end, width, (k[0] - 1) * d[0] * width + (k[1] - 1) * d[1] + span)
    taps = np.ascontiguousarray(w.transpose(2, 3, 0, 1))                   # (kh, kw, m, c)
    acc = part = None
    for i in range(k[0]):
        for j in range(k[1]):
            off = i * d[0] * width + j * d[1]
            view = flat[:, :, off:off + span]
            if acc is None:
                acc = np.matmul(taps[i, j], view)                          # (n, m, oh * width)
                part = np.empty_like(acc)
            else:
                acc += np.matmul(taps[i, j], view, out=part)
    return _cropped_plus_bias(acc.reshape(n, m, oh, width), ow, b)


#: a depthwise conv builds its columns this many bytes of channels at a time, so each block's
#: products read them from L2 (ShuffleNet's and MobileNet's stride-1 3x3 layers: 15-35% faster)
DEPTHWISE_BLOCK = 512 << 10


def _depthwise(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, k: Sequence[int], s: Sequence[int],
               d: Sequence[int], begin: Sequence[int], out: Sequence[int]) -> np.ndarray:
    """A 2-D conv with one input channel per group (any stride, dilation and padding), its im2col
    read from each channel's flattened image between zero margins, a block of channels at a time.

    Tap (i, j) of output (r, c) reads flat element ``(s_h r + d_h i - pad_top) * width + s_w c + d_w j
    - pad_left``: one strided view of the block for all taps and outputs, copied once into the
    columns. A row above or below the image reads a margin's zeros; a column left or right of it
    would read the neighbouring row instead, so those (a strip per tap column) are zeroed after the
    copy. No padded copy of the image, no wider grid to crop: the GEMM writes the output itself.
    """
    n, g, h, wd = x.shape
    mg = w.shape[0] // g
    (oh, ow) = out
    if jit.enabled() and tuple(k) == (3, 3) and tuple(d) == (1, 1) and x.dtype.char in "fd" and w.dtype == x.dtype:
        return _depthwise3x3(x, w, b, s, begin, out)
    taps, span, item = k[0] * k[1], oh * ow, x.itemsize
    # the flat elements the first and the last tap read, counted from the image's first element
    first = -begin[0] * wd - begin[1]
    last = (s[0] * (oh - 1) + (k[0] - 1) * d[0] - begin[0]) * wd + s[1] * (ow - 1) + (k[1] - 1) * d[1] - begin[1]
    front = max(0, -first)                                                # zero margin before the image
    length = front + max(h * wd, last + 1)
    strips = []                                                           # (tap column, first valid, end)
    for j in range(k[1]):
        dx = j * d[1] - begin[1]
        left = min(ow, -(dx // s[1])) if dx < 0 else 0
        strips.append((j, left, max(left, min(ow, -(-(wd - dx) // s[1])))))
    wr = w.reshape(g, mg, taps)
    y = np.empty((n, g, mg, span), dtype=x.dtype)
    per = min(g, max(1, DEPTHWISE_BLOCK // (taps * span * item)))         # channels per block
    cols_buf = np.empty(per * taps * span, dtype=x.dtype)
    image = np.zeros((per, length), dtype=x.dtype)                         # its margins stay zero
    st = (image.strides[0], item * wd * d[0], item * d[1], item * wd * s[0], item * s[1])
    # every tap of every output, as one read-only view of the whole buffer: a block reads its first
    # channels (ShuffleNet's 28x28 layers have 8 blocks). The buffer is this call's own contiguous
    # array, so the view is made by the ndarray constructor, which checks its extent against the
    # buffer, in 1 us where as_strided takes 3-4
    windows = np.ndarray((per, k[0], k[1], oh, ow), dtype=x.dtype, buffer=image, offset=(front + first) * item,
                         strides=st)
    windows.flags.writeable = False
    flat = x.reshape(n, g, h * wd)
    for i in range(n):
        for c0 in range(0, g, per):
            c1 = min(c0 + per, g)
            image[:c1 - c0, front:front + h * wd] = flat[i, c0:c1]
            cols = cols_buf[: (c1 - c0) * taps * span].reshape(c1 - c0, k[0], k[1], oh, ow)
            cols[...] = windows[:c1 - c0]
            for j, left, right in strips:
                if left:
                    cols[:, :, j, :, :left] = 0
                if right < ow:
                    cols[:, :, j, :, right:] = 0
            np.matmul(wr[c0:c1], cols.reshape(c1 - c0, taps, span), out=y[i, c0:c1])
    y = y.reshape(n, g * mg, oh, ow)
    if b is not None:
        apply_per_channel(np.add, y, b, out=y)
    return y


def _depthwise3x3(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, s: Sequence[int], begin: Sequence[int],
                  out: Sequence[int]) -> np.ndarray:
    """A depthwise 3x3 conv at dilation 1 as one compiled loop (``_loops.depthwise3x3``): each output
    reads its nine taps from a zero-bordered copy of its channel, one pass over the output where the
    columns and the GEMM make two over nine times it (ShuffleNet's 272 channels at 14x14: 2x)."""
    loops = jit.loops()
    m = w.shape[0]
    oh, ow = out
    width = (ow - 1) * s[1] + 3
    pad = np.zeros(((oh - 1) * s[0] + 3) * width, dtype=x.dtype)
    # weights and bias copied (a few KB): an initializer is read-only, and numba compiles a read-only
    # array's loop apart from a writable one's (the run would then load a second machine code)
    bias = np.zeros(m, dtype=x.dtype) if b is None else np.array(b.reshape(m), dtype=x.dtype)
    y = np.empty((x.shape[0], m, oh, ow), dtype=x.dtype)
    return loops.depthwise3x3(x, np.array(w.reshape(m, 9)), bias, s[0], s[1], begin[0], begin[1], y, pad, width)


def _cropped_plus_bias(grid: np.ndarray, ow: int, b: np.ndarray | None) -> np.ndarray:
    """The first ``ow`` columns of an (N, M, H, grid width) GEMM result plus the bias, in one pass
    when both are needed (the crop's copy writes the sum)."""
    if grid.shape[3] == ow:
        return grid if b is None else apply_per_channel(np.add, grid, b, out=grid)
    if b is None:
        return np.ascontiguousarray(grid[..., :ow])
    return apply_per_channel(np.add, grid[..., :ow], b, out=np.empty((*grid.shape[:3], ow), dtype=grid.dtype))


@kernel("Conv", since=1)
def conv(x, w, b=None, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
         strides=None):
    return _conv(x, w, b, auto_pad, dilations, group, pads, strides)


def _integer_conv(x, w, x_zero_point, w_zero_point, auto_pad, dilations, group, pads, strides
                  ) -> np.ndarray:
    """Exact integer convolution as int32, (x - x_zp) * (w - w_zp), padding with x_zp."""
    # float64 GEMM is exact here: |products| < 2**16, so sums stay far below 2**53.
    xf = x.astype(np.float64)
    if x_zero_point is not None:
        xf -= np.float64(np.asarray(x_zero_point).reshape(-1)[0])
    wf = w.astype(np.float64)
    if w_zero_point is not None:
        wz = np.asarray(w_zero_point, dtype=np.float64)
        wf -= wz.reshape(-1, *([1] * (w.ndim - 1))) if wz.size > 1 else wz.reshape(-1)[0]
    return _conv(xf, wf, None, auto_pad, dilations, group, pads, strides)


@kernel("ConvInteger", since=10)
def conv_integer(x, w, x_zero_point=None, w_zero_point=None, auto_pad="NOTSET", dilations=None, group=1,
                 kernel_shape=None, pads=None, strides=None):
    acc = _integer_conv(x, w, x_zero_point, w_zero_point, auto_pad, dilations, group, pads, strides)
    return acc.astype(np.int32)


@kernel("QLinearConv", since=10)
def qlinear_conv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B=None,
                 auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None):
    acc = _integer_conv(x, w, x_zero_point, w_zero_point, auto_pad, dilations, group, pads, strides)
    nd = x.ndim - 2
    if B is not None:
        acc += B.astype(np.float64).reshape(-1, *([1] * nd))
    ws = np.asarray(w_scale, dtype=np.float32)
    ws = ws.reshape(-1, *([1] * nd)) if ws.size > 1 else ws.reshape(())
    multiplier = (np.asarray(x_scale, dtype=np.float32).reshape(()) * ws
                  / np.asarray(y_scale, dtype=np.float32).reshape(()))
    out_dtype = np.asarray(y_zero_point).dtype if y_zero_point is not None else x.dtype
    zp = 0.0 if y_zero_point is None else float(np.asarray(y_zero_point).reshape(-1)[0])
    return saturate_int(np.rint(acc * multiplier.astype(np.float64)) + zp, out_dtype)


# --- ConvTranspose / Col2Im: GEMM then fold --------------------------------------------------------


def _fold(cols: np.ndarray, k: Sequence[int], s: Sequence[int], d: Sequence[int], span: Sequence[int]
          ) -> np.ndarray:
    """Sum column blocks (..., *k, *L) into an image (..., *span): the adjoint of im2col."""
    nd = len(k)
    lead = cols.shape[:cols.ndim - 2 * nd]
    grid = cols.shape[cols.ndim - nd:]
    img = np.zeros((*lead, *span), dtype=cols.dtype)
    for kk in np.ndindex(*k):
        dst = tuple(slice(kk[i] * d[i], kk[i] * d[i] + (grid[i] - 1) * s[i] + 1, s[i]) for i in range(nd))
        img[(..., *dst)] += cols[(..., *kk, *([slice(None)] * nd))]
    return img


@kernel("ConvTranspose", since=1)
def conv_transpose(x, w, b=None, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                   output_padding=None, output_shape=None, pads=None, strides=None):
    out_dtype, work = x.dtype, _work_dtype(x.dtype)
    if work != out_dtype:
        x, w = x.astype(work), w.astype(work)
    nd = x.ndim - 2
    in_sp = list(x.shape[2:])
    k = list(w.shape[2:])
    s, d, p = _defaults(nd, strides, dilations, pads)
    op = list(output_padding) if output_padding else [0] * nd
    full = [(in_sp[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 for i in range(nd)]
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if output_shape is not None:
            target = list(output_shape)[-nd:]
        else:
            target = [in_sp[i] * s[i] for i in range(nd)]
        # A negative total (output longer than the full image) pads nothing and leaves the extra
        # outputs at the end, as output_padding does (onnxruntime's reading).
        begin = [_same_pads(max(full[i] + op[i] - target[i], 0), auto_pad)[0] for i in range(nd)]
        out = target
    else:
        begin = p[:nd]
        out = [full[i] + op[i] - p[i] - p[i + nd] for i in range(nd)]
    n, c = x.shape[:2]
    g = group
    cg, mg = c // g, w.shape[1]
    kn, pn = math.prod(k), math.prod(in_sp)
    xg = x.reshape(n, g, cg, pn).transpose(1, 2, 0, 3).reshape(g, cg, n * pn)
    cols = np.matmul(w.reshape(g, cg, mg * kn).transpose(0, 2, 1), xg)        # (g, mg*k, n*pixels)
    cols = cols.reshape(g, mg, *k, n, *in_sp)
    cols = np.moveaxis(cols, 2 + nd, 2)                                          # (g, mg, n, *k, *in)
    img = _fold(cols, k, s, d, full).reshape(g * mg, n, *full)
    y = np.zeros((n, g * mg, *out), dtype=x.dtype)
    # Output window [begin, begin + out) of the full image; outside it (negative pads,
    # output_padding) stays zero.
    src = tuple(slice(max(begin[i], 0), min(begin[i] + out[i], full[i])) for i in range(nd))
    dst = tuple(slice(max(-begin[i], 0), max(-begin[i], 0) + max(sl.stop - sl.start, 0))
                for i, sl in enumerate(src))
    y[(slice(None), slice(None), *dst)] = np.moveaxis(img[(slice(None), slice(None), *src)], 0, 1)
    if b is not None:
        apply_per_channel(np.add, y, b, out=y)
    return y.astype(out_dtype, copy=False)


@kernel("Col2Im", since=18)
def col2im(input, image_shape, block_shape, dilations=None, pads=None, strides=None):
    img = [int(v) for v in image_shape]
    k = [int(v) for v in block_shape]
    nd = len(img)
    s, d, p = _defaults(nd, strides, dilations, pads)
    span = [img[i] + p[i] + p[i + nd] for i in range(nd)]
    grid = [(span[i] - (k[i] - 1) * d[i] - 1) // s[i] + 1 for i in range(nd)]
    n = input.shape[0]
    c = input.shape[1] // math.prod(k)
    full = _fold(input.reshape(n, c, *k, *grid), k, s, d, span)
    return np.ascontiguousarray(full[(..., *(slice(p[i], p[i] + img[i]) for i in range(nd)))])
