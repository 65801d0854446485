"""The vectorised forms of simple kernels give the very bits of the plain numpy call they replace:
``bound_into`` (maximum / minimum against a row of the bound, Relu's path), the border-only fill of
a padded copy, the window geometry cached per shape, and a per-channel vector applied with numpy's
buffer shortened to a row (``apply_per_channel``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from hal.kernels._broadcast import UNBUFFERED_SIZE_FROM, apply_per_channel, broadcast, row_length
from hal.kernels._sliding import _defaults, _geometry, _padded, _padded_shape, window
from hal.kernels.activation import relu
from hal.kernels.elementwise import BOUND_ROW, BOUND_ROW_FROM, ZERO_ROW, bound_into, broadcasts_onto

SPECIAL = np.array([-0.0, 0.0, np.nan, -np.nan, np.inf, -np.inf, 1e-45, -1e-45, 3.5, -3.5])


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.int32 if a.dtype == np.float32 else np.int64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [0, 7, BOUND_ROW_FROM - 1, BOUND_ROW_FROM, BOUND_ROW, BOUND_ROW + 1,
                                  3 * BOUND_ROW + 5])
@pytest.mark.parametrize("ufunc, value", [(np.maximum, 0), (np.minimum, 0), (np.minimum, 9.0), (np.maximum, -np.inf)])
def test_bound_into_gives_the_scalar_calls_bits(dtype, size, ufunc, value) -> None:
    rng = np.random.default_rng(size)
    x = rng.standard_normal(size).astype(dtype)
    x[: len(SPECIAL)] = SPECIAL[: min(size, len(SPECIAL))]
    tail = min(size, len(SPECIAL))
    if tail:  # and in the tail past the whole rows
        x[-tail:] = SPECIAL[-tail:]
    x = x.reshape(1, -1)
    want = ufunc(x, value)
    got = bound_into(ufunc, x, value, np.empty_like(x))
    np.testing.assert_array_equal(_bits(got), _bits(want))
    inplace = x.copy()
    assert bound_into(ufunc, inplace, value, inplace) is inplace
    np.testing.assert_array_equal(_bits(inplace), _bits(want))


@pytest.mark.parametrize("value", [0, 0.0, -0.0])
def test_a_zero_bound_past_the_zero_rows_length_gives_the_scalar_calls_bits(value) -> None:
    x = np.random.default_rng(3).standard_normal(ZERO_ROW + 5).astype(np.float32)
    x[:len(SPECIAL)] = SPECIAL
    x[-len(SPECIAL):] = SPECIAL  # in the tail past the whole rows
    want = np.maximum(x, value)
    np.testing.assert_array_equal(_bits(bound_into(np.maximum, x, value, np.empty_like(x))), _bits(want))


def test_the_zero_row_is_read_only_and_costs_no_resident_memory() -> None:
    from hal.kernels.elementwise import _zero_row

    status = Path("/proc/self/status")
    if _zero_row(np.dtype(np.float64)) is None or not status.exists():
        pytest.skip("no anonymous mappings or no /proc/self/status here")

    def rss_kib() -> int:
        return next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmRSS"))

    before = rss_kib()
    row = _zero_row.__wrapped__(np.dtype(np.float64))  # a row of its own, made and read in the window
    assert row.size == ZERO_ROW and not row.flags.writeable
    assert float(np.max(np.abs(row))) == 0.0 and math.copysign(1.0, float(row[-1])) > 0  # every page read: +0
    assert rss_kib() - before < 4096  # 32 MB read, all of it the kernel's shared zero page


@pytest.mark.parametrize("o,t", [((), (2, 3)), ((3,), (2, 3)), ((1, 3), (2, 3)), ((2, 1), (2, 3)), ((2, 3), (2, 3)),
                                 ((4,), (2, 3)), ((2, 3), (3,)), ((1, 2, 3), (2, 3)), ((2, 3), (1, 3)),
                                 ((5, 1, 1), (5, 4, 3)), ((0,), (2, 0)), ((2, 0), (2, 1))])
def test_broadcasts_onto_agrees_with_numpy(o, t) -> None:
    try:
        want = np.broadcast_shapes(o, t) == t
    except ValueError:
        want = False
    assert broadcasts_onto(o, t) == want


def test_relu_keeps_integer_dtypes_and_reads_views() -> None:
    ints = np.arange(-5, 5, dtype=np.int32)
    np.testing.assert_array_equal(relu(ints), np.maximum(ints, 0))
    assert relu(ints).dtype == np.int32
    big = np.random.default_rng(0).standard_normal((64, 3 * BOUND_ROW)).astype(np.float32)
    view = big[:, ::3]  # not contiguous: the plain call
    np.testing.assert_array_equal(_bits(relu(view)), _bits(np.maximum(view, 0)))


@pytest.mark.parametrize("seed", range(20))
def test_padded_copy_into_a_dirty_buffer_fills_all_of_its_border(seed) -> None:
    """A negative pad crops that side; the copy's shape keeps a negative end pad's room, filled
    (windows never read it)."""
    rng = np.random.default_rng(seed)
    nd = int(rng.integers(1, 4))
    shape = (2, 3, *(int(v) for v in rng.integers(3, 7, size=nd)))
    x = rng.standard_normal(shape).astype(np.float32)
    begin = [int(v) for v in rng.integers(-2, 3, size=nd)]
    end = [int(v) for v in rng.integers(-2, 3, size=nd)]
    cropped = x[(..., *(slice(max(-b, 0), x.shape[2 + i] + min(e, 0)) for i, (b, e) in enumerate(zip(begin, end))))]
    want = np.pad(cropped, [(0, 0), (0, 0), *((max(b, 0), max(e, 0) - min(e, 0)) for b, e in zip(begin, end))],
                  constant_values=-7.0)
    dirty = np.full(_padded_shape(x.shape, begin, end), np.nan, dtype=np.float32)
    if any(begin) or any(end):
        np.testing.assert_array_equal(_padded(x, begin, end, -7.0, out=dirty), want)
    np.testing.assert_array_equal(_padded(x, begin, end, -7.0), want if any(begin) or any(end) else x)


@pytest.mark.parametrize("auto_pad", ["NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("ceil_mode", [0, 1])
def test_cached_window_matches_the_geometry_it_caches(auto_pad, ceil_mode) -> None:
    rng = np.random.default_rng(len(auto_pad) + ceil_mode)
    for _ in range(50):
        in_sp = tuple(int(v) for v in rng.integers(4, 30, size=2))
        k = [int(v) for v in rng.integers(1, 4, size=2)]
        strides = [int(v) for v in rng.integers(1, 3, size=2)]
        dilations = [int(v) for v in rng.integers(1, 3, size=2)]
        pads = [int(v) for v in rng.integers(0, 3, size=4)]
        s, d, p = _defaults(2, strides, dilations, pads)
        begin, end, out = _geometry(in_sp, k, s, d, p, auto_pad, ceil_mode)
        w = window(in_sp, k, strides, dilations, pads, auto_pad, ceil_mode)
        assert w == (tuple(k), tuple(s), tuple(d), tuple(begin), tuple(end), tuple(out))
        assert window(in_sp, k, strides, dilations, pads, auto_pad, ceil_mode) is w
    assert window((5, 5), [3, 3], None, None, None, "NOTSET").s == (1, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("spatial", [(7, 7), (23, 23), (28, 28), (56, 56), (64, 64), (65, 65), (4, 8, 32)])
@pytest.mark.parametrize("ufunc", [np.add, np.multiply])
def test_apply_per_channel_gives_the_broadcasts_bits(dtype, spatial, ufunc) -> None:
    rng = np.random.default_rng(math.prod(spatial))
    channels = max(4, UNBUFFERED_SIZE_FROM // math.prod(spatial) + 1)  # big enough to go unbuffered
    x = rng.standard_normal((1, channels, *spatial)).astype(dtype)
    x.reshape(-1)[: len(SPECIAL)] = SPECIAL
    v = rng.standard_normal(channels)  # float64: cast to x's dtype first, as a Conv's bias is
    want = ufunc(x, v.astype(dtype).reshape(-1, *([1] * len(spatial))))
    default = np.getbufsize()
    np.testing.assert_array_equal(apply_per_channel(ufunc, x, v), want)
    inplace = x.copy()
    assert apply_per_channel(ufunc, inplace, v, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, want)
    assert np.getbufsize() == default


def test_apply_per_channel_restores_the_buffer_size_when_the_ufunc_raises() -> None:
    default = np.getbufsize()
    x = np.ones((1, UNBUFFERED_SIZE_FROM // 1024, 32, 32), dtype=np.float32)
    with pytest.raises(ValueError):
        apply_per_channel(np.add, x, np.ones(x.shape[1]), out=np.empty((1, 1, 32, 32), dtype=np.float32))
    assert np.getbufsize() == default


@pytest.mark.parametrize("shape, operand, run", [
    ((1, 256, 56, 56), (256, 1, 1), 3136),        # a conv's bias: repeats along each map
    ((4, 128, 1536), (1536,), 1536),              # a bias row: varies along each row, repeats down
    ((4, 12, 128, 128), (4, 1, 1, 128), 128),     # an attention mask
    ((2, 3, 4), (2, 3, 4), 0),                    # no broadcast
    ((2, 3, 4), (), 0),                           # one value for all
    ((1, 8, 1, 5), (8, 1, 1), 5),                 # unit axes are skipped
])
def test_row_length(shape, operand, run) -> None:
    assert row_length(shape, operand) == run


@pytest.mark.parametrize("rows, row", [(160, 512), (40, 2048), (300, 384), (20, 5000)])
@pytest.mark.parametrize("first", [True, False])
def test_broadcast_of_a_row_gives_the_ufuncs_bits(rows, row, first) -> None:
    rng = np.random.default_rng(row)
    x = rng.standard_normal((rows, row)).astype(np.float32)
    v = rng.standard_normal(row).astype(np.float32)
    a, b = (v, x) if first else (x, v)
    want = np.subtract(a, b)
    np.testing.assert_array_equal(broadcast(np.subtract, a, b), want)
    out = x.copy()
    assert broadcast(np.subtract, *((v, out) if first else (out, v)), out=out) is out
    np.testing.assert_array_equal(out, want)


def test_broadcast_keeps_the_default_buffer_for_a_strided_operand(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(np, "setbufsize", lambda size: calls.append(size) or 8192)
    grid = np.ones((1, 64, 56, 58), dtype=np.float32)
    bias = np.arange(64, dtype=np.float32).reshape(64, 1, 1)
    got = broadcast(np.add, grid[..., :56], bias)
    np.testing.assert_array_equal(got, grid[..., :56] + bias)
    assert calls == []
    broadcast(np.add, np.ascontiguousarray(grid[..., :56]), bias)
    assert calls == [16, 8192]
