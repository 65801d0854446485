"""The differential sweep's families of the ai.onnx.ml domain: tree ensembles (the legacy
TreeEnsembleClassifier/Regressor of opsets 1 and 3, and TreeEnsemble of opset 5) built as random
forests in code, linear models and SVMs, the preprocessing ops (scalers, normalizers, encoders,
imputers, feature extraction), and scikit-learn models as skl2onnx converts them (no ZipMap: maps are
not compared). Class labels are int64, so the predicted labels are compared exactly, beside the
float scores; inputs are the dtypes onnxruntime's ml kernels take (float32, float64, int64, int32).

onnx's reference often cannot judge these ops (it rejects the legacy ensembles' ``*_as_tensor``
attributes and integer X, and ignores TreeEnsemble's post_transform), so onnxruntime is the peer that
counts here. Configurations where the two part from each other as well as from hal are left out where
they are drawn, each with its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import TensorProto, helper

from benchmarks.differential_draw import Case, ri

ML = "ai.onnx.ml"
TRANSFORMS = ("NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT")
MODES = ("BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ")
#: the element type of each output by how the family declares it (onnx infers none for most ml ops)
INT64, FLOAT = TensorProto.INT64, TensorProto.FLOAT


def _ml(c: Case, op: str, inputs: list[str], types: list[int], **attrs: Any) -> list[str]:
    """An ai.onnx.ml node; its outputs typed as ``types`` says (onnx's inference types few of them)."""
    names = [c._name(op) for _ in types]
    c.nodes.append(helper.make_node(op, inputs, names, domain=ML, **attrs))
    c.declared.update(zip(names, types))
    return names


def _grid(r: np.random.Generator) -> np.ndarray:
    """Split points and feature values share a coarse grid, so values often sit on a split (the modes' ties)."""
    return np.round(r.uniform(-2, 2, 9) * 2) / 2


def _x(c: Case, rows: int, width: int, grid: np.ndarray, nan: bool = False, kinds: str = "ffdli") -> str:
    """X (rows, width) of one of ``kinds`` (float32, float64, int64, int32 by their letters), half of the
    values on the grid, NaN (``nan``) or infinities sometimes."""
    r = c.rng
    kind = {"f": np.float32, "d": np.float64, "l": np.int64, "i": np.int32}[str(r.choice(list(kinds)))]
    v = np.where(r.random((rows, width)) < 0.5, r.choice(grid, (rows, width)), r.uniform(-2.5, 2.5, (rows, width)))
    c.dtype = np.dtype(kind)  # (the finding's dtype in the report)
    if c.dtype.kind == "i":
        return c.feed([rows, width], value=np.round(v * 1.5).astype(kind))
    v = v.astype(kind)
    if nan:
        v[r.random(v.shape) < 0.15] = np.nan
    if r.random() < 0.1:
        v[r.random(v.shape) < 0.2] = r.choice([np.inf, -np.inf])
    return c.feed([rows, width], value=v)


def _tree(r: np.random.Generator, width: int, grid: np.ndarray, modes: tuple[str, ...]) -> list[list[Any]]:
    """One random tree, depth 0 to 4, in depth-first order: [feature, mode, split, true, false, tracks
    true] per node, children by position (a leaf's are -1)."""
    depth = ri(r, 0, 5)
    out: list[list[Any]] = []

    def grow(level: int) -> int:
        out.append([0, "LEAF", 0.0, -1, -1, 0])
        me = len(out) - 1
        if level < depth and (level == 0 or r.random() > 0.25):
            out[me][:3] = [ri(r, 0, width), str(r.choice(modes)), float(r.choice(grid))]
            out[me][5] = ri(r, 0, 2)
            out[me][3] = grow(level + 1)
            out[me][4] = grow(level + 1)
        return me

    grow(0)
    return out


def _forest(r: np.random.Generator, n_trees: int, width: int, grid: np.ndarray) -> dict:
    """Random trees as the legacy ops list them: each tree's nodes together, its root first (where
    onnxruntime starts a tree), the rest in shuffled order, with node ids shuffled within the tree;
    returns the nodes_* attributes and the leaves as (tree, node id)."""
    rows: list[list[Any]] = []  # [tree, id, feature, mode, value, true id, false id, tracks true]
    leaves: list[tuple[int, int]] = []
    for t in range(n_trees):
        tree = _tree(r, width, grid, MODES)
        ids = r.permutation(len(tree)) if r.random() < 0.5 else np.arange(len(tree))
        order = [0, *(1 + r.permutation(len(tree) - 1))]
        for i in order:
            feature, mode, split, yes, no, tracks = tree[i]
            leaf = yes < 0
            rows.append([t, int(ids[i]), feature, mode, split, 0 if leaf else int(ids[yes]),
                         0 if leaf else int(ids[no]), tracks])
            if leaf:
                leaves.append((t, int(ids[i])))
    keys = ("treeids", "nodeids", "featureids", "modes", "values", "truenodeids", "falsenodeids")
    attrs: dict[str, Any] = {f"nodes_{k}": [n[i] for n in rows] for i, k in enumerate(keys)}
    if r.random() < 0.6:
        attrs["nodes_missing_value_tracks_true"] = [n[7] for n in rows]
    return {"attrs": attrs, "leaves": leaves}


def _leaf_weights(r: np.random.Generator, leaves: list[tuple[int, int]], n_out: int, how: str) -> list[tuple]:
    """(target, tree, node, weight) per leaf weight: every target on each leaf (a random forest's
    classes), one target a tree (gradient boosting's), or a random subset of targets."""
    out = []
    for t, node in leaves:
        if how == "all":
            targets = list(range(n_out))
        elif how == "tree":
            targets = [t % n_out]
        else:
            targets = sorted(r.permutation(n_out)[:ri(r, 1, n_out + 1)].tolist())
        for k in targets:
            w = float(r.choice([r.uniform(0, 1), r.standard_normal(), float(ri(r, 0, 3))]))
            out.append((k, t, node, w))
    return out


def _tree_legacy(c: Case) -> list[str]:
    """TreeEnsembleClassifier and TreeEnsembleRegressor (ai.onnx.ml opsets 1 and 3): every branch mode,
    NaN in X with missing_value_tracks_true, each post transform, aggregate and weight layout, base
    values, the binary one-score case, int64 labels."""
    r = c.rng
    grid = _grid(r)
    width, rows = ri(r, 1, 6), ri(r, 1, 9)
    classifier = r.random() < 0.5
    # (onnxruntime's regressor takes floats only)
    x = _x(c, rows, width, grid, nan=r.random() < 0.4, kinds="ffdli" if classifier else "ffd")
    forest = _forest(r, ri(r, 1, 6), width, grid)
    attrs = forest["attrs"]
    opset = int(r.choice([1, 3]))
    c.domains[ML] = opset
    n_out = int(r.choice([1, 2, 2, 3, 4])) if classifier else ri(r, 1, 5)
    layout = str(r.choice(["all", "tree", "subset"]))
    # two classes the leaves both weigh are left out: onnxruntime answers 1 or 0 by the second score's sign
    # (not a label) and rewrites the scores with base_values, onnx's reference takes the larger score's label
    if classifier and n_out == 2:  # binary: the leaves weigh one class (gradient boosting)
        layout = "one"
    weights = _leaf_weights(r, forest["leaves"], 1 if layout == "one" else n_out, "all" if layout == "one" else layout)
    if layout == "one" and r.random() < 0.3:
        weights = [(1, *w[1:]) for w in weights]
    prefix = "class" if classifier else "target"
    attrs[f"{prefix}_ids"], attrs[f"{prefix}_treeids"], attrs[f"{prefix}_nodeids"] = (
        [w[0] for w in weights], [w[1] for w in weights], [w[2] for w in weights])
    attrs[f"{prefix}_weights"] = [w[3] for w in weights]
    # (binary PROBIT left out: onnxruntime leaves the second score column unwritten, whatever memory held)
    attrs["post_transform"] = str(r.choice(TRANSFORMS[:4] if layout == "one" else TRANSFORMS))
    if r.random() < 0.5:
        attrs["base_values"] = r.uniform(-1, 1, 1 if layout == "one" and r.random() < 0.5 else n_out).round(3).tolist()
    if opset == 3 and r.random() < 0.5:  # the *_as_tensor twins, in the threshold's dtype
        kind = np.float64 if c.feeds[x].dtype == np.float64 else np.float32
        for name in ("nodes_values", f"{prefix}_weights", "base_values"):
            if name in attrs:
                attrs[name + "_as_tensor"] = helper.make_tensor(name, helper.np_dtype_to_tensor_dtype(np.dtype(kind)),
                                                                [len(attrs[name])], attrs.pop(name))
    if classifier:
        attrs["classlabels_int64s"] = _labels(r, n_out)
        return _ml(c, "TreeEnsembleClassifier", [x], [INT64, FLOAT], **attrs)
    attrs["aggregate_function"] = str(r.choice(["SUM", "AVERAGE", "MIN", "MAX"]))
    return _ml(c, "TreeEnsembleRegressor", [x], [FLOAT], n_targets=n_out, **attrs)


def _tree5(c: Case) -> list[str]:
    """TreeEnsemble (ai.onnx.ml opset 5): interior nodes and leaves in two shuffled lists, the roots
    named by tree_roots, every mode but BRANCH_MEMBER's sets tested on whole values, a one-leaf tree
    sometimes, NaN with missing_value_tracks_true, each aggregate, splits and weights in X's dtype."""
    r = c.rng
    grid = _grid(r)
    width, rows = ri(r, 1, 6), ri(r, 1, 9)
    x = _x(c, rows, width, grid, nan=r.random() < 0.4, kinds="ffd")
    kind = c.dtype
    n_targets = ri(r, 1, 5)
    trees = [_tree(r, width, grid, (*MODES, "BRANCH_MEMBER")) for _ in range(ri(r, 1, 6))]
    branches = [(t, i) for t, tree in enumerate(trees) for i, n in enumerate(tree) if n[3] >= 0]
    leaves = [(t, i) for t, tree in enumerate(trees) for i, n in enumerate(tree) if n[3] < 0]
    one_leaf = [t for t, tree in enumerate(trees) if len(tree) == 1]
    branches += [(t, 0) for t in one_leaf]  # a one-leaf tree is a node whose two branches name that leaf
    branches = [branches[i] for i in r.permutation(len(branches))]
    leaves = [leaves[i] for i in r.permutation(len(leaves))]
    # per tree: a node's position in the tree -> its place in nodes_* (a branch) or leaf_* (a leaf)
    where: list[dict[int, int]] = [{} for _ in trees]
    leaf_at: list[dict[int, int]] = [{} for _ in trees]
    for k, (t, i) in enumerate(branches):
        where[t][i] = k
    for k, (t, i) in enumerate(leaves):
        leaf_at[t][i] = k
    attrs: dict[str, list[Any]] = {k: [] for k in ("featureids", "modes", "splits", "truenodeids", "trueleafs",
                                                   "falsenodeids", "falseleafs", "tracks")}
    members: list[float] = []
    for t, i in branches:
        feature, mode, split, yes, no, tracks = trees[t][i]
        if yes < 0:  # a one-leaf tree
            mode, yes, no = "BRANCH_LEQ", i, i
        code = (*MODES, "BRANCH_MEMBER").index(mode)
        if code == 6:  # a set of whole numbers (onnxruntime takes no others) but 0, then NaN: onnx's reference
            # ends a set at a 0 (its walrus loop reads 0 as false) and goes on reading the next set's members
            members += [*sorted(set(r.choice([-3.0, -2.0, -1.0, 1.0, 2.0], ri(r, 1, 4)).tolist())), np.nan]
        for key, v in (("featureids", feature), ("modes", code), ("splits", split), ("tracks", tracks)):
            attrs[key].append(v)
        for side, child in (("true", yes), ("false", no)):
            leaf = trees[t][child][3] < 0
            attrs[side + "leafs"].append(int(leaf))
            attrs[side + "nodeids"].append(leaf_at[t][child] if leaf else where[t][child])
    extra: dict[str, Any] = {}
    if members:
        extra["membership_values"] = helper.make_tensor("m", helper.np_dtype_to_tensor_dtype(kind), [len(members)],
                                                        np.array(members, kind))
        # X in whole values: onnxruntime truncates x toward zero to test it against a set (0.5 is in {0}),
        # onnx's reference and the spec test x itself
        c.feeds[x] = np.round(c.feeds[x])
    if r.random() < 0.6:
        extra["nodes_missing_value_tracks_true"] = attrs["tracks"]
    # post transforms: onnx's reference ignores them all and onnxruntime reads SOFTMAX (1) and LOGISTIC (2)
    # the other way round, so those two are left out; one target: onnxruntime applies only PROBIT, the spec
    # (and hal) every transform, so SOFTMAX_ZERO is drawn for several float32 targets only (for float64
    # onnxruntime sums its exponentials in float32: 3e-8 off float64's softmax, where hal keeps float64)
    post = int(r.choice([0, 0, 3, 4] if n_targets > 1 and kind == np.float32 else [0, 0, 4]))
    if post == 4 and kind == np.float64:  # onnxruntime's float64 PROBIT is 1e-7 relative off in places
        post = 0  # (1.1627651 where float64's is 1.1627653: an erfinv approximation; 2 in 2,000 draws)
    c.domains[ML] = 5
    c.opset = 21
    weights = np.round(r.standard_normal(len(leaves)) * 2, 2)
    return _ml(c, "TreeEnsemble", [x], [helper.np_dtype_to_tensor_dtype(kind)], n_targets=n_targets,
               aggregate_function=ri(r, 0, 4), post_transform=post,
               tree_roots=[where[t][0] for t in range(len(trees))],
               nodes_featureids=attrs["featureids"], nodes_truenodeids=attrs["truenodeids"],
               nodes_trueleafs=attrs["trueleafs"], nodes_falsenodeids=attrs["falsenodeids"],
               nodes_falseleafs=attrs["falseleafs"],
               nodes_modes=helper.make_tensor("modes", TensorProto.UINT8, [len(branches)], attrs["modes"]),
               nodes_splits=helper.make_tensor("s", helper.np_dtype_to_tensor_dtype(kind), [len(branches)],
                                               np.array(attrs["splits"], kind)),
               leaf_targetids=r.integers(0, n_targets, len(leaves)).tolist(),
               leaf_weights=helper.make_tensor("w", helper.np_dtype_to_tensor_dtype(kind), [len(leaves)],
                                               weights.astype(kind)), **extra)


def _labels(r: np.random.Generator, n: int) -> list[int]:
    return sorted(r.permutation(20)[:n].tolist()) if r.random() < 0.5 else list(range(n))


def _linear(c: Case) -> list[str]:
    """LinearClassifier and LinearRegressor: one to four classes or targets, with labels or without
    (one weight row), intercepts or none, multi_class, every post transform, ties between class scores."""
    r = c.rng
    width, rows = ri(r, 1, 6), ri(r, 1, 9)
    regressor = r.random() < 0.5
    x = _x(c, rows, width, _grid(r), kinds="f" if regressor else "ffdli")  # (onnxruntime's regressor: float32)
    c.domains[ML] = 1
    post = str(r.choice(TRANSFORMS))
    if regressor:
        targets = ri(r, 1, 4)
        bias = {"intercepts": r.uniform(-1, 1, targets).round(2).tolist()} if r.random() < 0.7 else {}
        weights = r.standard_normal(targets * width).round(2).tolist()
        return _ml(c, "LinearRegressor", [x], [FLOAT], coefficients=weights, targets=targets, post_transform=post,
                   **bias)
    n = ri(r, 1, 5)
    coefficients = r.standard_normal((n, width)).round(1)
    if n > 1 and r.random() < 0.3:  # two classes with the same weights: tied scores, the first one wins
        coefficients[-1] = coefficients[0]
    labels: dict[str, Any] = {}
    if n > 1 or r.random() < 0.7:
        labels["classlabels_ints"] = _labels(r, max(n, 2))
    if n == 1 and post == "PROBIT":  # one weight row and PROBIT: onnxruntime writes the PROBIT of each score
        post = "NONE"  # one after another into the first column of rows ([p0, p1], [0, 0]), the reference NaN
    intercepts = r.uniform(-1, 1, n).round(1)
    if _decimal_tie(c.feeds[x], coefficients, intercepts, post == "PROBIT"):
        # a score of exactly 0 in decimals (one weight row) or two rows of other weights scoring alike
        # fall to the last bit of each implementation's float32 sums (MLAS fuses its multiply-adds,
        # numpy's BLAS need not): the sign, and so the label, is anyone's; under PROBIT so is a score at
        # 0 or 1 (its log's edge: a number or NaN) or 0.5 (where its formula cancels); moved off the grid
        intercepts = intercepts + np.linspace(0.03, 0.07, n)
    return _ml(c, "LinearClassifier", [x], [INT64, FLOAT], coefficients=coefficients.ravel().tolist(),
               intercepts=intercepts.tolist(), multi_class=ri(r, 0, 2), post_transform=post, **labels)


def _decimal_tie(x: np.ndarray, coefficients: np.ndarray, intercepts: np.ndarray, probit: bool = False) -> bool:
    """Whether a row of ``x`` scores 0 under one weight row, or alike under two different weight rows, or
    (``probit``) 0, 0.5 or 1 under any."""
    f32 = np.float32
    with np.errstate(all="ignore"):  # (infinite features)
        scores = (np.asarray(x, f32).astype(np.float64) @ coefficients.astype(f32).astype(np.float64).T
                  + intercepts.astype(f32))
        if probit and any((np.abs(scores - edge) < 1e-5).any() for edge in (0, 0.5, 1)):
            return True
        if len(intercepts) == 1:
            return bool((np.abs(scores) < 1e-5).any())
        return any(not np.array_equal(coefficients[i], coefficients[j])
                   and (np.abs(scores[:, i] - scores[:, j]) < 1e-5).any()
                   for i in range(len(intercepts)) for j in range(i))


def _svm(c: Case) -> list[str]:
    """SVMClassifier and SVMRegressor: LINEAR, POLY, RBF and SIGMOID kernels over support vectors (one-vs-one
    votes, probabilities from prob_a/prob_b), the linear form without vectors, one_class, post transforms."""
    r = c.rng
    width, rows = ri(r, 1, 5), ri(r, 1, 9)
    regressor = r.random() < 0.35
    x = _x(c, rows, width, _grid(r), kinds="f" if regressor else "ffdli")  # (onnxruntime's regressor: float32)
    c.domains[ML] = 1
    kernel = str(r.choice(["LINEAR", "POLY", "RBF", "SIGMOID"]))
    params = [float(r.choice([0.1, 0.5, 1.0])), float(r.choice([0.0, 0.5, -1.0])), float(r.choice([1, 2, 3]))]
    post = str(r.choice(TRANSFORMS))
    if regressor:
        n = ri(r, 0, 5)
        common: dict[str, Any] = {"kernel_type": kernel, "kernel_params": params, "post_transform": post,
                                  "rho": [round(float(r.uniform(-1, 1)), 2)]}
        if n:
            return _ml(c, "SVMRegressor", [x], [FLOAT], n_supports=n, one_class=ri(r, 0, 2),
                       support_vectors=r.uniform(-2, 2, n * width).round(2).tolist(),
                       coefficients=r.standard_normal(n).round(2).tolist(), **common)
        return _ml(c, "SVMRegressor", [x], [FLOAT], coefficients=r.standard_normal(width).round(2).tolist(), **common)
    n = ri(r, 2, 5)
    counts = r.integers(1, 4, n)
    vectors = int(counts.sum())
    pairs = n * (n - 1) // 2
    attrs: dict[str, Any] = {"kernel_type": kernel, "kernel_params": params, "post_transform": post,
                             "classlabels_ints": _labels(r, n), "vectors_per_class": counts.tolist(),
                             "support_vectors": r.uniform(-2, 2, vectors * width).round(2).tolist(),
                             "coefficients": r.standard_normal((n - 1) * vectors).round(2).tolist(),
                             "rho": r.uniform(-1, 1, pairs).round(2).tolist()}
    if r.random() < 0.5:
        attrs["prob_a"] = (-r.uniform(0.5, 3, pairs)).round(2).tolist()
        attrs["prob_b"] = r.uniform(-0.5, 0.5, pairs).round(2).tolist()
    # PROBIT is drawn for the pair scores of three classes or more: of two classes' one score onnxruntime
    # gives [NaN, 0] a row where onnx's reference gives one column; and of coupled probabilities it
    # magnifies float32's last bits of the coupling's iterations (by 1e5 at a probability of 1e-6). A pair
    # score within about 1e-3 of 0.5 is magnified likewise (Winitzki's float32 formula cancels there): the
    # scores' last bit, which follows each engine's sum order, moved PROBIT by 3e-4 once in 2,000 draws
    # (seed 301362); that finding stands, since no formula of hal's can take its scores' bits from onnxruntime's
    if post == "PROBIT" and (n == 2 or "prob_a" in attrs):
        attrs["post_transform"] = "NONE"
    return _ml(c, "SVMClassifier", [x], [INT64, FLOAT], **attrs)


def _prep(c: Case) -> list[str]:
    """The preprocessing ops, alone or as a short pipeline (Binarizer, Imputer, Scaler, Normalizer):
    Normalizer MAX/L1/L2 (zero rows too), Scaler's per-feature or single offset and scale, OneHotEncoder of
    int64 categories (numbers outside them, fractions truncated), LabelEncoder int64/float keys and values
    (opsets 2 and 4, tensors, NaN keys, defaults), Imputer of NaN or a value, ArrayFeatureExtractor and
    FeatureVectorizer (inputs cut or padded to their widths)."""
    r = c.rng
    grid = _grid(r)
    width, rows = ri(r, 1, 6), ri(r, 1, 6)
    k = ri(r, 0, 5)
    c.domains[ML] = 1
    if k == 0:  # a pipeline of float32 ops
        x = _x(c, rows, width, grid, nan=True, kinds="f")
        if r.random() < 0.3:
            c.feeds[x][r.random((rows, 1))[:, 0] < 0.3] = 0  # zero rows: nothing to normalise by
        y = x
        if r.random() < 0.3:  # (first: onnx infers no type after Imputer, and Binarizer's inference needs one;
            c.feeds[x] = np.nan_to_num(c.feeds[x])  # onnxruntime refuses a NaN there)
            y = _ml(c, "Binarizer", [y], [FLOAT], threshold=float(r.choice([0.0, *grid])))[0]
        if r.random() < 0.6:
            nan = r.random() < 0.6
            y = _ml(c, "Imputer", [y], [FLOAT], replaced_value_float=float("nan") if nan else float(r.choice(grid)),
                    imputed_value_floats=r.uniform(-1, 1, 1 if r.random() < 0.3 else width).round(2).tolist())[0]
        if r.random() < 0.7:
            n = 1 if r.random() < 0.3 else width
            y = _ml(c, "Scaler", [y], [FLOAT], offset=r.uniform(-1, 1, n).round(2).tolist(),
                    scale=r.choice([0.0, 0.5, 1.0, 2.0, -1.5], n).tolist())[0]
        if y == x or r.random() < 0.6:
            return _ml(c, "Normalizer", [y], [FLOAT], norm=str(r.choice(["MAX", "L1", "L2"])))
        return [y]
    if k == 1:  # every X dtype these take; a zero row, all-negative rows
        x = _x(c, rows, width, grid)
        c.feeds[x][0] = 0
        if r.random() < 0.5:
            n = 1 if r.random() < 0.3 else width
            return _ml(c, "Scaler", [x], [FLOAT], offset=r.uniform(-1, 1, n).round(2).tolist(),
                       scale=r.uniform(-2, 2, n).round(2).tolist())
        return _ml(c, "Normalizer", [x], [FLOAT], norm=str(r.choice(["MAX", "L1", "L2"])))
    if k == 2:
        cats = sorted(set(r.integers(-3, 6, ri(r, 1, 6)).tolist()))
        x = _x(c, rows, width, grid, kinds="fdl")
        if c.dtype.kind == "f" and r.random() < 0.5:
            c.feeds[x] = np.round(c.feeds[x])
        return _ml(c, "OneHotEncoder", [x], [FLOAT], cats_int64s=cats, zeros=1)
    if k == 3:
        return _label_encoder(c, rows, width)
    if r.random() < 0.5:
        x = _x(c, rows, width, grid)
        index = c.ints(r.integers(0, width, ri(r, 1, 5)))
        return _ml(c, "ArrayFeatureExtractor", [x, index], [helper.np_dtype_to_tensor_dtype(c.feeds[x].dtype)])
    kind = str(r.choice(list("fdli")))  # (of one dtype: onnxruntime binds them all to one type)
    xs = [_x(c, rows, ri(r, 1, 4), grid, kinds=kind) for _ in range(ri(r, 1, 4))]
    dims = [int(c.feeds[x].shape[1] + r.choice([0, 0, -1, 1])) for x in xs]
    return _ml(c, "FeatureVectorizer", xs, [FLOAT], inputdimensions=[max(d, 1) for d in dims])


def _label_encoder(c: Case, rows: int, width: int) -> list[str]:
    """LabelEncoder between int64 and float keys and values: opset 2's lists (float keys may hold NaN), or
    opset 4's tensors (double keys and values as well) with a default_tensor; inputs hit a key or miss."""
    r = c.rng
    n = ri(r, 1, 6)
    int_keys, int_values = r.random() < 0.5, r.random() < 0.5
    # keys without repeats: onnxruntime takes a repeated key's first value, onnx's reference (and opset 4's
    # text) the last
    keys = r.permutation(10)[:n] - 4 if int_keys else r.permutation(60)[:n] / 10 - 3
    opset = int(r.choice([2, 4]))
    if not int_keys and opset == 4 and r.random() < 0.3:  # (a NaN key matches a NaN at opset 4; at opset 2 the
        keys[0] = np.nan  # text's bitwise comparison matches one too, but neither onnxruntime nor the reference)
    values = r.integers(-5, 50, n) if int_values else np.round(r.uniform(-5, 5, n), 2)
    double = opset == 4 and r.random() < 0.5
    key_dtype = np.int64 if int_keys else (np.float64 if double else np.float32)
    value_dtype = np.int64 if int_values else (np.float64 if double and not int_keys else np.float32)
    pool = np.concatenate([keys, keys + 1]) if int_keys else np.concatenate([keys, np.round(r.uniform(-3, 3, 4), 1)])
    x = c.feed([rows, width], value=r.choice(pool, (rows, width)).astype(key_dtype))
    c.dtype = np.dtype(key_dtype)
    c.domains[ML] = opset
    attrs: dict[str, Any] = {}
    if opset == 4 and r.random() < 0.6:
        attrs["keys_tensor"] = helper.make_tensor("k", helper.np_dtype_to_tensor_dtype(np.dtype(key_dtype)), [n],
                                                  keys.astype(key_dtype))
        attrs["values_tensor"] = helper.make_tensor("v", helper.np_dtype_to_tensor_dtype(np.dtype(value_dtype)), [n],
                                                    values.astype(value_dtype))
        if r.random() < 0.7:
            attrs["default_tensor"] = helper.make_tensor("d", helper.np_dtype_to_tensor_dtype(np.dtype(value_dtype)),
                                                         [1], np.array([7], value_dtype))
    else:
        value_dtype = np.int64 if int_values else np.float32
        if key_dtype == np.float64:
            c.feeds[x] = c.feeds[x].astype(np.float32)
            c.inputs[-1].type.tensor_type.elem_type = TensorProto.FLOAT
            c.dtype = np.dtype(np.float32)
        attrs["keys_int64s" if int_keys else "keys_floats"] = keys.tolist()
        attrs["values_int64s" if int_values else "values_floats"] = values.tolist()
        if r.random() < 0.5:
            attrs["default_int64" if int_values else "default_float"] = 9 if int_values else -2.5
    return _ml(c, "LabelEncoder", [x], [helper.np_dtype_to_tensor_dtype(np.dtype(value_dtype))], **attrs)


def _estimator(r: np.random.Generator, task: str, nan: bool) -> Any:
    """A small scikit-learn model for ``task`` (classify or regress), in a pipeline with a scaler or an
    imputer sometimes; with ``nan``, one that takes NaN. (Histogram boosting is left out: its fit takes a
    second, and skl2onnx 1.20 fails to write it.)"""
    from sklearn import ensemble, linear_model, pipeline, preprocessing, svm, tree
    from sklearn.impute import SimpleImputer

    seed = ri(r, 0, 1000)
    kernel = str(r.choice(["linear", "poly", "rbf", "sigmoid"]))
    if task == "classify":
        choices = [lambda: tree.DecisionTreeClassifier(max_depth=ri(r, 1, 6), random_state=seed),
                   lambda: ensemble.RandomForestClassifier(ri(r, 1, 6), max_depth=ri(r, 1, 5), random_state=seed),
                   lambda: ensemble.ExtraTreesClassifier(ri(r, 1, 6), max_depth=ri(r, 1, 5), random_state=seed),
                   lambda: ensemble.GradientBoostingClassifier(n_estimators=ri(r, 1, 6), max_depth=ri(r, 1, 4),
                                                               random_state=seed),
                   lambda: linear_model.LogisticRegression(C=float(r.choice([0.1, 1.0, 10.0]))),
                   lambda: svm.LinearSVC(C=float(r.choice([0.1, 1.0]))),
                   lambda: svm.SVC(kernel=kernel, probability=bool(r.random() < 0.5), gamma=0.5, coef0=0.5,
                                   degree=2, random_state=seed)]
    else:
        choices = [lambda: tree.DecisionTreeRegressor(max_depth=ri(r, 1, 6), random_state=seed),
                   lambda: ensemble.RandomForestRegressor(ri(r, 1, 6), max_depth=ri(r, 1, 5), random_state=seed),
                   lambda: ensemble.GradientBoostingRegressor(n_estimators=ri(r, 1, 6), max_depth=ri(r, 1, 4),
                                                              random_state=seed),
                   lambda: linear_model.LinearRegression(), lambda: linear_model.Ridge(alpha=1.0),
                   lambda: svm.SVR(kernel=kernel, gamma=0.5, coef0=0.5, degree=2), lambda: svm.LinearSVR()]
    model = choices[ri(r, 0, len(choices))]()
    steps: list[Any] = []
    # NaN goes to an imputer, or to a single tree or a forest as it is (they learn where it goes)
    if nan and (r.random() < 0.5 or not isinstance(model, (tree.BaseDecisionTree, ensemble.RandomForestClassifier,
                                                            ensemble.RandomForestRegressor))):
        steps.append(SimpleImputer(strategy=str(r.choice(["mean", "median", "constant"])), fill_value=0.0))
    if r.random() < 0.3 and (steps or not nan):
        steps.append([preprocessing.StandardScaler(), preprocessing.MaxAbsScaler(), preprocessing.MinMaxScaler(),
                      preprocessing.Normalizer(str(r.choice(["l1", "l2", "max"])))][ri(r, 0, 4)])
    return pipeline.make_pipeline(*steps, model) if steps else model


def _skip_identities(m: Any) -> None:
    """Drop skl2onnx's Identity nodes, their producers writing their outputs: onnx infers no type for most
    ml ops, so an Identity after one stops ``Case.model``'s strict inference."""
    for node in [n for n in m.graph.node if n.op_type == "Identity"]:
        producer = next((n for n in m.graph.node if node.input[0] in n.output), None)
        if producer is None:
            continue
        producer.output[list(producer.output).index(node.input[0])] = node.output[0]
        for other in m.graph.node:
            other.input[:] = [node.output[0] if i == node.input[0] else i for i in other.input]
        m.graph.node.remove(node)


def _sklearn(c: Case) -> list[str]:
    """A scikit-learn model fitted on a small seeded dataset and converted by skl2onnx (ai.onnx.ml 3, no
    ZipMap), as users run them: trees and boosting (NaN for histogram boosting), linear models, SVMs,
    pipelines with scalers and imputers; fed rows of its training set (values on the splits) and new ones.
    Needs the bench extra (scikit-learn, skl2onnx)."""
    import warnings

    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    r = c.rng
    c.dtype = np.dtype(np.float32)
    width, n = ri(r, 1, 6), ri(r, 20, 60)
    train = r.standard_normal((n, width))
    if r.random() < 0.5:
        train = np.round(train, 1)  # repeated values: splits between them, ties
    nan = r.random() < 0.3
    task = "classify" if r.random() < 0.6 else "regress"
    score = train @ r.standard_normal(width) + 0.3 * r.standard_normal(n)
    if task == "classify":
        k = ri(r, 2, 5)
        y = np.searchsorted(np.quantile(score, np.linspace(0, 1, k + 1)[1:-1]), score)
        if r.random() < 0.5:
            y = np.sort(r.permutation(30)[:k])[y]  # labels other than 0..k-1
    else:
        y = score
    if nan:
        train[r.random(train.shape) < 0.1] = np.nan
    model = _estimator(r, task, nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model.fit(train, y)
        except ValueError as e:  # (one class in y, a degenerate fit)
            raise ValueError(f"fit: {e}") from e
    rows = ri(r, 1, 9)
    fresh = r.standard_normal((rows, width))
    x = np.where(r.random((rows, 1)) < 0.5, train[r.integers(0, n, rows)], fresh).astype(np.float32)
    if nan:
        x[r.random(x.shape) < 0.15] = np.nan
    name = c.feed([rows, width], value=x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onx = None
        for options in ({"zipmap": False}, None):  # (classifiers without probabilities have no ZipMap option)
            try:
                onx = convert_sklearn(model, initial_types=[(name, FloatTensorType([None, width]))],
                                      target_opset={"": 17, ML: 3}, options=options)
                break
            except NameError:
                continue
            except Exception as e:  # a model skl2onnx has no converter for as configured
                raise ValueError(f"skl2onnx: {e}") from e
        if onx is None:
            raise ValueError("skl2onnx cannot write it (a pipeline ending in LinearSVC passes it a ZipMap option)")
    _skip_identities(onx)
    c.nodes.extend(onx.graph.node)
    c.inits.extend(onx.graph.initializer)
    c.domains.update({d.domain: d.version for d in onx.opset_import if d.domain})
    c.opset = next(d.version for d in onx.opset_import if not d.domain)
    outs = [o.name for o in onx.graph.output]
    c.declared.update({o.name: o.type.tensor_type.elem_type for o in onx.graph.output})
    return outs


FAMILIES: dict[str, Callable[[Case], list[str]]] = {"ml_trees": _tree_legacy, "ml_tree5": _tree5, "ml_linear": _linear,
                                                    "ml_svm": _svm, "ml_prep": _prep, "ml_sklearn": _sklearn}
