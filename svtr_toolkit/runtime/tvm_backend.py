"""A Relax VM over an engine built by ``compile.build.build_engine``."""
from __future__ import annotations

import numpy as np

from ..errors import ToolkitError, last_line, pending_interrupt
from ..threads import use_all_cpu_cores
from .base import Backend
from .library import image_identity, load_module, request_amx_state, uses_amx


def open_device(kind: str):
    """The device an engine of target ``kind`` runs on. CPU engines get every core: TVM's
    default pool would leave half of them idle on x86 (see ``threads.use_all_cpu_cores``)."""
    import tvm

    if kind == "llvm":
        use_all_cpu_cores()
        return tvm.cpu(0)
    dev = tvm.device(kind, 0)
    if not dev.exist:
        raise ToolkitError(f"this engine needs a {kind} device, and TVM sees none on this machine")
    return dev


_LOCAL_CPU = 1  # DLPack's kDLCPU; a device over RPC carries a session mask on top


class TvmBackend(Backend):
    name = "tvm"

    def __init__(self, path, meta):
        self.metadata = meta
        self.input_name = meta["input_name"]
        self.input_shape = tuple(meta["input_shape"])
        self.model_metadata = meta.get("model_metadata", {})
        kind = meta["target"]["kind"]
        self.name = f"tvm-{kind}-{meta['precision']}"
        self.device, self.vm = self._load(path, kind)

    def _load(self, path, kind):
        """(device, Relax VM) for the engine at ``path``, here."""
        from tvm import relax

        device = open_device(kind)
        if uses_amx(self.metadata):
            refused = request_amx_state()
            if refused:
                raise ToolkitError(f"cannot run engine {path}: it uses AMX tiles and {refused}; rebuild it on this "
                                   f"machine (its build then leaves AMX out)")
        try:
            return device, relax.VirtualMachine(load_module(path, image_identity(path, self.metadata)), device)
        except Exception as exc:
            raise ToolkitError(f"cannot load engine {path}: {last_line(exc)}")

    def _in_vm(self, what: str, call):
        """``call()``, with an error raised inside TVM's VM as one line: an engine whose build
        description does not match its code (edited before descriptions carried a digest) fails
        there, and so does a device that fails."""
        try:
            return call()
        except Exception as exc:
            if pending_interrupt() is not None:  # TVM turns a signal inside its C++ into its own error
                raise pending_interrupt() from None
            raise ToolkitError(f"the engine failed during {what} ({last_line(exc)}); if its build description was "
                               f"edited (input {self.input_name}:{list(self.input_shape)}), rebuild it") from None

    def run(self, batch):
        import tvm

        self.check_batch(batch)
        data = tvm.runtime.tensor(np.ascontiguousarray(batch, dtype=np.float32), self.device)
        if self.device.dlpack_device_type() == _LOCAL_CPU:
            # the engine's own output tensor as a (read-only) array: each call allocates a new one,
            # which the array keeps alive, so a copy would only cost time (PP-OCRv4's batch-32
            # output is 34 MB)
            return self._in_vm("a batch", lambda: np.from_dlpack(self.vm["main"](data)))
        return self._in_vm("a batch", lambda: self.vm["main"](data).numpy())

    def time_compute(self, repeat, number=1):
        import tvm

        data = tvm.runtime.tensor(self.timing_input(), self.device)
        timer = self.vm.time_evaluator("main", self.device, number=number, repeat=repeat)
        return self._in_vm("timing", lambda: list(timer(data).results))
