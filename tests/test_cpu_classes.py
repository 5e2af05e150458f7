"""Every decision the toolkit makes from a CPU's features, taken for each class of CPU it has
run on, from that class's recorded /proc/cpuinfo (tests/data/cpuinfo/README.md): so a test
suite run on one class also checks the others' logic, and the host's own class is one row.

A test elsewhere whose expectation depends on the host CPU derives it from the host's
features (``host()``) or pins its target (cross-compiled); this file holds the table that
says what each class must get.
"""
from dataclasses import dataclass
from pathlib import Path

import pytest

from svtr_toolkit.cpu_features import parse_cpuinfo

tvm = pytest.importorskip("tvm")

CPUINFO = Path(__file__).parent / "data" / "cpuinfo"


@dataclass(frozen=True)
class CpuClass:
    file: str
    mtriple: str
    mcpu: str
    isa_level: str
    fp32_lanes: int
    vector_registers: int
    fp16_arithmetic: bool
    panel_width_96: int | None  # register tile width a [K, 96] fp32 weight is packed at (None: one tile, left alone)

    def cpu(self):
        return parse_cpuinfo((CPUINFO / self.file).read_text(), cores=2)

    def spec(self):
        return {"kind": "llvm", "mtriple": self.mtriple, "mcpu": self.mcpu, "num-cores": 2,
                "mattr": self.cpu().llvm_mattr()}


CLASSES = {
    "zen3-avx2": CpuClass("amd_epyc_avx2.txt", "x86_64-linux-gnu", "znver3", "avx2", 8, 16, False, 16),
    "zen4-avx512-bf16": CpuClass("amd_epyc_zen4_avx512.txt", "x86_64-linux-gnu", "znver4", "avx512", 16, 32,
                                 False, 48),
    "xeon-avx512-fp16": CpuClass("xeon_avx512_fp16.txt", "x86_64-linux-gnu", "sapphirerapids", "avx512fp16", 16,
                                 32, True, 48),
    "arm-neoverse-n1": CpuClass("neoverse_n1_arm.txt", "aarch64-linux-gnu", "neoverse-n1", "neon", 4, 32, True, 16),
}


@pytest.fixture(params=list(CLASSES), ids=list(CLASSES))
def cls(request):
    return CLASSES[request.param]


def test_features_and_register_file(cls):
    from svtr_toolkit.compile.schedule_rules.common import CpuModel

    cpu = cls.cpu()
    assert cpu.isa_level == cls.isa_level and cpu.has_fp16_arithmetic == cls.fp16_arithmetic
    shape = CpuModel.of(tvm.target.Target(cls.spec()))
    assert (shape.lanes(32), shape.vector_registers) == (cls.fp32_lanes, cls.vector_registers)
    assert shape.lanes(16) == 2 * cls.fp32_lanes


def test_fp16_plan_follows_fp16_arithmetic(cls, monkeypatch):
    from svtr_toolkit.compile import fp16_accumulate
    from svtr_toolkit.compile.precision import reduced_mode
    from svtr_toolkit.compile.targets import llvm

    monkeypatch.delenv(fp16_accumulate.ENV_MODE, raising=False)
    monkeypatch.delenv(fp16_accumulate.ENV_CHUNK, raising=False)
    accumulate = fp16_accumulate.setting("fp16", cls.spec())
    assert (accumulate is not None) == cls.fp16_arithmetic
    assert reduced_mode("fp16", cls.spec(), accumulate) == "storage"  # the products in fp16 where it has fp16
    note = llvm.precision_note(cls.spec(), "fp16", accumulate)
    assert (note is None) == cls.fp16_arithmetic  # said wherever fp16 is not fp16 arithmetic
    assert fp16_accumulate.setting("fp32", cls.spec()) is None


def test_matmul_weight_panels_follow_the_vector_width(cls):
    import numpy as np
    from tvm import relax

    from svtr_toolkit.compile import relax_passes

    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType((2, 40, 24), "float32"))
    with bb.function("main", [a]):
        with bb.dataflow():
            w = relax.const(np.zeros((24, 96), np.float32))
            out = bb.emit_output(relax.op.matmul(a, w))
        bb.emit_func_output(out)
    target = tvm.target.Target(cls.spec())
    with target:
        mod = relax_passes.pack_weights(target)(bb.get())
    kernels = [func for gv, func in mod.functions_items() if gv.name_hint.startswith("matmul_packed")]
    if cls.panel_width_96 is None:
        assert not kernels
    else:
        (kernel,) = kernels
        panels = [int(d) for d in kernel.params[1].ty.shape] if hasattr(kernel.params[1], "ty") else \
            [int(d) for d in kernel.buffer_map[kernel.params[1]].shape]
        assert panels == [96 // cls.panel_width_96, 24, cls.panel_width_96]


def test_a_remote_of_the_class_refuses_engines_for_features_it_lacks(cls):
    from svtr_toolkit.rpc import RemoteDevice, TrackerAddress

    device = RemoteDevice(TrackerAddress("127.0.0.1", 9190, "k"), None,
                          {"cpuinfo": (CPUINFO / cls.file).read_text(), "arch": cls.mtriple.split("-")[0], "cores": 2})
    others = [c for c in CLASSES.values() if c.mtriple == cls.mtriple and c is not cls]
    for other in others:
        missing = device.missing_features(other.spec()["mattr"])
        assert missing == sorted(other.cpu().features - cls.cpu().features)
    assert device.missing_features(cls.spec()["mattr"]) == []

