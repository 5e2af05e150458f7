"""open_backend, the evaluation loop, timing and the report, called directly (not through inference.py)."""
import json

import numpy as np
import pytest

from svtr_toolkit import files, runtime
from svtr_toolkit.config import load_config
from svtr_toolkit.errors import ToolkitError
from svtr_toolkit.evaluate import report, runner
from svtr_toolkit.evaluate.data import Dataset, LabelRules
from svtr_toolkit.preprocess import Preprocessor
from svtr_toolkit.presets import PRESETS
from tiny_models import make_fake_onnx, write_lmdb

LABELS = ["hotel", "HOTEL", "grand", "pacific", "!!!"]  # 'hotel' twice, '!!!' rejected


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("direct")
    write_lmdb(tmp / "data" / "toy", LABELS)
    cfg = load_config(PRESETS["svtr"].config_path)
    return {"model": str(make_fake_onnx(tmp / "fake.onnx")), "fixed": str(make_fake_onnx(tmp / "b2.onnx", batch=2)),
            "data": str(tmp / "data"), "cfg": cfg}


def test_open_backend_picks_onnxruntime_and_checks_what_was_asked(setup):
    backend = runtime.open_backend(setup["model"], batch_size=4, input_name="x")
    assert isinstance(backend, runtime.OrtBackend) and backend.input_shape == (4, 3, 64, 256)
    assert backend.run(np.zeros((4, 3, 64, 256), np.float32)).shape == (4, 25, 37)
    with pytest.raises(ToolkitError, match="batch size 2, not 4"):
        runtime.open_backend(setup["fixed"], batch_size=4)
    with pytest.raises(ToolkitError, match="has input 'x', not 'images'"):
        runtime.open_backend(setup["model"], input_name="images")
    with pytest.raises(ToolkitError, match="engine not found"):
        runtime.open_backend(setup["model"] + ".missing")


def test_open_backend_runs_a_tvm_engine(built, x):
    backend = runtime.open_backend(built[0], batch_size=x.shape[0])
    assert backend.name == "tvm-llvm-fp32"
    assert backend.run(x).shape[0] == x.shape[0]
    assert len(backend.time_compute(2)) == 2


def test_a_tvm_engines_outputs_stay_as_they_were_after_later_calls(built, x):
    """run() hands back the engine's own output tensor (no copy): each call's must be its own,
    unchanged by the next calls, and equal to a copy taken at once."""
    backend = runtime.open_backend(built[0], batch_size=x.shape[0])
    first = backend.run(x)
    kept = np.array(first, copy=True)
    second = backend.run(np.ascontiguousarray(x[::-1]))
    backend.run(np.zeros_like(x))
    assert np.array_equal(first, kept)
    assert not np.array_equal(first, second)  # the other input's rows: another output
    assert np.array_equal(backend.run(x), kept)


def test_evaluate_and_the_typed_summary(setup):
    cfg = setup["cfg"]
    backend = runtime.open_backend(setup["model"], batch_size=4)
    characters = cfg.characters()
    with Dataset(setup["data"], LabelRules.from_config(cfg, characters)) as dataset:
        result = runner.evaluate(backend, dataset, Preprocessor.from_config(cfg), characters, 4)
        summary = report.accuracy_summary(dataset, result)
    assert (summary.pooled.samples, summary.pooled.correct, summary.pooled.acc) == (4, 2, 0.5)
    assert summary.rejected == 1 and summary.subsets[0].rejected_by_reason == {"no dictionary character in label": 1}
    text = report.format_accuracy(summary)
    assert text.splitlines()[0].split() == ["subset", "lmdb", "evaluated", "rejected", "unreadable", "acc", "%",
                                            "norm_edit_dis"]
    assert "acc 50.00 %" in text and "1 label(s) rejected" in text
    as_json = json.loads(json.dumps(summary.to_dict()))
    assert as_json["pooled"] == {"samples": 4, "correct": 2, "acc": 0.5, "norm_edit_dis": as_json["pooled"]["norm_edit_dis"]}


def test_the_timed_loop_and_checks(setup):
    cfg = setup["cfg"]
    backend = runtime.open_backend(setup["model"], batch_size=2)
    with Dataset(setup["data"], LabelRules.from_config(cfg, cfg.characters())) as dataset:
        timing = runner.timed_loop(backend, dataset, Preprocessor.from_config(cfg), 2, warmup=1,
                                   loop_count=3, workers=1)
    assert timing.loop_count == 3 and timing.fps > 0 and timing.e2e_fps > 0
    assert set(timing.to_dict()) >= {"mean_ms", "p50_ms", "p99_ms", "fps", "loader_fps", "e2e_fps"}
    assert report.format_perf(timing).startswith("* Mean inference time:")
    passed, failed = report.Check("fps", 0.0, timing.fps), report.Check("fps", 1e12, timing.fps)
    assert passed.passed and passed.line.endswith("PASS")
    assert not failed.passed and failed.line.endswith("FAIL")
    assert report.Check("acc", 0.5, None).line == "acc check: expected >= 0.5, got -: FAIL"


def test_write_json_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    files.write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}

    def boom(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        files.write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["r.json"]
