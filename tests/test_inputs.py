"""Inputs and flags of every command line: every input is what it must be before it is
opened, every numeric flag is finite and in range and every path flag non-empty before any work,
and bad data is counted and named instead of crashing or passing unnoticed."""
import json
import os
import shutil
import struct
import sys
import tempfile
import zlib
from pathlib import Path

import lmdb
import pytest

from cli_runs import REPO, run_main, run_process
from tiny_models import make_fake_onnx, ppocr_like_config, write_images, write_lmdb


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inputs")
    write_lmdb(tmp / "data" / "toy", ["hotel", "grand"])
    return {"tmp": tmp, "data": tmp / "data", "model": make_fake_onnx(tmp / "hotel.onnx")}


def infer(model, data, *args):
    return run_main("inference", "--engine", model, "--batchsize", 2, "--datasets", data, "--no_progress", *args)


# --------------------------------------------------------------------- flags before any work
REQUIRED = {"inference": ["--engine", "E.onnx", "--batchsize", "2", "--datasets", "D"],
            "build_engine": ["--model_path", "M.onnx", "--input", "x:2,3,64,256", "--precision", "fp32",
                             "--engine_path", "E.so"]}


@pytest.mark.parametrize("entry, argv, message", [
    ("inference", ["--batchsize", "0"], "argument --batchsize: a positive integer is expected, got '0'"),
    ("inference", ["--batchsize", "nan"], "argument --batchsize: a positive integer is expected"),
    ("inference", ["--warmup", "-1"], "argument --warmup: an integer of 0 or more is expected"),
    ("inference", ["--loop_count", "0"], "argument --loop_count: a positive integer is expected"),
    ("inference", ["--workers", "0"], "argument --workers: a positive integer is expected"),
    ("inference", ["--perf_only", "--fps_target", "inf"], "argument --fps_target: a finite number above 0"),
    ("inference", ["--engine", ""], "argument --engine: an empty path is given"),
    ("inference", ["--datasets", ""], "argument --datasets: an empty path is given"),
    ("inference", ["--config", ""], "argument --config: an empty path is given"),
    ("inference", ["--input_name", ""], "argument --input_name: an empty input name is given"),
    ("build_engine", ["--batchsize", "-3", "--preset", "svtr"], "argument --batchsize: a positive integer"),
    ("build_engine", ["--model_path", ""], "argument --model_path: an empty path is given"),
    ("build_engine", ["--engine_path", ""], "argument --engine_path: an empty path is given"),
    ("build_engine", ["--tuning_db", ""], "argument --tuning_db: an empty path is given"),
    ("compare_reports", ["a.json", "b.json", "--max_net_loss", "-1"], "argument --max_net_loss: an integer of 0"),
    ("compare_reports", ["", "b.json"], "argument a: an empty path is given"),
    ("profile_engine", ["--engine", "e.so", "--runs", "0"], "argument --runs: a positive integer"),
    ("profile_engine", ["--engine", "e.so", "--top", "-1"], "argument --top: an integer of 0 or more"),
    ("profile_engine", ["--engine", "e.so", "--json", ""], "argument --json: an empty path is given"),
    ("parity_check", ["--engine", "e.so", "--inputs", ""], "argument --inputs: an empty path is given"),
    ("rpc_local", ["--servers", "0"], "argument --servers: a positive integer"),
    ("rpc_local", ["--port", "70000"], "argument --port: a TCP port (1 to 65535)"),
    ("rpc_local", ["--log_dir", ""], "argument --log_dir: an empty path is given"),
    ("rpc_server", ["--tracker", "h:1", "--key", "k", "--port", "0"], "argument --port: a TCP port"),
    ("rpc_server", ["--tracker", "h:1", "--key", "k", "--threads", "0"], "argument --threads: a positive integer"),
    ("rpc_server", ["--tracker", "h:1", "--key", ""], "argument --key: an empty key is given"),
    ("rpc_server", ["--tracker", "h:99999", "--key", "k"], "--tracker must look like HOST:PORT"),
    ("rpc_server", ["--tracker", "h:1", "--key", "k", "--port", "9100", "--port_end", "9100"],
     "--port 9100 must be below --port_end 9100"),
    ("tune_cpu", ["--budget_min", "nan"], "argument --budget_min: a finite number above 0"),
    ("tune_cpu", ["--budget_min", "inf"], "argument --budget_min: a finite number above 0"),
    ("tune_cpu", ["--trials_per_task", "0"], "argument --trials_per_task: a positive integer"),
    ("tune_cpu", ["--light_trials", "-2"], "argument --light_trials: a positive integer"),
    ("tune_cpu", ["--database", ""], "argument --database: an empty path is given"),
    ("lmdb_tool", ["create", "--images", "", "--labels", "l", "--out_dir", "o"], "argument --images: an empty path"),
    ("lmdb_tool", ["create", "--images", "i", "--labels", "l", "--out_dir", ""], "argument --out_dir: an empty path"),
    ("lmdb_tool", ["check", "--datasets", ""], "argument --datasets: an empty path is given"),
    ("export_onnx", ["--out_dir", ""], "argument --out_dir: an empty path is given"),
    ("export_onnx", ["--checkpoint", ""], "argument --checkpoint: an empty path is given"),
    ("fetch_ppocrv4", ["--out", ""], "argument --out: an empty path is given"),
    ("emulate_fp16", ["--model_path", "m", "--input", "x:1,3,4,4", "--out", ""], "argument --out: an empty path"),
])
def test_every_numeric_and_path_flag_is_checked_before_any_work(entry, argv, message):
    ran = run_main(entry, *REQUIRED.get(entry, []), *argv)
    assert ran.code == 2 and message in ran.error, ran.err


def test_the_rpc_wait_must_be_a_finite_number_of_seconds(case, monkeypatch):
    from svtr_toolkit.errors import ToolkitError
    from svtr_toolkit.rpc import wait_seconds

    for text in ("nan", "inf", "-5", "0", "soon"):
        monkeypatch.setenv("SVTR_RPC_WAIT_S", text)
        with pytest.raises(ToolkitError, match="SVTR_RPC_WAIT_S must be a finite number of seconds above 0"):
            wait_seconds()


# --------------------------------------------------------------------- inputs are what they must be
def test_a_fifo_or_device_given_as_an_input_is_refused_without_blocking(case, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    labels = write_images(tmp_path / "imgs", ["hotel"])
    for entry, argv, what in [
        ("inference", ["--engine", fifo, "--batchsize", 2, "--datasets", case["data"]], "engine"),
        ("inference", ["--engine", case["model"], "--batchsize", 2, "--datasets", case["data"], "--config", fifo],
         "config"),
        ("inference", ["--engine", case["model"], "--batchsize", 2, "--datasets", fifo], "dataset directory"),
        ("build_engine", ["--model_path", fifo, "--input", "x:2,3,64,256", "--precision", "fp32",
                          "--engine_path", tmp_path / "e.so"], "ONNX model"),
        ("lmdb_tool", ["create", "--images", tmp_path / "imgs", "--labels", fifo, "--out_dir", tmp_path / "o"],
         "--labels"),
        ("lmdb_tool", ["create", "--images", fifo, "--labels", labels, "--out_dir", tmp_path / "o"], "--images"),
        ("compare_reports", [fifo, fifo], "report"),
        ("parity_check", ["--engine", case["model"], "--model_path", case["model"], "--inputs", fifo], "--inputs"),
        ("profile_engine", ["--engine", fifo], "engine"),
        ("lmdb_tool", ["check", "--datasets", case["data"], "--config",
                       REPO / "configs" / "ch_PP-OCRv4_rec_eval.yml", "--model_path", fifo], "ONNX model"),
    ]:
        ran = run_main(entry, *argv)
        assert ran.code == 2 and f"{what} {fifo} is a FIFO, not a" in ran.error, (entry, ran.err)


def test_an_lmdb_whose_data_file_is_a_fifo_is_refused(case, tmp_path):
    (tmp_path / "data" / "toy").mkdir(parents=True)
    os.mkfifo(tmp_path / "data" / "toy" / "data.mdb")
    for ran in (infer(case["model"], tmp_path / "data"), run_main("lmdb_tool", "check", "--datasets", tmp_path / "data")):
        assert ran.code == 2 and ran.error == f"error: LMDB data file {tmp_path / 'data' / 'toy' / 'data.mdb'} is a " \
                                              f"FIFO, not a regular file"


def test_an_image_listed_in_the_labels_that_is_a_fifo_is_named(tmp_path):
    labels = write_images(tmp_path / "imgs", ["hotel"])
    os.mkfifo(tmp_path / "imgs" / "pipe.png")
    with open(labels, "a") as fh:
        fh.write("pipe.png\tpipe\n")
    ran = run_main("lmdb_tool", "create", "--images", tmp_path / "imgs", "--labels", labels, "--out_dir", tmp_path / "o")
    assert ran.code == 2 and "pipe.png (a FIFO, not a regular file)" in ran.error


# --------------------------------------------------------------------- an image OpenCV refuses to decode
def huge_png() -> bytes:
    """100 bytes whose header claims 60000 x 60000 pixels (more than OpenCV's CV_IO_MAX_IMAGE_PIXELS)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
    body = chunk(b"IDAT", zlib.compress(b"\0" * 20)) + chunk(b"IEND", b"")
    png = head + chunk(b"tEXt", b"c\0" + b"x" * (100 - len(head) - len(body) - 14)) + body
    assert len(png) == 100
    return png


def test_a_png_claiming_60000_by_60000_pixels_is_an_image_that_does_not_decode(case, tmp_path):
    write_lmdb(tmp_path / "data" / "toy", ["big", "hotel"])
    env = lmdb.open(str(tmp_path / "data" / "toy"))
    with env.begin(write=True) as txn:
        txn.put(b"image-000000001", huge_png())
    env.close()
    ran = infer(case["model"], tmp_path / "data")
    assert ran.code == 0, ran.err
    assert "toy: 1 image(s) unreadable, counted as wrong: image-000000001 (image does not decode)" in ran.out
    assert "{'metricResult': {'acc': 0.5" in ran.out
    perf = infer(case["model"], tmp_path / "data", "--perf_only", "--loop_count", 2)
    assert perf.code == 0 and "Mean fps" in perf.out, perf.err
    check = run_main("lmdb_tool", "check", "--datasets", tmp_path / "data")
    assert check.code == 1 and "toy: image does not decode: image-000000001" in check.out
    labels = write_images(tmp_path / "imgs", ["hotel"])
    (tmp_path / "imgs" / "huge.png").write_bytes(huge_png())
    with open(labels, "a") as fh:
        fh.write("huge.png\tbig\n")
    made = run_main("lmdb_tool", "create", "--images", tmp_path / "imgs", "--labels", labels, "--out_dir", tmp_path / "o")
    assert made.code == 2 and made.error == "error: 1 image(s) unusable: huge.png (does not decode)"


# --------------------------------------------------------------------- a batch that cannot fit in memory
def test_a_batch_whose_buffers_cannot_fit_in_memory_is_refused_with_the_figure(case):
    ran = infer(case["model"], case["data"], "--batchsize", 100000)  # a dynamic-batch ONNX model takes any batch
    assert ran.code == 2 and "error: --batchsize 100000 (its input batches" in ran.error
    assert "GiB of memory and this machine has" in ran.error and ran.error.endswith("use a smaller batch")
    built = run_main("build_engine", "--model_path", case["model"], "--input", "x:100000,3,64,256",
                     "--precision", "fp32", "--target", "llvm", "--engine_path", case["tmp"] / "e.so")
    assert built.code == 2 and "the parity check of an engine for input x:100000,3,64,256 needs about" in built.error


# --------------------------------------------------------------------- labels the metric reduces to nothing
def test_labels_of_only_spaces_or_punctuation_are_rejected_not_scored_correct(tmp_path):
    config = ppocr_like_config(tmp_path)
    write_lmdb(tmp_path / "data" / "toy", ["hotel", "!!!", "   ", "grand"])
    blank = make_fake_onnx(tmp_path / "blank.onnx", text="")  # predicts nothing at all
    ran = infer(blank, tmp_path / "data", "--config", config, "--acc_target", 0.5, "--report", tmp_path / "r.json")
    assert ran.code == 1, "the empty prediction matches nothing left to score"
    assert "toy: 2 label(s) rejected by PaddleOCR's rules and not evaluated (nothing left to score" in ran.out
    summary = json.loads((tmp_path / "r.json").read_text())["accuracy"]
    assert (summary["pooled"]["samples"], summary["pooled"]["correct"], summary["rejected"]) == (2, 0, 2)
    check = run_main("lmdb_tool", "check", "--datasets", tmp_path / "data", "--config", config)
    assert check.code == 1 and "toy: nothing left to score" in check.out and "label-000000002, label-000000003" in check.out


# --------------------------------------------------------------------- subsets
def test_an_lmdb_holding_a_child_lmdb_of_its_own_name_gives_two_named_subsets(case, tmp_path):
    write_lmdb(tmp_path / "toy", ["hotel", "grand"])
    write_lmdb(tmp_path / "toy" / "toy", ["hotel", "door", "pacific"])
    ran = infer(case["model"], tmp_path / "toy", "--report", tmp_path / "r.json")
    assert ran.code == 0, ran.err
    predictions = json.loads((tmp_path / "r.json").read_text())["accuracy"]["predictions"]
    assert {name: len(rows) for name, rows in predictions.items()} == {"toy": 2, "toy/toy": 3}
    check = run_main("lmdb_tool", "check", "--datasets", tmp_path / "toy")
    assert "0 problem(s) in 5 samples" in check.out and "toy/toy" in check.out


@pytest.fixture
def open_folder():
    """A temporary folder any user can enter (pytest's own are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="svtr-inputs-"))
    folder.chmod(0o755)
    yield folder
    for path in folder.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(folder)


def test_a_subset_folder_that_cannot_be_read_is_refused_everywhere(case, open_folder):
    data = open_folder / "data"
    for name in ("a", "b", "c"):
        write_lmdb(data / name, ["hotel"])
    model = shutil.copy(case["model"], open_folder / "hotel.onnx")
    os.chmod(data / "b", 0)
    # root reads every folder: the tools run as an unprivileged user then
    prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if os.geteuid() == 0 else []
    if prefix and not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: every folder is readable")
    for args in (["inference.py", "--engine", model, "--batchsize", 2, "--datasets", data],
                 ["tools/lmdb_tool.py", "check", "--datasets", data]):
        ran = run_process([*prefix, sys.executable, REPO / args[0], *args[1:]])
        assert ran.code == 2 and ran.error == (f"error: cannot read {data / 'b'} under the dataset folder {data} "
                                               f"(Permission denied): a subset there would be left out; make it "
                                               f"readable or move it out of the folder"), ran.err
    os.chmod(data / "b", 0o755)
    (data / "d").symlink_to(open_folder / "gone")
    ran = run_main("lmdb_tool", "check", "--datasets", data)
    assert ran.code == 2 and f"{data / 'd'} under the dataset folder {data} is a symlink to" in ran.error
    assert "which does not exist" in ran.error


# --------------------------------------------------------------------- images from outside --images
def test_lmdb_create_refuses_images_from_outside_the_images_folder(tmp_path):
    labels = write_images(tmp_path / "imgs", ["hotel"])
    write_images(tmp_path / "elsewhere", ["secret"])
    with open(labels, "a") as fh:
        fh.write(f"../elsewhere/w0.png\tup\n{tmp_path / 'elsewhere' / 'w0.png'}\tabsolute\n")
    ran = run_main("lmdb_tool", "create", "--images", tmp_path / "imgs", "--labels", labels, "--out_dir", tmp_path / "a")
    assert ran.code == 2 and "2 image path(s) resolve outside --images" in ran.error
    assert "--allow_outside_images" in ran.error and not (tmp_path / "a").exists()
    ran = run_main("lmdb_tool", "create", "--images", tmp_path / "imgs", "--labels", labels, "--out_dir", tmp_path / "b",
                   "--allow_outside_images")
    assert ran.code == 0 and "wrote 3 samples" in ran.out


# --------------------------------------------------------------------- the dictionary inside the model
def test_check_reads_the_dictionary_from_the_model_when_the_config_says_so(case, tmp_path):
    import onnx

    model = onnx.load(str(case["model"]))
    model.metadata_props.add(key="character", value="\n".join("0123456789abcdefghijklmnopqrstuvwxyz"))
    onnx.save(model, str(tmp_path / "with_dict.onnx"))
    config = REPO / "configs" / "ch_PP-OCRv4_rec_eval.yml"
    ran = run_main("lmdb_tool", "check", "--datasets", case["data"], "--config", config,
                   "--model_path", tmp_path / "with_dict.onnx")
    assert ran.code == 0 and "0 problem(s) in 2 samples" in ran.out, ran.err
    ran = run_main("lmdb_tool", "check", "--datasets", case["data"], "--config", config)
    assert ran.code == 2 and "takes its dictionary from the model: give --model_path" in ran.error
    if (REPO / "PPOCRv4_rec.onnx").exists():  # the documented command, on the prepared model
        ran = run_main("lmdb_tool", "check", "--datasets", case["data"], "--preset", "ppocrv4")
        assert ran.code == 0 and "0 problem(s) in 2 samples" in ran.out, ran.err


# --------------------------------------------------------------------- values that begin with a dash
def test_scripts_take_a_data_folder_whose_name_begins_with_a_dash(case, tmp_path):
    shutil.copytree(case["data"], tmp_path / "-data")
    ran = run_process(["scripts/infer_svtr_fp16_accuracy.sh", "--bs=2"], cwd=tmp_path,
                      env={"MODEL_PATH": case["model"], "DATASETS_DIR": "-data", "ENGINE_DIR": tmp_path / "-engines",
                           "TARGET": "llvm", "REPORT": "-report.json", "ACC_TARGET": None})
    assert ran.code == 0, ran.err
    assert "{'metricResult': {'acc': 0.5" in ran.out
    assert json.loads((tmp_path / "-report.json").read_text())["datasets"] == str(tmp_path / "-data")
