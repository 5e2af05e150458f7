"""CPU throughput benchmark: onnxruntime fp32 and TVM engines side by side, interleaved.

Every (contender, batch) pair is a *cell*. After a warm-up that also calibrates how many
``run`` calls make one sample (>= ``min_sample_s``), the cells are timed round-robin: each
round takes one sample of every cell, so machine noise lands on all of them alike. The
start of the round-robin rotates from round to round so no cell always runs right after
the same neighbour. The figure per cell is the median over rounds, with min-max as spread.

Throughput is also set against a measured peak (a large numpy fp32 GEMM on all cores, and
one on a single core) using the model's FLOPs per 64x256 image.
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .errors import ToolkitError

# FACTS.md §2: about 728 MFLOP per 64x256 image (23.3 GFLOP per batch of 32), counting a
# multiply-add as 2 FLOPs. ``count_model_flops`` recounts it from the graph.
FLOPS_PER_IMAGE = 728e6
IMAGE_CHW = (3, 64, 256)
DEFAULT_BATCHES = (1, 8, 32, 64)
HEADLINE_BATCH = 32
ORT_NAME = "onnxruntime-fp32"


# ----------------------------------------------------------------------------- pure logic
def parse_batches(text: str) -> list:
    try:
        batches = sorted({int(b) for b in text.split(",") if b.strip()})
    except ValueError:
        batches = []
    if not batches or any(b <= 0 for b in batches):
        raise ToolkitError(f"--batches must be positive integers separated by commas (e.g. 1,8,32,64), got '{text}'")
    return batches


def parse_engine_specs(specs) -> list:
    """``["fp32=a.so", "fp16=b.so"]`` -> [("fp32", "a.so"), ("fp16", "b.so")]."""
    out, seen = [], set()
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise ToolkitError(f"--engine must look like NAME=PATH (e.g. fp16=svtr_bs_32_fp16.so), got '{spec}'")
        if name in seen:
            raise ToolkitError(f"--engine name '{name}' is given twice")
        seen.add(name)
        out.append((name, path))
    return out


def calls_per_sample(seconds_per_call: float, min_sample_s: float) -> int:
    """How many calls make one sample last at least ``min_sample_s``."""
    if seconds_per_call <= 0:
        return 1
    return max(1, math.ceil(min_sample_s / seconds_per_call))


def interleaved_order(n_cells: int, rounds: int) -> list:
    """(round, cell index) in timing order: every round visits every cell once.

    Round r starts at cell ``r % n_cells`` so the order of neighbours rotates.
    """
    return [(r, (r + k) % n_cells) for r in range(rounds) for k in range(n_cells)]


def summarize(values) -> dict:
    """Median, min, max and relative spread ((max-min)/median) of a list of numbers."""
    values = [float(v) for v in values]
    if not values:
        return {"n": 0, "median": None, "min": None, "max": None, "spread": None}
    med = statistics.median(values)
    return {
        "n": len(values),
        "median": med,
        "min": min(values),
        "max": max(values),
        "spread": (max(values) - min(values)) / med if med else None,
    }


def images_per_second(batch: int, seconds_per_call: float) -> float:
    return batch / seconds_per_call


def peak_fraction(img_per_s: float, flops_per_image: float, peak_flops: float):
    """Share of the peak FLOP/s that ``img_per_s`` images of ``flops_per_image`` use."""
    if not peak_flops or img_per_s is None:
        return None
    return img_per_s * flops_per_image / peak_flops


def ratio(value, reference):
    if value is None or not reference:
        return None
    return value / reference


def gemm_flops(n: int) -> float:
    """FLOPs of an n x n x n matrix product (one multiply-add = 2 FLOPs)."""
    return 2.0 * n ** 3


# ----------------------------------------------------------------------------- model FLOPs
def _shape_table(model) -> dict:
    shapes = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _known(shape) -> bool:
    return shape is not None and None not in shape


def node_flops(op_type: str, in_shapes: list, out_shape, attrs: dict):
    """FLOPs (2 per multiply-add) of one MatMul/Gemm/Conv, or None if a shape is unknown."""
    if op_type == "MatMul":
        a = in_shapes[0]
        if not _known(a) or not _known(out_shape) or not a:
            return None
        k = a[-1]
        return 2.0 * math.prod(out_shape) * k
    if op_type == "Gemm":
        a = in_shapes[0]
        if not _known(a) or not _known(out_shape):
            return None
        k = a[0] if attrs.get("transA", 0) else a[1]
        return 2.0 * math.prod(out_shape) * k
    if op_type == "Conv":
        w = in_shapes[1]
        if not _known(w) or not _known(out_shape):
            return None
        return 2.0 * math.prod(out_shape) * math.prod(w[1:])  # w[1] is already Cin / group
    return None


def count_model_flops(onnx_path: str, input_shape=(1, *IMAGE_CHW)) -> dict:
    """FLOPs per image of the model's MatMul/Gemm/Conv nodes, from ONNX shape inference.

    Elementwise ops, softmax, norms and pooling are not counted (a few percent at most).
    """
    import onnx
    from onnx import helper, shape_inference

    from .onnx_passes import data_inputs

    model = onnx.load(onnx_path)
    dims = data_inputs(model)[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, input_shape):
        if not (dim.HasField("dim_value") and dim.dim_value > 0):
            dim.Clear()
            dim.dim_value = value
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes = _shape_table(inferred)
    by_op, unknown = {}, 0
    for node in inferred.graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Conv"):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        flops = node_flops(node.op_type, [shapes.get(n) for n in node.input], shapes.get(node.output[0]), attrs)
        if flops is None:
            unknown += 1
            continue
        by_op[node.op_type] = by_op.get(node.op_type, 0.0) + flops
    batch = input_shape[0]
    total = sum(by_op.values())
    return {
        "flops_per_image": total / batch,
        "by_op_per_image": {k: v / batch for k, v in sorted(by_op.items())},
        "nodes_with_unknown_shape": unknown,
    }


# ----------------------------------------------------------------------------- peak probe
_GEMM_SNIPPET = """
import sys, time, numpy as np
n, repeats = int(sys.argv[1]), int(sys.argv[2])
a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
a @ b
best = float("inf")
for _ in range(repeats):
    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)
print(2.0 * n ** 3 / best)
"""


def measure_gemm_flops(n: int = 2048, repeats: int = 3, threads: int | None = None) -> float:
    """Best FLOP/s of an n^3 fp32 numpy GEMM, in a fresh process pinned to ``threads`` BLAS threads."""
    env = dict(os.environ)
    if threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    try:
        done = subprocess.run([sys.executable, "-c", _GEMM_SNIPPET, str(n), str(repeats)], env=env,
                              capture_output=True, text=True, check=True, timeout=600)
        return float(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        raise ToolkitError(f"the GEMM peak probe failed: {exc}")


def measure_peak(cores: int, n: int = 2048, repeats: int = 3) -> dict:
    all_cores = measure_gemm_flops(n, repeats, threads=cores)
    one_core = measure_gemm_flops(n, repeats, threads=1)
    return {"gemm_n": n, "repeats": repeats, "all_cores_flops": all_cores, "one_core_flops": one_core,
            "cores": cores}


def merge_peaks(before: dict, after: dict) -> dict:
    """Best of two probes, keeping both readings."""
    merged = dict(before)
    for key in ("all_cores_flops", "one_core_flops"):
        merged[key] = max(before[key], after[key])
        merged[key + "_probes"] = [before[key], after[key]]
    return merged


# ----------------------------------------------------------------------------- machine
def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags(wanted=("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16")) -> list:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


def machine_info() -> dict:
    import onnxruntime
    import tvm

    return {
        "cpu": cpu_model_name(),
        "cores_available": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "tvm": tvm.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


# ----------------------------------------------------------------------------- timing
@dataclass
class Cell:
    contender: str
    batch: int
    backend: object
    note: str = ""
    calls: int = 1
    samples_s: list = field(default_factory=list)  # seconds per call, one per round

    @property
    def label(self):
        return f"{self.contender}@{self.batch}"


def bench_input(batch: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1.0, 1.0, (batch, *IMAGE_CHW)).astype(np.float32)


def time_calls(backend, batch_array, calls: int) -> float:
    """Seconds per ``run`` call, averaged over ``calls`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        backend.run(batch_array)
    return (time.perf_counter() - start) / calls


def warm_up(cell: Cell, batch_array, min_sample_s: float) -> float:
    """One untimed call, then calibrate ``cell.calls``; returns the seconds per call seen."""
    first = time_calls(cell.backend, batch_array, 1)
    if first >= min_sample_s:
        per_call = first  # one call is already a sample; do not spend another on calibration
    else:
        calls, per_call = 1, first
        while calls * per_call < min_sample_s / 2:  # calibrate on about half a sample
            calls = min(calls * 4, max(calls + 1, calls_per_sample(per_call, min_sample_s / 2)))
            per_call = time_calls(cell.backend, batch_array, calls)
    cell.calls = calls_per_sample(per_call, min_sample_s)
    return per_call


def run_rounds(cells, rounds: int, min_sample_s: float, log=print, progress=True) -> None:
    inputs = {}
    for cell in cells:
        inputs.setdefault(cell.batch, bench_input(cell.batch))
        per_call = warm_up(cell, inputs[cell.batch], min_sample_s)
        log(f"warm-up {cell.label}: {per_call * 1e3:.1f} ms/call -> {cell.calls} call(s) per sample")
    order = interleaved_order(len(cells), rounds)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(order), unit="sample", desc="timing", dynamic_ncols=True)
    try:
        for r, index in order:
            cell = cells[index]
            if bar is not None:
                bar.set_description(f"round {r + 1}/{rounds} {cell.label}")
            cell.samples_s.append(time_calls(cell.backend, inputs[cell.batch], cell.calls))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()


# ----------------------------------------------------------------------------- results
def cell_result(cell: Cell) -> dict:
    throughput = [images_per_second(cell.batch, s) for s in cell.samples_s]
    stats = summarize(throughput)
    return {
        "contender": cell.contender,
        "batch": cell.batch,
        "note": cell.note,
        "calls_per_sample": cell.calls,
        "seconds_per_call": list(cell.samples_s),
        "img_per_s": throughput,
        "median_img_per_s": stats["median"],
        "min_img_per_s": stats["min"],
        "max_img_per_s": stats["max"],
        "spread": stats["spread"],
    }


def add_comparisons(results: list, flops_per_image: float, peak_flops: float, reference=ORT_NAME) -> list:
    """Fill ratio to the reference at the same batch, and fraction of peak, into each result.

    ``paired_ratio_median`` is the median over rounds of the per-round ratio: the two were
    timed back to back in each round, so it cancels slow drifts of the machine.
    """
    ref = {r["batch"]: r for r in results if r["contender"] == reference}
    for r in results:
        base = ref.get(r["batch"])
        r["ratio_to_ort"] = ratio(r["median_img_per_s"], base["median_img_per_s"]) if base else None
        if base and len(base["img_per_s"]) == len(r["img_per_s"]) and r["img_per_s"]:
            r["paired_ratio_median"] = statistics.median(a / b for a, b in zip(r["img_per_s"], base["img_per_s"]))
        else:
            r["paired_ratio_median"] = None
        r["peak_fraction"] = peak_fraction(r["median_img_per_s"], flops_per_image, peak_flops)
    return results


def _fmt(value, spec, empty="-"):
    return empty if value is None else format(value, spec)


def format_table(results: list) -> str:
    header = ("contender", "batch", "median img/s", "min-max img/s", "vs ORT", "% peak", "note")
    rows = []
    for r in sorted(results, key=lambda r: (r["contender"] != ORT_NAME, r["contender"], r["batch"])):
        rows.append((
            r["contender"], str(r["batch"]), _fmt(r["median_img_per_s"], ".1f"),
            f"{_fmt(r['min_img_per_s'], '.1f')}-{_fmt(r['max_img_per_s'], '.1f')}",
            _fmt(r["ratio_to_ort"], ".3f") + ("x" if r["ratio_to_ort"] is not None else ""),
            _fmt(None if r["peak_fraction"] is None else 100 * r["peak_fraction"], ".2f"),
            r["note"],
        ))
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: " | ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), "-+-".join("-" * w for w in widths)] + [line(row) for row in rows])


def write_json(report: dict, out_dir: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "bench_cpu.json")
    with open(path, "w") as fh:
        json.dump(report, fh, indent=2)
    return path


def write_plot(results: list, out_dir: str, title: str = "SVTR-Tiny CPU throughput"):
    """img/s vs batch, one line per contender, log x; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in sorted({r["contender"] for r in results}, key=lambda n: (n != ORT_NAME, n)):
        rows = sorted((r for r in results if r["contender"] == name), key=lambda r: r["batch"])
        xs = [r["batch"] for r in rows]
        ys = [r["median_img_per_s"] for r in rows]
        err = [[y - r["min_img_per_s"] for y, r in zip(ys, rows)], [r["max_img_per_s"] - y for y, r in zip(ys, rows)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
    batches = sorted({r["batch"] for r in results})
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches)
    ax.set_xticklabels([str(b) for b in batches])
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s (median over rounds; bars: min-max)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "bench_cpu.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- driver
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


def build_missing(model_path, input_name, batches, precisions, engine_dir, log=print) -> list:
    """Build (or reuse up-to-date) engines for every batch and precision: [(name, path)]."""
    from .engine import build_engine
    from .targets import select_target

    target = select_target("llvm")
    out = []
    for precision in precisions:
        for bs in batches:
            path = os.path.join(engine_dir, f"svtr_bs_{bs}_{precision}.so")
            build_engine(model_path, input_name, (bs, *IMAGE_CHW), precision, target, path, log=log)
            out.append((f"tvm-{precision}", path))
    return out


def run_benchmark(model_path, engine_specs, batches, rounds=5, min_sample_s=0.2, out_dir="reports",
                  threads=None, build=False, precisions=("fp32", "fp16"), engine_dir="work/bench",
                  parity_rows=None, log=print, progress=True) -> dict:
    from . import parity
    from .backends import OrtBackend
    from .engine import load_engine

    if not os.path.isfile(model_path):
        raise ToolkitError(f"ONNX model not found: {model_path}")
    for name, path in engine_specs:
        if not os.path.isfile(path):
            raise ToolkitError(f"engine '{name}' not found: {path}")
    if rounds < 1:
        raise ToolkitError(f"--rounds must be at least 1, got {rounds}")
    if min_sample_s <= 0:
        raise ToolkitError(f"--min_sample_s must be positive, got {min_sample_s}")
    cores = len(os.sched_getaffinity(0))
    threads = threads or cores

    machine = machine_info()
    log(f"machine: {machine['cpu']}, {machine['cores_available']} cores available "
        f"({', '.join(machine['cpu_flags']) or 'no flags read'}); TVM {machine['tvm']}, "
        f"onnxruntime {machine['onnxruntime']}, numpy {machine['numpy']}")

    counted = count_model_flops(model_path)
    log(f"model FLOPs per 64x256 image: constant {FLOPS_PER_IMAGE / 1e6:.0f} MFLOP (FACTS.md), "
        f"graph count {counted['flops_per_image'] / 1e6:.1f} MFLOP "
        f"({', '.join(f'{k} {v / 1e6:.1f}' for k, v in counted['by_op_per_image'].items())}"
        + (f"; {counted['nodes_with_unknown_shape']} nodes of unknown shape skipped" if counted['nodes_with_unknown_shape'] else "")
        + ")")

    log("peak probe: 2048^3 fp32 numpy GEMM, best of 3 ...")
    peak = measure_peak(cores)
    log(f"peak probe: {peak['all_cores_flops'] / 1e9:.1f} GFLOP/s on {cores} cores, "
        f"{peak['one_core_flops'] / 1e9:.1f} GFLOP/s on 1 core")

    ort = OrtBackend(model_path, threads=threads)
    if build:
        engine_specs = list(engine_specs) + build_missing(model_path, ort.input_name, batches, precisions,
                                                          engine_dir, log=log)
    engines = []
    for name, path in engine_specs:
        backend = load_engine(path)
        if backend.input_name != ort.input_name or tuple(backend.input_shape[1:]) != tuple(ort.input_shape[1:]):
            raise ToolkitError(f"engine '{name}' ({path}) takes {backend.input_name}:{list(backend.input_shape)}, "
                               f"the model takes {ort.input_name}:{list(ort.input_shape)}")
        engines.append((name, backend, path))
    cells = plan_cells(ort, [(n, b) for n, b, _ in engines], batches)
    log(f"{len(cells)} cells x {rounds} rounds, samples >= {min_sample_s} s, onnxruntime threads {threads}")
    run_rounds(cells, rounds, min_sample_s, log=log, progress=progress)

    # A peak is a best case: probe again after the rounds and keep the better of the two,
    # so a burst of load from elsewhere during the first probe does not inflate % of peak.
    again = measure_peak(cores)
    peak = merge_peaks(peak, again)
    log(f"peak probe after the rounds: {again['all_cores_flops'] / 1e9:.1f} GFLOP/s on {cores} cores, "
        f"{again['one_core_flops'] / 1e9:.1f} on 1 core; using {peak['all_cores_flops'] / 1e9:.1f} GFLOP/s")
    if cores > 1 and peak["all_cores_flops"] < 1.5 * peak["one_core_flops"]:
        log(f"warning: the all-core GEMM barely beats one core ({peak['all_cores_flops'] / 1e9:.1f} vs "
            f"{peak['one_core_flops'] / 1e9:.1f} GFLOP/s): something else is using the CPU, so '% peak' is too high")
    results = add_comparisons([cell_result(c) for c in cells], FLOPS_PER_IMAGE, peak["all_cores_flops"])

    parities = []
    for name, backend, path in engines:
        rows = parity_rows or backend.input_shape[0]
        inputs = parity.default_inputs((rows, *IMAGE_CHW), seed=1)
        p = parity.check(backend, model_path, inputs)
        parities.append({"contender": name, "engine_path": path, "batch": backend.input_shape[0],
                         "line": p.line(name), **p.__dict__})

    report = {
        "machine": machine,
        "settings": {"model_path": os.path.abspath(model_path), "batches": list(batches), "rounds": rounds,
                     "min_sample_s": min_sample_s, "ort_threads": threads, "headline_batch": HEADLINE_BATCH,
                     "interleaving": "round-robin, start rotated each round",
                     "engines": [{"name": n, "path": os.path.abspath(p)} for n, p in engine_specs]},
        "flops": {"per_image_constant": FLOPS_PER_IMAGE, "per_image_graph": counted["flops_per_image"],
                  "graph_by_op_per_image": counted["by_op_per_image"],
                  "graph_nodes_with_unknown_shape": counted["nodes_with_unknown_shape"],
                  "peak_fraction_uses": "per_image_constant / peak.all_cores_flops"},
        "peak": peak,
        "results": results,
        "parity": parities,
    }
    return report
