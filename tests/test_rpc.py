"""--rpc: engines built for, run on and tuned on devices behind TVM's RPC tracker.

A tracker and servers run on 127.0.0.1 as separate processes (``tools/rpc_local.LocalPool``), each server
with one TVM thread, as two single-core boards would. Every run through RPC is compared with
the same run here.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_runs import run_main, run_process, start_process
from rpc_local import LocalPool, free_port
from shared_data import shared_path
from svtr_toolkit import rpc
from svtr_toolkit.errors import ToolkitError
from tiny_models import SHAPE, make_fake_onnx, tiny_recogniser, write_lmdb

KEY = "svtr-test"


def sessions_served(pool) -> list:
    """Per server, the sessions its own log says it served."""
    return [Path(pool.log_path(f"server{i}")).read_text().count("connected from") for i in range(pool.count)]


@pytest.fixture(scope="module")
def pool():
    with LocalPool(servers=2, key=KEY, threads=1) as started:
        yield started


@pytest.mark.parametrize("text", ["", "host", "host:9190", "host:port:key", "host:0:key", "host:9190:", ":9190:k"])
def test_a_malformed_address_is_refused(text):
    with pytest.raises(ToolkitError, match="--rpc must look like HOST:PORT:KEY"):
        rpc.TrackerAddress.parse(text)


def test_address_round_trips():
    address = rpc.TrackerAddress.parse("10.0.0.5:9190:svtr-cpu")
    assert (address.host, address.port, address.key) == ("10.0.0.5", 9190, "svtr-cpu")
    assert str(address) == "10.0.0.5:9190:svtr-cpu"


def test_an_unreachable_tracker_is_one_error_line(tmp_path):
    port = free_port()  # nothing listens there
    model = make_fake_onnx(tmp_path / "fake.onnx")
    result = run_main("build_engine", "--model_path", model, "--input", "x:2,3,64,256", "--precision", "fp32",
                      "--engine_path", tmp_path / "e.so", "--rpc", f"127.0.0.1:{port}:{KEY}")
    assert result.one_error() == (
        f"error: cannot reach the RPC tracker at 127.0.0.1:{port} ([Errno 111] Connection refused); start one "
        f"with `python -m tvm.exec.rpc_tracker --port {port}` or fix --rpc")
    assert result.err.strip().splitlines() == [result.error]
    assert not (tmp_path / "e.so").exists()


def test_a_key_without_servers_names_the_keys_there(pool):
    with pytest.raises(ToolkitError, match=rf"no RPC server is registered under key 'other' .* \(keys there: '{KEY}'\)"):
        rpc.connect(rpc.TrackerAddress("127.0.0.1", pool.port, "other"))


def test_no_free_server_within_the_wait_says_how_many_are_busy(pool):
    held = [rpc.connect(pool.address) for _ in range(pool.count)]
    try:
        start = time.monotonic()
        with pytest.raises(ToolkitError, match=rf"no free RPC server under key '{KEY}' within 1 s: 2 server\(s\) "
                                               rf"registered under key '{KEY}', 2 busy"):
            rpc.connect(pool.address, wait_s=1)
        assert time.monotonic() - start < 10
    finally:
        for device in held:
            device.close()
    rpc.connect(pool.address, wait_s=30).close()  # the withdrawn request took no server


def test_a_server_on_another_tvm_version_is_refused(pool, monkeypatch):
    import tvm

    theirs = tvm.__version__
    monkeypatch.setattr(tvm, "__version__", "0.0.1")
    with pytest.raises(ToolkitError, match=rf"runs TVM {theirs} and this machine TVM 0.0.1: .* install "
                                           rf"apache-tvm==0.0.1 there"):
        rpc.connect(pool.address)


def test_a_plain_tvm_server_is_asked_to_describe_itself(pool):
    port = free_port()
    plain = start_process([sys.executable, "-m", "tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{pool.port}",
                           "--key", "plain", "--host", "127.0.0.1", "--port", port, "--port-end", port + 100],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        address = rpc.TrackerAddress("127.0.0.1", pool.port, "plain")
        deadline = time.monotonic() + 60
        while rpc.tracker_state(address).registered == 0 and time.monotonic() < deadline and plain.poll() is None:
            time.sleep(0.2)
        with pytest.raises(ToolkitError, match="does not describe itself .* tools/rpc_server.py"):
            rpc.connect(address)
    finally:
        os.killpg(plain.pid, 9)
        plain.wait()


def test_the_device_describes_its_cpu_and_the_build_targets_it(pool):
    from svtr_toolkit.compile import targets
    from svtr_toolkit.cpu_features import host

    device = rpc.connect(pool.address)
    try:
        assert device.cpu.features == host().features and device.info["threads"] == 1
        remote = targets.select_target("auto", device)
        assert remote.kind == "llvm" and remote.cpu == device.cpu
        assert remote.spec["mattr"] == device.cpu.llvm_mattr()
        assert remote.description.startswith("remote CPU")
    finally:
        device.close()


def test_an_engine_for_a_cpu_the_device_lacks_is_refused(pool, built):
    from svtr_toolkit.runtime import load_engine

    from svtr_toolkit.cpu_features import ARM_FEATURES, X86_FEATURES, host

    path, meta = built
    # two features this host's CPU lacks, which depend on the CPU the suite runs on (an
    # avx512_fp16 Xeon has every x86 feature the toolkit knows: then the other ISA's)
    known = set(X86_FEATURES.values()) | set(ARM_FEATURES.values())
    lacking = sorted(known - host().features, key=lambda f: (f not in host().table.values(), f))[:2]
    meta = dict(meta, target=dict(meta["target"], mattr=[*meta["target"]["mattr"], *(f"+{f}" for f in lacking)]))
    device = rpc.connect(pool.address)
    try:
        with pytest.raises(ToolkitError, match=f"was built for a CPU with {re.escape(', '.join(lacking))}, "
                                               "which the remote .* lacks"):
            from svtr_toolkit.runtime.remote_backend import RemoteTvmBackend

            RemoteTvmBackend(path, meta, device)
        assert load_engine(path, device).run is not None  # the engine as built runs there
    finally:
        device.close()


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    """rec_toy's LMDB alone (its broken twin is another test's business)."""
    folder = tmp_path_factory.mktemp("rec_toy") / "evaluation"
    shutil.copytree(shared_path("data", "rec_toy", "imgs.lmdb"), folder / "imgs.lmdb")
    return folder


def test_scripts_through_rpc_match_a_local_run(pool, golden_export, toy_data, tmp_path):
    """The performance and accuracy scripts with --rpc (the engine built for the device, its parity
    checked there), then inference.py here on the same engine: the same accuracy, the same
    predictions, one by one."""
    model = str(golden_export.out_dir / "SVTR_opt.onnx")
    env = {"MODEL_PATH": model, "DATASETS_DIR": str(toy_data), "ENGINE_DIR": str(tmp_path), "PRECISION": "fp32",
           "LOOP_COUNT": "3", "TARGET": "auto"}
    before = sessions_served(pool)
    perf = run_process(["scripts/infer_svtr_fp16_performance.sh", "--bs", "5", "--rpc", pool.address], env=env,
                       timeout=900)
    assert perf.code == 0, perf.err
    assert "building fp32 engine for remote CPU" in perf.out
    assert "parity tvm-llvm-fp32@svtr-test vs onnxruntime fp32" in perf.out
    assert "running on " in perf.out and f"key '{KEY}'" in perf.out
    assert "Mean fps:" in perf.out

    remote = run_process(["scripts/infer_svtr_fp16_accuracy.sh", "--bs", "5", "--rpc", pool.address],
                         env={**env, "REPORT": tmp_path / "remote.json"}, timeout=900)
    assert remote.code == 0, remote.err
    assert "engine is up to date" in remote.out, "the engine built for the device is reused"
    assert sum(sessions_served(pool)) > sum(before)

    engine = tmp_path / "svtr_bs_5_fp32.so"
    local = run_main("inference", "--engine", engine, "--batchsize", "5", "--datasets", toy_data,
                     "--report", tmp_path / "local.json")
    assert local.code == 0, local.err
    there, here = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("remote", "local"))
    assert there["engine"]["device"].endswith(f"key '{KEY}'") and here["engine"]["device"] == "this machine"
    assert there["accuracy"]["predictions"] == here["accuracy"]["predictions"]
    assert there["accuracy"]["pooled"] == here["accuracy"]["pooled"]
    assert there["accuracy"]["predictions_sha256"] == here["accuracy"]["predictions_sha256"]
    assert sum(len(rows) for rows in here["accuracy"]["predictions"].values()) == 10


def test_an_evaluation_whose_server_dies_fails_cleanly(tmp_path):
    """The device dies mid-run: one error line, exit 2, and no report."""
    model = make_fake_onnx(tmp_path / "fake.onnx")
    write_lmdb(tmp_path / "data" / "toy", ["hotel", "grand"])
    with LocalPool(servers=1, key="dies", threads=1) as dying:
        built = run_main("build_engine", "--model_path", model, "--input", "x:2,3,64,256", "--precision", "fp32",
                         "--engine_path", tmp_path / "e.so", "--rpc", dying.address, "--skip_parity")
        assert built.code == 0, built.err
        proc = start_process(["inference.py", "--engine", tmp_path / "e.so", "--batchsize", "2",
                              "--datasets", tmp_path / "data", "--perf_only", "--loop_count", "100000000",
                              "--report", tmp_path / "report.json", "--rpc", dying.address])
        line = proc.stdout.readline()  # "running on ...": the session is open
        assert "running on" in line, line + proc.stderr.read()
        time.sleep(2)
        dying.kill_server(0)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the RPC server under key 'dies' failed during timing"), err
    assert lines[0].endswith("nothing was written")
    assert not (tmp_path / "report.json").exists()


def _tune(folder, model, address, env=None):
    return ["tools/tune_cpu.py", "--model_path", model, "--input", "x:" + ",".join(map(str, SHAPE)),
            "--precision", "fp32", "--trials_per_task", "2", "--light_trials", "2", "--budget_min", "10",
            "--database", folder, "--rpc", str(address)]


def _records(folder):
    from svtr_toolkit.compile.tuning import open_database

    return len(open_database(str(folder)).get_all_tuning_records())


def test_tuning_measures_on_every_server_and_survives_one_dying(tmp_path):
    """Candidates are timed on both servers (their own logs count the sessions); a server killed
    mid-run leaves the database whole and the tuning finishes on the other one."""
    model = tiny_recogniser(tmp_path / "tiny.onnx")
    with LocalPool(servers=2, key="tune", threads=1) as tuning_pool:
        proc = start_process(_tune(tmp_path / "db", model, tuning_pool.address), env={"SVTR_RPC_WAIT_S": "20"})
        deadline = time.monotonic() + 300
        while min(sessions_served(tuning_pool)) == 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        served = sessions_served(tuning_pool)
        tuning_pool.kill_server(1)
        out, err = proc.communicate(timeout=900)
        device_cpu = rpc.connect(tuning_pool.address).cpu
    assert proc.returncode == 0, err
    assert "timing candidates on 2 RPC server(s) under key 'tune'" in out
    assert all(n > 0 for n in served), f"sessions per server before the kill: {served}"
    assert "all planned trials done" in out
    assert _records(tmp_path / "db") > 0
    manifest = json.loads((tmp_path / "db" / "target.json").read_text())
    assert manifest["features"] == sorted(device_cpu.features)


def test_tuning_stops_with_what_it_measured_when_every_server_is_gone(tmp_path):
    model = tiny_recogniser(tmp_path / "tiny.onnx")
    with LocalPool(servers=1, key="gone", threads=1) as lone:
        proc = start_process(_tune(tmp_path / "db", model, lone.address), env={"SVTR_RPC_WAIT_S": "5"})
        progress = tmp_path / "db" / "progress.json"
        deadline = time.monotonic() + 300
        while not progress.exists() and time.monotonic() < deadline:  # one round measured and saved
            time.sleep(0.5)
        lone.kill_server(0)
        out, err = proc.communicate(timeout=600)
    assert proc.returncode == 2, (out, err)
    assert "error: every RPC server under key 'gone' left the tracker" in err
    assert "rerun to resume" in err
    kept = json.loads(progress.read_text())
    assert kept and _records(tmp_path / "db") > 0, "what was measured before the servers went is kept"


def test_the_loopback_pool_tool_starts_and_stops_everything(tmp_path):
    import signal
    import socket

    proc = start_process(["tools/rpc_local.py", "--servers", "2", "--key", "try", "--log_dir", tmp_path])
    line = proc.stdout.readline()
    assert "tracker and 2 server(s) ready: --rpc 127.0.0.1:" in line, line + proc.stderr.read()
    address = rpc.TrackerAddress.parse(line.split("--rpc ")[1].split()[0])
    assert address.key == "try" and rpc.tracker_state(address).registered == 2
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    with pytest.raises(OSError):  # the tracker is gone
        socket.create_connection((address.host, address.port), timeout=5).close()
    for name in ("server0", "server1"):
        port = int(Path(tmp_path, f"{name}.log").read_text().split("bind to 127.0.0.1:")[1].split()[0])
        with pytest.raises(OSError):  # and so are the servers
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
