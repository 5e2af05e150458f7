"""Fixtures shared by several test files: the environment every test runs in, and what is made
once per session (the tiny model and engine, the golden export, a paddle checkpoint)."""
import os

import pytest

from cli_runs import REPO
from shared_data import shared_path

SVTR_CONFIG = REPO / "rec_svtr_tiny_6local_6global_stn_en.yml"


@pytest.fixture(scope="session", autouse=True)
def no_shipped_tuning_database(tmp_path_factory):
    """Builds in tests do not pick up tuning/<cpu class>: results must not depend on what has
    been tuned on this machine (tests that want a database name one explicitly)."""
    os.environ["SVTR_TUNING_DIR"] = str(tmp_path_factory.mktemp("no-tuning"))
    yield
    os.environ.pop("SVTR_TUNING_DIR", None)


@pytest.fixture(scope="session")
def shared_dir():
    """../shared (benchmark data and golden references); tests that need it skip without it."""
    return shared_path("golden").parent


@pytest.fixture(scope="session")
def golden_export(tmp_path_factory, shared_dir):
    """The golden seeded weights exported once per session (SVTR.onnx, SVTR_opt.onnx)."""
    from svtr_toolkit.prepare import export

    out = tmp_path_factory.mktemp("golden_export")
    result = export.export(export.DEFAULT_CONFIG, shared_dir / "golden" / "svtr_tiny_seeded.pdparams", out)
    assert result.rebuilt
    return result


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny SVTR-shaped recogniser (STN-like GridSample, clamps, Resize, CTC head) as ONNX."""
    from tiny_models import tiny_recogniser

    return tiny_recogniser(tmp_path_factory.mktemp("models") / "tiny.onnx")


@pytest.fixture(scope="session")
def x():
    from svtr_toolkit.numerics import random_batch
    from tiny_models import SHAPE

    return random_batch(SHAPE)


@pytest.fixture(scope="session")
def built(tiny, tmp_path_factory):
    from svtr_toolkit.compile import build, targets
    from tiny_models import SHAPE

    path = str(tmp_path_factory.mktemp("engines") / "tiny_fp32.so")
    meta = build.build_engine(tiny, "x", SHAPE, "fp32", targets.select_target("llvm"), path, log=lambda *_: None)
    return path, meta


def _paddle():
    """paddle, quiet, or the test is skipped where it is not installed."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    return pytest.importorskip("paddle")


@pytest.fixture(scope="session")
def spec():
    """SVTR-Tiny's state dict as [(name, shape)], from the toolkit's modeling code."""
    _paddle()
    from svtr_toolkit.config import load_config
    from svtr_toolkit.prepare import modeling

    return modeling.state_dict_spec(modeling.build_model(load_config(str(SVTR_CONFIG)), seed=1))


@pytest.fixture(scope="session")
def ckpt_file(tmp_path_factory):
    """A real paddle.save'd checkpoint (with paddle.save's bookkeeping key), seed 7."""
    paddle = _paddle()
    from svtr_toolkit.config import load_config
    from svtr_toolkit.prepare import modeling

    m = modeling.build_model(load_config(str(SVTR_CONFIG)), seed=7)
    path = tmp_path_factory.mktemp("ckpt") / "best_accuracy.pdparams"
    paddle.save(m.state_dict(), str(path))
    return path
