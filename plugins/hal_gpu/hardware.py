"""The GPU as the cost model sees it: every number read from the target's spec sheet.

One code path serves every sheet (H100, MI300X, ...): a number the model needs is a key the
sheet must have, so a new GPU is a new TOML file, never a code change.
"""

from __future__ import annotations

from dataclasses import dataclass

from hal.specs import TargetSpec
from hal_gpu.accumulation import Accumulation

#: number formats the tensor cores (matrix cores) take, with the sheet key of their dense peak
PEAK_KEYS = {"fp64": "peak_flops_fp64_tensor", "fp32": "peak_flops_fp32", "tf32": "peak_flops_tf32",
             "bf16": "peak_flops_bf16", "fp16": "peak_flops_fp16", "fp8": "peak_flops_fp8",
             "int8": "peak_flops_int8"}

#: every other field of Gpu -> (sheet key, type)
SHEET_KEYS: dict[str, tuple[str, type]] = {
    "sm_count": ("sm_count", int), "vector_flops": ("peak_flops_fp32", float),
    "hbm_bytes": ("hbm_bytes", float), "hbm_bandwidth": ("hbm_bandwidth", float),
    "hbm_efficiency": ("hbm_efficiency", float), "l2_bytes": ("l2_bytes", float),
    "smem_per_sm": ("smem_per_sm_bytes", float), "max_threads_per_sm": ("max_threads_per_sm", int),
    "gemm_efficiency": ("gemm_efficiency", float), "gemm_efficiency_fp8": ("gemm_efficiency_fp8", float),
    "attention_efficiency_hd64": ("attention_efficiency_hd64", float),
    "attention_efficiency_hd128": ("attention_efficiency_hd128", float),
    "attention_cta_overhead_keys": ("attention_cta_overhead_keys", float),
    "attention_head_tile": ("attention_head_tile", int),
    "gemm_latency_s": ("gemm_latency_s", float), "gemm_latency_s_32bit": ("gemm_latency_s_32bit", float),
    "misaligned_gemm_flops": ("misaligned_gemm_flops", float),
    "misaligned_hbm_efficiency": ("misaligned_hbm_efficiency", float),
    "launch_overhead_s": ("launch_overhead_s", float),
    "graph_launch_overhead_s": ("graph_launch_overhead_s", float),
    "graph_node_overhead_s": ("graph_node_overhead_s", float),
    "link_bandwidth": ("interconnect_bandwidth", float), "peer_bandwidth": ("interconnect_peer_bandwidth", float),
    "link_efficiency": ("interconnect_efficiency", float), "allreduce_latency_s": ("allreduce_latency_s", float),
    "max_devices": ("gpus_per_node", int), "tdp_w": ("tdp_w", float), "idle_w": ("idle_w", float),
    "fp8_accumulation_bits": ("fp8_accumulation_bits", int),
    "fp8_accumulation_block": ("fp8_accumulation_block", int),
    "fp8_promotion_blocks": ("fp8_promotion_blocks", int),
}


@dataclass(frozen=True)
class Gpu:
    """Hardware numbers of one GPU model (per device unless the name says otherwise)."""

    name: str
    sm_count: int
    peak: dict[str, float]            # dense FLOP/s by matrix input format
    vector_flops: float               # non-tensor FP32 FLOP/s (elementwise, reductions)
    hbm_bytes: float
    hbm_bandwidth: float
    hbm_efficiency: float
    l2_bytes: float
    smem_per_sm: float
    max_threads_per_sm: int
    gemm_efficiency: float
    gemm_efficiency_fp8: float
    attention_efficiency_hd64: float  # fused attention's share of the tensor-core peak at head dim 64
    attention_efficiency_hd128: float  # ... and at head dim 128
    attention_cta_overhead_keys: float  # a fused-attention CTA's fixed work, in key positions' worth
    attention_head_tile: int          # the head dims its kernels are built for are multiples of this
    gemm_latency_s: float             # a GEMM kernel's time beyond its roofline: pipeline fill and drain
    gemm_latency_s_32bit: float       # ... with 4-byte inputs (fp32, TF32): twice the bytes per pipeline stage
    misaligned_gemm_flops: float      # a tensor-core GEMM with a row not a multiple of 16 bytes: its FLOP/s
    misaligned_hbm_efficiency: float  # ... and its share of HBM bandwidth, for 4-byte elements
    launch_overhead_s: float
    graph_launch_overhead_s: float
    graph_node_overhead_s: float
    link_bandwidth: float             # per direction, per device, all links
    peer_bandwidth: float             # per direction, to one peer
    link_efficiency: float
    allreduce_latency_s: float
    max_devices: int                  # GPUs one tensor-parallel group may span (one node)
    tdp_w: float
    idle_w: float
    fp8_accumulation_bits: int        # binary places an fp8 GEMM keeps below a block's largest exponent (0: fp32)
    fp8_accumulation_block: int       # ... products per block (an fp8 wgmma's K)
    fp8_promotion_blocks: int         # ... blocks between moves of the sum into an fp32 total (0: never)

    @classmethod
    def from_spec(cls, spec: TargetSpec) -> Gpu:
        hw = spec.hw
        numbers = {name: cast(hw(key)) for name, (key, cast) in SHEET_KEYS.items()}
        return cls(name=spec.name, peak={fmt: hw(key) for fmt, key in PEAK_KEYS.items()}, **numbers)

    @property
    def hbm_rate(self) -> float:
        """Bytes per second a streaming kernel reaches."""
        return self.hbm_bandwidth * self.hbm_efficiency

    @property
    def fp8_accumulation(self) -> Accumulation:
        """How this GPU's matrix units sum fp8 products (``hal_gpu.accumulation``)."""
        return Accumulation(self.fp8_accumulation_bits, self.fp8_accumulation_block, self.fp8_promotion_blocks)

    def misaligned_hbm_rate(self, itemsize: int) -> float:
        """Bytes per second a GEMM streams when its rows are not 16-byte aligned: the library's
        fallback loads one element at a time, so narrower elements move fewer bytes."""
        return self.hbm_bandwidth * self.misaligned_hbm_efficiency * min(itemsize, 4) / 4

    def gemm_rate(self, fmt: str) -> float:
        """FLOP/s a large GEMM reaches with ``fmt`` inputs."""
        eff = self.gemm_efficiency_fp8 if fmt in ("fp8", "int8") else self.gemm_efficiency
        return self.peak[fmt] * eff

    def gemm_latency(self, fmt: str) -> float:
        """A GEMM kernel's fixed time beyond its roofline with ``fmt`` inputs."""
        return self.gemm_latency_s_32bit if fmt in ("fp32", "tf32", "fp64") else self.gemm_latency_s

    def attention_efficiency(self, head_dim: int) -> float:
        """Fused attention's share of the tensor-core peak at ``head_dim``.

        Per score element the kernel does 4 x head_dim FLOPs on the tensor cores and a fixed amount
        of softmax work (an exponential on the special-function units, the running max and sum on
        the CUDA cores) that does not shrink with the head, so 1 / efficiency = a + b / head_dim;
        the sheet's two points (head dims 64 and 128) fix a and b. On H100 this form, through
        FlashAttention-3's 64 and 128, gives 0.80 at 256, where the paper reports up to 0.75 (at 16k
        tokens, each CTA's fixed work included). A head the kernels have no tile for is padded first
        (``attention_head_tile``): that is the caller's to do.
        """
        inv64, inv128 = 1.0 / self.attention_efficiency_hd64, 1.0 / self.attention_efficiency_hd128
        b = 128.0 * (inv64 - inv128)
        a = inv128 - b / 128.0
        return 1.0 / max(1.0, a + b / max(1, head_dim))  # never above the peak

    def allreduce_bandwidth(self, devices: int) -> float:
        """Bytes/s one device moves in a ring all-reduce: its links to the ring's peers, derated."""
        if devices <= 1:
            return float("inf")
        return min(self.link_bandwidth, (devices - 1) * self.peer_bandwidth) * self.link_efficiency
