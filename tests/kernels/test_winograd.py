"""Winograd F(2x2, 3x3) (hal.kernels.winograd): which convs take it, what they compute, and that a
weight's transform is made once and dropped with the weight.

Each case runs the registered Conv kernel twice, with and without Winograd, and both against a
float64 conv and onnxruntime: the shapes are chosen to take it (or forced by lowering the limits),
with odd and even output sizes, uneven, SAME and no pads, batches, partial bands, float16.
"""

from __future__ import annotations

import gc

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import hal
from hal.kernels import winograd
from hal.kernels._sliding import _work_dtype, window
from hal.kernels.nn import _conv
from tests.kernels.test_kernels_fast_conv import _hal, _ort


def _conv_kernel(x, w, b, attrs):
    return _hal("Conv", [x, w, b], attrs)


def _takes_it(x, w, attrs) -> bool:
    k, s, d, begin, end, out = window(x.shape[2:], w.shape[2:], attrs.get("strides"), attrs.get("dilations"),
                                      attrs.get("pads"), attrs.get("auto_pad", "NOTSET"))
    return winograd.applies(x.astype(_work_dtype(x.dtype)), w, k, s, d, begin, end, out, attrs.get("group", 1))


@pytest.fixture
def everywhere(monkeypatch):
    """Winograd for every 3x3 stride-1 float conv, whatever its size, in bands of up to 12 tiles: one
    tile row of a wide image, 2 of a 5-tile one (the last band short), a small image whole."""
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    monkeypatch.setattr(winograd, "MIN_TILES", 1)
    monkeypatch.setattr(winograd, "BAND_TILES", 12)


CASES = [  # (x shape, w shape, attrs, bias)
    ((1, 8, 10, 10), (6, 8, 3, 3), {"pads": [1, 1, 1, 1]}, True),               # even output
    ((2, 5, 9, 7), (4, 5, 3, 3), {"pads": [1, 1, 1, 1]}, False),                # odd rows and columns, batch 2
    ((1, 3, 11, 12), (5, 3, 3, 3), {"pads": [0, 2, 1, 0]}, True),               # uneven pads
    ((1, 4, 9, 9), (4, 4, 3, 3), {}, True),                                     # no pads (7x7 out)
    ((1, 4, 10, 10), (5, 4, 3, 3), {}, False),                                  # no pads, whole tiles: no copy
    ((1, 4, 8, 13), (7, 4, 3, 3), {"auto_pad": "SAME_UPPER"}, False),
    ((1, 4, 8, 13), (7, 4, 3, 3), {"auto_pad": "SAME_LOWER"}, True),
    ((1, 2, 3, 3), (3, 2, 3, 3), {"pads": [1, 1, 1, 1]}, True),                 # one tile row, a partial tile
    ((1, 6, 21, 10), (3, 6, 3, 3), {"pads": [1, 1, 1, 1]}, True),               # 11 tile rows: bands, last short
]


@pytest.mark.parametrize("xs,ws,attrs,bias", CASES)
def test_winograd_matches_im2col_float64_and_onnxruntime(everywhere, monkeypatch, xs, ws, attrs, bias) -> None:
    rng = np.random.default_rng(sum(xs) + sum(ws))
    x = rng.standard_normal(xs).astype(np.float32)
    w = (rng.standard_normal(ws) / np.sqrt(ws[1] * 9)).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32) if bias else None
    w.flags.writeable = False  # a program's weight
    assert _takes_it(x, w, attrs)
    got = _conv_kernel(x, w, b, attrs)
    with monkeypatch.context() as m:
        m.setattr(winograd, "applies", lambda *a: False)
        im2col = _conv_kernel(x, w, b, attrs)
    exact = _conv_kernel(x.astype(np.float64), w.astype(np.float64), None if b is None else b.astype(np.float64), attrs)
    assert got.shape == im2col.shape == exact.shape and got.dtype == np.float32
    # the same order of rounding error as im2col's (Bt and At are +-1, G's halves are exact)
    assert np.abs(got - exact).max() <= 4 * np.abs(im2col - exact).max() + 1e-7
    (ref,) = _ort("Conv", {"x": x, "w": w} | ({"b": b} if bias else {}), attrs)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_input_reaches_the_outputs_im2col_gives_it_to(everywhere, monkeypatch, bad) -> None:
    rng = np.random.default_rng(4)
    for _ in range(40):
        x = rng.standard_normal((1, 3, 9, 8)).astype(np.float32)
        x[tuple(rng.integers(0, s) for s in x.shape)] = bad
        w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
        w.flags.writeable = False
        with np.errstate(all="ignore"):
            got = _conv_kernel(x, w, None, {"pads": [1, 1, 1, 1]})
            with monkeypatch.context() as m:
                m.setattr(winograd, "applies", lambda *a: False)
                im2col = _conv_kernel(x, w, None, {"pads": [1, 1, 1, 1]})
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(im2col))
        if np.isnan(bad):
            np.testing.assert_array_equal(np.isnan(got), np.isnan(im2col))


def test_float16_takes_winograd_in_float32(everywhere) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float16)
    w = (rng.standard_normal((5, 4, 3, 3)) / 6).astype(np.float16)
    w.flags.writeable = False
    assert _takes_it(x, w, {"pads": [1, 1, 1, 1]})
    got = _conv_kernel(x, w, None, {"pads": [1, 1, 1, 1]})
    exact = _conv(x.astype(np.float64), w.astype(np.float64), None, "NOTSET", None, 1, [1, 1, 1, 1], None)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, exact.astype(np.float16))  # float32 work, one rounding to float16 at the end


@pytest.mark.parametrize("xs,ws,attrs,takes", [
    ((1, 512, 28, 28), (512, 512, 3, 3), {"pads": [1, 1, 1, 1]}, True),       # VGG-19's 28x28 layers
    ((1, 128, 28, 28), (128, 128, 3, 3), {"pads": [1, 1, 1, 1]}, True),       # ResNet-50's 128-channel layers
    ((1, 192, 13, 13), (384, 192, 3, 3), {"pads": [1, 1, 1, 1]}, False),      # 49 tiles, 192 channels
    ((1, 256, 14, 14), (256, 256, 3, 3), {"pads": [1, 1, 1, 1]}, True),       # ResNet-50's 256-channel layers
    ((1, 512, 13, 13), (256, 512, 3, 3), {"pads": [1, 1, 1, 1]}, True),       # 49 tiles from 256 channels
    ((1, 256, 12, 12), (384, 256, 3, 3), {"pads": [1, 1, 1, 1]}, False),      # AlexNet's: 36 tiles
    ((1, 64, 224, 224), (64, 64, 3, 3), {"pads": [1, 1, 1, 1]}, False),       # a large image, 64 channels
    ((1, 64, 56, 56), (64, 64, 3, 3), {"pads": [1, 1, 1, 1]}, False),         # ResNet's 64 -> 64 at 56x56
    ((1, 64, 56, 56), (192, 64, 3, 3), {"pads": [1, 1, 1, 1]}, False),        # Inception's 64 -> 192
    ((1, 128, 56, 56), (128, 128, 3, 3), {"pads": [1, 1, 1, 1]}, True),       # 128 channels at 56x56
    ((1, 32, 56, 56), (128, 32, 3, 3), {"pads": [1, 1, 1, 1]}, False),        # 32 channels: im2col's
    ((1, 512, 7, 7), (512, 512, 3, 3), {"pads": [1, 1, 1, 1]}, False),        # 16 tiles: too narrow
    ((1, 256, 28, 28), (256, 256, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}, False),
    ((1, 256, 28, 28), (256, 256, 3, 3), {"pads": [2, 2, 2, 2], "dilations": [2, 2]}, False),
    ((1, 256, 28, 28), (256, 128, 3, 3), {"pads": [1, 1, 1, 1], "group": 2}, False),
    ((1, 256, 28, 28), (256, 256, 5, 5), {"pads": [2, 2, 2, 2]}, False),
    ((1, 256, 28, 28), (256, 256, 3, 3), {"pads": [-1, 1, 1, 1]}, False),     # a negative pad crops: im2col's
    ((1, 256, 28, 28, 4), (256, 256, 3, 3, 1), {}, False),                     # 3-D
])
def test_which_convs_take_winograd(xs, ws, attrs, takes) -> None:
    x = np.zeros(xs, np.float32)
    w = np.zeros(ws, np.float32)
    assert not _takes_it(x, w, attrs)            # filters that may change keep im2col ...
    view = w[:]
    view.flags.writeable = False
    assert not _takes_it(x, view, attrs)         # ... through a read-only view of them too
    w.flags.writeable = False
    assert _takes_it(x, w, attrs) is takes
    w64 = w.astype(np.float64)
    w64.flags.writeable = False
    assert not _takes_it(x.astype(np.float64), w64, attrs)  # float64 keeps im2col's GEMM


def test_a_read_only_weight_is_transformed_once_and_forgotten_with_it(everywhere, monkeypatch) -> None:
    calls = []
    real = winograd.weights
    monkeypatch.setattr(winograd, "weights", lambda w: calls.append(w.shape) or real(w))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    w = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    _conv_kernel(x, w, None, {"pads": [1, 1, 1, 1]})
    assert calls == []                           # writeable: im2col, no transform to keep
    w.flags.writeable = False                    # a program's weight
    for _ in range(3):
        _conv_kernel(x, w, None, {"pads": [1, 1, 1, 1]})
    assert len(calls) == 1
    assert id(w) in winograd._transformed
    key = id(w)
    del w
    gc.collect()
    assert key not in winograd._transformed


def test_a_program_transforms_its_weights_on_the_first_run_only(everywhere, monkeypatch) -> None:
    calls = []
    real = winograd.weights
    monkeypatch.setattr(winograd, "weights", lambda w: calls.append(w.shape) or real(w))
    rng = np.random.default_rng(3)
    w = helper.make_tensor("w", TensorProto.FLOAT, (8, 4, 3, 3), rng.standard_normal(288).astype(np.float32))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["h"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 4, 12, 12))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 8, 12, 12))], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    sess = hal.InferenceSession(model, "cpu")
    x = rng.standard_normal((1, 4, 12, 12)).astype(np.float32)
    outs = [sess.run(None, {"x": x})[0] for _ in range(3)]
    assert calls == [(8, 4, 3, 3)]
    assert all(np.array_equal(outs[0], o) for o in outs[1:])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    (ref,) = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})
    np.testing.assert_allclose(outs[0], ref, rtol=1e-5, atol=1e-5)
