"""The engine file format, shared by the builder (compile) and the loaders (runtime).

An engine is one shared library. Its build description (source model hash, input,
precision, target, TVM version, tuning database digest) is appended to the file after the
ELF image, so the engine carries it wherever it is copied, and it can be read without
loading the library (a CUDA engine can be checked on a CPU-only machine). The dynamic
loader ignores the trailing bytes.
"""
from __future__ import annotations

import json
import os
import struct

PRECISIONS = ("fp16", "fp32")
_FOOTER_MAGIC = b"SVTRMETA"
_FOOTER = struct.Struct("<Q8s")  # length of the JSON, magic


def read_engine_metadata(path: str) -> dict | None:
    """The build description appended to an engine, or None if the file has none."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            if size < _FOOTER.size:
                return None
            fh.seek(size - _FOOTER.size)
            length, magic = _FOOTER.unpack(fh.read(_FOOTER.size))
            if magic != _FOOTER_MAGIC or length > size - _FOOTER.size:
                return None
            fh.seek(size - _FOOTER.size - length)
            return json.loads(fh.read(length).decode("utf-8"))
    except (OSError, ValueError):
        return None


def append_engine_metadata(path: str, meta: dict) -> None:
    blob = json.dumps(meta, sort_keys=True).encode("utf-8")
    with open(path, "ab") as fh:
        fh.write(blob)
        fh.write(_FOOTER.pack(len(blob), _FOOTER_MAGIC))
