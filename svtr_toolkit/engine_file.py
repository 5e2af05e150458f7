"""The engine file format, shared by the builder (compile) and the loaders (runtime).

An engine is one shared library. Its build description (source model hash, input,
precision, target, TVM version, tuning database digest) is appended to the file after the
ELF image, so the engine carries it wherever it is copied, and it can be read without
loading the library (a CUDA engine can be checked on a CPU-only machine). The dynamic
loader ignores the trailing bytes. The description records the ELF image's sha256
(``image_sha256``), checked before the image is loaded: a damaged engine is one clear error,
not a SIGBUS inside the dynamic loader.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct

from .files import sha256_file

PRECISIONS = ("fp16", "fp32")
_FOOTER_MAGIC = b"SVTRMETA"
_FOOTER = struct.Struct("<Q8s")  # length of the JSON, magic


def _description_span(path: str) -> tuple[int, int] | None:
    """(size of the ELF image, length of the build description) of an engine, or None."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            if size < _FOOTER.size:
                return None
            fh.seek(size - _FOOTER.size)
            length, magic = _FOOTER.unpack(fh.read(_FOOTER.size))
    except OSError:
        return None
    if magic != _FOOTER_MAGIC or length > size - _FOOTER.size:
        return None
    return size - _FOOTER.size - length, length


def read_engine_metadata(path: str) -> dict | None:
    """The build description appended to an engine, or None if the file has none."""
    span = _description_span(path)
    if span is None:
        return None
    try:
        with open(path, "rb") as fh:
            fh.seek(span[0])
            return json.loads(fh.read(span[1]).decode("utf-8"))
    except (OSError, ValueError):
        return None


def image_sha256(path: str) -> str | None:
    """sha256 of the ELF image part of an engine (everything before its build description)."""
    span = _description_span(path)
    if span is None:
        return None
    digest, remaining = hashlib.sha256(), span[0]
    try:
        with open(path, "rb") as fh:
            while remaining > 0:
                chunk = fh.read(min(1 << 20, remaining))
                if not chunk:
                    return None
                digest.update(chunk)
                remaining -= len(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def image_damaged(path: str, meta: dict) -> bool:
    """True when the engine's image no longer matches the digest its description recorded
    (engines from before the digest was recorded are not checked)."""
    recorded = meta.get("image_sha256")
    return recorded is not None and image_sha256(path) != recorded


def append_engine_metadata(path: str, meta: dict) -> None:
    """Append ``meta`` to the image at ``path``; records the image's digest in ``meta`` first."""
    meta["image_sha256"] = sha256_file(path)
    blob = json.dumps(meta, sort_keys=True).encode("utf-8")
    with open(path, "ab") as fh:
        fh.write(blob)
        fh.write(_FOOTER.pack(len(blob), _FOOTER_MAGIC))
