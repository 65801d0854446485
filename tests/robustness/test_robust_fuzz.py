"""The bounded fuzz suite (hypothesis): mutated valid models — attributes, shapes, types, wiring, ops,
opsets, initializers, metadata, raw bytes — either work or raise a HalError, never another exception.

The mutators are benchmarks/fuzz_inputs.py's; there they run for minutes (``python -m benchmarks.fuzz``),
here for a few seconds with a fixed seed, so CI is deterministic.
"""

from __future__ import annotations

import warnings

import pytest
from _robust_models import TARGETS, bomb_models, elementwise_model, matmul_with_weight, mlp_model, relu_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.fuzz import plan_cli, plan_session, run_cli, run_loader, run_session
from benchmarks.fuzz_inputs import HypothesisDraw, make_input
from hal.errors import HalError

SEEDS = [m.SerializeToString() for m in (relu_model(), mlp_model(), elementwise_model(), matmul_with_weight())]
SEEDS += [m.SerializeToString() for m, _, _ in bomb_models().values()]

FAST = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


def _expect_hal_error_or_nothing(fn, *args) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fn(*args)
        except HalError:
            pass


@FAST
@given(st.data())
def test_mutated_models_load_or_raise_a_hal_error(data):
    d = HypothesisDraw(data)
    _expect_hal_error_or_nothing(run_loader, make_input(SEEDS, d, structured=1.0), {}, {})


@FAST
@given(st.data())
def test_mutated_bytes_load_or_raise_a_hal_error(data):
    d = HypothesisDraw(data)
    _expect_hal_error_or_nothing(run_loader, make_input(SEEDS, d, structured=0.0), {}, {})


@pytest.mark.parametrize("target", TARGETS)
def test_mutated_models_compile_and_run_or_raise_a_hal_error(target):
    ctx = {"targets": [target]}

    @settings(FAST, max_examples=40)
    @given(st.data())
    def check(data):
        d = HypothesisDraw(data)
        model = make_input(SEEDS, d)
        _expect_hal_error_or_nothing(run_session, model, plan_session(d, ctx), ctx)

    check()


def test_mutated_models_through_the_cli_exit_0_or_2(tmp_path):
    ctx = {"targets": TARGETS, "workdir": tmp_path}

    @settings(FAST, max_examples=30)
    @given(st.data())
    def check(data):
        d = HypothesisDraw(data)
        model = make_input(SEEDS, d)
        run_cli(model, plan_cli(d, ctx), ctx)  # raises CliInternalError on exit 3

    check()


@pytest.mark.slow
def test_fuzz_harness_runs_and_records_its_counts(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    out, scratch = tmp_path / "fuzz.json", tmp_path / "scratch"
    scratch.mkdir()
    res = subprocess.run([sys.executable, "-m", "benchmarks.fuzz", "--seconds", "6", "--node-cases", "0", "--out",
                          str(out), "--findings", str(tmp_path / "findings")], capture_output=True, text=True,
                         timeout=180, cwd=Path(__file__).resolve().parents[2],
                         env={**os.environ, "TMPDIR": str(scratch)})
    doc = json.loads(out.read_text())
    assert doc["schema"] == "hal-fuzz/1" and doc["inputs"] > 0
    assert set(doc["by_target"]) <= {"loader", "session", "cli"}
    assert (doc["crashes"], doc["hangs"], doc["unhandled_exceptions"], doc["memory_escapes"]) == (0, 0, 0, 0), \
        doc["findings"]
    assert res.returncode == 0, res.stderr[-2000:]
    assert not list(scratch.iterdir()), "the fuzzer left its scratch files behind"
