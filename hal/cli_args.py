"""The ``hal`` command's values: NAME=VALUE flags, ``--option`` target options, ``--dim`` sizes,
input arrays from .npy/.npz files (bounded before inflating), and JSON or file outputs written
atomically."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from hal.errors import HalError, InputError

EXIT_FINDING = 1  # the command ran and found something wrong (hal doctor: a plugin failed to load)
EXIT_ERROR = 2  # a HalError: bad input, a model or target that cannot do it
EXIT_INTERNAL = 3  # a bug in hal or a plugin


def write_out(dest: str, data: bytes | str) -> None:
    """Write an output file atomically; a device or pipe (/dev/stdout, a FIFO) is written directly."""
    from hal.files import write_output

    write_output(dest, data)


#: the flags that name a file a command writes, by their ``argparse`` destination
OUTPUT_FLAGS = {"save": "--save", "markdown": "--markdown", "html": "--html", "trace": "--trace", "plot": "--plot",
                "json": "--json", "json_path": "--json", "write_manifest": "--write-manifest"}


def check_destinations(args: Any) -> None:
    """Every file the command will write, checked before it does any work: an InputError for a name
    that is a folder, one under a file, one in a folder it may not write, or a file two flags name.
    Otherwise a wrong --html found after a long compare had left the --markdown beside it written."""
    seen: dict[Path, str] = {}
    probed: set[Path] = set()
    for dest, flag in OUTPUT_FLAGS.items():
        value = getattr(args, dest, None)
        if not isinstance(value, str) or value in ("", "-"):
            continue
        path = Path(value)
        where = f"{flag} {value}"
        if path.is_dir():
            raise InputError(f"{value} is a folder", where=where, hint=f"name a file in it, e.g. {path / 'out'}")
        if not path.exists():
            folder = next((p for p in path.absolute().parents if p.exists()), None)
            if folder is not None and not folder.is_dir():
                raise InputError(f"{folder} is a file, so nothing can be written under it", where=where,
                                 hint="name a file in a folder")
        elif not path.is_file():  # a device or pipe, written directly (/dev/null twice is fine)
            if not os.access(path, os.W_OK):
                raise InputError(f"cannot write {value}", where=where, hint="name a file you may write")
            continue
        folder = path.absolute().parent
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            raise InputError(f"cannot write in {folder}", where=where, hint="name a file in a folder you may write")
        if folder.is_dir() and folder not in probed:
            # os.access answers yes to root everywhere, /proc and read-only mounts included: a file is
            # made there (and removed), as the output and --html's pictures beside it will be
            probed.add(folder)
            try:
                with tempfile.NamedTemporaryFile(dir=folder, prefix=".hal-write-check-"):
                    pass
            except OSError as e:
                raise InputError(f"cannot write in {folder} ({e.strerror or e})", where=where,
                                 hint="name a file in a folder you may write") from None
        key = path.resolve()
        if key in seen:
            raise InputError(f"{seen[key]} and {flag} both name {value}", where=where,
                             hint="give each output a file of its own")
        seen[key] = flag


def emit_json(dest: str | None, payload: Any) -> None:
    """``payload`` as strict JSON (RFC 8259, which jq, JavaScript and most parsers hold to): a float that is
    not finite is written as the string "Infinity", "-Infinity" or "NaN", as pydantic's ``ser_json_inf_nan=
    'strings'`` writes it and reads it back, where json.dumps would write a bare Infinity."""
    text = json.dumps(_finite(payload), indent=2, default=lambda o: _finite(json_default(o)), allow_nan=False)
    if dest in (None, "-"):
        print(text)
    else:
        write_out(dest, text + "\n")


def _finite(o: Any) -> Any:
    """``o`` with each non-finite float as its name (see ``emit_json``)."""
    if isinstance(o, float) and not math.isfinite(o):
        return "NaN" if math.isnan(o) else "Infinity" if o > 0 else "-Infinity"
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


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


#: keyword arguments the commands pass themselves (``--option`` may not repeat them), and the flag
#: that sets each where a command has one (its --help says which)
OWN_FLAGS = {"model": "MODEL", "target": "--target", "targets": "--targets", "precision": "--precision",
             "fallback": "--fallback", "devices": "--devices", "max_memory": "--max-memory", "timeout_s": "--timeout",
             "cache_dir": "--cache-dir", "zoo_params": "--batch / --context / --prompt (estimate)",
             "phase": "--phase", "batch": "--batch", "context": "--context", "prompt": "--prompt",
             "inputs": "--input / --inputs", "dims": "--dim", "seed": "--seed"}


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """``--option key=value``: values parsed as JSON when they can be (true, 4, 0.5), else strings."""
    out: dict[str, Any] = {}
    for k, v in parse_kv(items, "--option").items():
        if k in OWN_FLAGS:  # a target option may not stand in for one of the command's own arguments
            raise InputError(f"--option {k}=... names a setting of the command, not of the target",
                             where="command line",
                             hint=f"it is set by {OWN_FLAGS[k]}, where the command has that flag (see its --help)")
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
            data = np.load(npz, allow_pickle=False)
            if not hasattr(data, "files"):
                raise InputError(f"{npz} holds one array (.npy), not named arrays (.npz)", where="--inputs",
                                 hint="pass it as --input NAME=FILE.npy, or save the feeds with np.savez")
            with data:
                for info in data.zip.infolist():  # a compressed member may inflate far beyond the file
                    limits.check_alloc(f"member {info.filename!r}", [info.file_size], np.uint8,
                                       where=f"--inputs {npz}")
                feeds.update({k: data[k] for k in data.files})
        except HalError:
            raise
        except Exception as e:  # a user's file: numpy's parser may raise anything (TokenError, BadZipFile, ...)
            raise InputError(f"cannot read {npz}: {_numpy_says(e)}", where="--inputs",
                             hint="save the feeds with np.savez(FILE, name=array, ...)") from None
        if not feeds:
            raise InputError(f"{npz} holds no arrays", where="--inputs", hint="save the feeds with np.savez")
    # where each input came from: one given twice (--input twice, or --input and --inputs) is refused,
    # not settled by whichever came last
    sources = {k: f"--inputs {npz}" for k in feeds}
    for item in pairs or []:
        ((name, path),) = parse_kv([item], "--input").items()
        if name in sources:
            raise InputError(f"input {name!r} is given twice: by {sources[name]} and by --input {name}={path}",
                             where=f"--input {name}", hint="give each input once: drop one of the two")
        sources[name] = f"--input {name}={path}"
        try:
            value = np.load(path, allow_pickle=False)
        except Exception as e:  # as above
            raise InputError(f"cannot read {path}: {_numpy_says(e)}", where=f"--input {name}",
                             hint="save the array with np.save(FILE, array)") from None
        if not isinstance(value, np.ndarray):
            members = list(value.files)
            value.close()
            held = (f"one array, {members[0]!r}" if len(members) == 1 else
                    f"{len(members)} arrays ({', '.join(map(repr, members))})" if members else "no arrays")
            raise InputError(f"{path} is an .npz archive holding {held}; --input takes one array saved as .npy",
                             where=f"--input {name}",
                             hint=f"pass the archive as --inputs {path} (each array feeds the input of its own name), "
                                  f"or save the array alone with np.save('{name}.npy', array) and pass "
                                  f"--input {name}={name}.npy")
        feeds[name] = value
    return feeds or None


def _numpy_says(e: Exception) -> str:
    """numpy's reason a file did not load, without its advice to unpickle a file that is not numpy's."""
    if isinstance(e, ValueError) and "allow_pickle" in str(e):
        return ("not a .npy or .npz file of plain arrays (numpy reads it as a pickle, which hal does not load; "
                "save strings as a str array, np.array(['text', ...]), not an object array)")
    return f"{type(e).__name__}: {e}"


#: what ``--sweep KEY=...`` may vary, and the least value each takes
SWEEPS = {"batch": 1, "context": 0, "prompt": 1}


def parse_sweep(text: str) -> tuple[str, list[int]]:
    """``--sweep batch=1,2,4``: the key and its values, each an integer it may take."""
    key, sep, values = text.partition("=")
    if not sep or key not in SWEEPS:
        raise InputError(f"--sweep {text!r} must be batch=1,2,4, context=... or prompt=...", where="command line")
    least = SWEEPS[key]
    hint = f"e.g. --sweep {key}=" + ",".join(str(v) for v in (least, least + 1, least + 3))
    if not values.strip():
        raise InputError(f"--sweep {key}= has no values", where="command line", hint=hint)
    items = [v.strip() for v in values.split(",")]
    if bad := [v for v in items if not v.isdigit() or int(v) < least]:
        raise InputError(f"--sweep {key}: {', '.join(map(repr, bad))} "
                         f"{'is not an integer' if len(bad) == 1 else 'are not integers'} >= {least}",
                         where="command line", hint=hint)
    return key, [int(v) for v in items]


def png_path(path: str) -> None:
    """The pictures are PNG: a --plot named otherwise would hold PNG bytes under another name."""
    if Path(path).suffix.lower() != ".png":
        raise InputError(f"--plot {path}: the picture is a PNG, and the name does not end in .png",
                         where="command line", hint=f"name it {Path(path).with_suffix('.png')}")
