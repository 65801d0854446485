"""ai.onnx.ml models on every target: skl2onnx-style models agree with onnxruntime on cpu and with cpu
everywhere else, and the ops whose output a list or count in the model sizes, times the run's rows, are
refused with a ResourceError before the kernel allocates, and run as usual below the bound."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from _robust_models import TARGETS, ml_models, session
from onnx import TensorProto, helper

import hal
from hal.compare import diff
from hal.feeds import random_feeds
from hal.graph.load import load

OPSETS = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)]


def _model(op: str, inputs: dict[str, tuple[int, list]], out: int, out_rank: int, **attrs):
    """One ai.onnx.ml node; its output a float tensor of ``out_rank`` dims, or for ZipMap maps."""
    node = helper.make_node(op, list(inputs), ["y"], name="n", domain="ai.onnx.ml", **attrs)
    y = (helper.make_sequence_type_proto(helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(
        TensorProto.FLOAT, []))) if op == "ZipMap" else helper.make_tensor_type_proto(out, [None] * out_rank))
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(k, e, s) for k, (e, s) in inputs.items()],
                          [helper.make_value_info("y", y)])
    return helper.make_model(g, opset_imports=OPSETS)


CASES = {
    # 4,096 rows x 4,096 categories of float32: 64 MiB from a 32 KiB input and a 32 KiB list
    "OneHotEncoder": (_model("OneHotEncoder", {"x": (TensorProto.INT64, [None])}, TensorProto.FLOAT, 2,
                             cats_int64s=list(range(4096))),
                      {"x": np.arange(4096, dtype=np.int64)}, {"x": np.arange(4, dtype=np.int64)}, r"\[4096, 4096\]"),
    # one float padded out to 2**24 columns: 64 MiB
    "FeatureVectorizer": (_model("FeatureVectorizer", {"x": (TensorProto.FLOAT, [None, 1])}, TensorProto.FLOAT, 2,
                                 inputdimensions=[2**24]),
                          {"x": np.ones((1, 1), np.float32)}, {"x": np.ones((0, 1), np.float32)}, r"\[1, 16777216\]"),
    # X of 2**24 samples and no features, no bytes: 128 MiB of float64 scores for 1 target, and for 2
    "LinearRegressor": (_model("LinearRegressor", {"x": (TensorProto.FLOAT, [None, 0])}, TensorProto.FLOAT, 2,
                               targets=2, intercepts=[0.5, 1.5]),
                        {"x": np.ones((2**24, 0), np.float32)}, {"x": np.ones((3, 0), np.float32)}, r"\[16777216, 2\]"),
    "SVMRegressor": (_model("SVMRegressor", {"x": (TensorProto.FLOAT, [None, 0])}, TensorProto.FLOAT, 2, rho=[0.25]),
                     {"x": np.ones((2**24, 0), np.float32)}, {"x": np.ones((3, 0), np.float32)}, r"\[16777216, 1\]"),
    # one leaf, n_targets=2**24: a (1 node, 2**24) leaf table of weights, 144 MiB
    "TreeEnsembleRegressor": (_model("TreeEnsembleRegressor", {"x": (TensorProto.FLOAT, [None, 1])}, TensorProto.FLOAT,
                                     2, n_targets=2**24, nodes_treeids=[0], nodes_nodeids=[0], nodes_featureids=[0],
                                     nodes_modes=["LEAF"], nodes_values=[0.0], nodes_truenodeids=[0],
                                     nodes_falsenodeids=[0], target_ids=[0], target_nodeids=[0], target_treeids=[0],
                                     target_weights=[1.5]),
                              {"x": np.ones((1, 1), np.float32)}, None, r"\[1, 16777216\]"),
    # a dict a row: 1M rows of one label in 4 MiB of scores are ~100 MiB of Python objects
    "ZipMap": (_model("ZipMap", {"x": (TensorProto.FLOAT, [None, 1])}, TensorProto.FLOAT, 0, classlabels_int64s=[7]),
               {"x": np.ones((2**20, 1), np.float32)}, {"x": np.ones((3, 1), np.float32)}, r"\[1048576, 1\]"),
}


@pytest.mark.parametrize("op", sorted(CASES))
def test_an_output_the_model_sizes_past_max_memory_is_refused_before_allocating(op):
    model, hostile, harmless, shape = CASES[op]
    s = hal.InferenceSession(model, max_memory=32 << 20)
    with pytest.raises(hal.ResourceError, match=rf"node 'n'.*{op} would need a tensor of shape {shape}"):
        s.run(None, hostile)
    if harmless is not None:
        s.run(None, harmless)  # the same session runs a small one


ML_MODELS = {m.graph.node[-1].op_type: m for m in ml_models()}


def _feeds(model) -> dict[str, np.ndarray]:
    feeds = random_feeds(load(model), seed=0, dims={"N": 6})
    if "ids" in feeds:  # categories the encoders know, and one they do not
        feeds["ids"] = np.array([3, 1, 4, 9, 1, 3], dtype=np.int64)
    return feeds


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("last_op", sorted(ML_MODELS))
def test_ml_models_agree_with_onnxruntime_on_every_target(target, last_op):
    model = ML_MODELS[last_op]
    feeds = _feeds(model)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = session(model, target).run(None, feeds)
    assert [diff(o.name, g, w, 1e-5).within_tolerance for o, g, w in zip(model.graph.output, got, want)] == \
        [True] * len(want)
