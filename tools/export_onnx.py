"""Export the SVTR-Tiny recogniser to SVTR.onnx and SVTR_opt.onnx (offline, one command).

    python tools/export_onnx.py --checkpoint rec_svtr_tiny_none_ctc_en_train.tar
    python tools/export_onnx.py --download          # fetch the PaddleOCR checkpoint first
    python tools/export_onnx.py                     # no weights: UNTRAINED seeded model
    python tools/export_onnx.py --checkpoint auto   # the checkpoint lying in the repository, if any

--checkpoint takes best_accuracy.pdparams, the PaddleOCR .tar, or a folder with either.
A rerun with the same weights, config, code and tool versions does nothing (see
SVTR_opt.onnx.json); --force rebuilds. With PADDLEOCR_DIR set to a PaddleOCR checkout,
its tools/export_model.py makes the Paddle inference model instead of this toolkit.
"""
import sys

import _repo  # noqa: F401  (the checkout on sys.path)
from svtr_toolkit import cli
from svtr_toolkit.cli import run_cli
from svtr_toolkit.prepare import export
from svtr_toolkit.prepare.checkpoint import find_checkpoint


def parse_args(argv):
    parser = cli.Parser(__doc__)
    parser.add_argument("--config", default=str(export.DEFAULT_CONFIG), type=cli.path,
                        help="PaddleOCR recognition yml (default: %(default)s)")
    parser.add_argument("--checkpoint", type=cli.path, help="best_accuracy.pdparams, rec_svtr_tiny_none_ctc_en_train.tar, a folder with "
                                             "either, or 'auto': the one in the repository root if there is one")
    parser.add_argument("--download", action="store_true", help=f"download {export.CHECKPOINT_TAR} into --download_dir first")
    parser.add_argument("--download_dir", type=cli.path, help="where --download puts the archive (default: --out_dir)")
    parser.add_argument("--url", default=export.CHECKPOINT_URL, type=cli.text("URL"), help="checkpoint URL for --download (default: %(default)s)")
    parser.add_argument("--out_dir", default=str(export.REPO_ROOT), type=cli.path,
                        help="where SVTR.onnx / SVTR_opt.onnx go (default: repo root)")
    cli.add_deprecated(parser, "--output_dir", "--out_dir", type=cli.path)
    parser.add_argument("--force", action="store_true", help="rebuild even if the outputs are up to date, and "
                                                             "replace a trained export with an untrained one")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    checkpoint = args.checkpoint
    if checkpoint == "auto":
        checkpoint = find_checkpoint(export.REPO_ROOT)
        kept = None if checkpoint is not None or args.force else export.trained_export(args.out_dir)
        if kept:
            print(f"prepare: no checkpoint found; keeping {args.out_dir}/{export.OPT_ONNX}, exported from a trained "
                  f"checkpoint ({kept}). --force replaces it with an untrained model.", file=sys.stderr)
            return 0
        if checkpoint is None:
            print(f"prepare: no checkpoint found ({export.CHECKPOINT_TAR} or its unpacked folder in {export.REPO_ROOT}); "
                  f"exporting an UNTRAINED model, accuracy numbers from it are meaningless. For real weights put the "
                  f"tar there ({export.CHECKPOINT_URL}), pass --checkpoint PATH, or --download where the network "
                  f"allows.", file=sys.stderr)
    export.export(config_path=args.config, checkpoint=checkpoint, output_dir=args.out_dir,
                  force=args.force, download=args.download, url=args.url, download_dir=args.download_dir)
    return 0


if __name__ == "__main__":
    run_cli(main)
