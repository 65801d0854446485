"""Output files, written atomically: a reader, or a crash mid-write, sees the old file or the new one.

Every file hal writes (reports, traces, pictures, schemas, manifests, cache entries) goes through
``atomic_write``: the bytes go to a temporary file in the same folder, are flushed to disk, and
replace the destination in one rename; on any failure the temporary file is removed and the
destination is left as it was. ``write_output`` is the same for a path a user named, which may
also be a device or a pipe (``/dev/stdout``, a FIFO) that cannot be renamed over. ``npz_bytes`` makes
the bytes of an .npz of outputs that loads without pickling.
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from hal.errors import InputError


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (str as UTF-8) to ``path`` so that it is whole or untouched, never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a written report should read like any file
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_output(dest: str | os.PathLike, data: bytes | str) -> Path:
    """``atomic_write`` for a user-named destination; a device or pipe there is written directly."""
    try:
        special = not stat.S_ISREG(Path(dest).stat().st_mode)
    except OSError:
        special = False
    try:
        if not special:
            return atomic_write(dest, data)
        with open(dest, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
    except OSError as e:  # say it of the file the user named, not of the temporary file or a folder on the way
        raise type(e)(e.errno, e.strerror or str(e), str(dest)) from None
    return Path(dest)


def npz_bytes(arrays: Mapping[str, np.ndarray], where: str) -> bytes:
    """``arrays`` as the bytes of an .npz that ``np.load`` reads without pickling (and so hal's own
    ``--inputs``): a string tensor (an object array of str, as hal holds ONNX strings) is stored as a
    numpy str array. An object array of anything else is an InputError naming it, raised before any
    byte is written, as pickled objects are what neither reads."""
    plain = {}
    for name, a in arrays.items():
        if a.dtype.kind == "O":
            odd = next((v for v in a.flat if not isinstance(v, str)), None)
            if odd is not None:
                raise InputError(f"output {name!r} holds {type(odd).__name__} values, not only text; an .npz of "
                                 "them would be pickled Python objects, which np.load and hal --inputs refuse",
                                 where=where, hint="leave out --save and read the outputs from "
                                                   "InferenceSession.run in Python")
            a = a.astype(np.str_)
        plain[name] = a
    buf = io.BytesIO()
    np.savez(buf, **plain)
    return buf.getvalue()


__all__ = ["atomic_write", "npz_bytes", "write_output"]
