"""Runtimes outside hal that ``hal compare`` runs beside the targets, on the same feeds, so a model
team sees where hal's reference stands against the runtime it deploys with: onnxruntime's CPU
provider, with the graph optimisations a deployment runs (its default, ORT_ENABLE_ALL).

A peer is optional: hal never imports one to run a model, and a peer that is not installed, or
that refuses the model, is a row of the compare that says why, not a failure of the compare.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from hal.errors import HalError

#: the peers a compare can run
PEERS = ("onnxruntime",)


class PeerUnavailable(Exception):
    """The peer cannot run this model here (not installed, or it refused the model): the message says why."""


def check_peers(names: list[str] | tuple[str, ...]) -> None:
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise HalError(f"no peer named {', '.join(map(repr, unknown))}", where="hal.compare",
                       hint=f"choose from {', '.join(PEERS)}")


def run_peer(name: str, model: Any, feeds: Mapping[str, Any]) -> tuple[list[Any], float]:
    """``name``'s outputs for ``feeds`` (in the model's output order) and the seconds its run took.
    ``model``: a path, bytes or ModelProto (a zoo name as hal builds it)."""
    check_peers([name])
    try:
        import onnxruntime as ort
    except ImportError:
        raise PeerUnavailable("onnxruntime is not installed (pip install onnxruntime)") from None
    import os

    from hal.graph.load import parse_model

    source = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
    if source is None or source.startswith("zoo:"):
        source = parse_model(model)[0].SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # its warnings are not the compare's
    try:
        sess = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        wanted = {i.name for i in sess.get_inputs()}
        t0 = time.perf_counter()
        out = sess.run(None, {k: v for k, v in feeds.items() if k in wanted})
        took = time.perf_counter() - t0
    except Exception as e:  # onnxruntime's own errors (Fail, InvalidGraph, NotImplemented, ...)
        raise PeerUnavailable(f"onnxruntime {ort.__version__}: {str(e).strip().splitlines()[0][:500]}") from None
    return list(out), took


__all__ = ["PEERS", "PeerUnavailable", "check_peers", "run_peer"]
