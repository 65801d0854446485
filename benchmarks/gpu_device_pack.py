"""What travels to the GPU machine for ``gpu_device.py`` (``calibration_gpu_device prepare``).

The benchmark's models with their large float weights stripped to shapes (the GPU machine fills
them with seeded random numbers; timing does not depend on the values), their feeds, ResNet-50's
convs and a manifest; and, given the onnxruntime-gpu wheel, onnxruntime packed for the trip: the
GPU machine has no registry and a call carries at most 64 MiB, so the CUDA provider keeps only its
sm_90 (Hopper) code — the other architectures' cubins are zeroed, which the CUDA runtime never
loads on an sm_90 device — and the C-API library the Python module does not link is left out.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

FATBIN_MAGIC = 0xBA55ED50
#: float weights at least this many elements travel as shapes only
STRIP_ABOVE = 1024


def strip_weights(proto: onnx.ModelProto) -> int:
    """Drop the data of every large float initializer (shape and type stay); returns bytes dropped."""
    dropped = 0
    for t in proto.graph.initializer:
        n = int(np.prod(t.dims)) if t.dims else 1
        if t.data_type == onnx.TensorProto.FLOAT and n >= STRIP_ABOVE and t.data_location == onnx.TensorProto.DEFAULT:
            dropped += 4 * n
            t.ClearField("raw_data")
            t.ClearField("float_data")
    return dropped


def _feeds_file(folder: Path, feeds: dict[str, np.ndarray]) -> str:
    """Write ``feeds`` once per distinct content (the light CNNs share theirs); returns the file name."""
    digest = hashlib.sha256()
    for k in sorted(feeds):
        digest.update(k.encode() + str(feeds[k].dtype).encode() + str(feeds[k].shape).encode() + feeds[k].tobytes())
    name = f"feeds_{digest.hexdigest()[:12]}.npz"
    if not (folder / name).is_file():
        np.savez_compressed(folder / name, **feeds)
    return name


def prepare_models(folder: Path) -> dict[str, Any]:
    from benchmarks.models import load_model, model_names

    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for name in model_names():
        bm = load_model(name)
        proto = bm.proto()
        dropped = strip_weights(proto)
        onnx.save(proto, str(folder / f"{name}.onnx"))
        feeds = _feeds_file(folder, bm.feeds)
        entries.append({"name": name, "kind": bm.kind, "file": f"{name}.onnx", "feeds": feeds,
                        "weights_stripped_bytes": dropped})
    manifest = {"models": entries, "convs": conv_shapes("light_resnet50")}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def conv_shapes(name: str) -> list[dict[str, Any]]:
    """The distinct Conv nodes of a benchmark model (input and weight shapes, strides, pads,
    group) with how often each occurs."""
    from onnx import helper, shape_inference

    from benchmarks.models import load_model

    proto = shape_inference.infer_shapes(load_model(name).proto())
    g = proto.graph
    dims = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
            for vi in [*g.value_info, *g.input, *g.output]}
    dims.update({t.name: list(t.dims) for t in g.initializer})
    found: dict[str, dict[str, Any]] = {}
    for n in g.node:
        if n.op_type != "Conv":
            continue
        a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        conv = {"model": name, "x": dims[n.input[0]], "w": dims[n.input[1]], "strides": list(a.get("strides", [1, 1])),
                "pads": list(a.get("pads", [0, 0, 0, 0])), "group": int(a.get("group", 1))}
        key = json.dumps(conv, sort_keys=True)
        found.setdefault(key, {**conv, "count": 0})["count"] += 1
    return list(found.values())


def zero_foreign_cubins(lib: Path, keep_arch: int) -> tuple[int, int]:
    """Zero the payload of every fatbin entry in ``lib``'s .nv_fatbin section not built for
    ``keep_arch``; returns (bytes zeroed, bytes kept). The container layout: a 16-byte header
    (magic, version, header size, size of the entries), then entries of (kind, -, header size,
    payload size, ..., arch at byte 28)."""
    sections = subprocess.run(["readelf", "-S", "-W", str(lib)], capture_output=True, text=True, check=True).stdout
    line = next(s for s in sections.splitlines() if " .nv_fatbin " in s)
    fields = line.split("]", 1)[1].split()
    off, size = int(fields[3], 16), int(fields[4], 16)
    data = bytearray(lib.read_bytes())
    pos, end, zeroed, kept = off, off + size, 0, 0
    while pos < end:
        magic, _, header, body = struct.unpack_from("<IHHQ", data, pos)
        if magic != FATBIN_MAGIC:
            pos += 8  # containers are 8-byte aligned
            continue
        e, stop = pos + header, pos + header + body
        while e < stop:
            _, _, entry_header, payload = struct.unpack_from("<HHIQ", data, e)
            (arch,) = struct.unpack_from("<I", data, e + 28)
            start = e + entry_header
            if arch == keep_arch:
                kept += payload
            else:
                data[start:start + payload] = bytes(payload)
                zeroed += payload
            e = start + payload
        pos = stop
    lib.write_bytes(bytes(data))
    return zeroed, kept


def pack_onnxruntime(wheel: Path, dest: Path, keep_arch: int = 90) -> dict[str, Any]:
    """The onnxruntime-gpu wheel as a .tar.xz of its package, small enough to carry."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with zipfile.ZipFile(wheel) as z:
            z.extractall(root)
        capi = root / "onnxruntime" / "capi"
        zeroed, kept = zero_foreign_cubins(capi / "libonnxruntime_providers_cuda.so", keep_arch)
        for lib in capi.glob("libonnxruntime.so*"):  # the C API; the Python module links its own copy
            lib.unlink()
        for lib in capi.glob("libonnxruntime_providers_tensorrt.so"):
            lib.unlink()
        for sub in ("transformers", "tools", "quantization"):
            shutil.rmtree(root / "onnxruntime" / sub, ignore_errors=True)
        with tarfile.open(dest, "w:xz", preset=9) as tar:
            for p in sorted(root.iterdir()):
                tar.add(p, arcname=p.name)
    return {"wheel": wheel.name, "packed": dest.name, "bytes": dest.stat().st_size,
            "cubin_bytes_zeroed": zeroed, "cubin_bytes_kept": kept, "kept_arch": f"sm_{keep_arch}"}
