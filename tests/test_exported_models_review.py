"""A model team's review with real exported models (torch 2.13's dynamo and TorchScript exporters;
fixtures in tests/fixtures/exported/, rebuilt by its make.py; these tests need no torch):

- dimension sizes bound with ``dims=`` (``hal --dim``) that disagree with one another (a KV decoder's
  mask length ``total`` bound apart from ``past`` + ``seq``, or ``'*'`` giving all one size) were a
  ModelError telling the user to re-export a model that is fine: now an InputError naming the sizes;
- random feeds drew token ids of 0 and 1 only when the ids reach their embedding's Gather through a
  Reshape or a Cast (Hugging Face's ``input_ids.view(-1, seq)``, int32 ids cast to int64): the bound
  is followed through ops that carry the values on;
- with fallback, an LPU partition after a data-dependent node (NonZero on the cpu) prices each run's
  own sizes, but the session's report combined the partitions once, at compile time: latency, energy
  and ``last_run.modelled_latency_s`` stayed None after every run.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.errors import ResourceError
from hal.feeds import random_feeds
from hal.graph.load import load

HERE = os.path.join(os.path.dirname(__file__), "fixtures", "exported")
KV = os.path.join(HERE, "kv_decoder.onnx")
NONZERO = os.path.join(HERE, "nonzero.onnx")
GPT = os.path.join(HERE, "gpt_legacy.onnx")
TARGETS = [t.name for t in hal.targets()]


def _kv_feeds(b: int, t: int, p: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((b, p + t), np.int64)
    mask[0, 0] = 0
    return {"ids": rng.integers(0, 64, (b, t)), "past_k": rng.standard_normal((b, 4, p, 8)).astype(np.float32),
            "past_v": rng.standard_normal((b, 4, p, 8)).astype(np.float32), "attention_mask": mask}


# -- dims that disagree with one another -------------------------------------------------------------
@pytest.mark.parametrize("dims", [{"*": 8}, {"batch": 2, "seq": 1, "past": 16, "total": 9}])
def test_bound_dims_that_disagree_are_an_input_error_naming_them_not_a_model_to_re_export(dims):
    with pytest.raises(hal.InputError, match="the dimension sizes bound .* do not fit the graph") as e:
        hal.InferenceSession(KV, target="cpu", dims=dims)
    text = str(e.value)
    assert "re-export" not in text and "Incompatible dimensions" in text
    assert ("total=9" if "total" in dims else "total=8") in text
    assert "bind each to the size it will run with" in text


def test_bound_dims_that_agree_load_and_run_as_the_open_model_does():
    feeds = _kv_feeds(2, 3, 5)
    open_out = hal.InferenceSession(KV, target="cpu").run(None, feeds)
    bound = hal.InferenceSession(KV, target="gpu", dims={"batch": 2, "seq": 3, "past": 5, "total": 8})
    assert "open_dims_priced_as_1" not in bound.report.details
    for a, b in zip(bound.run(None, feeds), open_out):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_model_whose_static_shapes_clash_is_still_a_model_error_with_dims_bound():
    # the model fails without the binding too: the model's fault, said as before
    g = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"], name="add")], "g",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 4, 3, 32]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, [4, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(hal.ModelError, match="Incompatible dimensions.*re-export the model"):
        hal.InferenceSession(m, dims={"n": 2})


# -- random token ids through a view ----------------------------------------------------------------
def _ids_through(view: list, ids_type: int = TensorProto.INT64) -> hal.graph.ir.Graph:
    emb = numpy_helper.from_array(np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32), "emb")
    g = helper.make_graph(
        [*view, helper.make_node("Gather", ["emb", "ids_v"], ["y"], axis=0)], "hf",
        [helper.make_tensor_value_info("input_ids", ids_type, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [emb, numpy_helper.from_array(np.array([-1], np.int64), "neg1"),
         numpy_helper.from_array(np.array([1], np.int64), "one")])
    return load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


@pytest.mark.parametrize("view", [
    # Hugging Face: input_ids.view(-1, input_shape[-1])
    [helper.make_node("Shape", ["input_ids"], ["sh"]), helper.make_node("Gather", ["sh", "one"], ["last"], axis=0),
     helper.make_node("Concat", ["neg1", "last"], ["shape"], axis=0),
     helper.make_node("Reshape", ["input_ids", "shape"], ["ids_v"])],
    # int32 ids (a TensorFlow export) cast to int64, then flattened
    [helper.make_node("Cast", ["input_ids"], ["c"], to=TensorProto.INT64),
     helper.make_node("Flatten", ["c"], ["ids_v"], axis=0)],
], ids=["reshape", "cast-flatten"])
def test_random_ids_span_the_vocabulary_when_they_reach_the_embedding_through_a_view(view):
    ids_type = TensorProto.INT32 if view[0].op_type == "Cast" else TensorProto.INT64
    ids = random_feeds(_ids_through(view, ids_type), dims={"*": 64})["input_ids"]
    assert ids.shape == (64, 64) and ids.min() >= 0 and ids.max() <= 49
    assert ids.max() > 1 and len(np.unique(ids)) > 10  # were all 0 and 1: two embedding rows exercised


def test_random_ids_stay_in_range_of_the_smallest_table_they_index():
    # the same ids into a 50-row table and, through a Reshape, a 7-row one (positions)
    small = numpy_helper.from_array(np.zeros((7, 4), np.float32), "pos")
    emb = numpy_helper.from_array(np.zeros((50, 4), np.float32), "emb")
    g = helper.make_graph(
        [helper.make_node("Gather", ["emb", "ids"], ["a"]), helper.make_node("Reshape", ["ids", "flat"], ["r"]),
         helper.make_node("Gather", ["pos", "r"], ["b"])], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [4, 8])],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, None)],
        [small, emb, numpy_helper.from_array(np.array([-1], np.int64), "flat")])
    ids = random_feeds(load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])))["ids"]
    assert ids.max() <= 6


# -- fallback around a data-dependent node -----------------------------------------------------------
def test_a_partition_that_prices_each_run_gives_the_fallback_session_its_latency_after_a_run():
    x = np.random.default_rng(3).standard_normal((3, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = hal.InferenceSession(NONZERO, target="lpu", fallback="allow")
    assert {p.target for p in s.report.placement} == {"lpu", "cpu"}
    assert s.report.latency_s is None  # before a run, the LPU partition after NonZero has no shapes
    (got,) = s.run(None, {"x": x})
    np.testing.assert_array_equal(got, np.argwhere(x > 0.5) * 2 + 1)
    r = s.report
    assert r.latency_s is not None and r.latency_s > 0
    assert r.energy_j is not None and r.energy_j > 0 and r.throughput_per_s is not None
    assert s.last_run.modelled_latency_s == r.latency_s
    assert r.peak_memory_bytes >= x.nbytes
    # another run, other sizes: the figures are that run's
    bigger = np.ones((3, 8), np.float32)
    s.run(None, {"x": bigger})
    assert s.report.latency_s > 0 and s.last_run.modelled_latency_s == s.report.latency_s
    assert "live_figures" not in s.report.details


def test_latest_figures_that_do_not_combine_leave_the_compile_s_and_say_so(monkeypatch):
    # (partitions whose latest sizes no longer fit the devices together: placement's ResourceError)
    x = np.random.default_rng(3).standard_normal((3, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = hal.InferenceSession(NONZERO, target="lpu", fallback="allow")
    s.run(None, {"x": x})

    def overfull(reports):
        raise ResourceError("the partitions hold 300 MB on one 230 MB chip", where="placement")

    monkeypatch.setattr(s, "_combined", overfull)
    r = s.report
    assert r.latency_s is None  # the compile's: no shapes for the partition after NonZero
    assert r.details["live_figures"] == ("the latest run's partitions do not combine (the partitions hold 300 MB "
                                         "on one 230 MB chip); these are the compile's")


# -- the exported models on every target --------------------------------------------------------------
@pytest.mark.parametrize("target", TARGETS)
def test_exported_kv_decoder_matches_cpu_on_every_target_at_several_sizes(target):
    s = hal.InferenceSession(KV, target=target)
    ref = hal.InferenceSession(KV, target="cpu")
    for b, t, p in [(2, 3, 5), (1, 1, 12), (3, 7, 1)]:
        feeds = _kv_feeds(b, t, p, seed=b)
        got, want = s.run(None, feeds), ref.run(None, feeds)
        assert got[0].shape == (b, t, 64) and got[1].shape == (b, 4, p + t, 8)
        for a, w in zip(got, want):
            np.testing.assert_allclose(a, w, rtol=1e-5, atol=1e-5)
    r = s.report
    if target != "cpu":
        assert r.latency_s is not None and r.latency_s > 0
    assert r.peak_memory_bytes > 0 and r.devices >= 1


@pytest.mark.parametrize("target", TARGETS)
def test_exported_gpt_matches_onnxruntime_on_every_target(target):
    ort = pytest.importorskip("onnxruntime")
    o = ort.InferenceSession(GPT, providers=["CPUExecutionProvider"])
    s = hal.InferenceSession(GPT, target=target)
    weights = sum(a.nbytes for a in s.graph.initializers.values() if hasattr(a, "nbytes"))
    for b, t in [(1, 5), (2, 16)]:
        ids = np.random.default_rng(t).integers(0, 64, (b, t))
        (got,), (want,) = s.run(None, {"ids": ids}), o.run(None, {"ids": ids})
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert s.report.peak_memory_bytes >= 0.9 * weights
