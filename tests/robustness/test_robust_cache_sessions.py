"""The compile cache's session entries: a hit skips the frontend (loading, checking, shape inference,
passes, placement); weights are stored once; damaged, foreign or slower-than-building entries are
never used."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnx
import pytest
from _cache_support import CountingPlugin, CountingTarget, X, entries, session_entries
from _robust_models import mlp_model, session

import hal
from hal import plugins
from hal.cache import open_cache, read_entry


@pytest.mark.parametrize("form", ["file", "bytes", "zoo"])
def test_second_session_on_a_file_bytes_or_zoo_name_skips_the_frontend(form, tmp_path, frontend_calls):
    path = tmp_path / "m.onnx"
    onnx.save(mlp_model(), str(path))
    model = {"file": str(path), "bytes": path.read_bytes(), "zoo": "zoo:tiny-gpt"}[form]
    cache = tmp_path / "cache"
    a = hal.InferenceSession(model, "gpu", cache_dir=cache)
    b = hal.InferenceSession(model, "gpu", cache_dir=cache)
    assert len(frontend_calls) == 1 and b.compile_cache.stats.session_hits == 1
    assert len(session_entries(cache)) == 1
    from hal.feeds import random_feeds

    feeds = random_feeds(a.graph, seed=4)
    for x, y in zip(a.run(None, feeds), b.run(None, feeds)):
        np.testing.assert_array_equal(x, y)
    assert [i.describe() for i in b.graph.inputs] == [i.describe() for i in a.graph.inputs]
    assert b.report.latency_s == a.report.latency_s and b.report.kernel_count == a.report.kernel_count
    assert [p.model_dump() for p in b.report.placement] == [p.model_dump() for p in a.report.placement]


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "swap-payload", "not-a-session"])
def test_damaged_session_entry_is_rebuilt_never_loaded(damage, tmp_path, frontend_calls):
    model = mlp_model().SerializeToString()
    hal.InferenceSession(model, "cpu", cache_dir=tmp_path)
    (entry,) = session_entries(tmp_path)
    raw = entry.read_bytes()
    header, payload = read_entry(entry)
    if damage == "flip":
        raw = raw[:-10] + bytes([raw[-10] ^ 0x40]) + raw[-9:]
    elif damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "empty":
        raw = b""
    elif damage == "swap-payload":  # the header's hash belongs to another payload
        raw = raw[: len(raw) - len(payload)] + b"\x80\x05N."
    else:  # whole by its hash, but its payload is not a session (a foreign pickle re-hashed)
        import hashlib
        import pickle

        other = pickle.dumps({"not": "a session"})
        head = {**header, "size": len(other), "sha256": hashlib.sha256(other).hexdigest()}
        raw = b"HALCACHE1\n" + json.dumps(head, sort_keys=True).encode() + b"\n" + other
    entry.write_bytes(raw)
    s = hal.InferenceSession(model, "cpu", cache_dir=tmp_path)
    assert len(frontend_calls) == 2 and s.compile_cache.stats.session_hits == 0
    assert s.compile_cache.stats.rebuilt == 1
    again = hal.InferenceSession(model, "cpu", cache_dir=tmp_path)  # rebuilt whole: the next one hits
    assert len(frontend_calls) == 2 and again.compile_cache.stats.session_hits == 1
    np.testing.assert_array_equal(s.run(None, X)[0], session(mlp_model(), "cpu").run(None, X)[0])


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_bad_or_missing_program_entry_is_rebuilt_and_the_session_built_from_the_model(damage, counting, tmp_path,
                                                                                     frontend_calls):
    t = counting()
    model = mlp_model().SerializeToString()
    hal.InferenceSession(model, "counting", cache_dir=tmp_path)
    (program,) = [p for p in entries(tmp_path) if p not in session_entries(tmp_path)]
    if damage == "delete":
        program.unlink()
    else:
        program.write_bytes(program.read_bytes()[:-5])
    s = hal.InferenceSession(model, "counting", cache_dir=tmp_path)
    st = s.compile_cache.stats
    # the session entry left the weights to that program: the session is built from the model again
    assert st.session_hits == 0 and len(frontend_calls) == 2
    assert (t.compiles, t.loads) == (2, 0) and st.rebuilt == (damage == "truncate") and st.stored == 1
    again = hal.InferenceSession(model, "counting", cache_dir=tmp_path)
    assert (t.compiles, t.loads) == (2, 1) and again.compile_cache.stats.session_hits == 1
    assert len(frontend_calls) == 2
    for sess in (s, again):
        np.testing.assert_array_equal(sess.run(None, X)[0], session(mlp_model(), "cpu").run(None, X)[0])


def test_session_entry_stores_weights_once(tmp_path, frontend_calls):
    """The session entry describes the weights its program entry holds by shape and dtype only."""
    import pickle

    from hal.cache import WeightInProgram

    model = mlp_model().SerializeToString()
    a = hal.InferenceSession(model, "cpu", cache_dir=tmp_path)
    (entry,) = session_entries(tmp_path)
    stored = pickle.loads(read_entry(entry)[1])
    assert stored.graph.initializers and all(isinstance(w, WeightInProgram) for w in stored.graph.initializers.values())
    b = hal.InferenceSession(model, "cpu", cache_dir=tmp_path)
    assert b.compile_cache.stats.session_hits == 1 and len(frontend_calls) == 1
    for k, w in a.graph.initializers.items():
        assert b.graph.initializers[k].shape == w.shape and b.graph.initializers[k].dtype == w.dtype
        assert b.graph.initializers[k].nbytes == w.nbytes
    np.testing.assert_array_equal(a.run(None, X)[0], b.run(None, X)[0])


def test_program_not_worth_loading_keeps_its_weights_in_the_session_entry(counting, tmp_path, frontend_calls):
    """A program entry that is a "not worth it" marker holds no weights: the session entry keeps them,
    and a hit compiles that program from the stored graph without running the frontend."""
    import pickle

    t = counting()
    model = mlp_model().SerializeToString()
    graph_only = hal.InferenceSession(model, "counting")  # the program's key, worked out as a session does
    key = open_cache(tmp_path).key(graph_only.graph, t, graph_only.options)
    path = open_cache(tmp_path).path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = {"format": 1, "key": key, **open_cache(tmp_path).identity(t), "target": "counting", "size": 0,
            "sha256": __import__("hashlib").sha256(b"").hexdigest(), "not_worth_it": True, "compile_s": 0.0}
    path.write_bytes(b"HALCACHE1\n" + json.dumps(head, sort_keys=True).encode() + b"\n")
    hal.InferenceSession(model, "counting", cache_dir=tmp_path)
    (entry,) = session_entries(tmp_path)
    stored = pickle.loads(read_entry(entry)[1])
    assert all(isinstance(w, np.ndarray) for w in stored.graph.initializers.values())
    compiles = t.compiles
    s = hal.InferenceSession(model, "counting", cache_dir=tmp_path)
    assert s.compile_cache.stats.session_hits == 1 and len(frontend_calls) == 2  # graph_only + the first build
    assert t.compiles == compiles + 1 and t.loads == 0 and read_entry(path)[0]["not_worth_it"]
    np.testing.assert_array_equal(s.run(None, X)[0], session(mlp_model(), "cpu").run(None, X)[0])


def test_session_entry_from_another_plugin_version_is_never_used(counting, tmp_path, frontend_calls):
    old = counting("1.0")
    model = mlp_model().SerializeToString()
    hal.InferenceSession(model, "counting", cache_dir=tmp_path)
    (entry,) = session_entries(tmp_path)
    new = counting("2.0")
    s = hal.InferenceSession(model, "counting", cache_dir=tmp_path)
    assert s.compile_cache.stats.session_hits == 0 and len(frontend_calls) == 2
    assert new.compiles == 1 and new.loads == 0 and old.loads == 0
    # the old entry planted under the new session key is refused by its header, not loaded
    fresh = [p for p in session_entries(tmp_path) if p != entry]
    assert len(fresh) == 1
    fresh[0].write_bytes(entry.read_bytes())
    s = hal.InferenceSession(model, "counting", cache_dir=tmp_path)
    assert s.compile_cache.stats.session_hits == 0 and s.compile_cache.stats.rebuilt == 1
    assert len(frontend_calls) == 3 and old.loads == 0


def test_edited_model_file_and_other_options_do_not_hit(tmp_path, frontend_calls):
    path = tmp_path / "m.onnx"
    onnx.save(mlp_model(), str(path))
    cache = tmp_path / "cache"
    hal.InferenceSession(str(path), "cpu", cache_dir=cache)
    hal.InferenceSession(str(path), "cpu", cache_dir=cache, fallback="warn")  # another policy: its own entry
    edited = mlp_model()
    edited.graph.initializer[0].float_data[:] = [0.0] * 32
    edited.graph.initializer[0].ClearField("raw_data")
    onnx.save(edited, str(path))
    s = hal.InferenceSession(str(path), "cpu", cache_dir=cache)
    assert s.compile_cache.stats.session_hits == 0 and len(frontend_calls) == 3
    np.testing.assert_array_equal(s.run(None, X)[0], session(edited, "cpu").run(None, X)[0])


def test_model_with_external_data_gets_no_session_entry(tmp_path, frontend_calls):
    from _robust_models import save_external

    path = save_external(mlp_model(), tmp_path, "w.bin")
    cache = tmp_path / "cache"
    for _ in range(2):
        s = hal.InferenceSession(str(path), "cpu", cache_dir=cache)
    assert not session_entries(cache) and len(frontend_calls) == 2
    assert s.compile_cache.stats.hits == 1  # the program itself still comes from the cache


class RefusingTarget(CountingTarget):
    """The counting target, refusing every Softmax (it falls back to cpu)."""

    def capability(self, graph: Any, options: Any) -> Any:
        from hal.target import kernel_capability

        return kernel_capability(graph, self.spec.name, lambda n, g: "no exp unit" if n.op_type == "Softmax" else None)


def test_fallback_warning_is_given_again_on_a_hit(tmp_path, frontend_calls):
    from hal.session import FallbackWarning

    t = RefusingTarget("refusing", "1.0")
    plugins.register(CountingPlugin(t), "refusing", distribution="hal-refusing")
    try:
        blob = mlp_model().SerializeToString()
        for _ in range(2):
            with pytest.warns(FallbackWarning, match="sm"):
                s = hal.InferenceSession(blob, "refusing", fallback="warn", cache_dir=tmp_path)
    finally:
        plugins.unregister("refusing")
    assert s.compile_cache.stats.session_hits == 1 and len(frontend_calls) == 1
    assert s.get_providers() == ["cpu", "refusing"] and t.compiles == 1
    np.testing.assert_array_equal(s.run(None, X)[0], session(mlp_model(), "cpu").run(None, X)[0])


def test_session_hit_slower_than_its_frontend_leaves_a_marker(tmp_path, monkeypatch, frontend_calls):
    import types

    import hal.cache

    model = mlp_model().SerializeToString()
    hal.InferenceSession(model, "cpu", cache_dir=tmp_path)
    clock = iter(range(0, 10**6, 1000))  # every reading of the cache's clock 1000 s after the last
    monkeypatch.setattr(hal.cache, "time", types.SimpleNamespace(process_time=lambda: float(next(clock))))
    hit = hal.InferenceSession(model, "cpu", cache_dir=tmp_path)  # a hit, but a slow one: in doubt
    assert hit.compile_cache.stats.session_hits == 1 and len(frontend_calls) == 1
    (marker,) = session_entries(tmp_path)
    assert read_entry(marker)[0]["probe"]
    probe = hal.InferenceSession(model, "cpu", cache_dir=tmp_path)  # builds again, timing its frontend afresh
    assert probe.compile_cache.stats.session_hits == 0 and len(frontend_calls) == 2
    assert read_entry(marker)[0]["probed"]
    for slow in range(1, hal.cache.SLOW_HITS + 1):  # slow again, SLOW_HITS times in a row: now a marker
        hit = hal.InferenceSession(model, "cpu", cache_dir=tmp_path)
        assert hit.compile_cache.stats.session_hits == 1 and len(frontend_calls) == 2
        if slow < hal.cache.SLOW_HITS:
            assert read_entry(marker)[0]["slow_hits"] == slow and read_entry(marker)[1]
    header, payload = read_entry(marker)
    assert header["not_worth_it"] and payload == b"" and header["load_s"] > header["frontend_s"]
    later = hal.InferenceSession(model, "cpu", cache_dir=tmp_path)  # the frontend again, nothing stored over it
    assert later.compile_cache.stats.session_hits == 0 and len(frontend_calls) == 3
    st = later.compile_cache.stats  # built as without a cache: its program is compiled, not loaded
    assert st.not_worth_it == 1 and st.hits == st.misses == st.stored == 0
    assert read_entry(marker)[0]["not_worth_it"]
    np.testing.assert_array_equal(later.run(None, X)[0], hit.run(None, X)[0])


def test_a_smaller_memory_bound_is_never_skipped_by_a_session_hit(tmp_path, monkeypatch, frontend_calls):
    model = mlp_model().SerializeToString()
    hal.InferenceSession(model, "cpu", cache_dir=tmp_path)
    monkeypatch.setenv("HAL_MAX_MEMORY", "16")  # smaller than the 2x8 float hidden activation
    with pytest.raises(hal.ResourceError):
        hal.InferenceSession(model, "cpu", cache_dir=tmp_path)
    assert len(frontend_calls) == 2


def test_file_digest_is_remembered_by_stat_and_an_edit_is_hashed_again(tmp_path, monkeypatch, frontend_calls):
    import hal.cache

    path = tmp_path / "m.onnx"
    onnx.save(mlp_model(), str(path))
    old = path.stat().st_mtime - 3600
    os.utime(path, (old, old))
    # settled (changed over 2 s ago, ctime included): its digest may be remembered
    wall = hal.cache._wall_clock() + 10
    monkeypatch.setattr(hal.cache, "_wall_clock", lambda: wall)
    hashed = []
    real = hal.cache.source_digest
    monkeypatch.setattr(hal.cache, "source_digest", lambda m, z=None: (hashed.append(m), real(m, z))[1])
    cache = tmp_path / "cache"
    for _ in range(2):
        s = hal.InferenceSession(str(path), "cpu", cache_dir=cache)
    assert len(hashed) == 1 and s.compile_cache.stats.session_hits == 1
    assert [p for p in entries(cache) if (read_entry(p)[0] or {}).get("kind") == "digest"]
    edited = mlp_model()
    edited.graph.initializer[0].raw_data = np.full(32, 0.5, np.float32).tobytes()  # same size
    raw = edited.SerializeToString()
    assert len(raw) == path.stat().st_size
    __import__("time").sleep(0.05)  # past the file system's timestamp granularity
    path.write_bytes(raw)
    os.utime(path, (old, old))  # same size and mtime: the ctime still tells
    s = hal.InferenceSession(str(path), "cpu", cache_dir=cache)
    assert len(hashed) == 2 and s.compile_cache.stats.session_hits == 0 and len(frontend_calls) == 2
    np.testing.assert_array_equal(s.run(None, X)[0], session(edited, "cpu").run(None, X)[0])
    # a damaged memo is not trusted: the file is hashed again
    for p in entries(cache):
        if (read_entry(p)[0] or {}).get("kind") == "digest":
            p.write_bytes(p.read_bytes()[:-3] + b"xyz")
    s = hal.InferenceSession(str(path), "cpu", cache_dir=cache)
    assert len(hashed) == 3 and s.compile_cache.stats.session_hits == 1


def test_a_hit_close_to_its_build_times_the_frontend_again_once(tmp_path, monkeypatch, frontend_calls):
    """The build's time may include its process's warm-up: a hit taking more than half of it makes the
    next session build again (timing the frontend afresh), and later hits are judged on the faster."""
    import types

    import hal.cache

    model = mlp_model().SerializeToString()
    ticks = {"step": 0.0}
    clock = {"now": 0.0}

    def perf_counter() -> float:
        clock["now"] += ticks["step"]
        return clock["now"]

    for module in (hal.cache, hal.session):
        monkeypatch.setattr(module, "time", types.SimpleNamespace(perf_counter=perf_counter, process_time=perf_counter))
    ticks["step"] = 1.0  # the build: a few readings of a clock advancing 1 s each
    hal.InferenceSession(model, "cpu", cache_dir=tmp_path)
    (entry,) = session_entries(tmp_path)
    built = read_entry(entry)[0]
    saved = built["frontend_s"] + built["compile_s"]
    assert saved > 0 and not built.get("probe")
    ticks["step"] = 0.0  # an instant hit: no doubt, nothing rewritten
    assert hal.InferenceSession(model, "cpu", cache_dir=tmp_path).compile_cache.stats.session_hits == 1
    assert read_entry(entry)[0] == built
    monkeypatch.setattr(hal.cache, "PROBE_FRACTION", -1.0)  # every hit is in doubt
    assert hal.InferenceSession(model, "cpu", cache_dir=tmp_path).compile_cache.stats.session_hits == 1
    assert read_entry(entry)[0]["probe"] and len(frontend_calls) == 1
    s = hal.InferenceSession(model, "cpu", cache_dir=tmp_path)  # the probe: built from the model again
    assert s.compile_cache.stats.session_hits == 0 and len(frontend_calls) == 2
    header = read_entry(entry)[0]
    assert header["probed"] and not header.get("probe") and header["frontend_s"] <= built["frontend_s"]
    hit = hal.InferenceSession(model, "cpu", cache_dir=tmp_path)  # probed once: hits again, no more probes
    assert hit.compile_cache.stats.session_hits == 1 and len(frontend_calls) == 2
    assert not read_entry(entry)[0].get("probe")
    np.testing.assert_array_equal(hit.run(None, X)[0], session(mlp_model(), "cpu").run(None, X)[0])


def test_one_slow_hit_between_fast_ones_leaves_no_marker(tmp_path, monkeypatch, frontend_calls):
    """Only SLOW_HITS slow hits in a row turn a session entry into a marker: a fast hit starts the count again."""
    import types

    import hal.cache

    model = mlp_model().SerializeToString()
    clock = {"now": 0.0, "step": 1.0}

    def perf_counter() -> float:
        clock["now"] += clock["step"]
        return clock["now"]

    for module in (hal.cache, hal.session):
        monkeypatch.setattr(module, "time", types.SimpleNamespace(perf_counter=perf_counter, process_time=perf_counter))
    hal.InferenceSession(model, "cpu", cache_dir=tmp_path)  # built: frontend and compile take seconds
    (entry,) = session_entries(tmp_path)
    hal.InferenceSession(model, "cpu", cache_dir=tmp_path)  # the first hit: probe
    hal.InferenceSession(model, "cpu", cache_dir=tmp_path)  # the probe build
    assert read_entry(entry)[0]["probed"] and len(frontend_calls) == 2
    for step, slow in [(1000.0, 1), (0.0, 0), (1000.0, 1)]:  # slow, fast, slow: never two slow in a row
        clock["step"] = step
        s = hal.InferenceSession(model, "cpu", cache_dir=tmp_path)
        header, payload = read_entry(entry)
        assert s.compile_cache.stats.session_hits == 1 and header["slow_hits"] == slow and payload
    assert len(frontend_calls) == 2 and not read_entry(entry)[0].get("not_worth_it")
    np.testing.assert_array_equal(s.run(None, X)[0], session(mlp_model(), "cpu").run(None, X)[0])
