"""The benchmark's results: per-cell figures, comparisons with onnxruntime and the peak, table, JSON, plot."""
from __future__ import annotations

import math
import os
import statistics
import textwrap

from .. import files
from ..table import render_table
from .peak import peak_for
from .timing import Cell, images_per_second, summarize

ORT_NAME = "onnxruntime-fp32"
# Below this argmax agreement with onnxruntime fp32 a contender computes another function, not the
# model at a lower precision (a reduced precision that keeps the model flips only near-ties), so
# its speed is no figure for the model.
WRONG_BELOW = 0.99


def wrong_label(agreement) -> str:
    """"wrong: 12 % argmax" for an agreement under WRONG_BELOW, else "" (the percent rounded down,
    so a contender just under the line never reads as 99 %)."""
    if agreement is None or agreement >= WRONG_BELOW:
        return ""
    return f"wrong: {math.floor(100 * agreement)} % argmax"


def labels(result: dict) -> list:
    """What a result must say beside its speed: "emulated" (a reduced precision computed in fp32
    arithmetic, from the engine's build description) and "wrong: N % argmax"."""
    return [text for text in ("emulated" if result.get("emulated") else "", wrong_label(result.get("argmax_agreement")))
            if text]


def peak_fraction(img_per_s: float, flops_per_image: float, peak_flops: float):
    """Share of the peak FLOP/s that ``img_per_s`` images of ``flops_per_image`` use."""
    if not peak_flops or img_per_s is None:
        return None
    return img_per_s * flops_per_image / peak_flops


def ratio(value, reference):
    if value is None or not reference:
        return None
    return value / reference


def cell_result(cell: Cell) -> dict:
    throughput = [images_per_second(cell.batch, s) for s in cell.samples_s]
    stats = summarize(throughput)
    parity = cell.parity
    return {
        "contender": cell.contender,
        "batch": cell.batch,
        "note": cell.note,
        "calls_per_sample": cell.calls,
        "seconds_per_call": list(cell.samples_s),
        "idle_wait_s": list(cell.idle_wait_s),
        "img_per_s": throughput,
        "median_img_per_s": stats["median"],
        "min_img_per_s": stats["min"],
        "max_img_per_s": stats["max"],
        "spread": stats["spread"],
        "arithmetic": cell.arithmetic,
        "emulated": cell.emulated,
        "argmax_agreement": None if parity is None else parity.argmax_agreement,
        "decided_agreement": None if parity is None else parity.decided_agreement,
        "decided_share": None if parity is None else parity.decided_share,
        "max_abs_diff": None if parity is None else parity.max_abs_diff,
        "cosine": None if parity is None else parity.cosine,
    }


def add_comparisons(results: list, flops_per_image: float, peak_flops, reference=ORT_NAME) -> list:
    """Fill ratio to the reference at the same batch, and fraction of peak, into each result.

    ``peak_flops``: the fp32 peak, or a ``peak.measure_peak`` dict, from which each result is
    set against the peak of its own ``arithmetic`` (``peak_of`` names it).
    ``paired_ratio_median`` is the median over rounds of the per-round ratio: the two were
    timed back to back in each round, so it cancels slow drifts of the machine.
    """
    peak = peak_flops if isinstance(peak_flops, dict) else {"all_cores_flops": peak_flops}
    ref = {r["batch"]: r for r in results if r["contender"] == reference}
    for r in results:
        base = ref.get(r["batch"])
        r["ratio_to_ort"] = ratio(r["median_img_per_s"], base["median_img_per_s"]) if base else None
        if base and len(base["img_per_s"]) == len(r["img_per_s"]) and r["img_per_s"]:
            r["paired_ratio_median"] = statistics.median(a / b for a, b in zip(r["img_per_s"], base["img_per_s"]))
        else:
            r["paired_ratio_median"] = None
        flops, r["peak_of"] = peak_for(peak, r.get("arithmetic"))
        r["peak_fraction"] = peak_fraction(r["median_img_per_s"], flops_per_image, flops)
    return results


def _fmt(value, spec, empty="-"):
    return empty if value is None else format(value, spec)


def _percent(value, spec=".2f"):
    return "-" if value is None else format(100 * value, spec) + "%"


def _agreement(result: dict) -> str:
    """The argmax agreement, and where it is not whole, the agreement on the decided steps
    (``numerics.DECIDED_GAP``): "99.38% (decided 100.00%)"."""
    agreement, decided = result.get("argmax_agreement"), result.get("decided_agreement")
    if agreement is None or agreement == 1 or decided is None:
        return _percent(agreement)
    return f"{_percent(agreement)} (decided {_percent(decided)})"


def format_table(results: list) -> str:
    """One row per (contender, batch): speed and, beside it, agreement with onnxruntime fp32
    (argmax per time step, and on the decided steps where they differ; max |diff|) on the same
    input batch."""
    header = ("contender", "batch", "median img/s", "min-max img/s", "vs ORT", "% peak", "argmax agree",
              "max|diff|", "note")
    rows = []
    for r in sorted(results, key=lambda r: (r["contender"] != ORT_NAME, r["contender"], r["batch"])):
        rows.append((
            r["contender"], str(r["batch"]), _fmt(r["median_img_per_s"], ".1f"),
            f"{_fmt(r['min_img_per_s'], '.1f')}-{_fmt(r['max_img_per_s'], '.1f')}",
            _fmt(r["ratio_to_ort"], ".3f") + ("x" if r["ratio_to_ort"] is not None else ""),
            _fmt(None if r["peak_fraction"] is None else 100 * r["peak_fraction"], ".1f")
            + (f" ({r['peak_of']})" if r.get("peak_of") else ""),
            _agreement(r), _fmt(r.get("max_abs_diff"), ".2g"),
            "; ".join(filter(None, [*labels(r), r["note"]])),
        ))
    return render_table(header, rows, align="l" * len(header), sep=" | ", rule_sep="-+-")


def write_json(report: dict, out_dir: str) -> str:
    path = os.path.join(out_dir, "bench_cpu.json")
    files.write_json(path, report)
    return path


def legend_label(name: str, rows: list) -> str:
    """A contender's legend entry: its name, and what its rows must say (emulated; wrong, at its
    lowest agreement over the batches)."""
    marks = ["emulated"] if any(r.get("emulated") for r in rows) else []
    agreements = [r["argmax_agreement"] for r in rows if r.get("argmax_agreement") is not None]
    if agreements and wrong_label(min(agreements)):
        marks.append(wrong_label(min(agreements)))
    return name + (f" ({'; '.join(marks)})" if marks else "")


def plot_figure(results: list, title: str = "CPU throughput"):
    """The matplotlib figure of ``write_plot``: img/s vs batch, one line per contender, log axes.
    A contender that is wrong at some batch (argmax agreement under WRONG_BELOW) is drawn dashed
    with hollow markers, so the picture does not show its speed as the model's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in sorted({r["contender"] for r in results}, key=lambda n: (n != ORT_NAME, n)):
        rows = sorted((r for r in results if r["contender"] == name), key=lambda r: r["batch"])
        xs = [r["batch"] for r in rows]
        ys = [r["median_img_per_s"] for r in rows]
        err = [[y - r["min_img_per_s"] for y, r in zip(ys, rows)], [r["max_img_per_s"] - y for y, r in zip(ys, rows)]]
        wrong = any(wrong_label(r.get("argmax_agreement")) for r in rows)
        line = ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=legend_label(name, rows),
                           linestyle="--" if wrong else "-")
        if wrong:
            line.lines[0].set_markerfacecolor("none")
    batches = sorted({r["batch"] for r in results})
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches)
    ax.set_xticklabels([str(b) for b in batches])
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s (median over rounds; bars: min-max)")
    ax.set_title(textwrap.fill(title, 80), fontsize=9)  # the machine and versions outgrow one line
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_plot(results: list, out_dir: str, title: str = "CPU throughput"):
    """``plot_figure`` as out_dir/bench_cpu.png; None when matplotlib is missing."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig = plot_figure(results, title)
    path = os.path.join(out_dir, "bench_cpu.png")
    files.write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path
