"""Default CPU schedule rules: which rule takes which kernel class, and that each computes
what the unscheduled kernel computes (numpy as the reference)."""
import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402

from svtr_toolkit.compile.schedule_rules import default_rules  # noqa: E402
from svtr_toolkit.compile.schedule_rules.common import CpuShape, divisor_near, vector_factor  # noqa: E402
from svtr_toolkit.compile.targets import host_cpu_target  # noqa: E402


def compile_one(build, *shapes):
    """Compile main(*params) = build(*params) with the llvm target's pipeline; returns the
    VM function and the {kernel: schedule} report."""
    bb = relax.BlockBuilder()
    params = [relax.Var(f"p{i}", relax.TensorType(shape, "float32")) for i, shape in enumerate(shapes)]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(build(*params))
        bb.emit_func_output(out)
    target = host_cpu_target()
    tvm_target = target.tvm_target()
    report = {}
    executable = tvm.compile(bb.get(), tvm_target, relax_pipeline=target.module.pipeline(tvm_target, None, report))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return (lambda *arrays: vm["main"](*[tvm.runtime.tensor(a, tvm.cpu()) for a in arrays]).numpy()), report


def data(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def conv_nchw(x, w, pad, groups=1):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((n, o, h + 2 * pad - kh + 1, wd + 2 * pad - kw + 1), np.float64)
    per = o // groups
    for oc in range(o):
        g = oc // per
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, g * cg:(g + 1) * cg, i:i + out.shape[2], j:j + out.shape[3]]
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
    "batch matmul, width 50": (
        lambda a, b: relax.op.matmul(a, b), [(4, 50, 32), (4, 32, 50)],
        lambda a, b: a @ b, "contraction"),
    "1x1 convolution NCHW": (
        lambda x, w: relax.op.nn.conv2d(x, w), [(2, 24, 6, 40), (48, 24, 1, 1)],
        lambda x, w: conv_nchw(x, w, 0), "contraction"),
    "depthwise 5x5 convolution NCHW, zero padding": (
        lambda x, w: relax.op.nn.conv2d(x, w, padding=2, groups=16), [(2, 16, 6, 40), (16, 1, 5, 5)],
        lambda x, w: conv_nchw(x, w, 2, groups=16), "contraction"),
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
    assert CpuShape.of(wide) == CpuShape(512, 32) and CpuShape.of(avx2) == CpuShape(256, 16)


def test_rules_are_tried_in_order_contraction_first():
    names = [rule.name for rule in default_rules()]
    # a matmul with an elementwise epilogue also fits the row-reduction pattern
    assert names.index("contraction") < names.index("row-reduction")
    assert names[-1] == "parallel-fallback"
