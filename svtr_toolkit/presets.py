"""The models this toolkit evaluates, and the files and shapes each one uses (data only).

``svtr`` is the model-zoo subject (PaddleOCR SVTR-Tiny, exported by ci/prepare.sh);
``ppocrv4`` is PP-OCRv4's recogniser from the rapidocr wheel, real pretrained weights for an
end-to-end accuracy proof when the SVTR checkpoint cannot be downloaded. Both run through the
same engine builder and the same evaluation code; the command lines take ``--preset NAME``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ToolkitError
from .files import require_file
from .paths import REPO_ROOT

DEFAULT_PRESET = "svtr"


@dataclass(frozen=True)
class Preset:
    name: str
    config: str  # relative to the repository
    model: str  # the ONNX file engines are built from, relative to the repository
    prepare: str  # how to make the model
    input_name: str = "x"

    @property
    def config_path(self) -> str:
        return os.path.join(REPO_ROOT, self.config)

    @property
    def model_path(self) -> str:
        return os.path.join(REPO_ROOT, self.model)

    def image_shape(self) -> tuple:
        """(C, H, W) the preset's config preprocesses images to."""
        from .config import load_config

        return load_config(self.config_path).image_shape

    def input_shape(self, batch: int) -> tuple:
        return (batch, *self.image_shape())

    def engine_name(self, batch: int, precision: str) -> str:
        return f"{self.name}_bs_{batch}_{precision}.so"

    def require_model(self, model_path: str | None = None) -> str:
        """The model file to use (``model_path`` or the preset's), which must exist."""
        model = model_path or self.model_path
        if not os.path.lexists(model):
            raise ToolkitError(f"{model} not found: run '{self.prepare}' first")
        return require_file(model, "ONNX model")


PRESETS = {
    "svtr": Preset("svtr", "rec_svtr_tiny_6local_6global_stn_en.yml", "SVTR_opt.onnx", "bash ci/prepare.sh"),
    "ppocrv4": Preset("ppocrv4", "configs/ch_PP-OCRv4_rec_eval.yml", "PPOCRv4_rec.onnx",
                      "MODEL_PRESET=ppocrv4 bash ci/prepare.sh"),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ToolkitError(f"unknown model preset '{name}' (choose from {', '.join(PRESETS)})")
    return PRESETS[name]
