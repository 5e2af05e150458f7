"""Every path a command reads or writes goes through here: what an input or output may be, digests,
atomic writes, and the staging folders unfinished outputs live in.

The rules, one place each:

- an input is checked to be what it must be (a regular file, a folder) before it is opened
  (``require_file``, ``require_folder``): a FIFO or a device would block or read for ever;
- an output is a regular file, a folder or a new path, never a symlink or a device node
  (``check_writable``, ``check_output_folder``): replacing one atomically would replace the link
  or the system's node itself;
- a run's outputs are never its inputs (``check_outputs_apart``);
- unfinished work lives in a staging folder whose writer holds an exclusive lock on it while it
  lives (``StagingFolder``); only such folders whose lock is free are ever removed, so a user's
  file or another container's work in progress is never touched;
- a full disk is one line naming where (``no_space_error``).
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import stat
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


# --------------------------------------------------------------------------- what a path is

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symlink"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISREG, "a regular file"))


def kind_of(mode: int) -> str:
    """What an ``st_mode`` is, in words: "a folder", "a FIFO", "a regular file", ..."""
    return next((name for test, name in _KINDS if test(mode)), "an unknown kind of file")


def _require_path(path, what: str) -> str:
    text = os.fspath(path) if path is not None else ""
    if not text:
        raise ToolkitError(f"{what} is an empty path")
    return text


def _existing_mode(path: str, what: str) -> int:
    try:
        return os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise ToolkitError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise ToolkitError(f"{what} {path} cannot be read: {exc.strerror}") from None


def require_file(path, what: str) -> str:
    """An input that must be a regular file (a symlink to one is fine), checked before it is opened:
    missing, a folder, a FIFO or a device (which would block or read for ever) is one error naming
    what it is. ``what`` names the input ("engine", "--labels"). Returns the path."""
    path = _require_path(path, what)
    mode = _existing_mode(path, what)
    if not stat.S_ISREG(mode):
        raise ToolkitError(f"{what} {path} is {kind_of(mode)}, not a regular file")
    return path


def require_folder(path, what: str) -> str:
    """An input that must be a folder this process can read (a symlink to one is fine)."""
    path = _require_path(path, what)
    mode = _existing_mode(path, what)
    if not stat.S_ISDIR(mode):
        raise ToolkitError(f"{what} {path} is {kind_of(mode)}, not a folder")
    if not os.access(path, os.R_OK | os.X_OK):
        raise ToolkitError(f"{what} {path} cannot be read (no permission)")
    return path


def _refuse_special(path: str, flag: str, want: str) -> bool:
    """Refuse an existing output path that is not ``want`` ("a regular file" or "a folder");
    True when it exists (as ``want``)."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # a new path (under a file: _check_parent says so)
        return False
    if stat.S_ISLNK(mode):
        raise ToolkitError(f"{flag} {path} is a symlink (to {os.path.realpath(path)}): an output replaces what "
                           f"it names, so it would replace the link; give the path it points to")
    if kind_of(mode) != want:
        raise ToolkitError(f"{flag} {path} is {kind_of(mode)}, not {want}: outputs are written only to "
                           f"{'regular files' if want == 'a regular file' else 'folders'} and new paths")
    return True


def _check_parent(path: str, flag: str) -> None:
    """The nearest existing folder above ``path`` is a folder this process may write in."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        what = "a file" if os.path.isfile(parent) else kind_of(os.lstat(parent).st_mode)
        raise ToolkitError(f"{flag} {path}: {parent} is {what}, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ToolkitError(f"{flag} {path}: cannot write in {parent} ({_why_not_writable(parent)})")


def _why_not_writable(folder: str) -> str:
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "a read-only file system"
    except OSError:
        pass
    return "no permission"


def check_writable(path, flag: str) -> None:
    """Refuse, before any work, an output file that cannot be written: empty, a folder, a symlink,
    a device or FIFO, under a file, or in a folder without write permission or on a read-only
    file system (the folder itself may not exist yet)."""
    path = _require_path(path, flag)
    _refuse_special(path, flag, "a regular file")
    _check_parent(path, flag)


def check_output_folder(path, flag: str) -> None:
    """Refuse, before any work, an output folder that cannot be made or written: empty, a file,
    a symlink, a device, or in a folder without write permission; an existing folder must be
    writable itself."""
    path = _require_path(path, flag)
    if _refuse_special(path, flag, "a folder"):
        if not os.access(path, os.W_OK | os.X_OK):
            raise ToolkitError(f"{flag} {path}: cannot write in it ({_why_not_writable(path)})")
    else:
        _check_parent(path, flag)


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _inside(path: str, folder: str) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(folder)
    return real != top and os.path.commonpath([real, top]) == top


def check_outputs_apart(outputs, inputs) -> None:
    """A run's outputs are never one of its inputs: refuse, before any work, an output that is an
    input file (the same path, a link to it, a hard link), lies inside an input folder (read
    whole: an LMDB, a tuning database), or is a folder an input lies in.

    ``outputs`` and ``inputs``: (flag, path) pairs; None paths are skipped."""
    for out_flag, out in outputs:
        if not out:
            continue
        for in_flag, source in inputs:
            if not source:
                continue
            if _same(out, source):  # also before either exists: an engine the script builds later
                clash = "is"
            elif os.path.isdir(source) and _inside(out, source):
                clash = "lies inside"
            elif _inside(source, out):
                clash = "holds"
            else:
                continue
            raise ToolkitError(f"{out_flag} {out} {clash} the input {in_flag} {source}: a run's outputs are never "
                               f"its inputs (it would overwrite what it reads); write it elsewhere")


# --------------------------------------------------------------------------- a full disk

def _device_full(path: str) -> bool:
    try:
        info = os.statvfs(path)
    except OSError:
        return False
    return info.f_bavail * info.f_frsize < (1 << 20)


def no_space_error(exc: BaseException, folder: str) -> ToolkitError | None:
    """The one message for a write that ran out of disk, or None when ``exc`` is not that.

    Asked while the unfinished output still fills the disk: besides ENOSPC, a full device
    holding ``folder`` (LMDB reports a full disk as an I/O error) or the temporary folder (where a
    compiler and linker put their objects) is named as the cause."""
    for where in (folder, tempfile.gettempdir()):
        if _device_full(where):
            break
    else:
        if getattr(exc, "errno", None) != errno.ENOSPC and os.strerror(errno.ENOSPC) not in str(exc):
            return None
        where = folder
    return ToolkitError(f"no space left on {where} (the disk holding it is full): free some space or write elsewhere")


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def require_space(folder: str, needed: int, what: str) -> None:
    """Refuse, before any work, a write of about ``needed`` bytes to a disk with less free space."""
    free = free_bytes(folder)
    if free is not None and needed > free:
        raise ToolkitError(f"no space left on {folder}: {what} needs about {_size(needed)}, "
                           f"{_size(free)} are free there")


def free_bytes(folder: str) -> int | None:
    """Bytes this process may still write on the file system holding ``folder`` (or its nearest
    existing parent), None when that cannot be asked."""
    folder = os.path.abspath(folder)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    try:
        info = os.statvfs(folder)
    except OSError:
        return None
    return info.f_bavail * info.f_frsize


# --------------------------------------------------------------------------- staging folders

STAGING_PREFIX = ".svtr-staging-"
_OWNER_FILE = ".owner"
# The first bytes of a staging folder's owner file: what proves the folder is this toolkit's.
_OWNER_MAGIC = b"svtr_toolkit staging folder; its writer holds a lock on this file while it lives\n"


def _dead_staging_folder(path: str) -> bool:
    """True when ``path`` is a staging folder of this toolkit whose writer has gone: its owner file
    carries the toolkit's mark and nobody holds the lock its writer held while alive. The lock is
    the kernel's, released when the writer's process ends however it ends; unlike a process ID it
    means the same in every container that shares the folder."""
    try:
        fd = os.open(os.path.join(path, _OWNER_FILE), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False  # no owner file: not provably ours (or its writer is starting right now)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # the writer is alive (here or in another container)
        return os.read(fd, len(_OWNER_MAGIC)) == _OWNER_MAGIC
    finally:
        os.close(fd)


def remove_dead_staging(folder) -> list:
    """Remove the staging folders in ``folder`` whose writers have gone (a SIGKILL, a power cut);
    nothing else is touched. Returns their names."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(folder, name)
        if not name.startswith(STAGING_PREFIX) or os.path.islink(path) or not os.path.isdir(path):
            continue
        if _dead_staging_folder(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
    return removed


class StagingFolder:
    """A private folder beside an output, for the output's unfinished bytes, removed on exit.

    Made in the output's own folder so the finished output moves into place with one rename.
    While it exists its writer holds an exclusive lock on its owner file (the proof of life
    ``remove_dead_staging`` asks for); dead writers' folders there are removed first, and their
    names kept in ``removed``."""

    def __init__(self, parent):
        self.parent = os.fspath(parent)
        self.path = None
        self.removed = []
        self._owner = None

    def __enter__(self) -> "StagingFolder":
        self.removed = remove_dead_staging(self.parent)
        self.path = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.parent)
        try:
            self._owner = os.open(os.path.join(self.path, _OWNER_FILE),
                                  os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            fcntl.flock(self._owner, fcntl.LOCK_EX)  # before the mark: a marked folder is a locked one
            os.write(self._owner, _OWNER_MAGIC + f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
        if self._owner is not None:
            os.close(self._owner)
        self.path = self._owner = None


# --------------------------------------------------------------------------- atomic writes

def write_atomically(path, write) -> None:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then move it into place.

    ``path`` must be a regular file or a new path (a symlink or device node is refused: the
    rename would replace it). An interrupted or failed write leaves ``path`` as it was and no
    temp file behind (a SIGKILL'd one is removed by the next write into the same folder); a full
    disk is one ``no space left on <folder>`` error.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise no_space_error(exc, folder) or ToolkitError(f"cannot make {folder}: {exc.strerror}") from None
    _refuse_special(path, "output", "a regular file")
    with StagingFolder(folder) as staging:
        tmp = os.path.join(staging.path, "partial")  # no extension: writers pick no format from it
        try:
            write(tmp)
            os.chmod(tmp, 0o644)  # outputs are meant to be shared
            os.replace(tmp, path)
        except ToolkitError:
            raise
        except Exception as exc:
            full = no_space_error(exc, folder)
            if full is not None:
                raise full from None
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
