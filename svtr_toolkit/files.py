"""File helpers every output of the toolkit goes through: digests and atomic writes."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
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


# Temp files and folders carry the PID of the process writing them: ``.partial-<name>.<pid>.<random>``,
# ``.svtr-export-<pid>-<random>``, so a later run can tell a live writer's from a dead one's.
_OWNED = re.compile(r"^\.(?:partial-.*\.|svtr-export-)(\d+)[.-][^.]*$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_leftovers(folder) -> list:
    """Remove ``.partial-*`` / ``.svtr-export-*`` entries in ``folder`` whose writer (the PID in
    the name) no longer exists: what a SIGKILL'd build or export leaves. Returns their names."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = _OWNED.match(name)
        if not match or _alive(int(match.group(1))):
            continue
        path = os.path.join(folder, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
            removed.append(name)
        except OSError:
            pass
    return removed


def owned_prefix(kind: str) -> str:
    """The temp-name prefix for this process: ``.partial-<name>.<pid>.`` or ``.svtr-export-<pid>-``."""
    return f".{kind}.{os.getpid()}." if kind.startswith("partial-") else f".{kind}-{os.getpid()}-"


def check_writable(path, flag: str) -> None:
    """Refuse, before any work, an output path that cannot be written: a folder, under a file,
    or in a folder without write permission (the folder itself may not exist yet)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise ToolkitError(f"{flag} {path} is a folder, not a file")
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ToolkitError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ToolkitError(f"{flag} {path}: no permission to write in {parent}")


def write_atomically(path, write) -> None:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then move it into place.

    An interrupted or failed write leaves ``path`` as it was and no temp file behind (a
    SIGKILL'd one is removed by the next write into the same folder).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_leftovers(folder)
    fd, tmp = tempfile.mkstemp(prefix=owned_prefix(f"partial-{os.path.basename(path)}"), dir=folder)
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
