"""onnx's node test cases for the attention, recurrent, loss and scan kernels.

Every case that uses one of these ops (or is the ``*_expanded`` function body of such a case) runs
node by node through the registry (tests/kernels/_walk.py) when every op its graph uses has a kernel,
and is compared with onnx's own tolerance check. Features the node cases leave out (sequence_lens,
clip, activations, linear_before_reset, input_forget, initial states) are checked against
onnxruntime.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from _walk import case_ops, node_cases
from _walk import check_case as _check_case
from onnx import helper

from hal.graph.attrs import node_attributes
from hal.kernels import lookup, registered_ops

ATTENTION_OPS = {
    "Attention", "RotaryEmbedding", "LinearAttention", "FlexAttention", "CausalConvWithState", "TensorScatter",
}
RNN_OPS = {"RNN", "GRU", "LSTM"}
LOSS_OPS = {"NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss", "CumProd"}
FAMILY_OPS = ATTENTION_OPS | RNN_OPS | LOSS_OPS

def _base_name(name: str) -> str:
    return re.sub(r"_expanded(_ver\d+)?$", "", name)


def _params() -> list:
    kernels = {op for _, op in registered_ops()}
    cases = node_cases()
    family_cases = {c.name for c in cases if case_ops(c) & FAMILY_OPS}
    params = []
    for case in sorted(cases, key=lambda c: c.name):
        if case.name not in family_cases and _base_name(case.name) not in family_cases:
            continue
        if not case_ops(case) <= kernels:
            continue
        params.append(pytest.param(case, id=case.name))
    return params


PARAMS = _params()


@pytest.mark.parametrize("case", PARAMS)
def test_node_case_matches_onnx_expected_output(case) -> None:
    with np.errstate(all="ignore"):  # fully-masked rows and -inf biases are fed on purpose
        _check_case(case)


def test_every_op_of_the_family_has_cases() -> None:
    covered = set().union(*(case_ops(p.values[0]) for p in PARAMS))
    missing = FAMILY_OPS - covered
    assert not missing, f"no onnx node case exercises {sorted(missing)}"


# --- recurrent features the node cases leave out, against onnxruntime -----------------------------


def _run_kernel_and_ort(op: str, inputs: dict[str, np.ndarray | None], attrs: dict, n_out: int, opset: int):
    ort = pytest.importorskip("onnxruntime")
    names = list(inputs)
    outs = [f"out{i}" for i in range(n_out)]
    node = helper.make_node(op, [n if inputs[n] is not None else "" for n in names], outs, **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for n, v in inputs.items() if v is not None],
        [onnx.ValueInfoProto(name=o) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {n: v for n, v in inputs.items() if v is not None})
    kdef = lookup(op, "", opset)
    got = kdef.fn(*inputs.values(), **kdef.static_attrs(node_attributes(node), outs))
    return (got if isinstance(got, tuple) else (got,)), want


_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_ACTS = {"RNN": ["Relu"], "GRU": ["HardSigmoid", "LeakyRelu"], "LSTM": ["HardSigmoid", "Elu", "Softsign"]}
_RECURRENT = [
    (kind, direction, variant)
    for kind in ("RNN", "GRU", "LSTM")
    for direction in ("forward", "reverse", "bidirectional")
    for variant in ("states", "clip", "activations", "gate_option")
]


@pytest.mark.parametrize(("kind", "direction", "variant"), _RECURRENT,
                         ids=[f"{k}-{d}-{v}" for k, d, v in _RECURRENT])
def test_recurrent_matches_onnxruntime(kind: str, direction: str, variant: str) -> None:
    rng = np.random.default_rng(7)
    steps, batch, width, hidden = 5, 3, 4, 6
    dirs, gates = (2 if direction == "bidirectional" else 1), _GATES[kind]

    def rand(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    inputs = {"X": rand(steps, batch, width), "W": rand(dirs, gates * hidden, width),
              "R": rand(dirs, gates * hidden, hidden), "B": rand(dirs, 2 * gates * hidden),
              "sequence_lens": np.array([5, 2, 3], np.int32), "initial_h": rand(dirs, batch, hidden)}
    if kind == "LSTM":
        inputs["initial_c"] = rand(dirs, batch, hidden)
        inputs["P"] = rand(dirs, 3 * hidden)
    attrs: dict = {"hidden_size": hidden, "direction": direction}
    if variant == "clip":
        attrs["clip"] = 0.7
    elif variant == "activations":
        attrs["activations"] = _ACTS[kind] * dirs
        attrs["activation_alpha"] = [0.3, 0.2, 0.4][:len(_ACTS[kind]) * dirs]
    elif variant == "gate_option":
        if kind == "GRU":
            attrs["linear_before_reset"] = 1
        elif kind == "LSTM":
            attrs["input_forget"] = 1
        else:
            inputs["sequence_lens"] = None
    n_out = 3 if kind == "LSTM" else 2
    got, want = _run_kernel_and_ort(kind, inputs, attrs, n_out, opset=22)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
