"""Certification profiles and per-target expected-failure manifests (TOML, in specs/conformance/).

A profile says which cases a certification runs (an explicit op list, or every case) and the
tolerance floors per precision. A manifest lists, for one target, the cases expected to fail, each
with its reason; the suite marks them xfail. ``write_manifest`` regenerates a manifest from a run
(``hal conformance TARGET --write-manifest``), as IREE keeps its expected-failure lists.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hal.conformance.cases import ConformanceCase
from hal.conformance.check import Tolerance
from hal.errors import HalError
from hal.files import atomic_write

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROFILES = ("core", "full")


def specs_dir() -> Path:
    """specs/conformance/ as installed (the ``hal_specs`` data package)."""
    from importlib import resources

    return Path(str(resources.files("hal_specs").joinpath("conformance")))


def _read_toml(path: Path, what: str) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise HalError(f"cannot read the {what}: {e.strerror or e}", where=str(path)) from None
    except tomllib.TOMLDecodeError as e:
        raise HalError(f"the {what} is not valid TOML: {e}", where=str(path)) from None


@dataclass(frozen=True)
class Profile:
    """Which cases a certification runs and how closely numbers must match per precision."""

    name: str
    description: str = ""
    ops: frozenset[str] | None = None  # None: every op
    light_models: bool = True
    shipped_models: bool = False  # onnx's small models with data (cases.SHIPPED_KINDS): opt in
    contract: bool = True
    tolerances: dict[str, Tolerance] = field(default_factory=dict)

    def includes(self, case: ConformanceCase) -> bool:
        if case.kind == "light":
            return self.light_models
        if case.kind == "model":
            return self.shipped_models
        if case.kind == "contract":
            return self.contract
        if case.kind == "plugin":
            return True
        return self.ops is None or case.op in self.ops

    def tolerance(self, precision: str) -> Tolerance:
        return self.tolerances.get(precision, Tolerance())


def load_profile(name_or_path: str | Path) -> Profile:
    """A profile by name (``core``, ``full``) or from a TOML file of the same form."""
    p = Path(name_or_path)
    if not p.suffix == ".toml":
        p = specs_dir() / f"{name_or_path}.toml"
        if not p.is_file():
            raise HalError(f"no conformance profile {str(name_or_path)!r}", where="hal.conformance",
                           hint=f"profiles: {', '.join(PROFILES)}, or a path to a profile .toml")
    data = _read_toml(p, "conformance profile")
    head = data.get("profile", {})
    ops = head.get("ops", "*")
    if ops != "*" and not (isinstance(ops, list) and all(isinstance(o, str) for o in ops)):
        raise HalError("profile.ops must be \"*\" or a list of op types", where=str(p))
    tols = {k: Tolerance(float(v.get("rtol", 0.0)), float(v.get("atol", 0.0)))
            for k, v in data.get("tolerances", {}).items()}
    return Profile(head.get("name", p.stem), head.get("description", ""),
                   None if ops == "*" else frozenset(ops), bool(head.get("light_models", True)),
                   bool(head.get("shipped_models", False)), bool(head.get("contract", True)), tols)


# --- expected-failure manifests ----------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestEntry:
    """One expected failure: the case, its op, the kind of failure and why."""

    case: str
    op: str
    cause: str
    reason: str


def manifest_path(target: str) -> Path:
    """Where the manifest of a built-in target lives: specs/conformance/xfail-<target>.toml."""
    return specs_dir() / f"xfail-{target}.toml"


def load_manifest(path: str | Path | None) -> dict[str, ManifestEntry]:
    """The entries of a manifest by case name; a missing file is an empty manifest."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        return {}
    data = _read_toml(p, "expected-failure manifest")
    out = {}
    for i, e in enumerate(data.get("xfail", [])):
        if not isinstance(e, dict) or not e.get("case") or not e.get("reason"):
            raise HalError(f"entry {i} needs a case and a reason", where=str(p),
                           hint="regenerate it: hal conformance TARGET --write-manifest")
        out[e["case"]] = ManifestEntry(e["case"], e.get("op", ""), e.get("cause", ""), e["reason"])
    return out


def manifest_reason(cause: str | None, message: str | None, limit: int = 200) -> str:
    """A manifest reason: the cause and the gist of the message (a refusal's per-node reasons,
    otherwise the message without its hint)."""
    text = re.sub(r"^data set \d+: ", "", (message or "").split(" — ")[0])
    mismatch = re.search(r"Not equal to tolerance (rtol=\S+, atol=\S+) Mismatched elements: (\d+ / \d+)", text)
    if mismatch:
        worst = re.search(r"Max absolute difference among violations: (\S+)", text)
        text = (f"{mismatch.group(2)} elements beyond {mismatch.group(1)}"
                + (f" (max abs diff {worst.group(1)})" if worst else ""))
    if "node(s): " in text:
        refusals = text.split("node(s): ", 1)[1]
        reasons = dict.fromkeys(m.group(1) for m in re.finditer(r"\(\w+\): ([^;]+)", refusals))
        text = "; ".join(reasons) or text
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"{cause or 'error'}: {text}" if text else (cause or "error")


def _toml_str(s: str) -> str:
    # A JSON string is a valid TOML basic string once DEL, which JSON leaves bare, is escaped too.
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def write_manifest(path: str | Path, target: str, entries: Iterable[ManifestEntry], *, profile: str,
                   keep: Iterable[ManifestEntry] = ()) -> Path:
    """Write the manifest of ``target``: ``entries`` from this run plus ``keep`` (entries of cases
    this run did not execute, so a partial run never drops them). Sorted by op, then case."""
    p = Path(path)
    merged = {e.case: e for e in keep}
    merged.update({e.case: e for e in entries})
    lines = [
        f"# Expected failures of target {target!r} in the hal conformance suite.",
        f"# Regenerate: hal conformance {target} --profile {profile} --write-manifest",
        "# Each entry: the case, the op it certifies, the kind of failure (no kernel | wrong numbers |",
        "# error | checker | contract) and the reason the run gave.",
        "",
        f"target = {_toml_str(target)}",
    ]
    for e in sorted(merged.values(), key=lambda e: (e.op, e.case)):
        lines += ["", "[[xfail]]", f"case = {_toml_str(e.case)}", f"op = {_toml_str(e.op)}",
                  f"cause = {_toml_str(e.cause)}", f"reason = {_toml_str(e.reason)}"]
    return atomic_write(p, "\n".join(lines) + "\n")
