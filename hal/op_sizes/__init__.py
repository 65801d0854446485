"""What each guarded op would allocate or loop over, computed from its kernel arguments before it runs.

``OUTPUT_SIZE[op](args, attrs)`` gives (shape, bytes per element) of the largest tensor the kernel
would make (its output, or an internal buffer such as Conv's im2col matrix), or None when there is
nothing to check; ``LOOP_COUNT[op](args, attrs)`` the iterations of a loop inside the kernel (pooling
taps, LRN's window). Sizes use Python integers, so a product of huge dimensions never wraps around.
The rules are upper bounds: malformed attributes are read the way the kernels read them, or left to
the kernel's own error. ``hal.limits.check_step`` applies them. One module per op family, as in
``hal.kernels``: ``tensor``, ``spatial``, ``linalg``, ``signal``, ``ml``, ``contrib`` (onnxruntime's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hal.op_sizes import contrib, linalg, ml, signal, spatial, tensor
from hal.op_sizes.tensor import REDUCING_OPS

#: op type -> (kernel args, attrs) -> (output shape, bytes per element) or None (nothing to check)
OUTPUT_SIZE: dict[str, Callable[[Sequence[Any], dict[str, Any]], tuple[list[int], int] | None]] = {
    **tensor.RULES, **spatial.RULES, **linalg.RULES, **signal.RULES, **ml.RULES, **contrib.RULES,
}

#: the most iterations a kernel's own loop may make (pooling taps, LRN's channel window): attributes
#: are a few bytes of model, and a loop inside one kernel call cannot be stopped by ``timeout_s``
MAX_KERNEL_ITERATIONS = 1 << 24

#: op type -> (kernel args, attrs) -> how many iterations the kernel's own loop will make
LOOP_COUNT = spatial.LOOPS

GUARDED_OPS = frozenset(OUTPUT_SIZE) | frozenset(LOOP_COUNT)

__all__ = ["GUARDED_OPS", "LOOP_COUNT", "MAX_KERNEL_ITERATIONS", "OUTPUT_SIZE", "REDUCING_OPS"]
