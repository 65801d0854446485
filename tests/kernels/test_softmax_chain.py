"""A Softmax region's score chain (scale, additive mask, Where mask) run in the softmax's first
compiled pass (``Region._softmax_chain``, ``_loops.softmax_prologue``): bit for bit the region's
member-by-member path, on random chains, masks of every broadcast form, NaN and infinities; the
inputs that keep that path; and the attention exports' own regions."""

from __future__ import annotations

import numpy as np
import pytest

from hal.engine import Program, fused_steps
from hal.graph.load import load
from hal.graph.passes import optimize
from hal.kernels import jit, lookup
from hal.kernels.fused import Region
from hal.kernels.fused_attention import AttentionCore
from hal.kernels.score_chain import CHAIN_CODES
from tests.kernels.test_jit_loops import _counting

pytestmark = pytest.mark.skipif(not jit.enabled(), reason="numba is not importable here (HAL_JIT=0 or missing)")
if jit.enabled():
    from hal.kernels import _loops as loops


def _region(ops: list[str], refs: list[tuple[int, ...]], axis: int = -1) -> Region:
    keys = [(d.domain, op, d.since) for op in ops if (d := lookup(op, "", 17))]
    sm = lookup("Softmax", "", 17)
    return Region(keys, refs, [{}] * len(ops), ops, [f"m{i}" for i in range(len(ops))],
                  softmax=(sm.domain, "Softmax", sm.since), softmax_attrs={"axis": axis})


def _member_by_member(region: Region, xs: list[np.ndarray]) -> np.ndarray:
    return region._softmax(region._whole(xs))


MASK_SHAPES = [(2, 1, 1, 24), (1, 1, 5, 24), (5, 24), (24,), (2, 3, 5, 24)]


def _random_chain(seed: int) -> tuple[Region, list[np.ndarray]]:
    """Scores (2, 3, 5, 24) through 1-4 members: scalar Add/Sub/Mul/Div either side of the running
    value, at most one additive or multiplicative mask or one Where by a condition."""
    rng = np.random.default_rng(700 + seed)
    scores = (rng.standard_normal((2, 3, 5, 24)) * 4).astype(np.float32)
    scores[0, 0, 0, 3] = np.nan
    scores[0, 1, 2] = np.inf if seed % 2 else -np.inf
    xs, ops, refs = [scores], [], []
    array_used = False
    for j in range(int(rng.integers(1, 5))):
        chain = 0 if j == 0 else ~(j - 1)
        kind = rng.choice(["scalar", "mask", "where"]) if not array_used else "scalar"
        if kind == "where":
            cond = rng.random(MASK_SHAPES[int(rng.integers(0, len(MASK_SHAPES)))]) < 0.7
            xs += [cond, np.array([rng.choice([-np.inf, -1e4, 0.5])], np.float32)]
            c, v = len(xs) - 2, len(xs) - 1
            ops.append("Where")
            refs.append((c, chain, v) if rng.random() < 0.5 else (c, v, chain))
            array_used = True
            continue
        if kind == "mask":
            xs.append(rng.standard_normal(MASK_SHAPES[int(rng.integers(0, len(MASK_SHAPES)))]).astype(np.float32))
            array_used = True
        else:
            xs.append(np.array(rng.choice([0.125, 3.0, -2.0]), np.float32).reshape(() if rng.random() < 0.5 else (1,)))
        ops.append(str(rng.choice(["Add", "Sub", "Mul", "Div"])))
        refs.append((chain, len(xs) - 1) if rng.random() < 0.6 else (len(xs) - 1, chain))
    return _region(ops, refs), xs


@pytest.mark.parametrize("seed", range(40))
def test_random_chains_are_the_member_by_member_bits(monkeypatch, seed) -> None:
    region, xs = _random_chain(seed)
    calls = _counting(monkeypatch, loops, "softmax_prologue")
    with np.errstate(all="ignore"):  # (as the engine runs every kernel)
        got = region(*xs)
        want = _member_by_member(region, xs)
    assert len(calls) == 1, region.ops
    assert got.shape == want.shape and got.dtype == want.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_read_only_side_inputs_keep_their_loop_arguments_and_a_writable_one_is_read_each_call() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 5, 24)).astype(np.float32)
    scale, mask = np.array(8.0, np.float32), rng.standard_normal((2, 1, 1, 24)).astype(np.float32)
    region = _region(["Div", "Add"], [(0, 1), (~0, 2)])
    for v in (scale, mask):
        v.flags.writeable = False  # weights, as a program protects them
    with np.errstate(all="ignore"):
        first = region(x, scale, mask)
        assert region._chain._fixed is not None  # kept, and used by the next call with the same inputs
        np.testing.assert_array_equal(region(x, scale, mask), first)
        other = np.array(2.0, np.float32)
        other.flags.writeable = False
        np.testing.assert_array_equal(region(x, other, mask), _member_by_member(region, [x, other, mask]))
        fed = np.array(8.0, np.float32)  # a caller's writable feed, changed in place between calls
        np.testing.assert_array_equal(region(x, fed, mask), first)
        fed[...] = 0.5
        np.testing.assert_array_equal(region(x, fed, mask), _member_by_member(region, [x, fed, mask]))


@pytest.mark.parametrize("case", ["two arrays", "float64 scalar", "row-wide mask", "strided scores", "axis 2",
                                  "int scores", "mask of another rank"])
def test_inputs_outside_the_loop_take_the_member_by_member_path(monkeypatch, case) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 5, 24)).astype(np.float32)
    mask = rng.standard_normal((2, 1, 1, 24)).astype(np.float32)
    region, xs = _region(["Div", "Add"], [(0, 1), (~0, 2)]), [x, np.array(8.0, np.float32), mask]
    if case == "two arrays":
        region, xs = _region(["Div", "Add", "Add"], [(0, 1), (~0, 2), (~1, 3)]), [*xs, mask * 2]
    elif case == "float64 scalar":
        xs[1] = np.array(8.0)  # numpy promotes the scores to float64: the loop's float32 would not
    elif case == "row-wide mask":
        xs[2] = mask[..., :1]
    elif case == "strided scores":
        xs[0] = np.swapaxes(x, 1, 2)
    elif case == "axis 2":
        region = _region(["Div", "Add"], [(0, 1), (~0, 2)], axis=2)
        xs[2] = mask.reshape(2, 1, 24, 1)
    elif case == "int scores":
        xs[0] = (x * 10).astype(np.int32)
        xs[1] = np.array(8, np.int32)
    elif case == "mask of another rank":
        xs[2] = mask.reshape(1, 2, 1, 1, 24)
    calls = _counting(monkeypatch, loops, "softmax_prologue")
    try:
        want = _member_by_member(region, xs)
    except Exception as e:  # the kernels' own error, raised the same way through the region
        with pytest.raises(type(e)):
            region(*xs)
    else:
        got = region(*xs)
        np.testing.assert_array_equal(got, want)
    assert not calls


@pytest.mark.parametrize("name", ["zoo:tiny-gpt", "bert_tiny.onnx", "gpt_tiny.onnx"])
def test_the_attention_exports_run_their_softmax_regions_in_the_loop(monkeypatch, name) -> None:
    # the GPTs: Div + Where(causal mask, scores, -inf) + Softmax; BERT: Div + Add(padding mask)
    from tests.test_fused_steps import _feeds, _transformer

    model = _transformer(name)
    graph = optimize(load(model))
    steps = fused_steps(graph, graph.nodes)
    # (each inside the attention core step that multiplies its scores and its probabilities)
    cores = [s for s in steps if isinstance(s.fn, AttentionCore)]
    regions = [s.fn.region for s in cores]
    assert regions and all(r._chain is not None for r in regions)
    assert not any(s.op_type.endswith("Softmax") for s in steps)
    assert {"+".join(r.ops) for r in regions} == {"Div+Add" if "bert" in name else "Div+Where"}
    calls = _counting(monkeypatch, loops, "softmax_prologue")
    feeds = _feeds(model)
    got = Program(graph, steps).run_list(feeds)
    assert len(calls) == len(regions)
    monkeypatch.setattr(Region, "_softmax_chain", lambda self, xs: None)
    want = Program(graph, fused_steps(graph, graph.nodes)).run_list(feeds)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_the_chain_codes_are_the_loops_own() -> None:
    names = {"add": "ADD", "sub": "SUB", "rsub": "RSUB", "mul": "MUL", "div": "DIV", "rdiv": "RDIV"}
    for (what, masked), code in CHAIN_CODES.items():
        name = {"keep": "KEEP", "pick": "PICK"}.get(what) or ("M" if masked else "") + names[what]
        if masked and what in ("rsub", "rdiv"):
            name = "RM" + names[what][1:]
        assert getattr(loops, name) == code, (what, masked)
    assert len(loops.softmax_prologue.signatures) == 1


def test_concurrent_chains_with_changing_shapes_share_no_state() -> None:
    # one region run from four threads, each with its own scores and mask shape: the layout memo is
    # one tuple, replaced whole, so a call never reads another's codes or row map
    from tests.conftest import in_threads

    region = _region(["Div", "Add"], [(0, 1), (~0, 2)])
    rng = np.random.default_rng(11)
    cases = [[rng.standard_normal((2, 3, 5, 24)).astype(np.float32), np.array(4.0, np.float32),
              rng.standard_normal(shape).astype(np.float32)] for shape in MASK_SHAPES[:4]]
    want = [_member_by_member(region, xs) for xs in cases]
    got = in_threads(lambda i: [region(*cases[i]) for _ in range(50)][-1], 4)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
