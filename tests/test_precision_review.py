"""A numerics review of the precision policies against independent references (ml_dtypes' casts,
numpy, Transformer Engine's published scaling rules), one fault a test."""

from __future__ import annotations

import warnings

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal import numerics

F32 = np.float32


def _model(nodes, inputs, outputs, inits) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _bf16(x):
    return np.asarray(x, F32).astype(ml_dtypes.bfloat16).astype(F32)


# -- fp8 / int8 scales of tensors holding an infinity or a NaN ------------------------------------

@pytest.mark.parametrize("fmt,top", [("fp8", 448.0), ("int8", 127.0)])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_an_infinity_saturates_and_leaves_the_rest_finite(fmt, top, sign):
    """Transformer Engine's compute_scale_from_amax gives a unit scale when amax is infinite, and the
    cast saturates (satfinite): the infinity becomes the format's largest, the rest are cast as they
    are. A scale of amax / top = inf had made every value of the tensor NaN (x / inf * inf)."""
    x = np.array([1.0, -2.0, 3.0, 0.25 if fmt == "fp8" else 4.0, sign * np.inf], F32)
    for got in (numerics.round_to(x, fmt), np.multiply(*numerics.quantize(x, fmt), dtype=F32)):
        assert np.isfinite(got).all(), got
        assert got[-1] == sign * top
        np.testing.assert_array_equal(got[:4], x[:4])  # all exact at a unit scale


@pytest.mark.parametrize("fmt", ["fp8", "int8"])
def test_a_nan_does_not_set_the_other_values_scale(fmt):
    """TE's amax kernels reduce with fmaxf / __hmax, which pass a NaN over: the scale is the finite
    values' own. A NaN amax had given a unit scale, so small activations flushed (int8: all of them
    to 0) because one element elsewhere was NaN."""
    finite = np.array([0.01, 0.02, -0.03, 0.04], F32)
    x = np.append(finite, F32(np.nan))
    got = numerics.round_to(x, fmt)
    assert np.array_equal(got[:4], numerics.round_to(finite, fmt))
    assert np.abs(got[:4] - finite).max() < 0.1 * 0.04  # int8 at a unit scale: every one 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (numpy's cast of a NaN to int8 warns, and its result is the platform's)
        q, scale = numerics.quantize(x, fmt)
    np.testing.assert_array_equal((q.astype(F32) * scale)[:4], got[:4])
    if fmt == "fp8":
        assert np.isnan(got[4])  # e4m3fn has a NaN: it stays one
    else:
        assert got[4] == 0 and q[4] == 0  # an int8 holds none: the cast's 0, as cvt.rni.s8.f32 gives


def test_per_channel_scales_pass_nan_and_infinity_by_the_same_rules():
    w = np.array([[0.5, 0.01], [np.nan, 0.02], [0.25, np.inf]], F32)
    q, scale = numerics.quantize(w, "fp8", axis=-1)
    np.testing.assert_allclose(scale.ravel(), [0.5 / 448, 1.0], rtol=1e-7)
    got = q.astype(F32) * scale
    assert np.isnan(got[1, 0]) and got[2, 1] == 448
    assert np.isfinite(np.delete(got.ravel(), 2)).all()


def test_fp8_through_a_gpu_gemm_keeps_the_rows_without_an_infinity():
    """A model's view of the same: an infinity in one row of an fp8 GEMM's activation had made every
    row of the output NaN on the GPU (and the LPU at int8)."""
    m = _model([helper.make_node("MatMul", ["x", "w"], ["t"]), helper.make_node("Relu", ["t"], ["y"])],
               [_vi("x", [3, 4])], [_vi("y", [3, 4])], {"w": np.eye(4, dtype=F32)})
    x = np.array([[0.01, 0.02, 0.03, 0.04], [1, 2, 3, np.inf], [0.5, 0.25, 0.125, 1]], F32)
    for target, precision in (("gpu", "fp8"), ("lpu", "int8")):
        y = hal.InferenceSession(m, target=target, precision=precision).run(None, {"x": x})[0]
        assert np.isfinite(y[[0, 2]]).all(), (target, y)


# -- the wafer's matrix ops: a constant where the op reads no weight -------------------------------

def test_wafer_rounds_a_constant_operand_that_is_not_a_weight():
    """MatMul(A constant, x) and an Einsum by a constant: hal.numerics.apply_policy quantised
    initializers at weight positions and rounded activations, and left a constant anywhere else in
    fp32, so at native the wafer's FMACs read one bf16 operand and one fp32 one (the GPU and the
    LPU round both)."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((8, 4)).astype(F32)
    w = rng.standard_normal((16, 8)).astype(F32)
    x = rng.standard_normal((4, 16)).astype(F32)
    matmul = _model([helper.make_node("MatMul", ["a", "x"], ["y"])], [_vi("x", [4, 16])], [_vi("y", [8, 16])],
                    {"a": a})
    einsum = _model([helper.make_node("Einsum", ["x", "w"], ["y"], equation="ij,jk->ik")], [_vi("x", [4, 16])],
                    [_vi("y", [4, 8])], {"w": w})
    for model, want in ((matmul, _bf16(a) @ _bf16(x)), (einsum, _bf16(x) @ _bf16(w))):
        y = hal.InferenceSession(model, target="wafer", precision="native").run(None, {"x": x})[0]
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


# -- the MI300X's fp8 is e4m3fnuz -------------------------------------------------------------------

def _fp8_reference(x, w, dtype, top, product=np.matmul):
    """An fp8 GEMM computed here: x per tensor, w per output column, in ``dtype``, summed by
    ``product`` (fp32's; the H100's tensor cores sum fp8 their own way: ``hal_gpu.accumulation``)."""
    sx = np.abs(x).max() / F32(top)
    sw = np.abs(w).max(axis=0, keepdims=True) / F32(top)
    qx = np.clip(x / sx, -top, top).astype(dtype).astype(F32) * sx
    qw = np.clip(w / sw, -top, top).astype(dtype).astype(F32) * sw
    return np.maximum(_bf16(product(qx, qw)), 0)  # (a Relu reads it: not the logits, which stay 16-bit)


@pytest.mark.parametrize("target,dtype,top", [
    ("gpu", ml_dtypes.float8_e4m3fn, 448.0),
    ("gpu-mi300x", ml_dtypes.float8_e4m3fnuz, 240.0),
])
def test_fp8_gemm_reads_the_targets_own_fp8(target, dtype, top):
    """The MI300X sheet says its FP8 is the FNUZ variant (e4m3fnuz: bias 8, 240 at most), not OCP
    e4m3fn as on the H100; its fp8 precision had computed in e4m3fn (448 at most) all the same."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 32)).astype(F32)
    w = rng.standard_normal((32, 16)).astype(F32)
    m = _model([helper.make_node("MatMul", ["x", "w"], ["t"]), helper.make_node("Relu", ["t"], ["y"])],
               [_vi("x", [8, 32])], [_vi("y", [8, 16])], {"w": w})
    y = hal.InferenceSession(m, target=target, precision="fp8").run(None, {"x": x})[0]
    from hal_gpu.hardware import Gpu

    from hal.kernels.linalg import matmul
    from hal.plugins import get_target

    acc = Gpu.from_spec(get_target(target).spec).fp8_accumulation  # fp32's on the MI300X

    def product(qx, qw):  # the tensor cores' sum of the codes (hal_gpu.accumulation)
        return acc.fp8_product(matmul, "fp8", -1, qx, qw)

    np.testing.assert_allclose(y, _fp8_reference(x, w, dtype, top, product), rtol=1e-6, atol=1e-6)
    other = ml_dtypes.float8_e4m3fnuz if dtype is ml_dtypes.float8_e4m3fn else ml_dtypes.float8_e4m3fn
    other_top = 240.0 if top == 448.0 else 448.0
    assert np.abs(y - _fp8_reference(x, w, other, other_top)).max() > 1e-3  # the formats do differ here


def test_fp8_fnuz_has_no_negative_zero_and_saturates_at_240():
    x = np.array([-0.0, 250.0, -1e9, np.inf, np.nan, 2.0 ** -10], F32)
    q, scale = numerics.quantize(x, "fp8_fnuz")
    assert q.dtype == ml_dtypes.float8_e4m3fnuz and scale == 1
    got = numerics.round_to(x, "fp8_fnuz")
    assert not np.signbit(got[0]) and got[1] == 240 and got[2] == -240 and got[3] == 240
    assert np.isnan(got[4]) and got[5] == 2.0 ** -10  # its least subnormal (e4m3fn's is 2**-9)


def test_wafer_rounds_a_shared_weight_for_its_matrix_op_only():
    """A weight a MatMul and another op both read (a tied embedding's Gather and logits GEMM):
    apply_policy replaced it by its rounded copy for every reader, so at native (results in fp32)
    the Add read bf16 weights; the GPU and the LPU give the matrix op a copy of its own."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 4)).astype(F32)
    x = rng.standard_normal((4, 4)).astype(F32)
    m = _model([helper.make_node("MatMul", ["x", "w"], ["t"]), helper.make_node("Add", ["x", "w"], ["u"])],
               [_vi("x", [4, 4])], [_vi("t", [4, 4]), _vi("u", [4, 4])], {"w": w})
    t, u = hal.InferenceSession(m, target="wafer", precision="native").run(None, {"x": x})
    np.testing.assert_array_equal(u, x + w)
    np.testing.assert_allclose(t, _bf16(x) @ _bf16(w), rtol=1e-5, atol=1e-5)
