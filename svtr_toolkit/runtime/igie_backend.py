"""An IGIE engine (Iluvatar MR-V100) through the IGIE build of TVM's graph executor.

It mirrors the model zoo's own run calls and nothing more; it cannot be exercised without
that hardware and software, so it stays small and isolated.
"""
from __future__ import annotations

import numpy as np

from .base import Backend
from .library import image_identity, load_module


class IgieBackend(Backend):
    name = "igie"

    def __init__(self, path: str, meta: dict):
        import tvm
        from tvm.contrib import graph_executor

        self.device = tvm.device(meta["target"]["kind"], 0)
        self.module = graph_executor.GraphModule(load_module(path, image_identity(path, meta))["default"](self.device))
        self.input_name = meta["input_name"]
        self.input_shape = tuple(meta["input_shape"])
        self.model_metadata = meta.get("model_metadata", {})

    def run(self, batch):
        self.check_batch(batch)
        self.module.set_input(self.input_name, np.ascontiguousarray(batch, dtype=np.float32))
        self.module.run()
        return self.module.get_output(0).asnumpy()

    def time_compute(self, repeat, number=1):
        batch = np.zeros(self.input_shape, dtype=np.float32)
        self.module.set_input(self.input_name, batch)
        timer = self.module.module.time_evaluator("run", self.device, number=number, repeat=repeat)
        return list(timer().results)
