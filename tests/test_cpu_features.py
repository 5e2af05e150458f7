"""CPU feature detection from cpuinfo texts and tuning-database choice from recorded features."""
import json
import os

import pytest

from svtr_toolkit.cpu_features import CpuFeatures, parse_cpuinfo
from svtr_toolkit.compile.tuning import selection

CPUINFO = os.path.join(os.path.dirname(__file__), "data", "cpuinfo")
TVM = "0.27.0.post1"


def cpuinfo(name, **kwargs):
    with open(os.path.join(CPUINFO, name), encoding="utf-8") as fh:
        return parse_cpuinfo(fh.read(), **kwargs)


AVX2 = cpuinfo("amd_epyc_avx2.txt", cores=2)
AVX512 = cpuinfo("xeon_avx512_fp16.txt")
ARM = cpuinfo("neoverse_n1_arm.txt")


def test_features_come_from_the_flags():
    assert AVX2.arch == "x86_64" and AVX2.isa_level == "avx2"
    assert {"avx2", "fma", "f16c"} <= AVX2.features and not {f for f in AVX2.features if f.startswith("avx512")}
    assert not AVX2.has_fp16_arithmetic
    assert AVX512.isa_level == "avx512fp16" and AVX512.has_fp16_arithmetic
    assert {"avx512f", "avx512bf16", "avx512fp16", "avxvnni", "amx-tile", "amx-bf16"} <= AVX512.features
    assert AVX512.cores == 2  # two processor entries
    assert ARM.arch == "aarch64" and {"neon", "fullfp16", "dotprod"} <= ARM.features
    assert ARM.has_fp16_arithmetic and "sve" not in ARM.features and ARM.isa_level == "neon"


def test_llvm_attributes_switch_missing_features_off():
    mattr = AVX2.llvm_mattr()
    assert "+avx2" in mattr and "+fma" in mattr
    assert "-avx512f" in mattr and "-avx512fp16" in mattr and "-amx-tile" in mattr
    assert "+avx512fp16" in AVX512.llvm_mattr() and "+amx-tile" in AVX512.llvm_mattr()
    assert "+dotprod" in ARM.llvm_mattr() and "-sve" in ARM.llvm_mattr()
    assert not any(a.lstrip("+-").startswith("avx") for a in ARM.llvm_mattr())


def test_a_tvm_target_built_from_the_flags_has_the_flags_vector_width():
    tvm = pytest.importorskip("tvm")
    from svtr_toolkit.compile.schedule_rules.common import CpuModel

    for cpu, bits in ((AVX2, 256), (AVX512, 512)):
        target = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64", "mattr": cpu.llvm_mattr()})
        assert CpuModel.of(target).vector_bits == bits


def make_db(root, name, cpu: CpuFeatures, tvm=TVM, workloads=("x:32,3,64,256 fp32",), cores=None):
    folder = root / name
    folder.mkdir()
    info = selection.manifest(cpu, tvm, workloads)
    if cores:
        info["cores"] = cores
    (folder / selection.MANIFEST).write_text(json.dumps(info))
    return str(folder)


def test_exact_match_wins_over_a_compatible_one(tmp_path):
    subset = CpuFeatures("x86_64", frozenset(AVX2.features - {"vaes"}), cores=2)
    compatible = make_db(tmp_path, "a-subset", subset)
    exact = make_db(tmp_path, "b-exact", AVX2)
    choice = selection.choose(str(tmp_path), AVX2, TVM, "x:32,3,64,256 fp32")
    assert choice.folder == exact and "this CPU class" in choice.why
    assert (compatible, "a better match was found") in choice.rejected


def test_compatible_database_is_used_and_says_why(tmp_path):
    older = CpuFeatures("x86_64", frozenset(AVX512.features - {"avx512fp16", "amx-tile", "amx-bf16", "amx-int8"}), cores=2)
    folder = make_db(tmp_path, "x86_64-avx512-2c", older)
    choice = selection.choose(str(tmp_path), AVX512, TVM, "x:8,3,64,256 fp32")
    assert choice.folder == folder
    assert "subset" in choice.why and "x:8,3,64,256 fp32 was not tuned there" in choice.why


@pytest.mark.parametrize("db_cpu, host, reason", [
    (AVX512, AVX2, "which this CPU lacks"),  # an AVX-512 database on an AVX2-only host
    (ARM, AVX2, "tuned on aarch64"),
    (AVX2, ARM, "tuned on x86_64"),
])
def test_incompatible_databases_are_never_used(tmp_path, db_cpu, host, reason):
    make_db(tmp_path, "other", db_cpu)
    choice = selection.choose(str(tmp_path), host, TVM)
    assert choice.folder is None
    assert reason in choice.rejected[0][1] and reason in choice.line()


def test_other_tvm_release_and_missing_manifest_are_refused(tmp_path):
    make_db(tmp_path, "old-tvm", AVX2, tvm="0.26.0")
    (tmp_path / "no-manifest").mkdir()
    choice = selection.choose(str(tmp_path), AVX2, TVM)
    assert choice.folder is None
    reasons = dict((os.path.basename(f), why) for f, why in choice.rejected)
    assert "TVM 0.26.0" in reasons["old-tvm"] and "target.json" in reasons["no-manifest"]


def test_shipped_databases_describe_what_they_were_tuned_on():
    root = os.path.join(os.path.dirname(os.path.dirname(__file__)), "tuning")
    folders = [os.path.join(root, d) for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))]
    if not folders:
        pytest.skip("no tuning database is shipped (tuning/README.md says why)")
    for folder in folders:
        info = selection.DatabaseInfo.read(folder)
        assert info is not None, folder
        assert info.arch in ("x86_64", "aarch64") and info.features and info.workloads
