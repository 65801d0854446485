"""ai.onnx.ml's legacy tree ensembles: TreeEnsembleClassifier and TreeEnsembleRegressor (opsets 1 and 3).

The nodes_* arrays become one flat forest: every node is a position, its children are found by (tree id,
node id), and a tree starts wherever nodes_treeids changes (as onnxruntime reads them). All (sample, tree)
pairs walk down together, one vectorised step per depth level. Leaf weights become a dense (leaf, target)
table, and trees are folded in one at a time in the threshold dtype (float32; float64 for double input), so
sums round as onnxruntime's do. The rest reproduces onnxruntime, the reference for these ops: a regressor
target (or one of two classes) that no reached leaf fed scores 0 whatever its base value, a single target (or
class) takes only the first weight of each leaf and ignores every post transform but PROBIT, and two classes
of which the leaves weigh one follow its binary rules (_binary). Two classes both weighted are two scores, a
multiclass model, as onnx's reference reads them: onnxruntime 1.32 answers 1 or 0 there, not a label.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from hal.kernels import jit
from hal.kernels.ml import ML, POST_TRANSFORMS, apply_post_transform, laid_out, probit
from hal.kernels.registry import kernel

Array = np.ndarray
MODES = {"BRANCH_LEQ": 0, "BRANCH_LT": 1, "BRANCH_GTE": 2, "BRANCH_GT": 3, "BRANCH_EQ": 4, "BRANCH_NEQ": 5, "LEAF": 6}
AGGREGATES = ("SUM", "AVERAGE", "MIN", "MAX")
_PAIRS = 1 << 17  # (sample, tree) pairs walked at once
# whether a branch goes true, by rule (the mode; 7 + mode when NaN goes true) and by how the value compares with
# its split: 0 above, 1 equal, 3 below (2 cannot happen), 4 NaN; flat, indexed by rule * 5 + outcome
_GO = np.array([[0, 1, 0, 1, 0], [0, 0, 0, 1, 0], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [1, 0, 0, 1, 1],
                [0, 0, 0, 0, 0]] * 2, dtype=np.intp)
_GO[7:, 4] = 1
_GO = _GO.ravel()


def _floats(name: str, listed: Sequence[float] | None, tensor: Array | None, dtype: type) -> Array:
    """A float attribute from its list (float32 in ONNX) or its opset-3 ``*_as_tensor`` twin, in ``dtype``."""
    if listed is not None and len(listed) and tensor is not None and np.size(tensor):
        raise ValueError(f"{name} and {name}_as_tensor are both set; give one")
    if tensor is not None and np.size(tensor):
        return np.asarray(tensor).reshape(-1).astype(dtype)
    return np.asarray(listed if listed is not None else [], dtype=np.float32).astype(dtype)


def _ints(name: str, values: Sequence[int], n: int) -> Array:
    out = np.asarray(values, dtype=np.int64).reshape(-1)
    if out.size != n:
        raise ValueError(f"{name} has {out.size} entries, nodes_nodeids has {n}")
    return out


def _locator(trees: Array, nodes: Array) -> Callable[[Array, Array], Array]:
    """A lookup from (tree id, node id) pairs to node positions (-1 for none); ids need not be dense."""
    tree_keys, node_keys = np.unique(trees), np.unique(nodes)

    def key(t: Array, nd: Array) -> Array:
        ti = np.clip(np.searchsorted(tree_keys, t), 0, tree_keys.size - 1)
        ni = np.clip(np.searchsorted(node_keys, nd), 0, node_keys.size - 1)
        return np.where((tree_keys[ti] == t) & (node_keys[ni] == nd), ti * node_keys.size + ni, -1)

    own = key(trees, nodes)
    order = np.argsort(own, kind="stable")
    ranked = own[order]
    twice = np.flatnonzero(ranked[1:] == ranked[:-1])
    if twice.size:
        i = order[twice[0] + 1]
        raise ValueError(f"node {nodes[i]} of tree {trees[i]} appears twice in nodes_nodeids/nodes_treeids")

    def locate(t: Array, nd: Array) -> Array:
        want = key(np.asarray(t, dtype=np.int64), np.asarray(nd, dtype=np.int64))
        at = np.clip(np.searchsorted(ranked, want), 0, ranked.size - 1)
        return np.where((want >= 0) & (ranked[at] == want), order[at], -1)

    return locate


@dataclass
class _Forest:
    feature: Array  # per node, as are the next three (0 for a leaf)
    split: Array  # thresholds in the threshold dtype, held as float64 for comparing
    rule: Array  # its rule in _GO
    leaf_row: Array  # its row in table, -1 for a branch
    children: Array  # (false, true) child positions of node i at 2i, 2i + 1; a leaf is its own children
    roots: Array
    depth: int
    table: Array  # (leaves, targets): the leaf weights, in the threshold dtype
    has: Array  # (leaves, targets): whether the leaf carries a weight for the target


def _forest(dtype: type, n_out: int, single: bool, agg: str, prefix: str, ids: Sequence[int], leaf_nodes: Sequence[int],
            leaf_trees: Sequence[int], weights: Array, *, nodes_treeids: Sequence[int] = (),
            nodes_nodeids: Sequence[int] = (), nodes_featureids: Sequence[int] = (), nodes_modes: Sequence[str] = (),
            nodes_truenodeids: Sequence[int] = (), nodes_falsenodeids: Sequence[int] = (),
            nodes_values: Sequence[float] | None = None, nodes_values_as_tensor: Array | None = None,
            nodes_missing_value_tracks_true: Sequence[int] | None = None, nodes_hitrates: object = None,
            nodes_hitrates_as_tensor: object = None) -> _Forest:
    """Check the attributes and lay the trees out for walking (hit rates do not change a prediction)."""
    n = len(nodes_nodeids)
    if n == 0:
        raise ValueError("nodes_nodeids is empty: the ensemble has no trees")
    nodes = _ints("nodes_nodeids", nodes_nodeids, n)
    trees = _ints("nodes_treeids", nodes_treeids, n)
    feature = _ints("nodes_featureids", nodes_featureids, n)
    true_id = _ints("nodes_truenodeids", nodes_truenodeids, n)
    false_id = _ints("nodes_falsenodeids", nodes_falsenodeids, n)
    if len(nodes_modes) != n:
        raise ValueError(f"nodes_modes has {len(nodes_modes)} entries, nodes_nodeids has {n}")
    bad = [m for m in nodes_modes if m not in MODES]
    if bad:
        raise ValueError(f"nodes_modes has unknown mode {bad[0]!r}: one of {', '.join(MODES)}")
    mode = np.array([MODES[m] for m in nodes_modes], dtype=np.int64)
    values = _floats("nodes_values", nodes_values, nodes_values_as_tensor, dtype)
    if values.size != n:
        raise ValueError(f"nodes_values has {values.size} entries, nodes_nodeids has {n}")
    # onnxruntime reads nodes_missing_value_tracks_true of any length, missing entries as 0
    tracks = np.asarray(nodes_missing_value_tracks_true or [], dtype=np.int64)[:n]
    nan_true = np.zeros(n, dtype=bool)
    nan_true[:tracks.size] = tracks == 1
    is_leaf = mode == 6
    if (feature[~is_leaf] < 0).any():
        raise ValueError(f"nodes_featureids has negative feature {feature[~is_leaf].min()}")
    locate = _locator(trees, nodes)
    true_pos, false_pos = locate(trees, true_id), locate(trees, false_id)
    for name, ids_, pos in (("nodes_truenodeids", true_id, true_pos), ("nodes_falsenodeids", false_id, false_pos)):
        lost = np.flatnonzero(~is_leaf & (pos < 0))
        if lost.size:
            i = lost[0]
            raise ValueError(f"{name}[{i}] = {ids_[i]} names no node of tree {trees[i]}")
    roots = np.flatnonzero(np.r_[True, trees[1:] != trees[:-1]])
    frontier, depth = roots, 0
    while True:  # walk the structure once: the depth bounds the walk, and a loop in the links shows here
        frontier = frontier[~is_leaf[frontier]]
        if not frontier.size:
            break
        if depth == n:
            raise ValueError("nodes_truenodeids/nodes_falsenodeids link a node back to itself or an ancestor")
        frontier, depth = np.unique(np.r_[true_pos[frontier], false_pos[frontier]]), depth + 1

    k = len(ids)
    if not (len(leaf_nodes) == len(leaf_trees) == weights.size == k):
        raise ValueError(f"{prefix}_ids, {prefix}_nodeids, {prefix}_treeids and {prefix}_weights differ in length "
                         f"({k}, {len(leaf_nodes)}, {len(leaf_trees)}, {weights.size})")
    target = np.asarray(ids, dtype=np.int64).reshape(-1)
    outside = target[(target < 0) | (target >= n_out)]
    if outside.size:
        raise ValueError(f"{prefix}_ids has {outside[0]}, outside 0..{n_out - 1}")
    where = locate(leaf_trees, leaf_nodes)
    if (where < 0).any():
        i = int(np.flatnonzero(where < 0)[0])
        raise ValueError(f"{prefix}_nodeids[{i}] = {leaf_nodes[i]} names no node of tree {leaf_trees[i]}")
    keep = is_leaf[where]  # weights on branch nodes are ignored, as onnxruntime does
    leaf_row = np.where(is_leaf, np.cumsum(is_leaf) - 1, -1)
    rows, target, w = leaf_row[where[keep]], target[keep], weights[keep]
    if single:  # the first weight of each leaf, else the leaf's own node value (onnxruntime's one-output path)
        table = values[is_leaf].reshape(-1, 1).copy()
        first_rows, first = np.unique(rows, return_index=True)
        table[first_rows, 0] = w[first]
        has = np.ones(table.shape, dtype=bool)
    else:
        table = np.zeros((int(is_leaf.sum()), n_out), dtype=dtype)
        has = np.zeros(table.shape, dtype=bool)
        has[rows, target] = True
        if agg in ("MIN", "MAX"):
            table[has] = np.inf if agg == "MIN" else -np.inf
            (np.minimum if agg == "MIN" else np.maximum).at(table, (rows, target), w)
        else:
            np.add.at(table, (rows, target), w)
    own = np.arange(n)
    children = np.stack([np.where(is_leaf, own, false_pos), np.where(is_leaf, own, true_pos)], axis=1).ravel()
    return _Forest(np.where(is_leaf, 0, feature), values.astype(np.float64), mode + 7 * nan_true, leaf_row, children,
                   roots, depth, table, has)


def _rows(x: Array) -> tuple[Array, type]:
    """X as (samples, features) (a 1-D X is one sample, as in onnxruntime) and the threshold dtype."""
    if x.ndim not in (1, 2):
        raise ValueError(f"X must be 1-D or 2-D, got shape {x.shape}")
    dtype = np.float64 if x.dtype == np.float64 else np.float32  # integers compare as float, as in C++
    return x.reshape(1, -1) if x.ndim == 1 else x, dtype


def _walk(forest: _Forest, data: Array) -> Array:
    """The table row of the leaf each (sample, tree) pair reaches, (samples, trees): a compiled loop where
    ``jit.enabled()``, else every pair one level down a step."""
    n, n_trees = data.shape[0], forest.roots.size
    if jit.enabled():
        out = np.empty((n, n_trees), dtype=np.intp)
        jit.loops().forest_leaves(np.ascontiguousarray(data), forest.roots, forest.feature, forest.split, forest.rule,
                                  forest.children, forest.leaf_row, _GO, forest.depth, out)
        return out
    flat, node = data.ravel(), np.tile(forest.roots, n)
    offset = np.repeat(np.arange(n) * data.shape[1], n_trees)
    for _ in range(forest.depth):  # pairs at a leaf stay there
        v, s = flat[offset + forest.feature[node]], forest.split[node]
        outcome = (v <= s) + 2 * (v < s) + 4 * np.isnan(v)
        node = forest.children[2 * node + _GO[forest.rule[node] * 5 + outcome]]
    return forest.leaf_row[node].reshape(n, n_trees)


def _predict(forest: _Forest, x: Array, dtype: type, agg: str) -> tuple[Array, Array]:
    """Scores (samples, targets) in the threshold dtype, and which of them some reached leaf fed."""
    data = x.astype(dtype).astype(np.float64)
    branch_features = forest.feature[forest.leaf_row < 0]
    if branch_features.size and branch_features.max() >= data.shape[1]:
        raise ValueError(f"nodes_featureids asks for feature {branch_features.max()}, X has {data.shape[1]}")
    scores = np.zeros((data.shape[0], forest.table.shape[1]), dtype=dtype)
    hit = np.zeros(scores.shape, dtype=bool)
    step = max(1, _PAIRS // forest.roots.size)
    for start in range(0, data.shape[0], step):  # in blocks of samples: the walk's arrays stay small
        leaf, part, seen = _walk(forest, data[start:start + step]), scores[start:start + step], hit[start:start + step]
        if agg in ("SUM", "AVERAGE") and jit.enabled():
            jit.loops().forest_sums(leaf, forest.table, forest.has, part, seen)
            continue
        for tree in range(leaf.shape[1]):  # tree by tree, in order: float32 sums round as onnxruntime's
            w, h = forest.table[leaf[:, tree]], forest.has[leaf[:, tree]]
            if agg in ("SUM", "AVERAGE"):
                part += w
            else:
                part[...] = np.where(h & (~seen | (w < part if agg == "MIN" else w > part)), w, part)
            seen |= h
    return scores, hit


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} is {value!r}: one of {', '.join(choices)}")


def _binary(scores: Array, hit: Array, base: Array, how: str, all_positive: bool) -> tuple[Array, Array]:
    """onnxruntime's rules for two classes whose leaves weigh one: (positive?, Z). A row whose second class
    no leaf fed keeps one score, then gets its opposite beside it (1 - s for all-positive weights, else -s;
    LOGISTIC of both); under PROBIT onnxruntime leaves Z[:, 1] unwritten: 0."""
    s0, s1, h0, h1 = scores[:, 0], scores[:, 1], hit[:, 0], hit[:, 1]
    if base.size == 2:
        s1 = np.where(h1, base[1] + s0, s1 + base[1])
        s0 = np.where(h1, -s1, s0 + base[0])
    elif base.size == 1:
        s0 = s0 + base[0]
    g0 = np.where(h0, s0, 0).astype(scores.dtype)
    pos = np.where(h1, s1, g0)
    positive = pos > 0.5 if all_positive else pos > 0
    z = apply_post_transform(np.stack([g0, np.where(h1, s1, 0)], axis=1), how)
    lone = ~h1 if base.size < 2 else np.zeros_like(h1)
    if how == "PROBIT":
        other = np.stack([probit(g0), np.zeros_like(g0)], axis=1)
    elif how == "LOGISTIC":
        other = apply_post_transform(np.stack([-g0, g0], axis=1), how)
    else:
        other = np.stack([1 - g0 if all_positive else -g0, g0], axis=1)
    return positive, np.where(lone[:, None], other, z)


@kernel("TreeEnsembleClassifier", since=1, domain=ML)
def tree_ensemble_classifier(x: Array, base_values: Sequence[float] | None = None,
                             base_values_as_tensor: Array | None = None, class_ids: Sequence[int] = (),
                             class_nodeids: Sequence[int] = (), class_treeids: Sequence[int] = (),
                             class_weights: Sequence[float] | None = None, class_weights_as_tensor: Array | None = None,
                             classlabels_int64s: Sequence[int] | None = None,
                             classlabels_strings: Sequence[str] | None = None, post_transform: str = "NONE",
                             **nodes: object) -> tuple[Array, Array]:
    """Opsets 1 and 3 (3 adds the *_as_tensor attributes): (Y labels, Z scores float32)."""
    ints, strings = list(classlabels_int64s or ()), list(classlabels_strings or ())
    if bool(ints) == bool(strings):
        raise ValueError("set exactly one of classlabels_int64s and classlabels_strings (with at least one label)")
    _check_choice("post_transform", post_transform, list(POST_TRANSFORMS))
    data, dtype = _rows(x)
    labels = np.asarray(ints, dtype=np.int64) if ints else np.array(strings, dtype=object)
    n_classes = labels.size
    if n_classes == 1 and labels.dtype == object:
        raise ValueError("one string class label: onnxruntime would index past it for a positive score")
    weights = _floats("class_weights", class_weights, class_weights_as_tensor, dtype)
    base = _floats("base_values", base_values, base_values_as_tensor, dtype)
    if base.size not in ((0, 1, 2) if n_classes == 2 else (0, n_classes)):
        raise ValueError(f"base_values has {base.size} values for {n_classes} classes")
    forest = laid_out((dtype, n_classes, "SUM", tuple(nodes)),
                       (class_ids, class_nodeids, class_treeids, class_weights, class_weights_as_tensor,
                        *nodes.values()),
                       lambda: _forest(dtype, n_classes, n_classes == 1, "SUM", "class", class_ids, class_nodeids,
                                       class_treeids, weights, **nodes))
    scores, hit = _predict(forest, data, dtype, "SUM")
    raw = n_classes == 1  # onnxruntime returns 1/0 itself for one label: there is no second to pick
    # two classes of which the leaves weigh one are one score, onnxruntime's binary rules; weights on both
    # are two scores, a multiclass model: onnxruntime then returned 1/0 by the second score's sign, not a
    # label (labels [3, 7] at scores [0.7, 0.3] gave 1), where onnx's reference picks the larger, 3, as here
    binary_case = n_classes == 2 and np.unique(np.asarray(class_ids, dtype=np.int64)).size == 1
    if n_classes == 1:
        s = scores[:, 0] + (base[0] if base.size else 0)
        index = (s > 0).astype(np.int64)
        z = (probit(s) if post_transform == "PROBIT" else s).reshape(-1, 1)
    elif binary_case:
        positive, z = _binary(scores, hit, base, post_transform, not (weights < 0).any())
        index = positive.astype(np.int64)
    else:
        if base.size:
            scores, hit = scores + base, np.ones_like(hit)
        empty = np.flatnonzero(~hit.any(axis=1))
        if empty.size:
            raise ValueError(f"no class has a score for sample {empty[0]}: its leaves carry no class weights")
        index = np.argmax(np.where(hit, scores, -np.inf), axis=1)
        z = apply_post_transform(np.where(hit, scores, 0), post_transform)
    y = index if raw and labels.dtype != object else labels[index]
    return y, np.asarray(z, dtype=np.float32).reshape(data.shape[0], n_classes)


@kernel("TreeEnsembleRegressor", since=1, domain=ML)
def tree_ensemble_regressor(x: Array, aggregate_function: str = "SUM", base_values: Sequence[float] | None = None,
                            base_values_as_tensor: Array | None = None, n_targets: int | None = None,
                            post_transform: str = "NONE", target_ids: Sequence[int] = (),
                            target_nodeids: Sequence[int] = (), target_treeids: Sequence[int] = (),
                            target_weights: Sequence[float] | None = None,
                            target_weights_as_tensor: Array | None = None, **nodes: object) -> Array:
    """Opsets 1 and 3 (3 adds the *_as_tensor attributes): Y (samples, n_targets) float32."""
    if n_targets is None or n_targets < 1:
        raise ValueError(f"n_targets must be a positive count, got {n_targets}")
    _check_choice("aggregate_function", aggregate_function, AGGREGATES)
    _check_choice("post_transform", post_transform, list(POST_TRANSFORMS))
    data, dtype = _rows(x)
    base = _floats("base_values", base_values, base_values_as_tensor, dtype)
    if base.size not in (0, n_targets):
        raise ValueError(f"base_values has {base.size} values for {n_targets} targets")
    weights = _floats("target_weights", target_weights, target_weights_as_tensor, dtype)
    forest = laid_out((dtype, n_targets, aggregate_function, tuple(nodes)),
                       (target_ids, target_nodeids, target_treeids, target_weights, target_weights_as_tensor,
                        *nodes.values()),
                       lambda: _forest(dtype, n_targets, n_targets == 1, aggregate_function, "target", target_ids,
                                       target_nodeids, target_treeids, weights, **nodes))
    scores, hit = _predict(forest, data, dtype, aggregate_function)
    if aggregate_function == "AVERAGE":
        scores = scores / dtype(forest.roots.size)
    if base.size:
        scores = scores + base
    if n_targets == 1:  # onnxruntime's one-target path: no score is gated, only PROBIT transforms
        return np.asarray(probit(scores) if post_transform == "PROBIT" else scores, dtype=np.float32)
    return np.asarray(apply_post_transform(np.where(hit, scores, 0), post_transform), dtype=np.float32)
