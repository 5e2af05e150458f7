"""Where ../shared (benchmark data, golden references) is, and a skip when it is not there."""
import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("SVTR_SHARED_DIR") or Path(__file__).resolve().parents[1].parent / "shared")


def shared_path(*parts) -> Path:
    """A file or folder under ../shared; the calling test is skipped, with the reason, if it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data not found: {path} (set SVTR_SHARED_DIR to the shared folder)")
    return path


def golden(name) -> Path:
    return shared_path("golden", name)


def golden_rows():
    """(``x`` of svtr_tiny_seeded_io.npz, {rec_toy image name: its row}): rows 4-13 are the rec_toy
    crops as PaddleOCR preprocessed them."""
    import numpy as np

    gold = np.load(golden("svtr_tiny_seeded_io.npz"))
    rows = {str(name): i for i, name in enumerate(gold["rows"]) if str(name) != "random"}
    assert len(rows) == 10 and min(rows.values()) == 4
    return gold["x"], rows
