"""hal's output files are written atomically: a write that fails midway, or at the final rename, leaves
the destination as it was (absent, or its old content) and no temporary file beside it.

Each writer is run with a failure injected only for files under the test's folder: once while the
bytes go to disk (half of them written, then "No space left on device"), once at the rename. A
writer that bypassed the shared helper (``hal.files.atomic_write``) would leave a partial file.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _robust_models import mlp_model, session

import hal
from hal import files
from hal.cache import CacheWarning

OLD = b"old content\n"


class _HalfThenFull:
    """A file object that writes the first half of what it is given, then fails as a full disk does."""

    def __init__(self, f: Any):
        self._f = f

    def write(self, data: bytes) -> int:
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _HalfThenFull:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.close()


def inject(monkeypatch: pytest.MonkeyPatch, stage: str, hit: Callable[[Path], bool]) -> None:
    """Make writes of the destinations for which ``hit(path)`` holds fail at ``stage`` ("midway" or "rename")."""
    if stage == "midway":
        real_mkstemp, real_fdopen, doomed = tempfile.mkstemp, os.fdopen, set()

        def mkstemp(*a: Any, **kw: Any) -> tuple[int, str]:
            fd, name = real_mkstemp(*a, **kw)
            # atomic_write's temp file is ".<destination name>.<random>.tmp" in the destination's folder
            if hit(Path(name).parent / str(kw.get("prefix", ""))[1:-1]):
                doomed.add(fd)
            return fd, name

        def fdopen(fd: int, *a: Any, **kw: Any) -> Any:
            f = real_fdopen(fd, *a, **kw)
            return _HalfThenFull(f) if fd in doomed else f

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        monkeypatch.setattr(os, "fdopen", fdopen)
    else:
        real_replace = os.replace

        def replace(src: Any, dst: Any) -> None:
            if hit(Path(dst)):
                raise OSError(errno.ENOSPC, "No space left on device")
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _schemas(dest: Path) -> None:
    from hal.specs import write_schemas

    write_schemas(dest.parent)


def _markdown(dest: Path) -> None:
    from hal import render

    render.write(dest, "# report\n" * 100)


def _trace(dest: Path) -> None:
    from hal.perf.trace import write_chrome_trace

    write_chrome_trace(hal.compile("zoo:tiny-gpt", target="gpu").trace(), dest)


def _picture(dest: Path) -> None:
    pytest.importorskip("matplotlib")
    from hal.plots import sweep_plot

    sweep_plot([1, 2, 4], {"cpu": [1.0, 2.0, 3.0]}, "batch", "latency", "sweep", dest)


def _manifest(dest: Path) -> None:
    from hal.conformance.profiles import ManifestEntry, write_manifest

    write_manifest(dest, "cpu", [ManifestEntry("test_relu", "Relu", "error", "a reason")], profile="core")


def _cli_json(dest: Path) -> int:
    from hal.cli import main

    return main(["targets", "--json", str(dest)])  # an OSError is reported and gives a non-zero status


def _cli_outputs(dest: Path) -> int:
    from hal.cli import main

    x = dest.parent.parent / "x.npy"
    np.save(x, np.ones((2, 4), np.float32))
    model = dest.parent.parent / "mlp.onnx"
    model.write_bytes(mlp_model().SerializeToString())
    return main(["run", str(model), "--input", f"x={x}", "--save", str(dest)])


def _conformance_json(dest: Path) -> int:
    from hal.cli import main

    return main(["conformance", "cpu", "-k", "test_relu and not expanded", "--json", str(dest)])


#: writer -> the file name it writes in the folder (the schema writer writes many; one stands for all)
WRITERS: dict[str, tuple[Callable[[Path], int | None], str]] = {
    "schemas": (_schemas, "CompileReport.schema.json"),
    "markdown report": (_markdown, "report.md"),
    "chrome trace": (_trace, "trace.json"),
    "picture": (_picture, "sweep.png"),
    "conformance manifest": (_manifest, "xfail-cpu.toml"),
    "cli json": (_cli_json, "targets.json"),
    "cli saved outputs": (_cli_outputs, "out.npz"),
    "conformance report": (_conformance_json, "conformance.json"),
}


@pytest.mark.parametrize("stage", ["midway", "rename"])
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_failed_write_leaves_old_file_and_no_partial_or_temp_file(writer, stage, tmp_path, monkeypatch):
    write, name = WRITERS[writer]
    folder = tmp_path / "out"
    folder.mkdir()
    dest = folder / name
    dest.write_bytes(OLD)
    before = _tree(folder)
    inject(monkeypatch, stage, lambda p: p.parent == folder)
    try:
        rc = write(dest)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    else:
        assert rc  # the command failed, with an exit status
    assert _tree(folder) == before  # the old file whole, nothing half-written, no temp file
    monkeypatch.undo()
    assert not write(dest)  # the same writer, unhindered, replaces the file whole
    assert dest.read_bytes() != OLD and not list(folder.glob(".*.tmp"))


@pytest.mark.parametrize("stage", ["midway", "rename"])
def test_conformance_plugin_report_write_goes_through_the_atomic_writer(stage, monkeypatch, capsys):
    """The pytest plugin writes the suite's report into the command's own folder; a failed write there
    is the command's error (said, with a non-zero status), never half a report read back."""
    from hal.cli import main

    inject(monkeypatch, stage, lambda p: p.name == "report.json" and p.parent.name.startswith("hal-conformance-"))
    assert main(["conformance", "cpu", "-k", "test_relu and not expanded"]) != 0
    assert "No space left on device" in capsys.readouterr().err


@pytest.mark.parametrize("stage", ["midway", "rename"])
def test_compile_cache_entry_is_never_half_written(stage, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    inject(monkeypatch, stage, lambda p: cache in p.parents)
    with pytest.warns(CacheWarning, match="No space left"):
        s = hal.InferenceSession(mlp_model(), cache_dir=cache)
    assert s.compile_cache.stats.stored == 0
    assert not [p for p in cache.rglob("*") if p.is_file()]


def test_atomic_write_replaces_whole_and_keeps_permissions_readable(tmp_path):
    dest = tmp_path / "deep" / "a.json"
    files.atomic_write(dest, "x" * 100_000)
    assert dest.read_text() == "x" * 100_000
    files.atomic_write(dest, b"short")
    assert dest.read_bytes() == b"short" and [p.name for p in dest.parent.iterdir()] == ["a.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_write_into_a_path_that_cannot_hold_files_raises_and_creates_nothing(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(OLD)
    with pytest.raises(OSError):
        files.atomic_write(blocker / "report.json", "{}")
    assert _tree(tmp_path) == {"not-a-folder": OLD}


def test_write_output_streams_to_a_pipe(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    import threading

    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    files.write_output(fifo, "through the pipe\n")
    reader.join(10)
    assert got == [b"through the pipe\n"] and fifo.is_fifo()


# -- the CLI's outputs and trace export (moved from the cache tests) -------------------------------

def test_cli_output_files_are_written_atomically(tmp_path, monkeypatch, capsys):
    import onnx

    from hal.cli import main

    model = tmp_path / "m.onnx"
    onnx.save(mlp_model(), str(model))
    out_json, out_npz = tmp_path / "out.json", tmp_path / "out.npz"
    out_json.write_text("previous")
    out_npz.write_bytes(b"previous")
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda s, d: (_ for _ in ()).throw(OSError(5, "I/O error")))
    assert main(["run", str(model), "--json", str(out_json)]) == 2
    assert main(["run", str(model), "--save", str(out_npz)]) == 2
    assert "error: OSError: I/O error" in capsys.readouterr().err
    assert out_json.read_text() == "previous" and out_npz.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "out.json", "out.npz"]
    monkeypatch.setattr(os, "replace", real_replace)
    assert main(["run", str(model), "--json", str(out_json), "--save", str(out_npz)]) == 0
    assert json.loads(out_json.read_text())["outputs"][0]["shape"] == [2, 3]
    assert np.load(out_npz)["y"].shape == (2, 3)


def test_cli_writes_to_a_device_path(tmp_path, capsys):
    import onnx

    from hal.cli import main

    model = tmp_path / "m.onnx"
    onnx.save(mlp_model(), str(model))
    assert main(["run", str(model), "--json", os.devnull, "--save", os.devnull]) == 0


def test_trace_export_is_atomic(tmp_path, monkeypatch):
    from hal.perf.trace import write_chrome_trace

    dest = tmp_path / "trace.json"
    dest.write_text("previous")
    events = session(mlp_model(), "cpu").trace()
    monkeypatch.setattr(os, "replace", lambda s, d: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError):
        write_chrome_trace(events, dest)
    assert dest.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["trace.json"]
