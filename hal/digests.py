"""What keys the compile cache: digests of the graph as compiled and of the model as given, and the
identity of the plugin that built an entry (name, distribution, version, a fingerprint of its code
and of hal's). ``hal.cache`` puts them in its keys and entry headers."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from hal.graph.ir import Graph, ShapeOnly
from hal.target import Target


def _attr_token(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return ["ndarray", str(v.dtype), list(v.shape), hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()
                if v.dtype != object else repr(v.tolist())]
    if hasattr(v, "SerializeToString"):  # GraphProto, SparseTensorProto, TypeProto
        return [type(v).__name__, hashlib.sha256(v.SerializeToString(deterministic=True)).hexdigest()]
    if isinstance(v, (list, tuple)):
        return [_attr_token(x) for x in v]
    return repr(v)


def graph_digest(graph: Graph) -> str:
    """A hash of the graph as a target receives it (the model hash plus what passes made of it)."""
    h = hashlib.sha256()

    def put(x: Any) -> None:
        h.update(json.dumps(x, default=repr, sort_keys=True).encode())
        h.update(b"\0")

    put([graph.model_hash, graph.name, sorted(graph.opsets.items()), graph.ir_version])
    for n in graph.nodes:
        put([n.name, n.op_type, n.domain, n.inputs, n.outputs, {k: _attr_token(v) for k, v in n.attrs.items()}])
    put([t.describe() for t in graph.inputs])
    put([t.describe() for t in graph.outputs])
    for k in sorted(graph.initializers):
        w = graph.initializers[k]
        if isinstance(w, ShapeOnly):
            put([k, "shape-only", list(w.shape), str(w.dtype)])
        else:
            a = np.asarray(w)
            # The model hash already covers weights read from a file; a graph built in code has none.
            data = "" if graph.model_hash else hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() \
                if a.dtype != object else repr(a.tolist())
            put([k, list(a.shape), str(a.dtype), data])
    return h.hexdigest()


def source_digest(model: Any, zoo_params: Any = None) -> str | None:
    """A hash of the model as given, worked out without loading it (None: no session entry for it).

    A file: SHA-256 of its bytes; bytes: of them; ``zoo:NAME``: of the name and ``zoo_params`` (the
    builder's code is in hal's code fingerprint). A Graph or ModelProto built in code has none.
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        return "bytes:" + hashlib.sha256(model).hexdigest()
    if not isinstance(model, (str, os.PathLike)):
        return None
    s = os.fspath(model)
    if not isinstance(s, str):
        return None
    if s.startswith("zoo:"):
        spec = json.dumps([s, dict(zoo_params or {})], sort_keys=True, default=repr)
        return "zoo:" + hashlib.sha256(spec.encode()).hexdigest()
    try:
        return "file:" + hashlib.sha256(Path(s).read_bytes()).hexdigest()
    except OSError:  # the loader says what is wrong with the path
        return None


def uses_external_data(model: Any) -> bool:
    """A model file that keeps weights in other files (parsed only when a session entry is stored)."""
    if not isinstance(model, (str, os.PathLike)) or str(os.fspath(model)).startswith("zoo:"):
        return False
    import onnx

    from hal.graph.load import _external_tensors

    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(Path(os.fspath(model)).read_bytes())
    except Exception:  # unreadable now: store nothing
        return True
    return bool(_external_tensors(proto))


def _source_files(obj: Any) -> tuple[Path, ...]:
    """The .py files of the package that defines ``obj`` (a module, or an object's class)."""
    return _module_files(obj.__name__ if isinstance(obj, type(sys)) else type(obj).__module__)


@cache
def _module_files(name: str) -> tuple[Path, ...]:
    mod = sys.modules.get(name)
    f = getattr(mod, "__file__", None)
    if not f:
        return ()
    path = Path(f)
    return tuple(sorted(path.parent.rglob("*.py"))) if getattr(mod, "__package__", None) else (path,)


@cache
def _code_fingerprint(files: tuple[Path, ...]) -> str:
    h = hashlib.sha256()
    for p in files:
        try:
            st = p.stat()
        except OSError:
            continue
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def plugin_identity(target: Target) -> dict[str, Any]:
    """Who built an entry: plugin name, distribution and version, and its code's fingerprint."""
    import hal
    from hal.plugins import plugin_of, registry

    rec = plugin_of(target.spec.name)
    plugin_obj = registry().pm.get_plugin(rec.name) if rec is not None else None
    files = _source_files(plugin_obj if plugin_obj is not None else target) + _source_files(hal)
    return {"plugin": rec.name if rec else target.spec.name,
            "distribution": rec.distribution if rec else None,
            "version": rec.version if rec and rec.version else target.spec.version,
            "code": _code_fingerprint(files)}
