"""Build a clovaai-layout evaluation LMDB, or check one.

    python tools/lmdb_tool.py create --images DIR --labels gt.txt|labels.json --out_dir OUT_DIR [--allow_outside_images]
    python tools/lmdb_tool.py check --datasets DIR [--preset svtr|ppocrv4 | --config yml [--model_path M.onnx]]

create refuses image paths that resolve outside --images unless --allow_outside_images. check
exits 1 when any image does not decode or any label would be rejected or altered; a config whose
dictionary travels in the model (PP-OCRv4) reads it from --model_path (default: the preset's).
"""
import _repo  # noqa: F401  (the checkout on sys.path)
from svtr_toolkit import cli
from svtr_toolkit.cli import run_cli


def main(argv=None):
    parser = cli.Parser(__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=cli.Parser)
    create = sub.add_parser("create", help="images + labels -> LMDB")
    create.add_argument("--images", required=True, type=cli.path, help="folder the label file's paths are relative to")
    create.add_argument("--labels", required=True, type=cli.path,
                        help="'path<TAB>label' lines, or an MMOCR labels.json")
    create.add_argument("--out_dir", type=cli.path, help="new folder for data.mdb")
    create.add_argument("--allow_outside_images", action="store_true",
                        help="take image paths that resolve outside --images (../x, /abs/x, symlinks out)")
    cli.add_deprecated(create, "--out", "--out_dir", type=cli.path)
    check = sub.add_parser("check", help="audit every LMDB under a folder")
    check.add_argument("--datasets", required=True, type=cli.path)
    cli.add_preset(check)
    check.add_argument("--config", default=None, type=cli.path,
                       help="dictionary and max_text_length come from here (default: the preset's, svtr's without one)")
    check.add_argument("--model_path", default=None, type=cli.path,
                       help="where the config takes its dictionary from the model (PP-OCRv4): the ONNX model "
                            "(default: the preset's)")
    args = parser.parse_args(argv)

    from svtr_toolkit.evaluate import lmdb_tool

    if args.command == "create":
        if not args.out_dir:
            raise cli.ToolkitError("create needs --out_dir")
        count = lmdb_tool.create_lmdb(args.images, args.labels, args.out_dir, args.allow_outside_images)
        print(f"wrote {count} samples to {args.out_dir}")
        return 0
    from svtr_toolkit.config import load_config
    from svtr_toolkit.evaluate.data import LabelRules

    preset = cli.get_preset(args.preset or cli.DEFAULT_PRESET)
    cfg = load_config(args.config or preset.config_path)
    metadata = None
    if cfg.dictionary_in_model:
        from svtr_toolkit.runtime import onnx_metadata

        if args.model_path is None and args.config is not None and args.preset is None:
            raise cli.ToolkitError(f"{args.config} takes its dictionary from the model: give --model_path "
                                   f"(the ONNX model) or --preset")
        metadata = onnx_metadata(preset.require_model(args.model_path))
    rules = LabelRules.from_config(cfg, cfg.characters(metadata))
    audits = lmdb_tool.audit(args.datasets, rules)
    print(lmdb_tool.format_audit(audits))
    problems = sum(a.problems for a in audits)
    print(f"{problems} problem(s) in {sum(a.num_samples for a in audits)} samples")
    return 1 if problems else 0


if __name__ == "__main__":
    run_cli(main)
