"""The fused attention kernel (relax_passes.fused_attention, schedule_rules.attention): which
graphs become it, that it computes softmax(Q K^T + mask) V as numpy does, and that its register
tiles are whole machine vectors on both x86 classes (cross-compiled)."""
import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402

from svtr_toolkit.compile.schedule_rules import first_rule  # noqa: E402
from svtr_toolkit.compile.targets import host_cpu_target, llvm  # noqa: E402
from test_schedule_rules import main_module  # noqa: E402

AVX2 = {"kind": "llvm", "mcpu": "znver3", "mattr": ["+avx2", "+fma", "-avx512f"], "num-cores": 2}
AVX512 = {"kind": "llvm", "mcpu": "znver4", "mattr": ["+avx2", "+fma", "+avx512f", "+avx512bw", "+avx512vl"],
          "num-cores": 2}


def attention(mask=None, softmax_axis=-1):
    """main(q, k, v) = softmax(q @ k^T [+ mask]) @ v, as the importer writes it (k^T a
    permute_dims; the softmax made TVM's fast one, as every build does)."""
    def build(q, k, v):
        rank = len(q.ty.shape)
        scores = relax.op.matmul(q, relax.op.permute_dims(k, [*range(rank - 2), rank - 1, rank - 2]))
        if mask is not None:
            scores = relax.op.add(scores, relax.const(mask))
        return relax.op.matmul(relax.op.nn.softmax(scores, axis=softmax_axis), v)
    return build


def module(build, *shapes):
    """main(*params) = build(*params), through TVM's fast math as every build's module."""
    return relax.transform.FastMathTransform()(main_module(build, *shapes))


def kernels(mod, target):
    """{kernel name: (rule name, schedule)} after the llvm target's lowering passes."""
    with target:
        lowered = tvm.transform.Sequential(llvm.lowering_passes(target))(mod)
        return {gvar.name_hint: first_rule(func, target) for gvar, func in lowered.functions_items()
                if isinstance(func, tvm.tirx.PrimFunc)}


def local_mask(tokens, reach, seed=0):
    """A banded mask like SVTR's local mixer: 0 within ``reach`` of the query, -inf beyond."""
    index = np.arange(tokens)
    return np.where(np.abs(index[:, None] - index[None, :]) <= reach, 0, -np.inf).astype(np.float32)


def reference(q, k, v, mask=None):
    scores = q.astype(np.float64) @ np.swapaxes(k, -1, -2) + (0 if mask is None else mask)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ v


def data(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).uniform(-1, 1, shape) * scale).astype(np.float32)


# (heads' leading shape, queries = keys, head dim, masked): SVTR's three stages (local masks in
# the first two), PP-OCRv4's neck (15-wide heads), tokens fewer than one vector, no heads axis
SHAPES = [((2, 2), 200, 32, True), ((1, 4), 100, 32, True), ((2, 8), 50, 32, False), ((2, 8), 40, 15, False),
          ((3,), 5, 8, True)]


@pytest.mark.parametrize("lead, tokens, depth, masked", SHAPES)
def test_attention_is_one_kernel_that_matches_numpy(lead, tokens, depth, masked, tmp_path):
    mask = local_mask(tokens, max(1, tokens // 8)) if masked else None
    shape = (*lead, tokens, depth)
    mod = module(attention(mask), shape, shape, shape)
    target = host_cpu_target().tvm_target()
    found = kernels(mod, target)
    assert [rule for rule, _ in found.values()].count("attention") == 1, found
    assert not any("softmax" in name for name in found), found  # the softmax is inside it
    report = {}
    executable = tvm.compile(mod, target, relax_pipeline=host_cpu_target().module.pipeline(target, None, report))
    assert sorted(set(report.values()) - {"injective"}) == ["attention"], report
    vm = relax.VirtualMachine(executable, tvm.cpu())
    # scores up to +-8: the softmax is far from uniform, the max-shift matters
    q, k, v = data(*shape, seed=1, scale=2.0), data(*shape, seed=2, scale=2.0), data(*shape, seed=3)
    got = vm["main"](*[tvm.runtime.tensor(a, tvm.cpu()) for a in (q, k, v)]).numpy()
    np.testing.assert_allclose(got, reference(q, k, v, mask), rtol=1e-5, atol=1e-5)  # fp32 sums of up to 200 terms


def qkv_attention(batch, tokens, heads, depth, mask):
    """SVTR's attention as its ONNX export imports: q, k, v cut out of one [batch, tokens,
    3 * heads * depth] product (reshape, transpose, slices, squeezes), q scaled, the heads'
    outputs transposed back to [batch, tokens, heads * depth]."""
    def build(qkv):
        split = relax.op.permute_dims(relax.op.reshape(qkv, [batch, tokens, 3, heads, depth]), [2, 0, 3, 1, 4])
        bb = relax.BlockBuilder.current()
        q, k, v = (bb.emit(relax.op.squeeze(relax.op.strided_slice(split, axes=[0], begin=[n], end=[n + 1]), axis=[0]))
                   for n in range(3))
        out = attention(mask)(bb.emit(relax.op.multiply(q, relax.const(depth ** -0.5, "float32"))), k, v)
        return relax.op.reshape(relax.op.permute_dims(out, [0, 2, 1, 3]), [batch, tokens, heads * depth])
    return build


def test_q_k_v_are_read_where_the_qkv_product_put_them_and_the_output_as_the_next_product_reads_it():
    """No copy of q, k, v or of the output around the kernel: the slices and transposes are
    index arithmetic inside it, and the reshape to [batch, tokens, heads * depth] that the
    next product (SVTR's projection) reads is a view."""
    batch, tokens, heads, depth = 2, 50, 2, 32
    mask = local_mask(tokens, 6)
    projection = data(heads * depth, heads * depth, seed=5)

    def build(qkv):
        return relax.op.matmul(qkv_attention(batch, tokens, heads, depth, mask)(qkv), relax.const(projection))

    mod = module(build, (batch, tokens, 3 * heads * depth))
    target = host_cpu_target().tvm_target()
    executable = tvm.compile(mod, target, relax_pipeline=host_cpu_target().module.pipeline(target, None, {}))
    called = re.findall(r"^\s*call\s+(\S+)\s+in:", executable.as_text(), re.M)
    assert [name for name in called if not name.startswith("vm.builtin")] == ["attention", "matmul"], called
    qkv = data(batch, tokens, 3 * heads * depth, seed=4, scale=2.0)
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(qkv, tvm.cpu())).numpy()
    q, k, v = qkv.reshape(batch, tokens, 3, heads, depth).transpose(2, 0, 3, 1, 4)
    heads_out = reference(q * np.float32(depth ** -0.5), k, v, mask)
    expected = heads_out.transpose(0, 2, 1, 3).reshape(batch, tokens, -1) @ projection
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("why, build, shapes", [
    ("softmax over the queries", attention(softmax_axis=-2), [(2, 16, 8)] * 3),
    ("a mask per head", attention(mask=np.zeros((2, 16, 16), np.float32)), [(2, 16, 8)] * 3),
    ("keys and values of other lengths", attention(), [(2, 16, 8), (2, 16, 8), (2, 12, 8)]),
])
def test_other_graphs_keep_their_own_kernels(why, build, shapes):
    if why == "keys and values of other lengths":
        pytest.raises(Exception, module, build, *shapes)  # not even a valid graph: checked by Relax
        return
    found = kernels(module(build, *shapes), host_cpu_target().tvm_target())
    assert "attention" not in {rule for rule, _ in found.values()}, (why, found)
    assert any("softmax" in name for name in found), (why, found)


@pytest.mark.parametrize("spec, register, lanes", [(AVX2, "ymm", 8), (AVX512, "zmm", 16)])
def test_register_tiles_are_whole_vectors_of_the_target(spec, register, lanes):
    """Cross-compiled: both products are FMAs on the target's vectors, the score tile with the
    key element as a broadcast operand; the queries are padded to whole vectors of ``lanes``."""
    shape = (2, 2, 100, 32)
    mod = module(attention(local_mask(100, 12)), shape, shape, shape)
    target = tvm.target.Target(spec)
    (rule, sch), = [found for found in kernels(mod, target).values() if found[0] == "attention"]
    padded = -(-100 // lanes) * lanes
    assert re.search(rf"attention_values = T.sblock_alloc_buffer\(\(T.int64\(2\), T.int64\(2\), T.int64\({padded}\)",
                     sch.mod["main"].script())
    executable = tvm.compile(mod, target, relax_pipeline=llvm.pipeline(target))
    asm = executable.mod.imports[0].inspect_source("asm")
    fmas = re.findall(rf"vfmadd\d{{3}}ps\s+([^\n]*%{register}\d+)", asm)
    assert len(fmas) >= 16, len(fmas)
    if register == "zmm":
        assert any("{1to16}" in operands for operands in fmas)  # the broadcast key element
