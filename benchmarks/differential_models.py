"""The differential sweep's whole-network families: small models as exporters (torch.onnx, tf2onnx,
keras2onnx, optimum) write them, to exercise hal's graph passes (constant and BatchNormalization
folding, the pool and pointwise-conv rewrites, fusion) and its engine (in-place reuse, views, fused
elementwise regions) rather than single kernels: convolutional stacks, feature pyramids, GPT-like and
Llama-like decoder blocks, and random graphs of the engine's hazards (values read many times or
returned while consumed, inputs and weights returned, views of values later changed elementwise,
shapes computed at run time). float32 mostly, float16 sometimes (with the Casts mixed-precision
exporters write around normalisations)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from onnx import TensorProto, helper

from benchmarks.differential_draw import Case, dims, ri

F16, F32 = np.dtype(np.float16), np.dtype(np.float32)


def _dtype(c: Case, half: float) -> None:
    c.dtype = F16 if c.rng.random() < half else F32


def _scalar(c: Case, v: float) -> str:
    return c.weight(value=float(v))


def _act(c: Case, x: str) -> str:
    """An activation as CNN exporters write them (ReLU6 as Clip, hard-swish three ways, SiLU, none)."""
    k = ri(c.rng, 0, 8)
    if k == 0:
        return c.op("Relu", [x])
    if k == 1:
        return c.op("Clip", [x, _scalar(c, 0.0), _scalar(c, 6.0)])
    if k == 2 and c.opset >= 14:
        return c.op("HardSwish", [x])
    if k == 3:  # torch's hardswish before opset 14: x * relu6(x + 3) / 6
        return c.op("Div", [c.op("Mul", [x, c.op("Clip", [c.op("Add", [x, _scalar(c, 3.0)]), _scalar(c, 0.0),
                                                          _scalar(c, 6.0)])]), _scalar(c, 6.0)])
    if k == 4:  # keras' hard-swish
        return c.op("Mul", [x, c.op("HardSigmoid", [x], alpha=1 / 6, beta=0.5)])
    if k == 5:  # SiLU
        return c.op("Mul", [x, c.op("Sigmoid", [x])])
    if k == 6:
        return c.op("LeakyRelu", [x], alpha=0.1)
    return x


# -- convolutional stacks ------------------------------------------------------------------------

def _conv(c: Case, x: str, cin: int, cout: int, k: int = 1, stride: int = 1, group: int = 1, bn: bool | None = None,
          act: bool = True) -> str:
    """Conv (+ BatchNormalization, which hal folds into the weights) (+ an activation)."""
    r = c.rng
    bn = r.random() < 0.6 if bn is None else bn
    w = c.weight([cout, cin // group, k, k], scale=float(1 / np.sqrt(cin // group * k * k)))
    bias = [c.weight([cout], scale=0.2)] if not bn or r.random() < 0.3 else []
    y = c.op("Conv", [x, w, *bias], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=group)
    if bn:
        stats = [c.weight(value=(1 + r.standard_normal(cout) * 0.2).astype(c.dtype)), c.weight([cout], scale=0.2),
                 c.weight([cout], scale=0.2), c.weight(value=r.uniform(0.5, 2, cout).astype(c.dtype))]
        y = c.op("BatchNormalization", [y, *stats], epsilon=float(r.choice([1e-5, 1e-3])))
    return _act(c, y) if act else y


def _block(c: Case, x: str, ch: int, hw: list[int], k: int | None = None) -> tuple[str, int, list[int]]:
    """One block of a CNN: residual, inverted residual (depthwise), inception branches, squeeze-excite,
    a pool. Returns the value, its channels and its spatial size."""
    r = c.rng
    if k is None:
        k = ri(r, 0, 9) if min(hw) >= 4 else int(r.choice([2, 3, 7, 8]))  # (no map shrunk to nothing)
    if k == 0:  # ResNet basic block, a 1x1 shortcut where the width or stride changes
        out, stride = int(r.choice([ch, ch * 2])), int(r.choice([1, 1, 2]))
        y = _conv(c, _conv(c, x, ch, out, 3, stride), out, out, 3, act=False)
        short = x if out == ch and stride == 1 else _conv(c, x, ch, out, 1, stride, act=False)
        y = c.op("Add", [y, short] if r.random() < 0.5 else [short, y])
        return _act(c, y), out, [(d - 1) // stride + 1 for d in hw]
    if k == 1:  # MobileNetV2 inverted residual
        mid, stride = ch * int(r.choice([1, 2, 3])), int(r.choice([1, 1, 2]))
        y = _conv(c, x, ch, mid, 1) if mid != ch else x
        y = _conv(c, _conv(c, y, mid, mid, 3, stride, group=mid), mid, ch, 1, act=False)
        if stride == 1:
            y = c.op("Add", [x, y])
        return y, ch, [(d - 1) // stride + 1 for d in hw]
    if k == 2:  # inception: branches concatenated on channels (then often a 1x1 conv or a pool)
        parts, widths = [], []
        for _ in range(ri(r, 2, 5)):
            w, b = ri(r, 1, 5), ri(r, 0, 4)
            if b == 0:
                parts.append(_conv(c, x, ch, w, 1))
            elif b == 1:
                parts.append(_conv(c, _conv(c, x, ch, w, 1), w, w, 3))
            elif b == 2:
                p = c.op("MaxPool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
                parts.append(_conv(c, p, ch, w, 1))
            else:
                p = c.op("AveragePool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
                         count_include_pad=ri(r, 0, 2))
                parts.append(p)
                w = ch
            widths.append(w)
        y, ch = c.op("Concat", parts, axis=1), sum(widths)
        if r.random() < 0.4:  # a squeeze of few channels (hal splits it over the parts on large maps)
            m = ri(r, 1, 4)
            return _conv(c, y, ch, m, 1, act=False), m, hw
        if r.random() < 0.5 and min(hw) >= 4:  # a pool (hal pools each part before the Concat)
            kk = ri(r, 2, 4)
            return c.op(str(r.choice(["MaxPool", "AveragePool"])), [y], kernel_shape=[kk, kk], strides=[2, 2]), ch, [
                (d - kk) // 2 + 1 for d in hw]
        return y, ch, hw
    if k == 3:  # squeeze-and-excite
        s = c.op("GlobalAveragePool", [x]) if r.random() < 0.7 else _reduce_mean(c, x, (2, 3))
        s = _conv(c, _conv(c, s, ch, max(1, ch // 2), 1, bn=False), max(1, ch // 2), ch, 1, bn=False, act=False)
        s = c.op("Sigmoid", [s]) if r.random() < 0.5 else c.op("HardSigmoid", [s], alpha=0.2, beta=0.5)
        return c.op("Mul", [x, s] if r.random() < 0.5 else [s, x]), ch, hw
    if k == 4 and min(hw) >= 2:
        op = str(r.choice(["MaxPool", "AveragePool"]))
        if r.random() < 0.5:
            return c.op(op, [x], kernel_shape=[2, 2], strides=[2, 2]), ch, [d // 2 for d in hw]
        return c.op(op, [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), ch, [(d - 1) // 2 + 1 for d in hw]
    if k == 5:  # an average pool beside a pointwise conv, either first (hal takes the cheaper order)
        attrs = _avg_pool_attrs(c)
        out = int(r.choice([max(1, ch // 2), ch * 2]))
        w, b = c.weight([out, ch, 1, 1], scale=float(1 / np.sqrt(ch))), c.weight([out], scale=0.2)
        if r.random() < 0.5:
            y = c.op("AveragePool", [c.op("Conv", [x, w, b], kernel_shape=[1, 1])], **attrs)
        else:
            y = c.op("Conv", [c.op("AveragePool", [x], **attrs), w, b], kernel_shape=[1, 1])
        return y, out, _pooled(hw, attrs)
    if k == 6:  # a Relu before a MaxPool (hal pools first where every window holds a pixel)
        kk = ri(r, 1, 4)
        attrs = {"kernel_shape": [kk, kk], "strides": [ri(r, 1, 3)] * 2}
        if r.random() < 0.6:
            attrs["pads"] = [ri(r, 0, kk) for _ in range(4)]
        else:
            same = kk >= attrs["strides"][0]  # (as for average pools below)
            attrs["auto_pad"] = str(r.choice(["SAME_UPPER", "SAME_LOWER", "VALID"])) if same else "VALID"
        if r.random() < 0.2:
            attrs["ceil_mode"] = 1
        y = c.op("MaxPool", [c.op("Relu", [x])], **attrs)
        return y, ch, _pooled(hw, attrs)
    if k == 7:  # a pre-activation BatchNormalization with no Conv before it, Caffe2's Mul / Add after
        stats = [c.weight(value=(1 + r.standard_normal(ch) * 0.2).astype(c.dtype)), c.weight([ch], scale=0.2),
                 c.weight([ch], scale=0.2), c.weight(value=r.uniform(0.5, 2, ch).astype(c.dtype))]
        y = c.op("BatchNormalization", [x, *stats], epsilon=1e-5)
        for _ in range(ri(r, 0, 3)):
            shape = [[ch, 1, 1], [1, ch, 1, 1], [1], [1, 1, 1]][ri(r, 0, 4)]
            y = c.op(str(r.choice(["Mul", "Add"])), [y, c.weight(shape)])
        return _act(c, y), ch, hw
    out = ri(r, 2, 9)
    return _conv(c, x, ch, out, int(r.choice([1, 3]))), out, hw


def _avg_pool_attrs(c: Case) -> dict:
    r = c.rng
    kk, st = ri(r, 1, 4), ri(r, 1, 3)
    attrs: dict = {"kernel_shape": [kk, kk], "strides": [st, st], "count_include_pad": ri(r, 0, 2)}
    if r.random() < 0.3:  # (SAME with a stride past the kernel: onnxruntime computes a negative pad and fails)
        attrs["auto_pad"] = str(r.choice(["SAME_UPPER", "VALID"])) if kk >= st else "VALID"
    else:
        attrs["pads"] = [ri(r, 0, kk) for _ in range(4)]
        attrs["ceil_mode"] = ri(r, 0, 2)
    # (not with SAME: onnxruntime sizes a dilated SAME pool apart from the spec, onnx's reference otherwise)
    if c.opset >= 19 and "pads" in attrs and r.random() < 0.3:
        attrs["dilations"] = [ri(r, 1, 3)] * 2
    return attrs


def _pooled(hw: list[int], attrs: dict) -> list[int]:
    """A pool's output size (the ONNX formula; ceil_mode's last window starting inside the padded input)."""
    k, s = attrs["kernel_shape"][0], attrs["strides"][0]
    dil = attrs.get("dilations", [1])[0]
    if attrs.get("auto_pad") in ("SAME_UPPER", "SAME_LOWER"):
        return [-(-d // s) for d in hw]
    pads = attrs.get("pads", [0] * 4)
    out = []
    for i, d in enumerate(hw):
        span = d + pads[i] + pads[i + 2] - dil * (k - 1) - 1
        n = (-(-span // s) if attrs.get("ceil_mode") else span // s) + 1
        if attrs.get("ceil_mode") and (n - 1) * s >= d + pads[i]:
            n -= 1
        out.append(n)
    return out


def _cnn(c: Case) -> list[str]:
    """A small classifier: a conv stem, two to four blocks (residual, depthwise, inception, squeeze-excite,
    pools), a head of GlobalAveragePool, Flatten / Reshape / Squeeze and Gemm, maybe Softmax; sometimes a
    feature map returned beside the logits."""
    r = c.rng
    _dtype(c, 0.15)
    c.opset = int(r.choice([13, 14, 17, 19]))
    ch, hw = ri(r, 2, 7), [ri(r, 4, 13), ri(r, 4, 13)] if r.random() < 0.75 else [ri(r, 24, 40), ri(r, 24, 40)]
    x = c.feed([ri(r, 1, 3), int(r.choice([1, 3])), *hw])
    stride = int(r.choice([1, 2])) if min(hw) < 24 else 1
    y = _conv(c, x, c.feeds[x].shape[1], ch, 3, stride)
    hw = [(d - 1) // stride + 1 for d in hw]
    outs = []
    for i in range(ri(r, 2, 5)):
        y, ch, hw = _block(c, y, ch, hw, 2 if i == 0 and min(hw) >= 12 and r.random() < 0.5 else None)
        if r.random() < 0.1:
            outs.append(y)
    if r.random() < 0.2:
        return list(dict.fromkeys([*outs, y]))
    g = c.op("GlobalAveragePool", [y])
    k = ri(r, 0, 3)
    if k == 0:
        g = c.op("Flatten", [g], axis=1)
    elif k == 1:
        g = c.op("Reshape", [g, c.ints([0, -1])])
    else:
        g = c.op("Squeeze", [g, c.ints([2, 3])])
    classes = ri(r, 1, 11)
    logits = c.op("Gemm", [g, c.weight([classes, ch], scale=float(1 / np.sqrt(ch))), c.weight([classes], scale=0.1)],
                  transB=1)
    if r.random() < 0.4:
        logits = c.op("Softmax", [logits], axis=1)
    return [*outs, logits]


def _fpn(c: Case) -> list[str]:
    """A feature pyramid: a backbone of stride-2 convs, the top map upsampled (Resize by scales or by
    sizes read off the lateral map with Shape/Slice/Concat, as torchvision exports it; Upsample at
    opset 9) and added to the lateral 1x1 conv of the map below, a 3x3 conv over each sum."""
    r = c.rng
    _dtype(c, 0.1)
    old = r.random() < 0.15
    c.opset = 9 if old else int(r.choice([11, 13, 18]))
    by_sizes = not old and r.random() < 0.5
    levels = ri(r, 2, 4)
    hw = [2 ** (levels - 1) * ri(r, 1, 4) for _ in "hw"] if not by_sizes else [ri(r, 2, 14), ri(r, 2, 14)]
    ch = ri(r, 2, 6)
    x = c.feed([ri(r, 1, 3), ch, *hw])
    feats, y = [], x
    for i in range(levels):
        y = c.op("Relu", [_conv(c, y, ch, ch, 3, 1 if i == 0 else 2, bn=False, act=False)])
        feats.append(y)
    width = ri(r, 2, 6)
    top = _conv(c, feats[-1], ch, width, 1, bn=False, act=False)
    outs = [top]
    mode = str(r.choice(["nearest", "linear"]))
    for lower in reversed(feats[:-1]):
        lateral = _conv(c, lower, ch, width, 1, bn=False, act=False)
        if old:
            up = c.op("Upsample", [top, c.weight(value=np.array([1, 1, 2, 2], np.float32))], mode=mode)
        else:
            attrs = {"mode": mode}
            if mode == "nearest":
                attrs.update(coordinate_transformation_mode="asymmetric", nearest_mode="floor")
            else:
                attrs["coordinate_transformation_mode"] = str(r.choice(["half_pixel", "align_corners",
                                                                        "pytorch_half_pixel"]))
            roi = c.weight(value=np.zeros(0, np.float32)) if c.opset < 13 else ""
            if by_sizes:
                sizes = c.op("Concat", [c.op("Slice", [c.op("Shape", [top]), c.ints([0]), c.ints([2])]),
                                        c.op("Slice", [c.op("Shape", [lower]), c.ints([2]), c.ints([4])])], axis=0)
                up = c.op("Resize", [top, roi, c.weight(value=np.zeros(0, np.float32)), sizes], **attrs)
            else:
                up = c.op("Resize", [top, roi, c.weight(value=np.array([1, 1, 2, 2], np.float32))], **attrs)
        top = c.op("Add", [lateral, up] if r.random() < 0.5 else [up, lateral])
        outs.append(_conv(c, top, width, width, 3, bn=False, act=False))
    if r.random() < 0.3:  # the coarsest level pooled once more, as RetinaNet's P6 is
        outs.append(c.op("MaxPool", [outs[0]], kernel_shape=[1, 1], strides=[2, 2]))
    return outs


# -- transformer blocks --------------------------------------------------------------------------

def _linear(c: Case, x: str, k: int, n: int, bias: bool = True) -> str:
    y = c.op("MatMul", [x, c.weight([k, n], scale=float(1 / np.sqrt(k)))])
    return c.op("Add", [y, c.weight([n], scale=0.1)]) if bias else y


def _upcast(c: Case, x: str) -> str:
    """float16 models compute their normalisations in float32 (HF's ``hidden.to(torch.float32)``)."""
    return c.op("Cast", [x], to=TensorProto.FLOAT) if c.dtype == F16 else x


def _downcast(c: Case, x: str) -> str:
    return c.op("Cast", [x], to=TensorProto.FLOAT16) if c.dtype == F16 else x


def _f32(c: Case, v: float | np.ndarray) -> str:
    return c.weight(value=np.asarray(v, np.float32))


def _reduce_mean(c: Case, x: str, axes: tuple[int, ...] = (-1,)) -> str:
    if c.opset >= 18:
        return c.op("ReduceMean", [x, c.ints(list(axes))], keepdims=1)
    return c.op("ReduceMean", [x], axes=list(axes), keepdims=1)


def _layer_norm(c: Case, x: str, hidden: int) -> str:
    """LayerNorm as torch.onnx decomposes it before opset 17 (or the op itself)."""
    r = c.rng
    gamma, beta = c.weight(value=(1 + r.standard_normal(hidden) * 0.1).astype(c.dtype)), c.weight([hidden], scale=0.1)
    if r.random() < 0.25:
        return c.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=1e-5) if c.opset >= 17 else x
    h = _upcast(c, x)
    d = c.op("Sub", [h, _reduce_mean(c, h)])
    var = _reduce_mean(c, c.op("Pow", [d, _f32(c, 2.0)]))
    y = c.op("Div", [d, c.op("Sqrt", [c.op("Add", [var, _f32(c, float(r.choice([1e-5, 1e-12])))])])])
    return c.op("Add", [c.op("Mul", [_downcast(c, y), gamma]), beta])


def _rms_norm(c: Case, x: str, hidden: int) -> str:
    """RMSNorm as Llama exports write it: Pow, ReduceMean, Add eps, Sqrt, Reciprocal (or Div), Mul."""
    r = c.rng
    h = _upcast(c, x)
    rms = c.op("Sqrt", [c.op("Add", [_reduce_mean(c, c.op("Pow", [h, _f32(c, 2.0)])), _f32(c, 1e-6)])])
    y = c.op("Mul", [h, c.op("Reciprocal", [rms])]) if r.random() < 0.5 else c.op("Div", [h, rms])
    gamma = c.weight(value=(1 + r.standard_normal(hidden) * 0.1).astype(c.dtype))
    return c.op("Mul", [gamma, _downcast(c, y)])


def _gelu(c: Case, x: str) -> str:
    k = ri(c.rng, 0, 4)
    if k == 0:  # erf
        e = c.op("Erf", [c.op("Div", [x, _scalar(c, 1.4142135)])])
        return c.op("Mul", [c.op("Mul", [x, c.op("Add", [e, _scalar(c, 1.0)])]), _scalar(c, 0.5)])
    if k == 1:  # tanh (GPT-2's gelu_new)
        inner = c.op("Mul", [_scalar(c, 0.7978846), c.op("Add", [x, c.op("Mul", [_scalar(c, 0.044715),
                                                                            c.op("Pow", [x, _scalar(c, 3.0)])])])])
        return c.op("Mul", [c.op("Mul", [_scalar(c, 0.5), x]), c.op("Add", [_scalar(c, 1.0), c.op("Tanh", [inner])])])
    if k == 2:  # quick gelu
        return c.op("Mul", [x, c.op("Sigmoid", [c.op("Mul", [x, _scalar(c, 1.702)])])])
    return c.op("Mul", [x, c.op("Sigmoid", [x])])


def _positions(c: Case, ids: str, past: str | None) -> tuple[str, str, str]:
    """(past length, sequence length, total length) as int64 scalars read off shapes at run time."""
    seq = c.op("Gather", [c.op("Shape", [ids]), c.ints(1)], axis=0)
    start = c.op("Gather", [c.op("Shape", [past]), c.ints(2)], axis=0) if past else c.ints(0)
    return start, seq, c.op("Add", [start, seq])


def _causal(c: Case, scores: str, start: str, seq: str, total: str) -> str:
    """Scores masked where the key comes after the query: Range/Unsqueeze/LessOrEqual/Where as HF writes
    it, a Trilu of ones, or an additive mask of a large negative."""
    r = c.rng
    low = -1e4 if c.dtype == F16 else float(r.choice([-1e9, -np.inf, float(np.finfo(np.float32).min)]))
    k = ri(r, 0, 3)
    if k == 0 or c.opset < 14:
        q = c.op("Unsqueeze", [c.op("Range", [start, total, c.ints(1)]), c.ints([1])])
        kk = c.op("Unsqueeze", [c.op("Range", [c.ints(0), total, c.ints(1)]), c.ints([0])])
        keep = c.op("Not", [c.op("Less", [q, kk])]) if r.random() < 0.5 else c.op("LessOrEqual", [kk, q])
    else:
        shape = c.op("Concat", [c.op("Unsqueeze", [seq, c.ints([0])]), c.op("Unsqueeze", [total, c.ints([0])])], axis=0)
        ones = c.op("ConstantOfShape", [shape], value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]))
        keep = c.op("Cast", [c.op("Trilu", [ones, start], upper=0)], to=TensorProto.BOOL)
    if k == 2:  # additive: (1 - mask) * low
        add = c.op("Mul", [c.op("Sub", [_scalar(c, 1.0), c.op("Cast", [keep], to=helper.np_dtype_to_tensor_dtype(
            c.dtype))]), _scalar(c, -1e4 if c.dtype == F16 else -1e9)])
        return c.op("Add", [scores, add])
    return c.op("Where", [keep, scores, _scalar(c, low)])


def _attention(c: Case, x: str, hidden: int, heads: int, kv_heads: int, start: str, seq: str, total: str,
               rotary: tuple[str, str] | None, past: tuple[str, str] | None, outs: list[str]) -> str:
    """Self-attention as exporters write it: projections, heads by Reshape (constant or computed) and
    Transpose, rotary embedding, the KV cache Concat (present returned and read on), GQA's Expand,
    the scaled and masked Softmax, the output projection."""
    r, d = c.rng, hidden // heads
    bias = r.random() < 0.5

    def split(y: str, h: int) -> str:
        if r.random() < 0.5:
            y = c.op("Reshape", [y, c.ints([0, 0, h, d])])
        else:
            b = c.op("Unsqueeze", [c.op("Gather", [c.op("Shape", [y]), c.ints(0)], axis=0), c.ints([0])])
            shape = c.op("Concat", [b, c.op("Unsqueeze", [seq, c.ints([0])]), c.ints([h, d])], axis=0)
            y = c.op("Reshape", [y, shape])
        return c.op("Transpose", [y], perm=[0, 2, 1, 3])

    q = split(_linear(c, x, hidden, hidden, bias), heads)
    k = split(_linear(c, x, hidden, kv_heads * d, bias), kv_heads)
    v = split(_linear(c, x, hidden, kv_heads * d, bias), kv_heads)
    if rotary:
        cos, sin = rotary

        def rot(t: str) -> str:
            lo = c.op("Slice", [t, c.ints([0]), c.ints([d // 2]), c.ints([-1])])
            hi = c.op("Slice", [t, c.ints([d // 2]), c.ints([2**62]), c.ints([-1])])
            half = c.op("Concat", [c.op("Neg", [hi]), lo], axis=-1)
            return c.op("Add", [c.op("Mul", [t, cos]), c.op("Mul", [half, sin])])

        q, k = rot(q), rot(k)
    if past:
        k, v = c.op("Concat", [past[0], k], axis=2), c.op("Concat", [past[1], v], axis=2)
        outs += [k, v]
    if kv_heads != heads:  # repeat_kv: [b, kvh, t, d] -> [b, kvh, n, t, d] -> [b, h, t, d]
        def repeat(t: str) -> str:
            sh = c.op("Shape", [t])
            b, tt = (c.op("Slice", [sh, c.ints([i]), c.ints([i + 1])]) for i in (0, 2))
            e = c.op("Expand", [c.op("Unsqueeze", [t, c.ints([2])]),
                                c.op("Concat", [b, c.ints([kv_heads, heads // kv_heads]), tt, c.ints([d])], axis=0)])
            return c.op("Reshape", [e, c.op("Concat", [b, c.ints([heads]), tt, c.ints([d])], axis=0)])

        k, v = repeat(k), repeat(v)
    if r.random() < 0.5:
        s = c.op("Div", [c.op("MatMul", [q, c.op("Transpose", [k], perm=[0, 1, 3, 2])]), _scalar(c, np.sqrt(d))])
    else:  # scale split over q and k, as optimum's SDPA export writes it
        f = _scalar(c, d ** -0.25)
        s = c.op("MatMul", [c.op("Mul", [q, f]), c.op("Mul", [c.op("Transpose", [k], perm=[0, 1, 3, 2]), f])])
    s = _causal(c, s, start, seq, total)
    o = c.op("MatMul", [c.op("Softmax", [s], axis=-1), v])
    o = c.op("Reshape", [c.op("Transpose", [o], perm=[0, 2, 1, 3]), c.ints([0, 0, hidden])])
    return _linear(c, o, hidden, hidden, bias)


def _decoder(c: Case, llama: bool) -> list[str]:
    r = c.rng
    _dtype(c, 0.2)
    c.opset = int(r.choice([13, 14, 17, 18]))
    vocab, hidden = ri(r, 3, 24), int(r.choice([8, 16, 24]))
    heads = int(r.choice([h for h in (1, 2, 4) if hidden % (2 * h) == 0]))
    kv_heads = int(r.choice([h for h in (1, 2, 4) if heads % h == 0])) if llama else heads
    d, batch, seq = hidden // heads, ri(r, 1, 3), ri(r, 1, 7)
    ids = c.feed([batch, seq], value=r.integers(0, vocab, (batch, seq)).astype(np.int64))
    layers, plen = ri(r, 1, 3), ri(r, 0, 5) if r.random() < 0.5 else None
    pasts = [(c.feed([batch, kv_heads, plen, d]), c.feed([batch, kv_heads, plen, d])) if plen is not None else None
             for _ in range(layers)]
    emb = c.weight([vocab, hidden])
    h = c.op("Gather", [emb, ids], axis=0)
    start, seq_len, total = _positions(c, ids, pasts[0][0] if pasts[0] else None)
    pos = c.op("Range", [start, total, c.ints(1)])
    rotary = None
    if llama:  # cos / sin from positions times inverse frequencies, or gathered from a cache
        if r.random() < 0.5:
            inv = _f32(c, 1.0 / 10000 ** (np.arange(0, d, 2) / d))
            f = c.op("Mul", [c.op("Unsqueeze", [c.op("Cast", [pos], to=TensorProto.FLOAT), c.ints([1])]), inv])
            e = c.op("Concat", [f, f], axis=-1)
            rotary = (_downcast(c, c.op("Cos", [e])), _downcast(c, c.op("Sin", [e])))
        else:
            ang = np.arange(16)[:, None] * np.concatenate([1.0 / 10000 ** (np.arange(0, d, 2) / d)] * 2)[None]
            rotary = (c.op("Gather", [c.weight(value=np.cos(ang).astype(c.dtype)), pos], axis=0),
                      c.op("Gather", [c.weight(value=np.sin(ang).astype(c.dtype)), pos], axis=0))
    else:
        h = c.op("Add", [h, c.op("Gather", [c.weight([16, hidden], scale=0.3), pos], axis=0)])
    outs: list[str] = []
    for past in pasts:
        norm = _rms_norm(c, h, hidden) if llama else _layer_norm(c, h, hidden)
        a = _attention(c, norm, hidden, heads, kv_heads, start, seq_len, total, rotary, past, outs)
        h = c.op("Add", [h, a])
        norm = _rms_norm(c, h, hidden) if llama else _layer_norm(c, h, hidden)
        inner = ri(r, hidden, 3 * hidden)
        if llama:  # SwiGLU
            g = _linear(c, norm, hidden, inner, False)
            m = c.op("Mul", [c.op("Mul", [g, c.op("Sigmoid", [g])]), _linear(c, norm, hidden, inner, False)])
            m = _linear(c, m, inner, hidden, False)
        else:
            m = _linear(c, _gelu(c, _linear(c, norm, hidden, inner)), inner, hidden)
        h = c.op("Add", [m, h] if r.random() < 0.5 else [h, m])
    h = _rms_norm(c, h, hidden) if llama else _layer_norm(c, h, hidden)
    if r.random() < 0.5:  # tied output projection
        logits = c.op("MatMul", [h, c.op("Transpose", [emb], perm=[1, 0])])
    else:
        logits = _linear(c, h, hidden, vocab, False)
    return [logits, *outs]


def _gpt(c: Case) -> list[str]:
    """GPT-2-like decoder layers: token and position embeddings (positions by Range from the past's
    length), LayerNorm decomposed, masked attention with an optional KV cache (present returned),
    GELU variants, the output projection tied to the embedding or not."""
    return _decoder(c, False)


def _llama(c: Case) -> list[str]:
    """Llama-like decoder layers: RMSNorm, rotary embeddings from Slice/Neg/Concat/Mul (cos and sin
    computed from Range or gathered from a cache), grouped KV heads repeated by Expand/Reshape, a KV
    cache, the SwiGLU MLP."""
    return _decoder(c, True)


# -- engine hazards ------------------------------------------------------------------------------

def _hazards(c: Case) -> list[str]:
    """A random graph of what the engine must get right: values read by many consumers, elementwise
    ops that could run in a buffer still live (its value returned, viewed or read later), Reshape /
    Transpose / Squeeze views of a value later changed elementwise, Identity chains, dead branches,
    shapes computed at run time (Shape/Gather/Unsqueeze/Concat/Reshape, Expand, ConstantOfShape),
    Constant nodes; outputs that are inputs, weights, consumed values or listed twice."""
    r = c.rng
    _dtype(c, 0.15)
    c.opset = int(r.choice([13, 17, 18]))
    s0 = dims(r, ri(r, 1, 4), 1, 5)
    if r.random() < 0.1:  # past one block of a float32 fused region (65536 elements)
        s0 = [*s0[:-1], 70001 // int(np.prod(s0[:-1]))]
    x = c.feed(s0)
    vals: list[tuple[str, list[int]]] = [(x, s0)]
    if r.random() < 0.5:
        vals.append((c.feed(s0), s0))
    kept: list[str] = []
    for _ in range(ri(r, 3, 12)):
        # mostly the newest value, often an older one: its buffer may be live under a later in-place op
        v, s = vals[-1] if r.random() < 0.5 else vals[ri(r, 0, len(vals))]
        rank = len(s)
        k = ri(r, 0, 18)
        if k == 0:
            op = str(r.choice(["Relu", "Neg", "Sigmoid", "Tanh", "Abs", "Identity", "Exp", "Softsign"]))
            y, t = c.op(op, [v] if op != "Exp" else [c.op("Neg", [c.op("Abs", [v])])]), s
        elif k == 1:  # with another value of the same shape, or a broadcast weight, either side
            same = [u for u, us in vals if us == s]
            other = same[ri(r, 0, len(same))] if r.random() < 0.6 else c.weight(
                [d if r.random() < 0.6 else 1 for d in s][ri(r, 0, rank + 1):])
            y, t = c.op(str(r.choice(["Add", "Mul", "Sub", "Max", "Min"])),
                        [v, other] if r.random() < 0.5 else [other, v]), s
        elif k == 2:
            perm = [int(p) for p in r.permutation(rank)]
            y, t = c.op("Transpose", [v], perm=perm), [s[p] for p in perm]
        elif k == 3:  # flattened, or split back to an earlier shape of the same size (read at run time)
            same = [(u, us) for u, us in vals if us != s and int(np.prod(us)) == int(np.prod(s))]
            if same and r.random() < 0.5:
                u, t = same[ri(r, 0, len(same))]
                y = c.op("Reshape", [v, c.op("Shape", [u])])
            else:
                y, t = c.op("Reshape", [v, c.ints([-1])]), [int(np.prod(s))]
        elif k == 4:  # exporters' dynamic reshape: the leading dims read off, the rest flattened
            lead = c.op("Unsqueeze", [c.op("Gather", [c.op("Shape", [v]), c.ints(0)], axis=0), c.ints([0])])
            y = c.op("Reshape", [v, c.op("Concat", [lead, c.ints([-1])], axis=0)])
            t = [s[0], int(np.prod(s[1:]))]
        elif k == 5:
            y, t = c.op("Unsqueeze", [v, c.ints([0])]), [1, *s]
            if r.random() < 0.5:
                y, t = c.op("Squeeze", [y, c.ints([0])]), s
        elif k == 6:  # a weight expanded to the value's run-time shape
            w = c.weight([d if r.random() < 0.5 else 1 for d in s])
            y, t = c.op("Add", [c.op("Expand", [w, c.op("Shape", [v])]), v]), s
        elif k == 7:
            fill = helper.make_tensor("fill", helper.np_dtype_to_tensor_dtype(c.dtype), [1], [float(r.uniform(-1, 1))])
            y, t = c.op("Mul", [v, c.op("ConstantOfShape", [c.op("Shape", [v])], value=fill)]), s
        elif k == 8:
            const = c.op("Constant", [], value=helper.make_tensor(
                "k", helper.np_dtype_to_tensor_dtype(c.dtype), [s[-1]], r.uniform(-1, 1, s[-1]).astype(c.dtype)))
            y, t = c.op("Sub", [v, const]), s
        elif k == 9:  # an Identity chain
            y = v
            for _ in range(ri(r, 1, 4)):
                y = c.op("Identity", [y])
            t = s
        elif k == 10:  # a dead branch
            c.op("Relu", [c.op("Add", [v, _scalar(c, 1.0)])])
            continue
        elif k == 11:
            ax = ri(r, 0, rank)
            y, t = c.op("Concat", [v, v], axis=ax), [d * (2 if i == ax else 1) for i, d in enumerate(s)]
        elif k == 12:  # a strided Slice (a view of its source)
            ax = ri(r, 0, rank)
            start, end, step = ri(r, -s[ax], s[ax]), int(r.choice([ri(r, -s[ax], s[ax] + 1), 2**62])), ri(r, 1, 3)
            size = len(range(*slice(start, end, step).indices(s[ax])))
            if size == 0:
                continue
            y = c.op("Slice", [v, c.ints([start]), c.ints([end]), c.ints([ax]), c.ints([step])])
            t = [size if i == ax else d for i, d in enumerate(s)]
        elif k == 13:  # Split: both halves live
            ax = ri(r, 0, rank)
            if s[ax] < 2:
                continue
            a, b = c.op("Split", [v, c.ints([s[ax] // 2, s[ax] - s[ax] // 2])], outputs=2, axis=ax)
            vals.append((a, [s[ax] // 2 if i == ax else d for i, d in enumerate(s)]))
            y, t = b, [s[ax] - s[ax] // 2 if i == ax else d for i, d in enumerate(s)]
        elif k == 14:  # a value broadcast up: by Expand (a strided view in numpy) or by a larger operand
            if r.random() < 0.5:
                y = c.op("Expand", [v, c.ints([2, *s])])
            else:
                y = c.op(str(r.choice(["Add", "Mul"])), [v, c.weight([2, *[d if r.random() < 0.5 else 1 for d in s]])])
            t = [2, *s]
        elif k == 15:
            ax = ri(r, 0, rank + 1)
            y, t = c.op("Flatten", [v], axis=ax), [int(np.prod(s[:ax])), int(np.prod(s[ax:]))]
        elif k == 16:  # a value read twice by a normalisation: its max taken away, then divided by a sum
            m = c.op("ReduceMax", [v], axes=[-1], keepdims=1) if c.opset < 18 else c.op(
                "ReduceMax", [v, c.ints([-1])], keepdims=1)
            e = c.op("Exp", [c.op("Sub", [v, m])])
            y = c.op("Div", [e, c.op("ReduceSum", [e, c.ints([-1])], keepdims=1)])
            t = s
        else:
            y, t = c.op("Softmax" if r.random() < 0.5 else "LogSoftmax", [v], axis=ri(r, -rank, rank)), s
        vals.append((y, t))
        if r.random() < 0.15:
            kept.append(y)
    outs = [vals[-1][0], *kept]
    if r.random() < 0.3:
        outs.append(x)
    if r.random() < 0.2:
        outs.append(c.weight(s0))
    if r.random() < 0.2:
        outs.append(outs[ri(r, 0, len(outs))])
    # (onnx's inference leaves these untyped: an input or weight named as an output, a second listing)
    elem = helper.np_dtype_to_tensor_dtype(c.dtype)
    c.declared.update({o: elem for i, o in enumerate(outs) if o in c.feeds or o.startswith("w") or o in outs[:i]})
    return outs


FAMILIES: dict[str, Callable[[Case], list[str]]] = {
    "cnn": _cnn, "fpn": _fpn, "gpt": _gpt, "llama": _llama, "hazards": _hazards}
