"""The models this toolkit evaluates, and the files and shapes each one uses.

``svtr`` is the model-zoo subject (PaddleOCR SVTR-Tiny, exported by ci/prepare.sh);
``ppocrv4`` is PP-OCRv4's recogniser from the rapidocr wheel, real pretrained weights for an
end-to-end accuracy proof when the SVTR checkpoint cannot be downloaded. Both run through the
same engine builder and the same evaluation code.

    PYTHONPATH=. python -m svtr_toolkit.presets svtr --batch 32 --precision fp16

prints shell assignments (model, config, input, engine) for the scripts in scripts/.
"""
from __future__ import annotations

import argparse
import os
import shlex
from dataclasses import dataclass

from .errors import ToolkitError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Preset:
    name: str
    config: str  # relative to the repository
    model: str  # the ONNX file engines are built from, relative to the repository
    prepare: str  # how to make the model
    input_name: str = "x"

    def paths(self, root: str = REPO) -> tuple[str, str]:
        return os.path.join(root, self.config), os.path.join(root, self.model)

    def input_spec(self, batch: int) -> str:
        from .config import load_config

        c, h, w = load_config(self.paths()[0]).image_shape
        return f"{self.input_name}:{batch},{c},{h},{w}"


PRESETS = {
    "svtr": Preset("svtr", "rec_svtr_tiny_6local_6global_stn_en.yml", "SVTR_opt.onnx", "bash ci/prepare.sh"),
    "ppocrv4": Preset("ppocrv4", "configs/ch_PP-OCRv4_rec_eval.yml", "PPOCRv4_rec.onnx",
                      "MODEL_PRESET=ppocrv4 bash ci/prepare.sh"),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ToolkitError(f"unknown model preset '{name}' (choose from {', '.join(PRESETS)})")
    return PRESETS[name]


def shell_assignments(name: str, batch: int, precision: str, engine_dir: str, model_path: str | None = None) -> str:
    preset = get_preset(name)
    if batch < 1:
        raise ToolkitError(f"batch size must be at least 1, got {batch}")
    config, model = preset.paths()
    model = model_path or model
    if not os.path.isfile(model):
        raise ToolkitError(f"{model} not found: run '{preset.prepare}' first")
    values = {
        "model": model,
        "config": config,
        "input_name": preset.input_name,
        "input_spec": preset.input_spec(batch),
        "engine": os.path.join(engine_dir, f"{name}_bs_{batch}_{precision}.so"),
    }
    return "\n".join(f"{key}={shlex.quote(value)}" for key, value in values.items())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--engine_dir", default=os.path.join(REPO, "work", "engines"))
    parser.add_argument("--model_path", default=None, help="use this ONNX file instead of the preset's")
    args = parser.parse_args(argv)
    print(shell_assignments(args.preset, args.batch, args.precision, args.engine_dir, args.model_path))
    return 0


if __name__ == "__main__":
    from common import run_cli  # the repository root is on PYTHONPATH (see scripts/_common.sh)

    run_cli(main)
