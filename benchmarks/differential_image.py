"""The differential sweep's image and detection families: ConvTranspose and DeformConv, GridSample and
AffineGrid, RoiAlign and MaxRoiPool, NonMaxSuppression, the channel and whole-image ops (LRN, MaxUnpool
after the MaxPool that made its indices, Col2Im, the global pools), and the integer convolutions
(QLinearConv, ConvInteger). onnxruntime runs most of them in float32 only (float16 through its inserted casts), so
float64 is drawn only where it has a float64 kernel.

Configurations where onnxruntime and onnx's reference part from each other are left out where they
are drawn, each with its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.differential_draw import Case, conv_attrs, dims, ri


def _no_double(c: Case) -> None:
    """float32 where float64 was drawn: onnxruntime has no float64 kernel for the op."""
    if c.dtype == np.float64:
        c.dtype = np.dtype(np.float32)


def _convt(c: Case) -> list[str]:
    """ConvTranspose in 1-3 dims: strides, dilations, explicit pads with output_padding, output_shape,
    auto_pad, groups, bias or none; and DeformConv, whose learnt offsets reach past the image."""
    r = c.rng
    _no_double(c)
    if r.random() < 0.25:
        return _deform(c)
    nd = ri(r, 1, 4)
    ch = ri(r, 1, 5)
    g = int(r.choice([d for d in range(1, ch + 1) if ch % d == 0]))
    sp = dims(r, nd, 1, 6 if nd < 3 else 4)
    x = c.feed([ri(r, 1, 3), ch, *sp])
    mg = ri(r, 1, 3)
    k = [ri(r, 1, 4) for _ in range(nd)]
    s = [ri(r, 1, 4) for _ in range(nd)]
    d = [ri(r, 1, 3) for _ in range(nd)]
    attrs: dict[str, Any] = {"strides": s, "group": g}
    if r.random() < 0.5:
        attrs["dilations"] = d
    else:
        d = [1] * nd
    if r.random() < 0.5:
        attrs["kernel_shape"] = k
    full = [(sp[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 for i in range(nd)]
    how = ri(r, 0, 4)
    outpad = [ri(r, 0, s[i]) for i in range(nd)]  # below the stride (onnxruntime's check)
    if how == 0:  # explicit pads, possibly with output_padding; each output at least one long
        begin = [ri(r, 0, min(2, full[i] - 1) + 1) for i in range(nd)]
        attrs["pads"] = begin + [ri(r, 0, min(2, full[i] - 1 - begin[i]) + 1) for i in range(nd)]
        if r.random() < 0.5:
            attrs["output_padding"] = outpad
    elif how == 1:  # output_shape: the pads come from it (under any auto_pad, or none)
        pad = str(r.choice(["SAME_UPPER", "SAME_LOWER", "VALID", "NOTSET"]))
        if pad != "NOTSET":
            attrs["auto_pad"] = pad
        if r.random() < 0.3:
            attrs["output_padding"] = outpad
        else:
            outpad = [0] * nd
        # a negative total padding (output_shape past the full image) left out: onnxruntime leaves
        # the extra outputs at the end, onnx's reference pads negatively at both sides
        attrs["output_shape"] = [ri(r, max(1, full[i] - 3), full[i] + outpad[i] + 1) for i in range(nd)]
    elif how == 2:  # auto_pad alone: the output is input * stride
        attrs["auto_pad"] = str(r.choice(["SAME_UPPER", "SAME_LOWER"]))
        if r.random() < 0.3:
            attrs["output_padding"] = outpad
        else:
            outpad = [0] * nd
        if any(full[i] + outpad[i] < sp[i] * s[i] for i in range(nd)):
            return _convt_fallback(c, x, attrs, k, ch, g, mg, outpad)
    else:
        attrs["auto_pad"] = "VALID"
        if r.random() < 0.5:
            attrs["output_padding"] = outpad
    return _convt_node(c, x, attrs, k, ch, g, mg)


def _convt_fallback(c: Case, x: str, attrs: dict[str, Any], k: list[int], ch: int, g: int, mg: int,
                    outpad: list[int]) -> list[str]:
    """SAME where input * stride passes the full image (a negative total padding, where the peers
    part: see above) drawn as VALID with output_padding instead."""
    attrs["auto_pad"] = "VALID"
    attrs["output_padding"] = outpad
    return _convt_node(c, x, attrs, k, ch, g, mg)


def _convt_node(c: Case, x: str, attrs: dict[str, Any], k: list[int], ch: int, g: int, mg: int) -> list[str]:
    bias = [c.weight([g * mg])] if c.rng.random() < 0.5 else []
    return [c.op("ConvTranspose", [x, c.weight([ch, mg, *k]), *bias], **attrs)]


def _deform(c: Case) -> list[str]:
    """DeformConv in 2-D: offset groups, groups, strides, pads, dilations, a mask and a bias or not."""
    r = c.rng
    c.opset = 19
    og = ri(r, 1, 3)
    g = int(r.choice([1, og]))
    ch = og * g * ri(r, 1, 3)
    oc = g * ri(r, 1, 3)
    n, sp, k = ri(r, 1, 3), dims(r, 2, 2, 7), [ri(r, 1, 4) for _ in range(2)]
    s, d, p = [ri(r, 1, 3) for _ in k], [ri(r, 1, 3) for _ in k], [ri(r, 0, 2) for _ in range(4)]
    out = [(sp[i] + p[i] + p[i + 2] - (k[i] - 1) * d[i] - 1) // s[i] + 1 for i in range(2)]
    if min(out) < 1:
        d, p = [1, 1], [kk - 1 for kk in k] * 2
        out = [(sp[i] + 2 * p[i] - k[i]) // s[i] + 1 for i in range(2)]
    inputs = [c.feed([n, ch, *sp]), c.weight([oc, ch // g, *k]),
              c.feed([n, og * k[0] * k[1] * 2, *out], lo=-2.5, hi=2.5)]
    mask, bias = r.random() < 0.5, r.random() < 0.5
    if bias or mask:
        inputs.append(c.weight([oc]) if bias else "")
    if mask:
        inputs.append(c.feed([n, og * k[0] * k[1], *out], lo=0, hi=1))
    return [c.op("DeformConv", inputs, kernel_shape=k, strides=s, dilations=d, pads=p, group=g, offset_group=og)]


def _grid(c: Case) -> list[str]:
    """GridSample at opset 16 (2-D, bilinear/bicubic/nearest) or 20 (2-D and 3-D, linear/cubic/nearest),
    every padding mode, align_corners, grids reaching past [-1, 1]; AffineGrid alone or feeding it."""
    r = c.rng
    opset20 = r.random() < 0.6
    c.opset = 20 if opset20 else 16
    if not opset20:
        _no_double(c)
    nd = 3 if opset20 and r.random() < 0.3 else 2
    align = ri(r, 0, 2)
    n = ri(r, 1, 3)
    k = ri(r, 0, 4)
    # AffineGrid's sizes of 1 under align_corners left out: onnxruntime places the one position at +1,
    # onnx's reference (and torch's linspace) at -1
    out = dims(r, nd, 1 + align, 6 if nd == 2 else 4)
    if k == 0 and opset20 and c.dtype != np.float16:  # AffineGrid alone (onnxruntime's has no float16)
        theta = c.feed([n, nd, nd + 1], lo=-1.5, hi=1.5)
        return [c.op("AffineGrid", [theta, c.ints([n, ri(r, 1, 4), *out])], align_corners=align)]
    sp = dims(r, nd, 1, 7 if nd == 2 else 5)
    x = c.feed([n, ri(r, 1, 4), *sp])
    reach = float(r.choice([1.0, 1.2, 2.5, 6.0]))  # (6: reflection folds the grid several times)
    if k == 1 and opset20 and c.dtype != np.float16:  # a spatial transformer: AffineGrid then GridSample
        grid = c.op("AffineGrid", [c.feed([n, nd, nd + 1], lo=-reach, hi=reach), c.ints([n, 1, *out])],
                    align_corners=align)
    elif k == 2:  # positions on the pixel lattice and its half steps: exact edges and centres
        grid = c.feed([n, *out, nd], value=(np.round(r.uniform(-reach, reach, [n, *out, nd]) * 4) / 4).astype(c.dtype))
    else:
        grid = c.feed([n, *out, nd], lo=-reach, hi=reach)
    modes = ["linear", "cubic", "nearest"] if opset20 else ["bilinear", "bicubic", "nearest"]
    mode = str(r.choice(modes[:1] + modes[2:] if nd == 3 else modes))  # cubic is 2-D only
    padding = str(r.choice(["zeros", "border", "reflection"]))
    return [c.op("GridSample", [x, grid], mode=mode, padding_mode=padding, align_corners=align)]


def _boxes(r: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """``n`` boxes (x0, y0, x1, y1) over an h x w image, some reaching past its edges, a few of no size
    or turned inside out."""
    x0, y0 = r.uniform(-2, w + 1, n), r.uniform(-2, h + 1, n)
    x1, y1 = x0 + r.uniform(0, w, n), y0 + r.uniform(0, h, n)
    b = np.stack([x0, y0, x1, y1], -1)
    odd = r.random(n)
    b[odd < 0.1, 2:] = b[odd < 0.1, :2]
    b[odd > 0.95] = b[odd > 0.95][:, [2, 3, 0, 1]]
    return np.round(b * 4) / 4 if r.random() < 0.3 else b  # quarter pixels: exact halves to round


def _roi(c: Case) -> list[str]:
    """RoiAlign at opset 16 (half_pixel / output_half_pixel, avg / max) and 10, sampling_ratio 0 and
    more, spatial_scale; MaxRoiPool; rois partly outside the image."""
    r = c.rng
    n, ch, h, w = ri(r, 1, 3), ri(r, 1, 4), ri(r, 1, 9), ri(r, 1, 9)
    scale = float(r.choice([1.0, 0.5, 0.25, 2.0]))
    rois = ri(r, 1, 5)
    pooled = [ri(r, 1, 4), ri(r, 1, 4)]
    if r.random() < 0.3:  # (onnxruntime's MaxRoiPool is float32 only)
        c.dtype = np.dtype(np.float32)
        x = c.feed([n, ch, h, w])
        boxes = _boxes(r, rois, round(h / scale), round(w / scale))
        spec = np.concatenate([r.integers(0, n, (rois, 1)), boxes], -1).astype(np.float32)
        return [c.op("MaxRoiPool", [x, c.weight(value=spec)], pooled_shape=pooled, spatial_scale=scale)]
    x = c.feed([n, ch, h, w])
    boxes = c.weight(value=_boxes(r, rois, round(h / scale), round(w / scale)).astype(c.dtype))
    batch = c.ints(r.integers(0, n, rois))
    attrs: dict[str, Any] = {"mode": str(r.choice(["avg", "max"])), "output_height": pooled[0],
                             "output_width": pooled[1], "sampling_ratio": ri(r, 0, 4), "spatial_scale": scale}
    if r.random() < 0.8:
        c.opset = 16
        attrs["coordinate_transformation_mode"] = str(r.choice(["half_pixel", "output_half_pixel"]))
    else:
        c.opset = 10
    return [c.op("RoiAlign", [x, boxes, batch], **attrs)]


def _nms(c: Case) -> list[str]:
    """NonMaxSuppression over several batches and classes: corner boxes (corners in either order) or
    centre boxes, scores with ties, each threshold input given or left out."""
    r = c.rng
    c.dtype = np.dtype(np.float32)  # (onnxruntime's NonMaxSuppression is float32 only)
    b, n, classes = ri(r, 1, 3), ri(r, 1, 12), ri(r, 1, 4)
    centre = ri(r, 0, 2)
    lo, size = r.uniform(0, 8, (b, n, 2)), r.uniform(0, 4, (b, n, 2))
    if centre:  # a few of negative width or height
        boxes = np.concatenate([lo, size * np.where(r.random((b, n, 2)) < 0.1, -1, 1)], -1)
    else:
        boxes = np.concatenate([lo, lo + size], -1)
        swap = r.random((b, n)) < 0.3
        boxes[swap] = boxes[swap][:, [2, 3, 0, 1]]
    if r.random() < 0.3:  # boxes on a coarse lattice: repeats and exact overlaps
        boxes = np.round(boxes)
    scores = r.uniform(0, 1, (b, classes, n))
    if r.random() < 0.4:
        scores = np.round(scores * 4) / 4  # ties, broken by the lower index in both peers
    inputs = [c.feed(list(boxes.shape), value=boxes.astype(np.float32)),
              c.feed(list(scores.shape), value=scores.astype(np.float32))]
    optional = [c.ints([ri(r, 0, n + 2)]), c.weight(value=np.array([r.choice([0.0, 0.3, 0.5, 0.7, 1.0])], np.float32)),
                c.weight(value=np.array([r.choice([0.0, 0.25, 0.5, -1.0])], np.float32))]
    given = ri(r, 0, 4)
    inputs += optional[:given]
    if given < 3 and r.random() < 0.3:  # a later input given, an earlier one left empty
        inputs += [""] * (2 - given) + [optional[2]]
    c.opset = 11
    return [c.op("NonMaxSuppression", inputs, center_point_box=centre)]


def _channels(c: Case) -> list[str]:
    """LRN (size, alpha, beta, bias), MaxUnpool of a MaxPool's indices (output_shape given or inferred),
    Col2Im (dilations, pads, strides) and the global pools."""
    r = c.rng
    _no_double(c)
    k = ri(r, 0, 4)
    if k == 0:  # (onnxruntime's LRN takes 4-D inputs and odd sizes only)
        x = c.feed([ri(r, 1, 3), ri(r, 1, 8), *dims(r, 2, 1, 5)], lo=-3, hi=3)
        c.opset = 13
        return [c.op("LRN", [x], size=int(r.choice([1, 3, 5, 7])), alpha=float(r.choice([1e-4, 1e-2, 0.5])),
                     beta=float(r.choice([0.75, 0.5, 1.0, 0.3])), bias=float(r.choice([1.0, 2.0, 0.5])))]
    if k == 1:
        # The input sized so that MaxUnpool's inferred shape is the input's: where they differ the
        # peers part, onnxruntime scattering the indices over output_shape, onnx's reference (and its
        # node test) over the inferred shape, then padding it at the end
        nd = ri(r, 1, 4)
        kern = [ri(r, 1, 4) for _ in range(nd)]
        strides = [ri(r, 1, 4) for _ in range(nd)]
        pads = [ri(r, 0, kk) for kk in kern] * 2 if r.random() < 0.4 else [0] * (2 * nd)
        sp = [(ri(r, 1, 4 if nd < 3 else 3)) * strides[i] - 2 * pads[i] + kern[i] for i in range(nd)]
        if min(sp) < 2:
            return _global(c)
        x = c.feed([ri(r, 1, 3), ri(r, 1, 4), *sp])
        c.feeds[x] = np.round(c.feeds[x] * 2).astype(c.dtype) if r.random() < 0.3 else c.feeds[x]  # ties
        attrs = {"kernel_shape": kern, "strides": strides, "pads": pads}
        c.opset = 12
        if r.random() < 0.3:  # MaxPool's indices themselves: row- or column-major, dilated, ceil_mode
            more = {"storage_order": ri(r, 0, 2), "ceil_mode": ri(r, 0, 2), "dilations": [ri(r, 1, 3) for _ in kern]}
            return list(c.op("MaxPool", [x], outputs=2, **attrs, **more))
        pooled, idx = c.op("MaxPool", [x], outputs=2, **attrs)
        shape = [c.ints(c.feeds[x].shape)] if r.random() < 0.5 else []
        return [c.op("MaxUnpool", [pooled, idx, *shape], **attrs)]
    if k == 2:
        nd = 2 if r.random() < 0.8 else 1
        img = dims(r, nd, 1, 8)
        block = [ri(r, 1, 4) for _ in img]
        d = [ri(r, 1, 3) for _ in img]
        s = [ri(r, 1, 3) for _ in img]
        p = [ri(r, 0, 3) for _ in range(2 * nd)]
        grid = [(img[i] + p[i] + p[i + nd] - (block[i] - 1) * d[i] - 1) // s[i] + 1 for i in range(nd)]
        if min(grid) < 1:
            d, p = [1] * nd, [block[i] for i in range(nd)] * 2
            grid = [(img[i] + 2 * block[i] - block[i]) // s[i] + 1 for i in range(nd)]
        # (onnxruntime's 1-D Col2Im of several channels with dilations misplaces columns, leaving
        # the last outputs zero; onnx's reference and hal agree with each other there: follows_onnx)
        ch = ri(r, 1, 4)
        x = c.feed([ri(r, 1, 3), ch * int(np.prod(block)), int(np.prod(grid))])
        c.opset = 18
        return [c.op("Col2Im", [x, c.ints(img), c.ints(block)], dilations=d, pads=p, strides=s)]
    return _global(c)


def _global(c: Case) -> list[str]:
    """GlobalAveragePool, GlobalMaxPool or GlobalLpPool over 1-3 spatial dims."""
    r = c.rng
    x = c.feed([ri(r, 1, 3), ri(r, 1, 4), *dims(r, ri(r, 1, 4), 1, 6)], lo=-3, hi=3)
    op = str(r.choice(["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"]))
    attrs = {"p": int(r.choice([1, 2, 3]))} if op == "GlobalLpPool" else {}
    c.opset = 13
    return [c.op(op, [x], **attrs)]


def _qconv(c: Case) -> list[str]:
    """QLinearConv and ConvInteger on uint8 / int8, weight scales and zero points per tensor or per
    output channel, groups, strides, pads, dilations, bias."""
    r = c.rng
    nd = ri(r, 1, 3)
    ch = ri(r, 1, 5)
    g = int(r.choice([1, ch]))
    oc = g * ri(r, 1, 3)
    kern = [ri(r, 1, 4) for _ in range(nd)]
    xkind = [np.uint8, np.int8][ri(r, 0, 2)]
    wkind = [np.uint8, np.int8][ri(r, 0, 2)]
    conv_integer = r.random() < 0.4
    if not conv_integer and xkind == np.int8:
        wkind = np.int8  # (onnxruntime's QLinearConv takes no uint8 weights with int8 data)

    # Where one side is uint8 and the other int8, the int8 side is drawn in 7 bits, as onnxruntime's
    # quantizer does (reduce_range): its u8 x s8 kernels add products in int16 pairs, which saturate
    # past that (up to 83 off in a uint8 output), where hal and onnx's reference are exact
    mixed = xkind != wkind

    def ints8(kind: type, shape: list[int]) -> np.ndarray:
        lo, hi = (0, 256) if kind == np.uint8 else (-64, 64) if mixed else (-128, 128)
        return r.integers(lo, hi, shape).astype(kind)

    def zero(kind: type, n: int | None = None) -> str:
        lo, hi = (100, 156) if kind == np.uint8 else (-28, 28)
        return c.weight(value=r.integers(lo, hi, n).astype(kind) if n else np.array(ri(r, lo, hi), kind))

    sp = dims(r, nd, 3, 9)
    x = c.feed([], value=ints8(xkind, [ri(r, 1, 3), ch, *sp]))
    w = c.weight(value=ints8(wkind, [oc, ch // g, *kern]))
    attrs = conv_attrs(r, kern, g)
    per_channel = r.random() < 0.5
    c.opset = 10
    if conv_integer:  # (onnxruntime's takes one weight zero point for the tensor)
        zeros = [zero(xkind), zero(wkind)] if r.random() < 0.7 else []
        return [c.op("ConvInteger", [x, w, *zeros], **attrs)]

    def scale(n: int | None = None) -> str:
        return c.weight(value=r.uniform(0.002, 0.02, n).astype(np.float32) if n else np.float32(r.uniform(0.002, 0.02)))

    ykind = xkind
    bias = [c.weight(value=r.integers(-2000, 2000, oc).astype(np.int32))] if r.random() < 0.5 else []
    w_zero = zero(wkind, oc if per_channel else None)
    y_scale = c.weight(value=np.float32(r.choice([r.uniform(0.5, 4), 0.02])))  # (0.02: many saturate)
    return [c.op("QLinearConv", [x, scale(), zero(xkind), w, scale(oc if per_channel else None), w_zero, y_scale,
                                 zero(ykind), *bias], **attrs)]


FAMILIES: dict[str, Callable[[Case], list[str]]] = {"convt": _convt, "grid": _grid, "roi": _roi, "nms": _nms,
                                                    "channels": _channels, "qconv": _qconv}
