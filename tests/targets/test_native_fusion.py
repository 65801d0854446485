"""At native precision the LPU and the wafer round only their matrix ops' operands (the MXM's fp16,
the FMACs' bf16) and keep every result in fp32, so the host fuses the steps between those ops as
the cpu target fuses a whole program (``hal.engine.fused_runs``): fewer steps, the same bits as
one step per node, and the target's report untouched."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import hal
from tests.conftest import light_case

#: where each target calls ``fused_runs`` when it builds its host program
BUILDERS = {"lpu": "hal_lpu.compiler", "wafer": "hal_wafer.executor"}


def _host_steps(session: hal.InferenceSession) -> int:
    (part,) = session._parts
    exe = part.executable
    if hasattr(exe, "_engine"):  # the LPU: one host program
        return len(exe._engine.steps)
    return sum(len(st.program.steps) for st in exe.stages)  # the wafer: a program per stage (built by a run)


@pytest.mark.parametrize("target", sorted(BUILDERS))
@pytest.mark.parametrize("model", ["zoo:tiny-gpt", "light_shufflenet"])
def test_native_fuses_the_steps_between_matrix_ops_with_the_same_bits(target, model, monkeypatch):
    if model.startswith("light_"):
        model, feeds, _ = light_case(model)
    else:
        feeds = {"input_ids": (np.arange(16, dtype=np.int64) * 7 % 256).reshape(1, 16)}
    fused = hal.InferenceSession(model, target=target, precision="native", cache_dir=False)
    builder = importlib.import_module(BUILDERS[target])
    monkeypatch.setattr(builder, "fused_runs", lambda graph, steps, plain: list(steps))
    apart = hal.InferenceSession(model, target=target, precision="native", cache_dir=False)
    got, want = fused.run(None, feeds), apart.run(None, feeds)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    assert _host_steps(fused) < _host_steps(apart)
    assert fused.report.latency_s == apart.report.latency_s  # the modelled program is the compiler's either way
    if model == "zoo:tiny-gpt":  # (the light CNN's softmax is uniform whatever the precision: its weights are light)
        exact = hal.InferenceSession(model, target=target, precision="exact", cache_dir=False).run(None, feeds)
        assert any(not np.array_equal(a, b) for a, b in zip(got, exact))  # native did round something
