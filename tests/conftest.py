import pytest

from shared_data import shared_path


@pytest.fixture(scope="session", autouse=True)
def no_shipped_tuning_database(tmp_path_factory):
    """Builds in tests do not pick up tuning/<cpu class>: results must not depend on what has
    been tuned on this machine (tests that want a database name one explicitly)."""
    import os

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


