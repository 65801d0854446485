"""The gpu target's device counts: a count tensor parallelism cannot use is an error that says why and
which counts it can use; the automatic choice takes only those; HBM advice names a count that works.

Shape-only zoo LLMs: compile-only, no weights."""

from __future__ import annotations

import dataclasses

import pytest
from hal_gpu.compiler import GpuTarget

import hal
from hal.graph.load import load
from hal.graph.passes import optimize
from hal.plugins import get_target
from hal.specs import CompileOptions, builtin_sheet
from hal.zoo import tiny

DECODE = {"phase": "decode", "batch": 1, "context": 1024}


def _graph(model: str, zoo: dict | None = None):
    return optimize(load(model, zoo_params=dict(zoo) if zoo is not None else None))


@pytest.fixture(scope="module")
def llama8b():
    return _graph("zoo:llama-3.1-8b", DECODE)


@pytest.fixture(scope="module")
def llama70b():
    return _graph("zoo:llama-3.1-70b", DECODE)


@pytest.fixture(scope="module")
def tiny_gpt():
    return _graph("zoo:tiny-gpt")


def _compile(graph, devices, precision="fp8", target=None):
    target = target or get_target("gpu")
    return target.compile(graph, CompileOptions(precision=precision, devices=devices)).report


def _error(graph, devices, precision="fp8") -> hal.CompileError:
    with pytest.raises(hal.CompileError) as err:
        _compile(graph, devices, precision)
    return err.value


# -- a count that does not divide the heads ------------------------------------------------------------
def test_three_gpus_for_llama_8b_is_refused_with_the_head_counts_and_the_counts_that_work(llama8b):
    # was: 3 devices reported, 14.4 GiB per device (only the LM head split), 3x the energy
    e = _error(llama8b, 3)
    assert not isinstance(e, hal.ResourceError)  # the count does not fit the model, not the memory
    what = e.what
    assert "cannot use 3 GPUs" in what
    assert "32 heads" in what and "8 heads" in what  # query heads, and the KV heads they share
    assert "1, 2, 4 or 8 GPUs" in e.hint and "divisors of 8" in e.hint
    assert "devices=2 or devices=4" in e.hint  # the usable counts either side of 3 (both fit)


@pytest.mark.parametrize("devices", [5, 6, 7])
def test_no_count_between_4_and_8_splits_llama_8b(llama8b, devices):
    # 7 divides the MLP width (14336) but not the heads: it used to split the MLP only
    e = _error(llama8b, devices)
    assert f"cannot use {devices} GPUs" in e.what and "8 heads" in e.what
    assert "devices=4 or devices=8" in e.hint


@pytest.mark.parametrize("devices", [3, 8])
def test_tiny_gpt_splits_only_by_whole_heads(tiny_gpt, devices):
    # 8 divides tiny-gpt's widths (64, 256) but not its 4 heads: it used to split heads in half
    e = _error(tiny_gpt, devices, "bf16")
    assert f"cannot use {devices} GPUs" in e.what and "4 heads" in e.what
    assert "1, 2 or 4 GPUs" in e.hint


def test_estimate_reports_the_refusal_as_an_error_row():
    e = hal.estimate("zoo:tiny-gpt", "gpu", devices=3).estimates[0]
    assert e.status == "error" and e.devices is None and "4 heads" in e.error


def test_usable_counts_still_split_the_whole_model(llama8b):
    one, two, four = (_compile(llama8b, d) for d in (1, 2, 4))
    w1 = one.details["weights_bytes_per_device"]
    assert two.devices == 2 and four.devices == 4
    # every layer splits; only the embedding table and the norms stay whole
    embed = 128256 * 4096 * 2  # fp16 embedding (a Gather, not a GEMM)
    assert two.details["weights_bytes_per_device"] < (w1 - embed) / 2 + embed * 1.01
    assert four.details["weights_bytes_per_device"] < (w1 - embed) / 4 + embed * 1.01
    assert "tensor_parallel_replicated" not in four.details


# -- the HBM advice -------------------------------------------------------------------------------------
@pytest.mark.parametrize("devices, advice", [(3, "devices=2 or devices=4"), (6, "devices=4 or devices=8")])
def test_70b_at_a_count_that_does_not_divide_is_told_the_usable_counts_that_fit(llama70b, devices, advice):
    # was: "needs more HBM ... 139.7 GB per GPU ... raise devices", wrong for 6 (8 works)
    e = _error(llama70b, devices, "native")
    assert not isinstance(e, hal.ResourceError)
    assert "64 heads" in e.what and "8 heads" in e.what
    assert advice in e.hint and "raise devices" not in e.hint


def test_70b_on_one_gpu_is_told_the_next_count_that_fits(llama70b):
    with pytest.raises(hal.ResourceError) as err:
        _compile(llama70b, 1, "native")
    assert "use devices=2," in err.value.hint and "raise devices" not in err.value.hint


def test_when_no_usable_count_fits_the_advice_says_so():
    # 405B in fp16: 810 GB, over 100 GB per GPU even on 8; raising devices cannot help
    graph = _graph("zoo:llama-3.1-405b", DECODE)
    with pytest.raises(hal.ResourceError) as err:
        _compile(graph, 8, "native")
    hint = err.value.hint
    assert "raise devices" not in hint and "no count" in hint and "1, 2, 4 or 8" in hint and "fp8" in hint


def test_more_gpus_than_a_node_names_the_usable_counts(tiny_gpt):
    with pytest.raises(hal.ResourceError) as err:
        _compile(tiny_gpt, 16, "bf16")
    assert "1, 2 or 4 GPUs" in err.value.hint


# -- the automatic choice -------------------------------------------------------------------------------
def _three_head_gpt(monkeypatch):
    """tiny-gpt with 3 heads of 16 (widths 48 and 192, vocab 96): tensor parallelism can use 1 or 3 GPUs."""
    monkeypatch.setitem(tiny.TINY_GPT, "hidden", 48)
    monkeypatch.setitem(tiny.TINY_GPT, "heads", 3)
    monkeypatch.setitem(tiny.TINY_GPT, "ffn", 192)
    monkeypatch.setitem(tiny.TINY_GPT, "vocab", 96)
    return optimize(load(tiny.build_tiny_gpt()))


def test_automatic_choice_takes_only_usable_counts(monkeypatch):
    graph = _three_head_gpt(monkeypatch)
    one = _compile(graph, 1, "bf16")
    # an HBM that one GPU overflows but two would hold (2 divides 48 and 192, not the 3 heads):
    # the old choice, trying 1, 2, 4, 8, took 2 and split heads in half
    target = GpuTarget(builtin_sheet("gpu-h100.toml"))
    target.gpu = dataclasses.replace(target.gpu, hbm_bytes=one.peak_memory_bytes - 1)
    rep = _compile(graph, None, "bf16", target)
    assert rep.devices == 3 and [t["devices"] for t in rep.details["devices_tried"]] == [1, 3]
    assert "3 heads" in _error(graph, 2, "bf16").what


# -- an output head that does not divide stays whole, and the report says so --------------------------
def test_an_lm_head_the_count_does_not_divide_is_replicated_and_reported(monkeypatch):
    monkeypatch.setitem(tiny.TINY_GPT, "vocab", 250)  # 4 heads, widths 64 and 256: 4 splits them; not 250
    graph = optimize(load(tiny.build_tiny_gpt()))
    one, four = _compile(graph, 1, "bf16"), _compile(graph, 4, "bf16")
    assert four.devices == 4 and four.details["tensor_parallel_replicated"] == ["lm_head/MatMul"]

    def flops(rep, node):
        return next(k.flops for k in rep.kernels if node in k.nodes)

    assert flops(four, "lm_head/MatMul") == flops(one, "lm_head/MatMul")  # whole on every GPU
    q = "transformer.h.0.attn.q_proj/MatMul"
    assert flops(four, q) == pytest.approx(flops(one, q) / 4)
    assert "logits" not in {k.name.removeprefix("allgather:") for k in four.kernels}  # nothing to gather


def test_a_graph_with_nothing_to_split_is_refused():
    graph = _graph("zoo:tiny-cnn")  # convolutions, and one Gemm of 10 columns
    assert _compile(graph, 2, "bf16").devices == 2  # the Gemm splits
    e = _error(graph, 3, "bf16")
    assert "nothing in it splits over 3" in e.what and "10 output columns" in e.what
    assert "1, 2 or 5 GPUs" in e.hint
