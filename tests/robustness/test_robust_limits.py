"""Memory bombs and runaway runs, on every installed target: refused before allocating, as a
ResourceError that gives the size and the bound; bounded by ``timeout_s``."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
from _robust_models import (
    BOMB_BOUND,
    TARGETS,
    F,
    bomb_models,
    constant_bomb_model,
    known_issue_params,
    lying_constant_bomb_model,
    model,
    relu_model,
    runaway_loop_model,
    session,
    sparse_constant_bomb_model,
    sparse_initializer_bomb_model,
    stacking_loop_model,
    stacking_scan_model,
    static_bomb_model,
    vi,
)
from onnx import TensorProto, helper

import hal
from hal import limits

BOMBS = bomb_models()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("op", sorted(BOMBS))
def test_value_dependent_bomb_is_refused_before_allocating(target, op):
    m, hostile, harmless = BOMBS[op]
    s = session(m, target, max_memory=BOMB_BOUND)
    s.run(None, harmless)  # the same session runs sane values
    tracemalloc.start()
    try:
        with pytest.raises(hal.ResourceError) as ei:
            s.run(None, hostile)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    msg = str(ei.value)
    assert "bytes" in msg and "max_memory" in msg and "refused before allocating" in msg
    assert peak < 64 << 20, f"{peak} bytes traced while refusing"
    s.run(None, harmless)  # and still does afterwards


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("build", [static_bomb_model, constant_bomb_model, sparse_constant_bomb_model,
                                   sparse_initializer_bomb_model], ids=lambda f: f.__name__)
def test_declared_dimensions_beyond_the_bound_are_refused_at_compile(target, build):
    with pytest.raises(hal.ResourceError) as ei:
        session(build(), target)
    msg = str(ei.value)
    assert "PiB" in msg and "bytes" in msg and "max_memory" in msg


@pytest.mark.parametrize("target", known_issue_params(TARGETS, "lying-shapes"))
def test_declared_shapes_that_lie_do_not_let_folding_allocate(target):
    tracemalloc.start()
    try:
        with pytest.raises(hal.ResourceError, match=r"2,000,000,000 bytes"):
            session(lying_constant_bomb_model(), target, max_memory=100 << 20).run(None, {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


@pytest.mark.parametrize("target", TARGETS)
def test_max_memory_option_sets_the_bound_both_ways(target):
    m, _, _ = BOMBS["ConstantOfShape"]
    feeds = {"s": np.array([256, 256, 16], np.int64)}  # 4 MiB of float32
    with pytest.raises(hal.ResourceError, match=r"4,194,304 bytes.*max_memory 1 MiB"):
        session(m, target, max_memory=1 << 20).run(None, feeds)
    (y,) = session(m, target, max_memory=8 << 20).run(None, feeds)
    assert y.shape == (256, 256, 16)


@pytest.mark.parametrize("target", TARGETS)
def test_compile_time_bound_follows_max_memory(target):
    from _robust_models import F, model, vi
    from onnx import helper

    m = model([helper.make_node("Relu", ["x"], ["y"], name="r")], [vi("x", F, [1024, 1024])],
              [vi("y", F, [1024, 1024])])
    with pytest.raises(hal.ResourceError, match=r"tensor 'x' float32\[1024, 1024\] would need 4 MiB"):
        session(m, target, max_memory=1 << 20)
    session(m, target, max_memory=4 << 20)


def test_hal_max_memory_environment_variable_sets_the_default(monkeypatch):
    monkeypatch.setenv("HAL_MAX_MEMORY", "1MiB")
    assert limits.default_max_memory() == 1 << 20
    assert limits.current().max_memory == 1 << 20  # outside a session: the default bounds, kept per value
    monkeypatch.setenv("HAL_MAX_MEMORY", "2MiB")
    assert limits.current().max_memory == 2 << 20 and limits.current() is limits.current()
    monkeypatch.setenv("HAL_MAX_MEMORY", "1MiB")
    m, _, _ = BOMBS["ConstantOfShape"]
    with pytest.raises(hal.ResourceError, match="max_memory 1 MiB"):
        session(m, "cpu").run(None, {"s": np.array([1024, 1024, 1], np.int64)})
    monkeypatch.setenv("HAL_MAX_MEMORY", "not a size")  # ignored, never fatal
    assert limits.default_max_memory() > 1 << 20


def test_default_bound_is_a_safe_fraction_of_memory(monkeypatch):
    monkeypatch.delenv("HAL_MAX_MEMORY", raising=False)
    mem = limits.usable_memory()
    if mem is None:
        assert limits.default_max_memory() == limits.FALLBACK_MAX_MEMORY
    else:
        assert limits.default_max_memory() == int(mem * limits.DEFAULT_FRACTION)


@pytest.mark.parametrize(("v2", "v1", "expected"), [
    (b"4294967296\n", None, 4294967296),            # cgroup v2 limit
    (b"max\n", b"2147483648\n", 2147483648),        # v2 unlimited, v1 set
    (b"max\n", b"9223372036854771712\n", None),     # v1's "no limit" is a huge number
    (None, None, None),                              # no cgroup files at all
])
def test_a_containers_memory_limit_is_read_from_its_cgroup(monkeypatch, tmp_path, v2, v1, expected):
    import builtins

    files = {"/sys/fs/cgroup/memory.max": v2, "/sys/fs/cgroup/memory/memory.limit_in_bytes": v1}

    def fake_open(path, *args, **kwargs):
        if path in files:
            if files[path] is None:
                raise FileNotFoundError(path)
            (tmp_path / "f").write_bytes(files[path])
            return builtins.open(tmp_path / "f", *args, **kwargs)
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(limits, "open", fake_open, raising=False)
    assert limits._cgroup_limit() == expected


def test_invalid_max_memory_is_a_compile_error():
    with pytest.raises(hal.CompileError, match="max_memory"):
        hal.InferenceSession(relu_model(), max_memory=0)


@pytest.mark.parametrize("text,expected", [("512MiB", 512 << 20), ("4GB", 4 * 10**9), ("1000", 1000),
                                           ("1.5GiB", 3 << 29), (77, 77)])
def test_parse_bytes(text, expected):
    assert limits.parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-5", "0", "12 parsecs"])
def test_parse_bytes_refuses_what_is_not_a_size(text):
    with pytest.raises(ValueError):
        limits.parse_bytes(text)


def test_size_arithmetic_never_wraps_around():
    # int64 products of these dims wrap to 0; Python integers do not.
    with pytest.raises(hal.ResourceError):
        limits.check_alloc("t", [2**32, 2**32, 16], np.float32, where="test", max_memory=1 << 30)


@pytest.mark.parametrize("target", TARGETS)
def test_runaway_loop_stops_at_timeout(target):
    s = session(runaway_loop_model(), target, timeout_s=0.5)
    t0 = time.monotonic()
    with pytest.raises(hal.ResourceError, match=r"timeout_s=0\.5"):
        s.run(None, {"x": np.ones(1, np.float32)})
    assert time.monotonic() - t0 < 5
    # the deadline is per run: a fresh run gets its own 0.5 s, and the session is still usable
    with pytest.raises(hal.ResourceError):
        s.run(None, {"x": np.ones(1, np.float32)})



@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("build", "node", "output", "hostile", "harmless"), [
    (stacking_loop_model, "loop", "y_scan", np.ones(256, np.float32), None),
    (stacking_scan_model, "scan", "y_row", np.zeros((2**20, 0), np.float32), np.zeros((20, 0), np.float32)),
])
def test_scan_outputs_stop_at_max_memory_without_a_timeout(target, build, node, output, hostile, harmless):
    # a stack that grows a KiB a turn is refused once it passes max_memory, not when memory runs out
    s = session(build(), target, max_memory=1 << 20)
    t0 = time.monotonic()
    with pytest.raises(hal.ResourceError, match=rf"node '{node}': scan output '{output}' reached .* after 1,025 "
                                                r"iterations, more than max_memory 1 MiB \(1,048,576 bytes\)"):
        s.run(None, {"x": hostile})
    assert time.monotonic() - t0 < 5
    if harmless is not None:  # the same session still runs a short scan
        ys = s.run(None, {"x": harmless})[0]
        assert ys.shape == (20, 256) and np.all(ys == 1)


def test_runs_without_timeout_have_no_deadline():
    s = session(relu_model(), "cpu")
    s.run(None, {"x": np.ones((2, 3), np.float32)})
    assert limits.current().deadline is None


def test_bounds_are_per_thread_and_restored():
    import threading

    seen = {}
    with limits.bounds(max_memory=123, timeout_s=10):
        t = threading.Thread(target=lambda: seen.update(b=limits.current()))
        t.start()
        t.join()
        assert limits.current().max_memory == 123
    assert seen["b"].max_memory != 123 and seen["b"].deadline is None
    assert limits.current().max_memory != 123


def _greedy_nms(boxes: np.ndarray, scores: np.ndarray, limit: int, iou: float) -> list[tuple[int, int, int]]:
    """NonMaxSuppression as ONNX describes it, a pair at a time in plain Python (corner boxes)."""
    def area(b):
        return (max(b[0], b[2]) - min(b[0], b[2])) * (max(b[1], b[3]) - min(b[1], b[3]))

    def overlap(a, b):
        ih = min(max(a[0], a[2]), max(b[0], b[2])) - max(min(a[0], a[2]), min(b[0], b[2]))
        iw = min(max(a[1], a[3]), max(b[1], b[3])) - max(min(a[1], a[3]), min(b[1], b[3]))
        inter = ih * iw if ih > 0 and iw > 0 else 0.0
        union = area(a) + area(b) - inter
        return inter > 0 and union > 0 and inter / union > iou

    out = []
    for b in range(boxes.shape[0]):
        for c in range(scores.shape[1]):
            kept: list[int] = []
            for i in sorted(range(boxes.shape[1]), key=lambda j: (-float(scores[b, c, j]), j)):
                if len(kept) < limit and not any(overlap(boxes[b, k].tolist(), boxes[b, i].tolist()) for k in kept):
                    kept.append(i)
            out += [(b, c, i) for i in kept]
    return out


def test_non_max_suppression_works_out_overlaps_per_kept_box():
    # was: the (boxes x boxes) IoU matrix in float64, 32 GiB for 65,536 boxes whatever max_memory said
    from hal.kernels.image import non_max_suppression

    rng = np.random.default_rng(3)
    boxes = rng.uniform(0, 10, (2, 150, 4)).astype(np.float32)
    scores = rng.uniform(0, 1, (2, 3, 150)).astype(np.float32)
    got = non_max_suppression(boxes, scores, np.array([40]), np.array([0.3], np.float32))
    assert [tuple(r) for r in got.tolist()] == _greedy_nms(boxes, scores, 40, 0.3)
    many = rng.uniform(0, 1000, (1, 1 << 16, 4)).astype(np.float32)
    tracemalloc.start()
    try:
        got = non_max_suppression(many, rng.uniform(0, 1, (1, 1, 1 << 16)).astype(np.float32), np.array([50]),
                                  np.array([0.5], np.float32))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.shape == (50, 3) and peak < 64 << 20, f"{peak} bytes traced"


@pytest.mark.parametrize("target", TARGETS)
def test_a_feed_spanning_more_than_max_memory_is_refused(target):
    # a broadcast view of one float spans 4 TiB: every kernel reading it writes a result that large,
    # where the guards take an input's size to be in memory already (was: a MemoryError in Relu)
    relu = model([helper.make_node("Relu", ["x"], ["y"], name="r")], [vi("x", F, ["a", "b"])], [vi("y", F, ["a", "b"])])
    s = session(relu, target, max_memory=BOMB_BOUND)
    with pytest.raises(hal.ResourceError, match="feed 'x' float32\\[1048576, 1048576\\] spans 4 TiB"):
        s.run(None, {"x": np.broadcast_to(np.ones(1, np.float32), (2**20, 2**20))})
    assert s.run(None, {"x": -np.ones((2, 3), np.float32)})[0].tolist() == [[0.0] * 3] * 2


def test_string_split_counts_its_tokens_against_max_memory():
    # a broadcast view of one 10,000-token string splits it once per element: 655 million tokens;
    # the kernel stops once the tokens it made pass the bound (was: until memory ran out)
    node = helper.make_node("StringSplit", ["x"], ["y", "n"], name="split")
    m = model([node], [vi("x", TensorProto.STRING, ["k"])],
              [vi("y", TensorProto.STRING, ["k", "w"]), vi("n", TensorProto.INT64, ["k"])], opset=20)
    s = session(m, "cpu", max_memory=16 << 20)
    long = np.array([" ".join(["a"] * 10_000)], dtype=object)
    tracemalloc.start()
    try:
        with pytest.raises(hal.ResourceError, match="StringSplit made .* tokens so far"):
            s.run(None, {"x": np.broadcast_to(long, (1 << 16,))})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"{peak} bytes traced"
    y, n = s.run(None, {"x": np.array(["a b", "c"], dtype=object)})
    assert y.tolist() == [["a", "b"], ["c", ""]] and n.tolist() == [2, 1]
