"""ai.onnx.preview.training optimiser kernels: Momentum, Adagrad, Adam.

Each takes the learning rate R and step count T, then the tensors to update as groups of equal
length (X..., G..., and the optimiser's state ...), and returns the updated groups in the same order.
Updates run in float64 and return each tensor in its own dtype.
"""

from __future__ import annotations

import math

import numpy as np

from hal.kernels.registry import kernel

Array = np.ndarray
TRAINING = "ai.onnx.preview.training"


def _groups(tensors: tuple[Array, ...], count: int, op: str) -> list[tuple[Array, ...]]:
    """Split (X1..Xn, G1..Gn, ...) into n tuples (Xi, Gi, ...)."""
    if len(tensors) % count:
        raise ValueError(f"{op} takes {count} groups of equally many tensors, got {len(tensors)} tensors")
    n = len(tensors) // count
    return [tuple(tensors[k * n + i] for k in range(count)) for i in range(n)]


def _f64(*arrays: Array) -> list[Array]:
    return [np.asarray(a, dtype=np.float64) for a in arrays]


@kernel("Momentum", since=1, domain=TRAINING)
def momentum(r: Array, t: Array, *tensors: Array, alpha: float, beta: float, mode: str, norm_coefficient: float
             ) -> tuple[Array, ...]:
    """V' = alpha V + beta' (G + norm X), beta' = 1 on the first step; X' = X - R V' (or Nesterov's step)."""
    if mode not in ("standard", "nesterov"):
        raise ValueError(f"Momentum: unknown mode {mode!r}")
    rate = float(np.asarray(r).reshape(-1)[0])
    step = int(np.asarray(t).reshape(-1)[0])
    b = beta if step > 0 else 1.0
    xs, vs = [], []
    for x, g, v in _groups(tensors, 3, "Momentum"):
        xf, gf, vf = _f64(x, g, v)
        grad = norm_coefficient * xf + gf
        v_new = alpha * vf + b * grad
        x_new = xf - rate * (v_new if mode == "standard" else grad + alpha * v_new)
        xs.append(x_new.astype(x.dtype))
        vs.append(v_new.astype(v.dtype))
    return tuple(xs + vs)


@kernel("Adagrad", since=1, domain=TRAINING)
def adagrad(r: Array, t: Array, *tensors: Array, decay_factor: float = 0.0, epsilon: float = 1e-6,
            norm_coefficient: float = 0.0) -> tuple[Array, ...]:
    """H' = H + G'^2 with G' = G + norm X; X' = X - R / (1 + T decay) * G' / (sqrt(H') + epsilon)."""
    rate = float(np.asarray(r).reshape(-1)[0]) / (1 + int(np.asarray(t).reshape(-1)[0]) * decay_factor)
    xs, hs = [], []
    for x, g, h in _groups(tensors, 3, "Adagrad"):
        xf, gf, hf = _f64(x, g, h)
        grad = norm_coefficient * xf + gf
        h_new = hf + grad * grad
        xs.append((xf - rate * grad / (np.sqrt(h_new) + epsilon)).astype(x.dtype))
        hs.append(h_new.astype(h.dtype))
    return tuple(xs + hs)


@kernel("Adam", since=1, domain=TRAINING)
def adam(r: Array, t: Array, *tensors: Array, alpha: float = 0.9, beta: float = 0.999, epsilon: float = 1e-6,
         norm_coefficient: float = 0.0, norm_coefficient_post: float = 0.0) -> tuple[Array, ...]:
    """Adam with bias-corrected rate (from T > 0 on), L2 terms before and after the step."""
    rate = float(np.asarray(r).reshape(-1)[0])
    step = int(np.asarray(t).reshape(-1)[0])
    if step > 0:
        rate = rate * math.sqrt(1 - beta ** step) / (1 - alpha ** step)
    xs, vs, hs = [], [], []
    for x, g, v, h in _groups(tensors, 4, "Adam"):
        xf, gf, vf, hf = _f64(x, g, v, h)
        grad = norm_coefficient * xf + gf
        v_new = alpha * vf + (1 - alpha) * grad
        h_new = beta * hf + (1 - beta) * grad * grad
        x_new = (1 - norm_coefficient_post) * (xf - rate * v_new / (np.sqrt(h_new) + epsilon))
        xs.append(x_new.astype(x.dtype))
        vs.append(v_new.astype(v.dtype))
        hs.append(h_new.astype(h.dtype))
    return tuple(xs + vs + hs)
