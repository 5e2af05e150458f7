"""The one small interface every runtime implements, so evaluation and timing have one loop."""
from __future__ import annotations

import time

import numpy as np

from ..errors import ToolkitError
from ..numerics import random_batch


class Backend:
    """A loaded model with a fixed input: ``run`` maps an NCHW float32 batch to probabilities."""

    name = "backend"
    input_name: str
    input_shape: tuple  # (N, C, H, W); N is None when the batch dimension is free
    model_metadata: dict = {}  # the source ONNX model's metadata_props (e.g. a PP-OCR dictionary)
    model_sha256: str | None = None  # the source ONNX model file's digest
    weights: str | None = None  # "trained" / "untrained" where the model says (svtr_toolkit.provenance)
    device_description: str = "this machine"  # where ``run`` computes (a remote device names itself)
    runtime: str = "backend"  # the runtime that computes: onnxruntime, openvino, tvm, igie
    runtime_version: str | None = None
    precision: str | None = "fp32"  # what was asked for; None: the runtime's own default
    computes_in: str = "fp32"  # what it computes in, as the runtime reports it (not as asked)

    def runtime_description(self) -> dict:
        """The runtime, its version, and the precision asked for and the one it computes in."""
        return {"runtime": self.runtime, "version": self.runtime_version,
                "precision": self.precision or "default", "computes_in": self.computes_in}

    def runtime_line(self) -> str:
        asked = f"precision {self.precision}" if self.precision else "its default precision"
        return (f"runtime: {self.runtime} {self.runtime_version or '(version unknown)'}, {asked}, "
                f"computes in {self.computes_in}")

    def run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def timing_input(self) -> np.ndarray:
        """The fixed batch compute-only timing runs on."""
        return random_batch((self.input_shape[0] or 1, *self.input_shape[1:]))

    def time_compute(self, repeat: int, number: int = 1) -> list:
        """Seconds per call of ``run`` on a fixed device-resident input, ``repeat`` samples.

        The default times ``run`` with wall clock; backends with their own time evaluator
        (TVM) override it so figures compare with the model zoo's.
        """
        batch = self.timing_input()
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
