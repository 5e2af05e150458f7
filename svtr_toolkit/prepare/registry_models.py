"""Pretrained models that ship inside registry packages, fetched by the toolkit itself.

PP-OCRv4's recogniser is inside the ``rapidocr-onnxruntime`` wheel. The wheel is
downloaded with pip (no dependencies: its pyclipper crashes beside paddle) and only the
ONNX file is taken out of it, checked against a pinned digest.
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
import zipfile

from ..files import sha256_file, write_atomically
from ..errors import ToolkitError

PPOCRV4_PACKAGE = "rapidocr-onnxruntime==1.4.4"
PPOCRV4_MEMBER = "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"
PPOCRV4_SHA256 = "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"


def _download_wheel(folder: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", folder, PPOCRV4_PACKAGE],
        capture_output=True, text=True,
    )
    wheels = glob.glob(os.path.join(folder, "rapidocr_onnxruntime-*.whl"))
    if proc.returncode != 0 or not wheels:
        reason = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise ToolkitError(f"could not download {PPOCRV4_PACKAGE} from the package registry: {reason}")
    return wheels[0]


def fetch_ppocrv4(out_path: str, wheel: str | None = None, log=print) -> str:
    """Write PP-OCRv4's recogniser to ``out_path`` unless an identical copy is there."""
    if os.path.isfile(out_path) and sha256_file(out_path) == PPOCRV4_SHA256:
        log(f"{out_path} is up to date (PP-OCRv4 recogniser from {PPOCRV4_PACKAGE})")
        return out_path
    with tempfile.TemporaryDirectory() as folder:
        wheel = wheel or _download_wheel(folder)
        try:
            with zipfile.ZipFile(wheel) as archive:
                data = archive.read(PPOCRV4_MEMBER)
        except (OSError, zipfile.BadZipFile, KeyError) as exc:
            raise ToolkitError(f"{wheel} is not a usable {PPOCRV4_PACKAGE} wheel: {exc}")

        def write(tmp):
            with open(tmp, "wb") as fh:
                fh.write(data)
            if sha256_file(tmp) != PPOCRV4_SHA256:
                raise ToolkitError(f"{PPOCRV4_MEMBER} in {os.path.basename(wheel)} does not have the pinned sha256")

        write_atomically(out_path, write)
    log(f"wrote {out_path} (PP-OCRv4 recogniser from {PPOCRV4_PACKAGE})")
    return out_path
