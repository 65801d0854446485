"""A built wheel carries everything: the core, the built-in plugins, spec sheets and entry points."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # from a copy of the files git sees (not the ignored ones): a stale build/ folder in the checkout
    # would otherwise put files in the wheel that the package list no longer names (and hide a
    # package missing from it)
    src = tmp_path_factory.mktemp("src") / "hal-sdk"
    try:
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                               capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot tell its build leftovers from its files")
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    (whl,) = out.glob("hal_sdk-*.whl")
    return whl


def test_wheel_contains_plugins_sheets_and_entry_points(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for must in ("hal/session.py", "hal_cpu/plugin.py", "hal_specs/targets/cpu.toml",
                 "hal_specs/schemas/CompileReport.schema.json"):
        assert must in names, must
    # every package of the core ships (a subpackage left out of pyproject's list would not)
    for init in sorted((ROOT / "hal").rglob("__init__.py")):
        assert init.relative_to(ROOT).as_posix() in names, init
    ep = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(ep).decode()
    assert "[hal.plugins]" in text and "cpu = hal_cpu.plugin" in text and "[pytest11]" in text


def test_hal_runs_from_the_installed_wheel(wheel, tmp_path):
    site = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                          str(wheel)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    code = ("import json, hal, numpy as np; s = hal.InferenceSession('zoo:tiny-cnn');"
            "y = s.run(None, {'image': np.zeros((1,3,32,32), np.float32)})[0];"
            "print(json.dumps({'file': hal.__file__, 'targets': [t.name for t in hal.targets()], 'shape': y.shape}))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["file"].startswith(str(site)) and "cpu" in out["targets"] and out["shape"] == [1, 10]
