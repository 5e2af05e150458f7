"""The benchmark run: plan the cells, build or open the engines, probe, time, compare, check parity.

Throughput is set against a measured peak (a large numpy fp32 GEMM on all cores) using the
model's FLOPs per image, counted from its graph at the image shape the model (or its preset)
takes, so any model the toolkit builds can be benchmarked.
"""
from __future__ import annotations

import os

from ..errors import ToolkitError
from .flags import HEADLINE_BATCH
from .flops import count_model_flops, model_image_shape
from .machine import machine_info
from .output import ORT_NAME, add_comparisons, cell_result
from .peak import measure_peak, merge_peaks
from .timing import Cell, run_rounds


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


def build_missing(model_path, input_name, image_chw, batches, precisions, engine_dir, stem, log=print) -> list:
    """Build (or reuse up-to-date) llvm engines for every batch and precision: [(name, path)].
    Engines are named ``<stem>_bs_<N>_<precision>.so``."""
    from ..compile.build import build_engine
    from ..compile.targets import host_cpu_target

    target = host_cpu_target()
    out = []
    for precision in precisions:
        for bs in batches:
            path = os.path.join(engine_dir, f"{stem}_bs_{bs}_{precision}.so")
            build_engine(model_path, input_name, (bs, *image_chw), precision, target, path, log=log)
            out.append((f"tvm-{precision}", path))
    return out


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


def run_benchmark(model_path, engine_specs, batches, rounds=5, min_sample_s=0.2, threads=None, build=False,
                  precisions=("fp32", "fp16"), engine_dir="work/bench", image_chw=None, engine_stem=None,
                  parity_rows=None, log=print, progress=True) -> dict:
    """Time onnxruntime and the engines; ``image_chw`` (C, H, W) defaults to the model's own.

    ``rounds`` >= 1 and ``min_sample_s`` > 0 are the caller's to check."""
    from ..evaluate import parity
    from ..numerics import random_batch
    from ..runtime import OrtBackend

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
        f"onnxruntime {machine['onnxruntime']}, numpy {machine['numpy']}")
    counted = count_model_flops(model_path, (1, *image_chw))
    log(_describe_flops(counted, image_chw))

    log("peak probe: 2048^3 fp32 numpy GEMM, best of 3 ...")
    peak = measure_peak(cores)
    log(f"peak probe: {peak['all_cores_flops'] / 1e9:.1f} GFLOP/s on {cores} cores, "
        f"{peak['one_core_flops'] / 1e9:.1f} GFLOP/s on 1 core")

    ort = OrtBackend(model_path, threads=threads)
    if build:
        stem = engine_stem or os.path.splitext(os.path.basename(model_path))[0]
        engine_specs = list(engine_specs) + build_missing(model_path, ort.input_name, image_chw, batches, precisions,
                                                          engine_dir, stem, log=log)
    engines = _open_engines(engine_specs, ort, image_chw)
    cells = plan_cells(ort, [(n, b) for n, b, _ in engines], batches)
    log(f"{len(cells)} cells x {rounds} rounds, samples >= {min_sample_s} s, onnxruntime threads {threads}")
    run_rounds(cells, rounds, min_sample_s, log=log, progress=progress, image_chw=image_chw)

    # A peak is a best case: probe again after the rounds and keep the better of the two,
    # so a burst of load from elsewhere during the first probe does not inflate % of peak.
    again = measure_peak(cores)
    peak = merge_peaks(peak, again)
    log(f"peak probe after the rounds: {again['all_cores_flops'] / 1e9:.1f} GFLOP/s on {cores} cores, "
        f"{again['one_core_flops'] / 1e9:.1f} on 1 core; using {peak['all_cores_flops'] / 1e9:.1f} GFLOP/s")
    if cores > 1 and peak["all_cores_flops"] < 1.5 * peak["one_core_flops"]:
        log(f"warning: the all-core GEMM barely beats one core ({peak['all_cores_flops'] / 1e9:.1f} vs "
            f"{peak['one_core_flops'] / 1e9:.1f} GFLOP/s): something else is using the CPU, so '% peak' is too high")
    results = add_comparisons([cell_result(c) for c in cells], counted["flops_per_image"], peak["all_cores_flops"])

    parities = []
    for name, backend, path in engines:
        rows = parity_rows or backend.input_shape[0]
        p = parity.check(backend, model_path, random_batch((rows, *image_chw), seed=1))
        parities.append({"contender": name, "engine_path": path, "batch": backend.input_shape[0],
                         "line": p.line(name), **p.__dict__})

    return {
        "machine": machine,
        "settings": {"model_path": os.path.abspath(model_path), "image_shape": list(image_chw),
                     "batches": list(batches), "rounds": rounds, "min_sample_s": min_sample_s, "ort_threads": threads,
                     "headline_batch": HEADLINE_BATCH, "interleaving": "round-robin, start rotated each round",
                     "engines": [{"name": n, "path": os.path.abspath(p)} for n, p in engine_specs]},
        "flops": {"per_image": counted["flops_per_image"], "by_op_per_image": counted["by_op_per_image"],
                  "nodes_with_unknown_shape": counted["nodes_with_unknown_shape"],
                  "peak_fraction_uses": "flops.per_image / peak.all_cores_flops"},
        "peak": peak,
        "results": results,
        "parity": parities,
    }
