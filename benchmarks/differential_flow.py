"""The differential sweep's signal and control-flow families: DFT (opsets 17 and 20), STFT and the
spectrogram ops, the window generators and MelWeightMatrix; Loop, If and Scan with bodies built by
``onnx.helper`` (reading outer values, carrying tensors and sequences); the sequence ops. Sequences are
not compared, so every graph ends in tensors (ConcatFromSequence, SequenceAt, SequenceLength)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from benchmarks.differential_draw import Case, dims, out_list, ri

Shape = list[int] | None


def _elem(dtype: Any) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _t(elem: int, shape: Shape) -> onnx.TypeProto:
    return helper.make_tensor_type_proto(elem, shape)


def _seq(elem: int, shape: Shape) -> onnx.TypeProto:
    return helper.make_sequence_type_proto(_t(elem, shape))


class _Body:
    """A subgraph under construction: the case's ``op`` writes into it until ``graph`` closes it. Its
    weights go to the outer graph, so a body reading them reads outer-scope values. Inputs and outputs
    are typed in full (strict shape inference asks it)."""

    def __init__(self, c: Case, inputs: list[onnx.TypeProto]):
        self.c, self.saved = c, c.nodes
        c.nodes = []
        self.names = [c._name("b") for _ in inputs]
        self.inputs = [helper.make_value_info(n, t) for n, t in zip(self.names, inputs)]

    def graph(self, outputs: list[tuple[str, onnx.TypeProto]]) -> onnx.GraphProto:
        c = self.c
        g = helper.make_graph(c.nodes, c._name("body"), self.inputs, [helper.make_value_info(n, t) for n, t in outputs])
        c.nodes = self.saved
        return g


# -- signal -------------------------------------------------------------------------------------

def _length(c: Case, n: int, kind: type = np.int64) -> str:
    """A scalar length or step (int64 or int32: T2, one type per node)."""
    return c.weight(value=np.array(n, kind))


def _int_kind(c: Case) -> type:
    return np.int64 if c.rng.random() < 0.7 else np.int32


def _mel(c: Case, n_dft: int, rate: int, lo: float, hi: float, edge: type = np.float32, **attrs: Any) -> str:
    """MelWeightMatrix with the top edge pulled under the last bin's frequency (onnxruntime refuses a
    triangle past the spectrum, which the spec leaves unsaid)."""
    top = edge(min(hi, float(np.floor(rate * (n_dft // 2 + 1) / (n_dft + 1))) - 1))
    if (n_dft + 1) * float(top) // rate > n_dft // 2:  # rounded up past it in float16
        top = np.nextafter(top, edge(0))
    low = edge(min(lo, float(top)))
    bins = ri(c.rng, 1, 12) if c.rng.random() < 0.7 else ri(c.rng, 12, 40)  # many: triangles of no width
    return c.op("MelWeightMatrix", [c.ints(bins), c.ints(n_dft), c.ints(rate),
                                    c.weight(value=np.array(low)), c.weight(value=np.array(top))], **attrs)


def _dft(c: Case) -> list[str]:
    """DFT along any signal axis of real ([..., 1]) or complex ([..., 2]) input: forward, inverse,
    one-sided (RFFT, IRFFT), dft_length shorter or longer than the axis; sometimes transformed back.
    (onnxruntime's float64 inverse rounds through float32 and its IRFFT reads a dft_length of other
    than 2 (bins - 1) its own way: follows_onnx there, hal and the reference agreeing with numpy.)"""
    r = c.rng
    rank = ri(r, 1, 4)
    s = dims(r, rank, 1, 9)
    c.opset = int(r.choice([17, 20]))
    inverse, onesided = ri(r, 0, 2), ri(r, 0, 2)
    # RFFT takes real input, IRFFT complex input (the spec allows nothing else there)
    last = (1 if not inverse else 2) if onesided else ri(r, 1, 3)
    x = c.feed([*s, last])
    ax = ri(r, -rank - 1, rank)  # of the input's rank + 1 axes, the trailing one not
    if ax == -1:
        ax = rank - 1
    n = s[ax + 1 if ax < 0 else ax]
    kind = _int_kind(c)
    length = [] if r.random() < 0.4 else [ri(r, max(1, n - 3), n + 4)]
    if inverse and onesided and not length and n < 2:
        length = [ri(r, 1, 5)]  # the default 2 (n - 1) is no length
    fed = r.random() < 0.3  # the length and axis as run-time inputs
    length = [c.feed([], value=np.array(v, kind)) if fed else _length(c, v, kind) for v in length]
    if c.opset == 20:
        axis = c.feed([], value=np.array(ax, np.int64)) if fed else c.weight(value=np.array(ax, np.int64))
        y = c.op("DFT", [x, length[0] if length else "", axis], inverse=inverse, onesided=onesided)
    else:
        y = c.op("DFT", [x, *length], axis=ax, inverse=inverse, onesided=onesided)
    k = ri(r, 0, 4)
    if k == 0:  # the power spectrum
        if c.opset == 20:
            return [c.op("ReduceSumSquare", [y, c.ints([-1])], keepdims=1)]
        return [c.op("ReduceSumSquare", [y], axes=[-1], keepdims=1)]
    if k == 1 and not onesided:  # and back
        if c.opset == 20:
            return [c.op("DFT", [y, "", c.weight(value=np.array(ax, np.int64))], inverse=1 - inverse)]
        return [c.op("DFT", [y], axis=ax, inverse=1 - inverse)]
    return [y]


def _window_op(c: Case, n: int, elem: int) -> str:
    op = str(c.rng.choice(["HannWindow", "HammingWindow", "BlackmanWindow"]))
    return c.op(op, [_length(c, n, _int_kind(c))], periodic=ri(c.rng, 0, 2), output_datatype=elem)


def _stft(c: Case) -> list[str]:
    """STFT of a real or complex signal: frame_step past the frame or inside it, a window given as a
    weight or drawn by a window op, frame_length given or inferred from it, one-sided or full;
    sometimes a power spectrogram weighted into mel bins."""
    r = c.rng
    c.opset = 17
    length = ri(r, 2, 25)
    onesided = ri(r, 0, 2)
    last = 1 if onesided else ri(r, 1, 3)
    x = c.feed([ri(r, 1, 3), length, last])
    n = ri(r, 1, length + 1)
    kind = _int_kind(c)
    step = _length(c, ri(r, 1, n + 3), kind)
    window, frame_length = "", ""
    k = ri(r, 0, 3)
    if k == 1:
        window = c.weight([n], scale=1.0)
    elif k == 2:
        window = _window_op(c, n, _elem(c.dtype))
    # neither window nor frame_length (one frame of the whole signal, says the spec) left out:
    # onnxruntime refuses it
    if not window or r.random() < 0.5:
        frame_length = _length(c, n, kind)
    inputs = [x, step, window, frame_length]
    while inputs[-1] == "":
        inputs.pop()
    y = c.op("STFT", inputs, onesided=onesided)
    if not onesided or r.random() < 0.4:
        return [y]
    power = c.op("ReduceSumSquare", [y], axes=[-1], keepdims=0)
    rate = int(r.choice([8000, 16000, 22050]))
    lo, hi = sorted(r.uniform(0, rate / 2, 2).round())
    mel = _mel(c, n, rate, float(lo), float(hi))
    return [c.op("MatMul", [power, c.op("Cast", [mel], to=_elem(c.dtype))])]


def _window(c: Case) -> list[str]:
    """The window generators (every size, periodic or symmetric, float and integer outputs) multiplied
    into a signal or given out as they are, and MelWeightMatrix at drawn rates, edges and lengths."""
    r = c.rng
    c.opset = 17
    n = ri(r, 1, 40)
    if r.random() < 0.3:
        # in the signal's own type: a float32 window's last bit (hal rounds the float64 value once,
        # onnxruntime sums in float32) would be judged at float64's tolerance after a Cast
        return [c.op("Mul", [c.feed([*dims(r, ri(r, 0, 3), 1, 4), n]), _window_op(c, n, _elem(c.dtype))])]
    if r.random() < 0.5:
        out = int(r.choice([TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT64,
                            TensorProto.INT32, TensorProto.UINT8, TensorProto.INT8]))
        if n == 1 and out not in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16):
            n = 2  # a symmetric window of one point is NaN: no integer holds it
        return [_window_op(c, n, out)]
    rate = int(r.choice([4000, 8000, 16000, 22050, 44100]))
    lo = float(r.choice([0.0, round(float(r.uniform(0, rate / 4)))]))
    hi = float(r.choice([rate / 2, round(float(r.uniform(lo + 1, rate / 2)))]))
    edge = np.float32 if r.random() < 0.7 else np.float16  # (onnxruntime has no float64 edges)
    out = int(r.choice([TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64]))
    return [_mel(c, ri(r, 2, 64), rate, lo, hi, edge, output_datatype=out)]


# -- control flow ---------------------------------------------------------------------------------

def _loop(c: Case) -> list[str]:
    """Loop with a trip count, a condition or both (a weight or fed; zero turns too); the body's
    condition from the turn number, from the carried value or passed through; carried tensors updated
    from the turn number and outer values (integer ones too), a growing carried tensor, a carried
    sequence; scan outputs, one of them a body input passed through."""
    r = c.rng
    c.opset = int(r.choice([13, 16]))
    if r.random() < 0.2:
        c.dtype = np.dtype(np.int64 if r.random() < 0.5 else np.int32)
    elem, whole = _elem(c.dtype), c.dtype.kind == "i"
    s = dims(r, ri(r, 0, 3), 1, 4)

    def tensor(shape: list[int]) -> str:
        return c.feed(shape, value=r.integers(-3, 4, shape).astype(c.dtype)) if whole else c.feed(shape)

    x = tensor(s)
    outer = c.op("Abs" if whole else "Tanh", [tensor(s)])  # a computed outer value the body reads
    trips = ri(r, 0, 5)
    k = ri(r, 0, 3)  # 0: trip count only, 1: condition only, 2: both
    stop = ri(r, 0, 6)  # the turn number at which the condition turns false
    grow, carry_seq = r.random() < 0.3, r.random() < 0.25
    n_scan = ri(r, 0, 4)

    b = _Body(c, [_t(TensorProto.INT64, []), _t(TensorProto.BOOL, []), _t(elem, s)] + ([_t(elem, None)] if grow else [])
              + ([_seq(elem, s)] if carry_seq else []))
    it, cond_in, v, *rest = b.names
    turn = c.op("Cast", [it], to=elem)
    v2 = c.op("Add", [c.op("Mul", [v, outer if r.random() < 0.5 else c.weight(value=np.array(2 if whole else 0.5,
                                                                                              c.dtype))]), turn])
    if not whole and r.random() < 0.5:
        v2 = c.op("Sin", [v2])
    if r.random() < 0.3:  # an If in the body, its branches reading the body's names and the graph's
        odd = c.op("Equal", [c.op("Mod", [it, c.ints(2)]), c.ints(1)])
        then = _Body(c, [])
        then_g = then.graph([(c.op("Sub", [v2, outer]), _t(elem, s))])
        other = _Body(c, [])
        other_g = other.graph([(c.op("Add", [c.op("Mul", [v, turn]), x]), _t(elem, s))])
        v2 = c.op("If", [odd], then_branch=then_g, else_branch=other_g)
    how = ri(r, 0, 3)
    if not k or how == 0:
        cond = cond_in  # passed through as it came
    elif how == 1:
        cond = c.op("Less", [c.op("Add", [it, c.ints(1)]), c.ints(stop)])
    else:  # from the data, bounded by the turn number where no trip count bounds it
        big = c.op("Less", [c.op("ReduceMax", [v2], keepdims=0), c.weight(value=np.array(3 * stop, c.dtype))])
        cond = c.op("And", [big, c.op("Less", [it, c.ints(stop)])])
    outs = [(cond, _t(TensorProto.BOOL, [])), (v2, _t(elem, s))]
    if grow:
        outs.append((c.op("Concat", [rest[0], c.op("Reshape", [v2, c.ints([-1])])], axis=0), _t(elem, None)))
    if carry_seq:
        outs.append((c.op("SequenceInsert", [rest[-1], v2]), _seq(elem, s)))
    for j in range(n_scan):
        y = [lambda: c.op("Mul", [v2, x]), lambda: c.op("ReduceSum", [v2], keepdims=0), lambda: v][j]()
        outs.append((y, _t(elem, s if j != 1 else [])))
    graph = b.graph(outs)

    if k == 1 and how == 0:
        stop = 0  # a condition passed through and no trip count: only a false one ends it
    m = "" if k == 1 else c.ints(trips) if r.random() < 0.6 else c.feed([], value=np.array(trips, np.int64))
    first = ""
    if k:
        flag = np.array(stop > 0 and r.random() < 0.9)
        first = c.weight(value=flag) if r.random() < 0.6 else c.feed([], value=flag)
    carried = [x] + ([c.weight(value=np.zeros(ri(r, 0, 3), c.dtype))] if grow else [])
    if carry_seq:
        carried.append(c.op("SequenceConstruct", [tensor(s)]))
    results = out_list(c.op("Loop", [m, first, *carried], outputs=len(carried) + n_scan, body=graph))
    if carry_seq:
        results[len(carried) - 1] = c.op("ConcatFromSequence", [results[len(carried) - 1]], axis=0, new_axis=1)
    return results


def _if(c: Case) -> list[str]:
    """If on a computed or fed condition: branches with different arithmetic (and shapes) over outer
    values, several outputs, an If nested in a branch."""
    r = c.rng
    c.opset = int(r.choice([13, 16, 19]))
    elem = _elem(c.dtype)
    s = dims(r, ri(r, 0, 4), 1, 5)
    x = c.feed(s)
    if r.random() < 0.5:
        cond = c.op("Greater", [c.op("ReduceSum", [x], keepdims=0), c.weight(value=0.0)])
    else:
        flag = np.array(r.random() < 0.5)
        cond = c.feed([], value=flag.reshape(1) if r.random() < 0.3 else flag)
    n_out = ri(r, 1, 3)
    same_shape = r.random() < 0.7

    def branch(flat: bool) -> onnx.GraphProto:
        b = _Body(c, [])
        outs: list[tuple[str, onnx.TypeProto]] = []
        for j in range(n_out):
            kind = ri(r, 0, 6)
            if kind == 0:
                y = c.op("Add", [x, c.weight(s)])
            elif kind == 1:
                y = c.op("Mul", [c.op("Sigmoid", [x]), c.weight(value=float(r.uniform(-2, 2)))])
            elif kind == 2:  # a nested If
                inner = c.op("Less", [c.op("ReduceMax", [x], keepdims=0), c.weight(value=float(r.uniform(-1, 1)))])
                y = c.op("If", [inner], then_branch=leaf(), else_branch=leaf())
            elif kind == 3:
                y = c.op("Mul", [x, c.op("ReduceMean", [x], keepdims=1)])
            elif kind == 4:  # an outer value given out as it is (through an Identity: onnx's checker, and
                y = c.op("Identity", [x])  # so onnxruntime, takes no graph output a node does not write)
            else:
                y = c.op("Neg", [x])
            shape: Shape = s
            if flat and j == 0:
                y = c.op("Reshape", [y, c.ints([-1])])
                shape = [int(np.prod(s))]
            outs.append((y, _t(elem, shape)))
        return b.graph(outs)

    def leaf() -> onnx.GraphProto:
        b = _Body(c, [])
        y = c.op(str(r.choice(["Abs", "Exp", "Tanh"])), [x])
        return b.graph([(y, _t(elem, s))])

    # a first output flat in one branch only: the If's output shape merges to unknown
    then, other = branch(False), branch(not same_shape)
    return out_list(c.op("If", [cond], outputs=n_out, then_branch=then, else_branch=other))


def _scan(c: Case) -> list[str]:
    """Scan (opset 9 on): one or two states, one or two scan inputs along drawn axes (negative too)
    and directions, scan outputs along drawn axes and directions; states kept, body inputs given out
    again as scan outputs, outer values read.

    Left out: a scanned axis of length zero (onnxruntime dies of a division by zero there, SIGFPE,
    taking the sweep with it), and a body output that is one of the body's inputs by name, with no
    node between (onnxruntime gives zeros for it, the reference has no scan_output_directions 1):
    those go through an Identity."""
    r = c.rng
    if r.random() < 0.2:
        return _scan_8(c)
    c.opset = int(r.choice([11, 16, 19]))
    elem = _elem(c.dtype)
    steps = ri(r, 1, 5)
    width = dims(r, ri(r, 0, 3), 1, 4)  # each scanned element's shape
    n_in, n_state, n_out = ri(r, 1, 3), ri(r, 1, 3), ri(r, 1, 4)
    attrs: dict[str, Any] = {"num_scan_inputs": n_in}
    xs, in_axes = [], []
    for _ in range(n_in):
        ax = ri(r, 0, len(width) + 1) if r.random() < 0.7 else 0
        shape = list(width)
        shape.insert(ax, steps)
        xs.append(c.feed(shape))
        in_axes.append(ax if r.random() < 0.7 else ax - len(shape))
    if any(in_axes) or r.random() < 0.3:  # else axis 0 by default
        attrs["scan_input_axes"] = in_axes
    states = [c.feed(width) for _ in range(n_state)]
    outer = c.op("Sigmoid", [c.feed(width)])
    b = _Body(c, [_t(elem, width)] * (n_state + n_in))
    st, sl = b.names[:n_state], b.names[n_state:]
    new = []
    for j, v in enumerate(st):
        k = ri(r, 0, 4)
        y = c.op("Identity", [v]) if k == 0 else c.op("Add", [v, sl[j % n_in]])  # a state kept, or not
        if k == 2:
            y = c.op("Tanh", [c.op("Mul", [y, outer if r.random() < 0.5 else c.weight(value=0.7)])])
        new.append(y)
    outs = [(y, _t(elem, width)) for y in new]
    for j in range(n_out):
        k = ri(r, 0, 4)
        y = c.op("Sub", [sl[j % n_in], new[j % n_state]]) if k == 0 else c.op("Identity", [[
            new[j % n_state], sl[j % n_in], st[j % n_state]][k - 1]])
        outs.append((y, _t(elem, width)))
    body = b.graph(outs)
    out_rank = len(width) + 1
    if r.random() < 0.6:
        attrs["scan_input_directions"] = [ri(r, 0, 2) for _ in range(n_in)]
    if r.random() < 0.6:
        attrs["scan_output_axes"] = [ri(r, -out_rank, out_rank) for _ in range(n_out)]
    if r.random() < 0.6:
        attrs["scan_output_directions"] = [ri(r, 0, 2) for _ in range(n_out)]
    return list(c.op("Scan", [*states, *xs], outputs=n_state + n_out, body=body, **attrs))


def _scan_8(c: Case) -> list[str]:
    """Scan-8: axis 0 a batch, the scan along axis 1 (either direction), each batch item up to its
    sequence_lens entry when given."""
    r = c.rng
    c.opset = 8
    elem = _elem(c.dtype)
    batch, steps, width = ri(r, 1, 4), ri(r, 1, 5), dims(r, ri(r, 0, 2), 1, 4)
    n_in = ri(r, 1, 3)
    states = [c.feed([batch, *width]) for _ in range(ri(r, 1, 3))]
    xs = [c.feed([batch, steps, *width]) for _ in range(n_in)]
    b = _Body(c, [_t(elem, width)] * (len(states) + n_in))
    st, sl = b.names[:len(states)], b.names[len(states):]
    new = [c.op("Add", [v, c.op("Mul", [sl[j % n_in], c.weight(value=0.5)])]) for j, v in enumerate(st)]
    ys = [c.op("Sub", [sl[j], new[0]]) for j in range(ri(r, 1, n_in + 1))]
    body = b.graph([(y, _t(elem, width)) for y in new + ys])
    lens = c.weight(value=r.integers(1, steps + 1, batch).astype(np.int64)) if r.random() < 0.5 else ""
    attrs = {"directions": [ri(r, 0, 2) for _ in range(n_in)]} if r.random() < 0.6 else {}
    return list(c.op("Scan", [lens, *states, *xs], outputs=len(new) + len(ys), body=body, num_scan_inputs=n_in,
                     **attrs))


def _sequence(c: Case) -> list[str]:
    """Sequences built by SequenceConstruct, SplitToSequence (a size, sizes, one by one with keepdims)
    or SequenceEmpty, edited by SequenceInsert / SequenceErase at drawn positions (negative too),
    read back by SequenceAt, SequenceLength and ConcatFromSequence (new_axis 0 and 1)."""
    r = c.rng
    c.opset = int(r.choice([11, 13, 16]))
    if r.random() < 0.3:
        c.dtype = np.dtype(str(r.choice(["int64", "int32", "bool"])))
    rank = ri(r, 1, 4)
    s = dims(r, rank, 1, 6)
    ax = ri(r, 0, rank)

    def part(size: int) -> str:
        shape = list(s)
        shape[ax] = size
        if c.dtype.kind in "ib":
            return c.feed(shape, value=r.integers(-9, 10, shape).astype(c.dtype))
        return c.feed(shape)

    kind = _int_kind(c)  # positions and splits: int64 or int32

    def at(pos: Any) -> str:
        return c.weight(value=np.array(pos, kind))

    k = ri(r, 0, 3)
    if k == 0:
        sizes = [ri(r, 1, 4) for _ in range(ri(r, 1, 4))]
        seq = c.op("SequenceConstruct", [part(n) for n in sizes])
    elif k == 1:
        x = part(s[ax])
        split = ri(r, 0, 3)
        if split == 0:
            sizes = [1] * s[ax]
            keep = ri(r, 0, 2)
            seq = c.op("SplitToSequence", [x], axis=ax - rank if r.random() < 0.3 else ax, keepdims=keep)
            if not keep:
                s = s[:ax] + s[ax + 1:]
                rank -= 1
                if not rank:
                    return [c.op("ConcatFromSequence", [seq], axis=0, new_axis=1)]
                ax = ri(r, 0, rank)
                sizes = [s[ax]] * len(sizes)
        elif split == 1:
            step = ri(r, 1, s[ax] + 2)
            sizes = [min(step, s[ax] - i) for i in range(0, s[ax], step)]
            # keepdims is ignored with a split, says the spec (and the reference); onnxruntime squeezes
            # by it a split of 1 (follows_onnx) and refuses one of more: that one left out
            seq = c.op("SplitToSequence", [x, at(step)], axis=ax, keepdims=ri(r, 0, 2) if step == 1 else 1)
        else:
            cut = np.sort(r.integers(0, s[ax] + 1, ri(r, 0, 3)))
            sizes = list(np.diff([0, *cut, s[ax]]).astype(int))
            seq = c.op("SplitToSequence", [x, at(sizes)], axis=ax)
    else:
        sizes = []
        seq = c.op("SequenceEmpty", [], dtype=_elem(c.dtype))
    for _ in range(ri(r, 0, 3)):
        n = len(sizes)
        if r.random() < 0.6 or n == 0:
            size = ri(r, 1, 4)
            if r.random() < 0.5:
                seq = c.op("SequenceInsert", [seq, part(size)])
                sizes.append(size)
            else:
                pos = ri(r, -n, n + 1)
                seq = c.op("SequenceInsert", [seq, part(size), at(pos)])
                sizes.insert(pos + n if pos < 0 else pos, size)
        elif r.random() < 0.3 or n == 1:
            seq = c.op("SequenceErase", [seq])
            sizes.pop()
        else:
            pos = ri(r, -n, n)
            seq = c.op("SequenceErase", [seq, at(pos)])
            sizes.pop(pos)
    n = len(sizes)
    outs = [c.op("SequenceLength", [seq])] if r.random() < 0.3 else []
    if n and r.random() < 0.5:
        outs.append(c.op("SequenceAt", [seq, at(ri(r, -n, n))]))
    if n:
        if len(set(sizes)) == 1 and r.random() < 0.5:
            outs.append(c.op("ConcatFromSequence", [seq], axis=ri(r, -rank - 1, rank + 1), new_axis=1))
        else:
            outs.append(c.op("ConcatFromSequence", [seq], axis=ax - rank if r.random() < 0.3 else ax))
    return outs or [c.op("SequenceLength", [seq])]


FAMILIES: dict[str, Callable[[Case], list[str]]] = {
    "dft": _dft, "stft": _stft, "window": _window, "loop": _loop, "ifelse": _if, "scan": _scan,
    "sequence": _sequence}
