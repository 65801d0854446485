"""Fused host steps: the groups ``hal.graph.fuse.find_fusions`` finds, each run as one step by the
kernels of ``hal.kernels.fused`` (and its ``epilogue`` and ``fused_relu`` neighbours), bit-identical
to one reference kernel per node."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from hal.engine.program import Program, Step, steps_for_nodes
from hal.engine.views import fold_views
from hal.graph.fuse import GraphIndex, find_fusions
from hal.graph.ir import Graph, Node
from hal.kernels import lookup


def _key(step: Step, node: Node, graph: Graph) -> tuple[str, str, int]:
    kdef = lookup(node.op_type, node.domain, graph.opset(node.domain))
    assert kdef is not None and kdef.fn is step.fn
    return (kdef.domain, node.op_type, kdef.since)


def fused_steps(graph: Graph, nodes: Iterable[Node], index: GraphIndex | None = None, *,
                fold: bool = True, plain: Sequence[Step] | None = None) -> list[Step]:
    """``steps_for_nodes`` with the groups ``hal.graph.fuse.find_fusions`` finds run as one step each
    (hal.kernels.fused, epilogue, fused_relu): MatMul + bias Add (and sibling MatMuls reading one
    activation, with their bias Adds or without, as one batched product), elementwise regions (GELU chains, attention
    scale and mask) and the Softmax after one, with the products on either side of it (an
    attention's scores and the probabilities times V), a MatMul + bias Add with the region that alone reads
    it (an MLP's GELU), a Relu and the MaxPool after it, a BatchNormalization or an Add and the
    Relu after it, an Add and the LayerNormalization of its sum (a residual join), a QuantizeLinear
    and the DequantizeLinear of its codes; Concats that
    extend one another share one buffer; a layout node (Reshape,
    Transpose, ...) runs inside the one step reading it (``hal.engine.views``).
    Results are bit-identical to the plain steps; a fused step's ``nodes`` names the nodes it runs
    and its label and op type join theirs with "+". A caller fusing many slices of one graph passes
    the graph's ``GraphIndex`` once (building it is O(graph)), and ``fold=False`` when it folds the
    layout nodes itself, once over all its steps: a view whose reader lies in another slice then
    still folds into it. ``plain``: the nodes' reference steps (``kernel_step`` of each, in order)
    when the caller made them already."""
    # (importing hal.kernels.fused imports the kernel families, on first use)
    from hal.kernels.epilogue import MatMulEpilogue
    from hal.kernels.fused import MatMulBias, MatMulGroup, Region
    from hal.kernels.fused_attention import AttentionCore
    from hal.kernels.fused_norm import AddLayerNorm, LayerNorm, ProjectionNorm
    from hal.kernels.fused_quant import QuantizeDequantize
    from hal.kernels.fused_relu import AddRelu, NormRelu, ReluPool
    from hal.kernels.normalization import layer_normalization

    nodes = list(nodes)
    plain = steps_for_nodes(graph, nodes) if plain is None else list(plain)
    fused: dict[int, Step] = {}
    covered: set[int] = set()
    for f in find_fusions(graph, nodes, index):
        members = [nodes[k] for k in f.members]
        steps = [plain[k] for k in f.members]
        if any(s.context_opset is not None for s in steps):
            continue
        keys = [_key(s, n, graph) for s, n in zip(steps, members)]
        out = members[-1].outputs[0]
        label = "+".join(n.name for n in members)
        op = "+".join(n.op_type for n in members)
        if f.kind == "matmul_bias":
            fn: Any = MatMulBias(keys[0], keys[1], f.bias_first)
            step = Step(fn, list(f.inputs), [out], {}, label, op, None, tuple(n.name for n in members), "MatMul")
        elif f.kind == "matmul_group":
            # (the guard sizes one product, a group's output is that many: at most a few, all the
            # same shape)
            outs = [nodes[a if a >= 0 else m].outputs[0] for m, a in f.pairs]
            add = keys[f.members.index(f.pairs[0][1])] if f.pairs[0][1] >= 0 else None
            step = Step(MatMulGroup(keys[0], add, len(f.pairs)), list(f.inputs), outs, {}, label, op, None,
                        tuple(n.name for n in members), "MatMul")
        elif f.kind == "relu_pool":
            fn = ReluPool(keys[0], keys[1])
            step = Step(fn, list(f.inputs), [out], dict(steps[1].attrs), label, op, None,
                        tuple(n.name for n in members), "MaxPool")
        elif f.kind == "norm_relu":
            step = Step(NormRelu(keys[0], keys[1]), list(f.inputs), [out], dict(steps[0].attrs), label, op, None,
                        tuple(n.name for n in members), "BatchNormalization")
        elif f.kind == "quantize_dequantize":
            step = Step(QuantizeDequantize(keys[0], keys[1]), list(f.inputs), [out], dict(steps[0].attrs), label, op,
                        None, tuple(n.name for n in members), "QuantizeLinear")
        elif f.kind == "add_relu":
            step = Step(AddRelu(keys[0], keys[1]), list(f.inputs), [out], {}, label, op, None,
                        tuple(n.name for n in members), members[0].op_type)
        elif f.kind == "add_layer_norm":  # (the sum stays a result: the next residual reads it)
            step = Step(AddLayerNorm(keys[0], keys[1], steps[1].attrs), list(f.inputs),
                        [members[0].outputs[0], out], {}, label, op, None, tuple(n.name for n in members), "Add")
        elif f.kind == "projection_norm":  # (members: the MatMul, its bias Add, the residual Add, the norm)
            fn = ProjectionNorm(keys, f.bias_first, f.product_first, steps[3].attrs)
            step = Step(fn, list(f.inputs), [members[2].outputs[0], out], {}, label, op, None,
                        tuple(n.name for n in members), "MatMul")
        elif f.kind == "matmul_epilogue":  # (the region's members follow the pair's two)
            region = Region(keys[2:], f.refs, [s.attrs for s in steps[2:]], [n.op_type for n in members[2:]],
                            [n.name for n in members[2:]])
            step = Step(MatMulEpilogue(keys[0], keys[1], f.bias_first, region), list(f.inputs), [out], {}, label, op,
                        None, tuple(n.name for n in members), "MatMul")
        elif f.kind == "attention_core":  # (the region's members lie between the two products)
            n_elem = len(f.refs)
            region = Region(keys[1:n_elem + 1], f.refs, [s.attrs for s in steps[1:n_elem + 1]],
                            [n.op_type for n in members[1:n_elem + 1]], [n.name for n in members[1:n_elem + 1]],
                            keys[n_elem + 1], steps[n_elem + 1].attrs)
            step = Step(AttentionCore(keys[0], region, keys[-1]), list(f.inputs), [out], {}, label, op, None,
                        tuple(n.name for n in members), "MatMul",
                        scratch=(members[0].outputs[0], members[n_elem + 1].outputs[0]))
        else:
            n_elem = len(f.refs)
            fn = Region(keys[:n_elem], f.refs, [s.attrs for s in steps[:n_elem]], [n.op_type for n in members[:n_elem]],
                        [n.name for n in members[:n_elem]], keys[n_elem] if f.softmax is not None else None,
                        steps[-1].attrs if f.softmax is not None else None)
            step = Step(fn, list(f.inputs), [out], {}, label, op, None, tuple(n.name for n in members), "")
        fused[f.at] = step
        covered.update(f.members)
    steps = []
    for k, s in enumerate(plain):
        if k in fused:
            steps.append(fused[k])
        elif k not in covered:
            if s.fn is layer_normalization and s.attrs.get("_n_outputs") == 1:
                # a LayerNormalization alone keeps what its operands decided from call to call
                s = replace(s, fn=LayerNorm(_key(s, nodes[k], graph), s.attrs), attrs={})
            steps.append(s)
    steps = chain_concats(graph, steps)
    return fold_views(graph, steps, index) if fold else steps


def bias_of_product(graph: Graph, index: GraphIndex, step: Step) -> tuple[Step, Node] | None:
    """A MatMul node's step whose function a target wrapped (its number format rounds the operands,
    say), joined with the bias Add that alone reads its result (``find_fusions``' ``matmul_bias``)
    as one ``MatMulBias`` step calling the wrapped function for the product, at the MatMul's place
    (the bias is a weight); and the Add's node, whose own step the caller drops. For an Add the
    target leaves as its reference kernel, the bits of the two steps apart. None where the step is
    not a whole MatMul node's or no such Add reads it."""
    from hal.kernels.fused import MatMulBias

    k = index.producer.get(step.outs[0]) if len(step.outs) == 1 else None
    node = graph.nodes[k] if k is not None else None
    if (node is None or node.op_type != "MatMul" or step.op_type != "MatMul" or node.name != step.label
            or len(step.ins) != 2 or step.attrs or step.views or step.context_opset is not None):
        return None
    reader = index.sole_consumer(node.outputs[0])
    if reader is None:
        return None
    add = graph.nodes[reader]
    f = next((f for f in find_fusions(graph, [node, add], index) if f.kind == "matmul_bias"), None)
    mm = lookup("MatMul", node.domain, graph.opset(node.domain))
    plus = lookup("Add", add.domain, graph.opset(add.domain))
    if f is None or mm is None or plus is None:
        return None
    fn = MatMulBias((mm.domain, "MatMul", mm.since), (plus.domain, "Add", plus.since), f.bias_first, step.fn)
    return Step(fn, [*step.ins, f.inputs[2]], [add.outputs[0]], {}, f"{node.name}+{add.name}", "MatMul+Add", None,
                (node.name, add.name), "MatMul"), add


def fused_runs(graph: Graph, steps: Sequence[Step], plain: Iterable[Step]) -> list[Step]:
    """``steps`` with each run of consecutive ones that ``plain`` holds (each its node's own reference
    step, which no numeric policy wraps, nor a target split) fused as ``fused_steps`` fuses them;
    the others as they are, in place. The same bits as the steps one by one: a target whose number
    formats wrap only its matrix ops (the LPU's MXM, the wafer's FMAC operands) fuses what lies
    between them, and at exact everything, as the cpu target does. A wrapped MatMul takes in the
    plain bias Add that alone reads it (``bias_of_product``), and a layout node folds into the one
    step reading it, whichever (``fold_views``)."""
    own = {id(s) for s in plain}
    nodes = {n.name: n for n in graph.nodes}
    index = GraphIndex(graph)
    steps = list(steps)
    mine = {s.label: s for s in steps if id(s) in own}
    dropped: set[int] = set()
    for i, step in enumerate(steps):
        if id(step) in own or step.op_type != "MatMul":
            continue
        joined = bias_of_product(graph, index, step)
        if joined is not None and (add := mine.get(joined[1].name)) is not None:
            steps[i] = joined[0]
            dropped.add(id(add))
    steps = [s for s in steps if id(s) not in dropped]
    out: list[Step] = []
    run: list[Step] = []
    for step in [*steps, None]:
        if step is not None and id(step) in own:
            run.append(step)
            continue
        if run:
            out.extend(fused_steps(graph, [nodes[s.label] for s in run], index, fold=False, plain=run))
            run = []
        if step is not None:
            out.append(step)
    # layout nodes fold into the one step reading them once all steps are made, wrapped ones too
    # (attention's Reshape+Transposes into the MatMuls whose operands a format rounds)
    return fold_views(graph, out, index)


def chain_concats(graph: Graph, steps: list[Step]) -> list[Step]:
    """``steps`` (in run order) with the Concat steps that extend the previous one's result (their
    first input, the previous Concat's only Concat reader, along the same axis, not a graph output)
    as ``ConcatChain`` steps sharing a buffer sized by the last one's static shape. Steps whose kernel
    is not the registered Concat (a numeric policy's wrapper, say) are left as they are."""
    from hal.kernels.fused import ConcatChain

    kdef = lookup("Concat", "", graph.opset(""))
    if kdef is None:
        return steps
    producer = {o: i for i, s in enumerate(steps) for o in s.outs if o}
    readers: dict[str, list[int]] = {}
    for i, s in enumerate(steps):
        for x in s.ins:
            if x:
                readers.setdefault(x, []).append(i)
    outputs = {o.name for o in graph.outputs}

    def axis_of(s: Step) -> int | None:
        """The axis of a plain Concat step with a static result shape, else None."""
        if s.fn is not kdef.fn or len(s.ins) < 2 or not all(s.ins) or len(s.outs) != 1:
            return None
        info = graph.values.get(s.outs[0])
        shape = info.static_shape if info is not None else None
        a = s.attrs.get("axis", 1)
        if shape is None or not -len(shape) <= a < len(shape):
            return None
        return a % len(shape)

    after: dict[int, int] = {}  # a chained Concat -> the one extending it
    for j, s in enumerate(steps):
        a = axis_of(s)
        p = producer.get(s.ins[0]) if a is not None else None
        if (p is None or axis_of(steps[p]) != a or s.ins[0] in outputs or s.ins.count(s.ins[0]) != 1
                or sum(axis_of(steps[r]) is not None for r in readers[s.ins[0]]) != 1):
            continue
        after[p] = j
    key = (kdef.domain, "Concat", kdef.since)
    for head in set(after) - set(after.values()):
        chain = [head]
        while chain[-1] in after:
            chain.append(after[chain[-1]])
        last = steps[chain[-1]]
        total = graph.values[last.outs[0]].static_shape[axis_of(last)]  # type: ignore[index]
        for k in chain:
            steps[k] = replace(steps[k], fn=ConcatChain(key, total, k == head))
    return steps


def reference_program(graph: Graph, *, fuse: bool = False) -> Program:
    """The plain program: one reference kernel per node (``fuse``: with ``fused_steps``, the same results)."""
    return Program(graph, (fused_steps if fuse else steps_for_nodes)(graph, graph.nodes))
