"""PaddleOCR checkpoint -> SVTR.onnx -> SVTR_opt.onnx, offline, idempotent and atomic.

    weights (best_accuracy.pdparams, its .tar, or nothing = untrained, seeded)
      -> svtr_toolkit.modeling (this toolkit's paddle.nn SVTR-Tiny, built from the yml)
      -> Paddle inference model (paddle.jit.to_static + save, input ``x`` [None,3,64,256])
      -> SVTR.onnx (paddle2onnx, opset 16)
      -> SVTR_opt.onnx (onnxsim, batch kept dynamic; static-batch variants are the engine
         builder's business)
      -> SVTR_opt.onnx.json (what it was made from; makes reruns no-ops)

Every output is first written inside a temporary folder in the output directory and then
``os.replace``'d into place, the metadata file last; the old metadata is removed before
the first replacement, so no interruption can leave a metadata file that vouches for
models it does not describe.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import RecConfig, load_config, require_svtr_stn_ctc
from .errors import ToolkitError
from .files import sha256_file, write_bytes_atomically

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "rec_svtr_tiny_6local_6global_stn_en.yml"
CHECKPOINT_URL = "https://paddleocr.bj.bcebos.com/PP-OCRv3/chinese/rec_svtr_tiny_none_ctc_en_train.tar"
CHECKPOINT_TAR = "rec_svtr_tiny_none_ctc_en_train.tar"
CHECKPOINT_MEMBER = "rec_svtr_tiny_none_ctc_en_train/best_accuracy.pdparams"
PDPARAMS_NAME = "best_accuracy.pdparams"

RAW_ONNX = "SVTR.onnx"
OPT_ONNX = "SVTR_opt.onnx"
METADATA = OPT_ONNX + ".json"
INPUT_NAME = "x"
# paddle2onnx would raise a request for opset 13 (the model zoo's) to 16 on its own,
# because GridSample (the STN's sampler) only exists from opset 16; we ask for 16.
OPSET = 16
UNTRAINED_SEED = 20240601
UNTRAINED_WARNING = (
    "UNTRAINED WEIGHTS: this model was exported from a seeded random initialisation, not a "
    "trained checkpoint; its predictions are noise and any accuracy figure measured with it "
    "is meaningless (speed and numerical-parity figures are still valid). Pass --checkpoint "
    f"{CHECKPOINT_TAR} (or --download) for real weights."
)
# The paddle.save bookkeeping entry that real checkpoints carry next to the tensors.
PADDLE_SAVE_EXTRA_KEYS = {"StructuredToParameterName@@"}
DOWNLOAD_TIMEOUT_S = 15
SELF_CHECK_TOL = 1e-3
MAX_MEMBER_BYTES = 1 << 30


def log(msg: str) -> None:
    print(f"[export] {msg}", flush=True)


def warn_loudly(msg: str) -> None:
    bar = "!" * 78
    print(f"{bar}\n!! WARNING: {msg}\n{bar}", file=sys.stderr, flush=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------
# Checkpoint: read, unpickle (restricted), validate
# --------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    source: str  # what the user pointed at (file, tar!member), for messages and metadata
    data: bytes  # the pdparams bytes

    @property
    def sha256(self) -> str:
        return _sha256(self.data)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """A pdparams file is a pickled dict of numpy arrays; refuse anything else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
    }

    def find_class(self, module, name):
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
        raise ToolkitError(f"{tar_path}: not a readable tar archive ({exc.__class__.__name__}: {exc})") from None
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
    if not p.is_file():
        raise ToolkitError(f"checkpoint not found: {p}")
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
    dest.parent.mkdir(parents=True, exist_ok=True)
    hint = f"fetch {url} on a machine with access and pass --checkpoint /path/to/{CHECKPOINT_TAR}"
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
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
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, dest)
        log(f"downloaded {url} -> {dest}")
        return dest
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --------------------------------------------------------------------------------------
# Fingerprint / metadata
# --------------------------------------------------------------------------------------
def tool_versions() -> dict:
    out = {"python": ".".join(map(str, sys.version_info[:3]))}
    for dist in ("paddlepaddle", "paddle2onnx", "onnx", "onnxsim", "onnxruntime", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def code_digest() -> str:
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in ("modeling.py", "export.py"):
        h.update(name.encode() + b"\0" + (here / name).read_bytes() + b"\0")
    return h.hexdigest()


def fingerprint(cfg: RecConfig, ckpt: Checkpoint | None, paddleocr_dir: str | None) -> dict:
    weights = {"kind": "checkpoint", "sha256": ckpt.sha256} if ckpt else {"kind": "untrained-seeded", "seed": UNTRAINED_SEED}
    return {
        "weights": weights,
        "config_sha256": cfg.digest,
        "code_sha256": code_digest(),
        "tools": tool_versions(),
        "opset": OPSET,
        "inference_model_by": "PaddleOCR tools/export_model.py" if paddleocr_dir else "svtr_toolkit.modeling",
    }


def read_metadata(out_dir: Path) -> dict | None:
    try:
        with open(out_dir / METADATA, encoding="utf-8") as fh:
            meta = json.load(fh)
        return meta if isinstance(meta, dict) else None
    except (OSError, ValueError):
        return None


def is_up_to_date(out_dir: Path, fp: dict) -> bool:
    """True when the metadata matches ``fp`` and both models are the very files it describes."""
    meta = read_metadata(out_dir)
    if not meta or meta.get("fingerprint") != fp or not isinstance(meta.get("outputs"), dict):
        return False
    for name in (RAW_ONNX, OPT_ONNX):
        path, recorded = out_dir / name, meta["outputs"].get(name)
        if not path.is_file() or not isinstance(recorded, dict) or recorded.get("sha256") != sha256_file(path):
            return False
    return True


# --------------------------------------------------------------------------------------
# Export steps
# --------------------------------------------------------------------------------------
def _import_paddle():
    os.environ.setdefault("GLOG_minloglevel", "2")  # keep Paddle's C++ INFO lines out of the log
    import paddle

    return paddle


def build_loaded_model(cfg: RecConfig, ckpt: Checkpoint | None):
    """The eval-mode Paddle model with the checkpoint's weights (or seeded random ones)."""
    _import_paddle()
    from . import modeling

    model = modeling.build_model(cfg, seed=UNTRAINED_SEED)
    if ckpt is not None:
        params = parse_pdparams(ckpt.data, ckpt.source)
        params = validate_state_dict(params, modeling.state_dict_spec(model), ckpt.source)
        model.set_state_dict(params)
    model.eval()
    return model


def save_inference_model(model, cfg: RecConfig, prefix: Path) -> None:
    paddle = _import_paddle()
    c, h, w = cfg.image_shape
    spec = [paddle.static.InputSpec(shape=[None, c, h, w], dtype="float32", name=INPUT_NAME)]
    static = paddle.jit.to_static(model, input_spec=spec, full_graph=True)
    paddle.jit.save(static, str(prefix))


def save_inference_model_paddleocr(paddleocr_dir: str, cfg: RecConfig, ckpt: Checkpoint | None, model,
                                   work: Path) -> Path:
    """The model-zoo way: PaddleOCR's own tools/export_model.py writes the inference model."""
    paddle = _import_paddle()
    script = Path(paddleocr_dir) / "tools" / "export_model.py"
    if not script.is_file():
        raise ToolkitError(f"PADDLEOCR_DIR={paddleocr_dir} has no tools/export_model.py")
    weights = work / "weights" / "best_accuracy"
    weights.parent.mkdir()
    if ckpt is not None:
        (weights.parent / PDPARAMS_NAME).write_bytes(ckpt.data)
    else:
        paddle.save(model.state_dict(), str(weights) + ".pdparams")
    out = work / "paddleocr_inference"
    cmd = [sys.executable, str(script), "-c", cfg.path, "-o",
           f"Global.pretrained_model={weights}", f"Global.save_inference_dir={out}"]
    log(f"running {' '.join(cmd)}")
    proc = subprocess.run(cmd, cwd=paddleocr_dir, capture_output=True, text=True)
    if proc.returncode != 0 or not (out / "inference.pdmodel").is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ToolkitError(f"{script} failed (exit {proc.returncode}): {tail[0]}")
    return out / "inference"


def paddle_to_onnx(prefix: Path) -> bytes:
    import paddle2onnx

    # paddle2onnx raises opset 13 to 16 by itself (GridSample needs 16): ask for 16 outright.
    data = paddle2onnx.export(str(prefix) + ".pdmodel", str(prefix) + ".pdiparams", None, OPSET,
                              auto_upgrade_opset=True, verbose=False, enable_onnx_checker=True)
    if not data:
        raise ToolkitError("paddle2onnx produced no model")
    return data


def simplify_onnx(raw: bytes) -> bytes:
    import onnx
    import onnxsim

    model = onnx.load_from_string(raw)
    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise ToolkitError("onnxsim could not validate the simplified model against the original")
    return simplified.SerializeToString()


def describe_onnx(data: bytes) -> dict:
    import onnx

    model = onnx.load_from_string(data)

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    return {
        "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "inputs": {v.name: dims(v) for v in model.graph.input},
        "outputs": {v.name: dims(v) for v in model.graph.output},
        "nodes": len(model.graph.node),
    }


def probe(model, cfg: RecConfig):
    """A fixed random batch and the eager Paddle model's output for it (taken before
    to_static, so the check below compares against the dynamic-graph model)."""
    paddle = _import_paddle()
    x = np.random.default_rng(0).uniform(-1, 1, (2, *cfg.image_shape)).astype(np.float32)
    with paddle.no_grad():
        return x, model(paddle.to_tensor(x)).numpy()


def self_check(probe_io, onnx_bytes: bytes) -> dict:
    """Paddle vs onnxruntime on the probe batch; a broken export fails here."""
    import onnxruntime as ort

    x, ref = probe_io
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    if got.shape != ref.shape:
        raise ToolkitError(f"exported model gives shape {got.shape}, Paddle {ref.shape}")
    diff = float(np.abs(got - ref).max())
    agree = float((got.argmax(-1) == ref.argmax(-1)).mean())
    if not diff <= SELF_CHECK_TOL:
        raise ToolkitError(f"exported {OPT_ONNX} disagrees with the Paddle model: max abs diff {diff:.3g} > {SELF_CHECK_TOL}")
    return {"batch": int(x.shape[0]), "input": "uniform[-1,1], numpy seed 0", "max_abs_diff": diff,
            "argmax_agreement": agree}


@dataclass
class ExportResult:
    out_dir: Path
    rebuilt: bool
    metadata: dict


def export(config_path=DEFAULT_CONFIG, checkpoint=None, output_dir=REPO_ROOT, force: bool = False,
           download: bool = False, url: str = CHECKPOINT_URL, download_dir=None) -> ExportResult:
    """Make ``SVTR.onnx`` and ``SVTR_opt.onnx`` in ``output_dir`` unless they are up to date."""
    t0 = time.perf_counter()
    cfg = load_config(str(config_path))
    require_svtr_stn_ctc(cfg)
    out_dir = Path(output_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    if checkpoint is not None and download:
        raise ToolkitError("give either --checkpoint or --download, not both")
    if download:
        checkpoint = download_checkpoint(Path(download_dir or out_dir) / CHECKPOINT_TAR, url=url)
    ckpt = read_checkpoint(checkpoint) if checkpoint is not None else None
    paddleocr_dir = os.environ.get("PADDLEOCR_DIR") or None

    fp = fingerprint(cfg, ckpt, paddleocr_dir)
    if not force and is_up_to_date(out_dir, fp):
        log(f"{out_dir / OPT_ONNX} is up to date (same weights, config, code and tools); nothing to do")
        meta = read_metadata(out_dir)
        if meta.get("warning"):
            warn_loudly(meta["warning"])
        return ExportResult(out_dir, False, meta)

    if ckpt is None:
        warn_loudly(UNTRAINED_WARNING)
    log(f"config {cfg.path}; weights {ckpt.source if ckpt else f'untrained, seed {UNTRAINED_SEED}'}")
    model = build_loaded_model(cfg, ckpt)
    probe_io = probe(model, cfg)

    work = Path(tempfile.mkdtemp(prefix=".svtr-export-", dir=out_dir))
    try:
        t = time.perf_counter()
        if paddleocr_dir:
            prefix = save_inference_model_paddleocr(paddleocr_dir, cfg, ckpt, model, work)
        else:
            prefix = work / "inference" / "inference"
            save_inference_model(model, cfg, prefix)
        log(f"Paddle inference model ({time.perf_counter() - t:.1f} s)")
        t = time.perf_counter()
        raw = paddle_to_onnx(prefix)
        log(f"paddle2onnx -> {RAW_ONNX}, opset {OPSET} (13 would be raised to 16 anyway: GridSample) "
            f"({time.perf_counter() - t:.1f} s)")
        t = time.perf_counter()
        opt = simplify_onnx(raw)
        log(f"onnxsim -> {OPT_ONNX}, batch left dynamic ({time.perf_counter() - t:.1f} s)")
        check = self_check(probe_io, opt)
        log(f"self-check Paddle vs onnxruntime: max abs diff {check['max_abs_diff']:.2e}, "
            f"argmax agreement {check['argmax_agreement']:.0%}")

        (work / RAW_ONNX).write_bytes(raw)
        (work / OPT_ONNX).write_bytes(opt)
        meta = {
            "fingerprint": fp,
            "weights": "checkpoint" if ckpt else "untrained-seeded",
            "checkpoint_source": ckpt.source if ckpt else None,
            "config_path": cfg.path,
            "outputs": {
                RAW_ONNX: {"sha256": _sha256(raw), "bytes": len(raw)},
                OPT_ONNX: {"sha256": _sha256(opt), "bytes": len(opt), **describe_onnx(opt)},
            },
            "self_check": check,
            "export_seconds": round(time.perf_counter() - t0, 1),
            "created_unix": int(time.time()),
        }
        if ckpt is None:
            meta["warning"] = UNTRAINED_WARNING
        # Commit: drop the old metadata first, then the models, then the new metadata.
        (out_dir / METADATA).unlink(missing_ok=True)
        os.replace(work / RAW_ONNX, out_dir / RAW_ONNX)
        os.replace(work / OPT_ONNX, out_dir / OPT_ONNX)
        write_bytes_atomically(out_dir / METADATA, (json.dumps(meta, indent=1) + "\n").encode())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {out_dir / RAW_ONNX}, {out_dir / OPT_ONNX}, {out_dir / METADATA} "
        f"in {time.perf_counter() - t0:.1f} s")
    if ckpt is None:
        warn_loudly(UNTRAINED_WARNING)
    return ExportResult(out_dir, True, meta)
