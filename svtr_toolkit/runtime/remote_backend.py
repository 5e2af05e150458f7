"""A TVM engine on a remote device: uploaded through an RPC session, run by the Relax VM there.

The evaluation and timing loops are the local ones: ``run`` sends a batch and brings the
probabilities back, ``time_compute`` is the remote's own time evaluator (no network in the
figure). A server that dies mid-run is one clear error (``rpc.remote_call``).
"""
from __future__ import annotations

import os

from ..errors import ToolkitError
from ..rpc import RemoteDevice, remote_call
from .tvm_backend import TvmBackend


class RemoteTvmBackend(TvmBackend):
    def __init__(self, path: str, meta: dict, remote: RemoteDevice):
        kind = meta["target"]["kind"]
        missing = remote.missing_features(meta["target"].get("mattr")) if kind == "llvm" else []
        if missing:
            raise ToolkitError(f"{path} was built for a CPU with {', '.join(missing)}, which the remote "
                               f"{remote.description} lacks; rebuild it with --rpc {remote.address}")
        if meta.get("tvm_version") != remote.info.get("tvm_version"):
            raise ToolkitError(f"{path} was built with TVM {meta.get('tvm_version')}, the remote runs "
                               f"{remote.info.get('tvm_version')}; rebuild it")
        self.remote = remote
        super().__init__(path, meta)
        self.name += f"@{remote.address.key}"
        self.device_description = remote.description

    def _load(self, path, kind):
        """(device, Relax VM) on the remote, the engine uploaded through its session."""
        from tvm import relax

        session = self.remote.session
        name = os.path.basename(path)

        def load():
            session.upload(path, name)
            device = session.cpu(0) if kind == "llvm" else session.device(kind, 0)
            return device, relax.VirtualMachine(session.load_module(name), device)

        return remote_call(self.remote, f"loading {name}", load)

    def _in_vm(self, what, call):
        return call()  # run and time_compute go through remote_call, which tells a dying server apart

    def run(self, batch):
        return remote_call(self.remote, "a batch", lambda: super(RemoteTvmBackend, self).run(batch))

    def time_compute(self, repeat, number=1):
        return remote_call(self.remote, "timing", lambda: super(RemoteTvmBackend, self).time_compute(repeat, number))
