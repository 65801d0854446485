"""The Python API's arguments, checked before anything is loaded or compiled: the options every
target takes, the target or targets named, the fallback policy, the compile cache's folder, a zoo
model's parameters and onnxruntime's run options. Each bad value is a CompileError or InputError naming the argument and
what it takes."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import ValidationError

from hal import limits
from hal.errors import CompileError, InputError, a_or_an
from hal.plugins import get_target, named_targets, registry
from hal.specs import CompileOptions
from hal.target import Target


def make_options(precision: str = "exact", devices: int | None = None, max_memory: int | str | None = None,
                 timeout_s: float | None = None, **target_options: Any) -> CompileOptions:
    """The options every target takes, checked (a CompileError naming the option and what it takes).

    ``max_memory`` takes bytes or a size as the command line's ``--max-memory`` does ("512MiB", "4GB");
    a bool is no number for any of them; a ``timeout_s`` no clock can wait for (inf) is no bound."""
    for name, value in (("devices", devices), ("max_memory", max_memory), ("timeout_s", timeout_s)):
        if isinstance(value, (bool, np.bool_)):
            raise _option_error(name, "a bool is not a number", value)
    if isinstance(max_memory, str):
        try:
            max_memory = limits.parse_bytes(max_memory)
        except (ValueError, OverflowError) as e:
            raise _option_error("max_memory", str(e), max_memory) from None
    try:
        options = CompileOptions(precision=precision, devices=devices, max_memory=max_memory, timeout_s=timeout_s,
                                 target_options=target_options)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise _option_error(loc, err["msg"], err["input"]) from None
    if options.timeout_s is not None and options.timeout_s >= threading.TIMEOUT_MAX:
        options = options.model_copy(update={"timeout_s": None})  # longer than any wait: unbounded, as None
    return options


def _option_error(loc: str, msg: str, value: Any) -> CompileError:
    field = CompileOptions.model_fields.get(loc.split(".")[0])
    hint = f"{loc}: {field.description}" if field and field.description else None
    if loc == "max_memory":
        hint = "max_memory: bytes (an int) or a size such as '512MiB' or '4GB', that any one tensor/run may allocate"
    return CompileError(f"invalid option {loc}: {msg}, got {value!r}", where="compile options", hint=hint)


def resolve_target(name: Any) -> Target:
    """The installed target called ``name`` (an InputError listing them when there is none)."""
    if not isinstance(name, str):
        hint = "one target's name, e.g. target='gpu' (hal.targets() lists them)"
        if isinstance(name, (list, tuple)):
            hint += "; a session compiles for one target: hal.compare runs a model on several"
        raise InputError(f"target must be a target's name (a str), not {type(name).__name__}", where="target",
                         hint=hint)
    return get_target(name)


def chosen_targets(targets: Any, where: str) -> list[str] | None:
    """The targets a compare or estimate runs on: None for ``"all"``, else the names given as ``"a,b"``
    or as a list or tuple of names, each installed (an InputError listing them otherwise)."""
    if isinstance(targets, (list, tuple)) and all(isinstance(x, str) for x in targets):
        text = ",".join(targets)
    elif isinstance(targets, str):
        text = targets
    else:
        raise InputError(f"targets must be 'all', a target's name, 'a,b' or a list of names, not "
                         f"{type(targets).__name__}" + (f" {targets!r}" if isinstance(targets, (list, tuple)) else ""),
                         where=where, hint=f"installed targets: {', '.join(sorted(registry().targets))}")
    if not any(t.strip() for t in text.split(",")):
        raise InputError(f"no targets given (targets={targets!r})", where=where,
                         hint="name some: 'all', 'gpu,lpu' or ['gpu']; installed: "
                              + ", ".join(sorted(registry().targets)))
    return None if text == "all" else named_targets(text, where)


def check_fallback(fallback: Any, where: str) -> None:
    if not isinstance(fallback, str) or fallback not in ("error", "warn", "allow"):
        raise CompileError(f"fallback must be 'error', 'warn' or 'allow', not {fallback!r}", where=where,
                           hint="'error': a refused node is an error; 'warn' or 'allow': it runs on the cpu target")


def cache_dir_arg(cache_dir: Any) -> str | os.PathLike | bool | None:
    """``cache_dir`` when it is a folder, None (HAL_CACHE_DIR) or False (no cache); an InputError otherwise."""
    if cache_dir is None or cache_dir is False or isinstance(cache_dir, (str, os.PathLike)):
        return cache_dir
    raise InputError(f"cache_dir must be a folder (a str or pathlib.Path), None or False, not {cache_dir!r}",
                     where="cache_dir", hint="None: the folder HAL_CACHE_DIR names, if set; False: no cache")


def check_run_options(run_options: Any) -> None:
    """``run_options`` may be an onnxruntime RunOptions (code ported from it passes one), which hal ignores;
    anything else would be ignored too, silently, so it is an InputError."""
    if type(run_options).__name__ != "RunOptions":
        raise InputError(f"run_options takes an onnxruntime.RunOptions (accepted and ignored), not "
                         f"{type(run_options).__name__}", where="run",
                         hint="pass None; hal's run bounds are the session's: timeout_s=, max_memory=")


def zoo_params_of(model: Any, zoo_params: Any) -> dict[str, Any]:
    """``zoo_params`` as a dict, checked before anything is built: a mapping of parameter names, and
    given (not empty) only with a ``zoo:NAME`` model, the only kind they shape (InputError otherwise)."""
    if zoo_params is None:
        return {}
    if not isinstance(zoo_params, Mapping):
        raise InputError(f"zoo_params must be a dict of parameter -> value, not {type(zoo_params).__name__}",
                         where="zoo_params", hint="e.g. zoo_params={'batch': 4, 'context': 2048}")
    params = dict(zoo_params)
    if bad := [k for k in params if not isinstance(k, str)]:
        raise InputError(f"zoo_params has key(s) {', '.join(map(repr, bad))}, not parameter names",
                         where="zoo_params", hint="the keys are names: hal zoo lists each model's parameters")
    named = isinstance(model, (str, os.PathLike))
    if params and not (named and str(os.fspath(model)).startswith("zoo:")):
        what = repr(str(os.fspath(model))) if named else a_or_an(type(model).__name__)
        raise InputError(f"zoo_params ({', '.join(sorted(params))}) shape a zoo:NAME model; this model is {what}",
                         where="zoo_params", hint="leave zoo_params out: a model file or proto has its own shapes")
    return params
