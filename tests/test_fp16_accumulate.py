"""K-chunked fp16 accumulation (compile.fp16_accumulate + schedule_rules.chunked_contraction):
the setting, the compiled kernel against a numpy model of the same arithmetic, its error
against fp64, the instructions an avx512_fp16 CPU gets, and the golden SVTR rows."""
import re
from pathlib import Path

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402

from svtr_toolkit.compile import fp16_accumulate as fa  # noqa: E402
from svtr_toolkit.compile.arithmetic import has_fp16_arithmetic  # noqa: E402
from svtr_toolkit.compile.build import build_identity, stale_reasons  # noqa: E402
from svtr_toolkit.compile.targets import BuildTarget, host_cpu_target  # noqa: E402
from svtr_toolkit.cpu_features import parse_cpuinfo  # noqa: E402
from svtr_toolkit.errors import ToolkitError  # noqa: E402

CPUINFO = Path(__file__).parent / "data" / "cpuinfo"


def spec_of(name, mcpu):
    cpu = parse_cpuinfo((CPUINFO / name).read_text())
    return {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu, "num-cores": 2, "mattr": cpu.llvm_mattr()}


XEON_FP16 = spec_of("xeon_avx512_fp16.txt", "sapphirerapids")
EPYC_AVX2 = spec_of("amd_epyc_avx2.txt", "znver3")


@pytest.fixture
def env(monkeypatch):
    monkeypatch.delenv(fa.ENV_MODE, raising=False)
    monkeypatch.delenv(fa.ENV_CHUNK, raising=False)
    return monkeypatch


def test_on_by_default_only_where_the_cpu_has_fp16_arithmetic(env):
    assert fa.setting("fp16", XEON_FP16) == {"chunk": fa.DEFAULT_CHUNK}
    assert fa.setting("fp16", EPYC_AVX2) is None  # default build unchanged without fp16 arithmetic
    assert fa.setting("fp32", XEON_FP16) is None
    assert fa.setting("fp16", {"kind": "cuda", "arch": "sm_90"}) is None
    env.setenv(fa.ENV_MODE, "on")
    env.setenv(fa.ENV_CHUNK, "32")
    assert fa.setting("fp16", EPYC_AVX2) == {"chunk": 32}
    assert fa.setting("fp16", {"kind": "cuda"}) is None  # its schedules are CPU schedules
    env.setenv(fa.ENV_CHUNK, "none")
    assert fa.setting("fp16", EPYC_AVX2) == {"chunk": 0}
    env.setenv(fa.ENV_MODE, "off")
    assert fa.setting("fp16", XEON_FP16) is None
    env.setenv(fa.ENV_MODE, "sometimes")
    with pytest.raises(ToolkitError, match=fa.ENV_MODE):
        fa.setting("fp16", XEON_FP16)
    env.setenv(fa.ENV_MODE, "on")
    env.setenv(fa.ENV_CHUNK, "-4")
    with pytest.raises(ToolkitError, match=fa.ENV_CHUNK):
        fa.setting("fp16", XEON_FP16)


def test_explicit_settings_override_the_environment(env):
    env.setenv(fa.ENV_MODE, "off")
    env.setenv(fa.ENV_CHUNK, "128")
    assert fa.setting("fp16", EPYC_AVX2, mode="on", chunk=16) == {"chunk": 16}
    assert fa.setting("fp16", EPYC_AVX2, mode="on") == {"chunk": 128}  # the chunk still from the environment
    assert fa.setting("fp16", XEON_FP16, mode="off") is None
    assert fa.setting("fp32", XEON_FP16, mode="on", chunk=16) is None
    with pytest.raises(ToolkitError, match="choose from"):
        fa.setting("fp16", XEON_FP16, mode="sometimes")


def test_the_setting_is_part_of_the_engine_identity(env):
    target = BuildTarget(XEON_FP16, "test xeon")
    built = build_identity("sha", "x", (14, 3, 64, 256), "fp16", target)
    assert built["fp16_accumulate"] == {"chunk": 64}
    env.setenv(fa.ENV_CHUNK, "32")
    reasons = stale_reasons(built, build_identity("sha", "x", (14, 3, 64, 256), "fp16", target))
    assert reasons and "fp16 accumulate" in reasons[0]
    # engines built before the setting existed, on CPUs where it stays off, remain fresh
    old = build_identity("sha", "x", (14, 3, 64, 256), "fp16", BuildTarget(EPYC_AVX2, "epyc"))
    old.pop("fp16_accumulate")
    assert stale_reasons(old, build_identity("sha", "x", (14, 3, 64, 256), "fp16", BuildTarget(EPYC_AVX2, "epyc"))) == []
    # an engine built with explicit settings (the benchmark's variants) is stale under other ones
    k32 = build_identity("sha", "x", (14, 3, 64, 256), "fp16", target, accumulate={"mode": "on", "chunk": 32})
    assert k32["fp16_accumulate"] == {"chunk": 32}
    assert stale_reasons(k32, build_identity("sha", "x", (14, 3, 64, 256), "fp16", target,
                                             accumulate={"mode": "off", "chunk": None}))


def test_chunks_are_as_even_as_the_limit_allows():
    assert fa._chunks(200, 64) == (50, 4) and fa._chunks(100, 64) == (50, 2)  # SVTR's K: no remainder
    assert fa._chunks(256, 64) == (64, 4) and fa._chunks(32, 64) == (32, 1)
    assert fa._chunks(67, 64) == (34, 2)  # 34 + 33: the last chunk is short
    assert fa._chunks(300, 0) == (300, 1)


def reference_fused(a, b, chunk):
    """As ``fa.reference`` with each multiply-add rounded once (a hardware fp16 FMA)."""
    k = a.shape[1]
    size, count = fa._chunks(k, chunk)
    out = np.zeros((a.shape[0], b.shape[1]), np.float32)
    for c in range(count):
        acc = np.zeros(out.shape, np.float16)
        for kk in range(c * size, min((c + 1) * size, k)):
            acc = (acc.astype(np.float64) + a[:, kk:kk + 1].astype(np.float64) * b[kk:kk + 1, :]).astype(np.float16)
        out += acc.astype(np.float32)
    return out


def host_reference(a, b, chunk):
    """The arithmetic this host's compiled kernel performs: an fp16 FMA rounds each
    multiply-add once where the CPU has fp16 arithmetic (``vfmadd231ph``, ``fmla .8h``);
    without it LLVM emulates each fp16 multiply and add, rounding both."""
    fused = has_fp16_arithmetic(host_cpu_target().spec)
    return (reference_fused if fused else fa.reference)(a, b, chunk)


def compile_matmul(a_shape, b_shape, chunk, bias=True, spec=None):
    """main(a, b[, bias]) = astype(matmul(a, b, out fp32), fp16) [+ bias], rewritten by
    ``rewrite_matmuls`` and compiled with the llvm target's pipeline (default rules)."""
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType(a_shape, "float16"))
    b = relax.Var("b", relax.TensorType(b_shape, "float16"))
    params = [a, b] + ([relax.Var("bias", relax.TensorType((b_shape[-1],), "float16"))] if bias else [])
    with bb.function("main", params):
        with bb.dataflow():
            value = bb.emit(relax.op.astype(bb.emit(relax.op.matmul(a, b, out_dtype="float32")), "float16"))
            if bias:
                value = bb.emit(relax.op.add(value, params[-1]))
            out = bb.emit_output(value)
        bb.emit_func_output(out)
    mod, count = fa.rewrite_matmuls(bb.get(), chunk)
    assert count == 1
    target = host_cpu_target() if spec is None else BuildTarget(spec, "cross")
    tvm_target = target.tvm_target()
    report = {}
    executable = tvm.compile(mod, tvm_target, relax_pipeline=target.module.pipeline(tvm_target, None, report))
    return executable, report


def run(executable, *arrays):
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(x) for x in arrays]).numpy()


def fp16(*shape, seed, low=-1.0):
    return np.random.default_rng(seed).uniform(low, 1, shape).astype(np.float16)


@pytest.mark.parametrize("m,k,n,chunk", [
    (24, 256, 64, 64),   # chunks divide K
    (16, 200, 96, 64),   # SVTR's attention K: 4 even chunks of 50
    (8, 67, 50, 64),     # 34 + 33: a short last chunk; odd width
    (8, 32, 40, 64),     # K under one chunk
    (8, 96, 32, 0),      # no promotion: the whole K in fp16
])
def test_compiled_kernel_is_the_chunked_arithmetic(m, k, n, chunk):
    a, b, bias = fp16(m, k, seed=1), fp16(k, n, seed=2), fp16(n, seed=3)
    executable, report = compile_matmul((m, k), (k, n), chunk)
    assert list(report.values()) == ["chunked-contraction"], report
    out = run(executable, a, b, bias).astype(np.float32)
    ref = (host_reference(a, b, chunk).astype(np.float16) + bias).astype(np.float32)
    fp32_sum = ((a.astype(np.float32) @ b.astype(np.float32)).astype(np.float16) + bias).astype(np.float32)
    # the numpy model of the host's arithmetic, bit for bit
    assert np.mean(out == ref) >= 0.99
    # and it is the fp16 arithmetic, not an fp32 sum: far closer to the model than to fp32
    assert np.abs(out - ref).max() <= 0.1 * np.abs(fp32_sum - ref).max()


def test_batched_and_broadcast_products():
    a, b = fp16(2, 3, 10, 130, seed=4), fp16(130, 48, seed=5)
    executable, report = compile_matmul(a.shape, b.shape, 64, bias=False)
    assert list(report.values()) == ["chunked-contraction"], report
    out = run(executable, a, b).astype(np.float32)
    ref = np.stack([host_reference(a[i, j], b, 64) for i in range(2) for j in range(3)]).reshape(out.shape)
    assert np.mean(out == ref.astype(np.float16).astype(np.float32)) >= 0.99
    a, b = fp16(3, 20, 64, seed=6), fp16(3, 64, 20, seed=7)  # attention: both operands batched
    executable, _ = compile_matmul(a.shape, b.shape, 16, bias=False)
    out = run(executable, a, b).astype(np.float32)
    ref = np.stack([host_reference(a[i], b[i], 16) for i in range(3)]).astype(np.float16).astype(np.float32)
    assert np.mean(out == ref) >= 0.99


def test_chunking_keeps_long_sums_near_fp32():
    """Positive terms make the running sum large: a whole-K fp16 sum of 4096 terms rounds away
    most of each new term; sums of 64 terms added in fp32 do not."""
    k = 4096
    a, b = fp16(8, k, seed=8, low=0.0), fp16(k, 32, seed=9, low=0.0)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    whole = np.abs(fa.reference(a, b, 0) - exact).max()
    chunked = np.abs(fa.reference(a, b, 64) - exact).max()
    fp32 = np.abs(a.astype(np.float32) @ b.astype(np.float32) - exact).max()
    assert chunked < whole / 20 and chunked < 1e-3 * np.abs(exact).max()
    executable, _ = compile_matmul((8, k), (k, 32), 64, bias=False)
    out = run(executable, a, b).astype(np.float64)
    out_whole = run(compile_matmul((8, k), (k, 32), 0, bias=False)[0], a, b).astype(np.float64)
    # the fp16 output rounding (ulp 0.5 near 1000) bounds both; whole-K fp16 is far off
    assert np.abs(out - exact).max() <= 1.0 and np.abs(out_whole - exact).max() > 20
    assert fp32 < chunked


def basic_blocks(asm, branch=r"\s+j[a-z]+\s"):
    """The assembly's straight-line runs: a new one at every label and after every jump
    (``branch``: the jump mnemonics, x86's by default)."""
    blocks, current = [], []
    for line in asm.splitlines():
        if re.match(r"[.\w$]+:", line):
            blocks.append("\n".join(current))
            current = []
        current.append(line)
        if re.match(branch, line):
            blocks.append("\n".join(current))
            current = []
    return blocks + ["\n".join(current)]


NEOVERSE_N1 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "neoverse-n1", "num-cores": 2,
               "mattr": parse_cpuinfo((CPUINFO / "neoverse_n1_arm.txt").read_text()).llvm_mattr()}


@pytest.mark.parametrize("spec, branch, fma, full_width, conversions, widen_and_add", [
    # avx512_fp16: 32 fp16 lanes per vfmadd231ph; widening is vcvtph2ps, the fp32 sum vaddps
    (XEON_FP16, r"\s+j[a-z]+\s", "vfmadd231ph", r"vfmadd231ph\s+[^\n]*%zmm",
     r"vcvtph2ps|vcvtps2ph|vaddps|vfmadd\d+ps", (r"vcvtph2ps", r"vaddps")),
    # ARMv8.2 fullfp16 (Neoverse N1): 8 fp16 lanes per fmla .8h; widening is fcvtl/fcvtl2
    (NEOVERSE_N1, r"\s+(b(\.\w+)?|cbn?z|tbn?z)\s", "fmla", r"fmla\s+v\d+\.8h",
     r"fcvtl|fcvtn|\.4s", (r"fcvtl", r"fadd\s+v\d+\.4s")),
], ids=["x86-avx512fp16", "arm-fullfp16"])
def test_an_fp16_cpu_gets_fp16_fmas_and_one_conversion_per_chunk(spec, branch, fma, full_width, conversions,
                                                                 widen_and_add):
    executable, report = compile_matmul((64, 256), (256, 96), 64, spec=spec)
    assert list(report.values()) == ["chunked-contraction"]
    asm = executable.mod.imports[0].inspect_source("asm")
    blocks = basic_blocks(asm, branch)
    fma_blocks = [blk for blk in blocks if fma in blk]
    assert fma_blocks, "no fp16 vector FMA"
    for blk in fma_blocks:  # the multiply-add loop: fp16 only, no widening inside it
        assert not re.search(conversions, blk), blk
        assert re.search(full_width, blk)  # full-width fp16 vectors
    # the widening of the partial sums and their fp32 sum happen outside that loop
    assert any(all(re.search(x, blk) for x in widen_and_add) for blk in blocks if blk not in fma_blocks)


def test_to_relax_rewrites_only_the_fp16_recogniser(tiny):
    from svtr_toolkit.compile.onnx_passes import load_onnx, prepare_onnx
    from svtr_toolkit.compile.precision import to_relax
    from tiny_models import SHAPE

    prepared = prepare_onnx(load_onnx(tiny), "x", SHAPE)
    kernels = lambda mod: [gv.name_hint for gv, _ in mod.functions_items() if gv.name_hint.startswith(fa.KERNEL_NAME)]  # noqa: E731
    mod, plan = to_relax(prepared, "x", SHAPE, "fp16")
    assert not kernels(mod) and "K-chunk" not in plan
    mod, plan = to_relax(prepared, "x", SHAPE, "fp16", {"chunk": 32})
    assert "K-chunk 32" in plan
    fp32_mod, _ = to_relax(prepared, "x", SHAPE, "fp32", {"chunk": 32})
    assert not kernels(fp32_mod)


def test_forced_chunked_fp16_engine_keeps_argmax_on_golden_rows(golden_export, shared_dir, tmp_path, env):
    import onnxruntime as ort

    from svtr_toolkit import runtime
    from svtr_toolkit.compile import targets
    from svtr_toolkit.compile.build import build_engine
    from svtr_toolkit.prepare import export

    data = np.load(shared_dir / "golden" / "svtr_tiny_seeded_io.npz")
    x, probs = data["x"], data["probs"]
    onnx_path = str(golden_export.out_dir / export.OPT_ONNX)
    env.setenv(fa.ENV_MODE, "on")
    path = str(tmp_path / "golden_fp16_chunked.so")
    meta = build_engine(onnx_path, "x", x.shape, "fp16", targets.select_target("llvm"), path,
                        log=lambda *_: None, tuning_dir=None)
    assert meta["fp16_accumulate"] == {"chunk": fa.DEFAULT_CHUNK}
    assert f"K-chunk {fa.DEFAULT_CHUNK}" in meta["precision_plan"] and "rectifier fp32" in meta["precision_plan"]
    assert meta["schedules"]["rules"].get("chunked-contraction", 0) > 0
    assert meta["schedules"]["unscheduled"] == [], "every kernel of the chunked plan has a rule"
    out = runtime.load_engine(path).run(x)
    reference = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    agreement = np.mean(out.argmax(-1) == reference.argmax(-1))
    print(f"chunked fp16 (K-chunk {fa.DEFAULT_CHUNK}): argmax agreement {agreement:.2%}, "
          f"max |diff| {np.abs(out - reference).max():.3g}")
    assert agreement >= 0.995 and np.mean(out.argmax(-1) == probs.argmax(-1)) >= 0.995
    assert np.abs(out - reference).max() < 0.05
