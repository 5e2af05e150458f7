"""The benchmark's contenders: one module per runtime, registered below by one line each.

A contender module has:

- ``version() -> str | None``: its runtime's version, None where it is not installed;
- ``unavailable() -> str | None``: why it cannot run on this machine (and how to fix that);
- ``entries(setup: Setup) -> list[Entry]``: the backends it times, each at one batch or at any.

The benchmark times the contenders the command line names (``--contenders``, default all),
each cell checked against onnxruntime fp32 (``Setup.reference``), whether or not onnxruntime
itself is timed.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from ...errors import ToolkitError

# contender name -> its module in this package
REGISTRY = {
    "onnxruntime": "ort_contender",
    "openvino": "openvino_contender",
    "tvm": "tvm_contender",
}


@dataclass
class Entry:
    """One backend a contender times: at its own batch, or at every sweep batch (``batch`` None)."""

    name: str  # the table's and the plot's name, e.g. openvino-fp32
    backend: object
    batch: int | None = None
    note: str = ""
    arithmetic: str = "fp32"  # what it computes in ("fp32", "fp16", "bf16"): the peak it is set against
    emulated: bool = False  # a reduced precision whose values are computed in fp32 arithmetic
    reference: bool = False  # also timed at every other contender's batch (onnxruntime fp32)


@dataclass
class Setup:
    """What every contender module is given: the model, the sweep, and the TVM engines' options."""

    model_path: str
    image_chw: tuple
    batches: list  # the sweep
    threads: int
    reference: object  # onnxruntime fp32 on the model: every cell's correctness is checked against it
    log: object = print
    engines: list = field(default_factory=list)  # [(name, path)] given on the command line
    build: bool = False
    precisions: list = field(default_factory=list)
    engine_dir: str = "work/bench"
    engine_stem: str = ""
    fp16_variants: list = field(default_factory=list)
    recorded: dict = field(default_factory=dict)  # what contenders add to the report's settings

    @property
    def model_batches(self) -> list:
        """The sweep batches the model takes (a model with a fixed batch: that one)."""
        fixed = self.reference.input_shape[0]
        return [b for b in self.batches if fixed in (None, b)]


def load(name: str):
    """The module of contender ``name``."""
    if name not in REGISTRY:
        raise ToolkitError(f"unknown contender '{name}' (choose from {', '.join(REGISTRY)})")
    return importlib.import_module(f".{REGISTRY[name]}", __name__)


def versions() -> dict:
    """Every registered contender's runtime version (None: not installed)."""
    return {name: load(name).version() for name in REGISTRY}
