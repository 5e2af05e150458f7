"""Where an engine runs: one module per TVM target kind, and the registry that picks one.

A target module (``llvm``, ``cuda``, ``iluvatar``) exposes the same small set of names, as
TVM's own ``relax/backend/<target>/pipeline.py`` does:

- ``KIND``: the TVM target kind, also the ``--target`` choice;
- ``available()``: whether this machine can build for it (for ``--target auto``);
- ``resolve(remote=None)``: (TVM target spec as a JSON-able dict, one-line description), for
  this machine or for an ``rpc.RemoteDevice``'s;
- ``pipeline(tvm_target, database=None, report=None)``: the Relax pipeline ``tvm.compile``
  gets (``report``, a dict, learns how each kernel was scheduled where the target says);
- ``TUNED``: whether MetaSchedule databases apply to it;
- optionally ``precision_note(spec, precision, accumulate)``: a line the build prints when a
  precision means something else on this device (fp16 without fp16 arithmetic; ``accumulate``
  is the build's K-chunked fp16 setting);
- optionally ``arithmetic(spec, precision, accumulate)``: what the engine's matrix products
  compute in, in words ("emulated" where a precision's values are computed in fp32), recorded
  in the build description as ``arithmetic``;
- optionally ``build(model_path, input_name, shape, precision, out_path, spec)``: an own
  build (IGIE compiles the ONNX file itself), used instead of ``tvm.compile``.

Adding a target is adding a module and one line in ``_MODULES``. A target is resolved once,
at build time, into its spec, which the engine's metadata records; staleness checks
compare specs.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...cpu_features import CpuFeatures, host
from ...errors import ToolkitError
from . import cuda, iluvatar, llvm

# In the order --target auto prefers them.
_MODULES = (iluvatar, cuda, llvm)
TARGETS = {module.KIND: module for module in _MODULES}
TARGET_CHOICES = ("auto", *TARGETS)


@dataclass(frozen=True)
class BuildTarget:
    spec: dict  # the TVM target as a dict; its "kind" names the target module
    description: str
    cpu: CpuFeatures | None = None  # llvm: the CPU it was resolved for (tuning databases are chosen by it)

    @property
    def kind(self) -> str:
        return self.spec["kind"]

    @property
    def module(self):
        return TARGETS[self.kind]

    def tvm_target(self):
        import tvm

        return tvm.target.Target(self.spec)


def resolve(kind: str, remote=None) -> BuildTarget:
    spec, description = TARGETS[kind].resolve(remote)
    cpu = (remote.cpu if remote is not None else host()) if kind == llvm.KIND else None
    return BuildTarget(spec, description, cpu)


def select_target(name: str, remote=None) -> BuildTarget:
    """Resolve a target choice; ``auto`` takes the first available one (IGIE, CUDA, host CPU).
    With ``remote`` (an ``rpc.RemoteDevice``) the target is that device's, and ``auto`` is its CPU."""
    if name not in TARGET_CHOICES:
        raise ToolkitError(f"unknown target '{name}' (choose from {', '.join(TARGET_CHOICES)})")
    if name == "auto":
        name = llvm.KIND if remote is not None else next(module.KIND for module in _MODULES if module.available())
    return resolve(name, remote)


def host_cpu_target() -> BuildTarget:
    return resolve(llvm.KIND)
