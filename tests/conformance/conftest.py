"""Fixtures of the conformance-suite tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _support import load_wrong_target


@pytest.fixture
def wrong_add() -> Iterator[str]:
    """The ``wrong-add`` target (tests/fixtures/wrong_target), registered in-process for the test."""
    import hal.plugins

    rec = hal.plugins.register(load_wrong_target(), "wrong-add")
    assert rec.ok, rec.error
    yield "wrong-add"
    hal.plugins.unregister("wrong-add")
