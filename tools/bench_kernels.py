"""Matmul throughput per kernel: fp32, ToMixedPrecision's fp16 matmul and the K-chunked fp16 kernels.

    python tools/bench_kernels.py [--k 32,64,128,256,512] [--m 3200] [--n 256] [--chunks 32,64,128]
                                  [--rounds 5] [--min_sample_s 0.2] [--settle_s 1] [--out_dir reports]

At every K, main(a [M, K], b [K, N]) = matmul(a, b) is compiled for this CPU (llvm, default
schedule rules, no tuning) as: fp32; fp16-fp32acc (fp16 inputs, fp32 output, as
ToMixedPrecision leaves the recogniser's products); fp16-k<chunk> per --chunks and fp16-wholeK
(fp16_accumulate.rewrite_matmuls: fp16 multiply-accumulate over chunks of at most <chunk>
terms, chunk sums in fp32; wholeK: no chunking). The defaults are SVTR-Tiny's stage-2 products
at batch 32 (M = 32 images x 100 tokens, N = 256). Each kernel is calibrated to samples of at
least --min_sample_s, then timed in --rounds interleaved rounds (one sample of every kernel per
round), every sample once this process is idle (at most --settle_s: TVM's worker threads keep
spinning after a call returns and would slow the next kernel), as tools/bench_cpu.py does. The
tables give the median GFLOP/s (2*M*N*K / median seconds) with, beside each fp16 kernel, its
ratio to fp32 at the same K (the median of the per-round ratios), and each kernel's max relative
error against the float64 product of the same inputs (max |diff| / max |exact|). On a CPU without
fp16 arithmetic (no avx512_fp16 / fullfp16) the fp16 kernels are emulated and slow. Every number
goes to OUT_DIR/bench_kernels.json.
"""
import argparse
import os

import _repo  # noqa: F401  (the checkout on sys.path)
from svtr_toolkit import cli
from svtr_toolkit.cli import run_cli


# Above this (max-min)/median the medians are suspect: a co-tenant taking one of a few cores
# shows as samples at a fraction of the others.
NOISY_SPREAD = 0.3


def positive_int_list(example: str):
    """An argparse ``type``: comma-separated integers above 0, deduplicated, in the order given."""
    def parse(text):
        values = []
        for item in text.split(","):
            try:
                values.append(int(item))
            except ValueError:
                values = []
                break
        if not values or any(v < 1 for v in values):
            raise argparse.ArgumentTypeError(
                f"positive integers separated by commas are expected (e.g. {example}), got '{text}'")
        return list(dict.fromkeys(values))

    parse.__name__ = "list of positive integers"
    return parse


def parse_args(argv):
    from svtr_toolkit.bench import kernels
    from svtr_toolkit.bench.timing import DEFAULT_SETTLE_S

    def default_list(values):
        return ",".join(map(str, values))

    parser = cli.Parser(__doc__)
    parser.add_argument("--k", type=positive_int_list("32,64,128,256,512"), default=list(kernels.DEFAULT_KS),
                        help=f"reduction lengths K, one table row each (default {default_list(kernels.DEFAULT_KS)})")
    parser.add_argument("--m", type=cli.positive_int, default=kernels.DEFAULT_M,
                        help=f"rows of a (default {kernels.DEFAULT_M}: 32 images x 100 tokens)")
    parser.add_argument("--n", type=cli.positive_int, default=kernels.DEFAULT_N,
                        help=f"columns of b (default {kernels.DEFAULT_N})")
    parser.add_argument("--chunks", type=positive_int_list("32,64,128"), default=list(kernels.DEFAULT_CHUNKS),
                        help=f"terms per fp16 partial sum, one fp16-k<chunk> kernel each (default "
                             f"{default_list(kernels.DEFAULT_CHUNKS)}; the whole K is always timed too)")
    parser.add_argument("--rounds", type=cli.positive_int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--min_sample_s", type=cli.positive, default=0.2,
                        help="shortest timing sample, seconds (default 0.2)")
    parser.add_argument("--settle_s", type=cli.nonnegative, default=DEFAULT_SETTLE_S,
                        help="longest wait, seconds, for this process to go idle before every sample (default "
                             f"{DEFAULT_SETTLE_S:g}; 0: no wait)")
    parser.add_argument("--out_dir", default="reports", type=cli.path,
                        help=f"where {kernels.JSON_NAME} goes (default reports)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from svtr_toolkit import files
    from svtr_toolkit.bench import kernels

    from svtr_toolkit.memory import require_memory

    out_path = kernels.json_path(args.out_dir)
    files.check_writable(out_path, "--out_dir")  # before minutes of compiling and timing
    require_memory(kernels.sweep_memory_bytes(args.k, args.m, args.n),
                   f"matmuls of M={args.m}, N={args.n}, K up to {max(args.k)} (inputs kept for every K)",
                   remedy="use smaller --m, --n or --k")
    report = kernels.matmul_sweep(args.k, args.m, args.n, args.chunks, rounds=args.rounds,
                                  min_sample_s=args.min_sample_s, settle_s=args.settle_s,
                                  log=lambda msg: print(msg, flush=True), progress=not args.no_progress)
    settings = report["settings"]
    emulated = "" if report["fp16_arithmetic"] else f"\nnote: {kernels.EMULATED_NOTE}"
    print()
    print(f"GFLOP/s at M={settings['m']}, N={settings['n']}, median of {args.rounds} interleaved rounds; "
          f"vs fp32: median over rounds of the ratio to fp32's sample at the same K in the same round{emulated}")
    print(kernels.format_throughput_table(report))
    spread = kernels.largest_spread(report)
    if spread:
        print(f"largest spread (max-min)/median over rounds: {100 * spread[0]:.1f} % ({spread[1]} at K={spread[2]})")
        if spread[0] > NOISY_SPREAD:
            print("warning: samples of one kernel differ by more than "
                  f"{100 * NOISY_SPREAD:.0f} %: something else used the CPU during the rounds; the GFLOP/s medians "
                  "carry it, the per-round ratios to fp32 much less (more --rounds, or a quieter machine)")
    print()
    print("max relative error, max |kernel - exact| / max |exact|, against the float64 product of the same inputs")
    print(kernels.format_error_table(report))
    flagged = [r for r in report["results"] if r["unscheduled"] or r["unexpected_rules"]]
    for r in flagged:
        print(f"warning: K={r['k']} {r['kernel']}: " + ("no schedule rule took " + ", ".join(r["unscheduled"])
                                                     if r["unscheduled"] else
                                                     f"expected {r['expected_rule']}, got "
                                                     + "; ".join(r["unexpected_rules"])))
    replaced = os.path.exists(out_path)
    path = kernels.write_json(report, args.out_dir)
    print(f"wrote {path}" + (" (replacing the previous one)" if replaced else ""))
    return 0


if __name__ == "__main__":
    run_cli(main)
