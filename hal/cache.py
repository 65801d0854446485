"""The compile cache: a target's compiled executable kept on disk, so a second session skips compiling.

``InferenceSession(..., cache_dir=DIR)`` / ``hal.compile(..., cache_dir=DIR)``, or ``HAL_CACHE_DIR``.
An entry is ``Executable.serialize()`` bytes, rebuilt with the target's ``load(blob)``. Its key
hashes everything that shapes the program:

- the model (``Graph.model_hash``, the hash of the model file) and the graph as compiled (nodes,
  attributes, inputs, outputs, weight shapes, opsets), so each fallback partition has its own key;
- the plugin: name, distribution version, and a fingerprint of its code files and of hal's, so an
  entry from another plugin version — or an edited checkout — is never used;
- the target: name and ``TargetSpec.fingerprint()``;
- the compile options (all but ``timeout_s``, which does not change the program) and hal's version.

(The digests and the plugin identity are worked out in ``hal.digests``.)

One file per entry: a magic line, a JSON header (key, plugin, versions, payload size and SHA-256,
the compile time), then the payload. Entries are written atomically (temp file + rename). On load
the header must name the same key and plugin version and the payload must match its size and hash;
anything else (truncated, corrupted, foreign) is deleted and rebuilt, never loaded. An entry that
took longer to load than its program took to compile (a large blob of weights, a compile of a few
milliseconds) is replaced by a "not worth it" marker: later sessions just compile.

A session entry lets a second ``InferenceSession`` skip the frontend too (reading, checking, shape
inference, graph passes, placement), which dominates on small models. Its key hashes the model as
given, without loading it (a file's or bytes' SHA-256, or a ``zoo:`` name with its parameters), the
target's and the reference target's identities and specs, the options and the fallback policy; its
payload is the session's graph, refusals and partitions, each partition naming the entry of its
program, which is loaded as above (so every check applies). Weights are stored once: a weight that
only partitions with a stored program read is kept in the session's graph by shape and dtype alone
(``WeightInProgram``; its array lives in the program entry), the others (a partition whose program
entry is a "not worth it" marker is compiled from the stored graph) with their data. When a program
whose weights the session entry left out is gone or bad, the session is built from the model again
(and its entry rewritten). A file's SHA-256 is remembered in the cache folder under its path and
``stat`` (device, inode, size, mtime and ctime in ns; a file modified in the last 2 s is not
remembered), so a hit on a large model does not hash its bytes again. A model with external-data
files gets no session entry (its file alone does not pin its weights); neither does a Graph or
ModelProto passed in code. A session entry is judged on each hit by what it saves, against building
the session: its frontend alone (timed around loading, checking, passes and placement, not the
cache's work) plus the same programs' compiles. The first hit (hashing the model, reading the entry,
loading or compiling the programs) has the next session build again, once, to time the frontend
afresh (the first build may carry its process's warm-up, often more than a hit saves); the faster
build counts, and after SLOW_HITS hits in a row slower than it the entry is replaced by a "not worth
it" marker (one slow hit may be another process's load): sessions then build from the model, as
without a cache.

Payloads are pickles for the built-in targets: only use a cache folder you trust. hal refuses a
folder that other users can write to or that another user owns.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hal.digests import graph_digest, plugin_identity, source_digest, uses_external_data
from hal.errors import HalError
from hal.files import atomic_write
from hal.graph.ir import DeclaredTensor, Graph
from hal.specs import CompileOptions
from hal.target import Executable, Target

ENV_CACHE_DIR = "HAL_CACHE_DIR"
MAGIC = b"HALCACHE1\n"
FORMAT = 1
#: a file modified less than this long ago has its digest computed but not remembered (its stat could
#: still match a later write within the file system's timestamp granularity)
DIGEST_MEMO_MIN_AGE_S = 2.0
#: a session hit that took more than this fraction of what building it took has the build timed again
#: (once per entry). The first build in a process can take several times what a later one does (lazy
#: imports, first calls), more than a hit saves on a weight-heavy model: every first hit probes.
PROBE_FRACTION = 0.0
#: this many hits in a row slower than building the session turn its entry into a "not worth it" marker
SLOW_HITS = 3
_SESSION_FIELDS = ("kind", "frontend_s", "compile_s", "probed")
_wall_clock = time.time  # bound here: tests replace this module's ``time`` to fake the clock below


def _cpu_clock() -> float:
    """The clock the cache's judgements use: this process's CPU time (all threads), so a build and a
    hit timed at different moments compare fairly on a machine other processes share."""
    return time.process_time()


class CacheWarning(UserWarning):
    """The compile cache could not be used (unsafe folder, a plugin that cannot serialize, ...)."""


@dataclass
class CacheStats:
    """What one cache object did: entries loaded, compiled and stored, corrupted ones rebuilt."""

    hits: int = 0
    misses: int = 0
    stored: int = 0
    rebuilt: int = 0  # entries found corrupted, truncated or foreign, and replaced
    store_failures: int = 0
    not_worth_it: int = 0  # markers met: programs that load slower than they compile, sessions slower than built
    session_hits: int = 0  # sessions restored whole, frontend included


@dataclass(frozen=True)
class WeightInProgram(DeclaredTensor):
    """A weight a stored session's graph describes by shape and dtype: its array is in the program
    entries (stored once). After a session hit, ``InferenceSession.graph`` holds these in its place."""


@dataclass
class SessionPart:
    """One partition of a stored session: where it runs, its program's cache key, its nodes."""

    target: str
    key: str
    nodes: list[str]


@dataclass
class SessionEntry:
    """What a session entry restores: the optimised graph (weights held by stored programs as
    ``WeightInProgram``), the refused nodes, the partitions."""

    graph: Graph
    refused: dict[str, Any]
    parts: list[SessionPart]


def weights_elsewhere(graph: Graph) -> bool:
    """Whether ``graph`` (a stored session's graph or partition) lacks a weight's data (WeightInProgram)."""
    return any(isinstance(w, WeightInProgram) for w in graph.initializers.values())


def read_entry(path: Path) -> tuple[dict[str, Any] | None, bytes]:
    """(header, payload) of an entry file; header None when the file is not an entry at all.

    Reads the payload in one go after the header line, so a large executable is copied once.
    """
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            return None, b""
        line = f.readline(1 << 16)
        if not line.endswith(b"\n"):
            return None, b""
        payload = f.read()
    try:
        header = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None, payload
    return (header if isinstance(header, dict) else None), payload


def read_header(path: Path) -> dict[str, Any] | None:
    """The header of an entry file without its payload (None: absent or not an entry)."""
    try:
        with open(path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                return None
            line = f.readline(1 << 16)
        header = json.loads(line)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return header if isinstance(header, dict) else None


def entry_is_valid(header: dict[str, Any], payload: bytes, key: str, ident: dict[str, Any]) -> bool:
    """The entry is the one asked for, from the same plugin version and code, and whole (size and SHA-256)."""
    return (header.get("key") == key and header.get("plugin") == ident["plugin"]
            and header.get("version") == ident["version"] and header.get("code") == ident["code"]
            and header.get("size") == len(payload) and header.get("sha256") == hashlib.sha256(payload).hexdigest())


class CompileCache:
    """A folder of compiled executables (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder).expanduser()
        self.stats = CacheStats()
        self._identities: dict[int, dict[str, Any]] = {}
        self._digest_s: dict[str, float] = {}  # session key -> what hashing the model for it took
        self._hits: dict[str, tuple[float, dict[str, Any], bytes]] = {}  # key -> (hit began, header, payload)
        self._probing: dict[str, dict[str, Any]] = {}  # session key -> header of the entry being re-timed
        #: session keys held by a "not worth it" marker: such a session builds as without a cache (its
        #: programs too: a session hit would have cost the same loads plus a small entry)
        self.sessions_not_worth_it: set[str] = set()

    def identity(self, target: Target) -> dict[str, Any]:
        """``plugin_identity(target)``, worked out once per target for this cache object."""
        got = self._identities.get(id(target))
        if got is None:
            got = self._identities[id(target)] = plugin_identity(target)
        return got

    # -- keys --------------------------------------------------------------------------------------
    def key(self, graph: Graph, target: Target, options: CompileOptions) -> str:
        """The key of ``graph``'s program on ``target`` with ``options`` (see the module docstring)."""
        import hal

        material = {
            "format": FORMAT, "hal": hal.__version__, "hal_api": hal.HAL_API_VERSION,
            "graph": graph_digest(graph), "plugin": self.identity(target),
            "target": target.spec.name, "spec": target.spec.fingerprint(),
            "options": options.model_dump(mode="json", exclude={"timeout_s"}),
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True, default=repr).encode()).hexdigest()

    def session_key(self, model: Any, zoo_params: Any, target: Target, reference: Target,
                    options: CompileOptions, fallback: str, dims: dict[str, int] | None = None) -> str | None:
        """The key of a whole session on ``model`` (None when the model form has no session entry)."""
        import hal
        from hal import limits

        t0 = _cpu_clock()
        digest = self.source_digest(model, zoo_params)
        if digest is None:
            return None
        digest_s = _cpu_clock() - t0
        material = {
            "format": FORMAT, "kind": "session", "hal": hal.__version__, "hal_api": hal.HAL_API_VERSION,
            "model": digest, "fallback": fallback, "dims": sorted((dims or {}).items()),
            # a hit skips the memory check of the graph: the bound in force (HAL_MAX_MEMORY, RAM) is in the key
            "max_memory": options.max_memory or limits.default_max_memory(),
            "targets": [[t.spec.name, t.spec.fingerprint(), self.identity(t)] for t in (target, reference)],
            "options": options.model_dump(mode="json", exclude={"timeout_s"}),
        }
        key = hashlib.sha256(json.dumps(material, sort_keys=True, default=repr).encode()).hexdigest()
        self._digest_s[key] = digest_s
        return key

    def source_digest(self, model: Any, zoo_params: Any = None) -> str | None:
        """``source_digest(model, zoo_params)``; a file's digest remembered under its path and stat."""
        if not isinstance(model, (str, os.PathLike)) or str(os.fspath(model)).startswith("zoo:"):
            return source_digest(model, zoo_params)
        try:
            path = Path(os.fspath(model)).resolve()
            before = path.stat()
        except (OSError, TypeError, ValueError):
            return source_digest(model, zoo_params)
        memo = hashlib.sha256(json.dumps(["digest", str(path), before.st_dev, before.st_ino, before.st_size,
                                          before.st_mtime_ns, before.st_ctime_ns]).encode()).hexdigest()
        p = self.path(memo)
        try:
            header, payload = read_entry(p)
        except OSError:
            header, payload = None, b""
        if (header is not None and header.get("key") == memo and header.get("kind") == "digest"
                and header.get("size") == len(payload) and header.get("sha256") == hashlib.sha256(payload).hexdigest()):
            return payload.decode("ascii", "replace")
        if header is not None or payload:
            p.unlink(missing_ok=True)  # a bad memo: hash the file
        digest = source_digest(model, zoo_params)
        try:
            after = path.stat()
        except OSError:
            return digest
        same = (after.st_ino, after.st_size, after.st_mtime_ns, after.st_ctime_ns) == (
            before.st_ino, before.st_size, before.st_mtime_ns, before.st_ctime_ns)
        settled = _wall_clock() - max(after.st_mtime_ns, after.st_ctime_ns) / 1e9 >= DIGEST_MEMO_MIN_AGE_S
        if digest is not None and same and settled:
            data = digest.encode("ascii")
            header = {"format": FORMAT, "key": memo, "kind": "digest", "size": len(data),
                      "sha256": hashlib.sha256(data).hexdigest()}
            try:
                atomic_write(p, MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + data)
            except OSError:
                pass  # only a lost shortcut
        return digest

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.halc"

    # -- folder safety -------------------------------------------------------------------------------
    def usable(self) -> bool:
        """Create the folder (owner-only) if needed; False, with a warning, if others could plant entries."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            st = self.folder.stat()
        except OSError as e:
            warnings.warn(f"compile cache {self.folder} cannot be used: {e}", CacheWarning, stacklevel=3)
            return False
        if hasattr(os, "getuid"):
            foreign = st.st_uid != os.getuid()
            shared = bool(st.st_mode & stat.S_IWOTH)
            if foreign or shared:
                why = "is owned by another user" if foreign else "is writable by other users"
                warnings.warn(f"compile cache {self.folder} {why}; not used (entries are executable "
                              "pickles, so only a folder you own may hold them)", CacheWarning, stacklevel=3)
                return False
        return True

    # -- entries -----------------------------------------------------------------------------------
    def load(self, key: str, target: Target, judge: bool = True) -> Executable | None:
        """The executable stored under ``key``, or None (absent, bad and now deleted, or not worth loading).

        An entry that took longer to load than its program took to compile is replaced by a marker,
        so later sessions compile instead of paying for the load again (e.g. a big weight-only blob).
        ``judge=False``: no marker (a session hit, where the entry also stands in for the frontend:
        the session entry is judged as a whole).
        """
        p = self.path(key)
        t0 = _cpu_clock()
        try:
            header, payload = read_entry(p)
        except FileNotFoundError:
            self.stats.misses += 1
            return None
        except OSError:
            header, payload = None, b""
        ident = self.identity(target)
        if header is not None and header.get("not_worth_it") and entry_is_valid(header, payload, key, ident):
            self.stats.misses += 1
            self.stats.not_worth_it += 1
            return None
        exe = None
        if header is not None and entry_is_valid(header, payload, key, ident):
            try:
                exe = target.load(payload)
            except Exception:  # a blob its own plugin cannot read is as good as corrupted
                exe = None
            if exe is not None and not callable(getattr(exe, "run", None)):
                exe = None
        if exe is None:
            self.stats.rebuilt += 1
            self.stats.misses += 1
            p.unlink(missing_ok=True)
            return None
        self.stats.hits += 1
        compile_s = header.get("compile_s") if header is not None else None
        if judge and isinstance(compile_s, (int, float)) and _cpu_clock() - t0 > compile_s:
            self._write(key, target, b"", {"not_worth_it": True, "compile_s": compile_s,
                                           "load_s": round(_cpu_clock() - t0, 6)})
        return exe

    def store(self, key: str, target: Target, exe: Executable, compile_s: float | None = None) -> Path | None:
        """Serialize ``exe`` under ``key`` (``compile_s``: what compiling it took, kept to judge loads).

        A plugin that cannot serialize gets a CacheWarning, not an error; a "not worth it" marker
        under ``key`` is left in place.
        """
        if self._marked(key):
            return None
        try:
            payload = exe.serialize()
            if not isinstance(payload, (bytes, bytearray)):
                raise TypeError(f"serialize() returned {type(payload).__name__}, not bytes")
        except Exception as e:  # third-party code: the session must go on without the cache
            from hal.plugins import hook_error

            err = e if isinstance(e, HalError) else hook_error(
                target.spec.name, f"serialize() on target {target.spec.name!r} raised {type(e).__name__}: {e}")
            self.stats.store_failures += 1
            warnings.warn(f"compile cache: not stored: {err}", CacheWarning, stacklevel=3)
            return None
        p = self._write(key, target, bytes(payload), {"compile_s": compile_s} if compile_s is not None else {})
        if p is not None:
            self.stats.stored += 1
        return p

    def _marked(self, key: str) -> bool:
        """A "not worth it" marker holds ``key`` (read from its header alone)."""
        header = read_header(self.path(key))
        return bool(header is not None and header.get("not_worth_it"))

    def _write(self, key: str, target: Target, payload: bytes, extra: dict[str, Any]) -> Path | None:
        header = {"format": FORMAT, "key": key, **self.identity(target), "target": target.spec.name,
                  "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest(), **extra}
        data = MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload
        try:
            return atomic_write(self.path(key), data)
        except OSError as e:
            self.stats.store_failures += 1
            warnings.warn(f"compile cache: cannot write {self.path(key)}: {e}", CacheWarning, stacklevel=4)
            return None


    # -- session entries ---------------------------------------------------------------------------
    def load_session(self, key: str, target: Target) -> SessionEntry | None:
        """The session stored under ``key``, or None (absent, not worth it, or bad and now deleted).

        Its partitions' programs are then got through ``load`` under their own keys, and the hit is
        judged by ``judge_session`` once they are.
        """
        p = self.path(key)
        t0 = _cpu_clock()
        try:
            header, payload = read_entry(p)
        except FileNotFoundError:
            return None
        except OSError:
            header, payload = None, b""
        entry = None
        if header is not None and entry_is_valid(header, payload, key, self.identity(target)):
            if header.get("not_worth_it"):
                self.stats.not_worth_it += 1
                self.sessions_not_worth_it.add(key)
                return None
            if header.get("probe"):  # time the frontend again: this session builds and stores anew
                self._probing[key] = header
                return None
            try:
                entry = pickle.loads(payload)
            except Exception:  # whole by its hash but unreadable here: as good as corrupted
                entry = None
        if not isinstance(entry, SessionEntry) or header is None:
            self.stats.rebuilt += 1
            p.unlink(missing_ok=True)
            return None
        self._hits[key] = (t0 - self._digest_s.get(key, 0.0), header, payload)
        return entry

    def drop_session_hit(self, key: str) -> None:
        """The session entry read under ``key`` could not be used (a program holding its weights is gone)."""
        self._hits.pop(key, None)

    def judge_session(self, key: str, target: Target) -> None:
        """Count the hit on ``key`` (its programs now loaded or compiled) and judge it against building
        the session (its frontend plus the compiles of the same programs, timed when it was built). A
        hit (hashing the model, reading the entry, getting the programs) that took over PROBE_FRACTION
        of that has the next session build again, once, to time the frontend afresh; after that,
        SLOW_HITS hits in a row that took longer than building replace the entry by a marker."""
        started, header, payload = self._hits.pop(key)
        self.stats.session_hits += 1
        load_s = _cpu_clock() - started
        frontend_s, compile_s = header.get("frontend_s"), header.get("compile_s", 0.0)
        if not isinstance(frontend_s, (int, float)) or not isinstance(compile_s, (int, float)):
            return
        if load_s > PROBE_FRACTION * (frontend_s + compile_s) and not header.get("probed"):
            # In doubt: the build's time may include its process's warm-up (imports, first calls), and one
            # slow hit may be noise; the next session builds again to time the frontend afresh (once), and
            # later hits are judged on the faster of the two builds.
            extra = {k: v for k, v in header.items() if k in ("kind", "frontend_s", "compile_s")}
            self._write(key, target, payload, {**extra, "probe": True, "load_s": round(load_s, 6)})
        elif load_s > frontend_s + compile_s and header.get("slow_hits", 0) >= SLOW_HITS - 1:
            self._write(key, target, b"", {"kind": "session", "not_worth_it": True, "frontend_s": frontend_s,
                                           "compile_s": compile_s, "load_s": round(load_s, 6)})
        elif load_s > frontend_s + compile_s or header.get("slow_hits"):  # one more slow hit, or a fast one
            slow = header.get("slow_hits", 0) + 1 if load_s > frontend_s + compile_s else 0
            self._write(key, target, payload, {**{k: v for k, v in header.items() if k in _SESSION_FIELDS},
                                               "slow_hits": slow, "load_s": round(load_s, 6)})

    def store_session(self, key: str, target: Target, model: Any, entry: SessionEntry, frontend_s: float
                      ) -> Path | None:
        """Store a session whose frontend (loading, checking, passes, placement: what a hit skips besides
        the compiles) took ``frontend_s`` seconds, unless the model file leaves weights in external
        files or a "not worth it" marker holds the key. Weights read only by partitions whose program
        entry holds a program are left to those entries (``WeightInProgram``)."""
        if self._marked(key):
            return None
        if uses_external_data(model):
            return None
        compile_s = 0.0
        graph = entry.graph
        in_programs: set[str] = set()  # weights some partition's stored program holds
        needed: set[str] = set()  # weights a partition without a stored program compiles from
        for part in entry.parts:
            head = read_header(self.path(part.key))
            if head is not None and isinstance(head.get("compile_s"), (int, float)):
                compile_s += head["compile_s"]
            names = graph.initializers if len(entry.parts) == 1 else graph.subgraph(part.nodes).initializers
            whole = head is not None and not head.get("not_worth_it") and head.get("size", 0) > 0
            (in_programs if whole else needed).update(names)
        stripped = {k: WeightInProgram(tuple(int(d) for d in w.shape), np.dtype(w.dtype))
                    for k, w in graph.initializers.items()
                    if k in in_programs and k not in needed and isinstance(w, np.ndarray)}
        if stripped:
            entry = replace(entry, graph=replace(graph, initializers={**graph.initializers, **stripped}))
        try:
            payload = pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # e.g. a third-party attribute value that cannot be pickled
            warnings.warn(f"compile cache: session not stored: {type(e).__name__}: {e}", CacheWarning, stacklevel=3)
            return None
        extra: dict[str, Any] = {"kind": "session", "frontend_s": max(0.0, frontend_s), "compile_s": compile_s}
        earlier = self._probing.pop(key, None)
        if earlier is not None:  # a probe: keep the faster of the two frontends, and probe no more
            if isinstance(earlier.get("frontend_s"), (int, float)):
                extra["frontend_s"] = min(frontend_s, earlier["frontend_s"])
            extra["probed"] = True
        return self._write(key, target, payload, extra)


def open_cache(cache_dir: str | os.PathLike | bool | None) -> CompileCache | None:
    """The cache for ``cache_dir`` (None: ``HAL_CACHE_DIR``; False or "": no cache), or None if unusable."""
    if cache_dir is None:
        cache_dir = os.environ.get(ENV_CACHE_DIR) or False
    if cache_dir is False or cache_dir == "" or cache_dir is True:
        return None
    c = CompileCache(cache_dir)
    return c if c.usable() else None


__all__ = ["ENV_CACHE_DIR", "CacheStats", "CacheWarning", "CompileCache", "SessionEntry", "SessionPart",
           "WeightInProgram", "entry_is_valid", "graph_digest", "open_cache", "plugin_identity", "read_entry",
           "read_header", "source_digest", "weights_elsewhere"]
