import sys
from pathlib import Path

import pytest

# Tests import the toolkit from the checkout and the helpers beside them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from shared_data import shared_path  # noqa: E402


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
    from svtr_toolkit import export

    out = tmp_path_factory.mktemp("golden_export")
    result = export.export(export.DEFAULT_CONFIG, shared_dir / "golden" / "svtr_tiny_seeded.pdparams", out)
    assert result.rebuilt
    return result
