"""What crosses between a session and a target's executable on every run, checked both ways.

Feeds in: each is the input's dtype and rank, its fixed dimensions, and not larger than the run's
memory bound (an InputError or ResourceError saying which feed and what was expected). Outputs back:
each value a partition must produce is there and, where the graph knows its element type, a numpy
array of that dtype. Anything else is raised at the boundary rather than as a wrong number in a
later partition or a report: from a plugin, a PluginError naming the target and the output; from
hal's own kernels, which make the types onnx's schemas give, the model's ModelError. Once, before
any run: the executable a plugin's compile hands back has the protocol's methods and a report that
validates (``checked_executable``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from pydantic import BaseModel, ValidationError

from hal import limits
from hal.errors import HalError, InputError, ModelError, ResourceError, a_or_an
from hal.feeds import map_feed
from hal.graph.ir import TensorInfo, np_dtype
from hal.plugins import hook_error, is_own_target
from hal.specs import CompileReport, KernelReport, NodePlacement
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
        if t.kind == "tensor":
            out[t.name] = tensor_feed(t.name, v, t.dtype, t.shape, t.describe(), max_memory)
        elif t.kind == "map":
            out[t.name] = map_feed(t, v)
        elif t.kind in ("sequence", "optional") and t.type_proto is not None:
            out[t.name] = _typed_feed(t.name, v, t.type_proto, f"{t.name}: {_type_words(t.type_proto)}", max_memory)
    return out


def tensor_feed(label: str, v: Any, dt: np.dtype | None, shape: Sequence[Any] | None, expected: str,
                max_memory: int) -> np.ndarray:
    """A feed of a tensor (or a sequence's item, or an optional's value) checked against its declared
    element type and shape: an InputError saying what is wrong and what to pass. An ndarray subclass
    (np.matrix, np.memmap) is taken as the plain array it views, a numpy str array for a string
    tensor as the object array of its str; a masked array is refused (its mask would be dropped)."""
    if v.__class__ is not np.ndarray:
        if not isinstance(v, np.ndarray):
            cast = f"np.asarray(value, dtype={_dtype_expr(dt)})" if dt is not None else "np.asarray(value)"
            raise InputError(f"feed {label!r} is {a_or_an(type(v).__name__)}, not a numpy array", where="run feeds",
                             hint=f"pass {cast}; expected {expected}")
        ma = sys.modules.get("numpy.ma")
        if ma is not None and isinstance(v, ma.MaskedArray):
            raise InputError(f"feed {label!r} is a masked array; the model would read its masked values",
                             where="run feeds", hint=f"pass x.filled(value) (a plain array); expected {expected}")
        v = v.view(np.ndarray)  # np.matrix, np.memmap, ...: the same memory as a plain array
    if dt is not None and v.dtype != dt:
        if dt.kind == "O" and v.dtype.kind == "U":  # a str array for a string tensor: its str, as onnxruntime
            v = v.astype(object)
        else:
            # a string tensor takes a str array (which np.savez stores without a pickle, so the CLI reads it too)
            cast = "str" if dt.kind == "O" else _dtype_expr(dt)
            raise InputError(f"feed {label!r} has dtype {v.dtype}, expected {dt}",
                             where="run feeds", hint=f"cast it: x.astype({cast}); expected {expected}")
    if shape is not None:
        if v.ndim != len(shape):
            raise InputError(f"feed {label!r} has rank {v.ndim} (shape {list(v.shape)}), expected rank "
                             f"{len(shape)}", where="run feeds", hint=f"expected {expected}")
        for axis, (want, got) in enumerate(zip(shape, v.shape)):
            # (a dimension name two inputs share may take two values, as in onnxruntime: Optimum's
            # merged seq2seq decoders are fed an empty encoder past beside the encoder's states)
            if isinstance(want, int) and want != got:
                raise InputError(f"feed {label!r} has shape {list(v.shape)}; dimension {axis} must be "
                                 f"{want}", where="run feeds", hint=f"expected {expected}")
    check_feed_size(label, v, max_memory)
    return v


def _dtype_expr(dt: np.dtype | None) -> str:
    """How to name ``dt`` in a hint's code: np.float32, object (strings), np.dtype('bfloat16')."""
    if dt is None:
        return "..."
    if dt.kind == "O":
        return "object"
    if dt.type.__module__ == "ml_dtypes":
        return f"ml_dtypes.{dt.name}"
    return f"np.{dt.name}" if getattr(np, dt.name, None) is dt.type else f"np.dtype({dt.name!r})"


def _type_words(tp: onnx.TypeProto) -> str:
    """A declared type in a hint's words: float32[2, ?], a sequence of float32[?], an optional ..."""
    which = tp.WhichOneof("value")
    if which == "tensor_type":
        tt = tp.tensor_type
        dt = np_dtype(tt.elem_type)
        dims = "[" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else d.dim_param or "?"
                               for d in tt.shape.dim) + "]" if tt.HasField("shape") else "[?]"
        return f"{dt.name if dt is not None else 'tensor'}{dims}"
    if which == "sequence_type":
        return f"a sequence (list) of {_type_words(tp.sequence_type.elem_type)}"
    if which == "optional_type":
        return f"an optional (None or) {_type_words(tp.optional_type.elem_type)}"
    if which == "map_type":
        key = np_dtype(tp.map_type.key_type)
        return f"a map (dict) of {'str' if key is None or key.kind == 'O' else key.name} to " \
               f"{_type_words(tp.map_type.value_type)}"
    return which or "a value"


def _typed_feed(label: str, v: Any, tp: onnx.TypeProto, expected: str, max_memory: int) -> Any:
    """A feed of a sequence or optional input (or an item of one) checked against its declared type:
    a sequence is a list (or tuple) of its items, an optional None or its value."""
    which = tp.WhichOneof("value")
    if which == "tensor_type":
        tt = tp.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim) \
            if tt.HasField("shape") else None
        return tensor_feed(label, v, np_dtype(tt.elem_type), shape, expected, max_memory)
    if which == "sequence_type":
        if not isinstance(v, (list, tuple)):
            raise InputError(f"feed {label!r} is {a_or_an(type(v).__name__)}, not a sequence", where="run feeds",
                             hint=f"pass a list of its items (numpy arrays); expected {expected}")
        elem = tp.sequence_type.elem_type
        return [_typed_feed(f"{label}[{i}]", x, elem, expected, max_memory) for i, x in enumerate(v)]
    if which == "optional_type":
        return None if v is None else _typed_feed(label, v, tp.optional_type.elem_type, expected, max_memory)
    if which == "map_type":
        return map_feed(TensorInfo(label, 0, None, "map", tp), v)
    return v  # a type hal does not check (sparse tensors, opaque): the kernels say what they take


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
                    raise _wrong_output(target, name, v, dt)
            # only its outputs: another key would overwrite a value of the same name in the session's
            return out if len(out) == len(outputs) else {o: out[o] for o in outputs}
    if isinstance(out, Mapping):
        missing = [o for o in outputs if o not in out]
        got = (f"outputs {', '.join(sorted(map(str, out)))}, without {', '.join(missing)}" if out else
               f"no outputs (an empty {type(out).__name__}), without {', '.join(missing)}")
    else:
        got = f"{a_or_an(type(out).__name__)}, not a dict of output name -> array"
    raise hook_error(target, f"run on target {target!r} returned {got}; expected outputs {', '.join(outputs)}")


def _wrong_output(target: str, name: str, v: Any, dt: np.dtype) -> HalError:
    """An output not of the graph's type. From a plugin, its fault. From hal's own kernels, which make the
    types onnx's schemas give, another type (a dtype, a sequence, no value) means the model declares
    another type than its ops make, where onnx's inference could not check it at load (onnxruntime
    refuses such a model)."""
    if is_own_target(target):
        made = a_or_an(f"{v.dtype} array") if isinstance(v, np.ndarray) else \
            "a sequence" if isinstance(v, list) else "no value (an empty optional)" if v is None else _what(v)
        return ModelError(f"{name!r} comes out {made} on target {target!r}, but the model declares it a tensor of "
                          f"{dt}", where=f"output {name!r}",
                          hint="fix the type the model declares for it (a value_info or graph output), or the "
                               "converter that wrote it; if the model is right, report it to hal")
    return hook_error(target, f"run on target {target!r} returned output {name!r} as {_what(v)}; the graph makes "
                              f"it {a_or_an(f'{dt} array')}")


def _what(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return a_or_an(f"{v.dtype} array") if v.__class__ is np.ndarray else a_or_an(f"{type(v).__name__} of {v.dtype}")
    if isinstance(v, np.generic):
        return f"a numpy {v.dtype} scalar, not an array"
    return f"{a_or_an(type(v).__module__)}.{type(v).__qualname__}, not a numpy array"


def checked_executable(exe: Any, name: str) -> Executable:
    """The executable a plugin's compile returned, if it has the protocol's methods and a valid report
    (else the plugin's PluginError naming the field)."""
    missing = [m for m in ("run", "trace", "serialize") if not callable(getattr(exe, m, None))]
    if missing:
        raise hook_error(name, f"compile on target {name!r} returned {a_or_an(type(exe).__name__)} without "
                               f"{', '.join(missing)}", hint="return an object implementing hal.target.Executable")
    where: tuple[Any, ...] = ()
    try:
        report = exe.report
        if not isinstance(report, CompileReport):
            raise TypeError(f"report is {a_or_an(type(report).__name__)}, not a CompileReport")
        # fields may be set after construction, unchecked: the report is validated as it is now, its
        # kernels and placements one at a time (a dump and a validated copy of the whole report took
        # the 24-layer benchmark decoder's cpu session build to 39.1 MB traced at its peak, 36.6 so)
        CompileReport.model_validate(report.model_dump(warnings=False, exclude=set(_REPORT_LISTS)))
        for field, model in _REPORT_LISTS.items():
            items = getattr(report, field)
            if not isinstance(items, list):
                where = (field,)
                raise TypeError(f"{a_or_an(type(items).__name__)}, not a list")
            for k, item in enumerate(items):
                where = (field, k)
                model.model_validate(item.model_dump(warnings=False) if isinstance(item, BaseModel) else item)
        where = ()
        # (report.target is not held to the target's name: plugins that wrap hal's cpu target, the
        # tests' faulty-* fixtures among them, hand back its report naming 'cpu')
        why = next((f"{f}: {v!r}, not a finite number (None: not modelled)" for f in ("latency_s", "energy_j")
                    if (v := getattr(report, f)) is not None and not math.isfinite(v)), None)
        if why is not None:
            raise hook_error(name, f"target {name!r} produced an invalid compile report ({why})",
                             hint="see specs/schemas/CompileReport.schema.json")
    except HalError:
        raise
    except (Exception, SystemExit) as e:
        first = e.errors()[0] if isinstance(e, ValidationError) else None
        why = (f"{'.'.join(map(str, (*where, *first['loc'])))}: {first['msg']}" if first else
               f"{'.'.join(map(str, where)) + ': ' if where else ''}{type(e).__name__}: {e}")
        raise hook_error(name, f"target {name!r} produced an invalid compile report ({why})",
                         hint="see specs/schemas/CompileReport.schema.json") from None
    return exe


#: a compile report's lists, each item validated on its own
_REPORT_LISTS: dict[str, type[BaseModel]] = {"kernels": KernelReport, "placement": NodePlacement}
