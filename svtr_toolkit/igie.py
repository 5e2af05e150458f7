"""The Iluvatar MR-V100 path, through the IGIE build of TVM (Relay + graph executor).

It mirrors the model zoo's own build and run calls and nothing more; it cannot be
exercised without that hardware and software, so it stays small and isolated.
"""
from __future__ import annotations

import numpy as np

from .backends import Backend


def _target():
    import tvm

    return tvm.target.iluvatar(model="MR", options="-libs=cudnn,cublas,ixinfer")


def build(onnx_path: str, input_name: str, shape: tuple, precision: str, out_path: str) -> None:
    """Compile with IGIE's own importer and precision handling into ``out_path``."""
    import tvm
    from tvm import relay
    from tvm.relay.import_model import import_model_to_igie

    target = _target()
    device = tvm.device(target.kind.name, 0)
    mod, params = import_model_to_igie(onnx_path, {input_name: tuple(shape)}, "onnx")
    with tvm.transform.PassContext(opt_level=3):
        lib = relay.build(mod, target=target, params=params, precision=precision, device=device)
    lib.export_library(out_path)


class IgieBackend(Backend):
    name = "igie"

    def __init__(self, path: str, meta: dict):
        import tvm
        from tvm.contrib import graph_executor

        target = _target()
        self.device = tvm.device(target.kind.name, 0)
        self.module = graph_executor.GraphModule(tvm.runtime.load_module(path)["default"](self.device))
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
