"""The ``hal`` command's values: NAME=VALUE flags, ``--option`` target options, ``--dim`` sizes,
input arrays from .npy/.npz files (bounded before inflating), and JSON or file outputs written
atomically."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from hal.errors import HalError, InputError


def write_out(dest: str, data: bytes | str) -> None:
    """Write an output file atomically; a device or pipe (/dev/stdout, a FIFO) is written directly."""
    from hal.files import write_output

    write_output(dest, data)


def emit_json(dest: str | None, payload: Any) -> None:
    text = json.dumps(payload, indent=2, default=json_default)
    if dest in (None, "-"):
        print(text)
    else:
        write_out(dest, text + "\n")


def json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    return str(o)


def parse_kv(items: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for it in items or []:
        k, sep, v = it.partition("=")
        if not sep or not k:
            raise InputError(f"{what} {it!r} is not NAME=VALUE", where="command line")
        out[k] = v
    return out


#: keyword arguments the commands pass themselves (``--option`` may not repeat them)
OWN_FLAGS = frozenset({"model", "target", "targets", "precision", "fallback", "devices", "max_memory", "timeout_s",
                        "cache_dir", "zoo_params", "phase", "batch", "context", "prompt", "inputs", "dims", "seed"})


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """``--option key=value``: values parsed as JSON when they can be (true, 4, 0.5), else strings."""
    out: dict[str, Any] = {}
    for k, v in parse_kv(items, "--option").items():
        if k in OWN_FLAGS:  # a target option may not stand in for one of the command's own arguments
            raise InputError(f"--option {k}=... names a setting of the command, not of the target",
                             where="command line", hint=f"use --{k.replace('_', '-')} instead")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def parse_dims(items: list[str] | None) -> dict[str, int]:
    out = {}
    for k, v in parse_kv(items, "--dim").items():
        if not v.strip().isdigit():
            raise InputError(f"--dim {k}={v!r}: the size must be a non-negative integer", where="command line")
        out[k] = int(v)
    return out


def load_inputs(pairs: list[str] | None, npz: str | None) -> dict[str, np.ndarray] | None:
    from hal import limits

    feeds: dict[str, np.ndarray] = {}
    if npz:
        try:
            with np.load(npz, allow_pickle=False) as data:
                if not hasattr(data, "files"):
                    raise ValueError("not an .npz archive")
                for info in data.zip.infolist():  # a compressed member may inflate far beyond the file
                    limits.check_alloc(f"member {info.filename!r}", [info.file_size], np.uint8,
                                       where=f"--inputs {npz}")
                feeds.update({k: data[k] for k in data.files})
        except HalError:
            raise
        except Exception as e:  # a user's file: numpy's parser may raise anything (TokenError, BadZipFile, ...)
            raise InputError(f"cannot read {npz}: {type(e).__name__}: {e}", where="--inputs") from None
    for name, path in parse_kv(pairs, "--input").items():
        try:
            value = np.load(path, allow_pickle=False)
        except Exception as e:  # as above
            raise InputError(f"cannot read {path}: {type(e).__name__}: {e}", where=f"--input {name}") from None
        if not isinstance(value, np.ndarray):
            value.close()
            raise InputError(f"{path} holds several arrays (.npz), not one", where=f"--input {name}",
                             hint="pass it with --inputs FEEDS.npz")
        feeds[name] = value
    return feeds or None
