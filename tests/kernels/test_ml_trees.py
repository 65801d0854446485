"""TreeEnsembleClassifier and TreeEnsembleRegressor (ai.onnx.ml opsets 1 and 3) against onnxruntime.

Every model is built here with onnx.helper: random forests whose splits and inputs share one float32-exact
grid (so ==, <= and < all decide), the two-class layouts onnxruntime treats specially, and broken attributes.
Each runs through hal's cpu target and through onnxruntime; labels must agree exactly, scores to 1e-5.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import hal

CLASSIFIER, REGRESSOR = "TreeEnsembleClassifier", "TreeEnsembleRegressor"
BRANCHES = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"]
TRANSFORMS = ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT"]
GRID = np.arange(-2.0, 2.25, 0.25, dtype=np.float32)  # splits and inputs both drawn from here


def _model(op: str, attrs: dict, n_features: int | None, n_out: int, *, ml: int = 1,
           x_type: int = TensorProto.FLOAT, strings: bool = False) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("X", x_type, ["N", n_features] if n_features is not None else ["F"])
    if op == CLASSIFIER:
        outs = [helper.make_tensor_value_info("Y", TensorProto.STRING if strings else TensorProto.INT64, ["N"]),
                helper.make_tensor_value_info("Z", TensorProto.FLOAT, ["N", n_out])]
    else:
        outs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", n_out])]
    node = helper.make_node(op, ["X"], [o.name for o in outs], domain="ai.onnx.ml", **attrs)
    graph = helper.make_graph([node], "trees", [x], outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", ml)])


def _run_both(model: onnx.ModelProto, x: np.ndarray) -> tuple[list, list]:
    ours = hal.InferenceSession(model, target="cpu").run(None, {"X": x})
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})
    return ours, ref


def _assert_same(ours: list, ref: list) -> None:
    assert len(ours) == len(ref)
    for got, want in zip(ours, ref):
        assert got.shape == want.shape
        if want.dtype == np.float32:
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        else:
            assert got.dtype == (np.int64 if want.dtype == np.int64 else object)
            assert got.tolist() == want.tolist()


def _check(op: str, attrs: dict, x: np.ndarray, n_out: int, **kw: object) -> list:
    ours, ref = _run_both(_model(op, attrs, x.shape[1] if x.ndim == 2 else None, n_out, **kw), x)
    _assert_same(ours, ref)
    return ours


def _grow(rng: np.random.Generator, shape: list, level: int, depth: int, deepest: bool) -> int:
    """Append one subtree to shape (None for a leaf, (left, right) positions for a branch); the deepest path
    reaches depth, the others stop at random."""
    at = len(shape)
    shape.append(None)
    if level == depth or (not deepest and rng.random() < 0.3):
        return at
    left_deepest = deepest and bool(rng.random() < 0.5)
    shape[at] = (_grow(rng, shape, level + 1, depth, left_deepest),
                 _grow(rng, shape, level + 1, depth, deepest and not left_deepest))
    return at


def _trees(rng: np.random.Generator, n_trees: int, n_features: int, *, missing: bool = False,
           shuffle: bool = True) -> tuple[dict, list[tuple[int, int]]]:
    """Random trees, depth 3 to 5, every mode; shuffled node ids, the root listed first in its tree."""
    cols: dict[str, list] = {k: [] for k in ("nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values",
                                             "nodes_modes", "nodes_truenodeids", "nodes_falsenodeids")}
    tracks, leaves = [], []
    tree_ids = rng.permutation(n_trees) * 3 + 2 if shuffle else np.arange(n_trees)
    for tree in tree_ids.tolist():
        shape: list = []
        _grow(rng, shape, 0, int(rng.integers(3, 6)), True)
        ids = rng.permutation(len(shape)) if shuffle else np.arange(len(shape))
        order = [0, *rng.permutation(np.arange(1, len(shape))).tolist()] if shuffle else range(len(shape))
        for i in order:
            cols["nodes_treeids"].append(tree)
            cols["nodes_nodeids"].append(int(ids[i]))
            tracks.append(int(rng.random() < 0.5))
            if shape[i] is None:
                leaves.append((tree, int(ids[i])))
                cols["nodes_modes"].append("LEAF")
                cols["nodes_featureids"].append(0)
                cols["nodes_values"].append(0.0)
                cols["nodes_truenodeids"].append(0)
                cols["nodes_falsenodeids"].append(0)
            else:
                cols["nodes_modes"].append(str(rng.choice(BRANCHES)))
                cols["nodes_featureids"].append(int(rng.integers(n_features)))
                cols["nodes_values"].append(float(rng.choice(GRID)))
                cols["nodes_truenodeids"].append(int(ids[shape[i][0]]))
                cols["nodes_falsenodeids"].append(int(ids[shape[i][1]]))
    if missing:
        cols["nodes_missing_value_tracks_true"] = tracks
    return cols, leaves


def _leaf_weights(rng: np.random.Generator, leaves: list[tuple[int, int]], prefix: str, n_out: int,
                  layout: str = "all") -> dict:
    """Leaf weights keyed by (tree, node): all targets per leaf, a random subset, or one fixed class id."""
    ids, nodes, trees, weights = [], [], [], []
    for tree, node in leaves:
        if layout == "all":
            chosen = range(n_out)
        elif layout == "subset":
            chosen = sorted(rng.choice(n_out, size=int(rng.integers(1, n_out + 1)), replace=False).tolist())
        else:
            chosen = [int(layout)]
        for k in chosen:
            ids.append(k)
            nodes.append(node)
            trees.append(tree)
            weights.append(float(rng.normal()))
    return {f"{prefix}_ids": ids, f"{prefix}_nodeids": nodes, f"{prefix}_treeids": trees, f"{prefix}_weights": weights}


def _inputs(rng: np.random.Generator, rows: int, n_features: int, nan: bool = False) -> np.ndarray:
    x = rng.choice(GRID, size=(rows, n_features))
    if nan:
        x[rng.random(x.shape) < 0.2] = np.nan
    return x.astype(np.float32)


def _stump(leaf_weights: dict[int, list[tuple[int, float]]]) -> dict:
    """One tree: X[0] <= 0 goes to leaf 1, else leaf 2; each leaf's (class id, weight) entries as given."""
    attrs = dict(nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[0, 0, 0],
                 nodes_values=[0.0, 0.0, 0.0], nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"],
                 nodes_truenodeids=[1, 0, 0], nodes_falsenodeids=[2, 0, 0])
    entries = [(node, k, w) for node, kw in leaf_weights.items() for k, w in kw]
    attrs.update(class_ids=[k for _, k, _ in entries], class_nodeids=[n for n, _, _ in entries],
                 class_treeids=[0] * len(entries), class_weights=[w for _, _, w in entries])
    return attrs


STUMP_X = np.array([[-1.0], [1.0], [0.0]], dtype=np.float32)


def test_random_forest_classifier_with_all_branch_modes_matches_onnxruntime() -> None:
    rng = np.random.default_rng(0)
    cols, leaves = _trees(rng, 6, 4)
    attrs = {**cols, **_leaf_weights(rng, leaves, "class", 4), "classlabels_int64s": [10, 20, 30, 40]}
    assert {m for m in cols["nodes_modes"]} == {*BRANCHES, "LEAF"}
    _check(CLASSIFIER, attrs, _inputs(rng, 64, 4), 4)


@pytest.mark.parametrize("post_transform", TRANSFORMS)
@pytest.mark.parametrize("with_base", [False, True])
def test_multiclass_scores_follow_each_post_transform_and_base_values(post_transform: str, with_base: bool) -> None:
    rng = np.random.default_rng(1)
    cols, leaves = _trees(rng, 4, 3)
    attrs = {**cols, **_leaf_weights(rng, leaves, "class", 3, "subset"), "classlabels_int64s": [7, 8, 9],
             "post_transform": post_transform}
    if with_base:
        attrs["base_values"] = [0.25, -0.5, 0.125]
    _check(CLASSIFIER, attrs, _inputs(rng, 40, 3), 3)


# the two-class layouts of one score (one class id weighted: all positive, mixed signs, or only the second),
# which follow onnxruntime's binary rules, and of two scores (both ids weighted), which are a multiclass model
BINARY_LAYOUTS = {
    "first class, positive": {1: [(0, 0.3)], 2: [(0, 0.8)]},
    "first class, mixed signs": {1: [(0, -0.3)], 2: [(0, 0.8)]},
    "second class only": {1: [(1, 0.3)], 2: [(1, 0.8)]},
}
TWO_SCORE_LAYOUTS = {
    "both classes": {1: [(0, 0.7), (1, 0.3)], 2: [(0, 0.6), (1, -0.8)]},
    "one class per leaf": {1: [(0, 0.7)], 2: [(1, 0.8)]},
}


@pytest.mark.parametrize("layout", list(BINARY_LAYOUTS))
@pytest.mark.parametrize("post_transform", TRANSFORMS)
@pytest.mark.parametrize("base_values", [None, [0.5], [0.1, 0.5]])
def test_binary_classifier_labels_and_scores_follow_onnxruntime(layout: str, post_transform: str,
                                                                base_values: list | None) -> None:
    attrs = {**_stump(BINARY_LAYOUTS[layout]), "classlabels_int64s": [3, 7], "post_transform": post_transform}
    if base_values:
        attrs["base_values"] = base_values
    ours, ref = _run_both(_model(CLASSIFIER, attrs, 1, 2), STUMP_X)
    # rows no second-class weight reached keep one score; with fewer than two base values onnxruntime then
    # writes no Z[:, 1] under PROBIT: hal writes 0 there
    lone = {"first class, positive": [1, 1, 1], "first class, mixed signs": [1, 1, 1]}
    lone_rows = np.array(lone.get(layout, [0, 0, 0]), dtype=bool) & (len(base_values or ()) < 2)
    unwritten = lone_rows & (post_transform == "PROBIT")
    assert (ours[1][unwritten, 1] == 0).all()
    ref[1][unwritten, 1] = 0
    _assert_same(ours, ref)


@pytest.mark.parametrize("layout", list(TWO_SCORE_LAYOUTS))
@pytest.mark.parametrize("post_transform", ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"])
@pytest.mark.parametrize("base_values", [None, [0.5], [0.1, 0.5]])
def test_two_weighted_classes_pick_the_larger_score_as_onnx_reference_does(layout: str, post_transform: str,
                                                                          base_values: list | None) -> None:
    # onnxruntime 1.32 answers 1 or 0 here, by the second score's sign: [1, 0, 1] for "both classes",
    # not a label of [3, 7]; onnx's reference evaluator takes the larger score's label
    attrs = {**_stump(TWO_SCORE_LAYOUTS[layout]), "classlabels_int64s": [3, 7], "post_transform": post_transform}
    if base_values:
        attrs["base_values"] = base_values
    model = _model(CLASSIFIER, attrs, 1, 2)
    ours = hal.InferenceSession(model, target="cpu").run(None, {"X": STUMP_X})
    ref = ReferenceEvaluator(model).run(None, {"X": STUMP_X})
    assert ours[0].tolist() == [int(v) for v in ref[0]]
    np.testing.assert_allclose(ours[1], ref[1], rtol=1e-6, atol=1e-7)


def test_binary_labels_use_the_half_threshold_for_positive_single_class_weights() -> None:
    attrs = {**_stump({1: [(0, 0.4)], 2: [(0, 0.6)]}), "classlabels_int64s": [3, 7]}
    ours = _check(CLASSIFIER, attrs, STUMP_X, 2)
    assert ours[0].tolist() == [3, 7, 3]
    np.testing.assert_allclose(ours[1], [[0.6, 0.4], [0.4, 0.6], [0.6, 0.4]], rtol=1e-6)


def test_string_labels_come_from_classlabels_strings() -> None:
    # one class id: above 0.5 is "yes"
    attrs = {**_stump(BINARY_LAYOUTS["first class, positive"]), "classlabels_strings": ["no", "yes"]}
    assert _check(CLASSIFIER, attrs, STUMP_X, 2, strings=True)[0].tolist() == ["no", "yes", "no"]
    # both weighted: the larger score, where onnxruntime says "yes" for any positive second score
    attrs = {**_stump(TWO_SCORE_LAYOUTS["both classes"]), "classlabels_strings": ["no", "yes"]}
    ours = hal.InferenceSession(_model(CLASSIFIER, attrs, 1, 2, strings=True)).run(None, {"X": STUMP_X})
    assert ours[0].tolist() == ["no", "no", "no"]


def test_multiclass_string_labels_match_onnxruntime() -> None:
    rng = np.random.default_rng(2)
    cols, leaves = _trees(rng, 3, 2)
    attrs = {**cols, **_leaf_weights(rng, leaves, "class", 3), "classlabels_strings": ["cat", "dog", "eel"],
             "post_transform": "SOFTMAX"}
    _check(CLASSIFIER, attrs, _inputs(rng, 30, 2), 3, strings=True)


@pytest.mark.parametrize("aggregate", ["SUM", "AVERAGE", "MIN", "MAX"])
@pytest.mark.parametrize("n_targets", [1, 3])
def test_regressor_aggregates_over_trees_and_adds_base_values(aggregate: str, n_targets: int) -> None:
    rng = np.random.default_rng(3)
    cols, leaves = _trees(rng, 5, 3)
    layout = "all" if n_targets == 1 else "subset"
    attrs = {**cols, **_leaf_weights(rng, leaves, "target", n_targets, layout), "n_targets": n_targets,
             "aggregate_function": aggregate, "base_values": [0.5, -1.0, 2.0][:n_targets]}
    _check(REGRESSOR, attrs, _inputs(rng, 50, 3), n_targets)


@pytest.mark.parametrize("post_transform", TRANSFORMS)
@pytest.mark.parametrize("n_targets", [1, 4])
def test_regressor_post_transforms_match_onnxruntime(post_transform: str, n_targets: int) -> None:
    # onnxruntime applies only PROBIT to a single target; hal must do the same
    rng = np.random.default_rng(4)
    cols, leaves = _trees(rng, 3, 2)
    attrs = {**cols, **_leaf_weights(rng, leaves, "target", n_targets, "subset" if n_targets > 1 else "all"),
             "n_targets": n_targets, "post_transform": post_transform}
    _check(REGRESSOR, attrs, _inputs(rng, 30, 2), n_targets)


def _regressor_stump(leaf_weights: dict[int, list[tuple[int, float]]], n_targets: int) -> dict:
    return {**{k.replace("class_", "target_"): v for k, v in _stump(leaf_weights).items()}, "n_targets": n_targets}


def test_one_target_takes_the_first_weight_of_each_leaf() -> None:
    ours = _check(REGRESSOR, _regressor_stump({1: [(0, 0.3), (0, 0.5)], 2: [(0, 0.8), (0, 0.1)]}, 1), STUMP_X, 1)
    np.testing.assert_allclose(ours[0][:, 0], [0.3, 0.8, 0.3], rtol=1e-6)


def test_a_leaf_without_weights_scores_its_node_value_for_one_target_and_nothing_for_several() -> None:
    one = {**_regressor_stump({1: [(0, 0.3)]}, 1), "nodes_values": [0.0, 0.0, 0.25], "base_values": [1.0]}
    np.testing.assert_allclose(_check(REGRESSOR, one, STUMP_X, 1)[0][:, 0], [1.3, 1.25, 1.3], rtol=1e-6)
    several = {**_regressor_stump({1: [(0, 0.3)]}, 2), "base_values": [1.0, 2.0]}
    np.testing.assert_allclose(_check(REGRESSOR, several, STUMP_X, 2)[0], [[1.3, 0], [0, 0], [1.3, 0]], rtol=1e-6)


def test_a_single_class_label_gives_onnxruntime_its_raw_one_or_zero() -> None:
    attrs = {**_stump({1: [(0, -0.3)], 2: [(0, 0.8)]}), "classlabels_int64s": [42], "base_values": [0.1]}
    ours = _check(CLASSIFIER, attrs, STUMP_X, 1)
    assert ours[0].tolist() == [0, 1, 0]


def test_nan_inputs_follow_missing_value_tracks_true() -> None:
    rng = np.random.default_rng(5)
    cols, leaves = _trees(rng, 4, 3, missing=True)
    x = _inputs(rng, 60, 3, nan=True)
    _check(REGRESSOR, {**cols, **_leaf_weights(rng, leaves, "target", 2), "n_targets": 2}, x, 2)
    _check(CLASSIFIER, {**cols, **_leaf_weights(rng, leaves, "class", 3), "classlabels_int64s": [0, 1, 2]}, x, 3)


def test_a_tree_starts_wherever_nodes_treeids_changes() -> None:
    # tree 0's nodes listed in two runs: onnxruntime reads three trees (the second run rooted at a leaf)
    attrs = dict(nodes_treeids=[0, 1, 1, 0, 1, 0], nodes_nodeids=[0, 0, 1, 1, 2, 2], nodes_featureids=[0] * 6,
                 nodes_values=[0.0, 0.5, 0, 0, 0, 0], nodes_modes=["BRANCH_LEQ", "BRANCH_LEQ"] + ["LEAF"] * 4,
                 nodes_truenodeids=[1, 1, 0, 0, 0, 0], nodes_falsenodeids=[2, 2, 0, 0, 0, 0], target_ids=[0] * 4,
                 target_nodeids=[1, 2, 1, 2], target_treeids=[0, 0, 1, 1], target_weights=[1.0, 2.0, 10.0, 20.0],
                 n_targets=1, aggregate_function="AVERAGE")
    _check(REGRESSOR, attrs, STUMP_X, 1)


def _as_tensors(attrs: dict, prefix: str, dtype: type) -> dict:
    out = dict(attrs)
    for name in ("nodes_values", f"{prefix}_weights", "base_values"):
        if name in out:
            out[f"{name}_as_tensor"] = numpy_helper.from_array(np.asarray(out.pop(name), dtype=dtype))
    out["nodes_hitrates_as_tensor"] = numpy_helper.from_array(np.ones(len(attrs["nodes_nodeids"]), dtype=dtype))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_opset3_as_tensor_attributes_match_the_list_attributes(dtype: type) -> None:
    rng = np.random.default_rng(6)
    cols, leaves = _trees(rng, 3, 3)
    x = _inputs(rng, 25, 3).astype(dtype)
    x_type = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    clf = {**cols, **_leaf_weights(rng, leaves, "class", 3), "classlabels_int64s": [1, 2, 3],
           "base_values": [0.1, 0.2, 0.3], "post_transform": "LOGISTIC"}
    listed = _check(CLASSIFIER, clf, x, 3, ml=3, x_type=x_type)
    tensors = _check(CLASSIFIER, _as_tensors(clf, "class", dtype), x, 3, ml=3, x_type=x_type)
    _assert_same(tensors, listed)
    reg = {**cols, **_leaf_weights(rng, leaves, "target", 2), "n_targets": 2, "base_values": [1.0, -1.0]}
    _check(REGRESSOR, _as_tensors(reg, "target", dtype), x, 2, ml=3, x_type=x_type)


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.int32])
def test_double_and_integer_inputs_compare_as_onnxruntime_does(dtype: type) -> None:
    rng = np.random.default_rng(7)
    cols, leaves = _trees(rng, 4, 3)
    cols["nodes_values"] = [float(np.round(v)) for v in cols["nodes_values"]]  # integer splits are met exactly
    x = np.round(_inputs(rng, 40, 3) * 2).astype(dtype)
    x_type = {np.float64: TensorProto.DOUBLE, np.int64: TensorProto.INT64, np.int32: TensorProto.INT32}[dtype]
    attrs = {**cols, **_leaf_weights(rng, leaves, "class", 3), "classlabels_int64s": [4, 5, 6]}
    _check(CLASSIFIER, attrs, x, 3, x_type=x_type)
    if dtype == np.float64:  # onnxruntime's regressor takes float and double only
        reg = {**cols, **_leaf_weights(rng, leaves, "target", 2), "n_targets": 2}
        _check(REGRESSOR, reg, x, 2, x_type=x_type)


def test_an_empty_batch_gives_empty_outputs() -> None:
    rng = np.random.default_rng(8)
    cols, leaves = _trees(rng, 2, 3)
    attrs = {**cols, **_leaf_weights(rng, leaves, "class", 3), "classlabels_strings": ["a", "b", "c"]}
    ours = _check(CLASSIFIER, attrs, np.zeros((0, 3), np.float32), 3, strings=True)
    assert ours[0].shape == (0,) and ours[1].shape == (0, 3)
    reg = {**cols, **_leaf_weights(rng, leaves, "target", 2), "n_targets": 2}
    (y,) = _check(REGRESSOR, reg, np.zeros((0, 3), np.float32), 2)
    assert y.shape == (0, 2)


def test_a_one_dimensional_input_is_one_sample() -> None:
    attrs = {**_stump(BINARY_LAYOUTS["first class, positive"]), "classlabels_int64s": [3, 7]}
    ours = _check(CLASSIFIER, attrs, np.array([1.0], np.float32), 2)
    assert ours[1].shape == (1, 2)


def _bad(attrs: dict, **changes: object) -> dict:
    return {**attrs, **changes}


STUMP = {**_stump(TWO_SCORE_LAYOUTS["both classes"]), "classlabels_int64s": [3, 7]}
BAD_ATTRIBUTES = {
    "short nodes_featureids": (_bad(STUMP, nodes_featureids=[0, 0]), "nodes_featureids has 2 entries"),
    "unknown mode": (_bad(STUMP, nodes_modes=["BRANCH_SOMETIMES", "LEAF", "LEAF"]), "'BRANCH_SOMETIMES'"),
    "weight for a tree with no nodes": (_bad(STUMP, class_treeids=[0, 0, 0, 9]), "names no node of tree 9"),
    "child that is not there": (_bad(STUMP, nodes_truenodeids=[7, 0, 0]), "nodes_truenodeids[0] = 7"),
    "cycle": (_bad(STUMP, nodes_modes=["BRANCH_LEQ", "BRANCH_LEQ", "LEAF"], nodes_truenodeids=[1, 0, 0],
                   nodes_falsenodeids=[2, 2, 0]), "back to itself or an ancestor"),
    "class id past the labels": (_bad(STUMP, class_ids=[0, 1, 0, 5]), "class_ids has 5, outside 0..1"),
    "short class_weights": (_bad(STUMP, class_weights=[0.5, 0.5]), "differ in length"),
    "too many base values": (_bad(STUMP, base_values=[0.1, 0.2, 0.3]), "base_values has 3 values for 2 classes"),
    "feature X lacks": (_bad(STUMP, nodes_featureids=[4, 0, 0]), "asks for feature 4, X has 1"),
    "unknown post_transform": (_bad(STUMP, post_transform="SQUASH"), "post_transform is 'SQUASH'"),
}


@pytest.mark.parametrize("case", list(BAD_ATTRIBUTES))
def test_bad_attributes_raise_a_run_error_naming_the_attribute(case: str) -> None:
    attrs, message = BAD_ATTRIBUTES[case]
    session = hal.InferenceSession(_model(CLASSIFIER, attrs, 1, 2), target="cpu")
    with pytest.raises(hal.RunError, match="TreeEnsembleClassifier") as err:
        session.run(None, {"X": STUMP_X})
    assert message in str(err.value)


def test_unknown_aggregate_function_raises_a_run_error() -> None:
    attrs = {**_regressor_stump({1: [(0, 1.0)], 2: [(0, 2.0)]}, 1), "aggregate_function": "MEDIAN"}
    session = hal.InferenceSession(_model(REGRESSOR, attrs, 1, 1), target="cpu")
    with pytest.raises(hal.RunError, match="aggregate_function is 'MEDIAN'"):
        session.run(None, {"X": STUMP_X})


def _random_ensemble(seed: int) -> tuple[str, dict, np.ndarray, int, dict]:
    """One random ensemble and its input: either op, 1-4 outputs, any aggregate, transform and base values."""
    rng = np.random.default_rng(1000 + seed)
    n_features, missing = int(rng.integers(1, 5)), bool(rng.random() < 0.5)
    cols, leaves = _trees(rng, int(rng.integers(2, 7)), n_features, missing=missing, shuffle=bool(seed % 3))
    x = _inputs(rng, int(rng.integers(1, 70)), n_features, nan=missing)
    kw: dict = {}
    if rng.random() < 0.3:
        x, kw["x_type"] = x.astype(np.float64), TensorProto.DOUBLE
    transform = str(rng.choice(TRANSFORMS))
    if seed % 2:
        n = int(rng.integers(1, 5))
        attrs = {**cols, **_leaf_weights(rng, leaves, "target", n, str(rng.choice(["all", "subset"]))),
                 "n_targets": n, "aggregate_function": str(rng.choice(["SUM", "AVERAGE", "MIN", "MAX"])),
                 "post_transform": transform}
        if rng.random() < 0.5:
            attrs["base_values"] = rng.normal(size=n).tolist()
        return REGRESSOR, attrs, x, n, kw
    n = int(rng.integers(2, 5))
    # two classes: one weighted id (onnxruntime's binary rules; both weighted is checked against onnx's reference)
    layout = str(rng.choice(["0", "1"] if n == 2 else ["all", "subset"]))
    if n == 2 and transform == "PROBIT":  # onnxruntime leaves Z[:, 1] unwritten for a lone binary score
        transform = "LOGISTIC"
    attrs = {**cols, **_leaf_weights(rng, leaves, "class", n, layout), "post_transform": transform}
    if rng.random() < 0.5:
        attrs["base_values"] = rng.normal(size=n).tolist()
    if rng.random() < 0.5:
        attrs["classlabels_strings"], kw["strings"] = [f"c{i}" for i in range(n)], True
    else:
        attrs["classlabels_int64s"] = (np.arange(n) * 5 + 1).tolist()
    return CLASSIFIER, attrs, x, n, kw


@pytest.mark.parametrize("seed", range(20))
def test_random_ensembles_match_onnxruntime(seed: int) -> None:
    op, attrs, x, n_out, kw = _random_ensemble(seed)
    _check(op, attrs, x, n_out, **kw)


@pytest.mark.parametrize("seed", range(8))
def test_the_compiled_walk_gives_the_numpy_walks_bits(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from hal.kernels import jit

    if not jit.enabled():
        pytest.skip("numba is not importable: only the numpy walk runs")
    op, attrs, x, n_out, kw = _random_ensemble(seed)
    model = _model(op, attrs, x.shape[1] if x.ndim == 2 else None, n_out, **kw)
    compiled = hal.InferenceSession(model, target="cpu").run(None, {"X": x})
    monkeypatch.setattr(jit, "_ENABLED", False)
    walked = hal.InferenceSession(model, target="cpu").run(None, {"X": x})
    for a, b in zip(compiled, walked):
        assert a.dtype == b.dtype and (a.tolist() == b.tolist() if a.dtype == object else a.tobytes() == b.tobytes())


def _tree_ensemble_5(post_transform: int, n_targets: int) -> onnx.ModelProto:
    # one stump per target: x[0] <= 0 scores target t with t + 1, else with -(t + 1)
    roots = list(range(n_targets))
    attrs = dict(tree_roots=roots, nodes_featureids=[0] * n_targets, nodes_modes=numpy_helper.from_array(
                     np.zeros(n_targets, np.uint8), "m"), nodes_splits=numpy_helper.from_array(
                     np.zeros(n_targets, np.float32), "s"),
                 nodes_truenodeids=[2 * t for t in roots], nodes_trueleafs=[1] * n_targets,
                 nodes_falsenodeids=[2 * t + 1 for t in roots], nodes_falseleafs=[1] * n_targets,
                 leaf_targetids=[t for t in roots for _ in range(2)],
                 leaf_weights=numpy_helper.from_array(
                     np.array([w for t in roots for w in (t + 1, -(t + 1))], np.float32), "w"),
                 n_targets=n_targets, post_transform=post_transform, aggregate_function=1)
    node = helper.make_node("TreeEnsemble", ["X"], ["Y"], domain="ai.onnx.ml", **attrs)
    graph = helper.make_graph([node], "t5", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 1])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", n_targets])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)])


@pytest.mark.parametrize("n_targets", [1, 3])
@pytest.mark.parametrize("post_transform", [0, 1, 2, 3])
def test_tree_ensemble_5_numbers_its_post_transforms_as_the_spec_does(post_transform: int, n_targets: int) -> None:
    # onnx's numbering: 0 NONE, 1 SOFTMAX, 2 LOGISTIC, 3 SOFTMAX_ZERO; onnxruntime 1.32 reads 1 and 2
    # the other way round and transforms no single target (its issue 26596), so numpy is the reference
    from onnx.reference.ops.aionnxml.op_tree_ensemble import PostTransform

    assert (PostTransform.SOFTMAX, PostTransform.LOGISTIC, PostTransform.SOFTMAX_ZERO) == (1, 2, 3)
    x = np.array([[-1.0], [1.0], [0.0]], np.float32)
    raw = np.where(x <= 0, 1.0, -1.0) * np.arange(1, n_targets + 1)
    e = np.exp(raw - raw.max(axis=1, keepdims=True))
    want = {0: raw, 1: e / e.sum(axis=1, keepdims=True), 2: 1 / (1 + np.exp(-raw)),
            3: e / e.sum(axis=1, keepdims=True)}[post_transform]
    model = _tree_ensemble_5(post_transform, n_targets)
    for target in hal.targets():
        (got,) = hal.InferenceSession(model, target=target.name).run(None, {"X": x})
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=target.name)


def test_a_float32_tree_ensemble_5_sums_its_trees_in_float32_as_onnxruntime() -> None:
    # four stumps whose x <= 0 leaves are 1.0 and three 4e-8: a float32 running sum stays 1.0, as
    # onnxruntime (and hal's legacy TreeEnsembleRegressor) gives; hal had summed in float64 (1.0000001)
    ort = pytest.importorskip("onnxruntime")
    n = 4
    attrs = dict(tree_roots=list(range(n)), nodes_featureids=[0] * n,
                 nodes_modes=numpy_helper.from_array(np.zeros(n, np.uint8), "m"),
                 nodes_splits=numpy_helper.from_array(np.zeros(n, np.float32), "s"),
                 nodes_truenodeids=[2 * t for t in range(n)], nodes_trueleafs=[1] * n,
                 nodes_falsenodeids=[2 * t + 1 for t in range(n)], nodes_falseleafs=[1] * n,
                 leaf_targetids=[0] * 2 * n, n_targets=1, post_transform=0, aggregate_function=1,
                 leaf_weights=numpy_helper.from_array(np.array([1.0, 0, 4e-8, 0, 4e-8, 0, 4e-8, 0], np.float32), "w"))
    graph = helper.make_graph([helper.make_node("TreeEnsemble", ["X"], ["Y"], domain="ai.onnx.ml", **attrs)], "t5",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 1])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)])
    x = np.array([[-1.0], [1.0]], np.float32)
    (want,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})
    assert want[0, 0] == np.float32(1.0)
    for target in hal.targets():
        (got,) = hal.InferenceSession(model, target=target.name).run(None, {"X": x})
        assert got.dtype == np.float32 and got.tobytes() == want.tobytes(), target.name


def test_a_tree_ensemble_5_linking_a_node_back_to_itself_is_a_run_error_whatever_the_input() -> None:
    # onnxruntime refuses the model ("contains a cycle"); hal's walk had stopped after as many steps as
    # nodes and scored the samples that never reached a leaf with the last leaf's weight
    model = _tree_ensemble_5(0, 1)
    node = model.graph.node[0]
    for a in node.attribute:
        if a.name in ("nodes_truenodeids", "nodes_trueleafs"):
            a.ints[:] = [0]  # x <= 0 goes back to the root
    for x in ([[-1.0]], [[1.0]]):  # the second never takes the loop: the structure is checked, not the walk
        for target in hal.targets():
            with pytest.raises(hal.RunError, match="link a node back to itself or an ancestor"):
                hal.InferenceSession(model, target=target.name).run(None, {"X": np.array(x, np.float32)})
