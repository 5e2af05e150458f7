"""Compare an engine with onnxruntime fp32 on the same inputs, in one line.

    python tools/parity_check.py --engine svtr_bs_32_fp16.so --model_path SVTR_opt.onnx \
        [--inputs golden.npz] [--min_agreement 0.995]

Inputs default to a fixed-seed batch in the preprocessed range [-1, 1]; --inputs takes an .npz
with an ``x`` array (any number of rows: the last batch is padded). With --min_agreement the
exit status says whether the argmax agreement per time step reached it.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import run_cli  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", required=True)
    parser.add_argument("--model_path", required=True, help="the ONNX model the engine was built from")
    parser.add_argument("--inputs", default=None, help=".npz with an 'x' array")
    parser.add_argument("--min_agreement", type=float, default=None, help="fail below this argmax agreement (0-1)")
    args = parser.parse_args(argv)

    import numpy as np

    from svtr_toolkit import parity
    from svtr_toolkit.backends import open_backend
    from svtr_toolkit.errors import ToolkitError

    backend = open_backend(args.engine)
    inputs = None
    if args.inputs:
        try:
            inputs = np.load(args.inputs)["x"].astype(np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise ToolkitError(f"cannot read an 'x' array from {args.inputs}: {exc}")
    result = parity.check(backend, args.model_path, inputs)
    print(result.line(backend.name))
    if args.min_agreement is not None and result.argmax_agreement < args.min_agreement:
        print(f"argmax agreement check: expected >= {args.min_agreement}, got {result.argmax_agreement:.4f}: FAIL")
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
