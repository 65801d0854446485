"""What crosses between a session and a target's executable on every run, checked both ways.

Feeds in: each is the input's dtype and rank, its fixed dimensions, and not larger than the run's
memory bound (an InputError or ResourceError saying which feed and what was expected). Outputs back:
each value a partition must produce is there and, where the graph knows its element type, a numpy
array of that dtype; a plugin that returns anything else is a PluginError naming the target and
the output, raised at the boundary rather than as a wrong number in a later partition or a report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hal import limits
from hal.errors import HalError, InputError, ResourceError
from hal.feeds import map_feed
from hal.graph.ir import TensorInfo
from hal.plugins import hook_error
from hal.target import Executable

#: (name, dtype) of each tensor output whose element type the graph knows
OutputChecks = tuple[tuple[str, np.dtype], ...]


class Expected:
    """What the model's inputs are, as a hint's text: formatted only when a message needs it."""

    def __init__(self, inputs: Sequence[TensorInfo]):
        self.inputs = inputs

    def __format__(self, spec: str) -> str:
        return format("; ".join(t.describe() for t in self.inputs) or "no inputs", spec)


def feed_checks(inputs: Sequence[TensorInfo]) -> tuple[frozenset[str], tuple[tuple[str, Any, tuple[int, ...]], ...]]:
    """The input names, and (name, dtype, shape) of each tensor input whose dtype and shape are all
    known: what a session's quick path compares a run's feeds with."""
    exact = tuple((t.name, t.dtype, t.static_shape) for t in inputs
                  if t.kind == "tensor" and t.dtype is not None and t.static_shape is not None)
    return frozenset(t.name for t in inputs), exact


def checked_feeds(inputs: Sequence[TensorInfo], feeds: Any, names: frozenset[str], max_memory: int) -> dict[str, Any]:
    """``feeds`` as a new dict, every input checked: the full check, with its messages."""
    expected = Expected(inputs)
    if not isinstance(feeds, Mapping):
        raise InputError(f"feeds must be a dict of name -> numpy array, not {type(feeds).__name__}",
                         where="run", hint=f"the model expects: {expected}")
    absent = {t.name for t in inputs if t.kind == "optional" and t.name not in feeds}  # None, as onnxruntime
    missing = [n for n in names if n not in feeds and n not in absent]
    extra = [n for n in feeds if n not in names]
    if missing or extra:
        what = []
        if missing:
            what.append(f"missing {', '.join(sorted(missing))}")
        if extra:
            what.append(f"unexpected {', '.join(sorted(map(str, extra)))}")
        raise InputError("; ".join(what), where="run feeds", hint=f"the model expects: {expected}")
    out = {**feeds, **dict.fromkeys(absent)}
    for t in inputs:
        v = out[t.name]
        if t.kind == "map":
            out[t.name] = map_feed(t, v)
            continue
        if t.kind != "tensor":
            continue
        if not isinstance(v, np.ndarray):
            raise InputError(f"feed {t.name!r} is a {type(v).__name__}, not a numpy array",
                             where="run feeds", hint=f"expected {t.describe()}")
        dt = t.dtype
        if dt is not None and v.dtype != dt:
            raise InputError(f"feed {t.name!r} has dtype {v.dtype}, expected {dt}",
                             where="run feeds", hint=f"cast it: x.astype(np.{dt.name}); expected {t.describe()}")
        if t.shape is not None:
            if v.ndim != len(t.shape):
                raise InputError(f"feed {t.name!r} has rank {v.ndim} (shape {list(v.shape)}), expected rank "
                                 f"{len(t.shape)}", where="run feeds", hint=f"expected {t.describe()}")
            for axis, (want, got) in enumerate(zip(t.shape, v.shape)):
                # (a dimension name two inputs share may take two values, as in onnxruntime: Optimum's
                # merged seq2seq decoders are fed an empty encoder past beside the encoder's states)
                if isinstance(want, int) and want != got:
                    raise InputError(f"feed {t.name!r} has shape {list(v.shape)}; dimension {axis} must be "
                                     f"{want}", where="run feeds", hint=f"expected {t.describe()}")
        check_feed_size(t.name, v, max_memory)
    return out


def check_feed_size(name: str, v: np.ndarray, limit: int) -> None:
    """A feed spanning more than max_memory as an array (a broadcast view can, holding one element):
    the kernels would write results of its size, which the guards take to be in memory already."""
    if v.nbytes > limit:
        raise ResourceError(
            f"feed {name!r} {v.dtype}{list(v.shape)} spans {limits.format_bytes(v.nbytes)} ({v.nbytes:,} bytes) "
            f"as an array, more than max_memory {limits.format_bytes(limit)} ({limit:,} bytes); refused before "
            f"allocating: a kernel reading it would write a result that large", where="run feeds",
            hint=f"pass max_memory=<bytes> (or set {limits.ENV_MAX_MEMORY}) if this is intended, or feed less")


def output_checks(outputs: Sequence[TensorInfo]) -> OutputChecks:
    """What ``run_partition`` holds a partition's outputs to: tensors of the element type the graph
    gives them (shapes are not checked: onnxruntime too runs a model whose declared output shape is wrong)."""
    return tuple((t.name, t.dtype) for t in outputs if t.kind == "tensor" and t.dtype is not None)


@dataclass
class Partition:
    """Nodes that run together on one target: a session runs its partitions in order."""

    target: str
    executable: Executable
    nodes: list[str]
    inputs: list[str]
    outputs: list[str]
    checks: OutputChecks  # what its outputs must be (``output_checks``)
    key: str | None = None  # its program's compile-cache key


def run_partition(p: Partition, feeds: dict[str, Any]) -> Mapping[str, Any]:
    """One partition's run; a plugin that raises, omits an output or returns one of another type is a PluginError."""
    target, outputs = p.target, p.outputs
    try:
        out = p.executable.run(feeds)
    except HalError:
        raise
    except (Exception, SystemExit) as e:  # third-party code: name it, keep the session usable
        raise hook_error(target, f"run on target {target!r} raised {type(e).__name__}: {e}") from e
    if out.__class__ is dict or isinstance(out, Mapping):  # (a dict's class first: isinstance on an ABC is slow)
        for o in outputs:
            if o not in out:
                break
        else:
            for name, dt in p.checks:
                v = out[name]
                if v.__class__ is not np.ndarray or v.dtype != dt:
                    raise hook_error(target, f"run on target {target!r} returned output {name!r} as "
                                             f"{_what(v)}; the graph makes it a {dt} array")
            return out
    got = sorted(map(str, out)) if isinstance(out, Mapping) else type(out).__name__
    raise hook_error(target, f"run on target {target!r} returned {got}; expected outputs {', '.join(outputs)}")


def _what(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"a {v.dtype} array" if v.__class__ is np.ndarray else f"a {type(v).__name__} of {v.dtype}"
    if isinstance(v, np.generic):
        return f"a numpy {v.dtype} scalar, not an array"
    return f"a {type(v).__module__}.{type(v).__qualname__}, not a numpy array"
