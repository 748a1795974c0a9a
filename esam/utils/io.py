"""Atomic file output and content hashing.

Results files are written to a temporary file in the destination folder and renamed into
place, so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a binary file that appears at ``path`` only once the ``with`` block succeeds.

    The data goes to a temporary file in the same folder, which is flushed, fsynced and
    renamed over ``path`` at the end of the block. A failure (disk full, an exception in the
    block, an interrupt) removes the temporary file and leaves any previous ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600 files; give outputs the usual permissions (0666 minus umask)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, then rename)."""
    with atomic_output(path) as f:
        f.write(data)
    return Path(path)


def check_writable_file(path: str | os.PathLike[str], what: str = "output file") -> Path:
    """Check, before any work is done, that ``path`` can be written as a file.

    The nearest existing ancestor must be a writable folder (missing folders are created on
    writing) and ``path`` itself must not be a folder.

    Raises:
        UserError: the path is a folder, lies below a file, or its folder is not writable; the
            message names the path and the problem.
    """
    from esam.errors import UserError

    p = Path(path)
    if p.is_dir():
        raise UserError(
            f"{what} {p} is an existing folder; pass a file path (e.g. {p / 'results.json'})"
        )
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{what} {p} cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{what} {p} cannot be created: folder {parent} is not writable")
    return p


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any, indent: int = 2) -> Path:
    """Serialise ``obj`` as JSON and write it to ``path`` atomically.

    Serialisation happens before the file is touched, so an unserialisable object raises
    without creating or truncating anything.
    """
    text = json.dumps(obj, indent=indent, sort_keys=False, allow_nan=False, default=_json_default)
    return write_text_atomic(path, text + "\n")


def _json_default(o: Any) -> Any:
    # numpy scalars and arrays, Paths
    if hasattr(o, "item") and callable(o.item) and getattr(o, "ndim", 1) == 0:
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"object of type {type(o).__name__} is not JSON serialisable")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
