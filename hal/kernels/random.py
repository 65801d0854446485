"""Random generator kernels: RandomUniform(Like), RandomNormal(Like), Bernoulli, Multinomial.

Values come from numpy's PCG64 generator, seeded from the ``seed`` attribute when a node sets one
(the same seed gives the same values on every call) and from fresh OS entropy otherwise. ONNX leaves
the drawn values to the implementation, so only their distribution, shape and dtype are specified.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from onnx import TensorProto
from onnx.helper import tensor_dtype_to_np_dtype

from hal.kernels.registry import kernel

Array = np.ndarray


def _rng(seed: float | None) -> np.random.Generator:
    if seed is None:
        return np.random.default_rng()
    # every float is its own seed (0.5 and 0.7 differ), through its 64 bits
    return np.random.default_rng(int(np.float64(seed).view(np.uint64)))


def _dtype(dtype: int | None, like: Array | None = None) -> np.dtype:
    if dtype is None or dtype == 0:
        if like is None:
            return np.dtype(np.float32)
        return like.dtype
    return np.dtype(tensor_dtype_to_np_dtype(dtype))


def _uniform(shape: Sequence[int], dtype: np.dtype, low: float, high: float, seed: float | None) -> Array:
    u = _rng(seed).random(tuple(shape))
    return np.asarray(low + (high - low) * u).astype(dtype)


def _normal(shape: Sequence[int], dtype: np.dtype, mean: float, scale: float, seed: float | None) -> Array:
    return np.asarray(_rng(seed).normal(mean, scale, tuple(shape))).astype(dtype)


@kernel("RandomUniform", since=1)
def random_uniform(shape: Sequence[int], dtype: int = TensorProto.FLOAT, high: float = 1.0, low: float = 0.0,
                   seed: float | None = None) -> Array:
    return _uniform(shape, _dtype(dtype), low, high, seed)


@kernel("RandomNormal", since=1)
def random_normal(shape: Sequence[int], dtype: int = TensorProto.FLOAT, mean: float = 0.0, scale: float = 1.0,
                  seed: float | None = None) -> Array:
    return _normal(shape, _dtype(dtype), mean, scale, seed)


@kernel("RandomUniformLike", since=1)
def random_uniform_like(x: Array, dtype: int | None = None, high: float = 1.0, low: float = 0.0,
                        seed: float | None = None) -> Array:
    return _uniform(x.shape, _dtype(dtype, x), low, high, seed)


@kernel("RandomNormalLike", since=1)
def random_normal_like(x: Array, dtype: int | None = None, mean: float = 0.0, scale: float = 1.0,
                       seed: float | None = None) -> Array:
    return _normal(x.shape, _dtype(dtype, x), mean, scale, seed)


@kernel("Bernoulli", since=15)
def bernoulli(x: Array, dtype: int | None = None, seed: float | None = None) -> Array:
    """1 with probability ``x``, else 0, elementwise."""
    u = _rng(seed).random(x.shape)
    return np.asarray(u < x.astype(np.float64)).astype(_dtype(dtype, x))


@kernel("Multinomial", since=7)
def multinomial(x: Array, dtype: int = TensorProto.INT32, sample_size: int = 1, seed: float | None = None) -> Array:
    """``sample_size`` class draws per batch row from the unnormalised log-probabilities ``x`` [batch, class]."""
    logits = x.astype(np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    cdf = np.cumsum(p, axis=1)
    cdf /= cdf[:, -1:]
    u = _rng(seed).random((x.shape[0], sample_size))
    # inverse CDF: the first class whose cumulative probability exceeds u
    draws = np.minimum((u[:, :, None] >= cdf[:, None, :]).sum(axis=2), x.shape[1] - 1)
    return draws.astype(_dtype(dtype))
