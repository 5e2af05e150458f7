"""Evaluate (PaddleOCR-exact LMDB accuracy) or time an SVTR engine; model-zoo style CLI.

    python inference.py --engine svtr_bs_32_fp32.so --batchsize 32 --input_name x --datasets DIR
    python inference.py ... --perf_only True --fps_target 70
    python inference.py --preset ppocrv4 --engine work/engines/ppocrv4_bs_32_fp16.so --batchsize 32 --datasets DIR
    python inference.py ... --rpc 10.0.0.5:9190:svtr-cpu   # the engine on a remote device, decoded here

A missed --acc_target / --fps_target exits 1; bad input is one `error:` line, exit 2.
--acc_target gates accuracy runs and --fps_target --perf_only runs; given to the other mode
either is refused (exit 2), as are thresholds out of range, before anything runs.
"""
import argparse
import os

from svtr_toolkit import cli
from svtr_toolkit.cli import run_cli


def flag(value):
    """--perf_only, --perf_only True (the model-zoo form) or --perf_only False."""
    text = str(value).strip().lower()
    if text in ("", "1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def parse_args(argv):
    p = cli.Parser(__doc__)
    cli.add_preset(p)
    p.add_argument("--engine", required=True, type=cli.path,
                   help="TVM engine, or an .onnx run on onnxruntime (the reference)")
    p.add_argument("--batchsize", type=cli.positive_int, required=True)
    p.add_argument("--input_name", default=None, type=cli.text("input name"),
                   help="the engine's input name (checked), e.g. x")
    p.add_argument("--datasets", required=True, type=cli.path,
                   help="folder holding one or more LMDBs (searched recursively)")
    p.add_argument("--config", default=None, type=cli.path,
                   help="PaddleOCR rec yml (default: the preset's, svtr's without one)")
    p.add_argument("--perf_only", nargs="?", const=True, default=False, type=flag, help="time instead of evaluating")
    p.add_argument("--acc_target", type=cli.fraction, default=None,
                   help="accuracy runs: minimum pooled accuracy, a fraction in [0, 1] (0.88)")
    p.add_argument("--fps_target", type=cli.positive, default=None,
                   help="--perf_only runs: minimum compute-only images/s (above 0)")
    p.add_argument("--warmup", type=cli.nonnegative_int, default=3)
    p.add_argument("--loop_count", type=cli.positive_int, default=20, help="timed batches (perf mode)")
    p.add_argument("--report", default=None, type=cli.path,
                   help="write every figure and the run's configuration as JSON")
    p.add_argument("--workers", type=cli.positive_int, default=min(4, os.cpu_count() or 1),
                   help="preprocessing threads")
    p.add_argument("--no_progress", action="store_true",
                   help="no progress output (without it: a bar on a terminal, a line per 25 %% in a log)")
    cli.add_rpc(p, "run the engine")
    p.add_argument("--check_args", action="store_true",
                   help="check the command line (thresholds, --report, --datasets, --config) and exit; "
                        "the scripts run this before building an engine")
    args = p.parse_args(argv)
    args.config = args.config or cli.get_preset(args.preset or cli.DEFAULT_PRESET).config_path
    cli.refuse_unused_gates(args, {"fps_target"} if args.perf_only else {"acc_target"},
                            "a --perf_only run" if args.perf_only else "an accuracy run",
                            {"acc_target": "accuracy runs check it", "fps_target": "--perf_only runs check it"})
    return args


def preflight(args):
    """Everything about the command line that can be checked without the engine or the data,
    so a bad --report or --datasets is found before an evaluation of minutes, not after."""
    from svtr_toolkit.config import load_config
    from svtr_toolkit.evaluate.data import batch_memory_bytes, find_lmdbs
    from svtr_toolkit.files import check_outputs_apart, check_writable
    from svtr_toolkit.memory import require_memory

    cfg = load_config(args.config)
    subsets = find_lmdbs(args.datasets)
    if args.report:
        check_writable(args.report, "--report")
        # the engine may not exist yet (the scripts check before they build it): paths still compare
        check_outputs_apart([("--report", args.report)],
                            [("--config", args.config), ("--engine", args.engine),
                             ("--config's character dictionary", cfg.dictionary_file),
                             *(("--datasets", folder) for _, folder in subsets)])
    require_memory(batch_memory_bytes(args.batchsize, cfg.image_shape, args.workers),
                   f"--batchsize {args.batchsize} (its input batches, {args.workers} worker(s) preparing them ahead)")
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = preflight(args)
    if args.check_args:
        return 0
    from svtr_toolkit.evaluate import report
    from svtr_toolkit.evaluate.data import Dataset, LabelRules, Preprocessor
    from svtr_toolkit.evaluate.runner import benchmark, evaluate
    from svtr_toolkit.files import sha256_bytes, write_json
    from svtr_toolkit.provenance import untrained_warning
    from svtr_toolkit.runtime import open_backend

    remote = None
    if args.rpc:
        from svtr_toolkit import rpc

        remote = rpc.connect(args.rpc)
    backend = open_backend(args.engine, args.batchsize, args.input_name, remote=remote)
    if remote is not None:
        print(f"running on {backend.device_description}", flush=True)
    preprocess = Preprocessor(cfg.image_shape, cfg.resize)
    preprocess.check_input(backend)
    characters = cfg.characters(backend.model_metadata)
    out = {
        "mode": "performance" if args.perf_only else "accuracy",
        "engine": {"path": os.path.abspath(args.engine), "backend": backend.name, "device": backend.device_description,
                   "input_name": backend.input_name, "input_shape": list(backend.input_shape)},
        "model": {"sha256": backend.model_sha256, "weights": backend.weights},
        "batch_size": args.batchsize,
        "datasets": os.path.abspath(args.datasets),
        "workers": args.workers,
        "config": {"path": cfg.path, "sha256": cfg.digest, "image_shape": list(cfg.image_shape),
                   "resize": cfg.resize, "max_text_length": cfg.max_text_length, "lowercase": cfg.lowercase,
                   "ignore_space": cfg.ignore_space, "is_filter": cfg.is_filter, "characters": len(characters),
                   "dictionary_sha256": sha256_bytes("\n".join(characters).encode("utf-8"))},
    }
    checks = []
    with Dataset(args.datasets, LabelRules.from_config(cfg, characters)) as dataset:
        if args.perf_only:
            perf = benchmark(backend, dataset, preprocess, args.batchsize,
                             warmup=args.warmup, loop_count=args.loop_count, workers=args.workers)
            out["performance"] = perf.to_dict()
            print(report.format_perf(perf))
            print(report.metric_result({"FPS": perf.fps, "e2e_FPS": perf.e2e_fps,
                                        "latency_p50_ms": perf.p50_ms, "latency_p99_ms": perf.p99_ms}))
            if args.fps_target is not None:
                checks.append(report.Check("fps", args.fps_target, perf.fps))
        else:
            result = evaluate(backend, dataset, preprocess, characters, args.batchsize,
                              ignore_space=cfg.ignore_space, is_filter=cfg.is_filter,
                              workers=args.workers, progress=not args.no_progress)
            summary = report.accuracy_summary(dataset, result)
            out["accuracy"] = summary.to_dict()
            print(report.format_accuracy(summary))
            if untrained_warning(backend.weights):
                print(untrained_warning(backend.weights))
            print(report.metric_result({"acc": summary.pooled.acc, "norm_edit_dis": summary.pooled.norm_edit_dis,
                                        "weights": backend.weights}))
            if args.acc_target is not None:
                checks.append(report.Check("acc", args.acc_target, summary.pooled.acc))
    for check in checks:
        print(check.line)
    out["checks"] = [c.to_dict() for c in checks]
    out["passed"] = all(c.passed for c in checks)
    if args.report:
        write_json(args.report, out)
    return 0 if out["passed"] else 1


if __name__ == "__main__":
    run_cli(main)
