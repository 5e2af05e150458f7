"""svtr_toolkit.bench.kernels / tools/bench_kernels.py: the per-kernel matmul sweep at small shapes.

What is checked is behaviour, not speed (this machine is shared and may emulate fp16): which
rule schedules each kernel, that the errors follow the arithmetic, that the GFLOP/s are the
timings' own, that an unscheduled kernel is flagged and not timed, and the command line."""
import json
import statistics

import numpy as np
import pytest

pytest.importorskip("tvm")

from cli_runs import run_main  # noqa: E402
from svtr_toolkit.bench import kernels  # noqa: E402
from svtr_toolkit.compile import fp16_accumulate as fa  # noqa: E402
from svtr_toolkit.cpu_features import host  # noqa: E402

M, N = 64, 32
# 32: one chunk (k32 and wholeK are then the same arithmetic); 96: three chunks of 32;
# 512: long enough that a whole-K fp16 sum is clearly worse than 16 chunks of 32.
KS = (32, 96, 512)
CHUNK = 32
SEED = 0
KERNELS = ["fp32", "fp16-fp32acc", "fp16-k32", "fp16-wholeK"]


@pytest.fixture(scope="module")
def sweep():
    lines = []
    report = kernels.matmul_sweep(KS, M, N, (CHUNK,), rounds=2, min_sample_s=0.01, log=lines.append,
                                  progress=False, seed=SEED, settle_s=0.05)
    return report, lines


def result(report, name, k):
    (found,) = [r for r in report["results"] if r["kernel"] == name and r["k"] == k]
    return found


def test_every_kernel_is_scheduled_by_its_rule(sweep):
    report, lines = sweep
    assert report["settings"]["kernels"] == KERNELS
    assert sorted((r["k"], r["kernel"]) for r in report["results"]) == sorted((k, n) for k in KS for n in KERNELS)
    for r in report["results"]:
        if r["kernel"] in ("fp32", "fp16-fp32acc"):
            assert r["rules"] == {"matmul": "contraction"}, r
        else:
            assert r["rules"] == {fa.KERNEL_NAME: "chunked-contraction"}, r
        assert r["unscheduled"] == [] and r["unexpected_rules"] == [] and r["timed"]
    assert not [ln for ln in lines if ln.startswith("warning:")]


def test_errors_follow_the_arithmetic(sweep):
    report, _ = sweep
    for k in KS:
        fp32 = result(report, "fp32", k)["max_rel_err"]
        # fp16 inputs hold fp16 values exactly, and a product of two fp16 values is exact in
        # fp32: ToMixedPrecision's kernel then sums in fp32 like the fp32 one
        assert 0 <= fp32 < 1e-5
        assert result(report, "fp16-fp32acc", k)["max_rel_err"] < 1e-5
        for name in ("fp16-k32", "fp16-wholeK"):  # fp16 running sums: ~ fp16's epsilon, not fp32's
            err = result(report, name, k)["max_rel_err"]
            assert 100 * max(fp32, 1e-8) < err < 2e-2, (name, k, err)
        assert result(report, "fp16-k32", k)["max_abs_diff"] > 0
    assert result(report, "fp16-k32", 32)["max_rel_err"] == result(report, "fp16-wholeK", 32)["max_rel_err"]
    # 512 terms in one fp16 sum against 16 sums of 32 added in fp32: the margin (about 5x on
    # these inputs, 4-8x over other seeds) is what the numpy model of the arithmetic gives too
    k32, whole = result(report, "fp16-k32", 512)["max_rel_err"], result(report, "fp16-wholeK", 512)["max_rel_err"]
    assert whole > 3 * k32
    a, b = (x.astype(np.float16) for x in kernels.sweep_inputs(M, N, 512, SEED))
    exact = a.astype(np.float64) @ b.astype(np.float64)
    for chunk, measured in ((CHUNK, k32), (0, whole)):
        modelled = kernels.errors_against(fa.reference(a, b, chunk), exact)["max_rel_err"]
        assert 0.5 * modelled <= measured <= 2 * modelled, (chunk, measured, modelled)


def test_the_errors_are_deterministic(sweep):
    report, _ = sweep
    a, b = kernels.sweep_inputs(M, N, 512, SEED)
    again = kernels.sweep_inputs(M, N, 512, SEED)
    assert np.array_equal(a, again[0]) and np.array_equal(b, again[1])
    assert np.array_equal(a.astype(np.float16).astype(np.float32), a)  # fp16 values: all kernels read the same
    assert not np.array_equal(kernels.sweep_inputs(M, N, 96, SEED)[0][:, :96], a[:, :96])  # K is in the seed
    assert a.min() >= -1 and a.max() <= 1
    import tvm
    from tvm import relax

    from svtr_toolkit.compile.targets import host_cpu_target

    variant = next(v for v in kernels.variants((CHUNK,)) if v.name == "fp16-wholeK")
    executable, rules = kernels.compile_kernel(variant, M, N, 512, host_cpu_target())
    assert rules == {fa.KERNEL_NAME: "chunked-contraction"}
    out = relax.VirtualMachine(executable, tvm.cpu())["main"](
        *[tvm.runtime.tensor(x.astype(np.float16)) for x in (a, b)]).numpy()
    recompiled = kernels.errors_against(out, a.astype(np.float64) @ b.astype(np.float64))
    assert recompiled["max_rel_err"] == result(report, "fp16-wholeK", 512)["max_rel_err"]


def test_gflops_are_the_timings_own(sweep):
    report, _ = sweep
    for r in report["results"]:
        seconds = r["seconds_per_call"]
        assert len(seconds) == 2 and all(s > 0 for s in seconds) and r["calls_per_sample"] >= 1
        assert len(r["idle_wait_s"]) == 2  # every sample after the benchmark's wait for idle
        assert r["flops"] == 2 * M * N * r["k"]
        assert r["median_gflops"] == pytest.approx(r["flops"] / statistics.median(seconds) / 1e9)
        assert r["gflops"] == pytest.approx([r["flops"] / s / 1e9 for s in seconds])
        assert 0 < r["min_gflops"] <= r["median_gflops"] <= r["max_gflops"]
        assert r["min_gflops"] == pytest.approx(min(r["gflops"])) and r["max_gflops"] == pytest.approx(max(r["gflops"]))
        base = result(report, "fp32", r["k"])
        assert r["ratio_to_fp32"] == pytest.approx(r["median_gflops"] / base["median_gflops"])
        fp32_samples = [base["flops"] / s / 1e9 for s in base["seconds_per_call"]]
        assert r["paired_ratio_to_fp32"] == pytest.approx(
            statistics.median(g / f for g, f in zip(r["gflops"], fp32_samples)))


def test_the_report_says_whether_fp16_is_emulated(sweep):
    report, lines = sweep
    has_fp16 = host().has_fp16_arithmetic
    assert report["fp16_arithmetic"] == has_fp16
    assert report["machine_line"] in lines and report["machine"]["cpu"]
    assert (f"note: {kernels.EMULATED_NOTE}" in lines) == (not has_fp16)
    assert report["notes"] == ([] if has_fp16 else [kernels.EMULATED_NOTE])
    json.dumps(report)  # every number goes to the JSON


def test_tables_have_a_row_per_k_and_a_ratio_beside_each_fp16_kernel(sweep):
    report, _ = sweep
    speed = kernels.format_throughput_table(report).splitlines()
    assert speed[0].split() == ["K", "fp32", "fp16-fp32acc", "vs", "fp32", "fp16-k32", "vs", "fp32",
                                "fp16-wholeK", "vs", "fp32"]
    assert [row.split()[0] for row in speed[2:]] == [str(k) for k in KS]
    for row, k in zip(speed[2:], KS):
        cells = row.split()
        assert float(cells[1]) == pytest.approx(result(report, "fp32", k)["median_gflops"], abs=0.051)
        assert cells[3] == f"{result(report, 'fp16-fp32acc', k)['paired_ratio_to_fp32']:.2f}x"
        assert cells[7] == f"{result(report, 'fp16-wholeK', k)['paired_ratio_to_fp32']:.2f}x"
    errors = kernels.format_error_table(report).splitlines()
    assert errors[0].split() == ["K"] + KERNELS
    assert errors[4].split()[4] == f"{result(report, 'fp16-wholeK', 512)['max_rel_err']:.1e}"


def test_a_kernel_no_rule_took_is_flagged_and_not_timed(monkeypatch):
    real = kernels.compile_kernel

    def losing_its_rule(variant, m, n, k, target):
        executable, rules = real(variant, m, n, k, target)
        return executable, ({name: None for name in rules} if variant.name == "fp16-fp32acc" else rules)

    monkeypatch.setattr(kernels, "compile_kernel", losing_its_rule)
    lines = []
    report = kernels.matmul_sweep((32,), 16, 16, (CHUNK,), rounds=1, min_sample_s=0.005, log=lines.append,
                                  progress=False, settle_s=0.05)
    flagged = result(report, "fp16-fp32acc", 32)
    assert flagged["unscheduled"] == ["matmul"] and not flagged["timed"]
    assert flagged["seconds_per_call"] == [] and flagged["median_gflops"] is None
    assert flagged["max_rel_err"] is not None  # still checked for correctness
    assert any(ln.startswith("warning: K=32 fp16-fp32acc: no schedule rule took matmul") for ln in lines)
    assert result(report, "fp32", 32)["timed"] and len(result(report, "fp32", 32)["seconds_per_call"]) == 1
    assert "unscheduled" in kernels.format_throughput_table(report).splitlines()[2]


@pytest.mark.parametrize("args, flag", [
    (("--k", "0,32"), "--k"),
    (("--k", "32,-64"), "--k"),
    (("--k", "32,abc"), "--k"),
    (("--k", ""), "--k"),
    (("--chunks", "0"), "--chunks"),
    (("--chunks", "32,,64"), "--chunks"),
    (("--m", "0"), "--m"),
    (("--n", "2.5"), "--n"),
    (("--rounds", "0"), "--rounds"),
    (("--min_sample_s", "-1"), "--min_sample_s"),
    (("--settle_s", "-1"), "--settle_s"),
    (("--settle_s", "nan"), "--settle_s"),
])
def test_the_tool_refuses_bad_values(args, flag):
    ran = run_main("bench_kernels", *args)
    assert flag in ran.one_error()
    assert ran.out == ""  # refused before anything ran


def test_the_tool_writes_its_json_and_leaves_other_files(tmp_path):
    (tmp_path / "bench_cpu.json").write_text("{}\n")
    ran = run_main("bench_kernels", "--k", "32,64", "--m", "32", "--n", "16", "--chunks", "32", "--rounds", "1",
                   "--min_sample_s", "0.005", "--settle_s", "0", "--out_dir", tmp_path, "--no_progress")
    assert ran.code == 0, ran.err
    assert (tmp_path / "bench_cpu.json").read_text() == "{}\n"
    assert "\r" not in ran.out + ran.err  # no bar, no carriage returns in a log
    report = json.loads((tmp_path / kernels.JSON_NAME).read_text())
    assert {(r["k"], r["kernel"]) for r in report["results"]} == {(k, n) for k in (32, 64) for n in KERNELS}
    assert report["settings"]["m"] == 32 and report["settings"]["chunks"] == [32]
    assert report["settings"]["settle_s"] == 0 and "no wait for idle" in ran.out
    assert "vs fp32" in ran.out and "max relative error" in ran.out
    assert f"wrote {tmp_path / kernels.JSON_NAME}" in ran.out
    assert (f"note: {kernels.EMULATED_NOTE}" in ran.out) == (not host().has_fp16_arithmetic)
