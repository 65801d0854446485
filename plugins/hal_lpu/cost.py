"""Cycles, bytes and joules of LPU instructions, from the numbers of the spec sheet.

A TSP-class chip streams 320-byte vectors (one byte per lane) between its functional slices; the
streams (32 eastward + 32 westward) are how every operand reaches a slice, so an instruction's
occupancy is the larger of its arithmetic (vectors through the slice) and the bytes it moves over
the streams. Latency is the pipeline depth: the transit from a MEM slice to the functional slice and
back, plus the slice's own depth. Chip-to-chip sends pay the link bandwidth and a hop latency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hal.specs import TargetSpec


def _ceil(x: float) -> int:
    return math.ceil(x - 1e-9) if x > 0 else 0


@dataclass(frozen=True)
class Machine:
    """One TSP-class chip and its links, read once from the spec sheet (plain numbers for the hot loops)."""

    clock_hz: float
    lanes: int
    superlanes: int
    sram_bytes: int
    stream_bytes_per_cycle: float   # 64 streams x 320 B: what reaches or leaves the functional slices
    mxm_planes: int
    mxm_dim: int
    fp16_slowdown: float            # int8 MAC rate / fp16 MAC rate of the MXM
    vxm_ops_per_cycle: float        # 320 lanes x 16 ALUs
    transit_cycles: int             # stream transit between a MEM slice and a functional slice
    vxm_latency: int
    mxm_latency: int
    sxm_latency: int
    c2c_bytes_per_cycle: float      # one chip-to-chip transfer's bandwidth
    c2c_hop_cycles: int             # one chip-to-chip hop, first byte out to first byte in
    c2c_stripe_links: int           # links one large send may be striped over (direct + 2-hop paths)
    c2c_stripe_min_bytes: float     # sends at least this large are bulk: striped when that is faster
    power_w: float
    max_chips: int

    @classmethod
    def from_spec(cls, spec: TargetSpec, sram_bytes: int | None = None) -> Machine:
        hw = spec.hw
        clock = hw("clock_hz")
        lanes = int(hw("lanes"))
        return cls(
            clock_hz=clock,
            lanes=lanes,
            superlanes=int(hw("superlanes")),
            sram_bytes=int(sram_bytes if sram_bytes is not None else hw("sram_bytes")),
            stream_bytes_per_cycle=2 * hw("streams_per_direction") * lanes,
            mxm_planes=int(hw("mxm_planes")),
            mxm_dim=int(hw("mxm_plane_dim")),
            fp16_slowdown=hw("peak_ops_int8") / hw("peak_flops_fp16"),
            vxm_ops_per_cycle=lanes * hw("vxm_alus_per_lane"),
            transit_cycles=int(hw("stream_transit_cycles")),
            vxm_latency=int(hw("vxm_latency_cycles")),
            mxm_latency=int(hw("mxm_latency_cycles")),
            sxm_latency=int(hw("sxm_latency_cycles")),
            c2c_bytes_per_cycle=hw("c2c_link_bandwidth") * hw("c2c_links_per_transfer") / clock,
            c2c_hop_cycles=_ceil(hw("c2c_hop_latency_s") * clock),
            c2c_stripe_links=int(hw("c2c_stripe_links")) if "c2c_stripe_links" in spec.hardware else 1,
            c2c_stripe_min_bytes=hw("c2c_stripe_min_bytes") if "c2c_stripe_min_bytes" in spec.hardware else 0.0,
            power_w=hw("tdp_w"),
            max_chips=int(hw("max_system_chips")),
        )

    # -- occupancy (issue cycles) of each instruction kind --------------------------------------
    def stream_cycles(self, nbytes: float) -> int:
        """Cycles to put ``nbytes`` on (or take them off) the streams: MEM reads and writes, SXM moves."""
        return _ceil(nbytes / self.stream_bytes_per_cycle)

    def vector_count(self, nbytes: float) -> int:
        """How many 320-byte vectors a tensor of ``nbytes`` tiles into (the repeat count)."""
        return _ceil(nbytes / self.lanes)

    def vxm_cycles(self, ops: float, nbytes: float) -> int:
        """Elementwise work: every ALU of every lane each cycle, unless the streams feed it slower."""
        return max(_ceil(ops / self.vxm_ops_per_cycle), self.stream_cycles(nbytes), 1)

    def mxm_blocks(self, batch: int, k: int, n: int) -> int:
        """320x320 weight blocks of a [K, N] operand (per batch entry)."""
        d = self.mxm_dim
        return batch * _ceil(k / d) * _ceil(n / d)

    def mxm_cycles(self, batch: int, m: int, k: int, n: int, install_bytes: float, fmt: str) -> int:
        """A matrix product on the MXM planes: each 320x320 block is installed from the streams and
        ``m`` activation vectors pass through it; installs of the next block overlap the current one,
        so the occupancy is the larger of the two. fp16 runs at the int8 rate / fp16_slowdown."""
        rate = 1.0 if fmt == "int8" else self.fp16_slowdown
        blocks = self.mxm_blocks(batch, k, n)
        compute = _ceil(blocks / self.mxm_planes) * m * rate
        install = self.stream_cycles(install_bytes)
        return max(_ceil(compute), install, 1)

    def c2c_stripes(self, nbytes: float) -> int:
        """Links a send is striped over: the direct link alone, or, for a bulk send, also the 2-hop paths
        through other chips of the node (one more hop latency), whichever delivers the last byte first."""
        best, best_t = 1, nbytes / self.c2c_bytes_per_cycle + self.c2c_hop_cycles
        if nbytes < self.c2c_stripe_min_bytes:
            return 1  # latency-sensitive traffic takes the minimal route
        for k in range(2, self.c2c_stripe_links + 1):
            t = nbytes / (k * self.c2c_bytes_per_cycle) + 2 * self.c2c_hop_cycles
            if t < best_t:
                best, best_t = k, t
        return best

    def c2c_cycles(self, nbytes: float) -> int:
        """Occupancy of a send: its bytes over the links it is striped over."""
        return max(_ceil(nbytes / (self.c2c_stripes(nbytes) * self.c2c_bytes_per_cycle)), 1)

    def c2c_latency(self, nbytes: float) -> int:
        """First byte out to first byte in: one hop, two when the send is striped over 2-hop paths."""
        return self.c2c_hop_cycles * (1 if self.c2c_stripes(nbytes) == 1 else 2)

    # -- time and energy ----------------------------------------------------------------------
    def seconds(self, cycles: float) -> float:
        return cycles / self.clock_hz

    def energy_j(self, cycles: int, chips: int) -> float:
        """Every chip of the pipeline is powered for the whole run: chips x TDP x latency (an upper bound)."""
        return self.power_w * chips * self.seconds(cycles)
