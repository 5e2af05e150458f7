"""svtr_toolkit.preprocess: which eval transform of a config resizes and how, and the resize +
normalise against PaddleOCR's own (its golden rows, and its resize_norm_img transcribed)."""
import math

import cv2
import numpy as np
import pytest

from shared_data import golden_rows, shared_path
from svtr_toolkit.errors import ToolkitError
from svtr_toolkit.preprocess import RESIZE_TRANSFORMS, Preprocessor, decode_image, eval_resize


def resize_norm_img_paddleocr(img, image_shape, padding=True):
    """PaddleOCR ppocr/data/imaug/rec_img_aug.py resize_norm_img, transcribed (the reference)."""
    imgC, imgH, imgW = image_shape
    h, w = img.shape[0], img.shape[1]
    if not padding:
        resized_image = cv2.resize(img, (imgW, imgH), interpolation=cv2.INTER_LINEAR)
        resized_w = imgW
    else:
        ratio = w / float(h)
        resized_w = imgW if math.ceil(imgH * ratio) > imgW else int(math.ceil(imgH * ratio))
        resized_image = cv2.resize(img, (resized_w, imgH))
    resized_image = resized_image.astype("float32")
    resized_image = resized_image.transpose((2, 0, 1)) / 255
    resized_image -= 0.5
    resized_image /= 0.5
    padding_im = np.zeros((imgC, imgH, imgW), dtype=np.float32)
    padding_im[:, :, 0:resized_w] = resized_image
    return padding_im



def test_golden_preprocessing_from_image_files():
    x, rows = golden_rows()
    pre = Preprocessor((3, 64, 256), "stretch")
    for name, row in rows.items():
        img = decode_image(shared_path("data", "rec_toy", "imgs", name).read_bytes())
        np.testing.assert_array_equal(pre(img), x[row], err_msg=name)


@pytest.mark.parametrize("h,w", [(32, 100), (48, 20), (48, 900), (7, 3), (100, 101)])
def test_pad_resize_matches_paddleocr(h, w):
    img = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    pre = Preprocessor((3, 48, 320), "pad")
    out = pre(img, np.full((3, 48, 320), 7.0, np.float32))  # a dirty slot must be overwritten
    np.testing.assert_array_equal(out, resize_norm_img_paddleocr(img, (3, 48, 320), padding=True))
    np.testing.assert_array_equal(Preprocessor((3, 48, 320), "stretch")(img),
                                  resize_norm_img_paddleocr(img, (3, 48, 320), padding=False))


def test_pad_width_rule_and_range():
    pre = Preprocessor((3, 48, 320), "pad")
    assert pre.resized_width(32, 50) == 75  # ceil(48 * 50 / 32)
    assert pre.resized_width(10, 1000) == 320
    img = np.zeros((32, 50, 3), np.uint8)
    img[:] = 255
    out = pre(img)
    assert out.dtype == np.float32 and out[:, :, :75].min() == 1.0 and not out[:, :, 75:].any()
    assert Preprocessor((3, 64, 256), "stretch")(np.zeros((5, 5, 3), np.uint8)).min() == -1.0


def test_preprocessor_rejects_non_bgr():
    with pytest.raises(ToolkitError, match="3-channel"):
        Preprocessor((1, 32, 100), "stretch")


def test_the_eval_transform_decides_shape_and_resize():
    transforms = [{"DecodeImage": {"img_mode": "BGR"}}, {"SVTRRecResizeImg": {"image_shape": [3, 64, 256],
                                                                            "padding": False}}]
    assert eval_resize(transforms, "rec.yml") == ((3, 64, 256), "stretch")
    assert eval_resize([{"RecResizeImg": {"image_shape": [3, 48, 320]}}], "rec.yml") == ((3, 48, 320), "pad")
    assert set(RESIZE_TRANSFORMS.values()) == {"stretch", "pad"}


@pytest.mark.parametrize("transforms, message", [
    ([{"DecodeImage": None}], "Eval.dataset.transforms has no SVTRRecResizeImg or RecResizeImg"),
    ([{"SVTRRecResizeImg": {"image_shape": [3, 64, 256]}}], "SVTRRecResizeImg with padding is not supported"),
    ([{"RecResizeImg": {"image_shape": [64, 256]}}], r"RecResizeImg.image_shape must be \[C, H, W\]"),
    (None, "Eval.dataset.transforms has no"),
])
def test_an_eval_transform_the_toolkit_cannot_follow_is_one_error(transforms, message):
    with pytest.raises(ToolkitError, match=message):
        eval_resize(transforms, "rec.yml")


def test_bytes_that_are_not_an_image_decode_to_none():
    assert decode_image(b"") is None and decode_image(None) is None
    assert decode_image(b"not an image") is None
    img = decode_image(cv2.imencode(".png", np.zeros((4, 6, 3), np.uint8))[1].tobytes())
    assert img.shape == (4, 6, 3) and img.dtype == np.uint8
