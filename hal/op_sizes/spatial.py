"""Size rules of the ops that slide or sample a window over an image: convolutions, pools, resizes,
ROI and grid sampling (their padded inputs, im2col columns and outputs), and the taps of their loops."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hal.op_sizes._read import ints, itemsize


def _window_geometry(x: np.ndarray, k: Sequence[int], attrs: dict[str, Any], ceil: bool
                     ) -> tuple[list[int], list[int]] | None:
    """(padded spatial dims, output spatial dims) of a conv or pool, as hal.kernels._sliding computes them."""
    nd = x.ndim - 2
    if nd < 1 or len(k) != nd:
        return None
    s = [int(v) for v in (attrs.get("strides") or [1] * nd)][:nd]
    d = [int(v) for v in (attrs.get("dilations") or [1] * nd)][:nd]
    pads = [int(v) for v in (attrs.get("pads") or [0] * 2 * nd)]
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if len(s) != nd or len(d) != nd or min(s) < 1 or min(d) < 1:
        return None  # the kernel cannot index these: its own error
    if len(pads) != 2 * nd:  # malformed: bound each side by the largest pad given
        pads = [max(pads, default=0)] * (2 * nd)
    padded, out = [], []
    for i, n in enumerate(x.shape[2:]):
        dk = (int(k[i]) - 1) * int(d[i]) + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-n // s[i])
            pad = max((o - 1) * s[i] + dk - n, 0)
        elif auto_pad == "VALID":
            o, pad = (n - dk) // s[i] + 1, 0
        else:
            pad = int(pads[i]) + int(pads[i + nd])
            span = n + pad - dk
            o = (-(-span // s[i]) if ceil else span // s[i]) + 1
        # a kernel may pad the input out to one whole (dilated) window even when no window fits
        padded.append(max(n + max(pad, 0), dk, 0))
        out.append(max(o, 0))
    return padded, out


def _conv_rule(w_index: int, work_itemsize: int | None) -> Callable[[Sequence[Any], dict[str, Any]],
                                                                    tuple[list[int], int] | None]:
    """Conv-like ops: the largest of the padded input, the im2col matrix and the output (pads and
    strides are attributes, so a few bytes of model can ask for terabytes)."""
    def rule(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
        x, w = args[0], args[w_index]
        if x.ndim < 3 or w.ndim != x.ndim:
            return None
        geo = _window_geometry(x, list(w.shape[2:]), attrs, False)
        if geo is None:
            return None
        padded, out = geo
        n, c, m = x.shape[0], x.shape[1], w.shape[0]
        item = work_itemsize or max(itemsize(x), 4)
        shapes = [[n, c, *padded], [c, math.prod(w.shape[2:]), n * math.prod(out)], [n, m, *out]]
        return max(shapes, key=math.prod), item
    return rule


def _conv_transpose(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """ConvTranspose's full image (before pads and output_padding trim or extend it, whatever
    output_shape says), or its output if larger; read as the kernel reads them (an empty
    output_padding is zeros, the kernel's extent is W's), in float64."""
    x, w = args[0], args[1]
    if x.ndim < 3 or w.ndim != x.ndim:
        return None
    k = x.ndim - 2
    strides = attrs.get("strides") or [1] * k
    dil = attrs.get("dilations") or [1] * k
    opad = attrs.get("output_padding") or [0] * k
    pads = attrs.get("pads") or [0] * (2 * k)
    full = [(d - 1) * s + (ks - 1) * dl + 1 for d, s, dl, ks in zip(x.shape[2:], strides, dil, w.shape[2:])]
    if "output_shape" in attrs:
        out = [int(d) for d in attrs["output_shape"]][-k:]
    else:
        out = [f + op - pads[i] - pads[i + k] for i, (f, op) in enumerate(zip(full, opad))]
    lead = [x.shape[0], w.shape[1] * int(attrs.get("group", 1))]
    return max([*lead, *full], [*lead, *out], key=lambda sh: math.prod(max(v, 0) for v in sh)), 8


def _pool(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    x = args[0]
    k = attrs.get("kernel_shape")
    if k is None or x.ndim < 3:
        return None
    geo = _window_geometry(x, list(k), attrs, bool(attrs.get("ceil_mode", 0)))
    if geo is None:
        return None
    padded, out = geo
    shapes = [[*x.shape[:2], *padded], [*x.shape[:2], *out]]
    return max(shapes, key=math.prod), max(itemsize(x), 8 if attrs.get("p") is not None else 4)


def _max_unpool(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """The larger of the unpooled shape the kernel infers (it scatters into that first) and the
    output_shape input, if any."""
    x = args[0]
    nd = x.ndim - 2
    k = [int(v) for v in attrs.get("kernel_shape", [])]
    if nd < 1 or len(k) < nd:
        return None  # malformed: the kernel's own error
    s = [int(v) for v in attrs.get("strides", [1] * nd)] + [1] * nd
    p = [int(v) for v in attrs.get("pads", [0] * (2 * nd))] + [0] * (2 * nd)
    inferred = [*x.shape[:2], *(max((x.shape[2 + j] - 1) * s[j] - p[j] - p[j + nd] + k[j], 0) for j in range(nd))]
    if len(args) > 2 and args[2] is not None:
        asked = ints(args[2])
        if math.prod(asked) > math.prod(inferred):
            return asked, itemsize(x)
    return inferred, itemsize(x)


def _scaled(dim: int, scale: float) -> int:
    if math.isnan(scale) or scale <= 0:
        return dim
    if math.isinf(scale):
        return 2**63
    return math.ceil(dim * scale)


def _resize(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    x = args[0]
    rank = x.ndim
    if len(args) == 2:  # Resize-10 / Upsample-9: (X, scales)
        scales, sizes = args[1], None
    else:
        scales = args[2] if len(args) > 2 else None
        sizes = args[3] if len(args) > 3 else None
    if scales is None and "scales" in attrs:  # Upsample-7
        scales = attrs["scales"]
    axes = attrs.get("axes")
    out = list(x.shape)
    if sizes is not None and np.asarray(sizes).size:
        sz = ints(sizes)
        axes = list(range(rank)) if axes is None else [a % rank for a in axes]
        policy = attrs.get("keep_aspect_ratio_policy", "stretch")
        if policy == "stretch":
            for a, s in zip(axes, sz):
                out[a] = s
        else:
            ratios = [s / x.shape[a] for a, s in zip(axes, sz) if x.shape[a]]
            if not ratios:
                return None
            r = max(ratios) if policy == "not_smaller" else min(ratios)
            for a in axes:
                out[a] = _scaled(x.shape[a], r)
        return out, itemsize(x)
    if scales is not None and np.asarray(scales).size:
        sc = [float(s) for s in np.asarray(scales, dtype=np.float64).reshape(-1)]
        axes = list(range(rank)) if axes is None else [a % rank for a in axes]
        for a, s in zip(axes, sc):
            out[a] = _scaled(x.shape[a], s)
        return out, itemsize(x)
    if "height_scale" in attrs and rank >= 2:  # Upsample-1
        out[-2] = _scaled(out[-2], float(attrs["height_scale"]))
        out[-1] = _scaled(out[-1], float(attrs.get("width_scale", 1.0)))
        return out, itemsize(x)
    return None


def _roi_align(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int]:
    """RoiAlign's output, or the samples of its largest roi if more, (C, out_h, out_w, grid_h, grid_w)
    float64: the grid is sampling_ratio a side (an attribute), else the roi's extent over the output
    (the rois' values; an infinite one, which the kernel refuses, does not hide the output's size)."""
    x, rois = args[0], np.asarray(args[1], dtype=np.float64)
    oh, ow = int(attrs.get("output_height", 1)), int(attrs.get("output_width", 1))
    ratio = int(attrs.get("sampling_ratio", 0))
    if ratio > 0:
        gh = gw = ratio
    elif rois.size:
        # a roi of infinite or NaN extent has no grid (the kernel refuses it): the others' extents
        with np.errstate(invalid="ignore", over="ignore"):
            box = rois.reshape(-1, 4) * float(attrs.get("spatial_scale", 1.0))
            heights, widths = box[:, 3] - box[:, 1], box[:, 2] - box[:, 0]
        heights, widths = heights[np.isfinite(heights)], widths[np.isfinite(widths)]
        gh = math.ceil(max(float(np.max(heights, initial=1.0)), 1.0) / max(oh, 1))
        gw = math.ceil(max(float(np.max(widths, initial=1.0)), 1.0) / max(ow, 1))
    else:
        gh = gw = 0
    return max([rois.shape[0], x.shape[1], oh, ow], [x.shape[1], oh, ow, gh, gw], key=math.prod), 8


def _max_roi_pool(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int]:
    x, rois = args[0], args[1]
    return [rois.shape[0], x.shape[1], *[int(v) for v in attrs["pooled_shape"]]], max(itemsize(x), 4)


def _deform_conv(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """DeformConv's float64 sampled columns, (N, C * taps, *out), or its output if larger: the offset
    input sets the output grid, and every input channel is sampled at every tap of it."""
    x, w, offset = args[0], args[1], args[2]
    if x.ndim < 3 or w.ndim != x.ndim or offset.ndim != x.ndim:
        return None
    k = attrs.get("kernel_shape") or w.shape[2:]
    n, out = x.shape[0], list(offset.shape[2:])
    shapes = [[n, x.shape[1] * math.prod(int(v) for v in k), *out], [n, w.shape[0], *out]]
    return max(shapes, key=math.prod), 8


def _col2im(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """Col2Im's padded image, (N, C, *image_shape + pads): image_shape is an input's value and the
    strides an attribute, so a one-element input can ask for any image."""
    x, image, block = args[0], ints(args[1]), ints(args[2])
    nd = len(image)
    pads = [int(v) for v in (attrs.get("pads") or [0] * 2 * nd)]
    if x.ndim != 3 or len(block) != nd or len(pads) != 2 * nd or math.prod(block) < 1:
        return None
    span = [image[i] + max(pads[i], 0) + max(pads[i + nd], 0) for i in range(nd)]
    return [x.shape[0], x.shape[1] // math.prod(block), *span], max(itemsize(x), 4)


def _grid_sample(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """GridSample's output, (N, C, *grid's spatial dims), sampled in float64: the channels come from
    the image and the points from the grid, so neither input bounds their product."""
    x, grid = args[0], args[1]
    if x.ndim < 3 or grid.ndim != x.ndim:
        return None
    return [x.shape[0], x.shape[1], *grid.shape[1:-1]], 8


def _affine_grid(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int]:
    size = ints(args[1])
    return [size[0], *size[2:], len(size) - 2], itemsize(args[0])


def _taps(args: Sequence[Any], attrs: dict[str, Any]) -> int | None:
    k = attrs.get("kernel_shape")
    return math.prod(max(int(v), 0) for v in k) if k else None


def _lrn_window(args: Sequence[Any], attrs: dict[str, Any]) -> int | None:
    size = attrs.get("size")
    return abs(int(size)) if size is not None else None


RULES: dict[str, Callable[[Sequence[Any], dict[str, Any]], tuple[list[int], int] | None]] = {
    "Conv": _conv_rule(1, None), "ConvInteger": _conv_rule(1, 8), "QLinearConv": _conv_rule(3, 8),
    "ConvTranspose": _conv_transpose, "DeformConv": _deform_conv, "Col2Im": _col2im,
    "MaxPool": _pool, "AveragePool": _pool, "LpPool": _pool, "MaxUnpool": _max_unpool,
    "Resize": _resize, "Upsample": _resize, "RoiAlign": _roi_align, "MaxRoiPool": _max_roi_pool,
    "GridSample": _grid_sample, "AffineGrid": _affine_grid,
}

#: op type -> (kernel args, attrs) -> how many iterations the kernel's own loop will make
LOOPS: dict[str, Callable[[Sequence[Any], dict[str, Any]], int | None]] = {
    "MaxPool": _taps, "AveragePool": _taps, "LpPool": _taps, "LRN": _lrn_window,
}
