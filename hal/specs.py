"""Pydantic models at hal's edges: what targets declare, what options they take, what they report.

These models are the wire format of HAL API 1.0; ``specs/schemas/`` holds their JSON Schema
(``python -m hal.specs`` regenerates it; a test fails on drift).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hal.files import atomic_write

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HAL_API_VERSION = "1.0"

Precision = Literal["exact", "native", "fp32", "tf32", "bf16", "fp16", "fp8", "int8"]
TargetKind = Literal["gpu", "lpu", "wafer", "cpu", "other"]
Fallback = Literal["error", "warn", "allow"]


#: per model class, the one set of all its field names that every instance given all of them shares
_ALL_FIELDS: dict[type, set[str]] = {}


class HalModel(BaseModel):
    """The base of hal's pydantic models (specs, options, reports): unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    def model_post_init(self, context: Any, /) -> None:
        """An instance given every field shares its class's one set of field names.

        Pydantic keeps a set of the names given at construction per instance: 728 bytes for a
        10-field ``KernelReport``, more than the values it names. A compile report holds one
        ``NodePlacement`` a node and often one ``KernelReport`` too: sharing took a session of the
        benchmark's 24-layer decoder (7k nodes) from 41.7 to 36.9 MB held on cpu, 55.8 to 46.1 MB on
        the LPU. Sharing is safe because the set is full: assignment only adds a field's
        name to it (a no-op), and copies (``model_copy``, pickling) take sets of their own."""
        given = self.__pydantic_fields_set__
        cls = type(self)
        full = _ALL_FIELDS.get(cls)
        if full is None:
            full = _ALL_FIELDS.setdefault(cls, set(cls.model_fields))
        if len(given) == len(full):  # extra fields are forbidden: as many names as fields is all of them
            object.__setattr__(self, "__pydantic_fields_set__", full)


class HardwareNumber(HalModel):
    """One number of a spec sheet with where it comes from."""

    value: float
    unit: str
    source: str = Field(min_length=3)
    url: str | None = None
    kind: Literal["published", "derived", "assumption"] = "published"
    note: str | None = None


def dtype_name(dt: Any) -> str:
    """The name ``TargetSpec.dtypes`` gives a tensor element type: numpy's (ml_dtypes' for bfloat16,
    float8 and 4-bit types), "string" for ONNX's strings (numpy's object arrays)."""
    dt = np.dtype(dt)
    return "string" if dt.kind == "O" else dt.name


@functools.cache
def dtype_names() -> tuple[str, ...]:
    """Every ONNX tensor element type hal reads, by ``dtype_name``, in ONNX's numbering."""
    import onnx

    from hal.graph.ir import np_dtype

    dts = (np_dtype(t) for t in sorted(onnx.TensorProto.DataType.values()))
    return tuple(dict.fromkeys(dtype_name(d) for d in dts if d is not None))


class TargetSpec(HalModel):
    """What a target is: identity, kind, API version, precisions and its hardware numbers."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    vendor: str
    kind: TargetKind
    hal_api: str = HAL_API_VERSION
    version: str = "0"
    description: str = ""
    precisions: list[Precision] = Field(default_factory=lambda: ["exact"])
    native_format: Literal["fp32", "tf32", "bf16", "fp16", "fp8", "int8"] | None = Field(default=None, description=(
        "the format its matrix units take operands in at precision 'native' (the GPU's tf32, the LPU's fp16), "
        "so a native run is judged (hal.compare) by that format's tolerance; None: the loosest, native's own"))
    dtypes: list[str] = Field(default_factory=list, description=(
        "the tensor element types the hardware stores and computes, by numpy's names (float32, bfloat16, "
        "float8_e4m3fn, int8, int64, bool, string, ...); a node reading or writing another type is refused by "
        "hal.target.kernel_capability and checked by the conformance contract; empty: every type hal's kernels take"))
    options: dict[str, str] = Field(default_factory=dict,
                                    description="target-specific compile options -> what they do")
    hardware: dict[str, HardwareNumber] = Field(default_factory=dict)
    calibration: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("dtypes")
    @classmethod
    def _known_dtypes(cls, v: list[str]) -> list[str]:
        if unknown := [d for d in v if d not in dtype_names()]:
            raise ValueError(f"unknown dtype(s) {', '.join(map(repr, unknown))} in dtypes; hal knows: "
                             f"{', '.join(dtype_names())}")
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _native_offered(self) -> TargetSpec:
        if self.native_format is not None and "native" not in self.precisions:
            raise ValueError(f"native_format {self.native_format!r} is given, but 'native' is not among the "
                             f"precisions offered ({', '.join(self.precisions)})")
        return self

    @field_validator("hal_api")
    @classmethod
    def _api_form(cls, v: str) -> str:
        major, _, minor = v.partition(".")
        if not (major.isdigit() and (minor == "" or minor.isdigit())):
            raise ValueError(f"hal_api must look like MAJOR.MINOR, got {v!r}")
        return v

    def hw(self, key: str) -> float:
        """The value of hardware number ``key`` (KeyError naming the sheet when absent)."""
        try:
            return self.hardware[key].value
        except KeyError:
            close = difflib.get_close_matches(key, list(self.hardware), n=1)
            raise KeyError(f"spec sheet of target {self.name!r} has no hardware number {key!r}"
                           + (f" (did you mean {close[0]!r}?)" if close else "")
                           + f"; it has {', '.join(sorted(self.hardware)) or 'none'}") from None

    def fingerprint(self) -> str:
        """A hash of everything in the spec: part of the compile-cache key."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


def load_spec_sheet(path: str | Path, **overrides: Any) -> TargetSpec:
    """Read a TOML spec sheet (``[target]`` + ``[hardware.<key>]`` + ``[calibration.<key>]``).

    A sheet that cannot be read, is not TOML, or does not validate is an ``InputError`` naming the
    file and, for validation, each bad key as ``section.key: message`` on a line of its own."""
    from hal.errors import InputError

    where = f"spec sheet {str(path)!r}"
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(f"cannot read it: {e.strerror or e}", where=where,
                         hint="check the path; a plugin ships its sheet as package data "
                              "([tool.setuptools.package-data]) and finds it beside its module") from None
    except UnicodeDecodeError as e:
        raise InputError(f"is not UTF-8 text: {e.reason} at byte {e.start}", where=where,
                         hint="save the sheet as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"is not valid TOML: {e}", where=where,
                         hint='fix the TOML there (a string value needs quotes: vendor = "Acme")') from None
    for section in ("target", "hardware", "calibration"):
        if not isinstance(data.get(section, {}), dict):
            raise InputError(f"[{section}] must be a table, not {type(data[section]).__name__}", where=where,
                             hint=f"write it as a [{section}] table (see specs/targets/cpu.toml)")
    fields = dict(data.get("target", {}))
    fields["hardware"] = data.get("hardware", {})
    fields["calibration"] = data.get("calibration", {})
    fields.update(overrides)
    try:
        return TargetSpec.model_validate(fields)
    except ValidationError as e:
        bad = [_sheet_error(err) for err in e.errors(include_url=False)]
        hint = "fix those keys; their types and allowed values: specs/schemas/TargetSpec.schema.json"
        if any(b.startswith("target.dtypes") for b in bad):
            hint += "; the dtype names: hal.specs.dtype_names()"
        raise InputError(f"does not validate ({len(bad)} error{'s' if len(bad) != 1 else ''}):\n  " + "\n  ".join(bad),
                         where=where, hint=hint) from None


def _sheet_error(err: Any) -> str:
    """One pydantic error of a spec sheet as ``section.key: message``, short: where it sits in the TOML
    (``target.kind``, ``hardware.peak_flops.value``), what is wrong, and the value that was there."""
    loc = list(err.get("loc", ()))
    section = "target" if not loc or loc[0] not in ("hardware", "calibration") else loc.pop(0)
    key = section
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else f".{part}"
    kind, msg, value = err.get("type", ""), str(err.get("msg", "")), err.get("input")
    if kind == "extra_forbidden":
        known = TargetSpec.model_fields if section == "target" else HardwareNumber.model_fields
        close = difflib.get_close_matches(str(loc[-1]) if loc else "", list(known), n=1)
        return f"{key}: unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind == "missing":
        return f"{key}: missing (required)"
    if kind == "value_error":  # a validator's own words: their first clause (dtypes' goes on to list every name)
        msg = msg.removeprefix("Value error, ").split("; ")[0]
    if isinstance(value, (str, int, float, bool)) and kind != "value_error":
        shown = repr(value)
        msg += f" (got {shown if len(shown) <= 40 else shown[:37] + '...'})"
    return f"{key}: {msg}"


class CompileOptions(HalModel):
    """Options every target understands, plus ``target_options`` that the target declares."""

    precision: Precision = Field(default="exact", description="one of exact, native, fp32, tf32, bf16, fp16, fp8, "
                                 "int8 (a target offers some: hal targets)")
    devices: int | None = Field(default=None, ge=1, description="GPUs, chips or wafers, at least 1; None: target picks")
    max_memory: int | None = Field(default=None, ge=1, description="bytes any one tensor/run may allocate")
    timeout_s: float | None = Field(default=None, gt=0, description="seconds each compile and run may take, "
                                    "more than 0; None: no bound")
    target_options: dict[str, Any] = Field(default_factory=dict)


class NodeGroup(HalModel):
    """Nodes a target takes together (one fusable group)."""

    nodes: list[str]
    label: str | None = None


class Refusal(HalModel):
    node: str
    op_type: str
    reason: str


class Capability(HalModel):
    """A target's answer to 'which of these nodes can you run?'."""

    target: str
    groups: list[NodeGroup] = Field(default_factory=list)
    refused: list[Refusal] = Field(default_factory=list)

    def supported_nodes(self) -> set[str]:
        return {n for g in self.groups for n in g.nodes}


class KernelReport(HalModel):
    """One unit of the target's program: a GPU kernel, an LPU instruction group, a wafer stage."""

    name: str
    nodes: list[str] = Field(default_factory=list)
    op_types: list[str] = Field(default_factory=list)
    unit: str | None = Field(default=None, description="where it runs: SM, MXM, VXM, region, host ...")
    flops: float = 0.0
    bytes: float = 0.0
    time_s: float = 0.0
    start_s: float | None = None
    bound: Literal["compute", "memory", "latency", "interconnect", "other"] | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class MemoryLevel(HalModel):
    level: str = Field(description="HBM, L2, SRAM, host ...")
    bytes: int
    capacity: int | None = None
    per_device: bool = True

    @field_validator("bytes", "capacity")
    @classmethod
    def _not_negative(cls, v: Any, info: Any) -> Any:
        return _non_negative(v, info)


class NodePlacement(HalModel):
    node: str
    op_type: str
    target: str
    partition: int
    reason: str | None = Field(default=None, description="why it is not on the requested target")


#: a compile report's figures that no program makes negative (NaN and inf are the session's to refuse)
NON_NEGATIVE = ("node_count", "kernel_count", "latency_s", "throughput_per_s", "tokens_per_s", "ttft_s",
                "peak_memory_bytes", "energy_j", "compile_time_s", "transfers_bytes")


def _non_negative(v: Any, info: Any) -> Any:
    if isinstance(v, (int, float)) and v < 0:
        raise ValueError(f"{info.field_name} is {v!r}: a modelled figure is never negative (compute it from the "
                         "program the target built; None where it is not modelled)")
    return v


class CompileReport(HalModel):
    """One report schema that every target fills, so results sit side by side."""

    target: str
    hal_api: str = HAL_API_VERSION
    plugin_version: str = "0"
    model: str = ""
    model_hash: str = ""
    precision: Precision = "exact"
    shape_only: bool = False
    node_count: int = 0
    kernel_count: int = 0
    latency_s: float | None = Field(default=None, description="modelled time of one run")
    throughput_per_s: float | None = Field(default=None, description="runs per second in steady state")
    tokens_per_s: float | None = None
    ttft_s: float | None = None
    memory: list[MemoryLevel] = Field(default_factory=list)
    peak_memory_bytes: int = Field(default=0, description="the most bytes one device holds at once (its capacity "
                                   "bounds it): one GPU's HBM, one LPU chip's SRAM, one wafer's SRAM")
    devices: int = 1
    energy_j: float | None = None
    compile_time_s: float = 0.0
    kernels: list[KernelReport] = Field(default_factory=list)
    placement: list[NodePlacement] = Field(default_factory=list)
    transfers_bytes: int = 0
    details: dict[str, Any] = Field(default_factory=dict, description="target-specific figures")

    @field_validator(*NON_NEGATIVE)
    @classmethod
    def _not_negative(cls, v: Any, info: Any) -> Any:
        return _non_negative(v, info)


#: the figures of a report whose target prices each run's own sizes (``details["figures_follow_runs"]``):
#: those of the latest run (``specs/interface.md`` §9)
RUN_FIGURES = ("latency_s", "throughput_per_s", "energy_j", "memory", "peak_memory_bytes", "devices", "kernels",
               "kernel_count")


class RunReport(HalModel):
    """What one run did: host wall time of the emulation and the modelled device time."""

    target: str
    wall_time_s: float
    modelled_latency_s: float | None = None
    outputs: list[str] = Field(default_factory=list)


SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "TargetSpec": TargetSpec,
    "CompileOptions": CompileOptions,
    "Capability": Capability,
    "CompileReport": CompileReport,
    "RunReport": RunReport,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every wire model, by file stem."""
    return {name: model.model_json_schema() for name, model in SCHEMA_MODELS.items()}


def write_schemas(folder: str | Path) -> list[Path]:
    """Write ``<Model>.schema.json`` files (the committed copies live in specs/schemas/)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        p = folder / f"{name}.schema.json"
        written.append(atomic_write(p, json.dumps(schema, indent=2, sort_keys=True) + "\n"))
    return written


if __name__ == "__main__":  # python -m hal.specs [folder]
    import argparse

    ap = argparse.ArgumentParser(prog="python -m hal.specs", description="Write the specs' JSON Schemas.")
    ap.add_argument("folder", nargs="?", default=str(Path(__file__).resolve().parent.parent / "specs" / "schemas"),
                    help="where to write them (default: the repository's specs/schemas)")
    for p in write_schemas(ap.parse_args().folder):
        print(p)


def builtin_sheet(filename: str) -> Path:
    """Path of a spec sheet shipped in specs/targets/ (the ``hal_specs`` data package)."""
    from importlib import resources

    return Path(str(resources.files("hal_specs").joinpath("targets", filename)))
