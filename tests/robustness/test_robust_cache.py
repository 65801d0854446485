"""The compile cache and hal's output files: a second session skips compiling; entries and outputs are
written atomically; a corrupted, truncated or foreign entry is rebuilt, never loaded."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from _robust_models import TARGETS, mlp_model, session

import hal
from hal import plugins
from hal.cache import CacheWarning, entry_is_valid, open_cache, read_entry
from hal.specs import TargetSpec
from tests.conftest import in_threads

X = {"x": np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)}


class CountingTarget:
    """The cpu target under another name, counting compiles and loads (version set per test)."""

    def __init__(self, name: str, version: str):
        self.spec = TargetSpec(name=name, vendor="Counting", kind="other", version=version)
        self.compiles = self.loads = 0

    def capability(self, graph: Any, options: Any) -> Any:
        return plugins.get_target("cpu").capability(graph, options).model_copy(update={"target": self.spec.name})

    def compile(self, graph: Any, options: Any) -> Any:
        self.compiles += 1
        return plugins.get_target("cpu").compile(graph, options)

    def load(self, blob: bytes) -> Any:
        self.loads += 1
        return plugins.get_target("cpu").load(blob)


class CountingPlugin:
    HAL_API_VERSION = "1.0"

    def __init__(self, target: CountingTarget):
        self.target = target

    @hal.hookimpl
    def hal_targets(self) -> list[Any]:
        return [self.target]


@pytest.fixture
def counting():
    made = []

    def make(version: str = "1.0") -> CountingTarget:
        t = CountingTarget("counting", version)
        plugins.register(CountingPlugin(t), "counting", distribution="hal-counting")
        made.append(t)
        return t

    yield make
    plugins.unregister("counting")


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.halc"))


def test_second_session_skips_compilation(counting, tmp_path):
    t = counting()
    a = hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path)
    b = hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path)
    assert (t.compiles, t.loads) == (1, 1)
    assert a.report.details["compile_cache"] == {"hits": 0, "misses": 1}
    assert b.report.details["compile_cache"] == {"hits": 1, "misses": 0}
    np.testing.assert_array_equal(a.run(None, X)[0], b.run(None, X)[0])
    assert len(_entries(tmp_path)) == 1


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_reloads_its_program_from_the_cache(target, tmp_path):
    a = session("zoo:tiny-gpt", target, cache_dir=tmp_path)
    b = session("zoo:tiny-gpt", target, cache_dir=tmp_path)
    parts = len(b._parts)
    assert b.report.details["compile_cache"] == {"hits": parts, "misses": 0}
    from hal.feeds import random_feeds

    feeds = random_feeds(a.graph, seed=3)
    for x, y in zip(a.run(None, feeds), b.run(None, feeds)):
        np.testing.assert_array_equal(x, y)
    assert b.report.latency_s == a.report.latency_s and b.report.kernel_count == a.report.kernel_count
    assert b.report.details.get("cycles") == a.report.details.get("cycles")


def test_hal_cache_dir_environment_variable_and_opting_out(counting, tmp_path, monkeypatch):
    t = counting()
    monkeypatch.setenv("HAL_CACHE_DIR", str(tmp_path))
    hal.InferenceSession(mlp_model(), "counting")
    hal.InferenceSession(mlp_model(), "counting")
    assert t.compiles == 1 and _entries(tmp_path)
    hal.InferenceSession(mlp_model(), "counting", cache_dir=False)
    assert t.compiles == 2


def test_hal_compile_uses_the_cache(counting, tmp_path):
    t = counting()
    e1 = hal.compile(mlp_model(), "counting", cache_dir=tmp_path)
    e2 = hal.compile(mlp_model(), "counting", cache_dir=tmp_path)
    assert (t.compiles, t.loads) == (1, 1)
    np.testing.assert_array_equal(e1.run(X)["y"], e2.run(X)["y"])


def test_options_model_and_spec_are_in_the_key(counting, tmp_path):
    t = counting()
    hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path)
    hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path, max_memory=1 << 30)  # other options
    other = mlp_model()
    other.graph.initializer[0].raw_data = np.full((4, 8), 3, np.float32).tobytes()  # other weights
    hal.InferenceSession(other, "counting", cache_dir=tmp_path)
    assert t.compiles == 3 and len(_entries(tmp_path)) == 3
    hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path, timeout_s=30)  # timeout_s is not
    assert t.compiles == 3


def test_entry_from_another_plugin_version_is_never_used(counting, tmp_path):
    old = counting("1.0")
    hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path)
    (entry,) = _entries(tmp_path)
    new = counting("2.0")
    s = hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path)
    assert new.compiles == 1 and new.loads == 0 and s.report.details["compile_cache"]["hits"] == 0
    # an old entry planted under the new key (copied, renamed) is refused by its header, not loaded
    fresh = [p for p in _entries(tmp_path) if p != entry]
    assert len(fresh) == 1
    fresh[0].write_bytes(entry.read_bytes())
    hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path)
    assert new.compiles == 2 and new.loads == 0 and old.loads == 0


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage-header", "swap-payload"])
def test_damaged_entry_is_detected_rebuilt_and_never_loaded(counting, tmp_path, damage):
    t = counting()
    hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path)
    (entry,) = _entries(tmp_path)
    raw = bytearray(entry.read_bytes())
    if damage == "flip":
        raw[-10] ^= 0x40
    elif damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "empty":
        raw = bytearray()
    elif damage == "garbage-header":
        raw[12:20] = b"}}}}{{{{"
    else:  # a valid-looking header whose hash belongs to another payload
        _, _, payload = bytes(raw).partition(b"\n")[2].partition(b"\n")
        raw = bytearray(bytes(raw)[: len(bytes(raw)) - len(payload)] + b"\x80\x05N.")
    entry.write_bytes(bytes(raw))
    s = hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path)
    assert t.loads == 0 and t.compiles == 2
    assert s.compile_cache.stats.rebuilt == 1
    np.testing.assert_array_equal(s.run(None, X)[0], session(mlp_model(), "cpu").run(None, X)[0])
    # the rebuilt entry is whole again: the next session loads it
    hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path)
    assert t.loads == 1 and t.compiles == 2


def test_a_write_that_fails_halfway_leaves_no_entry_and_no_temp_file(counting, tmp_path, monkeypatch):
    t = counting()

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.warns(CacheWarning, match="No space left"):
        s = hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path)
    assert s.run(None, X)[0].shape == (2, 3)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    monkeypatch.undo()
    hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path)
    assert t.compiles == 2 and len(_entries(tmp_path)) == 1


def test_sessions_racing_on_one_cache_all_get_a_whole_entry(counting, tmp_path):
    counting()
    outs = in_threads(lambda _: hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path).run(None, X)[0], 6)
    assert all(np.array_equal(o, outs[0]) for o in outs)
    assert len(_entries(tmp_path)) == 1 and not list(tmp_path.rglob("*.tmp"))
    (entry,) = _entries(tmp_path)
    header, payload = read_entry(entry)
    assert header is not None and entry_is_valid(header, payload, entry.stem, header)


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_cache_folder_others_can_write_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.warns(CacheWarning, match="writable by other users"):
        assert open_cache(shared) is None
    with pytest.warns(CacheWarning, match="writable by other users"):
        s = hal.InferenceSession(mlp_model(), "cpu", cache_dir=shared)
    assert s.compile_cache is None and s.run(None, X)[0].shape == (2, 3)


def test_new_cache_folder_is_private(tmp_path):
    c = open_cache(tmp_path / "new" / "cache")
    assert c is not None
    if hasattr(os, "getuid"):
        assert (tmp_path / "new" / "cache").stat().st_mode & 0o077 == 0


def test_entry_that_loads_slower_than_it_compiles_is_replaced_by_a_marker(counting, tmp_path, monkeypatch):
    import time
    import types

    import hal.cache

    t = counting()
    hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path)
    real_load = CountingTarget.load
    spent = {"cpu": time.process_time()}  # the cache's clock: CPU time, here 0.3 s more per load
    monkeypatch.setattr(hal.cache, "time", types.SimpleNamespace(process_time=lambda: spent["cpu"]))

    def slow_load(self: Any, blob: bytes) -> Any:
        spent["cpu"] += 0.3
        return real_load(self, blob)

    monkeypatch.setattr(CountingTarget, "load", slow_load)
    hit = hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path)  # a hit, but a slow one
    assert hit.report.details["compile_cache"]["hits"] == 1 and t.loads == 1
    (entry,) = _entries(tmp_path)
    header, payload = read_entry(entry)
    assert header["not_worth_it"] and header["load_s"] > header["compile_s"] and payload == b""
    later = hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path)  # compiles, loads nothing
    assert t.loads == 1 and t.compiles == 2 and later.compile_cache.stats.not_worth_it == 1
    assert read_entry(entry)[0]["not_worth_it"]  # and the marker stays


# -- output files -------------------------------------------------------------------------------

def test_cli_output_files_are_written_atomically(tmp_path, monkeypatch, capsys):
    import onnx

    from hal.cli import main

    model = tmp_path / "m.onnx"
    onnx.save(mlp_model(), str(model))
    out_json, out_npz = tmp_path / "out.json", tmp_path / "out.npz"
    out_json.write_text("previous")
    out_npz.write_bytes(b"previous")
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda s, d: (_ for _ in ()).throw(OSError(5, "I/O error")))
    assert main(["run", str(model), "--json", str(out_json)]) == 2
    assert main(["run", str(model), "--save", str(out_npz)]) == 2
    assert "error: OSError: I/O error" in capsys.readouterr().err
    assert out_json.read_text() == "previous" and out_npz.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "out.json", "out.npz"]
    monkeypatch.setattr(os, "replace", real_replace)
    assert main(["run", str(model), "--json", str(out_json), "--save", str(out_npz)]) == 0
    assert json.loads(out_json.read_text())["outputs"][0]["shape"] == [2, 3]
    assert np.load(out_npz)["y"].shape == (2, 3)


def test_cli_writes_to_a_device_path(tmp_path, capsys):
    import onnx

    from hal.cli import main

    model = tmp_path / "m.onnx"
    onnx.save(mlp_model(), str(model))
    assert main(["run", str(model), "--json", os.devnull, "--save", os.devnull]) == 0


def test_cli_cache_dir_flag(tmp_path, capsys):
    import onnx

    from hal.cli import main

    model = tmp_path / "m.onnx"
    onnx.save(mlp_model(), str(model))
    cache = tmp_path / "cache"
    for hits in (0, 1):
        assert main(["run", str(model), "--cache-dir", str(cache), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["report"]["details"]["compile_cache"]["hits"] == hits


def test_trace_export_is_atomic(tmp_path, monkeypatch):
    from hal.perf.trace import write_chrome_trace

    dest = tmp_path / "trace.json"
    dest.write_text("previous")
    events = session(mlp_model(), "cpu").trace()
    monkeypatch.setattr(os, "replace", lambda s, d: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError):
        write_chrome_trace(events, dest)
    assert dest.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["trace.json"]


# -- session entries: a hit skips the frontend (loading, checking, shape inference, passes, placement) --
def _session_entries(folder: Path) -> list[Path]:
    return [p for p in _entries(folder) if (read_entry(p)[0] or {}).get("kind") == "session"]


@pytest.fixture
def frontend_calls(monkeypatch):
    """How many times sessions ran the frontend (hal.session's model loader). Loads and builds are
    timed as instant, so no entry is judged "not worth it" by chance (that judgement has its own test)."""
    import types

    import hal.cache
    import hal.session

    for module in (hal.cache, hal.session):
        monkeypatch.setattr(module, "time", types.SimpleNamespace(perf_counter=lambda: 0.0,
                                                                   process_time=lambda: 0.0))
    calls = []
    real = hal.session.load

    def counted(*a: Any, **kw: Any) -> Any:
        calls.append(a[0])
        return real(*a, **kw)

    monkeypatch.setattr(hal.session, "load", counted)
    return calls


@pytest.mark.parametrize("form", ["file", "bytes", "zoo"])
def test_second_session_on_a_file_bytes_or_zoo_name_skips_the_frontend(form, tmp_path, frontend_calls):
    path = tmp_path / "m.onnx"
    onnx.save(mlp_model(), str(path))
    model = {"file": str(path), "bytes": path.read_bytes(), "zoo": "zoo:tiny-gpt"}[form]
    cache = tmp_path / "cache"
    a = hal.InferenceSession(model, "gpu", cache_dir=cache)
    b = hal.InferenceSession(model, "gpu", cache_dir=cache)
    assert len(frontend_calls) == 1 and b.compile_cache.stats.session_hits == 1
    assert len(_session_entries(cache)) == 1
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
    (entry,) = _session_entries(tmp_path)
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
    (program,) = [p for p in _entries(tmp_path) if p not in _session_entries(tmp_path)]
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
    (entry,) = _session_entries(tmp_path)
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
    (entry,) = _session_entries(tmp_path)
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
    (entry,) = _session_entries(tmp_path)
    new = counting("2.0")
    s = hal.InferenceSession(model, "counting", cache_dir=tmp_path)
    assert s.compile_cache.stats.session_hits == 0 and len(frontend_calls) == 2
    assert new.compiles == 1 and new.loads == 0 and old.loads == 0
    # the old entry planted under the new session key is refused by its header, not loaded
    fresh = [p for p in _session_entries(tmp_path) if p != entry]
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
    assert not _session_entries(cache) and len(frontend_calls) == 2
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
    (marker,) = _session_entries(tmp_path)
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
    assert [p for p in _entries(cache) if (read_entry(p)[0] or {}).get("kind") == "digest"]
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
    for p in _entries(cache):
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
    (entry,) = _session_entries(tmp_path)
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
    (entry,) = _session_entries(tmp_path)
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
