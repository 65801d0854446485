"""The LPU executable: the static schedule, and its numeric work run with numpy.

``program`` is the schedule — every instruction with its chip, slice and start cycle, in cycle
order; latency, the trace and the report come from it. A run computes the instructions that carry
numeric work (a node's functional-slice instruction, a shard's MXM instruction, a gather's concat)
through the kernel engine in program order: the order the compiler emitted them, each after the
instructions it depends on. Any order the dependencies allow gives the same bits; cycle order
interleaves the branches the chip runs side by side (ShuffleNet's two paths in each unit), and the
host's allocator then scatters their buffers: the same run touched 5.6 MB of heap in cycle order
against 4.6 MB in program order, for the same 3.2 MB peak of live arrays. At exact numerics, runs
of whole nodes' reference kernels are fused as the cpu target fuses them (bit-identical; the
schedule is not touched). Chip-to-chip sends move bytes between SRAMs; the emulation holds every
chip's values in one store, so they carry no numeric work. The executable is immutable after
compile: runs share nothing mutable, so threads may run it at once.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hal.engine import Program
from hal.perf.trace import event
from hal.specs import CompileReport
from hal_lpu.report import KERNEL_ONLY_DETAILS
from hal_lpu.schedule import Group, Schedule


def shard_call(fn: Any, weight: int, w_axis: int, lo: int, hi: int, bias: int | None, bias_axis: int, /,
               *args: Any, **attrs: Any) -> Any:
    """One chip's share of a split node: its columns [lo, hi) of the weight (and bias), then the kernel."""
    args = list(args)
    w = args[weight]
    idx = [slice(None)] * w.ndim
    idx[w_axis] = slice(lo, hi)
    args[weight] = w[tuple(idx)]
    if bias is not None and bias < len(args) and args[bias] is not None:
        b = args[bias]
        bidx = [slice(None)] * b.ndim
        bidx[bias_axis] = slice(lo, hi)
        args[bias] = b[tuple(bidx)]
    return fn(*args, **attrs)


def act_shard_call(fn: Any, slicing: tuple[int | None, ...], lo: int, hi: int, view: tuple[int, ...] | None, /,
                   *args: Any, **attrs: Any) -> Any:
    """One chip's slice of a node split along an activation axis: rows [lo, hi) of each input that has
    the axis (``slicing``: its axis per input, None for inputs read whole or already sliced); a view
    (Reshape, ...) reshapes the slice to its share of the output shape."""
    if view is not None:
        return np.reshape(args[0], view)
    args = list(args)
    for k, ax in enumerate(slicing):
        if ax is not None and args[k] is not None:
            idx = [slice(None)] * args[k].ndim
            idx[ax] = slice(lo, hi)
            args[k] = args[k][tuple(idx)]
    return fn(*args, **attrs)


def gather_shards(axis: int, /, *parts: np.ndarray) -> np.ndarray:
    """The SXM concat that joins the shards' outputs on the gathering chip."""
    return np.concatenate(parts, axis=axis)


class LpuExecutable:
    """A compiled LPU program: the schedule, its numeric steps in program order, and the report."""

    def __init__(self, program: Schedule, kinds: Sequence[str], engine: Program, report: CompileReport,
                 clock_hz: float, cycles: int):
        #: the schedule: every instruction with its start cycle, slice and chip, in cycle order
        self.program = program
        #: each instruction group's kind (node, shard, gather, send); the rest of a group is its kernel
        #: in the report, which has one kernel a group in the same order
        self._kinds = tuple(kinds)
        self.cycles = cycles
        self.clock_hz = clock_hz
        self.report = report
        self._engine = engine

    @property
    def groups(self) -> list[Group]:
        """The instruction groups, made from the report's kernels and the program's instructions: the
        figures of a group are kept once, in its kernel (tiny-gpt's 72 groups held 31 KB as objects)."""
        members: list[list[int]] = [[] for _ in self._kinds]
        for ins in self.program:
            members[ins.group].append(ins.id)
        out = []
        for kind, k, ids in zip(self._kinds, self.report.kernels, members):
            details = {key: v for key, v in k.details.items() if key not in KERNEL_ONLY_DETAILS}
            out.append(Group(k.name, kind, k.details["chip"], k.unit or "", list(k.nodes), list(k.op_types),
                             k.flops, int(k.bytes), sorted(ids), details))
        return out

    def trace(self) -> list[dict[str, Any]]:
        """One event per instruction: pid = chip, tid = functional slice, times from the schedule."""
        f = self.clock_hz
        groups = self.groups
        events = []
        for ins in self.program:
            g = groups[ins.group]
            events.append(event(f"{ins.op} {g.name}", ins.start / f, (ins.issue + ins.latency) / f,
                                pid=f"chip {ins.chip}", tid=ins.slice, cat=g.kind,
                                args={"cycle": ins.start, "issue_cycles": ins.issue, "latency_cycles": ins.latency,
                                      "repeat": ins.repeat, "bytes": ins.bytes, "nodes": g.nodes}))
        return events

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Execute the program's numeric instructions (RunError when shape-only)."""
        return self._engine.run(feeds)

    def serialize(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)
