"""``hal estimate``: compile-only figures per target for a model, or a sweep of one size (a zoo LLM's
batch, context or prompt, another model's open ``batch`` dimension) as a table, JSON or a plot."""

from __future__ import annotations

import argparse
from typing import Any

from hal.cli_args import EXIT_ERROR, emit_json, parse_dims, parse_options, parse_sweep, png_path
from hal.errors import InputError
from hal.render import console, fmt_bytes, fmt_num, fmt_time, literal, progress, titled_table


def cmd_estimate(args: argparse.Namespace) -> int:
    from hal.estimate import OPEN_DIMS_KEY, estimate

    if args.plot and not args.sweep:
        raise InputError("--plot draws a sweep: it needs --sweep", where="hal estimate",
                         hint="e.g. --sweep batch=1,2,4,8 --plot tokens.png")
    if args.plot:
        png_path(args.plot)
    if args.sweep:
        return _estimate_sweep(args)

    rep = estimate(args.model, args.target, phase=args.phase, batch=args.batch, context=args.context,
                   prompt=args.prompt, dims=parse_dims(args.dim) or None, devices=args.devices,
                   precision=args.precision, **parse_options(args.option))
    ests = rep.estimates
    if args.json is not None:  # what hal.estimate returns, one shape however many targets (it had been an
        emit_json(args.json, rep.model_dump(mode="json"))  # object for one and a list for several)
        return 0 if any(e.status == "ok" for e in ests) else EXIT_ERROR

    llm = next((e for e in ests if e.batch is not None), None)  # --phase, --batch, ... shape the zoo's LLMs only
    shape = (f"{llm.phase}, batch {llm.batch}, "
             + (f"context {llm.context}" if llm.phase == "decode" else f"prompt {llm.prompt}") + ", ") if llm else ""
    if args.dim:
        shape += ", ".join(f"{k}={v}" for k, v in parse_dims(args.dim).items()) + ", "
    t = titled_table(f"estimate: {args.model} ({shape}precision {args.precision})")
    # the figures the model has: an LLM's tokens (a decode's TTFT is none; the batch's total beside each
    # user's), any other model's runs a second (its tokens/s and TTFT had been two columns of dashes)
    figures: list[tuple[str, Any]] = []
    if llm is not None:
        figures.append(("tokens/s per user", lambda e: fmt_num(e.tokens_per_s)))
        if llm.batch > 1:
            figures.append(("tokens/s total", lambda e: fmt_num(e.tokens_per_s_total)))
        if llm.phase == "prefill":
            figures.append(("TTFT", lambda e: fmt_time(e.ttft_s)))
    else:
        figures.append(("throughput", lambda e: fmt_num(e.throughput_per_s, "/s")))
    for c in ("target", "status", "latency", *(name for name, _ in figures), "devices", "memory/device",
              "energy", "compile"):
        t.add_column(c, overflow="fold")
    for e in ests:
        t.add_row(literal(e.target), e.status if e.status == "ok" else f"[red]{literal(e.status)}[/]",
                  fmt_time(e.latency_s), *(cell(e) for _, cell in figures), fmt_num(e.devices),
                  fmt_bytes(e.memory_bytes), fmt_num(e.energy_j, " J"), fmt_time(e.compile_time_s))
    con = console(t)
    con.print(t)
    for e in ests:
        if e.error:
            con.print(f"[bold]{literal(e.target)}[/]: {literal(e.error)}")
    open_dims = next((e.details[OPEN_DIMS_KEY] for e in ests if e.details.get(OPEN_DIMS_KEY)), [])
    if open_dims:
        con.print(f"[yellow]priced as 1[/]: the open dimensions {literal(', '.join(open_dims))} (bind them: "
                  "--dim NAME=N, '*' every other one)", highlight=False)
    uncosted = next((e.uncosted for e in ests if e.uncosted), [])
    if uncosted:
        con.print(f"[yellow]not in these figures[/]: the bodies of {literal(', '.join(uncosted))} (how many times "
                  "they run is a run's to decide: a trip count from data, a generation's max_length)")
    return 0 if any(e.status == "ok" for e in ests) else EXIT_ERROR


#: what a sweep plots, by metric: its label, and the figure at one point (an estimate and the swept value)
_SWEEP_METRICS: dict[str, tuple[str, Any]] = {
    "tokens_per_s_total": ("tokens/s (all users)", lambda e, x: e.tokens_per_s_total),
    "tokens_per_s": ("tokens/s per user", lambda e, x: e.tokens_per_s),
    "ttft_s": ("time to first token (s)", lambda e, x: e.ttft_s),
    "samples_per_s": ("samples/s (batch x runs/s)",
                      lambda e, x: None if e.throughput_per_s is None else e.throughput_per_s * x),
}


def _estimate_sweep(args: argparse.Namespace) -> int:
    from hal.estimate import estimate, zoo_params_for

    key, xs = parse_sweep(args.sweep)
    if getattr(args, key) is not None:  # the sweep's values had silently replaced the flag's
        raise InputError(f"--{key} {getattr(args, key)} and --sweep {key}=... both set {key}", where="hal estimate",
                         hint=f"drop --{key}, or sweep another of batch, context and prompt")
    dims = parse_dims(args.dim)
    # a model that is not one of the zoo's LLMs has no batch parameter: a sweep over batch binds its open
    # dimension named batch (--dim batch=N at each point), as one would by hand
    over_dim = key == "batch" and not zoo_params_for(args.model, "decode", 1, 1, 1)
    if over_dim and "batch" in dims:
        raise InputError(f"--dim batch={dims['batch']} and --sweep batch=... both set batch", where="hal estimate",
                         hint="drop --dim batch")
    rows = []
    with progress(args.json is None) as status:
        for x in xs:
            if status is not None:
                status.update(f"estimating {key}={x}")
            if over_dim:
                params, point_dims = {}, {**dims, "batch": x}
            else:
                params, point_dims = {"batch": args.batch, "context": args.context, "prompt": args.prompt, key: x}, dims
            rep = estimate(args.model, args.target, phase=args.phase, devices=args.devices, precision=args.precision,
                           dims=point_dims or None, **params, **parse_options(args.option))
            rows.append((x, rep.estimates))
    phase = args.phase or "decode"
    if over_dim:
        metric = "samples_per_s"
    else:
        metric = "tokens_per_s_total" if phase == "decode" and key == "batch" else \
            ("tokens_per_s" if phase == "decode" else "ttft_s")
    ylabel, figure = _SWEEP_METRICS[metric]
    targets = list(dict.fromkeys(e.target for _, ests in rows for e in ests))

    def point(t: str, x: int, ests) -> tuple[float | None, int | None]:
        e = next((e for e in ests if e.target == t and e.status == "ok"), None)
        return (None, None) if e is None else (figure(e, x), e.devices)

    points = {t: [point(t, x, ests) for x, ests in rows] for t in targets}
    series = {t: [v for v, _ in pts] for t, pts in points.items()}
    # how many devices each point took: the fewest that fit grows with the batch and the context, and a figure
    # on 32 wafers had sat beside one on a single GPU with nothing to say so
    devices = {t: [d for _, d in pts] for t, pts in points.items()}
    status = 0 if any(e.status == "ok" for _, ests in rows for e in ests) else EXIT_ERROR
    if args.plot:
        from hal.plots import sweep_plot

        sweep_plot(xs, series, key, ylabel, f"{args.model}: {ylabel} vs {key} ({'' if over_dim else phase + ', '}"
                   f"precision {args.precision})", args.plot, devices=devices)
    if args.json is not None:
        emit_json(args.json, {"sweep": key, "values": xs, "metric": metric, "series": series, "devices": devices,
                               "estimates": [[e.model_dump(mode="json") for e in ests] for _, ests in rows]})
        return status

    where = "" if over_dim else f"{phase}, "
    t = titled_table(f"{args.model}: {metric} vs {key} ({where}precision {args.precision})")
    t.add_column(key)
    for name in targets:
        t.add_column(literal(name))
    for i, x in enumerate(xs):
        t.add_row(str(x), *[_sweep_cell(series[name][i], devices[name][i], metric) for name in targets])
    con = console(t)
    con.print(t)
    if any(d and d > 1 for ds in devices.values() for d in ds):
        con.print("(N dev): that point needs N devices (GPUs, LPU chips or wafers), and its figure is theirs together",
                  markup=False, highlight=False)
    for x, ests in rows:  # each point a target could not estimate, and why ("—" in the table)
        for e in ests:
            if e.error:
                con.print(f"[bold]{literal(e.target)}[/] at {key}={x}: {literal(e.error)}", highlight=False)
    return status


def _sweep_cell(value: float | None, devices: int | None, metric: str) -> str:
    """A sweep's figure (a time in its unit), with the devices it took when more than one."""
    text = fmt_time(value) if metric == "ttft_s" else fmt_num(value)
    return text + (f" ({devices} dev)" if value is not None and devices and devices > 1 else "")
