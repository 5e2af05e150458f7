"""Progress in a log (stderr not a terminal): plain lines at quarter marks, never carriage returns;
an evaluation's progress as it reaches a log, and turned off."""
import io

from cli_runs import run_main
from svtr_toolkit.progress import progress
from tiny_models import make_fake_onnx, write_lmdb


def test_plain_lines_carry_the_current_description_and_postfix():
    stream = io.StringIO()
    bar = progress(8, "trial", "tuning", stream=stream)
    for n in range(8):
        bar.set_description("tuning" if n < 4 else "tuning again")
        bar.set_postfix_str(f"kernel{n}")
        bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "tuning: 2/8 trial", "tuning: 4/8 trial", "tuning again: 6/8 trial", "tuning again: 8/8 trial"]
    assert lines[0].endswith("s, kernel1)") and lines[-1].endswith("s, kernel7)")
    assert "\r" not in stream.getvalue()


def test_resumed_work_starts_at_initial_and_prints_no_mark_it_had_passed():
    stream = io.StringIO()
    bar = progress(8, "trial", "tuning", stream=stream, initial=5)
    bar.update(1)  # 6/8: the 75 % mark
    bar.total = 12  # the plan grew: the next mark (100 %) is now 12 trials
    bar.update(5)
    bar.update(1)
    lines = [line.split(" (")[0] for line in stream.getvalue().splitlines()]
    assert lines == ["tuning: 6/8 trial", "tuning: 12/12 trial"]


def test_turned_off_prints_nothing():
    stream = io.StringIO()
    bar = progress(4, "img", "eval", enabled=False, stream=stream)
    bar.set_description("x")
    bar.set_postfix_str("y")
    bar.update(4)
    bar.close()
    assert stream.getvalue() == ""


def test_an_evaluation_in_a_log_is_plain_lines_and_can_be_turned_off(tmp_path):
    write_lmdb(tmp_path / "data" / "toy", ["hotel"] * 9)
    argv = ["--engine", make_fake_onnx(tmp_path / "hotel.onnx"), "--batchsize", 4, "--datasets", tmp_path / "data"]
    ran = run_main("inference", *argv)
    assert ran.code == 0 and "\r" not in ran.err
    assert "eval: 9/9 img (100 %" in ran.err
    quiet = run_main("inference", *argv, "--no_progress")
    assert quiet.code == 0 and "eval:" not in quiet.err
