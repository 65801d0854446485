"""Chrome / Perfetto trace-event export, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def event(name: str, start_s: float, dur_s: float, *, pid: str, tid: str, cat: str = "",
          args: dict[str, Any] | None = None) -> dict[str, Any]:
    """One complete ('X') event; times in seconds in, microseconds out, as the format wants."""
    return {"ph": "X", "name": name, "cat": cat, "ts": start_s * 1e6, "dur": max(dur_s, 0.0) * 1e6,
            "pid": pid, "tid": tid, "args": args or {}}


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write a file so that readers see the old content or the new, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a written report should read like any file
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_chrome_trace(events: list[dict[str, Any]], path: str | Path, metadata: dict[str, Any] | None = None
                       ) -> Path:
    """Write ``{"traceEvents": [...]}`` (loads in chrome://tracing and ui.perfetto.dev)."""
    doc = {"traceEvents": events, "displayTimeUnit": "ns", "otherData": metadata or {}}
    return atomic_write(path, json.dumps(doc))
