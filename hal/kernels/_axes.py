"""Axis arguments as every ONNX op reads them: an axis of a rank-r tensor lies in [-r, r-1], a
negative one counted from the back. One outside is the model's error, and numpy would not always
say so: a modulo wraps it onto some axis, and a 0-d array takes axis 0 as its only one."""

from __future__ import annotations


def axis_in(axis: int, rank: int) -> int:
    """``axis`` of a rank-``rank`` tensor counted from the front; ValueError when out of range."""
    if -rank <= axis < rank:
        return axis + rank if axis < 0 else axis
    raise ValueError(f"axis {axis} is out of range for a rank-{rank} input: it must lie in [{-rank}, {rank - 1}]"
                     if rank else f"axis {axis} given for a rank-0 input, which has no axes")
