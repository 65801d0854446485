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


class _WithoutSoftmax:
    """A built-in target with its own cost model, but Softmax refused (it runs on cpu between two
    of the target's partitions)."""

    def __init__(self, base: str):
        self.base = base
        self.spec = TargetSpec(name=f"{base}-no-softmax", vendor="test", kind=base)

    @property
    def _target(self):  # (looked up when used: discovery is still running when hal_targets is called)
        return get_target(self.base)

    def capability(self, graph, options):
        cap = self._target.capability(graph, options)
        refused = [n for n in graph.nodes if n.op_type == "Softmax"]
        names = {n.name for n in refused}
        groups = [g.model_copy(update={"nodes": [n for n in g.nodes if n not in names]}) for g in cap.groups]
        return Capability(target=self.spec.name, groups=[g for g in groups if g.nodes], refused=[
            *cap.refused, *(Refusal(node=n.name, op_type=n.op_type, reason="no exp unit") for n in refused)])

    def compile(self, graph, options):
        exe = self._target.compile(graph, options)
        exe.report.target = self.spec.name
        return exe

    def load(self, blob):
        raise NotImplementedError


class _Plugin:
    HAL_API_VERSION = "1.0"

    @hal.hookimpl
    def hal_targets(self):
        return [_WithoutSoftmax("gpu"), _WithoutSoftmax("lpu")]


@pytest.fixture
def split_target():
    plugins.register(_Plugin(), "no-softmax-plugin")
    yield "gpu-no-softmax"
    plugins.unregister("no-softmax-plugin")


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
    got, shared = partitions_combined([a, b])
    assert shared  # (no level has a capacity to exceed)
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


def _two_big_gemms(k: int):
    """x @ w1 (gpu), Softmax (refused: cpu), @ w2 (gpu): fp16 weights of 2·k² bytes each, shape only."""
    f = TensorProto.FLOAT16
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"], name="up"),
             helper.make_node("Softmax", ["a"], ["s"], name="softmax", axis=-1),
             helper.make_node("MatMul", ["s", "w2"], ["y"], name="down")]
    g = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", f, [1, k]),
                                         *(helper.make_tensor_value_info(w, f, [k, k]) for w in ("w1", "w2"))],
                          [helper.make_tensor_value_info("y", f, [1, k])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, {"hal.shape_only_weights": "w1,w2"})
    return model


def test_partitions_that_do_not_fit_one_device_together_get_devices_of_their_own(split_target):
    # each 50 GB partition fits one 80 GB GPU, both at once do not: the session had reported 100 GB
    # held on one GPU (over its capacity) without an error
    model = _two_big_gemms(158_114)
    s = hal.InferenceSession(model, target=split_target, fallback="allow")
    parts = [p.executable.report for p in s._parts if p.target == split_target]
    hbm = parts[0].memory[0].capacity
    assert [p.devices for p in parts] == [1, 1] and all(p.peak_memory_bytes <= hbm for p in parts)
    assert sum(p.peak_memory_bytes for p in parts) > hbm
    rep = s.report
    assert rep.devices == 2 and rep.peak_memory_bytes == max(p.peak_memory_bytes for p in parts) <= hbm
    (level,) = rep.memory
    assert level.bytes <= level.capacity and "devices of its own" in rep.details["memory"]
    assert rep.latency_s == pytest.approx(sum(p.latency_s for p in parts))
    # asked for one GPU, they cannot have their own: the error names the figures and what to do
    with pytest.raises(hal.ResourceError, match=r"2 partitions .* hold .* of HBM on each device") as e:
        hal.InferenceSession(model, target=split_target, fallback="allow", devices=1)
    assert "leave devices unset" in e.value.hint
    # two GPUs each, tensor parallel: 25 GB a partition on each, which fits together on the same two
    two = hal.InferenceSession(model, target=split_target, fallback="allow", devices=2).report
    assert two.devices == 2 and two.peak_memory_bytes <= hbm and "same devices" in two.details["memory"]


def test_lpu_partitions_that_fill_chips_get_chips_of_their_own(split_target):
    # each partition's 288 MB of weights takes 2 chips filled to 99.9%: the session had reported both
    # on the same 2 chips, 461 MB of SRAM on a 231 MB chip
    s = hal.InferenceSession(_two_big_gemms(12_000), target="lpu-no-softmax", fallback="allow")
    parts = [p.executable.report for p in s._parts if p.target == "lpu-no-softmax"]
    assert [p.devices for p in parts] == [2, 2]
    (level,) = s.report.memory
    assert s.report.devices == 4 and level.bytes == max(p.peak_memory_bytes for p in parts) <= level.capacity


def test_partitions_fitting_together_share_the_devices(split_target):
    s = hal.InferenceSession(_two_big_gemms(1024), target=split_target, fallback="allow")
    parts = [p.executable.report for p in s._parts if p.target == split_target]
    assert s.report.devices == 1
    assert s.report.peak_memory_bytes == sum(p.peak_memory_bytes for p in parts)


class _Sloppy:
    """The cpu target with a capability that breaks interface §4 in one of three ways."""

    def __init__(self, how: str):
        self.how = how
        self.spec = TargetSpec(name=f"sloppy-{how}", vendor="test", kind="other")

    def capability(self, graph, options):
        cap = get_target("cpu").capability(graph, options)
        first = graph.nodes[0]
        if self.how == "omits":
            return cap.model_copy(update={"groups": cap.groups[1:]})
        if self.how == "both":
            return cap.model_copy(update={"refused": [Refusal(node=first.name, op_type=first.op_type, reason="x")]})
        return cap.model_copy(update={"refused": [Refusal(node="ghost", op_type="Relu", reason="x")]})

    def compile(self, graph, options):
        return get_target("cpu").compile(graph, options)

    def load(self, blob):
        raise NotImplementedError


@pytest.mark.parametrize(("how", "says"), [("omits", "neither takes nor refuses: 'up'"),
                                           ("both", "both takes and refuses: 'up'"),
                                           ("ghost", "names nodes the graph lacks: 'ghost'")])
def test_a_capability_that_misses_or_invents_nodes_is_the_plugins_error(how, says):
    # an omitted node had been taken for the user's refusal ("not claimed by the target's capability",
    # pass fallback='warn'), a node both taken and refused was run as refused, an unknown one ignored
    class _P:
        HAL_API_VERSION = "1.0"

        @hal.hookimpl
        def hal_targets(self):
            return [_Sloppy(how)]

    plugins.register(_P(), f"sloppy-{how}-plugin")
    try:
        with pytest.raises(hal.PluginError, match=f"capability on target 'sloppy-{how}' {says}") as e:
            hal.InferenceSession(_gemm_then_tail(), target=f"sloppy-{how}", fallback="allow")
        assert "NodeGroup or as a hal.specs.Refusal" in e.value.hint
    finally:
        plugins.unregister(f"sloppy-{how}-plugin")
