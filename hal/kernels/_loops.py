"""Loop nests compiled by numba (``hal.kernels.jit``; read them as C). Imported only by a kernel
that found ``jit.enabled()``: importing this module imports numba.

Each reads its windows in place and writes its output once, where the numpy kernels make a pass
over memory per tap. The callers (``hal.kernels.nn._depthwise``, ``hal.kernels.pool``) check
shapes, dtypes and parameters and allocate every buffer; these loops allocate nothing. Indices
are cast to ``np.uintp``: numba then knows them non-negative, skips the wraparound of negative
indices, and the loops vectorise (SqueezeNet's stem pool as one flat-indexed loop: 0.63 ms, against
2.6 with signed indices).
"""

from __future__ import annotations

import numpy as np

from hal.kernels.jit import njit

U = np.uintp


@njit
def depthwise3x3(x, w, b, sh, sw, pt, pl, out, pad, width):
    """A depthwise 3x3 conv at dilation 1: x (N, C, H, W), any strides (a channel shuffle's view
    reads in place); w (C * mult, 9), b (C * mult,), out (N, C * mult, OH, OW) C-contiguous; ``pad``
    a zeroed buffer of (OH - 1) * sh + 3 rows of ``width`` = (OW - 1) * sw + 3: each channel's image
    is copied into it at (pt, pl), so a tap reads a zero where the window leaves the image. Each
    output is the bias plus the nine products in row-major tap order, one pass over the output.
    (The tap offsets are constants: a dilation as a variable there kept the loop from vectorising,
    2x slower.)"""
    n_img, c_in, h, wd = x.shape
    mult = w.shape[0] // c_in
    oh, ow = out.shape[2], out.shape[3]
    rows = (oh - 1) * sh + 3
    r0, r1 = max(0, -pt), min(h, rows - pt)  # the image rows and columns that land in the buffer
    c0, c1 = max(0, -pl), min(wd, width - pl)
    for n in range(n_img):
        for c in range(c_in):
            for r in range(r0, r1):
                base = (r + pt) * width + pl
                for q in range(c0, c1):
                    pad[U(base + q)] = x[U(n), U(c), U(r), U(q)]
            for m in range(mult):
                f = c * mult + m
                bf = b[f]
                w0, w1, w2 = w[f, 0], w[f, 1], w[f, 2]
                w3, w4, w5 = w[f, 3], w[f, 4], w[f, 5]
                w6, w7, w8 = w[f, 6], w[f, 7], w[f, 8]
                for r in range(oh):
                    p0 = r * sh * width
                    p1 = p0 + width
                    p2 = p1 + width
                    for q in range(ow):
                        a = q * sw
                        out[n, f, r, q] = (bf + w0 * pad[U(p0 + a)] + w1 * pad[U(p0 + a + 1)] + w2 * pad[U(p0 + a + 2)]
                                           + w3 * pad[U(p1 + a)] + w4 * pad[U(p1 + a + 1)] + w5 * pad[U(p1 + a + 2)]
                                           + w6 * pad[U(p2 + a)] + w7 * pad[U(p2 + a + 1)] + w8 * pad[U(p2 + a + 2)])
    return out


@njit(inline="always")
def _reduce(u, v, is_max):
    """max(u, v) with NaN winning on either side, as np.maximum; else u + v."""
    if is_max:
        return u if (u > v or u != u) else v
    return u + v


@njit
def pool2d(x, kh, kw, sh, sw, dh, dw, pt, pl, is_max, counts, out, row, across):
    """A 2-D max pool (``is_max``) or sum pool divided by ``counts`` (OH, OW): x (N, C, H, W), any
    strides; out (N, C, OH, OW); ``row`` and ``across`` two buffers of (OW - 1) * sw + (kw - 1) * dw
    + 1 elements. Per output row, the window's input rows are reduced into ``row`` (one loop when
    all of them are in the image; padding, and windows past the end, read the identity: -inf or 0).
    A 3-wide window at stride 1 or 2, or a 2-wide one at stride 2, then takes its columns straight
    from ``row``; any other reduces its columns at every position into ``across`` and keeps every
    sw-th. Loops that vectorise. The values are the numpy passes' (``hal.kernels.pool``), which
    reduce rows first and then columns in the same order, adding the padding's zeros (x + 0 is x)
    and then dividing: the same operations on every counted element, up to the sign of a zero."""
    n_img, c_in, h, wd = x.shape
    oh, ow = out.shape[2], out.shape[3]
    width = row.shape[0]
    lo, hi = min(max(pl, 0), width), min(width, max(pl + wd, 0))  # row positions inside the image
    span = width - (kw - 1) * dw  # positions whose whole column window fits the row
    low = -np.inf if is_max else 0.0
    pairs = sw == 2 and dw == 1
    for q in range(width):  # positions outside [lo, hi) are padding, never written again
        row[U(q)] = low
    for n in range(n_img):
        for c in range(c_in):
            for r in range(oh):
                top = r * sh - pt
                if kh == 3 and top >= 0 and top + 2 * dh < h:  # all the window's rows in the image: one loop
                    for q in range(lo, hi):
                        u = _reduce(x[n, c, top, U(q - pl)], x[n, c, top + dh, U(q - pl)], is_max)
                        row[U(q)] = _reduce(u, x[n, c, top + 2 * dh, U(q - pl)], is_max)
                elif kh == 2 and top >= 0 and top + dh < h:
                    for q in range(lo, hi):
                        row[U(q)] = _reduce(x[n, c, top, U(q - pl)], x[n, c, top + dh, U(q - pl)], is_max)
                else:
                    first = True
                    for i in range(kh):
                        rr = top + i * dh
                        if rr < 0 or rr >= h:
                            continue
                        if first:
                            for q in range(lo, hi):
                                row[U(q)] = x[n, c, rr, U(q - pl)]
                            first = False
                        else:
                            for q in range(lo, hi):
                                row[U(q)] = _reduce(row[U(q)], x[n, c, rr, U(q - pl)], is_max)
                    if first:  # every window row is padding
                        for q in range(lo, hi):
                            row[U(q)] = low
                if pairs and kw == 3:  # a literal stride: the loop vectorises, 1.3x the general one
                    for q in range(ow):
                        u = _reduce(row[U(2 * q)], row[U(2 * q + 1)], is_max)
                        out[n, c, r, q] = _reduce(u, row[U(2 * q + 2)], is_max)
                elif sw == 1 and dw == 1 and kw == 3:
                    for q in range(ow):
                        u = _reduce(row[U(q)], row[U(q + 1)], is_max)
                        out[n, c, r, q] = _reduce(u, row[U(q + 2)], is_max)
                elif pairs and kw == 2:
                    for q in range(ow):
                        out[n, c, r, q] = _reduce(row[U(2 * q)], row[U(2 * q + 1)], is_max)
                else:
                    for q in range(span):
                        across[U(q)] = row[U(q)]
                    for j in range(1, kw):
                        for q in range(span):
                            across[U(q)] = _reduce(across[U(q)], row[U(q + j * dw)], is_max)
                    for q in range(ow):
                        out[n, c, r, q] = across[U(q * sw)]
                if not is_max:
                    for q in range(ow):
                        out[n, c, r, q] = out[n, c, r, q] / counts[r, q]
    return out


def warm() -> None:
    """Each loop once on a tiny float32 input, contiguous and strided (a view's layout is a machine
    code of its own): what a model's kernels call, loaded before a run needs it."""
    x = np.zeros((1, 2, 4, 4), dtype=np.float32)
    counts = np.ones((2, 2), dtype=np.float32)
    counts.flags.writeable = False
    for v in (x, x.transpose(0, 1, 3, 2)):
        for is_max in (True, False):  # (the divisor is read-only: cached per geometry)
            pool2d(v, 3, 3, 1, 1, 1, 1, 0, 0, is_max, counts, np.empty((1, 2, 2, 2), dtype=np.float32),
                   np.empty(4, dtype=np.float32), np.empty(4, dtype=np.float32))
        depthwise3x3(v, np.zeros((2, 9), dtype=np.float32), np.zeros(2, dtype=np.float32), 1, 1, 0, 0,
                     np.empty((1, 2, 2, 2), dtype=np.float32), np.zeros(16, dtype=np.float32), 4)


__all__ = ["depthwise3x3", "pool2d", "warm"]
