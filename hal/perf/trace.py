"""Chrome / Perfetto trace-event export, written atomically (``hal.files.atomic_write``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hal.files import write_output


def event(name: str, start_s: float, dur_s: float, *, pid: str, tid: str, cat: str = "",
          args: dict[str, Any] | None = None) -> dict[str, Any]:
    """One complete ('X') event; times in seconds in, microseconds out, as the format wants."""
    return {"ph": "X", "name": name, "cat": cat, "ts": start_s * 1e6, "dur": max(dur_s, 0.0) * 1e6,
            "pid": pid, "tid": tid, "args": args or {}}


def write_chrome_trace(events: list[dict[str, Any]], path: str | Path, metadata: dict[str, Any] | None = None
                       ) -> Path:
    """Write ``{"traceEvents": [...]}`` (loads in chrome://tracing and ui.perfetto.dev)."""
    doc = {"traceEvents": events, "displayTimeUnit": "ns", "otherData": metadata or {}}
    return write_output(path, json.dumps(doc))


__all__ = ["event", "write_chrome_trace"]
