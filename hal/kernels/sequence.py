"""Sequence and optional kernels. A sequence is a Python list of arrays; an empty optional is None.

Kernels never modify a sequence they receive: insert and erase return a new list.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hal.kernels.registry import KernelContext, kernel


def _position(position: Any, length: int, *, inclusive: bool = False) -> int:
    """A (possibly negative) position checked against ONNX's range: [-n, n-1], or [-n, n] when
    ``inclusive`` (inserting at the end)."""
    p = int(np.asarray(position).reshape(-1)[0])
    hi = length if inclusive else length - 1
    if not -length <= p <= hi:
        raise IndexError(f"sequence position {p} is out of range for a sequence of length {length}")
    return p + length if p < 0 else p


@kernel("SequenceEmpty", since=11)
def sequence_empty(dtype=1):
    return []


@kernel("SequenceConstruct", since=11)
def sequence_construct(*inputs):
    return list(inputs)


@kernel("SequenceAt", since=11)
def sequence_at(input_sequence, position):
    return input_sequence[_position(position, len(input_sequence))]


@kernel("SequenceInsert", since=11)
def sequence_insert(input_sequence, tensor, position=None):
    out = list(input_sequence)
    if position is None:
        out.append(tensor)
    else:
        out.insert(_position(position, len(out), inclusive=True), tensor)
    return out


@kernel("SequenceErase", since=11)
def sequence_erase(input_sequence, position=None):
    out = list(input_sequence)
    if not out:
        raise IndexError("SequenceErase on an empty sequence")
    del out[-1 if position is None else _position(position, len(out))]
    return out


@kernel("SequenceLength", since=11)
def sequence_length(input_sequence):
    return np.array(len(input_sequence), dtype=np.int64)


@kernel("SplitToSequence", since=11)
def split_to_sequence(input, split=None, axis=0, keepdims=1):
    axis = axis + input.ndim if axis < 0 else axis
    n = input.shape[axis]
    if split is None:
        parts = np.split(input, n, axis=axis) if n else []
        return [np.squeeze(p, axis=axis) for p in parts] if not keepdims else parts
    sizes = np.asarray(split).astype(np.int64)
    if sizes.ndim == 0:
        step = int(sizes)
        bounds = list(range(step, n, step))
    else:
        if int(sizes.sum()) != n:
            raise ValueError(f"split sizes {sizes.tolist()} do not add up to dimension {axis} of size {n}")
        bounds = np.cumsum(sizes)[:-1].tolist()
    return np.split(input, bounds, axis=axis)


@kernel("ConcatFromSequence", since=11)
def concat_from_sequence(input_sequence, axis, new_axis=0):
    if not input_sequence:
        raise ValueError("ConcatFromSequence of an empty sequence")
    if new_axis:
        rank = input_sequence[0].ndim + 1
        return np.stack(input_sequence, axis=axis + rank if axis < 0 else axis)
    return np.concatenate(input_sequence, axis=axis)


@kernel("SequenceMap", since=17, context=True)
def sequence_map(input_sequence, *additional_inputs, body, _ctx: KernelContext):
    """Apply ``body`` to each item of the sequences (tensors among the extra inputs are passed
    unchanged to every call); each body output becomes one output sequence."""
    n = len(input_sequence)
    for extra in additional_inputs:
        if isinstance(extra, list) and len(extra) != n:
            raise ValueError(f"SequenceMap inputs have different lengths ({n} and {len(extra)})")
    results: list[list[Any]] = [[] for _ in body.output_names]
    for i in range(n):
        args = [input_sequence[i], *(x[i] if isinstance(x, list) else x for x in additional_inputs)]
        for k, v in enumerate(body(*args, scope=_ctx.scope)):
            results[k].append(v)
    return tuple(results)


# --- Optional --------------------------------------------------------------------------------------


@kernel("Optional", since=15)
def optional(input=None, type=None):
    return input


@kernel("OptionalHasElement", since=15)
def optional_has_element(input=None):
    return np.array(input is not None)


@kernel("OptionalGetElement", since=15)
def optional_get_element(input=None):
    if input is None:
        raise ValueError("OptionalGetElement of an empty optional")
    return input
