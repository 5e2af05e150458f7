"""Engine build: build description, parity with onnxruntime, staleness, atomic writes."""
import os
from pathlib import Path

import pytest

from svtr_toolkit import engine_file, files, runtime
from svtr_toolkit.compile import build, targets
from svtr_toolkit.errors import ToolkitError
from svtr_toolkit.evaluate import parity
from tiny_models import SHAPE


def test_engine_carries_its_build_description(built, tiny):
    import tvm

    path, meta = built
    stored = engine_file.read_engine_metadata(path)
    assert stored == meta
    assert stored["model_sha256"] == files.sha256_file(tiny)
    assert stored["input_name"] == "x" and stored["input_shape"] == list(SHAPE)
    assert stored["precision"] == "fp32" and stored["target"]["kind"] == "llvm"
    assert stored["tvm_version"] == tvm.__version__


@pytest.mark.parametrize("precision, atol, min_agreement", [("fp32", 1e-5, 1.0), ("fp16", 5e-3, 1.0)])
def test_engine_matches_onnxruntime(tiny, tmp_path, x, precision, atol, min_agreement):
    path = str(tmp_path / f"tiny_{precision}.so")
    build.build_engine(tiny, "x", SHAPE, precision, targets.select_target("llvm"), path, log=lambda *_: None)
    result = parity.check(runtime.load_engine(path), tiny, x)
    assert result.max_abs_diff <= atol and result.argmax_agreement >= min_agreement, result


def test_fresh_engine_is_reused_and_stale_one_rebuilt(built, tiny, tmp_path):
    path, meta = built
    messages = []
    before = os.stat(path).st_mtime_ns
    build.build_engine(tiny, "x", SHAPE, "fp32", targets.select_target("llvm"), path, log=messages.append)
    assert os.stat(path).st_mtime_ns == before and "up to date" in messages[0]

    copy = tmp_path / "copy.so"
    copy.write_bytes(Path(path).read_bytes())
    messages.clear()
    build.build_engine(tiny, "x", (1, 3, 8, 16), "fp32", targets.select_target("llvm"), str(copy), log=messages.append)
    assert "input shape changed" in messages[0]
    assert engine_file.read_engine_metadata(str(copy))["input_shape"] == [1, 3, 8, 16]


def test_an_engine_rebuilt_at_the_same_path_runs_its_own_model(tmp_path, x):
    """The dynamic loader hands back the library it mapped first for a path; an engine rebuilt
    at that path in the same process must still run its own model, not the first one's."""
    import numpy as np

    from tiny_models import ort_run, tiny_recogniser

    path, outputs = str(tmp_path / "engine.so"), []
    for seed in (1, 2, 1):
        model = tiny_recogniser(tmp_path / f"tiny{seed}.onnx", seed=seed)
        build.build_engine(model, "x", SHAPE, "fp32", targets.select_target("llvm"), path, log=lambda *_: None)
        result = parity.check(runtime.load_engine(path), model, x)
        assert result.max_abs_diff <= 1e-5, (seed, result)
        outputs.append(ort_run(model, x))
    assert not np.allclose(outputs[0], outputs[1], atol=1e-3)  # the two models differ


def test_stale_reasons_name_every_change(built):
    _, meta = built
    identity = {k: meta[k] for k in ("recipe", "model_sha256", "input_name", "input_shape", "precision", "target", "tvm_version")}
    assert build.stale_reasons(meta, identity) == []
    changed = dict(identity, model_sha256="0" * 64, precision="fp16", tvm_version="9.9", target={"kind": "cuda"})
    reasons = " | ".join(build.stale_reasons(meta, changed))
    for word in ("source model", "precision", "tvm version", "target"):
        assert word in reasons
    assert build.stale_reasons(None, identity)


def test_the_build_recipe_is_the_compile_code_and_the_toolkit_version(built, monkeypatch, tmp_path):
    """An engine goes stale when the code that compiles engines changes (a digest of
    svtr_toolkit/compile and the version), not when someone remembers to bump a number."""
    import shutil

    import svtr_toolkit

    _, meta = built
    assert meta["recipe"] == build.recipe_digest()
    identity = {k: meta[k] for k in ("recipe", "model_sha256", "input_name", "input_shape", "precision", "target",
                                     "tvm_version")}
    monkeypatch.setattr(svtr_toolkit, "__version__", svtr_toolkit.__version__ + "+1")
    assert build.recipe_digest() != meta["recipe"]
    assert any(r.startswith("build recipe changed") for r in build.stale_reasons(meta, dict(identity, recipe=build.recipe_digest())))
    monkeypatch.undo()
    # a copy of the compile stage with one line added digests differently
    copy = tmp_path / "svtr_toolkit"
    shutil.copytree(Path(svtr_toolkit.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "compile" / "schedule_rules" / "rule.py").open("a").write("# changed\n")
    monkeypatch.setattr(build, "__file__", str(copy / "compile" / "build.py"))
    assert build.recipe_digest() != meta["recipe"]


def test_engine_without_description_is_rejected(tmp_path):
    plain = tmp_path / "plain.so"
    plain.write_bytes(b"\x7fELF not ours")
    assert engine_file.read_engine_metadata(str(plain)) is None
    with pytest.raises(ToolkitError, match="not an engine built by this toolkit"):
        runtime.load_engine(str(plain))


def test_interrupted_build_leaves_no_loadable_file(built, tiny, tmp_path, monkeypatch):
    from tvm.runtime.executable import Executable

    target = tmp_path / "engine.so"
    old = Path(built[0]).read_bytes()
    target.write_bytes(old)

    def half_write(self, path, *args, **kwargs):
        Path(path).write_bytes(b"\x7fELF half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Executable, "export_library", half_write)
    with pytest.raises(KeyboardInterrupt):
        build.build_engine(tiny, "x", SHAPE, "fp16", targets.select_target("llvm"), str(target), log=lambda *_: None)
    assert target.read_bytes() == old, "the previous engine must survive an interrupted rebuild"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine.so"], "no partial files left behind"

    fresh = tmp_path / "new.so"
    with pytest.raises(KeyboardInterrupt):
        build.build_engine(tiny, "x", SHAPE, "fp32", targets.select_target("llvm"), str(fresh), log=lambda *_: None)
    assert not fresh.exists()
