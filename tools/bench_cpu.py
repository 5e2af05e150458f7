"""CPU throughput of onnxruntime fp32, OpenVINO and TVM engines, timed side by side and interleaved.

    python tools/bench_cpu.py --model_path SVTR_opt.onnx \
        --engine fp32=svtr_bs_32_fp32.so --engine fp16=svtr_bs_32_fp16.so \
        [--batches 1,8,32,64] [--rounds 5] [--min_sample_s 0.2] [--threads N] [--out_dir reports]
    python tools/bench_cpu.py --build --precision fp32,fp16 --batches 1,8,32,64
    python tools/bench_cpu.py --preset ppocrv4 --batches 32      # PP-OCRv4: onnxruntime and a built engine
    python tools/bench_cpu.py --build --precision fp32 --fp16_chunks off,32,64,128 --batches 32   # the fp16 plan

onnxruntime and OpenVINO (openvino-fp32: f32 precision and LATENCY hints; openvino-default: no
hints, bf16 on CPUs with bf16; left out with --no_openvino or when openvino is not installed)
run at every sweep batch; an engine runs at the batch it was built for. --build builds, at
every sweep batch and --precision, an engine with the automatic tuning-database choice
(tvm-P) and one with none (tvm-P-nodb), once when no database fits this CPU; --fp16_chunks adds
an fp16 engine per K-chunk setting (tvm-fp16-k64, tvm-fp16-wholeK, tvm-fp16-fp32arith). Each round takes
one sample of every (contender, batch), so noise hits all alike; the table gives the median
over rounds, min-max, the ratio to onnxruntime at the same batch, the share of the measured
peak of the contender's arithmetic (fp32: onnxruntime's MLAS sgemm; fp16: TVM's fp16 matmul
where the CPU has fp16 arithmetic), and beside it the argmax agreement (per time step) and
max |diff| against onnxruntime fp32 on the same input batch. Raw numbers go to
OUT_DIR/bench_cpu.json, the sweep plot (img/s vs batch per contender) to OUT_DIR/bench_cpu.png.
"""
import os

import _repo  # noqa: F401  (the checkout on sys.path)
from svtr_toolkit import cli
from svtr_toolkit.cli import run_cli
from svtr_toolkit.errors import ToolkitError


def parse_args(argv):
    parser = cli.Parser(__doc__)
    cli.add_preset(parser)
    parser.add_argument("--model_path", default=None,
                        help="ONNX model, run by onnxruntime (default: the preset's, SVTR_opt.onnx without one)")
    parser.add_argument("--engine", action="append", default=[], metavar="NAME=PATH",
                        help="a TVM engine to time (repeatable), e.g. fp16=svtr_bs_32_fp16.so")
    parser.add_argument("--batches", default="1,8,32,64", help="sweep batch sizes (default 1,8,32,64; 32 is the headline)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--min_sample_s", type=float, default=0.2, help="shortest timing sample, seconds (default 0.2)")
    parser.add_argument("--settle_s", type=float, default=None,
                        help="longest wait, seconds, for this process to go idle before every sample, so a "
                             "runtime's still-spinning worker threads do not slow the next contender (default 1; "
                             "0: no wait)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores)")
    parser.add_argument("--out_dir", default="reports", help="where bench_cpu.json and bench_cpu.png go (default reports)")
    parser.add_argument("--build", action="store_true",
                        help="build (or reuse up-to-date) llvm engines for every sweep batch and --precision, with "
                             "the automatic tuning database and with none (implied by --preset without --engine)")
    parser.add_argument("--precision", default=None,
                        help="precisions for --build, P[,P] (default fp32,fp16; fp16 with --preset alone)")
    cli.add_deprecated(parser, "--precisions", "--precision")
    parser.add_argument("--fp16_chunks", default=None, metavar="V[,V]",
                        help="also build and time an fp16 engine per K-chunk setting, whatever this CPU's default: "
                             "a number is the chunk, none the whole K in fp16, off fp16 values in fp32 arithmetic "
                             "(e.g. off,32,64,128; implies --build; emulated where the CPU has no fp16 arithmetic)")
    parser.add_argument("--engine_dir", default=os.path.join("work", "bench"),
                        help="where --build puts <model>_bs_{bs}_{precision}_{autodb,nodb}.so (default work/bench)")
    parser.add_argument("--no_openvino", action="store_true", help="leave OpenVINO out")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        raise ToolkitError(f"--rounds must be at least 1, got {args.rounds}")
    if args.min_sample_s <= 0:
        raise ToolkitError(f"--min_sample_s must be positive, got {args.min_sample_s}")
    from svtr_toolkit.bench.timing import DEFAULT_SETTLE_S

    args.settle_s = DEFAULT_SETTLE_S if args.settle_s is None else args.settle_s
    if args.settle_s < 0:
        raise ToolkitError(f"--settle_s must be zero or more, got {args.settle_s}")
    if args.preset and not args.engine:
        args.build = True
    from svtr_toolkit.compile.fp16_accumulate import parse_variants

    args.fp16_variants = parse_variants(args.fp16_chunks) if args.fp16_chunks is not None else []
    if args.fp16_variants:
        args.build = True
    args.precision = args.precision or ("fp16" if args.preset and not args.engine else "fp32,fp16")
    return args


def main(argv=None):
    args = parse_args(argv)
    from svtr_toolkit import bench

    batches = bench.parse_batches(args.batches)
    engines = bench.parse_engine_specs(args.engine)
    precisions = cli.parse_precisions(args.precision) if args.build else []
    preset = cli.get_preset(args.preset) if args.preset else None
    model_path = preset.require_model(args.model_path) if preset else (args.model_path or "SVTR_opt.onnx")
    if not engines and not args.build:
        print("note: no --engine and no --build given; timing onnxruntime only", flush=True)

    report = bench.run_benchmark(
        model_path, engines, batches, rounds=args.rounds, min_sample_s=args.min_sample_s, threads=args.threads,
        build=args.build, precisions=precisions, engine_dir=args.engine_dir,
        image_chw=preset.image_shape() if preset else None, engine_stem=preset.name if preset else None,
        openvino=not args.no_openvino, log=lambda msg: print(msg, flush=True), progress=not args.no_progress,
        fp16_variants=args.fp16_variants, settle_s=args.settle_s,
    )
    results = report["results"]
    print()
    print(f"throughput, median of {args.rounds} interleaved rounds; % peak: "
          f"{report['flops']['per_image'] / 1e6:.0f} MFLOP/image over the peak of the contender's arithmetic "
          f"(in brackets): {bench.describe_peak(report['peak'])}. argmax agree, max|diff|: against "
          f"onnxruntime fp32 on the same input batch")
    print(bench.format_table(results))
    headline = [r for r in results if r["batch"] == bench.HEADLINE_BATCH]
    if headline:
        print(f"\nheadline, batch {bench.HEADLINE_BATCH}: " + "; ".join(
            f"{r['contender']} {r['median_img_per_s']:.1f} img/s"
            + (f" ({r['ratio_to_ort']:.3f}x ORT)" if r["contender"] != bench.ORT_NAME and r["ratio_to_ort"] else "")
            for r in headline))
    json_path = bench.write_json(report, args.out_dir)
    print(f"wrote {json_path}")
    m = report["machine"]
    model = preset.name if preset else os.path.basename(model_path)
    png = bench.write_plot(results, args.out_dir,
                           f"{model} CPU throughput: {m['cpu']}, {m['cores_available']} cores, "
                           f"TVM {m['tvm']}, ORT {m['onnxruntime']}")
    if png:
        print(f"wrote {png}")
    else:
        print("plot skipped: matplotlib is not installed (pip install matplotlib); the JSON has every number")
    return 0


if __name__ == "__main__":
    run_cli(main)
