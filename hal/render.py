"""Compare reports as Markdown and as a self-contained HTML page (table + pictures inline)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from hal.compare import CompareReport, TargetResult, tolerance_text, verdict
from hal.files import write_output
from hal.perf.memory import per_device_bytes

#: (memory/device: the most one device holds, ``hal.perf.memory.per_device_bytes``; "peak memory" had been one
#: GPU's or one LPU chip's beside every wafer's together)
COLUMNS = ("target", "status", "max abs err", "max rel err", "cosine", "latency", "throughput", "memory/device",
           "devices", "energy", "compile", "kernels/nodes", "placement")


def fmt_time(s: float | None) -> str:
    if s is None:
        return "—"
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def fmt_bytes(b: float | None) -> str:
    if b is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(b) < 1024 or unit == "TiB":
            return f"{b:.3g} {unit}" if unit != "B" else f"{int(b)} B"
        b /= 1024
    return str(b)


def fmt_num(x: float | None, unit: str = "") -> str:
    return "—" if x is None else f"{x:,.4g}{unit}"


def console(table: object = None):
    """A rich console for a command's output. A terminal keeps its own width (at least 120). Logs and
    pipes get 160 columns, or ``table``'s whole width where it is wider (``hal demo``'s 13 columns are
    165), so a CI log never folds a cell, a header or a summary line."""
    from rich.console import Console

    probe = Console()
    if probe.is_terminal:
        return Console(soft_wrap=False, width=max(120, probe.width))
    width = 160
    if table is not None:
        width = max(width, probe.measure(table, options=probe.options.update_width(1 << 12)).maximum)
    return Console(soft_wrap=False, width=width)


def titled_table(title: str):
    """A rich table under ``title`` (printed as it is), at least as wide as the title: rich wraps a title
    to its table's width, so a narrow table (an estimate's sweep: 23 columns) had a heading of three lines."""
    from rich.table import Table

    return Table(title=literal(title), min_width=len(title))


def literal(x: object) -> str:
    """``x`` as text that rich prints as it is: a model's node names, a plugin's error, a user's path may
    hold brackets, which rich would take as markup (``[image]`` vanishes, ``[/x]`` raises MarkupError)."""
    from rich.markup import escape

    return escape(str(x))


def row(r: TargetResult) -> list[str]:
    worst = max(r.outputs, key=lambda o: o.max_rel, default=None)
    status = verdict(r)
    return [r.target, status, fmt_num(worst.max_abs) if worst else "—", fmt_num(worst.max_rel) if worst else "—",
            f"{worst.cosine:.6f}" if worst else "—", fmt_time(r.latency_s), fmt_num(r.throughput_per_s, "/s"),
            fmt_bytes(per_device_bytes(r.memory, r.peak_memory_bytes)), fmt_num(r.devices), fmt_num(r.energy_j, " J"),
            fmt_time(r.compile_time_s),
            f"{r.kernel_count}/{r.node_count}" if r.kernel_count is not None else "—",
            ", ".join(f"{k}: {v}" for k, v in r.placement.items()) or "—"]


def rows(rep: CompareReport) -> list[TargetResult]:
    """The table's rows: the targets, then the peers (``hal.peers``)."""
    return [*rep.results, *rep.peers]


def notes(rep: CompareReport) -> list[str]:
    out = [f"warning: {w}" for w in rep.warnings]  # first: it qualifies every row
    out += [f"{r.target}: {r.reason}" for r in rows(rep) if r.reason]
    out += [f"{r.target}: output {o.name!r} is {o.mismatch}" for r in rows(rep) for o in r.outputs if o.mismatch]
    for b in rep.bisect:
        if b.found:
            growth = " → ".join(f"{p.node} ({p.op_type}) {p.max_rel:.2e}" for p in b.path)
            out.append(f"bisect {b.target}/{b.output}: first diverging node {b.node} ({b.op_type}), rel error "
                       f"{b.max_rel:.2e} with inputs within {b.inputs_max_rel:.2e}; growth: {growth}")
        else:
            out.append(f"bisect {b.target}/{b.output}: no single diverging node found"
                       + (f": {b.reason}" if b.reason else ""))
    return out


def to_markdown(rep: CompareReport) -> str:
    lines = [f"# hal compare: {rep.model}", "",
             f"precision `{rep.precision}`, reference `{rep.reference}`, tolerance {tolerance_text(rep)} (max rel)",
             "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row(r)) + " |" for r in rows(rep)]
    n = notes(rep)
    if n:
        lines += [""] + [f"- {x}" for x in n]
    return "\n".join(lines) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f0f0f0}
td:first-child,td:nth-child(2){text-align:left}
.ok{color:#17702a}.bad{color:#b00020}.warn{color:#a36b00}img{max-width:100%;border:1px solid #ddd;margin:8px 0}
li{margin:4px 0;font-size:13px}"""


def to_html(rep: CompareReport, pictures: dict[str, Path] | None = None) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = []
    for r in rows(rep):
        cells = row(r)
        cls = "ok" if cells[1] == "ok" else ("warn" if r.status in ("fell back",) or "beyond" in cells[1] else "bad")
        body.append("<tr>" + "".join(f'<td class="{cls}">{html.escape(c)}</td>' if i == 1 else
                                     f"<td>{html.escape(c)}</td>" for i, c in enumerate(cells)) + "</tr>")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>hal compare: {html.escape(rep.model)}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>hal compare: {html.escape(rep.model)}</h1>",
             f"<p>precision <code>{html.escape(rep.precision)}</code>, reference <code>{rep.reference}</code>, "
             f"tolerance {html.escape(tolerance_text(rep))} (max relative error)</p>",
             f"<table id='results'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"]
    n = notes(rep)
    if n:
        parts.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in n) + "</ul>")
    for target, path in (pictures or {}).items():
        data = base64.b64encode(Path(path).read_bytes()).decode()
        parts.append(f"<h2>{html.escape(target)}</h2><img alt='{html.escape(target)} profile' "
                     f"src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write(path: str | Path, text: str) -> Path:
    return write_output(path, text)


def progress(enabled: bool):
    """A rich status line on a terminal (quiet under --json or when not a TTY)."""
    import contextlib
    import sys

    if not enabled or not sys.stderr.isatty():
        return contextlib.nullcontext(None)
    from rich.console import Console

    return Console(stderr=True).status("compiling")
