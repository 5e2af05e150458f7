"""Runtimes behind one small interface, so evaluation and timing have one loop.

``open_backend`` picks by file: a ``.onnx`` runs on onnxruntime (the reference), anything
else is a compiled TVM engine (see ``svtr_toolkit.engine``).
"""
from __future__ import annotations

import os
import time

import numpy as np

from .errors import ToolkitError


class Backend:
    """A loaded model with a fixed input: ``run`` maps an NCHW float32 batch to probabilities."""

    name = "backend"
    input_name: str
    input_shape: tuple  # (N, C, H, W); N is None when the batch dimension is free
    model_metadata: dict = {}  # the source ONNX model's metadata_props (e.g. a PP-OCR dictionary)

    def run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def time_compute(self, repeat: int, number: int = 1) -> list:
        """Seconds per call of ``run`` on a fixed device-resident input, ``repeat`` samples.

        The default times ``run`` with wall clock; backends with their own time evaluator
        (TVM) override it so figures compare with the model zoo's.
        """
        n = self.input_shape[0] or 1
        batch = np.random.default_rng(0).uniform(-1, 1, (n, *self.input_shape[1:])).astype(np.float32)
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(number):
                self.run(batch)
            samples.append((time.perf_counter() - start) / number)
        return samples

    def check_batch(self, batch: np.ndarray) -> None:
        want = self.input_shape
        if batch.ndim != len(want) or any(w is not None and w != got for w, got in zip(want, batch.shape)):
            raise ToolkitError(
                f"{self.name} takes input '{self.input_name}' of shape {list(want)}, got {list(batch.shape)}"
            )


class OrtBackend(Backend):
    """onnxruntime on the CPU, fp32: the reference every engine is compared against."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str, threads: int | None = None):
        import onnxruntime as ort

        if not os.path.isfile(onnx_path):
            raise ToolkitError(f"ONNX model not found: {onnx_path}")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise ToolkitError(f"onnxruntime cannot load {onnx_path}: {str(exc).splitlines()[0]}")
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inp.shape)
        self.model_metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.path = onnx_path

    def run(self, batch):
        self.check_batch(batch)
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def open_backend(path: str, batch_size: int | None = None, input_name: str | None = None) -> Backend:
    """Open an engine file; check it against the batch size and input name asked for."""
    if not os.path.exists(path):
        raise ToolkitError(f"engine not found: {path}")
    if path.endswith(".onnx"):
        backend = OrtBackend(path)
        if batch_size and backend.input_shape[0] is None:
            backend.input_shape = (batch_size, *backend.input_shape[1:])
    else:
        from .engine import load_engine

        backend = load_engine(path)
    if input_name and input_name != backend.input_name:
        raise ToolkitError(f"{path} has input '{backend.input_name}', not '{input_name}'")
    if batch_size and backend.input_shape[0] != batch_size:
        raise ToolkitError(
            f"{path} was built for batch size {backend.input_shape[0]}, not {batch_size}; rebuild it with "
            f"--input {backend.input_name}:{batch_size},{','.join(map(str, backend.input_shape[1:]))}"
        )
    return backend
