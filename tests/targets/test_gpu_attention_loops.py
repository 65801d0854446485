"""The GPU target's fused attention through the compiled row loops (``_loops.online_shift`` and
``row_sums``): each key block's shift against the numpy passes bit for bit, and whole kernels on
random shapes, key blocks, masks, NaN and infinities against the numpy path and a float64 dense
attention."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hal.kernels import jit
from tests.kernels.test_jit_loops import _both_ways, _counting

pytestmark = pytest.mark.skipif(not jit.enabled(), reason="numba is not importable here (HAL_JIT=0 or missing)")
if jit.enabled():
    from hal.kernels import _loops as loops

from hal_gpu.attention import ScoreOp, _lowest, _shifted, flash_attention  # noqa: E402


def _scores(seed: int, width: int) -> np.ndarray:
    """(2, 3, 9, width) float32 scores with a NaN row, a NaN among numbers, -inf and +inf rows."""
    rng = np.random.default_rng(seed)
    s = (rng.standard_normal((2, 3, 9, width)) * 4).astype(np.float32)
    s[0, 0, 0] = np.nan
    s[0, 0, 1, width // 2] = np.nan
    s[0, 0, 2] = -np.inf
    s[0, 0, 3, -1] = np.inf
    s[1, 2, 4, : width // 2 + 1] = -np.inf
    return s


@pytest.mark.parametrize("width", [1, 3, 8, 16, 17, 32, 100])
def test_a_blocks_shift_is_the_numpy_passes_bit_for_bit(monkeypatch, width) -> None:
    # first block, then a later one against the first one's running maxima; the maxima may differ
    # only on a row all NaN so far (the loop's -inf, fmax's NaN), which ends NaN either way
    lowest = _lowest(np.float32)
    first, later = _scores(width, width), _scores(width + 1, width)
    with np.errstate(all="ignore"):
        got, want = _both_ways(monkeypatch, lambda: _shifted(first.copy(), None, True, lowest))
        m_got, m_want = got[1], want[1]
        got2, want2 = _both_ways(monkeypatch, lambda: _shifted(later.copy(), m_want, True, lowest))
    seen = ~np.isnan(first).all(axis=-1, keepdims=True)
    for a, b in zip(got[:1] + got2[:1], want[:1] + want2[:1]):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    np.testing.assert_array_equal(m_got[seen], m_want[seen])
    for a, b in zip(got2[1:], want2[1:]):
        np.testing.assert_array_equal(a, b)
    assert got[0].shape == first.shape and m_got.shape == (2, 3, 9, 1)


def test_the_shift_leaves_a_buffer_it_does_not_own_untouched(monkeypatch) -> None:
    s = _scores(3, 16)
    before = s.copy()
    with np.errstate(all="ignore"):
        p, _, _ = _shifted(s, None, False, _lowest(np.float32))
        view = s.transpose(0, 1, 3, 2)  # a strided view (a score op's result) is copied, not written
        q, _, _ = _shifted(view, None, True, _lowest(np.float32))
    np.testing.assert_array_equal(s.view(np.uint32), before.view(np.uint32))
    assert p is not s and q.flags.c_contiguous


def _random_attention(seed: int) -> tuple[list[np.ndarray], dict]:
    """Heads of 1-20 queries over 1-70 keys in blocks of 1-128, a scale and an additive causal mask
    with rows masked in part, in early blocks or in full, sometimes a NaN query or a +inf key."""
    rng = np.random.default_rng(4000 + seed)
    b, h, nq, d, keys = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 21)),
                         int(rng.integers(1, 17)), int(rng.integers(1, 71)))
    q, kt, v = (rng.standard_normal(s).astype(np.float32) for s in ((b, h, nq, d), (b, h, d, keys), (b, h, keys, d)))
    mask = np.where(np.tril(np.ones((nq, keys), bool), k=int(rng.integers(0, keys))), 0.0, -np.inf)
    mask = mask.astype(np.float32)
    if rng.random() < 0.5:
        mask[int(rng.integers(0, nq))] = -np.inf
    if rng.random() < 0.3:
        q[0, 0, int(rng.integers(0, nq)), 0] = np.nan
    if rng.random() < 0.3:
        kt[0, 0, 0, int(rng.integers(0, keys))] = np.inf
    scale = np.float32(1 / math.sqrt(d))
    ops = (ScoreOp(np.multiply, (-1, 0)), ScoreOp(np.add, (-1, 1)))
    block = int(rng.choice([1, 3, 8, 16, 32, 128]))
    return [q, kt, v, scale, mask], {"score_ops": ops, "keys": keys, "key_block": block}


@pytest.mark.parametrize("seed", range(30))
def test_random_attentions_match_the_numpy_path_and_dense_attention(monkeypatch, seed) -> None:
    args, kw = _random_attention(seed)
    calls = _counting(monkeypatch, loops, "online_shift")
    with np.errstate(all="ignore"):  # (as the engine runs every kernel)
        got, want = _both_ways(monkeypatch, lambda: flash_attention(*args, **kw))
        q, kt, v, scale, mask = (a.astype(np.float64) for a in args)
        s = q @ kt * scale + mask
        p = np.exp(s - s.max(-1, keepdims=True))
        dense = (p / p.sum(-1, keepdims=True)) @ v
    assert len(calls) == -(-kw["keys"] // kw["key_block"])
    assert got.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(dense))
    np.testing.assert_allclose(got, dense, rtol=1e-5, atol=1e-5)


def test_the_attention_loops_take_only_their_declared_types() -> None:
    for fn in (loops.online_shift, loops.row_sums):
        assert len(fn.signatures) == 1
    with pytest.raises(TypeError):
        loops.row_sums(np.zeros((2, 3)), np.zeros(2, dtype=np.float32))
    with pytest.raises(TypeError):
        m = np.zeros(3, dtype=np.float32)
        loops.online_shift(np.zeros((2, 3), dtype=np.float32).T, m, m, m, True, np.float32(0))


@pytest.mark.parametrize("seed", range(20))
def test_one_key_block_through_the_score_chain_is_the_score_ops_bits(monkeypatch, seed) -> None:
    # every key in one block: the registry's Mul and Add (or a Where by a causal condition) run in
    # softmax_prologue with the max subtraction; the same bits as the score ops one by one, with
    # the operands in fp32 or rounded to a number format (the scores are the fp32 products either way)
    from hal_gpu.executor import _score_chain

    from hal.kernels import elementwise, logic

    args, kw = _random_attention(seed)
    q, kt, v, scale, mask = args
    if seed % 2:
        ops = [ScoreOp(elementwise.mul, (-1, 0)), ScoreOp(elementwise.add, (-1, 1))]
        side = [np.asarray(scale), mask]  # (a session hands over arrays, never numpy scalars)
    else:
        ops = [ScoreOp(elementwise.div, (-1, 0)), ScoreOp(logic.where, (1, -1, 2))]
        side = [np.asarray(1 / scale, np.float32), np.isfinite(mask), np.array([-np.inf], np.float32)]
    chain = _score_chain(ops)
    assert chain is not None
    kw = {"score_ops": tuple(ops), "keys": kw["keys"], "key_block": kw["keys"], "fmt": (None, "tf32", "bf16")[seed % 3]}
    calls = _counting(monkeypatch, loops, "softmax_prologue")
    with np.errstate(all="ignore"):
        got = flash_attention(q, kt, v, *side, chain=chain, **kw)
        assert len(calls) == 1
        want = flash_attention(q, kt, v, *side, **kw)
    nan = np.isnan(want)  # a row masked in full: NaN either way (0/0 there, NaN - NaN here: the sign may differ)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


def test_score_ops_outside_the_chain_keep_the_block_path() -> None:
    from hal_gpu.executor import _score_chain

    from hal.kernels import elementwise

    assert _score_chain([ScoreOp(None, shape=(2, 3))]) is None  # a Reshape between the score ops
    assert _score_chain([ScoreOp(elementwise.mul, (-1, None))]) is None
    assert _score_chain([ScoreOp(elementwise.add, (-1, 0), (("x", 1),))]) is None
    assert _score_chain([ScoreOp(np.maximum, (-1, 0))]) is None
    assert _score_chain([]).members == ()


@pytest.mark.parametrize("seed", range(12))
def test_a_kept_call_repeats_flash_attention_bit_for_bit(seed) -> None:
    """``FlashAttention`` keeps a float32 call whose keys are one block and whose score chain had
    read-only side inputs; the next call with those shapes and strides takes the direct loops
    (numpy's sgemm from ``_gemm_loops``) with the bits of ``flash_attention`` itself, NaN and
    infinities included. Other calls (a fed side input, blocks, formats) take the function."""
    from hal_gpu.attention import FlashAttention
    from hal_gpu.executor import _score_chain

    from hal.kernels import blas, elementwise

    if not blas.available():
        pytest.skip(blas.status())
    args, kw = _random_attention(seed)
    q, kt, v, scale, mask = args
    side = [np.asarray(scale), mask]
    kw["score_ops"] = (ScoreOp(elementwise.mul, (-1, 0)), ScoreOp(elementwise.add, (-1, 1)))  # (the registry's)
    for x in side:
        x.flags.writeable = False  # weights: the same values every run
    kw = {**kw, "key_block": max(kw["keys"], 1) if seed % 3 else kw["key_block"], "fmt": None, "store": None}
    kernel = FlashAttention(**kw, chain=_score_chain(list(kw["score_ops"])))
    whole = kw["keys"] <= kw["key_block"] and min(q.shape[-2], q.shape[-1], kt.shape[-1], v.shape[-1]) >= 2
    with np.errstate(all="ignore"):
        want = flash_attention(q, kt, v, *side, chain=_score_chain(list(kw["score_ops"])), **kw)
        first = kernel(q, kt, v, *side)
        assert (kernel._kept is not None) == whole, (q.shape, kt.shape, kw)
        calls = []
        if whole:
            head, tail = kernel._kept[4]
            kernel._kept = (*kernel._kept[:4], (lambda *a: calls.append("head") or head(*a),
                                                lambda *a: calls.append("tail") or tail(*a)), *kernel._kept[5:])
        again = kernel(q, kt, v, *side)
    assert calls == (["head", "tail"] if whole else [])
    for got in (first, again):
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_a_gpu_session_keeps_tiny_gpts_attention_and_forgets_it_when_stored() -> None:
    import pickle

    from hal_gpu.attention import FlashAttention

    import hal
    from hal import zoo
    from hal.kernels import blas

    if not blas.available():
        pytest.skip(blas.status())
    feeds = {"input_ids": np.random.default_rng(0).integers(0, 256, (1, 16)).astype(np.int64)}
    sess = hal.InferenceSession(zoo.build("tiny-gpt"), target="gpu", cache_dir=False)
    want = [sess.run(None, feeds)[0] for _ in range(3)]
    program = sess._parts[0].executable.program
    kernels = [s.fn for s in program.steps if isinstance(s.fn, FlashAttention)]
    assert len(kernels) == 2 and all(k._kept is not None for k in kernels)
    assert all(np.array_equal(w, want[0]) for w in want)
    stored = pickle.loads(pickle.dumps(program))
    assert all(s.fn._kept is None for s in stored.steps if isinstance(s.fn, FlashAttention))
    np.testing.assert_array_equal(stored.run_list(dict(feeds))[0], want[0])
