"""Fetch PP-OCRv4's recogniser (the 'ppocrv4' preset) from the rapidocr-onnxruntime wheel.

    python tools/fetch_ppocrv4.py [--out PPOCRv4_rec.onnx] [--wheel rapidocr_onnxruntime-1.4.4-py3-none-any.whl]

pip downloads the wheel (no dependencies) unless --wheel names one already here; only the
ONNX member is kept, checked against a pinned sha256. A rerun with the file in place does nothing.
"""
import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from common import run_cli  # noqa: E402


def main(argv=None):
    from svtr_toolkit.presets import PRESETS
    from svtr_toolkit.registry_models import fetch_ppocrv4

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(REPO, PRESETS["ppocrv4"].model))
    parser.add_argument("--wheel", default=None, help="a downloaded rapidocr-onnxruntime 1.4.4 wheel (offline)")
    args = parser.parse_args(argv)
    fetch_ppocrv4(args.out, wheel=args.wheel)
    return 0


if __name__ == "__main__":
    run_cli(main)
