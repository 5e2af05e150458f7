"""OpenVINO on the CPU: an ONNX model compiled for one static batch, run by one infer request.

The precision is asked for with ``INFERENCE_PRECISION_HINT`` (fp32, bf16, fp16; none: OpenVINO's
own default, bf16 on CPUs with bf16). What OpenVINO then computes in is read back from the
compiled model, never assumed: it may differ from the hint (a CPU without bf16 runs f32).
``PERFORMANCE_HINT=LATENCY`` always: one synchronous request at a time is a latency workload,
and the benchmark's figures must not depend on an OpenVINO release's default hint.
"""
from __future__ import annotations

import numpy as np

from ..errors import ToolkitError, first_line
from ..files import require_file
from .base import Backend

OPENVINO_VERSION = "2026.4.1"  # requirements.txt
PRECISIONS = ("fp32", "bf16", "fp16")
# the toolkit's precision names <-> OpenVINO's element types
_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_OURS = {hint: ours for ours, hint in _HINT.items()}


def import_openvino():
    """(module, None), or (None, why not) when openvino cannot be imported."""
    try:
        import openvino
    except ImportError as exc:
        return None, (f"openvino is not installed ({exc}); pip install openvino=={OPENVINO_VERSION} "
                      "(in requirements.txt)")
    return openvino, None


def openvino_version() -> str | None:
    ov, _ = import_openvino()
    return ov.__version__.split("-")[0] if ov is not None else None


def static_shape(model_shape, batch: int, image_chw, onnx_path: str) -> tuple:
    """The one input shape to compile for: ``batch`` and ``image_chw`` where the model's dimension
    is free; a fixed dimension must be what is asked (a model for 64x256 images is not run at 48x320)."""
    want = (batch, *image_chw)
    if len(model_shape) != len(want):
        raise ToolkitError(f"{onnx_path} takes a {len(model_shape)}-dimensional input, not N,C,H,W")
    if any(m is not None and m != w for m, w in zip(model_shape, want)):
        raise ToolkitError(f"{onnx_path} takes input {list(model_shape)}, not {list(want)}")
    return want


class OpenVinoBackend(Backend):
    name = "openvino"
    runtime = "openvino"
    PRECISIONS = PRECISIONS

    def __init__(self, onnx_path: str, batch: int, image_chw=None, precision: str | None = None,
                 threads: int | None = None):
        """``image_chw``: (C, H, W) for the model's free dimensions (None: the model's own);
        ``precision``: one of PRECISIONS, or None for OpenVINO's default."""
        if precision is not None and precision not in PRECISIONS:
            raise ToolkitError(f"OpenVINO computes in {', '.join(PRECISIONS)}, not {precision}")
        ov, why = import_openvino()
        if ov is None:
            raise ToolkitError(why)
        require_file(onnx_path, "ONNX model")
        core = ov.Core()
        try:
            model = core.read_model(onnx_path)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise ToolkitError(f"OpenVINO cannot read {onnx_path}: {first_line(exc)}")
        self.input_name = model.inputs[0].get_any_name()
        dims = [None if d.is_dynamic else d.get_length() for d in model.inputs[0].get_partial_shape()]
        self.input_shape = static_shape(dims, batch, image_chw or dims[1:], onnx_path)
        if any(d is None for d in self.input_shape):
            raise ToolkitError(f"{onnx_path} has free image dimensions {dims[1:]}: give the image shape (a preset or "
                               f"--config)")
        self.precision = precision
        self.config = {"PERFORMANCE_HINT": "LATENCY"}
        if precision is not None:
            self.config["INFERENCE_PRECISION_HINT"] = _HINT[precision]
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            model.reshape({self.input_name: list(self.input_shape)})
            self.compiled = core.compile_model(model, "CPU", self.config)
        except Exception as exc:
            raise ToolkitError(f"OpenVINO cannot compile {onnx_path} for input {list(self.input_shape)}: "
                               f"{first_line(exc)}")
        self.request = self.compiled.create_infer_request()
        self.runtime_version = ov.__version__.split("-")[0]
        self.inference_precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.computes_in = _OURS.get(self.inference_precision, self.inference_precision)
        self.path = onnx_path

    def run(self, batch):
        self.check_batch(batch)
        self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return self.request.get_output_tensor(0).data.copy()

