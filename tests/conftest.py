import os
import sys
from pathlib import Path

import pytest

# Tests import the toolkit from the checkout and the helpers beside them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SHARED = Path(os.environ.get("SVTR_SHARED_DIR") or Path(__file__).resolve().parents[1].parent / "shared")


@pytest.fixture(scope="session")
def shared_dir():
    """../shared (benchmark data and golden references); tests that need it skip without it."""
    if not (SHARED / "FACTS.md").exists() and not (SHARED / "golden").is_dir():
        pytest.skip(f"shared test data not found at {SHARED} (set SVTR_SHARED_DIR to the shared folder)")
    return SHARED


@pytest.fixture(scope="session")
def golden_export(tmp_path_factory, shared_dir):
    """The golden seeded weights exported once per session (SVTR.onnx, SVTR_opt.onnx)."""
    from svtr_toolkit import export

    out = tmp_path_factory.mktemp("golden_export")
    result = export.export(export.DEFAULT_CONFIG, shared_dir / "golden" / "svtr_tiny_seeded.pdparams", out)
    assert result.rebuilt
    return result
