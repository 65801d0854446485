"""A session whose target runs its nodes in several partitions, with refused ones on cpu between them:
the report's figures are the target's partitions' together, not the first one's alone."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal import plugins
from hal.plugins import get_target
from hal.specs import Capability, Refusal, TargetSpec


class _GpuWithoutSoftmax:
    """The gpu target with its own cost model, but Softmax refused (it runs on cpu between two
    gpu partitions)."""

    # (the gpu target is looked up when used: discovery is still running when hal_targets is called)
    spec = TargetSpec(name="gpu-no-softmax", vendor="test", kind="gpu")

    @property
    def _gpu(self):
        return get_target("gpu")

    def capability(self, graph, options):
        cap = self._gpu.capability(graph, options)
        refused = [n for n in graph.nodes if n.op_type == "Softmax"]
        names = {n.name for n in refused}
        groups = [g.model_copy(update={"nodes": [n for n in g.nodes if n not in names]}) for g in cap.groups]
        return Capability(target=self.spec.name, groups=[g for g in groups if g.nodes], refused=[
            *cap.refused, *(Refusal(node=n.name, op_type=n.op_type, reason="no exp unit") for n in refused)])

    def compile(self, graph, options):
        exe = self._gpu.compile(graph, options)
        exe.report.target = self.spec.name
        return exe

    def load(self, blob):
        raise NotImplementedError


class _Plugin:
    HAL_API_VERSION = "1.0"

    @hal.hookimpl
    def hal_targets(self):
        return [_GpuWithoutSoftmax()]


@pytest.fixture
def split_target():
    plugins.register(_Plugin(), "gpu-no-softmax-plugin")
    yield "gpu-no-softmax"
    plugins.unregister("gpu-no-softmax-plugin")


def _model():
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((64, 256)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((256, 32)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"], name="up"),
             helper.make_node("Softmax", ["a"], ["s"], name="softmax", axis=-1),
             helper.make_node("MatMul", ["s", "w2"], ["y"], name="down")]
    graph = helper.make_graph(nodes, "split", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 32])], [w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_report_combines_every_partition_of_the_target(split_target):
    sess = hal.InferenceSession(_model(), target=split_target, fallback="allow")
    assert [p.target for p in sess.report.placement] == [split_target, "cpu", split_target]
    parts = [p.executable.report for p in sess._parts if p.target == split_target]
    assert len(parts) == 2 and parts[0].latency_s != parts[1].latency_s
    rep = sess.report
    assert rep.model == "split"
    assert rep.latency_s == pytest.approx(parts[0].latency_s + parts[1].latency_s)
    # a run is both partitions one after the other: its rate is the inverse of their summed times
    assert rep.throughput_per_s == pytest.approx(1 / (1 / parts[0].throughput_per_s + 1 / parts[1].throughput_per_s))
    assert rep.energy_j == pytest.approx(parts[0].energy_j + parts[1].energy_j)
    assert rep.peak_memory_bytes == parts[0].peak_memory_bytes + parts[1].peak_memory_bytes
    hbm = {m.level: m.bytes for m in rep.memory}["HBM"]
    assert hbm == sum(m.bytes for p in parts for m in p.memory if m.level == "HBM")
    assert [d["partition"] for d in rep.details["per_partition"]] == [0, 2]
    assert rep.details["per_partition"][1]["gpu_kernels"] == parts[1].details["gpu_kernels"]
    assert rep.details["partitions"] == 3 and rep.details["fallback_nodes"] == 1


def test_a_figure_one_partition_lacks_is_not_given_for_the_whole():
    from hal.placement import partitions_combined
    from hal.specs import CompileReport

    a = CompileReport(target="t", latency_s=1e-3, throughput_per_s=1e3, energy_j=2.0, ttft_s=None)
    b = CompileReport(target="t", latency_s=3e-3, throughput_per_s=None, energy_j=1.0, ttft_s=None)
    got = partitions_combined([a, b])
    assert got.latency_s == pytest.approx(4e-3) and got.energy_j == pytest.approx(3.0)
    assert got.throughput_per_s is None and got.ttft_s is None


def _gemm_then_tail():
    """up (a GEMM), then Softmax (refused: cpu), then a Relu: the last partition has nothing to split."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((64, 256)).astype(np.float32), "w1")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"], name="up"),
             helper.make_node("Softmax", ["a"], ["s"], name="softmax", axis=-1),
             helper.make_node("Relu", ["s"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "tail", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 256])], [w1])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_partition_with_nothing_to_split_runs_whole_on_every_device(split_target):
    # devices=2 failed the session: the gpu refused the Relu partition, which has no GEMM to split
    # ("tensor parallelism cannot use 2 GPUs for 'tail/part2'"), though the model's GEMM splits
    one, two = (hal.InferenceSession(_gemm_then_tail(), target=split_target, fallback="allow", devices=d)
                for d in (1, 2))
    tail1, tail2 = (next(p.executable.report for p in s._parts if p.nodes == ["relu"]) for s in (one, two))
    assert tail2.devices == 2 and tail2.details["tensor_parallel"] == 2
    # every device computes it whole: the time of one, the energy of two, the memory of one on each
    assert tail2.latency_s == pytest.approx(tail1.latency_s)
    assert tail2.energy_j == pytest.approx(2 * tail1.energy_j)
    assert tail2.peak_memory_bytes == tail1.peak_memory_bytes
    assert two.report.devices == 2
    x = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
    np.testing.assert_array_equal(one.run(None, {"x": x})[0], two.run(None, {"x": x})[0])


def test_a_whole_model_with_nothing_to_split_is_still_refused_its_devices():
    """The partition rule is for partitions (graph metadata ``hal.partition``): asked for 2 GPUs, a
    model with no GEMM at all is a CompileError saying so, not a report of 2 GPUs doing 1's work."""
    relu = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8])]), opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(hal.CompileError, match="it has no GEMM with a 2-D weight"):
        hal.InferenceSession(relu, target="gpu", devices=2)


def test_partitions_carry_their_place_in_their_metadata(split_target):
    from hal.graph.ir import PARTITION_KEY

    seen = []
    gpu = get_target("gpu")
    real = gpu.compile
    sess_model = _gemm_then_tail()
    try:
        gpu.compile = lambda graph, options: (seen.append((graph.name, dict(graph.metadata))), real(graph, options))[1]
        sess = hal.InferenceSession(sess_model, target=split_target, fallback="allow")
    finally:
        del gpu.compile
    assert [(name, meta.get(PARTITION_KEY)) for name, meta in seen] == [("tail/part0", "0/3"), ("tail/part2", "2/3")]
    assert sess.report.details["partitions"] == 3
