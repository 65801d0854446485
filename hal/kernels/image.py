"""Image and detection kernels: Resize, GridSample, AffineGrid, RoiAlign, NonMaxSuppression, DeformConv.

Resize is separable: each resized axis is a weighted sum of a few taps per output (nearest: one;
linear and cubic: two and four, more under the antialiasing stretch), one gather and one
multiply-add a tap; edge taps clamp to the border, as ONNX's edge padding does. (A dense (out, in)
weight matrix per axis grows with the product of the two lengths: 26.6 GiB for 65,536 -> 54,381
channels, the fuzzer found, where the taps take 0.9 MB; and NaN times the matrix's zeros spread
to every output along the axis.) GridSample, RoiAlign and DeformConv gather every tap of every
sampling point at once with advanced indexing and sum weighted taps, one vectorised pass per tap
corner. NonMaxSuppression walks each class's boxes greedily, best first, and works out the IoU of a
kept box against all the others in one vectorised pass.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import ml_dtypes
import numpy as np

from hal.kernels.registry import kernel

Array = np.ndarray


def _saturate(y: Array, dtype: np.dtype) -> Array:
    """A float64 result cast to ``dtype``: integers round half to even, every type clips to its range."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(y), info.min, info.max).astype(dtype)
    if dtype == np.float64:
        return np.asarray(y)
    info = ml_dtypes.finfo(dtype)
    return np.clip(y, float(info.min), float(info.max)).astype(dtype)


def _cubic(a: float) -> Callable[[Array], Array]:
    """Keys' cubic convolution kernel with coefficient ``a``, as a function of the tap distance."""

    def weight(d: Array) -> Array:
        d = np.abs(d)
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        return np.where(d <= 1, near, np.where(d < 2, far, 0.0))

    return weight


def _linear(d: Array) -> Array:
    return np.clip(1 - np.abs(d), 0, 1)


# --- Resize ----------------------------------------------------------------------------------------
# Sizes and source coordinates are worked out in float64 from the float32 scales, as onnx's reference
# and shape inference work them out, and align_corners (tf_crop_and_resize too) divides by the fractional
# output width a scale gives (the spec's output_width, not output_width_int; onnx/onnx#2462 and the backend's
# test_resize_downsample_scales_linear_align_corners). onnxruntime computes in float32 and divides by
# the integer width, so a converter's scale of out / in rounded to float32 can end up a row longer
# (floor(6 * 0.8333333f): 5 there, 4 here) or a nearest pixel over: exporters that mean a size should
# write sizes, as the onnx maintainers advise.


def _source_coords(mode: str, n_out: int, n_in: int, scale: float, roi: tuple[float, float] | None
                   ) -> Array:
    """The input coordinate each output index maps to (``coordinate_transformation_mode``); ``roi``
    is tf_crop_and_resize's (start in input pixels, length as a fraction of the axis, half the length in
    pixels): ``_crop_window``."""
    y = np.arange(n_out, dtype=np.float64)
    out_width = scale * n_in  # fractional when it comes from a scale factor
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        # the spec's n_in / 2 (1 - n_out / out_width) + (y + 0.5) / scale - 0.5, rearranged to round
        # once less: 7 -> 3 at 0.5 maps to 1, 3, 5 exactly (the spec's order: 1 + 2^-52, whose ceil is 2)
        return (n_in - 1) / 2 + (2 * y + 1 - n_out) / (2 * scale)
    if mode == "pytorch_half_pixel":
        return np.full(n_out, -0.5) if out_width == 1 else (y + 0.5) / scale - 0.5
    if mode == "align_corners":
        return np.zeros(n_out) if out_width == 1 else y * (n_in - 1) / (out_width - 1)
    if mode == "asymmetric":
        return y / scale
    if mode == "tf_half_pixel_for_nn":  # Resize-11's; onnxruntime still runs it at later opsets, and
        return (y + 0.5) / scale  # tf2onnx writes it for every half-pixel nearest resize at every opset
    if mode == "tf_crop_and_resize":
        start, length, middle = roi if roi is not None else (0.0, 1.0, (n_in - 1) / 2)
        if out_width == 1:
            return np.full(n_out, middle + start)
        return y * length * (n_in - 1) / (out_width - 1) + start
    raise ValueError(f"Resize: unknown coordinate_transformation_mode {mode!r}")


def _crop_window(start: np.floating, end: np.floating, n_in: int) -> tuple[float, float, float]:
    """A tf_crop_and_resize roi's (start in pixels, length, half the length in pixels: a one-pixel output's
    offset from the start) on an axis of ``n_in`` pixels, each worked out in the roi's own dtype as onnx's
    reference does (0.6 of 5 pixels is 3 in float32; in float64 of the float32 0.6, 3 + 4.5e-8, a pixel
    over for ceil, and half of it 1.5 + 6e-8, a pixel over for round_prefer_floor)."""
    pixels, two = start.dtype.type(n_in - 1), start.dtype.type(2)
    return float(start * pixels), float(end - start), float((end - start) * pixels / two)


def _nearest_index(x: Array, nearest_mode: str, n_in: int, scale: float) -> Array:
    if nearest_mode == "round_prefer_floor":
        idx = np.ceil(x - 0.5)
    elif nearest_mode == "round_prefer_ceil":
        idx = np.floor(x + 0.5)
    elif nearest_mode == "floor":
        idx = np.floor(x)
    elif nearest_mode == "ceil":
        idx = np.ceil(x)
    elif nearest_mode == "simple":  # Resize-10's, which had no nearest_mode: down when upsampling, else up
        idx = np.floor(x) if scale >= 1 else np.ceil(x)
    else:
        raise ValueError(f"Resize: unknown nearest_mode {nearest_mode!r}")
    return np.clip(idx, 0, n_in - 1).astype(np.intp)


def _taps(x: Array, n_in: int, mode: str, scale: float, antialias: int, cubic_coeff_a: float,
          exclude_outside: int) -> tuple[Array, Array]:
    """(indices, weights), both (out, taps), for source coordinates ``x``: output i is the sum over t
    of weights[i, t] times input indices[i, t]; outside taps hit the edge."""
    support, fn = (1.0, _linear) if mode == "linear" else (2.0, _cubic(cubic_coeff_a))
    stretch = min(scale, 1.0) if antialias else 1.0  # the antialias filter widens by 1 / scale
    reach = math.ceil(support / stretch)
    taps = np.floor(x)[:, None] + np.arange(1 - reach, reach + 1)[None, :]
    w = fn((taps - x[:, None]) * stretch)
    if exclude_outside:
        w = np.where((taps < 0) | (taps >= n_in), 0.0, w)
    if antialias or exclude_outside:
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    return np.clip(taps, 0, n_in - 1).astype(np.intp), w


#: at most this many taps an output are summed one gather at a time (two arrays of the output's size
#: live); more (antialiasing a large downscale: about 2 / scale taps) are gathered at once, about
#: twice the input's size along the axis, where a Python loop over every tap would run for minutes
LOOPED_TAPS = 8


def _interpolate(x: Array, axis: int, idx: Array, w: Array) -> Array:
    """``x`` resampled along ``axis``: output i is the sum over t of w[i, t] * x[idx[i, t]] (``_taps``)."""
    n_out, taps = idx.shape
    along = [1] * x.ndim
    along[axis] = n_out
    if taps > LOOPED_TAPS:
        gathered = np.take(x, idx.reshape(-1), axis=axis)
        gathered = gathered.reshape(*x.shape[:axis], n_out, taps, *x.shape[axis + 1:])
        return np.einsum(gathered, [*range(axis), axis, x.ndim, *range(axis + 1, x.ndim)], w, [axis, x.ndim],
                         list(range(x.ndim)))
    acc = np.take(x, idx[:, 0], axis=axis) * w[:, 0].reshape(along)
    for t in range(1, taps):
        acc += np.take(x, idx[:, t], axis=axis) * w[:, t].reshape(along)
    return acc


def _resize(x: Array, scales: Sequence[float], sizes: Sequence[int], roi: Array | None, axes: Sequence[int],
            mode: str, coord_mode: str, nearest_mode: str, cubic_coeff_a: float, exclude_outside: int,
            extrapolation_value: float, antialias: int) -> Array:
    r = x.ndim
    out = x if mode == "nearest" else x.astype(np.float64)
    outside = np.zeros((1,) * r, dtype=bool)
    for i, axis in enumerate(axes):
        n_in, n_out, scale = x.shape[axis], int(sizes[i]), float(scales[i])
        crop = coord_mode == "tf_crop_and_resize"
        axis_roi = None if roi is None else _crop_window(roi[i], roi[i + len(axes)], n_in)
        if n_out == n_in and scale == 1.0 and (not crop or axis_roi is None or axis_roi[:2] == (0.0, 1.0)):
            continue
        src = _source_coords(coord_mode, n_out, n_in, scale, axis_roi)
        if crop:
            shape = [1] * r
            shape[axis] = n_out
            outside = outside | ((src < 0) | (src > n_in - 1)).reshape(shape)
        if mode == "nearest":
            out = np.take(out, _nearest_index(src, nearest_mode, n_in, scale), axis=axis)
        elif mode in ("linear", "cubic"):
            out = _interpolate(out, axis, *_taps(src, n_in, mode, scale, antialias, cubic_coeff_a, exclude_outside))
        else:
            raise ValueError(f"Resize: unknown mode {mode!r}")
    if outside.any():
        out = np.where(outside, extrapolation_value, out)
    if out is x:
        return x.copy()
    return out.astype(x.dtype) if mode == "nearest" and not outside.any() else _saturate(out, x.dtype)


def _vector(v: Array | None) -> Array | None:
    """An optional 1-D input, or None when it is absent or empty."""
    if v is None:
        return None
    v = np.asarray(v).reshape(-1)
    return v if v.size else None


@kernel("Resize", since=11)
def resize(x: Array, roi: Array | None = None, scales: Array | None = None, sizes: Array | None = None,
           antialias: int = 0, axes: Sequence[int] | None = None, coordinate_transformation_mode: str = "half_pixel",
           cubic_coeff_a: float = -0.75, exclude_outside: int = 0, extrapolation_value: float = 0.0,
           keep_aspect_ratio_policy: str = "stretch", mode: str = "nearest",
           nearest_mode: str = "round_prefer_floor") -> Array:
    r = x.ndim
    axes = [a % r for a in axes] if axes is not None else list(range(r))
    scales, sizes, roi = _vector(scales), _vector(sizes), _vector(roi)
    in_dims = [x.shape[a] for a in axes]
    if sizes is not None:
        ratio = [int(s) / d for s, d in zip(sizes, in_dims)]
        if keep_aspect_ratio_policy == "stretch":
            factors, out = ratio, [int(s) for s in sizes]
        elif keep_aspect_ratio_policy in ("not_larger", "not_smaller"):
            scale = min(ratio) if keep_aspect_ratio_policy == "not_larger" else max(ratio)
            factors, out = [scale] * len(axes), [int(scale * d + 0.5) for d in in_dims]
        else:
            raise ValueError(f"Resize: unknown keep_aspect_ratio_policy {keep_aspect_ratio_policy!r}")
    elif scales is not None:
        factors = [float(s) for s in scales]
        out = [math.floor(f * d) for f, d in zip(factors, in_dims)]
    else:
        raise ValueError("Resize needs scales or sizes")
    if mode == "nearest" and antialias:
        raise ValueError("Resize: antialias applies to linear and cubic modes only")
    return _resize(x, factors, out, roi, axes, mode, coordinate_transformation_mode, nearest_mode,
                   cubic_coeff_a, exclude_outside, extrapolation_value, antialias)


@kernel("Resize", since=10)
def resize_10(x: Array, scales: Array, mode: str = "nearest") -> Array:
    """Opset 10 had only scales and asymmetric coordinates; a nearest pixel rounds down along an axis
    it upsamples (as Upsample did) and up along one it downsamples, as onnx 1.5's opset-10 tests
    (test_resize_downsample_nearest: [1, 3] from [1, 2, 3, 4] at 0.6) and onnxruntime have it."""
    factors = [float(s) for s in np.asarray(scales).reshape(-1)]
    out = [math.floor(f * d) for f, d in zip(factors, x.shape)]
    return _resize(x, factors, out, None, list(range(x.ndim)), mode, "asymmetric", "simple", -0.75, 0, 0.0, 0)


# --- GridSample ------------------------------------------------------------------------------------


def _reflect(x: Array, lo: float, hi: float) -> Array:
    """Fold coordinates into [lo, hi] by mirroring at the borders, as often as needed."""
    span = hi - lo
    if span <= 0:
        return np.full_like(x, lo)
    below, above = x < lo, x > hi
    dx = np.where(below, lo - x, np.where(above, x - hi, 0.0))
    n = np.floor(dx / span)
    rest = dx - n * span
    even = n % 2 == 0
    low_side = np.where(even, lo + rest, hi - rest)
    high_side = np.where(even, hi - rest, lo + rest)
    return np.where(below, low_side, np.where(above, high_side, x))


def _grid_sample(x: Array, coords: list[Array], mode: str, padding_mode: str, align_corners: int) -> Array:
    """Sample ``x`` (N, C, *D) at pixel coordinates ``coords`` (one (N, *O) array per spatial dim)."""
    n, c = x.shape[:2]
    dims = x.shape[2:]
    nd = len(dims)
    lo = [0.0 if align_corners else -0.5] * nd
    hi = [d - 1.0 if align_corners else d - 0.5 for d in dims]
    if mode == "nearest":
        coords = [np.rint(p) for p in coords]
    # border: taps past the edge read the edge pixel (clamped in fetch), so the coordinate itself is
    # left alone; for cubic this matters, and matches onnxruntime and PyTorch
    if padding_mode == "reflection":
        coords = [_reflect(p, lo[i], hi[i]) for i, p in enumerate(coords)]
    elif padding_mode not in ("zeros", "border"):
        raise ValueError(f"GridSample: unknown padding_mode {padding_mode!r}")

    def fetch(index: Array, dim: int) -> tuple[Array, Array]:
        """(in-range index, validity) of integer taps along one dim, under the padding mode."""
        if padding_mode == "zeros":
            valid = (index >= 0) & (index < dims[dim])
        else:
            if padding_mode == "reflection":
                index = np.trunc(_reflect(index.astype(np.float64), lo[dim], hi[dim]))
            valid = np.ones(index.shape, dtype=bool)
        return np.clip(index, 0, dims[dim] - 1).astype(np.intp), valid

    if mode == "nearest":
        per_dim = [[(np.trunc(p), np.ones_like(p))] for p in coords]
    elif mode == "linear":
        per_dim = []
        for p in coords:
            base = np.floor(p)
            t = p - base
            per_dim.append([(base, 1 - t), (base + 1, t)])
    elif mode == "cubic":
        weight = _cubic(-0.75)
        per_dim = []
        for p in coords:
            base = np.floor(p)
            t = p - base
            per_dim.append([(base + k, weight(t - k)) for k in (-1, 0, 1, 2)])
    else:
        raise ValueError(f"GridSample: unknown mode {mode!r}")

    xt = np.moveaxis(x, 1, -1).astype(np.float64)  # (N, *D, C): one gather yields every channel
    batch = np.arange(n).reshape((n,) + (1,) * (coords[0].ndim - 1))
    acc = np.zeros((*coords[0].shape, c))
    for combo in itertools.product(*per_dim):
        index, weight_total = [], 1.0
        for dim, (tap, w) in enumerate(combo):
            idx, valid = fetch(tap.astype(np.int64), dim)
            index.append(idx)
            weight_total = weight_total * np.where(valid, w, 0.0)
        acc += xt[(batch, *index)] * weight_total[..., None]
    return _saturate(np.moveaxis(acc, -1, 1), x.dtype)


def _denormalize(g: Array, size: int, align_corners: int) -> Array:
    return (g + 1) / 2 * (size - 1) if align_corners else ((g + 1) * size - 1) / 2


@kernel("GridSample", since=16)
def grid_sample(x: Array, grid: Array, align_corners: int = 0, mode: str = "linear", padding_mode: str = "zeros"
                ) -> Array:
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)  # opset 16 names
    dims = x.shape[2:]
    # grid's last axis lists coordinates innermost-first (x, y, z): reverse to match the spatial dims.
    # Denormalised in float64: in float16 (g + 1) / 2 * (size - 1) rounds a pixel coordinate by up to
    # a hundredth, moving cubic taps and flipping nearest picks (onnxruntime works in float32).
    g64 = grid.astype(np.float64)
    coords = [_denormalize(g64[..., len(dims) - 1 - i], dims[i], align_corners) for i in range(len(dims))]
    return _grid_sample(x, coords, mode, padding_mode, align_corners)


@kernel("AffineGrid", since=20)
def affine_grid(theta: Array, size: Array, align_corners: int = 0) -> Array:
    dims = [int(d) for d in np.asarray(size).reshape(-1)[2:]]
    axes = []
    for d in dims:
        i = np.arange(d, dtype=np.float64)
        if align_corners:
            axes.append(-1 + i * (2.0 / (d - 1) if d > 1 else 0.0))
        else:
            axes.append(-1 + (2 * i + 1) / d)
    mesh = np.meshgrid(*axes, indexing="ij")  # one (*dims) array per spatial dim
    # homogeneous positions, innermost dim first: (x, y[, z], 1)
    base = np.stack([*mesh[::-1], np.ones(dims)], axis=-1).reshape(-1, len(dims) + 1)
    grid = np.einsum("nij,pj->npi", theta.astype(np.float64), base)
    return grid.reshape(theta.shape[0], *dims, len(dims)).astype(theta.dtype)


# --- RoiAlign --------------------------------------------------------------------------------------


def _roi_align(x: Array, rois: Array, batch_indices: Array, coord_mode: str, mode: str, output_height: int,
               output_width: int, sampling_ratio: int, spatial_scale: float) -> Array:
    n_rois = rois.shape[0]
    c, height, width = x.shape[1:]
    y = np.zeros((n_rois, c, output_height, output_width))
    half = 0.5 if coord_mode == "half_pixel" else 0.0
    if coord_mode not in ("half_pixel", "output_half_pixel"):
        raise ValueError(f"RoiAlign: unknown coordinate_transformation_mode {coord_mode!r}")
    data = x.astype(np.float64)
    for r in range(n_rois):  # each roi has its own sampling grid size
        x0, y0, x1, y1 = (float(v) * spatial_scale - half for v in rois[r])
        roi_w, roi_h = x1 - x0, y1 - y0
        if not half:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / output_height, roi_w / output_width
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / output_height)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / output_width)
        # sample positions: (out_h, grid_h) rows and (out_w, grid_w) columns
        ys = y0 + np.arange(output_height)[:, None] * bin_h + (np.arange(grid_h)[None, :] + 0.5) * bin_h / grid_h
        xs = x0 + np.arange(output_width)[:, None] * bin_w + (np.arange(grid_w)[None, :] + 0.5) * bin_w / grid_w
        ys, xs = ys[:, None, :, None], xs[None, :, None, :]  # broadcast to (out_h, out_w, grid_h, grid_w)
        empty = (ys < -1.0) | (ys > height) | (xs < -1.0) | (xs > width)
        yc, xc = np.maximum(ys, 0), np.maximum(xs, 0)
        y_low, x_low = np.floor(yc).astype(np.intp), np.floor(xc).astype(np.intp)
        y_edge, x_edge = y_low >= height - 1, x_low >= width - 1
        y_low, x_low = np.where(y_edge, height - 1, y_low), np.where(x_edge, width - 1, x_low)
        y_high, x_high = np.where(y_edge, height - 1, y_low + 1), np.where(x_edge, width - 1, x_low + 1)
        ly, lx = np.where(y_edge, 0.0, yc - y_low), np.where(x_edge, 0.0, xc - x_low)
        hy, hx = 1 - ly, 1 - lx
        img = data[int(batch_indices[r])]  # (C, H, W)
        corners = [(y_low, x_low, hy * hx), (y_low, x_high, hy * lx), (y_high, x_low, ly * hx),
                   (y_high, x_high, ly * lx)]
        terms = [img[:, yi, xi] * np.where(empty, 0.0, w) for yi, xi, w in corners]  # (C, oh, ow, gh, gw)
        if mode == "avg":
            y[r] = sum(terms).sum(axis=(-2, -1)) / max(grid_h * grid_w, 1)
        elif mode == "max":  # ORT's definition: the largest weighted corner over all samples
            # a roi of no width or height, or turned inside out (half_pixel: a negative sampling grid
            # both ways, whose product is positive), samples nothing: 0, as there and in onnx's reference
            if grid_h > 0 and grid_w > 0:
                y[r] = np.max(np.maximum.reduce(terms), axis=(-2, -1))
        else:
            raise ValueError(f"RoiAlign: unknown mode {mode!r}")
    return y.astype(x.dtype)


@kernel("RoiAlign", since=16)
def roi_align(x: Array, rois: Array, batch_indices: Array, coordinate_transformation_mode: str = "half_pixel",
              mode: str = "avg", output_height: int = 1, output_width: int = 1, sampling_ratio: int = 0,
              spatial_scale: float = 1.0) -> Array:
    return _roi_align(x, rois, batch_indices, coordinate_transformation_mode, mode, output_height, output_width,
                      sampling_ratio, spatial_scale)


@kernel("RoiAlign", since=10)
def roi_align_10(x: Array, rois: Array, batch_indices: Array, mode: str = "avg", output_height: int = 1,
                 output_width: int = 1, sampling_ratio: int = 0, spatial_scale: float = 1.0) -> Array:
    """Opset 10 did not shift input coordinates by half a pixel."""
    return _roi_align(x, rois, batch_indices, "output_half_pixel", mode, output_height, output_width,
                      sampling_ratio, spatial_scale)


# --- NonMaxSuppression -----------------------------------------------------------------------------


def _corners(boxes: Array, center_point_box: int) -> tuple[Array, Array, Array, Array]:
    """(y_min, x_min, y_max, x_max) of each box."""
    b = boxes.astype(np.float64)
    if center_point_box:
        xc, yc, w, h = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
        return yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2
    return (np.minimum(b[:, 0], b[:, 2]), np.minimum(b[:, 1], b[:, 3]),
            np.maximum(b[:, 0], b[:, 2]), np.maximum(b[:, 1], b[:, 3]))


#: rows of the suppression relation kept for reuse across a batch's classes, in bytes (one byte a box)
ROW_CACHE_BYTES = 64 << 20


def _suppressor(boxes: Array, center_point_box: int, iou_threshold: float) -> Callable[[int], Array]:
    """Row i of the suppression relation on demand: does box i suppress box j (IoU strictly above the
    threshold), for every j. A row is worked out when a box is kept, so memory grows with the boxes,
    not their square: the whole (B, B) matrix of 65,536 boxes took 32 GiB of float64 work, which no
    input's size bounds. Each pair's IoU is the same arithmetic the matrix did, so the same bits."""
    y0, x0, y1, x1 = _corners(boxes, center_point_box)
    area = (y1 - y0) * (x1 - x0)
    rows: dict[int, Array] = {}

    def row(i: int) -> Array:
        got = rows.get(i)
        if got is not None:
            return got
        ih = np.minimum(y1[i], y1) - np.maximum(y0[i], y0)
        iw = np.minimum(x1[i], x1) - np.maximum(x0[i], x0)
        inter = np.where((ih > 0) & (iw > 0), ih * iw, 0.0)
        union = area[i] + area - inter
        ok = (inter > 0) & (area[i] > 0) & (area > 0) & (union > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            got = ok & (inter / np.where(ok, union, 1.0) > iou_threshold)
        if (len(rows) + 1) * got.size <= ROW_CACHE_BYTES:
            rows[i] = got
        return got

    return row


def _scalar(v: Array | None, default: float) -> float:
    if v is None or np.asarray(v).size == 0:
        return default
    return np.asarray(v).reshape(-1)[0].item()


@kernel("NonMaxSuppression", since=10)
def non_max_suppression(boxes: Array, scores: Array, max_output_boxes_per_class: Array | None = None,
                        iou_threshold: Array | None = None, score_threshold: Array | None = None,
                        center_point_box: int = 0) -> Array:
    limit = max(int(_scalar(max_output_boxes_per_class, 0)), 0)
    iou = float(_scalar(iou_threshold, 0.0))
    has_floor = score_threshold is not None and np.asarray(score_threshold).size > 0
    floor = float(_scalar(score_threshold, 0.0))
    selected: list[tuple[int, int, int]] = []
    if limit == 0:
        return np.empty((0, 3), dtype=np.int64)
    for b in range(boxes.shape[0]):
        suppress = _suppressor(boxes[b], center_point_box, iou)
        for cls in range(scores.shape[1]):
            s = scores[b, cls]
            order = np.argsort(-s.astype(np.float64), kind="stable")  # best first, ties by lower index
            if has_floor:
                order = order[s[order] > floor]
            alive = np.ones(boxes.shape[1], dtype=bool)
            kept = 0
            for i in order:  # greedy: each kept box removes the boxes it overlaps
                if not alive[i]:
                    continue
                selected.append((b, cls, int(i)))
                kept += 1
                if kept >= limit:
                    break
                alive &= ~suppress(int(i))
    return np.array(selected, dtype=np.int64).reshape(-1, 3)


# --- DeformConv ------------------------------------------------------------------------------------


@kernel("DeformConv", since=19)
def deform_conv(x: Array, w: Array, offset: Array, b: Array | None = None, mask: Array | None = None,
                dilations: Sequence[int] | None = None, group: int = 1, kernel_shape: Sequence[int] | None = None,
                offset_group: int = 1, pads: Sequence[int] | None = None, strides: Sequence[int] | None = None
                ) -> Array:
    n, c = x.shape[:2]
    dims = x.shape[2:]
    nd = len(dims)
    k = list(kernel_shape) if kernel_shape else list(w.shape[2:])
    d = list(dilations) if dilations else [1] * nd
    s = list(strides) if strides else [1] * nd
    p = list(pads) if pads else [0] * (2 * nd)
    out = list(offset.shape[2:])
    og = offset_group
    kn = math.prod(k)
    if c % og or offset.shape[1] != og * kn * nd:
        raise ValueError(f"DeformConv: offset shape {offset.shape} does not fit offset_group {og} and kernel {k}")
    off = offset.astype(np.float64).reshape(n, og, *k, nd, *out)
    # sampling positions (N, og, *k, *out) along each spatial dim: window origin + tap + learnt offset
    pos = []
    for i in range(nd):
        origin = (-p[i] + s[i] * np.arange(out[i])).reshape((1,) * (2 + nd + i) + (-1,) + (1,) * (nd - 1 - i))
        tap = (d[i] * np.arange(k[i])).reshape((1, 1) + (1,) * i + (-1,) + (1,) * (2 * nd - 1 - i))
        pos.append(origin + tap + off[(slice(None), slice(None), *([slice(None)] * nd), i)])
    cg = c // og
    xt = np.moveaxis(x.astype(np.float64).reshape(n, og, cg, *dims), 2, -1)  # (N, og, *D, cg)
    lead = (np.arange(n).reshape((n,) + (1,) * (1 + 2 * nd)), np.arange(og).reshape((1, og) + (1,) * (2 * nd)))
    cols = np.zeros((*pos[0].shape, cg))
    floors = [np.floor(q) for q in pos]
    for corner in itertools.product((0, 1), repeat=nd):  # bilinear taps, zero outside the input
        index, weight = [], 1.0
        for i, hi in enumerate(corner):
            tap = floors[i] + hi
            t = pos[i] - floors[i]
            weight = weight * np.where((tap >= 0) & (tap < dims[i]), t if hi else 1 - t, 0.0)
            index.append(np.clip(tap, 0, dims[i] - 1).astype(np.intp))
        cols += xt[(*lead, *index)] * weight[..., None]
    if mask is not None:
        cols *= mask.astype(np.float64).reshape(n, og, *k, *out)[..., None]
    # (N, og, *k, *out, cg) -> (N, group, C/group * taps, pixels), then one batched GEMM per group
    cols = np.moveaxis(cols, -1, 2).reshape(n, c, kn, math.prod(out))
    m = w.shape[0]
    cols = cols.reshape(n, group, (c // group) * kn, -1)
    y = np.matmul(w.astype(np.float64).reshape(group, m // group, -1), cols).reshape(n, m, *out)
    if b is not None:
        y += b.astype(np.float64).reshape((1, m) + (1,) * nd)
    return y.astype(x.dtype)
