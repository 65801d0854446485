"""onnxruntime's CPU fusions taken apart into the onnx ops they fused, where those compute the same
bits (``hal.kernels.contrib_fused``'s kernels are the fused ops' arithmetic: the product, then the
activation or the scale in place on its result). A model onnxruntime optimised and saved then
meets hal's own passes, fusions and patterns, and every target's, in the forms they know: a
saved BERT's Q·Kᵀ, a FusedMatMul with transB and alpha, is again a MatMul of Q and Kᵀ and a Mul,
which the GPU recognises as attention (the GPU's estimate of such a model was 1.5x the unsaved
model's). Part of the standard pipeline (``hal.graph.passes.optimize``), first, so a transposed
weight folds.

Taken apart: FusedMatMul without batch transposes (transA, transB and alpha as Transposes and a
Mul), FusedConv without Z, and FusedGemm, whose activation is an onnx op (onnxruntime's
ParametricSoftplus and ScaledTanh are not, and stay fused, as do the forms above it leaves out).
And one fusion of onnx ops: onnxruntime's MatMulAddFusion writes a MatMul of a 3-D (or higher)
activation and its bias Add as Reshape to rows, Gemm, Reshape back; that is the MatMul and the Add
again (numpy's matmul of the stacked rows is the same product, the bias the same float add), so
hal's sibling stacking takes the Q, K and V projections of a saved BERT as one product again.
"""

from __future__ import annotations

import numpy as np
import onnx

from hal.graph.ir import Graph, Node, TensorInfo
from hal.graph.rewrite import Rewrite

_MS = "com.microsoft"
#: FusedConv's activations and the attribute names of their ``activation_params``, in order
_CONV_ACTIVATIONS = {"Relu": (), "Tanh": (), "Sigmoid": (), "LeakyRelu": ("alpha",), "Clip": ("min", "max"),
                     "HardSigmoid": ("alpha", "beta")}
#: FusedGemm's activations that are onnx ops, and the ``activation_*`` attributes each reads
_GEMM_ACTIVATIONS = {"Relu": (), "Tanh": (), "Sigmoid": (), "Softplus": (), "Softsign": (), "LeakyRelu": ("alpha",),
                     "HardSigmoid": ("alpha", "beta"), "Elu": ("alpha",), "Selu": ("alpha", "gamma"),
                     "Celu": ("alpha",), "ThresholdedRelu": ("alpha",)}


class _Unfuser:
    def __init__(self, graph: Graph):
        self.graph, self.rw = graph, Rewrite(graph)
        self.opset = graph.opset()

    def value(self, like: str, base: str, shape: tuple | None = None) -> str:
        """A new value of ``like``'s type (and shape, unless given)."""
        name = self.rw.fresh(base)
        info = self.graph.values.get(like)
        if info is not None:
            self.graph.values[name] = TensorInfo(name, info.elem_type, info.shape if shape is None else shape)
        return name

    def scalar(self, like: str, base: str, v: float) -> str | None:
        """A weight of one value in ``like``'s float type (None when that type is unknown)."""
        info = self.graph.values.get(like)
        dtype = info.dtype if info is not None else None
        if dtype is None or dtype.kind != "f":
            return None
        name = self.rw.fresh(base)
        w = np.array(v, dtype=dtype)
        w.flags.writeable = False
        self.graph.initializers[name] = w
        self.graph.values[name] = TensorInfo(name, info.elem_type, ())
        return name

    def defined(self, op: str) -> bool:
        """Whether the model's opset has ``op`` (Celu comes at 12)."""
        try:
            onnx.defs.get_schema(op, self.opset, "")
        except onnx.defs.SchemaError:
            return False
        return True

    def activation(self, n: Node, op: str, params: dict[str, float], x: str) -> Node | None:
        """``op`` of ``x`` into ``n``'s output, its parameters as onnx's attributes (Clip's as inputs
        from opset 11)."""
        if op == "Clip" and self.opset >= 11:
            bounds = [self.scalar(x, f"{n.name}_{k}", params[k]) for k in ("min", "max")]
            if None in bounds:
                return None
            return Node(self.rw.fresh(f"{n.name}_{op}"), op, "", [x, *bounds], list(n.outputs))
        return Node(self.rw.fresh(f"{n.name}_{op}"), op, "", [x], list(n.outputs), params)

    def product(self, n: Node, op: str, inputs: list[str], attrs: dict) -> tuple[Node, str]:
        out = self.value(n.outputs[0], f"{n.outputs[0]}_{op.lower()}")
        return Node(self.rw.fresh(f"{n.name}_{op}"), op, "", inputs, [out], attrs), out

    def fused_conv(self, n: Node) -> list[Node] | None:
        name = n.attrs.get("activation")
        name = name.decode() if isinstance(name, bytes) else name
        params = [float(p) for p in n.attrs.get("activation_params", [])]
        keys = _CONV_ACTIVATIONS.get(name) if name else ()
        if keys is None or len(params) != len(keys) or (len(n.inputs) > 3 and n.inputs[3]) \
                or (name and not self.defined(name)):
            return None
        attrs = {k: v for k, v in n.attrs.items() if k not in ("activation", "activation_params")}
        if not name:
            return [Node(n.name, "Conv", "", list(n.inputs[:3]), list(n.outputs), attrs)]
        conv, y = self.product(n, "Conv", list(n.inputs[:3]), attrs)
        act = self.activation(n, name, dict(zip(keys, params, strict=True)), y)
        return None if act is None else [conv, act]

    def fused_gemm(self, n: Node) -> list[Node] | None:
        name = n.attrs.get("activation")
        name = name.decode() if isinstance(name, bytes) else name
        keys = _GEMM_ACTIVATIONS.get(name)
        if keys is None or any(f"activation_{k}" not in n.attrs for k in keys) or not self.defined(name):
            return None
        attrs = {k: v for k, v in n.attrs.items() if k in ("alpha", "beta", "transA", "transB")}
        gemm, y = self.product(n, "Gemm", list(n.inputs[:3]), attrs)
        act = self.activation(n, name, {k: float(n.attrs[f"activation_{k}"]) for k in keys}, y)
        return None if act is None else [gemm, act]

    def fused_matmul(self, n: Node) -> list[Node] | None:
        a = n.attrs
        if a.get("transBatchA", 0) or a.get("transBatchB", 0) or len(n.inputs) < 2:
            return None
        nodes, operands, reduced = [], [], []
        # each operand's reduced axis as stored: A's last (the one before, transposed), B's before last
        for x, trans, k_axis in ((n.inputs[0], a.get("transA", 0), -2 if a.get("transA", 0) else -1),
                                 (n.inputs[1], a.get("transB", 0), -1 if a.get("transB", 0) else -2)):
            info = self.graph.values.get(x)
            rank = len(info.shape) if info is not None and info.shape is not None else None
            if rank is not None and rank >= 2:
                reduced.append(info.shape[k_axis])
            if not trans:
                operands.append(x)
                continue
            if rank is None or rank < 2:
                return None
            shape = (*info.shape[:-2], info.shape[-1], info.shape[-2])
            t = self.value(x, f"{x}_t", shape)
            perm = [*range(rank - 2), rank - 1, rank - 2]
            nodes.append(Node(self.rw.fresh(f"{n.name}_Transpose"), "Transpose", "", [x], [t], {"perm": perm}))
            operands.append(t)
        if len(reduced) == 2 and all(isinstance(k, int) for k in reduced) and reduced[0] != reduced[1]:
            return None  # operands that do not multiply: the fused kernel says so in its terms
        alpha = float(a.get("alpha", 1.0))
        if alpha == 1.0:
            return [*nodes, Node(n.name, "MatMul", "", operands, list(n.outputs))]
        scale = self.scalar(n.outputs[0], f"{n.name}_alpha", alpha)
        if scale is None:
            return None
        matmul, y = self.product(n, "MatMul", operands, {})
        return [*nodes, matmul, Node(self.rw.fresh(f"{n.name}_Mul"), "Mul", "", [y, scale], list(n.outputs))]


    def reshaped_gemm(self, gemm: Node, replaced: dict[int, list[Node]]) -> None:
        """Reshape(x, [rows, K]) -> Gemm(W, bias) -> Reshape(y, [*x's leading dims, N]) as MatMul(x, W)
        and Add(bias) into the last Reshape's output, when each value between is read once."""
        a = gemm.attrs
        if (a.get("transA", 0) or a.get("transB", 0) or float(a.get("alpha", 1.0)) != 1.0
                or float(a.get("beta", 1.0)) != 1.0 or len(gemm.inputs) < 2):
            return
        before, w = self.rw.producers.get(gemm.inputs[0]), gemm.inputs[1]
        after = self.rw.sole_reader(gemm.outputs[0])
        if before is None or before.op_type != "Reshape" or before.domain or after is None \
                or after.op_type != "Reshape" or after.domain or after.inputs[0] != gemm.outputs[0] \
                or self.rw.sole_reader(before.outputs[0]) is not gemm or w not in self.graph.initializers:
            return
        x, y = self.graph.values.get(before.inputs[0]), self.graph.values.get(after.outputs[0])
        bias = gemm.inputs[2] if len(gemm.inputs) > 2 and gemm.inputs[2] else ""
        b = self.graph.initializers.get(bias) if bias else None
        k, n = self.graph.initializers[w].shape if self.graph.initializers[w].ndim == 2 else (None, None)
        xs, ys = (v.static_shape if v is not None else None for v in (x, y))
        if xs is None or ys is None or len(xs) < 3 or xs[-1] != k or tuple(ys) != (*xs[:-1], n) \
                or (bias and (b is None or b.shape not in ((n,), (1, n)))):
            return
        for gone in (before.outputs[0], gemm.outputs[0]):
            self.graph.values.pop(gone, None)
        replaced[id(before)] = []
        if not bias:
            replaced[id(gemm)], replaced[id(after)] = [], [
                Node(gemm.name, "MatMul", "", [before.inputs[0], w], list(after.outputs))]
            return
        product = self.value(after.outputs[0], f"{gemm.outputs[0]}_matmul")
        replaced[id(gemm)] = [Node(gemm.name, "MatMul", "", [before.inputs[0], w], [product])]
        replaced[id(after)] = [Node(self.rw.fresh(f"{gemm.name}_bias"), "Add", "", [product, bias],
                                    list(after.outputs))]


def unfuse_onnxruntime(graph: Graph) -> Graph:
    """FusedMatMul, FusedConv and FusedGemm as the onnx ops they fused, and a Gemm between Reshapes
    as the MatMul and Add it was (see the module docstring), in place."""
    if not any(n.domain == _MS or n.op_type == "Gemm" for n in graph.nodes):
        return graph  # nothing to take apart: no index of the graph built
    un = _Unfuser(graph)
    rules = {"FusedMatMul": un.fused_matmul, "FusedConv": un.fused_conv, "FusedGemm": un.fused_gemm}
    replaced: dict[int, list[Node]] = {}
    for n in graph.nodes:
        if n.op_type == "Gemm" and not n.domain:
            un.reshaped_gemm(n, replaced)
            continue
        rule = rules.get(n.op_type) if n.domain == _MS else None
        nodes = rule(n) if rule is not None else None
        if nodes is not None:
            replaced[id(n)] = nodes
    un.rw.splice(graph, replaced)
    return graph


__all__ = ["unfuse_onnxruntime"]
