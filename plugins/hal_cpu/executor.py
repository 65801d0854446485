"""Run the host program: the engine's flat step loop, exact."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any

from hal.engine import Program
from hal.specs import CompileReport


class CpuExecutable:
    def __init__(self, program: Program, report: CompileReport):
        self.program = program
        self.report = report

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        return self.program.run(feeds)

    def trace(self) -> list[dict[str, Any]]:
        # The host program has no modelled timeline: one zero-length event per step, in order.
        return [{"ph": "X", "name": k.name, "cat": ",".join(k.op_types), "ts": float(i), "dur": 1.0,
                 "pid": "cpu", "tid": "host", "args": {"flops": k.flops, "bytes": k.bytes}}
                for i, k in enumerate(self.report.kernels)]

    def serialize(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)
