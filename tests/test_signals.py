"""Signals: SIGTERM ends a command whatever it is doing, a call blocked in C code included (a
Python handler never runs there), and a second Ctrl-C ends it at once; Ctrl-C and SIGTERM during
a build are one line and leave no partial engine.

The commands are real processes running ``cli.run_cli``; the C call is TVM's time evaluator on a
real engine, asked for 10^8 runs (hours), which checks no signals.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from cli_runs import REPO, Ran, start_process
from svtr_toolkit.cli import TERM_GRACE_S

# A command whose main prints a line, then does one of two things until a signal ends it.
COMMAND = textwrap.dedent("""
    import os, sys, time
    from svtr_toolkit.cli import run_cli
    from svtr_toolkit.files import StagingFolder

    def main(argv):
        if argv[0] == "c-call":  # TVM's time evaluator: one C call of hours
            from svtr_toolkit.runtime import load_engine

            backend = load_engine(argv[1])
            print("in C", flush=True)
            backend.time_compute(100_000_000)
        else:  # Python work whose cleanup is slow, in a staging folder
            if argv[0] == "forked" and os.fork() == 0:  # a child that stays (as MetaSchedule's builders)
                try:
                    time.sleep(600)
                finally:
                    os._exit(0)
            with StagingFolder(argv[1]):
                try:
                    print("in Python", flush=True)
                    time.sleep(600)
                finally:
                    time.sleep(600)
        return 0

    run_cli(main, sys.argv[1:])
""")


def start(*args) -> subprocess.Popen:
    proc = start_process([sys.executable, "-c", COMMAND, *args], env={"PYTHONPATH": REPO}, start_new_session=True)
    line = proc.stdout.readline()
    assert line.startswith("in "), line + proc.stderr.read()
    time.sleep(0.5)  # inside the call now
    return proc


def ended_within(proc, seconds) -> tuple[int, str, float]:
    start_s = time.monotonic()
    try:
        _, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        # the whole group (start() gives each command its own session): a forked child that
        # still holds the pipes would keep communicate() waiting for its end (600 s)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"still running {seconds} s after the signal")
    return proc.returncode, err, time.monotonic() - start_s


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from svtr_toolkit.compile import build, targets
    from tiny_models import SHAPE, tiny_recogniser

    tmp = tmp_path_factory.mktemp("signals")
    path = str(tmp / "tiny.so")
    build.build_engine(tiny_recogniser(tmp / "tiny.onnx"), "x", SHAPE, "fp32", targets.select_target("llvm"), path,
                       log=lambda *_: None)
    return path


def test_sigterm_ends_a_process_blocked_in_c_code(engine):
    proc = start("c-call", engine)
    proc.send_signal(signal.SIGTERM)
    code, err, took = ended_within(proc, TERM_GRACE_S + 20)
    assert code == 143 and err.strip().splitlines() == ["error: terminated"], err
    assert took >= TERM_GRACE_S - 0.5, "the handler could not run: the watchdog ended it after the grace"


def test_sigterm_runs_the_cleanup_when_the_handler_can_run(tmp_path):
    proc = start("python", tmp_path)
    assert len(list(tmp_path.iterdir())) == 1  # the staging folder
    proc.send_signal(signal.SIGTERM)
    code, err, _ = ended_within(proc, TERM_GRACE_S + 20)  # the slow cleanup is cut at the grace
    assert code == 143 and err.strip().splitlines() == ["error: terminated"], err


def test_a_second_ctrl_c_ends_the_process_at_once(tmp_path):
    proc = start("python", tmp_path)
    proc.send_signal(signal.SIGINT)  # the first: its cleanup starts (and would take 600 s)
    time.sleep(1)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    code, err, took = ended_within(proc, 10)
    assert code == 130 and err.strip().splitlines() == ["error: interrupted"], err
    assert took < TERM_GRACE_S


def test_a_second_ctrl_c_ends_a_call_blocked_in_c_code(engine):
    proc = start("c-call", engine)
    proc.send_signal(signal.SIGINT)  # the handler cannot run inside the C call
    time.sleep(1)
    assert proc.poll() is None, "the first Ctrl-C waits for the call"
    proc.send_signal(signal.SIGINT)
    code, err, took = ended_within(proc, 10)
    assert code == 130 and err.strip().splitlines() == ["error: interrupted"], err


def test_one_ctrl_c_to_a_process_group_with_a_forked_child_is_one(tmp_path):
    """A terminal's Ctrl-C reaches every process of the group; a forked child's signal must not
    count as the parent's second Ctrl-C."""
    proc = start("forked", tmp_path)
    try:
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(1.5)
        assert proc.poll() is None, "one Ctrl-C: the cleanup runs"
        proc.send_signal(signal.SIGINT)
        code, err, _ = ended_within(proc, 10)
        assert code == 130 and err.strip().splitlines() == ["error: interrupted"], err
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def interrupt_build(golden_export, tmp_path, sig) -> tuple[Ran, list]:
    """build_engine.py on the real SVTR, ``sig`` sent in the middle of its compile; the run and
    what it left in the engine folder."""
    engines = tmp_path / "engines"
    proc = start_process(["build_engine.py", "--model_path", golden_export.out_dir / "SVTR_opt.onnx", "--input",
                          "x:1,3,64,256", "--precision", "fp16", "--target", "llvm", "--tuning_db", "none",
                          "--engine_path", engines / "e.so"])
    for line in proc.stdout:  # the compile of the real SVTR takes many seconds after this line
        if line.startswith("precision plan:"):
            break
    time.sleep(1.5)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=300)
    leftovers = [p.name for p in engines.iterdir()] if engines.exists() else []
    return Ran(proc.returncode, stdout, stderr), leftovers


def test_ctrl_c_during_a_build_is_one_line(golden_export, tmp_path):
    ran, leftovers = interrupt_build(golden_export, tmp_path, signal.SIGINT)
    assert ran.one_error(130) == "error: interrupted" and leftovers == []


def test_sigterm_during_a_build_cleans_up(golden_export, tmp_path):
    ran, leftovers = interrupt_build(golden_export, tmp_path, signal.SIGTERM)
    assert ran.one_error(143) == "error: terminated" and leftovers == []
