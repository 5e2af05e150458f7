"""File helpers every output of the toolkit goes through: digests and atomic writes."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile

from .errors import ToolkitError


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomically(path, write) -> None:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then move it into place.

    An interrupted or failed write leaves ``path`` as it was and no temp file behind.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".partial-{os.path.basename(path)}.", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_bytes_atomically(path, data: bytes) -> None:
    def write(tmp):
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    write_atomically(path, write)


def write_json(path, value, indent=2, sort_keys=False) -> None:
    """``value`` as JSON (newline-terminated) at ``path``, atomically; an OS error is one ToolkitError."""
    try:
        write_bytes_atomically(path, (json.dumps(value, indent=indent, sort_keys=sort_keys) + "\n").encode("utf-8"))
    except OSError as exc:
        raise ToolkitError(f"cannot write {path}: {exc.strerror}")
