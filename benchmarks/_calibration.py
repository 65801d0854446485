"""What every calibration benchmark shares: the command line (run, print, write the JSON atomically)
and the spec sheet's assumptions, reported beside the result."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hal.files import atomic_write


def calibration_main(doc: str, results: Path, run: Callable[[], dict[str, Any]],
                     show: Callable[[dict[str, Any]], None], ok: Callable[[dict[str, Any]], bool],
                     argv: list[str] | None = None) -> int:
    """Exit status 0 when the calibration point is within its tolerance, 1 otherwise."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", type=Path, default=results, help=f"JSON file to write (default {results})")
    args = ap.parse_args(argv)
    res = run()
    show(res)
    atomic_write(args.out, json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if ok(res) else 1


def assumptions(spec: Any) -> dict[str, dict[str, Any]]:
    """The spec sheet's hardware figures marked ``kind = "assumption"`` (not sourced), by name."""
    return {k: {"value": v.value, "unit": v.unit} for k, v in spec.hardware.items() if v.kind == "assumption"}
