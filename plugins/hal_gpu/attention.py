"""The fused attention kernel, run as the GPU runs it: key blocks, online softmax, no score matrix.

For each block of keys the kernel computes the block's scores S_j = Q·Kᵀ_j, applies the graph's
own score ops to the block (scale, additive or boolean mask — their operands sliced to the block's
columns), and folds the block into a running max m, a running sum l and an output accumulator O:

    m' = max(m, rowmax S_j);  P_j = exp(S_j - m');  c = exp(m - m')
    l' = l·c + rowsum P_j;    O' = O·c + P_j·V_j

and writes O / l at the end (FlashAttention, Dao et al. 2022; online softmax, Milakov & Gimelshein
2018). Only one [queries, block] tile of scores exists at a time. Accumulation is fp32 (fp64 for
fp64 inputs); with a precision policy the tensor-core inputs Q, K, V and the probabilities fed to
the second GEMM are rounded to the policy's format, as FlashAttention does in bf16/fp16.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hal.kernels import blas, jit
from hal.kernels.elementwise import arithmetic_ufunc, broadcasts_onto, row_sums, scalar_array
from hal.kernels.score_chain import ScoreChain
from hal.numerics import is_float, round_to


@dataclass(frozen=True)
class ScoreOp:
    """One graph op between Q·Kᵀ and the softmax, applied to each block of scores.

    ``args`` has one entry per input position: ``-1`` the running scores, ``k >= 0`` the k-th side
    input, ``None`` an omitted optional input. A Reshape (``fn`` None) goes to ``shape`` with the
    key axis replaced by the block's width.
    """

    fn: Callable[..., Any] | None
    args: tuple[int | None, ...] = ()
    attrs: tuple[tuple[str, Any], ...] = ()
    shape: tuple[int, ...] | None = None

    @functools.cached_property
    def ufunc(self) -> np.ufunc | None:
        """The arithmetic ufunc a binary op is (the registry's Add/Sub/Mul/Div), which can write into
        the block's scores; looked up once per op, not once per block of every run."""
        return arithmetic_ufunc(getattr(self.fn, "fn", self.fn)) if len(self.args) == 2 else None

    @functools.cached_property
    def call(self) -> tuple[Callable[..., Any], dict[str, Any]]:
        """(the kernel itself, its attributes as keywords): what a block calls, looked up once."""
        return getattr(self.fn, "fn", self.fn), dict(self.attrs)


def _block(x: np.ndarray, keys: int, lo: int, hi: int) -> np.ndarray:
    """The columns [lo, hi) of a side input that varies along the key axis (else the input itself)."""
    if x.ndim and x.shape[-1] == keys and keys > 1:
        return x[..., lo:hi]
    return x


def _to_format(x: np.ndarray, fmt: str | None) -> np.ndarray:
    if fmt is None or not is_float(x.dtype):
        return x
    return round_to(x.astype(np.float32, copy=False), fmt).astype(x.dtype, copy=False)


def flash_attention(q: np.ndarray, kt: np.ndarray, v: np.ndarray, *side: np.ndarray,
                    score_ops: tuple[ScoreOp, ...] = (), prob_shapes: tuple[tuple[int, ...], ...] = (),
                    keys: int, key_block: int = 128, fmt: str | None = None, store: str | None = None,
                    chain: ScoreChain | None = None) -> np.ndarray:
    """softmax(score_ops(Q·Kᵀ))·V over key blocks of ``key_block`` columns (see the module docstring).

    A block's scores, probabilities and the accumulator are buffers of this kernel's own: the score
    ops that are one arithmetic ufunc, the max subtraction and the rescaling write into them. When
    every key is one block, ``chain`` (the score ops as a ``ScoreChain``, see ``score_chain``) runs
    them and the max subtraction in one compiled pass a row where its inputs allow (tiny-gpt)."""
    out_dtype = q.dtype if q.dtype == kt.dtype == v.dtype else np.result_type(q.dtype, kt.dtype, v.dtype)
    acc_t = np.float64 if out_dtype == np.float64 else np.float32
    if fmt is not None or out_dtype != acc_t:
        q, kt, v = (_to_format(np.asarray(t), fmt).astype(acc_t, copy=False) for t in (q, kt, v))
    m = l = acc = None
    key_block = max(1, int(key_block))
    whole = keys <= key_block  # one block: every key, the operands as they are (no slices)
    lowest = _lowest(acc_t)
    for lo in range(0, keys, key_block):
        hi = min(keys, lo + key_block)
        s = np.matmul(q, kt if whole else kt[..., lo:hi])
        p = chain.shift(s, side) if whole and chain is not None else None
        if p is not None:  # one block: its row maxima are the final ones, no running max to keep
            m_new = None
        else:
            p, m_new, m_safe = _score_block(s, score_ops, side, whole, keys, lo, hi, acc_t, m, lowest)
        np.exp(p, out=p)
        row = _row_sums(p)
        if m is None:
            l = row
        else:
            corr = np.exp(m - m_safe)
            l = l * corr
            l += row
        for shp in prob_shapes:
            p = p.reshape((*shp[:-1], hi - lo))
        pv = np.matmul(p if fmt is None else _to_format(p, fmt), v if whole else v[..., lo:hi, :])
        if acc is None:
            acc = pv
        else:
            acc *= _reshape_rows(corr, prob_shapes)
            acc += pv
        m = m_new
    assert acc is not None and l is not None
    acc /= _reshape_rows(l, prob_shapes)
    out = acc.astype(out_dtype, copy=False)
    if store is not None and out.dtype == np.float32:
        out = round_to(out, store)
    return out


class FlashAttention:
    """``flash_attention`` with a step's parameters bound (the step's kernel), which keeps what a
    call decided where the next may repeat it more directly: float32 operands whose keys are one
    block, without number formats, with a score chain whose side inputs were read-only. Such a call
    runs the same operations on the same values, fewer calls: the scores and the chain's pass by
    ``_gemm_loops.scores_softmax_head`` (numpy's sgemm called from the loop, ``hal.kernels.blas``),
    numpy's exp, then the row sums, P·V and the division by ``_gemm_loops.sums_mix_divide``; so
    the bits of ``flash_attention`` (tiny-gpt's 4 heads of 16 keys: 10 calls a step down to 3)."""

    def __init__(self, **params: Any):
        self.params = params
        #: (q's, kt's and v's shapes and strides, the scores' shape, the output's, the two loops' machine
        #: code, the score chain's loop arguments) of the last call that may be repeated directly
        self._kept: tuple[Any, ...] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"params": self.params}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state["params"])

    def __call__(self, q: np.ndarray, kt: np.ndarray, v: np.ndarray, *side: np.ndarray) -> np.ndarray:
        kept = self._kept
        if (kept is not None and q.__class__ is np.ndarray and kt.__class__ is np.ndarray
                and v.__class__ is np.ndarray and q.dtype is _F32 and kt.dtype is _F32 and v.dtype is _F32
                and (q.shape, kt.shape, v.shape) == kept[0] and (q.strides, kt.strides, v.strides) == kept[1]):
            # (the chain's loop arguments the machine code was taken for: the same objects, so the same types)
            if self.params["chain"].kept_args(kept[2], side) is kept[5]:
                args = kept[5]
                head, tail = kept[4]
                s = np.empty(kept[2], dtype=_F32)
                p = np.empty(kept[2], dtype=_F32)
                if head(q, kt, s, p, *args):
                    s = None
                    np.exp(p, out=p)
                    out = np.empty(kept[3], dtype=_F32)
                    tail(p, v, np.empty(p.size // p.shape[-1], dtype=_F32), out)
                    return out
        out = flash_attention(q, kt, v, *side, **self.params)
        self._keep(q, kt, v, side)
        return out

    def _keep(self, q: Any, kt: Any, v: Any, side: tuple[Any, ...]) -> None:
        prm = self.params
        chain = prm.get("chain")
        if (chain is None or prm.get("fmt") is not None or prm.get("store") is not None or prm.get("prob_shapes")
                or prm["keys"] > max(1, int(prm.get("key_block", 128)))
                or not all(x.__class__ is np.ndarray and x.dtype is _F32 for x in (q, kt, v))
                or q.ndim != 4 or kt.ndim != 4 or v.ndim != 4):
            return
        shape = (*q.shape[:-1], kt.shape[-1])
        gemm = blas.loops()
        args = chain.kept_args(shape, side) if gemm is not None else None
        s = np.empty(shape, dtype=_F32)
        if args is None or not gemm.batch_ok(q, kt) or not gemm.batch_ok(s, v):
            return
        # the loops' machine code for these types (the layouts, by the strides, are checked a call)
        out = np.empty((*shape[:-1], v.shape[-1]), dtype=_F32)
        loops = (jit.entry(gemm.scores_softmax_head, q, kt, s, s, *args),
                 jit.entry(gemm.sums_mix_divide, s, v, np.empty(s.size // shape[-1], dtype=_F32), out))
        # one tuple: atomic for concurrent runs
        self._kept = ((q.shape, kt.shape, v.shape), (q.strides, kt.strides, v.strides), shape, out.shape, loops,
                      args)


_F32 = np.dtype(np.float32)


def _score_block(s: np.ndarray, score_ops: tuple[ScoreOp, ...], side: tuple[np.ndarray, ...], whole: bool,
                 keys: int, lo: int, hi: int, acc_t: type, m: np.ndarray | None, lowest: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A key block's scores through the score ops, less the running row maxima (``_shifted``)."""
    ours = True  # s is (a view of) a buffer made here
    for op in score_ops:
        if op.fn is None:
            s = s.reshape((*op.shape[:-1], hi - lo))  # type: ignore[index]
            continue
        args = [s if a == -1 else None if a is None else side[a] if whole else _block(side[a], keys, lo, hi)
                for a in op.args]
        u = op.ufunc
        if ours and u is not None and _writes_into(s, args):
            u(*args, out=s)
        else:
            fn, attrs = op.call
            s, ours = np.asarray(fn(*args, **attrs)), False
    if s.dtype != acc_t:
        s, ours = s.astype(acc_t), True
    # a NaN score still makes its row NaN through exp and the row sum
    return _shifted(s, m, ours, lowest)


@functools.cache
def _lowest(acc_t: type) -> np.ndarray:
    """The lowest finite value of the accumulation type, which a row masked in full so far (max
    -inf) subtracts instead of its max: exp(-inf) is still 0 for each of its scores, where
    -inf - -inf would be NaN; any other max is itself."""
    return scalar_array(float(np.finfo(acc_t).min), np.dtype(acc_t))


def _shifted(s: np.ndarray, m: np.ndarray | None, ours: bool, lowest: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A block's scores less the running row maxima: (the shifted scores, the new running maxima,
    what each row had subtracted), the maxima as [..., 1]. ``m``: the last block's maxima (None for
    the first block); ``ours``: whether ``s`` may be written. float32 scores take one compiled loop
    over their rows (``hal.kernels._loops.online_shift``), the numpy passes' values: tiny-gpt's
    4x16x16 block in one call where the numpy passes made five."""
    width = s.shape[-1]
    if s.dtype == np.float32 and jit.enabled() and width and s.size:
        p = s if ours and s.flags.c_contiguous else np.array(s, order="C")  # (a copy: s may be someone's)
        rows = p.size // width
        m_new, m_safe = np.empty(rows, dtype=np.float32), np.empty(rows, dtype=np.float32)
        jit.loops().online_shift(p.reshape(rows, width), m_new if m is None else m.reshape(rows), m_new, m_safe,
                                 m is None, float(lowest))
        keep = (*p.shape[:-1], 1)
        return p, m_new.reshape(keep), m_safe.reshape(keep)
    m_blk = _row_max(s)
    m_new = m_blk if m is None else np.maximum(m, m_blk)
    m_safe = np.maximum(m_new, lowest)  # NaN stays NaN
    return np.subtract(s, m_safe, out=s if ours else None), m_new, m_safe


def _row_sums(p: np.ndarray) -> np.ndarray:
    """The sum of each row of the probabilities, as [..., 1]: one compiled loop for float32, else one
    matrix-vector product rather than numpy's reduction over short rows."""
    width = p.shape[-1]
    rows = p.reshape(-1, width)
    if p.dtype == np.float32 and jit.enabled() and rows.flags.c_contiguous and p.size:
        out = np.empty(rows.shape[0], dtype=np.float32)
        jit.loops().row_sums(rows, out)
    else:
        out = row_sums(rows)
    return out.reshape(*p.shape[:-1], 1)


#: blocks this many keys wide or narrower take their row maxima down the columns (``_row_max``)
TRANSPOSED_MAX_WIDTH = 32


def _row_max(s: np.ndarray) -> np.ndarray:
    """The maximum of each row (last axis) of ``s``, keepdims, ignoring NaN unless a whole row is NaN.

    numpy's fmax.reduce over short rows runs one short inner loop per row; over a key block up to 32
    wide it is faster to copy the block transposed and reduce down its columns, every step one long
    contiguous fmax (BERT's 4x12x128x32 blocks: 0.15 ms, against 0.30 for fmax.reduce and 0.26-0.37
    for halving the rows; 8 and 16 wide 3-6x faster; slower from 64 wide on). A maximum is the same
    value in any order.
    """
    w = s.shape[-1]
    if w > TRANSPOSED_MAX_WIDTH or w < 2:
        return np.fmax.reduce(s, axis=-1, keepdims=True)
    columns = np.ascontiguousarray(s.reshape(-1, w).T)
    return np.fmax.reduce(columns, axis=0).reshape(*s.shape[:-1], 1)


def _writes_into(s: np.ndarray, args: list[Any]) -> bool:
    """Whether a binary ufunc of ``args`` (one of them the float scores ``s``) gives ``s``'s shape and
    dtype, so it may be computed into ``s``: the same values a new array would get."""
    mine = False
    for a in args:  # a plain loop: three generator expressions cost 2 us a call on tiny-gpt's blocks
        if a is s:
            mine = True
        elif a.__class__ is not np.ndarray or a.dtype != s.dtype or not broadcasts_onto(a.shape, s.shape):
            return False
    return mine


def _reshape_rows(x: np.ndarray, prob_shapes: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """A per-row statistic ([..., 1]) in the layout of the P·V product."""
    for shp in prob_shapes:
        x = x.reshape((*shp[:-1], 1))
    return x
