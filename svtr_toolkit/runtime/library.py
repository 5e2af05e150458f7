"""Engine images (shared libraries) loaded into this process, each time the image now on disk."""
from __future__ import annotations

import os
import shutil
import tempfile

# real path -> identity of the image first loaded from it in this process
_LOADED: dict[str, str] = {}


def image_identity(path: str, meta: dict) -> str:
    """What tells two images at one path apart: the digest the build description recorded, or
    (engines from before it was recorded) the file's inode, size and modification time."""
    recorded = meta.get("image_sha256")
    if recorded:
        return recorded
    info = os.stat(path)
    return f"{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"


def load_module(path: str, identity: str):
    """``tvm.runtime.load_module`` of the image now at ``path``.

    Why not that call alone: the dynamic loader hands back the library it already mapped for a
    path it has loaded before, even when the file was rebuilt since, so an engine rebuilt at the
    same path in one process would run the old engine's code and weights, without an error. An
    image whose identity differs from the first one loaded from its path is loaded from a
    private copy (removed once loaded; the mapping stays)."""
    import tvm

    real = os.path.realpath(path)
    first = _LOADED.setdefault(real, identity)
    if first == identity:
        return tvm.runtime.load_module(path)
    with tempfile.TemporaryDirectory(prefix="svtr-engine-") as private:
        copy = os.path.join(private, os.path.basename(real))
        shutil.copyfile(path, copy)
        return tvm.runtime.load_module(copy)


def uses_amx(meta: dict) -> bool:
    """Does the engine's code use AMX tiles (its LLVM target switches them on)?"""
    target = meta.get("target") or {}
    return target.get("kind") == "llvm" and "+amx-tile" in (target.get("mattr") or [])


_ARCH_REQ_XCOMP_PERM = 0x1023
_XFEATURE_XTILEDATA = 18
_SYS_ARCH_PRCTL = 158  # x86-64


def request_amx_state() -> str | None:
    """Ask Linux for this process's AMX tile state; None when granted, else why not.

    Why: Linux gives a process the (8 KiB) AMX register state only on request; an AMX
    instruction before that kills the process with SIGILL, which no error handling can turn into
    a message. Asked once per process (a repeated request is granted at no cost)."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"AMX needs Linux on x86-64, this is {platform.system()} on {platform.machine()}"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) != 0:
        return f"the kernel refused the AMX tile state ({os.strerror(ctypes.get_errno())})"
    return None
