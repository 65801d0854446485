"""Regressions the fuzzer found with every small onnx node model as its corpus (benchmarks/fuzz.py,
benchmarks/results/fuzz_findings/), and the neighbours probing around them turned up: each pinned
by the smallest input that showed it. Older ones, from the battery and the first fuzz runs, are in
test_robust_regressions.py."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import onnx
import pytest
from _robust_models import I64, TARGETS, F, model, session, sym, vi
from onnx import TensorProto, helper

import hal
from hal.backend import HalBackend
from hal.graph.load import load


@pytest.mark.parametrize("outputs,num_outputs", [(3, 2), (5, 4), (2, 2**31 - 1)])
def test_split_whose_num_outputs_is_not_its_output_count_is_refused_before_onnx_inference(outputs, num_outputs):
    # was (fuzzer, 509K inputs): onnx's Split-18 shape inference read past its split vector and the
    # process aborted on a C++ assertion; hal now names the node before onnx sees it. With fewer
    # outputs than num_outputs (2**31 - 1: fuzzer, through the CLI) the kernel made that many parts.
    names = [f"y{i}" for i in range(outputs)]
    split = helper.make_node("Split", ["x"], names, name="split", axis=1, num_outputs=num_outputs)
    m = model([split], [vi("x", F, [2, 8])], [vi(n, F, [2, "w"]) for n in names], opset=18)
    said = f"'split' \\(Split\\) has {outputs} outputs but num_outputs={num_outputs}"
    with pytest.raises(hal.ModelError, match=said):
        hal.InferenceSession(m)
    # the same node inside a model-local function, and through onnx's backend API's run_node
    fn = helper.make_function("local", "f", ["x"], names, [split], [helper.make_opsetid("", 18)])
    call = helper.make_node("f", ["x"], names, domain="local")
    m2 = model([call], [vi("x", F, [2, 8])], [vi(n, F, [2, "w"]) for n in names], opset=18)
    m2.opset_import.append(helper.make_opsetid("local", 1))
    m2.functions.append(fn)
    with pytest.raises(hal.ModelError, match="num_outputs"):
        hal.InferenceSession(m2)
    with pytest.raises(hal.ModelError, match="num_outputs"):
        HalBackend.run_node(split, [np.zeros((2, 8), np.float32)], opset_version=18)


def test_split_with_num_outputs_as_many_as_its_outputs_still_runs():
    names = ["a", "b", "c"]
    m = model([helper.make_node("Split", ["x"], names, axis=1, num_outputs=3)], [vi("x", F, [2, 8])],
              [vi(n, F, [2, "w"]) for n in names], opset=18)
    x = np.arange(16, dtype=np.float32).reshape(2, 8)
    got = hal.InferenceSession(m).run(None, {"x": x})
    assert [g.shape for g in got] == [(2, 3), (2, 3), (2, 2)]
    np.testing.assert_array_equal(np.concatenate(got, axis=1), x)


@pytest.mark.parametrize("equation", ["i..j->", "i...j...->", "i....->i", ".->", "ij,k..->",
                                      "-", ">", "ij-,>ji", "%s%n", "ij->j->i"])
def test_einsum_outside_the_equation_grammar_is_refused_before_onnx_inference(equation):
    # was: onnx's Einsum shape inference never returned on these (a '.' that is not part of one
    # '...', a lone '-' or '>', other characters: the last four found by the fuzzer), in C++ that
    # hal's timeout_s cannot interrupt
    inputs = [vi("x", F, [2, 3])] + ([vi("z", F, [2])] if "," in equation else [])
    m = model([helper.make_node("Einsum", [i.name for i in inputs], ["y"], name="ein", equation=equation)],
              inputs, [vi("y", F, [2, "w"])])
    with pytest.raises(hal.ModelError, match="'ein' \\(Einsum\\) has equation .*, which is not an einsum equation"):
        hal.InferenceSession(m, timeout_s=5)


@pytest.mark.parametrize("equation,shape,expected", [
    ("...ij->...ji", (2, 3, 4), (2, 4, 3)), ("... ii ->... i", (2, 3, 3), (2, 3)), ("ij->", (2, 3), ())])
def test_einsum_with_one_ellipsis_a_term_still_runs(equation, shape, expected):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    m = model([helper.make_node("Einsum", ["x"], ["y"], equation=equation)], [vi("x", F, list(shape))],
              [vi("y", F, list(expected))])
    (y,) = hal.InferenceSession(m).run(None, {"x": x})
    np.testing.assert_allclose(y, np.einsum(equation.replace(" ", ""), x), rtol=1e-6)


def _regex_model(pattern: str) -> onnx.ModelProto:
    return model([helper.make_node("RegexFullMatch", ["x"], ["y"], name="re", pattern=pattern)],
                 [vi("x", TensorProto.STRING, [2])], [vi("y", TensorProto.BOOL, [2])], opset=20)


def test_regex_with_catastrophic_backtracking_returns():
    # was: Python's re on (a+)+$ against 40 a's and a b never returned, in C holding the GIL, so
    # timeout_s could not stop it; RE2 (the syntax ONNX names) matches in linear time
    s = hal.InferenceSession(_regex_model("(a+)+$"), timeout_s=10)
    (y,) = s.run(None, {"x": np.array(["a" * 40 + "b", "a" * 40], dtype=object)})
    assert y.tolist() == [False, True]


def test_regex_outside_re2_syntax_is_a_run_error_that_says_so():
    s = hal.InferenceSession(_regex_model("(?<=a)b"))
    with pytest.raises(hal.RunError, match="not RE2 syntax: invalid perl operator"):
        s.run(None, {"x": np.array(["ab", "b"], dtype=object)})


def test_lpu_compiles_an_einsum_of_one_weight_operand():
    # was (fuzzer): the LPU's lowering looked for the operand an MXM op installs at input 1, and an
    # Einsum of one operand has none: IndexError, reported as a plugin fault
    m = model([helper.make_node("Einsum", ["w"], ["y"], equation="...ii->...i")], [vi("w", F, [3, 5, 5])],
              [vi("y", F, [3, 5])])
    helper.set_model_props(m, {"hal.shape_only_weights": "w"})
    s = hal.InferenceSession(m, target="lpu")
    assert s.report.kernels and s.report.target == "lpu"


def _scan(num_scan_inputs: int, xs_dims: list[int], opset: int) -> onnx.ModelProto:
    body = helper.make_graph([helper.make_node("Add", ["s", "a"], ["so"]), helper.make_node("Identity", ["so"], ["o"])],
                             "body", [vi("s", F, [2]), vi("a", F, [2])], [vi("so", F, [2]), vi("o", F, [2])])
    node = helper.make_node("Scan", ["s0", "xs"], ["sN", "ys"], name="scan", body=body, num_scan_inputs=num_scan_inputs)
    return model([node], [vi("s0", F, [2]), vi("xs", F, xs_dims)], [vi("sN", F, [2]), vi("ys", F, None)], opset=opset)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("num_scan_inputs", "xs_dims", "said"), [
    (2**32, [3, 2], "num_scan_inputs=4294967296 does not fit 2 inputs"), (53, [3, 2], "num_scan_inputs=53"),
    (1, [], "axis 0 given for a rank-0 input")])
def test_scan_whose_num_scan_inputs_exceeds_its_inputs_is_a_run_error(num_scan_inputs, xs_dims, said, target):
    # was (fuzzer): num_scan_inputs = 2**32 sized per-input lists by it: MemoryError. Then (fuzzer, seed 31,
    # results/fuzz_findings/plugin-session-b0b00ac25bae, -de805bbedfc6): the GPUs' count of a Scan's kernel
    # launches read the scanned length unguarded, past the inputs (IndexError) or of a scalar
    # (ZeroDivisionError), a PluginError at compile; run on every target, the 2**32 one was a MemoryError
    # there and on the wafer (a default axes list that long). Nothing is counted for such a node now
    s = session(_scan(num_scan_inputs, xs_dims, 9 if num_scan_inputs == 2**32 else 17), target)
    with pytest.raises(hal.RunError, match=said):
        s.run(None, {"s0": np.zeros(2, np.float32), "xs": np.ones(xs_dims, np.float32)})


def _tfidf(max_skip_count: int, indexes: list[int]) -> onnx.ModelProto:
    node = helper.make_node("TfIdfVectorizer", ["x"], ["y"], name="tfidf", mode="TF", min_gram_length=1,
                            max_gram_length=2, max_skip_count=max_skip_count, ngram_counts=[0, 4],
                            ngram_indexes=indexes, pool_int64s=[2, 3, 5, 4, 5, 6, 7, 8, 6, 7])
    return model([node], [vi("x", TensorProto.INT32, [12])], [vi("y", F, ["columns"])], opset=9)


def test_tfidf_with_a_huge_skip_count_counts_as_the_row_allows():
    # was (fuzzer): max_skip_count = 2**31 - 1 looped over every skip, far past the row's length
    x = np.array([1, 1, 3, 3, 3, 7, 8, 6, 7, 5, 6, 8], np.int32)
    huge = hal.InferenceSession(_tfidf(2**31 - 1, [0, 1, 2, 3, 4, 5, 6])).run(None, {"x": x})[0]
    whole_row = hal.InferenceSession(_tfidf(11, [0, 1, 2, 3, 4, 5, 6])).run(None, {"x": x})[0]
    np.testing.assert_array_equal(huge, whole_row)


def test_tfidf_with_a_huge_ngram_index_is_refused_before_allocating():
    # was (fuzzer): an index of 2**32 asked numpy for a 32 GiB output: MemoryError
    # (as the graph's declared size when shape inference reads it, as the kernel's when it cannot)
    m = _tfidf(0, [0, 1, 2, 3, 4, 2**32, 6])
    with pytest.raises(hal.ResourceError, match="'y' float32\\[4294967297\\]"):
        hal.InferenceSession(m, max_memory=1 << 28)
    from hal.kernels.text import tfidf_vectorizer

    attrs = {a.name: helper.get_attribute_value(a) for a in m.graph.node[0].attribute}
    attrs["mode"] = attrs["mode"].decode()
    with pytest.raises(hal.ResourceError, match="TfIdfVectorizer output int64\\[1, 4294967297\\]"):
        tfidf_vectorizer(np.zeros(12, np.int32), **attrs)


@pytest.mark.parametrize("shape", [[1, 1, 2**31 - 1], [2**62, 0, 4]])
def test_random_inputs_past_the_bound_or_numpy_are_resource_errors(shape):
    # was (fuzzer): random_feeds drew 2**31 float64s (a MemoryError past the address-space limit), and
    # numpy refused an empty [2**62, 0, 4] outright (ValueError: array is too big)
    from hal.feeds import random_feeds

    s = session(model([helper.make_node("Log", ["x"], ["y"])], [vi("x", F, shape)], [vi("y", F, shape)]), "cpu")
    with pytest.raises(hal.ResourceError, match="random input 'x'"):
        random_feeds(s.graph, max_memory=1 << 30)


@pytest.mark.parametrize("target", ["cpu", "gpu", "lpu", "wafer"])
def test_conv_transpose_group_below_one_is_a_model_error_on_every_target(target):
    # was (fuzzer, through the CLI): group = -2**63 reached the GPU's cost model: ZeroDivisionError
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="deconv", group=-(2**63))
    m = model([node], [vi("x", F, [3, 2, 3, 3]), vi("w", F, [2, 1, 3, 3])], [vi("y", F, [3, 1, 5, 5])])
    with pytest.raises(hal.ModelError, match="'deconv' \\(ConvTranspose\\) has group=-9223372036854775808"):
        hal.InferenceSession(m, target=target)


@pytest.mark.parametrize("batch_dims", [-2, -(2**31)])
def test_gather_nd_with_negative_batch_dims_is_refused_before_onnx_inference(batch_dims):
    # was (fuzzer): onnx's GatherND shape inference crashed the process (segmentation fault)
    node = helper.make_node("GatherND", ["data", "indices"], ["y"], name="gnd", batch_dims=batch_dims)
    m = model([node], [vi("data", F, [2, 2, 2]), vi("indices", I64, [2, 1])], [vi("y", F, [2, 2])])
    with pytest.raises(hal.ModelError, match=f"'gnd' \\(GatherND\\) has batch_dims={batch_dims}"):
        hal.InferenceSession(m)


def test_gpu_fusion_keeps_a_view_out_of_a_kernel_its_other_operand_depends_on():
    # was (fuzzer): onnx's expanded LayerNormalization case with its Sqrt rewired to read the reduced
    # shape; a Reshape joined the kernel of the data it views though its shape operand came from a
    # later kernel, and the GPU's kernel graph had a cycle (a RuntimeError, reported as a plugin fault).
    # The fuzzer's Sqrt read the int64 shape itself, which the loader now refuses; a Cast keeps it valid.
    from onnx.backend.test.case.node import collect_testcases

    name = "test_layer_normalization_3d_axis_negative_1_epsilon_expanded"
    case = next(c for c in collect_testcases() if c.name == name)
    m = onnx.ModelProto()
    m.CopyFrom(case.model)
    sqrt = next(n for n in m.graph.node if n.op_type == "Sqrt")
    shape = next(n for n in m.graph.node if n.op_type == "Concat").output[0]
    m.graph.node.insert(list(m.graph.node).index(sqrt),
                        helper.make_node("Cast", [shape], ["shape_f"], to=TensorProto.FLOAT, name="cast_shape"))
    sqrt.input[0] = "shape_f"
    s = session(m, "gpu")
    assert s.report.kernels and {p.target for p in s.report.placement} == {"gpu"}


@pytest.mark.parametrize("perm", [[0, -(2**63), 1], [0, 0, 1], [0, 1, 3]])
def test_transpose_perm_that_is_no_permutation_is_a_model_error_on_every_target(perm):
    # was (fuzzer, seed 2): perm [0, -2**63, 1] reached the wafer's compiler: IndexError
    m = model([helper.make_node("Transpose", ["x"], ["y"], name="t", perm=perm)], [vi("x", F, [2, 3, 4])],
              [vi("y", F, [2, 4, 3])])
    for target in ("cpu", "wafer"):
        with pytest.raises(hal.ModelError, match=f"'t' \\(Transpose\\) has perm=\\[{perm[0]}, "):
            hal.InferenceSession(m, target=target)


@pytest.mark.parametrize("attr,value", [("strides", [-(2**31), 3]), ("dilations", [1, 0]), ("kernel_shape", [0, 5])])
def test_window_attributes_below_one_are_model_errors(attr, value):
    # was (fuzzer, seed 2): MaxPool with strides [-2**31, 3] padded a bool image to 192 GiB: MemoryError
    attrs = {"kernel_shape": [5, 5], attr: value}
    m = model([helper.make_node("MaxPool", ["x"], ["y"], name="pool", **attrs)], [vi("x", F, [1, 3, 32, 32])],
              [vi("y", F, [1, 3, "h", "w"])])
    with pytest.raises(hal.ModelError, match=f"'pool' \\(MaxPool\\) has {attr}="):
        hal.InferenceSession(m)


@pytest.mark.parametrize("target", ["cpu", "gpu", "lpu", "wafer"])
def test_an_input_of_a_type_its_operator_does_not_take_is_a_model_error(target):
    # was (fuzzer, seed 3): a float initializer [-inf] as ReduceSum's axes passed onnx's non-strict
    # inference; the GPU's fusion converted it to int (OverflowError, reported as a plugin fault) and
    # the other targets failed at run time. onnxruntime refuses such a model when it loads it.
    axes = helper.make_tensor("axes", TensorProto.FLOAT, [1], [float("-inf")])
    m = model([helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="sum")], [vi("x", F, [2, 3])],
              [vi("y", F, ["a", "b"])], [axes], opset=18)
    with pytest.raises(hal.ModelError, match="'sum' \\(ReduceSum\\) takes 'axes' \\(input 1\\) as tensor\\(int64\\), "
                                             "but 'axes' is a tensor\\(float\\)"):
        hal.InferenceSession(m, target=target)


def _loop_over_an_if(axes_type: int) -> onnx.ModelProto:
    """A Loop whose body casts the iteration number to ``axes_type`` and hands it, from the body's scope,
    to a ReduceSum two bodies down (in an If's then-branch)."""
    then = helper.make_graph([helper.make_node("ReduceSum", ["v", "it_axes"], ["r"], name="sum", keepdims=1)],
                             "then", [], [vi("r", F, ["a", "b"])])
    other = helper.make_graph([helper.make_node("Identity", ["v"], ["r2"])], "else", [], [vi("r2", F, ["a", "b"])])
    body = helper.make_graph(
        [helper.make_node("Unsqueeze", ["it", "zero"], ["it1"]),
         helper.make_node("Cast", ["it1"], ["it_axes"], to=axes_type),
         helper.make_node("If", ["cin"], ["vo"], name="branch", then_branch=then, else_branch=other),
         helper.make_node("Identity", ["cin"], ["cout"])], "body",
        [vi("it", I64, []), vi("cin", TensorProto.BOOL, []), vi("v", F, ["a", "b"])],
        [vi("cout", TensorProto.BOOL, []), vi("vo", F, ["a", "b"])])
    zero = helper.make_tensor("zero", I64, [1], [0])
    return model([helper.make_node("Loop", ["n", "c", "x"], ["y"], name="loop", body=body)],
                 [vi("n", I64, []), vi("c", TensorProto.BOOL, []), vi("x", F, [2, 3])], [vi("y", F, ["a", "b"])],
                 [zero], opset=18)


@pytest.mark.parametrize("target", ["cpu", "gpu", "lpu", "wafer"])
def test_the_input_type_check_reaches_into_if_loop_and_scan_bodies(target):
    # A body's node read a tensor of a type its operator does not take (a float as ReduceSum's axes)
    # and hal ran it anyway, casting -1.0 to the axis -1 or failing at run time on -inf; onnxruntime
    # refuses such a model when it loads it. The path names each body down to the node.
    with pytest.raises(hal.ModelError, match="'loop' \\(Loop\\) body: node 'branch' \\(If\\) then_branch: "
                                             "node 'sum' \\(ReduceSum\\) takes 'axes' \\(input 1\\) as "
                                             "tensor\\(int64\\), but 'it_axes' is a tensor\\(float\\)"):
        hal.InferenceSession(_loop_over_an_if(F), target=target)
    # The same graph with int64 axes is valid: it loads and sums x over axis 0 on the first pass.
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    feeds = {"n": np.array(1, np.int64), "c": np.array(True), "x": x}
    (y,) = session(_loop_over_an_if(I64), target).run(None, feeds)
    np.testing.assert_allclose(y, x.sum(axis=0, keepdims=True))


def test_the_input_type_check_reads_an_outer_value_in_a_body():
    then = helper.make_graph([helper.make_node("ReduceSum", ["x", "axes"], ["r"], name="sum")], "then", [],
                             [vi("r", F, ["a", "b"])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["r2"])], "else", [], [vi("r2", F, ["a", "b"])])
    m = model([helper.make_node("If", ["c"], ["y"], name="if", then_branch=then, else_branch=other)],
              [vi("c", TensorProto.BOOL, []), vi("x", F, [2, 3]), vi("axes", F, [1])], [vi("y", F, ["a", "b"])],
              opset=18)
    with pytest.raises(hal.ModelError, match="'if' \\(If\\) then_branch: .* but 'axes' is a tensor\\(float\\)"):
        load(m)


def test_blocked_dequantize_checks_its_blocks_and_never_repeats_past_the_axis():
    # was (fuzzer, seed 3): block_size 2**40 made np.repeat build a 12 TiB scale (a MemoryError)
    def dequantize(scale_shape):
        node = helper.make_node("DequantizeLinear", ["x", "s"], ["y"], name="dq", axis=1, block_size=2**40)
        m = model([node], [vi("x", TensorProto.UINT8, [1, 4, 3, 2]), vi("s", F, scale_shape)],
                  [vi("y", F, [1, 4, 3, 2])], opset=21)
        x = np.arange(24, dtype=np.uint8).reshape(1, 4, 3, 2)
        s = np.linspace(0.5, 2.0, math.prod(scale_shape), dtype=np.float32).reshape(scale_shape)
        return x, s, session(m, "cpu").run(None, {"x": x, "s": s})[0]

    with pytest.raises(hal.RunError, match="cuts axis 1 of an input of shape \\(1, 4, 3, 2\\) into 1 block"):
        dequantize([1, 2, 3, 2])
    x, s, y = dequantize([1, 1, 3, 2])  # one block spans the whole axis
    np.testing.assert_array_equal(y, x.astype(np.float32) * s)


@pytest.mark.parametrize("shape", [[1, 1, 2, 2], sym(4)])
def test_max_unpool_with_huge_strides_is_refused_before_allocating(shape):
    # was (fuzzer, seed 3): strides [2, 2**40] unpooled into 16 TiB (a MemoryError): the step's size
    # rule checked only an explicit output_shape, not the shape the kernel infers and scatters into
    # first. With static shapes the plan refuses it; with symbolic ones, the step guard.
    node = helper.make_node("MaxUnpool", ["x", "i"], ["y"], name="unpool", kernel_shape=[2, 2], strides=[2, 2**40])
    m = model([node], [vi("x", F, shape), vi("i", I64, shape)], [vi("y", F, sym(4))])
    feeds = {"x": np.ones((1, 1, 2, 2), np.float32), "i": np.zeros((1, 1, 2, 2), np.int64)}
    with pytest.raises(hal.ResourceError, match="1, 1, 4, 1099511627778\\].*refused before allocating"):
        session(m, "cpu", max_memory=1 << 28).run(None, feeds)


@pytest.mark.parametrize("elem_type", [33, 65])
def test_the_input_type_check_passes_by_element_types_onnx_does_not_know(elem_type):
    # was (fuzzer, seed 4): the new schema check named the type through protobuf's enum, which raised
    # ValueError for a number it has no name for (a GRU's W of type 65)
    m = model([helper.make_node("Relu", ["x"], ["y"], name="r")], [vi("x", elem_type, [2])], [vi("y", elem_type, [2])])
    assert [n.op_type for n in load(m).nodes] == ["Relu"]


@pytest.mark.parametrize("target", ["cpu", "wafer"])
def test_a_function_body_node_whose_op_type_is_not_text_is_a_model_error(target):
    # was (mutating the local-function seed): a byte flip left a call in a function body with an
    # op_type that is not UTF-8, which protobuf hands back as bytes; inlined into the graph, it
    # reached the wafer's capability as bytes (a pydantic ValidationError, reported as a plugin fault)
    from _robust_models import local_function_model

    m = local_function_model()
    twice = next(f for f in m.functions if f.name == "Twice")
    twice.node[0].op_type = "ScaledRelX"  # then one byte of it made invalid UTF-8, lengths unchanged
    data = m.SerializeToString().replace(b"ScaledRelX", b"ScaledRel\xff")
    with pytest.raises(hal.ModelError, match="not valid UTF-8"):
        hal.InferenceSession(data, target=target, cache_dir=False)


@pytest.mark.parametrize("target", ["cpu", "gpu", "wafer"])
def test_an_if_branch_with_fewer_outputs_than_the_if_is_a_model_error(target):
    # was (mutating the local-function seed): a then_branch that returned nothing for an If with one
    # output passed onnx's checker; the engine indexed the branch's empty result (IndexError, reported
    # as a plugin fault). onnxruntime refuses such a model when it loads it.
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["a"])], "then", [], [])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["b"])], "else", [], [vi("b", F, [2])])
    m = model([helper.make_node("If", ["c"], ["y"], name="if", then_branch=then, else_branch=other)],
              [vi("c", TensorProto.BOOL, []), vi("x", F, [2])], [vi("y", F, [2])])
    with pytest.raises(hal.ModelError, match="'if' \\(If\\) has 1 output\\(s\\) but its then_branch 0"):
        hal.InferenceSession(m, target=target, cache_dir=False)


def _resize_channels(shape: list[int], scales: list[float]) -> onnx.ModelProto:
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize", mode="linear",
                            coordinate_transformation_mode="align_corners")
    return model([node], [vi("x", F, shape), vi("scales", F, [4])], [vi("y", F, sym(4))], opset=13)


def test_resize_of_a_long_axis_interpolates_without_a_dense_weight_matrix():
    # was (fuzzer, seed 8): linear Resize of 65,536 channels to 54,381 built a dense (out, in) float64
    # weight matrix, 26.6 GiB for an output of 0.9 MB: a MemoryError under any max_memory. Each output
    # now reads its two taps; the values are numpy's own linear interpolation along the axis.
    x = np.random.default_rng(8).standard_normal((1, 65536, 2, 2)).astype(np.float32)
    scale = np.float32(0.8298)
    (y,) = session(_resize_channels([1, 65536, 2, 2], []), "cpu", max_memory=1 << 28).run(
        None, {"x": x, "scales": np.array([1, scale, 1, 1], np.float32)})
    n_out = math.floor(float(scale) * 65536)
    assert y.shape == (1, n_out, 2, 2)
    src = np.arange(n_out) * (65536 - 1) / (float(scale) * 65536 - 1)  # align_corners, per ONNX
    flat = x.reshape(65536, 4).astype(np.float64)
    want = np.stack([np.interp(src, np.arange(65536), flat[:, j]) for j in range(4)], axis=1)
    np.testing.assert_allclose(y.reshape(n_out, 4), want, rtol=1e-6, atol=1e-6)


def test_resize_keeps_a_nan_to_the_outputs_that_read_it():
    # the dense matrix multiplied the NaN by every zero weight of its column: every output went NaN
    x = np.arange(8, dtype=np.float32).reshape(1, 8, 1, 1)
    x[0, 7] = np.nan
    (y,) = session(_resize_channels([1, 8, 1, 1], []), "cpu").run(
        None, {"x": x, "scales": np.array([1, 2, 1, 1], np.float32)})
    finite = np.isfinite(y.reshape(16))
    # outputs 13-15 sit at 6.07, 6.53 and 7 (align_corners: y * 7 / 15) and read channel 7; 12, at 5.6, does not
    assert finite[:13].all() and not finite[13:].any()


def test_resize_with_many_taps_gathers_them_at_once_to_the_same_values(monkeypatch):
    # antialiasing a downscale by 0.2 reads 20 cubic taps an output: gathered in one call, not a
    # Python loop a tap (a downscale by 1e-6 would loop two million times)
    from hal.kernels import image

    x = np.random.default_rng(0).standard_normal((2, 3, 40, 50)).astype(np.float32)
    args = (x, None, np.array([1, 1, 0.3, 0.2], np.float32), None)
    kw = {"antialias": 1, "mode": "cubic", "exclude_outside": 1}
    at_once = image.resize(*args, **kw)
    monkeypatch.setattr(image, "LOOPED_TAPS", 1000)
    np.testing.assert_allclose(at_once, image.resize(*args, **kw), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape_only", [False, True], ids=["input", "shape-only-weight"])
def test_lpu_refuses_an_op_between_graph_input_and_output_too_big_for_sram(shape_only):
    # was (fuzzer, seed 9): a Relu from the graph's input to its output has no transient bytes, and
    # splitting its activations over chips divided the free SRAM by zero bytes a column: a
    # ZeroDivisionError inside the plugin (a PluginError) instead of saying the input does not fit
    m = model([helper.make_node("Relu", ["x"], ["y"], name="r")], [vi("x", F, [100000, 1000])],
              [vi("y", F, [100000, 1000])])
    if shape_only:
        helper.set_model_props(m, {"hal.shape_only_weights": "x"})
    with pytest.raises(hal.ResourceError) as ei:
        hal.InferenceSession(m, target="lpu")
    msg = str(ei.value)
    assert "node 'r' (Relu) needs 400,000,000 bytes of SRAM" in msg
    assert ("weights cannot be split" if shape_only else "activations alone do not fit") in ei.value.hint


def _conv_transpose_model(w_type: int) -> onnx.ModelProto:
    # (fuzzer, seed 10) onnx's test_convtranspose_pad with an empty output_padding, a stride of 2**40
    # and W a double beside a float X
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[3, 2**40])
    node.attribute.append(helper.make_attribute("output_padding", [], attr_type=onnx.AttributeProto.INTS))
    return model([node], [vi("x", F, [1, 1, 3, 3]), vi("w", w_type, [1, 2, 3, 3])], [vi("y", F, [1, 2, 10, 8])])


@pytest.mark.parametrize("target", TARGETS)
def test_inputs_of_one_type_parameter_with_two_types_are_a_model_error(target):
    # ConvTranspose's X and W are both T: a float X and a double W ran (and made float64 columns),
    # where onnxruntime refuses the model when it loads it
    with pytest.raises(hal.ModelError, match=r"binds its type parameter T .* input 0 \('x'\) is a tensor\(float\) "
                                              r"and input 1 \('w'\) a tensor\(double\)"):
        session(_conv_transpose_model(TensorProto.DOUBLE), target)


@pytest.mark.parametrize("target", TARGETS)
def test_conv_transpose_with_an_empty_output_padding_counts_its_full_image(target):
    # was: the guard zipped the empty output_padding with the spatial dims and counted none of them,
    # and the kernel went on to a (1, 2, 9, 2**41) float64 image: 288 TiB
    s = session(_conv_transpose_model(F), target, max_memory=1 << 28)
    tracemalloc.start()
    try:
        with pytest.raises(hal.ResourceError, match=r"ConvTranspose would need .* \[1, 2, 9, 2199023255555\]"):
            s.run(None, {"x": np.ones((1, 1, 3, 3), np.float32), "w": np.ones((1, 2, 3, 3), np.float32)})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


@pytest.mark.parametrize("target", TARGETS)
def test_a_causal_attention_of_absurd_head_counts_compiles_at_once(target):
    # was (fuzzer, seed 22): q_num_heads = 2**62 over a hidden size of 24 made the GPU cost model lay
    # out the CTAs of 2**63 heads, one by one, under a causal mask; a compile never finished. Heads
    # that do not divide the hidden size now give no attention sizes (the node cannot run anyway).
    node = helper.make_node("Attention", ["Q", "K", "V"], ["Y"], is_causal=1, q_num_heads=2**62, kv_num_heads=1)
    m = model([node], [vi("Q", F, [2, 7, 24]), vi("K", F, [2, 7, 24]), vi("V", F, [2, 7, 24])],
              [vi("Y", F, [2, 7, 24])], opset=23)
    hal.compile(m.SerializeToString(), target=target, timeout_s=20)


def test_a_masked_schedule_of_a_billion_heads_is_bounded():
    # a model's batch x heads can be anything: past MAX_SCHEDULED_WAVES the schedule's share is its
    # mean CTA's, so a billion heads lay out as many as a thousand waves need
    hal_gpu = pytest.importorskip("hal_gpu.tiling")
    tril = np.tril(np.ones((1024, 1024), dtype=bool))
    many = hal_gpu.masked_schedule(tril, 128, 128, 10**9, 132, 230)
    assert many == pytest.approx(hal_gpu.masked_schedule(tril, 128, 128, 10**6, 132, 230), rel=1e-3)
    assert 0.5 < many < 0.7  # about half the tiles' time, as under any causal mask


@pytest.mark.parametrize("poison", [np.inf, -np.inf, np.nan])
def test_roi_align_with_an_infinite_roi_is_still_refused_by_its_output_size(poison):
    # was (fuzzer seed 28, a RoiAlign of output_height 2**31 - 1 whose fed roi held an inf): the size
    # rule's grid estimate raised on the infinite extent, the guard took that for a malformed node
    # and let the kernel allocate its 128 GiB output
    node = helper.make_node("RoiAlign", ["x", "rois", "bi"], ["y"], name="roialign", output_height=2**31 - 1,
                            output_width=2)
    m = model([node], [vi("x", F, [1, 4, 8, 8]), vi("rois", F, ["n", 4]), vi("bi", I64, ["n"])],
              [vi("y", F, ["n", 4, "h", 2])], opset=16)  # the roi count fed: nothing to plan before a run
    s = session(m, "cpu", max_memory=1 << 30)
    feeds = {"x": np.ones((1, 4, 8, 8), np.float32), "rois": np.array([[0.3, 1.0, poison, 1.3]], np.float32),
             "bi": np.zeros(1, np.int64)}
    with pytest.raises(hal.ResourceError, match="roialign"):
        s.run(None, feeds)


def test_a_shape_node_of_another_domain_without_inputs_is_refused_not_folded():
    # was (fuzzer seed 38): constant folding took any node called Shape for onnx's and read its first
    # input; a Shape of the training domain with none (the domain now imported at its newest version,
    # as onnxruntime reads a model) raised an IndexError out of the session
    nodes = [helper.make_node("Shape", [], ["y"], domain="ai.onnx.preview.training", start=-10),
             helper.make_node("Identity", ["y"], ["z"])]
    m = model(nodes, [vi("x", F, [3, 4, 5])], [vi("z", I64, [3])], opset=25)
    with pytest.raises(hal.UnsupportedOpError, match="Shape"):
        hal.InferenceSession(m, fallback="error")


@pytest.mark.parametrize("target", TARGETS)
def test_a_pool_with_an_empty_kernel_shape_is_refused_before_its_window_is_laid_out(target):
    # was (fuzzer seed 38): an empty kernel_shape was read as the whole image, and a dilation of
    # 2**31 - 1 then asked numpy for 1.7 PiB of padding, past the size checks, which saw no window
    node = helper.make_node("MaxPool", ["x"], ["y"], ceil_mode=1, dilations=[2**31 - 1, 2, 2], strides=[3, 3, 3])
    node.attribute.append(helper.make_attribute("kernel_shape", [], attr_type=onnx.AttributeProto.INTS))
    m = model([node], [vi("x", F, [1, 2, 32, 32, 32])], [vi("y", F, None)], opset=22)
    with pytest.raises(hal.RunError, match="kernel_shape name one size per spatial axis"):
        session(m, target).run(None, {"x": np.zeros((1, 2, 32, 32, 32), np.float32)})
