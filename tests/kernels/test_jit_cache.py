"""The compiled loops' on-disk cache (``hal.kernels.jit._shared_cache``) under processes that share it:
numba's own cache lets two processes that compile two signatures of one loop at once give both the same
file, so the index names one signature's machine code for the other's arguments and a later process's call
fails with numba's "can't unbox array" TypeError."""

from __future__ import annotations

import glob
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from hal.kernels import jit

pytestmark = pytest.mark.skipif(not jit.enabled(), reason="numba is not importable here (HAL_JIT=0 or missing)")

ROOT = Path(__file__).resolve().parents[2]
#: a loop with one machine code per argument dtype
LOOP = textwrap.dedent("""
    from hal.kernels.jit import njit

    @njit
    def total(x):
        s = 0
        for i in range(x.shape[0]):
            s += x[i]
        return s
""")
#: a process that calls the loop for the dtypes it is given, after a common start time, and prints the sums
CALLER = textwrap.dedent("""
    import sys, time
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    start = float(sys.argv[2])
    import mymod
    while time.time() < start:
        pass
    print(*(int(mymod.total(np.array([30000, 3, 30000], dtype=d))) for d in sys.argv[3:]))
""")


def _call(folder: Path, dtypes: list[str], start: float = 0.0) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), NUMBA_CACHE_DIR="")
    return subprocess.Popen([sys.executable, "-c", CALLER, str(folder), str(start), *dtypes], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _sums(proc: subprocess.Popen) -> list[int]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    return [int(v) for v in out.split()]


def _index(folder: Path) -> tuple[Path, object, dict]:
    (path,) = glob.glob(str(folder / "__pycache__" / "mymod.total-*.nbi"))
    with open(path, "rb") as f:
        version = pickle.load(f)
        stamp, overloads = pickle.loads(f.read())
    return Path(path), version, {"stamp": stamp, "overloads": overloads}


def _unpickled(folder: Path, blob: bytes) -> tuple:
    """A cache file's content (its compile environment imports the loop's module, from ``folder``)."""
    sys.path.insert(0, str(folder))
    try:
        return pickle.loads(blob)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("mymod", None)


def _entries(folder: Path) -> dict[str, str]:
    """Each cache entry's file, by the argument dtype its index key names, checked against the dtype of
    the machine code the file holds."""
    _, _, index = _index(folder)
    out = {}
    for key, name in index["overloads"].items():
        with open(folder / "__pycache__" / name, "rb") as f:
            held = _unpickled(folder, f.read())[3]  # the compile result's signature
        asked = key[0].args if hasattr(key[0], "args") else key[0]
        assert tuple(held.args) == tuple(asked), f"{name} holds {held.args}, its index names {asked}"
        out[str(asked[0].dtype)] = name
    return out


#: the sum every dtype gives
WANT = 60003


def test_an_entry_holding_another_signatures_code_is_compiled_afresh(tmp_path: Path) -> None:
    (tmp_path / "mymod.py").write_text(LOOP)
    assert _sums(_call(tmp_path, ["int32", "int64"])) == [WANT, WANT]
    files = _entries(tmp_path)
    # the index as numba's race leaves it: each signature names the other's machine code
    path, version, index = _index(tmp_path)
    index["overloads"] = {k: files["int64" if v == files["int32"] else "int32"] for k, v in index["overloads"].items()}
    with open(path, "wb") as f:
        pickle.dump(version, f, protocol=-1)
        f.write(pickle.dumps((index["stamp"], index["overloads"]), protocol=-1))

    # a fresh process compiles both again (numba alone: "can't unbox array"), and saves them right
    assert _sums(_call(tmp_path, ["int64", "int32"])) == [WANT, WANT]
    _entries(tmp_path)


def test_a_save_holds_the_lock_other_processes_wait_on(tmp_path: Path, monkeypatch) -> None:
    fcntl = pytest.importorskip("fcntl")
    from numba.core.caching import IndexDataCacheFile

    held: list[bool] = []
    real = IndexDataCacheFile.save

    def save(self, key, data):  # another open of the lock file cannot take it while numba writes
        fd = os.open(os.path.join(self._cache_path, jit.LOCK_FILE), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held.append(True)
        else:
            held.append(False)
        finally:
            os.close(fd)
        real(self, key, data)

    monkeypatch.setattr(IndexDataCacheFile, "save", save)
    (tmp_path / "lockmod.py").write_text(LOOP)
    sys.path.insert(0, str(tmp_path))
    try:
        import lockmod
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("lockmod", None)
    assert lockmod.total(np.arange(5, dtype=np.int64)) == 10
    assert held == [True]


def test_processes_compiling_at_once_leave_every_entry_with_its_own_code(tmp_path: Path) -> None:
    # two processes, two new signatures each, released together: numba alone gave two of them one file
    # in about one start in ten here; the lock makes the index and the files agree every time
    (tmp_path / "mymod.py").write_text(LOOP)
    start = time.time() + 3.0
    procs = [_call(tmp_path, ["int32", "int64"], start), _call(tmp_path, ["int16", "uint32"], start)]
    assert [_sums(p) for p in procs] == [[WANT, WANT], [WANT, WANT]]
    assert sorted(_entries(tmp_path)) == ["int16", "int32", "int64", "uint32"]
    assert _sums(_call(tmp_path, ["int64", "uint32", "int16", "int32"])) == [WANT] * 4
