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
from hal.graph.dims import EVERY_OTHER, checked_dims
from hal.graph.load import ModelLike
from hal.perf.memory import per_device_bytes
from hal.plugins import registry
from hal.session import REFERENCE_TARGET, compile
from hal.specs import MemoryLevel

Phase = Literal["decode", "prefill"]
#: the report's list of the open dimensions it priced as 1 (``specs/interface.md`` §9): kept in an estimate's
#: details, which keep a report's scalars only, since without it a figure at batch 1 read as the model's
OPEN_DIMS_KEY = "open_dims_priced_as_1"


class Estimate(BaseModel):
    """One target's estimate for one model configuration."""

    model_config = ConfigDict(extra="forbid")

    target: str
    model: str
    status: Literal["ok", "refused", "does not fit", "error"] = Field(default="ok", description=(
        "ok; refused (a node the target cannot run); does not fit (its memory, chips or wafers: the error says "
        "the numbers); error (anything else)"))
    error: str | None = None
    phase: Phase | None = None
    batch: int | None = None
    context: int | None = None
    prompt: int | None = None
    precision: str
    latency_s: float | None = None
    tokens_per_s: float | None = Field(default=None, description=(
        "tokens each user gets a second: tokens_per_s_total / batch (decode: 1 / latency; prefill: the prompt's "
        "tokens / latency)"))
    tokens_per_s_total: float | None = Field(default=None, description="tokens a second over the whole batch")
    ttft_s: float | None = Field(default=None, description=(
        "prefill: time to first token (the prompt's pass, with the logits of its last position only)"))
    throughput_per_s: float | None = Field(default=None, description=(
        "runs a second in steady state, the target's own figure: 1 / latency where one run follows another, more "
        "where the target pipelines independent runs (an LPU's or a wafer's stages)"))
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
    """The LLM parameters when ``model`` names a shape-only zoo model; {} otherwise.

    A prefill keeps the logits of the last position only: the first token needs no more, a serving
    engine computes no more, and the calibration points were taken so. Logits for every prompt
    position ([batch, prompt, vocab]: 525 MB for an 8B model's 2048-token prompt) had added their
    product to the TTFT and their tensor to the memory, and had no LPU chip hold it."""
    if isinstance(model, str) and model.startswith("zoo:"):
        from hal.zoo import list_models

        entry = next((e for e in list_models() if e.name == model[4:]), None)
        if entry is not None and entry.kind == "shape-only":
            return {"phase": phase, "batch": batch, "context": context, "prompt": prompt, "logits": "last"}
    return {}


def uncosted_nodes(model: ModelLike, zoo_params: dict[str, Any], dims: dict[str, int] | None = None) -> list[str]:
    """The main graph's nodes, as "name (op)", whose bodies the cost models could not count
    (``hal.perf.bodies``: a trip count the run decides, a generation op's decoder runs): their
    figures count such a node's own outputs only. A model that does not load raises here, once,
    rather than once per target."""
    return _survey(model, zoo_params, dims)[0]


def _survey(model: ModelLike, zoo_params: dict[str, Any], dims: dict[str, int] | None
            ) -> tuple[list[str], list[str]]:
    """What every target's figures share, from the model loaded once: the nodes whose bodies are not
    counted (``uncosted_nodes``), and the input dimensions ``dims`` leaves open, as "input[axis] (name)"."""
    from hal.graph.load import load
    from hal.graph.passes import optimize
    from hal.perf.bodies import body_flops, has_bodies
    from hal.perf.opcount import node_flops

    graph = optimize(load(model, zoo_params=zoo_params, dims=dims))
    uncosted = [f"{n.name} ({n.op_type})" for n in graph.nodes
                if has_bodies(n) and body_flops(n, graph, node_flops) is None]
    left_open = [f"{t.name}[{a}]" + (f" ({d})" if d else "") for t in graph.inputs if t.kind == "tensor"
                 for a, d in enumerate(t.shape or ()) if not isinstance(d, int)]
    return uncosted, left_open


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
    status ``refused`` / ``does not fit`` / ``error`` with the reason, and the other targets still report.
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
    # a size the phase does not read had been taken and dropped: a sweep over it printed one figure N times
    name, read, meaning, other = {
        "decode": ("prompt", "context", "the KV positions cached before the token", "prefill"),
        "prefill": ("context", "prompt", "the prompt's tokens", "decode")}[phase]
    if name in given:
        raise InputError(f"{name} does not shape a {phase}, which reads {read} ({meaning})", where="estimate",
                         hint=f"give {read} instead, or phase='{other}' (hal estimate: --{read}, or --phase {other})")
    dims = checked_dims(dims, "estimate")
    make_options(precision, devices)  # an invalid precision or device count: one error, not a row of them
    zp = zoo_params_for(model, phase, batch, context, prompt)
    names = estimate_targets(target)
    uncosted, left_open = _survey(model, zp, dims)
    if left_open:
        # every target prices the open dimensions as 1, and says so: a target that compiles per run's shapes
        # (the LPU) had had nothing to compile, and given an "ok" row without a figure
        dims = {**(dims or {}), EVERY_OTHER: 1}
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

            status = ("does not fit" if isinstance(e, ResourceError) else
                      "refused" if isinstance(e, UnsupportedOpError) else "error")
            # the row is the target's: its name is said once (the CLI prints "NAME: error"), not again as where
            said = e.what if e.hint is None else f"{e.what} — {e.hint}"
            out.append(Estimate(**base, status=status, error=said if e.where == f"target {name!r}" else str(e)))
            continue
        r = exe.report
        if r.latency_s is None and r.details.get("figures_follow_runs") is True:
            # a program whose shapes a run's values decide (a Reshape to a fed shape) has no figure before
            # one: it had been an "ok" row of dashes and 0 B, which read as free
            out.append(Estimate(**base, status="error", error=(
                f"no figure before a run: {name} schedules each run's own shapes, and this model's shapes "
                "follow its inputs' values (a shape fed to a Reshape, ...) — run it instead: "
                f"hal run MODEL --target {name}, then read the session's report")))
            continue
        per_device = per_device_bytes(r.memory, r.peak_memory_bytes)
        tps = r.tokens_per_s
        b = batch if zp else 1
        out.append(Estimate(
            **base, latency_s=r.latency_s, tokens_per_s=(tps / b if tps is not None else None),
            tokens_per_s_total=tps, ttft_s=r.ttft_s, throughput_per_s=r.throughput_per_s, devices=r.devices,
            memory_bytes=per_device, memory=r.memory, energy_j=r.energy_j, compile_time_s=r.compile_time_s,
            kernel_count=r.kernel_count, uncosted=uncosted,
            details={**{k: v for k, v in r.details.items() if isinstance(v, (int, float, str, bool))},
                     **({OPEN_DIMS_KEY: left_open} if left_open else {})}))
    return EstimateReport(model=str(model) if not isinstance(model, bytes) else "<bytes>", precision=precision,
                          estimates=out)
