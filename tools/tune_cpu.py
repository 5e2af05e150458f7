"""Tune the CPU engine's kernels with MetaSchedule into the repository's database.

    python tools/tune_cpu.py --model_path SVTR_opt.onnx --input x:32,3,64,256 \
        --precision fp32 --budget_min 30
    python tools/tune_cpu.py --preset ppocrv4 --batchsize 32 --precision fp16 --budget_min 30
    python tools/tune_cpu.py --batchsize 32 --budget_min 30 --rpc 10.0.0.5:9190:svtr-cpu   # on N boards at once

The database lands in tuning/<arch>-<isa>-<cores>c/ (e.g. tuning/x86_64-avx2-2c) with a
target.json saying what it was tuned on; build_engine.py uses it on any CPU it is compatible
with (see tuning/README.md). Tuning is resumable: a rerun continues
with the kernels that have not had their trials yet, until --budget_min runs out. With --rpc
the candidates are built here and timed on every server under the key in parallel, and the
database is the remote CPU's.
"""
import _repo  # noqa: F401  (the checkout on sys.path)
from svtr_toolkit import cli
from svtr_toolkit.cli import run_cli


def main(argv=None):
    parser = cli.Parser(__doc__)
    cli.add_preset(parser, default="svtr")
    parser.add_argument("--model_path", default=None, type=cli.path, help="ONNX model (default: the preset's)")
    parser.add_argument("--input", default=None, help="name:N,C,H,W; engines match the database per shape "
                                                      "(default: the preset's at --batchsize)")
    parser.add_argument("--batchsize", type=cli.positive_int, default=32, help="without --input: the batch (default 32)")
    parser.add_argument("--precision", default="fp32", help="fp32, fp16 or both (fp32,fp16)")
    parser.add_argument("--budget_min", type=cli.positive, default=30.0, help="wall-clock budget in minutes (default 30)")
    parser.add_argument("--trials_per_task", type=cli.positive_int, default=64,
                        help="trials for each heavy kernel (default 64)")
    parser.add_argument("--light_trials", type=cli.positive_int, default=8, help="trials for kernels under 1%% of the FLOPs")
    parser.add_argument("--database", default=None, type=cli.path, help="database folder (default tuning/<arch>-<isa>-<cores>c for "
                                                         "the CPU tuned on)")
    cli.add_rpc(parser, "time the candidates (built here)")
    args = parser.parse_args(argv)

    from svtr_toolkit.compile import tuning
    from svtr_toolkit.compile.onnx_passes import load_onnx, prepare_onnx
    from svtr_toolkit.compile import fp16_accumulate
    from svtr_toolkit.compile.build import relax_module
    from svtr_toolkit import rpc
    from svtr_toolkit.compile.targets import host_cpu_target, resolve
    from svtr_toolkit.compile.tuning.selection import workload_key
    from svtr_toolkit.files import check_output_folder

    preset = cli.get_preset(args.preset)
    model_path = preset.require_model(args.model_path)
    input_name, shape = cli.parse_input_spec(args.input or f"{preset.input_name}:"
                                             + ",".join(map(str, preset.input_shape(args.batchsize))))
    precisions = cli.parse_precisions(args.precision)
    if args.database:  # read, resumed and written: a folder (or a new path) that can be written
        check_output_folder(args.database, "--database")
    if args.rpc:
        pool = rpc.tracker_state(args.rpc).busy_line(args.rpc.key)
        remote = rpc.connect(args.rpc)  # what the device is, and its TVM version; the server goes back at once
        target = resolve("llvm", remote)
        print(f"remote device: {remote.description}; {pool}", flush=True)
        remote.close()
    else:
        target = host_cpu_target()
    folder = args.database or tuning.host_database_dir(cpu=target.cpu)
    prepared = prepare_onnx(load_onnx(model_path), input_name, shape)
    print(f"tuning for {target.description} into {folder}, budget {args.budget_min:g} min", flush=True)
    budget = args.budget_min * 60
    for precision in precisions:
        # the same kernels the build will make for this target (fp16: K-chunked or fp16 values in fp32)
        accumulate = fp16_accumulate.setting(precision, target.spec)
        mod, plan = relax_module(prepared, input_name, shape, precision, target.spec, accumulate)
        print(f"{precision}: {plan}", flush=True)
        summary = tuning.tune(mod, target.tvm_target(), folder, time_budget_s=budget,
                              trials_per_task=args.trials_per_task, light_trials=args.light_trials, remote=args.rpc)
        tuning.record_tuned_on(folder, workload_key(input_name, shape, precision), cpu=target.cpu)
        budget -= summary["seconds"]
        left = summary["remaining_trials"]
        print(f"{precision}: {summary['tasks']} kernels, {summary['seconds']:.0f} s, "
              + ("all planned trials done" if not left else f"{left} trials left (rerun to resume)"), flush=True)
        if budget <= 0:
            break
    return 0


if __name__ == "__main__":
    run_cli(main)
