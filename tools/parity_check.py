"""Compare an engine with onnxruntime fp32 on the same inputs, in one line.

    python tools/parity_check.py --engine svtr_bs_32_fp16.so --model_path SVTR_opt.onnx \
        [--inputs golden.npz] [--min_agreement 0.995]
    python tools/parity_check.py --engine SVTR.onnx --runtime openvino [--precision fp32] --inputs golden.npz

Inputs default to a fixed-seed batch in the preprocessed range [-1, 1]; --inputs takes an .npz
with an ``x`` array (any number of rows: the last batch is padded) and, where it has one, a
``probs`` array: the reference output for ``x`` (e.g. PaddleOCR's), compared in a second line.
An .onnx --engine runs on --runtime (onnxruntime or openvino) in --precision, as in
inference.py. With --min_agreement the exit status says whether the argmax agreement per time
step with onnxruntime fp32 reached it.
"""
import os

import _repo  # noqa: F401  (the checkout on sys.path)
from svtr_toolkit import cli
from svtr_toolkit.cli import run_cli


def main(argv=None):
    parser = cli.Parser(__doc__)
    parser.add_argument("--engine", required=True, type=cli.path)
    cli.add_preset(parser)
    parser.add_argument("--model_path", type=cli.path,
                        help="the ONNX model the engine was built from (default: the preset's)")
    parser.add_argument("--inputs", default=None, type=cli.path,
                        help=".npz with an 'x' array (and optionally 'probs', the reference output for it)")
    from svtr_toolkit.runtime import ONNX_RUNTIMES

    cli.add_runtime(parser, ONNX_RUNTIMES)
    parser.add_argument("--min_agreement", type=cli.fraction, default=None,
                        help="fail below this argmax agreement, a fraction in [0, 1] (0.995)")
    args = parser.parse_args(argv)

    import numpy as np

    from svtr_toolkit.errors import ToolkitError
    from svtr_toolkit.evaluate import parity
    from svtr_toolkit.evaluate.report import Check
    from svtr_toolkit.numerics import compare
    from svtr_toolkit.runtime import open_backend, runtime_problem

    problem = runtime_problem(args.engine, args.runtime, args.precision)
    if problem:
        raise ToolkitError(problem)
    if args.model_path is None:
        if args.preset is None:
            raise ToolkitError("--model_path or --preset is required")
        args.model_path = cli.get_preset(args.preset).require_model()
    inputs = expected = None
    if args.inputs:
        from svtr_toolkit.files import require_file

        if os.path.lexists(args.inputs):  # a missing one is numpy's "cannot read" below
            require_file(args.inputs, "--inputs")
        try:
            with np.load(args.inputs) as stored:
                inputs = stored["x"].astype(np.float32)
                expected = stored["probs"] if "probs" in stored.files else None
        except (OSError, KeyError, ValueError) as exc:
            raise ToolkitError(f"cannot read an 'x' array from {args.inputs}: {exc}")
    image_shape = inputs.shape[1:] if inputs is not None else (
        cli.get_preset(args.preset).image_shape() if args.preset else None)
    backend = open_backend(args.engine, runtime=args.runtime, precision=args.precision, image_shape=image_shape)
    print(backend.runtime_line())
    result = parity.check(backend, args.model_path, inputs)
    print(result.line(backend.name))
    if expected is not None:
        stored = compare(parity.run_padded(backend, inputs), expected)
        print(stored.line(backend.name, reference=f"the 'probs' stored in {os.path.basename(args.inputs)}"))
    if args.min_agreement is None:
        return 0
    check = Check("argmax agreement", args.min_agreement, result.argmax_agreement)
    print(check.line)
    return 0 if check.passed else 1


if __name__ == "__main__":
    run_cli(main)
