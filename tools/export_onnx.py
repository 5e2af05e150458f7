"""Export the SVTR-Tiny recogniser to SVTR.onnx and SVTR_opt.onnx (offline, one command).

    python tools/export_onnx.py --checkpoint rec_svtr_tiny_none_ctc_en_train.tar
    python tools/export_onnx.py --download          # fetch the PaddleOCR checkpoint first
    python tools/export_onnx.py                     # no weights: UNTRAINED seeded model

--checkpoint takes best_accuracy.pdparams, the PaddleOCR .tar, or a folder with either.
A rerun with the same weights, config, code and tool versions does nothing (see
SVTR_opt.onnx.json); --force rebuilds. With PADDLEOCR_DIR set to a PaddleOCR checkout,
its tools/export_model.py makes the Paddle inference model instead of this toolkit.
"""
import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from common import run_cli  # noqa: E402
from svtr_toolkit import export  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(export.DEFAULT_CONFIG), help="PaddleOCR recognition yml (default: %(default)s)")
    parser.add_argument("--checkpoint", help="best_accuracy.pdparams, rec_svtr_tiny_none_ctc_en_train.tar, or a folder with either")
    parser.add_argument("--download", action="store_true", help=f"download {export.CHECKPOINT_TAR} into --download_dir first")
    parser.add_argument("--download_dir", help="where --download puts the archive (default: --output_dir)")
    parser.add_argument("--url", default=export.CHECKPOINT_URL, help="checkpoint URL for --download (default: %(default)s)")
    parser.add_argument("--output_dir", default=str(export.REPO_ROOT), help="where SVTR.onnx / SVTR_opt.onnx go (default: repo root)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the outputs are up to date")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    export.export(config_path=args.config, checkpoint=args.checkpoint, output_dir=args.output_dir,
                  force=args.force, download=args.download, url=args.url, download_dir=args.download_dir)
    return 0


if __name__ == "__main__":
    run_cli(main)
