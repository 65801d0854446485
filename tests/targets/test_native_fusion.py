"""At native precision the GPU, the LPU and the wafer round only their matrix ops' operands (tensor
cores' tf32, the MXM's fp16, the FMACs' bf16) and keep every result in fp32, so the host fuses the
steps between those ops as the cpu target fuses a whole program (``hal.engine.fused_runs``, the
GPU's ``build_program``): fewer steps, the same bits as one step per node, and the target's report
untouched."""

from __future__ import annotations

import functools
import importlib

import numpy as np
import pytest

import hal
from hal.engine import steps_for_nodes
from hal.kernels.epilogue import MatMulEpilogue
from hal.kernels.fused import MatMulBias, MatMulGroup
from hal.kernels.fused_attention import AttentionCore
from hal.kernels.fused_norm import ProjectionNorm
from tests.conftest import light_case

#: where each target fuses host steps when it builds its host program (and joins a wrapped MatMul
#: with its bias Add), and stand-ins that do not
BUILDERS = {
    "lpu": [("hal_lpu.compiler", "fused_runs", lambda graph, steps, plain: list(steps))],
    "wafer": [("hal_wafer.executor", "fused_runs", lambda graph, steps, plain: list(steps))],
    "gpu": [("hal_gpu.executor", "fused_steps", lambda graph, nodes, *args, **kw: steps_for_nodes(graph, nodes)),
            ("hal_gpu.executor", "bias_of_product", lambda graph, index, step: None)],
}


#: ops on the matrix units, whose operands native precision rounds
MATRIX = {"MatMul", "Gemm", "Conv"}
#: layout nodes a step may read its inputs through (``hal.engine.views``)
LAYOUT = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze"}


def _steps(session: hal.InferenceSession) -> list:
    (part,) = session._parts
    exe = part.executable
    if hasattr(exe, "_engine"):  # the LPU: one host program
        return list(exe._engine.steps)
    return list(exe.program.steps)  # the GPU: one too; the wafer: its stages' steps as one program


def _host_steps(session: hal.InferenceSession) -> int:
    return len(_steps(session))


@pytest.mark.parametrize("target", sorted(BUILDERS))
@pytest.mark.parametrize("model", ["zoo:tiny-gpt", "light_shufflenet"])
def test_native_fuses_the_steps_between_matrix_ops_with_the_same_bits(target, model, monkeypatch):
    if model.startswith("light_"):
        model, feeds, _ = light_case(model)
    else:
        feeds = {"input_ids": (np.arange(16, dtype=np.int64) * 7 % 256).reshape(1, 16)}
    fused = hal.InferenceSession(model, target=target, precision="native", cache_dir=False)
    at_exact = hal.InferenceSession(model, target=target, precision="exact", cache_dir=False)
    exact = at_exact.run(None, feeds)  # (built, and run, before the stand-ins)
    for module, name, unfused in BUILDERS[target]:
        monkeypatch.setattr(importlib.import_module(module), name, unfused)
    apart = hal.InferenceSession(model, target=target, precision="native", cache_dir=False)
    got, want = fused.run(None, feeds), apart.run(None, feeds)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    assert _host_steps(fused) < _host_steps(apart)
    joined = 0
    for step in _steps(fused):  # each matrix op still rounds its operands: in a step of its own, or as
        ops = [op for op in step.op_type.split("+") if op not in LAYOUT]  # the product of its bias Add's step
        if ops == ["MatMul", "Add"]:
            assert isinstance(step.fn, MatMulBias) and isinstance(step.fn.product, functools.partial), step.label
            joined += 1
        elif ops and ops[-1] in MATRIX:
            assert isinstance(step.fn, functools.partial), step.label
        else:
            assert not MATRIX & set(ops), step.label
    assert joined == (12 if model == "zoo:tiny-gpt" else 0)  # its q, k, v, output and two FFN projections a layer
    assert fused.report.latency_s == apart.report.latency_s  # the modelled program is the compiler's either way
    if model == "zoo:tiny-gpt":  # (the light CNN's softmax is uniform whatever the precision: its weights are light)
        assert any(not np.array_equal(a, b) for a, b in zip(got, exact))  # native did round something
        # as many steps as at exact, but for the Q, K and V projections: at exact one batched product a
        # layer (``MatMulGroup``), at native each its own rounded one (32 steps on the LPU, 28 on the GPU);
        # for the MLP's first projection: at exact one step with its GELU (``MatMulEpilogue``), at
        # native its rounded product and bias Add, then the GELU's region; and for each attention's
        # scores, Softmax and product by V: at exact one step (``AttentionCore``), at native three
        # (the GPU runs its own attention kernel at either); for each output projection with the
        # residual join and LayerNormalization after it: at exact one step (``ProjectionNorm``), at
        # native the rounded product with its bias Add, then the join and the norm (on the wafer only
        # the attention's: an MLP's join ends a stage, the next layer's norm opens the next)
        groups = [s.fn.n - 1 for s in _steps(at_exact) if isinstance(s.fn, MatMulGroup)]
        epilogues = sum(isinstance(s.fn, MatMulEpilogue) for s in _steps(at_exact))
        cores = sum(isinstance(s.fn, AttentionCore) for s in _steps(at_exact))
        norms = sum(isinstance(s.fn, ProjectionNorm) for s in _steps(at_exact))
        assert groups == [2, 2] and epilogues == 2 and cores == (0 if target == "gpu" else 2)
        assert norms == (2 if target == "wafer" else 4)
        assert _host_steps(fused) == _host_steps(at_exact) + sum(groups) + epilogues + 2 * cores + norms
