"""Loop nests that ``hal.kernels.jit`` compiles with numba (plain Python here: read them as C).

Each reads its windows in place and writes its output once, where the numpy kernels make a pass
over memory per tap. The callers (``hal.kernels.nn._depthwise``, ``hal.kernels.pool``) check
shapes, dtypes and parameters and allocate every buffer; these loops allocate nothing. Indices
are cast to ``np.uintp``: numba then knows them non-negative, skips the wraparound of negative
indices, and the loops vectorise (about 3x the speed of the same loop with signed indices).
"""

from __future__ import annotations

import numpy as np

from hal.kernels.jit import compiled

U = np.uintp


def _depthwise3x3(x, w, b, sh, sw, pt, pl, out, pad, width):
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


depthwise3x3 = compiled(_depthwise3x3)


def _max_pool2d(x, kh, kw, sh, sw, dh, dw, pt, pl, out, row, across):
    """A 2-D max pool: x (N, C, H, W), any strides; out (N, C, OH, OW); ``row`` and ``across`` two
    buffers of (OW - 1) * sw + (kw - 1) * dw + 1 elements. Per output row, the window's input rows
    are reduced into ``row`` (one loop when all of them are in the image; padding, and windows past
    the end, read -inf). A 3-wide window at stride 1 or 2, or a 2-wide one at stride 2, then takes
    its columns straight from ``row``; any other takes the max over its columns at every position
    into ``across`` and keeps every sw-th. Loops that vectorise; the max propagates NaN as
    np.maximum does (a NaN on either side wins), so the values are the numpy passes' own."""
    n_img, c_in, h, wd = x.shape
    oh, ow = out.shape[2], out.shape[3]
    width = row.shape[0]
    lo, hi = min(max(pl, 0), width), min(width, max(pl + wd, 0))  # row positions inside the image
    span = width - (kw - 1) * dw  # positions whose whole column window fits the row
    low = -np.inf
    pairs = sw == 2 and dw == 1
    for q in range(width):  # positions outside [lo, hi) are padding: -inf, never written again
        row[U(q)] = low
    for n in range(n_img):
        for c in range(c_in):
            for r in range(oh):
                top = r * sh - pt
                if kh == 3 and top >= 0 and top + 2 * dh < h:  # all the window's rows in the image: one loop
                    for q in range(lo, hi):
                        u = x[n, c, top, U(q - pl)]
                        v = x[n, c, top + dh, U(q - pl)]
                        u = u if (u > v or u != u) else v
                        v = x[n, c, top + 2 * dh, U(q - pl)]
                        row[U(q)] = u if (u > v or u != u) else v
                elif kh == 2 and top >= 0 and top + dh < h:
                    for q in range(lo, hi):
                        u = x[n, c, top, U(q - pl)]
                        v = x[n, c, top + dh, U(q - pl)]
                        row[U(q)] = u if (u > v or u != u) else v
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
                                v = x[n, c, rr, U(q - pl)]
                                u = row[U(q)]
                                row[U(q)] = u if (u > v or u != u) else v
                    if first:  # every window row is padding
                        for q in range(lo, hi):
                            row[U(q)] = low
                if pairs and kw == 3:  # a literal stride: the loop vectorises, 1.3x the general one
                    for q in range(ow):
                        u = row[U(2 * q)]
                        v = row[U(2 * q + 1)]
                        u = u if (u > v or u != u) else v
                        v = row[U(2 * q + 2)]
                        out[n, c, r, q] = u if (u > v or u != u) else v
                elif sw == 1 and dw == 1 and kw == 3:
                    for q in range(ow):
                        u = row[U(q)]
                        v = row[U(q + 1)]
                        u = u if (u > v or u != u) else v
                        v = row[U(q + 2)]
                        out[n, c, r, q] = u if (u > v or u != u) else v
                elif pairs and kw == 2:
                    for q in range(ow):
                        u = row[U(2 * q)]
                        v = row[U(2 * q + 1)]
                        out[n, c, r, q] = u if (u > v or u != u) else v
                else:
                    for q in range(span):
                        across[U(q)] = row[U(q)]
                    for j in range(1, kw):
                        for q in range(span):
                            u = across[U(q)]
                            v = row[U(q + j * dw)]
                            across[U(q)] = u if (u > v or u != u) else v
                    for q in range(ow):
                        out[n, c, r, q] = across[U(q * sw)]
    return out


max_pool2d = compiled(_max_pool2d)


def warm() -> None:
    """Each loop once on a tiny float32 input, contiguous and strided (a view's layout is a machine
    code of its own): what a model's kernels call, loaded before a run needs it."""
    x = np.zeros((1, 2, 4, 4), dtype=np.float32)
    for v in (x, x.transpose(0, 1, 3, 2)):
        max_pool2d(v, 3, 3, 1, 1, 1, 1, 0, 0, np.empty((1, 2, 2, 2), dtype=np.float32),
                   np.empty(4, dtype=np.float32), np.empty(4, dtype=np.float32))
        depthwise3x3(v, np.zeros((2, 9), dtype=np.float32), np.zeros(2, dtype=np.float32), 1, 1, 0, 0,
                     np.empty((1, 2, 2, 2), dtype=np.float32), np.zeros(16, dtype=np.float32), 4)


__all__ = ["depthwise3x3", "max_pool2d", "warm"]
