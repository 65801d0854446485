"""The ``hal`` command: a thin layer over the Python API.

argparse (standard library) parses, rich renders tables: no extra parser dependency, and every
command is a function of parsed arguments that returns an exit code. Errors print one line
(``error: ...``) and exit non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from hal.cli_args import (
    EXIT_ERROR,
    EXIT_FINDING,
    EXIT_INTERNAL,
    check_destinations,
    emit_json,
    load_inputs,
    parse_dims,
    parse_options,
    png_path,
    write_out,
)
from hal.cli_estimate import cmd_estimate
from hal.errors import HalError, InputError
from hal.numerics import is_float
from hal.peers import PEERS
from hal.render import console, fmt_bytes, fmt_num, fmt_time, literal, progress, titled_table

# -- commands ---------------------------------------------------------------------------------

def dtypes_text(dtypes: list[str]) -> str:
    """A spec's dtypes for a table: "all" (none listed), "all but X" where it leaves out fewer than it lists."""
    from hal.specs import dtype_names

    if not dtypes:
        return "all"
    left_out = [d for d in dtype_names() if d not in dtypes]
    return "all but " + ", ".join(left_out) if len(left_out) < len(dtypes) else ", ".join(dtypes)


def cmd_targets(args: argparse.Namespace) -> int:
    import hal

    specs = hal.targets()
    if args.json is not None:
        emit_json(args.json, [s.model_dump(mode="json") for s in specs])
        return 0

    t = titled_table("hal targets")
    for c in ("target", "kind", "vendor", "precisions", "dtypes", "HAL API", "version"):
        t.add_column(c)
    for s in specs:
        t.add_row(*map(literal, (s.name, s.kind, s.vendor, ", ".join(s.precisions), dtypes_text(s.dtypes),
                                 s.hal_api, s.version)))
    console(t).print(t)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    import platform
    from importlib import metadata

    import hal
    from hal.plugins import registry

    reg = registry()
    kernels: dict[str, list[str]] = {}
    for (domain, op), owner in sorted(reg.kernel_owners.items()):
        kernels.setdefault(owner, []).append(f"{domain or 'ai.onnx'}::{op}")
    plugins = [{"plugin": r.name, "distribution": r.distribution, "version": r.version, "hal_api": r.api,
                "targets": r.targets, "kernels": kernels.get(r.name, []), "graph_passes": r.passes, "ok": r.ok,
                "error": str(r.error) if r.error else None, "warnings": r.warnings}
               for r in sorted(reg.records.values(), key=lambda r: r.name)]
    env = {"hal": hal.__version__, "hal_api": hal.HAL_API_VERSION, "python": platform.python_version()}
    for pkg in ("numpy", "onnx", "ml_dtypes", "pluggy", "pydantic", "numba", "onnxruntime"):
        try:
            env[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            env[pkg] = None
    from hal.kernels import blas, jit

    env["compiled_loops"] = jit.status()
    env["fused_products"] = blas.status()
    try:  # the one op whose codecs are an extra
        env["image_decoder"] = f"on (Pillow {metadata.version('pillow')})"
    except metadata.PackageNotFoundError:
        env["image_decoder"] = "off (pip install 'hal-sdk[image]')"
    # a failed plugin is a finding, as pip check's conflicts are: exit 1 (the others work regardless)
    found = EXIT_FINDING if any(not p["ok"] for p in plugins) else 0
    if args.json is not None:
        emit_json(args.json, {"environment": env, "plugins": plugins})
        return found

    con = console()
    # one line, however long: a log keeps it whole, a terminal wraps it (its "[image]" is text, not markup)
    con.print(" ".join(f"{k} {v}" for k, v in env.items() if v), markup=False, soft_wrap=True)
    t = titled_table("plugins (entry-point group hal.plugins)")
    for c in ("plugin", "distribution", "version", "HAL API", "provides", "status"):
        t.add_column(c)
    for p in plugins:
        provides = "; ".join(part for part in (", ".join(p["targets"]),
                                               p["kernels"] and "kernels " + ", ".join(p["kernels"]),
                                               p["graph_passes"] and "passes " + ", ".join(p["graph_passes"])) if part)
        t.add_row(*map(literal, (p["plugin"], p["distribution"] or "—", p["version"] or "—", p["hal_api"] or "—",
                                 provides or "—")),
                  f"[red]{literal(p['error'])}[/]" if not p["ok"] else
                  f"[yellow]ok, but {literal('; '.join(p['warnings']))}[/]" if p["warnings"] else "[green]ok[/]")
    con.print(t)
    n_bad = sum(not p["ok"] for p in plugins)
    n_warn = sum(bool(p["ok"] and p["warnings"]) for p in plugins)
    con.print(f"{len(plugins) - n_bad} plugin(s) loaded" + (f" ({n_warn} with a warning)" if n_warn else "")
              + f", {n_bad} failed" + (" — the others work regardless" if n_bad else ""))
    return found


def cmd_run(args: argparse.Namespace) -> int:
    import hal
    from hal import limits
    from hal.feeds import ones_note, random_feeds

    try:
        max_memory = limits.parse_bytes(args.max_memory) if args.max_memory is not None else None
    except ValueError as e:
        raise InputError(str(e), where="--max-memory") from None
    dims = parse_dims(args.dim)
    sess = hal.InferenceSession(args.model, target=args.target, precision=args.precision,
                                fallback=args.fallback, devices=args.devices, max_memory=max_memory,
                                timeout_s=args.timeout, dims=dims or None, cache_dir=args.cache_dir,
                                **parse_options(args.option))
    with limits.bounds(max_memory):
        feeds = load_inputs(args.input, args.inputs) or {}
    missing = [i.name for i in sess.graph.inputs if i.name not in feeds]
    if missing:  # random inputs are held to the same bound as the run
        generated = random_feeds(sess.graph, seed=args.seed, max_memory=max_memory)  # (dims: bound in the session)
        feeds.update({k: generated[k] for k in missing})
    try:
        outs = sess.run(None, feeds)
    except hal.RunError as e:
        if missing and (note := ones_note(sess.graph, missing)):
            e.add_hint(note)
        raise
    names = [o.name for o in sess.get_outputs()]
    if args.save:
        from hal.files import npz_bytes

        arrays: dict[str, np.ndarray] = {}
        for n, o in zip(names, outs):  # a sequence output is saved item by item; an absent optional is not
            items = [(n, o)] if not isinstance(o, list) else [(f"{n}.{i}", x) for i, x in enumerate(o)]
            arrays.update((k, x) for k, x in items if isinstance(x, np.ndarray))
        write_out(args.save, npz_bytes(arrays, where=f"--save {args.save}"))  # strings as str arrays, no pickle
    summary = [{"name": n, "shape": list(o.shape) if isinstance(o, np.ndarray) else None,
                "dtype": str(o.dtype) if isinstance(o, np.ndarray) else
                (f"sequence[{len(o)}]" if isinstance(o, list) else type(o).__name__),
                "mean": float(np.mean(o, dtype=np.float64)) if isinstance(o, np.ndarray) and o.size
                and (is_float(o.dtype) or o.dtype.kind in "iu") else None,
                "first": _first_values(o)}
               for n, o in zip(names, outs)]
    r = sess.report
    if args.json is not None:
        emit_json(args.json, {"outputs": summary, "report": r.model_dump(mode="json"),
                               "run": sess.last_run.model_dump(mode="json") if sess.last_run else None})
        return 0

    con = console()
    t = titled_table(f"{args.model} on {args.target} ({args.precision})")
    for c in ("output", "shape", "dtype", "mean", "first values"):
        t.add_column(c)
    for s in summary:
        t.add_row(literal(s["name"]), str(s["shape"]), literal(s["dtype"]), fmt_num(s["mean"]),
                  literal(", ".join(_cell(v) for v in (s["first"] or []))))
    con.print(t)
    con.print(f"modelled latency {fmt_time(r.latency_s)} · devices {r.devices} · peak memory "
              f"{fmt_bytes(r.peak_memory_bytes)} · {r.kernel_count} kernels for {r.node_count} nodes · "
              f"compile {fmt_time(r.compile_time_s)} · host run {fmt_time(sess.last_run.wall_time_s)}")
    if (priced := r.details.get("open_dims_priced_as_1")) and sess.last_run.modelled_latency_s is None:
        con.print(f"[yellow]these figures price {literal(', '.join(priced))} as 1, and this run fed another size[/]: "
                  "bind it with --dim NAME=N to model the run's sizes", highlight=False)
    return 0


def _brief(x: Any) -> Any:
    """One item of a sequence output as JSON can hold it: a map's entries, a tensor's dtype and shape."""
    if isinstance(x, dict):
        return {str(k): v.item() if isinstance(v, np.generic) else v for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return f"{x.dtype}{list(x.shape)}"
    return x


def _first_values(o: Any) -> list[Any] | None:
    """The first five values of an output (strings too), or items of a sequence (maps too)."""
    if isinstance(o, np.ndarray):
        return [str(v) if o.dtype == object else v for v in o.ravel()[:5].tolist()]
    if isinstance(o, list):
        return [_brief(x) for x in o[:5]]
    return None


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_cell(x)}" for k, x in v.items()) + "}"
    return str(v)


def _print_compare(rep, title: str) -> None:
    from hal.render import COLUMNS, notes, row, rows

    t = titled_table(title)
    for c in COLUMNS:
        t.add_column(c, overflow="fold")
    style = {"ok": "green", "fell back": "yellow", "refused": "red", "error": "red"}
    for r in rows(rep):
        cells = [literal(c) for c in row(r)]
        colour = "yellow" if "beyond" in cells[1] else style[r.status]
        cells[1] = f"[{colour}]{cells[1]}[/]"
        t.add_row(*cells)
    con = console(t)
    con.print(t)
    for line in notes(rep):
        con.print(line, markup=False)


def cmd_compare(args: argparse.Namespace) -> int:
    from hal.compare import compare

    dims = parse_dims(args.dim)
    with progress(args.json is None) as status:
        def tick(target: str) -> None:
            if status is not None:
                status.update(literal(f"compiling and running on {target}"))

        rep = compare(args.model, args.targets, precision=args.precision, inputs=load_inputs(None, args.inputs),
                      fallback=args.fallback, dims=dims, seed=args.seed, bisect=args.bisect, progress=tick,
                      peers=args.peer or ())
    pictures = {}
    if args.html:
        pictures = _pictures(rep, Path(args.html).with_suffix(""))
    from hal import render

    if args.markdown:
        render.write(args.markdown, render.to_markdown(rep))
    if args.html:
        render.write(args.html, render.to_html(rep, pictures))
    if args.json is not None:
        emit_json(args.json, rep.model_dump(mode="json"))
        if args.json == "-":
            return _compare_status(rep)
    from hal.compare import tolerance_text

    bound = tolerance_text(rep)
    _print_compare(rep, f"{args.model}: every target vs the cpu reference ({args.precision}; ok within "
                        f"max |err| / max |cpu| ≤ {bound})")
    return _compare_status(rep)


def _compare_status(rep) -> int:
    """0 when every target and peer that ran agrees with the cpu; 1 (as diff) when one errs or
    disagrees. A target refusing a model, or falling back, is an answer, not a failure."""
    from hal.render import rows

    bad = [r for r in rows(rep) if r.status == "error" or not all(o.within_tolerance for o in r.outputs)]
    return 1 if bad else 0


def _pictures(rep, stem: Path) -> dict[str, Path]:
    """One profile picture per target that ran (skipped, with a note, when matplotlib is missing)."""
    from hal.plots import PlotUnavailable, profile_picture
    from hal.plugins import get_target

    out = {}
    for r in rep.results:
        sess = rep.session(r.target)
        if sess is None or r.target == "cpu":
            continue
        spec = get_target(r.target).spec
        try:
            out[r.target] = profile_picture(spec.kind, sess.report, sess.trace(), spec,
                                            f"{stem}.{r.target}.png", routes=_routes(sess))
        except PlotUnavailable as e:
            print(f"note: {e}", file=sys.stderr)
            break
    return out


def _routes(sess) -> list:
    """Routes of a placed program (the wafer's), as src / via / dst mesh points for the picture."""
    exe = sess._parts[0].executable if len(sess._parts) == 1 else None
    routes = getattr(getattr(exe, "placement", None), "routes", None) or []
    out = []
    for r in routes:
        pts = [getattr(r, k, None) for k in ("start", "corner", "end")]
        if all(isinstance(p, tuple) and len(p) >= 3 for p in pts):
            out.append({"src": pts[0][1:3], "via": pts[1][1:3], "dst": pts[2][1:3]})
    return out


def cmd_profile(args: argparse.Namespace) -> int:
    import hal
    from hal.feeds import random_feeds
    from hal.perf.trace import write_chrome_trace
    from hal.plugins import get_target

    if args.plot:
        png_path(args.plot)
    spec = get_target(args.target).spec
    sess = hal.InferenceSession(args.model, target=args.target, precision=args.precision, fallback=args.fallback,
                                devices=args.devices, dims=parse_dims(args.dim) or None, **parse_options(args.option))
    ran = False
    if not sess.graph.shape_only and args.run:
        sess.run(None, random_feeds(sess.graph, seed=0))
        ran = True
    events = sess.trace()
    written = {}
    if args.trace:
        written["trace"] = str(write_chrome_trace(events, args.trace, {"target": args.target, "model": args.model}))
    if args.plot:
        from hal.plots import profile_picture

        written["plot"] = str(profile_picture(spec.kind, sess.report, events, spec, args.plot, routes=_routes(sess)))
    r = sess.report
    summary = {"target": args.target, "model": args.model, "ran": ran, "latency_s": r.latency_s,
               "kernels": r.kernel_count, "nodes": r.node_count, "events": len(events), "written": written}
    if args.json is not None:
        emit_json(args.json, {**summary, "report": r.model_dump(mode="json")})
        return 0

    t = titled_table(f"{args.model} on {args.target}: the {min(args.top, len(r.kernels))} longest of "
                     f"{r.kernel_count} program units")
    for c in ("unit of program", "ops", "where", "time", "FLOPs", "bytes", "bound"):
        t.add_column(c, overflow="fold")
    for k in sorted(r.kernels, key=lambda k: -k.time_s)[: args.top]:
        t.add_row(literal(k.name), literal(",".join(dict.fromkeys(k.op_types))), literal(k.unit or "—"),
                  fmt_time(k.time_s), fmt_num(k.flops), fmt_bytes(k.bytes), literal(k.bound or "—"))
    con = console(t)
    con.print(t)
    con.print(f"modelled latency {fmt_time(r.latency_s)} · {len(events)} trace events"
              + "".join(f" · {k}: {v}" for k, v in written.items()), markup=False)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """`hal compare zoo:tiny-gpt --fallback allow`, parsed by compare's own parser: it takes every compare default."""
    argv = ["compare", "zoo:tiny-gpt", "--fallback", "allow", "--precision", args.precision]
    if args.json is not None:
        argv += ["--json", args.json]
    return cmd_compare(build_parser().parse_args(argv))


# -- parser -----------------------------------------------------------------------------------

def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="print JSON to stdout, or write it to FILE")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hal", description="One ONNX model, every accelerator.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("targets", help="list installed targets")
    _json_flag(p)
    p.set_defaults(func=cmd_targets)

    p = sub.add_parser("doctor", help="plugins found, their versions and failures")
    _json_flag(p)
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("run", help="run a model on one target")
    p.add_argument("model", help="path to .onnx or zoo:NAME")
    p.add_argument("--target", "-t", default="cpu")
    p.add_argument("--precision", default="exact")
    p.add_argument("--fallback", default="error", choices=["error", "warn", "allow"])
    p.add_argument("--devices", type=int, default=None)
    p.add_argument("--input", "-i", action="append", metavar="NAME=FILE.npy", help="an input from a .npy file")
    p.add_argument("--inputs", metavar="FEEDS.npz", help="inputs from an .npz file")
    p.add_argument("--dim", action="append", metavar="NAME=N",
                   help="bind an open input dimension ('*' every other one): the compile, the report's figures "
                        "and random inputs take that size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", help="a target-specific option")
    p.add_argument("--save", metavar="OUT.npz", help="write the outputs")
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="bound compile and run, in seconds")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="most bytes one tensor may need (e.g. 2GiB; default: half the RAM, or HAL_MAX_MEMORY)")
    p.add_argument("--cache-dir", default=None, metavar="DIR", help="compile cache folder (default: HAL_CACHE_DIR)")
    _json_flag(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("compare", help="run a model on several targets, side by side against cpu")
    p.add_argument("model")
    p.add_argument("--targets", default="all", help="all, or a,b,c")
    p.add_argument("--precision", default="exact")
    p.add_argument("--inputs", metavar="FEEDS.npz")
    p.add_argument("--fallback", default="error", choices=["error", "warn", "allow"])
    p.add_argument("--dim", action="append", metavar="NAME=N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bisect", action="store_true", help="find the first diverging node of a disagreeing output")
    p.add_argument("--peer", action="append", choices=PEERS,
                   help="also run the model on a runtime outside hal (its CPU provider), checked against cpu")
    p.add_argument("--markdown", metavar="FILE", help="write the table as Markdown")
    p.add_argument("--html", metavar="FILE", help="write an HTML report with the table and pictures")
    _json_flag(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("profile", help="a target's program as a Chrome trace and a picture")
    p.add_argument("model")
    p.add_argument("--target", "-t", required=True)
    p.add_argument("--precision", default="exact")
    p.add_argument("--fallback", default="error", choices=["error", "warn", "allow"])
    p.add_argument("--devices", type=int, default=None)
    p.add_argument("--dim", action="append", metavar="NAME=N",
                   help="bind an open input dimension ('*' every other one): the program, its figures and the "
                        "random inputs take that size (a CNN at batch 8 had been profiled at batch 1 only)")
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE")
    p.add_argument("--trace", metavar="OUT.json", help="Chrome/Perfetto trace of the program")
    p.add_argument("--plot", metavar="OUT.png", help="timeline + roofline (gpu), slice Gantt (lpu), placement (wafer)")
    p.add_argument("--top", type=_positive, default=15, help="rows in the table of longest program units")
    p.add_argument("--no-run", dest="run", action="store_false", help="compile only")
    _json_flag(p)
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("demo", help="zoo:tiny-gpt on every installed target, one table")
    p.add_argument("--precision", default="exact")
    _json_flag(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("estimate", help="compile-only latency / tokens/s / devices / memory")
    p.add_argument("model", help="path to .onnx or zoo:NAME (shape-only LLMs welcome)")
    p.add_argument("--target", "-t", default="all", help="all, one target, or a,b")
    p.add_argument("--phase", choices=["decode", "prefill"], help="a zoo LLM's phase (default decode)")
    p.add_argument("--context", type=int, help="a zoo LLM's KV positions already cached (decode; default 1024)")
    p.add_argument("--prompt", type=int, help="a zoo LLM's prompt length (prefill; default 512)")
    p.add_argument("--batch", type=int, help="a zoo LLM's batch (default 1)")
    p.add_argument("--dim", action="append", metavar="NAME=N",
                   help="bind an open input dimension of the model ('*' every other one), as onnxruntime's "
                        "free dimension overrides")
    p.add_argument("--devices", type=int, default=None, help="GPUs, LPU chips or wafers (default: fewest that fit)")
    p.add_argument("--precision", default="native")
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE")
    p.add_argument("--sweep", metavar="KEY=V1,V2,...",
                   help="sweep a zoo LLM's batch, context (decode) or prompt (prefill); another model's batch: its "
                        "open dimension named batch")
    p.add_argument("--plot", metavar="OUT.png", help="with --sweep: plot the metric per target")
    _json_flag(p)
    p.set_defaults(func=cmd_estimate)

    try:
        from hal.conformance import command as conformance_command
    except ImportError:
        conformance_command = None
    if conformance_command is not None and hasattr(conformance_command, "register"):
        conformance_command.register(sub)
    for command in sub.choices.values():  # --debug after the command too (`hal run m.onnx --debug`)
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as the CLI prints it: what hal says, not the source line that said it."""
    return f"warning: {category.__name__}: {message}\n"


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null, so that the interpreter's flush at exit does not raise BrokenPipeError
    again (the Python docs' recipe, "Note on SIGPIPE", in the signal module's page)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (a test's capture): nothing to redirect
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.debug:
        warnings.formatwarning = _one_line_warning
    try:
        check_destinations(args)
        rc = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe is found here, not in the interpreter's flush at exit
        return rc
    except BrokenPipeError:  # stdout closed early (`hal run --json | head`): stop quietly, as CLIs do
        _stdout_to_devnull()
        return 1  # as Python's own exit on EPIPE (the docs' recipe); no message: the reader left
    except HalError as e:
        if args.debug:
            raise
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a file the command reads or writes: the environment's error, not hal's
        if args.debug:
            raise
        what = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
        print(f"error: {type(e).__name__}: {what}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # the CLI never shows a traceback unless asked
        if args.debug:
            raise
        print(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback, and report it)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
