"""Fixtures of the compile-cache tests (test_robust_cache.py, test_robust_cache_sessions.py)."""

from __future__ import annotations

from typing import Any

import pytest
from _cache_support import CountingPlugin, CountingTarget

from hal import plugins


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
