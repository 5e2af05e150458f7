"""Which default rule schedules every kernel of both models, for the host CPU and cross-compiled
for the other recorded CPU classes (lowering and scheduling only, nothing compiled to code).

Each kernel's class is read from its TIR by this file's own small classifier, not from the
rules' code: a rule that stopped matching its kernels (a typo raising inside it, a changed
block structure) would hand them to a slower rule, and the engines would still be correct."""
import os

import pytest

tvm = pytest.importorskip("tvm")

from svtr_toolkit.compile.targets import BuildTarget, host_cpu_target  # noqa: E402
from test_cpu_classes import CLASSES  # noqa: E402


def blocks_of(func):
    """[(block name, is a reduction, the shapes of the buffers it reads)] in program order."""
    sch = tvm.s_tir.Schedule(func)
    found = []
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        node = sch.get(block)
        reduction = any(int(iv.iter_type) == 2 for iv in node.iter_vars)
        found.append((node.name_hint, reduction, [[int(d) for d in r.source.shape] for r in node.reads]))
    return found


def expected_rule(name: str, func, mattr) -> str:
    """The rule a kernel must get, from its blocks (and for bf16 products, the target's
    features: AMX tiles where it has them, else AVX-512 BF16 dot products; bf16 attention
    with those dot products)."""
    blocks = blocks_of(func)
    names = [b[0] for b in blocks]
    reductions = [b for b in blocks if b[1]]
    if "bf16_matmul" in names:
        return "amx-bf16" if "+amx-bf16" in mattr else "avx512-bf16"
    if any(n.startswith("chunk_partial") for n in names):
        return "chunked-contraction"
    if "attention_scores" in names and "attention_values" in names:
        if "attention_keys_bf16" in names:  # bf16 dot products: only where the target has them
            return "attention-bf16" if "+avx512bf16" in mattr else "no bf16 attention kernel without avx512bf16"
        return "attention"
    if not reductions:
        return "injective"
    if len(reductions) > 1 or "softmax" in name:
        return "row-reduction"  # softmax's max and sum, layer-norm statistics and their use
    block, _, reads = reductions[0]
    if block.startswith(("matmul", "conv2d_nhwc", "conv2d")) and not block.startswith("group_conv2d"):
        return "contraction"
    if block.startswith("group_conv2d") or "depthwise" in block:
        return "depthwise"
    if block.startswith(("pool", "T_pool")) or (len(reads[0]) == 4 and "red" in block):
        return "tiled-reduction"  # channels-last pooling and spatial means
    return "row-reduction"


def rules_of(model, shape, precision, spec):
    from svtr_toolkit.compile import fp16_accumulate
    from svtr_toolkit.compile.build import _relax_module
    from svtr_toolkit.compile.onnx_passes import load_onnx
    from svtr_toolkit.compile.schedule_rules import first_rule
    from svtr_toolkit.compile.targets import llvm

    target = BuildTarget(spec, "test").tvm_target()
    accumulate = fp16_accumulate.setting(precision, spec, mode="auto")
    mod, _ = _relax_module(load_onnx(model), "x", shape, precision, spec, accumulate)
    lowered = llvm.lower(mod, target)
    found = {}
    with target:
        for gvar, func in lowered.functions_items():
            if isinstance(func, tvm.tirx.PrimFunc):
                rule, sch = first_rule(func, target)
                found[gvar.name_hint] = (rule, expected_rule(gvar.name_hint, func, spec.get("mattr") or []),
                                         parallel_tasks(sch))
    return found


def parallel_tasks(sch):
    """The fewest iterations of any parallel loop of the schedule (None without one)."""
    import re

    if sch is None:
        return None
    extents = [int(e) for e in re.findall(r"T\.parallel\(T\.int64\((\d+)\)\)", sch.mod["main"].script())]
    return min(extents) if extents else None


@pytest.fixture(scope="module")
def models(golden_export, tmp_path_factory):
    from svtr_toolkit.paths import in_repo
    from svtr_toolkit.prepare import export, registry_models

    found = {"svtr": (str(golden_export.out_dir / export.OPT_ONNX), (2, 3, 64, 256))}
    ppocr = in_repo("PPOCRv4_rec.onnx")
    if not os.path.isfile(ppocr):
        try:
            ppocr = registry_models.fetch_ppocrv4(str(tmp_path_factory.mktemp("m") / "p.onnx"), log=lambda *_: None)
        except Exception:  # no registry access: SVTR alone
            ppocr = None
    if ppocr:
        found["ppocrv4"] = (ppocr, (2, 3, 48, 320))
    return found


# every precision on the host; on the other recorded x86 classes, the precision whose kernels
# depend most on the class (AVX2 register tiles; bf16 emulated, with dot products and with AMX
# tiles; fp16 with fp16 arithmetic)
# with fp32 at batch 1 too, where the products of one row per image lose their row axis
CASES = [("host", "fp32", 2), ("host", "fp32", 1), ("host", "fp16", 2), ("host", "bf16", 2), ("zen3-avx2", "fp32", 2),
         ("zen3-avx2", "bf16", 2), ("zen4-avx512-bf16", "bf16", 2), ("xeon-avx512-fp16", "bf16", 2), ("xeon-avx512-fp16", "fp16", 2)]


@pytest.mark.parametrize("cpu, precision, batch", CASES, ids=[f"{c}-{p}-b{n}" for c, p, n in CASES])
@pytest.mark.parametrize("model", ["svtr", "ppocrv4"])
def test_every_kernel_gets_the_rule_of_its_class(models, model, cpu, precision, batch):
    if model not in models:
        pytest.skip("PP-OCRv4 model not available here (no registry access)")
    path, shape = models[model]
    shape = (batch, *shape[1:])
    spec = host_cpu_target().spec if cpu == "host" else CLASSES[cpu].spec()
    found = rules_of(path, shape, precision, spec)
    wrong = {name: rules[:2] for name, rules in found.items() if rules[0] != rules[1]}
    assert not wrong, wrong
    assert "parallel-fallback" not in {rule for rule, _, _ in found.values()}
    # every kernel feeds at least two cores, at batch 1 too (a product of one image's rows
    # blocked over K ran as one task)
    alone = {name: tasks for name, (_, _, tasks) in found.items() if tasks is not None and tasks < 2}
    assert not alone, alone
