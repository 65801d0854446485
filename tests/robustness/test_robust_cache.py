"""The compile cache's program entries: a second session skips compiling; entries are written
atomically; a corrupted, truncated or foreign entry is rebuilt, never loaded; an entry slower to
load than to compile gives way to a marker."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnx
import pytest
from _cache_support import CountingTarget, X, entries
from _robust_models import TARGETS, mlp_model, session

import hal
from hal.cache import CacheWarning, entry_is_valid, open_cache, read_entry
from tests.conftest import in_threads


def test_second_session_skips_compilation(counting, tmp_path):
    t = counting()
    a = hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path)
    b = hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path)
    assert (t.compiles, t.loads) == (1, 1)
    assert a.report.details["compile_cache"] == {"hits": 0, "misses": 1}
    assert b.report.details["compile_cache"] == {"hits": 1, "misses": 0}
    np.testing.assert_array_equal(a.run(None, X)[0], b.run(None, X)[0])
    assert len(entries(tmp_path)) == 1


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
    assert t.compiles == 1 and entries(tmp_path)
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
    assert t.compiles == 3 and len(entries(tmp_path)) == 3
    hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path, timeout_s=30)  # timeout_s is not
    assert t.compiles == 3


def test_entry_from_another_plugin_version_is_never_used(counting, tmp_path):
    old = counting("1.0")
    hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path)
    (entry,) = entries(tmp_path)
    new = counting("2.0")
    s = hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path)
    assert new.compiles == 1 and new.loads == 0 and s.report.details["compile_cache"]["hits"] == 0
    # an old entry planted under the new key (copied, renamed) is refused by its header, not loaded
    fresh = [p for p in entries(tmp_path) if p != entry]
    assert len(fresh) == 1
    fresh[0].write_bytes(entry.read_bytes())
    hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path)
    assert new.compiles == 2 and new.loads == 0 and old.loads == 0


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage-header", "swap-payload"])
def test_damaged_entry_is_detected_rebuilt_and_never_loaded(counting, tmp_path, damage):
    t = counting()
    hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path)
    (entry,) = entries(tmp_path)
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
    assert t.compiles == 2 and len(entries(tmp_path)) == 1


def test_sessions_racing_on_one_cache_all_get_a_whole_entry(counting, tmp_path):
    counting()
    outs = in_threads(lambda _: hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path).run(None, X)[0], 6)
    assert all(np.array_equal(o, outs[0]) for o in outs)
    assert len(entries(tmp_path)) == 1 and not list(tmp_path.rglob("*.tmp"))
    (entry,) = entries(tmp_path)
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
    (entry,) = entries(tmp_path)
    header, payload = read_entry(entry)
    assert header["not_worth_it"] and header["load_s"] > header["compile_s"] and payload == b""
    later = hal.InferenceSession(mlp_model(), "counting", cache_dir=tmp_path)  # compiles, loads nothing
    assert t.loads == 1 and t.compiles == 2 and later.compile_cache.stats.not_worth_it == 1
    assert read_entry(entry)[0]["not_worth_it"]  # and the marker stays


def test_cli_cache_dir_flag(tmp_path, capsys):

    from hal.cli import main

    model = tmp_path / "m.onnx"
    onnx.save(mlp_model(), str(model))
    cache = tmp_path / "cache"
    for hits in (0, 1):
        assert main(["run", str(model), "--cache-dir", str(cache), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["report"]["details"]["compile_cache"]["hits"] == hits
