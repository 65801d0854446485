"""The benchmark's models: the light zoo shipped in onnx, zoo tiny-gpt, the exported BERT/GPT
benchmark transformers, and a generated ~10k-node transformer graph for compile timing.

Every model comes with its feeds, made deterministically (seed 0), so every runner sees the same
inputs. The exported transformers are written once by ``tests/fixtures/generate_transformers.py
--bench`` into a cache folder (needs ``torch==2.13.0``, CPU) and reused afterwards.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
GENERATOR = ROOT / "tests" / "fixtures" / "generate_transformers.py"
DEFAULT_CACHE = Path(__file__).resolve().parent / ".models"
BENCH_FILES = {"bert-bench": "bert_bench.onnx", "gpt-bench": "gpt_bench.onnx"}


@dataclass
class BenchModel:
    """One model as every runner receives it: a path (or zoo name), feeds, and what it is."""

    name: str
    kind: str  # "cnn" | "transformer"
    source: str  # a file path or "zoo:NAME"
    feeds: dict[str, np.ndarray] = field(default_factory=dict)
    description: str = ""

    def proto(self) -> onnx.ModelProto:
        if self.source.startswith("zoo:"):
            from hal import zoo

            return zoo.build(self.source[4:])
        return onnx.load(self.source)


def light_names() -> list[str]:
    return sorted(p.stem for p in LIGHT_DIR.glob("light_*.onnx"))


def model_names() -> list[str]:
    """Every model the benchmark knows, in the order it runs them."""
    return [*light_names(), "tiny-gpt", *BENCH_FILES]


def light_model(name: str) -> BenchModel:
    """A light-zoo CNN with inputs as onnx's own test runner makes them (seed 0, not random)."""
    from onnx.backend.test.runner import Runner

    path = LIGHT_DIR / f"{name}.onnx"
    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    feeds = {vi.name: Runner.generate_dummy_data(vi, seed=0, random=False)
             for vi in m.graph.input if vi.name not in inits}
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
    return BenchModel(name, "cnn", str(path), feeds, f"onnx light zoo CNN ({shapes})")


def _vocab_of(proto: onnx.ModelProto, ids_name: str) -> int:
    """Rows of the embedding table that ``ids_name`` indexes (the Gather reading it)."""
    dims = {t.name: list(t.dims) for t in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] == ids_name and n.input[0] in dims:
            return int(dims[n.input[0]][0])
    return 2


def transformer_feeds(proto: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Token ids drawn below the vocabulary size; an attention mask with the last quarter of
    every other row padded (so the mask path does real work)."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    inits = {i.name for i in proto.graph.initializer}
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim)
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        if "mask" in vi.name:
            mask = np.ones(shape, dtype=dtype)
            if mask.ndim == 2:
                mask[1::2, -(shape[1] // 4):] = 0
            feeds[vi.name] = mask
        else:
            feeds[vi.name] = rng.integers(0, _vocab_of(proto, vi.name), size=shape).astype(dtype)
    return feeds


def ensure_bench_models(cache: Path) -> None:
    """Write bert_bench.onnx / gpt_bench.onnx into ``cache`` with the fixture generator if absent."""
    if all((cache / f).is_file() for f in BENCH_FILES.values()):
        return
    cache.mkdir(parents=True, exist_ok=True)
    # A child process: torch (and its thread pools) never enter the timing process.
    proc = subprocess.run([sys.executable, str(GENERATOR), "--bench", str(cache)], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError("generating the benchmark transformers failed (needs torch==2.13.0, CPU): "
                           + " | ".join(tail))


def load_model(name: str, cache: Path = DEFAULT_CACHE) -> BenchModel:
    """The named model with its feeds (exported transformers are generated on first use)."""
    if name.startswith("light_"):
        return light_model(name)
    if name == "tiny-gpt":
        from hal import zoo

        proto = zoo.build("tiny-gpt")
        return BenchModel(name, "transformer", "zoo:tiny-gpt", transformer_feeds(proto),
                          "hal zoo tiny-gpt (2 layers, d_model 64)")
    if name in BENCH_FILES:
        ensure_bench_models(cache)
        path = cache / BENCH_FILES[name]
        proto = onnx.load(str(path), load_external_data=False)
        feeds = transformer_feeds(proto)
        desc = ("BERT-style encoder exported by torch 2.13 (6 layers, hidden 384, 12 heads, FFN 1536, "
                "vocab 30522)" if name == "bert-bench" else
                "GPT-2-style decoder exported by torch 2.13 (6 layers, hidden 384, 12 heads, FFN 1536, "
                "vocab 50257, tied LM head)")
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
        return BenchModel(name, "transformer", str(path), feeds, f"{desc}; {shapes}")
    raise KeyError(f"unknown benchmark model {name!r}; known: {', '.join(model_names())}")


# -- the generated compile-time graph -----------------------------------------------------------------


class _Builder:
    """Nodes, weights and Constant nodes, named in order (exporter-style: constants are nodes)."""

    def __init__(self, rng: np.random.Generator):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.rng = rng
        self._n = 0

    def _name(self, op: str) -> str:
        self._n += 1
        return f"{op}_{self._n}"

    def op(self, op: str, inputs: list[str], n_out: int = 1, **attrs: object) -> list[str]:
        name = self._name(op)
        outs = [f"{name}_out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs

    def one(self, op: str, *inputs: str, **attrs: object) -> str:
        return self.op(op, list(inputs), **attrs)[0]

    def const(self, value: np.ndarray | list[int] | float) -> str:
        arr = np.asarray(value, dtype=np.int64 if isinstance(value, list) else np.float32)
        return self.one("Constant", value=numpy_helper.from_array(arr))

    def weight(self, *shape: int, scale: float = 0.05) -> str:
        name = f"w{len(self.inits)}"
        self.inits.append(numpy_helper.from_array((self.rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    def layer_norm(self, x: str, hidden: int) -> str:
        # Decomposed the way older exporters write it.
        mean = self.one("ReduceMean", x, axes=[-1])
        d = self.one("Sub", x, mean)
        var = self.one("ReduceMean", self.one("Pow", d, self.const(2.0)), axes=[-1])
        std = self.one("Sqrt", self.one("Add", var, self.const(1e-5)))
        y = self.one("Div", d, std)
        return self.one("Add", self.one("Mul", y, self.weight(hidden, scale=1.0)), self.weight(hidden, scale=0.0))

    def dyn_reshape(self, x: str, tail: list[int]) -> str:
        # Shape -> Gather(batch), Gather(seq) -> Unsqueeze -> Concat with the tail -> Reshape.
        shp = self.one("Shape", x)
        b = self.one("Unsqueeze", self.one("Gather", shp, self.const_scalar(0), axis=0),
                     self.const([0]))
        s = self.one("Unsqueeze", self.one("Gather", shp, self.const_scalar(1), axis=0), self.const([0]))
        return self.one("Reshape", x, self.one("Concat", b, s, self.const(tail), axis=0))

    def const_scalar(self, i: int) -> str:
        return self.one("Constant", value=numpy_helper.from_array(np.array(i, dtype=np.int64)))

    def gelu_tanh(self, x: str) -> str:
        inner = self.one("Mul", self.const(0.044715), self.one("Pow", x, self.const(3.0)))
        t = self.one("Tanh", self.one("Mul", self.const(0.7978845608), self.one("Add", x, inner)))
        return self.one("Mul", self.one("Mul", self.const(0.5), x), self.one("Add", self.const(1.0), t))


def build_compile_graph(layers: int = 24, hidden: int = 112, heads: int = 28, seq: int = 16, vocab: int = 256
                        ) -> onnx.ModelProto:
    """A GPT-style decoder written node by node like an unfused export: per-head attention
    (Slice per head with Constant bounds), decomposed LayerNorm and tanh-GELU, dynamic reshapes
    through Shape/Gather/Unsqueeze/Concat. 24 layers at 28 heads give ~10k nodes; the width is
    small on purpose, so compile time measures graph size, not weight copying."""
    b = _Builder(np.random.default_rng(0))
    dh = hidden // heads
    ids = "input_ids"
    pos = numpy_helper.from_array(np.arange(seq, dtype=np.int64)[None, :], "positions")
    mask = numpy_helper.from_array(np.triu(np.full((seq, seq), -1e4, np.float32), 1), "causal_mask")
    b.inits += [pos, mask]
    wte = b.weight(vocab, hidden)
    x = b.one("Add", b.one("Gather", wte, ids, axis=0), b.one("Gather", b.weight(seq, hidden), "positions", axis=0))
    scale = 1.0 / float(np.sqrt(dh))
    for _ in range(layers):
        h = b.layer_norm(x, hidden)
        qkv = b.one("Add", b.one("MatMul", h, b.weight(hidden, 3 * hidden)), b.weight(3 * hidden, scale=0.0))
        q, k, v = b.op("Split", [qkv, b.const([hidden] * 3)], 3, axis=-1)
        heads_out = []
        for i in range(heads):
            lo, hi = b.const([i * dh]), b.const([(i + 1) * dh])
            ax = b.const([-1])
            qh, kh, vh = (b.one("Slice", t, lo, hi, ax) for t in (q, k, v))
            att = b.one("MatMul", qh, b.one("Transpose", kh, perm=[0, 2, 1]))
            att = b.one("Add", b.one("Mul", att, b.const(scale)), "causal_mask")
            heads_out.append(b.one("MatMul", b.one("Softmax", att, axis=-1), vh))
        merged = b.dyn_reshape(b.one("Concat", *heads_out, axis=-1), [hidden])
        proj = b.one("Add", b.one("MatMul", merged, b.weight(hidden, hidden)), b.weight(hidden, scale=0.0))
        x = b.one("Add", x, proj)
        h = b.layer_norm(x, hidden)
        ff = b.one("Add", b.one("MatMul", h, b.weight(hidden, 4 * hidden)), b.weight(4 * hidden, scale=0.0))
        ff = b.one("MatMul", b.gelu_tanh(ff), b.weight(4 * hidden, hidden))
        x = b.one("Add", x, b.one("Add", ff, b.weight(hidden, scale=0.0)))
    logits = b.one("MatMul", b.layer_norm(x, hidden), b.one("Transpose", wte, perm=[1, 0]))
    b.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits_out"))
    graph = helper.make_graph(
        b.nodes, f"generated_decoder_{layers}l",
        [helper.make_tensor_value_info(ids, TensorProto.INT64, [1, seq])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, seq, vocab])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="hal-benchmarks")
    model.ir_version = 8
    return model


COMPILE_GRAPHS: dict[str, Callable[[], onnx.ModelProto]] = {
    "decoder-24l": build_compile_graph,
    "decoder-2l": lambda: build_compile_graph(layers=2),  # the smoke mode's stand-in
}
