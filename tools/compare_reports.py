"""Is B's accuracy different from A's beyond noise? Two inference.py --report files, paired per sample.

    python tools/compare_reports.py work/fp32.json work/fp16.json [--max_net_loss N] [--alpha 0.05]

Per subset and pooled: samples B gets right that A got wrong (gained), the reverse (lost), the
net, and the exact two-sided McNemar p-value on those discordant samples (a binomial test).
Gates, on the pooled line: --max_net_loss N fails when B loses more than N samples net;
--alpha A fails when B is worse (net < 0) and p < A. A miss exits 1; bad input (a report that is
not one, of other data) exits 2. Samples pair by subset and image key; two runs whose label rules
differ (SVTR lower-cases, PP-OCRv4 keeps the case) pair on the samples both scored, with a note.
"""
import _repo  # noqa: F401  (the checkout on sys.path)
from svtr_toolkit import cli
from svtr_toolkit.cli import run_cli


def main(argv=None):
    parser = cli.Parser(__doc__)
    parser.add_argument("a", type=cli.path, help="the reference run's --report (e.g. onnxruntime fp32)")
    parser.add_argument("b", type=cli.path, help="the run compared with it (e.g. the fp16 engine)")
    parser.add_argument("--max_net_loss", type=cli.nonnegative_int, default=None,
                        help="fail when B loses more than N samples net")
    parser.add_argument("--alpha", type=cli.fraction, default=None,
                        help="fail when B is worse and the McNemar p-value is below this (0.05)")
    args = parser.parse_args(argv)

    from svtr_toolkit.evaluate.compare import load_report, pair, pooled
    from svtr_toolkit.evaluate.report import Check
    from svtr_toolkit.table import render_table

    a, b = load_report(args.a), load_report(args.b)
    rows, notes = pair(a, b)
    total = pooled(rows)

    def pct(r, correct):
        acc = r.acc(correct)
        return "-" if acc is None else f"{100 * acc:.2f}"

    def cells(r):
        return (r.name, r.samples, pct(r, r.correct_a), pct(r, r.correct_b), r.gained, r.lost, f"{r.net:+d}",
                f"{r.p_value:.4g}")

    print(f"A = {args.a} ({a.describe()})\nB = {args.b} ({b.describe()})")
    print(render_table(("subset", "samples", "A acc %", "B acc %", "gained", "lost", "net", "McNemar p"),
                       [cells(r) for r in rows] + [cells(total)]))
    for note in notes:
        print(note)
    passed = True
    if args.max_net_loss is not None:
        check = Check("pooled net", -args.max_net_loss, total.net)
        print(check.line)
        passed &= check.passed
    if args.alpha is not None:
        worse = total.net < 0 and total.p_value < args.alpha
        print(f"McNemar check: B worse than A at alpha {args.alpha}? pooled net {total.net:+d}, "
              f"p {total.p_value:.4g}: {'FAIL' if worse else 'PASS'}")
        passed &= not worse
    return 0 if passed else 1


if __name__ == "__main__":
    run_cli(main)
