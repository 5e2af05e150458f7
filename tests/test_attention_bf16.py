"""Attention in a bf16 engine: the plan rounds the four operands of attention's two products
(q, k, the softmax's output, v) and the fused kernel reads through those roundings: bf16 dot
products where the target has avx512_bf16 (schedule_rules.attention_bf16), the fp32 kernel
computing the rounded values elsewhere. Both against a numpy model of the plan's arithmetic;
the dot-product kernel cross-compiled for Zen 4 on any x86 host."""
import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402

from svtr_toolkit.compile.onnx_passes import round_to  # noqa: E402
from svtr_toolkit.compile.targets import BuildTarget, llvm  # noqa: E402
from svtr_toolkit.cpu_features import host  # noqa: E402
from test_attention import data, kernels, local_mask, module  # noqa: E402
from test_bf16 import ZEN4, rounded  # noqa: E402
from test_cpu_classes import CLASSES  # noqa: E402

AVX2 = CLASSES["zen3-avx2"]


def rounded_attention(mask=None):
    """main(q, k, v) = bf16(softmax(bf16(q) @ bf16(k^T) [+ mask])) @ bf16(v): attention as a
    bf16 engine's module has it (the importer's graph after the plan's rounding)."""
    def build(q, k, v):
        rank = len(q.ty.shape)
        keys_t = relax.op.permute_dims(k, [*range(rank - 2), rank - 1, rank - 2])
        scores = relax.op.matmul(rounded(q), rounded(keys_t))
        if mask is not None:
            scores = relax.op.add(scores, relax.const(mask))
        return relax.op.matmul(rounded(relax.op.nn.softmax(scores, axis=-1)), rounded(v))
    return build


def plan_model(q, k, v, mask=None):
    """The kernel's arithmetic in numpy: the operands rounded to bf16, the scores and the softmax
    exact, the unnormalised exponentials rounded to bf16, the division by their (unrounded) sum
    after the second product."""
    q, k, v = (round_to(a, "bf16").astype(np.float64) for a in (q, k, v))
    scores = q @ np.swapaxes(k, -1, -2) + (0 if mask is None else mask)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return (round_to(e.astype(np.float32), "bf16") @ v) / e.sum(-1, keepdims=True)


def unrounded_model(q, k, v, mask=None):
    scores = q.astype(np.float64) @ np.swapaxes(k, -1, -2) + (0 if mask is None else mask)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ v


def test_the_bf16_plan_rounds_attentions_operands_and_the_fp16_plan_does_not():
    """onnx_passes.emulate_storage with each precision's rounding (precision.ROUNDING): the
    operands of a product of two activations are rounded for bf16 only; a product by a weight
    for both."""
    import onnx
    from onnx import TensorProto, helper

    from svtr_toolkit.compile import onnx_passes, precision

    weight = onnx.numpy_helper.from_array(data(8, 8, seed=7), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["q"]), helper.make_node("Transpose", ["q"], ["kt"], perm=[1, 0]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Softmax", ["s"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "q"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    region = {o for n in nodes for o in n.output}

    def rounded_inputs(reduced):
        out = onnx_passes.emulate_storage(model, region, precision.ROUNDING[reduced], reduced)
        made_by = {o: n for n in out.graph.node for o in n.output}
        return [[made_by.get(i) is not None and made_by[i].op_type == "Cast" for i in n.input]
                for n in out.graph.node if n.op_type == "MatMul"]

    assert rounded_inputs("bf16") == [[True, False], [True, True], [True, True]]
    assert rounded_inputs("fp16") == [[True, False], [False, False], [False, False]]


def target_of(cpu_class):
    return BuildTarget(cpu_class.spec(), "test").tvm_target()


# (heads' leading shape, tokens, head dim, masked): SVTR's first and last stages, PP-OCRv4's
# neck (15-wide heads: a zero term pads the pairs), an odd number of keys (no bf16 kernel: it
# takes the keys in pairs)
SHAPES = [((2, 2), 200, 32, True), ((2, 8), 50, 32, False), ((2, 8), 40, 15, False), ((3,), 21, 16, True)]


@pytest.mark.parametrize("lead, tokens, depth, masked", SHAPES)
@pytest.mark.parametrize("cpu", ["zen3-avx2", "zen4-avx512-bf16"])
def test_the_rounded_attention_is_one_kernel_on_every_class(cpu, lead, tokens, depth, masked):
    mask = local_mask(tokens, tokens // 8) if masked else None
    shape = (*lead, tokens, depth)
    found = kernels(module(rounded_attention(mask), shape, shape, shape), target_of(CLASSES[cpu]))
    rules = [rule for rule, _ in found.values() if rule.startswith("attention")]
    dots = "+avx512bf16" in CLASSES[cpu].spec()["mattr"] and tokens % 2 == 0
    assert rules == ["attention-bf16" if dots else "attention"], found
    assert not any("softmax" in name or "round" in name for name in found), found


def run(mod, target, *arrays):
    executable = tvm.compile(mod, target, relax_pipeline=llvm.pipeline(target))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a, tvm.cpu()) for a in arrays]).numpy()


CAN_RUN = {"zen3-avx2": "avx2" in host().features, "zen4-avx512-bf16": "avx512bf16" in host().features}


@pytest.mark.parametrize("lead, tokens, depth, masked", SHAPES)
@pytest.mark.parametrize("cpu", ["zen3-avx2", "zen4-avx512-bf16"])
def test_the_kernel_computes_the_plans_rounded_values(cpu, lead, tokens, depth, masked):
    """Against ``plan_model``: equal up to fp32 summation, except where the fast exponential
    puts a value on the other side of a bf16 rounding boundary (one bf16 step of one term);
    and much nearer to it than to unrounded attention (the roundings are applied)."""
    if not CAN_RUN[cpu]:
        pytest.skip(f"the host cannot run code for {cpu}")
    mask = local_mask(tokens, tokens // 8) if masked else None
    shape = (*lead, tokens, depth)
    q, k, v = data(*shape, seed=1, scale=2.0), data(*shape, seed=2, scale=2.0), data(*shape, seed=3)
    got = run(module(rounded_attention(mask), shape, shape, shape), target_of(CLASSES[cpu]), q, k, v)
    model, exact = plan_model(q, k, v, mask), unrounded_model(q, k, v, mask)
    off = np.abs(got - model)
    assert np.median(off) < 1e-6 and off.max() < 1e-3, (np.median(off), off.max())
    assert np.median(off) < 0.05 * np.median(np.abs(exact - model))


@pytest.mark.skipif(host().arch != "x86_64", reason="cross-compiles for x86-64 targets")
def test_the_zen4_kernel_is_bf16_dot_products_and_pair_conversions():
    shape = (2, 2, 100, 32)
    mod = module(rounded_attention(local_mask(100, 12)), shape, shape, shape)
    target = target_of(ZEN4)
    executable = tvm.compile(mod, target, relax_pipeline=llvm.pipeline(target))
    asm = executable.mod.imports[0].inspect_source("asm")
    dots = re.findall(r"vdpbf16ps\s+([^\n]*)", asm)
    assert len(dots) >= 16 and all("zmm" in operands for operands in dots), dots[:4]
    assert any("{1to16}" in operands for operands in dots)  # a row's pair broadcast from memory
    assert "vcvtne2ps2bf16" in asm  # the exponentials' pairs: two rows in one conversion
