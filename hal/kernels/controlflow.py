"""Control-flow kernels: If, Loop, Scan, running their bodies through ``hal.engine.Subgraph``.

A body is compiled once (lazily) into its own flat program; names it reads from the enclosing graph
come from ``_ctx.scope``. Bodies return lists of values, so loop-carried values may be sequences
(lists of arrays) or empty optionals (None) as well as tensors. Every kernel returns a tuple, one
item per node output.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from hal import limits
from hal.errors import ResourceError
from hal.kernels._axes import axis_in
from hal.kernels.registry import KernelContext, kernel


def _truth(v: Any) -> bool:
    return bool(np.asarray(v).reshape(-1)[0])


def _empty_scan_output(body: Any, index: int) -> np.ndarray:
    """A zero-iteration scan output: shape [0, *element shape] from the body's declared output."""
    vi = body.proto.output[index]
    tt = vi.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type) if tt.elem_type else np.float32
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tt.shape.dim] if tt.HasField("shape") else []
    return np.zeros([0, *dims], dtype=dtype)


class _ScanOutputs:
    """The scan outputs of a Loop or Scan, one element a turn per output, to be stacked at the end.

    No step guards their growth, so a loop of many turns (a Loop's M a run's value or its cond never
    false; a Scan over a long axis of empty elements) would fill memory before it ends: a
    ResourceError stops it once one output holds more than max_memory.
    """

    def __init__(self, body: Any, first: int, ctx: KernelContext):
        self.body, self.first, self.node = body, first, ctx.node
        self.items: list[list[Any]] = [[] for _ in range(len(body.output_names) - first)]
        self.nbytes = [0] * len(self.items)
        self.bound = limits.current().max_memory

    def add(self, outs: Any, turn: int) -> None:
        for k, items in enumerate(self.items):
            y = outs[self.first + k]
            items.append(y)
            self.nbytes[k] += getattr(y, "nbytes", 0)
            if self.nbytes[k] > self.bound:
                name = self.body.output_names[self.first + k]
                raise ResourceError(
                    f"scan output {name!r} reached {limits.format_bytes(self.nbytes[k])} ({self.nbytes[k]:,} bytes) "
                    f"after {turn + 1:,} iterations, more than max_memory {limits.format_bytes(self.bound)} "
                    f"({self.bound:,} bytes); stopped before stacking it", where=f"node {self.node!r}",
                    hint=f"check the loop's trip count, condition or scanned axis, or pass max_memory=<bytes> "
                         f"(or set {limits.ENV_MAX_MEMORY}) if this is intended")

    def stacked(self) -> list[np.ndarray]:
        """Each output's elements stacked along a new axis 0 (zero turns: from the body's declared output)."""
        return [np.stack(s) if s else _empty_scan_output(self.body, self.first + k) for k, s in enumerate(self.items)]


# --- If --------------------------------------------------------------------------------------------


@kernel("If", since=1, context=True)
def if_(cond, *, then_branch, else_branch, _ctx: KernelContext):
    branch = then_branch if _truth(cond) else else_branch
    return tuple(branch(scope=_ctx.scope))


# --- Loop ------------------------------------------------------------------------------------------


@kernel("Loop", since=1, context=True)
def loop(M=None, cond=None, *v_initial, body, _ctx: KernelContext):
    """Run ``body`` while ``cond`` holds and fewer than ``M`` iterations ran (either may be absent).

    Outputs: the final loop-carried values, then each scan output stacked along a new axis 0.
    """
    n_carried = len(v_initial)
    trip = None if M is None else int(np.asarray(M).reshape(-1)[0])
    keep = True if cond is None else _truth(cond)
    carried = list(v_initial)
    scans = _ScanOutputs(body, 1 + n_carried, _ctx)
    i = 0
    while keep and (trip is None or i < trip):
        outs = body(np.array(i, dtype=np.int64), np.array(keep), *carried, scope=_ctx.scope)
        keep = _truth(outs[0])
        carried = list(outs[1:1 + n_carried])
        scans.add(outs, i)
        i += 1
    return (*carried, *scans.stacked())


# --- Scan ------------------------------------------------------------------------------------------


def _scan(states: list[Any], xs: list[np.ndarray], body: Any, ctx: KernelContext, in_axes: list[int],
          in_dirs: list[int], out_axes: list[int], out_dirs: list[int]) -> tuple[list[Any], list[np.ndarray]]:
    """One scan over ``xs`` (each along its own axis and direction); returns (states, scan outputs)."""
    n_state = len(states)
    axes = [axis_in(a, x.ndim) for a, x in zip(in_axes, xs)]
    length = xs[0].shape[axes[0]] if xs else 0
    collected = _ScanOutputs(body, n_state, ctx)
    for t in range(length):
        slices = [np.take(x, length - 1 - t if d else t, axis=a) for x, a, d in zip(xs, axes, in_dirs)]
        outs = body(*states, *slices, scope=ctx.scope)
        states = list(outs[:n_state])
        collected.add(outs, t)
    for k, items in enumerate(collected.items):
        if out_dirs[k]:
            items.reverse()
    results = []
    for k, y in enumerate(collected.stacked()):
        axis = axis_in(out_axes[k], y.ndim) if collected.items[k] else 0
        results.append(np.moveaxis(y, 0, axis) if axis else y)
    return states, results


def _per_input(values: list[int] | None, n: int) -> list[int]:
    return list(values) + [0] * (n - len(values)) if values else [0] * n


def _scan_counts(n_args: int, num_scan_inputs: int, body: Any) -> tuple[int, int]:
    """(state variables, scan outputs) of a Scan, after checking ``num_scan_inputs`` against what the
    node and its body have (a count past them would size per-input lists by it)."""
    n_state = n_args - num_scan_inputs
    if not 1 <= num_scan_inputs <= n_args or n_state > len(body.output_names):
        raise ValueError(f"Scan: num_scan_inputs={num_scan_inputs} does not fit {n_args} inputs and a body of "
                         f"{len(body.output_names)} outputs (state variables come first, then scan inputs)")
    return n_state, len(body.output_names) - n_state


@kernel("Scan", since=9, context=True)
def scan(*args, body, num_scan_inputs, scan_input_axes=None, scan_input_directions=None,
         scan_output_axes=None, scan_output_directions=None, _ctx: KernelContext):
    n_state, n_out = _scan_counts(len(args), num_scan_inputs, body)
    states, ys = _scan(list(args[:n_state]), list(args[n_state:]), body, _ctx,
                       _per_input(scan_input_axes, num_scan_inputs),
                       _per_input(scan_input_directions, num_scan_inputs),
                       _per_input(scan_output_axes, n_out), _per_input(scan_output_directions, n_out))
    return (*states, *ys)


@kernel("Scan", since=8, context=True)
def scan_8(sequence_lens, *args, body, num_scan_inputs, directions=None, _ctx: KernelContext):
    """Scan-8: axis 0 of every input is a batch; scan inputs are scanned along axis 1, each batch
    item up to its ``sequence_lens`` entry. Scan outputs are zero past a short sequence, out to the
    scan axis's full length (the spec's "padded to the maximum-sequence-length", the dimension of
    the inputs' axis 1), as in onnxruntime, even where no entry reaches it."""
    n_state, n_out = _scan_counts(len(args), num_scan_inputs, body)
    states_in, xs = list(args[:n_state]), list(args[n_state:])
    batch = (states_in or xs)[0].shape[0]
    full = xs[0].shape[1] if xs else 0
    lens = [full] * batch if sequence_lens is None else [int(v) for v in np.asarray(sequence_lens).reshape(-1)]
    dirs = _per_input(directions, num_scan_inputs)
    per_state: list[list[Any]] = [[] for _ in range(n_state)]
    per_out: list[list[np.ndarray]] = [[] for _ in range(n_out)]
    for b in range(batch):
        states, ys = _scan([s[b] for s in states_in], [x[b, :lens[b]] for x in xs], body, _ctx,
                           [0] * num_scan_inputs, dirs, [0] * n_out, [0] * n_out)
        for k, s in enumerate(states):
            per_state[k].append(s)
        for k, y in enumerate(ys):
            per_out[k].append(y)
    outs: list[Any] = [np.stack(s) for s in per_state]
    for items in per_out:
        padded = [np.concatenate([y, np.zeros((full - y.shape[0], *y.shape[1:]), y.dtype)]) if y.shape[0] < full
                  else y for y in items]
        outs.append(np.stack(padded))
    return tuple(outs)
