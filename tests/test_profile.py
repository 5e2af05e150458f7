"""svtr_toolkit.bench.profile and tools/profile_engine.py: an engine's time per kernel, and each
kernel's GFLOP/s from the FLOPs the build's lowering counts."""
import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cli_runs import run_main
from svtr_toolkit.errors import ToolkitError


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
    return run_main("profile_engine", *args)


@pytest.mark.parametrize("args, says", [(["--runs", "0"], "--runs"), (["--top", "-1"], "--top"),
                                        (["--runs", "two"], "--runs")])
def test_profile_cli_refuses_bad_counts(built, args, says):
    assert says in run_profile_tool("--engine", built[0], *args).one_error()


def test_profile_cli_prints_the_kernels_and_refuses_an_onnx_model(built, tiny, tmp_path):
    done = run_profile_tool("--engine", built[0], "--runs", 2, "--top", 3, "--json", tmp_path / "p.json")
    assert done.code == 0, done.err
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["kernels"] and saved["kernels"][0]["kernel"] in done.out and "ms/run" in done.out
    assert "not a TVM engine" in run_profile_tool("--engine", tiny).one_error()


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
    assert done.code == 0, done.err
    lines = done.out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ms/run"))
    assert lines[start].split()[-2:] == ["GFLOP/s", "kernel"]
    rows = [line.split() for line in lines[start + 2:] if not line.startswith("kernels ")]
    rates = [row[3] for row in rows]
    assert rows and all(r == "-" or float(r) > 0 for r in rates)
    assert any(r != "-" for r in rates) and "-" in rates, done.out  # products have a rate, copies none


def test_a_small_rate_keeps_its_digits():
    """A kernel doing a little arithmetic slowly (a tiny model's, or one on a busy machine)
    reads as what it is, not 0.0 GFLOP/s, which says it does none."""
    from svtr_toolkit.bench.profile import KernelTime

    def shown(gflop_per_s):
        row = KernelTime(kernel="k", calls_per_run=1, ms_per_run=1.0, share=0.5)
        row.gflop_per_s = gflop_per_s
        return row.row(rates=True)[3]

    assert [shown(r) for r in (242.04, 0.0413, None)] == ["242.0", "0.041", "-"]
