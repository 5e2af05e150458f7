"""The benchmark run: plan the cells, build or open the engines, check, probe, time, compare.

Throughput is set against a measured peak (onnxruntime's MLAS sgemm for fp32, TVM's fp16
matmul on CPUs with fp16 arithmetic) using the model's FLOPs per image, counted from its
graph at the image shape the model (or its preset) takes, so any model the toolkit builds can
be benchmarked. Every (contender, batch) is checked against onnxruntime fp32 on the batch it
is timed on, so no speed is reported without its correctness.
"""
from __future__ import annotations

import os

from ..errors import ToolkitError
from .flags import HEADLINE_BATCH
from .flops import count_model_flops, model_image_shape
from .machine import machine_info
from .output import ORT_NAME, add_comparisons, cell_result
from .peak import describe_peak, measure_peak, merge_peaks
from .timing import (DEFAULT_SETTLE_S, IDLE_BUSY_FRACTION, IDLE_WINDOW_S, Cell, describe_idle_waits, run_rounds,
                     wait_until_idle)


def plan_cells(ort_backend, engines: list, batches: list) -> list:
    """Cells for onnxruntime at every sweep batch (and at every engine batch outside the
    sweep, so each engine has a reference) and for each engine at its own batch.

    ``engines`` is a list of (name, backend); a backend's batch is ``input_shape[0]``.
    """
    sweep = set(batches)
    engine_batches = {backend.input_shape[0] for _, backend in engines}
    ort_fixed = ort_backend.input_shape[0]
    cells = []
    for bs in sorted(sweep | engine_batches):
        if ort_fixed is not None and bs != ort_fixed:
            continue
        note = "" if bs in sweep else "extra batch: reference for an engine outside the sweep"
        cells.append(Cell(ORT_NAME, bs, ort_backend, note))
    for name, backend in engines:
        bs = backend.input_shape[0]
        note = "" if bs in sweep else f"engine batch {bs} is not in the sweep; timed at its own batch only"
        cells.append(Cell(name, bs, backend, note))
    seen = set()
    for cell in cells:
        if (cell.contender, cell.batch) in seen:
            raise ToolkitError(f"contender '{cell.contender}' at batch {cell.batch} is given twice")
        seen.add((cell.contender, cell.batch))
    return cells


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
    from ..compile import tuning
    from ..compile.tuning.selection import workload_key

    plans, said = [], set()
    for precision in precisions:
        for bs in batches:
            shape = (bs, *image_chw)
            choice = tuning.choose_database(workload_key(input_name, shape, precision))
            path = os.path.join(engine_dir, f"{stem}_bs_{bs}_{precision}")
            if choice.folder is not None:
                plans.append({"contender": f"tvm-{precision}", "path": path + "_autodb.so", "tuning_dir": "auto",
                              "batch": bs, "shape": list(shape), "precision": precision, "note": ""})
            elif precision not in said:
                said.add(precision)
                log(f"tvm-{precision} (automatic database choice) is the same build as tvm-{precision}-nodb here: "
                    f"{choice.why}; built and timed once, as tvm-{precision}-nodb")
            plans.append({"contender": f"tvm-{precision}-nodb", "path": path + "_nodb.so", "tuning_dir": None,
                          "batch": bs, "shape": list(shape), "precision": precision,
                          "note": "" if choice.folder else f"also tvm-{precision}: no database fits this CPU"})
    if fp16_variants:
        from ..cpu_features import host

        emulated = "fp16 arithmetic emulated on this CPU" if not host().has_fp16_arithmetic else ""
    for label, chosen in fp16_variants:
        for bs in batches:
            plans.append({"contender": f"tvm-fp16-{label}", "batch": bs, "shape": [bs, *image_chw],
                          "path": os.path.join(engine_dir, f"{stem}_bs_{bs}_fp16_{label}.so"), "tuning_dir": "auto",
                          "precision": "fp16", "accumulate": chosen,
                          "note": emulated if chosen["mode"] == "on" else ""})
    return plans


def build_missing(model_path, input_name, plans, log=print) -> list:
    """Build (or reuse up-to-date) the planned llvm engines: [(contender, path)]."""
    from ..compile.build import build_engine
    from ..compile.targets import host_cpu_target

    target = host_cpu_target()
    for plan in plans:
        build_engine(model_path, input_name, tuple(plan["shape"]), plan["precision"], target, plan["path"], log=log,
                     tuning_dir=plan["tuning_dir"], accumulate=plan.get("accumulate"))
    return [(plan["contender"], plan["path"]) for plan in plans]


def _open_engines(engine_specs, ort, image_chw):
    """The engines, each checked to take the model's input at the benchmark's image shape."""
    from ..runtime import load_engine

    engines = []
    for name, path in engine_specs:
        backend = load_engine(path)
        takes = tuple(backend.input_shape[1:]) == tuple(image_chw)
        model_takes = all(m is None or m == e for m, e in zip(ort.input_shape[1:], image_chw))
        if backend.input_name != ort.input_name or not (takes and model_takes):
            raise ToolkitError(f"engine '{name}' ({path}) takes {backend.input_name}:{list(backend.input_shape)}, "
                               f"the model takes {ort.input_name}:{list(ort.input_shape)}")
        engines.append((name, backend, path))
    return engines


def _describe_flops(counted, image_chw) -> str:
    by_op = ", ".join(f"{k} {v / 1e6:.1f}" for k, v in counted["by_op_per_image"].items())
    unknown = counted["nodes_with_unknown_shape"]
    return (f"model FLOPs per {image_chw[1]}x{image_chw[2]} image: {counted['flops_per_image'] / 1e6:.1f} MFLOP "
            f"({by_op}" + (f"; {unknown} nodes of unknown shape skipped" if unknown else "") + ")")


def check_cells(cells, reference, image_chw) -> None:
    """Every cell's output against onnxruntime fp32 (``reference``) on the same input batch (the
    one it is timed on): argmax agreement per time step, max |diff|, cosine into ``cell.parity``."""
    from ..evaluate.parity import run_padded
    from ..numerics import compare, random_batch

    expected = {}
    for cell in cells:
        if cell.batch not in expected:
            x = random_batch((cell.batch, *image_chw))
            expected[cell.batch] = (x, run_padded(reference, x))
        x, want = expected[cell.batch]
        cell.parity = compare(run_padded(cell.backend, x), want)


def run_benchmark(model_path, engine_specs, batches, rounds=5, min_sample_s=0.2, threads=None, build=False,
                  precisions=("fp32", "fp16"), engine_dir="work/bench", image_chw=None, engine_stem=None,
                  openvino=True, log=print, progress=True, fp16_variants=(), settle_s=DEFAULT_SETTLE_S) -> dict:
    """Time onnxruntime, OpenVINO (unless ``openvino`` is False or it is not installed) and the
    engines; ``image_chw`` (C, H, W) defaults to the model's own. Every cell is also checked
    against onnxruntime fp32 on its input batch.

    ``rounds`` >= 1, ``min_sample_s`` > 0 and ``settle_s`` >= 0 are the caller's to check."""
    from ..runtime import OrtBackend
    from .contenders import openvino_backends

    if not os.path.isfile(model_path):
        raise ToolkitError(f"ONNX model not found: {model_path}")
    for name, path in engine_specs:
        if not os.path.isfile(path):
            raise ToolkitError(f"engine '{name}' not found: {path}")
    image_chw = tuple(image_chw or model_image_shape(model_path))
    cores = len(os.sched_getaffinity(0))
    threads = threads or cores

    machine = machine_info()
    log(f"machine: {machine['cpu']}, {machine['cores_available']} cores available "
        f"({', '.join(machine['cpu_flags']) or 'no flags read'}); TVM {machine['tvm']}, "
        f"onnxruntime {machine['onnxruntime']}, OpenVINO {machine['openvino'] or 'not installed'}, "
        f"numpy {machine['numpy']}")
    counted = count_model_flops(model_path, (1, *image_chw))
    log(_describe_flops(counted, image_chw))

    log("peak probe: onnxruntime MLAS sgemm 2048^3 and TVM's fp32 matmul (and its fp16 one where the CPU has fp16) ...")
    peak = measure_peak(cores)
    log(f"peak probe: {describe_peak(peak)}")

    ort = OrtBackend(model_path, threads=threads)
    tvm_builds = []
    if build:
        stem = engine_stem or os.path.splitext(os.path.basename(model_path))[0]
        tvm_builds = plan_builds(ort.input_name, image_chw, batches, precisions, engine_dir, stem, log=log,
                                 fp16_variants=fp16_variants)
        engine_specs = list(engine_specs) + build_missing(model_path, ort.input_name, tvm_builds, log=log)
    engines = _open_engines(engine_specs, ort, image_chw)
    contenders = [(n, b) for n, b, _ in engines]
    if openvino:
        ort_fixed = ort.input_shape[0]
        contenders += openvino_backends(model_path, [b for b in batches if ort_fixed in (None, b)], image_chw,
                                        threads, log=log)
    cells = plan_cells(ort, contenders, batches)
    build_notes = {(p["contender"], p["batch"]): p["note"] for p in tvm_builds}
    for cell in cells:
        cell.arithmetic = _arithmetic(cell.backend)
        cell.note = cell.note or build_notes.get((cell.contender, cell.batch), "")
    log(f"{len(cells)} cells x {rounds} rounds, samples >= {min_sample_s} s, each after this process is idle "
        f"(at most {settle_s} s), onnxruntime/OpenVINO threads {threads}")
    check_cells(cells, ort, image_chw)
    run_rounds(cells, rounds, min_sample_s, log=log, progress=progress, image_chw=image_chw,
               wait_for_idle=lambda: wait_until_idle(settle_s))
    log(describe_idle_waits(cells, settle_s))

    # A peak is a best case: probe again after the rounds and keep the better of the two,
    # so a burst of load from elsewhere during the first probe does not inflate % of peak.
    again = measure_peak(cores, fp16_arithmetic=peak["fp16_arithmetic"])
    peak = merge_peaks(peak, again)
    log(f"peak probe after the rounds: {describe_peak(again)}; using {peak['all_cores_flops'] / 1e9:.1f} GFLOP/s fp32")
    if cores > 1 and peak["all_cores_flops"] < 1.5 * peak["one_core_flops"]:
        log(f"warning: the all-core GEMM barely beats one core ({peak['all_cores_flops'] / 1e9:.1f} vs "
            f"{peak['one_core_flops'] / 1e9:.1f} GFLOP/s): something else is using the CPU, so '% peak' is too high")
    results = add_comparisons([cell_result(c) for c in cells], counted["flops_per_image"], peak)
    parities = [{"contender": c.contender, "batch": c.batch, "line": c.parity.line(f"{c.contender}@{c.batch}"),
                 **c.parity.__dict__} for c in cells]

    return {
        "machine": machine,
        "settings": {"model_path": os.path.abspath(model_path), "image_shape": list(image_chw),
                     "batches": list(batches), "rounds": rounds, "min_sample_s": min_sample_s, "ort_threads": threads,
                     "headline_batch": HEADLINE_BATCH, "settle_s": settle_s,
                     "interleaving": f"round-robin, start rotated each round, each sample after this process is "
                                     f"idle (under {IDLE_BUSY_FRACTION} of a core over {IDLE_WINDOW_S * 1e3:g} ms; "
                                     f"at most settle_s)",
                     "correctness": "each cell's output vs onnxruntime fp32 on the batch it is timed on",
                     "engines": [{"name": n, "path": os.path.abspath(p)} for n, p in engine_specs],
                     "tvm_builds": tvm_builds},
        "flops": {"per_image": counted["flops_per_image"], "by_op_per_image": counted["by_op_per_image"],
                  "nodes_with_unknown_shape": counted["nodes_with_unknown_shape"],
                  "peak_fraction_uses": "flops.per_image / the peak of the result's arithmetic (peak_of)"},
        "peak": peak,
        "results": results,
        "parity": parities,
    }


def _arithmetic(backend) -> str:
    """What a contender computes in: an OpenVINO setting's inference precision, fp32 for
    onnxruntime; for an engine, fp16 where its matrix products accumulate in fp16 (the K-chunked
    plan) and fp32 otherwise: an fp16 engine without the plan stores fp16 and multiplies and
    adds in fp32, so its peak is the fp32 one."""
    if hasattr(backend, "arithmetic"):
        return backend.arithmetic
    meta = getattr(backend, "metadata", None) or {}
    return "fp16" if meta.get("precision") == "fp16" and meta.get("fp16_accumulate") else "fp32"
