"""The LPU program: instruction groups on functional slices, and the list scheduler that times them.

Each node becomes an *instruction group* on its chip: a MEM read that puts its operands on the
streams, the instruction on its functional slice (MXM / VXM / SXM), and a MEM write of the result;
the three are chained (each consumes the previous one's stream as it flows). A node split over
chips becomes one group per shard plus an SXM concat on the chip that gathers the shards. A value
needed on another chip is sent by a C2C instruction on the producer's chip. Instructions are
tile-level with a repeat count (320-byte vectors, or 320x320 MXM blocks), not one per vector, so a
70B-parameter decode over hundreds of chips stays at a few instructions per node.

A chip's C2C slice has one link per peer: sends to different chips occupy different links and
overlap; sends over the same link queue.

The scheduler visits instructions in program (topological) order and gives each the earliest start
cycle that satisfies its dependencies and finds its slice free: a *full* dependency waits for the
producer's last result; a *stream* dependency may start once the producer's first vector arrives,
but cannot finish consuming before the producer finishes producing. Gaps left on a slice are
back-filled. The result is static: the same graph and options give the same cycles every time.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np

SLICES = ("MEM", "SXM", "VXM", "MXM", "C2C")


@dataclass(slots=True)
class Instruction:
    """One scheduled instruction: it occupies ``slice`` of ``chip`` for ``issue`` cycles from ``start``
    and its last result is ready ``latency`` cycles later."""

    id: int
    group: int
    chip: int
    slice: str
    op: str
    issue: int
    latency: int
    repeat: int
    bytes: int
    deps: tuple[int, ...] = ()
    streams: tuple[int, ...] = ()
    link: int = -1     # C2C sends: the destination chip (each peer has its own link); -1 elsewhere
    start: int = 0

    @property
    def end(self) -> int:
        return self.start + self.issue + self.latency


@dataclass(slots=True)
class Group:
    """The instructions that carry one node (or one shard of it, a gather, or a chip-to-chip send)."""

    name: str
    kind: str                      # node | shard | gather | send
    chip: int
    unit: str
    nodes: list[str]
    op_types: list[str]
    flops: float = 0.0
    bytes: int = 0
    instructions: list[int] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class ProgramBuilder:
    """Collects instructions and groups in program order."""

    def __init__(self) -> None:
        self.instructions: list[Instruction] = []
        self.groups: list[Group] = []

    def group(self, name: str, kind: str, chip: int, unit: str, nodes: list[str], op_types: list[str],
              flops: float = 0.0, nbytes: int = 0, **details: Any) -> int:
        self.groups.append(Group(name, kind, chip, unit, nodes, op_types, flops, nbytes, [], details))
        return len(self.groups) - 1

    def emit(self, group: int, slice_: str, op: str, issue: int, latency: int, repeat: int, nbytes: int,
             deps: tuple[int, ...] = (), streams: tuple[int, ...] = (), link: int = -1) -> int:
        g = self.groups[group]
        ins = Instruction(len(self.instructions), group, g.chip, slice_, op, int(issue), int(latency),
                          int(repeat), int(nbytes), tuple(sorted(set(deps))), tuple(streams), link)
        self.instructions.append(ins)
        g.instructions.append(ins.id)
        return ins.id


#: a scheduled instruction's fixed-width fields, one row of ``Schedule``'s table
_ROW = np.dtype([("id", "<i4"), ("group", "<i4"), ("chip", "<i4"), ("slice", "u1"), ("op", "<u2"),
                 ("issue", "<i8"), ("latency", "<i8"), ("repeat", "<i8"), ("bytes", "<i8"), ("link", "<i4"),
                 ("start", "<i8")])


def _ragged(rows: list[tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length int rows as (offsets, flat values), row k being flat[offsets[k]:offsets[k + 1]]."""
    at = np.zeros(len(rows) + 1, np.int64)
    np.cumsum([len(r) for r in rows], out=at[1:])
    return at, np.fromiter(itertools.chain.from_iterable(rows), np.int32, int(at[-1]))


class Schedule(Sequence[Instruction]):
    """A scheduled program, read-only, in the order given (the compiler gives cycle order), kept as a
    table: a row of 59 bytes per instruction and its dependencies as int32s. As ``Instruction``
    objects with their tuples and ints, the 24-layer benchmark decoder's 23,823 instructions took
    7.4 MB; here they take 1.8 MB. Indexing and iteration hand out ``Instruction`` objects made
    from the rows."""

    __slots__ = ("_deps", "_ops", "_rows", "_slices", "_streams")

    def __init__(self, instructions: Sequence[Instruction]):
        self._slices = tuple(dict.fromkeys(i.slice for i in instructions))
        self._ops = tuple(dict.fromkeys(i.op for i in instructions))
        code = {"slice": {s: k for k, s in enumerate(self._slices)}, "op": {o: k for k, o in enumerate(self._ops)}}
        n = len(instructions)
        self._rows = rows = np.empty(n, _ROW)
        for name in _ROW.names:  # a column at a time: no row tuples, whose garbage the heap would keep
            c = code.get(name)
            rows[name] = np.fromiter((getattr(i, name) for i in instructions) if c is None
                                     else (c[getattr(i, name)] for i in instructions), _ROW[name], n)
        self._deps = _ragged([i.deps for i in instructions])
        self._streams = _ragged([i.streams for i in instructions])

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, k: int) -> Instruction: ...

    @overload
    def __getitem__(self, k: slice) -> list[Instruction]: ...

    def __getitem__(self, k: int | slice) -> Instruction | list[Instruction]:
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(len(self)))]
        n = len(self)
        if not -n <= k < n:
            raise IndexError(f"instruction {k} of a schedule of {n}")
        k %= n
        return self._make(self._rows[k].tolist(), k)

    def __iter__(self) -> Iterator[Instruction]:
        for k, row in enumerate(self._rows.tolist()):
            yield self._make(row, k)

    def _make(self, row: tuple[Any, ...], k: int) -> Instruction:
        (at, flat), (sat, sflat) = self._deps, self._streams
        deps = tuple(flat[at[k]:at[k + 1]].tolist())
        streams = tuple(sflat[sat[k]:sat[k + 1]].tolist())
        id_, group, chip, sl, op, issue, latency, repeat, nbytes, link, start = row
        return Instruction(id_, group, chip, self._slices[sl], self._ops[op], issue, latency, repeat, nbytes,
                           deps, streams, link, start)


class _SliceTimeline:
    """Busy intervals of one slice, sorted and disjoint, touching ones merged (so that a slice busy
    back to back is one interval, and placing the next instruction there costs no scan of all the
    ones before it); finds the earliest gap of a given length."""

    __slots__ = ("ends", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def place(self, t: int, length: int) -> int:
        starts, ends = self.starts, self.ends
        i = bisect.bisect_right(starts, t) - 1
        if i >= 0 and ends[i] > t:
            t = ends[i]
        i += 1
        while i < len(starts) and starts[i] < t + length:
            t = max(t, ends[i])
            i += 1
        end = t + length  # every interval before i ends by t; every one from i on starts at end or later
        joins_next = i < len(starts) and starts[i] == end
        if i > 0 and ends[i - 1] == t:
            if joins_next:  # fills the gap between two intervals exactly: they become one
                ends[i - 1] = ends[i]
                del starts[i], ends[i]
            else:
                ends[i - 1] = end
        elif joins_next:
            starts[i] = t
        else:
            starts.insert(i, t)
            ends.insert(i, end)
        return t


def schedule(instructions: list[Instruction]) -> int:
    """Give every instruction its start cycle (in place); returns the schedule's length in cycles."""
    timelines: dict[tuple[int, str, int], _SliceTimeline] = {}
    length = 0
    for ins in instructions:
        t = 0
        for d in ins.deps:
            e = instructions[d].end
            if e > t:
                t = e
        for s in ins.streams:
            p = instructions[s]
            t = max(t, p.start + p.latency, p.end - ins.issue)
        if ins.issue > 0:
            key = (ins.chip, ins.slice, ins.link)
            tl = timelines.get(key)
            if tl is None:
                tl = timelines[key] = _SliceTimeline()
            t = tl.place(t, ins.issue)
        ins.start = t
        if ins.end > length:
            length = ins.end
    return length


def check(instructions: list[Instruction]) -> list[str]:
    """Every violated constraint of a schedule (empty when it respects dependencies and occupancy)."""
    bad = []
    for ins in instructions:
        for d in ins.deps:
            if ins.start < instructions[d].end:
                bad.append(f"instruction {ins.id} starts at {ins.start} before {d} ends at {instructions[d].end}")
        for s in ins.streams:
            p = instructions[s]
            if ins.start < p.start + p.latency or ins.start + ins.issue < p.end:
                bad.append(f"instruction {ins.id} consumes the stream of {s} before it is produced")
    by_slice: dict[tuple[int, str, int], list[Instruction]] = {}
    for ins in instructions:
        if ins.issue > 0:
            by_slice.setdefault((ins.chip, ins.slice, ins.link), []).append(ins)
    for (chip, sl, _), items in by_slice.items():
        items.sort(key=lambda i: i.start)
        for a, b in itertools.pairwise(items):
            if b.start < a.start + a.issue:
                bad.append(f"chip {chip} {sl}: instructions {a.id} and {b.id} overlap")
    return bad
