"""PaddleOCR's evaluation preprocessing: which transform of a config's ``Eval.dataset.transforms``
resizes the image and how, and the resize + normalise itself, from decoded image bytes to the
float32 CHW slot the engine reads. Change preprocessing here.

``stretch``: SVTRRecResizeImg(padding=False), a plain ``cv2.resize`` to (W, H).
``pad``: RecResizeImg / resize_norm_img, keep aspect ratio, width capped at W, zeros on the
right (zero after normalisation, as PaddleOCR pads).
"""
from __future__ import annotations

import math

import numpy as np

from .errors import ToolkitError

# The eval transforms PaddleOCR resizes recognition images with, and the resize each one does.
RESIZE_TRANSFORMS = {"SVTRRecResizeImg": "stretch", "RecResizeImg": "pad"}
RESIZE_KINDS = tuple(dict.fromkeys(RESIZE_TRANSFORMS.values()))


def eval_resize(transforms, path: str) -> tuple[tuple, str]:
    """((C, H, W), resize kind) from a config's ``Eval.dataset.transforms`` list (``path``: the
    config, for messages); the first resize transform decides."""
    for item in transforms or []:
        if not isinstance(item, dict) or len(item) != 1:
            continue
        (name, args), = item.items()
        if name in RESIZE_TRANSFORMS:
            args = args or {}
            shape = args.get("image_shape")
            if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)):
                raise ToolkitError(f"{path}: {name}.image_shape must be [C, H, W], got {shape!r}")
            if name == "SVTRRecResizeImg" and args.get("padding", True):
                raise ToolkitError(f"{path}: SVTRRecResizeImg with padding is not supported (set padding: False)")
            return tuple(shape), RESIZE_TRANSFORMS[name]
    raise ToolkitError(f"{path}: Eval.dataset.transforms has no {' or '.join(RESIZE_TRANSFORMS)}")


# OpenCV is imported where pixels are handled, not at import: config.py reads this module's
# transform table, and the export (PaddlePaddle) reads configs.


def decode_image(buf) -> np.ndarray | None:
    """``cv2.imdecode(buf, 1)``: BGR HWC uint8, or None when the bytes are not an image, or
    one OpenCV refuses to decode (a header claiming more than CV_IO_MAX_IMAGE_PIXELS pixels)."""
    import cv2

    if not buf:
        return None
    try:
        return cv2.imdecode(np.frombuffer(buf, np.uint8), 1)
    except cv2.error:
        return None


class Preprocessor:
    """PaddleOCR's eval resize + normalise, written into a float32 CHW slot in [-1, 1]."""

    def __init__(self, image_shape, resize: str):
        c, self.height, self.width = image_shape
        if c != 3:
            raise ToolkitError(f"only 3-channel (BGR) input is supported, the config asks for {c}")
        if resize not in RESIZE_KINDS:
            raise ToolkitError(f"unknown resize kind {resize!r}")
        self.shape = tuple(image_shape)
        self.resize = resize
        # PaddleOCR: float32, /255, -0.5, /0.5 elementwise; a table gives the same bits.
        lut = np.arange(256, dtype=np.float32) / 255
        lut -= 0.5
        lut /= 0.5
        self.lut = lut

    @classmethod
    def from_config(cls, cfg) -> "Preprocessor":
        return cls(cfg.image_shape, cfg.resize)

    def check_input(self, backend) -> None:
        """The engine must take exactly what this preprocessing produces."""
        if any(dim is not None and dim != want for dim, want in zip(backend.input_shape[1:], self.shape)):
            raise ToolkitError(
                f"the engine takes '{backend.input_name}' of shape {list(backend.input_shape)}, but the config "
                f"preprocesses images to {list(self.shape)}; wrong config for this engine?"
            )

    def resized_width(self, h: int, w: int) -> int:
        if self.resize == "stretch":
            return self.width
        return min(self.width, int(math.ceil(self.height * (w / float(h)))))

    def __call__(self, img: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``img`` (BGR HWC uint8) resized and normalised into ``out`` (a new array if None).
        Raises ``cv2.error`` for an image OpenCV cannot resize."""
        import cv2

        if out is None:
            out = np.empty(self.shape, np.float32)
        rw = self.resized_width(*img.shape[:2])
        resized = cv2.resize(img, (rw, self.height))
        out[:, :, :rw] = cv2.LUT(resized, self.lut).transpose(2, 0, 1)
        out[:, :, rw:] = 0.0
        return out
