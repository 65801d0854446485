"""A Relu and the node next to it as one step (``relu_pool``, ``norm_relu`` and ``add_relu`` in
``hal.graph.fuse``): the pool run first and the Relu on its smaller result, or a BatchNormalization or
an Add and the Relu after it in one compiled pass, with the max's NaN and signed-zero rules;
bit-identical to the nodes one by one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hal.kernels import activation, elementwise, jit, normalization
from hal.kernels.fused import _F32, Array, Key, _Fused


class ReluPool(_Fused):
    """A Relu and the MaxPool that alone reads it, pooled first: max over a window of max(x, 0) is
    max(max over the window, 0) value for value (a NaN in the window stays NaN either way, and both
    orders end in the Relu's own max against +0), so the Relu runs on the pooled result, a quarter
    of its input at stride 2 (SqueezeNet's stem: 64x111x111 floats -> 64x55x55). ``hal.graph.fuse``
    pairs only pools whose every window reads the image, never all padding."""

    _derived = ("_ufunc_relu",)

    def __init__(self, relu: Key, pool: Key):
        self.keys = [relu, pool]
        self._bind()

    def _bind(self) -> None:
        super()._bind()
        self._ufunc_relu = self.fns[0] is activation.relu  # the Relu is max(x, 0): it may run in place

    def __call__(self, x: Any, **attrs: Any) -> Any:
        relu, pool = self.fns
        y = pool(x, **attrs)
        if (self._ufunc_relu and y.__class__ is np.ndarray and y is not x and y.base is None and y.ndim
                and y.flags.writeable):  # a result the pool made for this call: nobody else holds it
            return activation.relu_into(y, y)
        return relu(y)


class NormRelu(_Fused):
    """An inference BatchNormalization and the Relu that alone reads it (the step's inputs: the
    BatchNormalization's five), as one pass over the tensor (``normalization.batch_norm_relu``):
    DenseNet's pre-activation BN-Relu before each of its convs, where the two kernels make three
    passes (the multiply into a new tensor, the add and the max in place). The same bits; a
    training-mode node, or kernels other than the registry's, run one after the other."""

    _derived = ("_one_pass",)

    def __init__(self, norm: Key, relu: Key):
        self.keys = [norm, relu]
        self._bind()

    def _bind(self) -> None:
        super()._bind()
        # the opset 9+ kernels are _batchnorm_infer outside training mode (opset 1's ``spatial`` is not)
        self._one_pass = self.keys[0][2] >= 9 and self.fns[1] is activation.relu

    def __call__(self, x: Any, scale: Any, bias: Any, mean: Any, var: Any, **attrs: Any) -> Any:
        if self._one_pass and not attrs.get("training_mode", 0) and x.__class__ is np.ndarray:
            epsilon = attrs.get("epsilon", normalization.DEFAULT_EPSILON)
            return normalization.batch_norm_relu(x, scale, bias, mean, var, epsilon)
        norm, relu = self.fns
        y = norm(x, scale, bias, mean, var, **attrs)
        return relu(y[0] if y.__class__ is tuple else y)


class AddRelu(_Fused):
    """An Add (or a Sum of two) and the Relu that alone reads it (the step's inputs: the Add's two),
    as ResNet's and ShuffleNet's residual joins: for two float32 operands of one shape, one compiled
    pass (``_loops.add_relu``) where the kernels make two, the same bits (1x256x56x56 with cold
    caches, in place: 430 -> 317 us; 1x2048x7x7 94 -> 50). The engine runs it into an operand's
    buffer as it runs an Add (``in_place_form``); other operands run the two kernels in turn."""

    _derived = ("_one_pass", "in_place_form")

    def __init__(self, add: Key, relu: Key):
        self.keys = [add, relu]
        self._bind()

    def _bind(self) -> None:
        super()._bind()
        self._one_pass = self.fns[0] in (elementwise.add, elementwise.sum_) and self.fns[1] is activation.relu
        #: what the engine calls to run the step into an operand's buffer: (a ufunc-like call, arity)
        self.in_place_form = (self._into, 2) if self._one_pass else None

    def _flat(self, a: Any, b: Any) -> bool:
        """Whether the compiled pass takes a and b: float32 arrays of one shape, C-contiguous, not empty."""
        return (self._one_pass and a.__class__ is np.ndarray and b.__class__ is np.ndarray and a.dtype is _F32
                and b.dtype is _F32 and a.shape == b.shape and a.size and a.flags.c_contiguous
                and b.flags.c_contiguous and jit.enabled())

    def __call__(self, a: Any, b: Any) -> Any:
        if self._flat(a, b):
            out = np.empty_like(a)
            jit.loops().add_relu(a.reshape(-1), b.reshape(-1), out.reshape(-1))
            return out
        return self.fns[1](self.fns[0](a, b))

    def _into(self, a: Any, b: Any, out: Array) -> Array:
        """The step into ``out``, which is a or b (``hal.engine.inplace.in_place`` checked it is the
        run's alone, of the result's dtype and shape)."""
        if self._flat(a, b):
            first = out is a
            jit.loops().add_relu_into(out.reshape(-1), (b if first else a).reshape(-1), first)
            return out
        np.add(a, b, out=out)
        return activation.relu_into(out, out)


__all__ = ["AddRelu", "NormRelu", "ReluPool"]
