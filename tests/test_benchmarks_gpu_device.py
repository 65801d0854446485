"""The H200 calibration's two halves: what travels to the GPU machine, and the report on what came back."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from benchmarks import calibration_gpu_device as cal
from benchmarks import gpu_device_models, gpu_device_pack
from hal import zoo

MEASURED = Path(cal.__file__).parent / "results" / "device_h200"


def test_stripped_weights_travel_as_shapes_and_come_back_runnable(tmp_path):
    proto = zoo.build("tiny-gpt")
    sizes = {t.name: len(t.raw_data) for t in proto.graph.initializer}
    dropped = gpu_device_pack.strip_weights(proto)
    assert dropped > 0.9 * sum(sizes.values())
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    assert path.stat().st_size < 0.1 * sum(sizes.values())
    restored = gpu_device_models._restore(path)
    for before, after in zip(proto.graph.initializer, restored.graph.initializer, strict=True):
        assert list(before.dims) == list(after.dims) and before.data_type == after.data_type
    from benchmarks.models import transformer_feeds

    feeds = transformer_feeds(restored)
    out = ort.InferenceSession(restored.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert all(np.isfinite(o).all() for o in out)


def _fatbin(entries: list[tuple[int, bytes]]) -> bytes:
    """A fatbin container in the layout zero_foreign_cubins reads: header, then (header, payload) entries."""
    body = b""
    for arch, payload in entries:
        header = struct.pack("<HHIQ", 2, 0, 64, len(payload)) + struct.pack("<IIHHI", 0, 0, 0, 0, arch)
        body += header.ljust(64, b"\0") + payload
    return struct.pack("<IHHQ", gpu_device_pack.FATBIN_MAGIC, 1, 16, len(body)) + body


@pytest.mark.skipif(not (shutil.which("objcopy") and shutil.which("readelf")), reason="needs binutils")
def test_foreign_cubins_are_zeroed_and_hoppers_kept(tmp_path):
    blob = tmp_path / "fat.bin"
    blob.write_bytes(_fatbin([(80, b"\x11" * 200), (90, b"\x22" * 300), (120, b"\x33" * 100)]))
    lib = tmp_path / "lib.so"
    subprocess.run(["objcopy", "--add-section", f".nv_fatbin={blob}",
                    "--set-section-flags", ".nv_fatbin=alloc,readonly", shutil.which("true"), str(lib)], check=True)
    before = lib.read_bytes()
    zeroed, kept = gpu_device_pack.zero_foreign_cubins(lib, 90)
    after = lib.read_bytes()
    assert (zeroed, kept) == (300, 300) and len(after) == len(before)
    assert b"\x22" * 300 in after and b"\x11" * 200 not in after and b"\x33" * 100 not in after


def test_report_sets_predictions_beside_the_h200_measurements():
    measured = {}
    for name in ("gpu_device.json", "gpu_sweep.json", "gpu_profile.json", "gpu_alignment.json"):
        measured.update(json.loads((MEASURED / name).read_text()))
    target = cal._target()
    assert target.spec.name == "gpu-h200"
    bf16 = [r for r in measured["gemm_sweep"] if r["format"] == "bf16"]
    sweep = cal.gemm_sweep_report(target, bf16)["by_format"]["bf16"]
    with_latency, roofline = sweep["with_gemm_latency"], sweep["roofline_only"]
    assert with_latency["points"] == roofline["points"] == 63
    # the GEMM latency term is what brings small GEMMs to the measured time
    assert abs(np.log(with_latency["geomean"])) < abs(np.log(roofline["geomean"]))
    assert 0.8 < with_latency["median_measured_over_predicted"] < 1.25
    align = cal.alignment_sweep_report(target, measured["alignment_sweep"])["by_format"]
    for fmt in ("bf16", "tf32"):  # rows off 16 bytes: the fallback rates fit, the aligned ones do not
        assert 0.75 < align[fmt]["misaligned"]["median_measured_over_predicted"] < 1.33
        assert align[fmt]["misaligned_as_if_aligned"]["median_measured_over_predicted"] > 2
    convs = cal.conv_sweep_report(target, measured["conv_sweep"])["resnet50_total"]
    assert {t["convs"] for t in convs.values()} == {53}  # ResNet-50's Conv nodes, each format
    row = cal.model_report(target, "light_squeezenet", measured["models"]["light_squeezenet"], None)
    graph = row["fp32_cuda_graph"]
    assert graph["measured_s"] == measured["models"]["light_squeezenet"]["fp32_cuda_graph"]["median_s"]
    assert graph["measured_over_predicted"] == pytest.approx(graph["measured_s"] / graph["predicted_s"], abs=1e-3)


def test_committed_report_renders_as_the_readme_tables():
    res = json.loads(cal.RESULTS.read_text())
    md = cal.markdown(res)
    assert "| bf16 | 63 |" in md and "| ResNet-50's 53 convs" in md and "| bert-bench bf16 |" in md
    # every model measured through onnxruntime has its row, with the ratio the report computed
    for name, row in res["models"].items():
        assert f"| {name} | " in md and str(row["fp32"]["measured_over_predicted"]) in md
