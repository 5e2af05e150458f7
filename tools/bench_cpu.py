"""CPU throughput of onnxruntime fp32, OpenVINO and TVM engines, timed side by side and interleaved.

    python tools/bench_cpu.py --model_path SVTR_opt.onnx \
        --engine fp32=svtr_bs_32_fp32.so --engine fp16=svtr_bs_32_fp16.so \
        [--batches 1,8,32,64] [--rounds 5] [--min_sample_s 0.2] [--threads N] [--out_dir reports]
    python tools/bench_cpu.py --build --precision fp32,fp16,bf16 --batches 1,8,32,64
    python tools/bench_cpu.py --preset ppocrv4 --batches 32      # PP-OCRv4: onnxruntime and a built engine
    python tools/bench_cpu.py --build --precision fp32 --fp16_chunks off,32,64,128 --batches 32   # the fp16 plan
    python tools/bench_cpu.py --contenders onnxruntime,openvino --batches 1,32   # no TVM engine

Contenders (--contenders, default all; one module each in svtr_toolkit/bench/contenders/):
onnxruntime (fp32, the reference) and openvino (openvino-fp32: fp32 asked for; openvino-default:
its own precision, bf16 on CPUs with bf16; left out when openvino is not installed, unless named)
run at every sweep batch; tvm runs each engine at the batch it was built for. --build builds, at
every sweep batch and --precision, an engine with the automatic tuning-database choice (tvm-P)
and one with none (tvm-P-nodb), once when no database fits this CPU; --fp16_chunks adds an fp16
engine per K-chunk setting (tvm-fp16-k64, tvm-fp16-wholeK, tvm-fp16-fp32arith). Each round takes
one sample of every (contender, batch), so noise hits all alike; the table gives the median
over rounds, min-max, the ratio to onnxruntime at the same batch, the share of the measured
peak of the contender's arithmetic (fp32: onnxruntime's MLAS sgemm; fp16: TVM's fp16 matmul
where the CPU has fp16 arithmetic), and beside it the argmax agreement (per time step) and
max |diff| against onnxruntime fp32 on the same input batch. A contender under 99 % argmax
agreement is marked wrong (the note; a dashed line with hollow markers in the plot), an engine
whose build description says its precision is emulated in fp32 arithmetic, emulated. Raw
numbers go to OUT_DIR/bench_cpu.json, the sweep plot (img/s vs batch per contender) to
OUT_DIR/bench_cpu.png; both, the engines --build writes and the memory the sweep's inputs need
are checked before any work.
"""
import os

import _repo  # noqa: F401  (the checkout on sys.path)
from svtr_toolkit import cli
from svtr_toolkit.cli import run_cli
from svtr_toolkit.errors import ToolkitError


def parse_args(argv):
    from svtr_toolkit.bench import CONTENDERS
    from svtr_toolkit.bench.timing import DEFAULT_SETTLE_S

    parser = cli.Parser(__doc__)
    cli.add_preset(parser)
    parser.add_argument("--model_path", default=None, type=cli.path,
                        help="ONNX model, run by onnxruntime (default: the preset's, SVTR_opt.onnx without one)")
    parser.add_argument("--contenders", default=None, type=cli.choice_list("contender", CONTENDERS),
                        metavar="NAME[,NAME]", help=f"what to time: {', '.join(CONTENDERS)} (default all; every cell "
                                                    f"is checked against onnxruntime fp32 either way)")
    cli.add_deprecated_switch(parser, "--no_openvino", "--contenders", [n for n in CONTENDERS if n != "openvino"])
    parser.add_argument("--engine", action="append", default=[], metavar="NAME=PATH",
                        help="a TVM engine to time (repeatable), e.g. fp16=svtr_bs_32_fp16.so")
    parser.add_argument("--batches", default="1,8,32,64",
                        help="sweep batch sizes (default 1,8,32,64; 32 is the headline)")
    parser.add_argument("--rounds", type=cli.positive_int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--min_sample_s", type=cli.positive, default=0.2,
                        help="shortest timing sample, seconds (default 0.2)")
    parser.add_argument("--settle_s", type=cli.nonnegative, default=DEFAULT_SETTLE_S,
                        help="longest wait, seconds, for this process to go idle before every sample, so a "
                             "runtime's still-spinning worker threads do not slow the next contender (default "
                             f"{DEFAULT_SETTLE_S:g}; 0: no wait)")
    parser.add_argument("--threads", type=cli.positive_int, default=None,
                        help="onnxruntime and OpenVINO threads (default: all cores)")
    parser.add_argument("--out_dir", default="reports", type=cli.path,
                        help="where bench_cpu.json and bench_cpu.png go (default reports)")
    parser.add_argument("--build", action="store_true",
                        help="build (or reuse up-to-date) llvm engines for every sweep batch and --precision, with "
                             "the automatic tuning database and with none (implied by --preset without --engine)")
    parser.add_argument("--precision", default=None,
                        help="precisions for --build, P[,P] of fp32, fp16, bf16 (default fp32,fp16; fp16 with "
                             "--preset alone)")
    cli.add_deprecated(parser, "--precisions", "--precision")
    parser.add_argument("--fp16_chunks", default=None, metavar="V[,V]",
                        help="also build and time an fp16 engine per K-chunk setting, whatever this CPU's default: "
                             "a number is the chunk, none the whole K in fp16, off fp16 values in fp32 arithmetic "
                             "(e.g. off,32,64,128; implies --build; emulated where the CPU has no fp16 arithmetic)")
    parser.add_argument("--engine_dir", default=None, type=cli.path,
                        help="where --build puts <model>_bs_{bs}_{precision}_{autodb,nodb}.so (default work/bench)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    args.named_contenders = set(args.contenders or ())  # refused, not skipped, where they cannot run
    args.contenders = args.contenders or list(CONTENDERS)
    if "tvm" not in args.contenders:
        given = [flag for flag, value in (("--engine", args.engine), ("--build", args.build),
                                          ("--fp16_chunks", args.fp16_chunks), ("--precision", args.precision),
                                          ("--engine_dir", args.engine_dir)) if value]
        if given:
            raise ToolkitError(f"{given[0]} is for TVM engines, and --contenders leaves tvm out; add tvm to it "
                               f"or drop {given[0]}")
    if args.preset and not args.engine and "tvm" in args.contenders:
        args.build = True
    from svtr_toolkit.compile.fp16_accumulate import parse_variants

    args.fp16_variants = parse_variants(args.fp16_chunks) if args.fp16_chunks is not None else []
    if args.fp16_variants:
        args.build = True
    if not args.build:
        for flag, value in (("--precision", args.precision), ("--engine_dir", args.engine_dir)):
            if value is not None:
                raise ToolkitError(f"{flag} is for the engines --build builds; add --build or drop {flag}")
    args.precision = args.precision or ("fp16" if args.preset and not args.engine else "fp32,fp16")
    args.engine_dir = args.engine_dir or os.path.join("work", "bench")
    return args


def preflight(args, batches, engines, precisions):
    """Everything that can be checked before any work: the contenders named can run here, the
    inputs exist, the outputs can be written and are none of the inputs, the sweep's inputs fit in
    memory. Returns (model path, image shape (C, H, W))."""
    from svtr_toolkit.bench import contenders as registry
    from svtr_toolkit.bench.contenders.tvm_contender import planned_paths
    from svtr_toolkit.bench.driver import input_memory_bytes
    from svtr_toolkit.bench.flags import engine_batches
    from svtr_toolkit.bench.flops import model_image_shape
    from svtr_toolkit.files import check_outputs_apart, check_writable, require_file
    from svtr_toolkit.memory import require_memory

    for name in args.named_contenders:
        why = registry.load(name).unavailable()
        if why:
            raise ToolkitError(f"--contenders {name}: {why}")
    preset = cli.get_preset(args.preset) if args.preset else None
    model_path = preset.require_model(args.model_path) if preset else require_file(args.model_path or "SVTR_opt.onnx",
                                                                                   "--model_path")
    for name, path in engines:
        require_file(path, f"--engine {name}")
    engine_batches(engines)
    outputs = [("--out_dir", os.path.join(args.out_dir, name)) for name in ("bench_cpu.json", "bench_cpu.png")]
    if args.build:
        stem = preset.name if preset else os.path.splitext(os.path.basename(model_path))[0]
        outputs += [("--engine_dir", path) for path in planned_paths(args.engine_dir, stem, batches, precisions,
                                                                     args.fp16_variants)]
    for flag, path in outputs:
        check_writable(path, flag)
    check_outputs_apart(outputs, [("--model_path", model_path), *((f"--engine {n}", p) for n, p in engines)])
    image_chw = preset.image_shape() if preset else model_image_shape(model_path)
    require_memory(input_memory_bytes(batches, image_chw),
                   f"--batches {','.join(map(str, batches))} (the inputs of {'x'.join(map(str, image_chw))} images it "
                   f"times and checks on)", remedy="use smaller batches")
    return model_path, image_chw


def main(argv=None):
    args = parse_args(argv)
    from svtr_toolkit import bench

    batches = bench.parse_batches(args.batches)
    engines = bench.parse_engine_specs(args.engine)
    precisions = cli.parse_precisions(args.precision) if args.build else []
    model_path, image_chw = preflight(args, batches, engines, precisions)
    preset = cli.get_preset(args.preset) if args.preset else None
    if "tvm" in args.contenders and not engines and not args.build:
        print("note: no --engine and no --build given; no TVM engine is timed", flush=True)

    report = bench.run_benchmark(
        model_path, batches, contenders=args.contenders, engine_specs=engines, rounds=args.rounds,
        min_sample_s=args.min_sample_s, threads=args.threads, build=args.build, precisions=precisions,
        engine_dir=args.engine_dir, image_chw=image_chw, engine_stem=preset.name if preset else None,
        log=lambda msg: print(msg, flush=True), progress=not args.no_progress,
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
            + "".join(f" [{label}]" for label in bench.labels(r))
            for r in headline))
    json_path = bench.write_json(report, args.out_dir)
    print(f"wrote {json_path}")
    m = report["machine"]
    model = preset.name if preset else os.path.basename(model_path)
    versions = ", ".join(f"{name} {version}" for name, version in m["versions"].items()
                         if version and name in args.contenders)
    png = bench.write_plot(results, args.out_dir,
                           f"{model} CPU throughput: {m['cpu']}, {m['cores_available']} cores, {versions}")
    if png:
        print(f"wrote {png}")
    else:
        print("plot skipped: matplotlib is not installed (pip install matplotlib); the JSON has every number")
    return 0


if __name__ == "__main__":
    run_cli(main)
