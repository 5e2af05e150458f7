"""Per-kernel matmul throughput: one matrix product compiled alone in each arithmetic the
fp16 recogniser can use, timed interleaved, with its error against an exact product.

The kernels, per K (``main(a [M, K], b [K, N]) = matmul(a, b)``, fp32 output, static shapes,
compiled by the host llvm target's pipeline with the default schedule rules, no tuning):

- ``fp32``: fp32 inputs;
- ``fp16-fp32acc``: fp16 inputs, ``out_dtype="float32"``: what ToMixedPrecision leaves, not rewritten;
- ``fp16-k<chunk>`` / ``fp16-wholeK``: the same module through ``fp16_accumulate.rewrite_matmuls``
  (fp16 multiply-accumulate over chunks of at most ``chunk`` terms, chunk sums in fp32; chunk 0 is
  the whole K in fp16). A chunk >= K is one chunk: the same arithmetic as ``fp16-wholeK``.

A whole model hides where the fp16 time goes (layer norms, softmax, convolutions, copies);
this isolates the products the chunked accumulation changes, at the recogniser's own shapes.
The kernels are timed by the benchmark's round loop (``timing.sample_rounds``): calibrated
(calls per sample >= ``min_sample_s``), then rounds of one sample each, the start rotated per
round, every sample after the wait for idle (at most ``settle_s``), so a burst of load from
elsewhere lands on all kernels alike and no kernel pays for the previous one's spinning threads.

All kernels read the same values: the inputs are drawn in fp32 and rounded to fp16, so the
fp32 kernel gets exactly what the fp16 ones get and the float64 product is the exact answer
for every one of them; the errors then measure the arithmetic alone, not the input rounding.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from .. import files
from ..errors import ToolkitError
from ..table import render_table
from .machine import machine_info
from .timing import DEFAULT_SETTLE_S, describe_idle_waits, sample_rounds, summarize, wait_until_idle

DEFAULT_KS = (32, 64, 128, 256, 512)
DEFAULT_M = 3200  # SVTR-Tiny stage 2 at batch 32: 32 images x 100 tokens
DEFAULT_N = 256
DEFAULT_CHUNKS = (32, 64, 128)
FP32 = "fp32"
FP16_FP32ACC = "fp16-fp32acc"
WHOLE_K = "fp16-wholeK"
CONTRACTION_RULE = "contraction"
CHUNKED_RULE = "chunked-contraction"
JSON_NAME = "bench_kernels.json"
EMULATED_NOTE = "fp16 arithmetic is emulated here: these fp16 figures are not what an fp16 CPU gives"


@dataclass(frozen=True)
class Variant:
    """One way of computing the product: input dtype and, for the rewritten ones, the chunk."""
    name: str
    dtype: str  # of both inputs; the output is always float32
    chunk: int | None  # None: not rewritten; 0: the whole K in fp16
    expected_rule: str  # the default rule that should schedule it

    @property
    def is_fp16(self) -> bool:
        return self.dtype == "float16"


def chunk_variant_name(chunk: int) -> str:
    return WHOLE_K if chunk == 0 else f"fp16-k{chunk}"


def variants(chunks=DEFAULT_CHUNKS) -> list:
    """fp32, fp16-fp32acc, one fp16-k<chunk> per chunk (in the given order), fp16-wholeK."""
    chunks = list(dict.fromkeys(int(c) for c in chunks))
    if any(c < 1 for c in chunks):
        raise ToolkitError(f"chunks must be positive (the whole K is always included as {WHOLE_K}), got {chunks}")
    return ([Variant(FP32, "float32", None, CONTRACTION_RULE), Variant(FP16_FP32ACC, "float16", None, CONTRACTION_RULE)]
            + [Variant(chunk_variant_name(c), "float16", c, CHUNKED_RULE) for c in chunks + [0]])


def matmul_module(m: int, n: int, k: int, dtype: str):
    """An IRModule whose ``main(a [m, k], b [k, n])`` is ``matmul(a, b, out_dtype="float32")``."""
    from tvm import relax

    builder = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType((m, k), dtype))
    b = relax.Var("b", relax.TensorType((k, n), dtype))
    with builder.function("main", [a, b]):
        with builder.dataflow():
            out = builder.emit_output(relax.op.matmul(a, b, out_dtype="float32"))
        builder.emit_func_output(out)
    return builder.get()


def compile_kernel(variant: Variant, m: int, n: int, k: int, target):
    """(executable, {kernel name: rule name or None}) for ``variant`` at this shape, compiled
    with ``target``'s (a ``targets.BuildTarget``) pipeline and its default schedule rules."""
    import tvm

    from ..compile import fp16_accumulate

    mod = matmul_module(m, n, k, variant.dtype)
    if variant.chunk is not None:
        mod, rewritten = fp16_accumulate.rewrite_matmuls(mod, variant.chunk)
        if rewritten != 1:  # the rewrite's own contract changed: timing the plain kernel would mislead
            raise ToolkitError(f"rewrite_matmuls rewrote {rewritten} matmuls of the {variant.name} module, not 1")
    tvm_target = target.tvm_target()
    rules = {}
    executable = tvm.compile(mod, tvm_target, relax_pipeline=target.module.pipeline(tvm_target, None, rules))
    return executable, rules


def sweep_inputs(m: int, n: int, k: int, seed: int = 0):
    """(a [m, k], b [k, n]) float32, uniform in [-1, 1] and rounded to fp16 values, the same for a
    (seed, k); cast to fp16 they lose nothing, so every kernel computes the same product."""
    rng = np.random.default_rng([seed, k])
    a = rng.uniform(-1.0, 1.0, (m, k)).astype(np.float16).astype(np.float32)
    b = rng.uniform(-1.0, 1.0, (k, n)).astype(np.float16).astype(np.float32)
    return a, b


def sweep_memory_bytes(ks, m: int, n: int) -> int:
    """Bytes the sweep holds at its peak: every K's inputs on the device in fp32 and fp16 (kept for
    the timing rounds), and for the K being compiled its fp32 inputs, their float64 copies, the
    exact float64 product and a kernel's output."""
    kept = sum(6 * (m * k + k * n) for k in ks)
    largest = max(12 * (m * k + k * n) for k in ks) + 20 * m * n
    return kept + largest


def errors_against(out, exact) -> dict:
    """max |out - exact| and that over max |exact| (relative to the product's scale, not per
    element: elements near 0 would make a per-element ratio meaningless)."""
    diff = float(np.abs(np.asarray(out, np.float64) - exact).max())
    scale = float(np.abs(exact).max())
    return {"max_abs_diff": diff, "max_rel_err": diff / scale if scale else None}


@dataclass
class KernelRun:
    variant: Variant
    k: int
    flops: float
    rules: dict  # {kernel name: rule name or None}, from the pipeline's report
    compile_s: float
    evaluator: object = None  # (calls) -> seconds per call; None for a kernel that is not timed
    calls: int = 1
    samples_s: list = field(default_factory=list)  # seconds per call, one per round
    idle_wait_s: list = field(default_factory=list)  # seconds waited for idle before each sample
    errors: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"K={self.k} {self.variant.name}"

    @property
    def unscheduled(self) -> list:
        return sorted(name for name, rule in self.rules.items() if rule is None)

    @property
    def unexpected_rules(self) -> list:
        return sorted(f"{name}: {rule}" for name, rule in self.rules.items()
                      if rule is not None and rule != self.variant.expected_rule)


def _evaluator(vm, dev, args):
    """calls -> seconds per call of ``main`` over ``calls`` back-to-back calls, timed in TVM's
    C++ loop (no Python between calls; its one untimed warm-up call is not in the figure)."""
    def seconds_per_call(calls: int) -> float:
        return float(vm.time_evaluator("main", dev, number=calls, repeat=1)(*args).results[0])

    return seconds_per_call


def machine_line(machine: dict) -> str:
    return (f"machine: {machine['cpu']}, {machine['cores_available']} cores available "
            f"({', '.join(machine['cpu_flags']) or 'no flags read'}); TVM {machine['versions']['tvm']}, "
            f"numpy {machine['numpy']}")


def _check_positive(name: str, values) -> list:
    values = [int(v) for v in values]
    if not values or any(v < 1 for v in values):
        raise ToolkitError(f"{name} must be positive integers, got {values}")
    return values


def matmul_sweep(ks=DEFAULT_KS, m: int = DEFAULT_M, n: int = DEFAULT_N, chunks=DEFAULT_CHUNKS, rounds: int = 5,
                 min_sample_s: float = 0.2, log=print, progress: bool = True, seed: int = 0,
                 settle_s: float = DEFAULT_SETTLE_S) -> dict:
    """Compile every variant (``variants(chunks)``) at every K, check each against the float64
    product on the same inputs, time them interleaved (``settle_s``: the longest wait for idle
    before each sample, 0 for none); returns the report (JSON-able).

    A kernel no rule scheduled is flagged (``unscheduled``) and left out of the timing: an
    unscheduled TIR loop nest runs on one thread without vectors and its figure would only
    say that. A kernel taken by another rule than expected is timed, and flagged too."""
    import tvm
    from tvm import relax

    from ..compile.targets import host_cpu_target
    from ..cpu_features import host
    from ..threads import use_all_cpu_cores

    ks = sorted(set(_check_positive("ks", ks)))
    m, n = _check_positive("m", [m])[0], _check_positive("n", [n])[0]
    kinds = variants(chunks)
    if rounds < 1 or not min_sample_s > 0 or not settle_s >= 0:
        raise ToolkitError(f"rounds must be >= 1, min_sample_s > 0 and settle_s >= 0, got {rounds}, {min_sample_s} "
                           f"and {settle_s}")

    threads = use_all_cpu_cores()
    machine = machine_info({"tvm": tvm.__version__})
    fp16_arithmetic = bool(host().has_fp16_arithmetic)
    notes = [] if fp16_arithmetic else [EMULATED_NOTE]
    line = machine_line(machine) + f"; TVM threads {threads}"
    log(line)
    for note in notes:
        log(f"note: {note}")
    target = host_cpu_target()
    log(f"target: {target.description}")
    log(f"{len(kinds)} kernels x {len(ks)} K at M={m}, N={n}: {', '.join(v.name for v in kinds)}")

    dev = tvm.cpu()
    runs = []
    for k in ks:
        a, b = sweep_inputs(m, n, k, seed)
        exact = a.astype(np.float64) @ b.astype(np.float64)
        by_dtype = {dtype: [tvm.runtime.tensor(x.astype(dtype), dev) for x in (a, b)]
                    for dtype in {v.dtype for v in kinds}}
        for variant in kinds:
            start = time.perf_counter()
            executable, rules = compile_kernel(variant, m, n, k, target)
            run = KernelRun(variant, k, 2.0 * m * n * k, rules, time.perf_counter() - start)
            vm = relax.VirtualMachine(executable, dev)
            args = by_dtype[variant.dtype]
            run.errors = errors_against(vm["main"](*args).numpy(), exact)
            scheduled = ", ".join(f"{name} by {rule or 'NO RULE'}" for name, rule in sorted(rules.items()))
            log(f"compiled {run.label}: {scheduled} ({run.compile_s:.1f} s); "
                f"max rel err {run.errors['max_rel_err']:.2g}")
            if run.unscheduled:
                log(f"warning: {run.label}: no schedule rule took {', '.join(run.unscheduled)}; not timed")
            else:
                run.evaluator = _evaluator(vm, dev, args)
            if run.unexpected_rules:
                log(f"warning: {run.label}: expected rule {variant.expected_rule}, "
                    f"got {'; '.join(run.unexpected_rules)}")
            runs.append(run)

    timed = [run for run in runs if run.evaluator is not None]
    sample_rounds(timed, rounds, min_sample_s, lambda run, calls: run.evaluator(calls), log=log, progress=progress,
                  wait_for_idle=lambda: wait_until_idle(settle_s))
    log(describe_idle_waits(timed, settle_s))

    return {
        "machine": machine,
        "machine_line": line,
        "fp16_arithmetic": fp16_arithmetic,
        "notes": notes,
        "settings": {
            "m": m, "n": n, "ks": ks, "chunks": [v.chunk for v in kinds if v.chunk], "rounds": rounds,
            "min_sample_s": min_sample_s, "settle_s": settle_s, "seed": seed, "tvm_threads": threads,
            "target": target.spec,
            "target_description": target.description,
            "kernels": [v.name for v in kinds],
            "module": "main(a [M, K], b [K, N]) = matmul(a, b, out_dtype=float32); fp16-k*/fp16-wholeK through "
                      "fp16_accumulate.rewrite_matmuls(mod, chunk) (wholeK: chunk 0)",
            "schedules": "the llvm target's pipeline, default rules, no tuning database",
            "inputs": "uniform [-1, 1] drawn in fp32 (seed, K), rounded to fp16: all kernels read the same values",
            "errors": "against the float64 product of the same inputs; max_rel_err = max |diff| / max |exact|",
            "flops": "2 * M * N * K per call; median_gflops = flops / median seconds per call",
            "interleaving": "round-robin over the timed kernels, start rotated each round, every sample after "
                            "the wait for idle (at most settle_s)",
        },
        "results": _results(runs),
    }


def _results(runs) -> list:
    results = []
    for run in runs:
        seconds = summarize(run.samples_s)
        gflops = [run.flops / s / 1e9 for s in run.samples_s]
        results.append({
            "kernel": run.variant.name, "k": run.k, "input_dtype": run.variant.dtype, "chunk": run.variant.chunk,
            "rules": dict(sorted(run.rules.items())), "expected_rule": run.variant.expected_rule,
            "unscheduled": run.unscheduled, "unexpected_rules": run.unexpected_rules,
            "timed": run.evaluator is not None, "compile_s": run.compile_s, "flops": run.flops,
            "calls_per_sample": run.calls if run.samples_s else None,
            "seconds_per_call": list(run.samples_s), "idle_wait_s": list(run.idle_wait_s), "gflops": gflops,
            "median_gflops": run.flops / seconds["median"] / 1e9 if seconds["median"] else None,
            "min_gflops": run.flops / seconds["max"] / 1e9 if seconds["max"] else None,
            "max_gflops": run.flops / seconds["min"] / 1e9 if seconds["min"] else None,
            "spread": seconds["spread"] if seconds["n"] else None,
            **run.errors,
        })
    fp32 = {r["k"]: r for r in results if r["kernel"] == FP32}
    for r in results:
        base = fp32.get(r["k"])
        ok = base is not None and r["median_gflops"] and base["median_gflops"]
        r["ratio_to_fp32"] = r["median_gflops"] / base["median_gflops"] if ok else None
        # Per-round ratio: the two samples of a round ran close together, so slow drifts cancel.
        paired = ok and len(r["gflops"]) == len(base["gflops"])
        r["paired_ratio_to_fp32"] = (statistics.median(x / y for x, y in zip(r["gflops"], base["gflops"]))
                                     if paired else None)
    return results


def _grid(report: dict) -> tuple:
    kernels = report["settings"]["kernels"]
    cells = {(r["k"], r["kernel"]): r for r in report["results"]}
    return kernels, sorted({r["k"] for r in report["results"]}), cells


def format_throughput_table(report: dict) -> str:
    """Rows K; per kernel its median GFLOP/s and, beside each fp16 kernel, the ratio to fp32 at
    that K: the median of the per-round ratios where both have every round. A co-tenant taking
    a core halves every kernel timed meanwhile; the two samples of a round ran close together,
    so their ratio keeps what the medians of two differently hit sets of samples do not."""
    kernels, ks, cells = _grid(report)
    header = ["K"]
    for name in kernels:
        header += [name] + (["vs fp32"] if name != FP32 else [])
    rows = []
    for k in ks:
        row = [str(k)]
        for name in kernels:
            r = cells.get((k, name))
            if r is None:
                row += ["-"] + (["-"] if name != FP32 else [])
                continue
            row.append("unscheduled" if r["unscheduled"] else
                       "-" if r["median_gflops"] is None else f"{r['median_gflops']:.1f}")
            if name != FP32:
                ratio = r["paired_ratio_to_fp32"] if r["paired_ratio_to_fp32"] is not None else r["ratio_to_fp32"]
                row.append("-" if ratio is None else f"{ratio:.2f}x")
        rows.append(row)
    return render_table(header, rows)


def format_error_table(report: dict) -> str:
    """Rows K; per kernel its max relative error against the float64 product."""
    kernels, ks, cells = _grid(report)
    rows = []
    for k in ks:
        row = [str(k)]
        for name in kernels:
            r = cells.get((k, name))
            row.append("-" if r is None or r.get("max_rel_err") is None else f"{r['max_rel_err']:.1e}")
        rows.append(row)
    return render_table(["K"] + kernels, rows)


def largest_spread(report: dict):
    """(spread, kernel, K) of the noisiest timed kernel, or None."""
    spreads = [(r["spread"], r["kernel"], r["k"]) for r in report["results"] if r.get("spread") is not None]
    return max(spreads) if spreads else None


def json_path(out_dir) -> str:
    return os.path.join(os.fspath(out_dir), JSON_NAME)


def write_json(report: dict, out_dir) -> str:
    path = json_path(out_dir)
    files.write_json(path, report)
    return path
