"""onnxruntime's contrib twins of ONNX ops and its other small contrib ops (domain ``com.microsoft``),
as onnxruntime 1.32's CPU kernels compute them. Older exporters and onnxruntime's own tools write
them: Keras Mask R-CNN's Range, Pad, GatherND, ExpandDims, CropAndResize; torch's custom-op export
of grid_sample before opset 16 (GridSample); FusedMatMul's former name, TransposeMatMul.

* TransposeMatMul is FusedMatMul without the batch transposes: alpha x op(A) @ op(B).
* Range: start, limit and an optional delta (1 when absent), scalars or one-element 1-D tensors; n
  = ceil(double(limit - start) / delta) values, each the last plus delta in the input's type
  (accumulated, as onnxruntime writes them, not start + i x delta as ONNX's Range); delta 0 fails.
* Pad: ONNX's Pad with ``pads`` an input ([2 x rank] or [1, 2 x rank]) and an optional scalar
  ``value``; constant, reflect, edge or wrap; a negative pad crops; reflect pads at most dim - 1.
* Trilu and GatherND (int32 or int64 indices, negative ones counted from the end, no batch_dims) as
  the ONNX ops; ExpandDims inserts a 1 at ``axis`` (an int32 scalar in [-rank - 1, rank]).
* GridSample: ONNX's of opset 16 on 4-D input (bilinear, nearest, bicubic; zeros, border,
  reflection padding).
* Unique: a 1-D input's distinct values in order of first appearance, each element's index among
  them, and their counts (ONNX's Unique with sorted=0, outputs 0, 2 and 3); every NaN is its own
  value, -0.0 and 0.0 one (the first written).
* Inverse: each trailing square matrix's inverse, in float64 rounded once: 1 x 1 to 3 x 3 by the
  adjugate over the determinant (a singular one gives inf / nan, as Eigen's closed forms), larger
  ones by LU (singular: nan). onnxruntime inverts float16 in float16 arithmetic (Eigen::half, every
  step rounded): hal's float16 result is the more exact, within 2% of onnxruntime's.
* CDist: A (M, K) against B (N, K): |(-2 A B^T + |a|^2) + |b|^2| in the inputs' type, its square
  root for ``metric`` euclidean.
* CropAndResize: TensorFlow's crop_and_resize, NCHW: each box [y1, x1, y2, x2] (normalised,
  corner-aligned) of image batch_indices[i] sampled at crop_size (h, w) points, bilinear or nearest
  (half away from zero), points outside the image the extrapolation value; in float32.
* ScaledSiLU: z = T(scale x), y = T(z x T(sigmoid(z))) with the scalar ``scale`` input, else
  ``alpha``, products in float32.
* MatMulBnb4 (onnxruntime.quantization.matmul_bnb4_quantizer): A @ W^T, W (N, K) unpacked from
  bitsandbytes' FP4 / NF4 codes (``bnb4_weight``), in float32.

Refused (``refuses``, at compile time, as onnxruntime refuses the node when the session is built):
TransposeMatMul's transBatchA / transBatchB (not in its schema), Pad modes other than the four,
GridSample modes other than bilinear / nearest / bicubic and padding other than the three,
CropAndResize modes other than bilinear / nearest, CDist metrics other than sqeuclidean /
euclidean; MatMulBnb4's quant_type other than 0 / 1, block_size other than 16 ... 256 (onnxruntime
fails it when it runs) and transB=0 (its CPU kernel reads B transposed whatever transB says).
Shapes for compile-time planning come from ``hal.graph.contrib``.
"""

from __future__ import annotations

import math

import numpy as np

from hal.kernels.activation import expf
from hal.kernels.contrib_fused import fused_matmul
from hal.kernels.image import grid_sample
from hal.kernels.indexing import gather_nd
from hal.kernels.registry import kernel
from hal.kernels.tensor import _pad, trilu

Array = np.ndarray
DOMAIN = "com.microsoft"
_F32 = np.float32


def _one_of(op: str, name: str, allowed: tuple[str, ...], default: str):
    def refuses(attrs: dict, inputs: list[str], outputs: list[str]) -> str | None:
        got = str(attrs.get(name, default))
        if got not in allowed:
            return f"{op} {name} {got!r}: onnxruntime's CPU kernel takes {', '.join(allowed)}"
        return None
    return refuses


def _scalar_like(v: Array, op: str, name: str) -> Array:
    """A scalar or one-element 1-D tensor's value (onnxruntime's IsScalar)."""
    if not (v.ndim == 0 or v.shape == (1,)):
        raise ValueError(f"{op} {name} must be a scalar (or a one-element 1-D tensor), got shape {v.shape}")
    return v.reshape(-1)[0]


# --- TransposeMatMul -------------------------------------------------------------------------------

def _transpose_matmul_refuses(attrs: dict, inputs: list[str], outputs: list[str]) -> str | None:
    extra = [a for a in ("transBatchA", "transBatchB") if a in attrs]
    if extra:
        return f"TransposeMatMul has no attribute {', '.join(extra)} (FusedMatMul does; onnxruntime refuses it here)"
    return None


@kernel("TransposeMatMul", since=1, domain=DOMAIN, refuses=_transpose_matmul_refuses)
def transpose_matmul(A, B, *, alpha=1.0, transA=0, transB=0):
    return fused_matmul(A, B, alpha=alpha, transA=transA, transB=transB)


# --- Range, Pad, Trilu, ExpandDims, GatherND -------------------------------------------------------

@kernel("Range", since=1, domain=DOMAIN)
def range_(start, limit, delta=None):
    dtype = start.dtype
    s = _scalar_like(start, "Range", "start")
    lim = _scalar_like(limit, "Range", "limit")
    d = dtype.type(1) if delta is None else _scalar_like(delta, "Range", "delta")
    if d == 0:
        raise ValueError("Range delta can not be zero")
    if dtype.kind in "iu":
        n = math.ceil((int(lim) - int(s)) / int(d))
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            q = float(dtype.type(lim - s)) / float(d)
        if not math.isfinite(q):
            raise ValueError(f"Range from {s} to {lim} by {d} has no finite length")
        n = math.ceil(q)
    steps = np.full(max(n, 0), d, dtype=dtype)
    if steps.size:
        steps[0] = s
    with np.errstate(over="ignore"):
        return np.cumsum(steps, dtype=dtype)  # start, then start += delta, as onnxruntime writes


_PAD_MODES = ("constant", "reflect", "edge", "wrap")


@kernel("Pad", since=1, domain=DOMAIN, refuses=_one_of("Pad", "mode", _PAD_MODES, "constant"))
def pad(data, pads, value=None, mode="constant"):
    mode = str(mode)
    p = pads.astype(np.int64).reshape(-1)
    if pads.ndim not in (1, 2) or (pads.ndim == 2 and pads.shape[0] != 1) or p.size != 2 * data.ndim:
        raise ValueError(f"Pad pads must be [2 x rank] or [1, 2 x rank] ({2 * data.ndim} values for a rank-"
                         f"{data.ndim} input), got shape {pads.shape}")
    if value is not None:
        value = _scalar_like(value, "Pad", "value")
    if mode == "reflect":
        for axis, dim in enumerate(data.shape):
            for side, width in (("pre", p[axis]), ("post", p[axis + data.ndim])):
                if width > max(dim - 1, 0):
                    raise ValueError(f"Pad reflect: {side}-pad ({width}) exceeds the most allowed ({dim - 1}) for "
                                     f"axis {axis} of input shape {data.shape}")
    return _pad(data, [int(v) for v in p], mode, value, None)


kernel("Trilu", since=1, domain=DOMAIN)(trilu)


@kernel("ExpandDims", since=1, domain=DOMAIN)
def expand_dims(x, axis):
    a = int(_scalar_like(axis, "ExpandDims", "axis"))
    if not -x.ndim - 1 <= a <= x.ndim:
        raise ValueError(f"ExpandDims axis must lie in [{-x.ndim - 1}, {x.ndim}] for a rank-{x.ndim} input, got {a}")
    return np.expand_dims(x, a if a >= 0 else a + x.ndim + 1)


@kernel("GatherND", since=1, domain=DOMAIN)
def gather_nd_contrib(data, indices):
    if indices.ndim < 1 or indices.shape[-1] > data.ndim:
        raise ValueError(f"GatherND indices' last axis ({indices.shape[-1:]}) must be at most data's rank "
                         f"({data.ndim})")
    bound = np.array(data.shape[:indices.shape[-1]], dtype=np.int64)
    idx = indices.astype(np.int64)
    if np.any((idx < -bound) | (idx >= bound)):
        bad = idx[(idx < -bound) | (idx >= bound)][0]
        raise ValueError(f"GatherND: invalid index found, index = {bad}, data shape {data.shape}")
    return gather_nd(data, idx)


# --- GridSample -----------------------------------------------------------------------------------

_GRID_MODES = ("bilinear", "nearest", "bicubic")
_GRID_PADDING = ("zeros", "border", "reflection")


def _grid_refuses(attrs: dict, inputs: list[str], outputs: list[str]) -> str | None:
    return (_one_of("GridSample", "mode", _GRID_MODES, "bilinear")(attrs, inputs, outputs)
            or _one_of("GridSample", "padding_mode", _GRID_PADDING, "zeros")(attrs, inputs, outputs))


@kernel("GridSample", since=1, domain=DOMAIN, refuses=_grid_refuses)
def grid_sample_contrib(X, Grid, align_corners=0, mode="bilinear", padding_mode="zeros"):
    if X.ndim != 4 or Grid.ndim != 4 or Grid.shape[-1] != 2 or Grid.shape[0] != X.shape[0]:
        raise ValueError(f"GridSample (com.microsoft) takes X (N, C, H, W) and Grid (N, H_out, W_out, 2), got X "
                         f"{X.shape} and Grid {Grid.shape}")
    wide = X.dtype.itemsize < 4 or Grid.dtype.itemsize < 4  # onnxruntime's float kernel, through casts
    y = grid_sample(X.astype(_F32) if wide else X, Grid.astype(_F32) if wide else Grid, align_corners=align_corners,
                    mode=str(mode), padding_mode=str(padding_mode))
    return y.astype(X.dtype)


# --- Unique, Inverse, CDist ------------------------------------------------------------------------

@kernel("Unique", since=1, domain=DOMAIN)
def unique(x):
    if x.ndim != 1:
        raise ValueError(f"Unique (com.microsoft) takes a 1-D input, got shape {x.shape}")
    kw = {"equal_nan": False} if x.dtype.kind in "fc" else {}
    _, first, inverse, counts = np.unique(x, return_index=True, return_inverse=True, return_counts=True, **kw)
    order = np.argsort(first, kind="stable")  # by first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    i64 = np.int64
    return x[first[order]], rank[inverse.reshape(-1)].astype(i64), counts[order].astype(i64)


def _adjugate_inverse(m: Array) -> Array:
    """Small matrices' inverse as the adjugate times 1 / determinant, float64."""
    n = m.shape[-1]
    if n == 1:
        return 1.0 / m
    if n == 2:
        a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
        adj = np.stack([np.stack([d, -b], -1), np.stack([-c, a], -1)], -2)
        det = a * d - b * c
    else:
        cof = np.empty_like(m)
        for i in range(3):
            for j in range(3):
                r, c = [k for k in range(3) if k != i], [k for k in range(3) if k != j]
                sub = m[..., r, :][..., :, c]
                cof[..., i, j] = (-1) ** (i + j) * (sub[..., 0, 0] * sub[..., 1, 1] - sub[..., 0, 1] * sub[..., 1, 0])
        adj = np.swapaxes(cof, -1, -2)
        det = (m[..., 0, :] * cof[..., 0, :]).sum(-1)
    return adj * (1.0 / det)[..., None, None]


@kernel("Inverse", since=1, domain=DOMAIN)
def inverse(x):
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"Inverse takes square matrices in its last two axes, got shape {x.shape}")
    m = x.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if x.shape[-1] <= 3:
            y = _adjugate_inverse(m)
        else:
            flat = m.reshape(-1, *m.shape[-2:])
            y = np.empty_like(flat)
            for i, a in enumerate(flat):
                try:
                    y[i] = np.linalg.inv(a)
                except np.linalg.LinAlgError:
                    y[i] = np.nan
            y = y.reshape(m.shape)
        return y.astype(x.dtype)


_METRICS = ("sqeuclidean", "euclidean")


@kernel("CDist", since=1, domain=DOMAIN, refuses=_one_of("CDist", "metric", _METRICS, "sqeuclidean"))
def cdist(A, B, metric="sqeuclidean"):
    if A.ndim != 2 or A.shape[1] <= 0 or B.ndim != 2 or A.shape[1] != B.shape[1]:
        raise ValueError(f"CDist takes A (M, K) and B (N, K) with K > 0, got A {A.shape} and B {B.shape}")
    t = A.dtype.type
    a_ss = np.einsum("ij,ij->i", A, A)
    b_ss = np.einsum("ij,ij->i", B, B)
    c = np.abs((t(-2) * (A @ B.T) + a_ss[:, None]) + b_ss[None, :])
    return np.sqrt(c) if str(metric) == "euclidean" else c


# --- CropAndResize ----------------------------------------------------------------------------------

def _crop_points(start: Array, end: Array, size: int, crop: int) -> Array:
    """Each box's sample positions along one axis (boxes, crop), float32 as onnxruntime computes them."""
    edge = _F32(size - 1)
    if crop == 1:
        return (0.5 * (start + end).astype(np.float64) * (size - 1)).astype(_F32)[:, None]
    scale = (end - start) * edge / _F32(crop - 1)
    pts = start[:, None] * edge + np.arange(crop, dtype=_F32)[None, :] * scale[:, None]
    pts[:, 0], pts[:, -1] = start * edge, end * edge
    return pts


def _round_half_away(v: Array) -> Array:
    """roundf of non-negative values, as indices."""
    low = np.floor(v)
    return np.where(v - low >= 0.5, low + 1, low).astype(np.intp)


@kernel("CropAndResize", since=1, domain=DOMAIN,
        refuses=_one_of("CropAndResize", "mode", ("bilinear", "nearest"), "bilinear"))
def crop_and_resize(X, rois, batch_indices, crop_size, extrapolation_value=0.0, mode="bilinear"):
    if X.ndim != 4 or rois.ndim != 2 or rois.shape[1] != 4 or batch_indices.ndim != 1 \
            or batch_indices.shape[0] != rois.shape[0]:
        raise ValueError(f"CropAndResize takes X (N, C, H, W), rois (num_rois, 4) and batch_indices (num_rois), got "
                         f"{X.shape}, {rois.shape} and {batch_indices.shape}")
    if crop_size.ndim != 1 or crop_size.shape[0] < 2:
        raise ValueError(f"CropAndResize crop_size must be 1-D (height, width), got shape {crop_size.shape}")
    n, channels, height, width = X.shape
    ch, cw = int(crop_size[0]), int(crop_size[1])
    if ch < 0 or cw < 0:
        raise ValueError(f"CropAndResize crop_size must not be negative, got {crop_size.tolist()}")
    if np.any((batch_indices < 0) | (batch_indices >= n)):
        raise ValueError(f"CropAndResize batch_indices must lie in [0, {n}), got {batch_indices.tolist()}")
    r = rois.astype(_F32)
    fill = _F32(extrapolation_value)
    if not (ch and cw and r.shape[0]):
        return np.full((r.shape[0], channels, ch, cw), fill, X.dtype)
    ys = _crop_points(r[:, 0], r[:, 2], height, ch)  # (rois, ch)
    xs = _crop_points(r[:, 1], r[:, 3], width, cw)  # (rois, cw)
    inside = ((ys >= 0) & (ys <= height - 1))[:, :, None] & ((xs >= 0) & (xs <= width - 1))[:, None, :]
    img = X.astype(_F32)[batch_indices.astype(np.intp)]  # (rois, C, H, W)
    rows = np.arange(r.shape[0])[:, None, None]
    yc, xc = np.clip(ys, 0, height - 1), np.clip(xs, 0, width - 1)
    if str(mode) == "nearest":
        yi = _round_half_away(yc)[:, :, None]
        xi = _round_half_away(xc)[:, None, :]
        out = np.moveaxis(img, 1, -1)[rows, yi, xi]  # (rois, ch, cw, C)
    else:
        top, left = np.floor(yc), np.floor(xc)
        y_lerp, x_lerp = (yc - top)[:, :, None, None], (xc - left)[:, None, :, None]
        t, b = top.astype(np.intp)[:, :, None], np.ceil(yc).astype(np.intp)[:, :, None]
        lft, rgt = left.astype(np.intp)[:, None, :], np.ceil(xc).astype(np.intp)[:, None, :]
        hw = np.moveaxis(img, 1, -1)  # (rois, H, W, C)
        tl, tr, bl, br = hw[rows, t, lft], hw[rows, t, rgt], hw[rows, b, lft], hw[rows, b, rgt]
        upper = tl + (tr - tl) * x_lerp
        lower = bl + (br - bl) * x_lerp
        out = upper + (lower - upper) * y_lerp
    out = np.where(inside[..., None], out, fill)
    return np.moveaxis(out, -1, 1).astype(X.dtype)


# --- ScaledSiLU ------------------------------------------------------------------------------------

@kernel("ScaledSiLU", since=1, domain=DOMAIN)
def scaled_silu(X, scale=None, alpha=1.0):
    if scale is not None and scale.ndim != 0:
        raise ValueError(f"ScaledSiLU scale must be a scalar, got shape {scale.shape}")
    s = _F32(alpha) if scale is None else _F32(scale[()])
    t = X.dtype
    z = (X.astype(_F32) * s).astype(t).astype(_F32)
    with np.errstate(over="ignore"):
        e = expf(-np.abs(z))
        sig = np.where(z >= 0, _F32(1) / (_F32(1) + e), e / (_F32(1) + e))
    sig = sig.astype(t).astype(_F32)
    return np.asarray(z * sig).astype(t)  # (a 0-d X: an array, not numpy's scalar)


# --- MatMulBnb4 ------------------------------------------------------------------------------------

#: bitsandbytes' 4-bit code values, FP4 (quant_type 0) and NF4 (1), as onnxruntime's float32 tables
_BNB4_MAPS = (
    np.array([0.0, 5.208333333e-03, 0.66666667, 1.0, 0.33333333, 0.5, 0.16666667, 0.25,
              -0.0, -5.208333333e-03, -0.66666667, -1.0, -0.33333333, -0.5, -0.16666667, -0.25], _F32),
    np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
              -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
              0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
              0.7229568362236023, 1.0], _F32))
_BNB4_BLOCKS = (16, 32, 64, 128, 256)


def _bnb4_refuses(attrs: dict, inputs: list[str], outputs: list[str]) -> str | None:
    missing = [a for a in ("K", "N", "block_size", "quant_type") if a not in attrs]
    if missing:
        return f"MatMulBnb4 needs the attributes {', '.join(missing)}"
    if int(attrs["quant_type"]) not in (0, 1):
        return f"MatMulBnb4 quant_type must be 0 (FP4) or 1 (NF4), got {attrs['quant_type']}"
    if int(attrs["block_size"]) not in _BNB4_BLOCKS:
        return (f"MatMulBnb4 block_size {attrs['block_size']}: onnxruntime's CPU kernel computes "
                f"{', '.join(map(str, _BNB4_BLOCKS))}")
    if not int(attrs.get("transB", 1)):
        return "MatMulBnb4 transB=0: onnxruntime's CPU kernel reads B as transposed whatever transB says"
    return None


def bnb4_weight(B: Array, absmax: Array, K: int, N: int, block_size: int, quant_type: int) -> Array:
    """The (N, K) float32 weight: element i of its row-major order is byte i // 2's high nibble (even
    i) or low one (odd i), its code's value times block i // block_size's absmax."""
    count = N * K
    blocks = -(-count // block_size)
    if B.dtype != np.uint8 or B.size != (count + 1) // 2 or absmax.size != blocks:
        raise ValueError(f"MatMulBnb4 B must hold (N x K + 1) / 2 = {(count + 1) // 2} bytes and absmax (N x K / "
                         f"block_size, rounded up) = {blocks} scales for N={N}, K={K}, block_size={block_size}; got "
                         f"B {B.dtype} {B.shape} and absmax {absmax.shape}")
    packed = B.reshape(-1)
    codes = np.stack([packed >> 4, packed & 0xF], axis=-1).reshape(-1)[:count]
    scale = np.repeat(absmax.astype(_F32).reshape(-1), block_size)[:count]
    return (_BNB4_MAPS[quant_type][codes] * scale).reshape(N, K)


@kernel("MatMulBnb4", since=1, domain=DOMAIN, refuses=_bnb4_refuses)
def matmul_bnb4(A, B, absmax, *, K, N, block_size, quant_type, transB=1, training_mode=0):
    """A (..., K) @ W^T, W the (N, K) weight ``bnb4_weight`` unpacks; float32 (float16 / bfloat16
    widened and the result rounded once, as onnxruntime's float kernel through its casts)."""
    if not A.ndim or A.shape[-1] != K:
        raise ValueError(f"MatMulBnb4 A's last axis must be K={K}, got shape {A.shape}")
    w = bnb4_weight(B, absmax, int(K), int(N), int(block_size), int(quant_type))
    return np.matmul(A.astype(_F32), w.T).astype(A.dtype)
