"""The compiled rounding of float32 to tf32, bf16, fp16, fp8 and int8 (``hal.kernels._rounding_loops.round_float32``,
through ``hal.numerics.round_to`` / ``round_scaled``) against the casts it replaces: numpy's
float16 cast, ml_dtypes' bfloat16 and float8_e4m3fn casts after ``np.clip``, ``round_tf32``'s bit
arithmetic and ``np.clip(np.rint(...))`` to int8.

The rounding of a value depends on its sign, exponent, the bit it rounds at and the bits below it,
so the sample is every sign and exponent and the top mantissa bits, each with the low bits that
decide a rounding: zero, one, just under, at and just over half a step (of tf32 and fp16: 13 bits
dropped; of bf16: 16), and all ones. The slow sweep adds every stride-th of the 2**32 bit patterns
(``HAL_ROUND_SWEEP=<stride>``, 65,537 unless set: 65,536 patterns a format; 1: all of them, about
eleven minutes for the five formats, mostly numpy's float16 cast; run before this loop landed, none
differed in any of them).
"""

from __future__ import annotations

import os

import ml_dtypes
import numpy as np
import pytest

from hal import numerics
from hal.kernels import jit
from hal.numerics import round_scaled, round_tf32, round_to

pytestmark = pytest.mark.skipif(not jit.enabled(), reason="the compiled loops are off (numba missing or HAL_JIT=0)")

REFERENCE = {
    "tf32": round_tf32,
    "bf16": lambda x: x.astype(ml_dtypes.bfloat16).astype(np.float32),
    "fp16": lambda x: x.astype(np.float16).astype(np.float32),
    "fp8": lambda x: np.clip(x, -448.0, 448.0).astype(ml_dtypes.float8_e4m3fn).astype(np.float32),
    "int8": lambda x: np.clip(np.rint(x), -127, 127).astype(np.int8).astype(np.float32),
}
#: formats stored with a per-tensor scale: ``round_to`` quantises to them, the loop alone rounds
SCALED = ("fp8", "int8")

_LOW = (0x0, 0x1, 0x0FFF, 0x1000, 0x1001, 0x1FFF, 0x2FFF, 0x3000, 0x7FFF, 0x8000, 0x8001, 0xBFFF, 0xC000,
        0xFFFF)


def _sample() -> np.ndarray:
    high = np.arange(1 << 16, dtype=np.uint32) << np.uint32(16)  # sign, exponent, top 7 mantissa bits
    mid = np.array([0x0000, 0x2000, 0x4000, 0xE000], dtype=np.uint32)  # the bits tf32 and fp16 keep below those
    low = np.array(_LOW, dtype=np.uint32)
    bits = (high[:, None, None] | mid[None, :, None] | low[None, None, :]).reshape(-1)
    low16 = high[:, None] | low[None, :]  # bf16 decides on all 16 low bits
    return np.concatenate([bits, low16.reshape(-1)]).view(np.float32)


def _same(got: np.ndarray, want: np.ndarray, x: np.ndarray) -> None:
    """The same bits, but where the reference is NaN: NaN too, its payload free."""
    nan = np.isnan(want)
    assert np.isnan(got[nan]).all(), "a NaN did not stay NaN"
    assert got.dtype == want.dtype
    bits = f"u{got.itemsize}"
    diff = (got.view(bits) != want.view(bits)) & ~nan
    if diff.any():
        i = np.flatnonzero(diff)[:5]
        pytest.fail(f"{int(diff.sum())} values differ, e.g. bits {[hex(b) for b in x.view(bits)[i]]}: "
                    f"got {got[i]}, want {want[i]}")


@pytest.mark.parametrize("fmt", list(REFERENCE))
def test_bits_equal_the_casts(fmt):
    x = _sample()
    with np.errstate(all="ignore"):
        want = REFERENCE[fmt](x)
    got = round_scaled(x, fmt) if fmt in SCALED else round_to(x, fmt)
    assert got.dtype == np.float32 and got.shape == x.shape and got is not x
    _same(got, want, x)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(REFERENCE))
def test_sweep_over_the_bit_patterns(fmt):
    stride = int(os.environ.get("HAL_ROUND_SWEEP", "65537"))
    count = -(-(1 << 32) // stride)
    for first in range(0, count, 1 << 24):  # chunks of 16M patterns: 64 MB each
        x = (np.arange(first, min(first + (1 << 24), count), dtype=np.uint64) * stride).astype(np.uint32)
        x = x.view(np.float32)
        with np.errstate(all="ignore"):
            want = REFERENCE[fmt](x)
        _same(round_scaled(x, fmt), want, x)


@pytest.mark.parametrize("fmt", SCALED)
def test_quantised_storage_equals_numpy_s_quantisation(fmt, monkeypatch):
    """``round_to`` to fp8 or int8: the per-tensor scale (largest magnitude / 448 or 127) and the loop,
    against ``quantize`` and back, as it ran before the loop."""
    rng = np.random.default_rng(11)
    cases = [rng.standard_normal((3, 50)).astype(np.float32) * s for s in (1e-30, 1e-3, 1.0, 1e4, 3e37)]
    cases += [np.zeros(9, np.float32), np.array([-0.0, 0.0, 1e-45], np.float32), np.full(4, 3.0, np.float32),
              rng.standard_normal((4, 6)).astype(np.float32).T, rng.standard_normal(7).astype(np.float64)]
    got = [round_to(x, fmt) for x in cases]
    monkeypatch.setattr(jit, "_ENABLED", False)
    with np.errstate(all="ignore"):
        for x, g in zip(cases, got):
            _same(g, round_to(x, fmt), x)


@pytest.mark.parametrize("fmt", [*SCALED, "fp8_fnuz"])
def test_quantize_codes_are_quantize_s_codes(fmt):
    """``quantize_codes`` (the fp8 GEMMs' operands as codes): ``quantize``'s codes as float32 and its
    scale, per tensor and per slice, through the loop where it takes the format (fp8_fnuz: the casts)."""
    rng = np.random.default_rng(12)
    cases = [(rng.standard_normal((5, 40)).astype(np.float32) * s, axis) for s in (1e-30, 1.0, 3e37)
             for axis in (None, 0, -1)]
    x = rng.standard_normal((6, 7)).astype(np.float32)
    x[1], x[2, 3], x[4, 4] = 0.0, np.inf, np.nan  # an all-zero row keeps a scale of 1; the rest pass over NaN
    cases += [(x, None), (x, 0), (rng.standard_normal((4, 6)).astype(np.float32).T, 1),
              (rng.standard_normal(7).astype(np.float64), None), (np.zeros((0, 3), np.float32), 0)]
    # a scale of 7 and values 7 times the format's ties (fp8's 1.4375 ..., int8's 3.5 ...): x / 7 is
    # the tie, x * (1 / 7) just past it
    top = {"fp8": 448.0, "int8": 127.0, "fp8_fnuz": 240.0}[fmt]
    ties = [top, 1.4375, -1.5625, 3.125, 6.75, 0.71875, 3.5, -5.5, 6.5, 1.5]
    cases.append((np.float32(7) * np.array(ties, np.float32), None))
    with np.errstate(all="ignore"):
        for x, axis in cases:
            codes, scale = numerics.quantize_codes(x, fmt, axis)
            q, want = numerics.quantize(x, fmt, axis)
            assert codes.dtype == np.float32 and np.array_equal(scale, want)
            _same(codes, q.astype(np.float32), x)


@pytest.mark.parametrize("fmt", list(REFERENCE))
@pytest.mark.parametrize("exponent", [-30, -14, -3, 0, 5, 20])
def test_scaled_equals_divide_round_multiply(fmt, exponent):
    rng = np.random.default_rng(exponent + 40)
    x = (rng.standard_normal(5000) * rng.choice([1e-9, 1e-3, 1.0, 7e3, 6e4, 3e8], 5000)).astype(np.float32)
    x[:6] = [0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0]
    scale = np.float32(2.0 ** exponent)
    with np.errstate(all="ignore"):
        want = REFERENCE[fmt](x / scale) * scale
    _same(round_scaled(x, fmt, scale), want, x)
    odd = np.float32(scale * 1.37)  # fp8's and int8's scales are amax / 448 or 127: not powers of two
    with np.errstate(all="ignore"):
        want = REFERENCE[fmt](x / odd) * odd
    _same(round_scaled(x, fmt, odd), want, x)


def test_layouts_and_what_it_leaves_to_the_casts():
    x = np.arange(-60, 60, dtype=np.float32).reshape(3, 4, 10) * np.float32(1.37)
    view = x.transpose(2, 0, 1)[::2]
    got = round_to(view, "fp16")
    assert got.shape == view.shape and got.flags.c_contiguous
    np.testing.assert_array_equal(got, view.astype(np.float16).astype(np.float32))
    scalar = np.array(np.float32(1 / 3))
    assert round_to(scalar, "bf16").shape == ()
    assert round_scaled(x.astype(np.float64), "fp16") is None  # float64: the casts keep it
    assert round_scaled(x, "fp4") is None
    assert round_to(np.arange(4), "fp16").dtype == np.int64  # not a float: untouched


def test_the_casts_answer_when_the_loops_are_off(monkeypatch):
    x = _sample()[::7]
    with np.errstate(all="ignore"):  # (NaN and infinities among the fp8 and int8 scales' largest magnitudes)
        fast = {fmt: round_to(x, fmt) for fmt in REFERENCE}
    monkeypatch.setattr(jit, "_ENABLED", False)
    assert round_scaled(x, "fp16") is None
    with np.errstate(all="ignore"):
        for fmt, got in fast.items():
            _same(got, numerics.round_to(x, fmt), x)


@pytest.mark.parametrize("loops", [True, False])
def test_lpu_scaled_fp16_equals_its_definition(loops, monkeypatch):
    from hal_lpu.precision import round_scaled_fp16

    if not loops:  # the casts (as benchmarks.precisions switches the compiled rounding off)
        monkeypatch.setattr(numerics, "_LOOP_FORMATS", {})
        assert numerics.round_fp16_per_tensor(np.ones(3, np.float32)) is None

    def definition(x):  # the MXM's per-tensor power-of-two scale, as the numpy expression it was
        finite = np.abs(x[np.isfinite(x)])
        amax = float(finite.max()) if finite.size else 0.0
        if amax == 0.0:
            return x.astype(np.float16).astype(x.dtype)
        scale = x.dtype.type(2.0 ** max(np.floor(np.log2(amax)) - 14, -149))  # a float32 scale, never 0
        return ((x / scale).astype(np.float16).astype(x.dtype) * scale).astype(x.dtype)

    rng = np.random.default_rng(3)
    cases = [rng.standard_normal((4, 33)).astype(np.float32) * s for s in (1e-30, 1e-6, 1.0, 1e5, 1e30)]
    with_specials = rng.standard_normal(50).astype(np.float32)
    with_specials[[3, 9, 20]] = [np.inf, np.nan, -np.inf]
    big = rng.standard_normal(3 * 10**4).astype(np.float32) * np.float32(300)  # past the compiled max's size
    big_specials = big.copy()
    big_specials[[7, 70, 700]] = [np.nan, -np.inf, np.inf]
    tiny = np.array([1e-42, -2e-42, 7e-45, 0.0], np.float32)  # every magnitude below 2**-135: the least scale
    strided = rng.standard_normal((3, 8, 5)).astype(np.float32).transpose(2, 0, 1)  # as attention's heads
    cases += [tiny, tiny * np.float32(2 ** 20), strided, with_specials, np.full(5, np.nan, np.float32),
              np.zeros(7, np.float32),
              rng.standard_normal(40).astype(np.float64), big, big_specials, big[::3],
              np.full(20000, np.inf, np.float32)]
    with np.errstate(all="ignore"):
        for x in cases:
            _same(round_scaled_fp16(x), definition(x), x)


@pytest.mark.parametrize("fmt", ["fp8", "int8"])
@pytest.mark.parametrize("jit_on", [True, False])
def test_a_tensor_of_tiny_magnitudes_keeps_a_scale_above_zero(fmt, jit_on, monkeypatch):
    # amax / 448 (or / 127) rounds to 0 in float32 under 2**-140 (2**-142): the scale stops at 2**-149,
    # which every float32 is a multiple of, so the values come back finite, not 0 / 0
    monkeypatch.setattr(jit, "_ENABLED", jit_on)
    x = np.array([1e-44, -3e-45, 0.0, 1.4e-45], np.float32)
    with np.errstate(divide="raise", invalid="raise", under="ignore"):  # amax / top underflows, as it may
        q, scale = numerics.quantize(x, fmt)
        got = round_to(x, fmt)
    assert scale == np.float32(2.0 ** -149)
    np.testing.assert_array_equal(q.astype(np.float32) * scale, x)
    np.testing.assert_array_equal(got, x)  # each an integer multiple of the scale, well inside the format
    per_row = numerics.quantize(np.array([[1e-44, 2e-44], [1.0, -2.0]], np.float32), fmt, axis=0)[1]
    assert per_row[0, 0] == np.float32(2.0 ** -149) and per_row[1, 0] == np.float32(2.0 / numerics._TOP[fmt])
