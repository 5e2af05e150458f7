"""TVM engines: the ones the command line names (NAME=PATH) and, with ``--build``, the sweep's
own (``plan_builds``), each timed at the batch it was built for. What an engine computes in is
read from its build description (``arithmetic``): an engine whose reduced precision is values
in fp32 arithmetic is marked emulated."""
from __future__ import annotations

import os

from ...errors import ToolkitError
from . import Entry, Setup


def version() -> str | None:
    try:
        import tvm
    except ImportError:
        return None
    return tvm.__version__


def unavailable() -> str | None:
    return None if version() else "Apache TVM is not installed (pip install -r requirements.txt)"


def engine_path(engine_dir: str, stem: str, batch: int, precision: str, kind: str) -> str:
    """Where --build puts an engine: ``kind`` autodb, nodb, or an fp16 K-chunk label."""
    return os.path.join(engine_dir, f"{stem}_bs_{batch}_{precision}_{kind}.so")


def planned_paths(engine_dir, stem, batches, precisions, fp16_variants=()) -> list:
    """Every engine path --build may write (with and without a database: which one depends on the
    databases found), for the checks made before any work."""
    return ([engine_path(engine_dir, stem, bs, p, kind) for p in precisions for bs in batches
             for kind in ("autodb", "nodb")]
            + [engine_path(engine_dir, stem, bs, "fp16", label) for label, _ in fp16_variants for bs in batches])


def plan_builds(input_name, image_chw, batches, precisions, engine_dir, stem, log=print, fp16_variants=()) -> list:
    """The sweep's TVM engines: [{contender, path, tuning_dir, batch, shape, precision, accumulate}].

    At each batch and precision: one engine with the automatic database choice
    (``tvm-<precision>``, ``<stem>_bs_<N>_<precision>_autodb.so``) and one with no database
    (``tvm-<precision>-nodb``, ``..._nodb.so``). Where the automatic choice finds no database
    for this CPU the two are the same build: it is built and timed once, as the no-database
    engine, and a line says so. ``fp16_variants`` (``fp16_accumulate.parse_variants``) add,
    at each batch, an fp16 engine per K-chunk setting (``tvm-fp16-k64``, ``tvm-fp16-fp32arith``,
    ...) with the automatic database choice, whatever this CPU's default for fp16 is.
    """
    from ...compile import tuning
    from ...compile.tuning.selection import workload_key

    plans, said = [], set()
    for precision in precisions:
        for bs in batches:
            shape = (bs, *image_chw)
            choice = tuning.choose_database(workload_key(input_name, shape, precision))
            common = {"batch": bs, "shape": list(shape), "precision": precision}
            if choice.folder is not None:
                plans.append({"contender": f"tvm-{precision}", "tuning_dir": "auto", "note": "", **common,
                              "path": engine_path(engine_dir, stem, bs, precision, "autodb")})
            elif precision not in said:
                said.add(precision)
                log(f"tvm-{precision} (automatic database choice) is the same build as tvm-{precision}-nodb here: "
                    f"{choice.why}; built and timed once, as tvm-{precision}-nodb")
            plans.append({"contender": f"tvm-{precision}-nodb", "tuning_dir": None, **common,
                          "path": engine_path(engine_dir, stem, bs, precision, "nodb"),
                          "note": "" if choice.folder else f"also tvm-{precision}: no database fits this CPU"})
    for label, chosen in fp16_variants:
        for bs in batches:
            plans.append({"contender": f"tvm-fp16-{label}", "batch": bs, "shape": [bs, *image_chw],
                          "path": engine_path(engine_dir, stem, bs, "fp16", label), "tuning_dir": "auto",
                          "precision": "fp16", "accumulate": chosen, "note": ""})
    return plans


def setup_plans(setup: Setup) -> list:
    """``plan_builds`` for the setup (none without ``--build``)."""
    if not setup.build:
        return []
    return plan_builds(setup.reference.input_name, setup.image_chw, setup.batches, setup.precisions,
                       setup.engine_dir, setup.engine_stem, log=setup.log, fp16_variants=setup.fp16_variants)


def build_missing(model_path, input_name, plans, log=print) -> list:
    """Build (or reuse up-to-date) the planned llvm engines: [(contender, path)]."""
    from ...compile.build import build_engine
    from ...compile.targets import host_cpu_target

    target = host_cpu_target()
    for plan in plans:
        build_engine(model_path, input_name, tuple(plan["shape"]), plan["precision"], target, plan["path"], log=log,
                     tuning_dir=plan["tuning_dir"], accumulate=plan.get("accumulate"))
    return [(plan["contender"], plan["path"]) for plan in plans]


def peak_arithmetic(meta: dict) -> str:
    """What an engine's matrix products compute in, as the peak it is set against: the build
    description's ``arithmetic`` ("fp16 (K-chunked, ...)" -> fp16, "bf16 matrix products ..." ->
    bf16, anything in fp32 arithmetic -> fp32); engines from before it was recorded: fp16 where
    the products accumulate in fp16 (the K-chunked plan), else fp32."""
    words = meta.get("arithmetic")
    if words is None:
        return "fp16" if meta.get("precision") == "fp16" and meta.get("fp16_accumulate") else "fp32"
    return next((kind for kind in ("fp16", "bf16") if words.startswith(kind)), "fp32")


def emulated(meta: dict) -> bool:
    """A reduced precision computed in fp32 arithmetic (or fp16 operations each widened to fp32):
    the build description's ``arithmetic`` says "emulated" (absent in older engines: not marked)."""
    return "emulated" in (meta.get("arithmetic") or "")


def open_engines(engine_specs, setup: Setup, notes: dict) -> list:
    """An Entry per engine, each checked to take the model's input at the benchmark's image shape."""
    from ...runtime import load_engine

    ort = setup.reference
    out = []
    for name, path in engine_specs:
        backend = load_engine(path)
        takes = tuple(backend.input_shape[1:]) == tuple(setup.image_chw)
        model_takes = all(m is None or m == e for m, e in zip(ort.input_shape[1:], setup.image_chw))
        if backend.input_name != ort.input_name or not (takes and model_takes):
            raise ToolkitError(f"engine '{name}' ({path}) takes {backend.input_name}:{list(backend.input_shape)}, "
                               f"the model takes {ort.input_name}:{list(ort.input_shape)}")
        batch = backend.input_shape[0]
        out.append(Entry(name, backend, batch=batch, note=notes.get((name, batch), ""),
                         arithmetic=peak_arithmetic(backend.metadata), emulated=emulated(backend.metadata)))
    return out


def entries(setup: Setup) -> list:
    plans = setup_plans(setup)
    engine_specs = list(setup.engines) + build_missing(setup.model_path, setup.reference.input_name, plans,
                                                       log=setup.log)
    setup.recorded["engines"] = [{"name": n, "path": os.path.abspath(p)} for n, p in engine_specs]
    setup.recorded["tvm_builds"] = plans
    return open_engines(engine_specs, setup, {(p["contender"], p["batch"]): p["note"] for p in plans})
