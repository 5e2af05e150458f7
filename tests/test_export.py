"""svtr_toolkit.prepare.export / tools/export_onnx.py / ci/prepare.sh.

Exports take seconds each, so each distinct export runs once per session (session fixtures
below) and the tests inspect its outputs.
"""
import json
import os
import pickle
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from cli_runs import REPO, run_main, run_process

CONFIG = REPO / "rec_svtr_tiny_6local_6global_stn_en.yml"

os.environ.setdefault("GLOG_minloglevel", "2")
paddle = pytest.importorskip("paddle")
ort = pytest.importorskip("onnxruntime")

from svtr_toolkit.prepare import export, modeling  # noqa: E402
from svtr_toolkit.config import load_config  # noqa: E402
from svtr_toolkit.errors import ToolkitError  # noqa: E402
from shared_data import golden  # noqa: E402


def listing(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def run_ort(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


# ---------------------------------------------------------------------- exports made once per session
# spec, ckpt_file and golden_export (made once per session) live in conftest.py.


@pytest.fixture(scope="session")
def untrained_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("untrained_export")
    return export.export(CONFIG, None, out)


@pytest.fixture(scope="session")
def ckpt_export(tmp_path_factory, ckpt_file):
    out = tmp_path_factory.mktemp("ckpt_export")
    return export.export(CONFIG, ckpt_file, out)


# ---------------------------------------------------------------------- parity with PaddleOCR
def test_onnx_matches_paddleocr_golden(golden_export):
    io_ = np.load(golden("svtr_tiny_seeded_io.npz"))
    for name in (export.RAW_ONNX, export.OPT_ONNX):
        out = run_ort(golden_export.out_dir / name, io_["x"])
        diff = np.abs(out - io_["probs"])
        print(f"{name} (onnxruntime) vs golden: max abs diff {diff.max():.3g}")
        assert diff.max() < 1e-4, f"{name} per row: {diff.reshape(len(out), -1).max(1)}"
        assert np.array_equal(out.argmax(-1), io_["probs"].argmax(-1)), name


def test_exported_model_shape_and_metadata(golden_export):
    meta = json.loads((golden_export.out_dir / export.METADATA).read_text())
    assert meta == golden_export.metadata
    opt = meta["outputs"][export.OPT_ONNX]
    assert opt["opset"] == 16 and meta["fingerprint"]["opset"] == 16
    (name, dims), = opt["inputs"].items()
    assert name == "x" and isinstance(dims[0], str) and dims[1:] == [3, 64, 256]  # batch stays dynamic
    (_, out_dims), = opt["outputs"].items()
    assert isinstance(out_dims[0], str) and out_dims[1:] == [25, 37]
    assert meta["weights"] == "checkpoint" and "warning" not in meta
    assert meta["self_check"]["max_abs_diff"] < 1e-4 and meta["self_check"]["argmax_agreement"] == 1.0
    for key in ("paddlepaddle", "paddle2onnx", "onnx", "onnxsim", "onnxruntime", "numpy"):
        assert meta["fingerprint"]["tools"][key]
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 64, 256)).astype(np.float32)
    assert run_ort(golden_export.out_dir / export.OPT_ONNX, x).shape == (3, 25, 37)
    assert listing(golden_export.out_dir) == sorted([export.RAW_ONNX, export.OPT_ONNX, export.METADATA])


# ---------------------------------------------------------------------- reruns and interruptions
def test_rerun_with_same_inputs_is_a_noop(ckpt_export, ckpt_file, capsys):
    out = ckpt_export.out_dir
    before = {n: (out / n).stat().st_mtime_ns for n in listing(out)}
    capsys.readouterr()
    again = export.export(CONFIG, ckpt_file, out)
    assert not again.rebuilt
    assert "up to date" in capsys.readouterr().out
    assert {n: (out / n).stat().st_mtime_ns for n in listing(out)} == before


def test_same_weights_from_tar_are_the_same_input(ckpt_export, ckpt_file, tmp_path):
    tar = tmp_path / export.CHECKPOINT_TAR
    with tarfile.open(tar, "w") as tf:
        tf.add(ckpt_file, arcname=export.CHECKPOINT_MEMBER)
    assert not export.export(CONFIG, tar, ckpt_export.out_dir).rebuilt


def test_changed_config_or_damaged_output_is_stale(ckpt_export, ckpt_file, tmp_path):
    cfg = load_config(str(CONFIG))
    ckpt = export.read_checkpoint(ckpt_file)
    assert export.is_up_to_date(ckpt_export.out_dir, export.fingerprint(cfg, ckpt, None))
    edited = tmp_path / "edited.yml"
    edited.write_text(CONFIG.read_text() + "\n# edited\n")
    assert not export.is_up_to_date(ckpt_export.out_dir, export.fingerprint(load_config(str(edited)), ckpt, None))
    copy = tmp_path / "copy"
    shutil.copytree(ckpt_export.out_dir, copy)
    with open(copy / export.OPT_ONNX, "ab") as fh:
        fh.write(b"\0")
    assert not export.is_up_to_date(copy, export.fingerprint(cfg, ckpt, None))


def test_changed_checkpoint_rebuilds(ckpt_export, ckpt_file, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(ckpt_export.out_dir, out)
    params = export.parse_pdparams(ckpt_file.read_bytes(), "x")
    params["head.fc.bias"] = params["head.fc.bias"] + 1.0
    changed = tmp_path / "changed.pdparams"
    changed.write_bytes(pickle.dumps(params, protocol=4))
    old = json.loads((out / export.METADATA).read_text())
    result = export.export(CONFIG, changed, out)
    assert result.rebuilt
    new = json.loads((out / export.METADATA).read_text())
    assert new["fingerprint"]["weights"]["sha256"] != old["fingerprint"]["weights"]["sha256"]
    assert new["outputs"][export.OPT_ONNX]["sha256"] != old["outputs"][export.OPT_ONNX]["sha256"]
    assert listing(out) == sorted([export.RAW_ONNX, export.OPT_ONNX, export.METADATA])


def test_interrupted_fresh_export_leaves_nothing(ckpt_file, tmp_path, monkeypatch):
    def interrupted(raw):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "simplify_onnx", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        export.export(CONFIG, ckpt_file, out)
    assert listing(out) == []  # no SVTR_opt.onnx, no metadata, no temp files or folders


def test_interrupted_commit_leaves_no_fresh_metadata(ckpt_export, tmp_path, monkeypatch):
    """A rebuild killed between replacing the models must not leave metadata vouching for them."""
    out = tmp_path / "out"
    shutil.copytree(ckpt_export.out_dir, out)
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst).name == export.OPT_ONNX:
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(export.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        export.export(CONFIG, None, out, force=True)  # other weights: a rebuild (untrained over trained: forced)
    monkeypatch.setattr(export.os, "replace", real_replace)
    assert export.METADATA not in listing(out)
    assert set(listing(out)) <= {export.RAW_ONNX, export.OPT_ONNX}  # no temp leftovers
    fp = export.fingerprint(load_config(str(CONFIG)), None, None)
    assert not export.is_up_to_date(out, fp)


# ---------------------------------------------------------------------- untrained weights, the command line
def test_untrained_export_is_flagged(untrained_export, capfd):
    meta = json.loads((untrained_export.out_dir / export.METADATA).read_text())
    assert meta["weights"] == "untrained-seeded"
    assert meta["fingerprint"]["weights"] == {"kind": "untrained-seeded", "seed": export.UNTRAINED_SEED}
    assert "meaningless" in meta["warning"] and "UNTRAINED" in meta["warning"]
    # a rerun is a no-op and still says so loudly
    capfd.readouterr()
    assert not export.export(CONFIG, None, untrained_export.out_dir).rebuilt
    assert "UNTRAINED" in capfd.readouterr().err


def test_untrained_export_is_reproducible(untrained_export):
    """Same seed, same weights: the fingerprint of a fresh process's export would match."""
    a = modeling.build_model(load_config(str(CONFIG)), seed=export.UNTRAINED_SEED).state_dict()
    b = modeling.build_model(load_config(str(CONFIG)), seed=export.UNTRAINED_SEED).state_dict()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def cli(*args):
    return run_main("export_onnx", *args)


def test_cli_missing_checkpoint_is_one_error_line(tmp_path):
    ran = cli("--checkpoint", tmp_path / "nope.pdparams", "--out_dir", tmp_path / "out")
    assert "nope.pdparams" in ran.one_error()
    assert ran.err.strip().splitlines() == [ran.error]
    assert not (tmp_path / "out" / export.OPT_ONNX).exists()


def test_cli_no_route_download_is_one_error_line(tmp_path):
    ran = cli("--download", "--url", "http://127.0.0.1:9/rec_svtr_tiny_none_ctc_en_train.tar", "--out_dir", tmp_path)
    line = ran.one_error()
    assert ran.err.strip().splitlines() == [line]
    assert line.startswith("error: cannot download") and "--checkpoint" in line
    assert listing(tmp_path) == []


def test_cli_rerun_is_noop(ckpt_export, ckpt_file):
    ran = cli("--checkpoint", ckpt_file, "--out_dir", ckpt_export.out_dir)
    assert ran.code == 0, ran.err
    assert "up to date" in ran.out


def test_cli_old_output_dir_flag_still_works_with_a_note(ckpt_export, ckpt_file):
    ran = cli("--checkpoint", ckpt_file, "--output_dir", ckpt_export.out_dir)
    assert ran.code == 0, ran.err
    assert "up to date" in ran.out
    assert ran.err.splitlines() == ["note: --output_dir is deprecated; use --out_dir"]


def test_prepare_sh_rerun_is_noop(ckpt_export, ckpt_file):
    ran = run_process(["ci/prepare.sh", "--output_dir", ckpt_export.out_dir],
                      env={"SKIP_INSTALL": "1", "PYTHON": sys.executable, "SVTR_CHECKPOINT": ckpt_file})
    assert ran.code == 0, ran.err
    assert "up to date" in ran.out


# ---------------------------------------------------------------------- inputs export refuses
def test_mismatched_checkpoint_fails_before_writing(tmp_path, spec):
    params = {name: np.zeros(shape, np.float32) for name, shape in spec}
    params["head.fc.weight"] = np.zeros((192, 6625), np.float32)
    path = tmp_path / "wrong.pdparams"
    path.write_bytes(pickle.dumps(params, protocol=4))
    out = tmp_path / "out"
    with pytest.raises(ToolkitError, match="wrong.pdparams does not fit.*head.fc.weight"):
        export.export(CONFIG, path, out)
    assert listing(out) == []


def test_checkpoint_and_download_are_exclusive(ckpt_file, tmp_path):
    with pytest.raises(ToolkitError, match="either --checkpoint or --download"):
        export.export(CONFIG, ckpt_file, tmp_path, download=True)


def test_non_svtr_config_is_rejected_by_export(tmp_path):
    cfg = tmp_path / "crnn.yml"
    cfg.write_text(CONFIG.read_text().replace("name: STN_ON", "name: TPS"))
    with pytest.raises(ToolkitError, match="not an SVTR CTC config: Transform is 'TPS'"):
        export.export(cfg, None, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------- PADDLEOCR_DIR branch
FAKE_EXPORT_MODEL = '''
import sys
sys.path.insert(0, {repo!r})
args = dict(a.split("=", 1) for a in sys.argv[sys.argv.index("-o") + 1:])
cfg_path = sys.argv[sys.argv.index("-c") + 1]
if {fail!r}:
    sys.exit("export_model: something broke")
import paddle
from svtr_toolkit.prepare import modeling
from svtr_toolkit.config import load_config
cfg = load_config(cfg_path)
m = modeling.build_model(cfg)
m.set_state_dict(paddle.load(args["Global.pretrained_model"] + ".pdparams"))
spec = [paddle.static.InputSpec([None, 3, 64, 256], "float32", "x")]
paddle.jit.save(paddle.jit.to_static(m, input_spec=spec, full_graph=True),
                args["Global.save_inference_dir"] + "/inference")
'''


def _fake_paddleocr(root, fail):
    (root / "tools").mkdir(parents=True)
    (root / "tools" / "export_model.py").write_text(FAKE_EXPORT_MODEL.format(repo=str(REPO), fail=fail))
    return root


def test_paddleocr_dir_branch(tmp_path, ckpt_file, ckpt_export, monkeypatch):
    monkeypatch.setenv("PADDLEOCR_DIR", str(_fake_paddleocr(tmp_path / "broken", True)))
    with pytest.raises(ToolkitError, match="export_model.py failed .*something broke"):
        export.export(CONFIG, ckpt_file, tmp_path / "out")
    assert listing(tmp_path / "out") == []

    monkeypatch.setenv("PADDLEOCR_DIR", str(_fake_paddleocr(tmp_path / "ok", False)))
    result = export.export(CONFIG, ckpt_file, tmp_path / "out")
    assert result.rebuilt and result.metadata["fingerprint"]["inference_model_by"].startswith("PaddleOCR")
    x = np.random.default_rng(5).uniform(-1, 1, (2, 3, 64, 256)).astype(np.float32)
    a = run_ort(tmp_path / "out" / export.OPT_ONNX, x)
    b = run_ort(ckpt_export.out_dir / export.OPT_ONNX, x)
    assert np.abs(a - b).max() < 1e-5
