"""Reading a kernel's arguments as the size rules need them: Python integers, so a product of
huge dimensions never wraps around."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def ints(v: Any) -> list[int]:
    return [int(x) for x in np.asarray(v).reshape(-1)]


def first(v: Any) -> Any:
    return np.asarray(v).reshape(-1)[0]


def itemsize(v: Any, default: int = 4) -> int:
    dt = getattr(v, "dtype", None)
    return int(dt.itemsize) if dt is not None and dt.itemsize else default


def broadcast(shapes: Sequence[Sequence[int]]) -> list[int]:
    """Broadcast shape as an upper bound (incompatible dims are the kernel's error to raise)."""
    rank = max((len(s) for s in shapes), default=0)
    out = [1] * rank
    for s in shapes:
        for i, d in enumerate(s):
            j = rank - len(s) + i
            out[j] = max(out[j], int(d))
    return out


def optional_int(args: Sequence[Any], i: int) -> int | None:
    v = args[i] if len(args) > i else None
    return None if v is None or np.asarray(v).size == 0 else int(first(v))

