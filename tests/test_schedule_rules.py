"""Default CPU schedule rules: which rule takes which kernel class, and that each computes
what the unscheduled kernel computes (numpy as the reference)."""
import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402

from svtr_toolkit.compile.schedule_rules import default_rules  # noqa: E402
from svtr_toolkit.compile.schedule_rules.common import CpuModel, divisor_near, vector_factor  # noqa: E402
from svtr_toolkit.compile.targets import host_cpu_target  # noqa: E402


def main_module(build, *shapes):
    """An IRModule whose main(*params) = build(*params), one float32 param per shape."""
    bb = relax.BlockBuilder()
    params = [relax.Var(f"p{i}", relax.TensorType(shape, "float32")) for i, shape in enumerate(shapes)]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(build(*params))
        bb.emit_func_output(out)
    return bb.get()


def compile_one(build, *shapes):
    """Compile main(*params) = build(*params) with the llvm target's pipeline; returns the
    VM function and the {kernel: schedule} report."""
    target = host_cpu_target()
    tvm_target = target.tvm_target()
    report = {}
    executable = tvm.compile(main_module(build, *shapes), tvm_target, relax_pipeline=target.module.pipeline(tvm_target, None, report))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return (lambda *arrays: vm["main"](*[tvm.runtime.tensor(a, tvm.cpu()) for a in arrays]).numpy()), report


def data(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def conv_nchw(x, w, pad, groups=1, strides=(1, 1)):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    sh, sw = strides
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((n, o, (h + 2 * pad - kh) // sh + 1, (wd + 2 * pad - kw) // sw + 1), np.float64)
    per = o // groups
    for oc in range(o):
        g = oc // per
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, g * cg:(g + 1) * cg, i:i + sh * out.shape[2]:sh, j:j + sw * out.shape[3]:sw]
                out[:, oc] += np.einsum("nchw,c->nhw", patch, w[oc, :, i, j])
    return out


CASES = {
    # name: (builder, input shapes, numpy reference, rule expected for the main kernel)
    "matmul, width 100 (padded to whole vectors)": (
        lambda a, b: relax.op.matmul(a, b), [(2, 100, 32), (32, 100)],
        lambda a, b: a @ b, "contraction"),
    "matmul, long K (its weight panel packed)": (
        lambda a, b: relax.op.matmul(a, b), [(2, 20, 1024), (1024, 128)],
        lambda a, b: a @ b, "contraction"),
    # batch 1: SVTR's rectifier's fully connected layer and PP-OCRv4's squeeze-excitations are
    # one-row products, whose unit row axis the rule's normalisation drops
    "matmul of one row (a batch-1 fully connected layer)": (
        lambda a, b: relax.op.matmul(a, b), [(1, 512), (512, 512)],
        lambda a, b: a @ b, "contraction"),
    "batch matmul, width 50": (
        lambda a, b: relax.op.matmul(a, b), [(4, 50, 32), (4, 32, 50)],
        lambda a, b: a @ b, "contraction"),
    "1x1 convolution NCHW": (
        lambda x, w: relax.op.nn.conv2d(x, w), [(2, 24, 6, 40), (48, 24, 1, 1)],
        lambda x, w: conv_nchw(x, w, 0), "contraction"),
    "depthwise 5x5 convolution NCHW, zero padding": (
        lambda x, w: relax.op.nn.conv2d(x, w, padding=2, groups=16), [(2, 16, 6, 40), (16, 1, 5, 5)],
        lambda x, w: conv_nchw(x, w, 2, groups=16), "depthwise"),
    # PP-OCRv4's strided depthwise shapes; at batch 1 the map's rows are split into strips
    # (two tasks per core) that each fill their own window
    "depthwise 3x3, stride (1, 2), a map tall enough for strips of rows": (
        lambda x, w: relax.op.nn.conv2d(x, w, strides=(1, 2), padding=1, groups=64),
        [(1, 64, 48, 162), (64, 1, 3, 3)],
        lambda x, w: conv_nchw(x, w, 1, groups=64, strides=(1, 2)), "depthwise"),
    "depthwise 5x5, stride (2, 1)": (
        lambda x, w: relax.op.nn.conv2d(x, w, strides=(2, 1), padding=2, groups=48),
        [(2, 48, 6, 20), (48, 1, 5, 5)],
        lambda x, w: conv_nchw(x, w, 2, groups=48, strides=(2, 1)), "depthwise"),
    "3x3 convolution NHWC/HWIO": (
        lambda x, w: relax.op.nn.conv2d(x, w, padding=1, data_layout="NHWC", kernel_layout="HWIO"),
        [(2, 6, 25, 16), (3, 3, 16, 32)],
        lambda x, w: conv_nchw(x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), 1).transpose(0, 2, 3, 1),
        "contraction"),
    "softmax": (
        lambda x: relax.op.nn.softmax(x, axis=-1), [(2, 4, 50, 50)],
        lambda x: np.exp(x - x.max(-1, keepdims=True)) / np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True),
        "row-reduction"),
    "max pooling": (
        lambda x: relax.op.nn.max_pool2d(x, pool_size=2, strides=2), [(2, 8, 6, 40)],
        lambda x: x.reshape(2, 8, 3, 2, 20, 2).max(axis=(3, 5)), "tiled-reduction"),
    "elementwise chain": (
        lambda a, b: relax.op.nn.relu(relax.op.add(a, b)), [(2, 5, 37), (2, 5, 37)],
        lambda a, b: np.maximum(a + b, 0), "injective"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_rule_takes_its_kernel_class_and_keeps_the_numbers(name):
    build, shapes, reference, rule = CASES[name]
    run, report = compile_one(build, *shapes)
    assert report and None not in report.values(), report
    assert rule in report.values(), report
    arrays = [data(*shape, seed=i) for i, shape in enumerate(shapes)]
    np.testing.assert_allclose(run(*arrays), reference(*arrays), rtol=1e-4, atol=1e-4)


def test_tile_sizes_divide_their_loops_and_fill_vectors():
    assert vector_factor(512, 8) == 16 and vector_factor(24, 8) == 8
    assert vector_factor(5, 8) == 5  # short rows are vectorised whole
    assert vector_factor(100, 8) == 20  # fills its vectors best among the divisors
    assert divisor_near(25, 6) == 5 and divisor_near(7, 6) == 1


def test_register_shape_follows_the_targets_features_not_its_name():
    wide = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64", "mattr": ["+avx2", "+avx512f"]})
    avx2 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "mattr": ["+avx2", "-avx512f"]})
    assert CpuModel.of(wide) == CpuModel(512, 32) and CpuModel.of(avx2) == CpuModel(256, 16)


def test_rules_are_tried_in_order_contraction_first():
    names = [rule.name for rule in default_rules()]
    # a matmul with an elementwise epilogue also fits the row-reduction pattern
    assert names.index("contraction") < names.index("row-reduction")
    assert names[-1] == "parallel-fallback"


def scheduled_kernels(build, *shapes, target=None):
    """{kernel name: (rule name, scheduled TIR text)} for main(*params) = build(*params),
    lowered with the llvm target's passes and scheduled by the first rule that takes it
    (for ``target``, a tvm Target; default: this host's)."""
    from svtr_toolkit.compile.schedule_rules import first_rule
    from svtr_toolkit.compile.targets import llvm

    target = target or host_cpu_target().tvm_target()
    with target:
        mod = tvm.transform.Sequential(llvm.lowering_passes(target))(main_module(build, *shapes))
    kernels = {}
    for gvar, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            name, sch = first_rule(func, target)
            kernels[gvar.name_hint] = (name, sch.mod["main"].script() if sch is not None else None)
    return kernels


@pytest.mark.parametrize("width", [100, 50, 200, 64])
def test_softmax_rows_are_vectorised_without_guards_reductions_included(width):
    """Rows of 50/100/200 split into whole vectors plus a bounds test make TVM's vectoriser
    scalarise the guarded blocks (the exponential included): the row is split by a divisor
    instead, the max and the sum reduce into vector partials (rfactor), one parallel loop
    runs over the rows."""
    kernels = scheduled_kernels(lambda x: relax.op.nn.softmax(x, axis=-1), (2, 4, 30, width))
    (rule, text), = kernels.values()
    assert rule == "row-reduction"
    assert "T.where" not in text
    assert text.count("T.parallel") == 1
    assert "maxelem_rf" in text and "expsum_rf" in text
    assert text.count("T.vectorized") >= 5  # both partials, their inits, exp/normalise
    run, _ = compile_one(lambda x: relax.op.nn.softmax(x, axis=-1), (2, 4, 30, width))
    x = data(2, 4, 30, width) * 8
    e = np.exp(x - x.max(-1, keepdims=True))
    np.testing.assert_allclose(run(x), e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("features, channels", [(["+avx2", "+fma", "-avx512f"], 40), (["+avx2", "+fma", "+avx512f"], 48)])
def test_a_scale_broadcast_over_the_map_is_read_in_whole_vectors_not_gathers(features, channels):
    """A squeeze-excitation's [N, 1, 1, C] scale times its [N, H, W, C] map: the loops are
    fused, but every vector must lie in one row of C (C = 2.5 or 3 machine vectors here), or
    the scale's index (fused index mod C) makes each vector a gather (PP-OCRv4's 240-channel
    one ran 4x slower)."""
    target = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64", "mattr": features, "num-cores": 2})
    kernels = scheduled_kernels(lambda x, s: relax.op.multiply(x, s), (2, 3, 5, channels), (2, 1, 1, channels),
                                target=target)
    (rule, text), = kernels.values()
    assert rule == "injective"
    widths = [int(w) for w in re.findall(r"T\.vectorized\(T\.int64\((\d+)\)\)", text)]
    assert widths and all(channels % w == 0 and w >= 8 for w in widths), (widths, text)


def test_an_axis_of_three_channels_is_vectorised_with_the_row_before_it():
    """An image's 3 channels (the stem convolutions' zero padding, the TPS grid's x/y pairs):
    vectorised alone, each parallel iteration was 3 elements (SVTR's padded stem input: 110,976
    of them); with the row before it, whole vectors of the row."""
    target = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64", "mattr": ["+avx2", "+fma", "+avx512f"], "num-cores": 2})
    kernels = scheduled_kernels(lambda a, b: relax.op.add(a, b), (2, 6, 40, 3), (2, 6, 40, 3), target=target)
    (rule, text), = kernels.values()
    assert rule == "injective"
    (tasks,) = [int(t) for t in re.findall(r"T\.parallel\(T\.int64\((\d+)\)\)", text)]
    assert 2 * 6 * 40 * 3 // tasks >= 16, text  # at least a machine vector's elements per iteration
    widths = [int(w) for w in re.findall(r"T\.vectorized\(T\.int64\((\d+)\)\)", text)]
    assert widths and all(w >= 8 and 120 % w == 0 for w in widths), text
    run, _ = compile_one(lambda a, b: relax.op.add(a, b), (2, 6, 40, 3), (2, 6, 40, 3))
    a, b = data(2, 6, 40, 3), data(2, 6, 40, 3, seed=1)
    np.testing.assert_array_equal(run(a, b), a + b)


def test_layer_norm_statistics_are_row_reductions():
    def build(x):
        mean = relax.op.mean(x, axis=[-1], keepdims=True)
        centred = relax.op.subtract(x, mean)
        var = relax.op.mean(relax.op.multiply(centred, centred), axis=[-1], keepdims=True)
        return relax.op.divide(centred, relax.op.sqrt(relax.op.add(var, relax.const(1e-5, "float32"))))

    kernels = scheduled_kernels(build, (3, 100, 128))
    reductions = [text for rule, text in kernels.values() if rule == "row-reduction"]
    assert reductions and all(text.count("T.parallel") == 1 and "T.where" not in text for text in reductions)
    run, report = compile_one(build, (3, 100, 128))
    assert None not in report.values()
    x = data(3, 100, 128)
    c = x - x.mean(-1, keepdims=True)
    np.testing.assert_allclose(run(x), c / np.sqrt((c * c).mean(-1, keepdims=True) + 1e-5), rtol=1e-4, atol=1e-5)


def tps_like(x, *weights):
    """SVTR's exported TPS grid: out[b, p, c] = sum_k w_k[p] * x[b, k, c], one product and one
    sum per k (paddle2onnx unrolls the matmul)."""
    total = None
    for k, w in enumerate(weights):
        term = relax.op.multiply(w, relax.op.strided_slice(x, axes=[1], begin=[k], end=[k + 1]))
        total = term if total is None else relax.op.add(total, term)
    return total


@pytest.mark.parametrize("points", [400, 4])
def test_products_over_the_batch_are_computed_per_batch_row_with_their_own_roundings(points):
    """Kept products (their own stores, so no FMA contraction) over [batch, points, 2] would
    each be a pass through memory; they are computed per batch index under the one parallel
    loop instead, and the sum still rounds every product and every addition on its own:
    bit-identical to numpy's float32 arithmetic in the graph's order. Products only a few
    vectors long per batch row keep their own passes (LLVM would unroll their loops and
    forward the stored products into FMAs)."""
    batch, k = 16, 6
    shapes = [(batch, k, 2)] + [(points, 1)] * k
    kernels = scheduled_kernels(tps_like, *shapes)
    (rule, text), = kernels.values()
    assert rule == "injective"
    assert text.count("T.parallel") == (1 if points == 400 else k + 1)
    run, _ = compile_one(tps_like, *shapes)
    arrays = [data(*shape, seed=i) for i, shape in enumerate(shapes)]
    x, weights = arrays[0], arrays[1:]
    expected = weights[0] * x[:, 0:1, :]
    for n, w in enumerate(weights[1:], start=1):
        expected = expected + w * x[:, n:n + 1, :]
    np.testing.assert_array_equal(run(*arrays), expected)


def test_small_batches_keep_one_parallel_pass_per_product():
    """With fewer batch rows than a few per core, the per-batch loop could not feed the cores:
    each product keeps its own parallel pass, and so does the sum reading them."""
    shapes = [(1, 4, 2)] + [(400, 1)] * 4
    (rule, text), = scheduled_kernels(tps_like, *shapes).values()
    assert rule == "injective" and text.count("T.parallel") == 4 + 1


def test_a_product_only_a_conversion_reads_is_computed_in_its_pass():
    """The squeeze-excitation's scaled map stored in bf16: nothing adds to the product, so it
    is not kept in a pass of its own (a whole map through memory) but computed where it is
    converted; a product a sum reads stays apart (the rounding the FMA rule protects)."""
    def scaled(x, s):
        return relax.op.astype(relax.op.multiply(x, relax.op.nn.relu(s)), "bfloat16")

    (rule, text), = scheduled_kernels(scaled, (8, 6, 10, 48), (8, 1, 1, 48)).values()
    assert rule == "injective" and text.count("T.parallel") == 1, text

    def summed(x, s):
        return relax.op.add(relax.op.multiply(x, relax.op.nn.relu(s)), x)

    (rule, text), = scheduled_kernels(summed, (8, 6, 10, 48), (8, 1, 1, 48)).values()
    assert rule == "injective" and text.count("T.parallel") == 2, text


AVX2_2_CORES = {"kind": "llvm", "mcpu": "znver3", "mattr": ["+avx2", "+fma"], "num-cores": 2}


def conv3x3_nhwc(x, w):
    return relax.op.nn.conv2d(x, w, padding=1, data_layout="NHWC", kernel_layout="HWIO")


def test_a_packed_panel_serves_many_rows_on_small_maps():
    """A 3x3 convolution over a 2x4 map with 128 input channels: its weight panel (K=1152 x 16)
    is packed; per (image, output row) it would be copied for one 4-wide row tile, so the
    images and rows go inside the j-tile loop, which alone is the product's parallel loop (the
    zero padding is a pass of its own: no bounds test in the register tile)."""
    shapes = [(8, 2, 4, 128), (3, 3, 128, 128)]
    kernels = scheduled_kernels(conv3x3_nhwc, *shapes, target=tvm.target.Target(AVX2_2_CORES))
    (text,) = [text for rule, text in kernels.values() if rule == "contraction"]
    assert "_global" in text  # the packed panel (cache_read)
    # the zero padding's own pass, and the product's: its j-tiles alone (128 / 16)
    assert text.count("T.parallel(") == 2 and "T.parallel(T.int64(8))" in text
    run, _ = compile_one(conv3x3_nhwc, *shapes)
    x, w = data(*shapes[0]), data(*shapes[1], seed=1)
    reference = conv_nchw(x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), 1).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(run(x, w), reference, rtol=1e-4, atol=1e-4)


def test_a_long_matmul_keeps_its_batch_outside_the_panel():
    """Enough rows per (batch, j-tile) already: the batch stays outside, so each batch's rows
    stay in cache across its j-tiles."""
    shapes = [(4, 50, 1024), (1024, 64)]
    kernels = scheduled_kernels(lambda a, b: relax.op.matmul(a, b), *shapes,
                                target=tvm.target.Target(AVX2_2_CORES))
    (rule, text), = kernels.values()
    assert rule == "contraction" and "_global" in text and "T.parallel(T.int64(16))" in text  # 4 x 64/16


def test_weights_packed_at_build_time_are_not_packed_again():
    """The same matmul by a constant weight: its panels are laid out at build time
    (relax_passes.pack_weights), so the kernel reads them in place, with no copy."""
    weight = data(1024, 64, seed=1)
    kernels = scheduled_kernels(lambda a: relax.op.matmul(a, relax.const(weight)), (4, 50, 1024),
                                target=tvm.target.Target(AVX2_2_CORES))
    (rule, text), = kernels.values()
    assert rule == "contraction"
    # the output's register-tile buffer only; the unpacked kernel also copies its panel here
    assert re.findall(r"(\w+) = T\.sblock_alloc_buffer", text) == ["matmul_global"]
    assert "T.vectorized(T.int64(16))" in text  # the panel width: two AVX2 vectors
    run, _ = compile_one(lambda a: relax.op.matmul(a, relax.const(weight)), (4, 50, 1024))
    a = data(4, 50, 1024)
    np.testing.assert_allclose(run(a), a @ weight, rtol=1e-4, atol=1e-4)


def test_narrow_outputs_are_one_register_tile_wide():
    """Attention's value product (output 32 wide = 4 AVX2 vectors): one j-tile across the whole
    width, so each row of the attention matrix is read and broadcast once, not once per half."""
    shapes = [(2, 2, 40, 40), (2, 2, 40, 32)]
    (rule, text), = scheduled_kernels(lambda a, b: relax.op.matmul(a, b), *shapes,
                                      target=tvm.target.Target(AVX2_2_CORES)).values()
    assert rule == "contraction" and "T.vectorized(T.int64(32))" in text
    run, _ = compile_one(lambda a, b: relax.op.matmul(a, b), *shapes)
    a, b = data(*shapes[0]), data(*shapes[1], seed=1)
    np.testing.assert_allclose(run(a, b), a @ b, rtol=1e-4, atol=1e-4)


AVX512_2_CORES = {"kind": "llvm", "mcpu": "x86-64", "mattr": ["+avx2", "+fma", "+avx512f"], "num-cores": 2}


def test_a_tile_of_three_vectors_is_three_unrolled_machine_vectors():
    """AVX-512, N = 96: the register tile is 3 vectors (48 lanes) wide; LLVM would widen a
    48-lane vector to 64 and scalarise its loads, so the tile's j is 3 unrolled 16-lane
    vectors (also in the zeroing and the epilogue)."""
    weight = data(64, 96, seed=1)
    (rule, text), = scheduled_kernels(lambda a: relax.op.matmul(a, relax.const(weight)), (4, 24, 64),
                                      target=tvm.target.Target(AVX512_2_CORES)).values()
    assert rule == "contraction"
    assert len(re.findall(r"T\.unroll\(T\.int64\(3\)\):\s+for \w+ in T\.vectorized\(T\.int64\(16\)\)", text)) == 3
    assert "T.vectorized(T.int64(48))" not in text


def test_a_channels_last_window_reads_its_padding_from_a_pass_of_its_own():
    """The zero padding of an NHWC 3x3 convolution is filled once, in its own vectorised pass;
    the product reads it with no bounds test (a branch at every tap kept the partial sums in
    memory: the stride-2 merges ran at half the speed)."""
    shapes = [(2, 4, 25, 64), (3, 3, 64, 64)]
    (rule, text), = [v for v in scheduled_kernels(
        lambda x, w: relax.op.nn.conv2d(x, w, strides=(2, 1), padding=1, data_layout="NHWC", kernel_layout="HWIO"),
        *shapes, target=tvm.target.Target(AVX512_2_CORES)).values() if v[0] == "contraction"]
    product = text[text.index("update"):]
    assert "if_then_else" not in product and "if_then_else" in text
    run, _ = compile_one(lambda x, w: relax.op.nn.conv2d(x, w, strides=(2, 1), padding=1, data_layout="NHWC",
                                                         kernel_layout="HWIO"), *shapes)
    x, w = data(*shapes[0]), data(*shapes[1], seed=1)
    reference = conv_nchw(x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), 1)[:, :, ::2, :].transpose(0, 2, 3, 1)
    np.testing.assert_allclose(run(x, w), reference, rtol=1e-4, atol=1e-4)


def test_a_map_narrower_than_the_register_tile_stacks_images_onto_its_rows():
    """SVTR's rectifier ends on a 1x2 map: a tile of its two output columns would load each
    weight vector for two rows only; the images' axis joins the tile's rows (4 x 2 here)."""
    weight = data(3, 3, 64, 64, seed=1)

    def build(x):
        return relax.op.nn.conv2d(x, relax.const(weight), padding=1, data_layout="NHWC", kernel_layout="HWIO")

    (rule, text), = [v for v in scheduled_kernels(build, (8, 1, 2, 64), target=tvm.target.Target(AVX512_2_CORES)).values()
                     if v[0] == "contraction"]
    product = text[text.index("update"):]
    assert re.search(r"T\.unroll\(T\.int64\(4\)\):\s+for \w+ in T\.unroll\(T\.int64\(2\)\):\s+for \w+ in T\.vectorized",
                     text), product
    run, _ = compile_one(build, (8, 1, 2, 64))
    x = data(8, 1, 2, 64)
    reference = conv_nchw(x.transpose(0, 3, 1, 2), weight.transpose(3, 2, 0, 1), 1).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(run(x), reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("channels, on_the_stack", [(3, True), (64, False)])
def test_a_short_reduction_keeps_its_partial_sums_on_the_stack(channels, on_the_stack):
    """A 3-channel image's 3x3 convolution sums 27 terms per output: too few to pay for taking
    its register tile's partial sums from TVM's workspace pool once per task, which TVM does for
    a buffer of 1 KiB or more; its tile has fewer rows instead. A 576-term reduction keeps the
    fuller tile."""
    from svtr_toolkit.compile.schedule_rules.contraction import STACK_BYTES

    weight = data(3, 3, channels, 32, seed=1)

    def build(x):
        return relax.op.nn.conv2d(x, relax.const(weight), padding=1, data_layout="NHWC", kernel_layout="HWIO")

    (rule, text), = [v for v in scheduled_kernels(build, (2, 8, 16, channels),
                                                  target=tvm.target.Target(AVX512_2_CORES)).values()
                     if v[0] == "contraction"]
    rows, width = (int(n) for n in re.search(
        r"T\.unroll\(T\.int64\((\d+)\)\):\s+for \w+ in T\.vectorized\(T\.int64\((\d+)\)\):\s+with T\.sblock\(\"\w*update",
        text).groups())
    assert (rows * width * 4 < STACK_BYTES) == on_the_stack, (rows, width)
    run, _ = compile_one(build, (2, 8, 16, channels))
    x = data(2, 8, 16, channels)
    reference = conv_nchw(x.transpose(0, 3, 1, 2), weight.transpose(3, 2, 0, 1), 1).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(run(x), reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("target, lanes", [(AVX512_2_CORES, 16), (AVX2_2_CORES, 8)], ids=["avx512", "avx2"])
@pytest.mark.parametrize("batch, tasks, window_rows", [(1, 4, 7), (8, 8, 16)])
def test_a_depthwise_task_fills_one_window_of_all_channels_for_its_strip_of_rows(batch, tasks, window_rows, target, lanes):
    """A depthwise convolution's task is an image and a strip of output rows: it fills the
    strip's padded window once, every channel of each pixel in one contiguous read (a window
    per 16-channel block read 64 of each pixel's 192 bytes and waited on memory), and works
    through the channel blocks from it. The strip is the whole map where the images give two
    tasks per core (batch 8: 12 + 4 window rows), shorter where they do not (batch 1: 4 strips
    of 3 rows, each reading 3 + 4)."""
    shapes = [(batch, 48, 12, 40), (48, 1, 5, 5)]

    def build(x, w):
        return relax.op.nn.conv2d(x, w, padding=2, groups=48)

    (rule, text), = [v for v in scheduled_kernels(build, *shapes, target=tvm.target.Target(target)).values()
                     if v[0] == "depthwise"]
    assert f"T.parallel(T.int64({tasks}))" in text, text
    fill = text[:text.index("update")]
    assert re.search(rf"T\.grid\((T\.int64\(1\), )?T\.int64\({window_rows}\), T\.int64\(44\)\)", fill), fill
    assert re.search(rf"T\.unroll\(T\.int64\({48 // lanes}\)\):\s+for \w+ in T\.vectorized\(T\.int64\({lanes}\)\)", fill), fill
    run, _ = compile_one(build, *shapes)
    x, w = data(*shapes[0]), data(*shapes[1], seed=1)
    np.testing.assert_allclose(run(x, w), conv_nchw(x, w, 2, groups=48), rtol=1e-4, atol=1e-4)
