"""Fused host steps (hal.engine.fused_steps): bit-identical to one kernel per node, honest step counts,
fused only where every intermediate has one reader, and still within onnxruntime's tolerance."""

from __future__ import annotations

import pickle

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.engine import Program, fused_steps, steps_for_nodes
from hal.errors import ResourceError
from hal.graph.load import from_proto, load
from hal.graph.passes import optimize
from tests.conftest import FIXTURES


def _transformer(name: str) -> onnx.ModelProto:
    if name.startswith("zoo:"):
        from hal.zoo import build

        return build(name[4:])
    return onnx.load(str(FIXTURES / name))


def _feeds(model: onnx.ModelProto, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape = [d.dim_value if d.HasField("dim_value") else 3 for d in vi.type.tensor_type.shape.dim]
        if "mask" in vi.name:
            m = np.ones(shape, np.int64)
            m[..., -2:] = 0  # padding: the mask Add does real work
            feeds[vi.name] = m
        else:
            feeds[vi.name] = rng.integers(0, 200, size=shape).astype(np.int64)
    return feeds


TRANSFORMERS = ["bert_tiny.onnx", "gpt_tiny.onnx", "zoo:tiny-gpt"]


@pytest.mark.parametrize("block", [None, 64], ids=["whole", "blocked"])
@pytest.mark.parametrize("name", TRANSFORMERS)
def test_fused_program_is_bit_identical_to_one_kernel_per_node(name, block, monkeypatch):
    from hal.kernels.fused import Region

    if block is not None:  # small blocks: these small models' regions run block by block
        monkeypatch.setattr(Region, "BLOCK", block)
    model = _transformer(name)
    graph = optimize(from_proto(model, where=name))
    feeds = _feeds(model)
    plain = Program(graph, steps_for_nodes(graph, graph.nodes))
    fused = Program(graph, fused_steps(graph, graph.nodes))
    kinds = {s.op_type for s in fused.steps if s.nodes}
    assert any("MatMul+Add" in k for k in kinds)  # a product and its bias in one step (alone or in more)
    # the attention scale + mask (or Where) + Softmax, between its two products (``AttentionCore``)
    assert any(k.endswith("+Softmax+MatMul") for k in kinds)
    assert len(fused.steps) < len(plain.steps)
    want = plain.run_list(feeds)
    for prog in (fused, pickle.loads(pickle.dumps(fused))):  # a stored program rebuilds its fused kernels
        for _ in range(2):  # the second run goes through the kept weight-only results
            got = prog.run_list(feeds)
            for a, b in zip(got, want):
                assert a.dtype == b.dtype and a.shape == b.shape
                assert np.array_equal(a, b, equal_nan=True)
    # every node runs exactly once, in a fused step or its own
    covered = [n for s in fused.steps for n in (s.nodes or (s.label,))]
    assert sorted(covered) == sorted(n.name for n in graph.nodes)


def test_erf_gelu_chain_fuses_into_one_step_bit_identically():
    model = _transformer("bert_tiny.onnx")
    graph = optimize(from_proto(model, where="bert"))
    steps = fused_steps(graph, graph.nodes)
    # the MLP's first product, its bias Add and the GELU reading the sum: one step (``MatMulEpilogue``)
    gelu = [s for s in steps if s.op_type == "MatMul+Add+Div+Erf+Add+Mul+Mul"]
    assert gelu, sorted({s.op_type for s in steps})
    rng = np.random.default_rng(0)
    s = gelu[0]
    by_name = {n.name: n for n in graph.nodes}
    plain = steps_for_nodes(graph, [by_name[n] for n in s.nodes])
    consts = [graph.initializers[n] for n in s.ins[3:]]
    w = graph.initializers[s.ins[1]]
    specials = [np.nan, np.inf, -np.inf, 0.0, 1e30, -1e30, 1e-40, -0.0]

    def apart(env: dict) -> np.ndarray:
        with np.errstate(all="ignore"):  # as the engine runs kernels: NaN and Inf propagate silently
            for st in plain:
                if all(i in env for i in st.ins):
                    env[st.outs[0]] = st.fn(*[env[i] for i in st.ins], **st.attrs)
        return env[s.outs[0]]

    # the region alone (as it runs where the product is not float32, say): 2.5 blocks, IEEE specials
    x = (rng.standard_normal((4, 128, w.shape[1])) * 4).astype(np.float32)
    x.flat[:4], x.flat[-4:] = specials[:4], specials[4:]
    x0 = x.copy()
    want = apart({plain[1].outs[0]: x, **dict(zip(s.ins[3:], consts))})
    with np.errstate(all="ignore"):
        got = s.fn.region(x, *consts)
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(x, x0, equal_nan=True)  # its input is left alone
    # the whole step, the product's rows in blocks too, with specials reaching the product
    a = (rng.standard_normal((4, 128, w.shape[0]))).astype(np.float32)
    a[0, 0, :len(specials)] = specials
    args = [a, w, graph.initializers[s.ins[2]], *consts]
    want = apart(dict(zip(s.ins, args)))
    with np.errstate(all="ignore"):
        got = s.fn(*args)
    assert np.isnan(got).any() and np.array_equal(got, want, equal_nan=True)


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_cpu_target_with_fused_steps_matches_onnxruntime_and_reports_each_step(name):
    model = _transformer(name)
    feeds = _feeds(model)
    sess = hal.InferenceSession(model, target="cpu")
    ours = sess.run(None, feeds)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    theirs = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    report = sess.report
    fused = [k for k in report.kernels if len(k.nodes) > 1]
    assert fused and all(k.name == "+".join(k.nodes) for k in fused)
    assert report.kernel_count == len(report.kernels) < report.node_count
    assert sum(len(k.nodes) for k in report.kernels) == report.node_count


def _mm_add_gelu(extra_reader: str | None) -> onnx.ModelProto:
    """x @ W + b -> Div -> Erf -> Add 1 -> Mul x -> Mul 0.5, with a second reader of one intermediate."""
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b"),
             numpy_helper.from_array(np.array(1.4142135, np.float32), "sqrt2"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"], name="mm"),
             helper.make_node("Add", ["mm", "b"], ["h"], name="bias"),
             helper.make_node("Div", ["h", "sqrt2"], ["d"], name="div"),
             helper.make_node("Erf", ["d"], ["e"], name="erf"),
             helper.make_node("Add", ["e", "one"], ["e1"], name="add1"),
             helper.make_node("Mul", ["h", "e1"], ["m"], name="mulx"),
             helper.make_node("Mul", ["m", "half"], ["y"], name="half_mul")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])]
    if extra_reader == "output":
        outputs.append(helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 8]))
        outputs.append(helper.make_tensor_value_info("mm", TensorProto.FLOAT, [2, 8]))
    elif extra_reader == "node":
        nodes.append(helper.make_node("Neg", ["e"], ["ne"], name="neg_e"))
        nodes.append(helper.make_node("Neg", ["mm"], ["nm"], name="neg_mm"))
        outputs.append(helper.make_tensor_value_info("ne", TensorProto.FLOAT, [2, 8]))
        outputs.append(helper.make_tensor_value_info("nm", TensorProto.FLOAT, [2, 8]))
    elif extra_reader == "subgraph":
        body = helper.make_graph([helper.make_node("Neg", ["e"], ["be"]), helper.make_node("Neg", ["mm"], ["bm"]),
                                  helper.make_node("Add", ["be", "bm"], ["bo"])], "body", [],
                                 [helper.make_tensor_value_info("bo", TensorProto.FLOAT, [2, 8])])
        nodes.append(helper.make_node("Constant", [], ["c"], name="cond",
                                      value=numpy_helper.from_array(np.array(True))))
        nodes.append(helper.make_node("If", ["c"], ["sub"], name="if", then_branch=body, else_branch=body))
        outputs.append(helper.make_tensor_value_info("sub", TensorProto.FLOAT, [2, 8]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("extra_reader", [None, "output", "node", "subgraph"])
def test_fuses_only_where_every_intermediate_has_one_reader(extra_reader):
    model = _mm_add_gelu(extra_reader)
    graph = load(model)
    steps = fused_steps(graph, graph.nodes)
    kinds = {s.op_type for s in steps}
    if extra_reader is None:  # the GELU as the product's epilogue: one step
        assert kinds == {"MatMul+Add+Div+Erf+Add+Mul+Mul"}
    else:  # mm and e have a second reader: MatMul stays alone, the chain splits at e
        assert "MatMul+Add" not in kinds and "MatMul" in kinds
        assert "Div+Erf" in kinds and "Add+Mul+Mul" in kinds
    x = np.random.default_rng(2).standard_normal((2, 8)).astype(np.float32)
    want = Program(graph, steps_for_nodes(graph, graph.nodes)).run_list({"x": x})
    got = Program(graph, steps).run_list({"x": x})
    for a, b in zip(got, want):
        assert np.array_equal(a, b)
    theirs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for a, b in zip(got, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fused_matmul_keeps_the_memory_guard():
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((64, 4096)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(4096).astype(np.float32), "b")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"], name="mm"),
             helper.make_node("Add", ["mm", "b"], ["y"], name="bias")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4096])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = hal.InferenceSession(model, target="cpu", max_memory=4 << 20)
    assert [k.op_types for k in sess.report.kernels] == [["MatMul", "Add"]]
    sess.run(None, {"x": np.ones((8, 64), np.float32)})  # 128 KiB: within the bound
    with pytest.raises(ResourceError):
        sess.run(None, {"x": np.ones((1024, 64), np.float32)})  # 16 MiB of product


def _region(ops: list[str], refs: list[tuple[int, ...]]):
    """A Region built directly: member i runs ops[i] (the opset-17 kernel) on refs[i]."""
    from hal.kernels import lookup
    from hal.kernels.fused import Region

    keys = [(d.domain, op, d.since) for op in ops if (d := lookup(op, "", 17))]
    return Region(keys, refs, [{}] * len(ops), ops, [f"m{i}" for i in range(len(ops))])


@pytest.mark.parametrize("block", [None, 64], ids=["one-block", "blocks"])
def test_region_member_reading_one_result_twice_runs_block_by_block(block, monkeypatch):
    """d = x - c; s = d * d; y = s + s, built as a Region directly (find_fusions joins only values
    read once, so a graph gives no such region): members reading one member result as both operands,
    the last one too, give each buffer back to the pool once."""
    from hal.kernels.fused import Region

    if block is not None:
        monkeypatch.setattr(Region, "BLOCK", block)
    region = _region(["Sub", "Mul", "Add"], [(0, 1), (~0, ~0), (~1, ~1)])
    x = np.random.default_rng(0).standard_normal((3, 100)).astype(np.float32)
    c = np.array([0.25], np.float32)
    d = x - c
    want = d * d + d * d
    for _ in range(2):
        got = region._blocked([x, c])  # the block path, not member by member
        assert got is not None and np.array_equal(got, want)


def _random_region(seed: int):
    """A Region of 3-9 members (Add, Sub, Mul, Div, Erf, Tanh) over a full-size input and a scalar,
    each member result read once by a later member: chains and branches, so its one-block schedule
    needs pooled temporaries, writes into the buffer it reads, and gives buffers back."""
    rng = np.random.default_rng(seed)
    ops, refs, pending = [], [], []
    for _ in range(int(rng.integers(3, 10))):
        if rng.random() < 0.3:
            operand = [~pending.pop(0) if pending and rng.random() < 0.7 else 0]
            ops.append(str(rng.choice(["Erf", "Tanh"])))
        else:
            operand = [~pending.pop(0) if pending and rng.random() < 0.6 else int(rng.integers(0, 2)) for _ in range(2)]
            if not any(r == 0 or r < 0 for r in operand):
                operand[0] = 0  # at least one full-size operand
            ops.append(str(rng.choice(["Add", "Sub", "Mul", "Div"])))
        refs.append(tuple(operand))
        pending.append(len(refs) - 1)
    while len(pending) > 1:
        ops.append("Add")
        refs.append((~pending.pop(0), ~pending.pop(0)))
        pending.append(len(refs) - 1)
    return _region(ops, refs)


#: a = x + c; b = x * c; m = a * b (b's buffer back to the pool); d = x - c (takes it); t = tanh(x)
#: (a new one: d's is live); y = m + (d + t); and a region that never reads its second input
POOLED = (["Add", "Mul", "Mul", "Sub", "Tanh", "Add", "Add"],
          [(0, 1), (0, 1), (~0, ~1), (0, 1), (0,), (~3, ~4), (~2, ~5)])
UNREAD_INPUT = (["Erf", "Tanh", "Add"], [(0,), (0,), (~0, ~1)])


@pytest.mark.parametrize("case", [*range(16), POOLED, UNREAD_INPUT])
def test_random_regions_in_one_block_in_blocks_and_member_by_member_agree_bit_for_bit(case, monkeypatch):
    from hal.kernels.fused import Region

    seed = case if isinstance(case, int) else 0
    region = _random_region(seed) if isinstance(case, int) else _region(*case)
    assert region._block_plan is not None
    x = (np.random.default_rng(seed).standard_normal((3, 70)) * 3).astype(np.float32)
    x.reshape(-1)[:4] = [np.nan, np.inf, -np.inf, 0.0]
    c = np.array([0.75], np.float32)
    with np.errstate(all="ignore"):
        member_by_member = region._whole([x, c])
        one_block = region(x, c)
        monkeypatch.setattr(Region, "BLOCK", 64)
        blocks = region(x, c)
    assert one_block.shape == x.shape and one_block.dtype == np.float32
    for got in (one_block, blocks):
        np.testing.assert_array_equal(got.view(np.uint32), member_by_member.view(np.uint32))
    np.testing.assert_array_equal(x.reshape(-1)[:4], np.array([np.nan, np.inf, -np.inf, 0.0], np.float32))


def test_fused_region_keeps_the_memory_guard_after_calls_that_did_not_grow():
    """A region remembers that its members did not outgrow their operands for one set of input
    shapes; inputs of other shapes, whose broadcast does grow, are checked again."""
    nodes = [helper.make_node("Add", ["a", "b"], ["s"], name="add"),
             helper.make_node("Mul", ["s", "two"], ["y"], name="scale")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", "m"]),
                                           helper.make_tensor_value_info("b", TensorProto.FLOAT, ["k", "l"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["r", "c"])],
                              [numpy_helper.from_array(np.array([2.0], np.float32), "two")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = hal.InferenceSession(model, target="cpu", max_memory=4 << 20)
    assert [k.op_types for k in sess.report.kernels] == [["Add", "Mul"]]
    same = np.ones((512, 512), np.float32)  # 1 MiB, no broadcast: nothing grows
    for _ in range(2):
        np.testing.assert_array_equal(sess.run(None, {"a": same, "b": same})[0], 4 * same)
    (small,) = sess.run(None, {"a": np.ones((64, 1), np.float32), "b": np.ones((1, 64), np.float32)})
    assert small.shape == (64, 64)  # grows, within the bound
    with pytest.raises(ResourceError):  # 16 MiB of broadcast from 4 KiB and 16 KiB operands
        sess.run(None, {"a": np.ones((1024, 1), np.float32), "b": np.ones((1, 4096), np.float32)})


@pytest.mark.parametrize("name", ["bert_tiny.onnx", "zoo:tiny-gpt"])
def test_wafer_stages_run_fused_steps_at_exact_bit_identical_to_cpu(name):
    model = _transformer(name)
    feeds = _feeds(model)
    exe = hal.compile(model, target="wafer", precision="exact", cache_dir=False)
    kinds = {s.op_type for st in exe.stages for s in st.steps}
    assert any("MatMul+Add" in k for k in kinds), sorted(kinds)
    want = hal.compile(model, target="cpu", cache_dir=False).run(feeds)
    got = exe.run(feeds)
    for k in want:
        assert np.array_equal(got[k], want[k], equal_nan=True)


def _matmul_bias(w: np.ndarray, bias: np.ndarray, bias_first: bool, fed: bool) -> tuple[Program, Program, list]:
    """(fused program, plain program, the calls of its MatMulBias's product) of x @ W + b, W fed or a weight."""
    from hal.kernels.fused import MatMulBias

    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"]),
             helper.make_node("Add", ["b", "mm"] if bias_first else ["mm", "b"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)]
    inits = [numpy_helper.from_array(bias, "b")]
    if fed:
        inputs.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, [8, 5]))
    else:
        inits.append(numpy_helper.from_array(w, "W"))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph(nodes, "mb", inputs, [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    graph = optimize(from_proto(model, where="mb"))
    steps = fused_steps(graph, graph.nodes)
    assert len(steps) == 1 and isinstance(steps[0].fn, MatMulBias)
    fn = steps[0].fn
    calls: list = []
    real = fn._mm
    fn._mm = lambda a, b: calls.append(a.shape) or real(a, b)
    return Program(graph, steps), Program(graph, steps_for_nodes(graph, graph.nodes)), calls


@pytest.mark.parametrize("x_shape, kept", [((6, 8), True), ((1, 6, 8), True), ((2, 3, 8), False), ((8,), False)],
                         ids=["rows", "batch-of-one", "batch-of-two", "vector"])
@pytest.mark.parametrize("bias_first", [False, True])
def test_a_matmul_bias_step_repeats_a_kept_call_directly_with_the_same_bits(x_shape, kept, bias_first):
    """MatMulBias keeps a float32 call's shape, weight and bias where the MatMul kernel multiplied the
    rows as they are; the next call with them skips the kernels (not called again), other shapes
    and a fed weight take them, and every call has the bits of the two nodes."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((8, 5)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    for fed in (False, True):
        fused, plain, calls = _matmul_bias(w, bias, bias_first, fed)
        for seed in range(3):
            feeds = {"x": np.random.default_rng(seed).standard_normal(x_shape).astype(np.float32),
                     **({"W": w} if fed else {})}
            got, want = fused.run_list(dict(feeds)), plain.run_list(dict(feeds))
            assert got[0].shape == want[0].shape and np.array_equal(got[0], want[0])
        repeated = kept and not fed
        assert len(calls) == (1 if repeated else 3) and (fused.steps[0].fn._kept is not None) == repeated
        feeds = {"x": np.ones((3, 8), np.float32), **({"W": w} if fed else {})}  # another shape: the kernels again
        assert np.array_equal(fused.run_list(dict(feeds))[0], plain.run_list(dict(feeds))[0])
        assert len(calls) == (2 if repeated else 4)


@pytest.mark.parametrize("name", ["tiny-gpt", "convnet"])
def test_quantize_dequantize_pairs_fuse_bit_identically(name, tmp_path):
    # quantize_static's QDQ models put a QuantizeLinear and its DequantizeLinear around every op: one
    # compiled pass each pair (``QuantizeDequantize``), per tensor and, on the convnet's weights, per channel
    pytest.importorskip("onnxruntime.quantization")
    from tests.targets._qdq import quantize_static_convnet, quantize_static_zoo

    blob, feeds = (quantize_static_zoo(tmp_path, name, per_channel=True) if name == "tiny-gpt"
                   else quantize_static_convnet(tmp_path, per_channel=True))
    graph = optimize(load(blob))
    plain = Program(graph, steps_for_nodes(graph, graph.nodes))
    fused = Program(graph, fused_steps(graph, graph.nodes))
    pairs = [s for s in fused.steps if "QuantizeLinear+DequantizeLinear" in s.op_type]
    assert len(pairs) == sum(n.op_type == "QuantizeLinear" for n in graph.nodes) > 5
    want = plain.run_list(feeds)
    for prog in (fused, pickle.loads(pickle.dumps(fused))):
        for a, b in zip(prog.run_list(feeds), want):
            assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


def test_a_quantize_linear_pairs_only_with_its_own_dequantize_linear():
    # another scale, another axis, a second reader of the codes or codes as a graph output: two steps
    s2 = numpy_helper.from_array(np.array([0.1, 0.2, 0.3], np.float32), "s2")
    cases = {"same": (["q", "s", "z"], {}, []), "other scale": (["q", "s3", "z"], {}, []),
             "other axis": (["q", "s2", "z2"], {"axis": 0}, []), "second reader": (["q", "s", "z"], {}, ["q"])}
    for case, (dq_inputs, dq_attrs, extra) in cases.items():
        nodes = [helper.make_node("QuantizeLinear", ["x", "s2" if "axis" in case else "s", "z2" if "axis" in case
                                                     else "z"], ["q"], axis=1),
                 helper.make_node("DequantizeLinear", dq_inputs, ["y"], **dq_attrs)]
        outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 3])]
        outs += [helper.make_tensor_value_info(o, TensorProto.INT8, [3, 3]) for o in extra]
        inits = [numpy_helper.from_array(np.float32(0.05), "s"), numpy_helper.from_array(np.float32(0.07), "s3"),
                 numpy_helper.from_array(np.int8(1), "z"), s2, numpy_helper.from_array(np.zeros(3, np.int8), "z2")]
        graph = optimize(from_proto(helper.make_model(helper.make_graph(
            nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])], outs, inits),
            opset_imports=[helper.make_opsetid("", 13)]), where=case))
        kinds = [s.op_type for s in fused_steps(graph, graph.nodes)]
        assert (kinds == ["QuantizeLinear+DequantizeLinear"]) == (case == "same"), (case, kinds)
