"""Trained and untrained weights: a trained export is never replaced by an untrained one unless
asked, and a model's 'untrained' mark reaches every accuracy output (console, metricResult,
report), through onnxruntime and through an engine's build description."""
import ast
import hashlib
import json
import shutil
from pathlib import Path

import onnx

from cli_runs import run_main, run_process
from tiny_models import make_fake_onnx, write_lmdb


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_trained_export_is_not_replaced_by_an_untrained_one(golden_export, tmp_path):
    from svtr_toolkit.prepare import export

    out = tmp_path / "out"
    shutil.copytree(golden_export.out_dir, out)
    before = sha(out / export.OPT_ONNX)
    props = {p.key: p.value for p in onnx.load(str(out / export.OPT_ONNX)).metadata_props}
    assert props["weights"] == "trained" and len(props["checkpoint_sha256"]) == 64

    plain = run_process(["ci/prepare.sh", "--out_dir", out], env={"SKIP_INSTALL": "1"})
    assert plain.code == 0, plain.err
    assert "keeping" in plain.err and "--force replaces it" in plain.err
    explicit = run_main("export_onnx", "--out_dir", out)
    assert "refusing to replace it with an untrained model" in explicit.one_error()
    assert sha(out / export.OPT_ONNX) == before


def untrained_model(path):
    model = onnx.load(str(make_fake_onnx(path)))
    model.metadata_props.add(key="weights", value="untrained")
    onnx.save(model, str(path))
    return path


def check_untrained_outputs(ran, report, model_sha):
    assert ran.code == 0, ran.err
    lines = ran.out.splitlines()
    warn = [i for i, ln in enumerate(lines) if ln.startswith("warning: weights: untrained")]
    metric = [i for i, ln in enumerate(lines) if ln.startswith("{'metricResult'")]
    assert warn and metric and warn[0] == metric[0] - 1, ran.out  # next to the accuracy
    assert ast.literal_eval(lines[metric[0]])["metricResult"]["weights"] == "untrained"
    out = json.loads(Path(report).read_text())
    assert out["model"] == {"sha256": model_sha, "weights": "untrained"}


def test_untrained_weights_reach_every_accuracy_output(tmp_path):
    from svtr_toolkit.compile import build, targets

    write_lmdb(tmp_path / "data" / "toy", ["hotel"] * 8 + ["grand"])
    model = untrained_model(tmp_path / "untrained.onnx")

    def infer(engine, report):
        return run_main("inference", "--engine", engine, "--batchsize", 4, "--datasets", tmp_path / "data",
                        "--report", report)

    check_untrained_outputs(infer(model, tmp_path / "ort.json"), tmp_path / "ort.json", sha(model))
    engine = tmp_path / "untrained.so"
    meta = build.build_engine(str(model), "x", (4, 3, 64, 256), "fp32", targets.select_target("llvm"), str(engine),
                              log=lambda *_: None)
    assert meta["weights"] == "untrained" and meta["model_sha256"] == sha(model)
    check_untrained_outputs(infer(engine, tmp_path / "tvm.json"), tmp_path / "tvm.json", sha(model))
