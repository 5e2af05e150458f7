"""svtr_toolkit.bench.peak: the machine's measured peaks, each probe in a fresh process; the fp32
and fp16 probes compiled by the default schedule rules.

No timing is asserted here: speed depends on the machine and is never a test result.
"""
import math

import numpy as np
import pytest

from svtr_toolkit import bench
from svtr_toolkit.errors import ToolkitError


def test_merge_peaks_keeps_best_and_both_readings():
    merged = bench.merge_peaks({"all_cores_flops": 1.0, "one_core_flops": 5.0, "gemm_n": 2048},
                               {"all_cores_flops": 3.0, "one_core_flops": 4.0, "gemm_n": 2048})
    assert merged["all_cores_flops"] == 3.0 and merged["one_core_flops"] == 5.0
    assert merged["all_cores_flops_probes"] == [1.0, 3.0]


def test_peak_probe_measures_a_positive_fp32_figure():
    flops = bench.measure_gemm_flops(n=256, repeats=1, threads=1)  # onnxruntime's sgemm, in a subprocess
    assert flops > 0 and math.isfinite(flops)


def test_rules_fp16_matmul_probe_compiles_and_runs_for_the_host():
    """The fp16 probe (timed only on CPUs with fp16 arithmetic) is compiled by the default rules
    and runs on any host (emulated where the CPU has no fp16 arithmetic)."""
    from svtr_toolkit.bench import peak

    assert peak._probe(f"tvm_rule_matmul_flops({peak.FP16_PROBE_KERNEL!r}, 64, 64, 64, 1)", env_threads=1) > 0


def test_rules_fp32_matmul_probe_compiles_and_runs_for_the_host():
    from svtr_toolkit.bench import peak

    assert peak._probe("tvm_rule_matmul_flops('fp32', 64, 64, 64, 1)", env_threads=1, exact_threads=True) > 0


def test_the_fp16_probe_is_the_rules_kernel_with_fp16_accumulation():
    """No hand-written GEMM schedule: the probe is the kernel sweep's whole-K fp16 product, which
    the K-chunked contraction rule schedules, accumulating in fp16."""
    from svtr_toolkit.bench import kernels, peak
    from svtr_toolkit.compile.targets import host_cpu_target

    (variant,) = [v for v in kernels.variants() if v.name == peak.FP16_PROBE_KERNEL]
    assert variant.dtype == "float16" and variant.chunk == 0  # chunk 0: the whole K summed in fp16
    _, rules = kernels.compile_kernel(variant, 64, 64, 64, host_cpu_target())
    assert set(rules.values()) == {kernels.CHUNKED_RULE}
    with pytest.raises(ToolkitError, match="no kernel 'int8' to probe"):
        peak.tvm_rule_matmul_flops("int8", 8, 8, 8, 1)


def test_the_fp16_peak_is_probed_only_where_the_cpu_has_fp16_arithmetic(monkeypatch):
    from svtr_toolkit.bench import peak

    monkeypatch.setattr(peak, "measure_gemm_flops", lambda n, repeats, threads: 1e9)
    monkeypatch.setattr(peak, "measure_rule_matmul_flops", lambda threads: 1e9)
    monkeypatch.setattr(peak, "measure_fp16_flops", lambda cores: 4e9)
    with_fp16 = peak.measure_peak(2, fp16_arithmetic=True, bf16_arithmetic=False)
    assert with_fp16["fp16_flops"] == 4e9 and "fp16 accumulation" in with_fp16["fp16_probe"]
    assert "default-rules" in with_fp16["fp16_probe"]
    without = peak.measure_peak(2, fp16_arithmetic=False, bf16_arithmetic=False)
    assert without["fp16_flops"] is None and without["fp16_probe"] is None


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


def test_merge_peaks_with_an_fp16_probe():
    merged = bench.merge_peaks({"all_cores_flops": 1.0, "one_core_flops": 1.0, "fp16_flops": 5.0},
                               {"all_cores_flops": 2.0, "one_core_flops": 1.0, "fp16_flops": 4.0})
    assert merged["fp16_flops"] == 5.0 and merged["fp16_flops_probes"] == [5.0, 4.0]
    plain = bench.merge_peaks({"all_cores_flops": 1.0, "one_core_flops": 1.0, "fp16_flops": None},
                              {"all_cores_flops": 2.0, "one_core_flops": 1.0, "fp16_flops": None})
    assert plain["fp16_flops"] is None and "fp16_flops_probes" not in plain
