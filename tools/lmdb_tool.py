"""Build a clovaai-layout evaluation LMDB, or check one.

    python tools/lmdb_tool.py create --images DIR --labels gt.txt|labels.json --out OUT_DIR
    python tools/lmdb_tool.py check --datasets DIR [--config rec_svtr_tiny_6local_6global_stn_en.yml]

check exits 1 when any image does not decode or any label would be rejected or altered.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import run_cli  # noqa: E402

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "rec_svtr_tiny_6local_6global_stn_en.yml")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="images + labels -> LMDB")
    create.add_argument("--images", required=True, help="folder the label file's paths are relative to")
    create.add_argument("--labels", required=True, help="'path<TAB>label' lines, or an MMOCR labels.json")
    create.add_argument("--out", required=True, help="new folder for data.mdb")
    check = sub.add_parser("check", help="audit every LMDB under a folder")
    check.add_argument("--datasets", required=True)
    check.add_argument("--config", default=DEFAULT_CONFIG, help="dictionary and max_text_length come from here")
    args = parser.parse_args(argv)

    from svtr_toolkit import lmdb_tool

    if args.command == "create":
        count = lmdb_tool.create_lmdb(args.images, args.labels, args.out)
        print(f"wrote {count} samples to {args.out}")
        return 0
    from svtr_toolkit.config import load_config
    from svtr_toolkit.data import LabelRules

    cfg = load_config(args.config)
    rules = LabelRules.from_config(cfg, cfg.characters())
    audits = lmdb_tool.audit(args.datasets, rules)
    print(lmdb_tool.format_audit(audits))
    problems = sum(a.problems for a in audits)
    print(f"{problems} problem(s) in {sum(a.num_samples for a in audits)} samples")
    return 1 if problems else 0


if __name__ == "__main__":
    run_cli(main)
