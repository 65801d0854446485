"""What each guarded op would allocate or loop over, computed from its kernel arguments before it runs.

``OUTPUT_SIZE[op](args, attrs)`` gives (shape, bytes per element) of the largest tensor the kernel
would make (its output, or an internal buffer such as Conv's im2col matrix), or None when there is
nothing to check; ``LOOP_COUNT[op](args, attrs)`` the iterations of a loop inside the kernel (pooling
taps, LRN's window). Sizes use Python integers, so a product of huge dimensions never wraps around.
The rules are upper bounds: malformed attributes are read the way the kernels read them, or left to
the kernel's own error. ``hal.limits.check_step`` applies them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def _ints(v: Any) -> list[int]:
    return [int(x) for x in np.asarray(v).reshape(-1)]


def _first(v: Any) -> Any:
    return np.asarray(v).reshape(-1)[0]


def _itemsize(v: Any, default: int = 4) -> int:
    dt = getattr(v, "dtype", None)
    return int(dt.itemsize) if dt is not None and dt.itemsize else default


def _broadcast(shapes: Sequence[Sequence[int]]) -> list[int]:
    """Broadcast shape as an upper bound (incompatible dims are the kernel's error to raise)."""
    rank = max((len(s) for s in shapes), default=0)
    out = [1] * rank
    for s in shapes:
        for i, d in enumerate(s):
            j = rank - len(s) + i
            out[j] = max(out[j], int(d))
    return out


def _elementwise(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    if len(arrays) < 2:
        return None
    first = arrays[0].shape
    if all(a.shape == first for a in arrays):
        return None  # no broadcasting: the output is no larger than an input already in memory
    return _broadcast([a.shape for a in arrays]), max(_itemsize(a) for a in arrays)


def _expand(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int]:
    x, shape = args[0], args[1]
    return _broadcast([x.shape, _ints(shape)]), _itemsize(x)


def _tile(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int]:
    x = args[0]
    if len(args) >= 3:  # Tile-1: (input, tiles, axis)
        shape = list(x.shape)
        axis = int(_first(args[2])) % max(x.ndim, 1)
        shape[axis] *= max(int(_first(args[1])), 0)
        return shape, _itemsize(x)
    reps = _ints(args[1])
    return [d * max(r, 0) for d, r in zip(x.shape, reps)], _itemsize(x)


def _constant_of_shape(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int]:
    value = attrs.get("value")
    return _ints(args[0]), _itemsize(value) if value is not None else 4


def _range(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    start, limit, delta = (_first(a) for a in args[:3])
    if np.asarray(start).dtype.kind in "iu":
        s, lim, d = int(start), int(limit), int(delta)
        if d == 0:
            return None
        n = max(-((s - lim) // d), 0)
    else:
        s, lim, d = float(start), float(limit), float(delta)
        if d == 0 or math.isnan(s) or math.isnan(lim) or math.isnan(d):
            return None
        q = (lim - s) / d
        if math.isinf(q):
            return [2**63], _itemsize(args[0])  # an endless range: refuse rather than let numpy try
        n = max(math.ceil(q), 0)
    return [n], _itemsize(args[0])


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
        sz = _ints(sizes)
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
        return out, _itemsize(x)
    if scales is not None and np.asarray(scales).size:
        sc = [float(s) for s in np.asarray(scales, dtype=np.float64).reshape(-1)]
        axes = list(range(rank)) if axes is None else [a % rank for a in axes]
        for a, s in zip(axes, sc):
            out[a] = _scaled(x.shape[a], s)
        return out, _itemsize(x)
    if "height_scale" in attrs and rank >= 2:  # Upsample-1
        out[-2] = _scaled(out[-2], float(attrs["height_scale"]))
        out[-1] = _scaled(out[-1], float(attrs.get("width_scale", 1.0)))
        return out, _itemsize(x)
    return None


def _pad(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    x = args[0]
    pads = attrs.get("pads", attrs.get("paddings")) if len(args) < 2 or args[1] is None else _ints(args[1])
    if pads is None:
        return None
    rank = x.ndim
    axes = _ints(args[3]) if len(args) > 3 and args[3] is not None else list(range(rank))
    n = len(axes)
    out = list(x.shape)
    for i, a in enumerate(axes[: len(pads) // 2]):
        a %= max(rank, 1)
        out[a] = max(out[a] + int(pads[i]) + int(pads[i + n]), 0)
    return out, _itemsize(x)


def _one_hot(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int]:
    indices, depth, values = args[0], args[1], args[2]
    d = _first(depth)
    d = int(d) if math.isfinite(float(d)) else 2**63
    return [*indices.shape, max(d, 0)], _itemsize(values)


def _center_crop_pad(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int]:
    x, shape = args[0], _ints(args[1])
    axes = attrs.get("axes")
    out = list(x.shape)
    for a, s in zip(range(x.ndim) if axes is None else axes, shape):
        out[a % x.ndim] = s
    return out, _itemsize(x)


def _gather(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int]:
    data, indices = args[0], np.asarray(args[1])
    axis = int(attrs.get("axis", 0)) % max(data.ndim, 1)
    return [*data.shape[:axis], *indices.shape, *data.shape[axis + 1:]], _itemsize(data)


def _matmul(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    a, b = args[0], args[1]
    if a.ndim == 0 or b.ndim == 0:
        return None
    sa = list(a.shape) if a.ndim > 1 else [1, a.shape[0]]
    sb = list(b.shape) if b.ndim > 1 else [b.shape[0], 1]
    batch = _broadcast([sa[:-2], sb[:-2]])
    return [*batch, sa[-2], sb[-1]], max(_itemsize(a), _itemsize(b), 4)


def _gemm(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    a, b = args[0], args[1]
    if a.ndim != 2 or b.ndim != 2:
        return None
    m = a.shape[1] if attrs.get("transA", 0) else a.shape[0]
    n = b.shape[0] if attrs.get("transB", 0) else b.shape[1]
    return [m, n], max(_itemsize(a), _itemsize(b))


def _einsum(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    eq = str(attrs.get("equation", "")).replace(" ", "")
    if "..." in eq or "->" not in eq:
        return None  # implicit outputs and ellipses: left to the kernel
    lhs, rhs = eq.split("->", 1)
    sizes: dict[str, int] = {}
    for term, x in zip(lhs.split(","), args):
        for letter, d in zip(term, getattr(x, "shape", ())):
            sizes[letter] = max(sizes.get(letter, 1), int(d))
    return [sizes.get(c, 1) for c in rhs], max(_itemsize(x) for x in args if isinstance(x, np.ndarray))


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
        asked = _ints(args[2])
        if math.prod(asked) > math.prod(inferred):
            return asked, _itemsize(x)
    return inferred, _itemsize(x)


def _window(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int]:
    return [max(int(_first(args[0])), 0)], 8


def _mel(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int]:
    bins, dft = int(_first(args[0])), int(_first(args[1]))
    return [max(dft // 2 + 1, 0), max(bins, 0)], 8


def _affine_grid(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int]:
    size = _ints(args[1])
    return [size[0], *size[2:], len(size) - 2], _itemsize(args[0])


def _constant(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    sparse = attrs.get("sparse_value")
    if sparse is None or not hasattr(sparse, "dims"):
        return None
    from onnx import helper

    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(sparse.values.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        itemsize = 8
    return [int(d) for d in sparse.dims], itemsize


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
        item = work_itemsize or max(_itemsize(x), 4)
        shapes = [[n, c, *padded], [c, math.prod(w.shape[2:]), n * math.prod(out)], [n, m, *out]]
        return max(shapes, key=math.prod), item
    return rule


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
    return max(shapes, key=math.prod), max(_itemsize(x), 8 if attrs.get("p") is not None else 4)


_BROADCASTING = ("Add", "Sub", "Mul", "Div", "Pow", "Mod", "And", "Or", "Xor", "Equal", "Greater", "Less",
                 "GreaterOrEqual", "LessOrEqual", "Where", "Max", "Min", "Sum", "Mean", "PRelu", "BitShift",
                 "BitwiseAnd", "BitwiseOr", "BitwiseXor")

#: op type -> (kernel args, attrs) -> (output shape, bytes per element) or None (nothing to check)
OUTPUT_SIZE: dict[str, Callable[[Sequence[Any], dict[str, Any]], tuple[list[int], int] | None]] = {
    **{op: _elementwise for op in _BROADCASTING},
    "Expand": _expand, "Tile": _tile, "ConstantOfShape": _constant_of_shape, "Range": _range,
    "Resize": _resize, "Upsample": _resize, "Pad": _pad, "OneHot": _one_hot, "CenterCropPad": _center_crop_pad,
    "Gather": _gather, "MatMul": _matmul, "Gemm": _gemm, "Einsum": _einsum,
    "ConvTranspose": _conv_transpose, "MaxUnpool": _max_unpool, "HannWindow": _window, "HammingWindow": _window,
    "BlackmanWindow": _window, "MelWeightMatrix": _mel, "AffineGrid": _affine_grid, "Constant": _constant,
    "Conv": _conv_rule(1, None), "ConvInteger": _conv_rule(1, 8), "QLinearConv": _conv_rule(3, 8),
    "MaxPool": _pool, "AveragePool": _pool, "LpPool": _pool,
}


def _roi_align(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int]:
    """RoiAlign's output, or the samples of its largest roi if more, (C, out_h, out_w, grid_h, grid_w)
    float64: the grid is sampling_ratio a side (an attribute), else the roi's extent over the output
    (the rois' values)."""
    x, rois = args[0], np.asarray(args[1], dtype=np.float64)
    oh, ow = int(attrs.get("output_height", 1)), int(attrs.get("output_width", 1))
    ratio = int(attrs.get("sampling_ratio", 0))
    if ratio > 0:
        gh = gw = ratio
    elif rois.size:
        box = rois.reshape(-1, 4) * float(attrs.get("spatial_scale", 1.0))
        gh = math.ceil(max(float(np.max(box[:, 3] - box[:, 1])), 1.0) / max(oh, 1))
        gw = math.ceil(max(float(np.max(box[:, 2] - box[:, 0])), 1.0) / max(ow, 1))
    else:
        gh = gw = 0
    return max([rois.shape[0], x.shape[1], oh, ow], [x.shape[1], oh, ow, gh, gw], key=math.prod), 8


def _max_roi_pool(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int]:
    x, rois = args[0], args[1]
    return [rois.shape[0], x.shape[1], *[int(v) for v in attrs["pooled_shape"]]], max(_itemsize(x), 4)


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


def _optional_int(args: Sequence[Any], i: int) -> int | None:
    v = args[i] if len(args) > i else None
    return None if v is None or np.asarray(v).size == 0 else int(_first(v))


def _complex_item(x: Any) -> int:
    return 16 if getattr(x, "dtype", None) == np.float64 else 8


def _dft(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """DFT's complex transform: the signal with its transform axis ``dft_length`` long (an input's
    value), or twice the axis for an inverse one-sided one. The axis is an attribute (opset 17) or an
    input (20); without either, the larger of the two defaults (1 and -2) bounds it."""
    x = args[0]
    if x.ndim < 2:
        return None
    length = _optional_int(args, 1)
    if "axis" in attrs:
        axes = [int(attrs["axis"])]
    else:
        given = _optional_int(args, 2)
        axes = [given] if given is not None else [1, -2]
    dims = list(x.shape[:-1])
    best: list[int] = dims
    for a in axes:
        if not -x.ndim <= a < x.ndim - 1:
            continue
        a %= x.ndim
        shape = list(dims)
        shape[a] = max(length or 0, 2 * dims[a])
        best = max(best, shape, key=math.prod)
    return best, _complex_item(x)


def _stft(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """STFT's frames, (batch, frames, max(frame_length, window)) complex, or the all-ones window it
    makes when none is given (``frame_length`` floats): both sized by input values."""
    signal, step = args[0], int(_first(args[1]))
    if signal.ndim != 3 or step < 1:
        return None
    window = args[2] if len(args) > 2 else None
    n_fft = _optional_int(args, 3)
    span = window.shape[0] if window is not None and np.ndim(window) else (n_fft or signal.shape[1])
    n_fft = n_fft or span
    frames = (signal.shape[1] - span) // step + 1 if signal.shape[1] >= span else 0
    shapes = [([signal.shape[0], frames, max(n_fft, span)], _complex_item(signal)), ([span], 8)]
    return max(shapes, key=lambda t: math.prod(t[0]) * t[1])


def _attention(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """Attention's scores, (batch, q heads, q length, kv length): a few KB of Q and K with long
    sequences ask for it whole (2**17 tokens: 64 GiB), however small the output."""
    q, k = args[0], args[1]
    past = args[4] if len(args) > 4 else None
    if q.ndim == 3 and k.ndim == 3:
        heads, q_len, kv_len = int(attrs.get("q_num_heads") or 1), q.shape[1], k.shape[1]
    elif q.ndim == 4 and k.ndim == 4:
        heads, q_len, kv_len = q.shape[1], q.shape[2], k.shape[2]
    else:
        return None
    if past is not None and getattr(past, "ndim", 0) == 4:
        kv_len += past.shape[2]
    wide = any(getattr(a, "dtype", None) == np.float64 for a in args[:3])
    return [q.shape[0], heads, q_len, kv_len], 8 if wide else 4


def _grid_sample(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """GridSample's output, (N, C, *grid's spatial dims), sampled in float64: the channels come from
    the image and the points from the grid, so neither input bounds their product."""
    x, grid = args[0], args[1]
    if x.ndim < 3 or grid.ndim != x.ndim:
        return None
    return [x.shape[0], x.shape[1], *grid.shape[1:-1]], 8


def _recurrent(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """RNN, GRU and LSTM's Y, (seq, directions, batch, hidden_size): hidden_size is an attribute and
    the input's width may be 1, so Y can be any multiple of X."""
    x, w = args[0], args[1]
    hidden = attrs.get("hidden_size")
    if x.ndim != 3 or w.ndim != 3 or hidden is None:
        return None
    seq, batch = (x.shape[1], x.shape[0]) if attrs.get("layout", 0) else (x.shape[0], x.shape[1])
    return [seq, w.shape[0], batch, int(hidden)], max(_itemsize(x), 4)


def _col2im(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """Col2Im's padded image, (N, C, *image_shape + pads): image_shape is an input's value and the
    strides an attribute, so a one-element input can ask for any image."""
    x, image, block = args[0], _ints(args[1]), _ints(args[2])
    nd = len(image)
    pads = [int(v) for v in (attrs.get("pads") or [0] * 2 * nd)]
    if x.ndim != 3 or len(block) != nd or len(pads) != 2 * nd or math.prod(block) < 1:
        return None
    span = [image[i] + max(pads[i], 0) + max(pads[i + nd], 0) for i in range(nd)]
    return [x.shape[0], x.shape[1] // math.prod(block), *span], max(_itemsize(x), 4)


def _multinomial(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """Multinomial's draws against each class, (batch, sample_size, classes) booleans, or its float64
    uniforms (batch, sample_size) if larger: sample_size is an attribute, the batch dynamic."""
    x, samples = args[0], int(attrs.get("sample_size", 1))
    if x.ndim != 2:
        return None
    return max(([x.shape[0], samples, x.shape[1]], 1), ([x.shape[0], samples], 8),
               key=lambda t: math.prod(t[0]) * t[1])


def _string_concat(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """StringConcat broadcasts: each output is a new Python string, 64 bytes at least (its header and
    the array's pointer to it)."""
    if len(args) != 2 or not all(isinstance(a, np.ndarray) for a in args):
        return None
    return _broadcast([args[0].shape, args[1].shape]), 64


def _matmul_wide(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """MatMulInteger's product, (…, M, N), computed as a float64 BLAS product (8 bytes an element)."""
    got = _matmul(args, attrs)
    return None if got is None else (got[0], 8)


def _qlinear_matmul(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """QLinearMatMul (a, its scale and zero point, b, ...): the float64 product of a and b."""
    return _matmul_wide([args[0], args[3]], attrs) if len(args) > 3 else None


def _gather_nd(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """GatherND's output, indices' index tuples times data's slices: a product of two inputs."""
    data, indices = args[0], np.asarray(args[1])
    b = int(attrs.get("batch_dims", 0))
    if indices.ndim < 1 or not 0 <= b < min(data.ndim, indices.ndim):
        return None
    m = indices.shape[-1]
    return [*data.shape[:b], *indices.shape[b:-1], *data.shape[b + m:]], _itemsize(data)


def _non_zero(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """NonZero's indices, (rank, count) int64, at most (rank, size): 8 x rank bytes a boolean."""
    x = args[0]
    return [max(x.ndim, 1), x.size], 8


def _concat(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """Concat's output: the same tensor may be an input many times (or a view spanning more than it
    holds), so the inputs in memory do not bound it."""
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    if len(arrays) < 2 or arrays[0].ndim == 0:
        return None
    axis = int(attrs.get("axis", 0)) % arrays[0].ndim
    shape = list(arrays[0].shape)
    shape[axis] = sum(a.shape[axis] if a.ndim == arrays[0].ndim else 0 for a in arrays)
    return shape, max(_itemsize(a) for a in arrays)


def _reduced_empty(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """A reduction's output (or a normalisation's statistics) where its input is empty: the dims it
    does not reduce survive, so (2**32, 0, 4), no bytes, reduced over its zero axis is (2**32, 1, 4),
    64 GiB. Bounded by the input's shape with each 0 read as 1, in float64 (the accumulators); the
    axes may be a run's values (ReduceSum's second input), so the bound does not read them."""
    x = args[0] if args else None
    if not isinstance(x, np.ndarray) or x.size:
        return None  # a non-empty input bounds its reduction's elements
    return [max(int(d), 1) for d in x.shape], 8


def _linear_attention(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """LinearAttention's state, (batch, kv heads, key head, value head), or its output if more: one
    token of 32,768-wide heads (128 KB a tensor) makes a 4 GiB state."""
    q, k, v = args[0], args[1], args[2]
    hq, hkv = int(attrs.get("q_num_heads") or 0), int(attrs.get("kv_num_heads") or 0)
    if hq <= 0 or hkv <= 0 or not q.ndim == k.ndim == v.ndim == 3:
        return None  # the kernel's error
    state = [q.shape[0], hkv, k.shape[2] // hkv, v.shape[2] // hkv]
    out = [q.shape[0], hq, q.shape[1], v.shape[2] // hkv]
    wide = any(getattr(a, "dtype", None) == np.float64 for a in args[:4] if a is not None)
    return max(state, out, key=math.prod), 8 if wide else 4


#: bytes a numpy view takes as an object (its header, shape and strides), whatever it views
VIEW_BYTES = 128


def _split_to_sequence(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """SplitToSequence's pieces, each a view of ``VIEW_BYTES``: an input of no bytes, (2**28, 0), split
    along its first axis is 2**28 views (32 GiB of headers)."""
    x = args[0]
    split = np.asarray(args[1]) if len(args) > 1 and args[1] is not None else None
    if x.ndim == 0:
        return None
    n = x.shape[int(attrs.get("axis", 0)) % x.ndim]
    if split is None:
        pieces = n
    elif split.ndim == 0:
        step = int(split)
        if step <= 0:
            return None  # the kernel's error
        pieces = -(-n // step)
    else:
        pieces = split.size
    return [pieces], VIEW_BYTES


def _array_feature_extractor(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """ArrayFeatureExtractor's output: every row of x at each index, a product of two inputs' sizes."""
    x, index = args[0], np.asarray(args[1])
    return [*x.shape[:-1], index.size] if x.ndim > 1 else [1, index.size], _itemsize(x, 8)


def _tree_ensemble(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """TreeEnsemble's scores, (samples, n_targets) float64: n_targets is an attribute."""
    x = args[0]
    return [x.shape[0] if x.ndim > 1 else 1, int(attrs.get("n_targets", 1))], 8


def _concat_from_sequence(args: Sequence[Any], attrs: dict[str, Any]) -> tuple[list[int], int] | None:
    """ConcatFromSequence's output: all the sequence's tensors, which may be one tensor many times."""
    items = [a for a in (args[0] if args and isinstance(args[0], (list, tuple)) else ()) if isinstance(a, np.ndarray)]
    if not items:
        return None
    return [sum(a.size for a in items)], max(_itemsize(a) for a in items)


OUTPUT_SIZE.update({"RoiAlign": _roi_align, "MaxRoiPool": _max_roi_pool, "DeformConv": _deform_conv,
                    "ConcatFromSequence": _concat_from_sequence,
                    "MatMulInteger": _matmul_wide, "QLinearMatMul": _qlinear_matmul, "GatherND": _gather_nd,
                    "NonZero": _non_zero, "Concat": _concat,
                    "Col2Im": _col2im, "Multinomial": _multinomial, "StringConcat": _string_concat,
                    "DFT": _dft, "STFT": _stft, "Attention": _attention, "FlexAttention": _attention,
                    "GridSample": _grid_sample, "RNN": _recurrent, "GRU": _recurrent,
                    "LSTM": _recurrent})  # (defined after the table)
#: ops that reduce their input (or take its statistics): an empty input still keeps the dims they keep
REDUCING_OPS = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin", "GlobalAveragePool",
                "GlobalMaxPool", "GlobalLpPool", "Det", "TopK", "LayerNormalization", "GroupNormalization",
                "InstanceNormalization", "LpNormalization", "MeanVarianceNormalization", "RMSNormalization")
OUTPUT_SIZE.update(dict.fromkeys(REDUCING_OPS, _reduced_empty))
OUTPUT_SIZE.update({"LinearAttention": _linear_attention, "SplitToSequence": _split_to_sequence,
                    "ArrayFeatureExtractor": _array_feature_extractor, "TreeEnsemble": _tree_ensemble})

#: the most iterations a kernel's own loop may make (pooling taps, LRN's channel window): attributes
#: are a few bytes of model, and a loop inside one kernel call cannot be stopped by ``timeout_s``
MAX_KERNEL_ITERATIONS = 1 << 24


def _taps(args: Sequence[Any], attrs: dict[str, Any]) -> int | None:
    k = attrs.get("kernel_shape")
    return math.prod(max(int(v), 0) for v in k) if k else None


def _lrn_window(args: Sequence[Any], attrs: dict[str, Any]) -> int | None:
    size = attrs.get("size")
    return abs(int(size)) if size is not None else None


#: op type -> (kernel args, attrs) -> how many iterations the kernel's own loop will make
LOOP_COUNT: dict[str, Callable[[Sequence[Any], dict[str, Any]], int | None]] = {
    "MaxPool": _taps, "AveragePool": _taps, "LpPool": _taps, "LRN": _lrn_window,
}
GUARDED_OPS = frozenset(OUTPUT_SIZE) | frozenset(LOOP_COUNT)
