"""The one plain-text table renderer: accuracy per subset, benchmark cells, dataset audits."""
from __future__ import annotations


def render_table(header, rows, align=None, sep="  ", rule_sep=None) -> str:
    """Columns padded to their widest cell, a rule line under the header.

    ``align``: 'l'/'r' per column (default: first left, the rest right). ``rule_sep``: with
    it the rule is drawn per column and joined by it ("-+-"), else it spans the header.
    """
    header = [str(h) for h in header]
    rows = [[str(c) for c in row] for row in rows]
    align = align or "l" + "r" * (len(header) - 1)
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(header)]

    def line(cells):
        return sep.join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align)).rstrip()

    head = line(header)
    rule = rule_sep.join("-" * w for w in widths) if rule_sep else "-" * len(head)
    return "\n".join([head, rule] + [line(row) for row in rows])
