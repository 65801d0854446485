"""fp8 GEMMs summed as Hopper's tensor cores sum them (the sheet's ``fp8_accumulation_*`` keys).

An fp8 wgmma does not accumulate in IEEE fp32: in each block of 32 products it aligns the products
and the running sum to the largest exponent among them and keeps 13 binary places below it,
truncating the rest (``hal.kernels._accumulation_loops``). Transformer Engine's forward GEMMs
(``_2X_ACC_FPROP = False``) and cuBLASLt's fast-accumulation mode keep that running sum in the
tensor cores over the whole K axis; with ``fp8_promotion_blocks`` > 0 it is moved into an fp32
total every so many blocks, as cuBLASLt does when fast accumulation is off. On an H200, over dot
products of 64 to 4096 positive fp8 terms, the model gave cuBLASLt's fast-accumulation outputs bit
for bit on 60-99.5% of them, and their mean error within 3.5% (``benchmarks/calibration_gpu_numerics.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hal.kernels import jit


@dataclass(frozen=True)
class Accumulation:
    """How the matrix units sum fp8 products: ``bits`` kept below a block's largest exponent (0: IEEE
    fp32, what numpy's matmul does), products per ``block``, blocks between promotions to an fp32
    total (0: never)."""

    bits: int
    block: int
    promote: int

    @property
    def truncates(self) -> bool:
        return self.bits > 0

    def _dot(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a @ b for 2-D float32 operands, finite."""
        out = np.empty((a.shape[0], b.shape[1]), dtype=np.float32)
        jit.loops().truncated_block_dot(np.ascontiguousarray(a), np.ascontiguousarray(b), self.block, self.bits,
                                        self.promote, out)
        return out

    def matmul(self, a: Any, b: Any) -> np.ndarray:
        """ONNX MatMul (numpy's matmul: 1-D operands and broadcast batch axes) summed this way; numpy's
        own where the loop does not apply (operands not float32, a NaN or infinity, the loops off)."""
        a, b = np.asarray(a), np.asarray(b)
        if not (self.truncates and a.dtype == b.dtype == np.float32 and a.ndim and b.ndim and jit.enabled()
                and np.isfinite(a).all() and np.isfinite(b).all()):
            return np.matmul(a, b)
        if a.ndim == 1 or b.ndim == 1:  # a vector is a one-row (a) or one-column (b) matrix, dropped after
            y = self.matmul(a[None, :] if a.ndim == 1 else a, b[:, None] if b.ndim == 1 else b)
            y = y[..., 0] if b.ndim == 1 else y
            return (y[..., 0] if b.ndim == 1 else y[..., 0, :]) if a.ndim == 1 else y
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        (m, k), n = a.shape[-2:], b.shape[-1]
        aa = np.broadcast_to(a, (*batch, m, k)).reshape(-1, m, k)
        bb = np.broadcast_to(b, (*batch, k, n)).reshape(-1, k, n)
        out = np.empty((aa.shape[0], m, n), dtype=np.float32)
        for z in range(aa.shape[0]):
            out[z] = self._dot(aa[z], bb[z])
        return out.reshape((*batch, m, n))

    def gemm(self, a: Any, b: Any, c: Any = None, *, alpha: float = 1.0, beta: float = 1.0, transA: int = 0,
             transB: int = 0, **_: Any) -> np.ndarray:
        """ONNX Gemm: the product summed this way, then alpha, beta and C as ``hal.kernels.linalg.gemm``
        applies them (cuBLASLt's epilogue, in fp32)."""
        a, b = np.asarray(a), np.asarray(b)
        y = self.matmul(a.T if transA else a, b.T if transB else b)
        if alpha != 1.0:
            y *= alpha
        if c is not None and beta != 0.0:
            y += c if beta == 1.0 else c * beta  # C broadcasts one way onto (M, N), as the Gemm kernel's
        return y


__all__ = ["Accumulation"]
