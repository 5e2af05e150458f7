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

PRECISIONS = ("fp16", "bf16", "fp32")
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


def description_digest(meta: dict) -> str:
    """sha256 of a build description without its own digest (canonical JSON)."""
    body = {k: v for k, v in meta.items() if k != "description_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def _is_text(value) -> bool:
    return isinstance(value, str) and bool(value)


# What the runtime reads from a build description, and what each must be.
_REQUIRED = {
    "input_name": ("a name", _is_text),
    "input_shape": ("a list of positive integers",
                    lambda v: isinstance(v, list) and bool(v)
                    and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in v)),
    "precision": (" or ".join(PRECISIONS), lambda v: v in PRECISIONS),
    "target": ("a target with a 'kind'",
               lambda v: isinstance(v, dict) and _is_text(v.get("kind"))
               and all(isinstance(a, str) for a in v.get("mattr") or [])),
    "tvm_version": ("a version", _is_text),
}
_OPTIONAL = {
    "model_metadata": ("a mapping of text", lambda v: isinstance(v, dict)
                       and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())),
    "image_sha256": ("a sha256", lambda v: isinstance(v, str) and len(v) == 64),
}


def description_problem(meta) -> str | None:
    """Why an engine's build description cannot be trusted, or None: a key the runtime reads is
    missing or of the wrong kind, or the description no longer matches the digest the build
    recorded (it was edited: another input shape would make TVM's VM fail deep inside).
    Descriptions from before the digest was recorded are checked by their keys alone."""
    if not isinstance(meta, dict):
        return "its build description is not a mapping"
    for key, (want, valid) in _REQUIRED.items():
        if key not in meta:
            return f"its build description has no '{key}'"
        if not valid(meta[key]):
            return f"its build description's '{key}' is {meta[key]!r}, not {want}"
    for key, (want, valid) in _OPTIONAL.items():
        if key in meta and not valid(meta[key]):
            return f"its build description's '{key}' is not {want}"
    recorded = meta.get("description_sha256")
    if recorded is not None and recorded != description_digest(meta):
        return "its build description was edited after the build (it does not match its recorded digest)"
    return None


def append_engine_metadata(path: str, meta: dict) -> None:
    """Append ``meta`` to the image at ``path``; records the image's digest in ``meta`` first,
    then the description's own digest (so an edited description is refused, not run)."""
    meta["image_sha256"] = sha256_file(path)
    meta["description_sha256"] = description_digest(meta)
    blob = json.dumps(meta, sort_keys=True).encode("utf-8")
    with open(path, "ab") as fh:
        fh.write(blob)
        fh.write(_FOOTER.pack(len(blob), _FOOTER_MAGIC))
