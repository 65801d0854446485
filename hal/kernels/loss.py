"""Loss kernels: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.

Both take scores of shape (N, C, d1, ..., dk) and integer targets of shape (N, d1, ..., dk). The
per-element loss is ``-input[n, target, d...] * weight[target]``; targets equal to ``ignore_index``
contribute 0 and drop out of the ``mean`` denominator (the sum of the weights that were used).
float16 / bfloat16 are computed in float32 and rounded once.
"""

from __future__ import annotations

import numpy as np

from hal.kernels.registry import kernel

Array = np.ndarray


def _wide(x: Array) -> Array:
    return x.astype(np.float32) if x.dtype.itemsize < 4 else x


def _nll(logp: Array, target: Array, weight: Array | None, ignore_index: int | None, reduction: str
         ) -> Array:
    """The loss from log-probabilities ``logp`` (N, C, ...) in their (wide) dtype."""
    if logp.ndim < 2:
        raise ValueError(f"loss input needs shape (N, C, ...), got {logp.shape}")
    if target.shape != logp.shape[:1] + logp.shape[2:]:
        raise ValueError(f"loss target shape {target.shape} does not match input {logp.shape} without C")
    if reduction not in ("none", "sum", "mean"):
        raise ValueError(f"loss reduction must be none, sum or mean, got {reduction!r}")
    t = target.astype(np.int64, copy=False)
    keep = None if ignore_index is None else t != ignore_index
    safe = np.clip(t, 0, logp.shape[1] - 1)  # ignored targets may lie outside [0, C)
    picked = np.take_along_axis(logp, safe[:, None], axis=1)[:, 0]
    w = None
    if weight is not None:
        w = _wide(weight)[safe].astype(logp.dtype, copy=False)
        if keep is not None:
            w = np.where(keep, w, logp.dtype.type(0))
    elif keep is not None:
        w = keep.astype(logp.dtype)
    loss = -picked if w is None else -picked * w
    if reduction == "none":
        return loss
    total = np.sum(loss, dtype=logp.dtype)
    if reduction == "sum":
        return np.asarray(total)
    count = loss.size if w is None else np.sum(w, dtype=logp.dtype)
    return np.asarray(total / count)


@kernel("NegativeLogLikelihoodLoss", since=12)
def negative_log_likelihood_loss(input, target, weight=None, *, ignore_index=None, reduction="mean"):
    out = _nll(_wide(input), target, weight, ignore_index, reduction)
    return np.asarray(out, dtype=input.dtype)


@kernel("SoftmaxCrossEntropyLoss", since=12, output_count=True)
def softmax_cross_entropy_loss(scores, labels, weights=None, *, ignore_index=None, reduction="mean",
                               _n_outputs=1):
    """NLL of log_softmax(scores) over axis 1; the second output, when asked for, is that log_softmax."""
    x = _wide(scores)
    shifted = x - np.max(x, axis=1, keepdims=True)
    log_prob = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    loss = np.asarray(_nll(log_prob, labels, weights, ignore_index, reduction), dtype=scores.dtype)
    if _n_outputs > 1:
        return loss, log_prob.astype(scores.dtype)
    return loss
