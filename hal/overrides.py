"""Feeds for the initializers a model also lists as graph inputs: defaults a caller may replace.

ONNX's IR (version 4 and later) reads an initializer that shares its name with a graph input as that
input's default value, and onnxruntime takes a feed for it in place of the default
(``get_overridable_initializers``); models exported with ``keep_initializers_as_inputs=True`` list
every weight so. hal compiles each target's program with its weights in place — folded into
constants, laid out in SRAM, specialised on — so a feed that replaces one is a different program:
the session builds it from the model with the fed values as the initializers (the same target,
precision, fallback and options), keeps the last ``MAX_VARIANTS`` such sessions keyed by the values'
bytes, and runs it. A run that feeds no default runs the session's own program, unchanged. To rebuild,
the session keeps what it was given (a path is read again, and must still hold the same model; a
ModelProto or bytes stay referenced), only for a model with such defaults. Before
IR 4 every initializer had to be listed as an input, and none is a default: onnxruntime refuses a feed
for one, and so does hal (``unexpected W``).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from hal.errors import InputError, a_or_an
from hal.graph.ir import Graph, TensorInfo
from hal.graph.load import ModelLike, model_hash, parse_model

#: the sessions with replaced defaults one session keeps (each holds its own weights and programs)
MAX_VARIANTS = 2


class InitializerOverrides:
    """The defaults a session's model lets a feed replace, and the sessions built with replaced ones."""

    def __init__(self, graph: Graph, model: ModelLike, zoo_params: Mapping[str, Any] | None,
                 build: Callable[[onnx.ModelProto], Any]):
        self.infos = {t.name: t for t in graph.overridable}
        self._model = None if isinstance(model, Graph) else model
        self._zoo_params = dict(zoo_params or {})
        self._hash = graph.model_hash
        self._build = build
        self._variants: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def fed(self, feeds: Any) -> bool:
        """Whether ``feeds`` replaces any default (False for what is no mapping: the run's check says why)."""
        return bool(self.infos) and isinstance(feeds, Mapping) and any(n in self.infos for n in feeds)

    def session_for(self, feeds: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
        """(the session whose initializers are the fed defaults, the rest of the feeds)."""
        given = {n: v for n, v in feeds.items() if n in self.infos}
        for name, v in given.items():
            self._check(self.infos[name], v)
        key = tuple((n, v.dtype.str, v.shape, _digest(v)) for n, v in sorted(given.items()))
        with self._lock:
            session = self._variants.get(key)
            if session is None:
                session = self._build(self._model_with(given))
                self._variants[key] = session
                while len(self._variants) > MAX_VARIANTS:
                    self._variants.popitem(last=False)
            self._variants.move_to_end(key)
        return session, {n: v for n, v in feeds.items() if n not in given}

    @staticmethod
    def _check(t: TensorInfo, v: Any) -> None:
        where, hint = "run feeds", f"a default replaced by a feed must be {t.describe()}"
        if not isinstance(v, np.ndarray):
            raise InputError(f"feed {t.name!r} (an initializer's default) is {a_or_an(type(v).__name__)}, not a numpy "
                             "array", where=where, hint=hint)
        if v.dtype != t.dtype:
            raise InputError(f"feed {t.name!r} has dtype {v.dtype}, but the initializer it replaces is {t.dtype}",
                             where=where, hint=hint)
        if t.shape is not None and (len(t.shape) != v.ndim or any(
                isinstance(want, int) and want != got for want, got in zip(t.shape, v.shape))):
            raise InputError(f"feed {t.name!r} has shape {list(v.shape)}, but the input it replaces is declared "
                             f"{list(t.shape)}", where=where, hint=hint)

    def _model_with(self, given: Mapping[str, np.ndarray]) -> onnx.ModelProto:
        if self._model is None:
            raise InputError(f"feeds {', '.join(sorted(given))} replace initializers, and this session was built "
                             "from a hal Graph, which no longer has the model to rebuild them from",
                             where="run feeds", hint="build the session from the ONNX file or ModelProto")
        proto, where, _ = parse_model(self._model, zoo_params=self._zoo_params)
        if model_hash(proto) != self._hash:
            raise InputError("the model changed since this session was built, so its initializers cannot be "
                             "replaced in it", where=where, hint="build a new session from the model")
        out = onnx.ModelProto()
        out.CopyFrom(proto)
        for i, t in enumerate(out.graph.initializer):
            if t.name in given:
                out.graph.initializer[i].CopyFrom(numpy_helper.from_array(given[t.name], t.name))
        return out


def _digest(v: np.ndarray) -> bytes:
    """The SHA-256 of an array's values (a string tensor's, element by element)."""
    if v.dtype.hasobject:
        return hashlib.sha256("\x00".join(map(str, v.ravel())).encode("utf-8", "surrogatepass")).digest()
    return hashlib.sha256(np.ascontiguousarray(v).tobytes()).digest()


__all__ = ["MAX_VARIANTS", "InitializerOverrides"]
