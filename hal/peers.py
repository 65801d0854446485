"""Runtimes outside hal that ``hal compare`` runs beside the targets, on the same feeds, so a model
team sees where hal's reference stands against the runtime it deploys with: onnxruntime's CPU
provider, with the graph optimisations a deployment runs (its default, ORT_ENABLE_ALL).

A peer is optional: hal never imports one to run a model, and a peer that is not installed, that
refuses the model or that crashes on it is a row of the compare that says why, not a failure of the
compare. It runs in a process of its own, as a malformed model can take a native runtime down with
it; its scratch folder goes when it ends.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hal.errors import InputError

__all__ = ["PEERS", "PeerUnavailable", "check_peers", "known_deviations", "run_peer"]

#: the peers a compare can run
PEERS = ("onnxruntime",)


class PeerUnavailable(Exception):
    """The peer cannot run this model here (not installed, refused it, crashed): the message says why."""


def check_peers(names: list[str] | tuple[str, ...]) -> None:
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise InputError(f"no peer named {', '.join(map(repr, unknown))}", where="hal.compare",
                       hint=f"choose from {', '.join(PEERS)}")


def _qmoe_q4_repacked(node: Any) -> bool:
    """A QMoE that onnxruntime 1.32's CPU kernel runs through MLAS's blocked Q4 GEMM, by its
    environment (``ORT_USE_MLAS_Q4_GEMM_MOE``) or else its default: 4-bit experts scaled per row,
    one projection without zero points, the path on unless neither has any (its "known accuracy-loss
    case"), so on where the other one has some."""
    attrs = node.attrs
    if node.op_type != "QMoE" or node.domain != "com.microsoft" or attrs.get("block_size", 0) > 0:
        return False
    if attrs.get("expert_weight_bits", 4) != 4:
        return False
    zeros = [len(node.inputs) > i and bool(node.inputs[i]) for i in (11, 12)]  # fc1_, fc2_zero_points
    forced = os.environ.get("ORT_USE_MLAS_Q4_GEMM_MOE", "").strip().lower()
    if forced in ("0", "false"):
        return False
    return not all(zeros) and (any(zeros) or forced in ("1", "true"))


def _avx512() -> bool:
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # (numpy moved it): the note is then given without the host check
        return True
    return bool(__cpu_features__.get("AVX512F"))


#: what a peer computes otherwise than an op's definition, and where: (peer, which nodes, whether
#: on this host, what to tell the user). hal computes the definition; a compare where the peer
#: disagrees names the entries its model meets, so the row is not read as hal's error.
#: onnxruntime 1.32's QMoE, measured here (benchmarks/README.md, the differential's PEER_ENV): on an
#: AVX-512 host MLAS's blocked Q4 GEMM packs a symmetric 4-bit projection scaled per row by
#: quantising its dequantised weights a second time (4-7% of the output where codes miss the lowest one)
_DEVIATIONS = [
    ("onnxruntime", _qmoe_q4_repacked, _avx512,
     "on this AVX-512 CPU onnxruntime's QMoE runs a 4-bit projection scaled per row and without zero "
     "points through MLAS's blocked Q4 GEMM when the other projection has zero points (its default "
     "turns that path off only when neither has), and packing for it quantises the dequantised "
     "weights a second time; ORT_USE_MLAS_Q4_GEMM_MOE=0 in its environment runs the op as defined, "
     "as hal does"),
]


def known_deviations(name: str, nodes: Any) -> list[str]:
    """What peer ``name`` is known to compute otherwise than the definitions of ``nodes`` (a graph's
    nodes) on this host: one line each, for a compare row where the peer disagrees."""
    return [text for peer, applies, here, text in _DEVIATIONS
            if peer == name and any(applies(n) for n in nodes) and here()]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ValueError, ImportError):  # set to None in sys.modules, or a broken parent package
        return False


def run_peer(name: str, model: Any, feeds: Mapping[str, Any], *, optimize: bool = True) -> tuple[list[Any], float]:
    """``name``'s outputs for ``feeds`` (in the model's output order) and the seconds its run took.
    ``model``: a path, bytes or ModelProto (a zoo name as hal builds it); ``optimize``: with the
    peer's graph optimisations (as deployed), else the nodes as written (``hal.bisect.bisect_peer``)."""
    check_peers([name])
    if not _installed(name):
        raise PeerUnavailable(f"{name} is not installed (pip install {name})")
    from hal.graph.load import parse_model

    with tempfile.TemporaryDirectory(prefix="hal-peer-") as tmp:
        folder = Path(tmp)
        source = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
        if source is None or source.startswith("zoo:"):
            source = str(folder / "model.onnx")
            Path(source).write_bytes(parse_model(model)[0].SerializeToString())
        (folder / "feeds.pkl").write_bytes(pickle.dumps(dict(feeds)))
        proc = subprocess.run([sys.executable, "-c", _CHILD, name, source, str(folder), str(int(optimize))],
                              capture_output=True, text=True)
        if proc.returncode < 0:
            raise PeerUnavailable(f"{name} crashed on this model ({signal.Signals(-proc.returncode).name})")
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            raise PeerUnavailable(lines[-1][:500] if lines else f"{name} exited with status {proc.returncode}")
        done = pickle.loads((folder / "out.pkl").read_bytes())  # written by the child below, from our feeds
    return done["outputs"], done["seconds"]


#: the child (``python -c``, so that it imports neither hal nor anything beside it): runs the model
#: in onnxruntime on the pickled feeds, writes the outputs and the run's seconds; an error of
#: onnxruntime's own (Fail, InvalidGraph, NotImplemented, ...) is its last line on stderr
_CHILD = """
import pickle, sys, time
from pathlib import Path
import onnxruntime as ort
source, folder = sys.argv[2], Path(sys.argv[3])
feeds = pickle.loads((folder / "feeds.pkl").read_bytes())
options = ort.SessionOptions()
options.log_severity_level = 3
if sys.argv[4] == "0":
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
try:
    sess = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in sess.get_inputs()}
    t0 = time.perf_counter()
    out = sess.run(None, {k: v for k, v in feeds.items() if k in wanted})
    took = time.perf_counter() - t0
except Exception as e:
    sys.exit("onnxruntime " + ort.__version__ + ": " + " ".join(str(e).split())[:500])
(folder / "out.pkl").write_bytes(pickle.dumps({"outputs": list(out), "seconds": took}))
"""
