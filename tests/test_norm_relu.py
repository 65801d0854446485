"""An inference BatchNormalization and the Relu that alone reads it, run as one step in one pass
(``NormRelu``, ``_loops.channel_affine``): the plain program's bits (NaN, infinities, signed zeros),
the numpy path's bits, onnxruntime's values, and no fusion where the Relu's input is read elsewhere
or the node trains."""

from __future__ import annotations

import pickle

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import hal
from hal.engine import Program, fused_steps, steps_for_nodes
from hal.graph.load import from_proto
from hal.graph.passes import optimize
from hal.kernels import jit, normalization

SPECIAL = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 3.4e38, -3.4e38], dtype=np.float32)


def _concat_bn_relu(shape: tuple[int, ...], dtype=np.float32, *, second_reader: bool = False,
                    opset: int = 15) -> onnx.ModelProto:
    """Concat(x, x) -> BatchNormalization -> Relu (DenseNet's pre-activation): the Concat keeps the
    normalisation apart from a conv it would fold into."""
    rng = np.random.default_rng(0)
    c = 2 * shape[1]
    weights = {"scale": rng.standard_normal(c), "bias": rng.standard_normal(c), "mean": rng.standard_normal(c),
               "var": rng.random(c) + 0.1}
    # channel 0 is x * 0 + (-0 - 1 * 0): -0 wherever x is negative, which the Relu makes +0
    weights["scale"][0], weights["bias"][0], weights["mean"][0] = 0.0, -0.0, 1.0
    inits = [numpy_helper.from_array(v.astype(dtype), k) for k, v in weights.items()]
    t = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes = [helper.make_node("Concat", ["x", "x"], ["c"], name="concat", axis=1),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["n"], name="bn",
                              epsilon=1e-3),
             helper.make_node("Relu", ["n"], ["y"], name="relu")]
    out_shape = [shape[0], c, *shape[2:]]
    outputs = [helper.make_tensor_value_info("y", t, out_shape)]
    if second_reader:
        nodes.append(helper.make_node("Neg", ["n"], ["m"], name="neg"))
        outputs.append(helper.make_tensor_value_info("m", t, out_shape))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", t, list(shape))], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _x(shape: tuple[int, ...], dtype=np.float32, special: bool = True) -> np.ndarray:
    x = (np.random.default_rng(1).standard_normal(shape) * 4).astype(dtype)
    if special:
        x.reshape(-1)[:SPECIAL.size] = SPECIAL.astype(dtype)
    return x


def _programs(model: onnx.ModelProto) -> tuple[Program, Program]:
    graph = optimize(from_proto(model, where="norm-relu"))
    return Program(graph, steps_for_nodes(graph, graph.nodes)), Program(graph, fused_steps(graph, graph.nodes))


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint16 if a.itemsize == 2 else np.uint32)


@pytest.mark.parametrize("shape", [(1, 3, 7, 9), (2, 5, 4, 4), (3, 4), (1, 2, 3, 4, 5)], ids=str)
@pytest.mark.parametrize("jit_on", [True, False], ids=["compiled", "numpy"])
def test_norm_then_relu_is_one_step_with_the_plain_programs_bits(monkeypatch, shape, jit_on) -> None:
    if jit_on and not jit.enabled():
        pytest.skip("numba is not importable here")
    monkeypatch.setattr(jit, "_ENABLED", jit_on)
    plain, fused = _programs(_concat_bn_relu(shape))
    assert [s.op_type for s in fused.steps] == ["Concat", "BatchNormalization+Relu"]
    want = plain.run_list({"x": _x(shape)})[0]
    # the NaNs kept, and the -0s of channel 0 made +0 (the normalised value before the Relu is -0)
    assert np.isnan(want).any() and not np.signbit(want[:, 0][want[:, 0] == 0]).any()
    for prog in (fused, pickle.loads(pickle.dumps(fused))):  # a stored program rebuilds the kernel
        got = prog.run_list({"x": _x(shape)})[0]
        assert got.dtype == want.dtype and np.array_equal(_bits(got), _bits(want))


def test_the_compiled_pass_keeps_the_numpy_paths_bits(monkeypatch) -> None:
    if not jit.enabled():
        pytest.skip("numba is not importable here")
    rng = np.random.default_rng(2)
    x = _x((2, 6, 5, 7))
    scale, bias, mean = (rng.standard_normal(6).astype(np.float32) for _ in range(3))
    var = (rng.random(6) + 0.01).astype(np.float32)
    scale[0], bias[0], mean[0] = 0.0, -0.0, 1.0  # -0 before the Relu wherever x is negative
    for relu in (False, True):
        with np.errstate(all="ignore"):  # (inf * 0, as the engine runs every kernel)
            got = normalization._batchnorm_infer(x, scale, bias, mean, var, 1e-5, relu)
            monkeypatch.setattr(jit, "_ENABLED", False)
            want = normalization._batchnorm_infer(x, scale, bias, mean, var, 1e-5, relu)
        monkeypatch.setattr(jit, "_ENABLED", True)
        np.testing.assert_array_equal(_bits(got), _bits(want))
    assert not np.signbit(got[got == 0]).any()  # Relu's max against +0 turned every -0 into +0


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64], ids=["fp32", "fp16", "fp64"])
def test_a_session_matches_onnxruntime(dtype) -> None:
    model = _concat_bn_relu((1, 4, 6, 5), dtype)
    x = _x((1, 4, 6, 5), dtype, special=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    ref = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    tol = 1e-2 if dtype == np.float16 else 1e-5
    np.testing.assert_allclose(hal.InferenceSession(model, target="cpu").run(None, {"x": x})[0].astype(np.float64),
                               ref.run(None, {"x": x})[0].astype(np.float64), rtol=tol, atol=tol)


def test_an_opset_7_normalisation_and_its_relu_run_their_kernels_as_one_step() -> None:
    # BatchNormalization-7 (its ``spatial`` attribute) is not the one-pass kernel's: the step calls
    # the two kernels in turn, with the plain program's bits and onnxruntime's values
    shape = (2, 3, 5, 4)
    model = _concat_bn_relu(shape, opset=7)
    plain, fused = _programs(model)
    assert [s.op_type for s in fused.steps] == ["Concat", "BatchNormalization+Relu"]
    want = plain.run_list({"x": _x(shape)})[0]
    got = fused.run_list({"x": _x(shape)})[0]
    assert np.array_equal(_bits(got), _bits(want))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    ref = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = _x(shape, special=False)
    np.testing.assert_allclose(fused.run_list({"x": x})[0], ref.run(None, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_a_relu_input_read_elsewhere_or_a_training_node_stays_apart() -> None:
    plain, fused = _programs(_concat_bn_relu((1, 3, 4, 4), second_reader=True))
    assert "BatchNormalization+Relu" not in [s.op_type for s in fused.steps]
    for a, b in zip(fused.run_list({"x": _x((1, 3, 4, 4))}), plain.run_list({"x": _x((1, 3, 4, 4))})):
        assert np.array_equal(a, b, equal_nan=True)
    model = _concat_bn_relu((1, 3, 4, 4))
    model.graph.node[1].attribute.append(helper.make_attribute("training_mode", 1))
    graph = optimize(from_proto(model, where="norm-relu"))
    assert "BatchNormalization+Relu" not in [s.op_type for s in fused_steps(graph, graph.nodes)]
