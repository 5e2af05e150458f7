"""Evaluate (PaddleOCR-exact LMDB accuracy) or time an SVTR engine; model-zoo style CLI.

    python inference.py --engine svtr_bs_32_fp32.so --batchsize 32 --input_name x --datasets DIR
    python inference.py ... --perf_only True --fps_target 70
    python inference.py --preset ppocrv4 --engine work/engines/ppocrv4_bs_32_fp16.so --batchsize 32 --datasets DIR
    python inference.py ... --rpc 10.0.0.5:9190:svtr-cpu   # the engine on a remote device, decoded here
    python inference.py --preset ppocrv4 --engine PPOCRv4_rec.onnx --runtime openvino [--precision fp32] ...
    python inference.py ... --perf_only --scenario SingleStream|Offline|Server [--latency_target_ms L] [--user_conf F]

An .onnx --engine runs on onnxruntime (the reference) or, with --runtime openvino, on OpenVINO in
--precision fp32, bf16 or fp16 (default: OpenVINO's own); the output and the report name the
runtime, its version and the precision it computed in. --scenario times through MLPerf LoadGen
instead of the plain timed loop (the model zoo's figure): LoadGen's rules decide the run's length
and query counts (a LoadGen user.conf, --user_conf, may change them).

A missed gate exits 1; bad input is one `error:` line, exit 2. --acc_target gates accuracy runs;
--fps_target the timed loop's compute-only img/s, LoadGen's Offline samples/s and Server's load
(the queries/s LoadGen offers, held if the run is VALID); --latency_target_ms LoadGen's
SingleStream p90 and Server p99 latency (and is Server's latency bound). A gated LoadGen run that
LoadGen calls INVALID fails. Given to a mode that does not check it, a gate is refused (exit 2), as are thresholds out
of range, before anything runs.
"""
import argparse
import os

from common import remote_device
from svtr_toolkit import cli
from svtr_toolkit.cli import run_cli
from svtr_toolkit.errors import ToolkitError
from svtr_toolkit.evaluate.loadgen import SCENARIOS
from svtr_toolkit.runtime import ONNX_RUNTIMES, runtime_problem

WARMUP, LOOP_COUNT = 3, 20
# the gates each --perf_only mode checks: the timed loop (None) and each LoadGen scenario
GATES = {None: {"fps_target"}, "SingleStream": {"latency_target_ms"}, "Offline": {"fps_target"},
         "Server": {"fps_target", "latency_target_ms"}}


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
    p.add_argument("--engine", default=None, type=cli.path,
                   help="TVM engine, or an .onnx run on --runtime (default onnxruntime, the reference); with "
                        "--runtime and no --engine, the preset's ONNX model")
    p.add_argument("--batchsize", type=cli.positive_int, required=True)
    p.add_argument("--input_name", default=None, type=cli.text("input name"),
                   help="the engine's input name (checked), e.g. x")
    p.add_argument("--datasets", required=True, type=cli.path,
                   help="folder holding one or more LMDBs (searched recursively)")
    p.add_argument("--config", default=None, type=cli.path,
                   help="PaddleOCR rec yml (default: the preset's, svtr's without one)")
    p.add_argument("--perf_only", nargs="?", const=True, default=False, type=flag, help="time instead of evaluating")
    cli.add_runtime(p, ONNX_RUNTIMES)
    p.add_argument("--scenario", default=None, type=cli.choice("LoadGen scenario", SCENARIOS),
                   metavar="{" + ",".join(SCENARIOS) + "}",
                   help="--perf_only through MLPerf LoadGen in this scenario (default: the plain timed loop)")
    p.add_argument("--user_conf", default=None, type=cli.path,
                   help="--scenario runs: a LoadGen user.conf (e.g. '*.Offline.min_duration = 60000') over "
                        "LoadGen's own rules")
    p.add_argument("--acc_target", type=cli.fraction, default=None,
                   help="accuracy runs: minimum pooled accuracy, a fraction in [0, 1] (0.88)")
    p.add_argument("--fps_target", type=cli.positive, default=None,
                   help="--perf_only runs: minimum compute-only images/s of the timed loop, samples/s of LoadGen's "
                        "Offline scenario, or the load LoadGen's Server scenario offers and must hold; above 0")
    p.add_argument("--latency_target_ms", type=cli.positive, default=None,
                   help="--scenario SingleStream: maximum p90 latency; Server: maximum p99 latency and LoadGen's "
                        "latency bound; milliseconds above 0")
    p.add_argument("--warmup", type=cli.nonnegative_int, default=None,
                   help=f"untimed batches before the timed loop (default {WARMUP})")
    p.add_argument("--loop_count", type=cli.positive_int, default=None,
                   help=f"timed batches of the timed loop (default {LOOP_COUNT})")
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
    preset = cli.get_preset(args.preset or cli.DEFAULT_PRESET)
    args.config = args.config or preset.config_path
    if args.engine is None:
        if args.runtime is None:
            raise ToolkitError("--engine is required (or --runtime, to run the preset's ONNX model)")
        args.engine = preset.model_path
    if args.scenario and not args.perf_only:
        raise ToolkitError("--scenario times a --perf_only run through LoadGen; add --perf_only")
    mode = ("an accuracy run" if not args.perf_only else
            f"a LoadGen {args.scenario} run" if args.scenario else "a --perf_only run of the timed loop")
    cli.refuse_unused_gates(args, GATES[args.scenario] if args.perf_only else {"acc_target"}, mode, {
        "acc_target": "accuracy runs check it",
        "fps_target": "--perf_only runs check it: the timed loop and LoadGen's Offline and Server scenarios",
        "latency_target_ms": "LoadGen's SingleStream (p90) and Server (p99) scenarios check it"})
    cli.refuse_unused_gates(args, set() if args.scenario else {"warmup", "loop_count"} if args.perf_only else set(),
                            mode, {"warmup": "the --perf_only timed loop uses it",
                                   "loop_count": "the --perf_only timed loop uses it"}, verb="used by")
    cli.refuse_unused_gates(args, {"user_conf"} if args.scenario else set(), mode,
                            {"user_conf": "--scenario runs read it"}, verb="used by")
    problem = runtime_problem(args.engine, args.runtime, args.precision, args.rpc is not None)
    if problem:
        raise ToolkitError(problem)
    args.warmup = WARMUP if args.warmup is None else args.warmup
    args.loop_count = LOOP_COUNT if args.loop_count is None else args.loop_count
    return args


def preflight(args):
    """Everything about the command line that can be checked without the engine or the data,
    so a bad --report or --datasets is found before an evaluation of minutes, not after.
    Returns (the config, LoadGen's rules for a --scenario run or None)."""
    from svtr_toolkit.config import load_config
    from svtr_toolkit.evaluate.data import batch_memory_bytes, find_lmdbs
    from svtr_toolkit.files import check_outputs_apart, check_writable, require_file
    from svtr_toolkit.memory import require_memory

    cfg = load_config(args.config)
    subsets = find_lmdbs(args.datasets)
    if args.runtime == "openvino":
        from svtr_toolkit.runtime.openvino_backend import import_openvino

        if import_openvino()[0] is None:
            raise ToolkitError(import_openvino()[1])
    rules = None
    if args.scenario:
        from svtr_toolkit.evaluate import loadgen

        if args.user_conf:
            require_file(args.user_conf, "--user_conf")
        rules = loadgen.read_rules(args.scenario, args.preset or cli.DEFAULT_PRESET, args.user_conf)
        require_memory(loadgen.loaded_memory_bytes(cfg.image_shape),
                       f"LoadGen's loaded samples (at most {loadgen.PERFORMANCE_SAMPLES} images of "
                       f"{'x'.join(map(str, cfg.image_shape))})")
    if args.report:
        check_writable(args.report, "--report")
        # the engine may not exist yet (the scripts check before they build it): paths still compare
        check_outputs_apart([("--report", args.report)],
                            [("--config", args.config), ("--engine", args.engine), ("--user_conf", args.user_conf),
                             ("--config's character dictionary", cfg.dictionary_file),
                             *(("--datasets", folder) for _, folder in subsets)])
    require_memory(batch_memory_bytes(args.batchsize, cfg.image_shape, args.workers),
                   f"--batchsize {args.batchsize} (its input batches, {args.workers} worker(s) preparing them ahead)")
    return cfg, rules


def main(argv=None):
    args = parse_args(argv)
    cfg, rules = preflight(args)
    if args.check_args:
        return 0
    from svtr_toolkit.evaluate import report
    from svtr_toolkit.evaluate.data import Dataset, LabelRules
    from svtr_toolkit.evaluate.runner import evaluate, timed_loop
    from svtr_toolkit.files import write_json
    from svtr_toolkit.preprocess import Preprocessor
    from svtr_toolkit.provenance import untrained_warning
    from svtr_toolkit.runtime import open_backend

    remote = remote_device(args.rpc)
    backend = open_backend(args.engine, args.batchsize, args.input_name, remote=remote, runtime=args.runtime,
                           precision=args.precision, image_shape=cfg.image_shape)
    if remote is not None:
        print(f"running on {backend.device_description}", flush=True)
    print(backend.runtime_line(), flush=True)
    preprocess = Preprocessor.from_config(cfg)
    preprocess.check_input(backend)
    characters = cfg.characters(backend.model_metadata)
    out = report.run_record(perf_only=args.perf_only, scenario=args.scenario, engine_path=args.engine, backend=backend,
                            batch_size=args.batchsize, datasets=args.datasets, workers=args.workers, cfg=cfg,
                            characters=characters)
    checks = []
    with Dataset(args.datasets, LabelRules.from_config(cfg, characters)) as dataset:
        if args.perf_only and args.scenario:
            checks += loadgen_run(args, rules, backend, dataset, preprocess, out)
        elif args.perf_only:
            perf = timed_loop(backend, dataset, preprocess, args.batchsize,
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
    passed = report.record_checks(out, checks)
    if args.report:
        write_json(args.report, out)
    return 0 if passed else 1


def loadgen_run(args, rules, backend, dataset, preprocess, out) -> list:
    """A --scenario run: LoadGen's figures into ``out`` and on the console; its gate checks. A gate
    on a run LoadGen calls INVALID fails, whatever the figure."""
    from svtr_toolkit.evaluate import loadgen, report

    result = loadgen.run(backend, dataset, preprocess, rules, latency_target_ms=args.latency_target_ms,
                         target_qps=args.fps_target if args.scenario == "Server" else None, workers=args.workers,
                         log=lambda line: print(line, flush=True))
    out["performance"] = result.to_dict()
    print(loadgen.format_result(result))
    latency = result.latency_ms
    print(report.metric_result({"FPS": result.throughput, "latency_p50_ms": latency.get("p50"),
                                "latency_p90_ms": latency.get("p90"), "latency_p99_ms": latency.get("p99"),
                                "loadgen": "VALID" if result.valid else "INVALID"}))
    invalid = None if result.valid else "LoadGen: INVALID"
    checks = []
    if args.fps_target is not None:
        checks.append(report.Check("fps", args.fps_target, result.throughput, refused_by=invalid))
    if args.latency_target_ms is not None:
        name = f"latency_{loadgen.percentile_name(result.target_latency_percentile or 0)}_ms"
        checks.append(report.Check(name, args.latency_target_ms, result.target_latency_ms, at_most=True,
                                   refused_by=invalid))
    return checks


if __name__ == "__main__":
    run_cli(main)
