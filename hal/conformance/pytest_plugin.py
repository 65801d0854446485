"""pytest plugin of the hal conformance suite; dormant unless ``--hal-target NAME`` is given."""

from __future__ import annotations


def pytest_addoption(parser) -> None:
    group = parser.getgroup("hal", "hal conformance suite")
    group.addoption("--hal-target", default=None, help="run the hal conformance suite on this target")
