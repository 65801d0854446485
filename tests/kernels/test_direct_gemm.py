"""Products through numpy's own sgemm from compiled loops (``hal.kernels.blas``, ``_gemm_loops``):
the loops give np.matmul's bits on every layout they take, refuse what numpy would not send to gemm,
and the fused steps that call them (MatMulBias, MatMulGroup, MatMulEpilogue, AttentionCore) keep
the bits of their nodes; where the loops are unavailable the steps call numpy as before."""

from __future__ import annotations

import numpy as np
import pytest

import hal
from hal import zoo
from hal.kernels import blas, jit
from hal.kernels.epilogue import MatMulEpilogue
from hal.kernels.fused import MatMulGroup
from hal.kernels.fused_attention import AttentionCore
from hal.kernels.fused_norm import ProjectionNorm

pytestmark = [pytest.mark.skipif(not jit.enabled(), reason="compiled loops off"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]  # (numpy's references overflow on SPECIAL)

SPECIAL = np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45, 3.4e38], dtype=np.float32)


def _x(shape, seed=0, special=False):
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    if special:
        flat = x.reshape(-1)[::3]
        n = min(flat.size, SPECIAL.size)
        flat[:n] = SPECIAL[:n]
    return x


def _same_bits(got, want):
    """Bit for bit, NaN payloads and signs included (an Add's NaN is its first operand's)."""
    assert got.shape == want.shape and np.array_equal(got.view(np.uint32), want.view(np.uint32))


def _gemm():
    if not blas.available():
        pytest.skip(f"numpy's sgemm not reachable here: {blas.status()}")
    return blas.loops()


def test_available_where_numpy_is_built_on_scipy_openblas64():
    """numpy's wheels for Linux and Windows carry scipy-openblas64, whose sgemm the loops call."""
    info = np.__config__.CONFIG["Build Dependencies"]["blas"]
    if info.get("name") != "scipy-openblas" or "USE64BITINT" not in info.get("openblas configuration", ""):
        pytest.skip(f"numpy built against {info.get('name')}")
    assert blas.available(), blas.status()
    assert blas.status().startswith("direct")


@pytest.mark.parametrize("m, k, n", [(2, 2, 2), (16, 64, 64), (16, 256, 64), (7, 33, 129), (300, 40, 3)])
@pytest.mark.parametrize("special", [False, True])
def test_row_loops_have_np_matmuls_bits(m, k, n, special):
    g = _gemm()
    a, b = _x((m, k), 1, special), _x((k, n), 2, special)
    bias = _x(n, 3, special)
    want = np.matmul(a, b)
    got = np.empty((m, n), np.float32)
    g.gemm_rows(a, b, got)
    _same_bits(got, want)
    for bias_first in (False, True):
        for bb in (bias, bias[:1].copy()):  # a bias of each column, and one broadcast
            got3 = np.empty((1, m, n), np.float32)
            g.gemm_bias(a.reshape(1, m, k), b, bb, bias_first, got3)
            ref = np.matmul(a, b)
            ref = np.add(bb, ref, out=ref) if bias_first else np.add(ref, bb, out=ref)
            _same_bits(got3[0], ref)


def test_the_bias_adds_nan_is_its_first_operands_as_numpys():
    """inf * 0 in every product gives the default NaN (sign set); a NaN bias of other payloads added
    first keeps the bias's, added second the product's: the Add's operand order, bit for bit."""
    g = _gemm()
    a = np.zeros((4, 4), np.float32)
    a[:, 0] = np.inf
    b = np.zeros((4, 8), np.float32)
    bias = np.full(8, np.nan, np.float32)
    bias.view(np.uint32)[1::2] = 0x7FC00001
    for bias_first in (False, True):
        want = np.matmul(a, b)
        want = np.add(bias, want, out=want) if bias_first else np.add(want, bias, out=want)
        got = np.empty((4, 8), np.float32)
        g.gemm_bias(a, b, bias, bias_first, got)
        _same_bits(got, want)
        assert (got.view(np.uint32)[:, 1] == 0x7FC00001).all() == bias_first


def test_a_group_has_the_batched_products_and_adds_bits():
    g = _gemm()
    a, w, b = _x((1, 16, 64), 1, True), _x((3, 64, 48), 2), _x((3, 48), 3, True)
    got = np.empty((3, 1, 16, 48), np.float32)
    g.gemm_group(a, w, b, True, got)
    want = np.matmul(a.reshape(16, 64), w)
    np.add(want, b[:, None, :], out=want)
    _same_bits(got.reshape(3, 16, 48), want)
    g.gemm_group(a, w, np.zeros((0, 0), np.float32), False, got)
    _same_bits(got.reshape(3, 16, 48), np.matmul(a.reshape(16, 64), w))


def _views(b, h, s, d, seed):
    """Q (b, h, s, d) and K^T (b, h, d, s) as an exported attention's head splits, V as Q."""
    q = _x((b, s, h, d), seed).transpose(0, 2, 1, 3)
    k = _x((b, s, h, d), seed + 1).transpose(0, 2, 3, 1)
    return q, k


@pytest.mark.parametrize("layout", ["views", "contiguous", "both-transposed", "strided-rows"])
def test_batched_products_of_each_layout_have_np_matmuls_bits(layout):
    g = _gemm()
    q, k = _views(2, 3, 16, 8, 4)
    if layout == "contiguous":
        q, k = np.ascontiguousarray(q), np.ascontiguousarray(k)
    elif layout == "both-transposed":
        q = np.ascontiguousarray(q.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    elif layout == "strided-rows":  # every other row of a wider array: a leading dimension past the width
        q = _x((2, 3, 16, 24), 9)[..., :8]
    assert g.batch_ok(q, k)
    got = np.empty((2, 3, 16, 16), np.float32)
    assert g.batched(q, k, got)
    _same_bits(got, np.matmul(q, k))


def test_what_numpy_would_not_send_to_gemm_is_refused():
    g = _gemm()
    q, k = _views(1, 2, 16, 8, 0)
    assert not g.batch_ok(q[..., :1, :], k)  # a row of one: numpy takes gemv
    assert not g.batch_ok(q, k[..., :1])  # a column of one
    assert not g.batch_ok(q[..., ::2], k[..., ::2, :])  # neither rows nor columns unit-strided: numpy copies
    assert not g.batch_ok(q, k[:, :1])  # a broadcast batch
    assert not g.rows_ok(_x((1, 8)), _x((8, 4)))  # one row: gemv
    assert not g.rows_ok(_x((2, 3, 8)), _x((8, 4)))  # a batch of two: two calls of 3 rows
    assert not g.rows_ok(_x((8, 6)).T, _x((8, 4)))  # not row-major
    # a matrix times its own transpose: numpy takes syrk; the loop says so and writes nothing
    x = _x((1, 2, 16, 8), 5)
    out = np.full((1, 2, 16, 16), 7, np.float32)
    assert g.batch_ok(x, x.transpose(0, 1, 3, 2))
    assert not g.batched(x, x.transpose(0, 1, 3, 2), out)
    assert (out == 7).all()


def test_unavailable_when_the_symbol_is_unknown_or_the_bits_differ(monkeypatch):
    _gemm()
    try:
        monkeypatch.setattr(blas, "_CANDIDATES", ("no_such_sgemm64_",))
        blas.reset()
        assert not blas.available() and blas.loops() is None
        assert "64-bit-integer cblas_sgemm" in blas.status()
        monkeypatch.undo()
        monkeypatch.setattr(blas, "_same_bits", lambda: False)
        blas.reset()
        assert not blas.available() and "differs from np.matmul" in blas.status()
        monkeypatch.undo()
        monkeypatch.setattr(jit, "_ENABLED", False)
        blas.reset()
        assert not blas.available() and "compiled loops off" in blas.status()
    finally:
        monkeypatch.undo()
        blas.reset()
    assert blas.available()


def _tiny_gpt_steps(session):
    prog = session._parts[0].executable.program
    return [s.fn for s in prog.steps]


def test_tiny_gpts_fused_steps_take_the_direct_products_with_the_bits_of_numpys(monkeypatch):
    """Each fused step of tiny-gpt's kept calls reaches numpy's sgemm from a loop, and the logits are
    those of a session whose steps call np.matmul (the loops off for it)."""
    _gemm()
    model = zoo.build("tiny-gpt")
    feeds = {"input_ids": np.random.default_rng(0).integers(0, 256, (1, 16)).astype(np.int64)}
    direct = hal.InferenceSession(model, target="cpu", cache_dir=False)
    got = [direct.run(None, feeds)[0] for _ in range(3)]
    fns = _tiny_gpt_steps(direct)
    assert [f._kept is not None for f in fns if type(f) is ProjectionNorm] == [True] * 4
    assert [f._pair._kept[3] is not None for f in fns if type(f) is ProjectionNorm] == [True] * 4
    assert [f._layout[3] is not None for f in fns if type(f) is MatMulGroup] == [True] * 2
    assert [f._kept_call[5] is not None for f in fns if type(f) is MatMulEpilogue] == [True] * 2
    assert [f._kept[5] is not None for f in fns if type(f) is AttentionCore] == [True] * 2
    monkeypatch.setattr(blas, "_AVAILABLE", False)
    plain = hal.InferenceSession(model, target="cpu", cache_dir=False)
    want = [plain.run(None, feeds)[0] for _ in range(3)]
    fns = _tiny_gpt_steps(plain)
    assert all(f._kept is None and f._pair._kept[3] is None for f in fns if type(f) is ProjectionNorm)
    assert all(f._kept[5] is None for f in fns if type(f) is AttentionCore)
    for g, w in zip(got, want):
        assert np.array_equal(g, w)


def test_a_kept_attention_given_other_strides_takes_numpy():
    """The kept direct call holds the operands' strides: the same shapes laid out otherwise (a
    row-major Q where the head split's view was) go through np.matmul."""
    from tests.test_fused_attention import _feeds, _model

    _gemm()
    from hal.engine import Program, fused_steps
    from hal.graph.load import load

    graph = load(_model(mask="none"))
    prog = Program(graph, fused_steps(graph, graph.nodes))
    core = next(s.fn for s in prog.steps if isinstance(s.fn, AttentionCore))
    seen = []
    real = AttentionCore.__call__
    core.__class__ = type("Spied", (AttentionCore,), {"__call__": lambda self, *a: seen.append(a) or real(self, *a)})
    for _ in range(2):
        prog.run_list(_feeds())
    assert core._kept[5] is not None
    args = seen[-1]

    def refuses(*args):
        raise AssertionError("the direct loop was called")

    kept = core._kept
    core._kept = (*kept[:5], (refuses, refuses, *kept[5][2:]))
    with pytest.raises(AssertionError, match="direct loop"):
        real(core, *args)  # the kept strides: the direct loops
    q = np.ascontiguousarray(args[0])
    got = real(core, q, *args[1:])  # other strides: numpy's products
    core._kept = None
    assert np.array_equal(got, real(core, q, *args[1:]))


def test_a_matmul_bias_given_a_transposed_activation_after_a_kept_call_keeps_the_bits():
    from tests.test_fused_steps import _matmul_bias

    _gemm()
    rng = np.random.default_rng(4)
    w = rng.standard_normal((8, 5)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    fused, plain, _ = _matmul_bias(w, bias, False, False)
    x = rng.standard_normal((6, 8)).astype(np.float32)
    for _ in range(2):
        assert np.array_equal(fused.run_list({"x": x})[0], plain.run_list({"x": x})[0])
    assert fused.steps[0].fn._kept[3] is not None
    xt = np.asfortranarray(x)  # the kept shape, not row-major: np.matmul's own call
    assert np.array_equal(fused.run_list({"x": xt})[0], plain.run_list({"x": xt})[0])


def test_a_loops_machine_code_for_given_types_is_the_dispatchers_choice():
    """``jit.entry``: the compiled entry of the one declared signature the arguments convert to (its
    results the dispatcher's), else the dispatcher itself (no signature takes them)."""
    import numba

    g = _gemm()
    a, b = _x((16, 8), 1), _x((8, 4), 2)
    want, got = np.empty((16, 4), np.float32), np.empty((16, 4), np.float32)
    loop = jit.entry(g.gemm_rows, a, b, got)
    assert not isinstance(loop, numba.core.dispatcher.Dispatcher)
    g.gemm_rows(a, b, want)
    loop(a, b, got)
    _same_bits(got, want)
    loop3 = jit.entry(g.gemm_rows, a[None], b, got[None])  # the 3-axis overload's, another machine code
    assert loop3 is not loop and not isinstance(loop3, numba.core.dispatcher.Dispatcher)
    assert jit.entry(g.gemm_rows, a.astype(np.float64), b, got) is g.gemm_rows  # no float64 signature


def test_tiny_gpts_kept_calls_hold_machine_code_not_dispatchers():
    import numba

    _gemm()
    model = zoo.build("tiny-gpt")
    feeds = {"input_ids": np.random.default_rng(0).integers(0, 256, (1, 16)).astype(np.int64)}
    sess = hal.InferenceSession(model, target="cpu", cache_dir=False)
    for _ in range(2):
        sess.run(None, feeds)
    fns = _tiny_gpt_steps(sess)
    held = [f._kept[8] for f in fns if type(f) is ProjectionNorm]
    held += [f for g in fns if type(g) is MatMulGroup for f in g._layout[3]]
    held += [f for e in fns if type(e) is MatMulEpilogue for f in e._kept_call[5]]
    held += [f for c in fns if type(c) is AttentionCore for f in c._kept[5][:2]]
    assert len(held) == 4 + 4 + 4 + 4
    assert not any(isinstance(f, numba.core.dispatcher.Dispatcher) for f in held)
