"""Build a clovaai-layout evaluation LMDB, or check one.

    python tools/lmdb_tool.py create --images DIR --labels gt.txt|labels.json --out_dir OUT_DIR
    python tools/lmdb_tool.py check --datasets DIR [--preset svtr|ppocrv4 | --config yml]

check exits 1 when any image does not decode or any label would be rejected or altered.
"""
import _repo  # noqa: F401  (the checkout on sys.path)
from svtr_toolkit import cli
from svtr_toolkit.cli import run_cli


def main(argv=None):
    parser = cli.Parser(__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=cli.Parser)
    create = sub.add_parser("create", help="images + labels -> LMDB")
    create.add_argument("--images", required=True, help="folder the label file's paths are relative to")
    create.add_argument("--labels", required=True, help="'path<TAB>label' lines, or an MMOCR labels.json")
    create.add_argument("--out_dir", help="new folder for data.mdb")
    cli.add_deprecated(create, "--out", "--out_dir")
    check = sub.add_parser("check", help="audit every LMDB under a folder")
    check.add_argument("--datasets", required=True)
    cli.add_preset(check)
    check.add_argument("--config", default=None, help="dictionary and max_text_length come from here "
                                                      "(default: the preset's, svtr's without one)")
    args = parser.parse_args(argv)

    from svtr_toolkit.evaluate import lmdb_tool

    if args.command == "create":
        if not args.out_dir:
            raise cli.ToolkitError("create needs --out_dir")
        count = lmdb_tool.create_lmdb(args.images, args.labels, args.out_dir)
        print(f"wrote {count} samples to {args.out_dir}")
        return 0
    from svtr_toolkit.config import load_config
    from svtr_toolkit.evaluate.data import LabelRules

    cfg = load_config(args.config or cli.get_preset(args.preset or cli.DEFAULT_PRESET).config_path)
    rules = LabelRules.from_config(cfg, cfg.characters())
    audits = lmdb_tool.audit(args.datasets, rules)
    print(lmdb_tool.format_audit(audits))
    problems = sum(a.problems for a in audits)
    print(f"{problems} problem(s) in {sum(a.num_samples for a in audits)} samples")
    return 1 if problems else 0


if __name__ == "__main__":
    run_cli(main)
