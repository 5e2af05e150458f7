"""bf16 engines: the plan (operands of the recogniser's matrix products rounded to bf16, fp32
sums and everything else fp32), AMX kernels where the CPU has AMX-BF16 and vdpbf16ps kernels
where it has avx512_bf16 only (cross-compiled for both on any x86 host, run where the host has
them), and the golden SVTR rows."""
import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402

from svtr_toolkit.compile.onnx_passes import round_to  # noqa: E402
from svtr_toolkit.cpu_features import host  # noqa: E402
from test_cpu_classes import CLASSES  # noqa: E402
from test_schedule_rules import main_module  # noqa: E402

XEON = CLASSES["xeon-avx512-fp16"]
ZEN4 = CLASSES["zen4-avx512-bf16"]


def rounded(v):
    """The plan's rounding of a value to bf16, as the bf16 engine's module writes it."""
    return relax.op.astype(relax.op.astype(v, "bfloat16"), "float32")


def rounded_matmul(x_shape, weight, bias=None):
    """main(x) = matmul(bf16-rounded x, weight) [+ bias, relu]: a product of the bf16 plan."""
    def build(x):
        y = relax.op.matmul(rounded(x), relax.const(weight))
        return y if bias is None else relax.op.nn.relu(relax.op.add(y, relax.const(bias)))

    return main_module(build, x_shape)


def rounded_conv(x_shape, weight, strides, padding=(1, 1, 1, 1)):
    """main(x) = conv2d(bf16-rounded x, weight), NCHW as exported: the plan's rounding sits
    before the transpose the channels-last conversion adds."""
    return main_module(lambda x: relax.op.nn.conv2d(rounded(x), relax.const(weight), strides=strides,
                                                    padding=padding), x_shape)


def window_rows(x, kernel: int, strides, pad: int = 1):
    """x [N, C, H, W] as the rows a convolution multiplies: one per output pixel, the window's
    terms in the HWIO weight's order (window row, window column, channel)."""
    padded = np.pad(x.transpose(0, 2, 3, 1), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    (sh, sw), (h, w) = strides, x.shape[2:]
    ho, wo = (h + 2 * pad - kernel) // sh + 1, (w + 2 * pad - kernel) // sw + 1
    taps = [padded[:, i:i + sh * ho:sh, j:j + sw * wo:sw, :] for i in range(kernel) for j in range(kernel)]
    return np.stack(taps, axis=3).reshape(x.shape[0] * ho * wo, -1), (ho, wo)


# (x [N, C, H, W], output channels, strides): SVTR's first merge, its patch embedding's second
# convolution, and 40 output channels (a padded last column tile) on a map smaller than the window
CONVS = [((2, 64, 8, 25), 128, (2, 1)), ((2, 32, 16, 50), 64, (2, 2)), ((1, 32, 3, 2), 40, (1, 1))]


def bf16_conv_weight(co, ci, seed=4):
    return round_to(np.random.default_rng(seed).uniform(-1, 1, (co, ci, 3, 3)).astype(np.float32), "bf16")


def compile_for(mod, spec):
    from svtr_toolkit.compile.targets import BuildTarget

    target = BuildTarget(spec, "test")
    tvm_target = target.tvm_target()
    report = {}
    executable = tvm.compile(mod, tvm_target, relax_pipeline=target.module.pipeline(tvm_target, None, report))
    return executable, report


def bf16_weight(k, n, seed=1):
    return round_to(np.random.default_rng(seed).uniform(-1, 1, (k, n)).astype(np.float32), "bf16")


@pytest.mark.parametrize("k", [240, 75])
def test_the_reduction_is_padded_to_what_the_instructions_read(k):
    """A product's reduction is padded with zeros to whole 32-term AMX tile rows on a CPU with
    AMX, and only to whole pairs for vdpbf16ps (PP-OCRv4's 240 channels stay 240: 1/16 of the
    256-term kernel's dot products were of zeros). Each target's kernel still gets its rule."""
    from svtr_toolkit.compile.schedule_rules import first_rule
    from svtr_toolkit.compile.targets import BuildTarget, llvm

    mod = rounded_matmul((2, 40, k), bf16_weight(k, 48))
    for cpu, rule, padded in ((XEON, "amx-bf16", -(-k // 32) * 32), (ZEN4, "avx512-bf16", -(-k // 2) * 2)):
        target = BuildTarget(cpu.spec(), "test").tvm_target()
        kernels = [f for gv, f in llvm.lower(mod, target).functions_items()
                   if isinstance(f, tvm.tirx.PrimFunc) and "matmul_bf16" in gv.name_hint]
        assert len(kernels) == 1
        panels = [int(d) for d in kernels[0].params[1].ty.shape]
        assert panels[1] * panels[3] == padded, (cpu.mcpu, panels)
        with target:
            assert first_rule(kernels[0], target)[0] == rule


@pytest.mark.skipif(host().arch != "x86_64", reason="cross-compiles for x86-64 targets")
def test_bf16_products_are_amx_tiles_or_dot_products_as_the_target_has():
    weight = bf16_weight(96, 80)
    mod = rounded_matmul((2, 40, 96), weight, np.zeros(80, np.float32))
    executable, report = compile_for(mod, XEON.spec())
    assert "amx-bf16" in report.values(), report
    asm = executable.mod.imports[0].inspect_source("asm")
    for instruction in ("ldtilecfg", "tileloadd", "tdpbf16ps", "tilestored", "tilerelease"):
        assert instruction in asm, instruction
    # avx512_bf16 without AMX: dot products of bf16 pairs on zmm registers
    executable, report = compile_for(mod, ZEN4.spec())
    assert "avx512-bf16" in report.values() and "amx-bf16" not in report.values(), report
    asm = executable.mod.imports[0].inspect_source("asm")
    assert "tdpbf16ps" not in asm
    assert re.search(r"vdpbf16ps\s+[^\n]*%zmm\d+, %zmm\d+", asm)
    # no bf16 arithmetic: the rounded values in fp32 arithmetic
    executable, report = compile_for(mod, CLASSES["zen3-avx2"].spec())
    assert not {"amx-bf16", "avx512-bf16"} & set(report.values()), report
    assert "bf16ps" not in executable.mod.imports[0].inspect_source("asm")


@pytest.mark.skipif(host().arch != "x86_64", reason="cross-compiles for x86-64 targets")
def test_convolutions_of_whole_32_channel_rows_take_the_same_bf16_kernels():
    """A 3x3 convolution over 64 channels is the bf16 product kernel (its conversion gathers
    the window) on AMX and on avx512_bf16 CPUs; one over 3 channels (an image's) is not: its
    taps would split the 32-term rows the conversion fills."""
    mod = rounded_conv((2, 64, 8, 25), bf16_conv_weight(128, 64), (2, 1))
    for cpu, rule, instruction in ((XEON, "amx-bf16", r"tdpbf16ps"), (ZEN4, "avx512-bf16", r"vdpbf16ps\s+[^\n]*%zmm\d+, %zmm\d+")):
        executable, report = compile_for(mod, cpu.spec())
        assert report.get("conv2d_bf16") == rule, report
        assert re.search(instruction, executable.mod.imports[0].inspect_source("asm"))
    _, report = compile_for(rounded_conv((2, 3, 8, 25), bf16_conv_weight(32, 3), (2, 2)), ZEN4.spec())
    assert "conv2d_bf16" not in report and report.get("conv2d") == "contraction", report


def depthwise_then_pointwise(x_shape, depthwise, pointwise):
    """main(x) = pointwise(round(relu(depthwise(round(relu(x)))))), NCHW as exported, each
    product's input rounded by the plan: PP-OCRv4's block."""
    def build(x):
        h = relax.op.nn.conv2d(rounded(relax.op.nn.relu(x)), relax.const(depthwise), padding=[1, 1, 1, 1],
                               groups=x_shape[1])
        return relax.op.nn.conv2d(rounded(relax.op.nn.relu(h)), relax.const(pointwise))

    return main_module(build, x_shape)


def test_values_the_plan_rounds_are_stored_in_bf16_between_kernels():
    """On a bf16-arithmetic CPU the kernels that produce a value the plan rounds store it in
    bf16 (half the bytes) and its consumers, the depthwise convolution included, read it so;
    the outputs are the plan's: exact products of the bf16 values in fp32 sums."""
    from svtr_toolkit.compile.targets import BuildTarget, host_cpu_target, llvm

    rng = np.random.default_rng(7)
    depthwise = round_to(rng.uniform(-1, 1, (32, 1, 3, 3)).astype(np.float32), "bf16")
    pointwise = round_to(rng.uniform(-1, 1, (48, 32, 1, 1)).astype(np.float32), "bf16")
    mod = depthwise_then_pointwise((2, 32, 6, 20), depthwise, pointwise)
    lowered = llvm.lower(mod, BuildTarget(ZEN4.spec(), "t").tvm_target())
    kernels = {gv.name_hint: f for gv, f in lowered.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    (conv,) = [f for name, f in kernels.items() if "conv2d" in name]
    dtypes = re.findall(r'"(\w+)"\)', conv.script().split("def main(")[1].split(":\n")[0])  # its buffers
    assert dtypes[0] == "bfloat16" and dtypes[-1] == "bfloat16", dtypes  # reads and stores bf16

    x = rng.uniform(-1, 1, (2, 32, 6, 20)).astype(np.float32)
    executable, _ = compile_for(mod, host_cpu_target().spec)
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy().transpose(0, 2, 3, 1)
    taps, _ = window_rows(round_to(np.maximum(x, 0), "bf16").astype(np.float64), 3, (1, 1))
    h = np.einsum("nyxtc,tc->nyxc", taps.reshape(2, 6, 20, 9, 32), depthwise[:, 0].transpose(1, 2, 0).reshape(9, 32))
    # the depthwise sums are fp32 in the engine: one may land across a bf16 rounding boundary
    # from float64's, so each term of the pointwise product may be one bf16 step (2^-8) off
    hr = round_to(np.maximum(h, 0).astype(np.float32), "bf16").astype(np.float64)
    weights = pointwise[:, :, 0, 0].T.astype(np.float64)
    exact = hr @ weights
    bound = (32 * np.finfo(np.float32).eps + 2.0 ** -8) * (np.abs(hr) @ np.abs(weights))
    assert np.all(np.abs(got - exact) <= bound)


@pytest.mark.parametrize("cpu, rule", [(XEON, "amx-bf16"), (ZEN4, "avx512-bf16")])
def test_a_batch_one_product_is_split_across_the_cores(cpu, rule):
    """100 rows at batch 1 (SVTR's later stages): at least two parallel tasks per core, not one
    block of all the rows on one core."""
    from svtr_toolkit.compile.schedule_rules import first_rule
    from svtr_toolkit.compile.targets import BuildTarget, llvm

    mod = rounded_matmul((1, 100, 96), bf16_weight(96, 192))
    target = BuildTarget(cpu.spec(), "test").tvm_target()
    with target:
        lowered = llvm.lower(mod, target)
        kernels = [f for f in lowered.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
        scheduled = [first_rule(f, target) for f in kernels]
    (sch,) = [sch for name, sch in scheduled if name == rule]
    task = sch.get(sch.get_loops(sch.get_sblock("bf16_a"))[0])  # the conversion runs once per task
    assert task.kind == tvm.tirx.ForKind.PARALLEL
    assert int(task.extent) >= 2 * cpu.spec()["num-cores"], int(task.extent)


def test_the_bf16_product_has_a_flop_count():
    """tools/profile_engine.py --flops rates kernels by TVM's FLOP estimate: the bf16 product's
    is its padded product's 2*M*N*K plus the conversion's few integer operations per term."""
    from svtr_toolkit.compile.targets import BuildTarget, llvm
    from svtr_toolkit.compile.tuning.coverage import prim_func_flops

    lowered = llvm.lower(rounded_matmul((2, 40, 96), bf16_weight(96, 80)), BuildTarget(ZEN4.spec(), "t").tvm_target())
    (kernel,) = [f for gv, f in lowered.functions_items() if "bf16" in gv.name_hint]
    flops = prim_func_flops(tvm.IRModule({"main": kernel}))
    assert flops is not None and 1.0 <= flops / (2 * 80 * 96 * 80) < 1.05, flops


def host_bf16_instructions() -> str | None:
    """The bf16 kernels this host runs: "amx-bf16", "avx512-bf16" or None."""
    from svtr_toolkit.compile.arithmetic import AMX_BF16, bf16_matrix_instructions
    from svtr_toolkit.compile.targets import host_cpu_target
    from svtr_toolkit.runtime.library import request_amx_state

    instructions = bf16_matrix_instructions(host_cpu_target().spec)
    if instructions == AMX_BF16 and request_amx_state() is not None:
        return None
    return instructions


def vdpbf16ps_model(x, weight):
    """x [M, K] @ weight [K, N] as the dot-product kernel computes it, in numpy: for each pair of
    terms in order, the odd term's product added to the fp32 sum, rounded, then the even term's
    (the order of Intel's description of vdpbf16ps; products of bf16 values are exact in fp32)."""
    sums = np.zeros((x.shape[0], weight.shape[1]), np.float32)
    for p in range(0, x.shape[1], 2):
        for term in (p + 1, p):
            sums = (sums + x[:, term, None] * weight[term]).astype(np.float32)
    return sums


@pytest.mark.skipif("avx512bf16" not in host().features, reason="needs a CPU with avx512_bf16 to run vdpbf16ps")
@pytest.mark.parametrize("x_shape, k, n", [((2, 40, 96), 96, 80), ((64, 120), 120, 60), ((3, 50, 64), 64, 200),
                                        ((40, 75), 75, 32)])
def test_dot_product_kernels_match_a_numpy_model_bit_for_bit(x_shape, k, n):
    """Compiled for this host without AMX (so the dot-product rule takes the product): equal bit
    for bit to the numpy model of vdpbf16ps over the bf16-rounded operands."""
    from svtr_toolkit.compile.targets import host_cpu_target

    spec = dict(host_cpu_target().spec)
    spec["mattr"] = [a for a in spec.get("mattr") or [] if not a.startswith("+amx")]
    weight = bf16_weight(k, n)
    x = np.random.default_rng(3).uniform(-1, 1, x_shape).astype(np.float32)
    executable, report = compile_for(rounded_matmul(x_shape, weight), spec)
    assert "avx512-bf16" in report.values(), report
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    padded = -(-k // 32) * 32  # zero terms beyond K (the kernel's padding to pairs, the model's to 32) add exact zeros
    rows = np.zeros((int(np.prod(x_shape[:-1])), padded), np.float32)
    rows[:, :k] = round_to(x, "bf16").reshape(-1, k)
    weights = np.zeros((padded, n), np.float32)
    weights[:k] = weight
    expected = vdpbf16ps_model(rows, weights).reshape(got.shape)
    assert np.array_equal(got, expected), f"{np.mean(got == expected):.2%} equal"


@pytest.mark.skipif("avx512bf16" not in host().features, reason="needs a CPU with avx512_bf16 to run vdpbf16ps")
@pytest.mark.parametrize("x_shape, co, strides", CONVS)
def test_dot_product_convolutions_match_a_numpy_model_bit_for_bit(x_shape, co, strides):
    """The convolution's kernel on this host without AMX: bit for bit the numpy model of
    vdpbf16ps over the rows of the bf16-rounded input's windows (zero padding included)."""
    from svtr_toolkit.compile.targets import host_cpu_target

    spec = dict(host_cpu_target().spec)
    spec["mattr"] = [a for a in spec.get("mattr") or [] if not a.startswith("+amx")]
    weight = bf16_conv_weight(co, x_shape[1])
    x = np.random.default_rng(5).uniform(-1, 1, x_shape).astype(np.float32)
    executable, report = compile_for(rounded_conv(x_shape, weight, strides), spec)
    assert report.get("conv2d_bf16") == "avx512-bf16", report
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    rows, (ho, wo) = window_rows(round_to(x, "bf16"), 3, strides)
    columns = weight.transpose(2, 3, 1, 0).reshape(-1, co)
    expected = vdpbf16ps_model(rows, columns).reshape(x_shape[0], ho, wo, co).transpose(0, 3, 1, 2)
    assert np.array_equal(got, expected), f"{np.mean(got == expected):.2%} equal"


@pytest.mark.parametrize("x_shape, co, strides", CONVS)
def test_bf16_convolutions_are_the_exact_products_of_bf16_values_summed_in_fp32(x_shape, co, strides):
    """On this host's CPU, whichever kernel it gets: every output within the fp32 summation
    bound of the exact products of the bf16-rounded input and weights."""
    from svtr_toolkit.compile.targets import host_cpu_target

    weight = bf16_conv_weight(co, x_shape[1])
    x = np.random.default_rng(6).uniform(-1, 1, x_shape).astype(np.float32)
    executable, report = compile_for(rounded_conv(x_shape, weight, strides), host_cpu_target().spec)
    if host_bf16_instructions():
        assert report.get("conv2d_bf16") == host_bf16_instructions(), report
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    rows, (ho, wo) = window_rows(round_to(x, "bf16").astype(np.float64), 3, strides)
    products = rows[:, :, None] * weight.transpose(2, 3, 1, 0).reshape(-1, co).astype(np.float64)
    exact = products.sum(axis=1).reshape(x_shape[0], ho, wo, co).transpose(0, 3, 1, 2)
    bound = rows.shape[1] * np.finfo(np.float32).eps * np.abs(products).sum(axis=1)
    assert np.all(np.abs(got - exact) <= bound.reshape(x_shape[0], ho, wo, co).transpose(0, 3, 1, 2))


@pytest.mark.parametrize("x_shape, k, n", [((2, 40, 96), 96, 80), ((3, 2, 80, 240), 240, 240), ((64, 120), 120, 60)])
def test_bf16_products_are_the_exact_products_of_bf16_values_summed_in_fp32(x_shape, k, n):
    """On this host's CPU (AMX tiles or dot products where it has them): every output is the sum of the exact
    products of the bf16-rounded operands, within the error bound of an fp32 sum of k terms in
    any order (AMX's internal order of additions is not published, so not bit for bit), and
    far closer to it than the bf16 rounding of the operands moves it."""
    from svtr_toolkit.compile.targets import host_cpu_target

    weight = bf16_weight(k, n)
    x = np.random.default_rng(2).uniform(-1, 1, x_shape).astype(np.float32)
    executable, report = compile_for(rounded_matmul(x_shape, weight), host_cpu_target().spec)
    if host_bf16_instructions():
        assert host_bf16_instructions() in report.values(), report
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    products = round_to(x, "bf16").astype(np.float64)[..., :, None] * weight.astype(np.float64)
    exact = products.sum(axis=-2)
    bound = k * np.finfo(np.float32).eps * np.abs(products).sum(axis=-2)
    assert np.all(np.abs(got - exact) <= bound)
    unrounded = x.astype(np.float64) @ weight.astype(np.float64)
    assert np.abs(got - exact).max() < 0.01 * np.abs(unrounded - exact).max()


@pytest.mark.parametrize("spec, instructions", [(XEON, "AMX tiles"), (ZEN4, "AVX-512 BF16 dot products"),
                                                (CLASSES["zen3-avx2"], None)])
def test_the_build_says_what_bf16_computes_in(spec, instructions):
    from svtr_toolkit.compile.targets import llvm

    arithmetic = llvm.arithmetic(spec.spec(), "bf16")
    note = llvm.precision_note(spec.spec(), "bf16")
    assert (instructions is None) == ("emulated" in arithmetic) == (note is not None)
    assert instructions is None or instructions in arithmetic


def test_bf16_engine_keeps_the_argmax_of_its_plan_on_golden_rows(golden_export, shared_dir, tmp_path):
    """Differential: the engine against onnxruntime running the same bf16 plan (``emulate_plan``)
    and against fp32. bf16 keeps 8 significant bits: the plan itself moves near-tied steps
    (onnxruntime's emulation: 2 of these 350 steps), and the engine (its sums in another order)
    may move other near-ties, but no more than the plan does plus one step."""
    import onnx
    import onnxruntime as ort

    from svtr_toolkit import runtime
    from svtr_toolkit.compile import precision, targets
    from svtr_toolkit.compile.build import build_engine
    from svtr_toolkit.prepare import export

    data = np.load(shared_dir / "golden" / "svtr_tiny_seeded_io.npz")
    x, probs = data["x"], data["probs"]
    onnx_path = str(golden_export.out_dir / export.OPT_ONNX)
    path = str(tmp_path / "golden_bf16.so")
    meta = build_engine(onnx_path, "x", x.shape, "bf16", targets.select_target("llvm"), path, log=lambda *_: None,
                        tuning_dir=None)
    assert "rectifier fp32" in meta["precision_plan"] and "head fp32" in meta["precision_plan"]
    if host_bf16_instructions():
        assert meta["schedules"]["rules"].get(host_bf16_instructions(), 0) > 0
    out = runtime.load_engine(path).run(x)
    session = lambda model: ort.InferenceSession(model, providers=["CPUExecutionProvider"])  # noqa: E731
    fp32 = session(onnx_path).run(None, {"x": x})[0]
    emulated_model, _ = precision.emulate_plan(onnx.load(onnx_path), "x", x.shape, "bf16")
    emulated = session(emulated_model.SerializeToString()).run(None, {"x": x})[0]
    agreement = np.mean(out.argmax(-1) == fp32.argmax(-1))
    plan_agreement = np.mean(emulated.argmax(-1) == fp32.argmax(-1))
    print(f"bf16 ({meta['arithmetic']}): argmax agreement {agreement:.2%} (the plan in onnxruntime: "
          f"{plan_agreement:.2%}), max |diff| {np.abs(out - fp32).max():.3g}")
    one_step = 1 / fp32.argmax(-1).size
    assert agreement >= plan_agreement - one_step - 1e-9
    assert np.mean(out.argmax(-1) == probs.argmax(-1)) >= plan_agreement - one_step - 1e-9
    assert np.abs(out - emulated).max() < np.abs(emulated - fp32).max()


def test_the_recorded_classes_are_what_the_cross_compile_tests_assume():
    assert {"amx-tile", "amx-bf16", "avx512bf16"} <= XEON.cpu().features
    assert "avx512bf16" in ZEN4.cpu().features and not {"amx-tile", "amx-bf16"} & ZEN4.cpu().features


def chained_products(x_shape, first, second):
    """main(x) = round(relu(round(x) @ first)) @ second: the first product's output is a value
    the plan rounds, stored in bf16 by its kernel's epilogue."""
    def build(x):
        h = relax.op.nn.relu(relax.op.matmul(rounded(x), relax.const(first)))
        return relax.op.matmul(rounded(h), relax.const(second))

    return main_module(build, x_shape)


@pytest.mark.skipif(host().arch != "x86_64", reason="cross-compiles for x86-64 targets")
def test_bf16_stores_use_the_cpus_conversion_instruction():
    """The epilogues that store a bf16 value (a product's, a depthwise convolution's) convert with
    vcvtne2ps2bf16 / vcvtneps2bf16 on CPUs with avx512_bf16, not TVM's integer rounding."""
    rng = np.random.default_rng(8)
    modules = [chained_products((2, 40, 96), bf16_weight(96, 64), bf16_weight(64, 48, seed=2)),
               depthwise_then_pointwise((2, 32, 6, 20), round_to(rng.uniform(-1, 1, (32, 1, 3, 3)).astype(np.float32), "bf16"),
                                        round_to(rng.uniform(-1, 1, (48, 32, 1, 1)).astype(np.float32), "bf16"))]
    for mod in modules:
        for cpu in (ZEN4, XEON):
            executable, _ = compile_for(mod, cpu.spec())
            assert re.search(r"vcvtne2?ps2bf16", executable.mod.imports[0].inspect_source("asm")), cpu


@pytest.mark.skipif("avx512bf16" not in host().features, reason="needs a CPU with avx512_bf16 to run vdpbf16ps")
def test_a_value_stored_in_bf16_is_the_plans_rounding_bit_for_bit():
    """Two chained products on this host without AMX: the second's output is bit for bit the
    numpy model of vdpbf16ps over round_to (nearest even) of the first's modelled output, so the
    conversion instruction in the first's epilogue rounds as the plan does."""
    from svtr_toolkit.compile.targets import host_cpu_target

    spec = dict(host_cpu_target().spec)
    spec["mattr"] = [a for a in spec.get("mattr") or [] if not a.startswith("+amx")]
    first, second = bf16_weight(96, 64), bf16_weight(64, 48, seed=2)
    x = np.random.default_rng(9).uniform(-1, 1, (2, 40, 96)).astype(np.float32)
    executable, _ = compile_for(chained_products(x.shape, first, second), spec)
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    h = np.maximum(vdpbf16ps_model(round_to(x, "bf16").reshape(80, 96), first), 0)
    expected = vdpbf16ps_model(round_to(h, "bf16"), second).reshape(got.shape)
    assert np.array_equal(got, expected), f"{np.mean(got == expected):.2%} equal"
