"""PaddleOCR checkpoint -> SVTR.onnx -> SVTR_opt.onnx, offline, idempotent and atomic.

    weights (best_accuracy.pdparams, its .tar, or nothing = untrained, seeded)
      -> svtr_toolkit.prepare.modeling (this toolkit's paddle.nn SVTR-Tiny, built from the yml)
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

import importlib.metadata
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import RecConfig, load_config, require_svtr_stn_ctc
from ..errors import ToolkitError
from ..files import StagingFolder, check_outputs_apart, check_writable, sha256_bytes, sha256_file, write_bytes_atomically
from ..numerics import compare, random_batch
from ..paths import REPO_ROOT as _ROOT
from ..presets import PRESETS
from .checkpoint import (CHECKPOINT_MEMBER, CHECKPOINT_TAR, CHECKPOINT_URL, PDPARAMS_NAME, Checkpoint,  # noqa: F401
                         download_checkpoint, log, parse_pdparams, read_checkpoint, read_checkpoint_from_tar,
                         validate_state_dict)

REPO_ROOT = Path(_ROOT)
DEFAULT_CONFIG = REPO_ROOT / PRESETS["svtr"].config

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
SELF_CHECK_TOL = 1e-3


def warn_loudly(msg: str) -> None:
    bar = "!" * 78
    print(f"{bar}\n!! WARNING: {msg}\n{bar}", file=sys.stderr, flush=True)


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
    return sha256_bytes(b"".join(name.encode() + b"\0" + (here / name).read_bytes() + b"\0"
                                 for name in ("modeling.py", "checkpoint.py", "export.py")))


def fingerprint(cfg: RecConfig, ckpt: Checkpoint | None, paddleocr_dir: str | None) -> dict:
    weights = {"kind": "checkpoint", "sha256": ckpt.sha256} if ckpt else {"kind": "untrained-seeded", "seed": UNTRAINED_SEED}
    return {
        "weights": weights,
        "config_sha256": cfg.digest,
        "code_sha256": code_digest(),
        "tools": tool_versions(),
        "opset": OPSET,
        "inference_model_by": "PaddleOCR tools/export_model.py" if paddleocr_dir else "svtr_toolkit.prepare.modeling",
    }


def weights_metadata(ckpt: Checkpoint | None) -> dict:
    """What the ONNX models' metadata_props say about their weights; engines and every
    accuracy output carry it on (``weights``: trained or untrained)."""
    if ckpt is None:
        return {"weights": "untrained", "weights_source": f"seeded random initialisation, seed {UNTRAINED_SEED}"}
    return {"weights": "trained", "weights_source": ckpt.source, "checkpoint_sha256": ckpt.sha256}


def with_metadata(data: bytes, props: dict) -> bytes:
    """The ONNX model ``data`` with ``props`` set in its metadata_props."""
    import onnx

    model = onnx.load_from_string(data)
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=str(value))
    return model.SerializeToString()


def trained_export(out_dir: Path) -> str | None:
    """The checkpoint the export in ``out_dir`` was made from, None unless it is a trained one."""
    meta = read_metadata(Path(out_dir))
    if meta and meta.get("weights") == "checkpoint" and (Path(out_dir) / OPT_ONNX).is_file():
        return meta.get("checkpoint_source") or "a checkpoint"
    return None


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
    x = random_batch((2, *cfg.image_shape), seed=0)
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
    parity = compare(got, ref)
    diff, agree = parity.max_abs_diff, parity.argmax_agreement
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
    outputs = [("--out_dir", out_dir / name) for name in (RAW_ONNX, OPT_ONNX, METADATA)]
    if download:
        outputs.append(("--download_dir", Path(download_dir or out_dir) / CHECKPOINT_TAR))
    for flag, path in outputs:
        check_writable(path, flag)
    # a checkpoint folder is searched for one file, and may well be the output folder itself
    check_outputs_apart(outputs, [("--config", config_path),
                                  ("--checkpoint", checkpoint if checkpoint and os.path.isfile(checkpoint) else None)])
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

    trained = trained_export(out_dir) if ckpt is None and not force else None
    if trained:
        raise ToolkitError(f"{out_dir / OPT_ONNX} was exported from a trained checkpoint ({trained}); refusing to "
                           f"replace it with an untrained model (give --checkpoint PATH, or --force to replace it)")
    if ckpt is None:
        warn_loudly(UNTRAINED_WARNING)
    log(f"config {cfg.path}; weights {ckpt.source if ckpt else f'untrained, seed {UNTRAINED_SEED}'}")
    model = build_loaded_model(cfg, ckpt)
    probe_io = probe(model, cfg)

    with StagingFolder(out_dir) as staging:
        for name in staging.removed:
            log(f"removed {name}, left by an export that was killed")
        work = Path(staging.path)
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
        raw, opt = (with_metadata(data, weights_metadata(ckpt)) for data in (raw, opt))
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
                RAW_ONNX: {"sha256": sha256_bytes(raw), "bytes": len(raw)},
                OPT_ONNX: {"sha256": sha256_bytes(opt), "bytes": len(opt), **describe_onnx(opt)},
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
    log(f"wrote {out_dir / RAW_ONNX}, {out_dir / OPT_ONNX}, {out_dir / METADATA} "
        f"in {time.perf_counter() - t0:.1f} s")
    if ckpt is None:
        warn_loudly(UNTRAINED_WARNING)
    return ExportResult(out_dir, True, meta)
