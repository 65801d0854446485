"""ai.onnx.ml linear models and SVMs: LinearClassifier, LinearRegressor, SVMClassifier, SVMRegressor.

Every op casts X to float32 (as onnxruntime does) and views it as (samples, features) with a 1-D X as
one sample. The linear models take their products in float32, as onnxruntime's GEMM (and onnx's
reference) do: a label breaks a float32 tie as onnxruntime's does, and a PROBIT near 0.5, which
magnifies a score's last bit, sees the same score. The SVMs take theirs in float64 before rounding
the float32 outputs. An SVM first builds the (samples, support vectors) kernel matrix; SVMClassifier
then sums it per class pair (one-vs-one), votes for the label and, given prob_a/prob_b, turns pair
scores into class probabilities with Platt scaling and libsvm's pairwise coupling (iterated in float32,
per sample, as onnxruntime iterates it). The kernel matrix is built and reduced one row block at a
time, so it never exceeds ``_BLOCK`` entries.
Binary outputs follow onnxruntime's conventions, which differ from op to op; see ``_two_columns``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from hal.kernels import jit
from hal.kernels.ml import ML, POST_TRANSFORMS, apply_post_transform, laid_out, string_array
from hal.kernels.registry import kernel

Array = np.ndarray
KERNEL_TYPES = ("LINEAR", "POLY", "RBF", "SIGMOID")
_INPUT_TYPES = (np.float32, np.float64, np.int32, np.int64)
_BLOCK = 1 << 20  # float64 elements in one block of the kernel matrix (and of the direct RBF distances)


def _rows(op: str, x: Array, dtype: type = np.float64) -> Array:
    """X as a (samples, features) matrix of its float32 values, in ``dtype`` (float64 or float32); a 1-D X
    is one sample."""
    if x.dtype.type not in _INPUT_TYPES:
        raise ValueError(f"{op}: X must be float32, float64, int32 or int64, got {x.dtype}")
    if x.ndim not in (1, 2):
        raise ValueError(f"{op}: X must be 1-D or 2-D, got shape {x.shape}")
    shape = (x.shape[0] if x.ndim == 2 else 1, x.shape[-1])
    if x.dtype.type is np.float32:  # (to float64 exactly, or as it is: no float32 copy)
        return x.astype(dtype, copy=False).reshape(shape)
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, as static_cast makes it
        return x.astype(np.float32).astype(dtype, copy=False).reshape(shape)


def _floats(values: Sequence[float] | None) -> Array:
    return np.asarray(values if values is not None else (), dtype=np.float32).astype(np.float64).reshape(-1)


def _weights(op: str, name: str, values: Sequence[float] | None, n_rows: int, n_cols: int,
             shape: str = "rows x features") -> Array:
    """An attribute holding ``n_rows`` rows of ``n_cols`` values (``shape`` names them), as a float64 matrix."""
    flat = _floats(values)
    if flat.size != n_rows * n_cols:
        raise ValueError(f"{op}: {name} has {flat.size} values, expected {shape} = {n_rows} x {n_cols} "
                         f"= {n_rows * n_cols} for this input")
    return flat.reshape(n_rows, n_cols)


def _transform_name(op: str, post_transform: str) -> str:
    if post_transform not in POST_TRANSFORMS:
        raise ValueError(f"{op}: post_transform {post_transform!r} is not one of {', '.join(POST_TRANSFORMS)}")
    return post_transform


def _class_labels(op: str, ints: Sequence[int] | None, strings: Sequence[str] | None,
                  strings_win: bool = False) -> Array | None:
    """The class labels; with both kinds set, the strings if ``strings_win`` (SVMClassifier) else an error."""
    if ints and strings and not strings_win:
        raise ValueError(f"{op}: set only one of classlabels_ints and classlabels_strings")
    if strings:
        return string_array(strings)
    return np.asarray(ints, dtype=np.int64) if ints else None


def _first_max(scores: Array) -> Array:
    """Column of each row's first maximum; a NaN never wins, and a leading NaN keeps column 0 (C++ ``>``).
    A compiled loop over the rows (``_loops.first_max_rows``: 1,000 rows of 3 11.6 -> 1.5 us); without
    it, a few classes are compared a column at a time, as that loop does (argmax over a short last axis,
    behind a NaN mask, took 23 us for 1,000 rows of 2)."""
    if scores.dtype == np.float64 and scores.flags.c_contiguous and scores.shape[1] and jit.enabled():
        best = np.empty(scores.shape[0], dtype=np.intp)
        jit.loops().first_max_rows(scores, best)
        return best
    if scores.shape[1] >= 8:
        index = np.argmax(np.where(np.isnan(scores), -np.inf, scores), axis=1)
        return np.where(np.isnan(scores[:, 0]), 0, index)
    best = np.zeros(scores.shape[0], dtype=np.intp)
    top = scores[:, 0].copy()
    for j in range(1, scores.shape[1]):
        better = scores[:, j] > top  # False against a NaN either side
        best[better] = j
        np.copyto(top, scores[:, j], where=better)
    return best


def _single_column(scores: Array, post_transform: str) -> Array:
    """onnxruntime transforms a lone score column only by PROBIT; the other transforms leave it raw."""
    return apply_post_transform(scores, "PROBIT") if post_transform == "PROBIT" else scores


def _two_columns(score: Array, post_transform: str, negate: bool) -> Array:
    """A binary score widened to two columns: [1 - t, t] for t the transformed score, or [-s, s] (negate)."""
    if negate:
        return np.stack([-score, score], axis=1)
    t = score if post_transform in ("NONE", "SOFTMAX", "SOFTMAX_ZERO") else \
        apply_post_transform(score[:, None], post_transform)[:, 0]
    return np.stack([1 - t, t], axis=1)


def _float32(scores: Array) -> Array:
    with np.errstate(all="ignore"):  # scores beyond float32's range round to inf, as in onnxruntime's float32
        return scores.astype(np.float32)


# --- linear models ---------------------------------------------------------------------------------


@kernel("LinearClassifier", since=1, domain=ML)
def linear_classifier(x: Array, coefficients: Sequence[float] | None = None,
                      classlabels_ints: Sequence[int] | None = None, classlabels_strings: Sequence[str] | None = None,
                      intercepts: Sequence[float] | None = None, multi_class: int = 0,
                      post_transform: str = "NONE") -> tuple[Array, Array]:
    op = "LinearClassifier"
    how = _transform_name(op, post_transform)
    data = _rows(op, x, np.float32)
    weights, bias, labels = laid_out(
        (op, data.shape[1]), (coefficients, intercepts, classlabels_ints, classlabels_strings),
        lambda: _linear_classifier_model(op, data.shape[1], coefficients, intercepts, classlabels_ints,
                                         classlabels_strings))
    with np.errstate(all="ignore"):  # multi_class is ignored, as onnxruntime ignores it
        # scores in float32, as onnxruntime's GEMM (and onnx's reference) take them: the label of two
        # classes tied in exact decimals is the one float32's rounding puts ahead (float64 sums picked the
        # other in 16 of 2,000 such draws); the float32 scores are exact in float64 from here on
        scores = (data @ weights.T + bias).astype(np.float64)
        if bias.size == 1:  # one weight row: the sign picks the second or first label
            pair = labels if labels is not None else np.array([0, 1], dtype=np.int64)
            out = pair[(scores[:, 0] > 0).astype(np.intp)]
            z = _two_columns(scores[:, 0], how, negate=False) if labels is not None else _single_column(scores, how)
            return out, _float32(z)
        return labels[_first_max(scores)], _float32(apply_post_transform(scores, how))


def _linear_classifier_model(op: str, n_features: int, coefficients: Sequence[float] | None,
                             intercepts: Sequence[float] | None, classlabels_ints: Sequence[int] | None,
                             classlabels_strings: Sequence[str] | None) -> tuple[Array, Array, Array | None]:
    """(weights as classes x features, intercepts, class labels) from the attributes, checked; the
    weights and intercepts in float32, the attributes' own values."""
    bias = _floats(intercepts)
    n_classes = bias.size  # onnxruntime counts classes by intercepts
    if n_classes == 0:
        raise ValueError(f"{op}: intercepts must hold one value per class (got none)")
    labels = _class_labels(op, classlabels_ints, classlabels_strings)
    weights = _weights(op, "coefficients", coefficients, n_classes, n_features, "classes x features")
    if n_classes == 1 and labels is not None and labels.size != 2:
        raise ValueError(f"{op}: a single coefficient row needs 2 class labels, got {labels.size}")
    if n_classes > 1 and (labels is None or labels.size < n_classes):
        raise ValueError(f"{op}: {n_classes} intercepts need as many class labels, got "
                         f"{0 if labels is None else labels.size}")
    return (_kept(weights.astype(np.float32)), _kept(bias.astype(np.float32)),
            None if labels is None else _kept(labels))


def _kept(a: Array) -> Array:
    """``a`` read-only: kept from run to run (``laid_out``), it is no run's to write."""
    a.flags.writeable = False
    return a


@kernel("LinearRegressor", since=1, domain=ML)
def linear_regressor(x: Array, coefficients: Sequence[float] | None = None, intercepts: Sequence[float] | None = None,
                     post_transform: str = "NONE", targets: int = 1) -> Array:
    op = "LinearRegressor"
    how = _transform_name(op, post_transform)
    data = _rows(op, x, np.float32)
    if targets < 1:
        raise ValueError(f"{op}: targets must be at least 1, got {targets}")
    weights, bias = laid_out((op, data.shape[1], targets), (coefficients, intercepts),
                             lambda: _linear_regressor_model(op, data.shape[1], targets, coefficients, intercepts))
    with np.errstate(all="ignore"):
        scores = (data @ weights.T + (bias if bias.size else np.float32(0))).astype(np.float64)
        out = _single_column(scores, how) if targets == 1 else apply_post_transform(scores, how)
    return _float32(out)


def _linear_regressor_model(op: str, n_features: int, targets: int, coefficients: Sequence[float] | None,
                            intercepts: Sequence[float] | None) -> tuple[Array, Array]:
    """(weights as targets x features, intercepts) from the attributes, checked, in float32."""
    weights = _weights(op, "coefficients", coefficients, targets, n_features, "targets x features")
    bias = _floats(intercepts)
    if bias.size not in (0, targets):
        raise ValueError(f"{op}: intercepts has {bias.size} values, expected {targets} (one per target) or none")
    return _kept(weights.astype(np.float32)), _kept(bias.astype(np.float32))


# --- SVMs ------------------------------------------------------------------------------------------


def _kernel_params(op: str, kernel_type: str, kernel_params: Sequence[float] | None) -> tuple[float, float, float]:
    if kernel_type not in KERNEL_TYPES:
        raise ValueError(f"{op}: kernel_type {kernel_type!r} is not one of {', '.join(KERNEL_TYPES)}")
    if not kernel_params:
        return 0.0, 0.0, 0.0  # onnxruntime's defaults for gamma, coef0 and degree
    if len(kernel_params) != 3:
        raise ValueError(f"{op}: kernel_params must be [gamma, coef0, degree], got {len(kernel_params)} values")
    gamma, coef0, degree = (float(np.float32(v)) for v in kernel_params)
    return gamma, coef0, degree


def _kernel_matrix(data: Array, vectors: Array, kernel_type: str, gamma: float, coef0: float, degree: float) -> Array:
    """K[n, v] = kernel(sample n, support vector v), one (samples, vectors) matrix, built in place."""
    k = data @ vectors.T
    if kernel_type == "RBF":
        k *= -2
        k += (data * data).sum(axis=1)[:, None]
        k += (vectors * vectors).sum(axis=1)
        np.maximum(k, 0.0, out=k)
        # the expansion turns an infinite feature into inf - inf; such rows take the direct sum, a chunk at a time
        odd = np.flatnonzero(~np.isfinite(data).all(axis=1))
        step = max(1, _BLOCK // max(1, vectors.size))
        for start in range(0, odd.size, step):
            rows = odd[start:start + step]
            k[rows] = ((data[rows, None, :] - vectors) ** 2).sum(axis=2)
        k *= -gamma
        return np.exp(k, out=k)
    if kernel_type != "LINEAR":
        k *= gamma
        k += coef0
        return np.power(k, degree, out=k) if kernel_type == "POLY" else np.tanh(k, out=k)
    return k


def _kernel_reduced(data: Array, vectors: Array, params: tuple, reduce: Callable[[Array], Array], width: int) -> Array:
    """``reduce`` of the kernel matrix, taken over row blocks of at most _BLOCK kernel entries (bounds the memory)."""
    out = np.empty((data.shape[0], width))
    step = max(1, _BLOCK // max(1, vectors.shape[0]))
    for start in range(0, data.shape[0], step):
        out[start:start + step] = reduce(_kernel_matrix(data[start:start + step], vectors, *params))
    return out


def _pair_scores(kernels: Array, dual: Array, starts: Array, counts: Array, rho: Array) -> Array:
    """One-vs-one decision values of every class pair (i < j), in libsvm's order (``np.triu_indices``).

    ``dual`` is (classes - 1, vectors): a vector of class c meets class k in row k - 1 if k > c, else row k.
    """
    n_classes = counts.size
    # part[n, r, c]: class c's vectors weighed by dual row r
    part = np.empty((kernels.shape[0], n_classes - 1, n_classes))
    for c in range(n_classes):
        block = slice(starts[c], starts[c] + counts[c])
        part[:, :, c] = kernels[:, block] @ dual[:, block].T
    first, second = np.triu_indices(n_classes, 1)
    return part[:, second - 1, first] + part[:, first, second] + rho


def _couple(pair_scores: Array, first: Array, second: Array, n_classes: int, prob_a: Array, prob_b: Array) -> Array:
    """Class probabilities from pairwise ones (Wu, Lin & Weng 2004, libsvm's multiclass_probability), in float32."""
    f32 = np.float32
    with np.errstate(all="ignore"):
        val = pair_scores.astype(f32) * prob_a.astype(f32) + prob_b.astype(f32)
        e = np.exp(-np.abs(val)).astype(f32)
        logistic = np.where(val < 0, e / (f32(1) + e), f32(1) / (f32(1) + e))
    pairwise = np.clip(f32(1) - logistic, f32(1e-7), f32(1 - 1e-7)).astype(f32)
    n = pair_scores.shape[0]
    r = np.zeros((n, n_classes, n_classes), dtype=f32)
    r[:, first, second] = pairwise
    r[:, second, first] = f32(1) - pairwise
    q = -r.transpose(0, 2, 1) * r
    diag = np.arange(n_classes)
    q[:, diag, diag] = (r * r).sum(axis=1)  # r's diagonal is zero
    p = np.full((n, n_classes), f32(1) / f32(n_classes), dtype=f32)
    eps = f32(0.005) / f32(n_classes)
    active = np.ones(n, dtype=bool)
    with np.errstate(all="ignore"):
        for _ in range(100):
            qp = np.einsum("nij,nj->ni", q, p).astype(f32)
            pqp = (p * qp).sum(axis=1)
            active &= np.abs(qp - pqp[:, None]).max(axis=1, initial=f32(0)) >= eps
            if not active.any():
                break
            for i in range(n_classes):  # Gauss-Seidel sweep: each class's step sees the previous ones
                qii = q[:, i, i]
                diff = np.where(active, (pqp - qp[:, i]) / qii, f32(0)).astype(f32)
                p[:, i] += diff
                grow = f32(1) + diff
                pqp = ((pqp + diff * (diff * qii + f32(2) * qp[:, i])) / grow / grow).astype(f32)
                qp = ((qp + diff[:, None] * q[:, i, :]) / grow[:, None]).astype(f32)
                p /= grow[:, None]
    return p.astype(np.float64)


@kernel("SVMClassifier", since=1, domain=ML)
def svm_classifier(x: Array, classlabels_ints: Sequence[int] | None = None,
                   classlabels_strings: Sequence[str] | None = None, coefficients: Sequence[float] | None = None,
                   kernel_params: Sequence[float] | None = None, kernel_type: str = "LINEAR",
                   post_transform: str = "NONE", prob_a: Sequence[float] | None = None,
                   prob_b: Sequence[float] | None = None, rho: Sequence[float] | None = None,
                   support_vectors: Sequence[float] | None = None, vectors_per_class: Sequence[int] | None = None
                   ) -> tuple[Array, Array]:
    op = "SVMClassifier"
    how = _transform_name(op, post_transform)
    gamma, coef0, degree = _kernel_params(op, kernel_type, kernel_params)
    labels = _class_labels(op, classlabels_ints, classlabels_strings, strings_win=True)
    if labels is None:
        raise ValueError(f"{op}: one of classlabels_ints, classlabels_strings is required")
    data = _rows(op, x)
    n_classes, n_features = labels.size, data.shape[1]
    a, b, offsets = _floats(prob_a), _floats(prob_b), _floats(rho)
    if a.size != b.size:
        raise ValueError(f"{op}: prob_a has {a.size} values but prob_b has {b.size}")
    if offsets.size == 0:
        raise ValueError(f"{op}: rho is required")
    counts = np.asarray(vectors_per_class if vectors_per_class is not None else (), dtype=np.int64)
    if (counts < 0).any():
        raise ValueError(f"{op}: vectors_per_class must not be negative")
    n_vectors = int(counts.sum())

    if n_vectors == 0:  # no support vectors: the coefficients are one linear model per class (liblinear)
        weights = _weights(op, "coefficients", coefficients, n_classes, n_features, "classes x features")
        with np.errstate(all="ignore"):
            scores = data @ weights.T + offsets[0]
        best = _first_max(scores)
        if n_classes == 2 and a.size == 0:  # onnxruntime's binary rule looks at the best score's value
            top = scores[np.arange(scores.shape[0]), best]
            if (weights >= 0).all():
                best = np.where(top >= 0.5, 1, best)
            else:
                best = np.where(top > 0, 1, best)
        z = _single_column(scores, how) if n_classes == 1 else apply_post_transform(scores, how)
        return labels[best], _float32(z)

    if counts.size != n_classes:
        raise ValueError(f"{op}: vectors_per_class has {counts.size} entries for {n_classes} class labels")
    if n_classes < 2:
        raise ValueError(f"{op}: support vectors need at least 2 classes, got {n_classes}")
    n_pairs = n_classes * (n_classes - 1) // 2
    if offsets.size != n_pairs:
        raise ValueError(f"{op}: rho has {offsets.size} values, expected one per class pair ({n_pairs})")
    if a.size not in (0, n_pairs):
        raise ValueError(f"{op}: prob_a and prob_b have {a.size} values, expected one per class pair ({n_pairs})")
    vectors = _weights(op, "support_vectors", support_vectors, n_vectors, n_features, "vectors x features")
    dual = _weights(op, "coefficients", coefficients, n_classes - 1, n_vectors, "(classes - 1) x vectors")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    with np.errstate(all="ignore"):
        pairs = _kernel_reduced(data, vectors, (kernel_type, gamma, coef0, degree),
                                lambda k: _pair_scores(k, dual, starts, counts, offsets), n_pairs)
    first, second = np.triu_indices(n_classes, 1)
    ballots = np.where(pairs > 0, first, second) + n_classes * np.arange(data.shape[0])[:, None]
    votes = np.bincount(ballots.reshape(-1), minlength=data.shape[0] * n_classes).reshape(-1, n_classes)
    out = labels[np.argmax(votes, axis=1)]
    pairs = _float32(pairs).astype(np.float64)  # onnxruntime votes on the exact sum but keeps it as float32
    if a.size:
        z = apply_post_transform(_couple(pairs, first, second, n_classes, a, b), how)
    elif n_classes == 2:
        z = _two_columns(pairs[:, 0], how, negate=how == "NONE")
    else:
        z = apply_post_transform(pairs, how)
    return out, _float32(z)


@kernel("SVMRegressor", since=1, domain=ML)
def svm_regressor(x: Array, coefficients: Sequence[float] | None = None, kernel_params: Sequence[float] | None = None,
                  kernel_type: str = "LINEAR", n_supports: int = 0, one_class: int = 0, post_transform: str = "NONE",
                  rho: Sequence[float] | None = None, support_vectors: Sequence[float] | None = None) -> Array:
    op = "SVMRegressor"
    _transform_name(op, post_transform)  # validated, then unused: onnxruntime never applies it here
    gamma, coef0, degree = _kernel_params(op, kernel_type, kernel_params)
    data = _rows(op, x)
    offsets = _floats(rho)
    if offsets.size == 0:
        raise ValueError(f"{op}: rho is required")
    if n_supports < 0:
        raise ValueError(f"{op}: n_supports must not be negative, got {n_supports}")
    with np.errstate(all="ignore"):
        if n_supports:
            vectors = _weights(op, "support_vectors", support_vectors, n_supports, data.shape[1], "vectors x features")
            dual = _weights(op, "coefficients", coefficients, n_supports, 1, "vectors x 1")
            scores = _kernel_reduced(data, vectors, (kernel_type, gamma, coef0, degree),
                                     lambda k: k @ dual + offsets[0], 1)
        else:  # no support vectors: the coefficients are one linear model
            scores = data @ _weights(op, "coefficients", coefficients, data.shape[1], 1, "features x 1") + offsets[0]
    if one_class:
        scores = np.where(scores > 0, 1.0, -1.0)
    return _float32(scores)
