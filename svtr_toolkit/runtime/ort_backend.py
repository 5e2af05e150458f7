"""onnxruntime on the CPU, fp32: the reference every engine is compared against."""
from __future__ import annotations

import numpy as np

from ..errors import ToolkitError, first_line
from ..files import require_file
from .base import Backend


class OrtBackend(Backend):
    name = "onnxruntime"
    runtime = "onnxruntime"
    PRECISIONS = ("fp32",)  # its CPU provider computes the model as it is stored

    def __init__(self, onnx_path: str, threads: int | None = None):
        import onnxruntime as ort

        require_file(onnx_path, "ONNX model")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise ToolkitError(f"onnxruntime cannot load {onnx_path}: {first_line(exc)}")
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inp.shape)
        self.model_metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.path = onnx_path
        self.runtime_version = ort.__version__

    def run(self, batch):
        self.check_batch(batch)
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
