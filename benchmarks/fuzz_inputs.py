"""The fuzzer's inputs: where choices come from (hypothesis draws or ``random``), the seed corpus,
and the structure-aware and byte-level mutators of a ModelProto (``make_input``). The fuzz targets
and the supervisor that runs them are in ``benchmarks.fuzz``; the bounded suite
tests/robustness/test_robust_fuzz.py drives these same mutators."""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

INTERESTING_INTS = (0, 1, -1, 2, 3, -2, 4, 7, 8, 16, 64, 255, 1024, 2**16, 2**31 - 1, -(2**31), 2**32, 2**40,
                    2**62, 2**63 - 1, -(2**63))
INTERESTING_FLOATS = (0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 1e-30, 1e30, 3.4e38, math.inf, -math.inf, math.nan)
HOSTILE_LOCATIONS = ("/etc/passwd", "../w.bin", "../../../../etc/hostname", "sub/../../x", "C:\\x.bin",
                     "\\\\server\\share\\x", "", ".", "nul", "w.bin\0.txt", "a" * 300)
STRINGS = (b"", b"NOTSET", b"SAME_UPPER", b"VALID", b"constant", b"reflect", b"edge", b"wrap", b"linear",
           b"nearest", b"cubic", b"half_pixel", b"asymmetric", b"DCR", b"CRD", b"none", b"sum", b"mean",
           b"\xff\xfe", b"%s%n", b"x" * 64)
ATTR_NAMES = ("axis", "axes", "perm", "keepdims", "kernel_shape", "strides", "pads", "dilations", "group",
              "alpha", "beta", "transA", "transB", "to", "mode", "value", "epsilon", "k", "largest", "sorted",
              "split", "num_outputs", "allowzero", "start", "end", "batch_dims", "auto_pad", "ceil_mode",
              "coordinate_transformation_mode", "keep_aspect_ratio_policy", "reduction", "blocksize", "body",
              "then_branch", "else_branch", "exclusive", "reverse", "direction", "hidden_size", "output_shape",
              "equation")
DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.example", "ai.onnx.preview.training")


# -- where choices come from -----------------------------------------------------------------

class RandomDraw:
    """Choices from a seeded random.Random (fast; the long-run default when ``--engine random``)."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p


class HypothesisDraw(RandomDraw):
    """Choices from a Random that hypothesis draws (``st.randoms(use_true_random=True)``): hypothesis owns
    the seeds (and replays them), the mutators get uniform choices (hypothesis's own integer draws lean
    so hard to boundary values that most inputs would be the same few)."""

    def __init__(self, data: Any):
        from hypothesis import strategies as st

        super().__init__(data.draw(st.randoms(use_true_random=True)))


def pick(d: Any, seq: Sequence[Any]) -> Any:
    return seq[d.int(0, len(seq) - 1)]


def an_int(d: Any) -> int:
    return pick(d, INTERESTING_INTS) if d.chance(0.7) else d.int(-8, 64)


def a_float(d: Any) -> float:
    return pick(d, INTERESTING_FLOATS) if d.chance(0.7) else d.int(-1000, 1000) / 8


def some_bytes(d: Any, most: int = 64) -> bytes:
    return bytes(d.int(0, 255) for _ in range(d.int(0, most)))


# -- the corpus ------------------------------------------------------------------------------

def corpus(node_cases: int = 400) -> list[bytes]:
    """Serialized seed models: hand-made (bombs, control flow, external-data users, ai.onnx.ml pipelines,
    onnxruntime's quantized, transformer, fusion, hybrid-LLM and generation contrib ops), zoo (tiny-cnn;
    tiny-gpt, whose exported attention, GELU and residual joins the engine runs as fused steps), onnx
    node tests."""
    import onnx

    from hal.zoo import build

    root = Path(__file__).resolve().parent.parent
    sys.path[:0] = [str(root / "tests" / "robustness"), str(root)]  # the generation model's decoders: tests.kernels
    import _contrib_models as cm
    import _robust_models as rm

    seeds: list[onnx.ModelProto] = [rm.relu_model(), rm.mlp_model(), rm.elementwise_model(), rm.matmul_with_weight(),
                                    rm.static_bomb_model(), rm.constant_bomb_model(), rm.runaway_loop_model(),
                                    rm.sparse_constant_bomb_model(), rm.local_function_model(), build("tiny-cnn"),
                                    build("tiny-gpt"),
                                    cm.quantized_contrib_model(), cm.transformer_contrib_model(),
                                    cm.hybrid_contrib_model(), cm.generation_contrib_model()]
    seeds += [m for m, _, _ in rm.bomb_models().values()] + rm.ml_models()
    out = [m.SerializeToString() for m in seeds]
    if node_cases <= 0:
        return out
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from onnx.backend.test.case.node import collect_testcases

            cases = collect_testcases()
    small = (c.model.SerializeToString() for c in cases if c.model.ByteSize() < 32 << 10)
    data = sorted(small, key=lambda b: hashlib.sha1(b).digest())
    step = max(1, len(data) // node_cases)
    out += data[::step][:node_cases]
    return out


# -- mutators ---------------------------------------------------------------------------------

def _graphs(g: Any) -> list[Any]:
    """The graph and every subgraph in it."""
    out = [g]
    for n in g.node:
        for a in n.attribute:
            if a.HasField("g"):
                out += _graphs(a.g)
            for sg in a.graphs:
                out += _graphs(sg)
    return out


def _nodes(m: Any) -> list[Any]:
    """Every node: the graph's, its subgraphs' and the model-local functions' (the inliner's input)."""
    return [n for g in (_graphs(m.graph) + list(m.functions)) for n in g.node]


def _value_infos(m: Any) -> list[Any]:
    return [v for g in _graphs(m.graph) for v in (*g.input, *g.output, *g.value_info)]


def _names(m: Any) -> list[str]:
    g = m.graph
    names = [i.name for i in g.input] + [t.name for t in g.initializer] + [o for n in g.node for o in n.output]
    return names or ["x"]


def edit_bytes(s: bytes, d: Any) -> bytes:
    """One small edit of a string attribute (an Einsum equation, a mode): a character inserted (one of
    its own, or one of the equation grammar's), deleted, or a slice repeated."""
    i = d.int(0, len(s))
    kind = d.int(0, 2)
    if kind == 0:
        return s[:i] + pick(d, (s[i - 1:i] or b".", b".", b",", b"->", b"...", b"i", b" ")) + s[i:]
    if kind == 1:
        return s[:i] + s[i + 1:]
    j = d.int(i, len(s))
    return s[:j] + s[i:j] + s[j:]


def mutate_attribute(m: Any, d: Any) -> None:
    from onnx import AttributeProto as A
    from onnx import helper

    nodes = _nodes(m)
    if not nodes:
        return
    n = pick(d, nodes)
    if n.attribute and d.chance(0.75):
        a = pick(d, n.attribute)
        if d.chance(0.1):  # type confusion: same name, another type
            a.type = pick(d, (A.INT, A.FLOAT, A.INTS, A.STRING, A.TENSOR, A.GRAPH, A.FLOATS, A.UNDEFINED))
        elif a.type == A.INT:
            a.i = an_int(d)
        elif a.type == A.FLOAT:
            a.f = a_float(d)
        elif a.type == A.STRING:
            a.s = edit_bytes(a.s, d) if a.s and d.chance(0.5) else pick(d, STRINGS)
        elif a.type == A.INTS:
            if a.ints and d.chance(0.5):
                a.ints[d.int(0, len(a.ints) - 1)] = an_int(d)
            elif d.chance(0.5):
                a.ints.append(an_int(d))
            else:
                del a.ints[:]
        elif a.type == A.FLOATS:
            if d.chance(0.5):
                a.floats.append(a_float(d))
            else:
                del a.floats[:]
        elif a.type == A.TENSOR:
            mutate_tensor(a.t, d)
        elif d.chance(0.5):
            n.attribute.remove(a)
        return
    if n.attribute and d.chance(0.3):
        n.attribute.remove(pick(d, n.attribute))
        return
    name = pick(d, ATTR_NAMES)
    if any(a.name == name for a in n.attribute):
        return
    kind = d.int(0, 3)
    value: Any = [an_int(d) for _ in range(d.int(0, 4))] if kind == 0 else (
        an_int(d) if kind == 1 else a_float(d) if kind == 2 else pick(d, STRINGS))
    with contextlib.suppress(ValueError, TypeError):
        n.attribute.append(helper.make_attribute(name, value))


def mutate_shape(m: Any, d: Any) -> None:
    vis = _value_infos(m)
    if not vis:
        return
    tt = pick(d, vis).type.tensor_type
    dims = tt.shape.dim
    op = d.int(0, 5)
    if op == 0 and dims:
        dims[d.int(0, len(dims) - 1)].dim_value = max(an_int(d), 0) if d.chance(0.8) else d.int(0, 4)
    elif op == 1 and dims:
        dims[d.int(0, len(dims) - 1)].dim_param = pick(d, ("n", "batch", "seq", "", "N", "?"))
    elif op == 2:
        dims.add().dim_value = d.int(0, 8)
    elif op == 3 and dims:
        del dims[d.int(0, len(dims) - 1)]
    elif op == 4:
        tt.ClearField("shape")
    else:
        tt.elem_type = d.int(0, 26)


def mutate_type(m: Any, d: Any) -> None:
    g = m.graph
    if g.initializer and d.chance(0.3):
        pick(d, g.initializer).data_type = d.int(0, 26)
    elif d.chance(0.3):
        casts = [n for n in _nodes(m) if n.op_type in ("Cast", "CastLike", "EyeLike", "RandomNormal")]
        for a in (pick(d, casts).attribute if casts else []):
            if a.name in ("to", "dtype"):
                a.i = d.int(0, 26)
    else:
        vis = _value_infos(m)
        if vis:
            pick(d, vis).type.tensor_type.elem_type = d.int(0, 26)


def mutate_wiring(m: Any, d: Any) -> None:
    g = m.graph
    if not g.node:
        return
    names = _names(m)
    n = pick(d, g.node)
    op = d.int(0, 7)
    if op == 0 and n.input:
        n.input[d.int(0, len(n.input) - 1)] = pick(d, names) if d.chance(0.7) else pick(d, ("", "ghost"))
    elif op == 1 and n.output:
        n.output[d.int(0, len(n.output) - 1)] = pick(d, names) if d.chance(0.5) else "y2"
    elif op == 2:
        g.node.remove(n)
    elif op == 3:
        g.node.add().CopyFrom(n)
    elif op == 4 and len(g.node) > 1:
        i, j = d.int(0, len(g.node) - 1), d.int(0, len(g.node) - 1)
        a, b = type(n)(), type(n)()
        a.CopyFrom(g.node[i])
        b.CopyFrom(g.node[j])
        g.node[i].CopyFrom(b)
        g.node[j].CopyFrom(a)
    elif op == 5:
        n.input.append(pick(d, names))
    elif op == 6 and n.input:
        del n.input[d.int(0, len(n.input) - 1)]
    elif g.output:
        g.output[d.int(0, len(g.output) - 1)].name = pick(d, names)


def mutate_op(m: Any, d: Any) -> None:
    from hal.kernels import registered_ops

    nodes = _nodes(m)
    if not nodes:
        return
    n = pick(d, nodes)
    if d.chance(0.8):
        ops = registered_ops()
        n.op_type = pick(d, ops)[1] if ops and d.chance(0.9) else pick(d, ("Frob", "", "relu", "If", "Loop"))
    else:
        n.domain = pick(d, DOMAINS)


def mutate_opset(m: Any, d: Any) -> None:
    if m.opset_import and d.chance(0.7):
        pick(d, m.opset_import).version = d.int(0, 30) if d.chance(0.9) else an_int(d)
    elif d.chance(0.5):
        o = m.opset_import.add()
        o.domain, o.version = pick(d, DOMAINS), d.int(0, 30)
    elif m.opset_import:
        del m.opset_import[d.int(0, len(m.opset_import) - 1)]


def mutate_tensor(t: Any, d: Any) -> None:
    op = d.int(0, 6)
    if op == 0:
        if t.dims and d.chance(0.7):
            t.dims[d.int(0, len(t.dims) - 1)] = an_int(d) if d.chance(0.5) else d.int(0, 9)
        else:
            t.dims.append(d.int(0, 9))
    elif op == 1 and t.raw_data:
        t.raw_data = t.raw_data[: d.int(0, len(t.raw_data))]
    elif op == 2:
        t.data_type = d.int(0, 26)
    elif op == 3:
        t.data_location = 1  # EXTERNAL
        del t.external_data[:]
        for key, value in (("location", pick(d, HOSTILE_LOCATIONS)), ("offset", str(an_int(d))),
                           ("length", str(an_int(d)))):
            if d.chance(0.8):
                e = t.external_data.add()
                e.key, e.value = key, value
    elif op == 4:
        t.raw_data = some_bytes(d)
    elif op == 5:
        del t.dims[:]
    else:
        t.ClearField("raw_data")
        t.float_data.extend(a_float(d) for _ in range(d.int(0, 4)))


def mutate_initializer(m: Any, d: Any) -> None:
    g = m.graph
    if g.initializer and d.chance(0.85):
        mutate_tensor(pick(d, g.initializer), d)
    elif g.initializer:
        g.initializer.remove(pick(d, g.initializer))


def mutate_graph(m: Any, d: Any) -> None:
    g = m.graph
    op = d.int(0, 5)
    if op == 0 and g.input:
        g.input.remove(pick(d, g.input))
    elif op == 1 and g.output:
        g.output.remove(pick(d, g.output))
    elif op == 2 and g.input:
        g.input.add().CopyFrom(pick(d, g.input))
    elif op == 3:
        m.ir_version = d.int(0, 12) if d.chance(0.9) else an_int(d) & 0x7FFFFFFFFFFFFFFF
    elif op == 4:
        p = m.metadata_props.add()
        p.key = "hal.shape_only_weights"
        p.value = ",".join(pick(d, _names(m)) for _ in range(d.int(0, 3)))
    else:
        m.ClearField("graph") if d.chance(0.1) else g.ClearField("name")


MUTATORS: dict[str, Callable[[Any, Any], None]] = {
    "attribute": mutate_attribute, "shape": mutate_shape, "type": mutate_type, "wiring": mutate_wiring,
    "op": mutate_op, "opset": mutate_opset, "initializer": mutate_initializer, "graph": mutate_graph,
}
MUTATOR_NAMES = tuple(MUTATORS)


def mutate_model(m: Any, d: Any, rounds: int) -> None:
    """Apply ``rounds`` structure-aware mutations to ``m`` in place."""
    for _ in range(rounds):
        with contextlib.suppress(ValueError, TypeError, IndexError, OverflowError):  # protobuf refused a value
            MUTATORS[pick(d, MUTATOR_NAMES)](m, d)


def mutate_bytes(data: bytes, d: Any) -> bytes:
    b = bytearray(data)
    op = d.int(0, 4)
    if op == 0 and b:
        for _ in range(d.int(1, 8)):
            i = d.int(0, len(b) - 1)
            b[i] ^= 1 << d.int(0, 7)
    elif op == 1:
        del b[d.int(0, len(b)):]
    elif op == 2:
        i = d.int(0, len(b))
        b[i:i] = some_bytes(d)
    elif op == 3 and b:
        i = d.int(0, len(b) - 1)
        del b[i:i + d.int(1, 64)]
    else:
        i, j = d.int(0, len(b)), d.int(0, len(b))
        b[i:i] = b[min(i, j):max(i, j)][:4096]
    return bytes(b)


def make_input(seeds: Sequence[bytes], d: Any, structured: float = 0.8) -> bytes:
    """One fuzzed model: a seed, structurally mutated (then maybe byte-mutated), serialized."""
    import onnx

    data = pick(d, seeds)
    if d.chance(structured):
        m = onnx.ModelProto()
        m.ParseFromString(data)
        mutate_model(m, d, d.int(1, 4))
        try:
            data = m.SerializeToString()
        except Exception:  # a mutation protobuf refuses to encode (e.g. bad UTF-8): use the seed's bytes
            pass
    if d.chance(0.15):
        data = mutate_bytes(data, d)
    return data
