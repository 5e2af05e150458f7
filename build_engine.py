"""Compile an ONNX model into a TVM engine (the model zoo's build_engine.py command line).

    python build_engine.py --model_path SVTR_opt.onnx --input x:32,3,64,256 \
        --precision fp16 --engine_path svtr_bs_32_fp16.so [--target auto|llvm|cuda|iluvatar]
    python build_engine.py --preset ppocrv4 --batchsize 32 --precision fp16   # model, input, engine path from the preset
    python build_engine.py --preset svtr --precision fp32 --rpc 10.0.0.5:9190:svtr-cpu  # for a remote device

An up-to-date engine is reused; a stale one (other model, shape, precision, target or TVM)
is rebuilt. Every build ends with a parity line against onnxruntime fp32 (with --rpc, the
engine runs on the remote device and onnxruntime here).
"""
import math
import os
import tempfile

from common import remote_device
from svtr_toolkit import cli
from svtr_toolkit.cli import run_cli
from svtr_toolkit.files import check_outputs_apart, check_writable, require_file, require_folder, require_space
from svtr_toolkit.memory import require_memory
from svtr_toolkit.paths import in_repo

DEFAULT_ENGINE_DIR = in_repo("work", "engines")


def parse_args(argv):
    from svtr_toolkit.compile.targets import TARGET_CHOICES

    parser = cli.Parser(__doc__)
    cli.add_preset(parser)
    parser.add_argument("--model_path", type=cli.path,
                        help="ONNX model (dynamic or static batch); default: the preset's")
    parser.add_argument("--input", help="input name and shape, name:N,C,H,W; default: the preset's at --batchsize")
    parser.add_argument("--batchsize", type=cli.positive_int, default=32,
                        help="with --preset and no --input: the batch (default 32)")
    cli.add_precision(parser, required=True,
                      help="what the engine computes in (docs/design.md, Precision plans: fp32; fp16 and bf16 reduce the "
                           "recogniser and keep the rectifier and the head fp32)")
    parser.add_argument("--engine_path", type=cli.path,
                        help="where to write the engine (.so); with --preset default "
                             "work/engines/<preset>_bs_<N>_<precision>.so")
    parser.add_argument("--target", default="auto", type=cli.choice("target", TARGET_CHOICES),
                        metavar="{" + ",".join(TARGET_CHOICES) + "}", help="where the engine runs (default auto)")
    parser.add_argument("--tuning_db", default="auto", type=cli.path,
                        help="CPU only: 'auto' (tuning/<cpu class> if present), 'none', or a database folder")
    parser.add_argument("--force", action="store_true", help="rebuild even if the engine is up to date")
    parser.add_argument("--skip_parity", action="store_true", help="do not compare with onnxruntime after the build")
    cli.add_rpc(parser, "build for and check the engine")
    args = parser.parse_args(argv)
    if args.preset:
        preset = cli.get_preset(args.preset)
        args.model_path = preset.require_model(args.model_path)
        if args.input is None:
            args.input = f"{preset.input_name}:{','.join(map(str, preset.input_shape(args.batchsize)))}"
        if args.engine_path is None:
            batch = cli.parse_input_spec(args.input)[1][0]
            args.engine_path = os.path.join(DEFAULT_ENGINE_DIR, preset.engine_name(batch, args.precision))
    missing = [flag for flag, value in (("--model_path", args.model_path), ("--input", args.input),
                                        ("--engine_path", args.engine_path)) if value is None]
    if missing:
        raise cli.ToolkitError(f"{', '.join(missing)} required (or give --preset)")
    shape = cli.parse_input_spec(args.input)[1]
    if os.path.lexists(args.model_path):  # a missing one is the build's "ONNX model not found"
        require_file(args.model_path, "ONNX model")
    if args.tuning_db not in ("auto", "none"):
        require_folder(args.tuning_db, "tuning database folder")
    # before a compile of minutes, not after
    check_writable(args.engine_path, "--engine_path")
    if os.path.isfile(args.model_path):
        # an engine is about its model's size, and the compiler's objects in the temporary folder too
        needed = os.path.getsize(args.model_path)
        require_space(os.path.dirname(os.path.abspath(args.engine_path)), needed, "the engine")
        require_space(tempfile.gettempdir(), needed, "the compiler's objects (in the temporary folder, TMPDIR)")
    check_outputs_apart([("--engine_path", args.engine_path)],
                        [("--model_path", args.model_path),
                         ("--tuning_db", args.tuning_db if args.tuning_db not in ("auto", "none") else None)])
    if not args.skip_parity and not args.rpc:
        # the parity check runs one float32 batch here through two runtimes: three copies at the least
        require_memory(3 * 4 * math.prod(shape), f"the parity check of an engine for input {args.input}",
                       "use a smaller batch, or --skip_parity to build it without running it here")
    return args


def main(argv=None):
    args = parse_args(argv)
    from svtr_toolkit.compile.build import build_engine
    from svtr_toolkit.compile.targets import select_target
    from svtr_toolkit.evaluate import parity
    from svtr_toolkit.runtime import load_engine

    input_name, shape = cli.parse_input_spec(args.input)
    tuning_dir = None if args.tuning_db == "none" else args.tuning_db
    # Asked once for what the device is; the server goes back to the pool while this machine compiles.
    remote = remote_device(args.rpc)
    if remote is not None:
        print(f"remote device: {remote.description}", flush=True)
    target = select_target(args.target, remote)
    if remote is not None:
        remote.close()
    build_engine(args.model_path, input_name, shape, args.precision, target, args.engine_path,
                 force=args.force, tuning_dir=tuning_dir)
    if args.rpc and not args.skip_parity:
        backend = load_engine(args.engine_path, remote_device(args.rpc))
        print(parity.check(backend, args.model_path).line(backend.name), flush=True)
    elif not args.skip_parity and not target.module.available():
        # SVTR_CUDA_ARCH=sm_XX --target cuda on a machine without the device: nothing to run it on.
        print(f"parity skipped: the engine was cross-compiled for {target.description}, and this machine has no "
              f"such device to run it on; run tools/parity_check.py where it has one", flush=True)
    elif not args.skip_parity:
        backend = load_engine(args.engine_path)
        print(parity.check(backend, args.model_path).line(backend.name), flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
