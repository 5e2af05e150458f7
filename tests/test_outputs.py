"""Outputs: a run's outputs never destroy its inputs, only regular files and new
paths are written, unfinished work is removed only when provably dead, and a full or read-only
disk is one line, found before the work where it can be.

Every case runs the real command line on real files (in-process where a new Python adds nothing);
device nodes come from mknod, full and read-only disks from a tmpfs mounted in a private mount
namespace (unshare), other containers from a private PID namespace.
"""
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

from cli_runs import REPO, run_main, run_process, start_process
from tiny_models import make_fake_onnx, write_lmdb

OUTPUTS_ARE_NOT_INPUTS = "a run's outputs are never its inputs"


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("outputs")
    write_lmdb(tmp / "data" / "toy", ["hotel", "grand"])
    shutil.copy(REPO / "rec_svtr_tiny_6local_6global_stn_en.yml", tmp / "rec.yml")
    return {"tmp": tmp, "data": tmp / "data", "config": tmp / "rec.yml", "model": make_fake_onnx(tmp / "hotel.onnx")}


def infer(case, *args):
    return run_main("inference", "--engine", case["model"], "--batchsize", 2, "--datasets", case["data"],
                    "--no_progress", *args)


# --------------------------------------------------------------------- outputs are never inputs
@pytest.mark.parametrize("which", ["config", "model", "data.mdb"])
def test_a_report_that_is_an_input_is_refused_and_the_input_kept(case, which):
    target = {"config": case["config"], "model": case["model"], "data.mdb": case["data"] / "toy" / "data.mdb"}[which]
    before = digest(target)
    ran = infer(case, "--config", case["config"], "--report", target)
    assert ran.code == 2 and OUTPUTS_ARE_NOT_INPUTS in ran.error
    assert "metricResult" not in ran.out, "refused before the evaluation"
    assert digest(target) == before


def test_a_hard_link_to_an_input_is_the_input(case, tmp_path):
    os.link(case["config"], tmp_path / "report.json")
    ran = infer(case, "--config", case["config"], "--report", tmp_path / "report.json")
    assert ran.code == 2 and "is the input --config" in ran.error


def test_an_engine_path_that_is_the_model_is_refused_before_the_build(case, tmp_path):
    model = Path(shutil.copy(case["model"], tmp_path / "m.onnx"))
    before = digest(model)
    ran = run_main("build_engine", "--model_path", model, "--input", "x:2,3,64,256", "--precision", "fp32",
                   "--target", "llvm", "--engine_path", model)
    assert ran.code == 2 and "--engine_path" in ran.error and OUTPUTS_ARE_NOT_INPUTS in ran.error
    assert digest(model) == before and "building" not in ran.out


def test_the_other_outputs_are_never_their_inputs(case, built, tmp_path):
    engine = Path(shutil.copy(built[0], tmp_path / "e.so"))
    ran = run_main("profile_engine", "--engine", engine, "--json", engine)
    assert ran.code == 2 and "--json" in ran.error and OUTPUTS_ARE_NOT_INPUTS in ran.error
    model = Path(shutil.copy(case["model"], tmp_path / "m.onnx"))
    ran = run_main("emulate_fp16", "--model_path", model, "--input", "x:2,3,64,256", "--out", model)
    assert ran.code == 2 and "--out" in ran.error and OUTPUTS_ARE_NOT_INPUTS in ran.error
    assert digest(engine) == digest(built[0]) and digest(model) == digest(case["model"])


# --------------------------------------------------------------------- regular files and new paths only
def test_a_device_node_fifo_or_symlink_report_is_refused_and_left_as_it_is(case, tmp_path):
    node = tmp_path / "null"
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod of a character device needs root (CAP_MKNOD)")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "kept.json").write_text("kept\n")
    (tmp_path / "link.json").symlink_to(tmp_path / "kept.json")
    for name, kind in (("null", "a character device"), ("fifo", "a FIFO"), ("link.json", "a symlink")):
        ran = infer(case, "--report", tmp_path / name)
        assert ran.code == 2 and f"--report {tmp_path / name} is {kind}" in ran.error, name
    assert stat.S_ISCHR(os.lstat(node).st_mode) and os.lstat(node).st_rdev == os.makedev(1, 3)
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)
    assert os.path.islink(tmp_path / "link.json") and (tmp_path / "kept.json").read_text() == "kept\n"


def test_every_atomic_write_refuses_what_it_would_replace(tmp_path):
    """The library's own guard, for writers without a command-line check (an engine build)."""
    from svtr_toolkit.errors import ToolkitError
    from svtr_toolkit.files import write_bytes_atomically

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link.so").symlink_to(tmp_path / "elsewhere.so")
    for name in ("fifo", "link.so"):
        with pytest.raises(ToolkitError, match="outputs are written only to regular files|would replace the link"):
            write_bytes_atomically(tmp_path / name, b"engine")
    assert not (tmp_path / "elsewhere.so").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "link.so"]


def test_an_empty_output_path_is_an_error_not_no_output(case):
    ran = infer(case, "--report", "")
    assert ran.code == 2 and ran.error == "error: argument --report: an empty path is given"


# --------------------------------------------------------------------- only provably dead work is removed
def staging_writer(folder, *prefix) -> subprocess.Popen:
    """A process holding a staging folder in ``folder`` (as a build or export does) until killed."""
    code = ("import sys, time; from svtr_toolkit.files import StagingFolder\n"
            f"with StagingFolder({str(folder)!r}) as s:\n"
            "    print(s.path, flush=True); time.sleep(600)")
    proc = start_process([*prefix, sys.executable, "-c", code], env={"PYTHONPATH": REPO}, stderr=None)
    line = proc.stdout.readline().strip()
    assert line, "the writer did not start"
    return proc


def dead_pid() -> int:
    child = start_process([sys.executable, "-c", "pass"])
    child.communicate()
    return child.pid


def test_users_files_that_look_like_leftovers_are_never_removed(tmp_path):
    from svtr_toolkit.files import write_bytes_atomically

    dead = dead_pid()
    (tmp_path / f".partial-notes.{dead}.txt").write_text("a user's file")
    (tmp_path / f".svtr-export-{dead}-photos").mkdir()
    (tmp_path / f".svtr-export-{dead}-photos" / "p.jpg").write_bytes(b"x")
    (tmp_path / ".svtr-staging-mine").mkdir()  # the toolkit's name, without its owner's mark and lock
    (tmp_path / ".svtr-staging-mine" / ".owner").write_text("not the toolkit's mark")
    write_bytes_atomically(tmp_path / "e.so", b"engine")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".partial-notes.{dead}.txt", f".svtr-export-{dead}-photos", ".svtr-staging-mine", "e.so"])


def test_a_killed_writers_staging_folder_is_removed_and_a_live_ones_kept(tmp_path):
    from svtr_toolkit.files import write_bytes_atomically

    killed, alive = staging_writer(tmp_path), staging_writer(tmp_path)
    try:
        killed.kill()
        killed.wait()
        write_bytes_atomically(tmp_path / "e.so", b"engine")
        left = sorted(p.name for p in tmp_path.iterdir())
        assert len(left) == 2 and "e.so" in left, "the live writer's folder stays, the killed one's goes"
    finally:
        alive.kill()
        alive.wait()
    write_bytes_atomically(tmp_path / "e.so", b"engine")
    assert [p.name for p in tmp_path.iterdir()] == ["e.so"]


def test_another_containers_work_in_progress_is_kept(tmp_path):
    """A writer in another PID namespace (a container sharing the folder): its PID means nothing
    here, and its folder stays while it lives."""
    from svtr_toolkit.files import write_bytes_atomically

    if run_process(["unshare", "--pid", "--fork", "true"]).code != 0:
        pytest.skip("unshare --pid is not permitted here")
    other = staging_writer(tmp_path, "unshare", "--pid", "--fork", "--kill-child")
    try:
        write_bytes_atomically(tmp_path / "e.so", b"engine")
        assert len([p for p in tmp_path.iterdir() if p.name.startswith(".svtr-staging-")]) == 1
    finally:
        other.kill()  # unshare's --kill-child takes the writer with it
        other.wait()
    deadline = time.monotonic() + 10
    while len(list(tmp_path.iterdir())) > 1 and time.monotonic() < deadline:
        write_bytes_atomically(tmp_path / "e.so", b"engine")
        time.sleep(0.1)
    assert [p.name for p in tmp_path.iterdir()] == ["e.so"]


# --------------------------------------------------------------------- full and read-only disks
def private_tmpfs(folder, size, *command, options=""):
    """``command`` with a tmpfs of ``size`` mounted on ``folder`` in a private mount namespace."""
    folder.mkdir(exist_ok=True)
    args = " ".join(f"'{a}'" for a in map(str, command))
    script = f"mount -t tmpfs -o size={size}{options} none '{folder}' && exec {args}"
    probe = run_process(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=4k none '{folder}'"])
    if probe.code != 0:
        pytest.skip(f"a private tmpfs cannot be mounted here: {probe.err.strip()}")
    return run_process(["unshare", "-m", "sh", "-c", script])


def test_a_full_disk_during_an_engine_build_is_one_line(tiny, tmp_path):
    ran = private_tmpfs(tmp_path / "full", "16k", sys.executable, REPO / "build_engine.py", "--model_path", tiny,
                        "--input", "x:2,3,8,16", "--precision", "fp32", "--target", "llvm", "--skip_parity",
                        "--engine_path", tmp_path / "full" / "e.so")
    assert ran.code == 2 and ran.error == f"error: no space left on {tmp_path / 'full'} (the disk holding it is " \
                                          f"full): free some space or write elsewhere"


def test_a_temporary_folder_too_small_for_the_compile_is_refused_up_front(tmp_path):
    big = onnx.load(str(make_fake_onnx(tmp_path / "m.onnx")))
    big.metadata_props.add(key="padding", value="x" * 40000)
    onnx.save(big, str(tmp_path / "big.onnx"))
    ran = private_tmpfs(tmp_path / "tmp", "16k", "env", f"TMPDIR={tmp_path / 'tmp'}", sys.executable,
                        REPO / "build_engine.py", "--model_path", tmp_path / "big.onnx", "--input", "x:2,3,64,256",
                        "--precision", "fp32", "--target", "llvm", "--engine_path", tmp_path / "e.so")
    assert ran.code == 2 and ran.error.startswith(f"error: no space left on {tmp_path / 'tmp'}: the compiler's objects")
    assert "building" not in ran.out


def noise_images(folder, count=20):
    import cv2
    import numpy as np

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):  # about 4.9 KB each, two LMDB pages
        (folder / f"{i}.png").write_bytes(cv2.imencode(".png", rng.integers(0, 255, (40, 40, 3), np.uint8))[1].tobytes())
    (folder / "gt.txt").write_text("".join(f"{i}.png\tword\n" for i in range(count)))
    return folder / "gt.txt"


@pytest.mark.parametrize("size, said", [
    ("128k", "(the disk holding it is full)"),  # the records fit, the LMDB's pages do not: found while writing
    ("64k", ": the LMDB needs about"),  # the records alone do not fit: refused before writing
])
def test_a_full_disk_during_lmdb_create_says_so(tmp_path, size, said):
    labels = noise_images(tmp_path / "imgs")
    ran = private_tmpfs(tmp_path / "full", size, sys.executable, REPO / "tools" / "lmdb_tool.py", "create",
                        "--images", tmp_path / "imgs", "--labels", labels, "--out_dir", tmp_path / "full" / "db")
    assert ran.code == 2 and ran.error.startswith(f"error: no space left on {tmp_path / 'full'}") and said in ran.error


def test_an_output_folder_that_cannot_be_written_is_found_before_the_work(built, tmp_path):
    labels = noise_images(tmp_path / "imgs", 2)
    ran = private_tmpfs(tmp_path / "ro", "64k", sys.executable, REPO / "tools" / "lmdb_tool.py", "create",
                        "--images", tmp_path / "imgs", "--labels", labels, "--out_dir", tmp_path / "ro" / "db",
                        options=",ro")
    assert ran.code == 2 and ran.error == (f"error: --out_dir {tmp_path / 'ro' / 'db'}: cannot write in "
                                           f"{tmp_path / 'ro'} (a read-only file system)")
    ran = private_tmpfs(tmp_path / "ro", "64k", sys.executable, REPO / "tools" / "profile_engine.py", "--engine",
                        built[0], "--runs", 1000000, "--json", tmp_path / "ro" / "p.json", options=",ro")
    assert ran.code == 2 and ran.error.startswith(f"error: --json {tmp_path / 'ro' / 'p.json'}: cannot write in")
    assert "kernels" not in ran.out, "refused before a million profiled runs"


def test_an_out_dir_that_is_a_symlink_is_refused(tmp_path):
    labels = noise_images(tmp_path / "imgs", 2)
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    ran = run_main("lmdb_tool", "create", "--images", tmp_path / "imgs", "--labels", labels,
                   "--out_dir", tmp_path / "link")
    assert ran.code == 2 and f"--out_dir {tmp_path / 'link'} is a symlink (to {tmp_path / 'target'})" in ran.error
    assert os.path.islink(tmp_path / "link") and list((tmp_path / "target").iterdir()) == []

