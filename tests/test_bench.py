"""The benchmark's pure logic: statistics, interleaving, ratios, FLOP counting, report shape.

No timing is asserted here: speed depends on the machine and is never a test result.
"""
import json
import math
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from svtr_toolkit import bench
from svtr_toolkit.bench import timing
from svtr_toolkit.errors import ToolkitError


# ----------------------------------------------------------------------------- parsing
def test_parse_batches_sorts_and_dedups():
    assert bench.parse_batches("32,1, 8,32,64") == [1, 8, 32, 64]


@pytest.mark.parametrize("text", ["", "a,2", "0,8", "-1", ","])
def test_parse_batches_rejects_bad_lists(text):
    with pytest.raises(ToolkitError, match="--batches"):
        bench.parse_batches(text)


def test_parse_engine_specs():
    assert bench.parse_engine_specs(["fp32=a.so", "fp16 = dir/b=c.so"]) == [("fp32", "a.so"), ("fp16", "dir/b=c.so")]
    assert bench.parse_engine_specs(None) == []


@pytest.mark.parametrize("spec", ["a.so", "=a.so", "fp32=", "fp32"])
def test_parse_engine_specs_rejects_malformed(spec):
    with pytest.raises(ToolkitError, match="NAME=PATH"):
        bench.parse_engine_specs([spec])


def test_parse_engine_specs_takes_a_name_twice_but_not_an_engine():
    assert bench.parse_engine_specs(["x=a.so", "x=b.so"]) == [("x", "a.so"), ("x", "b.so")]
    with pytest.raises(ToolkitError, match="x=a.so is given twice"):
        bench.parse_engine_specs(["x=a.so", "x=a.so"])


# ----------------------------------------------------------------------------- statistics
def test_summarize_odd_and_even():
    s = bench.summarize([3.0, 1.0, 2.0])
    assert s == {"n": 3, "median": 2.0, "min": 1.0, "max": 3.0, "spread": 1.0}
    s = bench.summarize([4, 1, 2, 3])
    assert s["median"] == 2.5 and s["min"] == 1 and s["max"] == 4
    assert s["spread"] == pytest.approx(3 / 2.5)


def test_summarize_empty_and_single():
    assert bench.summarize([])["median"] is None
    s = bench.summarize([5.0])
    assert s["median"] == s["min"] == s["max"] == 5.0 and s["spread"] == 0.0


@pytest.mark.parametrize("per_call, minimum, want", [
    (0.05, 0.2, 4), (0.06, 0.2, 4), (0.2, 0.2, 1), (10.0, 0.2, 1), (0.001, 0.2, 200), (0.0, 0.2, 1),
])
def test_calls_per_sample(per_call, minimum, want):
    calls = bench.calls_per_sample(per_call, minimum)
    assert calls == want
    if per_call > 0:
        assert calls * per_call >= minimum - 1e-12


# ----------------------------------------------------------------------------- interleaving
def test_interleaved_order_visits_every_cell_once_per_round():
    order = bench.interleaved_order(3, 4)
    assert len(order) == 12
    for r in range(4):
        in_round = [cell for rr, cell in order if rr == r]
        assert sorted(in_round) == [0, 1, 2]
    # rounds are contiguous: a round finishes before the next starts
    assert [r for r, _ in order] == sorted(r for r, _ in order)


def test_interleaved_order_rotates_the_start():
    order = bench.interleaved_order(3, 3)
    assert order == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (1, 0), (2, 2), (2, 0), (2, 1)]
    firsts = Counter(order[k * 3][1] for k in range(3))
    assert firsts == Counter({0: 1, 1: 1, 2: 1})


def test_interleaved_order_single_cell():
    assert bench.interleaved_order(1, 3) == [(0, 0), (1, 0), (2, 0)]


class FakeBackend:
    def __init__(self, batch=None, log=None, name="fake"):
        self.input_shape = (batch, 3, 64, 256)
        self.log = log
        self.name = name

    def run(self, batch):
        if self.log is not None:
            self.log.append(self.name)
        return np.zeros((batch.shape[0], 25, 37), np.float32)


def test_run_rounds_times_round_robin():
    calls = []
    cells = [bench.Cell("a", 1, FakeBackend(None, calls, "a")), bench.Cell("b", 1, FakeBackend(1, calls, "b"))]
    bench.run_rounds(cells, rounds=3, min_sample_s=1e-9, log=lambda *_: None, progress=False, wait_for_idle=lambda: 0.0)
    assert all(len(c.samples_s) == 3 for c in cells)
    assert all(c.calls == 1 for c in cells)
    timed = calls[2:]  # after one warm-up call each
    assert timed == ["a", "b", "b", "a", "a", "b"]


def test_run_rounds_waits_for_idle_before_every_sample_and_warm_up():
    # A contender's spinning worker threads must not be billed to the next one: every
    # warm-up and every sample starts after the wait for idle, nothing runs in between.
    events = []

    def wait_for_idle():
        events.append("idle")
        return 0.05

    cells = [bench.Cell("a", 1, FakeBackend(None, events, "a")), bench.Cell("b", 1, FakeBackend(1, events, "b"))]
    bench.run_rounds(cells, rounds=2, min_sample_s=1e-9, log=lambda *_: None, progress=False, wait_for_idle=wait_for_idle)
    assert events == ["idle", "a", "idle", "b", "idle", "a", "idle", "b", "idle", "b", "idle", "a"]
    assert cells[0].idle_wait_s == [0.05, 0.05] and bench.cell_result(cells[0])["idle_wait_s"] == [0.05, 0.05]
    assert "median 50 ms" in timing.describe_idle_waits(cells, 1.0)


class FakeClocks:
    """A process whose threads use ``busy`` of a core for ``busy_s`` seconds, then nothing."""

    def __init__(self, busy_s, busy=1.0):
        self.wall = self.cpu = 0.0
        self.busy_s, self.busy = busy_s, busy

    def sleep(self, seconds):
        spinning = max(0.0, min(seconds, self.busy_s - self.wall))
        self.cpu += spinning * self.busy
        self.wall += seconds


def test_wait_until_idle_outlasts_a_spinning_pool_and_stops_at_the_limit():
    pool = FakeClocks(busy_s=0.2)  # TVM's pool after a call
    waited = timing.wait_until_idle(1.0, 0.01, 0.1, cpu_clock=lambda: pool.cpu, wall_clock=lambda: pool.wall,
                                    sleep=pool.sleep)
    assert 0.2 <= waited <= 0.22
    idle = FakeClocks(busy_s=0.0)
    assert timing.wait_until_idle(1.0, 0.01, 0.1, cpu_clock=lambda: idle.cpu, wall_clock=lambda: idle.wall,
                                  sleep=idle.sleep) == pytest.approx(0.01)
    busy = FakeClocks(busy_s=10.0, busy=0.5)
    waited = timing.wait_until_idle(0.3, 0.01, 0.1, cpu_clock=lambda: busy.cpu, wall_clock=lambda: busy.wall,
                                    sleep=busy.sleep)
    assert 0.3 <= waited < 0.32
    cells = [bench.Cell("a", 1, None, idle_wait_s=[waited])]
    assert "1 of 1 stopped at the 0.3 s limit" in timing.describe_idle_waits(cells, 0.3)
    assert "no wait" in timing.describe_idle_waits(cells, 0)


def test_run_rounds_progress_in_a_log_is_plain_lines(capsys):
    cells = [bench.Cell("a", 1, FakeBackend(None, None, "a"))]
    bench.run_rounds(cells, rounds=4, min_sample_s=1e-9, log=lambda *_: None, progress=True, wait_for_idle=lambda: 0.0)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) == 4 and lines[-1].startswith("round 4/4 a@1: 4/4 samples (100 %")


# ----------------------------------------------------------------------------- comparisons
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


def test_merge_peaks_keeps_best_and_both_readings():
    merged = bench.merge_peaks({"all_cores_flops": 1.0, "one_core_flops": 5.0, "gemm_n": 2048},
                               {"all_cores_flops": 3.0, "one_core_flops": 4.0, "gemm_n": 2048})
    assert merged["all_cores_flops"] == 3.0 and merged["one_core_flops"] == 5.0
    assert merged["all_cores_flops_probes"] == [1.0, 3.0]


def test_headline_batch_is_in_the_default_sweep():
    assert bench.HEADLINE_BATCH in bench.DEFAULT_BATCHES


# ----------------------------------------------------------------------------- FLOP counting
def test_node_flops_formulas():
    assert bench.node_flops("MatMul", [[2, 4, 8], [8, 3]], [2, 4, 3], {}) == 2 * 2 * 4 * 3 * 8
    assert bench.node_flops("Gemm", [[5, 7], [7, 3]], [5, 3], {}) == 2 * 5 * 3 * 7
    assert bench.node_flops("Gemm", [[7, 5], [7, 3]], [5, 3], {"transA": 1}) == 2 * 5 * 3 * 7
    # grouped conv: weight [Cout, Cin/group, kh, kw]
    assert bench.node_flops("Conv", [[1, 4, 8, 8], [6, 2, 3, 3]], [1, 6, 8, 8], {"group": 2}) == 2 * 6 * 64 * 2 * 9
    assert bench.node_flops("MatMul", [[None, 4, 8], [8, 3]], [None, 4, 3], {}) is None
    assert bench.node_flops("Relu", [[1]], [1], {}) is None


def _tiny_model(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "w")
    m = numpy_helper.from_array(np.zeros((8, 5), np.float32), "m")
    shape = numpy_helper.from_array(np.array([0, 32, 8], np.int64), "shape")
    g = numpy_helper.from_array(np.zeros((5, 2), np.float32), "g")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),  # [N,4,8,8]
        helper.make_node("Reshape", ["c", "shape"], ["r"]),  # [N,32,8]
        helper.make_node("MatMul", ["r", "m"], ["mm"]),  # [N,32,5]
        helper.make_node("ReduceMean", ["mm"], ["red"], axes=[1], keepdims=0),  # [N,5]
        helper.make_node("Gemm", ["red", "g"], ["y"]),  # [N,2]
    ]
    graph = helper.make_graph(nodes, "tiny", [x], [y], [w, m, shape, g])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, path)


def test_count_model_flops_on_a_dynamic_batch_graph(tmp_path):
    path = str(tmp_path / "tiny.onnx")
    _tiny_model(path)
    got = bench.count_model_flops(path, input_shape=(1, 3, 8, 8))
    conv = 2 * 4 * 8 * 8 * 3 * 9
    matmul = 2 * 32 * 5 * 8
    gemm = 2 * 1 * 2 * 5
    assert got["nodes_with_unknown_shape"] == 0
    assert got["by_op_per_image"] == {"Conv": conv, "Gemm": gemm, "MatMul": matmul}
    assert got["flops_per_image"] == conv + matmul + gemm
    per_image_at_4 = bench.count_model_flops(path, input_shape=(4, 3, 8, 8))["flops_per_image"]
    assert per_image_at_4 == pytest.approx(conv + matmul + gemm)


# ----------------------------------------------------------------------------- output
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
            "peak_of", "arithmetic", "emulated", "argmax_agreement", "max_abs_diff", "cosine"}
    assert all(set(r) == keys for r in loaded["results"])
    assert all(len(r["img_per_s"]) == len(r["seconds_per_call"]) for r in loaded["results"])
    assert all(math.isfinite(v) for r in loaded["results"] for v in r["img_per_s"])


def test_write_plot_or_skip(tmp_path):
    results = [_result(bench.ORT_NAME, b, [10.0 * b, 11.0 * b]) for b in (1, 8)] + [_result("fp32", 8, [3.0, 4.0])]
    path = bench.write_plot(results, str(tmp_path))
    if path is None:
        pytest.skip("matplotlib is not installed")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_flops_of_a_tiny_model_counted_two_ways(tmp_path):
    """The graph count against the arithmetic of its one conv and one matmul, at the image
    shape read from the model itself (what the benchmark uses when no preset is named)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 10, 12])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.zeros((5, 3, 3, 3), np.float32), "w")
    m = numpy_helper.from_array(np.zeros((12, 7), np.float32), "m")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                               helper.make_node("MatMul", ["c", "m"], ["y"])], "two", [x], [y], [w, m])
    path = str(tmp_path / "two.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    chw = bench.model_image_shape(path)
    assert chw == (3, 10, 12)
    counted = bench.count_model_flops(path, (1, *chw))
    conv_macs = 5 * 10 * 12 * (3 * 3 * 3)  # every output element: one 3x3x3 window
    matmul_macs = 5 * 10 * 7 * 12  # [5, 10, 12] x [12, 7]
    assert counted["flops_per_image"] == 2 * (conv_macs + matmul_macs)


def test_model_image_shape_needs_static_dims(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", 12])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = str(tmp_path / "dyn.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    with pytest.raises(ToolkitError, match="not static"):
        bench.model_image_shape(path)


# ----------------------------------------------------------------------------- correctness beside speed
def _checked(name, batch, img_s, agreement, max_diff):
    from svtr_toolkit.numerics import Parity

    parity = Parity(rows=batch, steps=25, max_abs_diff=max_diff, cosine=1.0, argmax_agreement=agreement)
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


# ----------------------------------------------------------------------------- peak
def test_peak_probe_measures_a_positive_fp32_figure():
    flops = bench.measure_gemm_flops(n=256, repeats=1, threads=1)  # onnxruntime's sgemm, in a subprocess
    assert flops > 0 and math.isfinite(flops)


def test_tvm_fp16_matmul_probe_compiles_and_runs_for_the_host():
    """The fp16 probe (timed only on CPUs with fp16 arithmetic) builds and runs on any host."""
    from svtr_toolkit.bench import peak

    assert peak._probe("tvm_matmul_flops('float16', 64, 64, 64, 1)", env_threads=1) > 0


def test_rules_fp32_matmul_probe_compiles_and_runs_for_the_host():
    from svtr_toolkit.bench import peak

    assert peak._probe("tvm_rule_matmul_flops(64, 64, 64, 1)", env_threads=1, exact_threads=True) > 0


def test_fp32_peak_is_the_better_probe_and_keeps_both_readings(monkeypatch):
    # A peak one contender's kernels beat would put its "% peak" above what the CPU allows.
    from svtr_toolkit.bench import peak

    monkeypatch.setattr(peak, "measure_gemm_flops", lambda n, repeats, threads: {2: 140e9, 1: 80e9}[threads])
    monkeypatch.setattr(peak, "measure_rule_matmul_flops", lambda threads: {2: 170e9, 1: 75e9}[threads])
    measured = peak.measure_peak(2, fp16_arithmetic=False)
    assert measured["all_cores_flops"] == 170e9 and measured["one_core_flops"] == 80e9
    assert measured["fp32_readings"] == {"mlas_all_cores_flops": 140e9, "mlas_one_core_flops": 80e9,
                                         "rules_all_cores_flops": 170e9, "rules_one_core_flops": 75e9}
    assert "MLAS" in measured["fp32_probe"] and "default-rules" in measured["fp32_probe"]


def test_describe_peak_says_when_the_cpu_has_no_fp16():
    peak = {"all_cores_flops": 2e11, "one_core_flops": 1e11, "cores": 2, "fp32_probe": "onnxruntime MLAS sgemm 2048^3"}
    assert "no fp16 arithmetic" in bench.describe_peak(dict(peak, fp16_flops=None))
    assert "fp16 500.0 GFLOP/s" in bench.describe_peak(dict(peak, fp16_flops=5e11, fp16_probe="TVM"))


def test_matmul_model_is_the_gemm_it_times():
    import onnxruntime as ort

    a = np.random.default_rng(0).standard_normal((8, 8), dtype=np.float32)
    session = ort.InferenceSession(bench.matmul_model(8).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"a": a, "b": a.T.copy()})[0], a @ a.T, rtol=1e-5, atol=1e-5)


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


def test_merge_peaks_with_an_fp16_probe():
    merged = bench.merge_peaks({"all_cores_flops": 1.0, "one_core_flops": 1.0, "fp16_flops": 5.0},
                               {"all_cores_flops": 2.0, "one_core_flops": 1.0, "fp16_flops": 4.0})
    assert merged["fp16_flops"] == 5.0 and merged["fp16_flops_probes"] == [5.0, 4.0]
    plain = bench.merge_peaks({"all_cores_flops": 1.0, "one_core_flops": 1.0, "fp16_flops": None},
                              {"all_cores_flops": 2.0, "one_core_flops": 1.0, "fp16_flops": None})
    assert plain["fp16_flops"] is None and "fp16_flops_probes" not in plain


# ----------------------------------------------------------------------------- kernel profile
def test_profile_counts_each_kernel_once_and_leaves_out_relax_functions(tiny, x, tmp_path):
    """The tiny mixed fp16 engine calls its kernels from Relax functions (main, rectifier,
    recogniser, head): those and the VM's builtins are no rows; every kernel's calls per run
    are whole; the rows add up to the kernels' total, which fits in an instrumented run."""
    from svtr_toolkit.bench.profile import format_profile, profile_vm
    from svtr_toolkit.compile import build, targets
    from svtr_toolkit.runtime import load_engine
    from tiny_models import SHAPE

    path = str(tmp_path / "tiny_fp16_profile.so")
    # the mixed fp16 plan (here forced with the K-chunked products) keeps its parts as functions
    build.build_engine(tiny, "x", SHAPE, "fp16", targets.select_target("llvm"), path, log=lambda *_: None,
                       accumulate={"mode": "on", "chunk": 32})
    backend = load_engine(path)
    before = backend.run(x)
    profile = profile_vm(backend.vm, backend.device, x, runs=3, warmup=1)
    names = [k.kernel for k in profile["kernels"]]
    assert names and len(names) == len(set(names))
    assert not {"main", "rectifier", "recogniser", "head"} & set(names)
    assert not any(n.startswith("vm.builtin.") for n in names)
    assert all(k.calls_per_run >= 1 and float(k.calls_per_run).is_integer() for k in profile["kernels"])
    assert math.isclose(sum(k.ms_per_run for k in profile["kernels"]), profile["kernel_ms"], rel_tol=1e-6)
    assert math.isclose(sum(k.share for k in profile["kernels"]), 1.0, rel_tol=1e-6)
    assert [k.ms_per_run for k in profile["kernels"]] == sorted((k.ms_per_run for k in profile["kernels"]), reverse=True)
    assert 0 < profile["kernel_ms"] <= profile["instrumented_ms"]
    np.testing.assert_array_equal(backend.run(x), before)  # the hook is gone, the engine unchanged
    text = format_profile(profile, top=2)
    assert names[0] in text and f"... {len(names) - 2} more kernels" in text


def run_profile_tool(*args):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    return subprocess.run([sys.executable, str(repo / "tools" / "profile_engine.py"), *map(str, args)], cwd=repo,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, says", [(["--runs", "0"], "--runs"), (["--top", "-1"], "--top"),
                                        (["--runs", "two"], "--runs")])
def test_profile_cli_refuses_bad_counts(built, args, says):
    done = run_profile_tool("--engine", built[0], *args)
    assert done.returncode == 2 and "error:" in done.stderr and says in done.stderr, done.stderr


def test_profile_cli_prints_the_kernels_and_refuses_an_onnx_model(built, tiny, tmp_path):
    done = run_profile_tool("--engine", built[0], "--runs", 2, "--top", 3, "--json", tmp_path / "p.json")
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["kernels"] and saved["kernels"][0]["kernel"] in done.stdout and "ms/run" in done.stdout
    refused = run_profile_tool("--engine", tiny)
    assert refused.returncode == 2 and "not a TVM engine" in refused.stderr


def _matmul_model(path, batch=4, m=16, k=32, n=24):
    weight = np.random.default_rng(0).standard_normal((k, n)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, m, n])],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def test_kernel_flops_counts_what_the_engine_computes_and_the_profile_turns_it_into_rates(tmp_path):
    from svtr_toolkit.bench.profile import KernelTime, add_rates, format_profile
    from svtr_toolkit.compile import build, targets

    # 64 wide: whole vectors on every CPU class, so no zero columns padded into the weight panels
    model = _matmul_model(tmp_path / "mm.onnx", n=64)
    meta = build.build_engine(model, "x", (4, 16, 32), "fp32", targets.select_target("llvm"),
                              str(tmp_path / "mm.so"), log=lambda *_: None, tuning_dir=None)
    flops = build.kernel_flops(meta)
    assert list(flops.values()) == [2.0 * 4 * 16 * 32 * 64]  # one kernel: a multiply and an add per term
    kernel = next(iter(flops))
    profile = {"kernels": [KernelTime(kernel, 2.0, 0.5, 0.9), KernelTime("copy", 1.0, 0.1, 0.1)],
               "kernel_ms": 0.6, "builtin_ms": 0.0, "plain_ms": 0.6, "instrumented_ms": 0.7}
    add_rates(profile, flops)
    assert profile["kernels"][0].gflop_per_s == pytest.approx(flops[kernel] * 2 / 0.5e-3 / 1e9)
    assert profile["kernels"][1].gflop_per_s is None
    lines = format_profile(profile).splitlines()
    assert "GFLOP/s" in lines[0] and f"{profile['kernels'][0].gflop_per_s:.1f}" in lines[2] and " - " in lines[3]


def test_kernel_flops_refuses_a_changed_model_or_another_recipe(tmp_path):
    from svtr_toolkit.compile import build, targets

    model = _matmul_model(tmp_path / "mm.onnx")
    meta = build.build_engine(model, "x", (4, 16, 32), "fp32", targets.select_target("llvm"),
                              str(tmp_path / "mm.so"), log=lambda *_: None, tuning_dir=None)
    with pytest.raises(ToolkitError, match="built by build recipe"):
        build.kernel_flops(dict(meta, recipe="0" * 16))
    _matmul_model(tmp_path / "mm.onnx", n=8)
    with pytest.raises(ToolkitError, match="has changed since the engine was built"):
        build.kernel_flops(meta)


def test_profile_cli_flops_column(built):
    done = run_profile_tool("--engine", built[0], "--runs", 1, "--top", 0, "--flops")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ms/run"))
    assert lines[start].split()[-2:] == ["GFLOP/s", "kernel"]
    rows = [line.split() for line in lines[start + 2:] if not line.startswith("kernels ")]
    rates = [row[3] for row in rows]
    assert rows and all(r == "-" or float(r) > 0 for r in rates)
    assert any(r != "-" for r in rates) and "-" in rates, done.stdout  # products have a rate, copies none
