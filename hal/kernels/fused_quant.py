"""A QuantizeLinear and the DequantizeLinear that alone reads its codes as one step
(``quantize_dequantize`` in ``hal.graph.fuse``), bit-identical to the two kernels."""

from __future__ import annotations

from typing import Any

import numpy as np

from hal.kernels.fused import Key, _Fused
from hal.kernels.quantize import _quantize_compiled, dequantize_linear, quantize_linear


class QuantizeDequantize(_Fused):
    """A QuantizeLinear and the DequantizeLinear that alone reads its codes, with the same scale, zero
    point and axis (``quantize_dequantize`` in ``hal.graph.fuse``; the step's inputs: the
    QuantizeLinear's): an explicitly quantized model's pair around every op. For float32 and int8 or
    uint8 codes one compiled pass, with no codes in between (``_quant_loops.quantize_float32``,
    the two kernels' bits); otherwise the two kernels in turn."""

    _derived = ("_registry",)

    def __init__(self, quantize: Key, dequantize: Key):
        self.keys = [quantize, dequantize]
        self._bind()

    def _bind(self) -> None:
        super()._bind()
        self._registry = self.fns[0] is quantize_linear and self.fns[1] is dequantize_linear

    def __call__(self, x: Any, scale: Any, zero: Any = None, **attrs: Any) -> Any:
        axis = attrs.get("axis", 1)
        if self._registry and x.__class__ is np.ndarray:
            out = np.asarray(zero).dtype if zero is not None else np.dtype(np.uint8)
            y = _quantize_compiled(x, np.asarray(scale), zero, axis, out, dequantized=True)
            if y is not None:
                return y
        quantize, dequantize = self.fns
        return dequantize(quantize(x, scale, zero, **attrs), scale, zero, axis=axis)
