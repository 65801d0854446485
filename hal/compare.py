"""Side by side: one model on several targets, every output checked against the cpu reference."""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from hal.api_args import check_fallback, chosen_targets, make_options
from hal.bisect import BisectResult
from hal.errors import HalError, InputError, ResourceError, RunError, UnsupportedOpError
from hal.feeds import ones_note, random_feeds
from hal.graph.dims import checked_dims
from hal.graph.ir import Graph, graph_copy
from hal.graph.load import ModelLike, load
from hal.peers import PEERS, PeerUnavailable, check_peers, known_deviations, run_peer
from hal.plugins import get_target, registry
from hal.session import REFERENCE_TARGET, FallbackWarning, InferenceSession
from hal.specs import MemoryLevel, TargetSpec

#: relative tolerance per precision under which a target "agrees" with the reference
TOLERANCE = {"exact": 1e-4, "fp32": 1e-4, "tf32": 5e-3, "native": 3e-2, "bf16": 3e-2, "fp16": 1e-2,
             "fp8": 1.5e-1, "int8": 1e-1}


class OutputDiff(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int]
    max_abs: float = Field(description=(
        "max |a-b| over the values finite in both; inf where a NaN or inf stands against another kind of value "
        "in the reference (see mismatch), or where the shapes differ"))
    max_rel: float = Field(description="max |a-b| / max |reference|, over the same values; inf as max_abs")
    cosine: float = Field(description="over the values finite in both; 0 where max_abs is inf")
    within_tolerance: bool
    mismatch: str | None = Field(default=None, description=(
        "how the output differs from the reference's other than in its finite float numbers (dtype, shape, a "
        "sequence's length, a map's keys, strings, integers or booleans that differ at all, a NaN or inf where "
        "the reference has a finite value or another NaN/inf: NaN in both, or the same infinity, agrees); "
        "never within tolerance"))


class TargetResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str
    status: Literal["ok", "fell back", "refused", "error"]
    reason: str | None = None
    tolerance: float | None = Field(default=None, description=(
        "the largest max_rel within which its outputs are ok: the precision's, at native the format the "
        "target's spec names (native_format)"))
    verdict: str | None = Field(default=None, description=(
        "the table's status: status, but where it is ok, \"ok\" only when every output is within tolerance, "
        "\"wrong output\" when one has a mismatch, else \"ok (beyond tolerance)\""))
    precision: str
    outputs: list[OutputDiff] = Field(default_factory=list)
    latency_s: float | None = None
    throughput_per_s: float | None = None
    tokens_per_s: float | None = None
    peak_memory_bytes: int | None = None
    memory: list[MemoryLevel] = Field(default_factory=list)
    devices: int | None = None
    energy_j: float | None = None
    compile_time_s: float | None = None
    host_run_time_s: float | None = None
    kernel_count: int | None = None
    node_count: int | None = None
    placement: dict[str, int] = Field(default_factory=dict, description="nodes per target")


class CompareReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    precision: str
    reference: str = REFERENCE_TARGET
    tolerance: float
    inputs: dict[str, list[int]]
    results: list[TargetResult]
    bisect: list[BisectResult] = Field(default_factory=list, description="first diverging node per disagreeing target")
    peers: list[TargetResult] = Field(default_factory=list, description=(
        "runtimes outside hal run on the same feeds (hal.peers), each checked against the cpu reference"))
    warnings: list[str] = Field(default_factory=list, description=(
        "what makes the comparison say less than it seems: a reference output that is partly or all NaN/inf, "
        "where a target agrees by giving the same NaN/inf"))
    _sessions: dict[str, InferenceSession] = PrivateAttr(default_factory=dict)
    _feeds: dict[str, np.ndarray] = PrivateAttr(default_factory=dict)

    def session(self, target: str) -> InferenceSession | None:
        """The compiled session of a target that ran (kept for profiles and pictures)."""
        return self._sessions.get(target)


def _numeric(v: Any) -> bool:
    return isinstance(v, np.ndarray) and v.dtype.kind in "biuf"


def _flatten(v: Any, layout: list[Any], numbers: list[np.ndarray], exact: list[np.ndarray] | None = None) -> None:
    """A value's layout (shapes, lengths, map keys, and strings, which must match exactly) and its
    numbers (compared within tolerance, but integers and booleans exactly: ``exact`` marks those, where given):
    how sequences, maps, optionals and string tensors compare."""
    if _numeric(v):
        layout.append(("tensor", v.shape, v.dtype.str))
        numbers.append(v.astype(np.float64).reshape(-1))
        if exact is not None:
            exact.append(np.full(v.size, v.dtype.kind in "biu"))
    elif isinstance(v, np.ndarray):
        layout.append(("tensor", v.shape, v.dtype.kind, tuple(v.reshape(-1).tolist())))
    elif isinstance(v, Mapping):
        keys = sorted(v, key=repr)
        layout.append(("map", tuple(keys)))
        for k in keys:
            _flatten(np.asarray(v[k]), layout, numbers, exact)
    elif isinstance(v, (list, tuple)):
        layout.append(("sequence", len(v)))
        for item in v:
            _flatten(item, layout, numbers, exact)
    else:
        layout.append(("value", repr(v)))


def _shape(v: Any) -> list[int]:
    """A tensor's shape, a sequence's length."""
    return list(v.shape) if isinstance(v, np.ndarray) else [len(v)] if isinstance(v, (list, tuple)) else []


def diff(name: str, got: Any, ref: Any, tol: float) -> OutputDiff:
    """How far ``got`` is from the reference's ``ref``: float numbers within ``tol``, everything else exact
    (a float64 output where the reference's is float32 is not "ok", however close its numbers; an integer
    or boolean that differs at all, such as a token ArgMax picked, is a mismatch however small its error
    relative to the largest value)."""
    mismatch = exact_apart = None
    if _numeric(got) and _numeric(ref):
        a, b = got.astype(np.float64), ref.astype(np.float64)
        exact = np.full(a.size, got.dtype.kind in "biu" and ref.dtype.kind in "biu")
        if got.shape != ref.shape:
            mismatch = f"shape {list(got.shape)}, the reference's {list(ref.shape)}"
        elif got.dtype != ref.dtype:
            mismatch = f"dtype {got.dtype}, the reference's {ref.dtype}"
        elif exact.all():  # compared as they are: float64 would merge int64s past 2**53
            exact_apart = _exact_apart(np.asarray(got != ref).reshape(-1), got.dtype)
    else:
        got_layout: list[Any] = []
        ref_layout: list[Any] = []
        got_numbers: list[np.ndarray] = []
        ref_numbers: list[np.ndarray] = []
        ref_exact: list[np.ndarray] = []
        _flatten(got, got_layout, got_numbers)
        _flatten(ref, ref_layout, ref_numbers, ref_exact)
        if got_layout != ref_layout:
            at = next((i for i, (x, y) in enumerate(zip(got_layout, ref_layout)) if x != y),
                      min(len(got_layout), len(ref_layout)))
            mismatch = f"{_describe(got_layout, at)}, the reference's {_describe(ref_layout, at)}"
        a, b, exact = (np.concatenate(n) if n else np.zeros(0) for n in (got_numbers, ref_numbers, ref_exact))
        exact = exact.astype(bool)
    if a.shape != b.shape:
        return OutputDiff(name=name, shape=_shape(got), max_abs=float("inf"), max_rel=float("inf"),
                          cosine=0.0, within_tolerance=False, mismatch=mismatch)
    if mismatch is None and exact.any():
        mismatch = exact_apart or (None if _numeric(got) else _exact_apart(exact & (a != b), None))
    if apart := _nonfinite_apart(a, b):  # NaN or inf that the reference has not there: no number measures it
        return OutputDiff(name=name, shape=_shape(got), max_abs=float("inf"), max_rel=float("inf"), cosine=0.0,
                          within_tolerance=False, mismatch="; ".join(m for m in (mismatch, apart) if m))
    finite = np.isfinite(a) & np.isfinite(b)  # elsewhere both are NaN, or the same infinity: they agree
    d = np.abs(a[finite] - b[finite])
    max_abs = float(d.max()) if d.size else 0.0
    scale = float(np.abs(b[finite]).max()) if d.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    na, nb = float(np.linalg.norm(a[finite])), float(np.linalg.norm(b[finite]))
    cosine = float(np.dot(a[finite].ravel(), b[finite].ravel()) / (na * nb)) if na > 0 and nb > 0 else \
        (1.0 if na == nb else 0.0)
    cosine = min(1.0, max(-1.0, cosine))  # rounding put it at 1.0000000000000002
    return OutputDiff(name=name, shape=_shape(got), max_abs=max_abs, max_rel=max_rel, cosine=cosine,
                      within_tolerance=mismatch is None and max_rel <= tol, mismatch=mismatch)


def _exact_apart(apart: np.ndarray, dtype: np.dtype | None) -> str | None:
    """Integers or booleans (``dtype``; None: of a sequence or map) that differ at ``apart``, in words."""
    k, n = int(np.count_nonzero(apart)), apart.size
    if not k:
        return None
    what = "boolean" if dtype is not None and dtype.kind == "b" else f"{dtype}" if dtype is not None else "integer"
    return (f"{what} values differ at {k} of {n} position{'s' if n != 1 else ''} (integers and booleans are "
            "compared exactly)")


def _kinds(x: np.ndarray) -> np.ndarray:
    """Each value's kind: 0 finite, 1 NaN, 2 +inf, 3 -inf."""
    return np.select([np.isnan(x), x == np.inf, x == -np.inf], [1, 2, 3], 0)


_KIND_NAMES = ("finite", "NaN", "+inf", "-inf")


def _nonfinite_apart(a: np.ndarray, b: np.ndarray) -> str | None:
    """Where ``a`` (an output's numbers) and ``b`` (the reference's) are not both finite and differ
    in kind (NaN where the reference is finite or the other way round, inf where it is NaN, infinities
    of opposite sign), in words; None where there is no such value. NaN against NaN agrees (as
    ``numpy.testing``'s ``equal_nan``), and so does an infinity against the same one."""
    if np.isfinite(a).all() and np.isfinite(b).all():
        return None
    ka, kb = _kinds(a), _kinds(b)
    apart = ka != kb
    if not apart.any():
        return None
    n = a.size
    parts = []
    for i, j in dict.fromkeys(zip(ka[apart].tolist(), kb[apart].tolist())):  # as they first come
        k = int(np.count_nonzero(apart & (ka == i) & (kb == j)))
        parts.append(f"{_KIND_NAMES[i]} at {k} of {n} value{'s' if n != 1 else ''} where the reference's "
                     f"{'is' if k == 1 else 'are'} {_KIND_NAMES[j]}")
    return ", and ".join(parts)


def reference_note(name: str, ref: Any) -> str | None:
    """A word on a reference output that is not all finite: there a target agrees by giving the same
    NaN or inf, which says little of its numbers (all NaN: nothing at all). None for a finite one."""
    numbers: list[np.ndarray] = []
    _flatten(ref, [], numbers)
    b = np.concatenate(numbers) if numbers else np.zeros(0)
    bad = ~np.isfinite(b)
    if not bad.any():
        return None
    kinds = [(int(np.count_nonzero(np.isnan(b))), "NaN"), (int(np.count_nonzero(np.isinf(b))), "inf")]
    share = " and ".join(f"{_percent(k, b.size)} {what}" for k, what in kinds if k)
    if bad.all():
        return (f"reference output {name!r} is {share}: the comparison says little (a target agrees by giving "
                f"the same NaN/inf, whatever its numbers); check the inputs")
    return (f"reference output {name!r} is {share} ({int(bad.sum())} of {b.size} values): those values agree "
            f"only as NaN/inf, not as numbers")


def _percent(k: int, n: int) -> str:
    """``k`` of ``n`` as a percentage that reads 100% only when it is all, and 0% never."""
    p = 100 * k / n
    return "100%" if k == n else f"{min(p, 99.9):.3g}%" if p >= 0.1 else "<0.1%"


def _describe(layout: list[Any], at: int) -> str:
    """One item of a ``_flatten`` layout, in words (``at`` past its end: nothing more)."""
    if at >= len(layout):
        return "nothing more"
    kind, *rest = layout[at]
    if kind == "tensor":
        if len(rest) > 2:  # strings, compared exactly
            kind_name = {"U": "string", "S": "bytes", "O": "object"}.get(rest[1], rest[1])
            return f"a {kind_name} tensor {list(rest[0])} of values {list(rest[2])[:4]}"
        return f"a {np.dtype(rest[1])} tensor {list(rest[0])}"
    if kind == "map":
        return f"a map with keys {list(rest[0])[:8]}"
    if kind == "sequence":
        return f"a sequence of {rest[0]}"
    return f"the value {rest[0]}"


def tolerance(precision: str, spec: TargetSpec | None = None) -> float:
    """The largest max |err| / max |cpu| within which a run at ``precision`` is "ok": ``TOLERANCE``'s, and at
    native that of the format the target's spec says its matrix units take then (``native_format``)."""
    if precision == "native" and spec is not None and spec.native_format:
        return TOLERANCE[spec.native_format]
    return TOLERANCE.get(precision, TOLERANCE["native"])


def tolerance_text(rep: CompareReport) -> str:
    """The tolerance a table's title states: the one every target row was judged by, or per tolerance the
    targets judged by it where they differ (a native run takes its target's ``native_format``'s, so a
    report of the gpu alone at native is judged by tf32's, not by ``rep.tolerance``, native's own)."""
    by_tol: dict[float, list[str]] = {}
    for r in rep.results:
        if r.target != rep.reference and r.tolerance is not None:
            by_tol.setdefault(r.tolerance, []).append(r.target)
    if len(by_tol) <= 1:
        return f"{next(iter(by_tol), rep.tolerance):g}"
    return "; ".join(f"{', '.join(ts)} {v:g}" for v, ts in by_tol.items())


def verdict(r: TargetResult) -> str:
    """A row's status as the table shows it (``TargetResult.verdict``)."""
    if r.status != "ok":
        return r.status
    if all(o.within_tolerance for o in r.outputs):
        return "ok"
    return "wrong output" if any(o.mismatch for o in r.outputs) else "ok (beyond tolerance)"


def compare_targets(target: str | Sequence[str]) -> list[str]:
    """``all``, or the targets named (``a,b``, or a list of names) after the cpu reference; an unknown
    name is an error before anything is compiled (it lists the installed targets)."""
    names = chosen_targets(target, "compare")
    if names is None:
        return sorted(registry().targets, key=lambda t: (t != REFERENCE_TARGET, t))
    return ([REFERENCE_TARGET] if REFERENCE_TARGET not in names else []) + names


def _peers(peers: Any) -> list[str]:
    """The peers named: a list or tuple of names, one name or ``"a,b"``, None for none."""
    if peers is None:
        return []
    if isinstance(peers, str):
        peers = [p.strip() for p in peers.split(",") if p.strip()]
    if not isinstance(peers, (list, tuple)) or not all(isinstance(p, str) for p in peers):
        raise InputError(f"peers must be a list of peer names, not {peers!r}", where="compare",
                         hint=f"e.g. peers=['onnxruntime']; the peers: {', '.join(PEERS)}")
    check_peers(list(peers))
    return list(dict.fromkeys(peers))


def _inputs(inputs: Any) -> dict[str, Any] | None:
    """The feeds given (a dict of name -> array), or None for seeded random ones."""
    if inputs is None:
        return None
    if not isinstance(inputs, Mapping):
        raise InputError(f"inputs must be a dict of input name -> numpy array, not {type(inputs).__name__}",
                         where="compare", hint="e.g. inputs={'x': np.zeros((1, 3), np.float32)}; None: random inputs")
    return dict(inputs)


def compare(model: ModelLike, targets: str = "all", *, precision: str = "exact",
            inputs: Mapping[str, np.ndarray] | None = None, fallback: str = "error",
            dims: Mapping[str, int] | None = None, seed: int = 0, bisect: bool = False,
            progress: Any = None, peers: Sequence[str] = (), **target_options: Any) -> CompareReport:
    """Compile and run ``model`` on each target; diff every output against the cpu reference. Each of
    ``peers`` (``hal.peers.PEERS``: onnxruntime) runs the model on the same feeds, checked the same way.
    A NaN or inf where the reference has another kind of value is a mismatch (NaN against NaN agrees);
    a reference output that is not all finite is one of the report's ``warnings``."""
    peers = _peers(peers)
    make_options(precision)  # an unknown precision: one error, not a row of them
    check_fallback(fallback, "compare")
    if not isinstance(bisect, (bool, np.bool_)):
        raise InputError(f"bisect must be True or False, not {bisect!r}", where="compare")
    if progress is not None and not callable(progress):
        raise InputError(f"progress must be a function of the target's name, not {type(progress).__name__}",
                         where="compare")
    names = compare_targets(targets)
    given = _inputs(inputs)
    # dims binds the model's open dimensions in every session (their figures price those sizes) and so
    # sizes the random inputs; a loaded Graph cannot be bound, and dims then sizes the random inputs alone
    bound = checked_dims(dims, "compare") if not isinstance(model, Graph) else None
    graph: Graph = load(model, dims=bound)
    feeds = given if given is not None else random_feeds(graph, seed=seed, dims=None if bound else dims)
    tol = tolerance(precision)
    ref = InferenceSession(graph_copy(model), target=REFERENCE_TARGET, dims=bound)
    try:
        ref_out = ref.run(None, feeds)
    except RunError as e:
        if given is None and (note := ones_note(graph, feeds, dims)):
            e.add_hint(note)
        raise
    out_names = [o.name for o in ref.get_outputs()]
    results = []
    sessions: dict[str, InferenceSession] = {}
    for name in names:
        if progress is not None:
            progress(name)
        prec = "exact" if name == REFERENCE_TARGET else precision
        res = TargetResult(target=name, status="ok", precision=prec)
        spec = get_target(name).spec
        offered = spec.precisions
        if prec not in offered:  # the hardware's answer, as a node it cannot run is: not an error of the run
            res.status = "refused"
            res.reason = f"target {name!r} offers no {prec} precision (it offers {', '.join(offered)})"
            results.append(res)
            continue
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", FallbackWarning)
                sess = ref if name == REFERENCE_TARGET else InferenceSession(
                    graph_copy(model), target=name, precision=prec, fallback=fallback, dims=bound, **target_options)
            t0 = time.perf_counter()
            got = sess.run(None, feeds)
            res.host_run_time_s = time.perf_counter() - t0
        except (UnsupportedOpError, ResourceError) as e:
            res.status, res.reason = "refused", str(e)
            results.append(res)
            continue
        except HalError as e:
            res.status, res.reason = "error", str(e)
            if isinstance(e, RunError) and given is None and (note := ones_note(graph, feeds, dims)):
                res.reason += f" — {note}"
            results.append(res)
            continue
        r = sess.report
        res.placement = dict(Counter(p.target for p in r.placement))
        if len(res.placement) > 1:
            res.status = "fell back"
            res.reason = "; ".join(str(w.message) for w in caught) or \
                f"{r.details.get('fallback_nodes', 0)} node(s) ran on {REFERENCE_TARGET}"
        res.tolerance = tolerance(prec, spec)
        res.outputs = [diff(n, g, e, res.tolerance) for n, g, e in zip(out_names, got, ref_out)]
        res.latency_s, res.throughput_per_s, res.tokens_per_s = r.latency_s, r.throughput_per_s, r.tokens_per_s
        res.peak_memory_bytes, res.memory, res.devices = r.peak_memory_bytes, r.memory, r.devices
        res.energy_j, res.compile_time_s = r.energy_j, r.compile_time_s
        res.kernel_count, res.node_count = r.kernel_count, r.node_count
        results.append(res)
        sessions[name] = sess
    rep = CompareReport(model=str(model) if not isinstance(model, bytes) else "<bytes>", precision=precision,
                        tolerance=tol, inputs={k: list(np.shape(v)) for k, v in feeds.items()}, results=results,
                        warnings=[w for n, e in zip(out_names, ref_out) if (w := reference_note(n, e))])
    rep._sessions, rep._feeds = sessions, feeds
    rep.peers = [_peer_result(name, model, feeds, out_names, ref_out, tol, graph) for name in peers]
    for res in [*rep.results, *rep.peers]:
        res.verdict = verdict(res)
    if bisect:
        from hal.bisect import bisect as bisect_one
        from hal.bisect import bisect_peer

        for res in [*results, *rep.peers]:
            bad = [o.name for o in res.outputs if not o.within_tolerance]
            if res.target == REFERENCE_TARGET or not bad:
                continue
            if res in rep.peers:
                rep.bisect.append(bisect_peer(model, res.target, feeds, output=bad[0], tolerance=tol))
            else:
                rep.bisect.append(bisect_one(model, res.target, feeds, output=bad[0],
                                             precision=res.precision, tolerance=res.tolerance or tol,
                                             **target_options))
    return rep


def _peer_result(name: str, model: ModelLike, feeds: Mapping[str, np.ndarray], out_names: list[str],
                 ref_out: list[Any], tol: float, graph: Graph) -> TargetResult:
    res = TargetResult(target=name, status="ok", precision="as it runs")
    if isinstance(model, Graph):
        res.status, res.reason = "error", "a peer runs a model file, bytes or ModelProto, not a hal Graph"
        return res
    try:
        got, res.host_run_time_s = run_peer(name, model, feeds)
    except PeerUnavailable as e:
        res.status, res.reason = "error", str(e)
        return res
    res.tolerance = tol
    res.outputs = [diff(n, g, e, tol) for n, g, e in zip(out_names, got, ref_out)]
    if not all(o.within_tolerance for o in res.outputs) and (known := known_deviations(name, graph.nodes)):
        res.reason = "; ".join(known)
    return res
