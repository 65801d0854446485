"""Certification profiles and per-target expected-failure manifests (TOML: the profiles and hal's own
targets' manifests in specs/conformance/, a plugin target's manifest in the vendor's folder).

A profile says which cases a certification runs (an explicit op list, or every case) and the
tolerance floors per precision. A manifest lists, for one target, the cases expected to fail, each
with its reason; the suite marks them xfail when they fail as the entry says (``cause_mismatch``).
``write_manifest`` regenerates a manifest from a run (``hal conformance TARGET --write-manifest``), as
IREE keeps its expected-failure lists. A manifest never holds the API contract's cases, failures
for want of a package on the host, nor a plugin's failed case hook (``waivable``).
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from pydantic import ConfigDict, Field, ValidationError, field_validator

from hal.conformance.cases import ConformanceCase
from hal.conformance.check import Tolerance
from hal.errors import HalError, InputError
from hal.files import atomic_write
from hal.specs import HalModel, Precision

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROFILES = ("core", "full")


def specs_dir() -> Path:
    """specs/conformance/ as installed (the ``hal_specs`` data package)."""
    from importlib import resources

    return Path(str(resources.files("hal_specs").joinpath("conformance")))


def check_precision(precision: str, where: str | None = None) -> str:
    """``precision`` if hal knows it (hal.specs.Precision), else an InputError naming the known ones."""
    if precision not in get_args(Precision):
        raise InputError(f"unknown precision {precision!r}", where=where,
                         hint=f"precisions: {', '.join(get_args(Precision))}")
    return precision


def check_target_precision(target: str, precision: str, where: str | None = None) -> str:
    """``precision`` if ``target`` offers it; else, before any case runs, the InputError a session would
    give every case (hal.session's own check and wording: "does not offer precision ..., it offers: ...").
    An unknown target is left to the caller's own check."""
    from hal.plugins import registry
    from hal.session import _check_target_accepts
    from hal.specs import CompileOptions

    check_precision(precision, where)
    tgt = registry().targets.get(target)
    if tgt is not None:
        try:
            _check_target_accepts(tgt, CompileOptions(precision=precision))
        except HalError as e:
            raise InputError(e.what, where=where, hint=e.hint) from None
    return precision


# --- the files' schemas: TOML types exactly (no "1" for 1), unknown keys refused -------------------------

_Model = TypeVar("_Model", bound=HalModel)
_KINDS = {"model_type": "should be a table", "dict_type": "should be a table", "list_type": "should be an array"}


class _Strict(HalModel):
    model_config = ConfigDict(strict=True)


class _ProfileHead(_Strict):
    name: str | None = None  # None: the file's stem
    description: str = ""
    ops: Literal["*"] | list[str] = "*"
    light_models: bool = True
    shipped_models: bool = False
    contract: bool = True

    @field_validator("ops", mode="before")
    @classmethod
    def _ops_form(cls, v: Any) -> Any:
        if v != "*" and not (isinstance(v, list) and all(isinstance(o, str) for o in v)):
            raise ValueError('must be "*" or a list of op types')
        return v


class _ToleranceFloor(_Strict):
    rtol: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    atol: float = Field(default=0.0, ge=0, allow_inf_nan=False)


class _ProfileFile(_Strict):
    profile: _ProfileHead = Field(default_factory=_ProfileHead)
    tolerances: dict[Precision, _ToleranceFloor] = Field(default_factory=dict)


#: the causes a manifest entry may expect (check.CAUSES less NOT_WAIVABLE's, which load_manifest refuses with
#: reasons of their own); an entry without one expects any
ENTRY_CAUSES = ("no kernel", "refused", "wrong numbers", "error", "checker")


class _ManifestEntryFile(_Strict):
    case: str = Field(min_length=1)
    op: str = ""
    cause: str = ""
    reason: str = Field(min_length=1)

    @field_validator("cause")
    @classmethod
    def _known_cause(cls, v: str) -> str:
        # a misspelt cause ("wrong-numbers") had been read as one no failure has: the case it waives then failed,
        # at the end of a long run, "expected cause 'wrong-numbers'"
        if v and v not in ENTRY_CAUSES + NOT_WAIVABLE:
            raise ValueError(f"must be one of {', '.join(map(repr, ENTRY_CAUSES))} (or left out: any cause)")
        return v


class _ManifestFile(_Strict):
    target: str | None = None
    xfail: list[_ManifestEntryFile] = Field(default_factory=list)


def _problem(err: Any) -> str:
    """One validation error as 'KEY what is wrong, got VALUE' (KEY as in the file: a.b, xfail[0].case)."""
    key = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in err["loc"] if x != "[key]").lstrip(".")
    if err["type"] == "extra_forbidden":
        return f"{key} is not a known key"
    if err["type"] == "missing":
        return f"{key} is missing"
    msg = _KINDS.get(err["type"]) or err["msg"].removeprefix("Value error, ").removeprefix("Input ")
    got = repr(err["input"])
    return f"{key or 'the file'} {msg}, got {got if len(got) <= 60 else got[:59] + '…'}"


def _read_toml(path: Path, what: str, schema: type[_Model], hint: str) -> _Model:
    """The TOML file at ``path``, validated against ``schema``; any fault is an InputError naming the file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(f"cannot read the {what}: {e.strerror or e}", where=str(path)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"the {what} is not valid TOML: {e}", where=str(path)) from None
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        problems = [_problem(err) for err in e.errors()]
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise InputError(f"invalid {what}: {'; '.join(problems[:3])}{more}", where=str(path), hint=hint) from None


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


def _unknown_ops(ops: Iterable[str]) -> list[str]:
    """The ops of a profile's list that onnx defines in no domain, each with the closest op it does define
    ("Conv2D (did you mean Conv?)"): a misspelt op selects no case, and the profile would certify without it."""
    import difflib

    import onnx

    known = {s.name for s in onnx.defs.get_all_schemas_with_history()}
    out = []
    for op in dict.fromkeys(ops):
        if op not in known:
            close = difflib.get_close_matches(op, known, n=1) or [k for k in known if k.lower() == op.lower()]
            out.append(f"{op!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return out


def load_profile(name_or_path: str | Path) -> Profile:
    """A profile by name (``core``, ``full``) or from a TOML file of the same form."""
    p = Path(name_or_path)
    if not p.suffix == ".toml":
        p = specs_dir() / f"{name_or_path}.toml"
        if not p.is_file():
            raise InputError(f"no conformance profile {str(name_or_path)!r}", where="hal.conformance",
                             hint=f"profiles: {', '.join(PROFILES)}, or a path to a profile .toml")
    data = _read_toml(p, "conformance profile", _ProfileFile,
                      hint=f"[profile] takes {', '.join(_ProfileHead.model_fields)}; [tolerances.PRECISION] "
                           f"takes rtol, atol (see hal's specs/conformance/core.toml)")
    head = data.profile
    if head.ops != "*" and (unknown := _unknown_ops(head.ops)):
        raise InputError(f"the profile lists {len(unknown)} op(s) that onnx does not define: {'; '.join(unknown[:5])}",
                         where=f"{p}: ops", hint="ops are onnx op types, spelled as onnx spells them (Conv, Relu, "
                                                 "MatMul): an op no case has would silently drop out of the "
                                                 "certification")
    return Profile(head.name or p.stem, head.description, None if head.ops == "*" else frozenset(head.ops),
                   head.light_models, head.shipped_models, head.contract,
                   {k: Tolerance(v.rtol, v.atol) for k, v in data.tolerances.items()})


# --- expected-failure manifests ----------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestEntry:
    """One expected failure: the case, its op, the kind of failure and why."""

    case: str
    op: str
    cause: str
    reason: str


def manifest_path(target: str) -> Path:
    """Where a target's manifest is read and written unless a path is given: hal's own targets' in
    specs/conformance/xfail-<target>.toml (hal's data), any other's as xfail-<target>.toml in the
    current folder (a vendor's manifest belongs in the vendor's repository, not in hal's install)."""
    from hal.plugins import OWN_DISTRIBUTION, plugin_of

    rec = plugin_of(target)
    if rec is not None and rec.distribution != OWN_DISTRIBUTION:
        return Path.cwd() / f"xfail-{target}.toml"
    return specs_dir() / f"xfail-{target}.toml"


#: the causes a manifest never holds: the API contract is what makes a target certifiable, so it is never
#: an expected failure (specs/interface.md section 10); an environment failure is this host's, and a plugin's
#: failed case hook that plugin's, not the target's
NOT_WAIVABLE = ("contract", "environment", "plugin")


def contract_case_names() -> frozenset[str]:
    from hal.conformance.contract import contract_cases

    return frozenset(c.name for c in contract_cases())


def waivable(entry: ManifestEntry) -> bool:
    """Whether an expected failure may go in a manifest: not a contract case, not an environment failure,
    not a plugin's failed case hook."""
    return entry.cause not in NOT_WAIVABLE and entry.case not in contract_case_names()


def load_manifest(path: str | Path | None, target: str | None = None) -> dict[str, ManifestEntry]:
    """The entries of a manifest by case name; a missing file is an empty manifest. A manifest for
    another target than ``target`` (its ``target = ...``), or one that lists an API contract case, an
    environment failure or a plugin's failed case hook (``NOT_WAIVABLE``), is an InputError naming the file."""
    if path is None or not Path(path).exists():
        return {}
    data = _read_toml(Path(path), "expected-failure manifest", _ManifestFile,
                      hint="each [[xfail]] takes case and reason (op, cause optional); "
                           "regenerate it: hal conformance TARGET --write-manifest")
    if target is not None and data.target is not None and data.target != target:
        raise InputError(f"this expected-failure manifest is for target {data.target!r}, not {target!r}",
                         where=str(path), hint=f"give the manifest of target {target!r} (xfail-{target}.toml), or "
                                               f"write one from a run: hal conformance {target} --write-manifest")
    seen: dict[str, int] = {}
    for i, e in enumerate(data.xfail):
        if e.case in seen:  # which entry would hold was the file's order, silently: the last one
            raise InputError(f"lists case {e.case!r} twice (xfail[{seen[e.case]}] and xfail[{i}])", where=str(path),
                             hint="keep one [[xfail]] entry per case, with the cause it fails with")
        seen[e.case] = i
    entries = {e.case: ManifestEntry(e.case, e.op, e.cause, e.reason) for e in data.xfail}
    contract = contract_case_names()
    if waived := [e.case for e in entries.values() if e.cause == "contract" or e.case in contract]:
        raise InputError(f"lists {len(waived)} API contract case(s) as expected failures "
                         f"({', '.join(waived[:4])}{', …' if len(waived) > 4 else ''}): the contract cannot be waived",
                         where=str(path),
                         hint="a target that breaks the API contract is not certifiable (specs/interface.md section "
                              "10): fix the target and delete these entries; a target that refuses nodes of "
                              "zoo:tiny-cnn or zoo:tiny-gpt is held to the contract on the nodes it takes")
    if env := [e.case for e in entries.values() if e.cause == "environment"]:
        raise InputError(f"lists {len(env)} case(s) that failed for want of a package on the host that ran them "
                         f"({', '.join(env[:4])}{', …' if len(env) > 4 else ''}): not the target's expected failures",
                         where=str(path), hint="install the package the case needs (hal-sdk[image] for ImageDecoder) "
                                               "and delete these entries")
    if hooks := [e.case for e in entries.values() if e.cause == "plugin"]:
        raise InputError(f"lists {len(hooks)} failed plugin case hook(s) ({', '.join(hooks[:4])}): a plugin's "
                         "failure, not the target's expected one", where=str(path),
                         hint="fix the plugin's hal_conformance_cases and delete these entries")
    return entries


def target_manifest(target: str, manifest: str | None) -> tuple[Path | None, dict[str, ManifestEntry]]:
    """The file and entries of ``--manifest MANIFEST``: ``none`` is no manifest, a path must exist, and
    without one the target's default (``manifest_path``) is read when it exists. A manifest must be
    ``target``'s own (``load_manifest``)."""
    if manifest == "none":
        return None, {}
    path = Path(manifest) if manifest else manifest_path(target)
    if manifest and not path.exists():
        raise InputError("no such expected-failure manifest", where=manifest,
                         hint=f"give the path of an existing manifest, or 'none' to run without one; a new target's "
                              f"first manifest is written by a run: hal conformance {target} --write-manifest")
    return path, load_manifest(path, target)


def cause_mismatch(entry: ManifestEntry | None, cause: str, message: str) -> str | None:
    """None when a failure of ``cause`` is the one ``entry`` expects (an entry without a cause expects any);
    else the failure's message saying which cause the manifest expected: a case expected to be refused
    that now runs and gives wrong numbers is a new failure, not the known one."""
    if entry is None or not entry.cause or entry.cause == cause:
        return None
    return (f"the manifest expects this case to fail with cause {entry.cause!r} ({entry.reason}); it failed with "
            f"cause {cause!r}: {message}")


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
    this run did not execute, so a partial run never drops them), less those a manifest cannot hold
    (``waivable``: the API contract's, the host's). Sorted by op, then case."""
    p = Path(path)
    merged = {e.case: e for e in keep if waivable(e)}
    merged.update({e.case: e for e in entries if waivable(e)})
    lines = [
        f"# Expected failures of target {target!r} in the hal conformance suite.",
        f"# Regenerate: hal conformance {shlex.quote(target)} --profile {shlex.quote(profile)} --write-manifest",
        "# Each entry: the case, the op it certifies, the kind of failure (no kernel | refused |",
        "# wrong numbers | error | checker) and the reason the run gave. API contract failures, failures",
        "# for want of a package on the host and failed plugin case hooks are never written here.",
        "",
        f"target = {_toml_str(target)}",
    ]
    for e in sorted(merged.values(), key=lambda e: (e.op, e.case)):
        lines += ["", "[[xfail]]", f"case = {_toml_str(e.case)}", f"op = {_toml_str(e.op)}",
                  f"cause = {_toml_str(e.cause)}", f"reason = {_toml_str(e.reason)}"]
    return atomic_write(p, "\n".join(lines) + "\n")
