"""fp8 GEMMs summed as Hopper's tensor cores sum them (the sheet's ``fp8_accumulation_*`` keys).

An fp8 wgmma does not accumulate in IEEE fp32: in each block of 32 products it aligns the products
and the running sum to the largest exponent among them, truncates 13 binary places below it, and
keeps the sum to 14 significant bits (``hal.kernels._accumulation_loops``). It multiplies the fp8
codes themselves; the tensors' scales are applied to the sum afterwards (``Accumulation.fp8_product``).
Transformer Engine's forward GEMMs (``_2X_ACC_FPROP = False``) and cuBLASLt's fast-accumulation
mode keep that running sum in the tensor cores over the whole K axis; with ``fp8_promotion_blocks``
> 0 it is moved into an fp32 total every so many blocks, as cuBLASLt does when fast accumulation is
off. On an H200 the model gave cuBLASLt's outputs bit for bit, both ways, over dot products of 64 to
4096 fp8 terms and over 12 GEMMs held out from the fit (``benchmarks/calibration_gpu_numerics.py``);
where cuBLASLt splits K over several CTAs (K = 16384) it does not follow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hal.kernels import jit
from hal.kernels.linalg import gemm_epilogue
from hal.numerics import quantize_codes


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
        """a @ b with numpy's matmul shapes (1-D operands, broadcast batch axes), the operands taken as
        the tensor cores' inputs themselves (fp8 values, unscaled), summed this way; numpy's own where
        the loop does not apply (operands not float32, a NaN or infinity, the loops off)."""
        a, b = np.asarray(a), np.asarray(b)
        if not (self.truncates and a.dtype == b.dtype == np.float32 and a.ndim and b.ndim and jit.enabled()
                and np.isfinite(a).all() and np.isfinite(b).all()):
            return np.matmul(a, b)
        if a.ndim == 1 or b.ndim == 1:  # a vector is a one-row (a) or one-column (b) matrix, dropped after
            y = self.matmul(a[None, :] if a.ndim == 1 else a, b[:, None] if b.ndim == 1 else b)
            y = y[..., 0, :] if a.ndim == 1 else y
            return y[..., 0] if b.ndim == 1 else y
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        (m, k), n = a.shape[-2:], b.shape[-1]
        aa = np.broadcast_to(a, (*batch, m, k)).reshape(-1, m, k)
        bb = np.broadcast_to(b, (*batch, k, n)).reshape(-1, k, n)
        out = np.empty((aa.shape[0], m, n), dtype=np.float32)
        for z in range(aa.shape[0]):
            out[z] = self._dot(aa[z], bb[z])
        return out.reshape((*batch, m, n))

    def fp8_product(self, kernel: Callable[..., Any], fmt: str, weight_axis: int | None, *args: Any,
                    **attrs: Any) -> np.ndarray:
        """An fp8 MatMul or Gemm (``kernel``, the node's own, with its inputs and attributes) of operands
        hal's fp8 policy has rounded (A per tensor; B per output channel along ``weight_axis`` where it
        is a weight, else per tensor), run as the tensor cores run it: on the operands' fp8 codes,
        summed this way, the scales applied after the sum (cuBLASLt's scale_a and scale_b, Transformer
        Engine's scale_inv), then Gemm's alpha, beta and C (``hal.kernels.linalg.gemm_epilogue``). The
        codes and scales come from quantising the rounded operands again with hal's own recipe, which
        gives back the codes exactly (the scales to a unit in their last place). Summing the rounded
        fp32 operands instead truncates the scales' long significands too: on an H200 that doubled the
        error the GPU showed. ``kernel`` itself where the rule does not apply (fp32 sums, operands not
        float32, a NaN or infinity, the loops off)."""
        a, b = np.asarray(args[0]), np.asarray(args[1])
        if not (self.truncates and a.dtype == b.dtype == np.float32 and jit.enabled()
                and np.isfinite(a).all() and np.isfinite(b).all()):
            return kernel(*args, **attrs)
        qa, sa = quantize_codes(a, fmt)
        qb, sb = quantize_codes(b, fmt, axis=weight_axis)
        if attrs.get("transA", 0):
            qa = qa.T
        if attrs.get("transB", 0):
            qb, sb = qb.T, (sb.T if np.ndim(sb) else sb)
        y = self.matmul(qa, qb)
        y *= (sa * sb).astype(np.float32)
        c = args[2] if len(args) > 2 else None
        return gemm_epilogue(y, c, attrs.get("alpha", 1.0), attrs.get("beta", 1.0))


__all__ = ["Accumulation"]
