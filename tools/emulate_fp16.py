"""Write an ONNX model that onnxruntime runs with the fp16 engine's rounding, as a reference.

    python tools/emulate_fp16.py --model_path PPOCRv4_rec.onnx --input x:32,3,48,320 \
        --out work/PPOCRv4_rec_fp16emu.onnx
    python inference.py --engine work/PPOCRv4_rec_fp16emu.onnx --batchsize 32 --datasets DIR ...

The parts the fp16 engine converts (see build_engine.py) get fp16-rounded weights and
activations; the parts it keeps fp32 are untouched; arithmetic inside each op stays fp32. When
onnxruntime with this rounding gains or loses the same samples as the engine, the difference
to fp32 comes from fp16 itself, not from the compiler. --round weights (or activations) rounds
only that half of the fp16 part, to see which of the two moves the accuracy.
"""
import _repo  # noqa: F401  (the checkout on sys.path)
from svtr_toolkit import cli
from svtr_toolkit.cli import run_cli
from svtr_toolkit.compile.onnx_passes import EMULATED_ROUNDINGS


def main(argv=None):
    parser = cli.Parser(__doc__)
    parser.add_argument("--model_path", required=True, type=cli.path, help="the ONNX model the fp16 engine is built from")
    parser.add_argument("--input", required=True, help="name:N,C,H,W, as given to build_engine.py")
    parser.add_argument("--out", required=True, type=cli.path, help="where the emulating ONNX model goes")
    parser.add_argument("--round", default="all", type=cli.choice("rounding", EMULATED_ROUNDINGS),
                        metavar="{" + ",".join(EMULATED_ROUNDINGS) + "}",
                        help="round weights and activations of the fp16 part (the engine), or only one of them")
    args = parser.parse_args(argv)

    import onnx

    from svtr_toolkit.compile.onnx_passes import load_onnx
    from svtr_toolkit.compile.precision import emulate_plan
    from svtr_toolkit.files import check_outputs_apart, check_writable, require_file, write_atomically

    name, shape = cli.parse_input_spec(args.input)
    require_file(args.model_path, "ONNX model")
    check_writable(args.out, "--out")
    check_outputs_apart([("--out", args.out)], [("--model_path", args.model_path)])
    model, plan = emulate_plan(load_onnx(args.model_path), name, shape, "fp16", args.round)
    write_atomically(args.out, lambda tmp: onnx.save(model, tmp))
    rounded = "weights and activations" if args.round == "all" else args.round
    print(f"wrote {args.out}: {plan} (fp16 parts' {rounded} rounded, run by onnxruntime in fp32)")
    return 0


if __name__ == "__main__":
    run_cli(main)
