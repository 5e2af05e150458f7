"""Fetch PP-OCRv4's recogniser (the 'ppocrv4' preset) from the rapidocr-onnxruntime wheel.

    python tools/fetch_ppocrv4.py [--out PPOCRv4_rec.onnx] [--wheel rapidocr_onnxruntime-1.4.4-py3-none-any.whl]

pip downloads the wheel (no dependencies) unless --wheel names one already here; only the
ONNX member is kept, checked against a pinned sha256. A rerun with the file in place does nothing.
"""
import _repo  # noqa: F401  (the checkout on sys.path)
from svtr_toolkit import cli
from svtr_toolkit.cli import run_cli


def main(argv=None):
    from svtr_toolkit.prepare.registry_models import fetch_ppocrv4
    from svtr_toolkit.presets import PRESETS

    parser = cli.Parser(__doc__)
    parser.add_argument("--out", default=PRESETS["ppocrv4"].model_path, type=cli.path,
                        help="where the ONNX file goes (default: the preset's)")
    parser.add_argument("--wheel", default=None, type=cli.path,
                        help="a downloaded rapidocr-onnxruntime 1.4.4 wheel (offline)")
    args = parser.parse_args(argv)
    from svtr_toolkit.files import check_outputs_apart, check_writable, require_file

    check_writable(args.out, "--out")
    if args.wheel:
        require_file(args.wheel, "--wheel")
        check_outputs_apart([("--out", args.out)], [("--wheel", args.wheel)])
    fetch_ppocrv4(args.out, wheel=args.wheel)
    return 0


if __name__ == "__main__":
    run_cli(main)
