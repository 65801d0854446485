"""Kernel launch shapes: the tile each kernel computes, its grid, and the waves it takes over the SMs.

A GPU runs a kernel's thread blocks (CTAs) in waves of at most ``SMs x CTAs-per-SM``; a grid that
is not a multiple of that leaves SMs idle in the last wave (wave quantisation). A tile that does
not divide the problem computes padding (tile quantisation). Both are efficiencies < 1 that the
roofline divides by. GEMM tiles are the CUTLASS / cuBLAS shapes (64-row warpgroup MMAs, and 16-
and 32-row tiles for skinny problems); split-K divides K among CTAs when the output alone cannot
fill the machine (decode GEMMs). A kernel with nothing to compute (a zero-size tensor, valid ONNX)
has an empty grid: no waves, no work, efficiencies of 1 so nothing divides by zero.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from hal_gpu.hardware import Gpu

#: (BM, BN, BK) output tile rows x columns x depth step, largest first
GEMM_TILES: tuple[tuple[int, int, int], ...] = (
    (128, 256, 64), (256, 128, 64), (128, 128, 64), (128, 64, 64), (64, 128, 64), (64, 64, 64),
    (64, 256, 64),
    (32, 128, 64), (16, 128, 64), (16, 64, 64))  # skinny-M tiles of the mma.sync path (decode GEMMs)
SPLIT_K: tuple[int, ...] = (1, 2, 4, 8, 16)
#: smallest depth one split-K slice keeps (two pipeline steps of BK)
MIN_K_PER_SPLIT = 128
#: (query rows, key columns) per CTA of the fused attention kernel (FlashAttention-2/3 tile sizes)
ATTENTION_TILES: tuple[tuple[int, int], ...] = ((128, 128), (128, 64), (64, 128), (64, 64), (64, 32), (32, 32))
#: threads per CTA of elementwise and row kernels; each thread moves one 16-byte vector
BLOCK_THREADS = 256
VECTOR_BYTES = 16


@dataclass(frozen=True)
class Launch:
    """How one kernel is launched: tile, grid, waves and the efficiencies they imply."""

    tile: tuple[int, ...]
    grid: int
    ctas_per_sm: int
    split: int = 1                 # split-K (GEMM) or split-KV (attention) factor
    stages: int = 0                # software-pipeline depth that fits shared memory (GEMM)
    tile_efficiency: float = 1.0   # useful / computed elements (padding of partial tiles)
    waves: int = 1
    wave_efficiency: float = 1.0   # busy / available CTA slots over all waves
    sm_fill: float = 1.0           # fraction of SMs with work (< 1 when the grid is smaller)

    @property
    def empty(self) -> bool:
        """No CTA has work: the problem has a zero-length dimension."""
        return self.grid == 0

    def details(self) -> dict:
        return {"tile": "x".join(str(t) for t in self.tile), "grid": self.grid, "waves": self.waves,
                "wave_efficiency": round(self.wave_efficiency, 4), "tile_efficiency": round(self.tile_efficiency, 4),
                "split": self.split, "ctas_per_sm": self.ctas_per_sm, "sm_fill": round(self.sm_fill, 4)}


def waves(grid: int, gpu: Gpu, ctas_per_sm: int) -> tuple[int, float, float]:
    """(waves, wave efficiency, SM fill) of ``grid`` CTAs with ``ctas_per_sm`` resident per SM."""
    if grid <= 0:
        return 0, 1.0, 0.0
    slots = gpu.sm_count * max(1, ctas_per_sm)
    n = max(1, math.ceil(grid / slots))
    return n, grid / (n * slots), min(1.0, grid / gpu.sm_count)


def gemm_stages(tile: tuple[int, int, int], itemsize: float, gpu: Gpu) -> int:
    """Pipeline stages of A and B tiles that fit one SM's shared memory (0 if not even two)."""
    bm, bn, bk = tile
    stage = (bm * bk + bk * bn) * itemsize
    return int(min(4, gpu.smem_per_sm // stage)) if stage * 2 <= gpu.smem_per_sm else 0


def empty_launch(tile: tuple[int, ...], ctas_per_sm: int = 1, stages: int = 0) -> Launch:
    """The launch of a kernel whose output has no elements: an empty grid."""
    return Launch(tile, 0, ctas_per_sm, 1, stages, 1.0, 0, 1.0, 0.0)


def gemm_launches(batch: int, m: int, n: int, k: int, itemsize: float, gpu: Gpu,
                  tile: tuple[int, int, int] | None = None) -> list[Launch]:
    """Every legal (tile, split-K) launch of a [batch] x [m, k] @ [k, n] GEMM (``tile`` forces one).

    An empty output (batch, m or n of 0) is one empty launch; k = 0 is an ordinary launch that
    writes zeros.
    """
    if batch * m * n == 0:
        t = tile or GEMM_TILES[-1]
        return [empty_launch(t, stages=gemm_stages(t, itemsize, gpu))]
    out = []
    for t in ([tile] if tile else GEMM_TILES):
        bm, bn, _bk = t
        stages = gemm_stages(t, itemsize, gpu)
        if stages < 2 and not tile:  # a forced tile is the user's call; the default set must fit
            continue
        tiles_m, tiles_n = math.ceil(m / bm), math.ceil(n / bn)
        tile_eff = (m * n) / (tiles_m * bm * tiles_n * bn)
        for split in SPLIT_K:
            if split > 1 and k // split < MIN_K_PER_SPLIT:
                break
            grid = batch * tiles_m * tiles_n * split
            w, w_eff, fill = waves(grid, gpu, 1)  # Hopper GEMMs keep one large CTA per SM
            out.append(Launch(t, grid, 1, split, stages, tile_eff, w, w_eff, fill))
    return out


def attention_launches(batch_heads: int, q_rows: int, keys: int, head_dim: int, itemsize: float, gpu: Gpu,
                       key_block: int | None = None) -> list[Launch]:
    """Launches of the fused attention kernel: one CTA per (batch·head, query block), and when that
    cannot fill the SMs (decode), the keys split among CTAs and merged after (flash-decoding)."""
    if batch_heads * q_rows == 0:
        return [empty_launch((ATTENTION_TILES[-1][0], key_block or ATTENTION_TILES[-1][1]))]
    out = []
    for bq, bkv in ATTENTION_TILES:
        if key_block:
            bkv = key_block
        # the Q tile stays; K and V tiles stream through shared memory
        if (bq + 2 * bkv) * head_dim * itemsize > gpu.smem_per_sm:
            continue
        base = batch_heads * math.ceil(q_rows / bq)
        blocks = math.ceil(keys / bkv)
        split = max(1, min(blocks, gpu.sm_count // max(1, base)))
        grid = base * split
        w, w_eff, fill = waves(grid, gpu, 1)
        tile_eff = q_rows / (math.ceil(q_rows / bq) * bq)
        out.append(Launch((bq, bkv), grid, 1, split, 2, tile_eff, w, w_eff, fill))
        if key_block:
            break
    return out


def _live_tiles(allowed: np.ndarray, bq: int, bkv: int, key_blocks: int | None = None) -> np.ndarray:
    """[query blocks, key blocks] bool: the tiles of fused attention with any score ``allowed``
    lets through (the keys padded to ``key_blocks`` blocks when given)."""
    q, k = allowed.shape
    nq, nk = math.ceil(q / bq), key_blocks or math.ceil(k / bkv)
    padded = np.zeros((nq * bq, nk * bkv), dtype=bool)
    padded[:q, :k] = allowed
    return padded.reshape(nq, bq, nk, bkv).any(axis=(1, 3))


#: the most (query block x key block) tiles a causal mask is laid out in (``causal_tiles``): 2^24
#: is 2M tokens of 128-wide tiles a side; a larger one is modelled unmasked
MAX_CAUSAL_TILES = 1 << 24


def causal_tiles(queries: int, keys: int, bq: int, bkv: int, key_blocks: int | None = None) -> np.ndarray | None:
    """``_live_tiles`` of a causal mask (query i, after ``keys - queries`` past keys, sees the keys
    up to its own position), worked out per tile without the [queries, keys] mask itself; None past
    MAX_CAUSAL_TILES tiles."""
    nq, nk = math.ceil(queries / bq), key_blocks or math.ceil(keys / bkv)
    if nq * nk > MAX_CAUSAL_TILES:
        return None
    last = np.minimum((np.arange(nq) + 1) * bq, queries) - 1 + (keys - queries)  # each block's last query
    first_key = np.arange(nk) * bkv
    return (first_key[None, :] <= last[:, None]) & (first_key[None, :] < keys)


def live_fraction(allowed: np.ndarray, bq: int, bkv: int) -> float:
    """Of the (query block x key block) tiles of fused attention, the share with any score a mask
    lets through: the kernel skips the rest (a causal mask: about half, FlashAttention's causal path)."""
    if 0 in allowed.shape:
        return 1.0
    return float(_live_tiles(allowed, bq, bkv).mean())


#: waves of CTAs a masked schedule lays out at most (whole heads): past some hundreds its share is
#: the mean CTA's, and a model's batch x heads can be anything (the fuzzer's billion heads kept a
#: compile busy for hours; now 23 ms); every committed calibration point stays below it
MAX_SCHEDULED_WAVES = 1024


def masked_schedule(allowed: np.ndarray, bq: int, bkv: int, batch_heads: int, slots: int,
                    cta_keys: float, split: int = 1) -> float:
    """How long a masked fused-attention kernel runs, as a share of the same kernel unmasked.

    Each CTA (one query block of one batch·head, or with split-KV one of ``split`` contiguous runs
    of its key blocks) computes its live key blocks plus a fixed amount of work (``cta_keys`` keys'
    worth); CTAs start in launch order (a head's query blocks one after another, so under a causal
    mask the longest of each head come last) on whichever SM frees up first. The unmasked kernel
    runs whole waves of full CTAs.
    """
    if 0 in allowed.shape or batch_heads <= 0:
        return 1.0
    split = max(1, split)
    chunk = math.ceil(math.ceil(allowed.shape[1] / bkv) / split)
    return tiles_schedule(_live_tiles(allowed, bq, bkv, chunk * split), bkv, batch_heads, slots, cta_keys, split)


def tiles_schedule(live: np.ndarray, bkv: int, batch_heads: int, slots: int, cta_keys: float, split: int = 1) -> float:
    """``masked_schedule`` from the live tiles (``_live_tiles`` with the keys padded to a multiple
    of ``split`` chunks), for masks known by their tiles alone (``causal_tiles``)."""
    if 0 in live.shape or batch_heads <= 0:
        return 1.0
    split = max(1, split)
    chunk = live.shape[1] // split
    work = (live.reshape(live.shape[0], split, chunk).sum(axis=2).reshape(-1) * bkv + cta_keys).tolist()
    full = chunk * bkv + cta_keys
    heads = min(batch_heads, max(1, math.ceil(MAX_SCHEDULED_WAVES * slots / len(work))))
    grid = heads * len(work)
    if grid <= slots:
        return max(work) / full
    busy = [0.0] * slots  # when each SM frees up
    for _ in range(heads):
        for w in work:
            heapq.heapreplace(busy, busy[0] + w)
    return max(busy) / (math.ceil(grid / slots) * full)


def stream_launch(numel: int, itemsize: float, gpu: Gpu, row: int | None = None) -> Launch:
    """An elementwise kernel (one 16-byte vector per thread) or a row kernel (one CTA per row)."""
    per_thread = max(1, int(VECTOR_BYTES // max(1, itemsize)))
    ctas = max(1, gpu.max_threads_per_sm // BLOCK_THREADS)
    if numel <= 0:
        return empty_launch((min(row, BLOCK_THREADS * per_thread) if row else BLOCK_THREADS * per_thread,), ctas)
    if row:
        grid = max(1, math.ceil(numel / row))
        tile = (min(row, BLOCK_THREADS * per_thread),)
    else:
        grid = max(1, math.ceil(numel / (BLOCK_THREADS * per_thread)))
        tile = (BLOCK_THREADS * per_thread,)
    w, w_eff, fill = waves(grid, gpu, ctas)
    return Launch(tile, grid, ctas, 1, 0, 1.0, w, w_eff, fill)


def parse_tile(value: object) -> tuple[int, int, int]:
    """A ``tile`` option: "128x256x64" or a sequence of three positive ints."""
    if isinstance(value, str):
        parts = value.lower().replace("*", "x").split("x")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise ValueError(f"tile must look like '128x256x64', not {value!r}")
    try:
        dims = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"tile must look like '128x256x64', not {value!r}") from None
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"tile must be three positive sizes BMxBNxBK, not {value!r}")
    return dims  # type: ignore[return-value]
