"""svtr_toolkit.bench.output: images per second, ratios to onnxruntime, the share of the peak of
each contender's arithmetic, correctness beside speed, the table, the JSON and the plot.

No timing is asserted here: speed depends on the machine and is never a test result.
"""
import json
import math

import pytest

from svtr_toolkit import bench


def _result(name, batch, img_s):
    cell = bench.Cell(name, batch, None, calls=1, samples_s=[batch / v for v in img_s])
    return bench.cell_result(cell)


def test_cell_result_converts_seconds_to_images_per_second():
    r = _result("x", 32, [100.0, 200.0, 400.0])
    assert r["img_per_s"] == pytest.approx([100.0, 200.0, 400.0])
    assert r["median_img_per_s"] == pytest.approx(200.0)
    assert (r["min_img_per_s"], r["max_img_per_s"]) == pytest.approx((100.0, 400.0))
    assert bench.images_per_second(32, 0.1) == pytest.approx(320.0)


def test_ratio_and_peak_fraction():
    results = [_result(bench.ORT_NAME, 32, [400, 380, 420]), _result("fp32", 32, [80, 76, 84]),
               _result("fp16", 8, [10, 10, 10])]
    bench.add_comparisons(results, flops_per_image=728e6, peak_flops=200e9)
    ort, fp32, fp16 = results
    assert ort["ratio_to_ort"] == pytest.approx(1.0)
    assert fp32["ratio_to_ort"] == pytest.approx(0.2)
    assert fp32["paired_ratio_median"] == pytest.approx(0.2)
    assert fp16["ratio_to_ort"] is None and fp16["paired_ratio_median"] is None  # no ORT at batch 8
    assert ort["peak_fraction"] == pytest.approx(400 * 728e6 / 200e9)
    assert fp32["peak_fraction"] == pytest.approx(0.2912)


def test_paired_ratio_uses_each_round():
    ort = _result(bench.ORT_NAME, 1, [100, 50, 100])
    eng = _result("e", 1, [50, 25, 100])
    bench.add_comparisons([ort, eng], 1.0, 1.0)
    assert eng["paired_ratio_median"] == pytest.approx(0.5)  # per round 0.5, 0.5, 1.0


def test_peak_fraction_and_ratio_edge_cases():
    assert bench.peak_fraction(100, 728e6, 0) is None
    assert bench.peak_fraction(None, 728e6, 1e9) is None
    assert bench.ratio(None, 1.0) is None and bench.ratio(1.0, 0) is None
    assert bench.gemm_flops(2048) == 2 * 2048 ** 3


def test_table_and_json_shape(tmp_path):
    results = [_result("fp32", 32, [80.0, 84.0]), _result(bench.ORT_NAME, 32, [400.0, 410.0]),
               _result("odd", 16, [5.0, 6.0])]
    results[2]["note"] = "engine batch 16 is not in the sweep; timed at its own batch only"
    bench.add_comparisons(results, 728e6, 200e9)
    table = bench.format_table(results)
    lines = table.splitlines()
    assert lines[0].startswith("contender") and "vs ORT" in lines[0] and "% peak" in lines[0]
    assert lines[2].startswith(bench.ORT_NAME)  # reference first
    assert f"{82.0 / 405.0:.3f}x" in table  # ratio of medians
    assert "not in the sweep" in table
    odd = next(line for line in lines if line.startswith("odd"))
    assert "| -" in odd  # no ratio without ORT at batch 16

    report = {"machine": {"cpu": "x"}, "settings": {}, "flops": {}, "peak": {}, "results": results, "parity": []}
    path = bench.write_json(report, str(tmp_path / "out"))
    loaded = json.loads(open(path).read())
    assert set(loaded) == {"machine", "settings", "flops", "peak", "results", "parity"}
    keys = {"contender", "batch", "note", "calls_per_sample", "seconds_per_call", "idle_wait_s", "img_per_s",
            "median_img_per_s",
            "min_img_per_s", "max_img_per_s", "spread", "ratio_to_ort", "paired_ratio_median", "peak_fraction",
            "peak_of", "arithmetic", "emulated", "argmax_agreement", "decided_agreement", "decided_share",
                "max_abs_diff", "cosine"}
    assert all(set(r) == keys for r in loaded["results"])
    assert all(len(r["img_per_s"]) == len(r["seconds_per_call"]) for r in loaded["results"])
    assert all(math.isfinite(v) for r in loaded["results"] for v in r["img_per_s"])


def test_write_plot_or_skip(tmp_path):
    results = [_result(bench.ORT_NAME, b, [10.0 * b, 11.0 * b]) for b in (1, 8)] + [_result("fp32", 8, [3.0, 4.0])]
    path = bench.write_plot(results, str(tmp_path))
    if path is None:
        pytest.skip("matplotlib is not installed")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- correctness beside speed
def _checked(name, batch, img_s, agreement, max_diff, decided=None):
    from svtr_toolkit.numerics import Parity

    parity = Parity(rows=batch, steps=25, max_abs_diff=max_diff, cosine=1.0, argmax_agreement=agreement,
                    decided_agreement=decided, decided_share=None if decided is None else 0.9)
    cell = bench.Cell(name, batch, None, calls=1, samples_s=[batch / v for v in img_s], parity=parity)
    return bench.cell_result(cell)


def test_table_shows_agreement_and_max_diff_beside_speed():
    results = [_checked(bench.ORT_NAME, 32, [400.0], 1.0, 0.0), _checked("openvino-fp32", 32, [700.0], 1.0, 1.4e-5),
               _checked("openvino-default", 32, [450.0], 0.16, 0.5)]
    bench.add_comparisons(results, 728e6, 200e9)
    table = bench.format_table(results)
    header = table.splitlines()[0]
    assert "argmax agree" in header and "max|diff|" in header
    row = next(line for line in table.splitlines() if line.startswith("openvino-default"))
    assert "16.00%" in row and "0.5" in row and "450.0" in row
    assert "1.4e-05" in next(line for line in table.splitlines() if line.startswith("openvino-fp32"))


def test_table_gives_the_decided_steps_agreement_where_some_steps_flip():
    """A reduced precision flips near-ties: where the argmax agreement is not whole, the table
    says how the decided steps agree (all of them here), and a whole agreement stays as it was."""
    results = [_checked(bench.ORT_NAME, 32, [400.0], 1.0, 0.0, decided=1.0),
               _checked("tvm-bf16", 32, [700.0], 0.9938, 0.01, decided=1.0)]
    bench.add_comparisons(results, 728e6, 200e9)
    lines = bench.format_table(results).splitlines()
    assert "99.38% (decided 100.00%)" in next(line for line in lines if line.startswith("tvm-bf16"))
    assert "decided" not in next(line for line in lines if line.startswith(bench.ORT_NAME))
    assert results[1]["decided_agreement"] == 1.0 and results[1]["decided_share"] == 0.9


# ----------------------------------------------------------------------------- the peak a contender is set against
@pytest.mark.parametrize("peak, arithmetic, want", [
    ({"all_cores_flops": 100.0, "fp16_arithmetic": False, "fp16_flops": None}, "fp32", (100.0, "fp32")),
    ({"all_cores_flops": 100.0, "fp16_arithmetic": False, "fp16_flops": None}, "fp16", (100.0, "fp32")),
    ({"all_cores_flops": 100.0, "fp16_arithmetic": True, "fp16_flops": 400.0}, "fp16", (400.0, "fp16")),
    ({"all_cores_flops": 100.0, "fp16_arithmetic": True, "fp16_flops": 400.0}, "fp32", (100.0, "fp32")),
    # bf16 without bf16 matrix arithmetic computes in fp32; with it (AMX), against the bf16 probe
    ({"all_cores_flops": 100.0, "fp16_arithmetic": False, "fp16_flops": None, "bf16_arithmetic": False,
      "bf16_flops": None}, "bf16", (100.0, "fp32")),
    ({"all_cores_flops": 100.0, "fp16_arithmetic": False, "fp16_flops": None, "bf16_arithmetic": True,
      "bf16_flops": 700.0}, "bf16", (700.0, "bf16")),
    ({"all_cores_flops": 100.0, "fp16_arithmetic": False, "fp16_flops": None}, "int8", (None, "no int8 probe")),
])
def test_each_contender_is_set_against_the_peak_of_its_arithmetic(peak, arithmetic, want):
    assert bench.peak_for(peak, arithmetic) == want
    result = _result("e", 8, [100.0])
    result["arithmetic"] = arithmetic
    bench.add_comparisons([result], 1.0, peak)
    assert result["peak_of"] == want[1]
    assert result["peak_fraction"] == (None if want[0] is None else pytest.approx(100.0 / want[0]))
