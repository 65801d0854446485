"""Compile-only estimates: latency, tokens/s, time to first token, devices and memory per target.

Works on shape-only models (the zoo's LLMs): nothing is run, no weight is allocated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hal.api_args import chosen_targets, make_options
from hal.errors import HalError, InputError
from hal.feeds import as_int
from hal.graph.dims import checked_dims
from hal.graph.load import ModelLike
from hal.plugins import registry
from hal.session import REFERENCE_TARGET, compile
from hal.specs import MemoryLevel

Phase = Literal["decode", "prefill"]


class Estimate(BaseModel):
    """One target's estimate for one model configuration."""

    model_config = ConfigDict(extra="forbid")

    target: str
    model: str
    status: Literal["ok", "refused", "error"] = "ok"
    error: str | None = None
    phase: Phase | None = None
    batch: int | None = None
    context: int | None = None
    prompt: int | None = None
    precision: str
    latency_s: float | None = None
    tokens_per_s: float | None = Field(default=None, description="per user, decode: batch / latency / batch")
    tokens_per_s_total: float | None = None
    ttft_s: float | None = Field(default=None, description="prefill: time to first token")
    throughput_per_s: float | None = None
    devices: int | None = None
    memory_bytes: int | None = Field(default=None, description="peak memory per device")
    memory: list[MemoryLevel] = Field(default_factory=list)
    energy_j: float | None = None
    compile_time_s: float | None = None
    kernel_count: int | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    uncosted: list[str] = Field(default_factory=list, description=(
        "nodes whose bodies the cost models could not count (a trip count the run decides, a generation "
        "op's decoder runs): the figures cover the rest of the model"))


class EstimateReport(BaseModel):
    """Estimates of one model configuration across targets."""

    model_config = ConfigDict(extra="forbid")

    model: str
    precision: str
    estimates: list[Estimate]

    def by_target(self) -> dict[str, Estimate]:
        return {e.target: e for e in self.estimates}


def zoo_params_for(model: ModelLike, phase: str, batch: int, context: int, prompt: int) -> dict[str, Any]:
    """The LLM parameters when ``model`` names a shape-only zoo model; {} otherwise."""
    if isinstance(model, str) and model.startswith("zoo:"):
        from hal.zoo import list_models

        entry = next((e for e in list_models() if e.name == model[4:]), None)
        if entry is not None and entry.kind == "shape-only":
            return {"phase": phase, "batch": batch, "context": context, "prompt": prompt}
    return {}


def uncosted_nodes(model: ModelLike, zoo_params: dict[str, Any], dims: dict[str, int] | None = None) -> list[str]:
    """The main graph's nodes, as "name (op)", whose bodies the cost models could not count
    (``hal.perf.bodies``: a trip count the run decides, a generation op's decoder runs): their
    figures count such a node's own outputs only. A model that does not load raises here, once,
    rather than once per target."""
    from hal.graph.load import load
    from hal.graph.passes import optimize
    from hal.perf.bodies import body_flops, has_bodies
    from hal.perf.opcount import node_flops

    graph = optimize(load(model, zoo_params=zoo_params, dims=dims))
    return [f"{n.name} ({n.op_type})" for n in graph.nodes
            if has_bodies(n) and body_flops(n, graph, node_flops) is None]


def estimate_targets(target: str | Sequence[str]) -> list[str]:
    """``all`` means every installed accelerator target (the reference cpu models no hardware); else
    the targets named (``a,b``, or a list of names). An unknown name is an error before anything is compiled."""
    names = chosen_targets(target, "estimate")
    if names is None:
        return sorted(t for t in registry().targets if t != REFERENCE_TARGET)
    return names


def estimate(model: ModelLike, target: str = "all", *, phase: Phase | None = None, batch: int | None = None,
             context: int | None = None, prompt: int | None = None, dims: Mapping[str, int] | None = None,
             devices: int | None = None, precision: str = "native", **target_options: Any) -> EstimateReport:
    """Compile ``model`` on each target named (``all``, one, or ``a,b``) and collect the estimates.

    ``phase``, ``batch``, ``context`` and ``prompt`` shape the zoo's shape-only LLMs (decode, 1, 1024
    and 512 when not given); any other model takes its sizes from ``dims``, which binds its open input
    dimensions by name (``hal.graph.dims``). A target that refuses the model or cannot fit it gets
    status ``refused`` / ``error`` with the reason, and the other targets still report.
    """
    llm = bool(zoo_params_for(model, "decode", 1, 1, 1))
    given = [k for k, v in (("phase", phase), ("batch", batch), ("context", context), ("prompt", prompt))
             if v is not None]
    if given and not llm:
        raise InputError(f"{', '.join(given)} shape the zoo's shape-only LLMs (zoo:llama-3.1-8b, ...), and "
                         f"{model if isinstance(model, str) else 'this model'} is not one of them", where="estimate",
                         hint="bind this model's open input dimensions instead: dims={'batch': 8} (hal estimate: "
                              "--dim batch=8)")
    phase = "decode" if phase is None else phase
    if not isinstance(phase, str) or phase not in ("decode", "prefill"):
        raise InputError(f"phase must be 'decode' or 'prefill', not {phase!r}", where="estimate",
                         hint="decode: a token per user after `context` cached ones; prefill: a `prompt`-token prompt")
    batch, context, prompt = (as_int(d if v is None else v, k, 1, "estimate") for k, v, d in
                              (("batch", batch, 1), ("context", context, 1024), ("prompt", prompt, 512)))
    dims = checked_dims(dims, "estimate")
    make_options(precision, devices)  # an invalid precision or device count: one error, not a row of them
    zp = zoo_params_for(model, phase, batch, context, prompt)
    names = estimate_targets(target)
    uncosted = uncosted_nodes(model, zp, dims)
    out = []
    for name in names:
        prec = precision
        base = dict(target=name, model=str(model) if not isinstance(model, bytes) else "<bytes>",
                    phase=phase if zp else None, batch=batch if zp else None,
                    context=context if zp and phase == "decode" else None,
                    prompt=prompt if zp and phase == "prefill" else None, precision=prec)
        try:
            exe = compile(model, target=name, precision=prec, devices=devices, zoo_params=zp, dims=dims,
                          **target_options)
        except HalError as e:
            from hal.errors import ResourceError, UnsupportedOpError

            status = "refused" if isinstance(e, (UnsupportedOpError, ResourceError)) else "error"
            # the row is the target's: its name is said once (the CLI prints "NAME: error"), not again as where
            said = e.what if e.hint is None else f"{e.what} — {e.hint}"
            out.append(Estimate(**base, status=status, error=said if e.where == f"target {name!r}" else str(e)))
            continue
        r = exe.report
        per_device = max((m.bytes for m in r.memory if m.per_device), default=r.peak_memory_bytes)
        tps = r.tokens_per_s
        b = batch if zp else 1
        out.append(Estimate(
            **base, latency_s=r.latency_s, tokens_per_s=(tps / b if tps is not None else None),
            tokens_per_s_total=tps, ttft_s=r.ttft_s, throughput_per_s=r.throughput_per_s, devices=r.devices,
            memory_bytes=per_device, memory=r.memory, energy_j=r.energy_j, compile_time_s=r.compile_time_s,
            kernel_count=r.kernel_count, uncosted=uncosted,
            details={k: v for k, v in r.details.items() if isinstance(v, (int, float, str, bool))}))
    return EstimateReport(model=str(model) if not isinstance(model, bytes) else "<bytes>", precision=precision,
                          estimates=out)
