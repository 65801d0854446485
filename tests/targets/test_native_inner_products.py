"""At native precision, the recurrent ops (RNN, GRU, LSTM) and opset 23's Attention multiply on the
matrix units too: their inputs and weights are rounded as MatMul's are, and so is every operand
they make themselves (the state h at each step, before it meets R; Attention's scaled Q and K, its
probabilities and V), through ``hal.numerics.INNER_PRODUCT_OPS``. Before, those products ran in
fp32 on every target, so a recurrent model's native accuracy was fp32's.

Each op is run against the ONNX equations written out here in float64, with every product operand
rounded by an independent rounding of the target's format (tf32 by bit arithmetic, the LPU's fp16
with a power-of-two scale per tensor, bf16 by ml_dtypes): hal's result is within float32
accumulation of it, and far from the same equations with the internal operands left unrounded."""

from __future__ import annotations

import math
from collections.abc import Callable

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal

Round = Callable[[np.ndarray], np.ndarray]


def _tf32(x: np.ndarray) -> np.ndarray:
    """float32 to 10 mantissa bits, to nearest, ties to even."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0xFFF + ((bits >> 13) & 1)) & 0xFFFFE000
    return bits.astype(np.uint32).view(np.float32).astype(np.float64)


def _fp16_scaled(x: np.ndarray) -> np.ndarray:
    """fp16 after scaling the tensor's largest magnitude just under fp16's top binade."""
    x = np.asarray(x, np.float32)
    amax = float(np.abs(x).max())
    if amax == 0.0:
        return x.astype(np.float64)
    scale = math.ldexp(1.0, math.frexp(amax)[1] - 15)
    return (x / np.float32(scale)).astype(np.float16).astype(np.float64) * scale


def _bf16(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


#: each target's native rounding of a matrix operand
NATIVE: dict[str, Round] = {"gpu": _tf32, "lpu": _fp16_scaled, "wafer": _bf16}


def _f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32).astype(np.float64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _run(node, inputs: dict[str, np.ndarray], weights: dict[str, np.ndarray], outputs: dict[str, list[int]],
         opset: int, target: str, precision: str) -> list[np.ndarray]:
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, v.shape) for n, v in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        [numpy_helper.from_array(v, n) for n, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return hal.InferenceSession(model.SerializeToString(), target=target, precision=precision,
                                cache_dir=False).run(None, inputs)


def _recurrence(kind: str, x, w, r, b, rd_in: Round, rd_state: Round, linear_before_reset: int = 0):
    """Y_h of a forward RNN / GRU / LSTM (ONNX's equations, default activations) in float64: the
    input and the weights read through ``rd_in``, the state through ``rd_state`` at each step."""
    hidden = r.shape[-1]
    xr, wr, rr = rd_in(x), rd_in(w[0]), rd_in(r[0])
    wb, rb = b[0, :b.shape[1] // 2].astype(np.float64), b[0, b.shape[1] // 2:].astype(np.float64)
    h = np.zeros((x.shape[1], hidden))
    c = np.zeros_like(h)
    for t in range(x.shape[0]):
        xw = xr[t] @ wr.T + wb
        hs = rd_state(h)
        if kind == "RNN":
            h = np.tanh(xw + hs @ rr.T + rb)
        elif kind == "GRU":
            xz, xg, xh = np.split(xw, 3, axis=-1)
            rz, rg, rh = np.split(rr, 3)
            bz, bg, bh = np.split(rb, 3)
            z = _sigmoid(xz + hs @ rz.T + bz)
            g = _sigmoid(xg + hs @ rg.T + bg)
            if linear_before_reset:
                hh = np.tanh(xh + g * (hs @ rh.T + bh))
            else:
                hh = np.tanh(xh + rd_state(g * h) @ rh.T + bh)
            h = (1 - z) * hh + z * h
        else:
            i, o, f, cc = np.split(xw + hs @ rr.T + rb, 4, axis=-1)
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(cc)
            h = _sigmoid(o) * np.tanh(c)
    return h


#: inputs drawn from each of these seeds; the checks read the median over them, since now and then
#: a value sits so close to a rounding boundary that hal's float32 sums and the float64 equations
#: round it apart (one step of the format, carried through the recurrence: 0-7.5% of draws)
SEEDS = range(7)


@pytest.mark.parametrize("target", sorted(NATIVE))
@pytest.mark.parametrize(("kind", "linear_before_reset"), [("RNN", 0), ("GRU", 0), ("GRU", 1), ("LSTM", 0)])
def test_recurrent_ops_round_their_state_at_native(target: str, kind: str, linear_before_reset: int) -> None:
    steps, batch, size, hidden = 8, 3, 10, 16
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[kind]
    attrs = {"linear_before_reset": 1} if linear_before_reset else {}
    node = helper.make_node(kind, ["X", "W", "R", "B"], ["", "Y_h"], hidden_size=hidden, **attrs)
    rd = NATIVE[target]
    near, far = [], []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((steps, batch, size)).astype(np.float32)
        w = (rng.standard_normal((1, gates * hidden, size)) / math.sqrt(size)).astype(np.float32)
        r = (rng.standard_normal((1, gates * hidden, hidden)) * 1.5 / math.sqrt(hidden)).astype(np.float32)
        b = (rng.standard_normal((1, 2 * gates * hidden)) * 0.1).astype(np.float32)
        (got,) = _run(node, {"X": x}, {"W": w, "R": r, "B": b}, {"Y_h": [1, batch, hidden]}, 14, target, "native")
        want = _recurrence(kind, x, w, r, b, rd, rd, linear_before_reset)
        near.append(float(np.abs(got[0] - want).max()))
        far.append(float(np.abs(_recurrence(kind, x, w, r, b, rd, _f32, linear_before_reset) - want).max()))
    assert np.median(near) < 1e-6, f"{kind} on {target}: {near} from the rounded equations"
    assert np.median(far) > 1e-5, f"the state's rounding moves Y_h by {far} only: this test cannot see it"


def _attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, rd_operand: Round, rd_probs: Round) -> np.ndarray:
    """softmax(q k^T) v in float64 (q and k scaled already), its operands read through the roundings."""
    scores = rd_operand(q) @ np.swapaxes(rd_operand(k), -1, -2)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return rd_probs(e / e.sum(-1, keepdims=True)) @ rd_operand(v)


@pytest.mark.parametrize("target", sorted(NATIVE))
def test_attention_op_rounds_its_product_operands_at_native(target: str) -> None:
    batch, heads, q_len, kv_len, head = 2, 3, 5, 7, 8
    rd = NATIVE[target]
    root = np.float32(math.sqrt(1 / math.sqrt(head)))  # Q and K each scaled by sqrt(scale), in float32
    node = helper.make_node("Attention", ["Q", "K", "V"], ["Y"])
    near, far = [], []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        q = rng.standard_normal((batch, heads, q_len, head)).astype(np.float32) * 2
        k = rng.standard_normal((batch, heads, kv_len, head)).astype(np.float32) * 2
        v = rng.standard_normal((batch, heads, kv_len, head)).astype(np.float32)

        feeds, shape = {"Q": q, "K": k, "V": v}, {"Y": [batch, heads, q_len, head]}
        (got,) = _run(node, feeds, {}, shape, 23, target, "native")
        want = _attend(q * root, k * root, v, rd, rd)
        near.append(float(np.abs(got - want).max()))
        far.append(float(np.abs(_attend(q * root, k * root, v, rd, _f32) - want).max()))
        # and at exact, nothing is rounded
        (exact,) = _run(node, feeds, {}, shape, 23, target, "exact")
        assert float(np.abs(exact - _attend(q * root, k * root, v, _f32, _f32)).max()) < 2e-6
    assert np.median(near) < 1e-6, f"Attention on {target}: {near} from the rounded equations"
    assert np.median(far) > 1e-5, f"the probabilities' rounding moves Y by {far} only: this test cannot see it"
