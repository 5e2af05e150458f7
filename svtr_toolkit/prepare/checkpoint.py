"""PaddleOCR checkpoints: find, read (restricted unpickling), validate and download them.

``read_checkpoint`` is the one place a checkpoint is looked for: a .pdparams file, a
PaddleOCR checkpoint prefix, the release .tar, or a folder holding either.
"""
from __future__ import annotations

import io
import os
import pickle
import sys
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ToolkitError, last_line
from ..files import require_file, sha256_bytes, write_atomically

CHECKPOINT_URL = "https://paddleocr.bj.bcebos.com/PP-OCRv3/chinese/rec_svtr_tiny_none_ctc_en_train.tar"
CHECKPOINT_TAR = "rec_svtr_tiny_none_ctc_en_train.tar"
CHECKPOINT_MEMBER = "rec_svtr_tiny_none_ctc_en_train/best_accuracy.pdparams"
PDPARAMS_NAME = "best_accuracy.pdparams"
# The paddle.save bookkeeping entry that real checkpoints carry next to the tensors.
PADDLE_SAVE_EXTRA_KEYS = {"StructuredToParameterName@@"}
DOWNLOAD_TIMEOUT_S = 15
MAX_MEMBER_BYTES = 1 << 30


def log(msg: str) -> None:
    print(f"[export] {msg}", flush=True)


# --------------------------------------------------------------------------------------
# Checkpoint: read, unpickle (restricted), validate
# --------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    source: str  # what the user pointed at (file, tar!member), for messages and metadata
    data: bytes  # the pdparams bytes

    @property
    def sha256(self) -> str:
        return sha256_bytes(self.data)


def _latin1_bytes(text, encoding="utf-8"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing to load _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """A pdparams file is a pickled dict of numpy arrays; refuse anything else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
    }

    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):
            # Protocol 2 (paddle.save accepts it) stores an array's bytes as a latin-1 str that
            # _codecs.encode turns back into bytes: allowed for exactly that, no other codec.
            return _latin1_bytes
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def parse_pdparams(data: bytes, source: str) -> dict[str, np.ndarray]:
    """Unpickle a paddle.save'd state dict; any damage is one ToolkitError line."""
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except Exception as exc:  # pickle raises a zoo of types on damaged input
        raise ToolkitError(f"{source}: not a readable .pdparams file ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise ToolkitError(f"{source}: not a .pdparams state dict (holds a {type(obj).__name__})")
    params = {}
    for key, value in obj.items():
        if key in PADDLE_SAVE_EXTRA_KEYS:
            continue
        if not isinstance(value, np.ndarray):
            raise ToolkitError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor")
        params[str(key)] = value
    if not params:
        raise ToolkitError(f"{source}: the state dict holds no tensors")
    return params


def _tar_member(tf: tarfile.TarFile, tar_path: Path) -> tarfile.TarInfo:
    """The best_accuracy.pdparams member, refusing unsafe or ambiguous entries."""
    candidates = []
    for m in tf.getmembers():
        parts = Path(m.name).parts
        if Path(m.name).name != PDPARAMS_NAME:
            continue
        if m.name.startswith(("/", "\\")) or ".." in parts:
            raise ToolkitError(f"{tar_path}: refusing unsafe member path {m.name!r}")
        if not m.isfile():
            raise ToolkitError(f"{tar_path}: member {m.name!r} is not a regular file")
        candidates.append(m)
    exact = [m for m in candidates if m.name.lstrip("./") == CHECKPOINT_MEMBER]
    if exact:
        return exact[0]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ToolkitError(f"{tar_path}: no {PDPARAMS_NAME} inside (expected {CHECKPOINT_MEMBER})")
    raise ToolkitError(f"{tar_path}: several {PDPARAMS_NAME} members: " + ", ".join(m.name for m in candidates))


def read_checkpoint_from_tar(tar_path: Path) -> Checkpoint:
    """Extract the pdparams member into memory: nothing is written, so no member name can
    escape a destination folder; links and absolute/'..' paths are refused anyway."""
    try:
        with tarfile.open(tar_path, "r:*") as tf:
            member = _tar_member(tf, tar_path)
            if member.size > MAX_MEMBER_BYTES:
                raise ToolkitError(f"{tar_path}: member {member.name} is implausibly large ({member.size} bytes)")
            fh = tf.extractfile(member)
            data = fh.read()
    except ToolkitError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        # tarfile's message lists every compression it tried, one line each: the last one is the tar's
        raise ToolkitError(f"{tar_path}: not a readable tar archive ({exc.__class__.__name__}: "
                           f"{last_line(exc).lstrip('- ')})") from None
    if len(data) != member.size:
        raise ToolkitError(f"{tar_path}: member {member.name} is truncated")
    return Checkpoint(source=f"{tar_path}!{member.name}", data=data)


def read_checkpoint(path) -> Checkpoint:
    """A .pdparams file, a PaddleOCR checkpoint prefix, a .tar, or a folder holding either."""
    p = Path(path)
    if p.is_dir():
        for cand in (p / PDPARAMS_NAME, p / CHECKPOINT_TAR):
            if cand.is_file():
                return read_checkpoint(cand)
        raise ToolkitError(f"checkpoint folder {p} has neither {PDPARAMS_NAME} nor {CHECKPOINT_TAR}")
    if not p.exists() and Path(str(p) + ".pdparams").is_file():
        p = Path(str(p) + ".pdparams")  # PaddleOCR-style prefix (…/best_accuracy)
    require_file(p, "checkpoint")
    if tarfile.is_tarfile(p) or p.suffix in (".tar", ".tgz") or p.name.endswith((".tar.gz", ".tar.bz2")):
        return read_checkpoint_from_tar(p)
    try:
        return Checkpoint(source=str(p), data=p.read_bytes())
    except OSError as exc:
        raise ToolkitError(f"cannot read checkpoint {p}: {exc.strerror}") from None


def _fmt_names(names, limit=6) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


def validate_state_dict(params: dict[str, np.ndarray], spec, source: str) -> dict[str, np.ndarray]:
    """Check names and shapes against the model; return float32 arrays in model order.

    ``spec`` is ``modeling.state_dict_spec(model)``. Every kind of mismatch found is named
    in a single ToolkitError line.
    """
    want = dict(spec)
    missing = [n for n in want if n not in params]
    unexpected = [n for n in params if n not in want]
    misshaped = [
        f"{n} {list(params[n].shape)} (model {list(want[n])})"
        for n in want if n in params and tuple(params[n].shape) != want[n]
    ]
    badtype = [f"{n} ({params[n].dtype})" for n in want if n in params and params[n].dtype.kind != "f"]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_fmt_names(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_fmt_names(unexpected)}")
    if misshaped:
        problems.append(f"{len(misshaped)} mis-shaped: {_fmt_names(misshaped)}")
    if badtype:
        problems.append(f"{len(badtype)} not floating point: {_fmt_names(badtype)}")
    if problems:
        raise ToolkitError(f"{source} does not fit the SVTR model from the config: " + "; ".join(problems))
    return {n: np.ascontiguousarray(params[n], dtype=np.float32) for n in want}


# --------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------
def download_checkpoint(dest: Path, url: str = CHECKPOINT_URL, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Fetch the checkpoint tar to ``dest`` (atomic; an existing, readable tar is kept)."""
    dest = Path(dest)
    if dest.is_file():
        read_checkpoint_from_tar(dest)  # damaged -> clear error instead of silently reusing
        log(f"checkpoint archive already present: {dest}")
        return dest
    hint = f"fetch {url} on a machine with access and pass --checkpoint /path/to/{CHECKPOINT_TAR}"

    def fetch(tmp):
        with open(tmp, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    from tqdm import tqdm

                    with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr,
                              disable=None) as bar:
                        for chunk in iter(lambda: resp.read(1 << 16), b""):
                            out.write(chunk)
                            bar.update(len(chunk))
            except urllib.error.HTTPError as exc:
                raise ToolkitError(f"cannot download {url}: HTTP {exc.code} {exc.reason}; {hint}") from None
            except urllib.error.URLError as exc:
                raise ToolkitError(f"cannot download {url}: {exc.reason} (no network route?); {hint}") from None
            except OSError as exc:  # timeouts, resets
                raise ToolkitError(f"cannot download {url}: {exc}; {hint}") from None
            out.flush()
            os.fsync(out.fileno())
        got = os.path.getsize(tmp)
        if total is not None and got != total:
            raise ToolkitError(f"download of {url} stopped early ({got} of {total} bytes); {hint}")
        try:
            read_checkpoint_from_tar(Path(tmp))  # must hold the pdparams before it takes the name
        except ToolkitError as exc:
            raise ToolkitError(f"downloaded {url}, but it is unusable: {exc}") from None

    write_atomically(dest, fetch)
    log(f"downloaded {url} -> {dest}")
    return dest


def find_checkpoint(folder) -> Path | None:
    """The PaddleOCR checkpoint lying in ``folder`` (the release tar, or the folder it unpacks
    to), or None; ``read_checkpoint`` reads what this returns."""
    folder = Path(folder)
    for candidate in (folder / CHECKPOINT_TAR, folder / Path(CHECKPOINT_MEMBER).parent / PDPARAMS_NAME):
        if candidate.is_file():
            return candidate
    return None
