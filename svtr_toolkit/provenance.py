"""What a model's weights are (trained or untrained) and which model file it is, carried from
the export (ONNX metadata_props) through the engine's build description to every accuracy output."""
from __future__ import annotations

import json
import os

UNTRAINED = "untrained"


def weights_of(model_metadata: dict | None, model_path: str | None = None, model_sha256: str | None = None) -> str | None:
    """``trained`` / ``untrained`` from the model's metadata_props (``weights``); for an export
    made before that property existed, from its ``<model>.json`` beside it when that describes
    this very file; None when nothing says (e.g. a model from elsewhere)."""
    weights = (model_metadata or {}).get("weights")
    if weights:
        return weights
    if not model_path or not model_sha256:
        return None
    try:
        with open(model_path + ".json", encoding="utf-8") as fh:
            sidecar = json.load(fh)
        recorded = sidecar["outputs"][os.path.basename(model_path)]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if recorded != model_sha256:
        return None
    return UNTRAINED if str(sidecar.get("weights", "")).startswith("untrained") else "trained"


def untrained_warning(weights: str | None) -> str | None:
    """The line printed next to an accuracy measured with untrained weights."""
    if weights != UNTRAINED:
        return None
    return ("warning: weights: untrained (a seeded random initialisation, not a checkpoint): the accuracy above "
            "is meaningless; export with --checkpoint for real weights")
