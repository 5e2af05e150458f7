"""Compare an engine with onnxruntime fp32 on the same inputs, in one line.

    python tools/parity_check.py --engine svtr_bs_32_fp16.so --model_path SVTR_opt.onnx \
        [--inputs golden.npz] [--min_agreement 0.995]

Inputs default to a fixed-seed batch in the preprocessed range [-1, 1]; --inputs takes an .npz
with an ``x`` array (any number of rows: the last batch is padded). With --min_agreement the
exit status says whether the argmax agreement per time step reached it.
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
    parser.add_argument("--inputs", default=None, type=cli.path, help=".npz with an 'x' array")
    parser.add_argument("--min_agreement", type=cli.fraction, default=None,
                        help="fail below this argmax agreement, a fraction in [0, 1] (0.995)")
    args = parser.parse_args(argv)

    import numpy as np

    from svtr_toolkit.errors import ToolkitError
    from svtr_toolkit.evaluate import parity
    from svtr_toolkit.evaluate.report import Check
    from svtr_toolkit.runtime import open_backend

    if args.model_path is None:
        if args.preset is None:
            raise ToolkitError("--model_path or --preset is required")
        args.model_path = cli.get_preset(args.preset).require_model()
    backend = open_backend(args.engine)
    inputs = None
    if args.inputs:
        from svtr_toolkit.files import require_file

        if os.path.lexists(args.inputs):  # a missing one is numpy's "cannot read" below
            require_file(args.inputs, "--inputs")
        try:
            inputs = np.load(args.inputs)["x"].astype(np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise ToolkitError(f"cannot read an 'x' array from {args.inputs}: {exc}")
    result = parity.check(backend, args.model_path, inputs)
    print(result.line(backend.name))
    if args.min_agreement is None:
        return 0
    check = Check("argmax agreement", args.min_agreement, result.argmax_agreement)
    print(check.line)
    return 0 if check.passed else 1


if __name__ == "__main__":
    run_cli(main)
