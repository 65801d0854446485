"""Run one case on one target and compare exactly as onnx's backend-test runner does.

A case runs through ``hal.InferenceSession(model, target=T, fallback="error")``, so a node the target
refuses fails the case instead of quietly running on the reference. Outputs are compared with
``onnx.backend.test.runner.Runner.assert_similar_outputs`` and the case's rtol/atol (sequences are
compared element by element, bfloat16 through float32, strings exactly). A failure is a
``CaseFailure`` whose ``cause`` says which kind it is, so the lead can see at a glance whether a
kernel is missing, wrong, or broken.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from hal.conformance.cases import ConformanceCase, to_value
from hal.errors import HalError, ModelError, UnsupportedOpError

Cause = Literal["checker", "no kernel", "refused", "wrong numbers", "error", "environment", "plugin"]

#: causes in the order the report lists them: "no kernel" where hal has no kernel for a node's op (or
#: form), so no target built on its kernels runs it; "refused" where the target turned down a node
#: hal's kernels run (a data-dependent shape on a static schedule, a dtype its hardware lacks);
#: "environment" where this host lacks an optional package hal's own code needs for the case (Pillow
#: for ImageDecoder): not the target's failure, so the case is skipped and never written to a manifest;
#: "plugin" where a plugin's hal_conformance_cases hook failed (``cases.BrokenPluginCase``): that plugin's
#: failure, on every target, never written to a manifest either
CAUSES: tuple[Cause, ...] = ("no kernel", "refused", "wrong numbers", "error", "checker", "environment", "plugin")

#: the top-level packages of hal's own distribution: a module they import that is missing is this
#: host's lack (an optional dependency), not the target's failure
OWN_PACKAGES = frozenset({"hal", "hal_cpu", "hal_gpu", "hal_lpu", "hal_wafer"})


class CaseFailure(AssertionError):
    """A case did not pass: ``cause`` is one of CAUSES, ``str()`` the message."""

    def __init__(self, cause: Cause, message: str):
        self.cause = cause
        self.message = message
        super().__init__(f"[{cause}] {message}")


@dataclass(frozen=True)
class Tolerance:
    """rtol/atol floors a profile sets for a precision; the case's own values apply when larger."""

    rtol: float = 0.0
    atol: float = 0.0

    def widen(self, rtol: float, atol: float) -> tuple[float, float]:
        return max(rtol, self.rtol), max(atol, self.atol)


def assert_similar(expected: list[Any], actual: list[Any], rtol: float, atol: float) -> None:
    """onnx's comparison (``Runner.assert_similar_outputs``), output by output.

    Two gaps of the runner are closed without loosening it: an absent optional (None) must be
    matched by None, and a sequence is compared item by item as one-output lists — the runner's own
    recursion hands it each item bare and then calls ``len()`` on it, which raises for 0-d items.
    """
    from onnx.backend.test.runner import Runner

    if len(actual) != len(expected):
        raise AssertionError(f"expected {len(expected)} output(s), got {len(actual)}")
    for i, (e, a) in enumerate(zip(expected, actual)):
        if e is None or a is None:
            if e is not a:
                raise AssertionError(f"output {i}: expected {_kind(e)}, got {_kind(a)}")
        elif isinstance(e, (list, tuple)):
            if not isinstance(a, (list, tuple)):
                raise AssertionError(f"output {i}: expected a sequence, got {_kind(a)}")
            if len(a) != len(e):
                raise AssertionError(f"output {i}: expected a sequence of {len(e)} item(s), got {len(a)}")
            for j, (ej, aj) in enumerate(zip(e, a)):
                try:
                    assert_similar([ej], [aj], rtol, atol)
                except AssertionError as err:
                    raise AssertionError(f"output {i}, item {j}: {err}") from None
        else:
            Runner.assert_similar_outputs([e], [a], rtol, atol)


def assert_scored(expected: list[Any], actual: list[Any], scores: np.ndarray, rtol: float, atol: float) -> None:
    """A softmax output (``actual``, one array) whose scores are known: onnx's comparison, unless one
    float32 step of the scores would move their softmax past ``rtol`` and they do not all tie.

    Then the shipped output fixes the scores only up to steps it cannot show: light_squeezenet's
    scores are 9.5e9, where a step is 1024, and a score one step above the rest takes its softmax from
    the shipped 1/1000 to about 1/4; OpenBLAS sums a GEMM's rows in orders a step apart, one way on
    one thread and another on two. So the comparison moves back one op: the scores' gaps below their
    largest must be the gaps the shipped softmax implies (log p - log max p), within ``rtol`` of the
    scores' size, as onnx's runner would compare them were they the output; and the output must be
    the softmax of those scores (opset 9's: over all of them), within ``rtol``/``atol``."""
    (e,), (a,) = expected, actual
    s = np.asarray(scores, dtype=np.float64)
    top = float(np.abs(s).max()) if s.size else 0.0
    if (not np.isfinite(top) or np.ptp(s) == 0 or float(np.spacing(np.float32(top))) < math.log1p(rtol)
            or np.shape(e) != np.shape(a) or s.size != np.size(e)):
        assert_similar(expected, actual, rtol, atol)
        return
    with np.errstate(divide="ignore"):
        implied = np.log(np.asarray(e, dtype=np.float64)).ravel()
    gaps = (s - s.max()).ravel()
    np.testing.assert_allclose(gaps, implied - implied.max(), rtol=0, atol=rtol * top,
                               err_msg="the scores the final Softmax reads, below their largest")
    z = np.exp(gaps)
    np.testing.assert_allclose(np.asarray(a), (z / z.sum()).reshape(np.shape(a)), rtol=rtol, atol=atol,
                               err_msg="the output, against the softmax of its scores")


def missing_dependency(e: BaseException) -> str | None:
    """The module hal's own code tried to import and this host lacks, when that is what ``e`` (or an
    exception it was raised from or during) comes down to; None otherwise. A module missing from a
    plugin's own code is not the host's lack but the plugin's failure, and gives None."""
    seen: set[int] = set()
    x: BaseException | None = e
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        if isinstance(x, ModuleNotFoundError):
            # the module whose import statement failed: the innermost frame outside importlib's own
            # (outer frames are whoever caught it, hal's boundary around a plugin's run among them)
            tb, importer = x.__traceback__, ""
            while tb is not None:
                name = str(tb.tb_frame.f_globals.get("__name__", ""))
                if not name.startswith("importlib"):
                    importer = name
                tb = tb.tb_next
            if importer.split(".")[0] in OWN_PACKAGES:
                return (x.name or "a module").split(".")[0]
        x = x.__cause__ or x.__context__
    return None


def _environment(e: BaseException, what: str) -> None:
    """Raise the "environment" CaseFailure when ``e`` comes down to a package this host lacks."""
    module = missing_dependency(e)
    if module is not None:
        raise CaseFailure("environment", f"{what}this host lacks the Python package {module!r} hal needs here: "
                                         f"{_first_line(e)}") from None


def _kind(v: Any) -> str:
    if v is None:
        return "an empty optional"
    if isinstance(v, (list, tuple)):
        return f"a sequence of {len(v)}"
    return f"{type(v).__name__} {getattr(v, 'dtype', '')}{list(getattr(v, 'shape', []))}"


def _first_line(e: BaseException, limit: int = 600) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def input_names(model: Any) -> list[str]:
    inits = {i.name for i in model.graph.initializer} | {s.values.name for s in model.graph.sparse_initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def refusal_cause(e: UnsupportedOpError) -> Cause:
    """"no kernel" when a node the target turned down has no kernel in hal (its reason is the
    registry's: ``hal.target.no_kernel_reason``, a form the kernel refuses, or the engine's own),
    "refused" when every one has and the target declined it."""
    reasons = [reason for _, _, reason in e.nodes]
    if not reasons or any(r.startswith("no kernel") for r in reasons):
        return "no kernel"
    return "refused"


def check_case(case: ConformanceCase, target: str, precision: str = "exact",
               tolerance: Tolerance | None = None) -> None:
    """Run every data set of ``case`` on ``target``; raise CaseFailure when it does not pass."""
    from hal.session import InferenceSession

    rtol, atol = (tolerance or Tolerance()).widen(case.rtol, case.atol)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            model = case.model
            sess = InferenceSession(model, target=target, precision=precision, fallback="error")
        except ModelError as e:
            cause: Cause = "checker" if "checker" in e.what else "error"
            raise CaseFailure(cause, _first_line(e)) from None
        except UnsupportedOpError as e:
            _environment(e, "")
            raise CaseFailure(refusal_cause(e), _first_line(e)) from None
        except Exception as e:  # a compile failure of any kind fails this case only
            _environment(e, "compile: ")
            raise CaseFailure("error", f"compile: {type(e).__name__}: {_first_line(e)}") from None
        names = input_names(model)
        for k, (inputs, expected) in enumerate(case.data_sets):
            feeds = dict(zip(names, (to_value(v) for v in inputs)))
            try:
                got = sess.run(None, feeds)
            except HalError as e:
                _environment(e, f"data set {k}: ")
                raise CaseFailure("error", f"data set {k}: {_first_line(e)}") from None
            except Exception as e:  # a target's executor must not crash the suite
                _environment(e, f"data set {k}: ")
                raise CaseFailure("error", f"data set {k}: {type(e).__name__}: {_first_line(e)}") from None
            try:
                if case.scores and len(got) == len(expected) + 1:
                    got, scores = got[:-1], got[-1]
                    assert_scored([to_value(v) for v in expected], got, scores, rtol, atol)
                else:
                    assert_similar([to_value(v) for v in expected], got, rtol, atol)
            except (AssertionError, TypeError, AttributeError, ValueError) as e:
                raise CaseFailure("wrong numbers", f"data set {k}: {_first_line(e)}") from None
