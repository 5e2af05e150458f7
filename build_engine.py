"""Compile SVTR_opt.onnx into a TVM engine (the model zoo's build_engine.py command line).

    python build_engine.py --model_path SVTR_opt.onnx --input x:32,3,64,256 \
        --precision fp16 --engine_path svtr_bs_32_fp16.so [--target auto|llvm|cuda|iluvatar]

An up-to-date engine is reused; a stale one (other model, shape, precision, target or TVM)
is rebuilt. Every build ends with a parity line against onnxruntime fp32.
"""
import argparse
import os

from common import run_cli
from svtr_toolkit import engine, parity
from svtr_toolkit.targets import TARGET_CHOICES, select_target


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_path", required=True, help="ONNX model (dynamic or static batch)")
    parser.add_argument("--input", required=True, help="input name and shape, name:N,C,H,W")
    parser.add_argument("--precision", required=True, help="fp16 or fp32")
    parser.add_argument("--engine_path", required=True, help="where to write the engine (.so)")
    parser.add_argument("--target", default="auto", help=f"one of {', '.join(TARGET_CHOICES)} (default auto)")
    parser.add_argument("--tuning_db", default="auto",
                        help="CPU only: 'auto' (tuning/<cpu class> if present), 'none', or a database folder")
    parser.add_argument("--force", action="store_true", help="rebuild even if the engine is up to date")
    parser.add_argument("--skip_parity", action="store_true", help="do not compare with onnxruntime after the build")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    input_name, shape = engine.parse_input_spec(args.input)
    if args.precision not in engine.PRECISIONS:
        raise engine.ToolkitError(f"unknown precision '{args.precision}' (choose from {', '.join(engine.PRECISIONS)})")
    target = select_target(args.target)
    tuning_dir = None if args.tuning_db == "none" else args.tuning_db
    if tuning_dir not in (None, "auto") and not os.path.isdir(tuning_dir):
        raise engine.ToolkitError(f"tuning database folder not found: {tuning_dir}")
    engine.build_engine(args.model_path, input_name, shape, args.precision, target, args.engine_path,
                        force=args.force, tuning_dir=tuning_dir)
    if not args.skip_parity:
        backend = engine.load_engine(args.engine_path)
        print(parity.check(backend, args.model_path).line(backend.name), flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
