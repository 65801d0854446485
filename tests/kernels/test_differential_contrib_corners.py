"""Corners of onnxruntime's com.microsoft ops that the differential sweep's contrib families
(``benchmarks.differential_contrib``) found, against onnxruntime's outputs: every target runs them."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from tests.kernels._onnxruntime import run_as_written

TARGETS = [t.name for t in hal.targets()]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("bits", "block"), [(2, 16), (2, 32), (2, 128), (2, 256), (4, 16), (8, 256)])
def test_matmul_nbits_level_4_quantises_a_only_where_mlas_has_an_int8_kernel(bits, block, target):
    # accuracy_level 4 asks for int8 compute: onnxruntime quantises A per block for 4- and 8-bit
    # weights, and for 2-bit ones in blocks of 32, 64 and 128, the only ones MLAS's x64 int8 kernels
    # for 2 bits take; in others it multiplies in float32, as at level 0. hal quantised A for 2-bit
    # weights in blocks of 16 and 256 too (7e-3 off).
    rng = np.random.default_rng(bits)
    k, n = 27, 6
    blocks = -(-k // block)
    a = rng.uniform(-2, 2, (2, 3, k)).astype(np.float32)
    inits = [numpy_helper.from_array(rng.integers(0, 256, (n, blocks, block * bits // 8)).astype(np.uint8), "b"),
             numpy_helper.from_array(rng.uniform(0.01, 0.2, n * blocks).astype(np.float32), "scales")]
    node = helper.make_node("MatMulNBits", ["a", "b", "scales"], ["y"], domain="com.microsoft", K=k, N=n, bits=bits,
                            block_size=block, accuracy_level=4)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, a.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    blob = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                             ir_version=8).SerializeToString()
    (want,) = run_as_written(blob, {"a": a}, threads=1)
    (got,) = hal.InferenceSession(blob, target=target).run(None, {"a": a})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
