"""inference.py on a tiny fake ONNX model whose output decodes to 'hotel': one run end to end as
a process, the others in-process through main."""
import ast
import json

import pytest

from cli_runs import run_main, run_process
from shared_data import shared_path
from tiny_models import make_fake_onnx, write_lmdb

# 12 raw labels, 10 kept; 'hotel' after PaddleOCR's rules for 4 of them
LABELS = ["hotel", "HOTEL", "Ho tel", "hostel", "x" * 26, "grand", "!!!", "h0tel", "Hotel.", "pacific", "a", "b"]
HOTEL_KEPT = 4
# normalised distances of the kept labels to 'hotel', by hand: hotel hotel hotel hostel grand h0tel hotel
# pacific a b
NED = 1 - sum([0, 0, 0, 1 / 6, 5 / 5, 1 / 5, 0, 7 / 7, 5 / 5, 5 / 5]) / 10


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inf")
    write_lmdb(tmp / "data" / "evaluation" / "toy", LABELS)
    return {"model": str(make_fake_onnx(tmp / "fake.onnx")), "data": str(tmp / "data"), "tmp": tmp}


def run(*args):
    return run_main("inference", *args)


def metric_result(stdout):
    (line,) = [ln for ln in stdout.splitlines() if ln.startswith("{'metricResult'")]
    return ast.literal_eval(line)["metricResult"]


def test_accuracy_run_table_and_metric_result(setup):
    out = setup["tmp"] / "r.json"
    p = run_process(["inference.py", "--engine", setup["model"], "--batchsize", 4, "--input_name", "x",
                     "--datasets", setup["data"], "--report", out])
    assert p.code == 0, p.err
    assert "evaluation/toy" in p.out and "norm_edit_dis" in p.out and "rejected" in p.out
    assert "pooled over all 10 evaluated samples" in p.out and "plain mean over 1 subsets" in p.out
    assert metric_result(p.out) == {"acc": HOTEL_KEPT / 10, "norm_edit_dis": round(NED, 4)}
    rep = json.loads(out.read_text())
    sub = rep["accuracy"]["subsets"][0]
    # 12 in the LMDB, 2 rejected, 10 evaluated at batch 4 (the last partial batch counts)
    assert (sub["lmdb_samples"], sub["rejected"], sub["evaluated"], sub["correct"]) == (12, 2, 10, HOTEL_KEPT)
    assert sub["norm_edit_dis"] == pytest.approx(NED, abs=1e-6)
    assert rep["config"]["resize"] == "stretch" and rep["batch_size"] == 4


def test_two_runs_identical(setup):
    reports = []
    for i, bs in enumerate([4, 3]):
        out = setup["tmp"] / f"same{i}.json"
        assert run("--engine", setup["model"], "--batchsize", bs, "--datasets", setup["data"],
                   "--workers", 1 + i, "--report", out).code == 0
        acc = json.loads(out.read_text())["accuracy"]
        acc.pop("seconds")
        reports.append(acc)
    assert reports[0] == reports[1]


def test_acc_target_met_and_missed(setup):
    base = ("--engine", setup["model"], "--batchsize", 4, "--datasets", setup["data"])
    ok = run(*base, "--acc_target", 0.4)
    assert ok.code == 0 and "acc check: expected >= 0.4, got 0.4: PASS" in ok.out
    miss = run(*base, "--acc_target", 0.41)
    assert miss.code == 1 and "acc check: expected >= 0.41, got 0.4: FAIL" in miss.out


@pytest.mark.parametrize("flag", [["--perf_only"], ["--perf_only", "True"]])
def test_perf_only(setup, flag):
    p = run("--engine", setup["model"], "--batchsize", 4, "--datasets", setup["data"], *flag,
            "--warmup", 1, "--loop_count", 3)
    assert p.code == 0, p.err
    assert "* Mean inference time: " in p.out and " ms, Mean fps: " in p.out
    assert metric_result(p.out)["FPS"] > 0
    assert "evaluation/toy" not in p.out  # no accuracy table


def test_fps_target_miss(setup):
    p = run("--engine", setup["model"], "--batchsize", 4, "--datasets", setup["data"], "--perf_only",
            "--loop_count", 2, "--fps_target", 1e12)
    assert p.code == 1 and "fps check: expected >= 1000000000000.0" in p.out and ": FAIL" in p.out


def one_error_line(p):
    """The run's one error line, and nothing else on stderr."""
    line = p.one_error()
    assert p.err.strip().splitlines() == [line], p.err
    return line


def test_bad_datasets_is_one_error_line(setup, tmp_path):
    assert "not found" in one_error_line(run("--engine", setup["model"], "--batchsize", 4,
                                             "--datasets", tmp_path / "nope"))
    assert "no LMDB" in one_error_line(run("--engine", setup["model"], "--batchsize", 4, "--datasets", tmp_path))


def test_engine_batch_mismatch_is_one_error_line(setup, tmp_path):
    fixed = make_fake_onnx(tmp_path / "b4.onnx", batch=4)
    line = one_error_line(run("--engine", fixed, "--batchsize", 8, "--datasets", setup["data"]))
    assert "batch size 4, not 8" in line
    line = one_error_line(run("--engine", fixed, "--batchsize", 4, "--input_name", "images",
                              "--datasets", setup["data"]))
    assert "'x'" in line


def test_rec_toy_with_broken_lmdb(setup):
    toy = shared_path("data", "rec_toy")
    p = run("--engine", setup["model"], "--batchsize", 4, "--datasets", toy)
    assert p.code == 0, p.err
    assert ("warning: broken.lmdb: 1 image(s) unreadable, counted as wrong: image-000000001 "
            "(image does not decode)") in p.out
    # imgs.lmdb has HOTEL twice in 10; broken.lmdb's one sample is wrong: pooled 2/11, mean (0 + 0.2) / 2
    assert metric_result(p.out)["acc"] == round(2 / 11, 4)
    assert "acc 10.00 %" in p.out


def test_flag_forms_and_bad_target(setup):
    base = ("--engine", setup["model"], "--batchsize", 4, "--datasets", setup["data"])
    p = run(*base, "--perf_only", "False")
    assert p.code == 0 and "evaluation/toy" in p.out and "Mean fps" not in p.out
    assert "fraction" in one_error_line(run(*base, "--acc_target", 90))


def test_datasets_pointing_at_a_file_says_so(setup):
    data_file = f"{setup['data']}/evaluation/toy/data.mdb"
    ran = run("--engine", setup["model"], "--batchsize", 4, "--datasets", data_file)
    assert "is a file, not a folder of LMDBs; give the folder holding it" in one_error_line(ran)
