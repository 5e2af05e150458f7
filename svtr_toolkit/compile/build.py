"""Build TVM engines from an ONNX model: identity and staleness, compile, write atomically.

The engine file format (the build description appended after the ELF image) is
``svtr_toolkit.engine_file``; where the engine runs is ``compile.targets``, one module per
target kind, each giving the Relax pipeline (or, for IGIE, its own build).
"""
from __future__ import annotations

import os
import time

from ..engine_file import PRECISIONS, append_engine_metadata, image_damaged, read_engine_metadata
from ..errors import ToolkitError, last_line, pending_interrupt
from ..files import sha256_file, write_atomically
from ..provenance import weights_of
from . import fp16_accumulate
from .onnx_passes import load_onnx, prepare_onnx
from .precision import reduced_mode, to_relax
from .targets import BuildTarget

def recipe_digest() -> str:
    """The build recipe an engine was made by: a digest of the toolkit's version and of every
    source file of the compile stage (``svtr_toolkit/compile``). Any change to how engines are
    compiled makes existing engines stale, without a number to remember to bump."""
    import hashlib
    from pathlib import Path

    from .. import __version__

    root = Path(__file__).resolve().parent
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_identity(model_sha256: str, input_name: str, shape: tuple, precision: str, target: BuildTarget,
                   tuning_db: str | None = None, accumulate: dict | None = None) -> dict:
    """What an engine must match to be reused instead of rebuilt (``tuning_db``: database digest;
    ``accumulate``: ``fp16_accumulate.setting``'s mode and chunk, instead of the environment's)."""
    import tvm

    return {
        "recipe": recipe_digest(),
        "model_sha256": model_sha256,
        "input_name": input_name,
        "input_shape": list(shape),
        "precision": precision,
        "target": target.spec,
        "tvm_version": tvm.__version__,
        "tuning_db": tuning_db,
        "fp16_accumulate": fp16_accumulate.setting(precision, target.spec, **(accumulate or {})),  # None: no K-chunked plan
    }


def stale_reasons(meta: dict | None, identity: dict) -> list:
    """Why an existing engine cannot be reused; empty when it can."""
    if meta is None:
        return ["no build description (not built by this toolkit, or an older format)"]
    labels = {"recipe": "build recipe", "model_sha256": "source model", "input_shape": "input shape",
              "input_name": "input name",
              "tuning_db": "tuning database"}
    reasons = []
    for key, want in identity.items():
        have = meta.get(key)
        if have == want:
            continue
        if key == "target" and isinstance(have, dict) and _without_mattr(have) == _without_mattr(want):
            reasons.append("CPU features changed (" + _feature_change(have, want) + ")")
        else:
            reasons.append(f"{labels.get(key, key.replace('_', ' '))} changed ({have!r} -> {want!r})")
    return reasons


def _without_mattr(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k != "mattr"}


def _feature_change(old: dict, new: dict) -> str:
    """``+avx512f, -fma``-style: features switched on and off between two target specs."""
    def on(spec):
        return {a[1:] for a in spec.get("mattr") or [] if a.startswith("+")}

    gained, lost = sorted(on(new) - on(old)), sorted(on(old) - on(new))
    return ", ".join([f"+{f}" for f in gained] + [f"-{f}" for f in lost]) or "same features, different list"


def _tuning_folder(target: BuildTarget, tuning_dir, workload: str, log):
    """The database folder a build uses, saying which and why: "auto" picks the best one this
    CPU can use, a folder named by hand is checked the same way; None for targets
    MetaSchedule databases do not apply to, and with tuning turned off."""
    from . import tuning

    if not target.module.TUNED:
        return None
    if tuning_dir is None:
        log("tuning database not used (turned off): every kernel gets the default schedule rules")
        return None
    if tuning_dir == "auto":
        choice = tuning.choose_database(workload, cpu=target.cpu)
        log(choice.line())
        return choice.folder
    log(tuning.check_named_database(tuning_dir, cpu=target.cpu))
    return tuning_dir


def build_engine(model_path, input_name, shape, precision, target: BuildTarget, engine_path,
                 force=False, log=print, tuning_dir: str | None = "auto", accumulate: dict | None = None) -> dict:
    """Compile unless a fresh engine is already there; return the engine's metadata.

    ``tuning_dir``: "auto" applies the best of the repository's MetaSchedule databases that
    this CPU can use, if any; None builds without; a path names a database folder. Kernels a
    database does not cover get the target's default schedule rules. ``accumulate``
    ({"mode": ..., "chunk": ...}) sets the fp16 engine's K-chunked accumulation instead of
    ``SVTR_FP16_ACCUMULATE`` / ``SVTR_FP16_CHUNK`` (the benchmark's variants).
    """
    from . import tuning

    if precision not in PRECISIONS:
        raise ToolkitError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    model = load_onnx(model_path)
    from .tuning.selection import workload_key

    choice = []  # said only when building: a reused engine needs no account of its database
    tuning_dir = _tuning_folder(target, tuning_dir, workload_key(input_name, shape, precision), choice.append)
    db_digest = tuning.database_digest(tuning_dir) if tuning_dir else None
    model_sha256 = sha256_file(model_path)
    identity = build_identity(model_sha256, input_name, shape, precision, target, db_digest, accumulate)
    existing = read_engine_metadata(engine_path) if os.path.exists(engine_path) else None
    if os.path.exists(engine_path) and not force:
        reasons = stale_reasons(existing, identity)
        if existing is not None and image_damaged(engine_path, existing):
            reasons.append("image damaged (does not match its recorded digest)")
        if not reasons:
            log(f"engine is up to date: {engine_path} ({precision}, {target.description})")
            return existing
        log(f"rebuilding {engine_path}: " + "; ".join(reasons))

    for line in choice:
        log(line)
    log(f"building {precision} engine for {target.description} from {model_path} with input {input_name}:{list(shape)}")
    start = time.perf_counter()
    meta = dict(identity)
    meta.update(
        model_path=os.path.abspath(model_path),
        target_description=target.description,
        model_metadata={p.key: p.value for p in model.metadata_props},
    )
    meta["weights"] = weights_of(meta["model_metadata"], model_path, model_sha256)
    own_build = getattr(target.module, "build", None)
    if own_build is not None:
        # IGIE imports and converts precision itself; it gets the model file as the zoo does.
        meta["precision_plan"] = f"{target.kind} own build, precision={precision}"
        write_atomically(engine_path, lambda tmp: (own_build(model_path, input_name, shape, precision, tmp, target.spec),
                                                   append_engine_metadata(tmp, meta)))
    else:
        executable = _compile(model, input_name, shape, precision, target, tuning_dir, bool(db_digest), meta, log)
        meta["build_seconds"] = round(time.perf_counter() - start, 1)

        def write(tmp):
            executable.export_library(tmp)
            append_engine_metadata(tmp, meta)

        write_atomically(engine_path, write)
    log(f"wrote {engine_path} ({os.path.getsize(engine_path) / 2**20:.1f} MiB) in {time.perf_counter() - start:.1f} s")
    return meta


def relax_module(prepared, input_name, shape, precision, spec: dict, accumulate):
    """(the Relax module an engine for the target ``spec`` is compiled from, its precision plan
    in words), from the prepared ONNX model: what the build compiles and the tuner
    (tools/tune_cpu.py) extracts its kernels from, so the two name the same kernels. The LLVM
    target takes the fast math forms after its channels-last conversion (its lowering passes)."""
    return to_relax(prepared, input_name, shape, precision, accumulate, reduced_mode(precision, spec, accumulate),
                    fast_math=spec.get("kind") != "llvm")


def _relax_module(model, input_name, shape, precision, spec: dict, accumulate):
    """``relax_module`` of the ONNX model as loaded."""
    return relax_module(prepare_onnx(model, input_name, shape), input_name, shape, precision, spec, accumulate)


def kernel_flops(meta: dict) -> dict:
    """{kernel name: FLOPs per call} for the engine a build description ``meta`` describes: its
    model lowered again through its target's passes up to scheduling, which name the kernels as
    the build did, each counted by TVM's estimate (kernels without one are left out). The model
    file must be the one the engine was built from."""
    import tvm
    from tvm import tirx

    from .targets import TARGETS
    from .tuning.coverage import prim_func_flops

    path = meta.get("model_path")
    if not path or not os.path.isfile(path):
        raise ToolkitError(f"the engine's model {path} is not there: FLOPs per kernel need the model it was built from")
    if sha256_file(path) != meta.get("model_sha256"):
        raise ToolkitError(f"{path} has changed since the engine was built: its kernels would not be the engine's")
    if meta.get("recipe") != recipe_digest() or meta.get("tvm_version") != tvm.__version__:
        raise ToolkitError(f"the engine was built by build recipe {meta.get('recipe')} with TVM "
                           f"{meta.get('tvm_version')}, this toolkit is recipe {recipe_digest()} with TVM "
                           f"{tvm.__version__}: its kernels may differ from a new lowering; rebuild it to count FLOPs")
    module = TARGETS.get(meta["target"].get("kind"))
    if module is None or not hasattr(module, "lower"):
        raise ToolkitError(f"FLOPs per kernel are counted for llvm engines, not {meta['target'].get('kind')}")
    mod, _ = _relax_module(load_onnx(path), meta["input_name"], tuple(meta["input_shape"]), meta["precision"],
                           meta["target"], meta.get("fp16_accumulate"))
    lowered = module.lower(mod, tvm.target.Target(meta["target"]))
    flops = {gvar.name_hint: prim_func_flops(tvm.IRModule({"main": func}))
             for gvar, func in lowered.functions_items() if isinstance(func, tirx.PrimFunc)}
    return {name: value for name, value in flops.items() if value is not None}


def _compile(model, input_name, shape, precision, target: BuildTarget, tuning_dir, apply_database: bool, meta,
             log):
    """``tvm.compile`` of the prepared model with the target's pipeline; fills the plan into ``meta``.
    ``tuning_dir``: the database folder the build chose (its coverage is described even when it is
    empty); ``apply_database``: whether it holds records to apply."""
    import tvm

    from . import tuning

    accumulate = meta.get("fp16_accumulate")
    mod, plan = _relax_module(model, input_name, shape, precision, target.spec, accumulate)
    meta["precision_plan"] = plan
    log(f"precision plan: {plan}")
    note = getattr(target.module, "precision_note", lambda *_: None)(target.spec, precision, accumulate)
    if note:
        log(f"note: {note}")
    if hasattr(target.module, "arithmetic"):
        meta["arithmetic"] = target.module.arithmetic(target.spec, precision, accumulate)
    tvm_target = target.tvm_target()
    if target.module.TUNED:
        meta["tuning"] = tuning.describe_coverage(mod, tvm_target, tuning_dir, log)
    database = tuning.open_for_build(tuning_dir) if apply_database else None
    report = {}
    try:
        executable = tvm.compile(mod, tvm_target, relax_pipeline=target.module.pipeline(tvm_target, database, report))
    except ToolkitError:
        raise
    except Exception as exc:
        # TVM turns a signal that arrives inside its C++ code into its own error (sometimes with
        # no message): the signal, not a compile failure, is what the user must see.
        if pending_interrupt() is not None:
            raise pending_interrupt() from None
        raise ToolkitError(f"TVM could not compile the model for {target.description}: {last_line(exc)}")
    if pending_interrupt() is not None:  # a signal whose exception code inside the pipeline swallowed
        raise pending_interrupt()
    if report:
        meta["schedules"] = _describe_schedules(report, log)
    return executable


def _describe_schedules(report: dict, log) -> dict:
    """One line on how the kernels were scheduled; kernels nothing scheduled are named."""
    from collections import Counter

    counts = Counter(source for source in report.values() if source is not None)
    missing = sorted(name for name, source in report.items() if source is None)
    by_rule = ", ".join(f"{rule} {n}" for rule, n in sorted(counts.items()) if rule != "database")
    log(f"schedules: {counts.get('database', 0)}/{len(report)} kernels from the tuning database, "
        f"{sum(counts.values()) - counts.get('database', 0)} by default rules ({by_rule or 'none'})"
        + (f"; {len(missing)} with neither, left serial: {', '.join(missing)}" if missing else ""))
    return {"kernels": len(report), "database": counts.get("database", 0),
            "rules": {rule: n for rule, n in counts.items() if rule != "database"}, "unscheduled": missing}
