"""Contenders beside the TVM engines: OpenVINO (optional) on the same ONNX model as onnxruntime.

OpenVINO runs in two settings: ``openvino-fp32`` (``INFERENCE_PRECISION_HINT=f32``,
``PERFORMANCE_HINT=LATENCY``) and ``openvino-default`` (no hints: on CPUs with bf16 it computes
in bf16). Each is compiled for one static batch, with the thread count the other contenders use.
"""
from __future__ import annotations

import numpy as np

from ..errors import ToolkitError
from ..runtime import Backend

OPENVINO_VERSION = "2026.4.1"  # requirements.txt, benchmark extra
OPENVINO_SETTINGS = {
    "openvino-fp32": {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"},
    "openvino-default": {},
}
# OpenVINO's element type names -> the arithmetic whose peak a contender is set against
_OV_ARITHMETIC = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}


def import_openvino():
    """(module, None), or (None, why not) when openvino cannot be imported."""
    try:
        import openvino
    except ImportError as exc:
        return None, (f"openvino is not installed ({exc}); pip install openvino=={OPENVINO_VERSION} "
                      "(the benchmark extra in requirements.txt) to time it")
    return openvino, None


class OpenVinoBackend(Backend):
    """An ONNX model compiled by OpenVINO for the CPU at one batch size, run by one infer request."""

    name = "openvino"

    def __init__(self, onnx_path: str, batch: int, image_chw, config: dict, threads: int | None = None):
        ov, why = import_openvino()
        if ov is None:
            raise ToolkitError(why)
        core = ov.Core()
        try:
            model = core.read_model(onnx_path)
            self.input_name = model.inputs[0].get_any_name()
            self.input_shape = (batch, *image_chw)
            model.reshape({self.input_name: list(self.input_shape)})
            self.config = dict(config, **({"INFERENCE_NUM_THREADS": int(threads)} if threads else {}))
            self.compiled = core.compile_model(model, "CPU", self.config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise ToolkitError(f"OpenVINO cannot compile {onnx_path} at batch {batch}: {str(exc).splitlines()[0]}")
        self.request = self.compiled.create_infer_request()
        self.version = ov.__version__.split("-")[0]

    @property
    def inference_precision(self) -> str:
        """What OpenVINO actually computes in (e.g. "f32", "bf16")."""
        return self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()

    @property
    def arithmetic(self) -> str:
        precision = self.inference_precision
        return _OV_ARITHMETIC.get(precision, precision)

    def run(self, batch):
        self.check_batch(batch)
        self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return self.request.get_output_tensor(0).data.copy()


def openvino_backends(onnx_path: str, batches, image_chw, threads: int | None, log=print) -> list:
    """[(contender, backend)] for every setting at every batch; [] (with a line) without openvino."""
    ov, why = import_openvino()
    if ov is None:
        log(f"OpenVINO not timed: {why}")
        return []
    out = []
    for name, config in OPENVINO_SETTINGS.items():
        for bs in batches:
            backend = OpenVinoBackend(onnx_path, bs, image_chw, config, threads)
            out.append((name, backend))
        log(f"{name}: OpenVINO {ov.__version__.split('-')[0]}, config {config or '(none: its default)'}, "
            f"{threads or 'default'} threads, computes in {out[-1][1].inference_precision}")
    return out

