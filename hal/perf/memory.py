"""Liveness-based memory plans: which buffers are alive at once, and the peak they need."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hal.graph.ir import Graph

if TYPE_CHECKING:
    from hal.specs import MemoryLevel


@dataclass(frozen=True)
class MemoryPlan:
    weights_bytes: int
    peak_activation_bytes: int   # the largest set of simultaneously live activations
    inputs_bytes: int

    @property
    def peak_bytes(self) -> int:
        return self.weights_bytes + self.peak_activation_bytes


def plan_memory(graph: Graph, steps: Sequence[tuple[Sequence[str], Sequence[str]]],
                nbytes: Callable[[str], int], weight_nbytes: Callable[[str], int] | None = None) -> MemoryPlan:
    """Walk ``steps`` ((inputs, outputs) in program order), allocating outputs when produced and
    freeing each activation after its last reader (graph outputs live to the end)."""
    weight_nbytes = weight_nbytes or nbytes
    last: dict[str, int] = {}
    for idx, (ins, outs) in enumerate(steps):
        for n in ins:
            if n and n not in graph.initializers:
                last[n] = idx
        for n in outs:
            if n:
                last.setdefault(n, idx)
    for o in graph.outputs:
        last[o.name] = len(steps)
    live = sum(nbytes(i.name) for i in graph.inputs)
    peak = live
    inputs_bytes = live
    for idx, (ins, outs) in enumerate(steps):
        live += sum(nbytes(n) for n in outs if n)
        peak = max(peak, live)
        for n in set(ins) | set(outs):
            if n and n not in graph.initializers and last.get(n) == idx:
                live -= nbytes(n)
    wb = sum(weight_nbytes(k) for k in graph.initializers)
    return MemoryPlan(wb, peak, inputs_bytes)


def per_device_bytes(memory: Iterable[MemoryLevel], peak_bytes: int | None) -> int | None:
    """The most one device holds at one level of a report's ``memory``, the figure its capacity bounds;
    ``peak_bytes`` where no level is per device. A report's ``peak_memory_bytes`` is not that figure on every
    target (one device's on a GPU or an LPU chip, every wafer's together on the wafer), so a table that
    sets targets side by side reads this one."""
    return max((m.bytes for m in memory if m.per_device), default=peak_bytes)
