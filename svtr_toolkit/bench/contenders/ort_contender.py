"""onnxruntime fp32 on the model: the reference, timed at every sweep batch and at every other
contender's batch, so each has a ratio to it."""
from __future__ import annotations

from . import Entry, Setup

NAME = "onnxruntime-fp32"


def version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def unavailable() -> str | None:
    return None if version() else "onnxruntime is not installed (pip install -r requirements.txt)"


def entries(setup: Setup) -> list:
    return [Entry(NAME, setup.reference, batch=setup.reference.input_shape[0], reference=True)]
