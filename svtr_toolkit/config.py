"""PaddleOCR-style recognition configs: the parts this toolkit acts on.

One yml drives everything: ``Architecture`` builds the network (export), ``Global`` and
``PostProcess`` give the character set, ``Eval.dataset.transforms`` the preprocessing (read by
``preprocess.eval_resize``) and ``Metric`` the scoring rules. Only what PaddleOCR itself would
read is read.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property

import yaml

from .errors import ToolkitError
from .files import require_file, sha256_file
from .preprocess import eval_resize

# CTCLabelDecode's character set when Global.character_dict_path is empty; it also turns
# on lower-casing of labels (CTCLabelEncode) so the metric is case-insensitive.
DEFAULT_CHARACTERS = "0123456789abcdefghijklmnopqrstuvwxyz"
# A dictionary that lives inside the ONNX model (PP-OCR models exported by RapidOCR).
ONNX_METADATA_DICT = "onnx_metadata"


@dataclass(frozen=True)
class RecConfig:
    path: str
    raw: dict = field(repr=False)
    algorithm: str
    architecture: dict = field(repr=False)
    image_shape: tuple  # (C, H, W) fed to the network
    resize: str  # preprocess.RESIZE_TRANSFORMS: "stretch" (SVTRRecResizeImg) or "pad" (RecResizeImg)
    max_text_length: int
    character_dict_path: str | None  # absolute path, ONNX_METADATA_DICT, or None (built-in)
    use_space_char: bool
    ignore_space: bool  # RecMetric
    is_filter: bool  # RecMetric: keep only [a-z0-9] after lower-casing

    @property
    def lowercase(self) -> bool:
        """PaddleOCR lower-cases labels exactly when it uses the built-in character set."""
        return self.character_dict_path is None

    @property
    def dictionary_in_model(self) -> bool:
        """The dictionary travels in the model's ONNX metadata (PP-OCR models from RapidOCR)."""
        return self.character_dict_path == ONNX_METADATA_DICT

    @property
    def dictionary_file(self) -> str | None:
        """The character dictionary file this config reads, if it reads one."""
        return None if self.character_dict_path in (None, ONNX_METADATA_DICT) else self.character_dict_path

    @cached_property
    def digest(self) -> str:
        """sha256 of the yml, read once per loaded config."""
        return sha256_file(self.path)

    def characters(self, model_metadata: dict | None = None) -> list[str]:
        """The decoder's classes without the CTC blank (class 0 is the blank).

        ``model_metadata`` is the model's ONNX metadata (``Backend.model_metadata``), used
        when the config says the dictionary travels inside the model.
        """
        if self.character_dict_path is None:
            chars = list(DEFAULT_CHARACTERS)
        elif self.dictionary_in_model:
            if not model_metadata or "character" not in model_metadata:
                raise ToolkitError(f"{self.path} takes its dictionary from the model, but the model has no 'character' metadata")
            chars = model_metadata["character"].splitlines()
        else:
            require_file(self.character_dict_path, "character dictionary")
            try:
                with open(self.character_dict_path, "rb") as fh:
                    lines = fh.readlines()
            except OSError as exc:
                raise ToolkitError(f"cannot read character dictionary {self.character_dict_path}: {exc.strerror}")
            chars = []
            for number, line in enumerate(lines, 1):
                try:
                    chars.append(line.decode("utf-8").strip("\n").strip("\r\n"))
                except UnicodeDecodeError:
                    raise ToolkitError(f"character dictionary {self.character_dict_path}:{number} is not UTF-8") from None
        if self.use_space_char and self.character_dict_path is not None and " " not in chars:
            chars.append(" ")  # PaddleOCR ignores use_space_char for the built-in set
        return chars


def _get(mapping, dotted, path):
    node = mapping
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            raise ToolkitError(f"{path}: missing '{dotted}'")
        node = node[key]
    return node


def load_config(path: str) -> RecConfig:
    """Read and check a recognition yml; every problem is one ToolkitError line."""
    require_file(path, "config")
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ToolkitError(f"{path}: not valid YAML ({exc.__class__.__name__})")
    if not isinstance(raw, dict):
        raise ToolkitError(f"{path}: not a PaddleOCR config (top level is not a mapping)")
    arch = _get(raw, "Architecture", path)
    if not isinstance(arch, dict) or arch.get("model_type") != "rec":
        raise ToolkitError(f"{path}: Architecture.model_type must be 'rec'")
    head = (arch.get("Head") or {}).get("name")
    post = (raw.get("PostProcess") or {}).get("name")
    if head != "CTCHead" and post != "CTCLabelDecode":
        raise ToolkitError(f"{path}: not a CTC recogniser (Head {head!r}, PostProcess {post!r})")
    glob = raw.get("Global") or {}
    max_len = glob.get("max_text_length", 25)
    if not isinstance(max_len, int) or max_len <= 0:
        raise ToolkitError(f"{path}: Global.max_text_length must be a positive integer")
    dict_path = glob.get("character_dict_path") or None
    if dict_path and dict_path != ONNX_METADATA_DICT and not os.path.isabs(dict_path):
        dict_path = os.path.join(os.path.dirname(os.path.abspath(path)), dict_path)
    metric = raw.get("Metric") or {}
    image_shape, resize = eval_resize(_get(raw, "Eval.dataset.transforms", path), path)
    return RecConfig(
        path=os.path.abspath(path),
        raw=raw,
        algorithm=str(arch.get("algorithm", "")),
        architecture=arch,
        image_shape=image_shape,
        resize=resize,
        max_text_length=max_len,
        character_dict_path=dict_path,
        use_space_char=bool(glob.get("use_space_char", False)),
        ignore_space=bool(metric.get("ignore_space", True)),
        is_filter=bool(metric.get("is_filter", False)),
    )


def require_svtr_stn_ctc(cfg: RecConfig) -> None:
    """The export path builds exactly STN_ON + SVTRNet + reshape neck + CTCHead."""
    arch = cfg.architecture
    parts = {
        "Transform": (arch.get("Transform") or {}).get("name"),
        "Backbone": (arch.get("Backbone") or {}).get("name"),
        "Neck": (arch.get("Neck") or {}).get("name"),
        "Head": (arch.get("Head") or {}).get("name"),
    }
    want = {"Transform": "STN_ON", "Backbone": "SVTRNet", "Neck": "SequenceEncoder", "Head": "CTCHead"}
    wrong = [f"{k} is {parts[k]!r}, expected {v!r}" for k, v in want.items() if parts[k] != v]
    if wrong:
        raise ToolkitError(f"{cfg.path}: not an SVTR CTC config: " + "; ".join(wrong))
