"""Cumulative scans beside CumSum (hal/kernels/indexing.py): CumProd."""

from __future__ import annotations

import numpy as np

from hal.kernels.registry import kernel


@kernel("CumProd", since=26)
def cum_prod(x, axis, *, exclusive=0, reverse=0):
    """Running product along ``axis`` (a 0-d or one-element tensor); exclusive starts from 1."""
    a = np.asarray(axis)
    if a.size != 1:
        raise ValueError(f"CumProd axis must hold one value, got shape {a.shape}")
    ax = int(a.reshape(-1)[0])
    if not -x.ndim <= ax < x.ndim:
        raise ValueError(f"CumProd axis {ax} is out of range for rank {x.ndim}")
    ax %= x.ndim
    src = np.flip(x, ax) if reverse else x
    n = x.shape[ax]
    if exclusive and n:
        lead = np.ones_like(np.take(src, [0], axis=ax))
        src = np.concatenate([lead, np.take(src, np.arange(n - 1), axis=ax)], axis=ax)
    # float16 / bfloat16 products run in float32, each output rounded once
    work = np.float32 if x.dtype.kind in "fV" and x.dtype.itemsize < 4 else x.dtype
    out = np.cumprod(src, axis=ax, dtype=work).astype(x.dtype, copy=False)
    return np.flip(out, ax) if reverse else out
