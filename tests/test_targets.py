"""Targets (the registry and one module per kind), the input spec and TVM's CPU thread pool."""
import os
import sys

import pytest

from cli_runs import run_process
from svtr_toolkit import cli
from svtr_toolkit.compile import targets
from svtr_toolkit.errors import ToolkitError


@pytest.mark.parametrize("text, expected", [("x:32,3,64,256", ("x", (32, 3, 64, 256))), ("in.0:1,3,48,320", ("in.0", (1, 3, 48, 320)))])
def test_parse_input_spec(text, expected):
    assert cli.parse_input_spec(text) == expected


@pytest.mark.parametrize("text", ["x", "x:", ":32,3,64,256", "x:32,3,64", "x:32,3,64,256,1", "x:32,3,a,256", "x:0,3,64,256", "x:-1,3,64,256"])
def test_parse_input_spec_rejects(text):
    with pytest.raises(ToolkitError, match="name:N,C,H,W"):
        cli.parse_input_spec(text)


def test_auto_target_prefers_igie_then_cuda_then_cpu(monkeypatch):
    monkeypatch.setattr(targets.iluvatar, "available", lambda: True)
    monkeypatch.setattr(targets.cuda, "available", lambda: True)
    assert targets.select_target("auto").kind == "iluvatar"
    monkeypatch.setattr(targets.iluvatar, "available", lambda: False)
    monkeypatch.setattr(targets.cuda, "resolve", lambda remote=None: ({"kind": "cuda"}, "gpu"))
    assert targets.select_target("auto").kind == "cuda"
    monkeypatch.setattr(targets.cuda, "available", lambda: False)
    assert targets.select_target("auto").kind == "llvm"


def test_host_target_uses_real_cpu_and_cores():
    import tvm

    target = targets.select_target("llvm")
    assert target.spec["mcpu"] == tvm.target.codegen.llvm_get_system_cpu()
    assert target.spec["num-cores"] == len(os.sched_getaffinity(0))
    assert target.tvm_target().kind.name == "llvm"


THREADS_PROBE = """
import os, tvm
from svtr_toolkit import threads
tvm.cpu(0)
print(threads.use_all_cpu_cores(), tvm.get_global_func("runtime.NumThreads")())
"""


@pytest.mark.parametrize("user_threads", [None, "1"])
def test_cpu_engines_get_every_core_unless_the_user_says(user_threads):
    # TVM alone would take half the logical CPUs on x86 (one thread on a 2-vCPU VM)
    ran = run_process([sys.executable, "-c", THREADS_PROBE], env={"TVM_NUM_THREADS": user_threads})
    assert ran.code == 0, ran.err
    out = ran.out.split()
    expected = int(user_threads) if user_threads else len(os.sched_getaffinity(0))
    assert out == [str(expected), str(expected)]


def test_unknown_and_unavailable_targets(monkeypatch):
    with pytest.raises(ToolkitError, match="unknown target 'tpu'"):
        targets.select_target("tpu")
    monkeypatch.setattr(targets.iluvatar, "available", lambda: False)
    with pytest.raises(ToolkitError, match="IGIE"):
        targets.select_target("iluvatar")


def test_cuda_cross_compile_target_needs_no_device(monkeypatch):
    monkeypatch.setenv("SVTR_CUDA_ARCH", "sm_90")
    target = targets.select_target("cuda")
    assert target.spec["arch"] == "sm_90" and target.tvm_target().kind.name == "cuda"




def test_every_target_module_has_the_same_small_interface():
    assert targets.TARGET_CHOICES == ("auto", *targets.TARGETS)
    for kind, module in targets.TARGETS.items():
        assert module.KIND == kind
        for name in ("available", "resolve", "pipeline"):
            assert callable(getattr(module, name)), (kind, name)
        assert isinstance(module.TUNED, bool)


def test_a_target_is_its_spec():
    target = targets.select_target("llvm")
    assert target.kind == target.spec["kind"] == "llvm" and target.module is targets.llvm
