"""Feeds: seeded inputs of a model's declared shapes, for commands that run a model without user data,
and map feeds checked against their declared key and value types."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from onnx import helper

from hal import limits
from hal.errors import InputError, ResourceError, a_or_an
from hal.graph.ir import Graph, TensorInfo
from hal.numerics import is_float

#: ops that carry an input's values on unchanged (rearranged, cast, broadcast): ids reach a Gather
#: through them, as Hugging Face's ``input_ids.view(-1, seq)`` and int32 ids cast to int64 do
_CARRIES_VALUES = frozenset({"Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Expand",
                             "Transpose", "Slice", "Tile", "Concat"})


def _gather_bound(graph: Graph, n: Any) -> int | None:
    """The size of the axis Gather ``n`` gathers along, if known."""
    data = graph.initializers.get(n.inputs[0])
    shape = data.shape if data is not None else (graph.values.get(n.inputs[0]) or TensorInfo("")).shape
    axis = n.attrs.get("axis", 0)
    if shape and isinstance(axis, int) and -len(shape) <= axis < len(shape) and isinstance(shape[axis], int):
        return int(shape[axis])  # (an out-of-range axis is the kernel's error to report, not ours)
    return None


def _index_bound(graph: Graph, name: str) -> int | None:
    """If ``name`` indexes a Gather, directly or through ops that carry its values on (a Reshape, a
    Cast), the size of the gathered axis (the smallest, for several), so random ids stay in range."""
    readers: dict[str, list[Any]] = {}
    for n in graph.nodes:
        for i in n.inputs:
            readers.setdefault(i, []).append(n)
    bounds, seen, todo = [], {name}, [name]
    while todo:
        value = todo.pop()
        for n in readers.get(value, ()):
            if n.op_type == "Gather" and len(n.inputs) > 1 and n.inputs[1] == value:
                if (b := _gather_bound(graph, n)) is not None:
                    bounds.append(b)
            elif n.op_type in _CARRIES_VALUES and n.domain in ("", "ai.onnx") and (
                    n.op_type == "Concat" or n.inputs[0] == value):
                todo.extend(o for o in n.outputs[:1] if o and o not in seen)
                seen.update(n.outputs[:1])
    return min(bounds) if bounds else None


def resolve_shape(t: TensorInfo, dims: Mapping[str, int]) -> tuple[int, ...]:
    if t.shape is None:
        raise InputError(f"input {t.name!r} has no declared shape", where="random inputs",
                         hint="pass the input explicitly")
    out = []
    for d in t.shape:
        if isinstance(d, int):
            out.append(d)
        elif isinstance(d, str) and d in dims:
            out.append(int(dims[d]))
        elif d is None or isinstance(d, str):
            out.append(int(dims.get("*", 1)))
    return tuple(out)


def ones_note(graph: Graph, names: Iterable[str], dims: Mapping[str, int] | None = None) -> str | None:
    """What a run on random inputs should say when it fails: the open dimensions of the inputs ``names``
    that ``random_feeds`` set to 1 (a model built for other sizes fails on them, a Reshape to a fixed
    shape, a mask of another length), and how to give sizes instead; None when there are none."""
    dims = dims or {}
    wanted = set(names)
    ones = [f"{t.name}[{a}]" + (f" '{d}'" if isinstance(d, str) else "") for t in graph.inputs if t.name in wanted
            for a, d in enumerate(t.shape or ()) if not isinstance(d, int)
            and (d is None or d not in dims) and "*" not in dims]
    if not ones:
        return None
    return (f"the random inputs set their open dimensions to 1 ({', '.join(ones[:6])}"
            f"{f' and {len(ones) - 6} more' if len(ones) > 6 else ''}): give the sizes the model was built for "
            "(dims=, hal --dim NAME=N) or your own inputs (inputs=, hal --inputs FILE.npz)")


#: where a value hal cannot invent comes from instead
FEED_IT = "feed it yourself: hal run --input/--inputs, hal compare --inputs, or InferenceSession.run"


def random_feeds(graph: Graph, seed: int = 0, dims: Mapping[str, int] | None = None,
                 max_memory: int | None = None) -> dict[str, np.ndarray]:
    """One seeded array per graph input: normal floats, in-range ids for Gather indices, ones for
    integer masks (an input named ``*mask*``: 1 keeps a position, as in Hugging Face's
    ``attention_mask``), and bools as ``random_bools`` draws them (an even mix, both values in every
    row); dynamic dimensions from ``dims`` (by name, ``"*"`` for any), else 1. An input larger than
    ``max_memory`` (default: hal's, half the RAM) is a ResourceError before anything is allocated."""
    seed = as_int(seed, "seed", 0, "random inputs")
    if dims is not None and not isinstance(dims, Mapping):
        raise InputError(f"dims must be a dict of dimension name -> size, not {type(dims).__name__}",
                         where="random inputs", hint="e.g. dims={'batch': 4}; '*' sets every unnamed one")
    dims = {k: as_int(v, f"dims[{k!r}]", 0, "random inputs") for k, v in (dims or {}).items()}
    rng = np.random.default_rng(seed)
    # bools draw from a stream of their own, so the other inputs are the ones they were before bools were drawn
    bool_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    named = {d for t in graph.inputs for d in (t.shape or ()) if isinstance(d, str)}
    if unknown := sorted(set(dims) - named - {"*"}):
        raise InputError(f"no input has a dimension named {', '.join(map(repr, unknown))}", where="random inputs",
                         hint=f"the inputs' dimension names: {', '.join(sorted(named)) or 'none (every size is fixed)'}"
                              "; '*' sets every unnamed one")
    bound = limits.effective_max_memory(max_memory)
    feeds = {}
    for t in graph.inputs:
        if t.kind != "tensor" or t.dtype is None:
            raise InputError(f"input {t.name!r} is {a_or_an(t.kind)}; hal cannot invent it", where="random inputs",
                             hint=FEED_IT)
        shape = resolve_shape(t, dims)
        dt = t.dtype
        floating = is_float(dt)
        # the input's own size first, in its own dtype (and numpy's empty-shape limit)
        limits.check_alloc(f"random input {t.name!r}", shape, dt, where="random inputs", max_memory=bound)
        # floats and ids are drawn as float64 and int64 first: bound the draw, not only the result
        drawn = np.dtype(np.float64 if floating else np.int64 if dt.kind in "iu" else dt)
        if (draw := limits.nbytes_of(shape, drawn.itemsize)) > bound:
            own = limits.nbytes_of(shape, dt.itemsize)
            raise ResourceError(
                f"random input {t.name!r} {dt.name}{list(shape)} is {limits.format_bytes(own)} ({own:,} bytes), "
                f"but is drawn as {drawn.name} first: {limits.format_bytes(draw)} ({draw:,} bytes), more than "
                f"max_memory {limits.format_bytes(bound)} ({bound:,} bytes); refused before allocating",
                where="random inputs",
                hint=f"pass max_memory=<bytes> (or set {limits.ENV_MAX_MEMORY}) if this is intended, smaller "
                     f"dimensions (dims=, hal --dim), or {FEED_IT}")
        if floating:
            feeds[t.name] = rng.standard_normal(shape).astype(np.float32).astype(dt)
        elif dt.kind in "iu":
            if "mask" in t.name.lower():
                feeds[t.name] = np.ones(shape, dtype=dt)
            else:
                hi = _index_bound(graph, t.name) or 2
                feeds[t.name] = rng.integers(0, hi, size=shape).astype(dt)
        elif dt.kind == "b":
            feeds[t.name] = random_bools(bool_rng, shape)
        elif dt.kind == "O":
            raise InputError(f"input {t.name!r} is a string tensor; hal cannot invent its text", where="random inputs",
                             hint=f"{FEED_IT}; on the command line as a numpy str array, which np.save and np.savez "
                                  f"store without pickling: np.savez(FILE, {t.name}=np.array(['text', ...]))")
        else:
            raise InputError(f"input {t.name!r} has dtype {dt}; hal cannot invent it", where="random inputs",
                             hint=FEED_IT)
    return feeds


def random_bools(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Seeded fair coin flips, with one True and one False in every row of two or more values along the
    last axis. A bool input is a mask as often as not, and masks disagree on what True means (torch's
    ``key_padding_mask`` and ``MultiheadAttention``'s ``attn_mask``: ignore; ``scaled_dot_product_attention``'s
    and a keep-mask's: attend); a row all of one value masks every position under one of them, and an
    attention row with nothing to attend to is NaN. So every row keeps something and masks something,
    whichever the convention, and the masked paths run too (all True, as hal drew them before, made a
    torch encoder's every output NaN). A row of one value, or a scalar (an If's condition), is a plain
    flip: feed a mask over a single position yourself where its value matters."""
    out = rng.random(shape) < 0.5
    if len(shape) == 0 or shape[-1] < 2 or out.size == 0:
        return out
    rows = out.reshape(-1, shape[-1])
    uniform = np.flatnonzero(rows.all(axis=1) | ~rows.any(axis=1))
    flip = rng.integers(0, shape[-1], size=uniform.size)
    rows[uniform, flip] = ~rows[uniform, flip]
    return rows.reshape(shape)


def as_int(value: Any, name: str, minimum: int, where: str) -> int:
    """An integer argument: an int, a numpy integer or a string of digits (as the command line gives
    it), at least ``minimum``; a bool, a fraction or anything else is an InputError."""
    number: int | None = None
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        number = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
        number = int(value)
    if number is None:
        raise InputError(f"{name} must be an integer, not {value!r}", where=where)
    if number < minimum:
        raise InputError(f"{name} must be at least {minimum}, got {number}", where=where)
    return number


class MapValue(dict):  # type: ignore[type-arg]
    """An ONNX map as a dict that keeps the key and value types it was declared with, so a kernel
    (DictVectorizer, CastMap) knows its output's dtype even for an empty map."""

    __slots__ = ("key_dtype", "value_dtype")  # no __dict__ a map: ZipMap makes one per row

    def __init__(self, items: Any, key_dtype: np.dtype, value_dtype: np.dtype):
        super().__init__(items)
        self.key_dtype = key_dtype if isinstance(key_dtype, np.dtype) else np.dtype(key_dtype)
        self.value_dtype = value_dtype if isinstance(value_dtype, np.dtype) else np.dtype(value_dtype)


def _map_types(t: TensorInfo) -> tuple[np.dtype, np.dtype] | None:
    """(key dtype, value dtype) of a map input whose values are scalar tensors, else None."""
    mt = t.type_proto.map_type if t.type_proto is not None else None
    if mt is None or not mt.value_type.HasField("tensor_type"):
        return None
    try:
        return (np.dtype(helper.tensor_dtype_to_np_dtype(mt.key_type)),
                np.dtype(helper.tensor_dtype_to_np_dtype(mt.value_type.tensor_type.elem_type)))
    except (KeyError, TypeError, ValueError):
        return None


def map_feed(t: TensorInfo, v: Any) -> MapValue:
    """A feed of a map input as a ``MapValue``: a dict whose keys have the declared key type and
    whose values convert to the declared value type, else an InputError saying which entry."""
    types = _map_types(t)
    if types is None:
        raise InputError(f"input {t.name!r} is a map hal does not take (values must be scalars)",
                         where="run feeds", hint="maps of string or int64 keys to scalar values are supported")
    key_dt, value_dt = types
    want = f"a dict of {key_dt.name if key_dt.kind != 'O' else 'str'} keys and {value_dt.name} values"
    if not isinstance(v, Mapping):
        raise InputError(f"feed {t.name!r} is {a_or_an(type(v).__name__)}, not a map", where="run feeds",
                         hint=f"pass {want}")
    strings = key_dt.kind == "O"
    out = {}
    for k, x in v.items():
        ok = isinstance(k, str) if strings else isinstance(k, (int, np.integer)) and not isinstance(k, bool)
        if not ok:
            raise InputError(f"feed {t.name!r} has key {k!r} ({type(k).__name__})", where="run feeds",
                             hint=f"pass {want}")
        try:
            value = np.asarray(x, dtype=value_dt)
        except (TypeError, ValueError, OverflowError):
            value = None
        if value is None or value.ndim:
            raise InputError(f"feed {t.name!r} maps {k!r} to {x!r}, not a {value_dt.name} scalar", where="run feeds",
                             hint=f"pass {want}")
        out[k if strings else int(k)] = value[()]
    return MapValue(out, key_dt, value_dt)
