"""Concurrency and determinism on every installed target: one session used from 8 threads at once
gives outputs bit-identical to serial runs; separate sessions share no mutable state; the same model
and inputs give bit-identical outputs across runs and across processes (the LPU also the same cycles)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from _robust_models import I64, TARGETS, F, model, session, vi
from onnx import helper, numpy_helper

from hal.feeds import random_feeds

THREADS = 8
ROOT = Path(__file__).resolve().parents[2]


def _digest(outputs: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for o in outputs:
        a = np.ascontiguousarray(o)
        h.update(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def gpt_feeds():
    s = session("zoo:tiny-gpt", "cpu")
    return [random_feeds(s.graph, seed=i) for i in range(THREADS)]


@pytest.mark.parametrize("target", TARGETS)
def test_one_session_from_eight_threads_matches_serial_runs_bit_for_bit(target, gpt_feeds):
    s = session("zoo:tiny-gpt", target)
    serial = [_digest(s.run(None, f)) for f in gpt_feeds]
    assert len(set(serial)) == THREADS  # different inputs, different outputs: the check has teeth
    start = threading.Barrier(THREADS)

    def work(i: int) -> list[tuple[int, str]]:
        start.wait()
        got = []
        for r in range(3):  # each thread walks the feeds in its own order, so runs interleave differently
            k = (i + r * 3) % THREADS
            got.append((k, _digest(s.run(None, gpt_feeds[k]))))
        return got

    with ThreadPoolExecutor(THREADS) as pool:
        results = [x for chunk in pool.map(work, range(THREADS)) for x in chunk]
    assert all(d == serial[k] for k, d in results)


@pytest.mark.parametrize("target", TARGETS)
def test_separate_sessions_share_no_mutable_state(target, gpt_feeds):
    a, b = session("zoo:tiny-gpt", target), session("zoo:tiny-gpt", target)
    assert a.graph is not b.graph
    assert all(pa.executable is not pb.executable for pa, pb in zip(a._parts, b._parts))
    shared = {id(w) for w in a.graph.initializers.values()} & {id(w) for w in b.graph.initializers.values()}
    assert not shared
    want = _digest(a.run(None, gpt_feeds[0]))
    # b runs hard on other inputs in threads while a runs: a's answer does not move
    with ThreadPoolExecutor(4) as pool:
        busy = [pool.submit(b.run, None, gpt_feeds[1 + i % 3]) for i in range(8)]
        mine = [_digest(a.run(None, gpt_feeds[0])) for _ in range(4)]
        for f in busy:
            f.result()
    assert set(mine) == {want}


def _folded_weight_model():
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    nodes = [helper.make_node("Neg", ["w"], ["w2"], name="neg"),  # folded into a weight at load
             helper.make_node("Reshape", ["w2", "s"], ["y"], name="view")]  # y is a view of that weight

    return model(nodes, [vi("s", I64, [1])], [vi("y", F, [6])], [w])


def _hoisted_weight_model():
    w = numpy_helper.from_array(np.array([[1, 0], [0, 3]], np.float32), "w")
    nodes = [helper.make_node("NonZero", ["w"], ["nz"], name="nz"),  # data-dependent shape: kept from run 1
             helper.make_node("Identity", ["nz"], ["y"], name="id"),  # y is that kept array itself
             helper.make_node("Identity", ["x"], ["z"], name="id2")]
    return model(nodes, [vi("x", F, [1])], [vi("y", I64, [2, "n"]), vi("z", F, [1])], [w])


@pytest.mark.parametrize("target", TARGETS)
def test_mutating_an_output_cannot_change_the_next_run(target):
    s = session(_folded_weight_model(), target)
    feeds = {"s": np.array([6], np.int64)}
    (y,) = s.run(None, feeds)
    y[:] = 100.0  # outputs are the caller's to change
    (again,) = s.run(None, feeds)
    np.testing.assert_array_equal(again, -np.arange(6, dtype=np.float32))
    s = session(_hoisted_weight_model(), target)
    y, _ = s.run(None, {"x": np.ones(1, np.float32)})
    y[:] = 77
    again, _ = s.run(None, {"x": np.ones(1, np.float32)})
    np.testing.assert_array_equal(again, [[0, 1], [0, 1]])


@pytest.mark.parametrize("target", TARGETS)
def test_same_model_and_inputs_give_identical_outputs_across_runs(target, gpt_feeds):
    s = session("zoo:tiny-gpt", target)
    first = _digest(s.run(None, gpt_feeds[2]))
    assert all(_digest(s.run(None, gpt_feeds[2])) == first for _ in range(3))
    fresh = session("zoo:tiny-gpt", target)
    assert _digest(fresh.run(None, gpt_feeds[2])) == first


_CHILD = """
import hashlib, json, sys, warnings
import numpy as np
import hal
from hal.feeds import random_feeds
warnings.simplefilter("ignore")
out = {}
for t in sys.argv[1].split(","):
    s = hal.InferenceSession("zoo:tiny-gpt", target=t, fallback="allow")
    h = hashlib.sha256()
    for o in s.run(None, random_feeds(s.graph, seed=5)):
        a = np.ascontiguousarray(o)
        h.update(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    out[t] = {"digest": h.hexdigest(), "cycles": s.report.details.get("cycles"),
              "latency_s": s.report.latency_s, "kernels": s.report.kernel_count}
print(json.dumps(out))
"""


def test_outputs_and_reports_are_identical_across_processes(gpt_feeds):
    runs = []
    for hashseed in ("1", "2"):  # a different string-hash seed per process: no dict/set order may leak in
        res = subprocess.run([sys.executable, "-c", _CHILD, ",".join(TARGETS)], capture_output=True, text=True,
                             timeout=300, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": hashseed})
        assert res.returncode == 0, res.stderr[-2000:]
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    assert runs[0] == runs[1]
    feeds = random_feeds(session("zoo:tiny-gpt", "cpu").graph, seed=5)
    for t in TARGETS:  # and identical to this process's run
        s = session("zoo:tiny-gpt", t)
        assert _digest(s.run(None, feeds)) == runs[0][t]["digest"], t
    if "lpu" in TARGETS:
        assert isinstance(runs[0]["lpu"]["cycles"], int) and runs[0]["lpu"]["cycles"] > 0
