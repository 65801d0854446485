"""ai.onnx.ml kernels: LabelEncoder, TreeEnsemble, ArrayFeatureExtractor, Binarizer.

LabelEncoder looks keys up with one ``searchsorted`` over the sorted keys (NaN keys match every NaN).
TreeEnsemble walks all (sample, tree) pairs down their trees together, one vectorised step per depth
level, then aggregates the reached leaves per target with ``ufunc.at``. It follows the spec where
onnxruntime 1.32 departs from it (no converter writes this op yet; the legacy ops, which they write,
follow onnxruntime in ``ml_trees``): post_transform 1 is SOFTMAX and 2 LOGISTIC, which onnxruntime
reads the other way round; a single target is transformed too, where onnxruntime applies only PROBIT
(its issue 26596); and BRANCH_MEMBER tests x itself, where onnxruntime truncates a fractional x toward
zero for some sets.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from hal.kernels import jit
from hal.kernels.registry import kernel

Array = np.ndarray
ML = "ai.onnx.ml"
T = TypeVar("T")

#: what a kernel laid out from a node's attributes, by the identity of those attribute values (kept with
#: them, so an id is not reused while its entry lives): a node's attributes are the same objects every run
_LAID_OUT: OrderedDict[tuple[Any, ...], tuple[tuple[Any, ...], Any]] = OrderedDict()
_LAID_OUT_MOST = 64
_LAID_OUT_LOCK = threading.Lock()


def laid_out(settings: tuple[Any, ...], attrs: tuple[Any, ...], build: Callable[[], T]) -> T:
    """``build()``, once per node and ``settings``: the checked arrays a kernel makes from its attribute
    lists (checking and laying out 20 trees of depth 6 took 2.7 ms a run, as long as walking 1,000 rows
    through them; a linear model's weights 3-4 us of its 14). ``build`` must be a pure function of
    ``settings`` and ``attrs``, so what is kept is no state; what it raises is not kept. The 64 most
    recent are kept."""
    key = (*settings, *map(id, attrs))
    with _LAID_OUT_LOCK:
        hit = _LAID_OUT.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], attrs)):
            _LAID_OUT.move_to_end(key)
            return hit[1]
    made = build()
    with _LAID_OUT_LOCK:
        _LAID_OUT[key] = (attrs, made)
        if len(_LAID_OUT) > _LAID_OUT_MOST:
            _LAID_OUT.popitem(last=False)
    return made


@kernel("Binarizer", since=1, domain=ML)
def binarizer(x: Array, threshold: float = 0.0) -> Array:
    return np.asarray(x > threshold).astype(x.dtype)


@kernel("ArrayFeatureExtractor", since=1, domain=ML)
def array_feature_extractor(x: Array, y: Array) -> Array:
    """Pick entries of the last axis; a 1-D input yields one row (as onnxruntime does)."""
    index = np.asarray(y, dtype=np.int64).reshape(-1)
    picked = x[..., index]
    return picked.reshape(1, -1) if x.ndim == 1 else picked


# --- LabelEncoder ----------------------------------------------------------------------------------


def string_array(values: Sequence[object]) -> Array:
    """A 1-D string tensor (an object array of str) from attribute values, bytes decoded as UTF-8."""
    out = np.empty(len(values), dtype=object)
    out[:] = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
    return out


@kernel("LabelEncoder", since=1, domain=ML)
def label_encoder_1(x: Array, classes_strings: Sequence[str] = (), default_int64: int = -1,
                    default_string: str = "_Unused") -> Array:
    """Opset 1: strings map to their position in ``classes_strings``, integers to the string there."""
    classes = string_array(list(classes_strings))
    if x.dtype == object:
        return label_encoder(x, default_int64=default_int64, keys_strings=classes,
                             values_int64s=list(range(len(classes))))
    return label_encoder(x, default_string=default_string, keys_int64s=list(range(len(classes))),
                         values_strings=classes)


@kernel("LabelEncoder", since=2, domain=ML)
def label_encoder(x: Array, default_float: float = -0.0, default_int64: int = -1, default_string: str = "_Unused",
                  default_tensor: Array | None = None, keys_floats: Sequence[float] | None = None,
                  keys_int64s: Sequence[int] | None = None, keys_strings: Sequence[str] | None = None,
                  keys_tensor: Array | None = None, values_floats: Sequence[float] | None = None,
                  values_int64s: Sequence[int] | None = None, values_strings: Sequence[str] | None = None,
                  values_tensor: Array | None = None) -> Array:
    if keys_tensor is not None:
        keys = keys_tensor.reshape(-1)
    elif keys_strings is not None:
        keys = string_array(keys_strings)
    elif keys_int64s is not None:
        keys = np.asarray(keys_int64s, dtype=np.int64)
    elif keys_floats is not None:
        keys = np.asarray(keys_floats, dtype=np.float32)
    else:
        raise ValueError("LabelEncoder needs one keys_* attribute")
    if values_tensor is not None:
        values = values_tensor.reshape(-1)
        if default_tensor is not None:
            default = np.asarray(default_tensor).reshape(-1)[0]
        else:
            default = "_Unused" if values.dtype == object else (-1 if values.dtype.kind in "iu" else -0.0)
    elif values_strings is not None:
        values, default = string_array(values_strings), default_string
    elif values_int64s is not None:
        values, default = np.asarray(values_int64s, dtype=np.int64), default_int64
    elif values_floats is not None:
        values, default = np.asarray(values_floats, dtype=np.float32), default_float
    else:
        raise ValueError("LabelEncoder needs one values_* attribute")
    if len(keys) != len(values):
        raise ValueError("LabelEncoder keys and values differ in length")
    flat = x.reshape(-1)
    if keys.dtype == object:
        flat = string_array(list(flat))
    out = np.empty(flat.shape, dtype=values.dtype)
    out[...] = default
    if len(keys):
        nan_keys = np.zeros(len(keys), dtype=bool) if keys.dtype.kind != "f" else np.isnan(keys)
        # a repeated key: the last one wins, so look keys up from the back
        order = np.arange(len(keys))[::-1][~nan_keys[::-1]]
        keys_sorted_idx = order[np.argsort(keys[order], kind="stable")]
        sorted_keys = keys[keys_sorted_idx]
        if sorted_keys.size:
            pos = np.clip(np.searchsorted(sorted_keys, flat), 0, sorted_keys.size - 1)
            hit = sorted_keys[pos] == flat
            out[hit] = values[keys_sorted_idx[pos[hit]]]
        if nan_keys.any():
            out[np.isnan(flat)] = values[np.flatnonzero(nan_keys)[-1]]
    return out.reshape(x.shape)


def as_int64(x: Array) -> Array:
    """Numbers as onnxruntime casts them to int64: truncated, NaN and out-of-range ones to INT64_MIN (x86)."""
    if x.dtype.kind in "iu":
        return x.astype(np.int64)
    v = x.astype(np.float64)
    valid = (v >= -(2.0**63)) & (v < 2.0**63)
    out = np.full(v.shape, np.iinfo(np.int64).min, dtype=np.int64)
    out[valid] = v[valid].astype(np.int64)  # the cast truncates toward zero, as C++'s does
    return out


# --- TreeEnsemble ----------------------------------------------------------------------------------


def probit(p: Array) -> Array:
    """PROBIT, sqrt(2) * erfinv(2p - 1), as onnxruntime and onnx's reference evaluator both compute it:
    erfinv by Winitzki's approximation (a = 0.147), unrefined, in float32 (off the true inverse normal
    by up to ~5e-2 near 0 and 1; the models exported for them were checked against it). Near p = 0.5
    the float32 formula cancels badly, so it is followed step by step (log correctly rounded, no fused
    multiply-add) to land on onnxruntime's bits."""
    f = np.float32
    with np.errstate(all="ignore"):
        x = f(2) * np.asarray(p, dtype=f) - f(1)
        ln = np.log(((f(1) - x) * (f(1) + x)).astype(np.float64)).astype(f)
        v = f(2) / (f(np.pi) * f(0.147)) + f(0.5) * ln
        root = np.sqrt(-v + np.sqrt(v * v - f(1) / f(0.147) * ln))
        return f(np.sqrt(2)) * np.where(x < 0, -root, root)


#: the post_transform attribute's names (the legacy ops) and their codes (TreeEnsemble-5)
POST_TRANSFORMS = {"NONE": 0, "SOFTMAX": 1, "LOGISTIC": 2, "SOFTMAX_ZERO": 3, "PROBIT": 4}


def _across(ufunc: np.ufunc, scores: Array) -> Array:
    """``ufunc`` reduced over each row, as a column: a few classes one column at a time, in order (as
    numpy adds fewer than 8; its reduction over a short last axis took 20 us for 1,000 rows of 3)."""
    if not 0 < scores.shape[1] < 8:
        return ufunc.reduce(scores, axis=1, keepdims=True)
    out = scores[:, :1].copy()
    for j in range(1, scores.shape[1]):
        ufunc(out, scores[:, j:j + 1], out=out)
    return out


def apply_post_transform(scores: Array, how: int | str) -> Array:
    """The ai.onnx.ml post transform of a (samples, targets) score matrix, by name or code. LOGISTIC is
    the spec's 1 / (1 + e^-x); onnxruntime computes 1 - sigmoid(|x|) below 0 in float32, within 6e-8
    of it but relatively far for a small probability (0.0015257001 for 0.0015256369, float64's
    0.0015256367): hal's is the nearer to float64."""
    code = POST_TRANSFORMS.get(how, -1) if isinstance(how, str) else how
    if code == 0:
        return scores
    if code == 1:
        if (scores.dtype == np.float64 and scores.ndim == 2 and 0 < scores.shape[1] < 8
                and scores.flags.c_contiguous and jit.enabled()):
            # the same operations in two compiled row loops around numpy's exp (1,000 rows of 3: 20.6 -> 6 us)
            e = np.empty_like(scores)
            jit.loops().shift_by_row_max(scores, e)
            np.exp(e, out=e)
            jit.loops().divide_by_row_sum(e)
            return e
        e = np.exp(scores - _across(np.maximum, scores))
        return e / _across(np.add, e)
    if code == 2:
        return 1 / (1 + np.exp(-scores))
    if code == 3:
        # onnxruntime's SOFTMAX_ZERO, in every ml op that takes one (onnx's reference gives TreeEnsemble-5
        # no post transform at all): shifted by the row's maximum, zeros included; |score| <= 1e-7 counts as
        # zero (scaled by e^-max rather than exponentiated) and the others' exponentials are the divisor, so
        # a row of such scores divides by zero (NaN, or inf for a nonzero one) where onnx's reference loop
        # for the older ops gives 0.5, and an infinite score makes its row NaN. Its maximum passes over NaN
        # (a comparison loop) and a NaN score, neither above 1e-7 nor below -1e-7, is scaled as a zero is:
        # it stays NaN and leaves the others' sum alone ([-4.6, NaN, NaN] is [1, NaN, NaN])
        with np.errstate(all="ignore"):
            peak = np.fmax.reduce(scores, axis=1, keepdims=True)
            big = np.abs(scores) > np.float32(1e-7)
            e = np.where(big, np.exp(scores - peak), scores * np.exp(-peak))
            return e / np.where(big, e, 0).sum(axis=1, keepdims=True)
    if code == 4:
        return probit(scores)
    raise ValueError(f"unknown post_transform {how!r}: one of {', '.join(POST_TRANSFORMS)} (or 0-4)")


@kernel("TreeEnsemble", since=5, domain=ML)
def tree_ensemble(x: Array, aggregate_function: int = 1, leaf_targetids: Sequence[int] = (),
                  leaf_weights: Array | None = None, membership_values: Array | None = None, n_targets: int = 1,
                  nodes_falseleafs: Sequence[int] = (), nodes_falsenodeids: Sequence[int] = (),
                  nodes_featureids: Sequence[int] = (), nodes_hitrates: Array | None = None,
                  nodes_missing_value_tracks_true: Sequence[int] | None = None, nodes_modes: Array | None = None,
                  nodes_splits: Array | None = None, nodes_trueleafs: Sequence[int] = (),
                  nodes_truenodeids: Sequence[int] = (), post_transform: int = 0, tree_roots: Sequence[int] = ()
                  ) -> Array:
    data = x.astype(np.float64).reshape(x.shape[0], math.prod(x.shape[1:]))  # (an empty batch has no -1)
    n_samples, n_nodes = data.shape[0], len(nodes_featureids)
    modes = np.asarray(nodes_modes, dtype=np.int64).reshape(-1)
    splits = np.asarray(nodes_splits, dtype=np.float64).reshape(-1)
    feature = np.asarray(nodes_featureids, dtype=np.intp)
    true_id, false_id = np.asarray(nodes_truenodeids, dtype=np.intp), np.asarray(nodes_falsenodeids, dtype=np.intp)
    true_leaf, false_leaf = np.asarray(nodes_trueleafs, dtype=bool), np.asarray(nodes_falseleafs, dtype=bool)
    nan_true = (np.asarray(nodes_missing_value_tracks_true, dtype=bool) if nodes_missing_value_tracks_true
                else np.zeros(n_nodes, dtype=bool))
    # membership sets, one padded row per node (NaN pads never match)
    members = np.full((n_nodes, 1), np.nan)
    member_nodes = np.flatnonzero(modes == 6)
    if member_nodes.size:
        if membership_values is None:
            raise ValueError("TreeEnsemble: BRANCH_MEMBER nodes need membership_values")
        flat = np.asarray(membership_values, dtype=np.float64).reshape(-1)
        sets = np.split(flat, np.flatnonzero(np.isnan(flat)))
        sets = [s[~np.isnan(s)] for s in sets][:member_nodes.size]
        members = np.full((n_nodes, max(len(s) for s in sets) or 1), np.nan)
        for node, s in zip(member_nodes, sets):
            members[node, :len(s)] = s

    roots = np.asarray(tree_roots, dtype=np.intp)
    n_trees = roots.size
    node = np.broadcast_to(roots, (n_samples, n_trees)).copy()
    # a root whose two branches name the same leaf is a single-leaf tree
    leaf = np.where(true_leaf[roots] & false_leaf[roots] & (true_id[roots] == false_id[roots]), true_id[roots], -1)
    frontier, depth = roots[leaf < 0], 0
    while frontier.size:  # walk the structure once: a branch linking back to an ancestor shows as depth
        if depth == n_nodes:
            raise ValueError("TreeEnsemble: nodes_truenodeids/nodes_falsenodeids link a node back to itself or "
                             "an ancestor (onnxruntime refuses such a model too)")
        frontier = np.unique(np.r_[true_id[frontier][~true_leaf[frontier]],
                                   false_id[frontier][~false_leaf[frontier]]])
        depth += 1
    leaf = np.broadcast_to(leaf, (n_samples, n_trees)).copy()
    sample = np.broadcast_to(np.arange(n_samples)[:, None], node.shape)
    for _ in range(n_nodes + 1):  # every step goes one level down; no tree is deeper than it has nodes
        active = leaf < 0
        if not active.any():
            break
        nd, sm = node[active], sample[active]
        v = data[sm, feature[nd]]
        s = splits[nd]
        m = modes[nd]
        go = np.select([m == 0, m == 1, m == 2, m == 3, m == 4, m == 5],
                       [v <= s, v < s, v >= s, v > s, v == s, v != s],
                       default=(members[nd] == v[:, None]).any(axis=1))
        go |= np.isnan(v) & nan_true[nd]
        nxt = np.where(go, true_id[nd], false_id[nd])
        is_leaf = np.where(go, true_leaf[nd], false_leaf[nd])
        new_leaf, new_node = leaf[active], node[active]
        new_leaf[is_leaf] = nxt[is_leaf]
        new_node[~is_leaf] = nxt[~is_leaf]
        leaf[active], node[active] = new_leaf, new_node
    # leaves summed in the input's float type, each sample's trees in order, as onnxruntime sums them
    # (and as ml_trees sums the legacy ops'): a float32 forest's sum rounds at every tree
    work = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    weights = np.asarray(leaf_weights, dtype=work).reshape(-1)[leaf]
    targets = np.asarray(leaf_targetids, dtype=np.intp)[leaf]
    rows = np.broadcast_to(np.arange(n_samples)[:, None], leaf.shape)
    scores = np.zeros((n_samples, n_targets), dtype=work)
    if aggregate_function in (0, 1):
        np.add.at(scores, (rows, targets), weights)
        if aggregate_function == 0:
            scores /= max(n_trees, 1)
    elif aggregate_function in (2, 3):
        ufunc = np.minimum if aggregate_function == 2 else np.maximum
        acc = np.full((n_samples, n_targets), np.inf if aggregate_function == 2 else -np.inf, dtype=work)
        ufunc.at(acc, (rows, targets), weights)
        scores = np.where(np.isfinite(acc), acc, work.type(0))  # targets no leaf reached score 0
    else:
        raise ValueError(f"TreeEnsemble: unknown aggregate_function {aggregate_function}")
    return apply_post_transform(scores, post_transform).astype(x.dtype)
