"""The built-in model zoo: ONNX models built in code, named ``zoo:<name>`` on the command line.

Two kinds of model:

- ``runnable``: small models with seeded random weights (initializers) that every target can
  execute and compare against the reference: ``tiny-gpt``, ``tiny-cnn``.
- ``shape-only``: Llama-family decoders at their published sizes for compile-time estimates.
  Their weights are graph inputs with full static shapes, named in the metadata key
  ``hal.shape_only_weights``; no weight data exists. LLM models also carry ``hal.phase``,
  ``hal.batch``, ``hal.tokens`` (tokens the run produces or ingests) and ``hal.context``
  (KV positions already cached before the run; 0 for prefill, which adds ``hal.prompt``).

Every model is opset 17 / IR 8, passes ``onnx.checker`` (full check) and strict shape inference,
and is byte-identical from build to build.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import onnx

from hal.errors import ModelError
from hal.graph.ir import SHAPE_ONLY_KEY
from hal.zoo.llm import LLAMA_CONFIGS, LLM_PARAMS, build_llm
from hal.zoo.tiny import TINY_CNN, TINY_GPT, build_tiny_cnn, build_tiny_gpt


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: its name (without ``zoo:``), what it is, and the parameters ``build`` accepts."""

    name: str
    description: str
    kind: str  # "runnable" | "shape-only"
    params: dict = field(default_factory=dict)  # accepted parameter -> default
    config: dict = field(default_factory=dict)  # architecture numbers for LLMs; {} otherwise


_BUILDERS: dict[str, Callable[..., onnx.ModelProto]] = {
    "tiny-gpt": build_tiny_gpt,
    "tiny-cnn": build_tiny_cnn,
}
_DESCRIPTIONS = {
    "tiny-gpt": "GPT-style decoder, {layers} layers, d_model {hidden}, {heads} heads, vocab {vocab}: "
                "input_ids [1,{seq}] -> logits [1,{seq},{vocab}]".format(**TINY_GPT),
    "tiny-cnn": "ResNet-style CNN (Conv+BN+Relu, MaxPool, residual Add, GAP, Gemm): "
                "image [1,3,32,32] -> logits [1,{classes}]".format(**TINY_CNN),
}


def _entries() -> dict[str, ZooEntry]:
    entries = {name: ZooEntry(name, _DESCRIPTIONS[name], "runnable", {}, {}) for name in _BUILDERS}
    for name, cfg in LLAMA_CONFIGS.items():
        entries[name] = ZooEntry(name, cfg.description, "shape-only", dict(LLM_PARAMS), cfg.as_dict())
    return entries


def list_models() -> list[ZooEntry]:
    """Every zoo model, runnable ones first, in a stable order (fresh copies; safe to mutate)."""
    return list(_entries().values())


def build(name: str, **params: object) -> onnx.ModelProto:
    """Build zoo model ``name`` (without the ``zoo:`` prefix) with ``params`` overriding defaults.

    Raises ModelError for an unknown name (listing the known ones) or an unknown / invalid parameter.
    """
    entries = _entries()
    entry = entries.get(name)
    if entry is None:
        raise ModelError(f"unknown zoo model {name!r}", where="zoo",
                         hint="known models: " + ", ".join(entries))
    unknown = sorted(set(params) - set(entry.params))
    if unknown:
        accepted = ", ".join(f"{k}={v!r}" for k, v in entry.params.items()) or "none"
        raise ModelError(f"unknown parameter(s) {', '.join(unknown)}", where=f"zoo:{name}",
                         hint=f"accepted parameters: {accepted}")
    if entry.kind == "shape-only":
        return build_llm(name, **{**entry.params, **params})
    return _BUILDERS[name]()


__all__ = ["SHAPE_ONLY_KEY", "ZooEntry", "build", "list_models"]
