"""Winograd F(2x2, 3x3): a stride-1 3x3 convolution as 16 products of (M, C) by (C, tiles), where
im2col makes one of (M, 9C) by (9C, pixels): 2.25x fewer multiply-adds (Lavin & Gray, "Fast
Algorithms for Convolutional Neural Networks", 2016; the F(2x2, 3x3) of cuDNN, oneDNN and NNPACK).

Each 4x4 input tile ``d`` (stride 2 over the padded image) becomes ``V = Bt d B``, each filter
``g`` becomes ``U = G g Gt`` (once per weight array, see ``transformed``), and each 2x2 output tile is
``At (U . V) A``, the elementwise product summed over input channels: for each of the 16 tile
positions, one GEMM. ``Bt`` and ``At`` hold only 0 and +-1 and ``G`` only 0, 1 and 1/2, so the
transforms add and subtract. The rounding is not im2col's, but its error against a float64 conv is
of the same order (``tests/kernels/test_winograd.py``), and the outputs a NaN or an infinity reaches
are the same; one difference in kind: an infinite input meets itself in the transforms' sums and
differences, so an output im2col gives as +-inf can read NaN (as in cuDNN's Winograd).

Used by ``hal.kernels.nn`` where it was measured faster and pays for its memory (``applies``):
VGG-19's 3x3 layers from 28x28 up 1.2-1.7x, ResNet-50's 128-channel ones 1.2-1.3x, 14x14 outputs from
256 channels; not where the products get narrow or the channels few (64-channel 56x56 layers run
faster as im2col since its columns are runs of whole rows).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np

from hal.kernels._sliding import _padded

#: Winograd for a 3x3 stride-1 conv with at least this many input and output channels ...
MIN_CHANNELS = 128
#: ... and at least this many output tiles (2x2 pixels each, so 20x20 outputs and up). The kept
#: transform costs 16/9 of the layer's weights in memory, and the time it saves grows with the
#: tiles each filter meets: 14x14 outputs (49 tiles) ran 1.05-1.35x, but Inception v1's four such
#: layers (96-160 channels) held 10 MB of transforms for a 33 MB plan, and 7x7 outputs (16 tiles)
#: gain nothing in a run (ResNet-50's 512-channel ones: 1.18x in isolation, 1.001x run against run,
#: for 34 MB) ...
MIN_TILES = 100
#: ... or from this many tiles (13x13 and 14x14 outputs) with at least this many channels, where
#: each tile's GEMMs are wide enough to pay for the memory: run against run, ResNet-50 (five
#: 256-channel layers, +21 MB of transforms on a 112 MB plan) 1.023x faster and VGG-19 (four
#: 512-channel ones) 1.036x; no other light-zoo model has such a layer
MID_TILES = 49
MID_MIN_CHANNELS = 256
#: (A large image, 56x56 outputs, took it from 64 channels on until im2col's columns became runs of
#: whole rows and its bias a row of the GEMM: since then im2col runs those layers faster, run
#: against run Inception v1 1.039x, Inception v2 1.031x, ResNet-50 1.028x, VGG-19 level.)
#: an image is transformed and multiplied this many tiles (whole tile rows) at a time, so a band's
#: 16 transformed tiles per channel stay in cache between the transform, the GEMMs and the output
#: transform (VGG's 112x112 and 224x224 layers: 1.2-1.3x with bands, 0.6-1.0x without; 128
#: channels at 56x56: 6.5 ms in bands against 8.3 whole; an image of up to this many tiles is one band)
BAND_TILES = 256

_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def applies(x: np.ndarray, w: np.ndarray, k: Sequence[int], s: Sequence[int], d: Sequence[int],
            begin: Sequence[int], end: Sequence[int], out: Sequence[int], group: int) -> bool:
    """Whether ``hal.kernels.nn``'s conv runs this one here: float32 work, 2-D, one group, 3x3,
    stride and dilation 1, no negative pads, a shape where it was measured faster, and read-only
    filters (a program's weights), whose transform is kept (``transformed``). Filters that may change
    between calls (a graph input, or weights a numeric policy rounds on each call) keep im2col: their
    transform on every call would cost more than it saves (21 ms for a 512 x 512 layer), as
    onnxruntime prepacks constant initializers only."""
    if (len(k) != 2 or group != 1 or tuple(k) != (3, 3) or tuple(s) != (1, 1) or tuple(d) != (1, 1)
            or min(*begin, *end) < 0 or x.dtype != np.float32 or not _fixed(w)):
        return False
    tiles = -(-out[0] // 2) * -(-out[1] // 2)
    least = min(x.shape[1], w.shape[0])
    return (least >= MIN_CHANNELS and tiles >= MIN_TILES) or (least >= MID_MIN_CHANNELS and tiles >= MID_TILES)


def _fixed(w: np.ndarray) -> bool:
    """Whether no one can write ``w``: it and every array it views are read-only."""
    a = w
    while isinstance(a, np.ndarray):
        if a.flags.writeable:
            return False
        a = a.base
    return True


#: filters are transformed this many bytes of float64 work at a time: a whole layer's would be
#: 8x the float32 result in transient buffers, left as holes in the heap the runs then carry in
#: their resident set (VGG-19: +100 MB)
WEIGHT_CHUNK = 1 << 20


def weights(w: np.ndarray) -> np.ndarray:
    """``G g Gt`` of every (M, C, 3, 3) filter, as (16, C, M) float32 (computed in float64): the
    right-hand operand of each tile position's GEMM over channels-last tiles (see ``conv``)."""
    m, c = w.shape[:2]
    u = np.empty((16, c, m), dtype=np.float32)
    per = max(1, WEIGHT_CHUNK // (16 * c * 8))
    for m0 in range(0, m, per):
        m1 = min(m, m0 + per)
        part = np.einsum("ai,mcij,bj->abcm", _G, w[m0:m1].astype(np.float64), _G, optimize=True)
        u[:, :, m0:m1] = part.reshape(16, c, m1 - m0)
    return u


_transformed: dict[int, tuple[weakref.ref, np.ndarray]] = {}


def transformed(w: np.ndarray) -> np.ndarray:
    """``weights(w)`` of a read-only array, computed on its first call and kept while it lives.

    A program's weights are read-only (``hal.engine.program``), so their transform is computed on the
    first run and reused by every later one. The entry is dropped when its array is freed (a weak
    reference), so a reused ``id`` never finds another array's transform."""
    key = id(w)
    hit = _transformed.get(key)
    if hit is not None and hit[0]() is w:
        return hit[1]
    u = weights(w)
    u.flags.writeable = False

    def forget(ref: weakref.ref, key: int = key) -> None:
        entry = _transformed.get(key)
        if entry is not None and entry[0] is ref:
            del _transformed[key]

    _transformed[key] = (weakref.ref(w, forget), u)
    return u


def conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, begin: Sequence[int], end: Sequence[int],
         out: Sequence[int]) -> np.ndarray:
    """The conv ``applies`` accepted, (N, M, *out) float32: ``x`` float32 (N, C, H, W), ``w`` the
    (M, C, 3, 3) filters (any float dtype: transformed in float64), ``b`` the bias or None.

    The work is channels-last: the padded image is copied once into an (H, W, C) buffer, so every
    add and subtract of the transforms runs along whole rows of channels (one row of C floats per
    tile), where the image's own layout gave runs of 7-16 strided floats per call; the products
    are (tiles, C) by (C, M), and their output transform is copied back to (M, H, W) a band at a time.
    The transforms' sums are the same, in the same order, as over the image's own layout; the
    products' sums over channels are BLAS's, as before."""
    n, c = x.shape[:2]
    u = transformed(w)
    m = u.shape[2]
    oh, ow = out
    th, tw = -(-oh // 2), -(-ow // 2)
    hp, wp = 2 * th + 2, 2 * tw + 2
    # pads widened to whole tiles: the extra row or column only reaches an output that is cropped
    wide_end = (end[0] + hp - (x.shape[2] + begin[0] + end[0]), end[1] + wp - (x.shape[3] + begin[1] + end[1]))
    rows = max(1, min(th, BAND_TILES // tw))
    bias = None if b is None else b.astype(np.float32, copy=False)
    y = np.empty((n, m, oh, ow), dtype=np.float32)
    image = np.empty((hp, wp, c), dtype=np.float32)          # the padded image, channels last
    rt = np.empty((4, rows, wp, c), dtype=np.float32)        # the row transform of a band
    v = np.empty((16, rows, tw, c), dtype=np.float32)        # Bt d B, tile position first
    prod = np.empty((16, rows * tw, m), dtype=np.float32)    # U . V summed over channels
    half = np.empty((2, 4, rows, tw, m), dtype=np.float32)   # At applied to the rows of prod
    for i in range(n):
        xi = x[i:i + 1]
        if _padded(xi, begin, wide_end, 0, out=image.transpose(2, 0, 1)[None]) is xi:
            np.copyto(image, x[i].transpose(1, 2, 0))  # unpadded whole tiles: _padded copied nothing
        for r0 in range(0, th, rows):
            r1 = min(th, r0 + rows)
            k = r1 - r0
            _input_transform(image, r0, r1, tw, rt[:, :k], v[:, :k])
            p = prod[:, :k * tw]
            np.matmul(v[:, :k].reshape(16, k * tw, c), u, out=p)
            if bias is not None:  # At's sums take position (1, 1) into all four outputs of its tile
                p[5] += bias
            # the band's outputs, (rows, 2, tw, 2, M), over the products it no longer needs
            grid = prod.reshape(-1)[:4 * k * tw * m].reshape(k, 2, tw, 2, m)
            _output_transform(p, half[:, :, :k], grid)
            o0, o1 = 2 * r0, min(oh, 2 * r1)
            np.copyto(y[i, :, o0:o1], grid.reshape(2 * k, 2 * tw, m)[:o1 - o0, :ow].transpose(2, 0, 1))
    return y


def _input_transform(image: np.ndarray, r0: int, r1: int, tw: int, rt: np.ndarray, v: np.ndarray) -> None:
    """``Bt d B`` of tile rows r0..r1 of the padded image (hp, wp, C) into ``v`` (16, k, tw, C).
    Bt = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], along rows, then columns."""
    d = [image[2 * r0 + j:2 * r1 + j:2] for j in range(4)]   # row j of every tile: (k, wp, C)
    np.subtract(d[0], d[2], out=rt[0])
    np.add(d[1], d[2], out=rt[1])
    np.subtract(d[2], d[1], out=rt[2])
    np.subtract(d[1], d[3], out=rt[3])
    for a in range(4):
        q = [rt[a][:, j:j + 2 * tw:2] for j in range(4)]     # column j of every tile: (k, tw, C)
        np.subtract(q[0], q[2], out=v[4 * a])
        np.add(q[1], q[2], out=v[4 * a + 1])
        np.subtract(q[2], q[1], out=v[4 * a + 2])
        np.subtract(q[1], q[3], out=v[4 * a + 3])


def _output_transform(p: np.ndarray, half: np.ndarray, grid: np.ndarray) -> None:
    """``At m A`` of the products ``p`` (16, k * tw, M) into ``grid`` (k, 2, tw, 2, M), the output
    rows of those tiles. At = [[1, 1, 1, 0], [0, 1, -1, -1]], along rows, then columns."""
    q = p.reshape(4, 4, *half.shape[2:])
    np.add(q[0], q[1], out=half[0])
    half[0] += q[2]
    np.subtract(q[1], q[2], out=half[1])
    half[1] -= q[3]
    for a in range(2):
        h = half[a]
        np.add(h[0], h[1], out=grid[:, a, :, 0])
        grid[:, a, :, 0] += h[2]
        np.subtract(h[1], h[2], out=grid[:, a, :, 1])
        grid[:, a, :, 1] -= h[3]
