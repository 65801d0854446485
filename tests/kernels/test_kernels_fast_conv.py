"""The fast paths of the conv, pooling and LRN kernels against onnxruntime.

Each shape below takes one of the kernels' special paths: 1x1 convs as a plain GEMM (stride 1 and
strided, padded), grouped convs as batched GEMMs a block of groups at a time, depthwise convs on
each channel's flattened image between zero margins, a block of channels at a time (channel
multipliers, strides, dilations, wide, uneven and negative pads), stride-1 convs with few output
channels as one GEMM per tap over the flattened padded image (dilations, uneven and SAME pads), big
im2col matrices built and multiplied a band of output rows at a time (2-D and 3-D), pooling reduced
one spatial axis at a time (ceil mode, dilations, SAME pads, 1-D and 3-D) and LRN's window as one
strided reduction.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from hal.kernels import lookup


def _ort(op: str, inputs: dict[str, np.ndarray], attrs: dict, opset: int = 19, n_out: int = 1) -> list[np.ndarray]:
    names = list(inputs)
    outs = [f"y{i}" for i in range(n_out)]
    # outputs have the first input's type; MaxPool's second output is its int64 Indices
    types = [helper.np_dtype_to_tensor_dtype(inputs[names[0]].dtype), TensorProto.INT64][:n_out]
    graph = helper.make_graph(
        [helper.make_node(op, names, outs, **attrs)], "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for n, v in inputs.items()],
        [helper.make_tensor_value_info(o, t, None) for o, t in zip(outs, types)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)


def _hal(op: str, args: list, attrs: dict, opset: int = 19, n_out: int = 1):
    kdef = lookup(op, "", opset)
    assert kdef is not None
    return kdef.fn(*args, **kdef.static_attrs(attrs, [f"y{i}" for i in range(n_out)]))


CONVS = [  # (x shape, w shape, attrs, bias)
    ((1, 16, 9, 9), (24, 16, 1, 1), {}, True),                                        # 1x1: the input is the matrix
    ((2, 16, 9, 9), (24, 16, 1, 1), {}, False),                                       # 1x1, batch 2
    ((1, 16, 9, 9), (8, 16, 1, 1), {"strides": [2, 2]}, True),                        # 1x1 strided
    ((1, 16, 9, 8), (8, 16, 1, 1), {"pads": [1, 0, 2, 1]}, False),                    # 1x1 padded
    ((2, 12, 10, 11), (18, 4, 1, 1), {"group": 3}, True),                             # grouped 1x1
    ((2, 12, 10, 11), (6, 6, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}, True),        # grouped 3x3
    ((1, 8, 12, 12), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}, True),         # depthwise
    ((2, 8, 12, 13), (16, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}, False),       # channel multiplier 2
    ((2, 32, 40, 40), (64, 1, 3, 3), {"group": 32, "pads": [1, 1, 1, 1]}, True),     # depthwise in 4 blocks
    ((1, 64, 60, 60), (64, 1, 3, 3), {"group": 64, "pads": [1, 1, 1, 1], "strides": [2, 2]}, True),  # 4 blocks
    ((2, 48, 30, 30), (48, 4, 3, 3), {"group": 12, "pads": [1, 1, 1, 1]}, False),  # grouped, 4 blocks of groups
    ((1, 8, 12, 12), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1], "strides": [2, 2]}, True),
    ((1, 8, 12, 12), (8, 1, 3, 3), {"group": 8, "strides": [1, 3], "dilations": [2, 1]}, True),
    ((1, 8, 11, 12), (8, 1, 2, 3), {"group": 8, "pads": [0, 2, 1, 0]}, False),        # uneven pads
    ((1, 8, 11, 12), (8, 1, 3, 3), {"group": 8, "auto_pad": "SAME_UPPER"}, True),
    ((2, 6, 13, 11), (12, 1, 3, 3), {"group": 6, "strides": [2, 2], "pads": [1, 1, 1, 1]}, True),  # odd sizes
    ((1, 6, 14, 15), (6, 1, 5, 3), {"group": 6, "strides": [3, 2], "dilations": [1, 2], "pads": [2, 3, 0, 1]},
     False),                                                                      # strides 3x2, wide pads
    ((1, 5, 1, 1), (5, 1, 3, 3), {"group": 5, "pads": [1, 1, 1, 1]}, True),           # 1x1 image, 3x3 kernel
    ((1, 5, 2, 3), (5, 1, 3, 5), {"group": 5, "pads": [2, 3, 2, 3]}, True),           # kernel wider than image
    ((1, 4, 9, 9), (4, 1, 3, 3), {"group": 4, "strides": [2, 2], "auto_pad": "SAME_LOWER"}, True),
    ((1, 6, 20), (6, 1, 5), {"group": 6, "pads": [2, 2]}, True),                      # 1-D depthwise
    ((1, 4, 5, 6, 7), (4, 1, 3, 3, 3), {"group": 4, "pads": [1] * 6}, True),          # 3-D depthwise
    ((1, 3, 15, 15), (8, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}, True),  # im2col stem
    ((2, 5, 9, 9), (7, 5, 3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}, True),     # shifted, dilated
    ((1, 128, 14, 14), (32, 128, 3, 3), {"pads": [1, 1, 1, 1]}, True),                # shifted (DenseNet's)
    ((2, 16, 11, 9), (24, 16, 5, 3), {"pads": [2, 0, 1, 1]}, False),                  # shifted, uneven pads
    ((1, 16, 10, 12), (8, 16, 3, 3), {"auto_pad": "SAME_LOWER"}, True),               # shifted, SAME_LOWER
    ((1, 16, 10, 12), (8, 16, 1, 3), {}, True),                                       # shifted, 1x3, no pads
    ((1, 16, 8, 8), (49, 16, 3, 3), {"pads": [1, 1, 1, 1]}, True),                    # one past shifted: im2col
    ((2, 3, 224, 200), (64, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}, True),  # im2col in bands
    ((1, 64, 56, 56), (64, 64, 3, 3), {"pads": [1, 1, 1, 1], "dilations": [1, 2]}, False),  # bands, dilated
    ((1, 4, 20, 40, 40), (8, 4, 3, 3, 3), {"pads": [1] * 6}, True),                   # bands, 3-D
]


@pytest.mark.parametrize("xs,ws,attrs,bias", CONVS, ids=[f"conv{i}" for i in range(len(CONVS))])
def test_conv_fast_paths_match_onnxruntime(xs, ws, attrs, bias) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    inputs = {"x": x, "w": w}
    if bias:
        inputs["b"] = rng.standard_normal(ws[0]).astype(np.float32)
    want = _ort("Conv", inputs, attrs)[0]
    got = _hal("Conv", list(inputs.values()), attrs)
    assert got.dtype == np.float32 and got.shape == want.shape and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("group", [1, 6])
def test_negative_pads_crop_the_input_first(group) -> None:
    # onnxruntime refuses negative pads: compare with its conv of the input cropped by hand
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 6, 9, 9)).astype(np.float32)
    w = rng.standard_normal((6, 6 // group, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    want = _ort("Conv", {"x": np.ascontiguousarray(x[:, :, 1:, :-1]), "w": w, "b": b},
                {"group": group, "pads": [0, 1, 1, 0]})[0]
    got = _hal("Conv", [x, w, b], {"group": group, "pads": [-1, 1, 1, -1]})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_pointwise_conv_does_not_write_into_its_input() -> None:
    x = np.ones((1, 4, 3, 3), np.float32)
    y = _hal("Conv", [x, np.full((4, 4, 1, 1), 2, np.float32), np.ones(4, np.float32)], {})
    assert not np.shares_memory(x, y)
    np.testing.assert_array_equal(x, 1)
    np.testing.assert_array_equal(y, 9)


@pytest.mark.parametrize("out_channels,shifted", [(32, True), (48, True), (49, False)])
def test_few_output_channels_take_the_shifted_path(monkeypatch, out_channels, shifted) -> None:
    from hal.kernels import nn

    calls = []
    real = nn._shifted
    monkeypatch.setattr(nn, "_shifted", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 8, 6, 6)).astype(np.float32)
    w = rng.standard_normal((out_channels, 8, 3, 3)).astype(np.float32)
    got = _hal("Conv", [x, w], {"pads": [1, 1, 1, 1]})
    assert bool(calls) is shifted
    np.testing.assert_allclose(got, _ort("Conv", {"x": x, "w": w}, {"pads": [1, 1, 1, 1]})[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size,banded", [(56, True), (16, False)])
def test_big_column_matrices_are_built_in_bands(monkeypatch, size, banded) -> None:
    from hal.kernels import nn

    calls = []
    real = nn._blocked
    monkeypatch.setattr(nn, "_blocked", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 64, size, size)).astype(np.float32)  # 64 x 9 x 56 x 56 floats: 7 MiB of columns
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    got = _hal("Conv", [x, w], {"pads": [1, 1, 1, 1]})
    assert bool(calls) is banded
    np.testing.assert_allclose(got, _ort("Conv", {"x": x, "w": w}, {"pads": [1, 1, 1, 1]})[0], rtol=1e-4, atol=1e-4)


def test_a_thin_stem_is_banded_with_the_numbers_of_one_product(monkeypatch) -> None:
    # ShuffleNet's 3 -> 24 stem at 224x224, stride 2: 1.35 MB of columns of 27, built a band at a
    # time so that its run leaves no hole bigger than a band. Each output is the same sum of 27
    # products; whether in the same order is the BLAS's choice per block size (OpenBLAS's SkylakeX
    # kernels keep it, its Haswell ones part by an ulp): within float32 rounding of one product
    from hal.kernels import nn

    calls = []
    real = nn._blocked
    monkeypatch.setattr(nn, "_blocked", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    w = rng.standard_normal((24, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    attrs = {"strides": [2, 2], "pads": [1, 1, 1, 1]}
    got = _hal("Conv", [x, w, b], attrs)
    assert calls
    np.testing.assert_allclose(got, _ort("Conv", {"x": x, "w": w, "b": b}, attrs)[0], rtol=1e-4, atol=1e-4)
    monkeypatch.setattr(nn, "THIN_COLUMN_BLOCK_FROM", 4 << 20)
    np.testing.assert_allclose(got, _hal("Conv", [x, w, b], attrs), rtol=2e-6, atol=2e-6)
    assert len(calls) == 1
    # columns of 16 x 9 at 55x55 (1.7 MB, as SqueezeNet's 3x3 layers) stay whole: they lose to bands
    monkeypatch.undo()
    calls.clear()
    monkeypatch.setattr(nn, "_blocked", lambda *a: calls.append(1) or real(*a))
    x = rng.standard_normal((1, 16, 55, 55)).astype(np.float32)
    w = rng.standard_normal((64, 16, 3, 3)).astype(np.float32)
    got = _hal("Conv", [x, w], {"pads": [1, 1, 1, 1]})
    assert not calls
    np.testing.assert_allclose(got, _ort("Conv", {"x": x, "w": w}, {"pads": [1, 1, 1, 1]})[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("filters", [64, 300])
def test_bands_are_at_least_twice_as_wide_as_the_filters(monkeypatch, filters) -> None:
    # each band's GEMM packs all the weights again: 300 filters get bands of >= 600 pixels (13 rows
    # of 48: three full bands and a short one), 64 filters the 256-pixel minimum (6 rows)
    from hal.kernels import nn

    rows = []
    real = nn._in_blocks
    monkeypatch.setattr(nn, "_in_blocks", lambda *a: rows.append(a[10]) or real(*a))  # (.., rows, bias)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 64, 48, 48)).astype(np.float32)  # 5.3 MB of columns: banded
    w = rng.standard_normal((filters, 64, 3, 3)).astype(np.float32)
    b = rng.standard_normal(filters).astype(np.float32)
    got = _hal("Conv", [x, w, b], {"pads": [1, 1, 1, 1]})
    assert rows == [13 if filters == 300 else 6]
    want = _ort("Conv", {"x": x, "w": w, "b": b}, {"pads": [1, 1, 1, 1]})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("xs,ws,attrs", [
    ((2, 6, 9, 8), (6, 2, 3, 3), {"group": 3, "strides": [2, 2], "pads": [1, 1, 1, 1]}),    # stride 2
    ((1, 8, 7, 9), (12, 2, 3, 2), {"group": 4, "pads": [1, 0, 2, 1], "dilations": [2, 1]}),  # grouped, uneven pads
    ((1, 6, 9, 9), (6, 2, 3, 3), {"group": 3, "pads": [-1, 1, 1, -1]}),                    # pads that crop
])
def test_grouped_conv_pads_each_block_of_groups_on_its_own(monkeypatch, xs, ws, attrs) -> None:
    # one group per block, each padded into the reused buffer (no padded copy of the whole input)
    from hal.kernels import _sliding, nn

    monkeypatch.setattr(nn, "COLUMN_BLOCK", 1)
    pads = []  # padded copies, as the window view's padded image or flat_rows' row-padded runs
    for name in ("_padded", "flat_rows"):
        real = getattr(_sliding, name)
        monkeypatch.setattr(nn, name, lambda *a, real=real, **k: pads.append(a[0].shape) or real(*a, **k))
    rng = np.random.default_rng(4)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    got = _hal("Conv", [x, w, b], attrs)
    g = attrs["group"]
    assert pads == [(1, xs[1] // g, *xs[2:])] * (xs[0] * g)
    if any(p < 0 for p in attrs["pads"]):  # onnxruntime refuses negative pads: crop by hand
        x, attrs = np.ascontiguousarray(x[:, :, 1:, :-1]), {**attrs, "pads": [0, 1, 1, 0]}
    want = _ort("Conv", {"x": x, "w": w, "b": b}, attrs)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("block_channels", [1, 3])
def test_depthwise_blocks_reuse_their_margins(monkeypatch, numpy_loops, block_channels) -> None:
    # one or three channels per block (the last block short): each block's copy must leave the
    # reused image buffer's zero margins and its column strips as the previous block left them
    # (the numpy path: a 3x3 depthwise conv otherwise runs the compiled loop)
    from hal.kernels import nn

    xs, ws, attrs = (2, 7, 10, 9), (14, 1, 3, 3), {"group": 7, "strides": [2, 1], "pads": [1, 2, 2, 1]}
    monkeypatch.setattr(nn, "DEPTHWISE_BLOCK", block_channels * 9 * 6 * 9 * 4)
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(xs) + 3).astype(np.float32)  # no zeros: a stale margin would show
    w = rng.standard_normal(ws).astype(np.float32)
    got = _hal("Conv", [x, w], attrs)
    np.testing.assert_allclose(got, _ort("Conv", {"x": x, "w": w}, attrs)[0], rtol=1e-4, atol=1e-4)


def test_float16_depthwise_conv_accumulates_in_float32() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float16)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float16)
    attrs = {"group": 4, "pads": [1, 1, 1, 1]}
    got = _hal("Conv", [x, w], attrs)
    want = _hal("Conv", [x.astype(np.float32), w.astype(np.float32)], attrs).astype(np.float16)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, want)


POOLS = [  # (op, x shape, attrs)
    ("MaxPool", (1, 5, 13, 13), {"kernel_shape": [3, 3], "strides": [2, 2]}),
    ("MaxPool", (1, 5, 14, 14), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 0, 1, 1]}),
    ("MaxPool", (2, 3, 12, 11), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ("MaxPool", (1, 3, 10, 10), {"kernel_shape": [2, 3], "dilations": [2, 2], "pads": [1, 1, 1, 1]}),
    ("MaxPool", (1, 3, 9, 9), {"kernel_shape": [3, 3], "auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    ("MaxPool", (1, 3, 17), {"kernel_shape": [4], "strides": [3], "pads": [1, 2]}),
    ("MaxPool", (1, 2, 6, 7, 5), {"kernel_shape": [2, 3, 2], "strides": [1, 2, 2], "ceil_mode": 1}),
    # stride 1 reduces over the flattened array: windows crossing rows, images and channels are dropped
    ("MaxPool", (2, 3, 9, 8), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ("MaxPool", (1, 4, 11, 10), {"kernel_shape": [3, 2], "dilations": [2, 3], "pads": [2, 1, 2, 1]}),
    ("MaxPool", (1, 3, 8, 9), {"kernel_shape": [3, 3], "strides": [1, 2], "pads": [0, 1, 1, 1]}),
    ("MaxPool", (1, 3, 9, 8), {"kernel_shape": [3, 3], "strides": [2, 1], "ceil_mode": 1}),
    ("AveragePool", (1, 5, 14, 14), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ("AveragePool", (1, 5, 14, 14), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ("AveragePool", (2, 4, 13, 12), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                                     "ceil_mode": 1}),
    ("AveragePool", (1, 4, 7, 7), {"kernel_shape": [7, 7]}),
    ("AveragePool", (1, 3, 10, 9), {"kernel_shape": [2, 3], "dilations": [2, 3], "pads": [1, 0, 1, 2]}),
    ("AveragePool", (1, 2, 6, 7, 5), {"kernel_shape": [3, 2, 2], "pads": [1, 0, 1, 1, 1, 0]}),
    ("LpPool", (1, 3, 9, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("LpPool", (1, 3, 9, 9), {"kernel_shape": [2, 2], "p": 3}),
    # a strided axis (up to FLAT_MAX_STRIDE) is reduced over the flattened array, every s-th kept
    ("MaxPool", (2, 3, 14, 9), {"kernel_shape": [3, 2], "strides": [3, 1], "dilations": [2, 1]}),  # outer axis
    ("MaxPool", (1, 4, 11, 13), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 0, 1], "ceil_mode": 1}),
    ("MaxPool", (1, 3, 20), {"kernel_shape": [3], "strides": [2], "dilations": [2]}),   # the input itself
    ("MaxPool", (1, 3, 9, 14), {"kernel_shape": [2, 3], "strides": [1, 3], "dilations": [1, 2], "ceil_mode": 1}),
    ("AveragePool", (1, 3, 11, 17), {"kernel_shape": [3, 5], "strides": [2, 4], "pads": [1, 2, 1, 2]}),  # past it
    # a flattened pass leaves its axis's cut to the end, unless a strided or 1-wide axis comes next
    ("MaxPool", (1, 3, 9, 10), {"kernel_shape": [3, 1], "strides": [1, 2]}),
    ("AveragePool", (1, 3, 10, 17), {"kernel_shape": [3, 3], "strides": [1, 4], "pads": [1, 1, 1, 1]}),
    ("MaxPool", (1, 2, 7, 9, 8), {"kernel_shape": [3, 3, 3], "strides": [1, 4, 1], "pads": [1] * 6}),
    ("AveragePool", (1, 2, 6, 7, 8), {"kernel_shape": [3, 2, 3], "pads": [1, 0, 1, 1, 1, 1]}),  # three flat passes
]


@pytest.mark.parametrize("op,xs,attrs", POOLS, ids=[f"{p[0]}{i}" for i, p in enumerate(POOLS)])
def test_pooling_one_axis_at_a_time_matches_onnxruntime(op, xs, attrs) -> None:
    x = np.random.default_rng(2).standard_normal(xs).astype(np.float32)
    want = _ort(op, {"x": x}, attrs, opset=18 if op == "LpPool" else 19)[0]
    got = _hal(op, [x], attrs, opset=18 if op == "LpPool" else 19)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


BLOCKABLE = [p for p in POOLS if p[0] in ("MaxPool", "AveragePool")]


@pytest.mark.parametrize("op,xs,attrs", BLOCKABLE, ids=[f"{p[0]}{i}" for i, p in enumerate(BLOCKABLE)])
def test_pooling_a_channel_at_a_time_matches_onnxruntime(monkeypatch, numpy_loops, op, xs, attrs) -> None:
    # blocks of one channel, each padded into the reused buffer: the same values as onnxruntime
    # (the numpy passes: a 2-D max pool would otherwise run the compiled loop)
    from hal.kernels import pool

    monkeypatch.setattr(pool, "POOL_BLOCK", 1)
    monkeypatch.setattr(pool, "POOL_BLOCK_FROM", 0)
    calls = []
    for name in ("_reduce_windows", "_rows_padded"):  # a 2-D pool pads only its rows, the others every axis
        real = getattr(pool, name)
        monkeypatch.setattr(pool, name, lambda *a, _real=real: calls.append(1) or _real(*a))
    x = np.random.default_rng(2).standard_normal(xs).astype(np.float32)
    want = _ort(op, {"x": x}, attrs, opset=19)[0]
    got = _hal(op, [x], attrs, opset=19)
    assert got.shape == want.shape and got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    whole = attrs["kernel_shape"] == list(xs[2:]) and len(attrs) == 1  # one window per image: row sums
    assert len(calls) == (0 if whole else xs[0] * xs[1])


@pytest.mark.parametrize("xs", [(2, 3, 7, 7), (1, 5, 9), (1, 2, 3, 4, 5), (2, 0, 4, 4)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_whole_image_average_pool_is_the_image_mean(xs, dtype) -> None:
    """AveragePool whose one window is the whole unpadded image, and GlobalAveragePool, as one row
    sum per (image, channel): the mean over the spatial axes, in float32 for float16 inputs."""
    x = np.random.default_rng(3).standard_normal(xs).astype(dtype)
    want = x.astype(np.float64).mean(axis=tuple(range(2, len(xs))), keepdims=True)
    for op, attrs in (("AveragePool", {"kernel_shape": list(xs[2:])}), ("GlobalAveragePool", {})):
        got = _hal(op, [x], attrs, opset=19)
        assert got.shape == want.shape and got.dtype == dtype
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-3 if dtype == np.float16 else 1e-6,
                                   atol=1e-3 if dtype == np.float16 else 1e-7)
    if x.size and dtype == np.float32:
        (ort_want,) = _ort("GlobalAveragePool", {"x": x}, {}, opset=19)
        np.testing.assert_allclose(_hal("GlobalAveragePool", [x], {}, opset=19), ort_want, rtol=1e-6, atol=1e-7)


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint32) if a.dtype == np.float32 else a


@pytest.mark.parametrize("seed", range(40))
def test_row_padded_pooling_has_the_bits_of_the_padded_pass(seed) -> None:
    # the 2-D pools that pad only their rows against padding every axis, on random geometry (ceil mode,
    # dilation, pads past the window, 1-wide kernels), with NaN, infinities and both zeros in the input
    from hal.kernels import pool
    from hal.kernels._sliding import _padded

    rng = np.random.default_rng(seed)
    k = [int(v) for v in rng.integers(1, 5, 2)]
    d = [int(v) for v in rng.integers(1, 3, 2)]
    s = [int(v) for v in rng.integers(1, 4, 2)]
    pads = [int(rng.integers(0, k[i] * d[i])) for i in (0, 1)] + [int(rng.integers(0, k[i] * d[i])) for i in (0, 1)]
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 5)), *(int(v) for v in rng.integers(6, 20, 2)))
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[rng.integers(0, x.size, 6)] = [np.nan, np.inf, -np.inf, 0.0, -0.0, -0.0]
    for ceil in (0, 1):
        k_, s_, d_, begin, _, ext, out = pool._pool_setup(x, k, s, d, pads, "NOTSET", ceil)
        columns = pool._border_columns(x.shape, begin, ext, out, k_, s_, d_)
        if columns is None:
            continue
        for fill, op in ((0, np.add), (-np.inf, np.maximum)):
            want = pool._reduce_windows(_padded(x, begin, ext, fill), out, k_, s_, d_, op)
            got = pool._rows_padded(x, begin, ext, fill, out, k_, s_, d_, op, columns)
            assert got.shape == want.shape and got.flags.c_contiguous
            np.testing.assert_array_equal(_bits(got), _bits(want))


def test_stride_one_pooling_of_a_non_contiguous_input_matches_onnxruntime() -> None:
    # a transposed view takes the strided path on its first axis, then the flattened one on a buffer of its own
    x = np.random.default_rng(5).standard_normal((1, 3, 9, 10)).astype(np.float32).transpose(0, 1, 3, 2)
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    want = _ort("MaxPool", {"x": np.ascontiguousarray(x)}, attrs)[0]
    got = _hal("MaxPool", [x], attrs)
    np.testing.assert_array_equal(got, want)
    assert got.flags.c_contiguous and not np.shares_memory(got, x)


def test_strided_pooling_over_the_flattened_input_leaves_it_alone() -> None:
    # no pads, one axis: the flattened reduction reads the caller's array and writes a buffer of its own
    x = np.random.default_rng(6).standard_normal((2, 3, 21)).astype(np.float32)
    before = x.copy()
    attrs = {"kernel_shape": [3], "strides": [2]}
    got = _hal("MaxPool", [x], attrs)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(got, _ort("MaxPool", {"x": x}, attrs)[0])
    assert got.flags.c_contiguous and not np.shares_memory(got, x)


def test_max_pool_with_indices_keeps_the_per_tap_path() -> None:
    x = np.random.default_rng(3).standard_normal((1, 3, 9, 9)).astype(np.float32)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    want = _ort("MaxPool", {"x": x}, attrs, n_out=2)
    got = _hal("MaxPool", [x], attrs, n_out=2)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_integer_max_pool_pads_with_the_lowest_integer() -> None:
    x = np.random.default_rng(4).integers(-100, 100, (1, 2, 7, 7)).astype(np.int8)
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}
    np.testing.assert_array_equal(_hal("MaxPool", [x], attrs), _ort("MaxPool", {"x": x}, attrs)[0])


def test_max_pool_of_a_1x1_window_is_a_copy_not_a_view() -> None:
    x = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2)
    y = _hal("MaxPool", [x], {"kernel_shape": [1, 1]})
    assert not np.shares_memory(x, y)
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("size,c,alpha,beta,bias", [(5, 16, 1e-4, 0.75, 1.0), (3, 7, 0.5, 0.75, 2.0),
                                                    (5, 3, 0.3, 0.5, 1.5), (1, 4, 0.2, 1.3, 1.0),
                                                    (11, 4, 0.9, 0.75, 1.0)])
def test_lrn_window_reduction_matches_onnxruntime(size, c, alpha, beta, bias) -> None:
    x = np.random.default_rng(5).standard_normal((2, c, 6, 5)).astype(np.float32)
    attrs = {"size": size, "alpha": alpha, "beta": beta, "bias": bias}
    want = _ort("LRN", {"x": x}, attrs)[0]
    np.testing.assert_allclose(_hal("LRN", [x], attrs), want, rtol=1e-5, atol=1e-6)


def _random_conv(seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """A seeded random Conv (groups, depthwise, strides, dilations, pads or auto_pad, 1-D to 3-D); every
    tenth one big enough that its im2col matrix passes COLUMN_BLOCK_FROM."""
    rng = np.random.default_rng(1000 + seed)
    big = seed % 10 == 9  # 2-D, one group, 64 output channels: the banded im2col path
    nd = 2 if big else int(rng.choice([1, 2, 2, 2, 3]))
    group = 1 if big else int(rng.choice([1, 1, 2, 3, 0]))  # 0: depthwise
    cg = int(rng.integers(1, 5))
    c = 16 if big else cg * max(group, 1) if group else int(rng.integers(2, 24))
    group = group or c
    cg = c // group
    m = 64 if big else group * int(rng.integers(1, 4)) * (1 if group > 1 else int(rng.integers(1, 20)))
    k = [int(rng.choice([3, 5] if big else [1, 2, 3, 3, 5])) for _ in range(nd)]
    s = [int(rng.choice([1, 1, 2, 3])) for _ in range(nd)]
    d = [int(rng.choice([1, 1, 2])) for _ in range(nd)]
    size = [int(rng.integers(120, 140)) if big else int(rng.integers(5, 21 if nd < 3 else 9)) for _ in range(nd)]
    attrs: dict = {"group": group, "strides": s, "dilations": d, "kernel_shape": k}
    if rng.random() < 0.25:  # onnxruntime refuses SAME with dilations
        attrs["auto_pad"] = str(rng.choice(["SAME_UPPER", "SAME_LOWER", "VALID"] if d == [1] * nd else ["VALID"]))
    else:
        attrs["pads"] = [int(rng.integers(0, min(3, (k[i % nd] - 1) * d[i % nd] + 1))) for i in range(2 * nd)]
    for i in range(nd):  # keep every output dimension at least 1
        size[i] = max(size[i], (k[i] - 1) * d[i] + 1)
    x = rng.standard_normal((int(rng.integers(1, 3)), c, *size)).astype(np.float32)
    w = rng.standard_normal((m, cg, *k)).astype(np.float32)
    inputs = {"x": x, "w": w}
    if rng.random() < 0.6:
        inputs["b"] = rng.standard_normal(m).astype(np.float32)
    return inputs, attrs


def _random_depthwise(seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """A seeded random 2-D depthwise Conv: strides 1-3, dilations 1-2, uneven pads up to the window's
    reach, channel multipliers, images down to 1x1 (the zero-margin column path, every geometry)."""
    rng = np.random.default_rng(2000 + seed)
    c, mult = int(rng.integers(2, 7)), int(rng.integers(1, 3))
    k = [int(rng.integers(1, 5)) for _ in range(2)]
    d = [int(rng.integers(1, 3)) for _ in range(2)]
    s = [int(rng.integers(1, 4)) for _ in range(2)]
    pads = [int(rng.integers(0, (k[i % 2] - 1) * d[i % 2] + 1)) for i in range(4)]
    size = [max(int(rng.integers(1, 13)), (k[i] - 1) * d[i] + 1 - pads[i] - pads[i + 2]) for i in range(2)]
    x = rng.standard_normal((int(rng.integers(1, 3)), c, *size)).astype(np.float32)
    inputs = {"x": x, "w": rng.standard_normal((c * mult, 1, *k)).astype(np.float32)}
    if rng.random() < 0.5:
        inputs["b"] = rng.standard_normal(c * mult).astype(np.float32)
    return inputs, {"group": c, "strides": s, "dilations": d, "kernel_shape": k, "pads": pads}


@pytest.mark.parametrize("seed", range(60))
def test_random_depthwise_convs_match_onnxruntime(seed) -> None:
    inputs, attrs = _random_depthwise(seed)
    want = _ort("Conv", inputs, attrs)[0]
    got = _hal("Conv", list(inputs.values()), attrs)
    assert got.shape == want.shape and got.flags.c_contiguous, attrs
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=str(attrs))


@pytest.mark.parametrize("seed", range(40))
def test_random_convs_match_onnxruntime(seed) -> None:
    inputs, attrs = _random_conv(seed)
    want = _ort("Conv", inputs, attrs)[0]
    got = _hal("Conv", list(inputs.values()), attrs)
    assert got.shape == want.shape and got.dtype == np.float32, attrs
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-4 * np.sqrt(inputs["w"][0].size), err_msg=str(attrs))
