"""The benchmark run: open the contenders, plan the cells, check, probe, time, compare.

Throughput is set against a measured peak (onnxruntime's MLAS sgemm for fp32, TVM's fp16
matmul on CPUs with fp16 arithmetic) using the model's FLOPs per image, counted from its
graph at the image shape the model (or its preset) takes, so any model the toolkit builds can
be benchmarked. Every (contender, batch) is checked against onnxruntime fp32 on the batch it
is timed on, so no speed is reported without its correctness.
"""
from __future__ import annotations

import math
import os

from ..errors import ToolkitError
from .contenders import REGISTRY, Setup
from .contenders import load as load_contender
from .flags import HEADLINE_BATCH
from .flops import count_model_flops, model_image_shape
from .machine import machine_info
from .output import ORT_NAME, add_comparisons, cell_result
from .peak import describe_peak, measure_peak, merge_peaks
from .timing import (DEFAULT_SETTLE_S, IDLE_BUSY_FRACTION, IDLE_WINDOW_S, Cell, describe_idle_waits, run_rounds,
                     wait_until_idle)


def plan_cells(entries: list, batches: list) -> list:
    """A cell per (contender, batch): an entry with its own batch at that batch, one that takes any
    batch at every sweep batch; the reference (onnxruntime fp32) also at every other entry's batch
    outside the sweep, so each has a ratio to it."""
    sweep = set(batches)
    fixed = {e.batch for e in entries if e.batch is not None}
    cells = []
    for entry in entries:
        if entry.batch is not None:
            note = "" if entry.batch in sweep or entry.reference else \
                f"batch {entry.batch} is not in the sweep; timed at its own batch only"
            at = [(entry.batch, note)]
        else:
            at = [(bs, "") for bs in sorted(sweep)]
            if entry.reference:
                at += [(bs, "extra batch: reference for a contender outside the sweep") for bs in sorted(fixed - sweep)]
        for bs, note in at:
            cells.append(Cell(entry.name, bs, entry.backend, " ".join(filter(None, (entry.note, note))),
                              arithmetic=entry.arithmetic, emulated=entry.emulated))
    seen = set()
    for cell in cells:
        if (cell.contender, cell.batch) in seen:
            raise ToolkitError(f"contender '{cell.contender}' at batch {cell.batch} is given twice")
        seen.add((cell.contender, cell.batch))
    return cells


def _describe_flops(counted, image_chw) -> str:
    by_op = ", ".join(f"{k} {v / 1e6:.1f}" for k, v in counted["by_op_per_image"].items())
    unknown = counted["nodes_with_unknown_shape"]
    return (f"model FLOPs per {image_chw[1]}x{image_chw[2]} image: {counted['flops_per_image'] / 1e6:.1f} MFLOP "
            f"({by_op}" + (f"; {unknown} nodes of unknown shape skipped" if unknown else "") + ")")


def input_memory_bytes(batches, image_chw) -> int:
    """Bytes of the float32 inputs the benchmark holds for the whole run: per batch, the batch it
    times on and the one it checks correctness on. The runtimes' own working memory (weights,
    activations) is not counted: this is the least a run needs, and it grows with the largest
    batch of the sweep."""
    return 2 * 4 * sum(int(b) for b in batches) * math.prod(int(d) for d in image_chw)


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


def run_benchmark(model_path, batches, contenders=tuple(REGISTRY), engine_specs=(), rounds=5, min_sample_s=0.2,
                  threads=None, build=False, precisions=("fp32", "fp16"), engine_dir="work/bench", image_chw=None,
                  engine_stem=None, log=print, progress=True, fp16_variants=(), settle_s=DEFAULT_SETTLE_S) -> dict:
    """Time the ``contenders`` (names in ``contenders.REGISTRY``; one that cannot run here is left
    out with a line saying why); ``engine_specs`` and the build options are the TVM engines'.
    ``image_chw`` (C, H, W) defaults to the model's own. Every cell is also checked against
    onnxruntime fp32 on its input batch.

    ``rounds`` >= 1, ``min_sample_s`` > 0 and ``settle_s`` >= 0 are the caller's to check."""
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
    versions = ", ".join(f"{name} {version or 'not installed'}" for name, version in machine["versions"].items())
    log(f"machine: {machine['cpu']}, {machine['cores_available']} cores available "
        f"({', '.join(machine['cpu_flags']) or 'no flags read'}); {versions}, numpy {machine['numpy']}")
    counted = count_model_flops(model_path, (1, *image_chw))
    log(_describe_flops(counted, image_chw))

    log("peak probe: onnxruntime MLAS sgemm 2048^3 and TVM's fp32 matmul (and its fp16 one where the CPU has fp16) ...")
    peak = measure_peak(cores)
    log(f"peak probe: {describe_peak(peak)}")

    ort = OrtBackend(model_path, threads=threads)
    setup = Setup(model_path, image_chw, list(batches), threads, ort, log=log, engines=list(engine_specs),
                  build=build, precisions=list(precisions), engine_dir=engine_dir,
                  engine_stem=engine_stem or os.path.splitext(os.path.basename(model_path))[0],
                  fp16_variants=list(fp16_variants))
    entries = []
    for name in contenders:
        module = load_contender(name)
        why = module.unavailable()
        if why:
            log(f"{name} not timed: {why}")
            continue
        entries += module.entries(setup)
    cells = plan_cells(entries, batches)
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
                     "contenders": list(contenders), **setup.recorded},
        "flops": {"per_image": counted["flops_per_image"], "by_op_per_image": counted["by_op_per_image"],
                  "nodes_with_unknown_shape": counted["nodes_with_unknown_shape"],
                  "peak_fraction_uses": "flops.per_image / the peak of the result's arithmetic (peak_of)"},
        "peak": peak,
        "results": results,
        "parity": parities,
    }

