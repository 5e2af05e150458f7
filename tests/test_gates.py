"""Issue 14: gates that can fail, one `error:` line for bad input, nothing trained lost.

Each test reproduces one numbered case of the issue with real files and processes.
"""
import ast
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnx
import pytest

from tiny_models import make_fake_onnx, write_lmdb

REPO = Path(__file__).resolve().parents[1]
LABELS = ["hotel"] * 8 + ["grand"]  # 'hotel' model: 8 right; 'grand' model: 1 right


def py(script, *args, env=None, timeout=600):
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)


def one_error(proc, code=2):
    """The run ended with ``code`` and exactly one ``error:`` line, no traceback; returns that line."""
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return errors[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gates")
    write_lmdb(tmp / "data" / "toy", LABELS)
    return {"tmp": tmp, "data": tmp / "data", "hotel": make_fake_onnx(tmp / "hotel.onnx"),
            "grand": make_fake_onnx(tmp / "grand.onnx", text="grand")}


def infer(data, *args, model="hotel"):
    return py("inference.py", "--engine", data[model], "--batchsize", 4, "--datasets", data["data"], *args)


# --------------------------------------------------------------------- 1, 2: gates
@pytest.mark.parametrize("args, message", [
    (("--fps_target", "100000"), "--fps_target is not checked by an accuracy run"),
    (("--acc_target", "0.99", "--perf_only"), "--acc_target is not checked by a --perf_only run"),
    (("--fps_target", "-1", "--perf_only"), "argument --fps_target: a finite number above 0 is expected"),
    (("--fps_target", "nan", "--perf_only"), "argument --fps_target: a finite number above 0 is expected"),
    (("--acc_target", "88"), "argument --acc_target: a fraction in [0, 1] is expected"),
])
def test_inference_gate_in_wrong_mode_or_out_of_range_is_refused(data, args, message):
    proc = infer(data, *args)
    assert message in one_error(proc)
    assert "metricResult" not in proc.stdout  # refused before anything ran


def test_bad_report_path_is_refused_before_the_evaluation(data, tmp_path):
    proc = infer(data, "--report", tmp_path)  # a folder
    assert "--report" in one_error(proc) and "is a folder" in one_error(proc)
    assert "metricResult" not in proc.stdout
    (tmp_path / "file").write_text("")
    assert "is a file, not a folder" in one_error(infer(data, "--report", tmp_path / "file" / "r.json"))


def test_parity_min_agreement_is_a_fraction(data):
    proc = py("tools/parity_check.py", "--engine", "/nonexistent.so", "--model_path", data["hotel"],
              "--min_agreement", "100")
    assert "argument --min_agreement: a fraction in [0, 1] is expected" in one_error(proc)


def script(name, data, *args, **env):
    merged = dict(os.environ, MODEL_PATH=str(data["hotel"]), DATASETS_DIR=str(data["data"]),
                  ENGINE_DIR=str(data["tmp"] / "script_engines"), TARGET="llvm", LOOP_COUNT="2")
    for key in ("ACC_TARGET", "FPS_TARGET", "REPORT"):
        merged.pop(key, None)
    merged.update(env)
    return subprocess.run(["bash", f"scripts/{name}", "--bs", "4", *args], cwd=REPO, env=merged,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name, args, env, message", [
    ("infer_svtr_fp16_accuracy.sh", (), {"FPS_TARGET": "1000000"}, "FPS_TARGET gates the performance script"),
    ("infer_svtr_fp16_accuracy.sh", ("--fps_target", "5"), {}, "FPS_TARGET gates the performance script"),
    ("infer_svtr_fp16_performance.sh", (), {"ACC_TARGET": "0.9"}, "ACC_TARGET gates the accuracy script"),
    ("infer_svtr_fp16_accuracy.sh", ("--acc_target", "88"), {}, "a fraction in [0, 1] is expected"),
    ("infer_svtr_fp16_performance.sh", ("--fps_target", "-1"), {}, "a finite number above 0 is expected"),
    ("infer_svtr_fp16_accuracy.sh", (), {"REPORT": "FILE/r.json"}, "--report"),
])
def test_script_gates_are_checked_before_the_build(data, name, args, env, message):
    (data["tmp"] / "a_file").write_text("")
    env = {k: v.replace("FILE", str(data["tmp"] / "a_file")) for k, v in env.items()}
    proc = script(name, data, *args, **env)
    assert message in one_error(proc)
    assert not (data["tmp"] / "script_engines").exists(), "refused before any engine was built"


# --------------------------------------------------------------------- 3: trained exports, untrained models
def sha(path):
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_trained_export_is_not_replaced_by_an_untrained_one(golden_export, tmp_path):
    from svtr_toolkit.prepare import export

    out = tmp_path / "out"
    shutil.copytree(golden_export.out_dir, out)
    before = sha(out / export.OPT_ONNX)
    props = {p.key: p.value for p in onnx.load(str(out / export.OPT_ONNX)).metadata_props}
    assert props["weights"] == "trained" and len(props["checkpoint_sha256"]) == 64

    env = dict(os.environ, SKIP_INSTALL="1")
    plain = subprocess.run(["bash", "ci/prepare.sh", "--out_dir", str(out)], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
    assert plain.returncode == 0, plain.stderr
    assert "keeping" in plain.stderr and "--force replaces it" in plain.stderr
    explicit = py("tools/export_onnx.py", "--out_dir", out)
    assert "refusing to replace it with an untrained model" in one_error(explicit)
    assert sha(out / export.OPT_ONNX) == before


def untrained_model(path):
    model = onnx.load(str(make_fake_onnx(path)))
    model.metadata_props.add(key="weights", value="untrained")
    onnx.save(model, str(path))
    return path


def check_untrained_outputs(proc, report, model_sha):
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    warn = [i for i, ln in enumerate(lines) if ln.startswith("warning: weights: untrained")]
    metric = [i for i, ln in enumerate(lines) if ln.startswith("{'metricResult'")]
    assert warn and metric and warn[0] == metric[0] - 1, proc.stdout  # next to the accuracy
    assert ast.literal_eval(lines[metric[0]])["metricResult"]["weights"] == "untrained"
    out = json.loads(Path(report).read_text())
    assert out["model"] == {"sha256": model_sha, "weights": "untrained"}


def test_untrained_weights_reach_every_accuracy_output(data, tmp_path):
    from svtr_toolkit.compile import build, targets

    model = untrained_model(tmp_path / "untrained.onnx")
    proc = infer({**data, "m": model}, "--report", tmp_path / "ort.json", model="m")
    check_untrained_outputs(proc, tmp_path / "ort.json", sha(model))

    engine = tmp_path / "untrained.so"
    meta = build.build_engine(str(model), "x", (4, 3, 64, 256), "fp32", targets.select_target("llvm"), str(engine),
                              log=lambda *_: None)
    assert meta["weights"] == "untrained" and meta["model_sha256"] == sha(model)
    proc = infer({**data, "m": engine}, "--report", tmp_path / "tvm.json", model="m")
    check_untrained_outputs(proc, tmp_path / "tvm.json", sha(model))


# --------------------------------------------------------------------- 4, 8: signals during a build
def interrupt_build(golden_export, tmp_path, sig):
    engines = tmp_path / "engines"
    proc = subprocess.Popen([sys.executable, "build_engine.py", "--model_path",
                             str(golden_export.out_dir / "SVTR_opt.onnx"), "--input", "x:1,3,64,256",
                             "--precision", "fp16", "--target", "llvm", "--tuning_db", "none",
                             "--engine_path", str(engines / "e.so")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # the compile of the real SVTR takes many seconds after this line
        if line.startswith("precision plan:"):
            break
    time.sleep(1.5)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=300)
    leftovers = [p.name for p in engines.iterdir()] if engines.exists() else []
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), leftovers


def test_ctrl_c_during_a_build_is_one_line(golden_export, tmp_path):
    proc, leftovers = interrupt_build(golden_export, tmp_path, signal.SIGINT)
    assert one_error(proc, 130) == "error: interrupted" and leftovers == []


def test_sigterm_during_a_build_cleans_up(golden_export, tmp_path):
    proc, leftovers = interrupt_build(golden_export, tmp_path, signal.SIGTERM)
    assert one_error(proc, 143) == "error: terminated" and leftovers == []


def test_empty_exception_message_is_formatted():
    from svtr_toolkit.errors import first_line, last_line

    assert last_line(RuntimeError()) == "RuntimeError" and first_line(RuntimeError("\n")) == "RuntimeError"
    assert last_line(RuntimeError("a\nb\n")) == "b"


# --------------------------------------------------------------------- 5, 6, 7: engines
def test_engine_path_that_is_a_folder_is_refused_before_compiling(data, tmp_path):
    proc = py("build_engine.py", "--model_path", data["hotel"], "--input", "x:4,3,64,256", "--precision", "fp32",
              "--target", "llvm", "--engine_path", tmp_path)
    assert "--engine_path" in one_error(proc) and "is a folder" in one_error(proc)
    assert "building" not in proc.stdout


def test_parity_with_another_network_is_one_error(built, data):
    proc = py("tools/parity_check.py", "--engine", built[0], "--model_path", data["hotel"])
    assert "not the model the engine was built from" in one_error(proc)


def test_damaged_engine_image_is_one_error(built, tmp_path, data):
    from svtr_toolkit.compile import build, targets
    from svtr_toolkit.engine_file import read_engine_metadata

    engine = tmp_path / "damaged.so"
    shutil.copy(built[0], engine)
    assert len(read_engine_metadata(str(engine))["image_sha256"]) == 64
    raw = bytearray(engine.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # inside the ELF image; the footer is intact
    engine.write_bytes(bytes(raw))
    proc = py("tools/parity_check.py", "--engine", engine, "--model_path", built[1]["model_path"])
    assert "is damaged: its image does not match the digest" in one_error(proc)
    lines = []
    from tiny_models import SHAPE

    build.build_engine(built[1]["model_path"], "x", SHAPE, "fp32", targets.select_target("llvm"), str(engine),
                       log=lines.append)
    assert any("image damaged" in ln for ln in lines), lines  # a rebuild, not a reuse


def test_cross_compiled_engine_skips_parity_with_a_reason(data, tmp_path):
    env = dict(os.environ, SVTR_CUDA_ARCH="sm_90")
    proc = py("build_engine.py", "--model_path", data["hotel"], "--input", "x:4,3,64,256", "--precision", "fp32",
              "--target", "cuda", "--engine_path", tmp_path / "cuda.so", env=env)
    if proc.returncode != 0 and "parity skipped" not in proc.stdout:
        pytest.skip(f"this TVM cannot cross-compile for CUDA here: {proc.stderr.strip().splitlines()[-1:]}")
    assert proc.returncode == 0, proc.stderr
    assert "parity skipped: the engine was cross-compiled for NVIDIA GPU (cuda, sm_90)" in proc.stdout


# --------------------------------------------------------------------- 9: protocol-2 checkpoints
def test_protocol_2_pdparams_load_and_code_is_still_refused():
    from svtr_toolkit.errors import ToolkitError
    from svtr_toolkit.prepare.checkpoint import parse_pdparams

    state = OrderedDict(w=np.arange(6, dtype=np.float32).reshape(2, 3))
    assert np.array_equal(parse_pdparams(pickle.dumps(state, protocol=2), "p2")["w"], state["w"])
    evil = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(ToolkitError, match="refusing to load _codecs.encode with encoding 'rot13'"):
        parse_pdparams(evil, "evil")
    with pytest.raises(ToolkitError, match="refusing to load os.system"):
        parse_pdparams(b"cos\nsystem\n(S'true'\ntR.", "evil")


# --------------------------------------------------------------------- 11: progress in logs
def test_progress_is_plain_lines_in_a_log_and_can_be_turned_off(data):
    proc = infer(data)
    assert proc.returncode == 0 and "\r" not in proc.stderr
    assert "eval: 9/9 img (100 %" in proc.stderr
    quiet = infer(data, "--no_progress")
    assert quiet.returncode == 0 and "eval:" not in quiet.stderr


# --------------------------------------------------------------------- 12: messages
def test_datasets_pointing_at_a_file_says_so(data):
    proc = infer({**data, "data": data["data"] / "toy" / "data.mdb"})
    assert "is a file, not a folder of LMDBs; give the folder holding it" in one_error(proc)
    proc = script("infer_svtr_fp16_accuracy.sh", data, DATASETS_DIR=str(data["data"] / "toy" / "data.mdb"))
    assert "is a file, not a folder of LMDBs" in one_error(proc)


# --------------------------------------------------------------------- 13: is a change real?
def test_mcnemar_exact_by_hand():
    from svtr_toolkit.evaluate.compare import mcnemar_exact

    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(1, 8) == pytest.approx(2 * (1 + 9) / 512)
    assert mcnemar_exact(8, 1) == mcnemar_exact(1, 8)


def test_reports_store_every_prediction_and_compare(data, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert infer(data, "--report", a).returncode == 0
    assert infer(data, "--report", b, model="grand").returncode == 0
    samples = json.loads(a.read_text())["accuracy"]["predictions"]["toy"]
    assert samples[0] == {"key": "image-000000001", "label": "hotel", "prediction": "hotel", "correct": True}
    assert len(samples) == len(LABELS)

    proc = py("tools/compare_reports.py", a, b)
    assert proc.returncode == 0, proc.stderr
    toy, pooled = [ln.split() for ln in proc.stdout.splitlines() if ln.startswith(("toy ", "pooled "))]
    assert toy[1:] == ["9", "88.89", "11.11", "1", "8", "-7", "0.03906"] and pooled[4:] == toy[4:]
    assert py("tools/compare_reports.py", a, b, "--max_net_loss", 7).returncode == 0
    assert py("tools/compare_reports.py", a, b, "--max_net_loss", 6).returncode == 1
    assert py("tools/compare_reports.py", a, b, "--alpha", 0.01).returncode == 0
    assert py("tools/compare_reports.py", a, b, "--alpha", 0.05).returncode == 1
    assert py("tools/compare_reports.py", b, a, "--alpha", 0.05).returncode == 0  # better is not a failure
    assert "a fraction in [0, 1]" in one_error(py("tools/compare_reports.py", a, b, "--alpha", 5))


def test_compare_refuses_reports_on_other_data(data, tmp_path):
    a = tmp_path / "a.json"
    assert infer(data, "--report", a).returncode == 0
    other = json.loads(a.read_text())
    other["accuracy"]["predictions"]["toy"].pop()
    (tmp_path / "b.json").write_text(json.dumps(other))
    assert "not on the same data" in one_error(py("tools/compare_reports.py", a, tmp_path / "b.json"))
    (tmp_path / "c.json").write_text("{}")
    assert "no per-sample predictions" in one_error(py("tools/compare_reports.py", a, tmp_path / "c.json"))


# --------------------------------------------------------------------- 5, 10: datasets and dictionaries
def lmdb_tool_cli(*args):
    return py("tools/lmdb_tool.py", *args)


def test_lmdb_create_bad_label_file_and_out_dir(tmp_path):
    from test_lmdb_tool import write_images

    gt = write_images(tmp_path / "imgs", ["hotel", "grand"])
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"w0.png\thotel\nw1.png\tcaf\xe9\n")
    assert "latin1.txt:2: not UTF-8" in one_error(lmdb_tool_cli("create", "--images", tmp_path / "imgs",
                                                                 "--labels", latin1, "--out_dir", tmp_path / "a"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    assert "is not empty" in one_error(lmdb_tool_cli("create", "--images", tmp_path / "imgs", "--labels", gt,
                                                     "--out_dir", tmp_path / "full"))
    assert "is a file" in one_error(lmdb_tool_cli("create", "--images", tmp_path / "imgs", "--labels", gt,
                                                  "--out_dir", tmp_path / "full" / "keep.txt"))
    ok = lmdb_tool_cli("create", "--images", tmp_path / "imgs", "--labels", gt, "--out_dir", tmp_path / "new")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "new").iterdir()} == {0o644}


def test_non_utf8_character_dictionary_is_one_error(data, tmp_path):
    (tmp_path / "dict.txt").write_bytes(b"a\nb\n\xff\n")
    yml = tmp_path / "rec.yml"
    text = (REPO / "rec_svtr_tiny_6local_6global_stn_en.yml").read_text()
    yml.write_text(text.replace("character_dict_path:", f"character_dict_path: {tmp_path / 'dict.txt'} #"))
    assert "dict.txt:3 is not UTF-8" in one_error(infer(data, "--config", yml))
    assert "dict.txt:3 is not UTF-8" in one_error(lmdb_tool_cli("check", "--datasets", data["data"], "--config", yml))


def test_check_reports_records_beyond_num_samples(tmp_path):
    import lmdb

    write_lmdb(tmp_path / "d" / "toy", ["hotel", "grand"])
    env = lmdb.open(str(tmp_path / "d" / "toy"))
    with env.begin(write=True) as txn:
        txn.put(b"num-samples", b"1")
    env.close()
    proc = lmdb_tool_cli("check", "--datasets", tmp_path / "d")
    assert proc.returncode == 1 and "2 image/label record(s) beyond num-samples (1): never evaluated" in proc.stdout


# --------------------------------------------------------------------- 12: one line for a random .tar
def test_random_tar_checkpoint_is_one_line(tmp_path):
    (tmp_path / "r.tar").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    proc = py("tools/export_onnx.py", "--checkpoint", tmp_path / "r.tar", "--out_dir", tmp_path / "out")
    assert "r.tar: not a readable tar archive (ReadError: method tar: ReadError('invalid header'))" in one_error(proc)
    assert len(proc.stderr.strip().splitlines()) == 1


def test_check_and_evaluator_share_words_and_symlinks_are_named(data, tmp_path):
    from svtr_toolkit.evaluate.data import IMAGE_MISSING, REJECT_NOT_UTF8
    import lmdb

    write_lmdb(tmp_path / "outside" / "real", ["hotel", "grand"])
    env = lmdb.open(str(tmp_path / "outside" / "real"))
    with env.begin(write=True) as txn:
        txn.delete(b"image-000000001")
        txn.put(b"label-000000002", b"caf\xe9")
    env.close()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "linked").symlink_to(tmp_path / "outside" / "real")
    check = lmdb_tool_cli("check", "--datasets", tmp_path / "d")
    assert f"linked: {IMAGE_MISSING}: image-000000001" in check.stdout
    assert f"linked: {REJECT_NOT_UTF8}: label-000000002" in check.stdout
    proc = infer({**data, "data": tmp_path / "d"}, "--batchsize", 4, "--report", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    assert f"image-000000001 ({IMAGE_MISSING})" in proc.stdout and REJECT_NOT_UTF8 in proc.stdout
    real = str((tmp_path / "outside" / "real").resolve())
    assert f"note: linked is a symlink out of the dataset folder (followed): {real}" in proc.stdout
    assert json.loads((tmp_path / "r.json").read_text())["accuracy"]["subsets"][0]["path"] == real
